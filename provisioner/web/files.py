# -*- test-case-name: tests.test_web -*-
"""
Files over HTTP: L{FileResource} asks the resolver chain (the menus'
virtual files, the image catalogue, an optional directory) for every path,
as a L{provisioner.files.FileRequest}. Answers honour HEAD and single byte
ranges, always carry a correct Content-Length, and are streamed from the
data source (L{provisioner.web.streaming.SourceProducer}): never read whole
into memory. Each body written whole is an L{HTTPFetch} for the fetch
callbacks (the host lifecycle's deploy signal). Each body being written is
an L{HTTPTransfer} in L{FileResource.transfers} (the dashboard's view) and
is given to the start callbacks (the events).
"""

import mimetypes
from email.utils import formatdate
from urllib.parse import unquote_to_bytes

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.web import resource, server

from provisioner.errors import AccessViolation, FileNotFound
from provisioner.files import BytesSource, FileRequest, ResolverChain, normalisePath
from provisioner.web.logs import NamedLogger
from provisioner.web.streaming import SourceProducer, ifRangeMatches, parseRange

__all__ = ["FileResource", "HTTPFetch", "HTTPTransfer", "baseURL"]

_TEXT = {".ipxe": "text/plain; charset=utf-8", ".cfg": "text/plain; charset=utf-8",
         ".iso": "application/x-iso9660-image"}


def _contentType(path, source):
    """
    The C{Content-Type} of a body: text for generated files (menus), else
    by the name.
    """
    if source.__class__.__name__ == "BytesSource":
        return "text/plain; charset=utf-8"
    base = path.rsplit("/", 1)[-1].lower()
    for ext, kind in _TEXT.items():
        if base.endswith(ext):
            return kind
    guessed, encoding = mimetypes.guess_type(base)
    if guessed and not encoding:
        return guessed
    return "application/octet-stream"


def baseURL(request):
    """
    C{scheme://host} as the client reached us (its C{Host} header), or
    L{None} when there is none or it is not a plain host name.
    """
    host = request.getHeader(b"host")
    if not host:
        return None
    try:
        host = host.decode("ascii")
    except UnicodeDecodeError:
        return None
    if any(c in host for c in "/\\ @?#") or not host:
        return None
    scheme = "https" if request.isSecure() else "http"
    return "%s://%s" % (scheme, host)


