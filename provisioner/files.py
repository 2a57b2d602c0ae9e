# -*- test-case-name: tests.test_files -*-
"""
Data sources and resolvers shared by every protocol that serves files.

  - L{FileSource}: a file read with C{os.pread} from an open descriptor (a
    replaced or deleted file keeps serving the inode that was opened).
  - L{BytesSource}: generated content in memory.
  - L{DirectoryResolver}: files below a root, confined by the kernel at
    open time (L{provisioner.confine}).
  - L{RootHandle}: a directory held open for that, opened again when the
    directory at its path is replaced.
  - L{VirtualFiles}: generated files registered by name or pattern.
  - L{ResolverChain}: the first resolver that answers wins.
  - L{FilteredResolver}: a resolver behind L{IResolverFilter}s, which see
    each request first.
"""

import errno
import os
import re
import stat

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from provisioner.confine import ConfinedRoot, NotRegularFile, openBeneath
from provisioner.errors import AccessViolation, FileNotFound
from provisioner.interfaces import IDataSource, IFileResolver, IVirtualFiles

__all__ = ["FileRequest", "FileSource", "BytesSource", "DirectoryResolver", "RootHandle",
           "VirtualFiles", "ResolverChain", "FilteredResolver", "normalisePath", "MAX_PATH"]

MAX_PATH = 1024


class FileRequest:
    """
    One request for a file, as every resolver sees it.

    @ivar path: the normalised path (see L{normalisePath}).
    @ivar rawPath: the path as the client sent it.
    @ivar peer: C{(host, port)} of the client.
    @ivar protocol: C{"tftp"} or C{"http"}.
    @ivar options: the requested protocol options (TFTP options, lower-case
        names), a C{dict}.
    @ivar client: the L{provisioner.directory.ClientRecord} the appliance has
        for the peer, or L{None}.
    """

    def __init__(self, path, peer, protocol="tftp", options=None, client=None, rawPath=None):
        self.path = path
        self.rawPath = path if rawPath is None else rawPath
        self.peer = peer
        self.protocol = protocol
        self.options = options or {}
        self.client = client

    def __repr__(self):
        return "<FileRequest %s %r from %s>" % (self.protocol, self.path, self.peer)


def normalisePath(raw):
    """
    Turn a client's path into a relative POSIX path, or refuse it.

    Backslashes become slashes (Windows clients, WDS-style names), leading
    slashes are dropped, empty and C{.} components are removed.

    @raise AccessViolation: NUL, C{..} components, control characters, or over
        L{MAX_PATH} bytes.
    @raise FileNotFound: nothing left (an empty name).
    """
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raw = raw.decode("latin-1")
    if len(raw) > MAX_PATH:
        raise AccessViolation("file name too long")
    if "\x00" in raw or any(ord(c) < 0x20 for c in raw):
        raise AccessViolation("control character in file name")
    parts = []
    for part in raw.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise AccessViolation("'..' in file name")
        parts.append(part)
    if not parts:
        raise FileNotFound("empty file name")
    return "/".join(parts)


@implementer(IDataSource)
class FileSource:
    """
    An open file read with C{pread}: nothing of it is held in memory.
    """

    def __init__(self, fd, size, name):
        self._fd = fd
        self.size = size
        self.name = name

    @classmethod
    def open(cls, path, name=None):
        """
        Open a regular file for reading by its path (symlinks followed): for
        a path the operator configured. Files a client names below a served
        root are opened by L{DirectoryResolver}, confined by the kernel.

        @raise FileNotFound: it does not exist or is not a regular file.
        @raise AccessViolation: it cannot be read.
        """
        try:
            # O_NONBLOCK: opening a FIFO (or a device) must not block the
            # reactor; the type is checked right after. Regular files ignore it.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise FileNotFound("file not found")
        except IsADirectoryError:
            raise FileNotFound("not a file")
        except PermissionError:
            raise AccessViolation("permission denied")
        except OSError as e:
            raise AccessViolation(e.strerror or "cannot open")
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise FileNotFound("not a regular file")
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, st.st_size, name or path)

    def read(self, offset, length):
        if self._fd is None:
            raise ValueError("read from a closed source")
        return os.pread(self._fd, length, offset)

    def close(self):
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self):
        self.close()


@implementer(IDataSource)
class BytesSource:
    """
    Content held in memory (generated files: menus, scripts).
    """

    def __init__(self, data, name="<generated>"):
        self._data = bytes(data)
        self._view = memoryview(self._data)
        self.size = len(self._data)
        self.name = name

    def read(self, offset, length):
        return bytes(self._view[offset:offset + length])

    def close(self):
        pass


