"""
Start failures as an operator meets them: C{twistd -n provisioner} run in a
subprocess on loopback (L{tests.netlab.TWISTD}) with a configuration that
cannot start, and the client commands (C{provisioner fetch}, C{receive},
C{imagecast}) pointed at nothing. Each case must end with one line on
standard error naming the key (or the address) and the value, a non-zero
exit status, and no traceback (L{provisioner.startup}).
"""

import errno
import os
import socket
import subprocess

from twisted.internet.error import CannotListenError
from twisted.trial.unittest import SynchronousTestCase, TestCase

from provisioner.config import ConfigError
from provisioner.startup import (
    StartError, bindError, directoryError, formatFailure, installExceptHook)
from tests.netlab import PYTHON, REPO, TWISTD, requireE2E

_BASE = """\
tftp:
  enabled: true
  address: 127.0.0.1
  port: 0
  root: {d}/root
  boot_programs: null
"""


def _held(kind):
    """
    A socket holding a port on 127.0.0.1 (no SO_REUSEADDR).
    """
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    if kind == socket.SOCK_STREAM:
        s.listen(1)
    return s


class BindErrorTests(SynchronousTestCase):
    """
    L{bindError} and L{directoryError} name the key at fault.
    """

    def check(self, code, key, value, words, **kw):
        error = bindError(OSError(code, os.strerror(code)), "tftp", "198.18.0.1", kw.pop(
            "port", 6969), **kw)
        self.assertIsInstance(error, StartError)
        self.assertEqual((error.key, error.value), (key, value))
        for word in words:
            self.assertIn(word, str(error))

    def test_cases(self):
        """
        If a bind fails, the errno picks the key: no such device is the
        interface, not available the address, in use or privileged the port.
        """
        self.check(errno.ENODEV, "tftp.interface", "eth9", ["no such network interface"],
                   interface="eth9")
        self.check(errno.ENODEV, "tftp.interfaces", "eth9", ["eth9"], interface="eth9",
                   interfaceKey="interfaces")
        self.check(errno.EADDRNOTAVAIL, "tftp.address", "198.18.0.1", ["not an address"])
        self.check(errno.EADDRINUSE, "tftp.port", 6969, ["already in use"])
        self.check(errno.EACCES, "tftp.port", 69, ["CAP_NET_BIND_SERVICE", "root"], port=69)
        self.check(errno.EACCES, "tftp.pxe_port", 69, ["CAP_NET_BIND_SERVICE"], port=69,
                   portKey="pxe_port")
        self.check(errno.EPERM, "tftp.interface", "eth0", ["CAP_NET_RAW"], interface="eth0")

    def test_cannotListen(self):
        """
        If Twisted wraps the socket error (C{CannotListenError}), the socket
        error decides.
        """
        error = bindError(CannotListenError("198.18.0.1", 80, OSError(errno.EADDRINUSE, "x")),
                          "http", "198.18.0.1", 80)
        self.assertEqual(error.key, "http.port")

    def test_directory(self):
        """
        If a directory cannot be made, the error names its key, its path and
        why.
        """
        error = directoryError(OSError(errno.EACCES, "Permission denied"), "tftp.root", "/x")
        self.assertEqual(str(error), "tftp.root /x: permission denied (the user provisioner "
                         "runs as must be able to create and write it)")

    def test_hook(self):
        """
        If a start failure reaches the top, the hook writes one line to the
        original standard error and exits with status 1; other exceptions go
        to the hook before it.
        """
        import io

        class FakeSys:
            pass
        fake = FakeSys()
        fake.__stderr__ = io.StringIO()
        fake.stderr = fake.__stderr__
        fake.stdout = io.StringIO()
        seen = []
        fake.excepthook = lambda *a: seen.append(a)
        exits = []
        hook = installExceptHook(sys=fake, environ={}, exit=exits.append)
        self.assertIs(fake.excepthook, hook)
        hook(StartError, StartError("tftp.port", 69, "privileged"), None)
        self.assertEqual(fake.__stderr__.getvalue(),
                         "provisioner: cannot start: tftp.port 69: privileged\n")
        self.assertEqual(exits, [1])
        hook(ValueError, ValueError("x"), None)
        self.assertEqual(len(seen), 1)
        self.assertIs(installExceptHook(sys=fake, environ={}), hook)
        self.assertEqual(formatFailure(ConfigError("dhcp.lease_file", "bad")),
                         "provisioner: cannot start: dhcp.lease_file: bad")


