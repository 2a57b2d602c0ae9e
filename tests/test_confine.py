# -*- test-case-name: tests.test_confine -*-
"""
Tests for L{provisioner.confine}: opening files below a directory with the
confinement checked at open time, through C{openat2} and through the
C{O_NOFOLLOW} walk used where C{openat2} is missing.
"""

import errno
import os
import stat

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from provisioner import confine
from provisioner.confine import ConfinedRoot, NotRegularFile, openBeneath


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


class _Tree:
    """
    A directory C{root} with C{sub/f} ("inside"), symlinks to it and out of
    it, and C{outside/secret} next to it.
    """

    def makeTree(self):
        base = os.path.abspath(self.mktemp())
        self.root = os.path.join(base, "root")
        self.outside = os.path.join(base, "outside")
        _write(os.path.join(self.root, "sub", "f"), b"inside")
        _write(os.path.join(self.outside, "secret"), b"secret")
        os.symlink("sub/f", os.path.join(self.root, "link"))
        os.symlink("../sub", os.path.join(self.root, "sub", "up"))
        os.symlink("sub", os.path.join(self.root, "dirlink"))
        os.symlink("../outside/secret", os.path.join(self.root, "relout"))
        os.symlink(os.path.join(self.outside, "secret"), os.path.join(self.root, "absout"))
        os.symlink(self.outside, os.path.join(self.root, "outdir"))
        os.symlink("loop", os.path.join(self.root, "loop"))
        self.rootFd = os.open(self.root, os.O_PATH | os.O_DIRECTORY)
        self.addCleanup(os.close, self.rootFd)


