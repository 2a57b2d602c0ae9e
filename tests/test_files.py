"""
Tests for L{provisioner.files}: path confinement, data sources, virtual
files and the resolver chain.
"""

import errno
import gc
import os
import threading

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from provisioner.errors import AccessViolation, FileNotFound
from provisioner import confine
from provisioner.files import (
    BytesSource, DirectoryResolver, FileRequest, FileSource, ResolverChain, RootHandle,
    VirtualFiles, normalisePath)
from provisioner.interfaces import IDataSource, IFileResolver, IVirtualFiles


class NormalisePathTests(SynchronousTestCase):
    """
    Tests for L{normalisePath}.
    """

    def test_plain(self):
        """
        Leading slashes, backslashes and C{.} components are normalised away.
        """
        self.assertEqual(normalisePath(b"/pxelinux.0"), "pxelinux.0")
        self.assertEqual(normalisePath("\\boot\\x64\\wdsnbp.com"), "boot/x64/wdsnbp.com")
        self.assertEqual(normalisePath("a//./b"), "a/b")

    def test_refused(self):
        """
        If a path climbs out, has NUL or control characters, or is too long,
        it is refused as an access violation.
        """
        for bad in [b"../etc/passwd", b"a/../../b", b"..\\..\\x", b"a\x00b", b"a\nb",
                    b"x" * 5000]:
            self.assertRaises(AccessViolation, normalisePath, bad)

    def test_empty(self):
        """
        If nothing is left of a path, it is not found.
        """
        self.assertRaises(FileNotFound, normalisePath, b"/")
        self.assertRaises(FileNotFound, normalisePath, b"")

    def test_latin1(self):
        """
        A name that is not UTF-8 is still decoded (Latin-1).
        """
        self.assertEqual(normalisePath(b"caf\xe9"), "caf\xe9")


