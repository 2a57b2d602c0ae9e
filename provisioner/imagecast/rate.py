# -*- test-case-name: tests.test_imagecast_sender -*-
"""
The rate of an imagecast session between rounds: L{BurstLossRate}, an
L{provisioner.net.pacing.IRatePolicy} whose congestion verdict is burst
loss in the receivers' reports.
"""

from zope.interface import implementer

from provisioner.imagecast import ranges as R
from provisioner.net.pacing import IRatePolicy, MultiplicativeRate

__all__ = ["BurstLossRate"]


@implementer(IRatePolicy)
class BurstLossRate(MultiplicativeRate):
    """
    Lower the rate only on burst loss, raise it slowly when there is none.

    A receiver's I{burst loss} is the part of the round it missed in runs of
    at least C{runChunks} consecutive datagrams. Independent random loss at
    probability p makes such runs with probability about p^(runChunks-1) per
    lost datagram (0.1% at 10% loss with the default 4), so it is not taken
    for congestion; overrun socket buffers and queues drop whole runs.

    After each round (L{roundOver}):
      - worst burst fraction above C{high}: congestion, the rate is
        multiplied by C{down} (at least C{minimum});
      - below C{low} for every receiver: clean, multiplied by C{up} (at most
        C{maximum});
      - otherwise unchanged.
    """

    def __init__(self, rate, minimum, maximum, runChunks=4, high=0.02, low=0.002, down=0.7,
                 up=1.25):
        MultiplicativeRate.__init__(self, rate, minimum, maximum, decrease=down, increase=up)
        self.runChunks = runChunks
        self.high = high
        self.low = low

    def burstFraction(self, roundRanges, missing, chunkSize):
        """
        @return: the part of the round's bytes that C{missing} lacks in runs
            of at least C{runChunks} datagrams.
        """
        roundBytes = R.total(roundRanges)
        if not roundBytes:
            return 0.0
        lost = R.intersect(roundRanges, missing)
        burst = sum(e - s for s, e in lost if e - s >= self.runChunks * chunkSize)
        return burst / float(roundBytes)

    def roundOver(self, roundRanges, reports, chunkSize):
        """
        Judge a round by its reports.

        @param roundRanges: what the round carried.
        @param reports: C{{clientId: missing ranges}} of receivers that were
            enrolled for the whole round (none: no verdict).
        @return: the rate for the next round (bytes/s).
        """
        if reports:
            worst = max(self.burstFraction(roundRanges, m, chunkSize) for m in reports.values())
            if worst > self.high:
                self.congested()
            elif worst < self.low:
                self.clean()
        return self.rate
