"""
Tests for L{provisioner.files}: path confinement, data sources, virtual
files and the resolver chain.
"""

import os

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from provisioner.errors import AccessViolation, FileNotFound
from provisioner.files import (
    BytesSource, DirectoryResolver, FileRequest, FileSource, ResolverChain, VirtualFiles,
    normalisePath)
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
