# -*- test-case-name: tests.test_images_hardening,tests.test_images -*-
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
(L{provisioner.images.digest} takes a read lease).
"""

import ctypes
import errno
import os
import stat
import struct

from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from zope.interface import implementer

__all__ = ["makeWatcher", "INotifyWatcher", "PollingWatcher", "RawINotify",
           "inotifyAvailable", "snapshot"]

# linux/inotify.h
IN_ACCESS = 0x00000001
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_CLOSE_NOWRITE = 0x00000010
IN_OPEN = 0x00000020
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = getattr(os, "O_CLOEXEC", 0o2000000)

# struct inotify_event {int wd; uint32_t mask, cookie, len; char name[len];}
_EVENT = struct.Struct("=iIII")

_libc = None


def _inotifyLibc():
    """
    The C library's inotify functions through C{ctypes}, set up once.

    @raise OSError: there is no C library or it has no inotify.
    """
    global _libc
    if _libc is None:
        from provisioner.net.sockopt import libc
        lib = libc()
        if lib is None or not hasattr(lib, "inotify_init1"):
            raise OSError(errno.ENOSYS, "no inotify in the C library")

        class _Functions:
            pass
        functions = _Functions()
        for name, argtypes in (("inotify_init1", [ctypes.c_int]),
                               ("inotify_add_watch", [ctypes.c_int, ctypes.c_char_p,
                                                      ctypes.c_uint32]),
                               ("inotify_rm_watch", [ctypes.c_int, ctypes.c_int])):
            function = lib[name]  # a private function object: own prototypes
            function.argtypes = argtypes
            function.restype = ctypes.c_int
            setattr(functions, name, function)
        _libc = functions
    return _libc


def inotifyAvailable():
    """
    Whether inotify works here.
    """
    try:
        lib = _inotifyLibc()
    except OSError:
        return False
    fd = lib.inotify_init1(_IN_CLOEXEC)
    if fd < 0:
        return False
    os.close(fd)
    return True


def snapshot(root, recursive=True, accept=None, statSymlink=None):
    """
    Return C{{relpath: (inode, size, mtime_ns)}} of the regular files below
    C{root} (FIFOs, sockets and devices are left out: nothing is opened).
    Unreadable entries are skipped; symlinked directories are not entered.

    @param accept: C{accept(relpath)} returning whether to include a path
        (directories are pruned with it too); L{None} takes everything.
    @param statSymlink: C{statSymlink(relpath)} returning the C{stat} of
        what a symlink leads to, or raising L{OSError} to leave it out (a
        symlink policy: L{provisioner.confine.ConfinedRoot.stat}); L{None}
        follows every symlink.
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
                    if statSymlink is not None and entry.is_symlink():
                        st = statSymlink(name)
                    else:
                        st = entry.stat(follow_symlinks=True)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
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


