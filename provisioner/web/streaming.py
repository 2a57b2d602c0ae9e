# -*- test-case-name: tests.test_web -*-
"""
How a body is sent over HTTP: which part (L{parseRange}, the one byte range
honoured; L{ifRangeMatches}, its C{If-Range} condition) and the streaming
itself (L{SourceProducer}: from an L{provisioner.interfaces.IDataSource}
into the request, paused whenever the transport's buffer is full, never
read whole into memory).
"""

from email.utils import parsedate_to_datetime

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from provisioner.web.logs import NamedLogger

__all__ = ["SourceProducer", "parseRange", "ifRangeMatches"]


def parseRange(header, size):
    """
    Parse a C{Range} header for a body of C{size} bytes.

    @return: C{None} to serve the whole body (no header, not C{bytes=},
        several ranges, or syntax we ignore as RFC 7233 allows); C{"416"}
        when the one range is unsatisfiable; else C{(start, length)}.
    """
    if header is None or size is None:
        return None
    try:
        text = header.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    unit, _, spec = text.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    try:
        if first == "":
            if not last.isdigit():
                return None
            suffix = int(last)
            if suffix == 0:
                return "416"
            start = max(0, size - suffix)
            return (start, size - start)
        if not first.isdigit() or (last and not last.isdigit()):
            return None
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if last and end < start:
        return None
    if start >= size:
        return "416"
    end = min(end, size - 1)
    return (start, end - start + 1)


def ifRangeMatches(value, etag, mtime):
    """
    Whether an C{If-Range} header (an entity tag, or an HTTP date) names
    the body with C{etag} and C{mtime}: only then is its C{Range} honoured.
    """
    value = value.strip()
    if value.startswith(b'"') or value.startswith(b"W/"):
        return etag is not None and value == etag
    if mtime is None:
        return False
    try:
        when = parsedate_to_datetime(value.decode("ascii")).timestamp()
    except (TypeError, ValueError, UnicodeDecodeError):
        return False
    return int(when) == int(mtime)


@implementer(IPushProducer)
class SourceProducer:
    """
    Streams C{length} bytes of an L{IDataSource} from C{offset} into a
    request, C{chunk} bytes per write, pausing whenever the transport's
    buffer is full. The source is closed when done or when the client goes.

    @ivar finished: a Deferred that fires when the body is written (or
        errbacks when the client went away or the source fell short).
    """

    log = NamedLogger("provisioner.web.resources.SourceProducer")

    def __init__(self, request, source, offset, length, chunk=262144):
        self.request = request
        self.source = source
        self.offset = offset
        self.remaining = length
        self.chunk = chunk
        self.paused = False
        self.done = False
        self.finished = defer.Deferred()

    def start(self):
        self.request.notifyFinish().addErrback(self._clientGone)
        self.request.registerProducer(self, True)
        self.resumeProducing()
        return self.finished

    def resumeProducing(self):
        self.paused = False
        if self.done:
            return
        read = self.source.read
        write = self.request.write
        while not self.paused and self.remaining > 0:
            try:
                data = read(self.offset, min(self.chunk, self.remaining))
            except Exception as e:
                return self._abort("read failed: %s" % (e,))
            if not data:
                return self._abort("source ended %d bytes early" % (self.remaining,))
            self.offset += len(data)
            self.remaining -= len(data)
            write(data)
            if self.done:
                return
        if self.remaining == 0 and not self.done:
            self.done = True
            self.request.unregisterProducer()
            self.request.finish()
            self._close()
            self.finished.callback(None)

    def pauseProducing(self):
        self.paused = True

    def stopProducing(self):
        if not self.done:
            self.done = True
            self._close()
            if not self.finished.called:
                self.finished.errback(ConnectionError("client went away"))

    def _clientGone(self, failure):
        self.stopProducing()

    def _abort(self, why):
        self.log.error("HTTP transfer of {name} aborted: {why}", name=self.source.name, why=why)
        self.done = True
        self._close()
        self.request.unregisterProducer()
        transport = getattr(getattr(self.request, "channel", None), "transport", None)
        if transport is not None:
            transport.abortConnection()
        if not self.finished.called:
            self.finished.errback(IOError(why))

    def _close(self):
        try:
            self.source.close()
        except Exception:
            pass
