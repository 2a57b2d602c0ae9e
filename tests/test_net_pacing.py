# -*- test-case-name: tests.test_net_pacing -*-
"""
Tests for L{provisioner.net.pacing}: the token bucket and the rate policy
both multicast senders share.
"""

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from provisioner.imagecast.rate import BurstLossRate
from provisioner.net.pacing import IRatePolicy, MultiplicativeRate, TokenBucket
from provisioner.tftp.multicast.flowcontrol import AdaptiveRate


class TokenBucketTests(SynchronousTestCase):
    """
    Tests for L{TokenBucket}.
    """

    def setUp(self):
        self.clock = task.Clock()

    def test_takeAndWait(self):
        """
        If the bucket lacks tokens, L{TokenBucket.take} refuses and takes
        nothing, and L{TokenBucket.wait} says how long until they are there.
        """
        bucket = TokenBucket(self.clock, 1000, 500)
        self.assertTrue(bucket.take(400))
        self.assertFalse(bucket.take(200))
        self.assertEqual(bucket.tokens, 100)
        self.assertAlmostEqual(bucket.wait(200), 0.1)
        self.assertEqual(bucket.tokens, 100)
        self.clock.advance(0.1)
        self.assertEqual(bucket.wait(200), 0)
        self.assertTrue(bucket.take(200))

    def test_delayTakes(self):
        """
        If L{TokenBucket.delay} returns 0, the tokens are taken; otherwise
        nothing is.
        """
        bucket = TokenBucket(self.clock, 1000, 1000)
        self.assertEqual(bucket.delay(600), 0)
        self.assertEqual(bucket.delay(600), 0.2)
        self.assertEqual(bucket.tokens, 400)

    def test_burstCaps(self):
        """
        If the bucket idles, it saves no more than C{burst}.
        """
        bucket = TokenBucket(self.clock, 1000, 500)
        self.clock.advance(100)
        bucket.refill()
        self.assertEqual(bucket.tokens, 500)

    def test_fullBucketLetsLargeRequestGo(self):
        """
        If a request is larger than C{burst}, a full bucket lets it go (it
        would never fit otherwise).
        """
        bucket = TokenBucket(self.clock, 1000, 500)
        self.assertTrue(bucket.take(800))
        self.assertFalse(bucket.take(800))

    def test_giveBack(self):
        """
        If tokens taken for datagrams the socket refused are given back,
        they can be taken again at once.
        """
        bucket = TokenBucket(self.clock, 1000, 500)
        self.assertTrue(bucket.take(500))
        bucket.giveBack(300)
        self.assertTrue(bucket.take(300))

    def test_noLimit(self):
        """
        If the rate is 0, nothing ever waits.
        """
        bucket = TokenBucket(self.clock, 0, 10)
        self.assertEqual([bucket.delay(10 ** 6) for _ in range(3)], [0, 0, 0])
        self.assertTrue(bucket.take(10 ** 6))
        self.assertEqual(bucket.wait(10 ** 6), 0)

    def test_setRate(self):
        """
        If the rate changes, tokens earned until then count at the old rate
        and later ones at the new.
        """
        bucket = TokenBucket(self.clock, 1000, 1000)
        self.assertTrue(bucket.take(1000))
        self.clock.advance(0.1)
        bucket.setRate(2000)
        self.clock.advance(0.1)
        bucket.refill()
        self.assertAlmostEqual(bucket.tokens, 300)


class MultiplicativeRateTests(SynchronousTestCase):
    """
    Tests for L{MultiplicativeRate} and the two policies built on it.
    """

    def test_interface(self):
        """
        If built, L{MultiplicativeRate} and both senders' policies
        (L{AdaptiveRate} for multicast TFTP, L{BurstLossRate} for
        imagecast) provide L{IRatePolicy}.
        """
        clock = task.Clock()
        verifyObject(IRatePolicy, MultiplicativeRate(1000, 100, 10000, 0.5, 2))
        verifyObject(IRatePolicy, AdaptiveRate(clock, maximum=8000))
        verifyObject(IRatePolicy, BurstLossRate(1000, 100, 10000))

    def test_congestedAndClean(self):
        """
        If there is congestion, the rate is multiplied by C{decrease}, not
        below C{minimum}; when clean, by C{increase}, not above C{maximum};
        only changes are counted and reported to L{changed}.
        """
        changes = []
        policy = MultiplicativeRate(1000, 300, 3000, 0.5, 2)
        policy.changed = lambda old, new: changes.append((old, new))
        policy.congested()
        policy.congested()
        policy.congested()
        self.assertEqual(policy.rate, 300)
        for _ in range(5):
            policy.clean()
        self.assertEqual(policy.rate, 3000)
        self.assertEqual(changes, [(1000, 500), (500, 300), (300, 600), (600, 1200),
                                   (1200, 2400), (2400, 3000)])
        self.assertEqual((policy.reductions, policy.raises), (2, 4))

    def test_cleanPeriod(self):
        """
        If a clean period is set, the rate goes up at most once per period,
        counted from the last congestion or raise.
        """
        clock = task.Clock()
        policy = MultiplicativeRate(1000, 100, 10000, 0.5, 2, cleanPeriod=1, clock=clock)
        policy.clean()
        self.assertEqual(policy.rate, 1000)
        clock.advance(1)
        policy.clean()
        policy.clean()
        self.assertEqual(policy.rate, 2000)
        clock.advance(0.5)
        policy.congested()
        clock.advance(0.6)
        policy.clean()
        self.assertEqual(policy.rate, 1000)
