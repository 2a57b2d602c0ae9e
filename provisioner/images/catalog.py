# -*- test-case-name: tests.test_images,tests.test_images_hardening -*-
"""
The image catalogue: what the watched directory holds, with sizes, sha256
digests and kinds, and the only way its files are served.

An entry records which file was hashed (device, inode, size, mtime); it
holds no descriptor. A request opens the file (L{Catalog.openSource}) below
the directory with the confinement checked by the kernel
(L{provisioner.confine}), and serves it only if it is still that very file;
the transfer reads its own descriptor and closes it at the end. So:

  - a file still being written is never served: it has no entry until the
    writer closed it (inotify C{IN_CLOSE_WRITE}/C{IN_MOVED_TO}, or a stable
    size when polling), no process holds it open for writing (a read lease
    is taken to check, where the kernel allows it) and it has been hashed;
  - an atomic replacement (write elsewhere, rename over) never corrupts a
    transfer in flight: it keeps reading the inode it opened; new requests
    get nothing until the new file is hashed;
  - a file rewritten in place is withdrawn as soon as its size or mtime no
    longer match the entry;
  - a symlink is served only when it resolves inside the directory (the
    policy C{images.follow_symlinks}); FIFOs, sockets and devices are
    skipped without being opened;
  - however many images there are, the catalogue holds one descriptor (the
    directory's), plus one per transfer in flight.

The catalogue is persisted as JSON in the state directory; after a restart a
file whose inode, size and mtime are unchanged is not hashed again.
"""

import errno
import fnmatch
import os
import stat

from twisted.internet import defer
from twisted.logger import Logger

from provisioner.confine import SYMLINK_POLICIES, ConfinedRoot, NotRegularFile
from provisioner.files import FileSource
from provisioner.images.entry import ImageEntry, classify
from provisioner.images.resolver import ImagesResolver
from provisioner.images.scheduler import HashScheduler
from provisioner.images.state import currentRecords, loadState, statePath, writeState
from provisioner.images.watch import snapshot

__all__ = ["Catalog"]


def _syncRunner(f, *args, **kwargs):
    return defer.maybeDeferred(f, *args, **kwargs)


