# -*- test-case-name: tests.test_mtftp_server -*-
"""
The RFC 2090 multicast TFTP wire format and its extensions, shared by the
server (L{provisioner.tftp.multicast}) and the client
(L{provisioner.client.mtftp}); see C{docs/wire/multicast-tftp.md}. Pure: no
reactor, no sockets.

  - C{mcepoch 1}: DATA carries the high 16 bits of the 32-bit block number
    after the 16-bit block number, and ACKs carry them in 2 trailing bytes,
    so files past 65,535 blocks place exactly for late joiners
    (L{encodeData32}, L{decodeData32}, L{encodeAckExtra}, L{decodeAckExtra},
    L{nearest32}).
  - C{ranges <unit>:<a>-<b>,<c>,...} on a plain (unicast) RRQ asks for just
    those blocks (L{parseRanges}, L{formatRanges}, L{rangesOption}).
"""

import struct

from provisioner.tftp import wire

__all__ = [
    "MULTICAST_OPTION", "EPOCH_OPTION", "EPOCH_HEADER_SIZE", "epochHeader", "RANGES_OPTION", "MAX_ACK_RANGES", "GAP_UNKNOWN",
    "blockCount", "encodeData32", "decodeData32", "encodeAckExtra", "decodeAckExtra",
    "nearest32", "parseRanges", "formatRanges", "rangesOption",
]

MULTICAST_OPTION = "multicast"
EPOCH_OPTION = "mcepoch"
RANGES_OPTION = "ranges"

_HHH = struct.Struct("!HHH")

# The bytes epochHeader() puts before the payload of a DATA with mcepoch.
EPOCH_HEADER_SIZE = _HHH.size
_H = struct.Struct("!H")
_I = struct.Struct("!I")
_HI = struct.Struct("!HI")
_II = struct.Struct("!II")

#: The most (offset, length) pairs a C{mcepoch} ACK carries after its gap
#: field: 10 + 8 x 62 = 506 octets, under the 512 of RFC 1350.
MAX_ACK_RANGES = 62

#: The gap field's "unknown / up to the end".
GAP_UNKNOWN = 0xFFFFFFFF


def blockCount(size, blksize):
    """
    How many DATA blocks a file of C{size} bytes takes (the last may be
    empty).
    """
    return size // blksize + 1


def epochHeader(block):
    return _HHH.pack(wire.DATA, block & 0xFFFF, (block >> 16) & 0xFFFF)


def encodeData32(block, payload):
    """
    DATA with the C{mcepoch} framing: opcode, low 16 bits, high 16 bits.
    """
    return epochHeader(block) + payload


def decodeData32(datagram):
    """
    @return: C{(block, payload)} from a C{mcepoch} DATA datagram.
    @raise wire.WireError: too short or not DATA.
    """
    if len(datagram) < 6:
        raise wire.WireError("DATA too short")
    op, lo, hi = _HHH.unpack_from(datagram)
    if op != wire.DATA:
        raise wire.WireError("not DATA")
    return (hi << 16) | lo, bytes(datagram[6:])


def encodeAckExtra(block, gap, ranges=()):
    """
    The trailing bytes of a C{mcepoch} ACK for C{block}: the epoch (high
    16 bits), the gap field (blocks missing from C{block + 1} on, or
    L{GAP_UNKNOWN}), then one C{(offset, length)} pair of unsigned 32-bit
    numbers for each further missing range C{(first, last)} (inclusive,
    ascending, each past C{block}): C{offset = first - block},
    C{length = last - first + 1}. At most L{MAX_ACK_RANGES} pairs are
    written (the first ones).
    """
    out = [_HI.pack((block >> 16) & 0xFFFF, gap)]
    for first, last in list(ranges)[:MAX_ACK_RANGES]:
        out.append(_II.pack(first - block, last - first + 1))
    return b"".join(out)


