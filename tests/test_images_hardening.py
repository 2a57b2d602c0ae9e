# -*- test-case-name: tests.test_images_hardening -*-
"""
Regression tests for the image directory's hardening (issue 14, finding 8):
a symlink renamed in that leads outside the directory, FIFOs, an inotify
queue overflow and one descriptor held per image.

Files are real, in a temporary directory; hashing runs synchronously or, in
the FIFO tests, in a real thread with a deadline (so that a hash blocking on
a FIFO fails the test instead of hanging it); inotify is real but read by
hand (a fake reactor records the reader, the test calls C{doRead}).
"""

import errno
import hashlib
import json
import os
import struct
import threading

from twisted.internet import defer, task
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from provisioner.files import FileRequest
from provisioner.images.catalog import Catalog
from provisioner.images.state import STATE_FILE
from provisioner.images.watch import INotifyWatcher, inotifyAvailable
from tests.fakes import readAll


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _openDescriptors():
    return len(os.listdir("/proc/self/fd"))


class _Dirs:

    def makeDirs(self):
        base = os.path.abspath(self.mktemp())
        self.images = os.path.join(base, "images")
        self.state = os.path.join(base, "state")
        self.outside = os.path.join(base, "outside")
        self.staging = os.path.join(base, "staging")
        for d in (self.images, self.outside, self.staging):
            os.makedirs(d)
        self.secret = os.path.join(self.outside, "shadow")
        _write(self.secret, b"root:$6$secret")
        self.clock = task.Clock()

    def makeCatalog(self, **kw):
        catalog = Catalog(self.clock, self.images, stateDir=self.state, prefix="images",
                          ignore=[".*"], **kw)
        self.addCleanup(catalog.stop)
        return catalog

    def renameIn(self, name, make):
        """
        Make something with C{make(path)} in the staging directory and
        rename it into the images directory as C{name}.
        """
        staged = os.path.join(self.staging, name.replace("/", "_"))
        make(staged)
        os.rename(staged, os.path.join(self.images, name))

    def request(self, catalog, name):
        return catalog.resolver.resolve(FileRequest("images/" + name, ("192.0.2.9", 1069)))


class SymlinkTests(_Dirs, SynchronousTestCase):
    """
    Symlinks in the image directory are followed only when they resolve
    inside it (C{images.follow_symlinks: inside}).
    """

    def setUp(self):
        self.makeDirs()

    def test_outsideSymlinkRenamedInNotCatalogued(self):
        """
        If a symlink to a file outside the directory is renamed into it, it
        is not catalogued (not by the event, not by a rescan) and a request
        for it gets nothing.
        """
        catalog = self.makeCatalog()
        self.renameIn("evil.img", lambda p: os.symlink(self.secret, p))
        self.renameIn("rel.img", lambda p: os.symlink("../outside/shadow", p))
        self.successResultOf(catalog.changed("evil.img"))
        self.successResultOf(catalog.changed("rel.img"))
        self.successResultOf(catalog.rescan())
        self.assertEqual(catalog.asList(), [])
        self.assertIsNone(self.request(catalog, "evil.img"))
        self.assertIsNone(self.request(catalog, "rel.img"))

    def test_outsideSymlinkOverCataloguedImage(self):
        """
        If a catalogued image is replaced by a symlink leading outside (by
        rename, before any event is handled), requests for it never get the
        outside file, and the event removes the entry.
        """
        catalog = self.makeCatalog()
        _write(os.path.join(self.images, "vmlinuz"), b"kernel")
        self.successResultOf(catalog.changed("vmlinuz"))
        self.renameIn("vmlinuz", lambda p: os.symlink(self.secret, p))
        source = self.request(catalog, "vmlinuz")
        if source is not None:
            data = readAll(source)
            source.close()
            self.assertNotEqual(data, b"root:$6$secret")
        self.successResultOf(catalog.changed("vmlinuz"))
        self.assertIsNone(catalog.get("vmlinuz"))
        self.assertIsNone(self.request(catalog, "vmlinuz"))

    def test_symlinkedDirectoryOutside(self):
        """
        If a directory symlink leading outside is renamed in, nothing below
        it is catalogued, even when named explicitly.
        """
        catalog = self.makeCatalog()
        self.renameIn("sub", lambda p: os.symlink(self.outside, p))
        self.successResultOf(catalog.rescan())
        self.successResultOf(catalog.changed("sub/shadow"))
        self.successResultOf(catalog.rescan("sub"))
        self.assertEqual(catalog.asList(), [])

    def test_insideSymlinkServed(self):
        """
        If a symlink resolves inside the directory, it is catalogued under
        its own name and served.
        """
        catalog = self.makeCatalog()
        _write(os.path.join(self.images, "debian", "linux-6.1"), b"kernel 6.1")
        os.symlink("debian/linux-6.1", os.path.join(self.images, "linux"))
        self.successResultOf(catalog.rescan())
        self.assertEqual(sorted(e.name for e in catalog), ["debian/linux-6.1", "linux"])
        source = self.request(catalog, "linux")
        self.addCleanup(source.close)
        self.assertEqual(readAll(source), b"kernel 6.1")

    def test_never(self):
        """
        If C{follow_symlinks} is C{never}, no symlink is catalogued, even one
        that stays inside.
        """
        catalog = self.makeCatalog(followSymlinks="never")
        _write(os.path.join(self.images, "a.iso"), b"a")
        os.symlink("a.iso", os.path.join(self.images, "b.iso"))
        self.successResultOf(catalog.rescan())
        self.successResultOf(catalog.changed("b.iso"))
        self.assertEqual([e.name for e in catalog], ["a.iso"])

    def test_always(self):
        """
        If C{follow_symlinks} is C{always}, a symlink leading outside is
        catalogued and served (the operator asked for it).
        """
        catalog = self.makeCatalog(followSymlinks="always")
        os.symlink(self.secret, os.path.join(self.images, "shared.img"))
        self.successResultOf(catalog.rescan())
        source = self.request(catalog, "shared.img")
        self.addCleanup(source.close)
        self.assertEqual(readAll(source), b"root:$6$secret")