class DirectoryResolverTests(SynchronousTestCase):
    """
    Tests for L{DirectoryResolver} and L{FileSource}.
    """

    def setUp(self):
        self.root = self.mktemp()
        os.makedirs(os.path.join(self.root, "sub"))
        with open(os.path.join(self.root, "sub", "f"), "wb") as f:
            f.write(b"0123456789")
        outside = self.mktemp()
        with open(outside, "wb") as f:
            f.write(b"secret")
        os.symlink(os.path.abspath(outside), os.path.join(self.root, "escape"))
        os.symlink("sub/f", os.path.join(self.root, "inside"))

    def test_interfaces(self):
        """
        The resolver and its sources provide their interfaces.
        """
        resolver = DirectoryResolver(self.root)
        verifyObject(IFileResolver, resolver)
        source = resolver.resolve(FileRequest("sub/f", ("127.0.0.1", 1)))
        self.addCleanup(source.close)
        verifyObject(IDataSource, source)

    def test_read(self):
        """
        A file is read at any offset; past the end gives fewer bytes.
        """
        source = DirectoryResolver(self.root).resolve(FileRequest("sub/f", None))
        self.addCleanup(source.close)
        self.assertEqual(source.size, 10)
        self.assertEqual(source.read(2, 3), b"234")
        self.assertEqual(source.read(8, 5), b"89")
        self.assertEqual(source.read(20, 5), b"")

    def test_replacedFileKeepsServing(self):
        """
        If the file is replaced by a rename while open, the source keeps
        reading the old content.
        """
        path = os.path.join(self.root, "sub", "f")
        source = DirectoryResolver(self.root).resolve(FileRequest("sub/f", None))
        self.addCleanup(source.close)
        with open(path + ".new", "wb") as f:
            f.write(b"XXXXXXXXXX")
        os.rename(path + ".new", path)
        self.assertEqual(source.read(0, 10), b"0123456789")

    def test_symlinks(self):
        """
        A symlink inside the root is followed; one escaping it is refused.
        """
        resolver = DirectoryResolver(self.root)
        source = resolver.resolve(FileRequest("inside", None))
        self.addCleanup(source.close)
        self.assertEqual(source.read(0, 3), b"012")
        self.assertRaises(AccessViolation, resolver.resolve, FileRequest("escape", None))

    def test_missing(self):
        """
        A missing file falls through (None), or is final when configured so.
        Directories are not files.
        """
        self.assertIsNone(DirectoryResolver(self.root).resolve(FileRequest("nope", None)))
        final = DirectoryResolver(self.root, notFoundIsFinal=True)
        self.assertRaises(FileNotFound, final.resolve, FileRequest("nope", None))
        self.assertRaises(FileNotFound, final.resolve, FileRequest("sub", None))

    def test_fifoRefused(self):
        """
        If a FIFO sits under the root, opening it neither blocks nor serves
        it: it is not a regular file.
        """
        os.mkfifo(os.path.join(self.root, "fifo"))
        final = DirectoryResolver(self.root, notFoundIsFinal=True)
        self.assertRaises(FileNotFound, final.resolve, FileRequest("fifo", None))

    def test_symlinkedDirectories(self):
        """
        If a path goes through a symlinked directory, or climbs back up
        with C{..} inside a symlink's target, it is served while it stays
        inside; a symlinked directory leading outside is refused with
        L{AccessViolation}, whatever follows it.
        """
        os.symlink("sub", os.path.join(self.root, "dirlink"))
        os.symlink("../sub/f", os.path.join(self.root, "sub", "viaup"))
        outside = os.path.abspath(self.mktemp())
        os.makedirs(outside)
        with open(os.path.join(outside, "f"), "wb") as f:
            f.write(b"outside")
        os.symlink(outside, os.path.join(self.root, "outdir"))
        os.symlink("../" * 12 + outside.lstrip("/"), os.path.join(self.root, "relout"))
        resolver = DirectoryResolver(self.root, notFoundIsFinal=True)
        for path in ("dirlink/f", "sub/viaup", "dirlink/viaup"):
            source = resolver.resolve(FileRequest(path, None))
            self.addCleanup(source.close)
            self.assertEqual(source.read(0, 10), b"0123456789", path)
        for path in ("outdir/f", "relout/f", "outdir/missing"):
            self.assertRaises(AccessViolation, resolver.resolve, FileRequest(path, None))

    def test_escapeLogged(self):
        """
        If a path is refused because it leads outside the root, one warning
        names the protocol, the path, the peer and the root.
        """
        events = []
        from twisted.logger import globalLogPublisher
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        resolver = DirectoryResolver(self.root)
        self.assertRaises(AccessViolation, resolver.resolve,
                          FileRequest("escape", ("10.0.0.9", 1000), protocol="http"))
        [event] = [e for e in events if e.get("log_namespace", "").startswith(
            "provisioner.files")]
        self.assertEqual((event["protocol"], event["path"], event["peer"], event["root"]),
                         ("http", "escape", "10.0.0.9", os.path.realpath(self.root)))
        self.assertEqual(event["log_level"].name, "warn")

    def test_fifoNeverOpened(self):
        """
        If a FIFO sits under the root, it is refused without being opened:
        a writer waiting for a reader stays blocked (opening it, even
        non-blocking, would have released the writer).
        """
        fifo = os.path.join(self.root, "fifo")
        os.mkfifo(fifo)
        opened = threading.Event()

        def writer():
            fd = os.open(fifo, os.O_WRONLY)  # blocks until a reader opens it
            opened.set()
            os.close(fd)
        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        # Give the writer time to block in its open.
        opened.wait(0.3)
        final = DirectoryResolver(self.root, notFoundIsFinal=True)
        self.assertRaises(FileNotFound, final.resolve, FileRequest("fifo", None))
        self.assertFalse(opened.wait(0.3), "the resolver opened the FIFO")
        # Release the writer.
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        self.assertTrue(opened.wait(10))
        os.close(fd)
        thread.join(10)

    def test_rootReplaced(self):
        """
        If the root is removed and made again (or another directory renamed
        to its name), the next request is served from the new one; the old
        descriptor is closed.
        """
        resolver = DirectoryResolver(self.root, notFoundIsFinal=True)
        resolver.resolve(FileRequest("sub/f", None)).close()
        held = resolver.handle.current().fileno()
        os.rename(self.root, self.root + ".old")
        self.assertRaises(FileNotFound, resolver.resolve, FileRequest("sub/f", None))
        os.makedirs(os.path.join(self.root, "sub"))
        with open(os.path.join(self.root, "sub", "f"), "wb") as f:
            f.write(b"new root")
        source = resolver.resolve(FileRequest("sub/f", None))
        self.addCleanup(source.close)
        self.assertEqual(source.read(0, 100), b"new root")
        now = resolver.handle.current()
        self.assertEqual(os.fstat(now.fileno()).st_ino, os.stat(self.root).st_ino)
        if now.fileno() != held:
            self.assertRaises(OSError, os.fstat, held)

    def test_rootBecameSymlink(self):
        """
        If the root is replaced by a symlink to another directory, requests
        are refused (the root's path was resolved once, when the resolver
        was made), not served from where the symlink leads.
        """
        resolver = DirectoryResolver(self.root, notFoundIsFinal=True)
        resolver.resolve(FileRequest("sub/f", None)).close()
        elsewhere = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(elsewhere, "sub"))
        with open(os.path.join(elsewhere, "sub", "f"), "wb") as f:
            f.write(b"elsewhere")
        os.rename(self.root, self.root + ".old")
        os.symlink(elsewhere, self.root)
        self.assertRaises(AccessViolation, resolver.resolve, FileRequest("sub/f", None))

    def test_missingRoot(self):
        """
        If the root does not exist, every file is missing; once it is made,
        its files are served.
        """
        root = os.path.abspath(self.mktemp())
        resolver = DirectoryResolver(root)
        self.assertIsNone(resolver.resolve(FileRequest("f", None)))
        final = DirectoryResolver(root, notFoundIsFinal=True)
        self.assertRaises(FileNotFound, final.resolve, FileRequest("f", None))
        os.makedirs(root)
        with open(os.path.join(root, "f"), "wb") as f:
            f.write(b"late")
        source = final.resolve(FileRequest("f", None))
        self.addCleanup(source.close)
        self.assertEqual(source.read(0, 10), b"late")

    def test_staleRoot(self):
        """
        If opening below the held root fails with C{ESTALE} (an NFS root
        exported again), the root is opened again and the open retried.
        """
        resolver = DirectoryResolver(self.root, notFoundIsFinal=True)
        root = resolver.handle.current()
        realOpen = confine.ConfinedRoot.openRegular
        calls = []

        def staleOnce(confined, path, *args):
            calls.append(confined)
            if len(calls) == 1:
                raise OSError(errno.ESTALE, os.strerror(errno.ESTALE))
            return realOpen(confined, path, *args)
        self.patch(confine.ConfinedRoot, "openRegular", staleOnce)
        source = resolver.resolve(FileRequest("sub/f", None))
        self.addCleanup(source.close)
        self.assertEqual(source.read(0, 3), b"012")
        self.assertIs(calls[0], root)
        self.assertIsNot(calls[1], root)

    def test_descriptors(self):
        """
        A resolver holds one descriptor for its root, however many files it
        opens; closing it (or dropping it, as a reload does) releases it.
        """
        def count():
            return len(os.listdir("/proc/self/fd"))
        gc.collect()  # descriptors other tests left to the garbage
        before = count()
        resolver = DirectoryResolver(self.root)
        for _ in range(20):
            resolver.resolve(FileRequest("sub/f", None)).close()
        self.assertEqual(count(), before + 1)
        resolver.close()
        self.assertEqual(count(), before)
        resolver.resolve(FileRequest("sub/f", None)).close()
        self.assertEqual(count(), before + 1)
        del resolver
        gc.collect()
        self.assertEqual(count(), before)

    def test_closeIdempotent(self):
        """
        If a source is closed, its descriptor is closed and reads are
        refused; closing it again neither raises nor closes a descriptor
        again (by then the number may belong to another file).
        """
        opened, closed = [], []
        realOpen, realClose = os.open, os.close

        def recordOpen(*args, **kwargs):
            opened.append(realOpen(*args, **kwargs))
            return opened[-1]

        def recordClose(fd):
            closed.append(fd)
            realClose(fd)
        self.patch(os, "open", recordOpen)
        self.patch(os, "close", recordClose)
        source = FileSource.open(os.path.join(self.root, "sub", "f"))
        self.assertEqual((len(opened), closed), (1, []))
        source.close()
        self.assertEqual(closed, opened)
        self.assertRaises(OSError, os.fstat, opened[0])
        self.assertRaises(ValueError, source.read, 0, 1)
        source.close()
        self.assertEqual(closed, opened)


