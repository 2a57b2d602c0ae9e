# -*- test-case-name: tests.test_confine -*-
"""
Opening files below a directory, with the confinement checked by the kernel
at open time (not a C{realpath} check followed by an C{open} that follows
symlinks again).

    root = ConfinedRoot("/srv/images")           # holds one O_PATH descriptor
    fd, st = root.openRegular("debian/linux")     # a regular file, or an error
    ...
    root.close()

Paths are relative to the root. A path that is absolute, climbs above the
root with C{..}, or meets a symlink leading outside it fails with C{EXDEV};
a symlink refused by the policy (C{"never"}) or a "magic link" of C{/proc}
fails with C{ELOOP} (the walk below may report C{EXDEV} or C{ENOENT} for a
magic link instead: it reads the link's text and never jumps through it).

Where the kernel has C{openat2} (Linux 5.6) the resolution is done by it
with C{RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS} (plus C{RESOLVE_NO_SYMLINKS}
for the policy C{"never"}), relative to the root descriptor. Elsewhere
(C{ENOSYS}) the path is walked one component at a time with C{openat} and
C{O_NOFOLLOW}; each symlink met is read and its target walked the same way,
so nothing is ever resolved outside the root.

Symlink policies (the C{symlinks} argument):

  - C{"inside"} (default): symlinks are followed while they stay below the
    root;
  - C{"never"}: any symlink in the path is refused;
  - C{"always"}: symlinks are followed wherever they lead (the path itself
    must still be relative and may not climb above the root); only for
    operators who link to other file systems on purpose.

L{ConfinedRoot.openRegular} is what a server of files wants: it looks at the
file through an C{O_PATH} descriptor first (which opens nothing: a FIFO or a
device is never opened, so never blocks and never has side effects), then
opens it with C{O_NONBLOCK} and checks with C{fstat} that it is still the
same regular file.

This module is blocking but cheap (a few system calls); it is safe to call
from any thread, as long as the L{ConfinedRoot} is not closed meanwhile.
"""

import ctypes
import errno
import os
import platform
import stat
import sys

__all__ = ["ConfinedRoot", "openBeneath", "NotRegularFile", "openat2Available",
           "SYMLINK_POLICIES"]

#: the values of the C{symlinks} argument
SYMLINK_POLICIES = ("inside", "never", "always")

# linux/openat2.h
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08

_O_PATH = getattr(os, "O_PATH", 0o10000000)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_MAXSYMLINKS = 40
_EAGAIN_TRIES = 8

# openat2 has the same number everywhere the unified syscall table is used.
_SYSCALL_OPENAT2 = {"x86_64": 437, "amd64": 437, "aarch64": 437, "arm64": 437,
                    "i386": 437, "i686": 437, "armv7l": 437, "armv6l": 437,
                    "riscv64": 437, "ppc64le": 437, "ppc64": 437, "s390x": 437,
                    "loongarch64": 437}

# None: not tried yet; False: not available (ENOSYS, not Linux, no libc).
_openat2Works = None


class NotRegularFile(OSError):
    """
    The path names something other than a regular file (a directory, FIFO,
    socket or device); it was not opened.

    @ivar mode: its C{st_mode}.
    """

    def __init__(self, path, mode):
        OSError.__init__(self, errno.EINVAL, "not a regular file (%s)" % (_kind(mode),),
                         path)
        self.mode = mode


def _kind(mode):
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISLNK, "symlink")):
        if test(mode):
            return name
    return "special file"


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def _syscallOpenat2():
    """
    Return C{(syscall function, number)}, or L{None} where there is none.
    """
    if not sys.platform.startswith("linux"):
        return None
    number = _SYSCALL_OPENAT2.get(platform.machine().lower())
    if number is None:
        return None
    from provisioner.net.sockopt import libc
    lib = libc()
    if lib is None:
        return None
    try:
        function = lib["syscall"]  # a private function object: own restype
    except AttributeError:
        return None
    function.restype = ctypes.c_long
    return function, number


_syscall = None