class _Deadline:
    """
    A C{runInThread} that runs each call in a real thread and waits for it
    at most C{timeout} seconds: a call that blocks longer is recorded in
    L{blocked} and fails.
    """

    def __init__(self, timeout=5.0):
        self.timeout = timeout
        self.blocked = []

    def __call__(self, f, *args):
        result = []

        def run():
            try:
                result.append((True, f(*args)))
            except BaseException as e:
                result.append((False, e))
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            self.blocked.append(args)
            return defer.fail(AssertionError("blocked in %s%r" % (f.__name__, args)))
        ok, value = result[0]
        return defer.succeed(value) if ok else defer.fail(Failure(value))


class FIFOTests(_Dirs, SynchronousTestCase):
    """
    FIFOs (and other non-regular files) in the image directory are skipped
    without being opened.
    """

    def setUp(self):
        self.makeDirs()
        self.runner = _Deadline()
        self.addCleanup(self.release)

    def release(self):
        """
        Let go of any thread blocked opening one of our FIFOs (a writer's
        open completes a blocked reader's).
        """
        for name in os.listdir(self.images):
            path = os.path.join(self.images, name)
            if os.path.exists(path) and not os.path.isfile(path) and \
                    not os.path.isdir(path):
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:
                    pass

    def assertNeverOpened(self, name):
        """
        Nobody has the FIFO open for reading: a non-blocking writer's open
        fails with ENXIO.
        """
        e = self.assertRaises(OSError, os.open, os.path.join(self.images, name),
                              os.O_WRONLY | os.O_NONBLOCK)
        self.assertEqual(e.errno, errno.ENXIO)

    def test_twoFIFOsThenAnImage(self):
        """
        If two FIFOs are renamed in (and reported like complete files), no
        hash blocks on them, they are not catalogued nor ever opened, and a
        regular image added after them is catalogued and served.
        """
        catalog = self.makeCatalog(runInThread=self.runner)
        self.renameIn("a.img", os.mkfifo)
        self.renameIn("b.img", os.mkfifo)
        catalog.changed("a.img")
        catalog.changed("b.img")
        self.successResultOf(catalog.rescan())
        self.assertEqual(self.runner.blocked, [])
        self.assertNeverOpened("a.img")
        self.assertNeverOpened("b.img")
        _write(os.path.join(self.images, "vmlinuz"), b"kernel")
        self.successResultOf(catalog.changed("vmlinuz"))
        self.assertEqual([e.name for e in catalog], ["vmlinuz"])
        source = self.request(catalog, "vmlinuz")
        self.addCleanup(source.close)
        self.assertEqual(readAll(source), b"kernel")
        self.assertIsNone(self.request(catalog, "a.img"))
        self.successResultOf(catalog.stop())

    def test_imageReplacedByFIFO(self):
        """
        If a catalogued image is replaced by a FIFO, a request for it does
        not block and gets nothing; the entry goes.
        """
        catalog = self.makeCatalog(runInThread=self.runner)
        _write(os.path.join(self.images, "k.efi"), b"k")
        self.successResultOf(catalog.changed("k.efi"))
        self.renameIn("k.efi", os.mkfifo)
        result = self.runner(self.request, catalog, "k.efi")
        self.assertIsNone(self.successResultOf(result))
        self.successResultOf(catalog.changed("k.efi"))
        self.assertIsNone(catalog.get("k.efi"))
        self.assertNeverOpened("k.efi")

    def test_restoreDoesNotOpenFIFO(self):
        """
        If a persisted entry's name is now a FIFO, restoring the catalogue
        neither blocks nor takes it back.
        """
        _write(os.path.join(self.images, "x.iso"), b"x")
        first = self.makeCatalog()
        self.successResultOf(first.rescan())
        self.successResultOf(first.stop())
        os.unlink(os.path.join(self.images, "x.iso"))
        os.mkfifo(os.path.join(self.images, "x.iso"))
        second = self.makeCatalog()
        self.assertEqual(self.successResultOf(self.runner(second.restore)), 0)
        self.assertNeverOpened("x.iso")


