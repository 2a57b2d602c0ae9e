"""
Tests for L{provisioner.client.receiver}: writing at offsets, reports,
spoofed and stale datagrams, resuming from the state file, clear errors.
"""

import errno
import hashlib
import os
import socket

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorThreads, ISystemHandle
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import alsoProvides, implementer

from provisioner.imagecast import commands
from provisioner.imagecast import pieces as P
from provisioner.imagecast import ranges as R
from provisioner.imagecast.datagram import DataDatagram
from provisioner.client.receiver import OutputFile, ReceiveError, Receiver, threadRunner
from tests.fakes import FakeReactor

KEY = b"s" * 32


class FakeServer:
    """
    The receiver's control connection: records calls, answers C{{}}.
    """

    def __init__(self, data=b""):
        self.calls = []
        self.data = data

    def callRemote(self, command, **kw):
        self.calls.append((command, kw))
        if command is commands.FetchRange:
            return defer.succeed({"data": self.data[kw["offset"]:kw["offset"] + kw["length"]]})
        return defer.succeed({})

    def named(self, command):
        return [kw for c, kw in self.calls if c is command]


def withSocket(port, sock):
    """
    Give a fake port a system handle, C{sock}, as a real port has.

    @return: C{sock}.
    """
    alsoProvides(port, ISystemHandle)
    port.getHandle = lambda: sock
    return sock


def SessionKeyFast():
    from provisioner.imagecast import datagram
    return datagram._fastpath is not None and hasattr(datagram._fastpath, "receive_batch")


class ReceiverCase(SynchronousTestCase):
    """
    A receiver of a 10,000-byte image on a L{FakeReactor}, its fake
    server, and helpers that push announcements and datagrams.
    """

    def setUp(self):
        self.data = os.urandom(10000)
        self.sha = hashlib.sha256(self.data).hexdigest()
        self.path = self.mktemp()
        self.reactor = FakeReactor()
        self.server = FakeServer(self.data)
        self.receiver = self.make()

    def make(self):
        r = Receiver(self.reactor, OutputFile(self.path), "me",
                     hasher=lambda p: defer.succeed(hashlib.sha256(
                         open(p, "rb").read()).hexdigest()))
        r.connected(self.server)
        return r

    def announce(self, receiver=None, round=1, ranges=None, session=5, pieceSize=None,
                 data=None):
        """
        Push the piece digests of C{data} (default: the image; pieces of
        C{pieceSize}, default as the server cuts them), as the server does
        before its first announcement, then the announcement.
        """
        data = self.data if data is None else data
        pieceSize = pieceSize or P.pieceSizeFor(len(data))
        digests = b"".join(hashlib.sha256(data[o:o + pieceSize]).digest()
                           for o in range(0, len(data), pieceSize))
        (receiver or self.receiver).pieces(session=session, pieceSize=pieceSize,
                                           digests=digests)
        (receiver or self.receiver).announce(
            session=session, name="img", size=len(self.data), sha256=self.sha, chunkSize=1000,
            ranges=ranges if ranges is not None else [(0, len(self.data))],
            group="239.255.42.1", port=7011, key=KEY, round=round)

    def send(self, offsets, round=1, key=KEY, session=5, receiver=None):
        for o in offsets:
            wire = DataDatagram(session, round, o, self.data[o:o + 1000]).to_wire(key)
            (receiver or self.receiver).datagramReceived(wire, ("198.18.0.1", 1))

    def wires(self, offsets, round=1, size=1000):
        return [memoryview(DataDatagram(5, round, o, self.data[o:o + size]).to_wire(KEY))
                for o in offsets]


    def readSocket(self, r, wires, batch=64):
        """
        Send C{wires} to a loopback socket and have C{r} read them with its
        C fast path (the data port's C{readBatch}); return the count.
        """
        from provisioner.imagecast import datagram
        if not SessionKeyFast():
            if os.environ.get("PROVISIONER_REQUIRE_E2E") == "1":
                self.fail("the C fast path is not built (scripts/setup builds it)")
            raise self.skipTest("the C fast path is not built")
        self.assertTrue(datagram.SessionKey(KEY, 5).canReceive())
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(rx.close)
        rx.bind(("127.0.0.1", 0))
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(tx.close)
        tx.connect(rx.getsockname())
        for w in wires:
            tx.send(w)
        return self.reactor.ports[-1].protocol.readBatch(rx, batch, 2048)


