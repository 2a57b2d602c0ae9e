# -*- test-case-name: tests.test_imagecast_sparse -*-
"""
The holes of a sparse image on the receiver's output: the appliance never
sends them (docs/imagecast.md, I{Sparse images}); the receiver makes them
read as zeros itself, then counts them as received.

How, by output (L{zeroHoles}):
  - a block device: C{BLKZEROOUT}. It guarantees that the range reads back
    as zeros, and the kernel uses the device's write-zeroes command where
    it has one (thin devices, NVMe, SCSI WRITE SAME, loop devices) or
    writes zero pages itself. C{BLKDISCARD} is not used: after a discard a
    device may return the old data, zeros or anything
    (C{discard_zeroes_data} is gone from Linux), and the whole-image
    sha256 at the end would then fail. The unaligned edges (a hole that
    does not start or end on a logical block) are written with zeros.
  - a regular file that was empty when the receiver opened it (a new
    output): nothing. Its holes are holes of the file already
    (L{provisioner.client.output.OutputFile.prepare} allocates only the
    data extents), and read as zeros.
  - any other regular file (written before, or resumed): C{fallocate
    (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)}, which frees the blocks
    and reads as zeros.
Where the call is refused (a file system without hole punching, a device
without C{BLKZEROOUT}), zeros are written.

Blocking (a device's write-zeroes may take as long as writing): run it in
a thread.
"""

import ctypes
import errno
import fcntl
import os
import struct

from provisioner.client.output import BLKSSZGET
from provisioner.net.sockopt import libc

__all__ = ["zeroHoles", "BLKZEROOUT", "FALLOC_FL_KEEP_SIZE", "FALLOC_FL_PUNCH_HOLE"]

#: C{_IO(0x12, 127)}: zero a byte range of a block device (C{uint64_t
#: range[2]}: start, length; both multiples of 512)
BLKZEROOUT = 0x127F

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02

_ZEROS = bytes(1 << 20)

#: the errors after which zeros are written instead
_UNSUPPORTED = (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.ENOSYS)


def _writeZeros(fd, start, end):
    at = start
    while at < end:
        n = os.pwrite(fd, memoryview(_ZEROS)[:min(len(_ZEROS), end - at)], at)
        at += n


def _blockSize(fd):
    buf = bytearray(4)
    try:
        fcntl.ioctl(fd, BLKSSZGET, buf)
    except OSError:
        return 512
    return max(512, struct.unpack("=i", bytes(buf))[0])


def _zeroOut(fd, start, end, block):
    """
    C{BLKZEROOUT} for the aligned middle of C{[start, end)}, zeros written
    for its edges.

    @return: whether the device took the ioctl.
    """
    first = -(-start // block) * block
    last = end // block * block
    if last <= first:
        _writeZeros(fd, start, end)
        return True
    try:
        fcntl.ioctl(fd, BLKZEROOUT, struct.pack("=QQ", first, last - first))
    except OSError as e:
        if e.errno not in _UNSUPPORTED:
            raise
        return False
    _writeZeros(fd, start, first)
    _writeZeros(fd, last, end)
    return True


def _fallocate():
    c = libc()
    if c is None:
        return None
    f = getattr(c, "fallocate64", None) or getattr(c, "fallocate", None)
    if f is None:
        return None
    f.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    f.restype = ctypes.c_int
    return f


def _punch(fd, start, end):
    """
    Punch C{[start, end)} out of the regular file on C{fd}.

    @return: whether the file system did.
    """
    f = _fallocate()
    if f is None:
        return False
    if f(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, start, end - start) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code))


def zeroHoles(output, holes):
    """
    Make C{holes} read as zeros on C{output} (an
    L{provisioner.client.output.OutputFile} that was
    L{prepare<provisioner.client.output.OutputFile.prepare>}d; blocking).

    @param holes: normalised C{(start, end)} ranges within the image.
    @return: how: C{"known zero"} (a new file: nothing done),
        C{"BLKZEROOUT"}, C{"punched"}, or C{"written"} (zeros written
        where the call was refused).
    @raise OSError: the output refused the writes.
    """
    if not holes:
        return "known zero"
    fd = output.fd
    if output.isDevice:
        block = _blockSize(fd)
        how = "BLKZEROOUT"
        for start, end in holes:
            if how == "BLKZEROOUT" and _zeroOut(fd, start, end, block):
                continue
            how = "written"
            _writeZeros(fd, start, end)
        return how
    if output.holesZero:
        return "known zero"
    how = "punched"
    for start, end in holes:
        if how == "punched" and _punch(fd, start, end):
            continue
        how = "written"
        _writeZeros(fd, start, end)
    return how
