# -*- test-case-name: tests.test_hosts_store -*-
"""
The embedded L{IHostStore}: one SQLite file (stdlib C{sqlite3}, WAL
journal), written by one thread off the reactor, as the DHCP lease store is.

Each call is queued; the writer thread takes everything queued, runs it in
one transaction (each call in its own savepoint, so that one failing call
fails alone) and commits (group commit), then fires each call's Deferred in
the reactor thread. With WAL and C{synchronous=NORMAL} a commit survives a
crash of the process (a power cut may lose the last commits); C{FULL} also
fsyncs each group commit.

L{SQLiteHostStore.load} reads on the calling thread, with a connection of
its own, before anything is written: the appliance loads once, at start.
Without a reactor (C{threaded=False}: tests, tools) every call runs inline
and returns a Deferred that has already fired.
"""

import json
import os
import sqlite3

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from provisioner.store.committer import GroupCommitter
from provisioner.store.interfaces import IHostStore
from provisioner.store.records import Event, HostRecord, Machine, Snapshot, Token

__all__ = ["SQLiteHostStore", "SCHEMA_VERSION", "FILENAME"]

#: the file's name in the state directory
FILENAME = "hosts.sqlite"

SCHEMA_VERSION = 1

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS hosts (
        name TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        since REAL NOT NULL,
        reason TEXT,
        macs TEXT NOT NULL,
        profile TEXT,
        adopted INTEGER NOT NULL,
        created REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL,
        time REAL NOT NULL,
        source TEXT,
        target TEXT NOT NULL,
        why TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS events_by_key ON events (key, id)",
    """CREATE TABLE IF NOT EXISTS machines (
        mac TEXT PRIMARY KEY,
        arch INTEGER,
        vendor_class TEXT,
        uuid TEXT,
        ip TEXT,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        files TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS tokens (
        digest TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        minted REAL NOT NULL,
        expires REAL NOT NULL,
        used REAL,
        ip TEXT,
        paths TEXT NOT NULL)""",
]


class StoreVersionError(Exception):
    """
    The file was written by a newer provisioner.
    """


def _connect(path, synchronous="NORMAL"):
    if synchronous not in ("NORMAL", "FULL"):
        raise ValueError("synchronous must be NORMAL or FULL")
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                 timeout=30)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=%s" % (synchronous,))
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreVersionError("%s has schema version %d; this provisioner knows %d"
                                    % (path, version, SCHEMA_VERSION))
        for statement in _SCHEMA:
            connection.execute(statement)
        if version < SCHEMA_VERSION:
            connection.execute("PRAGMA user_version=%d" % (SCHEMA_VERSION,))
    except BaseException:
        connection.close()
        raise
    return connection


# The operations, each run by the writer inside a transaction.

def _putHost(c, host):
    c.execute("INSERT OR REPLACE INTO hosts (name, state, since, reason, macs, profile, "
              "adopted, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
              (host.name, host.state, host.since, host.reason, json.dumps(list(host.macs or [])),
               host.profile, 1 if host.adopted else 0, host.created))


def _putEvent(c, event, keep):
    c.execute("INSERT INTO events (key, time, source, target, why) VALUES (?, ?, ?, ?, ?)",
              (event.key, event.time, event.source, event.target, event.why))
    if keep is not None:
        c.execute("DELETE FROM events WHERE key = ? AND id NOT IN (SELECT id FROM events "
                  "WHERE key = ? ORDER BY id DESC LIMIT ?)", (event.key, event.key, keep))