def _openat2(dirfd, path, flags, mode, resolve):
    """
    C{openat2(dirfd, path, {flags, mode, resolve})}.

    @raise OSError: with the kernel's errno; C{ENOSYS} where there is no
        C{openat2}.
    """
    global _syscall
    if _syscall is None:
        _syscall = _syscallOpenat2() or False
    if not _syscall:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))
    function, number = _syscall
    how = _OpenHow(flags, mode if flags & os.O_CREAT else 0, resolve)
    fd = function(ctypes.c_long(number), ctypes.c_int(dirfd), ctypes.c_char_p(path),
                  ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), os.fsdecode(path))
    return fd


def openat2Available():
    """
    Whether this kernel has C{openat2} (else L{openBeneath} walks the path).
    """
    global _openat2Works
    if _openat2Works is None:
        try:
            fd = _openat2(-100, b"/", _O_PATH | _O_CLOEXEC, 0, 0)  # AT_FDCWD
        except OSError as e:
            _openat2Works = e.errno != errno.ENOSYS
        else:
            os.close(fd)
            _openat2Works = True
    return _openat2Works


def _checkPath(path):
    """
    Return C{path} as bytes, refusing what no policy allows.

    @raise ValueError: a NUL byte.
    @raise OSError: C{EXDEV} for an absolute path; C{ENOENT} for an empty
        one.
    """
    raw = os.fsencode(path)
    if b"\0" in raw:
        raise ValueError("embedded NUL in path")
    if not raw:
        raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), "")
    if raw.startswith(b"/"):
        raise OSError(errno.EXDEV, "absolute path refused", os.fsdecode(raw))
    return raw


def _lexicallyInside(raw):
    depth = 0
    for part in raw.split(b"/"):
        if part == b"..":
            depth -= 1
            if depth < 0:
                return False
        elif part not in (b"", b"."):
            depth += 1
    return True


def openBeneath(rootFd, relativePath, flags, mode=0o666, symlinks="inside"):
    """
    Open C{relativePath} below the directory C{rootFd}, like
    C{openat(rootFd, relativePath, flags, mode)} but never outside it.

    C{O_CLOEXEC} is always added. Opening a FIFO or a device may block or
    have side effects: pass C{O_NONBLOCK}, or use
    L{ConfinedRoot.openRegular}.

    @param rootFd: a descriptor of the directory (C{O_PATH} is enough).
    @param relativePath: C{str} or C{bytes}, relative to it.
    @param flags: C{os.O_*} flags as for C{os.open} (C{O_PATH}, C{O_CREAT}
        and the rest).
    @param symlinks: C{"inside"}, C{"never"} or C{"always"} (see the module
        docstring).
    @return: the new descriptor; the caller closes it.
    @raise OSError: C{EXDEV} if the path is absolute or leads outside the
        root; C{ELOOP} for a refused symlink or a magic link; otherwise as
        C{open(2)}.
    """
    if symlinks not in SYMLINK_POLICIES:
        raise ValueError("symlinks must be one of %r" % (SYMLINK_POLICIES,))
    raw = _checkPath(relativePath)
    flags |= _O_CLOEXEC
    if symlinks == "always":
        if not _lexicallyInside(raw):
            raise OSError(errno.EXDEV, "path climbs above the root", os.fsdecode(raw))
        resolve = RESOLVE_NO_MAGICLINKS
    else:
        resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS
        if symlinks == "never":
            resolve |= RESOLVE_NO_SYMLINKS
    if _openat2Works is not False:
        for _ in range(_EAGAIN_TRIES):
            try:
                return _openat2(rootFd, raw, flags, mode, resolve)
            except OSError as e:
                if e.errno == errno.ENOSYS:
                    _setUnavailable()
                    break
                if e.errno != errno.EAGAIN or flags & os.O_NONBLOCK:
                    # EAGAIN: a rename raced with the resolution (retry);
                    # with O_NONBLOCK it may also be a lease held by a
                    # writer, which is the caller's to handle.
                    raise
        else:
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), os.fsdecode(raw))
    return _walk(rootFd, raw, flags, mode, symlinks)


def _setUnavailable():
    global _openat2Works
    _openat2Works = False


def _components(path):
    """
    The components of C{path} to resolve, in order (no empty ones, no
    C{.}).
    """
    return [p for p in path.split(b"/") if p not in (b"", b".")]


def _fstatOrClose(fd):
    """
    C{os.fstat(fd)}; C{fd} is closed if that fails.
    """
    try:
        return os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise


