# -*- test-case-name: tests.test_pg_store -*-
"""
The PostgreSQL backend of the stores (C{store.backend: postgresql}): the
connection to the database, the versioned schema, and the host lifecycle
(L{PostgresHostStore}, an L{IHostStore}). The DHCP leases are in
L{provisioner.store.postgres_leases}.

The driver is psycopg 3, a DB-API 2.0 driver with blocking calls; every call
runs off the reactor in a L{Database}: one worker thread of its own holding
one connection, so that what one store submits is applied in that order (as
L{IHostStore} promises), and a store's slow query never delays another's
(the heartbeat has its own). A connection that breaks (the server stopped,
restarted, or the network to it is gone) is dropped and the call fails with
L{StoreUnavailable}; the next call connects again, so recovery needs nothing
but the database coming back. Each call is one transaction.

Why not C{twisted.enterprise.adbapi}: its reconnection (C{cp_reconnect})
notices a dead connection only by running C{cp_good_sql} after a failed
rollback, and logs every such failure as an unhandled error with a
traceback; the appliance must instead log an outage once and go on
answering from memory. Thirty lines of thread and connection here give
that, a connect timeout and per-store ordering.
"""

import json
import re
import socket
import threading

from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from provisioner.store.interfaces import IHostStore, StoreUnavailable
from provisioner.store.migrations import MIGRATIONS
from provisioner.store.records import Event, HostRecord, Machine, Snapshot, Token

__all__ = ["Database", "PostgresHostStore", "SchemaError", "upgrade", "schemaVersion",
           "connect", "redact", "applianceId", "SCHEMA_VERSION", "CHANNEL"]

#: the newest schema this provisioner knows
SCHEMA_VERSION = MIGRATIONS[-1][0]

#: the advisory lock held while migrating, so that appliances starting
#: together migrate one after the other
_MIGRATION_LOCK = 0x70726f76


class SchemaError(Exception):
    """
    The database's schema cannot be used as it is: older than this
    provisioner and C{store.migrate} is off, or newer than it knows.
    """


def _psycopg():
    """
    The driver, imported when first needed: it is an optional extra
    (C{pip install provisioner[postgresql]}).
    """
    try:
        import psycopg
    except ImportError:
        raise StoreUnavailable("the postgresql backend needs psycopg 3 (pip install "
                               "'psycopg[binary]', or Debian's python3-psycopg)")
    return psycopg


def redact(dsn):
    """
    C{dsn} without its password, for log lines.
    """
    if dsn is None:
        return None
    text = re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", dsn)
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", text)


def applianceId(section):
    """
    This appliance's name among those sharing the database:
    C{store.appliance_id}, else the host name.
    """
    return section["appliance_id"] or socket.gethostname()


def connect(dsn, timeout=2, application="provisioner"):
    """
    A new connection in autocommit mode (each call opens its own
    transaction).

    @param application: its C{application_name} (what C{pg_stat_activity}
        shows; the imagecast session locks say where they run there).
    @raise StoreUnavailable: the database cannot be reached.
    """
    psycopg = _psycopg()
    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=timeout,
                               application_name=application)
    except psycopg.Error as e:
        raise StoreUnavailable("cannot connect to %s: %s" % (redact(dsn), _oneLine(e)))


def _oneLine(error):
    return " ".join(str(error).split()) or error.__class__.__name__


def _version(cursor):
    cursor.execute("SELECT to_regclass('schema_migrations')")
    if cursor.fetchone()[0] is None:
        return 0
    cursor.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
    return cursor.fetchone()[0]


def schemaVersion(dsn, timeout=2):
    """
    The version of the database's schema (0: nothing there yet).
    """
    connection = connect(dsn, timeout)
    try:
        with connection.cursor() as cursor:
            return _version(cursor)
    finally:
        connection.close()


def upgrade(dsn, timeout=2, migrations=MIGRATIONS):
    """
    Apply the migrations the database lacks, each in its own transaction,
    holding an advisory lock so that two appliances starting at once do not
    both migrate.

    @return: the versions applied (empty when up to date).
    @raise SchemaError: the database is newer than this provisioner.
    @raise StoreUnavailable: it cannot be reached.
    """
    psycopg = _psycopg()
    connection = connect(dsn, timeout)
    applied = []
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
            try:
                cursor.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                               "version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
                               "applied TIMESTAMPTZ NOT NULL DEFAULT now())")
                current = _version(cursor)
                newest = migrations[-1][0] if migrations else 0
                if current > newest:
                    raise SchemaError("the database has schema version %d; this provisioner "
                                      "knows %d" % (current, newest))
                for version, description, statements in migrations:
                    if version <= current:
                        continue
                    with connection.transaction():
                        for statement in statements:
                            cursor.execute(statement)
                        cursor.execute("INSERT INTO schema_migrations (version, description) "
                                       "VALUES (%s, %s)", (version, description))
                    applied.append(version)
            finally:
                cursor.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    except psycopg.OperationalError as e:
        raise StoreUnavailable("%s: %s" % (redact(dsn), _oneLine(e)))
    finally:
        connection.close()
    return applied


