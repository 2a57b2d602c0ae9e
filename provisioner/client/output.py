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
    each datagram's offset; or a whole block device (a disk), whose size
    is the device's, opened exclusively (a mounted device is refused).
  - L{StateFile}: the ranges the image receiver holds, next to its output
    (C{PATH.imagecast-state}), or for a block device in a state directory
    (L{defaultStatePath}); a restarted receiver with the same image
    resumes from it.
"""

import errno
import fcntl
import json
import os
import stat
import struct

from provisioner.imagecast import ranges as R
from provisioner.net.sockopt import memoryBacked

__all__ = ["BlockOutput", "RangesView", "ReceiveError", "OutputFile", "StateFile",
           "describeOSError", "deviceSize", "defaultStatePath", "STATE_DIRECTORY"]


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


#: Linux C{ioctl}s of block devices: the size in bytes (C{BLKGETSIZE64},
#: C{_IOR(0x12, 114, size_t)}) and the logical block size (C{BLKSSZGET})
BLKGETSIZE64 = 0x80081272
BLKSSZGET = 0x1268


def deviceSize(fd):
    """
    The size in bytes of the block device open on C{fd} (C{BLKGETSIZE64};
    C{st_size} is 0 for a device).

    @raise OSError: the C{ioctl} failed.
    """
    buf = bytearray(8)
    fcntl.ioctl(fd, BLKGETSIZE64, buf)
    return struct.unpack("=Q", bytes(buf))[0]


def _mib(n):
    return "%.1f MiB" % (n / float(1 << 20),)


def _inUse(path):
    return "%s is in use (mounted?); refusing to write it" % (path,)


def _underDev(path):
    """
    Whether C{path}'s directory is C{/dev} or below it (devtmpfs: a name
    that is not there is a device that does not exist, never a file to
    create in memory).
    """
    parent = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    return parent == "/dev" or parent.startswith("/dev/")


class OutputFile:
    """
    The output, opened (or created) at once so that an unwritable path is
    reported before any network traffic: a regular file (created if need
    be, preallocated to the image size by L{prepare}), or a block device
    (a disk, a partition, a loop device).

    A block device is opened C{O_RDWR | O_EXCL}: Linux refuses (C{EBUSY})
    a device that is mounted, or whose partition is, or that another
    program holds exclusively, so it is never written under a file system.
    Its size is the device's (C{BLKGETSIZE64}); L{prepare} neither
    truncates nor allocates it, and refuses an image larger than the
    device before any byte is written. A name in C{/dev} that does not
    exist is refused rather than created there (C{/dev} is in memory), and
    so is anything that is neither a regular file nor a block device.

    @ivar isDevice: whether the output is a block device.
    @ivar deviceSize: the device's size in bytes (L{None} for a file).
    @ivar size: the image size once L{prepare}d.
    @ivar holesZero: whether the holes of the image last L{prepare}d read
        as zeros already: a regular file that was empty when it was opened
        and is prepared for the first time (see
        L{provisioner.client.holes}).
    """

    def __init__(self, path):
        self.path = path
        self.size = None
        self.isDevice = False
        self.deviceSize = None
        self.holesZero = False
        self._empty = False
        self.fd = None
        try:
            self.fd = self._open(path)
        except OSError as e:
            raise ReceiveError(describeOSError(e, path, "opening"))

    def _open(self, path):
        """
        Open C{path} for writing and find out what it is.

        @return: the descriptor.
        @raise ReceiveError: not a file nor a block device, or a busy one.
        """
        flags = os.O_RDWR | os.O_CLOEXEC
        if _underDev(path) and not os.path.exists(path):
            raise ReceiveError("%s: no such device" % (path,))
        try:
            fd = os.open(path, flags | os.O_CREAT, 0o644)
        except OSError as e:
            if e.errno == errno.EBUSY:
                # a kernel that refuses writers on mounted devices
                # (CONFIG_BLK_DEV_WRITE_MOUNTED=n) says so already here
                raise ReceiveError(_inUse(path))
            raise
        try:
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        if stat.S_ISREG(st.st_mode):
            self._empty = st.st_size == 0
            return fd
        os.close(fd)
        if not stat.S_ISBLK(st.st_mode):
            raise ReceiveError("%s: neither a regular file nor a block device" % (path,))
        # a block device: open it again exclusively (O_EXCL without O_CREAT
        # claims a block device; a mounted one gives EBUSY), and check it
        # is still the device just looked at
        try:
            exclusive = os.open(path, flags | os.O_EXCL)
        except OSError as e:
            if e.errno == errno.EBUSY:
                raise ReceiveError(_inUse(path))
            raise
        try:
            again = os.fstat(exclusive)
            if not stat.S_ISBLK(again.st_mode) or again.st_rdev != st.st_rdev:
                raise ReceiveError("%s: changed while it was opened" % (path,))
            self.deviceSize = deviceSize(exclusive)
        except BaseException:
            os.close(exclusive)
            raise
        self.isDevice = True
        return exclusive

    def prepare(self, size, holes=()):
        """
        Make the file C{size} bytes long, with the blocks allocated; for a
        block device, check that the image fits on it (nothing is written).

        @param holes: the holes of a sparse image (normalised): no block is
            allocated for them (they are made to read as zeros by
            L{provisioner.client.holes.zeroHoles}).
        @raise ReceiveError: if the disk (or the device) cannot hold it.
        """
        empty, self._empty = self._empty, False
        self.holesZero = False
        if self.isDevice:
            if size > self.deviceSize:
                raise ReceiveError(
                    "%s: device too small for the image: the device holds %d bytes (%s), "
                    "the image is %d bytes (%s)" % (self.path, self.deviceSize,
                                                    _mib(self.deviceSize), size, _mib(size)))
            self.size = size
            return
        data = R.subtract([(0, size)] if size else [], holes)
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
                    _checkRoom(self.fd, R.total(data) - current)
                    os.ftruncate(self.fd, size)
                elif holes:
                    # a sparse image: the data extents only
                    os.ftruncate(self.fd, size)
                    for start, end in data:
                        os.posix_fallocate(self.fd, start, end - start)
                elif size:
                    os.posix_fallocate(self.fd, 0, size)
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
                os.ftruncate(self.fd, size)
        except OSError as e:
            raise ReceiveError(describeOSError(
                e, self.path, "allocating %d bytes" % (R.total(data),)))
        self.size = size
        # a file that was empty reads as zeros wherever nothing is written
        self.holesZero = empty

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


#: where the state file of a block device is kept by default
#: (C{<device name>.imagecast-state}); the device's directory is C{/dev}
STATE_DIRECTORY = "/var/lib/provisioner/receive"


def defaultStatePath(output, directory=None, cwd=None):
    """
    Where the state file of C{output} (an L{OutputFile}) is kept by
    default: beside a regular file (C{PATH.imagecast-state}); for a block
    device, C{<directory>/<device name>.imagecast-state}, the device name
    being the last part of the path as given (C{/dev/sdb}: C{sdb};
    C{/dev/disk/by-id/wwn-0x5000...}: that stable name), in
    L{STATE_DIRECTORY} (created if need be) or, when it cannot be written,
    the current directory.

    @param directory: instead of L{STATE_DIRECTORY}.
    @param cwd: instead of the current directory.
    @return: C{(path, fellBack)}: whether the current directory was taken
        because the state directory is not writable.
    """
    if not getattr(output, "isDevice", False):
        return output.path + ".imagecast-state", False
    directory = STATE_DIRECTORY if directory is None else directory
    name = os.path.basename(os.path.normpath(output.path)) + ".imagecast-state"
    try:
        os.makedirs(directory, 0o755, exist_ok=True)
        writable = os.access(directory, os.W_OK | os.X_OK)
    except OSError:
        writable = False
    if writable:
        return os.path.join(directory, name), False
    return os.path.join(os.getcwd() if cwd is None else cwd, name), True


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