def _walk(rootFd, raw, flags, mode, symlinks):
    """
    The C{openat2} emulation: resolve C{raw} one component at a time with
    C{O_PATH | O_NOFOLLOW}, reading symlinks (as text: a magic link is never
    jumped through) and walking their targets, keeping a stack of the
    directories descended so that C{..} goes back the way it came and never
    above C{rootFd}.

    With the policy C{"always"} a symlink's target may leave the root: an
    absolute target restarts the walk at C{/}, and C{..} at the bottom of the
    stack opens the physical parent.

    Each component is looked at without following it, then it is C{..}
    (L{_Walk.up}), a symlink (L{_Walk.follow}), a directory on the way
    (L{_Walk.descend}) or the last component (L{_Walk.openLast}). Every
    descriptor the walk holds is closed when it ends, whatever the outcome.
    """
    walk = _Walk(rootFd, raw, symlinks)
    try:
        while walk.pending:
            part = walk.pending.pop()
            if part == b"..":
                walk.up()
                continue
            last = not walk.pending
            try:
                pathFd = os.open(part, _O_PATH | _O_NOFOLLOW | _O_CLOEXEC, dir_fd=walk.here())
            except FileNotFoundError:
                if last and flags & os.O_CREAT:
                    return os.open(part, flags | _O_NOFOLLOW, mode, dir_fd=walk.here())
                raise
            st = _fstatOrClose(pathFd)
            if stat.S_ISLNK(st.st_mode):
                os.close(pathFd)
                walk.follow(part)
            elif not last:
                walk.descend(pathFd, st)
            else:
                fd = walk.openLast(part, pathFd, st, flags, mode)
                if fd is not None:
                    return fd
        # The path named a directory (the root itself, or one reached
        # through '..' or a symlink).
        return os.open(b".", flags | _O_NOFOLLOW, mode, dir_fd=walk.here())
    finally:
        walk.close()


class _Walk:
    """
    The state of one L{_walk}.

    @ivar raw: the path walked (named in errors).
    @ivar symlinks: the symlink policy.
    @ivar pending: the components still to resolve, the next one last
        (C{pop()} takes it).
    @ivar base: the bottom of the stack: the root, or (policy C{"always"})
        a directory outside it.
    @ivar stack: descriptors of the directories descended below C{base},
        deepest last.
    @ivar owned: the bases outside the root (policy C{"always"}), ours to
        close.
    @ivar links: the symlinks followed so far.
    """

    def __init__(self, rootFd, raw, symlinks):
        self.raw = raw
        self.symlinks = symlinks
        self.pending = _components(raw)
        self.pending.reverse()
        self.base = rootFd
        self.stack = []
        self.owned = []
        self.links = 0

    def here(self):
        """
        The directory the next component is resolved in.
        """
        return self.stack[-1] if self.stack else self.base

    def _error(self, code, message=None):
        return OSError(code, message or os.strerror(code), os.fsdecode(self.raw))

    def up(self):
        """
        C{..}: back to the directory descended from. At the bottom of the
        stack it is refused (C{EXDEV}), except with the policy C{"always"}
        once a symlink was followed: then the physical parent is opened.
        """
        if self.stack:
            os.close(self.stack.pop())
        elif self.symlinks == "always" and self.links:
            self.base = os.open(b"..", _O_PATH | _O_DIRECTORY | _O_CLOEXEC, dir_fd=self.here())
            self.owned.append(self.base)
        else:
            raise self._error(errno.EXDEV, "path leads outside the root")

    def follow(self, part):
        """
        The symlink C{part} (its look is closed): refused with the policy
        C{"never"} (C{ELOOP}), and beyond L{_MAXSYMLINKS} links (C{ELOOP});
        else its target, read as text, is walked in its place. An absolute
        target is refused (C{EXDEV}) except with the policy C{"always"}: then
        the walk goes on from C{/}.
        """
        if self.symlinks == "never":
            raise self._error(errno.ELOOP, "symlink refused")
        self.links += 1
        if self.links > _MAXSYMLINKS:
            raise self._error(errno.ELOOP)
        target = os.readlink(part, dir_fd=self.here())
        if target.startswith(b"/"):
            if self.symlinks != "always":
                raise self._error(errno.EXDEV, "symlink leads outside the root")
            while self.stack:
                os.close(self.stack.pop())
            self.base = os.open(b"/", _O_PATH | _O_DIRECTORY | _O_CLOEXEC)
            self.owned.append(self.base)
        self.pending.extend(reversed(_components(target)))

    def descend(self, pathFd, st):
        """
        A component before the last, looked at as C{pathFd} (with C{st}): a
        directory is held on the stack; anything else is C{ENOTDIR}.
        """
        if not stat.S_ISDIR(st.st_mode):
            os.close(pathFd)
            raise self._error(errno.ENOTDIR)
        self.stack.append(pathFd)

    def openLast(self, part, pathFd, st, flags, mode):
        """
        The last component, looked at as C{pathFd} (with C{st}), not a
        symlink. With C{O_PATH} the look is the answer (a directory, if
        C{O_DIRECTORY} asks for one: else C{ENOTDIR}). Otherwise it is
        opened with C{O_NOFOLLOW}: a symlink swapped in since the look is
        refused (C{ELOOP}), and then looked at again.

        @return: the descriptor, or L{None} when C{part} is pending again.
        """
        if flags & _O_PATH:
            if flags & _O_DIRECTORY and not stat.S_ISDIR(st.st_mode):
                os.close(pathFd)
                raise self._error(errno.ENOTDIR)
            return pathFd
        os.close(pathFd)
        try:
            return os.open(part, flags | _O_NOFOLLOW, mode, dir_fd=self.here())
        except OSError as e:
            if e.errno != errno.ELOOP or self.links >= _MAXSYMLINKS:
                raise
            self.links += 1
            self.pending.append(part)
            return None

    def close(self):
        """
        Close every descriptor the walk holds.
        """
        for fd in self.stack + self.owned:
            os.close(fd)