class ReceiverTests(ReceiverCase):
    """
    Tests for L{Receiver}.
    """

    def test_reportsWhatIsMissing(self):
        """
        If some datagrams of round 1 are lost, the receiver reports exactly
        the missing ranges after the round ends, and stays in the group.
        """
        self.announce()
        self.assertEqual(self.reactor.ports[-1].memberships, [("join", "239.255.42.1")])
        self.send([0, 1000, 4000, 5000, 9000])
        self.receiver.endRound(session=5, round=1)
        self.reactor.advance(0.5)
        report = self.server.named(commands.ReportMissing)[-1]
        self.assertEqual(report["ranges"], [(2000, 4000), (6000, 9000)])
        self.assertEqual(report["round"], 1)

    def test_reportsOnceLastDatagramRead(self):
        """
        If the round's last datagram has been read and the socket is empty,
        the receiver reports at once, without waiting for C{EndRound} and a
        quiet period; the C{EndRound} that follows adds no second report.
        """
        self.announce()
        self.send([o for o in range(0, 10000, 1000) if o != 3000])
        self.reactor.advance(0)
        reports = self.server.named(commands.ReportMissing)
        self.assertEqual([r["ranges"] for r in reports], [[(3000, 4000)]])
        self.receiver.endRound(session=5, round=1)
        self.reactor.advance(1)
        self.assertEqual(len(self.server.named(commands.ReportMissing)), 1)

    def test_lastDatagramLostWaitsForEndRound(self):
        """
        If the round's last datagram is lost, the receiver reports after
        C{EndRound} and the quiet period, as before.
        """
        self.announce()
        self.send(range(0, 9000, 1000))
        self.reactor.advance(1)
        self.assertEqual(self.server.named(commands.ReportMissing), [])
        self.receiver.endRound(session=5, round=1)
        self.reactor.advance(0.5)
        self.assertEqual(self.server.named(commands.ReportMissing)[-1]["ranges"],
                         [(9000, 10000)])

    def test_nextRoundPositionKept(self):
        """
        If datagrams of the next round are read after this receiver's report
        but before the round's announcement, the position they reached is
        kept for flow control (not reset by the announcement); without a
        report of the previous round, the announcement resets it.
        """
        self.announce()
        self.send([0, 1000, 9000])
        self.reactor.advance(0)
        self.assertEqual(self.receiver._position, 0)  # reported: restarts
        self.send([2000, 3000], round=2)
        self.assertEqual(self.receiver._position, 4000)
        self.announce(round=2, ranges=[(2000, 9000)])
        self.assertEqual(self.receiver._position, 4000)
        self.announce(round=4, ranges=[(4000, 9000)])
        self.assertEqual(self.receiver._position, 0)

    def test_reportAgainAfterReconnecting(self):
        """
        If the control connection is replaced after a report (which may
        have been lost with it), the C{EndRound} pushed after registering
        again gets a new report.
        """
        self.announce()
        self.send([o for o in range(0, 10000, 1000) if o != 3000])
        self.reactor.advance(0)
        self.assertEqual(len(self.server.named(commands.ReportMissing)), 1)
        other = FakeServer(self.data)
        self.receiver.connected(other)
        self.receiver.endRound(session=5, round=1)
        self.reactor.advance(0.5)
        self.assertEqual(other.named(commands.ReportMissing)[-1]["ranges"], [(3000, 4000)])

    def test_completesAfterRepair(self):
        """
        If round 2 brings the missing bytes, the receiver reports nothing
        missing, leaves the group, verifies the sha256 and sends Complete;
        the exit status is 0 and the bytes are counted as repaired.
        """
        self.announce()
        self.send(range(0, 10000, 2000))
        self.receiver.endRound(session=5, round=1)
        self.reactor.advance(0.5)
        self.announce(round=2, ranges=[(1000, 2000), (3000, 4000), (5000, 6000),
                                       (7000, 8000), (9000, 10000)])
        self.send(range(1000, 10000, 2000), round=2)
        self.receiver.endRound(session=5, round=2)
        self.reactor.advance(0.5)
        self.assertEqual(self.server.named(commands.ReportMissing)[-1]["ranges"], [])
        self.assertEqual(self.server.named(commands.Complete)[-1]["sha256"], self.sha)
        self.assertEqual(self.successResultOf(self.receiver.result), 0)
        self.assertEqual(self.receiver.bytesRepaired, 5000)
        self.assertIn(("leave", "239.255.42.1"), self.reactor.ports[-1].memberships)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), self.data)
        self.assertFalse(os.path.exists(self.path + ".imagecast-state"))

    def test_hashAheadBetweenRounds(self):
        """
        If a repair round fills the hole that stopped the in-order hash,
        the held bytes after it are hashed at the next report, up to the
        first byte still missing, while later rounds run; the check at the
        end starts from there and the sha256 matches.
        """
        r = Receiver(self.reactor, OutputFile(self.mktemp()), "me")
        r.imageHash.HASH_AHEAD_MIN = 1000
        r.connected(self.server)
        self.announce(receiver=r)
        self.send([o for o in range(0, 10000, 1000) if o not in (0, 5000)], receiver=r)
        r.endRound(session=5, round=1)
        self.reactor.advance(0.5)
        self.assertEqual(r.imageHash.upTo, 0)
        self.announce(receiver=r, round=2, ranges=[(0, 1000), (5000, 6000)])
        self.send([0], round=2, receiver=r)
        self.assertEqual(r.imageHash.upTo, 1000)  # in order, on the fly
        r.endRound(session=5, round=2)
        self.reactor.advance(0.5)
        self.assertEqual(self.server.named(commands.ReportMissing)[-1]["ranges"],
                         [(5000, 6000)])
        self.assertEqual((r.imageHash.upTo, r.imageHash.ahead), (5000, 4000))
        self.announce(receiver=r, round=3, ranges=[(5000, 6000)])
        self.send([5000], round=3, receiver=r)
        self.assertEqual(r.imageHash.upTo, 6000)
        r.endRound(session=5, round=3)
        self.reactor.advance(0.5)
        self.assertEqual(self.server.named(commands.Complete)[-1]["sha256"], self.sha)
        self.assertEqual(self.successResultOf(r.result), 0)
        self.assertEqual(r.summary()["hashed_in_order"], 6000)

    def test_hashAheadAdoptedOnlyIfPrefixUnchanged(self):
        """
        If the prefix was reset while hashing ahead ran (another image), its
        result is dropped; the check at the end waits for a hash ahead that
        is still running and starts where it ended.
        """
        threads = []

        def inThread(f, *args):
            d = defer.Deferred()
            threads.append((d, f, args))
            return d
        r = Receiver(self.reactor, OutputFile(self.mktemp()), "me", runInThread=inThread)
        r.imageHash.HASH_AHEAD_MIN = 1000
        r.connected(self.server)
        self.announce(receiver=r)
        self.send([o for o in range(1000, 10000, 1000)], receiver=r)
        self.send([0], round=1, receiver=r)
        # the last datagram completed the image's one piece, which is read
        # back to be checked against its digest
        d, f, args = threads.pop()
        d.callback(f(*args))
        self.assertEqual(r.checks.verified, bytearray([1]))
        # as if the prefix had stopped at a hole that a later datagram filled
        r.imageHash.prefix, r.imageHash.upTo = hashlib.sha256(), 0
        r.imageHash.hashAhead(9000)
        self.assertEqual(len(threads), 1)
        d, f, args = threads.pop()
        r.imageHash.reset()  # a new image meanwhile
        d.callback(f(*args))
        self.assertEqual((r.imageHash.upTo, r.imageHash.ahead), (0, 0))
        self.assertIsNone(r.imageHash._catchingUp)
        # a hash ahead still running when the receiver completes
        r.imageHash.hashAhead(9000)
        d, f, args = threads.pop()
        r._finish()
        self.assertEqual(threads, [])  # the check waits for it
        d.callback(f(*args))
        self.assertEqual(r.hashedInOrder, 9000)
        d2, f2, args2 = threads.pop()
        d2.callback(f2(*args2))
        self.assertEqual(self.server.named(commands.Complete)[-1]["sha256"], self.sha)

    def test_prefixHashedOnTheFly(self):
        """
        If datagrams arrive partly in order and partly repaired later, the
        sha256 check (in-order prefix hashed on arrival, the rest read back)
        still matches and the receiver completes.
        """
        r = Receiver(self.reactor, OutputFile(self.mktemp()), "me")
        r.connected(self.server)
        self.announce(receiver=r)
        self.send([0, 1000, 2000, 4000, 5000], receiver=r)
        self.assertEqual(r.imageHash.upTo, 3000)
        r.endRound(session=5, round=1)
        self.reactor.advance(0.5)
        self.announce(receiver=r, round=2, ranges=[(3000, 4000), (6000, 10000)])
        self.send([3000, 6000, 7000, 8000, 9000], round=2, receiver=r)
        r.endRound(session=5, round=2)
        self.reactor.advance(0.5)
        self.assertEqual(self.successResultOf(r.result), 0)
        self.assertEqual(self.server.named(commands.Complete)[-1]["sha256"], self.sha)

    def test_progressReported(self):
        """
        If round 1's data flows, the receiver reports how far it got every
        C{progressInterval}, and stops once the round is over.
        """
        self.announce()
        self.send([0, 1000, 2000])
        self.reactor.advance(0.2)
        self.assertEqual(self.server.named(commands.Progress)[-1]["position"], 3000)
        self.receiver.endRound(session=5, round=1)
        count = len(self.server.named(commands.Progress))
        self.reactor.advance(1)
        self.assertEqual(len(self.server.named(commands.Progress)), count)

    def test_batch(self):
        """
        If the data port hands over batches (C{datagramsReceived}) with
        runs, gaps, duplicates and runs that partly overlap what is held,
        exactly the right bytes end up in the file, new bytes are counted
        once, and the in-order prefix is hashed as it grows.
        """
        r = Receiver(self.reactor, OutputFile(self.mktemp()), "me")
        r.connected(self.server)
        self.announce(receiver=r)
        proto = self.reactor.ports[-1].protocol
        proto.datagramsReceived(self.wires([0, 1000, 4000, 5000]), [("198.18.0.1", 1)] * 4)
        self.assertEqual(r.received.ranges(), [(0, 2000), (4000, 6000)])
        self.assertEqual(r.imageHash.upTo, 2000)
        # a run from 500 to 6500 (other cuts) over held and missing bytes
        proto.datagramsReceived(self.wires(range(500, 6500, 1000)) + self.wires([0]),
                                [("198.18.0.1", 1)] * 7)
        self.assertEqual(r.received.ranges(), [(0, 6500)])
        self.assertEqual(r.bytesReceived, 6500)
        self.assertEqual(r.imageHash.upTo, 4000)
        self.assertEqual(r._position, 6500)
        proto.datagramsReceived(self.wires(range(6000, 10000, 1000)), [("198.18.0.1", 1)] * 4)
        r.endRound(session=5, round=1)
        self.reactor.advance(0.5)
        self.assertEqual(self.successResultOf(r.result), 0)
        with open(r.output.path, "rb") as f:
            self.assertEqual(f.read(), self.data)

    def test_readBatch(self):
        """
        If the data port lets the receiver read the socket itself (the C
        loop), the same bytes end up in the file as with
        C{datagramsReceived}: only bytes not held are written, new bytes
        counted once, the prefix hashed as it grows, bad and stale
        datagrams counted.
        """
        r = Receiver(self.reactor, OutputFile(self.mktemp()), "me")
        r.connected(self.server)
        self.announce(receiver=r)
        self.assertEqual(self.readSocket(r, self.wires([0, 1000, 4000, 5000])), 4)
        self.assertEqual(r.received.ranges(), [(0, 2000), (4000, 6000)])
        self.assertEqual(r.imageHash.upTo, 2000)
        spoofed = DataDatagram(5, 1, 3000, self.data[3000:4000]).to_wire(b"x" * 32)
        count = self.readSocket(r, self.wires(range(500, 6500, 1000)) + self.wires([0])
                                + [spoofed])
        self.assertEqual(count, 8)
        self.assertEqual(r.received.ranges(), [(0, 6500)])
        # 2000-4000 was written in order; 4000-6000 was held: the prefix
        # stops there (as with datagramsReceived)
        self.assertEqual((r.bytesReceived, r.imageHash.upTo, r._position, r.rejected),
                         (6500, 4000, 6500, 1))
        self.readSocket(r, self.wires(range(6000, 10000, 1000)))
        r.endRound(session=5, round=1)
        self.reactor.advance(0.5)
        self.assertEqual(self.successResultOf(r.result), 0)
        with open(r.output.path, "rb") as f:
            self.assertEqual(f.read(), self.data)

    def test_readBatchWriteFailure(self):
        """
        If the C loop's write fails, the receiver fails with the operator's
        message (path, offset, the system's words) and leaves the session.
        """
        self.announce()
        os.close(self.receiver.output.fd)
        self.receiver.output.fd = os.open(self.path, os.O_RDONLY)
        self.readSocket(self.receiver, self.wires([2000]))
        self.assertEqual(self.successResultOf(self.receiver.result), 1)
        reason = self.server.named(commands.Leave)[-1]["reason"]
        self.assertIn("writing at 2000", reason)
        self.assertIn(self.path, reason)

    def test_readBatchNotReady(self):
        """
        Before a session (no key), C{readBatch} declines and the port reads
        as usual.
        """
        r = Receiver(self.reactor, OutputFile(self.mktemp()), "me")
        self.assertIsNone(r.readBatch(None, 64, 2048))

    def test_batchRejectsCounted(self):
        """
        If a batch mixes good, spoofed and stale datagrams, the good ones
        are written and the others counted.
        """
        self.announce(round=2)
        batch = self.wires([0, 1000], round=2) + self.wires([2000], round=1) + [
            DataDatagram(5, 2, 3000, self.data[3000:4000]).to_wire(b"x" * 32)]
        self.receiver.datagramsReceived(batch, [("198.18.0.1", 1)] * 4)
        self.assertEqual(self.receiver.received.ranges(), [(0, 2000)])
        self.assertEqual((self.receiver.rejected, self.receiver.stale), (1, 1))
        self.assertEqual(self.receiver.bytesRepaired, 2000)

    def test_writeFailure(self):
        """
        If writing a run fails (the disk), the receiver fails with the
        operator's message and leaves the session.
        """
        self.announce()

        def boom(*a):
            raise OSError(errno.EIO, "Input/output error")
        self.patch(os, "pwritev", boom)
        self.send([0])
        self.assertEqual(self.successResultOf(self.receiver.result), 1)
        self.assertIn("Input/output error", self.server.named(commands.Leave)[-1]["reason"])

    def test_progressEveryRound(self):
        """
        If a repair round brings data this receiver needs, it reports its
        progress in that round too (flow control in every round); in a round
        it needs nothing of, it reports none.
        """
        self.announce()
        self.send(range(0, 10000, 2000))
        self.receiver.endRound(session=5, round=1)
        self.reactor.advance(0.5)
        self.announce(round=2, ranges=[(1000, 2000), (3000, 4000)])
        self.send([1000], round=2)
        self.reactor.advance(0.1)
        progress = self.server.named(commands.Progress)[-1]
        self.assertEqual((progress["round"], progress["position"]), (2, 2000))
        self.receiver.endRound(session=5, round=2)
        self.reactor.advance(0.5)
        count = len(self.server.named(commands.Progress))
        self.announce(round=3, ranges=[(0, 1000)])
        self.reactor.advance(1)
        self.assertEqual(len(self.server.named(commands.Progress)), count)

    def test_settleWaitsForQueuedData(self):
        """
        If datagrams still wait in the data socket when the round ends, the
        receiver does not report until the socket is empty.
        """
        import socket
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        self.announce()
        withSocket(self.reactor.ports[-1], sock)
        self.send([0])
        sock.sendto(b"queued", sock.getsockname())
        self.receiver.endRound(session=5, round=1)
        self.reactor.advance(0.5)
        self.assertEqual(self.server.named(commands.ReportMissing), [])
        sock.recv(100)
        self.reactor.advance(0.1)
        self.assertEqual(self.server.named(commands.ReportMissing)[-1]["ranges"], [(1000, 10000)])

    def test_spoofedAndStaleDropped(self):
        """
        If a datagram is signed under another key, belongs to another
        session or to another round, nothing is written.
        """
        self.announce(round=2)
        self.send([0], round=2, key=b"x" * 32)
        self.send([1000], round=2, session=6)
        self.send([2000], round=1)
        self.assertEqual(self.receiver.received.total(), 0)
        self.assertEqual(self.receiver.rejected, 2)
        self.assertEqual(self.receiver.stale, 1)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(1000), bytes(1000))

    def test_laterRoundBeforeItsAnnouncement(self):
        """
        If datagrams of the next round arrive before its announcement (the
        sender does not wait for a receiver that is still on the group),
        they are written, not dropped as stale.
        """
        self.announce(round=1)
        self.send([1000], round=2)
        self.assertEqual(self.receiver.received.ranges(), [(1000, 2000)])
        self.assertEqual(self.receiver.stale, 0)
        with open(self.path, "rb") as f:
            f.seek(1000)
            self.assertEqual(f.read(1000), self.data[1000:2000])

    def test_notInRoundLeavesGroup(self):
        """
        If a round carries nothing this receiver lacks, it leaves the data
        group.
        """
        self.announce()
        self.send(range(0, 5000, 1000))
        self.announce(round=2, ranges=[(0, 1000)])
        self.assertEqual(self.reactor.ports[-1].memberships,
                         [("join", "239.255.42.1"), ("leave", "239.255.42.1")])

    def test_resume(self):
        """
        If a receiver is restarted, it resumes from its state file: what it
        had is not reported missing again.
        """
        self.announce()
        self.send([0, 1000, 2000])
        self.receiver._save()
        again = self.make()
        self.announce(receiver=again)
        self.assertEqual(again.resumed, 3000)
        again.endRound(session=5, round=1)
        self.reactor.advance(0.5)
        self.assertEqual(self.server.named(commands.ReportMissing)[-1]["ranges"],
                         [(3000, 10000)])

    def test_stateOfAnotherImageIgnored(self):
        """
        If the state file belongs to another image (sha256), it is ignored.
        """
        self.announce()
        self.send([0])
        self.receiver._save()
        self.sha = "0" * 64
        again = self.make()
        self.announce(receiver=again)
        self.assertEqual(again.resumed, 0)

    def test_repairInFlight(self):
        """
        The repair keeps up to C{FETCH_WINDOW} fetches in flight; each is
        written as it comes, and the receiver completes after the last.
        """
        pending = []

        class SlowServer(FakeServer):
            def callRemote(self, command, **kw):
                if command is commands.FetchRange:
                    d = defer.Deferred()
                    pending.append((d, kw))
                    return d
                return FakeServer.callRemote(self, command, **kw)
        self.server = SlowServer(self.data)
        r = self.make()
        r.FETCH_WINDOW = 3
        self.announce(receiver=r)
        self.send(range(0, 10000, 2000), receiver=r)
        r.endSession(session=5, unrecoverable=[(1000, 10000)])
        self.reactor.advance(0)
        self.assertEqual(len(pending), 3)
        while pending:
            d, kw = pending.pop(0)
            d.callback({"data": self.data[kw["offset"]:kw["offset"] + kw["length"]]})
            self.assertLessEqual(len(pending), 3)
        self.assertEqual(self.successResultOf(r.result), 0)
        with open(r.output.path, "rb") as f:
            self.assertEqual(f.read(), self.data)
        self.assertEqual(r.bytesFetched, 5000)

    def test_endSessionFetchesTheRest(self):
        """
        If the rounds are over, the receiver fetches what it lacks over the
        control channel, then completes.
        """
        self.announce()
        self.send(range(0, 10000, 2000))
        self.receiver.endSession(session=5, unrecoverable=[(1000, 2000)])
        self.reactor.advance(0)
        fetched = self.server.named(commands.FetchRange)
        self.assertEqual(sum(f["length"] for f in fetched), 5000)
        self.assertEqual(self.successResultOf(self.receiver.result), 0)
        self.assertEqual(self.receiver.bytesFetched, 5000)

    def test_diskFull(self):
        """
        If the disk is full, the receiver leaves the session with a clear
        reason and exits with status 1.
        """
        class Full(OutputFile):
            def prepare(self, size):
                raise ReceiveError("%s: disk full (No space left on device) while "
                                   "allocating %d bytes" % (self.path, size))
        r = Receiver(self.reactor, Full(self.mktemp()), "me")
        r.connected(self.server)
        self.assertRaises(commands.BadRequest, self.announce, receiver=r)
        self.assertEqual(self.successResultOf(r.result), 1)
        self.assertIn("disk full", self.server.named(commands.Leave)[-1]["reason"])

    def test_filterFollowsRounds(self):
        """
        A repair round arms the kernel filter (L{sockfilter.RepairFilter})
        for what this receiver lacks of it; the round's report disarms it,
        so that the next round's datagrams, which may come before their
        announcement, are not judged by this round's window. A port without
        a socket (this fake, until it is given one) gets no filter.
        """
        from provisioner.client import sockfilter
        self.announce()
        self.assertIsNone(self.receiver._filter)
        calls = []

        class Filter:
            sock = None
            end = None

            def arm(self, ranges, need, chunkSize):
                calls.append(("arm", ranges, need, chunkSize))

            def disarm(self):
                calls.append(("disarm",))
        fake = Filter()
        self.receiver._filter = fake
        self.send([0, 1000, 3000, 4000, 5000, 7000, 8000, 9000])
        self.receiver.endRound(session=5, round=1)
        self.reactor.advance(0.5)
        self.assertEqual(calls, [("disarm",)])
        sock = withSocket(self.reactor.ports[-1], socket.socket(socket.AF_INET,
                                                                socket.SOCK_DGRAM))
        self.addCleanup(sock.close)
        # others lacked more: the round carries 6000 bytes, 2000 for us
        self.announce(round=2, ranges=[(2000, 4000), (6000, 10000)])
        armed = self.receiver._filter
        self.assertIsInstance(armed, sockfilter.RepairFilter)
        self.assertIs(armed.sock, sock)
        self.assertEqual(armed.wanted, [2000, 6000])

    def test_checksumMismatch(self):
        """
        If the file's sha256 is wrong after every byte arrived, the receiver
        fails and does not send Complete.
        """
        self.sha = "f" * 64
        self.announce()
        self.send(range(0, 10000, 1000))
        self.receiver.endRound(session=5, round=1)
        self.reactor.advance(0.5)
        self.assertEqual(self.successResultOf(self.receiver.result), 1)
        self.assertIn("sha256 mismatch", self.receiver.failed)
        self.assertEqual(self.server.named(commands.Complete), [])


