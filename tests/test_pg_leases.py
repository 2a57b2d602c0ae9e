"""
Tests for the DHCP lease stores behind L{ILeaseStore}: the same tests run
against the SQLite store of one appliance and the PostgreSQL store several
appliances share (a throwaway cluster of L{tests.pglab}); then what only
sharing has: the address's key deciding races between appliances, the
RFC 3074 hash and the heartbeats that say who answers whom, the database
going away (renewals from memory, new leases refused, one log line) and
coming back, and the responder answering only its own clients.
"""

import os
import random
import time

from twisted.internet import defer, reactor
from twisted.internet.task import Clock, deferLater
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from provisioner.dhcp import wire
from provisioner.dhcp.leases import LeaseStore
from provisioner.dhcp.server import DHCPResponder, InterfaceInfo
from provisioner.config import loadConfig
from provisioner.directory import ClientDirectory
from provisioner.store import postgres
from provisioner.store.interfaces import AddressTaken, ILeaseStore, StoreUnavailable
from provisioner.store.postgres_leases import (
    _MIXING,
    Membership,
    PostgresLeaseStore,
    loadBalanceHash,
    owner,
)
from tests import pglab

A = "52:54:00:00:00:01"
B = "52:54:00:00:00:02"
C = "52:54:00:00:00:03"
IP = "198.18.190.100"
IP2 = "198.18.190.101"