@implementer(IReadDescriptor)
class RawINotify:
    """
    An inotify descriptor read by the reactor that hands on every event of
    the raw stream, the queue overflow (C{IN_Q_OVERFLOW}, watch descriptor
    -1) and C{IN_IGNORED} included. (C{twisted.internet.inotify.INotify}
    drops events whose watch descriptor it does not know, the overflow
    among them, and closes itself when any watched directory is deleted.)

    @ivar callback: C{callback(wd, mask, cookie, name)} for each event, on
        the reactor thread; C{name} is C{bytes} (C{b""} when none).
    """

    #: bytes read at most per L{doRead}, so that a flood of events does not
    #: hold the reactor
    readBudget = 1 << 20

    def __init__(self, reactor, callback):
        self.reactor = reactor
        self.callback = callback
        self._fd = -1
        self._buffer = b""

    def start(self):
        """
        Create the descriptor and have the reactor read it.

        @raise OSError: inotify is not available or the limit of instances
            is reached.
        """
        lib = _inotifyLibc()
        fd = lib.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, "inotify_init1: " + os.strerror(code))
        self._fd = fd
        self.reactor.addReader(self)

    def addWatch(self, path, mask):
        """
        Watch C{path}; return its watch descriptor (the same one when the
        inode is already watched).

        @raise OSError: as C{inotify_add_watch(2)} (C{ENOSPC}: the limit of
            watches).
        """
        wd = _inotifyLibc().inotify_add_watch(self._fd, os.fsencode(path), mask)
        if wd < 0:
            code = ctypes.get_errno()
            raise OSError(code, "inotify_add_watch: " + os.strerror(code), path)
        return wd

    def removeWatch(self, wd):
        """
        Stop watching C{wd} (an C{IN_IGNORED} event follows); a watch that is
        already gone is ignored.
        """
        if self._fd >= 0:
            _inotifyLibc().inotify_rm_watch(self._fd, wd)

    def stop(self):
        """
        Stop reading and close the descriptor (every watch goes with it).
        """
        if self._fd >= 0:
            self.reactor.removeReader(self)
            fd, self._fd = self._fd, -1
            os.close(fd)

    # IReadDescriptor

    def fileno(self):
        return self._fd

    def logPrefix(self):
        return "inotify"

    def connectionLost(self, reason):
        self.stop()

    def doRead(self):
        """
        Read what the kernel has queued (up to L{readBudget}) and hand on
        each complete event.
        """
        got = 0
        while got < self.readBudget and self._fd >= 0:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return None
            except InterruptedError:
                continue
            if not data:
                return None
            got += len(data)
            self.dataReceived(data)
        return None

    def dataReceived(self, data):
        """
        Parse raw C{struct inotify_event}s and call L{callback} for each
        (a partial event at the end waits for the next read).
        """
        buf = self._buffer + data if self._buffer else data
        offset, end = 0, len(buf)
        while end - offset >= _EVENT.size:
            wd, mask, cookie, length = _EVENT.unpack_from(buf, offset)
            if end - offset < _EVENT.size + length:
                break
            start = offset + _EVENT.size
            name = bytes(buf[start:start + length]).rstrip(b"\0")
            offset = start + length
            self.callback(wd, mask, cookie, name)
        self._buffer = bytes(buf[offset:])