class ApplianceStartTests(TestCase):
    """
    C{twistd -n provisioner} that cannot start: one line, status 1, no
    traceback.
    """

    timeout = 120

    def setUp(self):
        requireE2E()
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.base, "root"))

    def twistd(self, config, argv=(), prefix=(), env=None):
        path = os.path.join(self.base, "provisioner.yaml")
        with open(path, "w") as f:
            f.write(_BASE.format(d=self.base) + config.format(d=self.base))
        os.chmod(path, 0o644)
        environ = dict(os.environ, PYTHONPATH=REPO)
        environ.pop("PROVISIONER_LOG_LEVEL", None)
        environ.update(env or {})
        proc = subprocess.run(list(prefix) + TWISTD + ["-n", "--pidfile=", "provisioner",
                                                       "--config", path] + list(argv),
                              cwd=self.base, env=environ, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        return proc.returncode, proc.stdout.decode(errors="replace"), \
            proc.stderr.decode(errors="replace")

    def assertOneLine(self, result, key, value, *words):
        status, out, err = result
        everything = out + err
        self.assertNotEqual(status, 0, everything)
        self.assertNotIn("Traceback", everything)
        self.assertNotIn("#critical]", out)
        lines = err.splitlines()
        self.assertEqual(len(lines), 1, everything)
        self.assertEqual([line for line in everything.splitlines() if key in line], lines)
        self.assertIn("%s %s:" % (key, value), lines[0])
        for word in words:
            self.assertIn(word, lines[0])

    def test_noSuchInterface(self):
        """
        If C{--tftp-interface} names no interface of this host, one line
        names C{tftp.interface} and the name.
        """
        self.assertOneLine(self.twistd("", ["--tftp-interface", "nonexistent0"]),
                           "tftp.interface", "nonexistent0", "no such network interface")

    def test_foreignAddress(self):
        """
        If C{tftp.address} is not an address of this host, one line says so.
        """
        self.assertOneLine(self.twistd("", ["--tftp-address", "192.0.2.77"]),
                           "tftp.address", "192.0.2.77", "not an address of this host")

    def test_tftpPortInUse(self):
        """
        If another process has the TFTP port, one line names C{tftp.port}.
        """
        held = _held(socket.SOCK_DGRAM)
        self.addCleanup(held.close)
        port = held.getsockname()[1]
        self.assertOneLine(self.twistd("", ["--tftp-port", str(port)]), "tftp.port", port,
                           "already in use")

    def test_httpPortInUse(self):
        """
        If another process has the HTTP port, one line names C{http.port}.
        """
        held = _held(socket.SOCK_STREAM)
        self.addCleanup(held.close)
        port = held.getsockname()[1]
        self.assertOneLine(self.twistd("http:\n  enabled: true\n  address: 127.0.0.1\n"
                                       "  port: %d\n" % (port,)),
                           "http.port", port, "already in use")

    def test_imagecastPortInUse(self):
        """
        If another process has the imagecast control port, one line names
        C{imagecast.port}.
        """
        held = _held(socket.SOCK_STREAM)
        self.addCleanup(held.close)
        port = held.getsockname()[1]
        self.assertOneLine(self.twistd("imagecast:\n  enabled: true\n  authentication: none\n  port: %d\n"
                                       "  root: {d}/images\n" % (port,)),
                           "imagecast.port", port, "already in use")

    def test_dhcpInterface(self):
        """
        If C{dhcp.interfaces} names no interface of this host, one line
        names C{dhcp.interfaces} and the name.
        """
        self.assertOneLine(self.twistd("dhcp:\n  enabled: true\n  interfaces: [nonexistent0]\n"
                                       "  port: 0\n  address: 127.0.0.1\n"
                                       "  pxe_port: 14011\n"),
                           "dhcp.interfaces", "nonexistent0", "no such network interface")

    def test_rootCannotBeMade(self):
        """
        If the TFTP root is missing and cannot be made (a file is in the
        way), one line names C{tftp.root} and the path.
        """
        blocker = os.path.join(self.base, "file")
        with open(blocker, "w"):
            pass
        root = os.path.join(blocker, "root")
        self.assertOneLine(self.twistd("", ["--tftp-root", root]), "tftp.root", root,
                           "not a directory")

    def test_uploadDirectoryUnwritable(self):
        """
        If the upload directory cannot be made for want of permission (run
        as nobody), one line names C{tftp.write.directory}.
        """
        locked = os.path.join(self.base, "locked")
        os.makedirs(locked)
        os.chmod(os.path.dirname(self.base), 0o755)  # mktemp's is 0700
        os.chmod(self.base, 0o755)
        os.chmod(locked, 0o555)
        upload = os.path.join(locked, "uploads")
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        probe = subprocess.run(nobody + [PYTHON, "-c", "import twisted, provisioner"],
                               cwd=self.base, env=dict(os.environ, PYTHONPATH=REPO),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if probe.returncode != 0:
            raise self.skipTest("cannot run as nobody: %s" % (probe.stdout[-200:],))
        os.chmod(os.path.join(self.base, "root"), 0o777)
        self.assertOneLine(self.twistd("  write:\n    enabled: true\n    directory: %s\n"
                                       % (upload,), prefix=nobody),
                           "tftp.write.directory", upload, "permission denied")

    def test_privilegedPort(self):
        """
        If the TFTP port is privileged and the process lacks
        CAP_NET_BIND_SERVICE, one line names C{tftp.port} and the capability.
        """
        requireE2E(tools=("setpriv",))
        self.assertOneLine(self.twistd("", ["--tftp-port", "69"],
                                       prefix=["setpriv", "--bounding-set=-net_bind_service"]),
                           "tftp.port", 69, "CAP_NET_BIND_SERVICE", "root")

    def test_debugShowsTraceback(self):
        """
        If debug logging is on, the traceback comes before the line.
        """
        status, out, err = self.twistd("", ["--tftp-interface", "nonexistent0"],
                                       env={"PROVISIONER_LOG_LEVEL": "debug"})
        self.assertEqual(status, 1)
        self.assertIn("Traceback", err)
        self.assertTrue(err.rstrip().endswith(
            "tftp.interface nonexistent0: no such network interface"), err)


def _closedPort(kind):
    """
    A port on 127.0.0.1 nothing listens on (bound, then closed).
    """
    s = _held(kind)
    port = s.getsockname()[1]
    s.close()
    return port


class ClientCommandTests(TestCase):
    """
    The client commands pointed at nothing: one line on standard error
    naming what was asked for, a non-zero status, no traceback.
    """

    timeout = 120

    def setUp(self):
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)

    def provisioner(self, *argv):
        proc = subprocess.run([PYTHON, "-m", "provisioner"] + list(argv), cwd=self.base,
                              env=dict(os.environ, PYTHONPATH=REPO), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        return proc.returncode, proc.stdout.decode(errors="replace"), \
            proc.stderr.decode(errors="replace")

    def assertOneLine(self, result, *words):
        status, out, err = result
        self.assertNotEqual(status, 0, out + err)
        self.assertNotIn("Traceback", out + err)
        self.assertEqual(out, "")
        self.assertEqual(len(err.splitlines()), 1, err)
        for word in words:
            self.assertIn(word, err)

    def test_fetchBadURL(self):
        """
        If C{fetch} is given a URL that is not C{tftp://HOST/PATH}, one line
        names it.
        """
        self.assertOneLine(self.provisioner("fetch", "http://example.invalid/x"),
                           "http://example.invalid/x")

    def test_fetchNoSuchHost(self):
        """
        If C{fetch}'s host does not resolve, one line names it.
        """
        self.assertOneLine(self.provisioner("fetch", "tftp://nonexistent.invalid/x"),
                           "cannot resolve nonexistent.invalid")

    def test_fetchNoServer(self):
        """
        If nothing answers at C{fetch}'s address, one line names it once the
        retries are spent.
        """
        port = _closedPort(socket.SOCK_DGRAM)
        self.assertOneLine(self.provisioner("fetch", "--timeout", "0.1", "--retries", "0",
                                            "tftp://127.0.0.1:%d/x" % (port,)),
                           "no answer from 127.0.0.1:%d" % (port,))
        self.assertEqual(os.listdir(self.base), [])

    def test_receiveRefused(self):
        """
        If C{receive} cannot reach the control channel, one line names the
        server and the port (no summary of nothing received).
        """
        port = _closedPort(socket.SOCK_STREAM)
        self.assertOneLine(self.provisioner("receive", "--server", "127.0.0.1", "--port",
                                            str(port), "--output",
                                            os.path.join(self.base, "image"),
                                            "--timeout", "1"),
                           "cannot reach the server 127.0.0.1:%d" % (port,))

    def test_imagecastRefused(self):
        """
        If C{imagecast status} finds no control channel, one line names the
        server, the port and the refusal.
        """
        port = _closedPort(socket.SOCK_STREAM)
        self.assertOneLine(self.provisioner("imagecast", "status", "--server", "127.0.0.1",
                                            "--port", str(port)),
                           "127.0.0.1 port %d" % (port,), "connection refused")

    def test_imagecastNoSuchHost(self):
        """
        If C{imagecast status}'s server does not resolve, one line says so.
        """
        self.assertOneLine(self.provisioner("imagecast", "status", "--server",
                                            "nonexistent.invalid"),
                           "nonexistent.invalid", "no such host")
