# -*- test-case-name: tests.test_images -*-
"""
Tests for L{provisioner.images}: the catalogue, its resolver, the polling
watcher and the service, with real files in a temporary directory, hashing
run synchronously and time driven by L{task.Clock}.
"""

import hashlib
import json
import os

from twisted.internet import defer, task
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from zope.interface.verify import verifyObject

from provisioner.appliance import Appliance
from provisioner.config import ConfigError, loadConfig
from provisioner.confine import ConfinedRoot
from provisioner.files import FileRequest
from provisioner.images.catalog import Catalog
from provisioner.images.digest import FileBusy, hashFile
from provisioner.images.entry import classify
from provisioner.images.resolver import ImagesResolver
from provisioner.images.service import ImagesService
from provisioner.images.state import STATE_FILE, loadState
from provisioner.images.watch import PollingWatcher, snapshot
from provisioner.interfaces import IDataSource, IFileResolver
from tests.fakes import readAll


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _leasesWork(directory):
    """
    Whether this file system lets us take read leases (the check that no
    one is writing a file).
    """
    import fcntl
    path = os.path.join(directory, ".lease-probe")
    _write(path, b"")
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return True
    except (OSError, AttributeError):
        return False
    finally:
        os.close(fd)
        os.unlink(path)


class ClassifyTests(SynchronousTestCase):
    """
    Tests for L{classify}.
    """

    def test_builtIn(self):
        """
        If a name matches a built-in rule, its kind is that rule's.
        """
        self.assertEqual(classify("debian/linux"), "kernel")
        self.assertEqual(classify("vmlinuz-6.1"), "kernel")
        self.assertEqual(classify("initrd.gz"), "initrd")
        self.assertEqual(classify("ipxe.efi"), "nbp")
        self.assertEqual(classify("undionly.kpxe"), "nbp")
        self.assertEqual(classify("live.ISO"), "iso")
        self.assertEqual(classify("disk.qcow2"), "disk")
        self.assertEqual(classify("README"), "other")

    def test_operatorRulesFirst(self):
        """
        If the operator's rules match, they win over the built-in ones.
        """
        self.assertEqual(classify("boot.img", {"boot.img": "nbp"}), "nbp")