class ForgedDataTests(ReceiverCase):
    """
    Issue 14, finding 3: a registered attacker knows everything a
    registered receiver knows (the session id, the data key, the group and
    port, the piece digests) and multicasts datagrams with valid tags and
    its own bytes. The receiver keeps a piece only once its bytes match the
    digest its own control connection brought: the forged pieces are
    dropped and asked for again, and it completes with the image's bytes.
    """

    PIECE = 2000

    def forged(self, offsets, round=1, size=1000):
        """
        Datagrams with a valid tag (the attacker knows C{KEY}) and the
        attacker's bytes.
        """
        return [DataDatagram(5, round, o, b"\xee" * size).to_wire(KEY) for o in offsets]

    def deliver(self, wires, receiver=None):
        for w in wires:
            (receiver or self.receiver).datagramReceived(w, ("198.18.0.66", 1))

    def finishRound(self, round):
        self.receiver.endRound(session=5, round=round)
        self.reactor.advance(0.5)
        return self.server.named(commands.ReportMissing)[-1]["ranges"]

    def test_forgedRejectedThenRepaired(self):
        """
        If forged datagrams come before the real ones, in order (the
        prefix hash goes through them) and out of order (their pieces are
        read back), their pieces fail their digests: they are dropped (the
        real datagrams that followed were dropped as held), reported
        missing, and the repair round's real bytes complete the image;
        nothing the attacker sent is left in the file.
        """
        self.announce(pieceSize=self.PIECE)
        # in order: 0 forged before the real one; out of order: 6000
        self.deliver(self.forged([0, 6000]))
        self.send(range(0, 10000, 1000))
        self.assertEqual(self.receiver.missing(), [(0, 2000), (6000, 8000)])
        self.assertEqual(self.receiver.checks.rejected, 2)
        self.assertEqual(self.receiver.imageHash.upTo, 0)
        self.assertEqual(self.finishRound(1), [(0, 2000), (6000, 8000)])
        self.announce(round=2, ranges=[(0, 2000), (6000, 8000)], pieceSize=self.PIECE)
        self.send([0, 1000, 6000, 7000], round=2)
        self.assertEqual(self.finishRound(2), [])
        self.assertEqual(self.server.named(commands.Complete)[-1]["sha256"], self.sha)
        self.assertEqual(self.successResultOf(self.receiver.result), 0)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), self.data)
        self.assertEqual(self.receiver.summary()["pieces_rejected"], 2)
        self.assertEqual(self.receiver.checks.verified, bytearray([1] * 5))

    def test_forgedLaterRoundAndFetched(self):
        """
        If the attacker forges a later round's datagrams too and the rounds
        end, what is still missing or rejected is fetched over the control
        connection (authenticated), checked, and the receiver completes.
        """
        self.announce(pieceSize=self.PIECE)
        self.deliver(self.forged([4000], round=3))
        self.send(range(0, 10000, 1000))
        self.assertEqual(self.finishRound(1), [(4000, 6000)])
        self.receiver.endSession(session=5, unrecoverable=[(4000, 6000)])
        self.reactor.advance(0.1)
        self.assertEqual(self.successResultOf(self.receiver.result), 0)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), self.data)
        self.assertEqual([kw["offset"] for kw in self.server.named(commands.FetchRange)],
                         [4000])

    def test_forgedOverHeldBytesIgnored(self):
        """
        If a forged datagram overlaps bytes held and bytes missing, only
        the missing bytes are written: bytes held (and checked) are never
        written again.
        """
        self.announce(pieceSize=self.PIECE)
        self.send([0, 1000, 2000])
        self.assertEqual(self.receiver.checks.verified[0], 1)
        self.deliver([DataDatagram(5, 1, 1500, b"\xee" * 1000).to_wire(KEY)])
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(3000), self.data[:3000])
        self.send(range(3000, 10000, 1000))
        self.assertEqual(self.finishRound(1), [])
        self.assertEqual(self.successResultOf(self.receiver.result), 0)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), self.data)

    def test_forgedFastPath(self):
        """
        If the receiver reads with the C fast path, a forged datagram and
        the real one in the same batch: the first written wins, the second
        counts as held (never written over it), the forged piece is
        dropped and asked for again; the real bytes complete the image.
        """
        self.announce(pieceSize=self.PIECE)
        forgedFirst = self.forged([2000]) + self.wires([2000])
        realFirst = self.wires([6000]) + self.forged([6000])
        rest = self.wires([o for o in range(0, 10000, 1000) if o not in (2000, 6000)])
        self.readSocket(self.receiver, forgedFirst + realFirst + rest)
        self.assertEqual(self.receiver.missing(), [(2000, 4000)])
        self.assertEqual(self.receiver.checks.rejected, 1)
        self.assertEqual(self.finishRound(1), [(2000, 4000)])
        self.announce(round=2, ranges=[(2000, 4000)], pieceSize=self.PIECE)
        self.readSocket(self.receiver, self.wires([2000, 3000], round=2))
        self.assertEqual(self.finishRound(2), [])
        self.assertEqual(self.successResultOf(self.receiver.result), 0)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), self.data)

    def test_resumedPiecesChecked(self):
        """
        If a receiver resumes from a state file whose bytes were forged
        (written before their pieces were checked), the pieces held whole
        are read back and checked before they count: the forged one is
        reported missing.
        """
        self.announce(pieceSize=self.PIECE)
        self.deliver(self.forged([0, 1000]))
        self.send(range(2000, 10000, 1000))
        self.receiver._dirty = True
        self.receiver._save()
        # as if the bytes had been saved before the piece was checked
        self.receiver.state.save(self.sha, len(self.data), [(0, 10000)])
        again = self.make()
        self.announce(receiver=again, pieceSize=self.PIECE)
        self.assertEqual(again.checks.rejected, 1)
        self.assertEqual(again.missing(), [(0, 2000)])


