# -*- test-case-name: tests.test_client_sockfilter -*-
"""
A kernel-side filter for repair rounds: a classic BPF program on the
receiver's data socket that drops, before they are queued, the datagrams of
a round that carry bytes this receiver already holds.

A repair round carries the union of every receiver's missing ranges; one
receiver needs a small part of it (at 16 receivers and 5% loss, about one
datagram in eleven of round 2). Without a filter each of the others is
queued, copied out by C{recvmmsg} and looked at in Python only to be
dropped. The filter lets through exactly the datagrams of the round this
receiver wants, one window of them at a time, and everything it cannot
judge:

  - datagrams that are not version-1 data datagrams of this session;
  - datagrams whose offset is outside the window C{[start, end)} (the
    window ends before the round's last datagram, whose arrival makes the
    receiver report at once);
  - within the window, datagrams at the offsets listed.

So the filter never drops a datagram the receiver wants: an offset it was
not told about is either outside the window (let through) or one the
receiver holds. The receiver moves the window on as its position passes the
window's end (L{RepairFilter.advance}); a stale window only lets more
through.

Classic BPF (C{SO_ATTACH_FILTER}) needs no privilege. Offsets in a socket
filter count from the UDP header; the datagram layout is in
L{provisioner.imagecast.datagram} (docs/wire/imagecast.md). Conditional jumps reach
at most 255 instructions ahead, which bounds a window to L{WINDOW}
offsets.
"""

import bisect
import ctypes
import socket
import struct

from provisioner.imagecast import ranges as R
from provisioner.imagecast.datagram import VERSION

__all__ = ["wantedPieces", "windowProgram", "attach", "detach", "RepairFilter", "WINDOW"]

SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
SO_DETACH_FILTER = getattr(socket, "SO_DETACH_FILTER", 27)

# classic BPF opcodes
_LD_W_ABS = 0x20
_LD_H_ABS = 0x28
_LD_B_ABS = 0x30
_JEQ_K = 0x15
_JGE_K = 0x35
_RET_K = 0x06

_UDP = 8                      # the UDP header before the payload
_AT_VERSION = _UDP + 0
_AT_SESSION = _UDP + 1
_AT_OFFSET_HI = _UDP + 7
_AT_OFFSET_LO = _UDP + 9
_KEEP = 0x40000               # more than any datagram: keep it whole
_DROP = 0

#: offsets per window (the jump to "keep" spans the window's tests)
WINDOW = 240


def wantedPieces(roundRanges, missing, chunkSize):
    """
    Return the sorted image offsets of the datagrams of a round that carry
    bytes in C{missing}.

    A round's datagrams are cut from each of its ranges' start, C{chunkSize}
    bytes each (L{provisioner.imagecast.ranges.chunks}, as the sender does).

    @param roundRanges: the round's ranges, normalised.
    @param missing: what the receiver lacks, normalised.
    """
    out = []
    # each missing range finds its round ranges by bisection: a repair
    # round has far more ranges than one receiver lacks
    starts = [s for s, _ in roundRanges]
    count = len(roundRanges)
    for lo0, hi0 in missing:
        i = max(0, bisect.bisect_right(starts, lo0) - 1)
        while i < count:
            start, end = roundRanges[i]
            if start >= hi0:
                break
            lo = max(start, lo0)
            hi = min(end, hi0)
            if lo < hi:
                first = start + (lo - start) // chunkSize * chunkSize
                last = start + (hi - 1 - start) // chunkSize * chunkSize
                if out and out[-1] >= first:
                    first = out[-1] + chunkSize
                out.extend(range(first, last + 1, chunkSize))
            i += 1
    return out


