# -*- test-case-name: tests.test_client_output -*-
"""
Tests for L{provisioner.client.output}: the image receiver's output file
(preallocation, tmpfs, clear errors, runs) and the multicast TFTP client's
block output (writes gathered while a batch is held).
"""

import errno
import os

from twisted.trial.unittest import SynchronousTestCase

from provisioner.client import output
from provisioner.client.output import BlockOutput, OutputFile, ReceiveError


class OutputFileTests(SynchronousTestCase):
    """
    Tests for L{OutputFile}.
    """

    def test_unwritable(self):
        """
        If the directory does not exist, the error says so and names the
        path.
        """
        path = os.path.join(self.mktemp(), "nope", "out")
        e = self.assertRaises(ReceiveError, OutputFile, path)
        self.assertIn(path, str(e))
        self.assertIn("directory does not exist", str(e))

    def test_noSuchDevice(self):
        """
        If the path is in C{/dev} and does not exist, it is refused as a
        device that does not exist, and no file is created there (C{/dev}
        is in memory).
        """
        path = "/dev/provisioner-test-no-such-device"
        self.addCleanup(lambda: os.path.exists(path) and os.unlink(path))
        e = self.assertRaises(ReceiveError, OutputFile, path)
        self.assertEqual(str(e), "%s: no such device" % (path,))
        self.assertFalse(os.path.exists(path))

    def test_neitherFileNorDevice(self):
        """
        If the path is neither a regular file nor a block device (a
        character device here), it is refused at once.
        """
        e = self.assertRaises(ReceiveError, OutputFile, "/dev/null")
        self.assertEqual(str(e), "/dev/null: neither a regular file nor a block device")

    def test_busy(self):
        """
        If opening the output says C{EBUSY} (a kernel that refuses writers
        of a mounted device), the message says it is in use.
        """
        def busy(*a):
            raise OSError(errno.EBUSY, "Device or resource busy")
        path = self.mktemp()
        self.patch(os, "open", busy)
        e = self.assertRaises(ReceiveError, OutputFile, path)
        self.assertEqual(str(e), "%s is in use (mounted?); refusing to write it" % (path,))

    def test_preallocates(self):
        """
        If the image size is known, the file is made that long.
        """
        f = OutputFile(self.mktemp())
        f.prepare(12345)
        self.assertEqual(os.fstat(f.fd).st_size, 12345)
        f.close()

    def test_memoryBackedRoom(self):
        """
        On a memory-backed file system the file is not preallocated (that
        would zero every page now); the free room is checked instead, and
        too little is a clear "disk full" error naming the path.
        """
        self.patch(output, "memoryBacked", lambda fd: True)
        f = OutputFile(self.mktemp())
        f.prepare(12345)
        self.assertEqual(os.fstat(f.fd).st_size, 12345)

        class Tiny:
            f_bavail = 2
            f_frsize = 4096
        self.patch(os, "fstatvfs", lambda fd: Tiny())
        e = self.assertRaises(ReceiveError, f.prepare, 1 << 20)
        self.assertIn("disk full", str(e))
        self.assertIn(f.path, str(e))
        f.close()

    def test_writeRun(self):
        """
        If a run has more buffers than one C{pwritev} takes, it is written
        in several calls, back to back; a short write is completed.
        """
        f = OutputFile(self.mktemp())
        f.prepare(100)
        f.IOV_MAX = 3
        f.writeRun(10, [memoryview(bytes([i]) * 5) for i in range(1, 9)])
        real = os.pwritev
        self.patch(os, "pwritev", lambda fd, bufs, off: real(fd, bufs[:1], off))
        f.writeRun(60, [b"xy", b"zw"])
        with open(f.path, "rb") as g:
            data = g.read()
        self.assertEqual(data[10:50], b"".join(bytes([i]) * 5 for i in range(1, 9)))
        self.assertEqual(data[60:64], b"xyzw")
        f.close()

    def test_enospcMessage(self):
        """
        If writing fails with ENOSPC, the message says the disk is full.
        """
        f = OutputFile(self.mktemp())
        f.close()
        f.fd = -1

        def boom(*a):
            raise OSError(errno.ENOSPC, "No space left on device")
        self.patch(os, "pwrite", boom)
        e = self.assertRaises(ReceiveError, f.write, 0, b"x")
        self.assertIn("disk full", str(e))


class OutputBatchTests(SynchronousTestCase):
    """
    The client's output file while a batch of datagrams is held.
    """

    def setUp(self):
        self.path = self.mktemp()
        self.out = BlockOutput(self.path)
        self.addCleanup(self.out.close)

    def read(self):
        with open(self.path, "rb") as f:
            return f.read()

    def test_heldUntilRelease(self):
        """
        If writes come between C{hold} and C{release}, contiguous ones are
        gathered and all of them reach the file by C{release}, each at its
        offset.
        """
        self.out.truncate(12)
        self.out.hold()
        self.out.write(0, b"aa")
        self.out.write(2, memoryview(b"bb"))
        self.out.write(8, b"dd")
        self.out.write(4, b"cc")
        self.out.write(6, b"")
        self.out.release()
        self.assertEqual(self.read(), b"aabbcc\0\0dd\0\0")

    def test_notHeld(self):
        """
        If no batch is held, a write goes to the file at once.
        """
        self.out.write(3, b"xyz")
        self.assertEqual(self.read(), b"\0\0\0xyz")

    def test_closeFlushes(self):
        """
        If the output is closed while writes are gathered, they are written.
        """
        self.out.hold()
        self.out.write(0, b"abc")
        self.out.close()
        self.assertEqual(self.read(), b"abc")