class INotifyWatcher:
    """
    inotify on the directory, recursively when asked (subdirectories created
    or moved in are watched too; symlinked directories are not). The raw
    event stream is read (L{RawINotify}), so a queue overflow is seen: it is
    logged and reported as C{"rescan"} of everything.
    """

    log = Logger()

    MASK = (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE |
            IN_DELETE_SELF | IN_MOVE_SELF | IN_ATTRIB | IN_ONLYDIR | IN_DONT_FOLLOW |
            IN_EXCL_UNLINK)

    def __init__(self, reactor, root, callback, recursive=True, accept=None):
        self.reactor = reactor
        self.root = root
        self.callback = callback
        self.recursive = recursive
        self.accept = accept
        self._reader = None
        self._paths = {}  # wd -> relative path of the directory ("" the root)
        self._wds = {}  # relative path -> wd
        self._watchLimitLogged = False

    def start(self):
        """
        Watch the directory (and, recursively, its subdirectories).

        @raise OSError: the directory cannot be watched (no inotify, limits,
            a file system without it); the caller may poll instead.
        """
        self._reader = RawINotify(self.reactor, self._event)
        self._reader.start()
        try:
            self._addWatch("")
        except OSError:
            self.stop()
            raise
        if self.recursive:
            self._watchTree("")

    def stop(self):
        if self._reader is not None:
            self._reader.stop()
            self._reader = None
        self._paths.clear()
        self._wds.clear()

    def wdFor(self, rel):
        """
        The watch descriptor of the directory C{rel} (C{""}: the root), or
        L{None}.
        """
        return self._wds.get(rel)

    def _addWatch(self, rel):
        path = os.path.join(self.root, rel) if rel else self.root
        wd = self._reader.addWatch(path, self.MASK)
        old = self._paths.get(wd)
        if old is not None and old != rel:
            self._wds.pop(old, None)  # the same directory, renamed
        self._paths[wd] = rel
        self._wds[rel] = wd
        return wd

    def _watchTree(self, rel):
        """
        Watch every directory below C{rel} (not through symlinks), skipping
        those C{accept} refuses.
        """
        stack = [rel]
        while stack:
            here = stack.pop()
            full = os.path.join(self.root, here) if here else self.root
            try:
                it = os.scandir(full)
            except OSError:
                continue
            with it:
                for entry in it:
                    try:
                        isDir = entry.is_dir(follow_symlinks=False)
                    except OSError:
                        continue
                    if not isDir:
                        continue
                    sub = os.path.join(here, entry.name) if here else entry.name
                    if self.accept is not None and not self.accept(sub):
                        continue
                    try:
                        self._addWatch(sub)
                    except OSError as e:
                        if e.errno in (errno.ENOENT, errno.ENOTDIR):
                            continue
                        if not self._watchLimitLogged:
                            self._watchLimitLogged = True
                            self.log.warn(
                                "cannot watch {path} with inotify ({error}); changes "
                                "below it are seen by the periodic rescan only",
                                path=os.path.join(self.root, sub),
                                error=e.strerror or str(e))
                        continue
                    stack.append(sub)

    def _forget(self, rel, remove):
        """
        Drop the watches of C{rel} and below (a directory deleted or moved
        away), removing them from the kernel when C{remove}.
        """
        prefix = rel + os.sep
        for path in [p for p in self._wds if p == rel or p.startswith(prefix)]:
            wd = self._wds.pop(path)
            self._paths.pop(wd, None)
            if remove and self._reader is not None:
                self._reader.removeWatch(wd)

    def _event(self, wd, mask, cookie, name):
        try:
            self._dispatch(wd, mask, name)
        except Exception:
            self.log.failure("inotify event {mask:#x} for {name!r} failed", mask=mask,
                             name=name)

    def _dispatch(self, wd, mask, name):
        if mask & IN_Q_OVERFLOW:
            self.log.warn("inotify queue overflow below {root} (events were lost): "
                          "rescanning it all", root=self.root)
            if self.recursive and self._reader is not None:
                self._watchTree("")  # directories created meanwhile
            self.callback("rescan", "")
            return
        if mask & IN_IGNORED:
            rel = self._paths.pop(wd, None)
            if rel is not None and self._wds.get(rel) == wd:
                del self._wds[rel]
            return
        here = self._paths.get(wd)
        if here is None:
            return  # a watch already forgotten
        name = os.fsdecode(name)
        rel = os.path.join(here, name) if here and name else (name or here)
        if mask & (IN_DELETE_SELF | IN_MOVE_SELF):
            if here == "" and not name:
                self.log.warn("watched directory {root} was removed or moved", root=self.root)
                self.callback("removed", "")
            return  # below the root: the parent's event said it
        if rel and self.accept is not None and not self.accept(rel):
            return
        isDir = bool(mask & IN_ISDIR)
        if mask & (IN_DELETE | IN_MOVED_FROM):
            if isDir:
                self._forget(rel, remove=bool(mask & IN_MOVED_FROM))
            self.callback("removed", rel)
            return
        if isDir:
            if mask & (IN_CREATE | IN_MOVED_TO):
                # A directory created or moved in may already hold files:
                # watch it, then look.
                if self.recursive:
                    try:
                        self._addWatch(rel)
                    except OSError:
                        pass
                    else:
                        self._watchTree(rel)
                self.callback("rescan", rel)
            return
        if mask & (IN_CLOSE_WRITE | IN_MOVED_TO):
            self.callback("complete", rel)
        elif mask & IN_CREATE:
            # A symlink is complete as soon as it exists (nothing writes it).
            try:
                st = os.lstat(os.path.join(self.root, rel))
            except OSError:
                return
            if stat.S_ISLNK(st.st_mode):
                self.callback("complete", rel)
        elif mask & IN_ATTRIB:
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