def decodeAckExtra(block16, extra):
    """
    Read the trailing bytes of a C{mcepoch} ACK (L{encodeAckExtra}).

    @return: C{(block, gap, ranges)}: the 32-bit block; the gap field
        (L{None} when absent); the further missing ranges C{[(first,
        last)]}, or L{None} when the pairs are absent or malformed (not a
        whole number of pairs, more than L{MAX_ACK_RANGES}, an offset of 0,
        a length of 0, ranges not ascending or overlapping, or pairs after
        an unknown gap): a malformed list is ignored, the ACK itself is
        still good.
    @raise wire.WireError: fewer than 2 trailing bytes.
    """
    if len(extra) < 2:
        raise wire.WireError("mcepoch ACK without its epoch")
    block = (_H.unpack_from(extra)[0] << 16) | block16
    if len(extra) < 6:
        return block, None, None
    gap = _I.unpack_from(extra, 2)[0]
    rest = len(extra) - 6
    if rest == 0:
        return block, gap, None
    if rest % _II.size or rest // _II.size > MAX_ACK_RANGES or gap == GAP_UNKNOWN:
        return block, gap, None
    ranges = []
    previous = block + gap
    for i in range(rest // _II.size):
        offset, length = _II.unpack_from(extra, 6 + i * _II.size)
        first = block + offset
        if offset == 0 or length == 0 or first <= previous:
            return block, gap, None
        last = first + length - 1
        ranges.append((first, last))
        previous = last
    return block, gap, ranges


def nearest32(block16, reference):
    """
    The 32-bit block number with these low 16 bits nearest to C{reference}
    (the quadrant method; never negative).
    """
    base = reference & ~0xFFFF
    best = None
    for cand in (base - 0x10000 + block16, base + block16, base + 0x10000 + block16):
        if cand < 0:
            continue
        if best is None or abs(cand - reference) < abs(best - reference):
            best = cand
    return best


# Ranges -------------------------------------------------------------------

def parseRanges(text, maxBlock=None):
    """
    Parse a C{ranges} option value C{"<unit>:<a>-<b>,<c>,..."}.

    @return: C{(unit, [(first, last), ...])}, 1-based inclusive block
        ranges, sorted and merged.
    @raise ValueError: malformed, empty, a block 0, C{first > last}, or
        past C{maxBlock}.
    """
    unit, sep, spec = text.partition(":")
    if not sep:
        raise ValueError("ranges: missing '<blksize>:'")
    unit = int(unit)
    if not 8 <= unit <= 65464:
        raise ValueError("ranges: bad unit %d" % (unit,))
    out = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        a, dash, b = part.partition("-")
        first = int(a)
        last = int(b) if dash else first
        if first < 1 or last < first:
            raise ValueError("ranges: bad range %r" % (part,))
        if maxBlock is not None and last > maxBlock:
            raise ValueError("ranges: block %d past the end (%d)" % (last, maxBlock))
        out.append((first, last))
    if not out:
        raise ValueError("ranges: empty")
    out.sort()
    merged = [out[0]]
    for first, last in out[1:]:
        pf, pl = merged[-1]
        if first <= pl + 1:
            merged[-1] = (pf, max(pl, last))
        else:
            merged.append((first, last))
    return unit, merged


def formatRanges(unit, ranges):
    """
    The inverse of L{parseRanges}.
    """
    return "%d:%s" % (unit, ",".join(
        str(a) if a == b else "%d-%d" % (a, b) for a, b in ranges))


def rangesOption(unit, ranges, limit=400):
    """
    Split C{ranges} into option values of at most C{limit} characters (so
    each repair RRQ stays under 512 octets).

    @return: a list of C{(value, ranges)}.
    """
    out = []
    current = []
    for r in ranges:
        trial = formatRanges(unit, current + [r])
        if current and len(trial) > limit:
            out.append((formatRanges(unit, current), current))
            current = []
        current.append(r)
    if current:
        out.append((formatRanges(unit, current), current))
    return out
