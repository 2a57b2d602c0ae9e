# -*- test-case-name: tests.test_dhcp6_server -*-
"""
The DHCPv6 full-mode lease store: bindings of C{(DUID, IAID)} to an
address, in memory for the hot path and in SQLite (a file and a table of
their own, C{dhcp6.lease_file}, apart from the DHCPv4 leases) for
durability.

Reads never touch the database: it is loaded when the store opens. Writes
(bind, release, decline, reclaim) go to a writer: L{SynchronousWriter6}
(tests, tools) or L{provisioner.store.committer.GroupCommitter} in one
thread (the service), which commits everything queued in one transaction
and fires each write's Deferred in the reactor thread. The responder sends
its Reply when that Deferred fires, so a lease acknowledged to a client is
on disk.

Advertised addresses (offers) are held in memory only, for
C{dhcp6.offer_hold} seconds.
"""

import os
import sqlite3

from twisted.internet import defer
from twisted.logger import Logger

from provisioner.store.committer import GroupCommitter

__all__ = ["Lease6", "Lease6Store", "SynchronousWriter6", "threadedWriter6"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS leases6 (
    duid TEXT NOT NULL,
    iaid INTEGER NOT NULL,
    address TEXT NOT NULL UNIQUE,
    expires REAL NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (duid, iaid)
)
"""

#: seconds a declined address is kept from everyone
DECLINE_HOLD = 600


class Lease6:
    """
    One address held by one client's IA.

    @ivar duid: the client's DUID, as hex text (C{declined:ADDRESS} for a
        declined address).
    @ivar iaid: the IA's IAID.
    @ivar address: the IPv6 address, as text.
    @ivar expires: seconds since the epoch.
    @ivar state: C{offered} (memory only), C{bound} or C{declined}.
    """

    def __init__(self, duid, iaid, address, expires, state="bound"):
        self.duid = duid
        self.iaid = iaid
        self.address = address
        self.expires = expires
        self.state = state

    @property
    def key(self):
        return (self.duid, self.iaid)

    def __repr__(self):
        return "<Lease6 %s/%d %s %s until %.0f>" % (self.duid, self.iaid, self.address,
                                                   self.state, self.expires)


def _connect(path, synchronous="NORMAL"):
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=%s" % ({"NORMAL": "NORMAL", "FULL": "FULL"}[
        synchronous],))
    connection.execute(_SCHEMA)
    return connection


def _apply(connection, operations):
    """
    Run queued operations in one transaction: all or none.
    """
    connection.execute("BEGIN")
    try:
        for op, args in operations:
            if op == "put":
                duid, iaid, address, expires, state = args
                connection.execute("DELETE FROM leases6 WHERE address = ? AND NOT "
                                   "(duid = ? AND iaid = ?)", (address, duid, iaid))
                connection.execute("INSERT OR REPLACE INTO leases6 (duid, iaid, address, "
                                   "expires, state) VALUES (?, ?, ?, ?, ?)", args)
            elif op == "delete":
                connection.execute("DELETE FROM leases6 WHERE duid = ? AND iaid = ?", args)
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return [(True, None)] * len(operations)


class SynchronousWriter6:
    """
    Writes inline: C{submit} returns an already-fired Deferred.
    """

    batches = 0

    def __init__(self, path, synchronous="NORMAL"):
        self._connection = _connect(path, synchronous)

    def submit(self, item):
        try:
            _apply(self._connection, [item])
        except Exception:
            return defer.fail()
        self.batches += 1
        return defer.succeed(None)

    def close(self):
        self._connection.close()
        return defer.succeed(None)


def threadedWriter6(path, reactor, synchronous="NORMAL"):
    """
    A L{GroupCommitter} thread writing to C{path}.

    @raise sqlite3.Error: the file cannot be opened.
    """
    return GroupCommitter(lambda: _connect(path, synchronous), _apply, reactor,
                          "dhcp6-leases")


class Lease6Store:
    """
    Bindings by C{(duid, iaid)} and by address.

    @ivar path: the database file.
    @ivar clock: an C{IReactorTime}; C{seconds()} is wall-clock time.
    """

    log = Logger()

    def __init__(self, path, clock, writer=None):
        self.path = path
        self.clock = clock
        self._byClient = {}
        self._byAddress = {}
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        self._load()
        self.writer = writer if writer is not None else SynchronousWriter6(path)

    def _load(self):
        connection = _connect(self.path)
        try:
            rows = connection.execute(
                "SELECT duid, iaid, address, expires, state FROM leases6").fetchall()
        finally:
            connection.close()
        now = self.clock.seconds()
        for duid, iaid, address, expires, state in rows:
            if expires > now:
                self._remember(Lease6(duid, iaid, address, expires, state))

    def __len__(self):
        return sum(1 for lease in self._byClient.values() if lease.state == "bound")

    def _remember(self, lease):
        old = self._byClient.get(lease.key)
        if old is not None and self._byAddress.get(old.address) is old:
            del self._byAddress[old.address]
        other = self._byAddress.get(lease.address)
        if other is not None and self._byClient.get(other.key) is other:
            del self._byClient[other.key]
        self._byClient[lease.key] = lease
        self._byAddress[lease.address] = lease

    def _forget(self, lease):
        if self._byClient.get(lease.key) is lease:
            del self._byClient[lease.key]
        if self._byAddress.get(lease.address) is lease:
            del self._byAddress[lease.address]

    # Reads --------------------------------------------------------------

    def get(self, duid, iaid):
        """
        The live lease or offer of an IA, or L{None}.
        """
        lease = self._byClient.get((duid, iaid))
        if lease is not None and lease.expires <= self.clock.seconds():
            return None
        return lease

    def holder(self, address):
        """
        The live lease, offer or decline of an address, or L{None}.
        """
        lease = self._byAddress.get(address)
        if lease is not None and lease.expires <= self.clock.seconds():
            return None
        return lease

    def isFree(self, address, duid, iaid):
        """
        Whether C{address} may go to the IA C{(duid, iaid)}.
        """
        lease = self.holder(address)
        return lease is None or (lease.key == (duid, iaid) and lease.state != "declined")

    def leases(self):
        """
        The live bound leases.
        """
        now = self.clock.seconds()
        return [lease for lease in self._byClient.values()
                if lease.state == "bound" and lease.expires > now]

    # Writes -------------------------------------------------------------

    def offer(self, duid, iaid, address, hold):
        """
        Hold C{address} for the IA for C{hold} seconds (memory only); an
        IA's binding is kept as it is.
        """
        lease = self.get(duid, iaid)
        if lease is not None and lease.state == "bound" and lease.address == address:
            return lease
        lease = Lease6(duid, iaid, address, self.clock.seconds() + hold, "offered")
        self._remember(lease)
        return lease

    def bind(self, duid, iaid, address, valid):
        """
        Bind C{address} to the IA for C{valid} seconds.

        @return: a Deferred firing once it is on disk.
        """
        lease = Lease6(duid, iaid, address, self.clock.seconds() + valid, "bound")
        self._remember(lease)
        return self.writer.submit(("put", (duid, iaid, address, lease.expires, "bound")))

    def release(self, duid, iaid):
        """
        Drop the IA's binding.

        @return: a Deferred firing once it is on disk.
        """
        lease = self._byClient.get((duid, iaid))
        if lease is not None:
            self._forget(lease)
        return self.writer.submit(("delete", (duid, iaid)))

    def decline(self, duid, iaid, address):
        """
        The client found C{address} in use: drop its binding and keep the
        address from everyone for L{DECLINE_HOLD} seconds.

        @return: a Deferred firing once it is on disk.
        """
        lease = self._byClient.get((duid, iaid))
        if lease is not None:
            self._forget(lease)
        held = Lease6("declined:" + address, 0, address,
                      self.clock.seconds() + DECLINE_HOLD, "declined")
        self._remember(held)
        return self.writer.submit(("put", (held.duid, 0, address, held.expires,
                                           "declined")))

    def reclaim(self):
        """
        Forget expired leases, offers and declines (their rows go too).

        @return: how many were forgotten.
        """
        now = self.clock.seconds()
        expired = [lease for lease in self._byClient.values() if lease.expires <= now]
        for lease in expired:
            self._forget(lease)
            if lease.state != "offered":
                self.writer.submit(("delete", (lease.duid, lease.iaid))).addErrback(
                    lambda f: self.log.failure("lease row not removed", f))
        return len(expired)

    def close(self):
        return self.writer.close()

