# -*- test-case-name: tests.test_pg_leases -*-
"""
DHCP leases shared by several appliances on one PostgreSQL database
(C{store.backend: postgresql}): L{PostgresLeaseStore}, an L{ILeaseStore},
and L{Membership}, the heartbeats that decide which appliance answers which
client.

Who gets an address is decided by the database, never by timing: the
C{leases} table's primary key is the address. An offer is a row (state
C{offered}, expiring after C{dhcp.offer_hold}) written before the OFFER is
sent, and a lease is a row written before the ACK. A claim locks the
address's row (C{SELECT ... FOR UPDATE}) and takes it only when it is free,
this client's, or expired; two appliances inserting the same free address
at once collide on the key, and the loser (a unique violation) is told the
address is taken, learns its holder and chooses another.

Which appliance answers a DISCOVER is decided without the appliances
talking to each other: every appliance writes its heartbeat row
(C{appliances}: id, last_seen, by the database's clock) every
C{store.heartbeat_interval} seconds and reads the ids seen within
C{store.failover_after} seconds; a client belongs to
C{live[hash(MAC) % len(live)]}, C{live} sorted, with the hash of RFC 3074
(section 6). When an appliance stops beating, the others stop counting it
after C{failover_after} seconds and answer its clients. Every appliance
computes the same owner from the same rows; while their views differ (a
heartbeat apart), a client may get two offers or none for a moment, never
one address given twice.

Memory holds a cache of the leases (all of them at start, then every
change the others make, read each heartbeat): reads never wait for the
database. While the database is unreachable, new leases are refused (the
outage is logged once, and its end), and a renewal of a lease the cache
holds is ACKed from the cache and written once the database is back.
"""

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from provisioner.dhcp.leases import Lease, LeaseStore
from provisioner.store.interfaces import AddressTaken, StoreUnavailable

__all__ = ["PostgresLeaseStore", "Membership", "loadBalanceHash", "owner"]

# RFC 3074 section 6: a "mixing table" of 256 distinct values in
# pseudo-random order (Pearson's hash).
_MIXING = bytes([
    251, 175, 119, 215, 81, 14, 79, 191, 103, 49, 181, 143, 186, 157, 0,
    232, 31, 32, 55, 60, 152, 58, 17, 237, 174, 70, 160, 144, 220, 90, 57,
    223, 59, 3, 18, 140, 111, 166, 203, 196, 134, 243, 124, 95, 222, 179,
    197, 65, 180, 48, 36, 15, 107, 46, 233, 130, 165, 30, 123, 161, 209, 23,
    97, 16, 40, 91, 219, 61, 100, 10, 210, 109, 250, 127, 22, 138, 29, 108,
    244, 67, 207, 9, 178, 204, 74, 98, 126, 249, 167, 116, 34, 77, 193,
    200, 121, 5, 20, 113, 71, 35, 128, 13, 182, 94, 25, 226, 227, 199, 75,
    27, 41, 245, 230, 224, 43, 225, 177, 26, 155, 150, 212, 142, 218, 115,
    241, 73, 88, 105, 39, 114, 62, 255, 192, 201, 145, 214, 168, 158, 221,
    148, 154, 122, 12, 84, 82, 163, 44, 139, 228, 236, 205, 242, 217, 11,
    187, 146, 159, 64, 86, 239, 195, 42, 106, 198, 118, 112, 184, 172, 87,
    2, 173, 117, 176, 229, 247, 253, 137, 185, 99, 164, 102, 147, 45, 66,
    231, 52, 141, 211, 194, 206, 246, 238, 56, 110, 78, 248, 63, 240, 189,
    93, 92, 51, 53, 183, 19, 171, 72, 50, 33, 104, 101, 69, 8, 252, 83, 120,
    76, 135, 85, 54, 202, 125, 188, 213, 96, 235, 136, 208, 162, 129, 190,
    132, 156, 38, 47, 1, 7, 254, 24, 4, 216, 131, 89, 21, 28, 133, 37, 153,
    149, 80, 170, 68, 6, 169, 234, 151,
])


def loadBalanceHash(key):
    """
    RFC 3074's hash of C{key} (bytes: here the client's hardware address),
    0 to 255.
    """
    value = len(key) & 0xff
    for byte in reversed(key):
        value = _MIXING[value ^ byte]
    return value