class _BeneathTests(_Tree):
    """
    What L{openBeneath} does, whichever way it resolves paths; mixed into
    one test case per way.
    """

    def setUp(self):
        self.makeTree()

    def read(self, path, symlinks="inside"):
        fd = openBeneath(self.rootFd, path, os.O_RDONLY, symlinks=symlinks)
        try:
            return os.read(fd, 100)
        finally:
            os.close(fd)

    def assertRefused(self, path, codes, symlinks="inside"):
        e = self.assertRaises(OSError, openBeneath, self.rootFd, path, os.O_RDONLY,
                              symlinks=symlinks)
        self.assertIn(e.errno, codes, "%s: %s" % (path, e))
        return e

    def test_plainFile(self):
        """
        If the path names a file below the root, it is opened.
        """
        self.assertEqual(self.read("sub/f"), b"inside")
        self.assertEqual(self.read(b"sub/./f"), b"inside")

    def test_symlinkInside(self):
        """
        If a symlink (or a chain of them, or a symlinked directory) stays
        below the root, it is followed.
        """
        self.assertEqual(self.read("link"), b"inside")
        self.assertEqual(self.read("sub/up/../sub/f"), b"inside")
        self.assertEqual(self.read("dirlink/f"), b"inside")

    def test_symlinkOutsideRefused(self):
        """
        If a symlink leads outside the root (relative with C{..}, absolute,
        or a symlinked directory outside), the open fails with C{EXDEV}.
        """
        for path in ("relout", "absout", "outdir/secret"):
            self.assertRefused(path, (errno.EXDEV,))

    def test_dotDotRefused(self):
        """
        If the path climbs above the root with C{..}, it is refused, even
        when it comes back in; C{..} that stays inside is allowed.
        """
        self.assertRefused("../outside/secret", (errno.EXDEV,))
        self.assertRefused("sub/../../root/sub/f", (errno.EXDEV,))
        self.assertEqual(self.read("sub/../sub/f"), b"inside")

    def test_absoluteRefused(self):
        """
        If the path is absolute, it is refused, even when it names a file
        below the root.
        """
        self.assertRefused(os.path.join(self.outside, "secret"), (errno.EXDEV,))
        self.assertRefused(os.path.join(self.root, "sub", "f"), (errno.EXDEV,))

    def test_magicLinkRefused(self):
        """
        If the path goes through a magic link of C{/proc} (C{fd/N}, which a
        plain open follows to whatever the descriptor names, here a deleted
        file), it is refused, whatever the symlink policy.
        """
        proc = os.open("/proc/self", os.O_PATH | os.O_DIRECTORY)
        self.addCleanup(os.close, proc)
        path = os.path.join(self.root, "sub", "deleted")
        _write(path, b"gone")
        target = os.open(path, os.O_RDONLY)
        self.addCleanup(os.close, target)
        os.unlink(path)
        name = "fd/%d" % (target,)
        plain = os.open(name, os.O_RDONLY, dir_fd=proc)
        try:
            self.assertEqual(os.read(plain, 10), b"gone")  # a plain openat jumps
        finally:
            os.close(plain)
        for policy in ("inside", "always"):
            e = self.assertRaises(OSError, openBeneath, proc, name, os.O_RDONLY,
                                  symlinks=policy)
            self.assertIn(e.errno, (errno.ELOOP, errno.EXDEV, errno.ENOENT), e)

    def test_never(self):
        """
        If the policy is C{"never"}, any symlink in the path is refused with
        C{ELOOP}; plain paths are opened.
        """
        self.assertEqual(self.read("sub/f", "never"), b"inside")
        for path in ("link", "dirlink/f", "relout"):
            self.assertRefused(path, (errno.ELOOP,), "never")

    def test_always(self):
        """
        If the policy is C{"always"}, symlinks are followed wherever they
        lead, but the path itself must stay relative and below the root.
        """
        self.assertEqual(self.read("relout", "always"), b"secret")
        self.assertEqual(self.read("absout", "always"), b"secret")
        self.assertRefused("../outside/secret", (errno.EXDEV,), "always")
        self.assertRefused("/etc/hostname", (errno.EXDEV,), "always")

    def test_loop(self):
        """
        If a symlink points at itself, the open fails with C{ELOOP}.
        """
        self.assertRefused("loop", (errno.ELOOP,))

    def test_missing(self):
        """
        If nothing has the name, C{ENOENT}; a file used as a directory,
        C{ENOTDIR}; an empty path, C{ENOENT}.
        """
        self.assertRefused("nothing", (errno.ENOENT,))
        self.assertRefused("sub/f/x", (errno.ENOTDIR,))
        self.assertRefused("", (errno.ENOENT,))

    def test_nulRefused(self):
        """
        If the path holds a NUL byte, C{ValueError} (it is not truncated).
        """
        self.assertRaises(ValueError, openBeneath, self.rootFd, "sub/f\0x", os.O_RDONLY)

    def test_create(self):
        """
        If C{O_CREAT} is passed, a new file is created below the root (also
        through an inside symlinked directory), never outside.
        """
        fd = openBeneath(self.rootFd, "dirlink/new", os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"n")
        os.close(fd)
        self.assertEqual(os.stat(os.path.join(self.root, "sub", "new")).st_mode & 0o777,
                         0o600)
        e = self.assertRaises(OSError, openBeneath, self.rootFd, "outdir/new",
                              os.O_WRONLY | os.O_CREAT)
        self.assertEqual(e.errno, errno.EXDEV)
        self.assertFalse(os.path.exists(os.path.join(self.outside, "new")))

    def test_directoryAndPath(self):
        """
        If C{O_PATH} or C{O_DIRECTORY} is asked for, the descriptor names
        what the path resolves to (the root for C{"."}).
        """
        for path, expected in ((".", self.root), ("dirlink", os.path.join(self.root, "sub")),
                               ("sub/..", self.root)):
            fd = openBeneath(self.rootFd, path, os.O_PATH | os.O_DIRECTORY)
            try:
                self.assertEqual(os.fstat(fd).st_ino, os.stat(expected).st_ino)
            finally:
                os.close(fd)
        fd = openBeneath(self.rootFd, "link", os.O_PATH)
        self.addCleanup(os.close, fd)
        self.assertTrue(stat.S_ISREG(os.fstat(fd).st_mode))


class Openat2Tests(_BeneathTests, SynchronousTestCase):
    """
    L{openBeneath} through the kernel's C{openat2}.
    """

    def setUp(self):
        if not confine.openat2Available():
            raise SkipTest("this kernel has no openat2")
        _BeneathTests.setUp(self)


class WalkTests(_BeneathTests, SynchronousTestCase):
    """
    L{openBeneath} where C{openat2} is missing: C{openat2} answers
    C{ENOSYS}, and the path is walked component by component.
    """

    def setUp(self):
        _BeneathTests.setUp(self)
        self.calls = []

        def noOpenat2(*args):
            self.calls.append(args)
            raise OSError(errno.ENOSYS, "no openat2")
        self.patch(confine, "_openat2", noOpenat2)
        self.patch(confine, "_openat2Works", None)
        self.walked = []
        realWalk = confine._walk

        def walk(*args):
            self.walked.append(args[1])
            return realWalk(*args)
        self.patch(confine, "_walk", walk)

    def test_fallbackUsed(self):
        """
        If C{openat2} answers C{ENOSYS} once, it is not tried again, and the
        walk opens the file.
        """
        self.assertEqual(self.read("link"), b"inside")
        self.assertEqual(self.read("sub/f"), b"inside")
        self.assertEqual(len(self.calls), 1)
        self.assertEqual(self.walked, [b"link", b"sub/f"])
        self.assertFalse(confine._openat2Works)

    def test_symlinkSwappedIn(self):
        """
        If the last component becomes a symlink to outside between the look
        and the open, the open refuses it (C{O_NOFOLLOW}) and the link is
        then looked at: C{EXDEV}.
        """
        real = os.open
        swapped = []

        def racingOpen(path, flags, mode=0o777, *, dir_fd=None):
            if path == b"f" and not flags & os.O_PATH and not swapped:
                swapped.append(True)
                os.unlink(os.path.join(self.root, "sub", "f"))
                os.symlink("../../outside/secret", os.path.join(self.root, "sub", "f"))
            return real(path, flags, mode, dir_fd=dir_fd)
        self.patch(os, "open", racingOpen)
        e = self.assertRaises(OSError, openBeneath, self.rootFd, "sub/f", os.O_RDONLY)
        self.assertEqual(swapped, [True])
        self.assertEqual(e.errno, errno.EXDEV)


