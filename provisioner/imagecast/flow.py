# -*- test-case-name: tests.test_imagecast_sender -*-
"""
Flow control of imagecast rounds: the sender stays at most C{flow_window}
bytes of a round's data ahead of the slowest receiver of the current group.
"""

from provisioner.imagecast import ranges as R

__all__ = ["flowGate"]


def flowGate(clock, members, roundNumber, roundRanges, window, stall):
    """
    Flow control, every round: a batch ending at image offset C{end} may go
    when every connected receiver of the current group (except one whose
    position has not moved for C{stall} seconds) is less than C{window}
    bytes of this round's data behind it. One that has not reported
    progress for this round yet stands at the round's start since the data
    started (the sender does not wait for repair rounds' announcements to be
    acknowledged: the first C{window} bytes go at once, the rest once every
    receiver is taking them). Positions are image offsets; they are compared
    in bytes the round carries (L{R.RoundBytes}), so a repair round spread
    over the whole image gets the same window as the first.

    @param members: the session's L{provisioner.imagecast.member.Member}s
        (a live view: read at every call of the gate).
    @return: the gate, C{end -> bool}.
    """
    where = R.RoundBytes(roundRanges)
    opened = clock.seconds()

    def gate(end):
        now = clock.seconds()
        ahead = where.at(end) - window
        if ahead <= 0:
            return True
        for m in members:
            if not m.connected or not m.inCurrentGroup():
                continue
            p = m.progress
            if p is None or p[0] != roundNumber:
                # no progress for this round yet (the announcement may
                # still wait in its queue): it stands at the round's
                # start, from the moment the data started
                p = (roundNumber, None, opened)
            if now - p[2] > stall:
                continue
            if p[1] is None or where.at(p[1]) < ahead:
                return False
        return True
    return gate
