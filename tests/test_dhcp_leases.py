# -*- test-case-name: tests.test_dhcp_leases -*-
"""
Tests for L{provisioner.dhcp.leases}.
"""

import os
import sqlite3

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from provisioner.dhcp.leases import LeaseStore, ThreadedWriter

A = "52:54:00:00:00:01"
B = "52:54:00:00:00:02"


class LeaseStoreTests(SynchronousTestCase):
    """
    The store with the synchronous writer and a fake clock.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.path = os.path.join(self.mktemp(), "leases.sqlite")
        self.store = LeaseStore(self.path, self.clock)
        self.addCleanup(self.store.close)

    def reopen(self):
        return LeaseStore(self.path, self.clock)

    def test_walMode(self):
        """
        If the store opens a database, it is in WAL journal mode.
        """
        connection = sqlite3.connect(self.path)
        self.addCleanup(connection.close)
        self.assertEqual(connection.execute("PRAGMA journal_mode").fetchone()[0], "wal")

    def test_bindPersists(self):
        """
        If a lease is bound, its Deferred fires with it, and a new store on
        the same file knows it.
        """
        lease = self.successResultOf(self.store.bind(A, "198.18.0.100", 60, hostname="h"))
        self.assertEqual((lease.mac, lease.ip, lease.expires), (A, "198.18.0.100", 1060))
        again = self.reopen()
        self.assertEqual(again.byMAC(A).ip, "198.18.0.100")
        self.assertEqual(again.byIP("198.18.0.100").hostname, "h")
        again.close()

    def test_offerIsMemoryOnly(self):
        """
        If an address is offered, it is held for the client but not written.
        """
        self.store.offer(A, "198.18.0.100", 30)
        self.assertFalse(self.store.isFree("198.18.0.100", B))
        self.assertTrue(self.store.isFree("198.18.0.100", A))
        self.assertIsNone(self.reopen().byMAC(A))

    def test_offerExpires(self):
        """
        If an offer's hold passes, the address is free for others.
        """
        self.store.offer(A, "198.18.0.100", 30)
        self.clock.advance(31)
        self.assertTrue(self.store.isFree("198.18.0.100", B))

    def test_offerKeepsBoundLease(self):
        """
        If a client with a bound lease is offered the same address, the
        bound lease is kept (not downgraded to an offer).
        """
        self.store.bind(A, "198.18.0.100", 600)
        lease = self.store.offer(A, "198.18.0.100", 30)
        self.assertEqual(lease.state, "bound")

    def test_rebindMoves(self):
        """
        If a client binds another address, the old one is free.
        """
        self.store.bind(A, "198.18.0.100", 60)
        self.store.bind(A, "198.18.0.101", 60)
        self.assertIsNone(self.store.byIP("198.18.0.100"))
        self.assertEqual([(l.mac, l.ip) for l in self.reopen()], [(A, "198.18.0.101")])

    def test_bindTakesExpiredAddress(self):
        """
        If an expired lease's address is bound by another client, the old
        holder's lease is gone, in memory and on disk.
        """
        self.store.bind(A, "198.18.0.100", 60)
        self.clock.advance(61)
        self.assertTrue(self.store.isFree("198.18.0.100", B))
        self.store.bind(B, "198.18.0.100", 60)
        self.assertIsNone(self.store.byMAC(A))
        self.assertEqual([(l.mac, l.ip) for l in self.reopen()], [(B, "198.18.0.100")])

    def test_release(self):
        """
        If a lease is released, it is gone from memory and disk; a release
        naming another address does nothing.
        """
        self.store.bind(A, "198.18.0.100", 60)
        self.store.release(A, "198.18.0.99")
        self.assertIsNotNone(self.store.byMAC(A))
        self.successResultOf(self.store.release(A, "198.18.0.100"))
        self.assertIsNone(self.store.byMAC(A))
        self.assertEqual(len(self.reopen()), 0)

    def test_decline(self):
        """
        If a client declines an address, nobody gets it until the hold
        passes, even after a restart.
        """
        self.store.bind(A, "198.18.0.100", 60)
        self.store.decline(A, "198.18.0.100", 600)
        self.assertIsNone(self.store.byMAC(A))
        self.assertFalse(self.store.isFree("198.18.0.100", A))
        self.assertFalse(self.reopen().isFree("198.18.0.100", B))
        self.clock.advance(601)
        self.assertTrue(self.store.isFree("198.18.0.100", B))

    def test_holderMismatch(self):
        """
        If a RELEASE or DECLINE is checked against the store, only the MAC
        holding the address (offer or lease) passes, with the recorded
        client identifier when there is one.
        """
        self.store.bind(A, "198.18.0.100", 60, clientId="01aa")
        self.store.offer(B, "198.18.0.101", 30)
        self.assertIsNone(self.store.holderMismatch(A, "198.18.0.100", "01aa"))
        self.assertIsNone(self.store.holderMismatch(B, "198.18.0.101"))
        self.assertIsNone(self.store.holderMismatch(B, "198.18.0.101", "0199"))
        for mac, ip, clientId in [(B, "198.18.0.100", None), (A, "198.18.0.101", "01aa"),
                                  (A, "198.18.0.100", None), (A, "198.18.0.100", "01bb"),
                                  ("52:54:00:00:00:03", "198.18.0.102", None)]:
            self.assertIsInstance(self.store.holderMismatch(mac, ip, clientId), str)
        self.store.decline(A, "198.18.0.100", 600)
        self.assertIsNotNone(self.store.holderMismatch("declined:198.18.0.100",
                                                       "198.18.0.100"))

    def test_outstandingOffers(self):
        """
        If offers are made under a pool key, they are counted until they
        expire or are bound; each queue forgets its expired offers.
        """
        self.store.offer(A, "198.18.0.100", 30, pool="p")
        self.store.offer(B, "198.18.0.101", 3, pool="p", weak=True)
        self.store.offer("52:54:00:00:00:03", "198.18.0.102", 30, pool="q")
        self.assertEqual(self.store.outstandingOffers("p"), 2)
        self.assertEqual(self.store.oldestWeakOffer("p").mac, B)
        self.clock.advance(4)
        self.assertEqual(self.store.outstandingOffers("p"), 1)
        self.assertIsNone(self.store.oldestWeakOffer("p"))
        self.assertIsNone(self.store.byMAC(B))
        self.store.bind(A, "198.18.0.100", 60)
        self.assertEqual(self.store.outstandingOffers("p"), 0)
        self.assertEqual(self.store.outstandingOffers("q"), 1)

    def test_weakOffer(self):
        """
        If an address is weakly offered, it is not free for another
        DISCOVER but is for another client's REQUEST, and binding it there
        forgets the offer.
        """
        self.store.offer(A, "198.18.0.100", 3, pool="p", weak=True)
        self.assertFalse(self.store.isFree("198.18.0.100", B))
        self.assertTrue(self.store.isFree("198.18.0.100", B, takeWeak=True))
        self.store.bind(B, "198.18.0.100", 60)
        self.assertIsNone(self.store.byMAC(A))
        self.assertEqual(self.store.outstandingOffers("p"), 0)
        self.assertFalse(self.store.isFree("198.18.0.100", A, takeWeak=True))

    def test_declineLimit(self):
        """
        If a DECLINE is given a limit and a pool, the pool's oldest declined
        addresses are freed (memory and disk) to keep at most that many;
        other pools' are not touched.
        """
        inPool = lambda ip: ip.startswith("198.18.0.")  # noqa: E731
        self.store.decline(A, "198.18.9.1", 600)
        for last in range(1, 5):
            self.store.decline(A, "198.18.0.%d" % (last,), 600, limit=2, within=inPool)
            self.clock.advance(1)
        self.assertEqual([m.ip for m in self.store.declined()],
                         ["198.18.9.1", "198.18.0.3", "198.18.0.4"])
        self.assertEqual(sorted(l.ip for l in self.reopen()),
                         ["198.18.0.3", "198.18.0.4", "198.18.9.1"])
        self.assertTrue(self.store.isFree("198.18.0.1", B))

    def test_reclaim(self):
        """
        If leases and offers have expired, reclaim forgets them and deletes
        the leases from disk; live ones stay.
        """
        self.store.bind(A, "198.18.0.100", 60)
        self.store.bind(B, "198.18.0.101", 600)
        self.store.offer("52:54:00:00:00:03", "198.18.0.102", 30)
        self.clock.advance(100)
        self.assertEqual(self.store.reclaim(), 2)
        self.assertEqual([l.mac for l in self.store], [B])
        self.assertEqual([l.mac for l in self.reopen()], [B])


class ThreadedWriterTests(TestCase):
    """
    The writer thread: group commit, Deferreds fired in the reactor.
    """

    def test_groupCommit(self):
        """
        If many leases are bound at once, every Deferred fires, all rows are
        on disk, and they were committed in fewer transactions than writes.
        """
        from twisted.internet import reactor as globalReactor  # a real thread needs it
        path = os.path.join(self.mktemp(), "leases.sqlite")
        os.makedirs(os.path.dirname(path))
        writer = ThreadedWriter(path, globalReactor)
        store = LeaseStore(path, globalReactor, writer)
        from twisted.internet import defer
        ds = [store.bind("52:54:00:00:%02x:%02x" % (i // 256, i % 256),
                         "198.18.%d.%d" % (i // 200, i % 200 + 1), 600)
              for i in range(500)]

        def check(_):
            self.assertLess(writer.batches, 500)
            connection = sqlite3.connect(path)
            try:
                self.assertEqual(connection.execute(
                    "SELECT COUNT(*) FROM leases").fetchone()[0], 500)
            finally:
                connection.close()
        d = defer.gatherResults(ds)
        d.addCallback(lambda _: store.close())
        d.addCallback(check)
        return d