class RootHandleTests(SynchronousTestCase):
    """
    Tests for L{RootHandle}.
    """

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)

    def test_sameDirectoryKept(self):
        """
        While the directory at the path is the same, the same
        L{confine.ConfinedRoot} is returned.
        """
        handle = RootHandle(self.dir)
        self.addCleanup(handle.close)
        first = handle.current()
        self.assertIs(handle.current(), first)
        self.assertEqual(first.symlinks, "inside")

    def test_pathResolvedOnce(self):
        """
        The path's symlinks are resolved when the handle is made: a
        symlinked path names its target; a symlink to another directory
        that replaces the directory later is refused with C{ELOOP}.
        """
        link = os.path.abspath(self.mktemp())
        os.symlink(self.dir, link)
        handle = RootHandle(link)
        self.addCleanup(handle.close)
        self.assertEqual(handle.path, os.path.realpath(self.dir))
        handle.current()
        other = os.path.abspath(self.mktemp())
        os.makedirs(other)
        os.rename(self.dir, self.dir + ".moved")
        os.symlink(other, self.dir)
        e = self.assertRaises(OSError, handle.current)
        self.assertEqual(e.errno, errno.ELOOP)

    def test_missing(self):
        """
        If nothing is at the path, C{ENOENT}.
        """
        handle = RootHandle(self.dir + ".nothing")
        e = self.assertRaises(OSError, handle.current)
        self.assertEqual(e.errno, errno.ENOENT)


