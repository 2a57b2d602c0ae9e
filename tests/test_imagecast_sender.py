"""
Tests for the sending side of imagecast (L{provisioner.imagecast.sending},
L{provisioner.imagecast.rate}, L{provisioner.imagecast.session},
L{provisioner.imagecast.controller}, L{provisioner.imagecast.source}):
pacing, rounds, aggregation and the scorecard, on a L{task.Clock} with fake
connections and a fake writer.
"""

import os

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from provisioner.config import loadConfig
from provisioner.imagecast import commands
from provisioner.imagecast import ranges as R
from provisioner.imagecast.datagram import DataDatagram
from provisioner.imagecast.controller import Controller
from provisioner.imagecast.rate import BurstLossRate
from provisioner.imagecast.sending import IDatagramWriter, RoundSender
from provisioner.imagecast.source import resolveImage
from provisioner.net.pacing import IRatePolicy, TokenBucket


@implementer(IDatagramWriter)
class FakeWriter:
    """
    Records every batch; can refuse (socket full) a number of times.
    """

    def __init__(self, refuse=0):
        self.batches = []
        self.refuse = refuse
        self.closed = False

    def writeBatch(self, datagrams):
        if self.refuse:
            self.refuse -= 1
            return 0
        self.batches.append(list(datagrams))
        return len(datagrams)

    def close(self):
        self.closed = True

    def datagrams(self):
        return [d for b in self.batches for d in b]


class FakeConnection:
    """
    A control connection: records what the server pushes.
    """

    def __init__(self, hang=()):
        self.calls = []
        self.hang = hang

    def callRemote(self, command, **kw):
        self.calls.append((command, kw))
        if command in self.hang:
            # a receiver that does not get to its control channel (busy)
            return defer.Deferred()
        return defer.succeed({})

    def named(self, command):
        return [kw for c, kw in self.calls if c is command]


def drive(clock, seconds, step=0.01):
    for _ in range(int(seconds / step)):
        clock.advance(step)


class PacingTests(SynchronousTestCase):
    """
    Tests for L{TokenBucket} and L{RoundSender}.
    """

    def test_bucket(self):
        """
        If tokens are spent, they come back at the rate, up to the burst.
        """
        clock = task.Clock()
        b = TokenBucket(clock, 1000, 500)
        self.assertTrue(b.take(500))
        self.assertFalse(b.take(100))
        self.assertAlmostEqual(b.wait(100), 0.1)
        clock.advance(0.1)
        self.assertTrue(b.take(100))
        clock.advance(100)
        b.refill()
        self.assertEqual(b.tokens, 500)

    def test_roundCarriesExactlyTheRanges(self):
        """
        If a round is sent, its datagrams cover exactly the announced ranges,
        each cut from its range's start, in batches of equal-size datagrams.
        """
        clock = task.Clock()
        data = os.urandom(10000)
        writer = FakeWriter()
        verifyObject(IDatagramWriter, writer)
        ranges = [(0, 1000), (3000, 3050), (5000, 10000)]
        s = RoundSender(clock, writer, lambda o, n: data[o:o + n], 9, 2, b"k" * 32, ranges,
                        300, rate=1e6)
        d = s.start()
        drive(clock, 1)
        self.successResultOf(d)
        got = R.RangeSet()
        for wire in writer.datagrams():
            dg = DataDatagram.from_wire(wire, b"k" * 32, 9)
            self.assertEqual(dg.round, 2)
            self.assertEqual(dg.payload, data[dg.offset:dg.offset + len(dg.payload)])
            got.add(dg.offset, dg.offset + len(dg.payload))
        self.assertEqual(got.ranges(), ranges)
        self.assertEqual(s.payloadBytes, R.total(ranges))
        for batch in writer.batches:
            self.assertEqual(len(set(len(d) for d in batch[:-1])), min(1, len(batch) - 1))

    def test_batchesAcrossRanges(self):
        """
        If a repair round has many ranges of one datagram each, its batches
        still carry up to C{batch} datagrams of one size, across ranges, and
        every byte of the ranges goes out once.
        """
        clock = task.Clock()
        data = os.urandom(100000)
        writer = FakeWriter()
        ranges = [(o, o + 300) for o in range(0, 60000, 600)] + [(60000, 60100)]
        s = RoundSender(clock, writer, lambda o, n: data[o:o + n], 9, 2, b"k" * 32, ranges,
                        300, rate=1e9, batch=16)
        d = s.start()
        drive(clock, 1)
        self.successResultOf(d)
        self.assertEqual([len(b) for b in writer.batches], [16] * 6 + [5])
        got = R.RangeSet()
        for wire in writer.datagrams():
            dg = DataDatagram.from_wire(wire, b"k" * 32, 9)
            self.assertEqual(dg.payload, data[dg.offset:dg.offset + len(dg.payload)])
            got.add(dg.offset, dg.offset + len(dg.payload))
        self.assertEqual(got.ranges(), ranges)

    def test_paced(self):
        """
        If the rate allows 1/10 of the round per second, the round is not
        over after 5 seconds and is over after 11.
        """
        clock = task.Clock()
        data = bytes(1000000)
        writer = FakeWriter()
        s = RoundSender(clock, writer, lambda o, n: data[o:o + n], 1, 1, b"k" * 32,
                        [(0, 1000000)], 1000, rate=(1000000 + 27 * 1000) / 10.0)
        d = s.start()
        drive(clock, 5, 0.05)
        self.assertNoResult(d)
        drive(clock, 6, 0.05)
        self.successResultOf(d)

    def test_socketFull(self):
        """
        If the socket refuses a batch, it is sent again later and nothing is
        lost.
        """
        clock = task.Clock()
        data = bytes(5000)
        writer = FakeWriter(refuse=3)
        s = RoundSender(clock, writer, lambda o, n: data[o:o + n], 1, 1, b"k" * 32,
                        [(0, 5000)], 1000, rate=1e6)
        d = s.start()
        drive(clock, 1)
        self.successResultOf(d)
        self.assertEqual(len(writer.datagrams()), 5)