class RootHandle:
    """
    A directory that files are opened below: a L{ConfinedRoot} (one
    C{O_PATH} descriptor), opened again when the directory at its path is
    replaced (removed and made again, or another one renamed to its name).

    The path's own symlinks are resolved once, when the handle is made
    (L{path} is the real path); when the directory is opened again, a
    symlink that has appeared in the path since is refused (C{ELOOP}), not
    followed, as the old C{realpath} check refused it.

    Each L{current} costs one C{stat} of the path; the directory is opened
    again only when that names another directory than the one held.

    @ivar path: the directory's real path.
    @ivar symlinks: the symlink policy below it (L{provisioner.confine}).
    """

    log = Logger()

    def __init__(self, path, symlinks="inside"):
        self.path = os.path.realpath(path)
        self.symlinks = symlinks
        self._root = None
        self._identity = None

    def current(self):
        """
        The L{ConfinedRoot} of the directory now at L{path}.

        @raise OSError: C{ENOENT} or C{ENOTDIR} (no directory there),
            C{ELOOP} (a component of the path is now a symlink), or as
            C{open(2)}.
        """
        try:
            st = os.stat(self.path)
        except OSError:
            self.close()
            raise
        if self._root is not None and (st.st_dev, st.st_ino) == self._identity:
            return self._root
        replaced = self._root is not None
        self.close()
        root = self._open()
        if replaced:
            self.log.info("directory {path} was replaced; files are opened in the new one",
                          path=self.path)
        return root

    def _open(self):
        root = ConfinedRoot(self.path, self.symlinks)
        try:
            held = os.fstat(root.fileno())
            # The path again, following no symlink at all: the descriptor
            # must be the directory that is at the real path now.
            slash = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                fd = openBeneath(slash, self.path.lstrip("/") or ".",
                                 os.O_PATH | os.O_DIRECTORY, symlinks="never")
            finally:
                os.close(slash)
            try:
                st = os.fstat(fd)
            finally:
                os.close(fd)
            if (st.st_dev, st.st_ino) != (held.st_dev, held.st_ino):
                raise OSError(errno.EAGAIN, "replaced while it was opened", self.path)
        except BaseException:
            root.close()
            raise
        self._root = root
        self._identity = (held.st_dev, held.st_ino)
        return root

    def close(self):
        """
        Close the descriptor held (idempotent); the next L{current} opens
        the directory again (after C{ESTALE}, or when done with it).
        """
        root, self._root, self._identity = self._root, None, None
        if root is not None:
            root.close()

    def __del__(self):
        self.close()

    def __repr__(self):
        return "<RootHandle %s%s>" % (self.path, "" if self._root is not None else " (closed)")


# How often a file replaced between its look and its open is looked at again.
_REPLACED_TRIES = 3


@implementer(IFileResolver)
class DirectoryResolver:
    """
    Files below a root directory, opened with the confinement checked by
    the kernel at open time (L{provisioner.confine}: C{openat2} with
    C{RESOLVE_BENEATH}, or an C{O_NOFOLLOW} walk): symlinks are followed
    only while they stay inside the root, whatever is renamed or swapped
    while the path is resolved. Only regular files are served; a FIFO,
    socket, device or directory is never opened.

    The root is held as one descriptor (L{RootHandle}); a root removed and
    made again is opened again at the next request. A resolver replaced
    (a reload) is closed by L{close}, or when it is garbage.

    Refusals: a missing file, a directory or a special file is
    L{FileNotFound} (or L{None}, see L{notFoundIsFinal}); a path leading
    outside the root (through a symlink) is L{AccessViolation}, logged at
    warn with the root.

    @ivar root: the real path of the root.
    @ivar notFoundIsFinal: when true, a missing file raises L{FileNotFound}
        (the end of a chain); when false it returns L{None} so later
        resolvers are asked.
    """

    log = Logger()

    def __init__(self, root, notFoundIsFinal=False):
        self.handle = RootHandle(root)
        self.root = self.handle.path
        self.notFoundIsFinal = notFoundIsFinal

    def close(self):
        """
        Close the root's descriptor (a request after this opens it again).
        """
        self.handle.close()

    def resolve(self, request):
        try:
            fd, st = self._open(request.path)
        except FileNotFound:
            if self.notFoundIsFinal:
                raise
            return None
        except AccessViolation as e:
            self.log.warn("{protocol} {path} from {peer} refused: {reason} ({root})",
                          protocol=request.protocol, path=request.path,
                          peer=request.peer[0] if request.peer else None, reason=str(e),
                          root=self.root)
            raise
        return FileSource(fd, st.st_size, request.path)

    def _open(self, path):
        """
        Open the regular file C{path} (normalised) below the root.

        @return: C{(fd, stat)}.
        @raise FileNotFound: missing, a directory or a special file, or no
            root.
        @raise AccessViolation: outside the root, unreadable.
        """
        for attempt in range(_REPLACED_TRIES):
            try:
                root = self.handle.current()
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.ENOTDIR):
                    raise FileNotFound("file not found")
                if e.errno in (errno.ELOOP, errno.EXDEV):
                    raise AccessViolation("the served directory is now a symlink")
                if e.errno == errno.EAGAIN and attempt + 1 < _REPLACED_TRIES:
                    continue
                raise _refusal(e)
            try:
                return root.openRegular(path)
            except ValueError:
                raise AccessViolation("NUL in file name")
            except NotRegularFile as e:
                raise FileNotFound("not a file" if stat.S_ISDIR(e.mode)
                                   else "not a regular file")
            except OSError as e:
                if e.errno == errno.ESTALE and attempt + 1 < _REPLACED_TRIES:
                    self.handle.close()
                    continue
                if e.errno == errno.EAGAIN and attempt + 1 < _REPLACED_TRIES:
                    continue  # replaced between the look and the open
                raise _refusal(e)
        raise AccessViolation("the file keeps being replaced")