class ConfinedRoot:
    """
    A directory that files are opened below, held as an C{O_PATH}
    descriptor (one descriptor, however many files are opened).

    The descriptor names the directory that was there when it was opened:
    renaming or replacing the directory afterwards does not redirect it.

    @ivar path: the directory as given.
    @ivar symlinks: the symlink policy (L{SYMLINK_POLICIES}).
    """

    def __init__(self, path, symlinks="inside"):
        if symlinks not in SYMLINK_POLICIES:
            raise ValueError("symlinks must be one of %r" % (SYMLINK_POLICIES,))
        self.path = path
        self.symlinks = symlinks
        self._fd = os.open(path, _O_PATH | _O_DIRECTORY | _O_CLOEXEC)

    def fileno(self):
        """
        The root's descriptor.

        @raise ValueError: it is closed.
        """
        if self._fd is None:
            raise ValueError("the confined root %s is closed" % (self.path,))
        return self._fd

    def open(self, relativePath, flags=os.O_RDONLY, mode=0o666):
        """
        L{openBeneath} this root with its policy.
        """
        return openBeneath(self.fileno(), relativePath, flags, mode, self.symlinks)

    def stat(self, relativePath):
        """
        Return the C{os.stat_result} of what C{relativePath} names (through
        symlinks the policy allows) without opening it: an C{O_PATH}
        descriptor is opened, looked at and closed.
        """
        fd = self.open(relativePath, _O_PATH)
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    def openRegular(self, relativePath, flags=os.O_RDONLY):
        """
        Open a regular file, never anything else.

        It is looked at first without opening it (L{stat}), so a FIFO, socket
        or device is never opened; then it is opened with C{O_NONBLOCK} and
        looked at again, so a file swapped for one of those in between is
        refused too.

        @return: C{(fd, os.stat_result)}; the caller closes C{fd}.
        @raise NotRegularFile: it is not a regular file.
        @raise OSError: as L{openBeneath} (C{EAGAIN} for a file whose lease
            a writer holds).
        """
        before = self.stat(relativePath)
        if not stat.S_ISREG(before.st_mode):
            raise NotRegularFile(os.fsdecode(relativePath), before.st_mode)
        fd = self.open(relativePath, flags | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotRegularFile(os.fsdecode(relativePath), st.st_mode)
            if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
                raise OSError(errno.EAGAIN, "replaced while it was opened",
                              os.fsdecode(relativePath))
        except BaseException:
            os.close(fd)
            raise
        return fd, st

    def close(self):
        """
        Close the root's descriptor (idempotent).
        """
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "<ConfinedRoot %s symlinks=%s%s>" % (self.path, self.symlinks,
                                                    "" if self._fd is not None else " closed")
