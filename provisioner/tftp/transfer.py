# -*- test-case-name: tests.test_tftp_session -*-
"""
What every transfer session (read or write) shares: the stats digest it
hands to the stats callbacks when it ends (L{SessionStats}), how it ends
(L{SessionEnding}: the transfer-time limit, stats out once, the port
released), its retransmission backoff, the netascii form of a source
(L{NetasciiSource}), and the bound on what goes to a client before it has
answered (L{AMPLIFICATION}, L{requestSize}).
"""

from provisioner.tftp import wire

__all__ = ["SessionStats", "SessionEnding", "NetasciiSource", "MAX_BACKOFF",
           "AMPLIFICATION", "requestSize"]

# Retransmission intervals grow x2 per timeout up to this multiple of the
# first one.
MAX_BACKOFF = 8

# Until a client has answered once, what is sent to it again (and the
# ERRORs answering requests) stays within this many times the bytes of its
# request: the address may never have asked (a spoofed request). The first
# datagram always goes: the protocol needs it.
AMPLIFICATION = 3


def requestSize(filename, mode, options):
    """
    The size of the RRQ or WRQ datagram with these fields, for callers that
    have the fields and not the datagram. Never raises (text is counted as
    the wire codec decoded it: ASCII, else Latin-1).

    @param filename: C{bytes} or text.
    @param mode: text.
    @param options: C{[(name, value)]}.
    """
    def size(value):
        if isinstance(value, bytes):
            return len(value)
        return len(str(value).encode("latin-1", "replace"))
    return 4 + size(filename) + size(mode) + sum(size(n) + size(v) + 2 for n, v in options)


class SessionStats:
    """
    The digest of one transfer, handed to the stats callbacks when it ends
    (the fbtftp hook).

    @ivar peer: C{(host, port)}.
    @ivar path: the requested path (normalised).
    @ivar direction: C{"read"} or C{"write"}.
    @ivar size: the file size if known, else L{None}.
    @ivar bytes: bytes the client acknowledged (read) or that were stored
        (write).
    @ivar blocks: DATA datagrams sent (read) or accepted (write), with
        retransmissions.
    @ivar retransmits: DATA blocks sent more than once.
    @ivar timeouts: retransmission timer expiries.
    @ivar duplicates: duplicate ACKs ignored.
    @ivar losses: partial-window ACKs (go-back-N).
    @ivar blksize, windowsize: the negotiated values.
    @ivar started, ended: clock times.
    @ivar outcome: C{"complete"}, C{"probe"}, C{"refused"}, C{"aborted"},
        C{"timeout"}, C{"error"} or C{"cancelled"}.
    @ivar detail: a short text (the client's error message, ...).
    """

    def __init__(self, peer, path, direction="read", size=None):
        self.peer = peer
        self.path = path
        self.direction = direction
        self.size = size
        self.bytes = 0
        self.blocks = 0
        self.retransmits = 0
        self.timeouts = 0
        self.duplicates = 0
        self.losses = 0
        self.blksize = 512
        self.windowsize = 1
        self.started = None
        self.ended = None
        self.outcome = None
        self.detail = ""

    @property
    def duration(self):
        if self.started is None or self.ended is None:
            return 0.0
        return max(0.0, self.ended - self.started)

    def asDict(self):
        return {
            "peer": "%s:%d" % tuple(self.peer[:2]), "path": self.path,
            "direction": self.direction, "size": self.size, "bytes": self.bytes,
            "blocks": self.blocks, "retransmits": self.retransmits,
            "timeouts": self.timeouts, "duplicates": self.duplicates, "losses": self.losses,
            "blksize": self.blksize, "windowsize": self.windowsize,
            "duration": round(self.duration, 6), "outcome": self.outcome,
            "detail": self.detail,
        }

    def __repr__(self):
        return "<SessionStats %r>" % (self.asDict(),)


class SessionEnding:
    """
    How every transfer session (read or write) ends: its stats go to
    C{onEnd} once, C{onClose} is told, and its port is released. Subclasses
    have C{onEnd}, C{onClose}, C{transport}, C{log} and C{_cancelTimers()}.
    """

    # the transfer-time limit: seconds (None: none) and its timer
    maxDuration = None
    _limit = None

    def _startLimit(self):
        """
        Start the transfer-time limit, if there is one: a peer, however
        slow or hostile, holds a session for at most C{maxDuration}
        seconds.
        """
        if self.maxDuration:
            self._limit = self.clock.callLater(self.maxDuration, self._overLimit)

    def _overLimit(self):
        self._limit = None
        if self.done:
            return
        limit = self.maxDuration
        self.sender.send(wire.Error(
            wire.ERR_NOT_DEFINED, "transfer time limit of %gs reached" % (limit,)).to_wire())
        self._finish("timeout", "still running after the transfer time limit (%gs)" % (limit,))
        self._close()

    def _reportEnd(self, stats):
        onEnd, self.onEnd = self.onEnd, None
        if onEnd is not None:
            try:
                onEnd(stats)
            except Exception:
                self.log.failure("stats callback")

    def _close(self):
        self._cancelTimers()
        limit, self._limit = self._limit, None
        if limit is not None and limit.active():
            limit.cancel()
        onClose, self.onClose = self.onClose, None
        if onClose is not None:
            onClose(self)
        transport = self.transport
        if transport is not None:
            self.transport = None
            try:
                transport.stopListening()
            except Exception:
                self.log.failure("closing the session port")


class NetasciiSource:
    """
    The netascii form of a source, converted as a stream (LF becomes CR LF,
    CR becomes CR NUL). Reads must not go back before the previous read's
    offset (a session only ever goes back to the block after the last ACK).
    Its size is unknown (no tsize).
    """

    size = None
    chunk = 65536

    def __init__(self, source):
        self.source = source
        self.name = getattr(source, "name", "?")
        self._raw = 0          # raw offset converted so far
        self._start = 0        # converted offset of _buf[0]
        self._buf = b""
        self._eof = False

    def read(self, offset, length):
        if offset < self._start:
            raise ValueError("netascii source cannot go back to %d" % (offset,))
        drop = offset - self._start
        if drop:
            self._buf = self._buf[drop:]
            self._start = offset
        while len(self._buf) < length and not self._eof:
            raw = self.source.read(self._raw, self.chunk)
            if not raw:
                self._eof = True
                break
            self._raw += len(raw)
            self._buf += raw.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")
        return self._buf[:length]

    def close(self):
        self.source.close()