class VirtualFilesTests(SynchronousTestCase):
    """
    Tests for L{VirtualFiles}.
    """

    def test_exactAndPattern(self):
        """
        Exact names and patterns produce sources; unregistering removes them.
        """
        files = VirtualFiles()
        verifyObject(IVirtualFiles, files)
        unregister = files.register("boot.ipxe", lambda req, m: "#!ipxe\n")
        files.register(r"pxelinux\.cfg/01-(.*)", lambda req, m: m.group(1).encode(), exact=False)
        source = files.resolve(FileRequest("boot.ipxe", None))
        self.assertEqual(source.read(0, 100), b"#!ipxe\n")
        source = files.resolve(FileRequest("pxelinux.cfg/01-aa-bb", None))
        self.assertEqual(source.read(0, 100), b"aa-bb")
        unregister()
        self.assertIsNone(files.resolve(FileRequest("boot.ipxe", None)))
        self.assertEqual(files.names(), [])

    def test_producerDeclines(self):
        """
        A producer returning None lets the request fall through.
        """
        files = VirtualFiles()
        files.register("x", lambda req, m: None)
        self.assertIsNone(files.resolve(FileRequest("x", None)))

    def test_deferred(self):
        """
        A producer may answer with a Deferred.
        """
        files = VirtualFiles()
        files.register("x", lambda req, m: defer.succeed(b"late"))
        source = self.successResultOf(files.resolve(FileRequest("x", None)))
        self.assertEqual(source.read(0, 10), b"late")


class ResolverChainTests(SynchronousTestCase):
    """
    Tests for L{ResolverChain}.
    """

    def test_firstAnswerWins(self):
        """
        The first resolver that answers wins; None falls through; nothing at
        all is FileNotFound.
        """
        first = VirtualFiles()
        second = VirtualFiles()
        first.register("a", lambda r, m: b"first")
        second.register("a", lambda r, m: b"second")
        second.register("b", lambda r, m: defer.succeed(b"second-b"))
        chain = ResolverChain([first, second])
        self.assertEqual(self.successResultOf(chain.resolve(FileRequest("a", None))).read(0, 9),
                         b"first")
        self.assertEqual(self.successResultOf(chain.resolve(FileRequest("b", None))).read(0, 9),
                         b"second-b")
        self.failureResultOf(chain.resolve(FileRequest("c", None)), FileNotFound)

    def test_errorsPropagate(self):
        """
        A resolver raising stops the chain with that error.
        """
        class Refuse:
            def resolve(self, request):
                raise AccessViolation("no")
        chain = ResolverChain([Refuse(), VirtualFiles()])
        self.failureResultOf(chain.resolve(FileRequest("a", None)), AccessViolation)

    def test_bytesSource(self):
        """
        L{BytesSource} reads slices.
        """
        source = BytesSource(b"abcdef")
        self.assertEqual((source.size, source.read(4, 10)), (6, b"ef"))