class CatalogTests(SynchronousTestCase):
    """
    Tests for L{Catalog} with hashing run synchronously.
    """

    def setUp(self):
        self.root = self.mktemp()
        self.images = os.path.join(self.root, "images")
        self.state = os.path.join(self.root, "state")
        os.makedirs(self.images)
        self.clock = task.Clock()
        self.catalog = self.makeCatalog()

    def makeCatalog(self):
        catalog = Catalog(self.clock, self.images, stateDir=self.state, prefix="images",
                          ignore=[".*", "*.part"])
        self.addCleanup(catalog.stop)
        return catalog

    def test_changedHashes(self):
        """
        If a complete file is reported, it is catalogued with its size,
        sha256, kind and mtime, and the catalogue is persisted.
        """
        data = b"kernel" * 1000
        _write(os.path.join(self.images, "vmlinuz"), data)
        self.successResultOf(self.catalog.changed("vmlinuz"))
        entry = self.catalog.get("vmlinuz")
        self.assertEqual(entry.size, len(data))
        self.assertEqual(entry.sha256, hashlib.sha256(data).hexdigest())
        self.assertEqual(entry.kind, "kernel")
        self.assertEqual(entry.mtimeNs, os.stat(os.path.join(self.images, "vmlinuz")).st_mtime_ns)
        state = loadState(os.path.join(self.state, STATE_FILE))
        self.assertEqual(state["vmlinuz"]["sha256"], entry.sha256)

    def test_saveCoalesced(self):
        """
        If C{saveDelay} is set, a burst of changes is saved once, after the
        delay (or at stop).
        """
        self.catalog.saveDelay = 0.5
        for name in ("a.iso", "b.iso", "c.iso"):
            _write(os.path.join(self.images, name), name.encode())
            self.successResultOf(self.catalog.changed(name))
        path = os.path.join(self.state, STATE_FILE)
        self.assertFalse(os.path.exists(path))
        self.clock.advance(0.5)
        self.assertEqual(sorted(loadState(path)), ["a.iso", "b.iso", "c.iso"])
        self.catalog.removed("a.iso")
        self.successResultOf(self.catalog.stop())
        self.assertEqual(sorted(loadState(path)), ["b.iso", "c.iso"])

    def test_rescanUnchangedFile(self):
        """
        If a catalogued file is looked at again (chmod, a periodic rescan)
        and has not changed, it is not hashed again.
        """
        _write(os.path.join(self.images, "a.iso"), b"a")
        self.successResultOf(self.catalog.changed("a.iso"))
        self.successResultOf(self.catalog.rescan("a.iso"))
        self.successResultOf(self.catalog.rescan())
        self.assertEqual(self.catalog.hashCount, 1)

    def test_ignored(self):
        """
        If a file matches an ignore pattern (hidden, partial), it is never
        catalogued.
        """
        _write(os.path.join(self.images, ".hidden"), b"x")
        _write(os.path.join(self.images, "big.iso.part"), b"x")
        self.successResultOf(self.catalog.rescan())
        self.assertEqual(len(self.catalog), 0)

    def test_subdirectories(self):
        """
        If files are in subdirectories, their names are relative paths.
        """
        _write(os.path.join(self.images, "debian", "linux"), b"k")
        _write(os.path.join(self.images, "debian", "initrd.gz"), b"i")
        self.successResultOf(self.catalog.rescan())
        self.assertEqual([e["name"] for e in self.catalog.asList()],
                         ["debian/initrd.gz", "debian/linux"])

    def test_openForWritingNotCatalogued(self):
        """
        If some process still has the file open for writing, it is not
        catalogued (a read lease cannot be taken), and it is once the writer
        closes it and the retry runs.
        """
        if not _leasesWork(self.images):
            raise SkipTest("this file system does not support read leases")
        path = os.path.join(self.images, "growing.iso")
        writer = open(path, "wb")
        writer.write(b"half")
        writer.flush()
        try:
            with ConfinedRoot(self.images) as root:
                self.assertRaises(FileBusy, hashFile, root, "growing.iso")
        except AssertionError:
            writer.close()
            raise
        self.successResultOf(self.catalog.changed("growing.iso"))
        self.assertIsNone(self.catalog.get("growing.iso"))
        writer.write(b" and the rest")
        writer.close()
        self.clock.advance(60)
        self.assertEqual(self.catalog.get("growing.iso").size, len(b"half and the rest"))

    def test_renameReplaceKeepsOldForOpenSources(self):
        """
        If a file is replaced by renaming a new one over it, a source opened
        before keeps reading the old content byte for byte; new requests get
        nothing until the new content is hashed, then the new content.
        """
        old = os.urandom(200000)
        new = os.urandom(150000)
        path = os.path.join(self.images, "disk.img")
        _write(path, old)
        self.successResultOf(self.catalog.changed("disk.img"))
        source = self.catalog.get("disk.img").open()
        self.addCleanup(source.close)
        first = source.read(0, 1000)
        _write(path + ".new", new)
        os.rename(path + ".new", path)
        # Before the new file is hashed, new requests get nothing (the old
        # inode has no name any more, and the new file is not hashed yet).
        pending = []

        def runner(f, *args):
            pending.append((defer.Deferred(), f, args))
            return pending[-1][0]
        self.catalog.runInThread = runner
        self.assertIsNone(self.catalog.get("disk.img").open())
        self.assertEqual(len(pending), 1, "the request started hashing the new file")
        self.assertIsNone(self.catalog.get("disk.img").open())
        self.assertEqual(len(pending), 1, "a second request hashed it again")
        d, f, args = pending.pop()
        d.callback(f(*args))
        self.assertEqual(first + source.read(1000, len(old)), old)
        self.assertEqual(readAll(self.catalog.get("disk.img").open()), new)

    def test_removed(self):
        """
        If a file is deleted, its entry goes; a source opened before still
        reads it.
        """
        data = b"x" * 5000
        path = os.path.join(self.images, "a.iso")
        _write(path, data)
        self.successResultOf(self.catalog.changed("a.iso"))
        source = self.catalog.get("a.iso").open()
        self.addCleanup(source.close)
        os.unlink(path)
        self.catalog.removed("a.iso")
        self.assertIsNone(self.catalog.get("a.iso"))
        self.assertEqual(readAll(source), data)
        self.assertEqual(loadState(os.path.join(self.state, STATE_FILE)), {})

    def test_removedDirectory(self):
        """
        If a directory goes, every entry below it goes.
        """
        _write(os.path.join(self.images, "d", "a"), b"1")
        _write(os.path.join(self.images, "d", "b"), b"2")
        _write(os.path.join(self.images, "dd"), b"3")
        self.successResultOf(self.catalog.rescan())
        self.catalog.removed("d")
        self.assertEqual([e.name for e in self.catalog], ["dd"])

    def test_restoreWithoutRehash(self):
        """
        If the catalogue was persisted and the files are unchanged (inode,
        size, mtime), a new catalogue takes them back without hashing; a
        changed file is hashed again.
        """
        _write(os.path.join(self.images, "a.iso"), b"a" * 100)
        _write(os.path.join(self.images, "b.iso"), b"b" * 100)
        self.successResultOf(self.catalog.rescan())
        self.assertEqual(self.catalog.hashCount, 2)
        self.successResultOf(self.catalog.stop())
        _write(os.path.join(self.images, "b.iso"), b"B" * 101)
        second = self.makeCatalog()
        self.assertEqual(second.restore(), 1)
        self.successResultOf(second.rescan())
        self.assertEqual(second.hashCount, 1)
        self.assertEqual(second.get("a.iso").sha256, hashlib.sha256(b"a" * 100).hexdigest())
        self.assertEqual(second.get("b.iso").size, 101)

    def test_corruptStateIgnored(self):
        """
        If the state file is not a catalogue, it is ignored (everything is
        hashed).
        """
        os.makedirs(self.state)
        with open(os.path.join(self.state, STATE_FILE), "w") as f:
            f.write("{not json")
        self.assertEqual(self.catalog.restore(), 0)
        with open(os.path.join(self.state, STATE_FILE), "w") as f:
            json.dump({"version": 99}, f)
        self.assertEqual(self.catalog.restore(), 0)

    def test_modifiedInPlaceWithdrawn(self):
        """
        If a catalogued file is rewritten in place (its size or mtime no
        longer match), the resolver stops serving it until it is hashed
        again.
        """
        path = os.path.join(self.images, "a.iso")
        _write(path, b"a" * 100)
        self.successResultOf(self.catalog.changed("a.iso"))
        with open(path, "ab") as f:
            f.write(b"more")
        source = self.catalog.resolver.resolve(FileRequest("images/a.iso", ("h", 1)))
        # Withdrawn, then hashed again at once (synchronous runner).
        self.assertIsNone(source)
        self.assertEqual(self.catalog.get("a.iso").size, 104)

    def test_listenersAndGeneration(self):
        """
        If the catalogue changes, listeners are called and the generation
        moves on.
        """
        seen = []
        unsubscribe = self.catalog.subscribe(seen.append)
        before = self.catalog.generation
        _write(os.path.join(self.images, "a.iso"), b"a")
        self.successResultOf(self.catalog.changed("a.iso"))
        self.assertEqual(seen, [self.catalog])
        self.assertGreater(self.catalog.generation, before)
        unsubscribe()
        self.catalog.removed("a.iso")
        self.assertEqual(len(seen), 1)

    def test_staleHashDiscarded(self):
        """
        If the file is removed while its hash is running, the result is
        discarded.
        """
        pending = []

        def runner(f, *args):
            d = defer.Deferred()
            pending.append((d, f, args))
            return d
        self.catalog.runInThread = runner
        path = os.path.join(self.images, "a.iso")
        _write(path, b"a")
        self.catalog.changed("a.iso")
        d, f, args = pending.pop()
        result = f(*args)
        os.unlink(path)
        self.catalog.removed("a.iso")
        d.callback(result)
        self.assertIsNone(self.catalog.get("a.iso"))


