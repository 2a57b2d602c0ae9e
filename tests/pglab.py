"""
A throwaway PostgreSQL for the tests: Debian's server binaries
(C{postgresql} package, C{/usr/lib/postgresql/<version>/bin}), one cluster
per test class, in a temporary directory, listening only on a unix socket
in that directory (no TCP port, nothing a system cluster uses). initdb and
the server refuse to run as root, so they run as a dedicated system user,
C{provtest} (made if missing). The cluster is removed after the last test
of its class, and at exit in any case (a run interrupted, a test filtered).

    cluster = pglab.cluster(self)        # in setUp: started once per class
    dsn = cluster.createDatabase()       # a fresh database for this test
    cluster.stop(); cluster.start()      # the database going away and back

Never C{systemctl}, C{pg_ctlcluster} or a cluster of the host.
"""

import atexit
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid

from twisted.trial.unittest import SkipTest

__all__ = ["cluster", "Cluster", "requirePostgres", "USER"]

#: the system user the cluster runs as
USER = "provtest"


def _binaries():
    """
    The directory of Debian's PostgreSQL server binaries (newest), or
    L{None}.
    """
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return os.path.dirname(found[-1]) if found else None


def requirePostgres():
    """
    Skip (or under C{PROVISIONER_REQUIRE_E2E=1}, fail) unless a cluster can
    be started here: root (to run it as L{USER}), Debian's server binaries
    and psycopg.
    """
    missing = []
    if os.geteuid() != 0:
        missing.append("root (initdb runs as %s)" % (USER,))
    if _binaries() is None:
        missing.append("Debian's postgresql package (apt-get install -y postgresql)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing.append("psycopg 3 (pip install 'psycopg[binary]')")
    if missing:
        reason = "needs " + ", ".join(missing)
        if os.environ.get("PROVISIONER_REQUIRE_E2E") == "1":
            raise AssertionError("PROVISIONER_REQUIRE_E2E=1 but this test " + reason)
        raise SkipTest(reason)


def _ensureUser():
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", USER], check=True, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
        return pwd.getpwnam(USER)


class Cluster:
    """
    One PostgreSQL cluster in a temporary directory, as L{USER}.

    @ivar directory: the temporary directory (data, socket, log).
    @ivar socketDir: where the server's unix socket is.
    @ivar port: the port number in the socket's name.
    """

    def __init__(self):
        self.bin = _binaries()
        self.user = _ensureUser()
        self.directory = tempfile.mkdtemp(prefix="provpg")
        os.chmod(self.directory, 0o755)
        os.chown(self.directory, self.user.pw_uid, self.user.pw_gid)
        self.data = os.path.join(self.directory, "data")
        self.socketDir = self.directory
        self.logPath = os.path.join(self.directory, "postgres.log")
        self.port = 5432
        self.process = None
        self._databases = 0
        _live.add(self)
        self._run([os.path.join(self.bin, "initdb"), "-D", self.data, "-U", "postgres",
                   "--auth=trust", "-E", "UTF8", "--no-instructions"])
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            # fast and small: a test cluster, not a durable one
            f.write("\nlisten_addresses = ''\nunix_socket_directories = '%s'\nport = %d\n"
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                    "max_connections = 100\nshared_buffers = 16MB\n"
                    % (self.socketDir, self.port))

    def _run(self, argv, check=True):
        result = subprocess.run(argv, user=self.user.pw_uid, group=self.user.pw_gid,
                                extra_groups=[], cwd=self.directory, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env={"PATH": "/usr/bin:/bin",
                                                               "LANG": "C.UTF-8"})
        if check and result.returncode != 0:
            raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), result.returncode,
                                                        result.stdout.decode(errors="replace")))
        return result

    def start(self):
        """
        Start the server and wait until it accepts connections.
        """
        self._run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-l", self.logPath,
                   "-w", "-t", "30", "start"])
        return self

    def stop(self, mode="fast"):
        """
        Stop the server (C{fast}: sessions are cut; C{immediate}: as a
        crash).
        """
        self._run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", mode, "-w",
                   "stop"], check=False)

    def running(self):
        result = self._run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "status"],
                           check=False)
        return result.returncode == 0

    def dsn(self, dbname="postgres"):
        return "host=%s port=%d user=postgres dbname=%s" % (self.socketDir, self.port, dbname)

    def createDatabase(self):
        """
        A new, empty database; return its DSN.
        """
        import psycopg
        self._databases += 1
        name = "t%d_%s" % (self._databases, uuid.uuid4().hex[:8])
        with psycopg.connect(self.dsn(), autocommit=True) as connection:
            connection.execute("CREATE DATABASE %s" % (name,))
        return self.dsn(name)

    def query(self, dsn, sql, args=()):
        """
        Run C{sql} on C{dsn} (a test's own connection); return the rows.
        """
        import psycopg
        with psycopg.connect(dsn, autocommit=True) as connection:
            cursor = connection.execute(sql, args)
            return cursor.fetchall() if cursor.description else []

    def remove(self):
        """
        Stop the server at once and delete everything.
        """
        if os.path.isdir(self.data):
            self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)
        _live.discard(self)


_live = set()
_byClass = {}


@atexit.register
def _removeAll():
    for c in list(_live):
        c.remove()


def cluster(case):
    """
    The cluster of C{case}'s class, started by its first test and removed
    after its last (trial has no C{setUpClass}: the class's tests are
    counted).
    """
    requirePostgres()
    key = type(case)
    entry = _byClass.get(key)
    if entry is None:
        names = [n for n in dir(key) if n.startswith("test") and callable(getattr(key, n))]
        entry = _byClass[key] = [Cluster().start(), len(names)]

    def done():
        entry[1] -= 1
        if entry[1] <= 0:
            entry[0].remove()
            del _byClass[key]
    case.addCleanup(done)
    if not entry[0].running():
        entry[0].start()
    return entry[0]
