# -*- test-case-name: tests.test_imagecast_sender,tests.test_imagecast_limits -*-
"""
Flow control of imagecast rounds: the sender stays at most C{flow_window}
bytes of a round's data ahead of the slowest receiver of the current group.

L{FlowWindow} keeps the receivers in a heap by position, updated when one
moves or changes (enrolls, reconnects, reports): the gate looks at the
slowest only, so a batch costs O(log n), not a pass over every receiver.
"""

import heapq
import itertools

from provisioner.imagecast import ranges as R

__all__ = ["FlowWindow"]


class FlowWindow:
    """
    Flow control of one round: a batch ending at image offset C{end} may go
    when every connected receiver of the current group (except one whose
    position has not moved for C{stall} seconds) is less than C{window}
    bytes of this round's data behind it. One that has not reported
    progress for this round yet stands at the round's start since the data
    started (the sender does not wait for repair rounds' announcements to be
    acknowledged: the first C{window} bytes go at once, the rest once every
    receiver is taking them). Positions are image offsets; they are compared
    in bytes the round carries (L{R.RoundBytes}), so a repair round spread
    over the whole image gets the same window as the first.

    The heap holds C{(round bytes below the position, sequence, moved at,
    member)}; only a member's latest entry counts (C{_latest}). Entries of
    members that left the current group, disconnected or stalled are
    dropped when they reach the top; L{touch} puts a member back when that
    changes (a stalled one only comes back by moving, which touches it).

    @ivar round: the round number.
    """

    def __init__(self, clock, members, roundNumber, roundRanges, window, stall):
        """
        @param members: the session's L{provisioner.imagecast.member.Member}s
            at the start of the round (later ones come through L{touch}).
        """
        self.clock = clock
        self.round = roundNumber
        self.window = window
        self.stall = stall
        self._where = R.RoundBytes(roundRanges)
        self._opened = clock.seconds()
        self._sequence = itertools.count()
        self._latest = {}
        self._heap = [self._entry(m) for m in members]
        heapq.heapify(self._heap)

    def _entry(self, member):
        p = member.progress
        if p is None or p[0] != self.round:
            # no progress for this round yet (the announcement may still
            # wait in its queue): it stands at the round's start, from the
            # moment the data started
            key, moved = -1, self._opened
        else:
            key, moved = self._where.at(p[1]), p[2]
        sequence = next(self._sequence)
        self._latest[member] = sequence
        return (key, sequence, moved, member)

    def touch(self, member):
        """
        C{member} moved, enrolled, came back or reported: take its state
        again. O(log n).
        """
        heapq.heappush(self._heap, self._entry(member))
        if len(self._heap) > 2 * len(self._latest) + 64:
            # superseded entries pile up under receivers that move often
            self._heap = [e for e in self._heap if self._latest.get(e[3]) == e[1]]
            heapq.heapify(self._heap)

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
            key, sequence, moved, m = heap[0]
            if latest.get(m) != sequence:
                heapq.heappop(heap)
                continue
            if not m.connected or not m.inCurrentGroup() or now - moved > self.stall:
                # it no longer holds the round back, until touched again
                heapq.heappop(heap)
                del latest[m]
                continue
            return key >= ahead
        return True
