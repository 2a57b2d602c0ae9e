# -*- test-case-name: tests.test_mtftp_client -*-
"""
Which blocks of a multicast TFTP download arrived, and the gaps: their
list, sizes, how often new gaps opened during reception and runs of nearby
gaps (the figures the role policy judges after the first pass)
(L{GapTracker}); which of them a master lists in its ACKs (L{RangeLister}).
"""

__all__ = ["GapTracker", "RangeLister"]


class GapTracker:
    """
    Received blocks of a file of C{nblocks} blocks (1-based), and the gaps.

    @ivar received: how many distinct blocks arrived.
    @ivar duplicates: blocks that arrived again.
    @ivar gapsOpened: times a block arrived beyond a missing one that was
        not already known missing (new gaps seen during reception: their
        frequency).
    @ivar highest: the highest block seen.
    """

    def __init__(self, nblocks):
        self.nblocks = nblocks
        self._have = bytearray(nblocks + 1)
        self._have[0] = 1
        self.received = 0
        self.duplicates = 0
        self.gapsOpened = 0
        self.highest = 0
        self._firstHole = 1

    def add(self, block):
        """
        Record a block.

        @return: L{True} if it is new.
        """
        if not 1 <= block <= self.nblocks:
            return False
        if self._have[block]:
            self.duplicates += 1
            return False
        if block > self.highest + 1 and self.highest >= self._firstHole - 1:
            self.gapsOpened += 1
        self._have[block] = 1
        self.received += 1
        if block > self.highest:
            self.highest = block
        if block == self._firstHole:
            self._advance()
        return True

    def _advance(self):
        n = self.nblocks
        h = self._firstHole
        have = self._have
        while h <= n and have[h]:
            h += 1
        self._firstHole = h

    def has(self, block):
        return 0 <= block <= self.nblocks and bool(self._have[block])

    def nextReceived(self, after):
        """
        The first block after block C{after} that arrived, or -1 if none
        did.
        """
        return self._have.find(1, after + 1)

    def gapsAfter(self, start, count, upTo=None):
        """
        The first C{count} missing ranges C{[(first, last)]} from block
        C{start} on, up to block C{upTo} (default: the highest block seen,
        past which nothing is known missing yet).
        """
        end = (self.highest if upTo is None else min(upTo, self.nblocks)) + 1
        have = self._have
        out = []
        b = max(1, start)
        while len(out) < count and b < end:
            b = have.find(0, b, end)
            if b < 0:
                break
            e = have.find(1, b, end)
            last = end - 1 if e < 0 else e - 1
            out.append((b, last))
            b = last + 1
        return out

    @property
    def firstHole(self):
        """
        The lowest missing block, or C{nblocks + 1} when complete.
        """
        return self._firstHole

    @property
    def complete(self):
        return self.received == self.nblocks

    @property
    def missing(self):
        return self.nblocks - self.received

    def gaps(self, upTo=None):
        """
        The missing ranges C{[(first, last)]} up to block C{upTo} (default:
        all).
        """
        end = self.nblocks if upTo is None else min(upTo, self.nblocks)
        out = []
        have = self._have
        b = self._firstHole
        while b <= end:
            if have[b]:
                nxt = have.find(0, b, end + 1)
                if nxt < 0:
                    break
                b = nxt
                continue
            e = have.find(1, b, end + 1)
            last = end if e < 0 else e - 1
            out.append((b, last))
            b = last + 1
        return out

    def stats(self, blksize, size=None):
        """
        The gap figures that the role policy judges
        (L{provisioner.client.roles.RolePolicy}) and the summary reports.

        @return: a C{dict}: C{gaps} (count), C{blocks} and C{bytes} missing,
            C{largest} gap in blocks, C{mean} gap size, C{frequency} (gaps
            per 1000 blocks), C{runs} (gaps separated by at most one
            received block: a continuity of gaps), C{opened}.
        """
        gaps = self.gaps()
        blocks = sum(b - a + 1 for a, b in gaps)
        nbytes = blocks * blksize
        if size is not None and gaps and gaps[-1][1] == self.nblocks:
            nbytes -= blksize - (size - (self.nblocks - 1) * blksize)
        runs = sum(1 for (a, b), (c, d) in zip(gaps, gaps[1:]) if c - b <= 2)
        return dict(gaps=len(gaps), blocks=blocks, bytes=max(0, nbytes),
                    largest=max((b - a + 1 for a, b in gaps), default=0),
                    mean=(blocks / float(len(gaps))) if gaps else 0.0,
                    frequency=1000.0 * len(gaps) / max(1, self.nblocks),
                    runs=runs, opened=self.gapsOpened)


class RangeLister:
    """
    Which missing ranges a master lists in its C{mcepoch} ACKs
    (docs/wire/multicast-tftp.md, section 2): those not listed before, or
    listed a window of DATA ago or more (the server sent them at once, so
    they come behind at most a window; sooner, a receiver that lags behind
    its socket would have them sent twice).
    """

    #: ranges remembered before those long filled are forgotten
    MEMORY = 4096

    def __init__(self):
        self._listedAt = {}

    def take(self, tracker, start, count, now, window):
        """
        The missing ranges of C{tracker} from block C{start} on to list in
        an ACK now, at most C{count}.

        @param now: the DATA received so far (the clock of this rule).
        @param window: the master's window (in DATA).
        """
        listedAt = self._listedAt
        out = []
        for first, last in tracker.gapsAfter(start, 4 * count):
            when = listedAt.get(first)
            if when is None or now - when >= window:
                listedAt[first] = now
                out.append((first, last))
                if len(out) >= count:
                    break
        if len(listedAt) > self.MEMORY:
            # Forget ranges long filled (bounded memory).
            hole = tracker.firstHole
            for first in [b for b in listedAt if b < hole]:
                del listedAt[first]
        return out