class RatePolicyTests(SynchronousTestCase):
    """
    Tests for L{BurstLossRate}.
    """

    def setUp(self):
        self.round = [(0, 1000 * 100)]

    def policy(self, rate=1000):
        return BurstLossRate(rate, minimum=100, maximum=10000)

    def test_interface(self):
        """
        If built, L{BurstLossRate} provides the rate policy interface both
        multicast senders share.
        """
        verifyObject(IRatePolicy, self.policy())

    def test_randomLossIsNotCongestion(self):
        """
        If a receiver misses 10% of the datagrams, isolated, the rate is not
        lowered: it goes up by C{up}.
        """
        missing = [(i * 100, i * 100 + 100) for i in range(0, 1000, 10)]
        policy = self.policy()
        self.assertEqual(policy.roundOver(self.round, {"a": missing}, 100), 1250)
        self.assertEqual((policy.rate, policy.raises, policy.reductions), (1250, 1, 0))

    def test_burstLossLowersRate(self):
        """
        If a receiver misses runs of consecutive datagrams (overrun queues),
        the rate goes down by C{down}, never below the minimum.
        """
        missing = [(i * 100, i * 100 + 800) for i in range(0, 1000, 50)]
        policy = self.policy()
        self.assertEqual(policy.roundOver(self.round, {"a": [], "b": missing}, 100), 700)
        self.assertEqual(policy.reductions, 1)
        policy = self.policy(101)
        self.assertEqual(policy.roundOver(self.round, {"b": missing}, 100), 100)

    def test_betweenMarksUnchanged(self):
        """
        If the worst burst loss lies between the low and the high mark, the
        rate stays; with no report there is no verdict.
        """
        # one run of 4 datagrams: 0.4% of the round
        missing = [(5000, 5400)]
        policy = self.policy()
        self.assertEqual(policy.roundOver(self.round, {"a": missing}, 100), 1000)
        self.assertEqual(policy.roundOver(self.round, {}, 100), 1000)
        self.assertEqual((policy.raises, policy.reductions), (0, 0))

    def test_cappedAtMaximum(self):
        """
        If clean rounds keep raising the rate, it stops at the maximum.
        """
        policy = self.policy(9000)
        self.assertEqual(policy.roundOver(self.round, {"a": []}, 100), 10000)
        self.assertEqual(policy.roundOver(self.round, {"a": []}, 100), 10000)
        self.assertEqual(policy.raises, 1)


