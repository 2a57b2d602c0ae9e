# -*- test-case-name: tests.test_dhcp_leases -*-
"""
The full-mode lease store: in memory for the hot path, persisted to SQLite
(stdlib C{sqlite3}, WAL journal) by a writer off the reactor thread.

Reads never touch the database: it is loaded once when the store opens.
Writes (bind, release, decline, reclaim) are queued; a single writer thread
takes everything queued, runs it in one transaction and commits (group
commit), then fires each write's Deferred in the reactor thread. The
responder sends its ACK only when that Deferred fires, so an acknowledged
lease is on disk: it survives C{kill -9} and a restart. With WAL and
C{synchronous=NORMAL} a commit is a write to the WAL without fsync, so a
process crash loses nothing (a power cut may lose the last commits); with
C{FULL} (C{dhcp.lease_sync: full}) each group commit is also fsynced.

Offers are not persisted (an offer held only in memory is lost on restart;
the client just asks again). The store counts the outstanding offers of each
pool (L{LeaseStore.outstandingOffers}) so that the responder can tell a
DISCOVER flood, and it knows which client holds each address
(L{LeaseStore.holderMismatch}) so that a RELEASE or DECLINE from anyone
else is ignored. Declined addresses are kept oldest first and a DECLINE
may be given a cap per pool (L{LeaseStore.decline}).
"""

import collections
import os
import sqlite3

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from provisioner.store.committer import GroupCommitter
from provisioner.store.interfaces import ILeaseStore