def checkSchema(section):
    """
    At start: migrate (C{store.migrate}) or check that the schema is
    current.

    @return: the versions applied.
    @raise SchemaError, StoreUnavailable: it cannot be used.
    """
    dsn, timeout = section["dsn"], section["connect_timeout"]
    if section["migrate"]:
        return upgrade(dsn, timeout)
    current = schemaVersion(dsn, timeout)
    if current != SCHEMA_VERSION:
        raise SchemaError("the database has schema version %d, this provisioner needs %d: "
                          "run provisioner db upgrade --config FILE" % (current,
                                                                         SCHEMA_VERSION))
    return []


class Database:
    """
    One worker thread and its connection: calls run in submission order,
    each in one transaction.

    @ivar location: the DSN without its password.
    """

    log = Logger()

    def __init__(self, dsn, reactor, name="postgresql", timeout=2, application="provisioner"):
        self.dsn = dsn
        self.location = redact(dsn)
        self.reactor = reactor
        self._timeout = timeout
        self._application = application
        self._connection = None
        self._closed = None
        self._pool = ThreadPool(1, 1, name=name)
        self._pool.start()

    def run(self, function, *args):
        """
        Call C{function(cursor, *args)} in the worker, in a transaction.

        @return: a Deferred firing with its result; it fails with
            L{StoreUnavailable} when the database cannot be reached or the
            connection broke, else with what C{function} raised (the
            transaction is rolled back).
        """
        if self._closed is not None:
            return defer.fail(StoreUnavailable("the store %s is closed" % (self.location,)))
        return threads.deferToThreadPool(self.reactor, self._pool, self._call, function, args)

    def _call(self, function, args):
        psycopg = _psycopg()
        for attempt in (1, 2):
            if self._connection is None or self._connection.closed:
                self._connection = connect(self.dsn, self._timeout, self._application)
            connection = self._connection
            began = False
            try:
                with connection.transaction():
                    began = True
                    with connection.cursor() as cursor:
                        return function(cursor, *args)
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                if not (connection.broken or connection.closed or isinstance(
                        e, psycopg.errors.AdminShutdown)):
                    raise
                self._drop()
                if began or attempt == 2:
                    raise StoreUnavailable("%s: %s" % (self.location, _oneLine(e)))
                # The connection died while idle (the server restarted):
                # nothing was sent of this call, so it runs again once on a
                # new connection.

    def _drop(self):
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:
                pass

    def close(self):
        """
        Finish what was submitted, close the connection, stop the thread.

        @return: a Deferred that fires when done.
        """
        if self._closed is not None:
            return self._closed
        done = defer.Deferred()
        self._closed = done

        def finish():
            self._drop()
            self.reactor.callFromThread(stop)

        def stop():
            # the worker has run everything before finish: joining is quick
            threading.Thread(target=lambda: (self._pool.stop(),
                                             self.reactor.callFromThread(done.callback, None)),
                             daemon=True).start()
        self._pool.callInThread(finish)
        return done


# The host store's operations, each run in the worker inside a transaction.

def _putHost(c, host):
    c.execute("INSERT INTO hosts (name, state, since, reason, macs, profile, adopted, created) "
              "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
              "state = EXCLUDED.state, since = EXCLUDED.since, reason = EXCLUDED.reason, "
              "macs = EXCLUDED.macs, profile = EXCLUDED.profile, adopted = EXCLUDED.adopted, "
              "created = EXCLUDED.created",
              (host.name, host.state, host.since, host.reason,
               json.dumps(list(host.macs or [])), host.profile, bool(host.adopted),
               host.created))


