# -*- test-case-name: tests.test_net_pacing -*-
"""
Pacing for both multicast senders: one rate policy interface, one token
bucket.

The design, in two parts that the senders put together:

  - L{IRatePolicy} decides the rate. It holds the sender's current rate
    (bytes per second, 0 for no limit) and hears two events, which each
    sender derives from its own feedback: L{IRatePolicy.congested} (lower
    the rate now) and L{IRatePolicy.clean} (no sign of congestion: the
    policy may raise it). L{MultiplicativeRate} implements both: multiply
    by C{decrease} (not below C{minimum}), by C{increase} (not above
    C{maximum}) at most once per C{cleanPeriod}.
  - L{TokenBucket} enforces a rate on an injected clock.

The two implementations differ only in where the events come from:

  - multicast TFTP (L{provisioner.tftp.multicast.flowcontrol.AdaptiveRate}):
    a master client's timeout is congestion, its acknowledgement of new
    data is clean (raising after C{cleanPeriod} seconds without a timeout);
    it keeps one L{TokenBucket} at its rate for the whole session.
  - imagecast (L{provisioner.imagecast.rate.BurstLossRate}): after each
    round, burst loss above a high mark in any receiver's report is
    congestion, below a low mark in every report is clean (each round is a
    verdict: no period); each round's sender paces with a new
    L{TokenBucket} at the rate.

Pure policy: no socket, no reactor import; the clock is injected.
"""

from zope.interface import Attribute, Interface, implementer

__all__ = ["IRatePolicy", "MultiplicativeRate", "TokenBucket"]


class IRatePolicy(Interface):
    """
    The send rate of one multicast sender, adapted to its receivers'
    feedback.
    """

    rate = Attribute("the current rate in bytes per second, or 0 for no limit")
    reductions = Attribute("how many times the rate was lowered")
    raises = Attribute("how many times the rate was raised")

    def congested():
        """
        The feedback shows congestion: lower the rate.
        """

    def clean():
        """
        The feedback shows no congestion: the policy may raise the rate
        (it decides how often).
        """


@implementer(IRatePolicy)
class MultiplicativeRate:
    """
    Multiplicative decrease on congestion, multiplicative increase after a
    clean period.

      - L{congested}: the rate (C{fallback} if there was no limit) is
        multiplied by C{decrease}, not below C{minimum}; the clean period
        starts again.
      - L{clean}: once C{cleanPeriod} seconds have passed since the last
        change or congestion (0: every time), the rate is multiplied by
        C{increase}, not above C{maximum}. With C{maximum} 0 (no limit),
        reaching C{fallback} removes the limit again. An unlimited rate is
        not raised.

    Subclasses hear every change through L{changed} (to log it, or to pass
    it to a L{TokenBucket}).

    @ivar reductions: how many times the rate was lowered.
    @ivar raises: how many times it was raised.
    """

    def __init__(self, rate, minimum, maximum, decrease, increase, cleanPeriod=0.0,
                 fallback=0, clock=None):
        """
        @param clock: an C{IReactorTime}; needed only for a C{cleanPeriod}.
        """
        self.rate = rate
        self.minimum = minimum
        self.maximum = maximum
        self.decrease = decrease
        self.increase = increase
        self.cleanPeriod = cleanPeriod
        self.fallback = fallback
        self.clock = clock
        self.reductions = 0
        self.raises = 0
        self._cleanSince = self._now()

    def _now(self):
        return self.clock.seconds() if self.clock is not None else 0.0

    def congested(self):
        new = max(self.minimum, (self.rate or self.fallback) * self.decrease)
        self._cleanSince = self._now()
        if new != self.rate:
            old, self.rate = self.rate, new
            self.reductions += 1
            self.changed(old, new)

    def clean(self):
        now = self._now()
        if not self.rate or (self.cleanPeriod and now - self._cleanSince < self.cleanPeriod):
            return
        self._cleanSince = now
        new = self.rate * self.increase
        if self.maximum and new >= self.maximum:
            new = self.maximum
        elif not self.maximum and new >= self.fallback:
            new = 0  # back to no limit
        if new != self.rate:
            old, self.rate = self.rate, new
            self.raises += 1
            self.changed(old, new)

    def changed(self, old, new):
        """
        The rate went from C{old} to C{new} (0: no limit). Does nothing
        here.
        """


class TokenBucket:
    """
    A token bucket in bytes on an injected clock: C{rate} bytes per second,
    at most C{burst} bytes saved; a rate of 0 means no limit.

    A full bucket lets one request larger than C{burst} go (it would never
    fit otherwise).

    @ivar tokens: the bytes that may go now.
    """

    def __init__(self, clock, rate, burst):
        self.clock = clock
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self._last = clock.seconds()

    def refill(self):
        """
        Add the tokens earned since the last refill.
        """
        now = self.clock.seconds()
        if self.rate:
            self.tokens = min(self.burst, self.tokens + (now - self._last) * self.rate)
        self._last = now

    def _fits(self, nbytes):
        return self.tokens >= nbytes or self.tokens >= self.burst

    def take(self, nbytes):
        """
        Take C{nbytes} tokens if they are there.

        @return: L{True} if taken (always with no limit).
        """
        if not self.rate:
            return True
        self.refill()
        if self._fits(nbytes):
            self.tokens -= nbytes
            return True
        return False

    def wait(self, nbytes):
        """
        @return: the seconds until C{nbytes} tokens are there (0: now);
            nothing is taken.
        """
        if not self.rate:
            return 0.0
        self.refill()
        if self._fits(nbytes):
            return 0.0
        return (nbytes - self.tokens) / self.rate

    def delay(self, nbytes):
        """
        Take C{nbytes} tokens and return 0, or return how long to wait (and
        take nothing).
        """
        if self.take(nbytes):
            return 0.0
        return (nbytes - self.tokens) / self.rate

    def giveBack(self, nbytes):
        """
        Return the tokens of C{nbytes} taken but not sent.
        """
        self.tokens += nbytes

    def setRate(self, rate):
        """
        Change the rate from now on (0: no limit).
        """
        self.refill()
        self.rate = float(rate)
