# -*- test-case-name: tests.test_images_watch -*-
"""
Watching a directory (or one file in it) for changes: inotify where the
platform has it, polling elsewhere.

A watcher reports C{callback(kind, relpath)} on the reactor thread:

  - C{"complete"}: a file was closed after writing, or moved in (inotify
    C{IN_CLOSE_WRITE}, C{IN_MOVED_TO}); when polling, a new or changed file
    whose size and mtime stayed the same for one whole interval.
  - C{"removed"}: a file or directory was deleted or moved away.
  - C{"rescan"}: the watcher may have missed events (queue overflow, a
    directory moved in, start-up); the caller should look at C{relpath}
    (C{""} means everything) again.

Neither kind means the file is finished for certain (a writer may close and
reopen); callers that must not act on half-written files check again
(L{provisioner.images.catalog} takes a read lease).
"""

import os

from twisted.logger import Logger
from twisted.python.filepath import FilePath

__all__ = ["makeWatcher", "INotifyWatcher", "PollingWatcher", "inotifyAvailable",
           "snapshot"]


def inotifyAvailable():
    """
    Whether C{twisted.internet.inotify} works here.
    """
    try:
        from twisted.python import _inotify
        fd = _inotify.init()
    except Exception:
        return False
    os.close(fd)
    return True


def snapshot(root, recursive=True, accept=None):
    """
    Return C{{relpath: (inode, size, mtime_ns)}} of the regular files below
    C{root}. Unreadable entries are skipped.

    @param accept: C{accept(relpath)} returning whether to include a path
        (directories are pruned with it too); L{None} takes everything.
    """
    out = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        full = os.path.join(root, rel) if rel else root
        try:
            it = os.scandir(full)
        except OSError:
            continue
        with it:
            for entry in it:
                name = os.path.join(rel, entry.name) if rel else entry.name
                if accept is not None and not accept(name):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if recursive:
                            stack.append(name)
                        continue
                    st = entry.stat(follow_symlinks=True)
                except OSError:
                    continue
                if entry.is_file(follow_symlinks=True):
                    out[name] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


class PollingWatcher:
    """
    Compares snapshots of the directory every C{interval} seconds.

    @ivar clock: the L{IReactorTime} the scans are scheduled on.
    """

    log = Logger()

    def __init__(self, clock, root, callback, interval=2.0, recursive=True, accept=None):
        self.clock = clock
        self.root = root
        self.callback = callback
        self.interval = interval
        self.recursive = recursive
        self.accept = accept
        self._known = {}
        self._pending = {}
        self._call = None

    def start(self):
        """
        Take the first snapshot (reported as nothing: the caller scans itself)
        and start polling.
        """
        self._known = snapshot(self.root, self.recursive, self.accept)
        self._pending = {}
        self._schedule()

    def stop(self):
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _schedule(self):
        self._call = self.clock.callLater(self.interval, self._tick)

    def _tick(self):
        self._call = None
        try:
            self.poll()
        except Exception:
            self.log.failure("polling {root} failed", root=self.root)
        self._schedule()

    def poll(self):
        """
        Compare the directory with the last look and report what changed.
        """
        now = snapshot(self.root, self.recursive, self.accept)
        for name in sorted(set(self._known) - set(now)):
            self._pending.pop(name, None)
            self.callback("removed", name)
        for name, sig in sorted(now.items()):
            if self._known.get(name) == sig:
                continue
            # New or changed: report once it has stayed the same for one
            # whole interval.
            if self._pending.get(name) == sig:
                self._pending.pop(name)
                self._known[name] = sig
                self.callback("complete", name)
            else:
                self._pending[name] = sig
        for name in list(self._known):
            if name not in now:
                del self._known[name]
        for name in list(self._pending):
            if name not in now:
                del self._pending[name]


class INotifyWatcher:
    """
    C{twisted.internet.inotify} on the directory, recursively when asked
    (new subdirectories are added automatically).
    """

    log = Logger()

    def __init__(self, reactor, root, callback, recursive=True, accept=None):
        self.reactor = reactor
        self.root = root
        self.callback = callback
        self.recursive = recursive
        self.accept = accept
        self._notifier = None

    def start(self):
        from twisted.internet import inotify
        self._inotify = inotify
        self._notifier = inotify.INotify(reactor=self.reactor)
        self._notifier.startReading()
        mask = (inotify.IN_CLOSE_WRITE | inotify.IN_MOVED_TO | inotify.IN_MOVED_FROM |
                inotify.IN_DELETE | inotify.IN_CREATE | inotify.IN_DELETE_SELF |
                inotify.IN_MOVE_SELF | inotify.IN_ATTRIB)
        self._notifier.watch(FilePath(self.root), mask=mask, autoAdd=self.recursive,
                             recursive=self.recursive, callbacks=[self._event])

    def stop(self):
        if self._notifier is not None:
            self._notifier.connectionLost(None)
            self._notifier = None

    def _relative(self, filepath):
        path = filepath.path
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        rel = os.path.relpath(path, self.root)
        return "" if rel == "." else rel

    def _event(self, ignored, filepath, mask):
        try:
            self._dispatch(filepath, mask)
        except Exception:
            self.log.failure("inotify event for {path} failed", path=filepath)

    def _dispatch(self, filepath, mask):
        ino = self._inotify
        if mask & ino.IN_Q_OVERFLOW:
            self.log.warn("inotify queue overflow below {root}: rescanning", root=self.root)
            self.callback("rescan", "")
            return
        rel = self._relative(filepath)
        if rel.startswith(".."):
            return
        if rel and self.accept is not None and not self.accept(rel):
            return
        isDir = bool(mask & ino.IN_ISDIR)
        if mask & (ino.IN_DELETE_SELF | ino.IN_MOVE_SELF):
            if rel == "":
                self.log.warn("watched directory {root} was removed or moved", root=self.root)
            self.callback("removed", rel)
            return
        if mask & (ino.IN_DELETE | ino.IN_MOVED_FROM):
            self.callback("removed", rel)
            return
        if isDir:
            if mask & (ino.IN_CREATE | ino.IN_MOVED_TO):
                # A directory created or moved in may already hold files.
                self.callback("rescan", rel)
            return
        if mask & (ino.IN_CLOSE_WRITE | ino.IN_MOVED_TO):
            self.callback("complete", rel)
        elif mask & ino.IN_ATTRIB:
            # touch, chmod: let the caller compare what it holds.
            self.callback("rescan", rel)


def makeWatcher(reactor, root, callback, mode="auto", interval=2.0, recursive=True,
                accept=None):
    """
    Build a watcher for C{root}.

    @param mode: C{"inotify"}, C{"poll"} or C{"auto"} (inotify when
        available, else polling).
    @return: an L{INotifyWatcher} or a L{PollingWatcher} (not started).
    """
    if mode == "auto":
        mode = "inotify" if inotifyAvailable() else "poll"
    if mode == "inotify":
        return INotifyWatcher(reactor, root, callback, recursive=recursive, accept=accept)
    return PollingWatcher(reactor, root, callback, interval=interval, recursive=recursive,
                          accept=accept)