class ResolverTests(SynchronousTestCase):
    """
    Tests for L{ImagesResolver}.
    """

    def setUp(self):
        self.images = self.mktemp()
        os.makedirs(self.images)
        self.catalog = Catalog(task.Clock(), self.images, prefix="images")
        self.addCleanup(self.catalog.stop)
        _write(os.path.join(self.images, "k"), b"kernel")
        self.successResultOf(self.catalog.changed("k"))

    def test_interfaces(self):
        """
        The resolver is an L{IFileResolver} and answers L{IDataSource}s.
        """
        verifyObject(IFileResolver, self.catalog.resolver)
        source = self.catalog.resolver.resolve(FileRequest("images/k", ("h", 1)))
        self.addCleanup(source.close)
        verifyObject(IDataSource, source)
        self.assertEqual(source.read(0, 100), b"kernel")
        self.assertEqual(source.sha256, hashlib.sha256(b"kernel").hexdigest())

    def test_onlyCatalogued(self):
        """
        If a file is in the directory but not catalogued, or the path is not
        below the prefix, the resolver passes (L{None}).
        """
        _write(os.path.join(self.images, "new"), b"n")
        resolver = self.catalog.resolver
        self.assertIsNone(resolver.resolve(FileRequest("images/new", ("h", 1))))
        self.assertIsNone(resolver.resolve(FileRequest("k", ("h", 1))))
        self.assertIsNone(resolver.resolve(FileRequest("other/k", ("h", 1))))

    def test_emptyPrefix(self):
        """
        If the prefix is empty, images are served at the top level.
        """
        self.catalog.prefix = ""
        source = ImagesResolver(self.catalog).resolve(FileRequest("k", ("h", 1)))
        self.addCleanup(source.close)
        self.assertEqual(source.size, 6)