__all__ = ["Lease", "LeaseStore", "SynchronousWriter", "ThreadedWriter"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    mac TEXT PRIMARY KEY,
    ip TEXT NOT NULL UNIQUE,
    expires REAL NOT NULL,
    hostname TEXT,
    client_id TEXT
)
"""


class Lease:
    """
    One address held by one client.

    @ivar mac: C{aa:bb:cc:dd:ee:ff}.
    @ivar ip: dotted text.
    @ivar expires: seconds since the epoch.
    @ivar state: C{offered} (memory only), C{bound}, or C{declined} (the
        address is held away from everyone until C{expires}).
    @ivar clientId: option 61 as hex text, or L{None}.
    @ivar pool: for an offer, the key of the pool it was counted in (or
        L{None}).
    @ivar weak: for an offer, whether it was made under pressure: it keeps
        the address from other DISCOVERs until it expires, but not from
        another client's REQUEST.
    """

    def __init__(self, mac, ip, expires, state="bound", hostname=None, clientId=None,
                 pool=None, weak=False):
        self.mac = mac
        self.ip = ip
        self.expires = expires
        self.state = state
        self.hostname = hostname
        self.clientId = clientId
        self.pool = pool
        self.weak = weak

    def __repr__(self):
        return "<Lease %s %s %s until %.0f>" % (self.mac, self.ip, self.state, self.expires)


def _connect(path, synchronous="NORMAL"):
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    if synchronous not in ("NORMAL", "FULL"):
        raise ValueError("synchronous must be NORMAL or FULL")
    connection.execute("PRAGMA synchronous=%s" % (synchronous,))
    connection.execute(_SCHEMA)
    return connection


def _apply(connection, operations):
    """
    Run queued operations in one transaction.
    """
    connection.execute("BEGIN")
    try:
        for op, args in operations:
            if op == "put":
                connection.execute("DELETE FROM leases WHERE ip = ? AND mac != ?",
                                   (args[1], args[0]))
                connection.execute(
                    "INSERT OR REPLACE INTO leases (mac, ip, expires, hostname, client_id) "
                    "VALUES (?, ?, ?, ?, ?)", args)
            elif op == "delete":
                connection.execute("DELETE FROM leases WHERE mac = ?", args)
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


class SynchronousWriter:
    """
    Writes inline (tests, tools): C{submit} returns an already-fired
    Deferred.
    """

    def __init__(self, path, synchronous="NORMAL"):
        self._connection = _connect(path, synchronous)

    def submit(self, op, args):
        try:
            _apply(self._connection, [(op, args)])
        except Exception:
            return defer.fail()
        return defer.succeed(None)

    def close(self):
        self._connection.close()
        return defer.succeed(None)


class ThreadedWriter:
    """
    One thread with its own connection; group commit (see the module
    docstring and L{provisioner.store.committer}).
    """

    def __init__(self, path, reactor, synchronous="NORMAL"):
        self._committer = GroupCommitter(lambda: _connect(path, synchronous), _applyAll,
                                         reactor, "dhcp-leases")

    @property
    def batches(self):
        """
        How many transactions were committed (for tests/bench).
        """
        return self._committer.batches

    def submit(self, op, args):
        return self._committer.submit((op, args))

    def close(self):
        """
        Finish everything queued, then stop the thread.

        @return: a Deferred that fires once the thread is done.
        """
        return self._committer.close()


def _applyAll(connection, operations):
    """
    Apply a group of lease operations in one transaction: all or none (an
    error fails every one of them).
    """
    _apply(connection, operations)
    return [(True, None)] * len(operations)


@implementer(ILeaseStore)
class LeaseStore:
    """
    Leases by MAC and by IP: the L{ILeaseStore} of one appliance, in SQLite.

    @ivar path: the database file.
    @ivar clock: an C{IReactorTime} (C{seconds()} is wall-clock time for a
        real reactor).
    """

    log = Logger()

    #: one appliance: offers stay in memory, every client is answered
    shared = False
    available = True

    def __init__(self, path, clock, writer=None):
        self.path = path
        self.location = path
        self.clock = clock
        self._initMemory()
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        self._load()
        self.writer = writer if writer is not None else SynchronousWriter(path)

    def _initMemory(self):
        """
        Empty indexes (a store that keeps its leases elsewhere calls this
        instead of reading a file).
        """
        self._byMAC = {}
        self._byIP = {}
        # (pool, weak) -> mac -> offer, oldest first (one hold per queue,
        # so the oldest expires first).
        self._offers = {}
        # ip -> declined marker, oldest first.
        self._declined = collections.OrderedDict()

    def _load(self):
        connection = _connect(self.path)
        try:
            rows = connection.execute(
                "SELECT mac, ip, expires, hostname, client_id FROM leases").fetchall()
        finally:
            connection.close()
        for mac, ip, expires, hostname, clientId in sorted(rows, key=lambda row: row[2]):
            self._remember(Lease(mac, ip, expires, "declined" if mac.startswith("declined:")
                                 else "bound", hostname, clientId))

    def __len__(self):
        return len(self._byMAC)

    def __iter__(self):
        return iter(list(self._byMAC.values()))

    def _remember(self, lease):
        old = self._byMAC.get(lease.mac)
        if old is not None:
            self._unindex(old)
            if self._byIP.get(old.ip) is old:
                del self._byIP[old.ip]
        other = self._byIP.get(lease.ip)
        if other is not None and other.mac != lease.mac:
            self._unindex(other)
            self._byMAC.pop(other.mac, None)
        self._byMAC[lease.mac] = lease
        self._byIP[lease.ip] = lease
        if lease.state == "offered":
            self._offers.setdefault((lease.pool, lease.weak), collections.OrderedDict())[
                lease.mac] = lease
        elif lease.state == "declined":
            self._declined[lease.ip] = lease

    def _unindex(self, lease):
        """
        Take a lease that is going away out of the offer and decline queues.
        """
        if lease.state == "offered":
            queue = self._offers.get((lease.pool, lease.weak))
            if queue is not None and queue.get(lease.mac) is lease:
                del queue[lease.mac]
        elif lease.state == "declined":
            if self._declined.get(lease.ip) is lease:
                del self._declined[lease.ip]

    def _forget(self, lease):
        self._unindex(lease)
        if self._byMAC.get(lease.mac) is lease:
            del self._byMAC[lease.mac]
        if self._byIP.get(lease.ip) is lease:
            del self._byIP[lease.ip]

    def byMAC(self, mac):
        """
        The client's lease (any state, maybe expired), or L{None}.
        """
        return self._byMAC.get(mac)

    def byIP(self, ip):
        return self._byIP.get(ip)

    def isFree(self, ip, mac=None, takeWeak=False):
        """
        Whether C{ip} may go to C{mac}: nobody holds it, or C{mac} does, or
        the holder's lease (or offer) has expired.

        @param takeWeak: whether a weak offer to another client counts as
            free (a REQUEST may take it; a DISCOVER may not).
        """
        lease = self._byIP.get(ip)
        if lease is None or lease.mac == mac:
            return True
        if takeWeak and lease.state == "offered" and lease.weak:
            return True
        return lease.expires <= self.clock.seconds()

    def holderMismatch(self, mac, ip, clientId=None):
        """
        Whether a RELEASE or DECLINE of C{ip} by C{mac} comes from someone
        other than the client holding it (by offer or lease, expired or
        not).

        @param clientId: the packet's option 61 as hex text, or L{None}.
            When the offer or lease recorded one, it must be the same.
        @return: L{None} when C{mac} holds C{ip}, else a few words saying
            why not (for the log).
        """
        lease = self._byMAC.get(mac)
        if lease is None or lease.state == "declined":
            return "no offer or lease for this client"
        if lease.ip != ip:
            return "the client holds another address"
        if lease.clientId is not None and lease.clientId != clientId:
            return "client identifier differs from the lease's"
        return None

    def offer(self, mac, ip, hold, clientId=None, pool=None, weak=False):
        """
        Hold C{ip} for C{mac} for C{hold} seconds (memory only). An existing
        bound lease of the same client and address is kept as it is.

        @param clientId: option 61 as hex text, or L{None}.
        @param pool: a key (the responder uses the subnet) under which the
            offer is counted by L{outstandingOffers}.
        @param weak: see L{Lease.weak}.
        """
        existing = self._byMAC.get(mac)
        if existing is not None and existing.ip == ip and existing.state == "bound" and \
                existing.expires > self.clock.seconds():
            return existing
        self._evictHolder(ip, mac)
        lease = Lease(mac, ip, self.clock.seconds() + hold, "offered", clientId=clientId,
                      pool=pool, weak=weak)
        self._remember(lease)
        return lease

    def claimOffer(self, mac, ip, hold, clientId=None, pool=None, weak=False):
        """
        L{offer}: with one appliance nobody else can hold the address, so
        the Deferred has already fired with the offer.
        """
        return defer.succeed(self.offer(mac, ip, hold, clientId, pool, weak))

    def lookup(self, mac):
        """
        Memory holds everything of one appliance: the client's lease, now.
        """
        return defer.succeed(self._byMAC.get(mac))

    def answers(self, mac):
        """
        One appliance answers every client.
        """
        return True

    def adopts(self, serverID, mac):
        """
        One appliance: a REQUEST selecting another server is not ours.
        """
        return False

    def outstandingOffers(self, pool):
        """
        How many offers counted under C{pool} are still held: sent, not yet
        requested, not expired. Expired ones are forgotten on the way, so
        this costs what expired since the last call.
        """
        now = self.clock.seconds()
        count = 0
        for weak in (False, True):
            queue = self._offers.get((pool, weak))
            if not queue:
                continue
            while queue:
                lease = next(iter(queue.values()))
                if lease.expires > now:
                    break
                self._forget(lease)
            count += len(queue)
        return count

    def oldestWeakOffer(self, pool):
        """
        The oldest weak offer still held under C{pool}, or L{None}.
        """
        self.outstandingOffers(pool)
        queue = self._offers.get((pool, True))
        if not queue:
            return None
        return next(iter(queue.values()))

    def declined(self):
        """
        The declined markers, oldest first.
        """
        return list(self._declined.values())

    def _evictHolder(self, ip, mac):
        holder = self._byIP.get(ip)
        if holder is not None and holder.mac != mac:
            self._forget(holder)
            if holder.state != "offered":
                self.writer.submit("delete", (holder.mac,))

    def bind(self, mac, ip, duration, hostname=None, clientId=None):
        """
        Bind C{ip} to C{mac} for C{duration} seconds.

        @return: a Deferred that fires with the L{Lease} once it is on disk.
        """
        self._evictHolder(ip, mac)
        lease = Lease(mac, ip, self.clock.seconds() + duration, "bound", hostname, clientId)
        self._remember(lease)
        d = self.writer.submit("put", (mac, ip, lease.expires, hostname, clientId))
        d.addCallback(lambda _: lease)
        return d

    def release(self, mac, ip=None):
        """
        Drop the client's lease (RELEASE). Returns a Deferred.
        """
        lease = self._byMAC.get(mac)
        if lease is None or (ip is not None and lease.ip != ip):
            return defer.succeed(None)
        self._forget(lease)
        return self.writer.submit("delete", (mac,))

    def decline(self, mac, ip, hold, limit=None, within=None):
        """
        The client found C{ip} in use (DECLINE): keep it from everyone for
        C{hold} seconds. Returns a Deferred.

        @param limit: at most this many declined addresses for which
            C{within} is true are held at once: the oldest are freed first
            to make room. L{None}: no limit.
        @param within: a predicate on an address (the pool C{ip} is in);
            L{None}: every address.
        """
        lease = self._byMAC.get(mac)
        if lease is not None and lease.ip == ip:
            self._forget(lease)
            self.writer.submit("delete", (mac,))
        if limit is not None:
            self._makeRoomForDecline(ip, max(0, limit - 1), within)
        key = "declined:" + ip
        marker = Lease(key, ip, self.clock.seconds() + hold, "declined")
        self._evictHolder(ip, key)
        self._remember(marker)
        return self.writer.submit("put", (key, ip, marker.expires, None, None))

    def _makeRoomForDecline(self, ip, keep, within):
        """
        Free the oldest declined addresses (other than C{ip}) for which
        C{within} is true until at most C{keep} of them are left.
        """
        now = self.clock.seconds()
        same = []
        for marker in list(self._declined.values()):
            if marker.expires <= now:
                self._forget(marker)
                self.writer.submit("delete", (marker.mac,))
            elif marker.ip != ip and (within is None or within(marker.ip)):
                same.append(marker)
        for marker in same[:max(0, len(same) - keep)]:
            self.log.info("declined address {ip} freed early: the pool's cap of {limit} "
                          "declined addresses is reached", ip=marker.ip, limit=keep + 1)
            self._forget(marker)
            self.writer.submit("delete", (marker.mac,))

    def reclaim(self):
        """
        Forget every expired lease and offer (expired bound leases are
        deleted from disk too).

        @return: how many were reclaimed.
        """
        now = self.clock.seconds()
        expired = [lease for lease in self._byMAC.values() if lease.expires <= now]
        for lease in expired:
            self._forget(lease)
            if lease.state != "offered":
                self.writer.submit("delete", (lease.mac,))
        return len(expired)

    def close(self):
        """
        Flush and close. Returns a Deferred.
        """
        return self.writer.close()
