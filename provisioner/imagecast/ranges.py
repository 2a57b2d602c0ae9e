# -*- test-case-name: tests.test_imagecast_ranges -*-
"""
Byte-range sets: sorted, disjoint, half-open C{(start, end)} pairs.

Pure functions and one mutable class, no I/O:

  - L{normalise}, L{union}, L{subtract}, L{intersect}, L{total}: set algebra.
  - L{coalesce}: the gap rule that turns the union of every receiver's report
    into the ranges announced for the next round (see its docstring; the rule
    is also in C{docs/wire/imagecast.md}).
  - L{RangeSet}: the receiver's record of what it has, added to one datagram
    at a time.
  - L{toWire}/L{fromWire}: a format byte (1), then zlib of the ranges as
    unsigned LEB128 varints: for each range the gap from the end of the
    previous one (from 0 for the first) and its length. A round of 23,000
    ranges (16 receivers at 5% loss, 128 MiB) takes some 60 KB instead of
    the 370 KB of fixed 16-byte pairs.
  - L{EncodedRanges}: a range list as it came off the wire, decoded later
    (once the peer is known to be allowed to send it) with L{fromWire}'s
    limits or by L{cappedFromWire}.

Decoding is bounded before any range is built: the varints are counted as
the data inflates (a varint ends at each byte below 0x80), and inflating
stops as soon as there are more than a list may hold. 65 KB of zlib can
inflate to 64 MiB, 33 million ranges; a list refused for its count costs
what it took to count past the limit, not what it claims.
"""

import bisect
import itertools
import re
import zlib

try:
    # optional C decoding of range lists (built by setup.py, see datagram.py)
    from provisioner.imagecast import _fastpath
except ImportError:
    _fastpath = None

__all__ = ["normalise", "union", "subtract", "intersect", "total", "coalesce",
           "RangeSet", "RoundBytes", "toWire", "fromWire", "cappedFromWire", "EncodedRanges",
           "RangeError", "chunks", "capRanges"]



class RangeError(ValueError):
    """
    A range list on the wire is malformed.
    """


def normalise(ranges):
    """
    Return C{ranges} sorted, with empty ranges dropped and overlapping or
    touching ranges merged.

    @param ranges: an iterable of C{(start, end)} with C{0 <= start}.
    @rtype: L{list} of L{tuple}
    """
    out = []
    for start, end in sorted(ranges):
        if end <= start:
            continue
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def union(*sets):
    """
    Return the union of range lists, normalised.
    """
    merged = []
    for s in sets:
        merged.extend(s)
    return normalise(merged)


def subtract(a, b):
    """
    Return the parts of C{a} not in C{b} (both normalised).
    """
    out = []
    j = 0
    b = list(b)
    for start, end in a:
        cur = start
        while j < len(b) and b[j][1] <= cur:
            j += 1
        k = j
        while k < len(b) and b[k][0] < end:
            bs, be = b[k]
            if bs > cur:
                out.append((cur, bs))
            cur = max(cur, be)
            if be >= end:
                break
            k += 1
        if cur < end:
            out.append((cur, end))
    return out


def intersect(a, b):
    """
    Return the parts common to C{a} and C{b} (both normalised).

    Each range of the shorter list is looked up in the longer one by
    bisection: a repair round's announcement (tens of thousands of ranges)
    against what one receiver lacks costs the receiver's ranges, not the
    round's.
    """
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return []
    starts = [s for s, _ in a]
    count = len(a)
    out = []
    append = out.append
    find = bisect.bisect_right
    for start, end in b:
        i = find(starts, start) - 1
        if i < 0:
            i = 0
        while i < count:
            s, e = a[i]
            if s >= end:
                break
            lo = start if start > s else s
            hi = end if end < e else e
            if lo < hi:
                append((lo, hi))
            i += 1
    return out


def total(ranges):
    """
    Return the number of bytes in C{ranges} (normalised).
    """
    return sum(end - start for start, end in ranges)