class PollingWatcherTests(SynchronousTestCase):
    """
    Tests for L{PollingWatcher}.
    """

    def setUp(self):
        self.root = self.mktemp()
        os.makedirs(self.root)
        self.clock = task.Clock()
        self.events = []
        self.watcher = PollingWatcher(self.clock, self.root,
                                      lambda kind, rel: self.events.append((kind, rel)),
                                      interval=2.0)
        self.watcher.start()
        self.addCleanup(self.watcher.stop)

    def test_completeOnlyWhenStable(self):
        """
        If a file grows between polls it is not reported; once it has stayed
        the same for a whole interval it is reported complete, once.
        """
        path = os.path.join(self.root, "f")
        _write(path, b"a")
        self.clock.advance(2)
        self.assertEqual(self.events, [])
        with open(path, "ab") as f:
            f.write(b"bb")
        self.clock.advance(2)
        self.assertEqual(self.events, [])
        self.clock.advance(2)
        self.assertEqual(self.events, [("complete", "f")])
        self.clock.advance(2)
        self.assertEqual(self.events, [("complete", "f")])

    def test_removed(self):
        """
        If a known file disappears, it is reported removed.
        """
        _write(os.path.join(self.root, "sub", "f"), b"a")
        self.clock.advance(2)
        self.clock.advance(2)
        os.unlink(os.path.join(self.root, "sub", "f"))
        self.clock.advance(2)
        self.assertEqual(self.events, [("complete", "sub/f"), ("removed", "sub/f")])

    def test_snapshotAccept(self):
        """
        If C{accept} refuses a path, the snapshot leaves it (and what is
        below it) out.
        """
        _write(os.path.join(self.root, "a"), b"1")
        _write(os.path.join(self.root, ".git", "x"), b"1")
        self.assertEqual(list(snapshot(self.root, accept=lambda r: not r.startswith("."))),
                         ["a"])