def owner(mac, live):
    """
    Which of the C{live} appliance ids (any order) answers C{mac}
    (C{aa:bb:...}), or L{None} when none is live.
    """
    if not live:
        return None
    ordered = sorted(live)
    return ordered[loadBalanceHash(bytes.fromhex(mac.replace(":", ""))) % len(ordered)]


def _heartbeat(c, me, addresses, failoverAfter):
    """
    Write this appliance's heartbeat; read every appliance's.

    @return: C{[(id, addresses, live)]}, by id.
    """
    c.execute("INSERT INTO appliances (id, addresses, started, last_seen) VALUES (%s, %s, "
              "extract(epoch FROM clock_timestamp()), extract(epoch FROM clock_timestamp())) "
              "ON CONFLICT (id) DO UPDATE SET last_seen = EXCLUDED.last_seen, "
              "addresses = EXCLUDED.addresses", (me, ",".join(addresses)))
    c.execute("SELECT id, addresses, last_seen > extract(epoch FROM clock_timestamp()) - %s "
              "FROM appliances ORDER BY id", (failoverAfter,))
    return c.fetchall()


def _leave(c, me):
    c.execute("DELETE FROM appliances WHERE id = %s", (me,))


class Membership:
    """
    This appliance's heartbeat and its view of the live appliances.

    @ivar me: this appliance's id.
    @ivar live: the ids seen within C{failoverAfter} at the last heartbeat,
        sorted; empty until the first one and while the database is away.
    @ivar available: whether the last call to the database worked.
    @ivar outages: how many outages began (tests, metrics).
    @ivar addresses: this appliance's DHCP server addresses (option 54),
        written with its heartbeat so that the others know them.
    @ivar gone: the server addresses of the appliances whose heartbeat
        stopped (their clients' REQUESTs selecting them are answered by the
        clients' new owners).
    """

    log = Logger()

    def __init__(self, database, reactor, me, failoverAfter=3.0, interval=1.0):
        self.database = database
        self.reactor = reactor
        self.me = me
        self.failoverAfter = failoverAfter
        self.interval = interval
        self.live = ()
        self.addresses = ()
        self.gone = frozenset()
        self.available = False
        self.outages = 0
        self._down = None
        self._beating = None
        self._loop = None
        self._listeners = []

    def onBeat(self, callback):
        """
        Call C{callback(recovered)} after each successful heartbeat
        (C{recovered}: the first after an outage).
        """
        self._listeners.append(callback)

    def start(self):
        self._loop = task.LoopingCall(self.beat)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=True)

    def beat(self):
        """
        One heartbeat (skipped while the previous one is still out).

        @return: its Deferred.
        """
        if self._beating is not None:
            return self._beating
        d = self._beating = self.database.run(_heartbeat, self.me, list(self.addresses),
                                              self.failoverAfter)

        def done(result):
            self._beating = None
            return result
        d.addBoth(done)
        d.addCallbacks(self._beaten, self._failed)
        return d

    def _beaten(self, rows):
        ids = [id for id, addresses, live in rows if live]
        self.gone = frozenset(address for id, addresses, live in rows if not live
                              for address in addresses.split(",") if address) - \
            frozenset(self.addresses)
        if tuple(ids) != self.live:
            self.log.info("appliances live on the shared store: {ids} (this one: {me})",
                          ids=", ".join(ids), me=self.me)
        self.live = tuple(ids)
        recovered = self.reached()
        for callback in self._listeners:
            try:
                callback(recovered)
            except Exception:
                self.log.failure("heartbeat listener failed")

    def _failed(self, failure):
        if failure.check(StoreUnavailable):
            self.lost(failure.value)
        else:
            self.log.failure("heartbeat failed", failure)

    def lost(self, reason):
        """
        A call to the database failed for want of it: stop giving new
        leases (logged once per outage).
        """
        self.available = False
        self.live = ()
        if self._down is None:
            self._down = self.reactor.seconds()
            self.outages += 1
            self.log.warn("shared store unreachable ({reason}): new DHCP leases refused, "
                          "renewals of known leases answered from memory, until it returns",
                          reason=str(reason))

    def reached(self):
        """
        A call to the database worked.

        @return: whether this ends an outage.
        """
        self.available = True
        if self._down is None:
            return False
        self.log.info("shared store reachable again after {seconds:.1f}s: new DHCP leases "
                      "given again", seconds=self.reactor.seconds() - self._down)
        self._down = None
        return True

    @property
    def downSince(self):
        """
        When the current outage began (C{reactor.seconds()}), or L{None}
        while the database answers (C{/healthz}).
        """
        return self._down

    def owns(self, mac):
        """
        Whether this appliance answers C{mac} (a live list that does not
        name this appliance yet owns nothing).
        """
        return self.available and owner(mac, self.live) == self.me

    def stop(self):
        """
        Stop beating and remove this appliance's row, so that the others
        take its clients at once rather than after C{failover_after}.
        """
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if not self.available:
            return defer.succeed(None)
        d = self.database.run(_leave, self.me)
        d.addErrback(lambda f: None)
        return d