def coalesce(ranges, gap=0, maxRanges=None):
    """
    The gap rule: turn a union of missing ranges into the ranges to send.

      1. Overlapping and touching ranges are merged (this never adds bytes).
      2. Two neighbours are merged when the gap between them is smaller than
         C{gap} bytes: the gap is re-sent in exchange for one range less on
         the control channel. C{gap=0} never adds bytes.
      3. While more than C{maxRanges} remain, the neighbours with the
         smallest gap are merged (ties: the earliest first), so the bytes
         added are as few as possible.

    @param ranges: any iterable of C{(start, end)}.
    @param gap: bytes; gaps strictly smaller are filled.
    @param maxRanges: the most ranges to return, or L{None}.
    @return: the normalised list.
    """
    merged = normalise(ranges)
    if gap > 0 and merged:
        out = [merged[0]]
        for start, end in merged[1:]:
            if start - out[-1][1] < gap:
                out[-1] = (out[-1][0], end)
            else:
                out.append((start, end))
        merged = out
    if maxRanges is not None and len(merged) > maxRanges:
        excess = len(merged) - max(1, maxRanges)
        gaps = sorted((merged[i + 1][0] - merged[i][1], i) for i in range(len(merged) - 1))
        fill = set(i for _, i in gaps[:excess])
        out = [merged[0]]
        for i in range(1, len(merged)):
            if (i - 1) in fill:
                out[-1] = (out[-1][0], merged[i][1])
            else:
                out.append(merged[i])
        merged = out
    return merged


def chunks(ranges, size):
    """
    Yield C{(offset, length)} pieces of at most C{size} bytes covering
    C{ranges}, each range cut from its own start.
    """
    for start, end in ranges:
        offset = start
        while offset < end:
            length = min(size, end - offset)
            yield offset, length
            offset += length


class RangeSet:
    """
    A mutable, normalised set of byte ranges, cheap to grow one datagram at
    a time (appending in order costs O(log n)).
    """

    def __init__(self, ranges=()):
        self._starts = []
        self._ends = []
        for start, end in normalise(ranges):
            self._starts.append(start)
            self._ends.append(end)

    def add(self, start, end):
        """
        Add C{[start, end)}.

        @return: the number of bytes that were new.
        """
        if end <= start:
            return 0
        starts, ends = self._starts, self._ends
        # Fast path: touching or after the last range.
        if not starts or start > ends[-1]:
            starts.append(start)
            ends.append(end)
            return end - start
        if start >= starts[-1] and start <= ends[-1]:
            if end <= ends[-1]:
                return 0
            new = end - ends[-1]
            ends[-1] = end
            return new
        i = bisect.bisect_right(ends, start - 1)
        # ranges i.. may overlap or touch [start, end)
        j = i
        covered = 0
        newStart, newEnd = start, end
        while j < len(starts) and starts[j] <= end:
            covered += max(0, min(ends[j], end) - max(starts[j], start))
            newStart = min(newStart, starts[j])
            newEnd = max(newEnd, ends[j])
            j += 1
        starts[i:j] = [newStart]
        ends[i:j] = [newEnd]
        return (end - start) - covered

    def remove(self, start, end):
        """
        Remove C{[start, end)} (the receiver drops a piece whose digest did
        not match). The lists change in place.

        @return: the number of bytes that were held there.
        """
        if end <= start:
            return 0
        starts, ends = self._starts, self._ends
        i = bisect.bisect_right(ends, start)
        j = i
        removed = 0
        keep = []
        while j < len(starts) and starts[j] < end:
            s, e = starts[j], ends[j]
            removed += min(e, end) - max(s, start)
            if s < start:
                keep.append((s, start))
            if e > end:
                keep.append((end, e))
            j += 1
        if j > i:
            starts[i:j] = [s for s, _ in keep]
            ends[i:j] = [e for _, e in keep]
        return removed

    def covers(self, start, end):
        """
        Whether C{[start, end)} is held entirely (after the last range: O(1)).
        """
        ends = self._ends
        if not ends or start >= ends[-1]:
            return False
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and end <= ends[i]

    def gaps(self, start, end):
        """
        Return the parts of C{[start, end)} not held, in order (what a run
        of datagrams adds; appending after the last range costs O(1)).
        """
        starts, ends = self._starts, self._ends
        if not starts or start >= ends[-1]:
            return [(start, end)] if start < end else []
        i = bisect.bisect_right(ends, start)
        out = []
        cur = start
        count = len(starts)
        while i < count and starts[i] < end:
            if starts[i] > cur:
                out.append((cur, starts[i]))
            if ends[i] > cur:
                cur = ends[i]
            if cur >= end:
                break
            i += 1
        if cur < end:
            out.append((cur, end))
        return out

    def bounds(self):
        """
        Return the two sorted lists C{(starts, ends)} themselves (read-only:
        for the receiver's C fast path, which bisects them).
        """
        return self._starts, self._ends

    def ranges(self):
        """
        Return the normalised list of C{(start, end)}.
        """
        return list(zip(self._starts, self._ends))

    def total(self):
        """
        Return the number of bytes held.
        """
        return sum(e - s for s, e in zip(self._starts, self._ends))

    def __len__(self):
        return len(self._starts)

    def __contains__(self, offset):
        i = bisect.bisect_right(self._starts, offset) - 1
        return i >= 0 and offset < self._ends[i]


