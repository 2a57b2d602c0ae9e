# -*- test-case-name: tests.test_files -*-
"""
Data sources and resolvers shared by every protocol that serves files.

  - L{FileSource}: a file read with C{os.pread} from an open descriptor (a
    replaced or deleted file keeps serving the inode that was opened).
  - L{BytesSource}: generated content in memory.
  - L{DirectoryResolver}: files below a root, with path confinement.
  - L{VirtualFiles}: generated files registered by name or pattern.
  - L{ResolverChain}: the first resolver that answers wins.
  - L{FilteredResolver}: a resolver behind L{IResolverFilter}s, which see
    each request first.
"""

import os
import re
import stat

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from provisioner.errors import AccessViolation, FileNotFound
from provisioner.interfaces import IDataSource, IFileResolver, IVirtualFiles

__all__ = ["FileRequest", "FileSource", "BytesSource", "DirectoryResolver",
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
        Open a regular file for reading.

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


@implementer(IFileResolver)
class DirectoryResolver:
    """
    Files below a root directory. Symlinks are followed only while they stay
    inside the root.

    @ivar notFoundIsFinal: when true, a missing file raises L{FileNotFound}
        (the end of a chain); when false it returns L{None} so later
        resolvers are asked.
    """

    log = Logger()

    def __init__(self, root, notFoundIsFinal=False):
        self.root = os.path.realpath(root)
        self.notFoundIsFinal = notFoundIsFinal

    def locate(self, path):
        """
        Return the real path of C{path} (already normalised) below the root.

        @raise AccessViolation: it resolves outside the root.
        """
        full = os.path.realpath(os.path.join(self.root, path))
        if full != self.root and not full.startswith(self.root + os.sep):
            raise AccessViolation("outside the served directory")
        return full

    def resolve(self, request):
        full = self.locate(request.path)
        try:
            return FileSource.open(full, name=request.path)
        except FileNotFound:
            if self.notFoundIsFinal:
                raise
            return None


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