class FileResource(resource.Resource):
    """
    Serves whatever the resolver chain answers for the path.

    @ivar resolvers: a callable returning the list of resolvers to ask.
    @ivar fetchCallbacks: callables given an L{HTTPFetch} when a GET body
        has been written whole (the HTTP service's C{addFetchCallback}).
    @ivar startCallbacks: callables given an L{HTTPTransfer} when a GET
        body starts (the HTTP service's C{addStartCallback}).
    @ivar transfers: the L{HTTPTransfer}s being written (read only).
    """

    isLeaf = True
    log = NamedLogger("provisioner.web.resources.FileResource")

    def __init__(self, appliance, resolvers, chunk=262144, accessLog=False):
        resource.Resource.__init__(self)
        self.appliance = appliance
        self.resolvers = resolvers
        self.chunk = chunk
        self.accessLog = accessLog
        self.fetchCallbacks = []
        self.startCallbacks = []
        self.transfers = set()

    def render_HEAD(self, request):
        return self.render_GET(request)

    def render_GET(self, request):
        raw = unquote_to_bytes(request.path)
        try:
            path = normalisePath(raw)
        except AccessViolation as e:
            return self._error(request, 403, str(e))
        except FileNotFound:
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return (b"provisioner: images under /%s/, menus (boot.ipxe, "
                    b"menus/MAC/boot.ipxe), JSON under /api/v1/\n" % (
                        (self.appliance.config["images"]["prefix"] or "").encode(),))
        address = request.getClientAddress()
        host = getattr(address, "host", None)
        peer = (host, getattr(address, "port", 0))
        client = self.appliance.clients.byIP(host) if host else None
        options = self._options(request)
        if "mac" in options:
            try:
                from provisioner.directory import normaliseMAC
                normaliseMAC(options["mac"])
            except ValueError:
                return self._error(request, 400, "bad mac parameter")
        fileRequest = FileRequest(path, peer, protocol="http", options=options, client=client,
                                  rawPath=raw)
        d = ResolverChain(self.resolvers()).resolve(fileRequest)
        d.addCallback(self._serve, request, fileRequest)
        d.addErrback(self._failed, request, fileRequest)
        return server.NOT_DONE_YET

    def _options(self, request):
        """
        What a generated file may depend on: the base URL, and the C{mac}
        and C{arch} query parameters (C{boot.ipxe?mac=...&arch=...}).
        """
        options = {"base_url": baseURL(request)}
        for name in ("mac", "arch"):
            value = request.args.get(name.encode())
            if value:
                try:
                    options[name] = value[0].decode("ascii")
                except UnicodeDecodeError:
                    pass
        return options

    def _error(self, request, code, message):
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        body = ("%d %s\n" % (code, message)).encode("utf-8")
        request.setHeader(b"content-length", b"%d" % (len(body),))
        return body

    def _finishError(self, request, code, message):
        if request.finished or request._disconnected:
            return
        body = self._error(request, code, message)
        if request.method != b"HEAD":
            request.write(body)
        request.finish()

    def _failed(self, failure, request, fileRequest):
        if failure.check(FileNotFound):
            self._log(request, fileRequest, 404)
            return self._finishError(request, 404, "not found")
        if failure.check(AccessViolation):
            self._log(request, fileRequest, 403)
            return self._finishError(request, 403, failure.getErrorMessage())
        self.log.failure("HTTP request for {path} failed", failure, path=fileRequest.path)
        return self._finishError(request, 500, "internal error")

    def _log(self, request, fileRequest, code, length=None):
        emit = self.log.info if self.accessLog else self.log.debug
        emit("HTTP {method} {path} from {peer}: {code}{length}",
             method=request.method.decode("ascii", "replace"), path=fileRequest.path,
             peer=fileRequest.peer[0], code=code,
             length="" if length is None else " (%d bytes)" % (length,))

    def _serve(self, source, request, fileRequest):
        """
        Answer with what the resolvers found: the headers, then the body
        (whole, or the one range honoured) streamed by a L{SourceProducer};
        the fetch callbacks are told once it is written.
        """
        if request.finished or request._disconnected:
            source.close()
            return
        if source.size is None:
            source = self._readWhole(source)
        size = source.size
        etag, mtime = self._describe(request, source, fileRequest.path)
        rangeHeader = request.getHeader(b"range")
        ifRange = request.getHeader(b"if-range")
        if rangeHeader is not None and ifRange is not None and \
                not ifRangeMatches(ifRange, etag, mtime):
            rangeHeader = None
        wanted = parseRange(rangeHeader, size)
        if wanted == "416":
            source.close()
            request.setHeader(b"content-range", b"bytes */%d" % (size,))
            self._log(request, fileRequest, 416)
            return self._finishError(request, 416, "range not satisfiable")
        if wanted is None:
            offset, length = 0, size
            request.setResponseCode(200)
        else:
            offset, length = wanted
            request.setResponseCode(206)
            request.setHeader(b"content-range", b"bytes %d-%d/%d" % (
                offset, offset + length - 1, size))
        request.setHeader(b"content-length", b"%d" % (length,))
        self._log(request, fileRequest, 206 if wanted else 200, length)
        if request.method == b"HEAD" or length == 0:
            source.close()
            request.finish()
            return
        producer = SourceProducer(request, source, offset, length, self.chunk)
        transfer = HTTPTransfer(fileRequest.peer, fileRequest.path, 206 if wanted else 200,
                                size, length, producer, self.appliance.reactor)
        self.transfers.add(transfer)
        for callback in list(self.startCallbacks):
            try:
                callback(transfer)
            except Exception:
                self.log.failure("HTTP start callback {callback!r}", callback=callback)
        d = producer.start()
        d.addBoth(self._transferred, transfer)
        d.addCallback(self._fetched, fileRequest, 206 if wanted else 200, length)
        d.addErrback(lambda f: None)

    def _readWhole(self, source):
        """
        A source of unknown length (never from our resolvers), read whole
        once into a L{BytesSource}; the original is closed.
        """
        data, offset = [], 0
        while True:
            chunk = source.read(offset, self.chunk)
            if not chunk:
                break
            data.append(chunk)
            offset += len(chunk)
        source.close()
        return BytesSource(b"".join(data), source.name)

    def _describe(self, request, source, path):
        """
        Set the headers that describe the body: ranges accepted, its type,
        its entity tag (from the catalogue's digest) and modification time,
        and no caching of generated files.

        @return: C{(etag, mtime)}, either L{None}.
        """
        request.setHeader(b"accept-ranges", b"bytes")
        request.setHeader(b"content-type", _contentType(path, source).encode())
        etag = None
        sha = getattr(source, "sha256", None)
        if sha:
            etag = ('"%s"' % (sha[:32],)).encode("ascii")
            request.setHeader(b"etag", etag)
        mtime = getattr(source, "mtime", None)
        if mtime:
            request.setHeader(b"last-modified", formatdate(mtime, usegmt=True).encode())
        if source.__class__.__name__ == "BytesSource":
            request.setHeader(b"cache-control", b"no-store")
        return etag, mtime

    def _transferred(self, result, transfer):
        self.transfers.discard(transfer)
        transfer.end(result)
        return result

    def _fetched(self, _, fileRequest, code, length):
        if not self.fetchCallbacks:
            return
        fetch = HTTPFetch(fileRequest.peer, fileRequest.path, code, length)
        for callback in list(self.fetchCallbacks):
            try:
                callback(fetch)
            except Exception:
                self.log.failure("HTTP fetch callback {callback!r}", callback=callback)