class ConfinedRootTests(_Tree, SynchronousTestCase):
    """
    Tests for L{ConfinedRoot}.
    """

    def setUp(self):
        self.makeTree()
        self.confined = ConfinedRoot(self.root)
        self.addCleanup(self.confined.close)

    def test_openRegular(self):
        """
        If the path names a regular file (through an inside symlink), it is
        opened and its stat returned.
        """
        fd, st = self.confined.openRegular("link")
        self.addCleanup(os.close, fd)
        self.assertEqual(os.read(fd, 100), b"inside")
        self.assertEqual(st.st_ino, os.stat(os.path.join(self.root, "sub", "f")).st_ino)

    def test_fifoNeverOpened(self):
        """
        If the path names a FIFO, L{NotRegularFile} is raised without
        opening it: a writer waiting on it stays blocked (a reader's open
        would have released it).
        """
        fifo = os.path.join(self.root, "fifo")
        os.mkfifo(fifo)
        e = self.assertRaises(NotRegularFile, self.confined.openRegular, "fifo")
        self.assertTrue(stat.S_ISFIFO(e.mode))
        self.assertIsInstance(e, OSError)
        # Nobody has it open for reading: a non-blocking writer is refused.
        err = self.assertRaises(OSError, os.open, fifo, os.O_WRONLY | os.O_NONBLOCK)
        self.assertEqual(err.errno, errno.ENXIO)

    def test_directoryAndDeviceRefused(self):
        """
        If the path names a directory or a device, L{NotRegularFile}.
        """
        self.assertRaises(NotRegularFile, self.confined.openRegular, "sub")
        os.symlink("/dev/null", os.path.join(self.root, "null"))
        with ConfinedRoot(self.root, symlinks="always") as always:
            self.assertRaises(NotRegularFile, always.openRegular, "null")

    def test_swappedForFIFO(self):
        """
        If the file is replaced by a FIFO between the look and the open, the
        open does not block (C{O_NONBLOCK}) and the FIFO is refused.
        """
        path = os.path.join(self.root, "sub", "f")
        realStat = self.confined.stat

        def statThenSwap(name):
            st = realStat(name)
            os.unlink(path)
            os.mkfifo(path)
            return st
        self.confined.stat = statThenSwap
        self.assertRaises(NotRegularFile, self.confined.openRegular, "sub/f")

    def test_stat(self):
        """
        L{ConfinedRoot.stat} follows inside symlinks only.
        """
        self.assertTrue(stat.S_ISREG(self.confined.stat("link").st_mode))
        e = self.assertRaises(OSError, self.confined.stat, "relout")
        self.assertEqual(e.errno, errno.EXDEV)

    def test_rootRenamed(self):
        """
        If the root directory is renamed away, files are still opened below
        the directory that was opened (not below whatever has its old name).
        """
        os.rename(self.root, self.root + ".old")
        os.makedirs(os.path.join(self.root, "sub"))
        _write(os.path.join(self.root, "sub", "f"), b"impostor")
        fd, _ = self.confined.openRegular("sub/f")
        self.addCleanup(os.close, fd)
        self.assertEqual(os.read(fd, 100), b"inside")

    def test_close(self):
        """
        If the root is closed, its descriptor is released and opening
        raises L{ValueError}; closing twice is harmless.
        """
        fd = self.confined.fileno()
        self.confined.close()
        self.confined.close()
        self.assertRaises(OSError, os.fstat, fd)
        self.assertRaises(ValueError, self.confined.open, "sub/f")

    def test_badPolicy(self):
        """
        If the policy is not one of L{confine.SYMLINK_POLICIES},
        L{ValueError}.
        """
        self.assertRaises(ValueError, ConfinedRoot, self.root, symlinks="sometimes")