class _FakeReadReactor(task.Clock):
    """
    A clock that records the readers added to it (the inotify descriptor)
    instead of polling them.
    """

    def __init__(self):
        task.Clock.__init__(self)
        self.readers = []

    def addReader(self, reader):
        self.readers.append(reader)

    def removeReader(self, reader):
        if reader in self.readers:
            self.readers.remove(reader)

    def removeWriter(self, writer):
        pass

    def getReaders(self):
        return list(self.readers)

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class _Watching:
    """
    A real L{INotifyWatcher} on a new directory, read by hand through a
    fake reactor; its events go to C{self.events}.
    """

    def startWatching(self):
        if not inotifyAvailable():
            raise SkipTest("no inotify here")
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)
        self.reactor = _FakeReadReactor()
        self.events = []
        self.watcher = INotifyWatcher(self.reactor, self.root,
                                      lambda kind, rel: self.events.append((kind, rel)))


class OverflowTests(_Watching, SynchronousTestCase):
    """
    An inotify queue overflow reaches the watcher, which asks for a full
    rescan and says so once.
    """

    def setUp(self):
        self.startWatching()
        self.warnings = []

        def observe(event):
            if event.get("log_level") == LogLevel.warn:
                self.warnings.append(event)
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.watcher.start()
        self.addCleanup(self.watcher.stop)

    def drain(self, rounds=2000):
        for _ in range(rounds):
            for reader in list(self.reactor.readers):
                reader.doRead()

    def overflowWarnings(self):
        return [e for e in self.warnings if "overflow" in e.get("log_format", "")]

    def test_realOverflow(self):
        """
        If more events than the kernel queues (C{fs.inotify.max_queued_events})
        happen before the watcher reads, the overflow is reported as a rescan
        of everything, with one warning naming the directory.
        """
        with open("/proc/sys/fs/inotify/max_queued_events") as f:
            limit = int(f.read())
        if limit > 1 << 20:
            raise SkipTest("max_queued_events is %d: too many events to make" % (limit,))
        a, b = os.path.join(self.root, "a"), os.path.join(self.root, "b")
        _write(a, b"a")
        _write(b, b"b")
        self.drain(5)
        del self.events[:]
        for i in range(limit // 2 + 16):
            # Alternating names: the kernel merges only identical events in
            # a row.
            os.utime(a, ns=(i, i))
            os.utime(b, ns=(i, i))
        self.drain()
        self.assertTrue(("rescan", "") in self.events,
                        "no rescan of everything among %d events" % (len(self.events),))
        warnings = self.overflowWarnings()
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["root"], self.root)
        # Events after the overflow still arrive.
        del self.events[:]
        _write(os.path.join(self.root, "c"), b"c")
        self.drain(5)
        self.assertIn(("complete", "c"), self.events)