class SessionTests(SynchronousTestCase):
    """
    Tests for L{Controller} and L{Session}: rounds, aggregation, groups.
    """


    def _twoReceiverSession(self, **options):
        """
        A 1,000,000-byte image, C{flow_window} 200,000, a session for two
        receivers (at 10 MB/s unless C{options} say otherwise), and the two
        receivers registered.

        @return: C{(session, a, b)}.
        """
        with open(os.path.join(self.root, "big"), "wb") as f:
            f.write(bytes(1000000))
        self.controller.config = dict(self.controller.config, flow_window=200000)
        options.setdefault("rate", 10)
        session = self.successResultOf(self.controller.startSession("big", minReceivers=2,
                                                                    **options))
        a, b = FakeConnection(), FakeConnection()
        self.controller.register(a, "a", "x")
        self.controller.register(b, "b", "y")
        return session, a, b

    def _startTwo(self):
        """
        A session on the 50,000-byte image for two receivers, both
        registered.

        @return: C{(session, a, b)}.
        """
        session = self.start()
        a, b = FakeConnection(), FakeConnection()
        self.controller.register(a, "a", "x")
        self.controller.register(b, "b", "y")
        return session, a, b

    def setUp(self):
        self.root = self.mktemp()
        os.makedirs(self.root)
        self.data = os.urandom(50000)
        with open(os.path.join(self.root, "img"), "wb") as f:
            f.write(self.data)
        self.clock = task.Clock()
        self.writer = FakeWriter()
        # (authentication: none only lets the section load: the controller
        # does not authenticate, the control channel does, see
        # tests.test_imagecast_auth)
        config = loadConfig(text=(
            "imagecast:\n  enabled: true\n  authentication: none\n  root: %s\n"
            "  datagram_size: 1027\n"
            "  max_rounds: 4\n  report_timeout: 5\n  client_timeout: 20\n"
            "  announce_timeout: 1\n  tail_bytes: 0\n" % (self.root,)))["imagecast"]
        ids = iter(range(100, 200))
        self.controller = Controller(self.clock, config, writerFactory=lambda g, p: self.writer,
                                     hasher=lambda p: defer.succeed("SHA"),
                                     sessionIds=lambda: next(ids))

    def start(self, **kw):
        kw.setdefault("minReceivers", 2)
        kw.setdefault("maxWait", 30)
        return self.successResultOf(self.controller.startSession("img", **kw))

    def finishRound(self):
        drive(self.clock, 1)

    def test_resolveImageConfined(self):
        """
        If an image name leaves the root or does not exist, it is refused.
        """
        self.assertRaises(commands.NoSuchImage, resolveImage, self.root, "../etc/passwd")
        self.assertRaises(commands.NoSuchImage, resolveImage, self.root, "/etc/passwd")
        self.assertRaises(commands.NoSuchImage, resolveImage, self.root, "nothere")
        self.assertTrue(resolveImage(self.root, "img").endswith("img"))

    def test_waitsForMinReceivers(self):
        """
        If fewer than C{minReceivers} are enrolled, nothing is sent until
        C{maxWait} has passed.
        """
        session = self.start(maxWait=10)
        a = FakeConnection()
        self.controller.register(a, "a", "198.18.0.2")
        drive(self.clock, 9, 0.5)
        self.assertEqual(session.state, "waiting")
        self.assertEqual(a.named(commands.Announce), [])
        drive(self.clock, 2, 0.5)
        self.assertEqual(session.state, "running")
        self.assertEqual(a.named(commands.Announce)[0]["ranges"], [(0, 50000)])

    def test_roundTwoIsCoalescedUnion(self):
        """
        If two receivers report missing ranges after round 1, round 2 is
        announced and sent with exactly their coalesced union; a receiver
        with nothing missing leaves the current group.
        """
        session = self.start()
        a, b, c = FakeConnection(), FakeConnection(), FakeConnection()
        self.controller.register(a, "a", "198.18.0.2")
        self.controller.register(b, "b", "198.18.0.3")
        self.controller.register(c, "c", "198.18.0.4")
        self.finishRound()
        self.assertEqual(len(a.named(commands.EndRound)), 1)
        self.assertEqual(self.writer.datagrams().__len__(), 50)
        before = len(self.writer.datagrams())
        self.controller.reportMissing(a, session.id, 1, [(0, 1000), (5000, 6000)])
        self.controller.reportMissing(b, session.id, 1, [(1000, 2000), (9000, 10000)])
        self.controller.reportMissing(c, session.id, 1, [])
        card = session.scorecard()
        self.assertEqual(card["current_group"], ["a", "b"])
        self.assertEqual(card["permanent_group"], ["a", "b", "c"])
        announce = a.named(commands.Announce)[-1]
        self.assertEqual(announce["round"], 2)
        expected = R.coalesce(R.union([(0, 1000), (5000, 6000)], [(1000, 2000), (9000, 10000)]))
        self.assertEqual(announce["ranges"], expected)
        self.assertEqual(c.named(commands.Announce)[-1]["ranges"], expected)
        self.finishRound()
        sent = R.RangeSet()
        for wire in self.writer.datagrams()[before:]:
            dg = DataDatagram.from_wire(wire, session.key, session.id)
            self.assertEqual(dg.round, 2)
            sent.add(dg.offset, dg.offset + len(dg.payload))
        self.assertEqual(sent.ranges(), expected)
        self.assertEqual(session.rounds[1]["bytes"], R.total(expected))
        self.assertEqual(session.scorecard()["members"]["a"]["missing_by_round"], {"1": 2000})

    def test_endsWhenEveryoneComplete(self):
        """
        If every receiver reports nothing missing and completes with the
        right sha256, the session is done after one round; a wrong sha256 is
        refused with L{commands.ChecksumMismatch}.
        """
        session, a, b = self._startTwo()
        self.finishRound()
        self.controller.reportMissing(a, session.id, 1, [])
        self.controller.reportMissing(b, session.id, 1, [])
        self.assertRaises(commands.ChecksumMismatch, self.controller.complete, a, session.id,
                          "WRONG")
        self.controller.complete(a, session.id, "SHA")
        self.assertNoResult(session.done)
        self.controller.complete(b, session.id, "SHA")
        self.successResultOf(session.done)
        self.assertEqual(session.state, "done")
        self.assertTrue(self.writer.closed)
        self.assertEqual(self.controller.status()["sessions"][0]["complete"], ["a", "b"])

    def test_lateJoiner(self):
        """
        If a receiver registers during round 2, it is told the current round
        and its report after round 2 puts everything it lacks in round 3.
        """
        session, a, b = self._startTwo()
        self.finishRound()
        self.controller.reportMissing(a, session.id, 1, [(0, 1025)])
        self.controller.reportMissing(b, session.id, 1, [])
        self.assertEqual(session.round, 2)
        late = FakeConnection()
        self.controller.register(late, "late", "z")
        self.assertEqual(late.named(commands.Announce)[-1]["round"], 2)
        self.finishRound()
        self.controller.reportMissing(a, session.id, 2, [])
        self.controller.reportMissing(late, session.id, 2, [(2050, 50000)])
        self.assertEqual(session.round, 3)
        self.assertEqual(a.named(commands.Announce)[-1]["ranges"], [(2050, 50000)])

    def test_silentReceiverKeepsLastReport(self):
        """
        If a connected receiver does not report in time (its report lost),
        its previous report is assumed, so it is never dropped from the
        current group.
        """
        session, a, b = self._startTwo()
        self.finishRound()
        self.controller.reportMissing(a, session.id, 1, [(0, 100)])
        self.controller.reportMissing(b, session.id, 1, [(200, 300)])
        self.finishRound()
        self.controller.reportMissing(a, session.id, 2, [])
        drive(self.clock, 6, 0.5)
        self.assertEqual(session.round, 3)
        self.assertEqual(a.named(commands.Announce)[-1]["ranges"], [(200, 300)])
        self.assertEqual(session.rounds[1]["assumed"], ["b"])

    def test_disconnectedThenLost(self):
        """
        If a receiver disconnects and does not come back within
        C{client_timeout}, it is recorded as lost and the session ends for
        the others.
        """
        session, a, b = self._startTwo()
        self.finishRound()
        self.controller.connectionLost(b)
        self.controller.reportMissing(a, session.id, 1, [])
        self.controller.complete(a, session.id, "SHA")
        self.assertNoResult(session.done)
        drive(self.clock, 21, 0.5)
        self.successResultOf(session.done)
        self.assertEqual(session.members["b"].state, "lost")

    def test_reconnectResumes(self):
        """
        If a receiver's connection drops and it registers again with the
        same id, it keeps its place, gets the current round and its report
        counts.
        """
        session, a, b = self._startTwo()
        self.controller.connectionLost(b)
        self.finishRound()
        self.controller.reportMissing(a, session.id, 1, [])
        b2 = FakeConnection()
        self.controller.register(b2, "b", "y")
        self.assertEqual(b2.named(commands.Announce)[-1]["round"], 1)
        self.assertEqual(b2.named(commands.EndRound)[-1]["round"], 1)
        self.controller.reportMissing(b2, session.id, 1, [(0, 3000)])
        self.assertEqual(session.round, 2)
        self.assertEqual(session.roundRanges, [(0, 3000)])
        self.assertEqual(session.members["b"].reconnects, 1)

    def test_smallTailOverControl(self):
        """
        If after a repair round the union left is at most C{tail_bytes}, no
        further round is multicast: the receivers get it in
        L{commands.EndSession} (reason "small tail") and fetch it; the
        scorecard records it as the tail, not as unrecoverable.
        """
        self.controller.config = dict(self.controller.config, tail_bytes=150)
        session, a, b = self._startTwo()
        self.finishRound()
        # round 1 left 100 bytes missing: round 2 is still multicast
        self.controller.reportMissing(a, session.id, 1, [(100, 200)])
        self.controller.reportMissing(b, session.id, 1, [])
        self.assertEqual((session.round, session.state), (2, "running"))
        self.finishRound()
        self.controller.reportMissing(a, session.id, 2, [(100, 200)])
        self.assertEqual(session.state, "repair")
        end = a.named(commands.EndSession)[-1]
        self.assertEqual((end["unrecoverable"], end["reason"]), ([(100, 200)], "small tail"))
        card = session.scorecard()
        self.assertEqual((card["tail_bytes"], card["unrecoverable_bytes"]), (100, 0))
        self.assertEqual(self.controller.fetch(a, session.id, 100, 100), self.data[100:200])
        # one that comes back gets the tail again
        self.controller.connectionLost(a)
        a2 = FakeConnection()
        self.controller.register(a2, "a", "x")
        self.assertEqual(a2.named(commands.EndSession)[-1]["unrecoverable"], [(100, 200)])

    def test_sharedTailMulticast(self):
        """
        A small union that several receivers lack (a burst all of them
        lost) is multicast again: over the control connections each would
        be sent it.
        """
        self.controller.config = dict(self.controller.config, tail_bytes=1000)
        session, a, b = self._startTwo()
        for r in (1, 2):
            self.finishRound()
            self.controller.reportMissing(a, session.id, r, [(100, 200)])
            self.controller.reportMissing(b, session.id, r, [(100, 200)])
        self.assertEqual((session.round, session.state), (3, "running"))
        self.assertEqual(session.roundRanges, [(100, 200)])

    def test_largeTailMulticast(self):
        """
        A union larger than C{tail_bytes} after a repair round gets another
        multicast round.
        """
        self.controller.config = dict(self.controller.config, tail_bytes=99)
        session, a, b = self._startTwo()
        for r in (1, 2):
            self.finishRound()
            self.controller.reportMissing(a, session.id, r, [(100, 200)])
            if r == 1:
                self.controller.reportMissing(b, session.id, r, [])
        self.assertEqual((session.round, session.state), (3, "running"))

    def test_roundLimitThenRepair(self):
        """
        If ranges are still missing after C{max_rounds}, they are recorded as
        unrecoverable, sent to the receivers with L{commands.EndSession}, and
        served by L{Controller.fetch}.
        """
        session, a, b = self._startTwo()
        for r in range(1, 5):
            self.finishRound()
            if r == 1:
                self.controller.reportMissing(b, session.id, r, [])
            self.controller.reportMissing(a, session.id, r, [(100, 200)])
        self.assertEqual(session.state, "repair")
        self.assertEqual(a.named(commands.EndSession)[-1]["unrecoverable"], [(100, 200)])
        self.assertEqual(self.controller.fetch(a, session.id, 100, 100), self.data[100:200])
        self.assertRaises(commands.BadRanges, self.controller.fetch, a, session.id, 49990, 20)
        self.assertRaises(commands.StaleRound, self.controller.reportMissing, a, session.id,
                          4, [])
        self.controller.complete(a, session.id, "SHA")
        self.controller.complete(b, session.id, "SHA")
        self.successResultOf(session.done)
        self.assertEqual(self.controller.status()["sessions"][0]["unrecoverable_bytes"], 100)

    def test_leave(self):
        """
        If a receiver leaves (disk full), it is recorded as failed with its
        reason and the others go on.
        """
        session, a, b = self._startTwo()
        self.controller.leave(b, session.id, "disk full")
        self.finishRound()
        self.controller.reportMissing(a, session.id, 1, [])
        self.controller.complete(a, session.id, "SHA")
        self.successResultOf(session.done)
        card = self.controller.status(session.id)["sessions"][0]
        self.assertEqual(card["members"]["b"]["state"], "failed")
        self.assertEqual(card["members"]["b"]["reason"], "disk full")

    def test_statusAfter(self):
        """
        L{Controller.statusAfter} answers once the session has more rounds
        than the caller saw, or is done, or when the wait is over; an
        unknown session is refused.
        """
        session = self.start()
        a = FakeConnection()
        self.controller.register(a, "a", "x")
        self.controller.register(FakeConnection(), "b", "y")
        waited = self.controller.statusAfter(session.id, 1, 10)
        self.assertNoResult(waited)
        self.finishRound()
        self.controller.reportMissing(a, session.id, 1, [(0, 100)])
        self.assertNoResult(waited)
        self.controller.reportMissing(self.controller.sessions[session.id].members["b"]
                                      .connection, session.id, 1, [])
        card = self.successResultOf(waited)["sessions"][0]
        self.assertEqual(len(card["rounds"]), 2)
        timedOut = self.controller.statusAfter(session.id, 99, 0.5)
        self.assertNoResult(timedOut)
        self.clock.advance(0.5)
        self.assertEqual(self.successResultOf(timedOut)["sessions"][0]["session"], session.id)
        self.assertRaises(commands.UnknownSession, self.controller.statusAfter, 999, 0, 1)

    def test_flowControl(self):
        """
        If a receiver reports that it is more than C{flow_window} bytes
        behind in the first round, the sender pauses until it catches up;
        receivers that report nothing hold it back for no longer than
        C{min_rate_seconds} (their progress is below the rate floor).
        """
        session, a, b = self._twoReceiverSession(rate=None)
        self.controller.progress(a, session.id, 1, 0)
        drive(self.clock, 2)
        self.assertEqual(session.phase, "data")
        sent = len(self.writer.datagrams())
        self.assertLess(sent, 500)
        self.assertGreater(session._sender.paused, 0)
        self.controller.progress(a, session.id, 1, 1000000)
        drive(self.clock, 2)
        self.assertEqual(len(self.writer.datagrams()), 1000)
        self.assertEqual(session.phase, "collect")

    def test_repairRoundStartsWithoutAcks(self):
        """
        If a receiver that reported ranges missing does not acknowledge the
        next round's announcement, the round's data starts anyway (it is
        still on the group and keeps datagrams of a later round); in the
        first round, the data waits for the announcement to be acknowledged
        by receivers that have not reported (up to C{announce_timeout}).
        """
        session = self.start()
        a = FakeConnection(hang=(commands.Announce,))
        b = FakeConnection()
        self.controller.register(a, "a", "x")
        self.controller.register(b, "b", "y")
        drive(self.clock, 0.5)
        self.assertEqual(session.phase, "announce")
        self.assertEqual(self.writer.datagrams(), [])
        self.finishRound()
        before = len(self.writer.datagrams())
        self.controller.reportMissing(a, session.id, 1, [(0, 3000)])
        self.controller.reportMissing(b, session.id, 1, [])
        self.assertEqual(session.round, 2)
        self.assertEqual(a.named(commands.Announce)[-1]["round"], 2)
        drive(self.clock, 0.05)
        self.assertEqual(len(self.writer.datagrams()), before + 3)
        self.assertEqual(session.rounds[-1]["announce_seconds"], 0)

    def test_silentReceiverHoldsRepairRound(self):
        """
        If a receiver of the current group that kept up in the last round
        has not reported progress in a repair round (its announcement
        still queued), the round goes C{flow_window} bytes and waits: until
        the receiver reports progress, or for C{min_rate_seconds} (below
        the rate floor).
        """
        session, a, b = self._twoReceiverSession()
        self.keepUp(session, [a, b], 4)
        self.assertEqual(session.phase, "collect")
        before = len(self.writer.datagrams())
        self.controller.reportMissing(a, session.id, 1, [(0, 500000)])
        self.controller.reportMissing(b, session.id, 1, [(0, 500000)])
        drive(self.clock, 1)
        sent = len(self.writer.datagrams()) - before
        self.assertGreaterEqual(sent, 200 - 63)
        self.assertLessEqual(sent, 200 + 63)
        self.assertEqual(session.phase, "data")
        # a reports progress: b still holds the round at its start
        self.controller.progress(a, session.id, 2, 500000)
        drive(self.clock, 0.5)
        self.assertLessEqual(len(self.writer.datagrams()) - before, 200 + 63)
        # b has not moved for min_rate_seconds: it no longer counts
        drive(self.clock, 1.5)
        self.assertEqual(len(self.writer.datagrams()) - before, 500)
        self.assertEqual(session.phase, "collect")

    def test_flowControlLaterRounds(self):
        """
        If a receiver falls behind in a repair round, the sender pauses there
        too, the window counted in bytes of the round's data (ranges spread
        over the image), until the receiver catches up; a receiver that is
        no longer in the current group does not hold it back.
        """
        session, a, b = self._twoReceiverSession()
        self.keepUp(session, [a, b], 4)
        self.assertEqual(session.phase, "collect")
        self.controller.progress(a, session.id, 1, 0)  # a round late: ignored
        # a misses every other 1000 bytes: 500,000 bytes over the whole image
        missing = [(o, o + 1000) for o in range(0, 1000000, 2000)]
        self.controller.reportMissing(a, session.id, 1, missing)
        self.controller.reportMissing(b, session.id, 1, [])
        self.assertEqual(session.round, 2)
        before = 1000  # round 1's datagrams
        # b (done) reports progress 0 too: it must not count
        self.controller.progress(b, session.id, 2, 0)
        self.controller.progress(a, session.id, 2, 0)
        drive(self.clock, 1)
        self.assertEqual(session.phase, "data")
        sent = len(self.writer.datagrams()) - before
        # about 200,000 bytes of the round (datagrams of 1000 bytes, in
        # batches of 63), not 200,000 bytes of image offsets (100 datagrams)
        self.assertGreaterEqual(sent, 200 - 63)
        self.assertLessEqual(sent, 200 + 63)
        # position 400,000 is 200,000 bytes into the round
        self.controller.progress(a, session.id, 2, 400000)
        drive(self.clock, 0.5)
        sent = len(self.writer.datagrams()) - before
        self.assertGreaterEqual(sent, 400 - 63)
        self.assertLessEqual(sent, 400 + 63)
        self.controller.progress(a, session.id, 2, 1000000)
        drive(self.clock, 1)
        self.assertEqual(len(self.writer.datagrams()) - before, 500)
        self.assertEqual(session.phase, "collect")

    def keepUp(self, session, connections, seconds, step=0.005, every=10):
        """
        Drive the clock for C{seconds} in steps of C{step}, the receivers
        of C{connections} reporting every C{every} steps the end of the
        last datagram sent (they keep up with the sender).
        """
        for i in range(int(round(seconds / step))):
            self.clock.advance(step)
            sent = self.writer.batches and self.writer.batches[-1]
            if sent and session.phase == "data" and i % every == 0:
                last = DataDatagram.from_wire(sent[-1], session.key, session.id)
                for c in connections:
                    self.controller.progress(c, session.id, session.round,
                                             last.offset + len(last.payload))

    def test_slowProgressDoesNotStall(self):
        """
        If a receiver reports one more byte every 1.5 seconds, it stops
        holding the sender back once its progress over
        C{min_rate_seconds} is below C{min_receiver_rate} of the session's
        rate: the others get the round at the session's rate after that
        (not at the slow one's pace), and in the next round it does not
        hold the window at all (it was too slow in the last one).
        """
        session, a, b = self._twoReceiverSession(rate=10)  # 1.25 MB/s: 0.8 s a round
        self.controller.progress(b, session.id, 1, 1)
        position = [1]

        def creep():
            position[0] += 1
            self.controller.progress(b, session.id, session.round, position[0])
        creeper = task.LoopingCall(creep)
        creeper.clock = self.clock
        creeper.start(1.5, now=False)
        self.addCleanup(creeper.stop)
        # the window's 200,000 bytes go at once; then b holds the round
        # for min_rate_seconds (2 s), then the rest goes at the rate
        self.keepUp(session, [a], 2.9)
        self.assertEqual(session.phase, "collect")
        self.assertEqual(session.rounds[0]["too_slow"], ["b"])
        self.controller.reportMissing(a, session.id, 1, [(0, 500000)])
        self.controller.reportMissing(b, session.id, 1, [(0, 500000)])
        self.assertEqual(session.round, 2)
        self.keepUp(session, [a], 0.5)
        self.assertEqual(session.phase, "collect")
        self.assertEqual(session.rounds[1]["paused"], 0)

    def test_flowControlStalledReceiver(self):
        """
        If a receiver keeps reporting the same position (its data path is
        broken), it stops holding the sender back after
        C{min_rate_seconds}: its progress is below the rate floor.
        """
        session, a, b = self._twoReceiverSession(rate=None)
        self.controller.progress(a, session.id, 1, 1000)
        for _ in range(15):
            drive(self.clock, 0.1)
            self.controller.progress(a, session.id, 1, 1000)
        self.assertEqual(session.phase, "data")
        self.assertLess(len(self.writer.datagrams()), 300)
        for _ in range(10):
            drive(self.clock, 0.1)
            self.controller.progress(a, session.id, 1, 1000)
        self.assertEqual(len(self.writer.datagrams()), 1000)

    def test_unknownSessionAndUnregistered(self):
        """
        If a connection names an unknown session or is not enrolled, the
        declared errors are raised.
        """
        session = self.start()
        a = FakeConnection()
        self.assertRaises(commands.UnknownSession, self.controller.reportMissing, a, 99, 1, [])
        self.assertRaises(commands.NotRegistered, self.controller.reportMissing, a,
                          session.id, 1, [])