class RoundBytes:
    """
    Where an image offset falls in a round: the number of the round's bytes
    below it. Flow control measures how far a receiver is behind in bytes
    the round carries, not in image offsets (a repair round's ranges are
    spread over the whole image).
    """

    def __init__(self, ranges):
        self._starts = [s for s, e in ranges]
        self._ends = [e for s, e in ranges]
        self._before = []
        done = 0
        for s, e in ranges:
            self._before.append(done)
            done += e - s
        self.total = done

    def at(self, offset):
        """
        Return the bytes of the round's ranges below C{offset}.
        """
        i = bisect.bisect_right(self._starts, offset) - 1
        if i < 0:
            return 0
        return self._before[i] + min(offset, self._ends[i]) - self._starts[i]


FORMAT_VARINT_ZLIB = 1
_MAX_DECODED = 64 << 20


def _putVarint(n, out):
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def toWire(ranges):
    """
    Encode a normalised range list (see the module docstring).
    """
    out = bytearray()
    prev = 0
    for start, end in ranges:
        _putVarint(start - prev, out)
        _putVarint(end - start, out)
        prev = end
    return bytes([FORMAT_VARINT_ZLIB]) + zlib.compress(bytes(out), 6)


#: inflated bytes handed to the counter at a time
_PIECE = 1 << 16
#: every byte below 0x80 ends a varint
_LOW = bytes(range(0x80))
_END_OF_VARINT = re.compile(b"[\\x00-\\x7f]")


def _inflate(data, maxValues=None):
    """
    Inflate a range list's varint body, counting its varints as it grows.

    @param maxValues: the most varints wanted (two per range), or L{None}.
    @return: C{(body, complete)}: the whole body and L{True}; or, when it
        holds more than C{maxValues} varints, its first C{maxValues}
        varints and L{False} (nothing after them was inflated beyond the
        piece that crossed the limit).
    @raise RangeError: if it is not a range list, does not decompress, is
        truncated, or inflates beyond 64 MiB.
    """
    if not data or data[0] != FORMAT_VARINT_ZLIB:
        raise RangeError("unknown range list format")
    d = zlib.decompressobj()
    pending = memoryview(data)[1:]
    pieces = []
    size = count = 0
    try:
        while True:
            piece = d.decompress(pending, _PIECE)
            pending = d.unconsumed_tail
            if not piece:
                if d.eof:
                    break
                if not pending:
                    raise RangeError("range list truncated")
                continue
            ends = len(piece) - len(piece.translate(None, _LOW))
            if maxValues is not None and count + ends > maxValues:
                wanted = maxValues - count
                cut = 0
                if wanted:
                    cut = next(itertools.islice(_END_OF_VARINT.finditer(piece),
                                                wanted - 1, None)).end()
                pieces.append(piece[:cut])
                return b"".join(pieces), False
            count += ends
            size += len(piece)
            if size > _MAX_DECODED:
                raise RangeError("range list too large")
            pieces.append(piece)
            if d.eof:
                break
    except zlib.error as e:
        raise RangeError("range list does not decompress: %s" % (e,))
    return b"".join(pieces), True