def _refusal(error):
    """
    The L{provisioner.errors.BackendError} for an C{OSError} of opening a
    file below a root.
    """
    code = error.errno
    if code in (errno.ENOENT,):
        return FileNotFound("file not found")
    if code == errno.EXDEV:
        return AccessViolation("outside the served directory")
    if code in (errno.EACCES, errno.EPERM):
        return AccessViolation("permission denied")
    return AccessViolation(error.strerror or "cannot open")


@implementer(IVirtualFiles)
class VirtualFiles:
    """
    Generated files by exact name or by pattern; the newest registration of
    an exact name wins, patterns are tried in registration order.
    """

    log = Logger()

    def __init__(self):
        self._exact = {}
        self._patterns = []

    def register(self, pattern, producer, exact=True):
        if exact:
            key = pattern.lstrip("/")
            self._exact[key] = producer

            def unregister():
                if self._exact.get(key) is producer:
                    del self._exact[key]
            return unregister
        entry = (re.compile(pattern), producer)
        self._patterns.append(entry)

        def unregister():
            if entry in self._patterns:
                self._patterns.remove(entry)
        return unregister

    def names(self):
        """
        The exact names registered (for listings).
        """
        return sorted(self._exact)

    def resolve(self, request):
        producer = self._exact.get(request.path)
        if producer is not None:
            return self._produce(producer, request, None)
        for regex, producer in self._patterns:
            match = regex.fullmatch(request.path)
            if match is not None:
                return self._produce(producer, request, match)
        return None

    def _produce(self, producer, request, match):
        result = producer(request, match)
        if isinstance(result, defer.Deferred):
            return result.addCallback(_asSource, request)
        return _asSource(result, request)


def _asSource(result, request):
    if result is None:
        return None
    if isinstance(result, str):
        result = result.encode("utf-8")
    if isinstance(result, (bytes, bytearray, memoryview)):
        return BytesSource(result, name=request.path)
    return result


@implementer(IFileResolver)
class ResolverChain:
    """
    Ask resolvers in order; the first non-L{None} answer wins; when all pass,
    L{FileNotFound}.

    The result is always a Deferred (resolvers may be asynchronous), which
    has already fired when every resolver answered synchronously.
    """

    def __init__(self, resolvers=()):
        self.resolvers = list(resolvers)

    def resolve(self, request):
        return self._next(None, iter(list(self.resolvers)), request)

    def _next(self, result, remaining, request):
        while result is None:
            resolver = next(remaining, None)
            if resolver is None:
                return defer.fail(FileNotFound("file not found"))
            try:
                result = resolver.resolve(request)
            except Exception:
                return defer.fail()
            if isinstance(result, defer.Deferred):
                return result.addCallback(self._next, remaining, request)
        return defer.succeed(result)


@implementer(IFileResolver)
class FilteredResolver:
    """
    A resolver behind filters: each L{IResolverFilter
    <provisioner.interfaces.IResolverFilter>} sees the request in the order
    of L{filters} and answers it through the next one (the last through
    L{resolver}). With no filter it is L{resolver} itself.

    @ivar resolver: the L{IFileResolver} behind the filters (a
        L{ResolverChain}).
    @ivar filters: the L{IResolverFilter}s, outermost first.
    """

    def __init__(self, resolver, filters=()):
        self.resolver = resolver
        self.filters = list(filters)

    def resolve(self, request):
        return _Behind(self.resolver, list(self.filters)).resolve(request)


@implementer(IFileResolver)
class _Behind:
    """
    What is behind the first of C{filters}: the next filter, or the
    resolver.
    """

    def __init__(self, resolver, filters):
        self._resolver = resolver
        self._filters = filters

    def resolve(self, request):
        if not self._filters:
            return self._resolver.resolve(request)
        return self._filters[0].resolve(request, _Behind(self._resolver, self._filters[1:]))