class ForgedDataPythonLoopTests(ForgedDataTests):
    """
    L{ForgedDataTests} without the C extension: the Python loop, the tested
    fallback, behaves the same (the fast path's batch is handed over by the
    port, as it is when the extension is not built).
    """

    def setUp(self):
        from provisioner.imagecast import datagram
        self.patch(datagram, "_fastpath", None)
        ForgedDataTests.setUp(self)

    def readSocket(self, r, wires, batch=64):
        self.assertFalse(r._verifier.canReceive())
        self.assertIsNone(r.readBatch(None, batch, 2048))
        r.datagramsReceived([memoryview(w) for w in wires],
                            [("198.18.0.66", 1)] * len(wires))
        return len(wires)


class ReportLimitTests(ReceiverCase):
    """
    The receiver's side of the server's limits (findings 1 and 2).
    """

    def test_reportMergedToMaxReportRanges(self):
        """
        If the receiver lacks more ranges than the server's
        C{maxReportRanges}, it merges the smallest gaps before reporting:
        the report holds at most that many ranges and every byte it lacks.
        """
        self.receiver.limits({"server": "provisioner", "maxReportRanges": 3})
        self.announce()
        self.send([0, 2000, 3000, 5000, 7000, 9000])
        missing = self.receiver.missing()
        self.assertEqual(len(missing), 4)
        report = self.finishRound_(1)
        # (the smallest gaps first, the earliest of equal ones)
        self.assertEqual(report, [(1000, 2000), (4000, 7000), (8000, 9000)])
        self.assertEqual(R.subtract(missing, report), [])
        self.assertEqual(self.receiver.summary()["reports_merged"], 1)

    def test_reportBelowMaxBoxBytes(self):
        """
        If the report's box would not stay below the server's
        C{maxBoxBytes}, the receiver merges gaps until it does.
        """
        import random
        self.data = os.urandom(400000)
        self.sha = hashlib.sha256(self.data).hexdigest()
        self.receiver = self.make()
        self.receiver.limits({"server": "provisioner", "maxBoxBytes": 4096 + 100})
        self.announce()
        held = random.Random(3).sample(range(0, 400000, 1000), 200)
        self.send(sorted(held))
        self.assertGreater(len(R.toWire(self.receiver.missing())), 100)
        report = self.finishRound_(1)
        self.assertLessEqual(len(R.toWire(report)) + 8, 100)
        self.assertEqual(R.subtract(self.receiver.missing(), report), [])

    def finishRound_(self, round):
        self.receiver.endRound(session=5, round=round)
        self.reactor.advance(0.5)
        return self.server.named(commands.ReportMissing)[-1]["ranges"]

    def test_pingAnswered(self):
        """
        If the server probes the receiver's connection, it answers.
        """
        self.assertEqual(self.receiver.ping(), {})


