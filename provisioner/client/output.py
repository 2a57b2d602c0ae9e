# -*- test-case-name: tests.test_mtftp_client -*-
"""
Where the client programs write what they receive, at offsets, in any
order.

  - L{BlockOutput}: the multicast TFTP client's file; the writes of one
    batch of datagrams are gathered into runs (one C{pwritev} each).
  - L{RangesView}: the sink of a unicast read of some blocks of a file
    (the option C{ranges}): places the data, the listed blocks back to
    back, at their own offsets.
"""

import os

__all__ = ["BlockOutput", "RangesView"]


class BlockOutput:
    """
    The local file of a multicast TFTP download, written at block offsets:
    a path (created, truncated) or an open file whose descriptor is used
    (and not closed).

    Between L{hold} and L{release} (one batch of received datagrams),
    contiguous writes are gathered and go to the file in one C{pwritev}.
    """

    _MAX_RUN = 256

    def __init__(self, path=None, fileobj=None):
        self.path = path
        self._own = fileobj is None
        self._holding = False
        self._run = None
        if fileobj is not None:
            self.fd = fileobj.fileno()
        else:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)

    def write(self, offset, data):
        if not data:
            return
        if not self._holding:
            os.pwrite(self.fd, data, offset)
            return
        run = self._run
        if run is not None and run[1] == offset and len(run[2]) < self._MAX_RUN:
            run[2].append(data)
            run[1] += len(data)
            return
        self.flush()
        self._run = [offset, offset + len(data), [data]]

    def hold(self):
        """
        Gather contiguous writes until L{release}.
        """
        self._holding = True

    def release(self):
        """
        Write what was gathered and stop gathering.
        """
        self._holding = False
        self.flush()

    def flush(self):
        run, self._run = self._run, None
        if run is None:
            return
        offset, end, buffers = run
        written = os.pwritev(self.fd, buffers, offset)
        if written < end - offset:
            # a short write (rare on a regular file): the rest one by one
            data = b"".join(buffers)[written:]
            while data:
                n = os.pwrite(self.fd, data, offset + written)
                written += n
                data = data[n:]

    def truncate(self, size):
        self.flush()
        os.ftruncate(self.fd, size)

    def close(self):
        self.flush()
        if self.fd is not None and self._own:
            os.close(self.fd)
        self.fd = None


class RangesView:
    """
    The sink of a unicast read that asks for only some blocks of a file
    with the RFC 2347 option C{ranges} (docs/wire/multicast-tftp.md,
    section 3): the data of the transfer is those blocks back to back, and
    each byte goes to its own offset in C{output}. A server that does not
    echo C{ranges} sends the whole file, which is written as it is.

    The read (L{provisioner.client.tftp.ReadProtocol}) calls L{granted}
    once the transfer has begun, then L{write} with the data in order.

    @ivar unit: the block size the block numbers refer to.
    @ivar ranges: the blocks asked for, C{[(first, last)]}, 1-based,
        inclusive, ascending, not overlapping.
    @ivar honoured: whether the server sends only those blocks (L{None}
        until the transfer began).
    @ivar blocks: the DATA blocks with data taken (the count of blocks
        repaired when the server honoured the option and the transfer's
        block size is C{unit}).
    """

    def __init__(self, output, unit, ranges, size):
        """
        @param output: anything with C{write(offset, data)}.
        @param size: the size of the whole file.
        """
        self.output = output
        self.unit = unit
        self.ranges = list(ranges)
        self.fileSize = size
        self.honoured = None
        self.blocks = 0
        self._segments = []
        self._at = 0

    def granted(self, honoured):
        """
        The transfer has begun: the data is the listed blocks (C{honoured})
        or the whole file.
        """
        self.honoured = honoured
        self._at = 0
        if not honoured:
            self._segments = [(0, 0, self.fileSize)]
            return
        segments = []
        total = 0
        for first, last in self.ranges:
            start = (first - 1) * self.unit
            length = max(0, min(last * self.unit, self.fileSize) - start)
            segments.append((total, start, length))
            total += length
        self._segments = segments

    def write(self, data):
        """
        Place the next C{data} of the transfer.
        """
        if data:
            self.blocks += 1
        at = self._at
        self._at += len(data)
        for viewStart, fileStart, length in self._segments:
            if not data:
                return
            if at >= viewStart + length:
                continue
            skip = at - viewStart
            take = min(length - skip, len(data))
            self.output.write(fileStart + skip, data[:take])
            data = data[take:]
            at += take
