# -*- test-case-name: tests.test_mtftp_server -*-
"""
Smart repair: a client that missed blocks of a multicast transfer asks for
just those, by unicast, with the C{ranges <unit>:<a>-<b>,<c>,...} option on
a plain RRQ (docs/wire/multicast-tftp.md).

  - L{RepairFilter}: an L{IResolverFilter} in front of the TFTP service's
    resolver chain. For a request carrying C{ranges} it resolves the file
    through the chain (the chain's order is untouched) and serves a
    L{RangeSource}, the concatenation of just those blocks.
  - L{RepairExtension}: the option extension that echoes C{ranges} in the
    OACK when negotiation found a range view
    (L{provisioner.tftp.negotiate.Negotiated.rangesGranted}), so the client
    knows it got the view (a client that does not see C{ranges} in the OACK
    is getting the whole file).

Both are registered by the multicast TFTP service
(L{provisioner.tftp.multicast.service}).
"""

from twisted.logger import Logger
from zope.interface import implementer

from provisioner.files import FileRequest
from provisioner.interfaces import IRangeView, IResolverFilter
from provisioner.tftp.multicast.codec import RANGES_OPTION, blockCount, formatRanges, parseRanges
from provisioner.tftp.negotiate import IOptionExtension

__all__ = ["RangeSource", "repairSource", "RepairFilter", "RepairExtension"]


@implementer(IRangeView)
class RangeSource:
    """
    A view of a source holding only some of its blocks, back to back: the
    data a repair transfer sends. Block C{b} of the underlying file is the
    bytes C{[(b-1)*unit, b*unit)}; the last block of the file may be short
    or empty.

    @ivar granted: the C{ranges} value that describes the view (what the
        OACK echoes).
    """

    def __init__(self, source, unit, ranges):
        self.source = source
        self.unit = unit
        self.ranges = list(ranges)
        self.granted = formatRanges(unit, self.ranges)
        self.name = "%s[%s]" % (source.name, self.granted)
        # Segments (viewOffset, fileOffset, length) for each range.
        self._segments = []
        total = 0
        for first, last in self.ranges:
            start = (first - 1) * unit
            end = min(last * unit, source.size)
            length = max(0, end - start)
            self._segments.append((total, start, length))
            total += length
        self.size = total
        self.blocks = sum(b - a + 1 for a, b in self.ranges)

    def read(self, offset, length):
        out = []
        for vstart, fstart, seglen in self._segments:
            if length <= 0:
                break
            if offset >= vstart + seglen:
                continue
            skip = max(0, offset - vstart)
            take = min(seglen - skip, length)
            if take <= 0:
                continue
            out.append(self.source.read(fstart + skip, take))
            offset += take
            length -= take
        return b"".join(out)

    def close(self):
        self.source.close()


def repairSource(source, options):
    """
    Wrap C{source} in a L{RangeSource} when the request carries C{ranges}.

    @return: C{(source, oackValue)}; C{oackValue} is L{None} when the
        request has no (valid) C{ranges} option and C{source} is unchanged.
    """
    value = dict(options).get(RANGES_OPTION)
    if value is None or source.size is None:
        return source, None
    try:
        unit, ranges = parseRanges(value)
        last = blockCount(source.size, unit)
        ranges = [(a, min(b, last)) for a, b in ranges if a <= last]
        if not ranges:
            return source, None
    except ValueError:
        return source, None
    view = RangeSource(source, unit, ranges)
    return view, view.granted


@implementer(IResolverFilter)
class RepairFilter:
    """
    In front of the TFTP server's resolver chain: for a request carrying
    C{ranges} (while C{enabled()}), resolve the file through the chain
    without that option and serve a L{RangeSource} of just those blocks;
    any other request goes to the chain unchanged.

    @ivar enabled: a callable saying whether smart repair is on
        (C{tftp.multicast.repair}).
    """

    log = Logger()

    def __init__(self, enabled):
        self.enabled = enabled

    def resolve(self, request, next):
        value = request.options.get(RANGES_OPTION)
        if value is None or not self.enabled():
            return next.resolve(request)
        inner = FileRequest(request.path, request.peer, request.protocol,
                            options={k: v for k, v in request.options.items()
                                     if k != RANGES_OPTION},
                            client=request.client, rawPath=request.rawPath)
        d = next.resolve(inner)

        def wrap(source):
            view, granted = repairSource(source, [(RANGES_OPTION, value)])
            if granted is not None:
                self.log.info("repair of {path} for {peer}: {blocks} block(s) in {count} "
                              "range(s)", path=request.path, peer=request.peer,
                              blocks=view.blocks, count=len(view.ranges))
            return view
        return d.addCallback(wrap)


@implementer(IOptionExtension)
class RepairExtension:
    """
    The option extension that echoes C{ranges} when the source negotiated
    is a range view (C{negotiated.rangesGranted}). Registered first: a
    repair transfer gets the fixed window it negotiated.
    """

    def negotiate(self, request, accepted, limits, negotiated):
        granted = negotiated.rangesGranted
        if granted is None:
            return None
        return [(RANGES_OPTION, granted)], None