class ServiceTests(SynchronousTestCase):
    """
    Tests for L{ImagesService} with polling on a L{task.Clock}.
    """

    def setUp(self):
        self.root = self.mktemp()
        os.makedirs(self.root)
        self.images = os.path.join(self.root, "img")
        config = loadConfig(overrides=[
            ("images.enabled", True), ("images.directory", self.images),
            ("images.state_dir", os.path.join(self.root, "state")),
            ("images.watch", "poll"), ("images.poll_interval", 1.0)])
        self.clock = task.Clock()
        self.appliance = Appliance(config, self.clock)
        self.service = ImagesService(self.appliance, runInThread=lambda f, *a:
                                     defer.maybeDeferred(f, *a))

    def test_publishesCatalog(self):
        """
        The service publishes its catalogue as C{appliance.catalog} when it
        is built.
        """
        self.assertIs(self.appliance.catalog, self.service.catalog)

    def test_startScansAndPolls(self):
        """
        If files are there at start they are catalogued; files added later
        are catalogued once stable; the service stops cleanly.
        """
        _write(os.path.join(self.images, "a.iso"), b"a")
        self.service.startService()
        self.assertEqual(self.successResultOf(self.service.ready), self.service.catalog)
        self.assertEqual([e.name for e in self.service.catalog], ["a.iso"])
        _write(os.path.join(self.images, "b.efi"), b"b")
        self.clock.advance(1)
        self.clock.advance(1)
        self.assertEqual([e.name for e in self.service.catalog], ["a.iso", "b.efi"])
        self.successResultOf(self.service.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_tftpHook(self):
        """
        If the TFTP service is there, the catalogue's resolver is inserted
        into its chain at start and removed at stop.
        """
        inserted = []

        class FakeTFTP:
            def addResolver(self, resolver, index=None):
                inserted.append((resolver, index))
                return lambda: inserted.remove((resolver, index))
        self.appliance.tftp = FakeTFTP()
        self.service.startService()
        self.assertEqual(inserted, [(self.service.catalog.resolver, 0)])
        self.successResultOf(self.service.stopService())
        self.assertEqual(inserted, [])

    def test_reconfigureNewDirectory(self):
        """
        If a reload names a new directory, a new catalogue of it replaces
        the old one, and resolvers handed out before follow it.
        """
        self.service.startService()
        resolver = self.service.catalog.resolver
        other = os.path.join(self.root, "other")
        _write(os.path.join(other, "x.iso"), b"x")
        config = loadConfig(overrides=[
            ("images.enabled", True), ("images.directory", other),
            ("images.state_dir", os.path.join(self.root, "state")),
            ("images.watch", "poll"), ("images.poll_interval", 1.0)])
        self.service.reconfigure(config)
        self.assertIs(self.appliance.catalog, self.service.catalog)
        self.assertIs(resolver.catalog, self.service.catalog)
        self.assertEqual([e.name for e in self.service.catalog], ["x.iso"])
        self.successResultOf(self.service.stopService())


class SchemaTests(SynchronousTestCase):
    """
    Tests for the C{images} section.
    """

    def test_defaultsOff(self):
        """
        The images service is off by default.
        """
        self.assertFalse(loadConfig()["images"]["enabled"])

    def test_badPrefix(self):
        """
        If the prefix is absolute or climbs out, the error names the key.
        """
        e = self.assertRaises(ConfigError, loadConfig, "p.yaml",
                              text="images:\n  prefix: /abs\n")
        self.assertIn("p.yaml:2: images.prefix", str(e))
        self.assertRaises(ConfigError, loadConfig, "p.yaml", text="images:\n  prefix: a/../b\n")


class FollowSymlinksConfigTests(SynchronousTestCase):
    """
    Tests for C{images.follow_symlinks}.
    """

    def setUp(self):
        self.root = self.mktemp()
        os.makedirs(self.root)
        self.images = os.path.join(self.root, "img")

    def config(self, policy):
        return loadConfig(overrides=[
            ("images.enabled", True), ("images.directory", self.images),
            ("images.state_dir", os.path.join(self.root, "state")),
            ("images.watch", "poll"), ("images.follow_symlinks", policy)])

    def test_default(self):
        """
        Symlinks are followed only inside the directory by default.
        """
        self.assertEqual(loadConfig()["images"]["follow_symlinks"], "inside")

    def test_badValue(self):
        """
        If the value is not one of the choices, the error names the key.
        """
        e = self.assertRaises(ConfigError, loadConfig, "p.yaml",
                              text="images:\n  follow_symlinks: sometimes\n")
        self.assertIn("images.follow_symlinks", str(e))

    def test_serviceAndReload(self):
        """
        The service's catalogue takes the policy; a reload with another
        policy starts a new catalogue with it, which no longer serves a
        symlink the new policy refuses.
        """
        _write(os.path.join(self.images, "a.iso"), b"a")
        os.symlink("a.iso", os.path.join(self.images, "b.iso"))
        appliance = Appliance(self.config("inside"), task.Clock())
        service = ImagesService(appliance, runInThread=lambda f, *a: defer.maybeDeferred(f, *a))
        service.startService()
        self.assertEqual(service.catalog.followSymlinks, "inside")
        self.assertEqual([e.name for e in service.catalog], ["a.iso", "b.iso"])
        service.reconfigure(self.config("never"))
        self.assertEqual(service.catalog.followSymlinks, "never")
        self.assertEqual([e.name for e in service.catalog], ["a.iso"])
        self.assertIsNone(service.catalog.resolver.resolve(FileRequest("images/b.iso",
                                                                       ("h", 1))))
        self.successResultOf(service.stopService())