def _putEvent(c, event, keep):
    c.execute("INSERT INTO events (key, time, source, target, why) VALUES (%s, %s, %s, %s, %s)",
              (event.key, event.time, event.source, event.target, event.why))
    if keep is not None:
        c.execute("DELETE FROM events WHERE key = %s AND id NOT IN (SELECT id FROM events "
                  "WHERE key = %s ORDER BY id DESC LIMIT %s)", (event.key, event.key, keep))


def _putMachine(c, machine):
    c.execute("INSERT INTO machines (mac, arch, vendor_class, uuid, ip, first_seen, last_seen, "
              "files) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (mac) DO UPDATE SET "
              "arch = EXCLUDED.arch, vendor_class = EXCLUDED.vendor_class, "
              "uuid = EXCLUDED.uuid, ip = EXCLUDED.ip, first_seen = EXCLUDED.first_seen, "
              "last_seen = EXCLUDED.last_seen, files = EXCLUDED.files",
              (machine.mac, machine.arch, machine.vendor_class, machine.uuid, machine.ip,
               machine.first_seen, machine.last_seen, json.dumps(list(machine.files or []))))


def _saveHost(c, host, event, keep):
    _putHost(c, host)
    if event is not None:
        _putEvent(c, event, keep)


def _saveMachine(c, machine, event, keep):
    _putMachine(c, machine)
    if event is not None:
        _putEvent(c, event, keep)


def _forgetMachine(c, mac):
    c.execute("DELETE FROM machines WHERE mac = %s", (mac,))
    c.execute("DELETE FROM events WHERE key = %s", (mac,))


def _adopt(c, mac, host, event, keep):
    c.execute("DELETE FROM machines WHERE mac = %s", (mac,))
    c.execute("UPDATE events SET key = %s WHERE key = %s", (host.name, mac))
    _saveHost(c, host, event, keep)


def _saveToken(c, token):
    c.execute("INSERT INTO tokens (digest, host, minted, expires, used, ip, paths) VALUES "
              "(%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (digest) DO UPDATE SET "
              "host = EXCLUDED.host, minted = EXCLUDED.minted, expires = EXCLUDED.expires, "
              "used = EXCLUDED.used, ip = EXCLUDED.ip, paths = EXCLUDED.paths",
              (token.digest, token.host, token.minted, token.expires, token.used, token.ip,
               json.dumps(list(token.paths or []))))


def _forgetTokens(c, digests):
    if digests:
        c.execute("DELETE FROM tokens WHERE digest = ANY(%s)", (list(digests),))


def _event(row):
    key, time, source, target, why = row
    return Event(key=key, time=time, source=source, target=target, why=why)


def _events(c, key, limit):
    if limit is None:
        c.execute("SELECT key, time, source, target, why FROM events WHERE key = %s "
                  "ORDER BY id", (key,))
        return [_event(row) for row in c.fetchall()]
    c.execute("SELECT key, time, source, target, why FROM events WHERE key = %s "
              "ORDER BY id DESC LIMIT %s", (key, limit))
    return [_event(row) for row in reversed(c.fetchall())]


def _snapshot(c):
    c.execute("SELECT name, state, since, reason, macs, profile, adopted, created FROM hosts "
              "ORDER BY name")
    hosts = [HostRecord(name=name, state=state, since=since, reason=reason,
                        macs=json.loads(macs), profile=profile, adopted=bool(adopted),
                        created=created)
             for name, state, since, reason, macs, profile, adopted, created in c.fetchall()]
    events = {}
    c.execute("SELECT key, time, source, target, why FROM events ORDER BY id")
    for row in c.fetchall():
        events.setdefault(row[0], []).append(_event(row))
    c.execute("SELECT mac, arch, vendor_class, uuid, ip, first_seen, last_seen, files "
              "FROM machines ORDER BY last_seen, mac")
    machines = [Machine(mac=mac, arch=arch, vendor_class=vendor, uuid=uuid, ip=ip,
                        first_seen=first, last_seen=last, files=json.loads(files))
                for mac, arch, vendor, uuid, ip, first, last, files in c.fetchall()]
    c.execute("SELECT digest, host, minted, expires, used, ip, paths FROM tokens "
              "ORDER BY minted, digest")
    tokens = [Token(digest=digest, host=host, minted=minted, expires=expires, used=used, ip=ip,
                    paths=json.loads(paths))
              for digest, host, minted, expires, used, ip, paths in c.fetchall()]
    return Snapshot(hosts, events, machines, tokens)


#: the channel a host store announces its writes on (LISTEN/NOTIFY): a
#: JSON payload C{{"o": origin, "h": host name or machine MAC}}
CHANNEL = "provisioner_hosts"