class HTTPFetch:
    """
    One body served whole, as the fetch callbacks see it.

    @ivar peer: C{(host, port)} of the client.
    @ivar path: the normalised path.
    @ivar code: 200, or 206 for a range.
    @ivar bytes: the bytes written.
    @ivar outcome: C{"complete"} (the whole file) or C{"partial"} (a range).
    """

    def __init__(self, peer, path, code, length):
        self.peer = peer
        self.path = path
        self.code = code
        self.bytes = length
        self.outcome = "complete" if code == 200 else "partial"

    def __repr__(self):
        return "<HTTPFetch %s %s from %s>" % (self.code, self.path, self.peer)


class HTTPTransfer:
    """
    One body being written (the dashboard's view, the events).

    @ivar peer: C{(host, port)} of the client.
    @ivar path: the normalised path.
    @ivar code: 200, or 206 for a range.
    @ivar size: the file's size; C{length}: the bytes to write.
    @ivar started: the clock's time at its start; C{ended}: at its end.
    @ivar finished: a Deferred fired with L{None} once written whole, or
        with why it was not (the client went away, the source fell short),
        as text; never with a failure.
    """

    def __init__(self, peer, path, code, size, length, producer, clock):
        self.peer = peer
        self.path = path
        self.code = code
        self.size = size
        self.length = length
        self._producer = producer
        self._first = producer.offset
        self._clock = clock
        self.started = clock.seconds()
        self.ended = None
        self.finished = defer.Deferred()

    @property
    def sent(self):
        """
        The bytes handed to the connection so far.
        """
        return self._producer.offset - self._first

    def duration(self):
        end = self.ended if self.ended is not None else self._clock.seconds()
        return max(0.0, end - self.started)

    def end(self, result):
        self.ended = self._clock.seconds()
        self.finished.callback(result.getErrorMessage() if isinstance(result, Failure) else None)

    def asDict(self):
        return {"peer": "%s:%d" % tuple(self.peer[:2]), "path": self.path, "code": self.code,
                "size": self.size, "length": self.length, "bytes": self.sent,
                "started": self.started}