# The lease operations, each run in the worker inside a transaction.

_COLUMNS = "ip, mac, state, expires, weak, hostname, client_id, appliance, change"


def _row(row):
    ip, mac, state, expires, weak, hostname, clientId, appliance, change = row
    return dict(ip=str(ip), mac=mac, state=state, expires=expires, weak=weak,
                hostname=hostname, clientId=clientId, appliance=appliance, change=change)


def _claim(c, lease, me, now, takeWeak):
    """
    Take C{lease.ip} for C{lease.mac} if nobody else holds it.

    @return: C{("ok", None)}; C{("kept", row)} (an offer to a client that
        holds this address bound: its lease stays); or C{("taken", row)}.
    """
    import psycopg
    c.execute("SELECT " + _COLUMNS + " FROM leases WHERE ip = %s FOR UPDATE", (lease.ip,))
    found = c.fetchone()
    values = (lease.mac, lease.state, lease.expires, lease.weak, lease.hostname,
              lease.clientId, me)
    if found is None:
        try:
            with c.connection.transaction():
                c.execute("INSERT INTO leases (ip, mac, state, expires, weak, hostname, "
                          "client_id, appliance) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                          (lease.ip,) + values)
        except psycopg.errors.UniqueViolation:
            # Another appliance inserted it first: it is theirs.
            c.execute("SELECT " + _COLUMNS + " FROM leases WHERE ip = %s", (lease.ip,))
            found = c.fetchone()
            return ("taken", _row(found) if found else None)
    else:
        holder = _row(found)
        if holder["mac"] == lease.mac:
            if lease.state == "offered" and holder["state"] == "bound" and \
                    holder["expires"] > now:
                return ("kept", holder)
        elif not (holder["expires"] <= now or (takeWeak and holder["state"] == "offered" and
                                               holder["weak"])):
            return ("taken", holder)
        c.execute("UPDATE leases SET mac = %s, state = %s, expires = %s, weak = %s, "
                  "hostname = %s, client_id = %s, appliance = %s, "
                  "change = nextval('lease_changes') WHERE ip = %s", values + (lease.ip,))
    if lease.state == "bound":
        # The client's other rows (offers, an older lease) go with its lease.
        c.execute("DELETE FROM leases WHERE mac = %s AND ip <> %s", (lease.mac, lease.ip))
    # An offer leaves the client's earlier offers alone: a DISCOVER sent
    # again while the first was still being claimed gets a second address,
    # and the client may REQUEST either; the one not taken expires.
    return ("ok", None)


def _rowsOf(c, mac):
    c.execute("SELECT " + _COLUMNS + " FROM leases WHERE mac = %s", (mac,))
    return [_row(row) for row in c.fetchall()]


def _changes(c, since):
    c.execute("SELECT " + _COLUMNS + " FROM leases WHERE change > %s ORDER BY change",
              (since,))
    return [_row(row) for row in c.fetchall()]


def _delete(c, mac, ip):
    c.execute("DELETE FROM leases WHERE mac = %s AND ip = %s", (mac, ip))


def _deleteExpired(c, now):
    c.execute("DELETE FROM leases WHERE expires <= %s", (now,))
    return c.rowcount


def _declineAddress(c, mac, ip, marker, expires, me):
    c.execute("DELETE FROM leases WHERE mac = %s AND ip = %s", (mac, ip))
    c.execute("INSERT INTO leases (ip, mac, state, expires, appliance) VALUES "
              "(%s, %s, 'declined', %s, %s) ON CONFLICT (ip) DO UPDATE SET mac = EXCLUDED.mac, "
              "state = 'declined', expires = EXCLUDED.expires, weak = FALSE, hostname = NULL, "
              "client_id = NULL, appliance = EXCLUDED.appliance, "
              "change = nextval('lease_changes')", (ip, marker, expires, me))


class _MarkerWriter:
    """
    What the shared L{LeaseStore} code still writes through C{writer}: the
    deletion of declined markers freed to make room (by marker, which names
    one address).
    """

    def __init__(self, store):
        self.store = store

    def submit(self, op, args):
        if op == "delete" and args[0].startswith("declined:"):
            return self.store._quietly(_delete, args[0], args[0][len("declined:"):])
        return defer.succeed(None)


class PostgresLeaseStore(LeaseStore):
    """
    The shared L{ILeaseStore}: memory as L{LeaseStore} keeps it, the
    database as the authority on who holds which address.

    @ivar database: the L{provisioner.store.postgres.Database} of the
        leases.
    @ivar membership: the L{Membership} (heartbeats, owners, outages).
    @ivar pending: C{{mac: Lease}}: renewals ACKed from memory while the
        database was away, written when it returns.
    @ivar collisions: how many claims found the address taken (tests,
        metrics).
    """

    log = Logger()

    shared = True

    def __init__(self, database, clock, membership):
        self.path = None
        self.location = database.location
        self.clock = clock
        self.database = database
        self.membership = membership
        self.me = membership.me
        self.pending = {}
        self.collisions = 0
        self._seen = 0
        self._refreshing = None
        # mac -> [Deferred]: the callers waiting on a claim in flight
        self._claims = {}
        self._initMemory()
        self.writer = _MarkerWriter(self)
        membership.onBeat(self._beaten)

    @property
    def available(self):
        return self.membership.available

    def answers(self, mac):
        return self.membership.owns(mac)

    def adopts(self, serverID, mac):
        return serverID in self.membership.gone and self.membership.owns(mac)

    # The cache ------------------------------------------------------------

    def _learn(self, row):
        """
        Take what the database says of one address into memory (another
        appliance's offer or lease, or one of ours after a restart).
        """
        if row is None:
            return None
        mine = self._byMAC.get(row["mac"])
        if mine is not None and mine.ip == row["ip"] and mine.expires >= row["expires"] and \
                mine.state == row["state"]:
            return mine
        held = self._byIP.get(row["ip"])
        if held is not None and held.mac != row["mac"]:
            self._forget(held)
        lease = Lease(row["mac"], row["ip"], row["expires"], row["state"], row["hostname"],
                      row["clientId"], weak=row["weak"])
        lease.appliance = row["appliance"]
        self._remember(lease)
        return lease

    def refresh(self):
        """
        Read every change since the last refresh (all rows the first time)
        into memory.

        @return: a Deferred firing with how many rows were read.
        """
        if self._refreshing is not None:
            return self._refreshing
        d = self._refreshing = self.database.run(_changes, self._seen)

        def read(rows):
            for row in rows:
                self._seen = max(self._seen, row["change"])
                self._learn(row)
            return len(rows)

        def done(result):
            self._refreshing = None
            return result
        d.addCallback(read)
        d.addBoth(done)
        return d

    def _beaten(self, recovered):
        if recovered and self.pending:
            self._flushPending()
        self._quietly(None)

    def _quietly(self, function, *args):
        """
        Run C{function} (L{None}: a refresh) in the database; an outage
        marks the store unavailable, anything else is logged.
        """
        d = self.refresh() if function is None else self.database.run(function, *args)

        def failed(failure):
            if failure.check(StoreUnavailable):
                self.membership.lost(failure.value)
            else:
                self.log.failure("shared lease store: {what} failed", failure,
                                 what=getattr(function, "__name__", "refresh"))
        d.addErrback(failed)
        return d

    def _flushPending(self):
        """
        Write the renewals ACKed from memory during the outage.
        """
        pending, self.pending = self.pending, {}
        self.log.info("writing {count} renewals answered during the outage",
                      count=len(pending))
        for lease in pending.values():
            d = self.database.run(_claim, lease, self.me, self.clock.seconds(), False)

            def written(result, lease=lease):
                status, row = result
                if status == "taken":
                    self.log.warn("lease of {ip} renewed for {mac} during the outage is held "
                                  "by {other} in the database now", ip=lease.ip, mac=lease.mac,
                                  other=row and row["mac"])

            def failed(failure, lease=lease):
                if failure.check(StoreUnavailable):
                    self.pending[lease.mac] = lease
                    self.membership.lost(failure.value)
                else:
                    self.log.failure("renewal of {mac} not written", failure, mac=lease.mac)
            d.addCallbacks(written, failed)

    # ILeaseStore -----------------------------------------------------------

    def _evictHolder(self, ip, mac):
        # The claim in the database takes the row; memory only here.
        holder = self._byIP.get(ip)
        if holder is not None and holder.mac != mac:
            self._forget(holder)

    def _unavailable(self, failure):
        if failure.check(StoreUnavailable):
            self.membership.lost(failure.value)
        return failure

    def claimOffer(self, mac, ip, hold, clientId=None, pool=None, weak=False):
        """
        See L{ILeaseStore.claimOffer}. While a claim for C{mac} is in flight
        (a DISCOVER sent again before the first was answered), another
        claim for it waits for that one and fires with its result: one
        address, one row.
        """
        if not self.available:
            return defer.fail(StoreUnavailable("the shared store is unreachable"))
        waiting = self._claims.get(mac)
        if waiting is not None:
            d = defer.Deferred()
            waiting.append(d)
            return d
        waiting = self._claims[mac] = []
        d = self._claimOffer(mac, ip, hold, clientId, pool, weak)

        def settled(result):
            del self._claims[mac]
            for other in waiting:
                if isinstance(result, Failure):
                    other.errback(result)
                else:
                    other.callback(result)
            return result
        d.addBoth(settled)
        return d

    def _claimOffer(self, mac, ip, hold, clientId, pool, weak):
        now = self.clock.seconds()
        wanted = Lease(mac, ip, now + hold, "offered", clientId=clientId, pool=pool, weak=weak)
        d = self.database.run(_claim, wanted, self.me, now, False)

        def claimed(result):
            status, row = result
            if status == "taken":
                self.collisions += 1
                self._learn(row)
                return None
            if status == "kept":
                return self._learn(row)
            return LeaseStore.offer(self, mac, ip, hold, clientId, pool, weak)
        d.addCallbacks(claimed, self._unavailable)
        return d

    def lookup(self, mac):
        known = self._byMAC.get(mac)
        if known is not None or not self.available:
            return defer.succeed(known)
        d = self.database.run(_rowsOf, mac)

        def read(rows):
            for row in rows:
                self._learn(row)
            return self._byMAC.get(mac)
        d.addCallbacks(read, self._unavailable)
        return d

    def bind(self, mac, ip, duration, hostname=None, clientId=None):
        now = self.clock.seconds()
        previous = self._byMAC.get(mac)
        renewal = previous is not None and previous.ip == ip and \
            previous.state == "bound" and previous.expires > now
        lease = Lease(mac, ip, now + duration, "bound", hostname, clientId)

        def fromMemory():
            self._remember(lease)
            self.pending[mac] = lease
            return lease
        if not self.available:
            if renewal:
                return defer.succeed(fromMemory())
            return defer.fail(StoreUnavailable("the shared store is unreachable"))
        d = self.database.run(_claim, lease, self.me, now, True)

        def claimed(result):
            status, row = result
            if status == "taken":
                self.collisions += 1
                self._learn(row)
                raise AddressTaken("%s is held for %s" % (ip, row and row["mac"]))
            self._evictHolder(ip, mac)
            self._remember(lease)
            return lease

        def failed(failure):
            self._unavailable(failure)
            if failure.check(StoreUnavailable) and renewal:
                return fromMemory()
            return failure
        d.addCallbacks(claimed, failed)
        return d

    def release(self, mac, ip=None):
        lease = self._byMAC.get(mac)
        if lease is None or (ip is not None and lease.ip != ip):
            return defer.succeed(None)
        self._forget(lease)
        if lease.state == "offered" and getattr(lease, "appliance", self.me) != self.me:
            # Another appliance's offer, learnt: a REQUEST selecting that
            # appliance drops it from memory here, never from the database
            # (it is that appliance's, or its successor's, to answer).
            return defer.succeed(None)
        self.pending.pop(mac, None)
        return self._quietly(_delete, mac, lease.ip)

    def decline(self, mac, ip, hold, limit=None, within=None):
        lease = self._byMAC.get(mac)
        if lease is not None and lease.ip == ip:
            self._forget(lease)
        if limit is not None:
            self._makeRoomForDecline(ip, max(0, limit - 1), within)
        key = "declined:" + ip
        marker = Lease(key, ip, self.clock.seconds() + hold, "declined")
        self._evictHolder(ip, key)
        self._remember(marker)
        return self._quietly(_declineAddress, mac, ip, key, marker.expires, self.me)

    def reclaim(self):
        now = self.clock.seconds()
        expired = [lease for lease in self._byMAC.values() if lease.expires <= now]
        for lease in expired:
            self._forget(lease)
        if self.available:
            self._quietly(_deleteExpired, now)
        return len(expired)

    def close(self):
        return self.database.close()