def mac(i):
    return "02:00:00:00:%02x:%02x" % (i // 256, i % 256)


class _LeaseStoreTests:
    """
    What every L{ILeaseStore} does; subclasses open one (C{open}) and open
    another on the same data (C{reopen}: a restart).
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(time.time())
        self.store = self.open()

    def test_interface(self):
        """
        The store provides L{ILeaseStore}.
        """
        self.assertTrue(verifyObject(ILeaseStore, self.store))
        self.assertTrue(self.store.available)

    @defer.inlineCallbacks
    def test_bindPersists(self):
        """
        If a lease is bound, its Deferred fires with it, and a new store on
        the same data knows it.
        """
        lease = yield self.store.bind(A, IP, 60, hostname="h", clientId="01aa")
        self.assertEqual((lease.mac, lease.ip, lease.expires), (A, IP, self.clock.seconds() + 60))
        again = yield self.reopen()
        self.assertEqual(again.byMAC(A).ip, IP)
        self.assertEqual((again.byIP(IP).hostname, again.byIP(IP).clientId), ("h", "01aa"))

    @defer.inlineCallbacks
    def test_claimOffer(self):
        """
        If an address is offered (claimed), it is held for the client: not
        free for another, free for the client itself; an offer to a client
        holding that address bound keeps its lease.
        """
        offer = yield self.store.claimOffer(A, IP, 30, pool="p")
        self.assertEqual((offer.mac, offer.ip, offer.state), (A, IP, "offered"))
        self.assertFalse(self.store.isFree(IP, B))
        self.assertTrue(self.store.isFree(IP, A))
        self.assertEqual(self.store.outstandingOffers("p"), 1)
        yield self.store.bind(B, IP2, 600)
        kept = yield self.store.claimOffer(B, IP2, 30)
        self.assertEqual(kept.state, "bound")

    @defer.inlineCallbacks
    def test_releaseAndRebind(self):
        """
        A release frees the address (also after a restart); a client binding
        another address frees its old one.
        """
        yield self.store.bind(A, IP, 60)
        yield self.store.bind(A, IP2, 60)
        self.assertIsNone(self.store.byIP(IP))
        yield self.store.bind(B, IP, 60)
        yield self.store.release(B, IP)
        self.assertIsNone(self.store.byMAC(B))
        again = yield self.reopen()
        self.assertEqual(sorted((l.mac, l.ip) for l in again), [(A, IP2)])

    @defer.inlineCallbacks
    def test_decline(self):
        """
        A declined address is held from everyone, also after a restart.
        """
        yield self.store.bind(A, IP, 60)
        yield self.store.decline(A, IP, 600)
        self.assertIsNone(self.store.byMAC(A))
        self.assertFalse(self.store.isFree(IP, A))
        again = yield self.reopen()
        self.assertFalse(again.isFree(IP, B))

    @defer.inlineCallbacks
    def test_reclaim(self):
        """
        Expired leases and offers are reclaimed, in memory and in the data;
        live ones stay.
        """
        yield self.store.bind(A, IP, 60)
        yield self.store.bind(B, IP2, 600)
        yield self.store.claimOffer(C, "198.18.190.102", 30)
        self.clock.advance(100)
        self.assertEqual(self.store.reclaim(), 2)
        self.assertEqual([l.mac for l in self.store], [B])
        yield self.flush()
        again = yield self.reopen()
        self.assertEqual([l.mac for l in again], [B])

    @defer.inlineCallbacks
    def test_lookupAndAnswers(self):
        """
        C{lookup} fires with the client's lease; a store alone answers every
        client (a shared one: see L{SharedTests}).
        """
        yield self.store.bind(A, IP, 60)
        lease = yield self.store.lookup(A)
        self.assertEqual(lease.ip, IP)
        self.assertIsNone((yield self.store.lookup(B)))


class SQLiteLeaseStoreTests(_LeaseStoreTests, TestCase):
    """
    The shared tests against the SQLite store.
    """

    def open(self):
        self.path = getattr(self, "path", None) or os.path.join(self.mktemp(), "l.sqlite")
        store = LeaseStore(self.path, self.clock)
        self.addCleanup(store.close)
        return store

    def reopen(self):
        return defer.succeed(self.open())

    def flush(self):
        return defer.succeed(None)

    def test_notShared(self):
        """
        The SQLite store is not shared and answers everyone.
        """
        self.assertFalse(self.store.shared)
        self.assertTrue(self.store.answers(A))


class _Postgres:
    """
    A fresh migrated database per test; stores with a membership that has
    beaten once (so they are available).
    """

    def setUp(self):
        self.cluster = pglab.cluster(self)
        self.dsn = self.cluster.createDatabase()
        postgres.upgrade(self.dsn)

    @defer.inlineCallbacks
    def openShared(self, me="a", failoverAfter=3.0, clock=None):
        membership = Membership(postgres.Database(self.dsn, reactor, "beat-" + me), reactor, me,
                                failoverAfter)
        store = PostgresLeaseStore(postgres.Database(self.dsn, reactor, "leases-" + me),
                                   clock or self.clock, membership)

        @defer.inlineCallbacks
        def close():
            yield membership.stop()
            yield membership.database.close()
            yield store.close()
        self.addCleanup(close)
        yield membership.beat()
        yield store.refresh()
        return store

    def rows(self):
        return self.cluster.query(self.dsn, "SELECT host(ip), mac, state FROM leases ORDER BY ip")


class PostgresLeaseStoreTests(_Postgres, _LeaseStoreTests, TestCase):
    """
    The shared tests against PostgreSQL.
    """

    def setUp(self):
        _Postgres.setUp(self)
        self.clock = Clock()
        self.clock.advance(time.time())
        self.stores = []
        return self.openShared().addCallback(lambda store: setattr(self, "store", store))

    def reopen(self):
        return self.openShared(me="again")

    def flush(self):
        # the store's worker runs in order: a call queued now runs after
        return self.store.database.run(lambda c: None)

    def test_shared(self):
        """
        The PostgreSQL store is shared; it answers a client only when the
        hash gives it to this appliance.
        """
        self.assertTrue(self.store.shared)
        self.assertEqual(self.store.membership.live, ("a",))
        self.assertTrue(self.store.answers(A))

    @defer.inlineCallbacks
    def test_offerRecordedBeforeSent(self):
        """
        An offer is a row of the database (state offered, with its short
        expiry) once its Deferred fires.
        """
        yield self.store.claimOffer(A, IP, 30)
        self.assertEqual(self.rows(), [(IP, A, "offered")])
        expires = self.cluster.query(self.dsn, "SELECT expires FROM leases")[0][0]
        self.assertAlmostEqual(expires, self.clock.seconds() + 30, places=3)


class SharedTests(_Postgres, TestCase):
    """
    Two appliances' stores on one database.
    """

    def setUp(self):
        _Postgres.setUp(self)
        self.clock = Clock()
        self.clock.advance(time.time())

    @defer.inlineCallbacks
    def test_addressTakenByOther(self):
        """
        If appliance b claims an address a offered to another client, b is
        told no (L{None}), learns the holder (the address is no longer free
        in b's memory) and counts a collision; binding it fails with
        L{AddressTaken}; once a's offer expired, b may take it.
        """
        a = yield self.openShared("a")
        b = yield self.openShared("b")
        yield a.claimOffer(A, IP, 30)
        self.assertIsNone((yield b.claimOffer(B, IP, 30)))
        self.assertFalse(b.isFree(IP, B))
        self.assertEqual(b.collisions, 1)
        with self.assertRaises(AddressTaken):
            yield b.bind(B, IP, 600)
        self.clock.advance(31)
        lease = yield b.bind(B, IP, 600)
        self.assertEqual(lease.ip, IP)
        self.assertEqual(self.rows(), [(IP, B, "bound")])

    @defer.inlineCallbacks
    def test_claimInFlightShared(self):
        """
        If a client's DISCOVER comes again while its first claim is in
        flight, the second claim waits for the first and gets the same
        offer: one row, one address.
        """
        a = yield self.openShared("a")
        first = a.claimOffer(A, IP, 30)
        second = a.claimOffer(A, IP2, 30)
        offers = yield defer.gatherResults([first, second])
        self.assertEqual([o.ip for o in offers], [IP, IP])
        self.assertEqual(self.rows(), [(IP, A, "offered")])
        third = yield a.claimOffer(A, IP2, 30)
        self.assertEqual(third.ip, IP2)

    @defer.inlineCallbacks
    def test_raceDecidedByKey(self):
        """
        If two appliances claim the same 40 addresses for different clients
        at the same moment, each address goes to exactly one client, the
        database holds each once, and the losers were told so.
        """
        a = yield self.openShared("a")
        b = yield self.openShared("b")
        ips = ["198.18.190.%d" % (i,) for i in range(10, 50)]
        claims = []
        for i, ip in enumerate(ips):
            claims.append(a.claimOffer(mac(i), ip, 30))
            claims.append(b.claimOffer(mac(1000 + i), ip, 30))
        results = yield defer.gatherResults(claims)
        won = [r for r in results if r is not None]
        self.assertEqual(sorted(r.ip for r in won), ips)
        self.assertEqual(len(self.rows()), len(ips))
        self.assertEqual(a.collisions + b.collisions, len(ips))

    @defer.inlineCallbacks
    def test_otherAppliancesLeaseSeen(self):
        """
        A lease bound through appliance a is found by b's C{lookup} (a
        client moving between appliances) and by b's refresh.
        """
        a = yield self.openShared("a")
        b = yield self.openShared("b")
        yield a.bind(A, IP, 600)
        lease = yield b.lookup(A)
        self.assertEqual((lease.ip, lease.state), (IP, "bound"))
        yield a.bind(B, IP2, 600)
        self.assertIsNone(b.byMAC(B))
        yield b.refresh()
        self.assertEqual(b.byMAC(B).ip, IP2)
        self.assertFalse(b.isFree(IP2, C))
        self.assertEqual((yield b.refresh()), 0)

    @defer.inlineCallbacks
    def test_reclaimSparesRenewed(self):
        """
        If a lease expired in a's memory was renewed through b meanwhile,
        a's reclaim does not delete b's row.
        """
        a = yield self.openShared("a")
        b = yield self.openShared("b", clock=Clock())
        b.clock.advance(self.clock.seconds())
        yield a.bind(A, IP, 60)
        self.clock.advance(61)
        b.clock.advance(61)
        yield b.bind(A, IP, 600)
        a.reclaim()
        yield a.database.run(lambda c: None)
        self.assertEqual(self.rows(), [(IP, A, "bound")])


class HashTests(TestCase):
    """
    RFC 3074's hash and the owner of each client.
    """

    def test_mixingTable(self):
        """
        The mixing table is a permutation of 0..255 beginning as RFC 3074's.
        """
        self.assertEqual(sorted(_MIXING), list(range(256)))
        self.assertEqual(list(_MIXING[:4]), [251, 175, 119, 215])

    def test_hash(self):
        """
        The hash is Pearson's over the key from its last byte, seeded with
        its length.
        """
        self.assertEqual(loadBalanceHash(b""), 0)
        self.assertEqual(loadBalanceHash(b"\x00"), _MIXING[1])
        self.assertEqual(loadBalanceHash(b"\x01\x02"), _MIXING[_MIXING[2 ^ 2] ^ 1])

    def test_ownerSpread(self):
        """
        Clients spread over the live appliances (each gets a fair share of
        2,000 MACs), whatever order the ids come in; with one appliance it
        owns everyone; with none, nobody does.
        """
        rng = random.Random(7)
        macs = [":".join("%02x" % rng.randrange(256) for _ in range(6)) for _ in range(2000)]
        for live in (("a", "b"), ("a", "b", "c")):
            counts = {}
            for m in macs:
                self.assertEqual(owner(m, live), owner(m, tuple(reversed(live))))
                counts[owner(m, live)] = counts.get(owner(m, live), 0) + 1
            self.assertEqual(set(counts), set(live))
            for count in counts.values():
                self.assertGreater(count, 0.6 * len(macs) / len(live))
        self.assertEqual({owner(m, ("a",)) for m in macs}, {"a"})
        self.assertIsNone(owner(macs[0], ()))


class MembershipTests(_Postgres, TestCase):
    """
    Heartbeats: who is live, who owns whom, failing over, the database
    going away and coming back.
    """

    def setUp(self):
        _Postgres.setUp(self)
        self.clock = Clock()
        self.clock.advance(time.time())
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def said(self, text):
        return [e for e in self.events if text in (e.get("log_format") or "")]

    @defer.inlineCallbacks
    def test_failover(self):
        """
        With two appliances beating, every client is owned by exactly one;
        when b stops beating, a owns b's clients once C{failover_after}
        passed, not before; when b leaves cleanly, at once.
        """
        a = yield self.openShared("a", failoverAfter=1.0)
        b = yield self.openShared("b", failoverAfter=1.0)
        yield a.membership.beat()
        self.assertEqual((a.membership.live, b.membership.live), (("a", "b"), ("a", "b")))
        macs = [mac(i) for i in range(200)]
        self.assertEqual([a.answers(m) != b.answers(m) for m in macs], [True] * 200)
        theirs = [m for m in macs if b.answers(m)]
        self.assertTrue(theirs)
        yield a.membership.beat()
        self.assertFalse(any(a.answers(m) for m in theirs))
        yield deferLater(reactor, 1.2, lambda: None)
        yield a.membership.beat()
        self.assertEqual(a.membership.live, ("a",))
        self.assertTrue(all(a.answers(m) for m in macs))
        yield b.membership.beat()
        yield a.membership.beat()
        self.assertEqual(a.membership.live, ("a", "b"))
        yield b.membership.stop()
        yield a.membership.beat()
        self.assertEqual(a.membership.live, ("a",))

    @defer.inlineCallbacks
    def test_adoptsGoneAppliancesRequests(self):
        """
        A REQUEST selecting appliance b's address is a's to answer (for the
        clients a owns) only once b's heartbeat stopped; a learnt offer of
        b's, dropped by a (its client selected b), stays in the database.
        """
        a = yield self.openShared("a", failoverAfter=1.0)
        b = yield self.openShared("b", failoverAfter=1.0)
        a.membership.addresses = ("198.18.190.1",)
        b.membership.addresses = ("198.18.190.2",)
        yield b.membership.beat()
        yield a.membership.beat()
        self.assertFalse(a.adopts("198.18.190.2", A))
        yield b.claimOffer(A, IP, 30)
        yield a.refresh()
        self.assertEqual(a.byMAC(A).state, "offered")
        yield a.release(A)
        self.assertIsNone(a.byMAC(A))
        self.assertEqual(self.rows(), [(IP, A, "offered")])
        b.membership._loop = None
        yield deferLater(reactor, 1.2, lambda: None)
        yield a.membership.beat()
        self.assertEqual(a.membership.gone, frozenset(["198.18.190.2"]))
        self.assertTrue(a.adopts("198.18.190.2", A))
        self.assertFalse(a.adopts("198.18.190.9", A))

    @defer.inlineCallbacks
    def test_databaseAway(self):
        """
        If the database stops: the outage is logged once however many calls
        fail; new offers and leases are refused (L{StoreUnavailable}); a
        renewal of a lease in memory is ACKed from memory; no client is
        answered a DISCOVER. When it is back, the next heartbeat ends the
        outage (logged once), the renewal is written, and new leases are
        given again.
        """
        store = yield self.openShared("a")
        yield store.bind(A, IP, 600)
        self.cluster.stop()
        try:
            for _ in range(3):
                yield store.membership.beat()
            self.assertFalse(store.available)
            self.assertFalse(store.answers(A))
            with self.assertRaises(StoreUnavailable):
                yield store.claimOffer(B, IP2, 30)
            with self.assertRaises(StoreUnavailable):
                yield store.bind(B, IP2, 600)
            self.clock.advance(10)
            renewed = yield store.bind(A, IP, 600)
            self.assertEqual(renewed.expires, self.clock.seconds() + 600)
            self.assertEqual(list(store.pending), [A])
            self.assertEqual(len(self.said("unreachable")), 1)
            self.assertEqual(store.membership.outages, 1)
        finally:
            self.cluster.start()
        yield store.membership.beat()
        self.assertTrue(store.available)
        self.assertEqual(len(self.said("reachable again")), 1)
        yield store.database.run(lambda c: None)
        expires = self.cluster.query(self.dsn, "SELECT expires FROM leases WHERE mac = %s",
                                     (A,))[0][0]
        self.assertAlmostEqual(expires, self.clock.seconds() + 600, places=3)
        self.assertEqual(store.pending, {})
        lease = yield store.bind(B, IP2, 600)
        self.assertEqual(lease.ip, IP2)

    @defer.inlineCallbacks
    def test_restartBetweenCalls(self):
        """
        If the server restarts between two lease calls (the store's
        connection died idle), the next call reconnects and works: no
        outage.
        """
        store = yield self.openShared("a")
        yield store.bind(A, IP, 600)
        self.cluster.stop()
        self.cluster.start()
        lease = yield store.bind(B, IP2, 600)
        self.assertEqual(lease.ip, IP2)
        self.assertTrue(store.available)
        self.assertEqual(store.membership.outages, 0)


class ResponderTests(_Postgres, TestCase):
    """
    The full-mode responder over two appliances' shared stores.
    """

    def setUp(self):
        _Postgres.setUp(self)
        self.clock = Clock()
        self.clock.advance(time.time())

    def responder(self, store, server):
        config = loadConfig(overrides=[
            ("dhcp.mode", "full"), ("dhcp.server_address", server),
            ("dhcp.subnets", [{"network": "198.18.190.0/24",
                               "range": ["198.18.190.10", "198.18.190.20"]}])])["dhcp"]
        return DHCPResponder(config, self.clock, ClientDirectory(), store)

    def discover(self, m):
        p = wire.DHCPPacket(xid=random.randrange(1 << 32), flags=0x8000,
                            chaddr=bytes.fromhex(m.replace(":", "")))
        p.setOption(wire.OPT.MESSAGE_TYPE, bytes((wire.DHCPDISCOVER,)))
        return p

    @defer.inlineCallbacks
    def test_onlyOwnerOffers(self):
        """
        A DISCOVER reaching both appliances is answered by one: the client's
        owner, with an address recorded in the database for that client;
        the whole pool goes to 11 clients without an address twice.
        """
        a = yield self.openShared("a")
        b = yield self.openShared("b")
        yield a.membership.beat()
        ra, rb = self.responder(a, "198.18.190.1"), self.responder(b, "198.18.190.2")
        iface = InterfaceInfo(None, None)
        offered = {}
        for i in range(11):
            m = mac(i)
            sent = []
            for r in (ra, rb):
                yield r.handleDHCP(self.discover(m), iface,
                                   lambda reply, address, r=r: sent.append((r, reply)))
            self.assertEqual(len(sent), 1, m)
            responder, reply = sent[0]
            self.assertIs(responder, ra if a.answers(m) else rb)
            offered[m] = reply.yiaddr
        self.assertEqual(len(set(offered.values())), 11)
        self.assertEqual(sorted((r[1], r[0]) for r in self.rows()),
                         sorted(offered.items()))