def _putMachine(c, machine):
    c.execute("INSERT OR REPLACE INTO machines (mac, arch, vendor_class, uuid, ip, first_seen, "
              "last_seen, files) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
    c.execute("DELETE FROM machines WHERE mac = ?", (mac,))
    c.execute("DELETE FROM events WHERE key = ?", (mac,))


def _adopt(c, mac, host, event, keep):
    c.execute("DELETE FROM machines WHERE mac = ?", (mac,))
    c.execute("UPDATE events SET key = ? WHERE key = ?", (host.name, mac))
    _saveHost(c, host, event, keep)


def _saveToken(c, token):
    c.execute("INSERT OR REPLACE INTO tokens (digest, host, minted, expires, used, ip, paths) "
              "VALUES (?, ?, ?, ?, ?, ?, ?)",
              (token.digest, token.host, token.minted, token.expires, token.used, token.ip,
               json.dumps(list(token.paths or []))))


def _forgetTokens(c, digests):
    c.executemany("DELETE FROM tokens WHERE digest = ?", [(d,) for d in digests])


def _events(c, key, limit):
    if limit is None:
        rows = c.execute("SELECT key, time, source, target, why FROM events WHERE key = ? "
                         "ORDER BY id", (key,)).fetchall()
    else:
        rows = c.execute("SELECT key, time, source, target, why FROM events WHERE key = ? "
                         "ORDER BY id DESC LIMIT ?", (key, limit)).fetchall()
        rows.reverse()
    return [_event(row) for row in rows]


def _event(row):
    key, time, source, target, why = row
    return Event(key=key, time=time, source=source, target=target, why=why)


def _snapshot(c):
    hosts = [HostRecord(name=name, state=state, since=since, reason=reason,
                        macs=json.loads(macs), profile=profile, adopted=bool(adopted),
                        created=created)
             for name, state, since, reason, macs, profile, adopted, created in c.execute(
                 "SELECT name, state, since, reason, macs, profile, adopted, created FROM hosts "
                 "ORDER BY name")]
    events = {}
    for row in c.execute("SELECT key, time, source, target, why FROM events ORDER BY id"):
        events.setdefault(row[0], []).append(_event(row))
    machines = [Machine(mac=mac, arch=arch, vendor_class=vendor, uuid=uuid, ip=ip,
                        first_seen=first, last_seen=last, files=json.loads(files))
                for mac, arch, vendor, uuid, ip, first, last, files in c.execute(
                    "SELECT mac, arch, vendor_class, uuid, ip, first_seen, last_seen, files "
                    "FROM machines ORDER BY last_seen, mac")]
    tokens = [Token(digest=digest, host=host, minted=minted, expires=expires, used=used, ip=ip,
                    paths=json.loads(paths))
              for digest, host, minted, expires, used, ip, paths in c.execute(
                  "SELECT digest, host, minted, expires, used, ip, paths FROM tokens "
                  "ORDER BY minted, digest")]
    return Snapshot(hosts, events, machines, tokens)


def _batch(connection, work):
    """
    Run C{[(function, args)]} in one transaction, each in a savepoint.

    @return: C{[(ok, result or exception)]} in order.
    """
    results = []
    connection.execute("BEGIN")
    try:
        for function, args in work:
            connection.execute("SAVEPOINT one")
            try:
                result = function(connection, *args)
            except Exception as e:
                connection.execute("ROLLBACK TO one")
                connection.execute("RELEASE one")
                results.append((False, e))
            else:
                connection.execute("RELEASE one")
                results.append((True, result))
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return results


@implementer(IHostStore)
class SQLiteHostStore:
    """
    The SQLite L{IHostStore}.

    @ivar path: the database file.
    @ivar batches: how many transactions were committed (tests, bench).
    """

    log = Logger()

    def __init__(self, path, reactor=None, threaded=True, synchronous="NORMAL"):
        """
        Open (and create) the file; the directory is made if missing.

        @param reactor: fires the Deferreds of the threaded writer
            (C{callFromThread}); needed when C{threaded}.
        @raise sqlite3.Error, OSError, StoreVersionError: the file cannot be
            used.
        """
        self.path = path
        self.location = path
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        self._synchronous = synchronous
        self._closed = None
        self._connection = None
        self._committer = None
        self._inline = 0
        if not threaded:
            self._connection = _connect(path, synchronous)
            return
        if reactor is None:
            raise ValueError("a threaded store needs a reactor")
        self._committer = GroupCommitter(lambda: _connect(path, synchronous), _batch, reactor,
                                         "hosts-store")

    @property
    def batches(self):
        """
        How many transactions were committed (tests, bench).
        """
        if self._committer is not None:
            return self._committer.batches
        return self._inline

    # IHostStore

    def load(self):
        connection = _connect(self.path, self._synchronous)
        try:
            return defer.succeed(_snapshot(connection))
        except Exception:
            return defer.fail()
        finally:
            connection.close()

    def saveHost(self, host, event=None, keep=None):
        return self._submit(_saveHost, host.copy(), event and event.copy(), keep)

    def addEvent(self, event, keep=None):
        return self._submit(_putEvent, event.copy(), keep)

    def saveMachine(self, machine, event=None, keep=None):
        return self._submit(_saveMachine, machine.copy(), event and event.copy(), keep)

    def forgetMachine(self, mac):
        return self._submit(_forgetMachine, mac)

    def adopt(self, mac, host, event, keep=None):
        return self._submit(_adopt, mac, host.copy(), event.copy(), keep)

    def saveToken(self, token):
        return self._submit(_saveToken, token.copy())

    def forgetTokens(self, digests):
        return self._submit(_forgetTokens, list(digests))

    def events(self, key, limit=None):
        return self._submit(_events, key, limit)

    def close(self):
        if self._closed is not None:
            return self._closed
        if self._committer is None:
            self._connection.close()
            self._closed = defer.succeed(None)
        else:
            self._closed = self._committer.close()
        return self._closed

    # The writer.

    def _submit(self, function, *args):
        if self._closed is not None:
            return defer.fail(RuntimeError("the host store %s is closed" % (self.path,)))
        if self._committer is None:
            try:
                (ok, result), = _batch(self._connection, [(function, args)])
            except Exception:
                return defer.fail()
            self._inline += 1
            return defer.succeed(result) if ok else defer.fail(result)
        return self._committer.submit((function, args))