def windowProgram(session, start, end, offsets):
    """
    The filter for one window: keep what is not a data datagram of
    C{session}, what lies outside C{[start, end)}, and the datagrams at
    C{offsets}; drop the rest.

    @param offsets: at most L{WINDOW} offsets in C{[start, end)}.
    @return: a list of C{(code, jt, jf, k)} instructions.
    @raise ValueError: for too many offsets.
    """
    if len(offsets) > WINDOW:
        raise ValueError("a window holds at most %d offsets" % (WINDOW,))
    high = start >> 32
    base = high << 32
    # a window does not straddle a 4 GiB boundary: the low words compare
    endLow = min(end - base, 0xFFFFFFFF)
    body = [
        (_LD_B_ABS, 0, 0, _AT_VERSION),
        (_JEQ_K, 0, None, VERSION),
        (_LD_W_ABS, 0, 0, _AT_SESSION),
        (_JEQ_K, 0, None, session & 0xFFFFFFFF),
        (_LD_H_ABS, 0, 0, _AT_OFFSET_HI),
        (_JEQ_K, 0, None, high),
        (_LD_W_ABS, 0, 0, _AT_OFFSET_LO),
        (_JGE_K, 0, None, start - base),
        (_JGE_K, None, 0, endLow),
    ]
    body.extend((_JEQ_K, None, 0, o - base) for o in offsets)
    body.append((_RET_K, 0, 0, _DROP))
    keep = len(body)
    body.append((_RET_K, 0, 0, _KEEP))
    program = []
    for at, (code, jt, jf, k) in enumerate(body):
        jump = keep - at - 1
        program.append((code, jump if jt is None else jt, jump if jf is None else jf, k))
    return program


def _fprog(program):
    data = ctypes.create_string_buffer(
        b"".join(struct.pack("=HBBI", *insn) for insn in program))
    return data, struct.pack("=HxxxxxxQ", len(program), ctypes.addressof(data))


def attach(sock, program):
    """
    Attach (or replace) C{sock}'s filter.

    @return: whether the kernel took it.
    """
    data, fprog = _fprog(program)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    except (OSError, ValueError):
        return False
    finally:
        del data
    return True


def detach(sock):
    """
    Remove C{sock}'s filter, if any.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
    except (OSError, ValueError):
        pass


class RepairFilter:
    """
    The window of one receiver's filter over one round: which offsets it
    wants, and how far the window has moved.

    @ivar attached: whether a filter is on the socket.
    @ivar end: where the current window ends (the receiver moves it on once
        its position reaches it).
    """

    #: below this share of the round's datagrams wanted, a filter is worth
    #: its cost
    WORTH = 0.5

    def __init__(self, sock, session):
        self.sock = sock
        self.session = session
        self.attached = False
        self.wanted = []
        self.last = 0
        self.end = None

    def arm(self, roundRanges, missing, chunkSize):
        """
        A new round: filter for what this receiver lacks of it. The round's
        last datagram (from the last range's start, by whole chunks) is
        never in a window.

        @param missing: what the receiver lacks of the round (or more).
        """
        if (not roundRanges or chunkSize <= 0
                or R.total(missing) >= R.total(roundRanges) * self.WORTH):
            # the first round, or a receiver that lacks most of this one
            self.disarm()
            return
        wanted = wantedPieces(roundRanges, missing, chunkSize)
        start, end = roundRanges[-1]
        self.last = start + (end - 1 - start) // chunkSize * chunkSize
        self.wanted = wanted
        self.advance(roundRanges[0][0])

    def advance(self, position):
        """
        Move the window to start at C{position} (the receiver has taken
        everything below it off the socket).
        """
        wanted = self.wanted
        i = bisect.bisect_left(wanted, position)
        start = position
        high = ((start >> 32) + 1) << 32
        limit = min(self.last, high)
        j = min(i + WINDOW, bisect.bisect_left(wanted, limit))
        end = wanted[j] if j < len(wanted) and wanted[j] < limit else limit
        if end <= start:
            # nothing to judge before the last datagram: let all through
            self.disarm()
            return
        if attach(self.sock, windowProgram(self.session, start, end, wanted[i:j])):
            self.attached = True
            self.end = end
        else:
            # an older window may still be on the socket: it must not judge
            # this part of the round
            detach(self.sock)
            self.attached = False
            self.end = None

    def disarm(self):
        if self.attached:
            detach(self.sock)
            self.attached = False
        self.end = None