def _notify(c, origin, key):
    """
    Announce, in the writing transaction (so delivered at its commit, and
    not at all if it rolls back), that C{key} changed.
    """
    if origin is not None and key:
        c.execute("SELECT pg_notify(%s, %s)", (CHANNEL, json.dumps({"o": origin, "h": key})))


def _announced(operation):
    """
    C{operation(c, *args)} followed by L{_notify} of C{key}.
    """
    def run(c, origin, key, *args):
        result = operation(c, *args)
        _notify(c, origin, key)
        return result
    return run


def _hostState(c, name, keep):
    """
    One host as the database holds it: C{(HostRecord or None, [its newest
    C{keep} events], [its tokens])}.
    """
    c.execute("SELECT name, state, since, reason, macs, profile, adopted, created FROM hosts "
              "WHERE name = %s", (name,))
    row = c.fetchone()
    record = None
    if row is not None:
        name, state, since, reason, macs, profile, adopted, created = row
        record = HostRecord(name=name, state=state, since=since, reason=reason,
                            macs=json.loads(macs), profile=profile, adopted=bool(adopted),
                            created=created)
    events = _events(c, name, keep)
    c.execute("SELECT digest, host, minted, expires, used, ip, paths FROM tokens "
              "WHERE host = %s ORDER BY minted, digest", (name,))
    tokens = [Token(digest=digest, host=host, minted=minted, expires=expires, used=used, ip=ip,
                    paths=json.loads(paths))
              for digest, host, minted, expires, used, ip, paths in c.fetchall()]
    return record, events, tokens


@implementer(IHostStore)
class PostgresHostStore:
    """
    The PostgreSQL L{IHostStore}: the tables of migration 1, written by one
    L{Database} (so in submission order), each call one transaction.

    Each write about a host (its record, an event, a token, an adoption)
    is announced on L{CHANNEL} in its transaction, with this store's
    C{origin}, so that the other appliances reload that host
    (L{provisioner.store.notify}); L{reloadHost} and L{reloadAll} read it
    back, and say which hosts this store wrote meanwhile (its memory is
    newer than what was read for those).

    @ivar origin: this store's name in the announcements (the appliance id
        and a nonce of this process), or L{None}: announce nothing.
    """

    def __init__(self, database, origin=None):
        self.database = database
        self.location = database.location
        self.origin = origin
        self._submitted = 0
        self._lastWrite = {}  # host name or MAC -> the submission number of its last write

    def _run(self, key, operation, *args):
        self._submitted += 1
        self._lastWrite[key] = self._submitted
        return self.database.run(_announced(operation), self.origin, key, *args)

    def load(self):
        return self.database.run(_snapshot)

    def saveHost(self, host, event=None, keep=None):
        return self._run(host.name, _saveHost, host.copy(), event and event.copy(), keep)

    def addEvent(self, event, keep=None):
        return self._run(event.key, _putEvent, event.copy(), keep)

    def saveMachine(self, machine, event=None, keep=None):
        return self.database.run(_saveMachine, machine.copy(), event and event.copy(), keep)

    def forgetMachine(self, mac):
        return self.database.run(_forgetMachine, mac)

    def adopt(self, mac, host, event, keep=None):
        return self._run(host.name, _adopt, mac, host.copy(), event.copy(), keep)

    def saveToken(self, token):
        return self._run(token.host, _saveToken, token.copy())

    def forgetTokens(self, digests):
        return self.database.run(_forgetTokens, list(digests))

    def events(self, key, limit=None):
        return self.database.run(_events, key, limit)

    def reloadHost(self, name, keep=None):
        """
        Read host C{name} again (another appliance announced a change).

        @return: a Deferred firing with C{(record or None, events, tokens)}
            (see L{_hostState}), or with L{None} when this store wrote that
            host after the read was asked (memory is newer).
        """
        asked = self._submitted

        def read(state):
            if self._lastWrite.get(name, 0) > asked:
                return None
            return state
        return self.database.run(_hostState, name, keep).addCallback(read)

    def reloadAll(self):
        """
        Read everything again (the announcements may have been missed).

        @return: a Deferred firing with C{(snapshot, names)}: C{names} are
            the hosts this store wrote after the read was asked.
        """
        asked = self._submitted

        def read(snapshot):
            return snapshot, {name for name, n in self._lastWrite.items() if n > asked}
        return self.database.run(_snapshot).addCallback(read)

    def close(self):
        return self.database.close()
