# -*- test-case-name: tests.test_mtftp_flowcontrol -*-
"""
Tests for L{provisioner.tftp.multicast.flowcontrol}: delayed start, QoS by
load, rate control and retransmit-last.
"""

from twisted.internet import task
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from provisioner.config import loadConfig
from provisioner.net import pacing
from provisioner.tftp.multicast import flowcontrol


class _Events:
    """
    Collect log events while a test runs.
    """

    def __init__(self, case):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        case.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def texts(self):
        from twisted.logger import formatEvent
        return [formatEvent(e) for e in self.events]


class DelayedStartTests(SynchronousTestCase):

    def setUp(self):
        self.clock = task.Clock()

    def test_interface(self):
        """
        If built, L{DelayedStart} provides L{IStartPolicy}.
        """
        verifyObject(flowcontrol.IStartPolicy, flowcontrol.DelayedStart(self.clock))

    def test_immediate(self):
        """
        If one client suffices, the gate is open at once.
        """
        gate = flowcontrol.DelayedStart(self.clock, 1, 5).gate("s")
        self.assertEqual(self.successResultOf(gate.whenOpen()), "immediate")

    def test_clients(self):
        """
        If N clients join before T seconds, the gate opens on the Nth,
        logs the decision and cancels its timer.
        """
        events = _Events(self)
        policy = flowcontrol.DelayedStart(self.clock, 3, 10)
        gate = policy.gate("f@g")
        d = gate.whenOpen()
        gate.joined(1)
        self.clock.advance(2)
        gate.joined(2)
        self.assertNoResult(d)
        gate.joined(3)
        self.assertEqual(self.successResultOf(d), "clients")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(policy.opened, {"clients": 1})
        self.assertTrue(any("opened by clients after 2.00s with 3 client(s)" in t
                            for t in events.texts()))

    def test_timer(self):
        """
        If fewer than N clients join, the gate opens after T seconds.
        """
        gate = flowcontrol.DelayedStart(self.clock, 5, 4).gate("s")
        d = gate.whenOpen()
        gate.joined(2)
        self.clock.advance(3.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        self.assertEqual(self.successResultOf(d), "timer")

    def test_noCount(self):
        """
        If no client count is set (0), the gate opens only after T seconds,
        however many clients join.
        """
        gate = flowcontrol.DelayedStart(self.clock, 0, 2).gate("s")
        d = gate.whenOpen()
        for n in range(1, 300):
            gate.joined(n)
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        self.assertEqual(self.successResultOf(d), "timer")

    def test_defaults(self):
        """
        If built from the default configuration, a session waits 2 seconds
        (no client count) before its first DATA.
        """
        start = flowcontrol.fromConfig(loadConfig(text="")["tftp"]["multicast"],
                                       self.clock)[0]
        self.assertEqual((start.minClients, start.maxWait), (0, 2.0))
        d = start.gate("s").whenOpen()
        self.clock.advance(1.99)
        self.assertNoResult(d)
        self.clock.advance(0.02)
        self.assertEqual(self.successResultOf(d), "timer")

    def test_cancel(self):
        """
        If a gate is cancelled, its timer is gone and it never opens.
        """
        gate = flowcontrol.DelayedStart(self.clock, 5, 4).gate("s")
        d = gate.whenOpen()
        gate.cancel()
        self.clock.advance(10)
        self.assertNoResult(d)


class LoadQualityTests(SynchronousTestCase):

    def setUp(self):
        self.conditions = flowcontrol.Conditions()
        self.policy = flowcontrol.LoadQuality(lambda: self.conditions, maxSessions=4,
                                              maxBandwidth=1000, maxLoad=0.9, blksize=512,
                                              timeoutFactor=3)

    def test_interface(self):
        """
        If built, L{LoadQuality} provides L{IQualityPolicy}.
        """
        verifyObject(flowcontrol.IQualityPolicy, self.policy)

    def test_normal(self):
        """
        If conditions are below every mark, options pass unchanged.
        """
        self.assertEqual(self.policy.decide(1428, 1.0), (1428, 1.0))
        self.assertFalse(self.policy.degraded)

    def test_degradeAndBack(self):
        """
        If a condition reaches its mark, new sessions get the smaller
        blksize and longer timeout (logged once); they get the normal values
        again only once all conditions are below 80% of their marks.
        """
        events = _Events(self)
        self.conditions = flowcontrol.Conditions(sessions=4)
        self.assertEqual(self.policy.decide(1428, 1.0), (512, 3.0))
        self.assertEqual(self.policy.decide(256, 2.0), (256, 6.0))
        self.conditions = flowcontrol.Conditions(sessions=3, bandwidth=900)
        self.assertEqual(self.policy.decide(1428, 1.0), (512, 3.0))
        self.conditions = flowcontrol.Conditions(sessions=3, bandwidth=100)
        self.assertEqual(self.policy.decide(1428, 1.0), (1428, 1.0))
        self.assertEqual(self.policy.changes, 2)
        texts = events.texts()
        self.assertTrue(any("QoS degraded (sessions 4 >= 4)" in t for t in texts))
        self.assertTrue(any("QoS back to normal" in t for t in texts))

    def test_bandwidthAndLoad(self):
        """
        If bandwidth or CPU load is high, the policy degrades too.
        """
        self.conditions = flowcontrol.Conditions(bandwidth=2000)
        self.assertEqual(self.policy.decide(1428, 1)[0], 512)
        policy = flowcontrol.LoadQuality(lambda: flowcontrol.Conditions(load=1.5), maxLoad=1)
        self.assertEqual(policy.decide(1428, 1)[0], 512)

    def test_disabled(self):
        """
        If every mark is 0, the policy never degrades.
        """
        policy = flowcontrol.LoadQuality(
            lambda: flowcontrol.Conditions(10 ** 6, 10 ** 12, 100))
        self.assertEqual(policy.decide(1428, 1), (1428, 1))


class RateTests(SynchronousTestCase):

    def setUp(self):
        self.clock = task.Clock()

    def test_bucket(self):
        """
        If a token bucket is empty, L{TokenBucket.delay} says how long to
        wait; after that wait the bytes may go.
        """
        bucket = flowcontrol.TokenBucket(self.clock, 1000, 1000)
        self.assertEqual(bucket.delay(600), 0)
        self.assertEqual(bucket.delay(600), 0.2)
        self.clock.advance(0.2)
        self.assertEqual(bucket.delay(600), 0)

    def test_unlimited(self):
        """
        If the rate is 0, nothing ever waits.
        """
        bucket = flowcontrol.TokenBucket(self.clock, 0, 10)
        self.assertEqual([bucket.delay(10 ** 6) for _ in range(3)], [0, 0, 0])

    def test_interface(self):
        """
        If built, L{AdaptiveRate} provides the rate policy interface both
        multicast senders share, and the token bucket is the shared one.
        """
        verifyObject(pacing.IRatePolicy, flowcontrol.AdaptiveRate(self.clock))
        self.assertIs(flowcontrol.IRatePolicy, pacing.IRatePolicy)
        self.assertIs(flowcontrol.TokenBucket, pacing.TokenBucket)

    def test_bucketFollowsRate(self):
        """
        If the rate is lowered, the session's pacing follows: C{delay}
        waits for tokens at the new rate.
        """
        rate = flowcontrol.AdaptiveRate(self.clock, maximum=8000, minimum=1000, burst=1000)
        self.assertEqual(rate.delay(1000), 0)
        rate.congested()
        self.assertEqual(rate.bucket.rate, 4000)
        self.assertEqual(rate.delay(1000), 0.25)

    def test_lowerOnTimeout(self):
        """
        If the master times out, the rate is multiplied by C{decrease}, not
        below C{minimum}, and each reduction is logged.
        """
        events = _Events(self)
        rate = flowcontrol.AdaptiveRate(self.clock, "s", maximum=8000, minimum=1500,
                                        decrease=0.5)
        rate.congested()
        self.assertEqual(rate.rate, 4000)
        rate.congested()
        rate.congested()
        self.assertEqual(rate.rate, 1500)
        rate.congested()
        self.assertEqual(rate.reductions, 3)
        self.assertTrue(any("lowered to 4000 B/s (master timeout)" in t
                            for t in events.texts()))

    def test_unlimitedLowered(self):
        """
        If there was no limit, the first timeout starts from C{fallback}.
        """
        rate = flowcontrol.AdaptiveRate(self.clock, maximum=0, fallback=10000, minimum=100)
        self.assertEqual(rate.rate, 0)
        rate.congested()
        self.assertEqual(rate.rate, 5000)

    def test_raiseAfterCleanPeriod(self):
        """
        If progress comes after a clean period, the rate goes up by
        C{increase}, capped at C{maximum}; progress inside the period does
        nothing.
        """
        rate = flowcontrol.AdaptiveRate(self.clock, maximum=8000, minimum=1000,
                                        increase=2, cleanPeriod=1)
        rate.congested()
        rate.congested()
        self.assertEqual(rate.rate, 2000)
        self.clock.advance(0.5)
        rate.clean()
        self.assertEqual(rate.rate, 2000)
        self.clock.advance(0.6)
        rate.clean()
        self.assertEqual(rate.rate, 4000)
        self.clock.advance(1.1)
        rate.clean()
        self.clock.advance(1.1)
        rate.clean()
        self.assertEqual(rate.rate, 8000)
        self.assertEqual(rate.raises, 2)

    def test_backToUnlimited(self):
        """
        If there is no maximum, raising past C{fallback} removes the limit.
        """
        rate = flowcontrol.AdaptiveRate(self.clock, maximum=0, fallback=1000,
                                        minimum=100, increase=4, cleanPeriod=1)
        rate.congested()
        self.clock.advance(2)
        rate.clean()
        self.assertEqual(rate.rate, 0)


class RetransmitLastTests(SynchronousTestCase):

    def test_holdoff(self):
        """
        If unexpected packets arrive in a burst, the policy says yes once
        per holdoff and counts the rest as ignored.
        """
        clock = task.Clock()
        policy = flowcontrol.RetransmitLast(clock, True, 0.05)
        verifyObject(flowcontrol.IUnexpectedPacketPolicy, policy)
        self.assertEqual([policy.unexpected("stale ACK") for _ in range(3)],
                         [True, False, False])
        clock.advance(0.06)
        self.assertTrue(policy.unexpected("stale ACK"))
        self.assertEqual((policy.retransmits, policy.ignored), (2, 2))

    def test_disabled(self):
        """
        If disabled, the policy never retransmits.
        """
        policy = flowcontrol.RetransmitLast(task.Clock(), False)
        self.assertFalse(policy.unexpected("x"))


class FromConfigTests(SynchronousTestCase):

    def test_fromConfig(self):
        """
        If built from the C{tftp.multicast} section, the policies carry its
        values.
        """
        config = loadConfig(text="tftp:\n  multicast:\n    start_min_clients: 4\n"
                            "    start_max_wait: 3\n    rate_max: 5000000\n"
                            "    qos_max_sessions: 2\n")["tftp"]["multicast"]
        clock = task.Clock()
        start, quality, makeRate, makeUnexpected = flowcontrol.fromConfig(
            config, clock, lambda: flowcontrol.Conditions())
        self.assertEqual((start.minClients, start.maxWait), (4, 3.0))
        self.assertEqual(quality.maxSessions, 2)
        self.assertEqual(makeRate("x").rate, 5000000)
        self.assertTrue(makeUnexpected().enabled)