class DescriptorTests(_Dirs, SynchronousTestCase):
    """
    The catalogue holds no descriptor per image: a file is opened when a
    request is answered and closed when its transfer ends.
    """

    COUNT = 300

    def setUp(self):
        self.makeDirs()
        for i in range(self.COUNT):
            _write(os.path.join(self.images, "d%d" % (i // 100,), "f%04d.img" % (i,)),
                   b"%d" % (i,))

    def test_catalogueAtRest(self):
        """
        If hundreds of images are catalogued (or restored), the process
        holds at most a couple of descriptors more than before.
        """
        before = _openDescriptors()
        catalog = self.makeCatalog()
        self.successResultOf(catalog.rescan())
        self.assertEqual(len(catalog), self.COUNT)
        self.assertLessEqual(_openDescriptors(), before + 2)
        self.successResultOf(catalog.stop())
        self.assertEqual(_openDescriptors(), before)
        restored = self.makeCatalog()
        self.assertEqual(restored.restore(), self.COUNT)
        self.assertLessEqual(_openDescriptors(), before + 2)
        self.successResultOf(restored.stop())
        self.assertEqual(_openDescriptors(), before)

    def test_openPerTransfer(self):
        """
        If a request is answered, one descriptor is opened for it and
        closed with the source.
        """
        catalog = self.makeCatalog()
        self.successResultOf(catalog.rescan())
        atRest = _openDescriptors()
        source = self.request(catalog, "d1/f0123.img")
        self.assertEqual(_openDescriptors(), atRest + 1)
        self.assertEqual(readAll(source), b"123")
        self.assertEqual(source.sha256, hashlib.sha256(b"123").hexdigest())
        source.close()
        self.assertEqual(_openDescriptors(), atRest)

    def test_state(self):
        """
        The persisted catalogue is unchanged in form (names, sizes, digests,
        inodes).
        """
        catalog = self.makeCatalog()
        self.successResultOf(catalog.rescan())
        catalog.save()
        with open(os.path.join(self.state, STATE_FILE)) as f:
            data = json.load(f)
        self.assertEqual(len(data["images"]), self.COUNT)
        self.assertEqual(data["images"][0]["name"], "d0/f0000.img")


class RawEventTests(_Watching, SynchronousTestCase):
    """
    The watcher's handling of the raw inotify event stream.
    """

    def setUp(self):
        self.startWatching()
        self.watcher.start()
        self.addCleanup(self.watcher.stop)

    def test_injectedOverflow(self):
        """
        If the raw stream holds an C{IN_Q_OVERFLOW} event (watch descriptor
        -1), the watcher asks for a rescan of everything; the events around
        it are handled as usual.
        """
        from provisioner.images import watch
        rootWd = self.watcher.wdFor("")
        data = (struct.pack("=iIII", rootWd, watch.IN_CLOSE_WRITE, 0, 16) +
                b"k.efi".ljust(16, b"\0") +
                struct.pack("=iIII", -1, watch.IN_Q_OVERFLOW, 0, 0) +
                struct.pack("=iIII", rootWd, watch.IN_MOVED_TO, 7, 16) +
                b"i.img".ljust(16, b"\0"))
        self.watcher._reader.dataReceived(data)
        self.assertEqual(self.events, [("complete", "k.efi"), ("rescan", ""),
                                       ("complete", "i.img")])


class INotifyWatcherTests(SynchronousTestCase):
    """
    Tests for L{INotifyWatcher} reading the raw inotify stream (real inotify,
    read by hand).
    """

    def setUp(self):
        if not inotifyAvailable():
            raise SkipTest("no inotify here")
        base = os.path.abspath(self.mktemp())
        self.root = os.path.join(base, "root")
        self.away = os.path.join(base, "away")
        os.makedirs(os.path.join(self.root, "sub"))
        os.makedirs(self.away)
        self.reactor = _FakeReadReactor()
        self.events = []
        self.before = _openDescriptors()
        self.watcher = INotifyWatcher(self.reactor, self.root,
                                      lambda kind, rel: self.events.append((kind, rel)),
                                      accept=lambda rel: not rel.startswith("."))
        self.watcher.start()
        self.addCleanup(self.watcher.stop)

    def drain(self):
        for _ in range(5):
            for reader in list(self.reactor.readers):
                reader.doRead()

    def test_subdirectoryDeletedKeepsWatching(self):
        """
        If a subdirectory is deleted, the directory is still watched
        (Twisted's C{INotify} stops altogether when any watched directory
        is deleted).
        """
        os.rmdir(os.path.join(self.root, "sub"))
        self.drain()
        _write(os.path.join(self.root, "after.iso"), b"x")
        self.drain()
        self.assertEqual(self.events, [("removed", "sub"), ("complete", "after.iso")])
        self.assertIsNone(self.watcher.wdFor("sub"))

    def test_newSubdirectoryWatched(self):
        """
        If a directory is created (or moved in), it is reported for a rescan
        and what is written in it afterwards is reported too.
        """
        os.makedirs(os.path.join(self.root, "new", "deeper"))
        self.drain()
        _write(os.path.join(self.root, "new", "deeper", "k"), b"k")
        self.drain()
        self.assertEqual(self.events, [("rescan", "new"), ("complete", "new/deeper/k")])
        os.rename(os.path.join(self.root, "new"), os.path.join(self.away, "new"))
        self.drain()
        _write(os.path.join(self.away, "new", "deeper", "gone"), b"g")
        self.drain()
        self.assertEqual(self.events[2:], [("removed", "new")])
        os.rename(os.path.join(self.away, "new"), os.path.join(self.root, "back"))
        self.drain()
        _write(os.path.join(self.root, "back", "deeper", "b"), b"b")
        self.drain()
        self.assertEqual(self.events[3:], [("rescan", "back"), ("complete", "back/deeper/b")])

    def test_ignoredNames(self):
        """
        If C{accept} refuses a name (a hidden temporary file), its events
        are not reported; the rename to its final name is.
        """
        _write(os.path.join(self.root, ".k.tmp"), b"k")
        os.rename(os.path.join(self.root, ".k.tmp"), os.path.join(self.root, "k"))
        self.drain()
        self.assertEqual(self.events, [("complete", "k")])

    def test_symlinkIsComplete(self):
        """
        If a symlink is created, it is reported complete at once (nothing
        writes a symlink, so no close event would come).
        """
        os.symlink("sub", os.path.join(self.root, "link"))
        self.drain()
        self.assertEqual(self.events, [("complete", "link")])

    def test_stopReleasesDescriptor(self):
        """
        If the watcher stops, its inotify descriptor is closed and the
        reactor no longer reads it.
        """
        self.assertEqual(_openDescriptors(), self.before + 1)
        self.watcher.stop()
        self.assertEqual(_openDescriptors(), self.before)
        self.assertEqual(self.reactor.readers, [])


class EntryDescriptorTests(_Dirs, SynchronousTestCase):
    """
    Callers that send a catalogued image from a descriptor (the imagecast
    controller) get one opened on demand, of exactly the hashed content;
    the catalogue holds none at rest.
    """

    def setUp(self):
        self.makeDirs()
        self.catalog = self.makeCatalog()
        _write(os.path.join(self.images, "disk.img"), b"disk")
        self.successResultOf(self.catalog.changed("disk.img"))

    def test_openDescriptor(self):
        """
        If C{entry.openDescriptor()} is called, it returns a new descriptor
        of the hashed file, owned by the caller: after the caller closes it
        no descriptor is left.
        """
        entry = self.catalog.get("disk.img")
        before = _openDescriptors()
        self.assertTrue(entry.intact())
        fd = entry.openDescriptor()
        self.assertEqual(_openDescriptors(), before + 1)
        self.assertEqual(os.pread(fd, 10, 0), b"disk")
        os.close(fd)
        self.clock.advance(0)
        self.assertEqual(_openDescriptors(), before)

    def test_noneAfterReplace(self):
        """
        If the file was replaced, the entry is not intact and has no
        descriptor to give.
        """
        entry = self.catalog.get("disk.img")
        self.catalog.runInThread = lambda f, *a: defer.Deferred()  # hash never ends
        self.renameIn("disk.img", lambda p: _write(p, b"other"))
        self.assertFalse(entry.intact())
        self.assertIsNone(entry.openDescriptor())


class DirectoryReplacedTests(_Dirs, SynchronousTestCase):
    """
    The directory's descriptor follows a replaced directory at the next
    full rescan.
    """

    def setUp(self):
        self.makeDirs()

    def test_replacedDirectory(self):
        """
        If the images directory is removed and made again, a full rescan
        catalogues the files of the new one; stop closes both descriptors.
        """
        before = _openDescriptors()
        catalog = self.makeCatalog()
        _write(os.path.join(self.images, "old.iso"), b"old")
        self.successResultOf(catalog.rescan())
        os.rename(self.images, self.images + ".gone")
        _write(os.path.join(self.images, "new.iso"), b"new")
        self.successResultOf(catalog.rescan())
        self.assertEqual([e.name for e in catalog], ["new.iso"])
        source = self.request(catalog, "new.iso")
        self.assertEqual(readAll(source), b"new")
        source.close()
        self.successResultOf(catalog.stop())
        self.assertEqual(_openDescriptors(), before)