class FakeEntry:
    def __init__(self, name, path, sha256):
        self.name = name
        self.size = os.path.getsize(path)
        self.sha256 = sha256
        self.path = path

    def intact(self):
        return True

    def openDescriptor(self):
        return os.open(self.path, os.O_RDONLY)


class FakeCatalog:
    def __init__(self, directory):
        self.directory = directory
        self.entries = {}

    def get(self, name):
        return self.entries.get(name)


class CatalogTests(SynchronousTestCase):
    """
    Catalogue images and C{auto_start}.
    """

    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        path = os.path.join(self.dir, "cat.img")
        with open(path, "wb") as f:
            f.write(os.urandom(5000))
        self.catalog = FakeCatalog(self.dir)
        entry = FakeEntry("cat.img", path, "CATSHA")
        self.catalog.entries["cat.img"] = entry
        self.clock = task.Clock()
        self.hashed = []
        # (authentication: none: see SessionTests.setUp)
        config = loadConfig(text="imagecast:\n  enabled: true\n  authentication: none\n"
                            "  root: %s\n  auto_start: true\n"
                            "  min_receivers: 1\n  max_wait: 5\n" % (self.mktemp(),))
        self.controller = Controller(
            self.clock, config["imagecast"], writerFactory=lambda g, p: FakeWriter(),
            hasher=lambda p: self.hashed.append(p) or defer.succeed("X"),
            sessionIds=lambda: 7, catalog=lambda: self.catalog)

    def test_catalogueDigestUsed(self):
        """
        If the image is in the catalogue, the session takes its digest and
        does not hash the file again.
        """
        session = self.successResultOf(self.controller.startSession("cat.img"))
        self.assertEqual(session.sha256, "CATSHA")
        self.assertEqual(self.hashed, [])
        self.assertEqual(session.name, "cat.img")

    def test_autoStart(self):
        """
        If C{auto_start} is on and a receiver asks for a catalogue image that
        no session sends, a session starts and enrolls it; a second receiver
        asking for it joins the same session.
        """
        a, b = FakeConnection(), FakeConnection()
        self.controller.register(a, "a", "x", image="cat.img")
        self.assertEqual(list(self.controller.sessions), [7])
        session = self.controller.sessions[7]
        self.assertIn("a", session.members)
        self.controller.register(b, "b", "y", image="cat.img")
        self.assertEqual(len(self.controller.sessions), 1)
        self.assertIn("b", session.members)
        drive(self.clock, 1)
        self.assertEqual(a.named(commands.Announce)[0]["sha256"], "CATSHA")

    def test_autoStartUnknownImage(self):
        """
        If a receiver asks for an image that exists nowhere, no session
        starts and nothing breaks.
        """
        self.controller.register(FakeConnection(), "a", "x", image="nothere.img")
        self.assertEqual(self.controller.sessions, {})