def _decode(body, limit):
    """
    Decode an inflated varint body (see L{fromWire}).
    """
    if _fastpath is not None:
        # the same list from C (None: malformed, the loop below says how)
        # (it decodes ends up to 2**62 only: a larger limit is no limit)
        out = _fastpath.decode_ranges(body, -1 if limit is None or limit >= 1 << 62 else limit)
        if out is not None:
            return out
    values = []
    n = shift = 0
    for byte in body:
        n |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
            if shift > 63:
                raise RangeError("varint too long")
        else:
            values.append(n)
            n = shift = 0
    if shift or len(values) % 2:
        raise RangeError("range list ends in the middle of a range")
    out = []
    prev = 0
    for i in range(0, len(values), 2):
        gap, length = values[i], values[i + 1]
        if length == 0 or (out and gap == 0):
            raise RangeError("range list has an empty or touching range")
        start = prev + gap
        end = start + length
        if limit is not None and end > limit:
            raise RangeError("range %d-%d ends beyond %d" % (start, end, limit))
        out.append((start, end))
        prev = end
    return out


def _mostRanges(maxRanges, limit):
    """
    The most ranges a list may hold: C{maxRanges}, and no more than a list
    ending at C{limit} can (ranges are non-empty and never touch).
    """
    if limit is not None:
        fit = (limit + 1) // 2
        maxRanges = fit if maxRanges is None else min(maxRanges, fit)
    return maxRanges


def fromWire(data, limit=None, maxRanges=None):
    """
    Decode a range list and check it: each range non-empty, sorted and
    disjoint (never touching), ending at most at C{limit} and at most
    C{maxRanges} of them, when given.

    The count is checked while the list inflates, before any range is
    built (see the module docstring).

    @raise RangeError: if it is malformed or breaks a limit.
    """
    most = _mostRanges(maxRanges, limit)
    body, complete = _inflate(data, None if most is None else 2 * most)
    if not complete:
        raise RangeError("range list holds more than %d ranges" % (most,))
    return _decode(body, limit)


def cappedFromWire(data, limit, maxRanges):
    """
    Decode a report of missing ranges, keeping at most C{maxRanges}: a
    longer one keeps its first C{maxRanges - 1} ranges and everything from
    the start of the next one to C{limit} (a superset of what the list
    says: whatever the sender lacks is still in it). Decoding costs at most
    C{maxRanges} ranges, whatever the list claims.

    @param limit: the image size: no range may end beyond it.
    @return: C{(ranges, capped)}.
    @raise RangeError: if it is malformed or ends beyond C{limit}.
    """
    maxRanges = max(1, maxRanges)
    if (limit + 1) // 2 <= maxRanges:
        # no valid list is longer: one that claims to be is refused
        return fromWire(data, limit), False
    body, complete = _inflate(data, 2 * maxRanges)
    if complete:
        return _decode(body, limit), False
    keptEnd = _afterVarint(body, 2 * maxRanges - 2)
    kept = _decode(body[:keptEnd], limit)
    gap = _varint(body, keptEnd)
    start = (kept[-1][1] if kept else 0) + gap
    if start >= limit or (kept and gap == 0):
        raise RangeError("range list goes beyond %d or has a touching range" % (limit,))
    return kept + [(start, limit)], True


def _afterVarint(body, n):
    """
    The offset just after the C{n}th varint of C{body} (0 for none).
    """
    if n <= 0:
        return 0
    return next(itertools.islice(_END_OF_VARINT.finditer(body), n - 1, None)).end()


def _varint(body, offset):
    """
    The value of the varint at C{offset} of C{body}.
    """
    n = shift = 0
    for byte in body[offset:offset + 10]:
        n |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return n
        shift += 7
    raise RangeError("varint too long")


def capRanges(ranges, limit, maxRanges):
    """
    L{cappedFromWire} for a list already decoded (a caller in the
    process): at most C{maxRanges}, the last one running to C{limit}.

    @return: C{(ranges, capped)}.
    """
    maxRanges = max(1, maxRanges)
    if len(ranges) <= maxRanges:
        return ranges, False
    kept = list(ranges[:maxRanges - 1])
    return kept + [(ranges[maxRanges - 1][0], limit)], True


class EncodedRanges:
    """
    A range list as it came off the wire, not decoded yet: holding it costs
    its encoded bytes. L{decode} and L{capped} decode it with their limits.

    @ivar data: the encoded list (L{toWire}).
    """

    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data

    def decode(self, limit=None, maxRanges=None):
        """
        L{fromWire} with these limits.
        """
        return fromWire(self.data, limit, maxRanges)

    def capped(self, limit, maxRanges):
        """
        L{cappedFromWire} with these limits.
        """
        return cappedFromWire(self.data, limit, maxRanges)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        return "<EncodedRanges of %d bytes>" % (len(self.data),)
