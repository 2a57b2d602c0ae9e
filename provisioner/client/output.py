# -*- test-case-name: tests.test_client_output,tests.test_mtftp_repair -*-
"""
Where the client programs write what they receive, at offsets, in any
order.

  - L{BlockOutput}: the multicast TFTP client's file; the writes of one
    batch of datagrams are gathered into runs (one C{pwritev} each).
  - L{RangesView}: the sink of a unicast read of some blocks of a file
    (the option C{ranges}): places the data, the listed blocks back to
    back, at their own offsets.
  - L{OutputFile}: the image receiver's preallocated output (C{fallocate},
    or on tmpfs a check of the room instead), written with C{pwrite} at
    each datagram's offset.
  - L{StateFile}: the ranges the image receiver holds, next to its output
    (C{PATH.imagecast-state}); a restarted receiver with the same image
    resumes from it.
"""

import errno
import json
import os

from provisioner.imagecast import ranges as R
from provisioner.net.sockopt import memoryBacked

__all__ = ["BlockOutput", "RangesView", "ReceiveError", "OutputFile", "StateFile",
           "describeOSError"]


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


class ReceiveError(Exception):
    """
    The receiver cannot go on; C{str()} is the operator's message.
    """


def describeOSError(e, path, what):
    """
    The operator's message for an C{OSError} C{e} on C{path} while doing
    C{what}.
    """
    if e.errno == errno.ENOSPC:
        return "%s: disk full (No space left on device) while %s" % (path, what)
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "%s: not writable (%s)" % (path, e.strerror)
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        return "%s: directory does not exist (%s)" % (path, e.strerror)
    if e.errno == errno.EISDIR:
        return "%s: is a directory" % (path,)
    return "%s: %s while %s" % (path, e.strerror or e, what)


def _checkRoom(fd, needed):
    """
    Raise C{ENOSPC} when the file system of C{fd} has fewer than C{needed}
    bytes free.
    """
    st = os.fstatvfs(fd)
    if needed > 0 and st.f_bavail * st.f_frsize < needed:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class OutputFile:
    """
    The output file, opened (or created) at once so that an unwritable path
    is reported before any network traffic.
    """

    def __init__(self, path):
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ReceiveError(describeOSError(e, path, "opening"))
        self.size = None

    def prepare(self, size):
        """
        Make the file C{size} bytes long, with the blocks allocated.

        @raise ReceiveError: if the disk cannot hold it.
        """
        try:
            current = os.fstat(self.fd).st_size
            if current > size:
                os.ftruncate(self.fd, size)
            try:
                if memoryBacked(self.fd):
                    # tmpfs: fallocate would commit and zero every page now,
                    # and the writes would then miss the cache on all of
                    # them; check the room instead, and let pages come with
                    # the data
                    _checkRoom(self.fd, size - current)
                    os.ftruncate(self.fd, size)
                elif size:
                    os.posix_fallocate(self.fd, 0, size)
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
                os.ftruncate(self.fd, size)
        except OSError as e:
            raise ReceiveError(describeOSError(
                e, self.path, "allocating %d bytes" % (size,)))
        self.size = size

    def write(self, offset, data):
        """
        Write C{data} at C{offset} now.
        """
        try:
            os.pwrite(self.fd, data, offset)
        except OSError as e:
            raise ReceiveError(describeOSError(e, self.path, "writing at %d" % (offset,)))

    IOV_MAX = 1024

    def writeRun(self, offset, buffers):
        """
        Write C{buffers} back to back from C{offset} now, with one
        C{pwritev} (per C{IOV_MAX} buffers): a run of datagram payloads
        without joining them first.
        """
        fd = self.fd
        try:
            for i in range(0, len(buffers), self.IOV_MAX):
                part = buffers[i:i + self.IOV_MAX]
                want = sum(map(len, part))
                done = os.pwritev(fd, part, offset)
                if done < want:
                    # short write (a signal, the disk filling): the rest
                    # one pwrite at a time, raising what the disk says
                    rest = b"".join(part)[done:]
                    at = offset + done
                    while rest:
                        n = os.pwrite(fd, rest, at)
                        rest = rest[n:]
                        at += n
                offset += want
        except OSError as e:
            raise ReceiveError(describeOSError(e, self.path, "writing at %d" % (offset,)))

    def datasync(self):
        """
        C{fdatasync} what was written (blocking; safe from a thread).
        """
        fd = self.fd
        if fd is None:
            return
        try:
            os.fdatasync(fd)
        except OSError:
            pass

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class StateFile:
    """
    The received ranges of one image, saved atomically as JSON.
    """

    def __init__(self, path):
        self.path = path

    def load(self, sha256, size):
        """
        Return the ranges saved for this image, or C{[]}.
        """
        try:
            with open(self.path, "r") as f:
                state = json.load(f)
            if state.get("sha256") != sha256 or state.get("size") != size:
                return []
            return R.normalise((int(s), int(e)) for s, e in state["ranges"]
                               if 0 <= int(s) < int(e) <= size)
        except (OSError, ValueError, KeyError, TypeError):
            return []

    def save(self, sha256, size, ranges):
        tmp = self.path + ".tmp"
        try:
            # dumps, not dump: one call into the C encoder (dump goes
            # through the pure-Python iterator, 7 ms for 5,000 ranges)
            text = json.dumps({"sha256": sha256, "size": size, "ranges": ranges})
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, self.path)
        except OSError:
            pass

    def remove(self):
        for p in (self.path, self.path + ".tmp"):
            try:
                os.unlink(p)
            except OSError:
                pass
