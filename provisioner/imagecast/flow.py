# -*- test-case-name: tests.test_imagecast_sender,tests.test_imagecast_limits -*-
"""
Flow control of imagecast rounds: the sender stays at most C{flow_window}
bytes of a round's data ahead of the slowest receiver of the current group
that progresses fast enough to matter.

L{FlowWindow} keeps the receivers in a heap by position, updated when one
moves or changes (enrolls, reconnects, reports): the gate looks at the
slowest only, so a batch costs O(log n), not a pass over every receiver.

The rate floor: a receiver whose progress over the last C{period} seconds
is below C{floor} bytes a second (C{imagecast.min_receiver_rate}, a
fraction of the session's rate) stops holding the sender back: whatever it
misses comes in repair rounds or over the control channel. A receiver that
reports no progress at all, or one more byte now and then, no longer holds
every other receiver to its pace. One that was too slow in a round is
judged from the start of the next (no period of grace), and holds the
window again as soon as it keeps up.
"""

import collections
import heapq
import itertools

from provisioner.imagecast import ranges as R

__all__ = ["FlowWindow"]


class FlowWindow:
    """
    Flow control of one round: a batch ending at image offset C{end} may go
    when every connected receiver of the current group that keeps up (see
    the rate floor above) is less than C{window} bytes of this round's data
    behind it. One that has not reported progress for this round yet
    stands at the round's start since the data started (the sender does not
    wait for repair rounds' announcements to be acknowledged: the first
    C{window} bytes go at once, the rest once every receiver is taking
    them). Positions are image offsets; they are compared in bytes the
    round carries (L{R.RoundBytes}), so a repair round spread over the
    whole image gets the same window as the first.

    The heap holds C{(round bytes below the position, sequence, member)};
    only a member's latest entry counts (C{_latest}). Entries of members
    that left the current group, disconnected or fell below the floor are
    dropped when they reach the top; L{touch} puts a member back when that
    changes (a slow one comes back by moving, which touches it, and is
    judged again when it reaches the top).

    Each member's recent positions (C{_samples}: times and round bytes, at
    most one per L{touch}, older than C{period} dropped) give its progress
    over the last C{period} seconds.

    @ivar round: the round number.
    @ivar tooSlow: the members the floor took out of the window this
        round (their C{slow} flag is set, and cleared once they keep up).
    """

    def __init__(self, clock, members, roundNumber, roundRanges, window, floor=0.0,
                 period=2.0):
        """
        @param members: the session's L{provisioner.imagecast.member.Member}s
            at the start of the round (later ones come through L{touch}).
        @param floor: bytes of the round a second a receiver must take, over
            C{period} seconds, to hold the window (0: every receiver holds
            it, however slow).
        """
        self.clock = clock
        self.round = roundNumber
        self.window = window
        self.floor = floor
        self.period = period
        self.tooSlow = set()
        self._where = R.RoundBytes(roundRanges)
        self._opened = clock.seconds()
        self._sequence = itertools.count()
        self._latest = {}
        self._samples = {}
        self._heap = [self._entry(m) for m in members]
        heapq.heapify(self._heap)

    def _entry(self, member):
        p = member.progress
        if p is None or p[0] != self.round:
            # no progress for this round yet (the announcement may still
            # wait in its queue): it stands at the round's start, from the
            # moment the data started
            key = -1
        else:
            key = self._where.at(p[1])
        samples = self._samples.get(member)
        if samples is None:
            # measured from the round's start (a receiver too slow in the
            # last round: from a period before, so that it is judged at once)
            since = self._opened - (self.period if getattr(member, "slow", False) else 0)
            samples = self._samples[member] = collections.deque([(since, -1)])
        if key > samples[-1][1]:
            now = self.clock.seconds()
            samples.append((now, key))
            horizon = now - self.period
            while len(samples) > 2 and samples[1][0] <= horizon:
                samples.popleft()
        sequence = next(self._sequence)
        self._latest[member] = sequence
        return (key, sequence, member)

    def touch(self, member):
        """
        C{member} moved, enrolled, came back or reported: take its state
        again. O(log n).
        """
        heapq.heappush(self._heap, self._entry(member))
        if len(self._heap) > 2 * len(self._latest) + 64:
            # superseded entries pile up under receivers that move often
            self._heap = [e for e in self._heap if self._latest.get(e[2]) == e[1]]
            heapq.heapify(self._heap)

    def _keepsUp(self, member, key, now):
        """
        Whether C{member}, at C{key}, took at least C{floor} bytes a second
        over the last C{period} seconds (or since the round started, once
        a whole period has passed since then).
        """
        if self.floor <= 0:
            return True
        samples = self._samples[member]
        horizon = now - self.period
        while len(samples) > 1 and samples[1][0] <= horizon:
            samples.popleft()
        since, base = samples[0]
        elapsed = now - since
        if elapsed < self.period:
            return True
        return (key - base) >= self.floor * elapsed

    def gate(self, end):
        """
        @return: whether the batch ending at image offset C{end} may go.
        """
        ahead = self._where.at(end) - self.window
        if ahead <= 0:
            return True
        now = self.clock.seconds()
        heap = self._heap
        latest = self._latest
        while heap:
            key, sequence, m = heap[0]
            if latest.get(m) != sequence:
                heapq.heappop(heap)
                continue
            if not m.connected or not m.inCurrentGroup():
                # it no longer holds the round back, until touched again
                heapq.heappop(heap)
                del latest[m]
                continue
            if key >= ahead:
                return True
            if not self._keepsUp(m, key, now):
                # too slow to matter: it gets what it misses later
                heapq.heappop(heap)
                del latest[m]
                if m not in self.tooSlow:
                    self.tooSlow.add(m)
                    m.slow = True
                continue
            if m.slow:
                m.slow = False
                self.tooSlow.discard(m)
            return False
        return True