class RecordingPool:
    """
    A thread pool that runs nothing until told: records each call.
    """

    def __init__(self):
        self.calls = []

    def callInThreadWithCallback(self, onResult, f, *args, **kw):
        self.calls.append((onResult, f, args, kw))

    def runAll(self):
        calls, self.calls = self.calls, []
        for onResult, f, args, kw in calls:
            onResult(True, f(*args, **kw))


@implementer(IReactorThreads)
class ThreadedClock(task.Clock):
    """
    A clock with a thread pool (L{RecordingPool}).
    """

    def __init__(self):
        task.Clock.__init__(self)
        self.pool = RecordingPool()

    def getThreadPool(self):
        return self.pool

    def callFromThread(self, f, *args, **kw):
        f(*args, **kw)

    def callInThread(self, f, *args, **kw):
        self.pool.callInThreadWithCallback(lambda ok, result: None, f, *args, **kw)

    def suggestThreadPoolSize(self, size):
        pass


class ThreadRunnerTests(SynchronousTestCase):
    """
    Tests for L{threadRunner}, how the receiver runs blocking work.
    """

    def test_reactorWithThreads(self):
        """
        If the reactor provides C{IReactorThreads}, blocking work goes to
        its thread pool and the Deferred fires with its result.
        """
        reactor = ThreadedClock()
        d = threadRunner(reactor)(lambda a, b: a * b, 6, 7)
        self.assertNoResult(d)
        self.assertEqual(len(reactor.pool.calls), 1)
        reactor.pool.runAll()
        self.assertEqual(self.successResultOf(d), 42)

    def test_reactorWithoutThreads(self):
        """
        If the reactor has no threads (a plain clock), the work runs in the
        calling thread at once.
        """
        d = threadRunner(task.Clock())(lambda a, b: a * b, 6, 7)
        self.assertEqual(self.successResultOf(d), 42)

    def test_injected(self):
        """
        If a runner is given to the receiver, its saves and the check at the
        end go through it, not through the reactor's pool.
        """
        reactor = ThreadedClock()
        ran = []

        def runInThread(f, *args):
            ran.append(f)
            return defer.maybeDeferred(f, *args)
        r = Receiver(reactor, OutputFile(self.mktemp()), "me", runInThread=runInThread)
        self.successResultOf(r.hasher(r.output.path))
        self.assertEqual(len(ran), 1)
        self.assertEqual(reactor.pool.calls, [])


class ReceiverClientTests(SynchronousTestCase):
    """
    Tests for L{provisioner.client.receiverclient.ReceiverClient}.
    """

    def test_unreachableServer(self):
        """
        If the server cannot be reached for C{timeout} seconds, the receiver
        gives up with a clear message and exit status 1; before that it
        keeps retrying.
        """
        from twisted.internet.error import ConnectionRefusedError
        from provisioner.client.receiverclient import ReceiverClient

        attempts = []

        class Refusing:
            def connect(self, factory):
                attempts.append(factory)
                return defer.fail(ConnectionRefusedError())
        reactor = FakeReactor()
        receiver = Receiver(reactor, OutputFile(self.mktemp()), "me")
        client = ReceiverClient(reactor, Refusing(), receiver, "198.18.0.2", timeout=5,
                                serverName="198.18.0.1:7010")
        d = client.run()
        for _ in range(40):
            reactor.advance(0.1)
        self.assertNoResult(d)
        for _ in range(30):
            reactor.advance(0.1)
        self.assertEqual(self.successResultOf(d), 1)
        self.assertIn("cannot reach the server 198.18.0.1:7010", receiver.failed)
        self.assertGreater(len(attempts), 2)