class Catalog:
    """
    The catalogue of the images directory.

    Changes arrive from a watcher (L{changed}, L{removed}, L{rescan}); a
    changed file is hashed by C{runInThread} (when, and again after what,
    is the L{HashScheduler}'s business) and installed only when the digest
    was taken from a complete, unchanged file.

    @ivar entries: C{{name: ImageEntry}}.
    @ivar generation: incremented on every change (cache keys).
    @ivar hashCount: how many files were hashed (not restored) so far.
    @ivar resolver: an L{ImagesResolver} serving the catalogue under
        C{prefix}.
    @ivar followSymlinks: the symlink policy (C{"inside"}, C{"never"},
        C{"always"}: L{provisioner.confine}).
    """

    log = Logger()

    def __init__(self, clock, directory, stateDir=None, prefix="images", ignore=(),
                 kinds=None, runInThread=_syncRunner, retryDelay=1.0, saveDelay=0,
                 followSymlinks="inside"):
        if followSymlinks not in SYMLINK_POLICIES:
            raise ValueError("followSymlinks must be one of %r" % (SYMLINK_POLICIES,))
        self.clock = clock
        self.directory = os.path.abspath(directory)
        self.followSymlinks = followSymlinks
        self._root = None
        self._oldRoots = []
        self.stateDir = stateDir
        self.prefix = prefix
        self.ignore = list(ignore)
        self.kinds = dict(kinds or {})
        self.runInThread = runInThread
        self.retryDelay = retryDelay
        self.saveDelay = saveDelay
        self._saveCall = None
        self.entries = {}
        self.generation = 0
        self.hashCount = 0
        self.resolver = ImagesResolver(self)
        self._listeners = []
        self._scheduler = HashScheduler(self)

    # Reading.

    def get(self, name):
        """
        Return the L{ImageEntry} called C{name}, or L{None}.
        """
        return self.entries.get(name)

    def __iter__(self):
        return iter([self.entries[k] for k in sorted(self.entries)])

    def __len__(self):
        return len(self.entries)

    def asList(self):
        """
        The catalogue as a list of plain dicts, sorted by name.
        """
        return [e.asDict() for e in self]

    def accept(self, relpath):
        """
        Whether a path below the directory is catalogued at all (not hidden,
        not temporary).
        """
        for part in relpath.split(os.sep):
            for pattern in self.ignore:
                if fnmatch.fnmatchcase(part, pattern):
                    return False
        return True

    def confined(self):
        """
        The directory as a L{ConfinedRoot} (one descriptor, opened at first
        use and kept until L{stop}).

        @raise OSError: it cannot be opened (missing).
        """
        if self._root is None:
            self._root = ConfinedRoot(self.directory, self.followSymlinks)
        return self._root

    def _reopenIfReplaced(self):
        """
        If the directory was replaced (removed and made again, or another
        renamed to its name), open the new one; the old descriptor is kept
        until L{stop}, as hashing threads may still use it.
        """
        if self._root is None:
            return
        try:
            now = os.stat(self.directory)
            held = os.fstat(self._root.fileno())
        except OSError:
            return
        if (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
            self.log.info("image directory {directory} was replaced; reading the new one",
                          directory=self.directory)
            self._oldRoots.append(self._root)
            self._root = None

    def openVerified(self, entry):
        """
        Open C{entry}'s file for reading if it is still exactly the file
        that was hashed, else react (a replaced file is hashed again, a
        file modified in place withdrawn, a vanished or refused one
        removed) and return L{None}.

        @return: a descriptor the caller closes, or L{None}.
        """
        name = entry.name
        try:
            fd, st = self.confined().openRegular(name)
        except OSError as e:
            self._cannotOpen(name, e)
            return None
        if entry.matches(st):
            return fd
        os.close(fd)
        if (st.st_ino, st.st_dev) == (entry.inode, entry.device):
            self.withdraw(name)
        elif self.entries.get(name) is entry and not self._scheduler.pending(name):
            # Replaced (renamed over): the new file is served once hashed;
            # the watcher's event normally started that already.
            self.log.info("image {name} was replaced; served again once hashed",
                          name=name)
            self.changed(name)
        return None

    def _cannotOpen(self, name, error):
        if isinstance(error, NotRegularFile) or error.errno in (
                errno.ENOENT, errno.ENOTDIR, errno.EXDEV, errno.ELOOP):
            if name in self.entries:
                self._refused(name, error)
                self.removed(name)
        elif error.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
            self.log.warn("image {name} cannot be opened: {error}", name=name,
                          error=error.strerror or str(error))

    def _refused(self, name, error):
        """
        Say why C{name} is not catalogued (nothing for a file that is gone).
        """
        if isinstance(error, NotRegularFile):
            self.log.info("image {name} skipped: {why}", name=name, why=error.strerror)
        elif error.errno == errno.EXDEV:
            self.log.warn("image {name} refused: it leads outside {directory} "
                          "(images.follow_symlinks: {policy})", name=name,
                          directory=self.directory, policy=self.followSymlinks)
        elif error.errno == errno.ELOOP:
            self.log.warn("image {name} refused: a symlink (images.follow_symlinks: "
                          "{policy}) or a symlink loop", name=name,
                          policy=self.followSymlinks)

    def openSource(self, name):
        """
        Open the image C{name} for one transfer.

        @return: an L{IDataSource} of exactly the catalogued content (with
            C{sha256} and C{mtime} for HTTP), whose C{close} closes the
            file; or L{None} when C{name} is not catalogued or its file no
            longer has that content.
        """
        entry = self.entries.get(name)
        if entry is None:
            return None
        fd = self.openVerified(entry)
        if fd is None:
            return None
        source = FileSource(fd, entry.size, name)
        source.sha256 = entry.sha256  # HTTP: ETag
        source.mtime = entry.mtime  # HTTP: Last-Modified
        return source

    def subscribe(self, listener):
        """
        Call C{listener(catalog)} after every change.

        @return: a callable that unsubscribes it.
        """
        self._listeners.append(listener)

        def unsubscribe():
            if listener in self._listeners:
                self._listeners.remove(listener)
        return unsubscribe

    def _changedNotify(self):
        self.generation += 1
        for listener in list(self._listeners):
            try:
                listener(self)
            except Exception:
                self.log.failure("catalogue listener failed")

    # Persistence.

    @property
    def statePath(self):
        """
        The state file in C{stateDir}, or L{None} when nothing is persisted.
        """
        return statePath(self.stateDir)

    def restore(self):
        """
        Take back the persisted entries whose file is unchanged (same inode,
        size and mtime), without hashing them.

        @return: the number of entries restored.
        """
        path = self.statePath
        if path is None:
            return 0
        records = loadState(path)
        try:
            root = self.confined()
        except OSError:
            return 0
        restored = 0
        for name, record, st in currentRecords(records, root, self.accept, self.entries):
            self.entries[name] = ImageEntry(
                name, st.st_size, record["sha256"], st.st_mtime_ns, st.st_ino, st.st_dev,
                classify(name, self.kinds), self)
            restored += 1
        if restored:
            self._changedNotify()
        return restored

    def _scheduleSave(self):
        """
        Save now, or (with C{saveDelay}) once after a burst of changes, so
        a directory of many new files is not rewritten once per file.
        """
        if not self.saveDelay:
            return self.save()
        if self._saveCall is None or not self._saveCall.active():
            self._saveCall = self.clock.callLater(self.saveDelay, self.save)

    def save(self):
        """
        Write the catalogue to the state directory (atomically).
        """
        if self._saveCall is not None and self._saveCall.active():
            self._saveCall.cancel()
        self._saveCall = None
        path = self.statePath
        if path is None:
            return
        try:
            writeState(self.stateDir, self.directory, self)
        except OSError as e:
            self.log.error("cannot save the image catalogue to {path}: {error}",
                           path=path, error=e.strerror or str(e))

    # Changes.

    def rescan(self, under=""):
        """
        Compare the directory (or the file or subdirectory C{under}) with
        the catalogue: hash what is new or different, drop what is gone.
        Nothing is opened to look: symlinks are looked at through the
        policy, FIFOs and devices are skipped.

        @return: a Deferred that fires when the hashes it started are done.
        """
        name = under.replace(os.sep, "/")
        if not under:
            self._reopenIfReplaced()
        try:
            root = self.confined()
        except OSError as e:
            self.log.warn("cannot read the image directory {directory}: {error}",
                          directory=self.directory, error=e.strerror or str(e))
            root = None
        if root is not None and under:
            done = self._rescanPath(root, under, name)
            if done is not None:
                return done
        if root is None:
            found = {}
        else:
            path = os.path.join(self.directory, under) if under else self.directory
            found = snapshot(path, True, self.accept,
                             lambda rel: root.stat(os.path.join(under, rel)))
        if under:
            found = {os.path.join(under, k): v for k, v in found.items()}
        return self._reconcile(under, name, found)

    def _rescanPath(self, root, under, name):
        """
        The first step of L{rescan} below C{under}: look at that path
        itself. A regular file is hashed unless it is the catalogued one;
        a path that is gone, refused, not a directory or a symlinked
        directory is dropped.

        @return: a Deferred when that was all, or L{None} when C{under} is
            a directory to walk.
        """
        try:
            st = root.stat(under)
            isLink = stat.S_ISLNK(os.lstat(os.path.join(self.directory, under)).st_mode)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENOTDIR):
                self._refused(name, e)
            self.removed(name)
            return defer.succeed(None)
        if stat.S_ISREG(st.st_mode):
            entry = self.entries.get(name)
            if entry is not None and entry.matches(st):
                return defer.succeed(None)
            return self.changed(under)
        if not stat.S_ISDIR(st.st_mode) or isLink:
            # A FIFO, a device, or a symlinked directory (not entered).
            self.removed(name)
            return defer.succeed(None)
        return None

    def _reconcile(self, under, name, found):
        """
        The last step of L{rescan}: drop the entries below C{under} that
        are not in C{found} (C{{relpath: signature}}, from
        L{provisioner.images.watch.snapshot}) and hash the files of
        C{found} that are new or different and not being hashed already.

        @return: a Deferred that fires when those hashes are done.
        """
        waits = []
        prefix = name + "/"
        for known in list(self.entries):
            if (not under or known == name or known.startswith(prefix)) and \
                    known.replace("/", os.sep) not in found:
                self.removed(known)
        for rel, sig in sorted(found.items()):
            entry = self.entries.get(rel.replace(os.sep, "/"))
            if entry is not None and entry.signature() == sig:
                continue
            if self._scheduler.busy(rel.replace(os.sep, "/")):
                continue
            waits.append(self.changed(rel))
        return defer.DeferredList(waits, consumeErrors=True)

    def changed(self, name):
        """
        A file was written or moved in: hash it and, when it is complete,
        install or replace its entry.

        @return: a Deferred firing when this is done (with L{None}).
        """
        name = name.replace(os.sep, "/")
        if not name or not self.accept(name):
            return defer.succeed(None)
        return self._scheduler.hash(name)

    def _install(self, name, st, digest):
        """
        C{name} was hashed, complete and unchanged (C{st} its stat result):
        install or replace its entry.
        """
        self.hashCount += 1
        self.entries[name] = ImageEntry(name, st.st_size, digest, st.st_mtime_ns, st.st_ino,
                                        st.st_dev, classify(name, self.kinds), self)
        self.log.info("image {name} catalogued: {size} bytes, {kind}, sha256 {sha256}",
                      name=name, size=st.st_size, kind=self.entries[name].kind,
                      sha256=digest)
        self._scheduleSave()
        self._changedNotify()

    def _unreadable(self, failure, name):
        """
        Hashing C{name} failed, not because it is being written: drop it
        if it is gone or refused, else say why.
        """
        if failure.check(NotRegularFile):
            self._refused(name, failure.value)
            self.removed(name)
            return None
        if failure.check(OSError):
            e = failure.value
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                self.removed(name)
                return None
            if e.errno in (errno.EXDEV, errno.ELOOP):
                self._refused(name, e)
                self.removed(name)
                return None
            self.log.warn("image {name} cannot be read: {error}", name=name,
                          error=e.strerror or str(e))
            return None
        self.log.failure("hashing image {name} failed", failure, name=name)
        return None

    def removed(self, name):
        """
        A file or directory was deleted or moved away: drop its entries.
        Transfers in flight keep their own descriptors.
        """
        name = name.replace(os.sep, "/")
        if name in self.entries:
            gone = [name]  # a file: its entries cannot be below it too
        else:
            prefix = name + "/"
            gone = [n for n in self.entries if not name or n.startswith(prefix)]
            self._scheduler.forgetBelow(name)
        self._scheduler.forget(name)
        if not gone:
            return
        for n in gone:
            del self.entries[n]
            self.log.info("image {name} removed from the catalogue", name=n)
        self._scheduleSave()
        self._changedNotify()

    def withdraw(self, name):
        """
        An entry's file was modified in place: stop serving it and hash it
        again.
        """
        entry = self.entries.pop(name, None)
        if entry is None:
            return
        self.log.warn("image {name} was modified in place; withdrawn until it is hashed "
                      "again (replace images by renaming a complete file over them)",
                      name=name)
        self._changedNotify()
        self.changed(name)

    def stop(self):
        """
        Cancel hashing and release every descriptor.

        @return: a Deferred firing when running hashes have ended.
        """
        d = self._scheduler.stop()

        def close(_):
            if self._saveCall is not None and self._saveCall.active():
                self.save()
            roots, self._root, self._oldRoots = [self._root] + self._oldRoots, None, []
            for root in roots:
                if root is not None:
                    root.close()
        return d.addCallback(close)
