# -*- test-case-name: tests.test_mtftp_repair -*-
"""
Smart repair: a multicast TFTP client that left the group fetches the
blocks it still misses by unicast reads of only those blocks (the option
C{ranges}, docs/wire/multicast-tftp.md, section 3), placed at their
offsets. A server that ignores the option sends the whole file, which is
written as-is.
"""

from twisted.internet import defer
from twisted.logger import Logger

from provisioner.client.output import RangesView
from provisioner.client.tftp import fetchRanges
from provisioner.tftp.multicast.codec import rangesOption

__all__ = ["smartRepair"]

_log = Logger(namespace="provisioner.client.mtftp.fetch")


@defer.inlineCallbacks
def smartRepair(reactor, server, path, output, tracker, blksize, size, windowsize=64,
                timeout=1, interface=""):
    """
    Fetch the gaps of C{tracker} into C{output} by unicast reads, one after
    the other, each naming at most ~400 characters of ranges (so that its
    RRQ stays under 512 octets); the blocks fetched are added to
    C{tracker}. A server that ignores C{ranges} sends the whole file at the
    first read, and that is the end of it.

    @param server: the server's C{(host, port)}.
    @param output: anything with C{write(offset, data)}.
    @param blksize: the block size of the multicast session (the unit of
        the block numbers, and the block size the reads ask for).
    @param size: the size of the file.
    @return: a Deferred firing with C{(requests, blocks)}: the reads made
        and the DATA blocks they brought; failing with
        L{provisioner.client.tftp.TFTPError} when a read fails.
    """
    gaps = tracker.gaps()
    requests = blocks = 0
    for _, chunk in rangesOption(blksize, gaps):
        view = RangesView(output, blksize, chunk, size)
        yield fetchRanges(reactor, server[0], server[1], path, view, blksize=blksize,
                          windowsize=windowsize, timeout=timeout, interface=interface)
        requests += 1
        blocks += view.blocks
        for first, last in chunk:
            for block in range(first, last + 1):
                tracker.add(block)
        if not view.honoured:
            break
    _log.info("smart repair of {path}: {blocks} block(s) by unicast in {requests} "
              "request(s) ({gaps} gap(s))", path=path, blocks=blocks, requests=requests,
              gaps=len(gaps))
    return (requests, blocks)
