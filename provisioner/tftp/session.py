# -*- test-case-name: tests.test_tftp_session -*-
"""
One read transfer (RRQ) on its own UDP port: the window, the timers, the
block-number rollover and the retransmissions.

The dispatcher (L{provisioner.tftp.server}) binds a fresh ephemeral port
with the session as its protocol; the session talks to the one peer that
asked. The socket is bound, not connected, so that a datagram from any other
address reaches the session and is answered with ERROR 5 (unknown transfer
ID) while the transfer goes on (RFC 1350); with a connected socket the
kernel would drop it and answer ICMP port-unreachable instead.

Rules, in the order the RFCs give them:

  - Options were acknowledged (OACK): wait for ACK 0 before DATA 1. An
    ERROR right after the OACK is a client that only wanted the size (a
    I{tsize probe}, as PXE ROMs and EDK2 do) or refused an option: logged
    as such, not as a failure.
  - Windows (RFC 7440): the L{provisioner.tftp.window.IWindowPolicy} says
    how many blocks; an ACK of the last block of the window starts the next
    one; an ACK of an earlier block means the client saw a gap: go back to
    the block after it (go-back-N). A duplicate ACK never sends anything
    (no Sorcerer's Apprentice, RFC 1123 4.2.3.1); only the retransmission
    timer resends, from the last acknowledged block, with exponential
    backoff, at most C{retries} times, so an address that never answers
    costs at most C{retries + 1} windows of packets. The first window of a
    transfer that has not been answered yet is an OACK or one block.
  - Block numbers are 32-bit inside and wrap to 0 on the wire; the 32-bit
    block an ACK means is inferred from the window in flight.
  - The transfer ends with a block shorter than blksize (0 bytes when the
    size is a multiple of it). After the last ACK the port stays open a
    short while (dally) and absorbs late duplicates silently.

Memory: a session holds no file data between windows (each window is read
with one C{pread}, sent, and dropped), so a slow peer costs a socket, a
timer and a few hundred bytes.

When a session ends it calls C{onEnd(stats)} with a L{SessionStats}.
"""

import socket
import struct
from time import monotonic as _monotonic

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from provisioner.tftp import wire
from provisioner.tftp.udp import WindowSender
from provisioner.tftp.window import MAX_WINDOW, FixedWindow

__all__ = ["ReadSession", "SessionStats", "NetasciiSource", "TransportSender",
           "MAX_BACKOFF"]

# Retransmission intervals grow x2 per timeout up to this multiple of the
# first one.
MAX_BACKOFF = 8
# How long a finished read session keeps its port (seconds, at most).
DALLY = 1.0
# The fast lane: how long to wait for the next ACK outside the reactor
# (milliseconds), and how many datagrams to handle there before going back.
FAST_WAIT_MS = 1
FAST_BUDGET = 512
# ... and for at most this long (seconds), so that new requests wait little.
FAST_SLICE = 0.004
_FAST_TIMEVAL = struct.pack("@ll", 0, FAST_WAIT_MS * 1000)

_ACK = wire.ACK
_ERROR = wire.ERROR
_ERR5 = wire.Error(wire.ERR_UNKNOWN_TID, "unknown transfer ID").to_wire()
_H = struct.Struct("!H")
_H2 = struct.Struct("!HH")
_DATA = wire.DATA


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


class TransportSender:
    """
    A sender for transports without a socket (fakes in tests, or any
    C{IUDPTransport}): one C{write} per datagram.
    """

    headerSize = 4

    def __init__(self, transport, peer):
        self.transport = transport
        self.peer = peer
        self.calls = 0

    def header(self, block):
        """
        As L{WindowSender.header}.
        """
        return wire.encodeData(block, b"")

    def send(self, datagram, peer=None):
        self.calls += 1
        self.transport.write(datagram, peer or self.peer)
        return True

    def sendBlocks(self, first, data, blksize, count):
        view = memoryview(data)
        header = self.header
        for i in range(count):
            off = i * blksize
            self.send(header(first + i) + bytes(view[off:off + blksize]))
        return count


def defaultSender(transport, peer):
    """
    L{WindowSender} on the transport's socket when it has one (a real
    Twisted UDP port), else L{TransportSender}.
    """
    sock = getattr(transport, "socket", None)
    if sock is not None and hasattr(sock, "sendmsg"):
        return WindowSender(sock, peer)
    return TransportSender(transport, peer)


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


class ReadSession(SessionEnding, DatagramProtocol):
    """
    Sends one data source to one peer.

    @param source: an L{provisioner.interfaces.IDataSource}.
    @param negotiated: the L{provisioner.tftp.negotiate.Negotiated} options.
    @param peer: C{(host, port)} of the client.
    @param clock: an C{IReactorTime}.
    @param timeout: first retransmission timeout (the client's C{timeout}
        option wins when it sent one).
    @param retries: retransmissions before giving up.
    @param onEnd: called once with the L{SessionStats} when the transfer is
        over (before the dally).
    @param path: the requested path, for stats and logs.
    @param netascii: convert to netascii on the fly (window 1).
    @param senderFactory: C{(transport, peer)} to a sender (tests).
    @param dally: how long the port stays open after the last ACK (at most
        the timeout).
    @param fastLane: a callable returning true while this session may wait
        for its next ACK in a short blocking C{poll} on its own socket
        instead of returning to the reactor (the server allows it when this
        is the only transfer in flight); L{None} disables it.
    @param maxDuration: seconds after which the transfer is ended with an
        ERROR whatever its progress (L{None} or 0: no limit).
    @param timeoutMin: when the client did not negotiate C{timeout}, the
        retransmission timeout follows the measured round trip (RFC 6298:
        mean + 4 x variation, samples only from windows sent once) between
        this and C{timeout}; L{None} keeps C{timeout} fixed.
    """

    log = Logger()
    noisy = False
    # Called with the session when its port closes (after the dally).
    onClose = None

    def __init__(self, source, negotiated, peer, clock, timeout=1.0, retries=6, onEnd=None,
                 path="?", netascii=False, senderFactory=None, dally=DALLY,
                 fastLane=None, maxDuration=None, timeoutMin=None):
        self.source = NetasciiSource(source) if netascii else source
        self.maxDuration = maxDuration
        self.negotiated = negotiated
        self.peer = (peer[0], peer[1])
        self.clock = clock
        self.blksize = negotiated.blksize
        self.policy = negotiated.windowPolicy()
        self.netascii = netascii
        self.timeout = float(negotiated.timeout) if negotiated.timeout else float(timeout)
        # the adaptive retransmission timeout (None: fixed at self.timeout)
        self.timeoutMin = (min(float(timeoutMin), self.timeout)
                           if timeoutMin is not None and not negotiated.timeout else None)
        self.rto = self.timeout
        self.srtt = None
        self.rttvar = 0.0
        self._rttStart = None
        self.maxRetries = retries
        self.onEnd = onEnd
        self.senderFactory = senderFactory or defaultSender
        self.extension = negotiated.extension is not None
        self.dallyTime = min(dally, self.timeout)
        size = getattr(source, "size", None)
        # 32-bit block numbers: the last block (None until known), the last
        # one acknowledged in order, the last one sent.
        self.last = None
        if not netascii and isinstance(size, int):
            self.last = size // self.blksize + 1
        self.acked = 0
        self.sent = 0
        self.highest = 0
        self.retriesLeft = retries
        self.backoff = 1
        self.sender = None
        self.stats = SessionStats(self.peer, path, "read", None if netascii else size)
        self.stats.blksize = self.blksize
        self.stats.windowsize = negotiated.windowsize
        self.waitingOACK = bool(negotiated.oack)
        self.answered = False
        self.done = False
        self._timer = None
        self._pause = None
        self._dally = None
        self._resume = None
        self._wentBack = False
        self.fastLane = fastLane
        self._inFast = False

    # -- life cycle

    def startProtocol(self):
        self.sender = self.senderFactory(self.transport, self.peer)
        self.stats.started = self.clock.seconds()
        self._startLimit()
        if self.waitingOACK:
            self._sendOACK()
        else:
            self._sendWindow()

    def stopProtocol(self):
        self._cancelTimers()

    def _cancelTimers(self):
        for name in ("_timer", "_pause", "_dally", "_resume"):
            call = getattr(self, name)
            if call is not None:
                if call.active():
                    call.cancel()
                setattr(self, name, None)

    def cancel(self, reason="cancelled"):
        """
        Stop now (service shutdown): no more packets.
        """
        if not self.done:
            self._finish("cancelled", reason)
        self._close()

    def _finish(self, outcome, detail=""):
        """
        The transfer is over: stats out, timers off, source closed.
        """
        if self.done:
            return
        self.done = True
        self._cancelTimers()
        stats = self.stats
        stats.ended = self.clock.seconds()
        stats.outcome = outcome
        stats.detail = detail
        if self.last is not None and self.acked >= self.last:
            stats.bytes = stats.size if stats.size is not None else self._ackedBytes()
        else:
            stats.bytes = self._ackedBytes()
        try:
            self.source.close()
        except Exception:
            self.log.failure("closing {source}", source=self.source)
        self._reportEnd(stats)

    def _ackedBytes(self):
        n = self.acked * self.blksize
        if self.stats.size is not None:
            n = min(n, self.stats.size)
        return n

    # -- timers

    def _rttSample(self, now):
        """
        An ACK answered a window sent once: fold its round trip into the
        retransmission timeout (RFC 6298 section 2, Karn's rule).
        """
        start, self._rttStart = self._rttStart, None
        if start is None or self.timeoutMin is None:
            return
        sample = now - start
        if sample < 0:
            return
        if self.srtt is None:
            self.srtt = sample
            self.rttvar = sample / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - sample)
            self.srtt = 0.875 * self.srtt + 0.125 * sample
        self.rto = min(self.timeout, max(self.timeoutMin, self.srtt + 4 * self.rttvar))

    def _arm(self):
        delay = self.rto * self.backoff
        timer = self._timer
        if timer is not None and timer.active():
            timer.reset(delay)
        else:
            self._timer = self.clock.callLater(delay, self._timedOut)

    def _timedOut(self):
        self._timer = None
        if self.done:
            return
        self.stats.timeouts += 1
        if self.rto < self.timeout:
            # Below the configured timeout (an adapted one): back it off
            # (RFC 6298 5.5) without using a retry, so a peer that went
            # quiet is given up no sooner than with the fixed timeout.
            self.rto = min(self.timeout, self.rto * 2)
        elif self.retriesLeft <= 0:
            if self.waitingOACK:
                self._finish("timeout", "no answer to the OACK")
            else:
                self._finish("timeout", "no ACK after block %d" % (self.acked,))
            self._close()
            return
        else:
            self.retriesLeft -= 1
            self.backoff = min(self.backoff * 2, MAX_BACKOFF)
        self.policy.onTimeout(self.clock.seconds())
        if self._pause is not None and self._pause.active():
            self._pause.cancel()
            self._pause = None
        if self.waitingOACK:
            self._sendOACK()
        else:
            self._sendWindow()

    # -- sending

    def _sendOACK(self):
        self.sender.send(wire.OptionAck(self.negotiated.oack).to_wire())
        self._arm()

    def _sendWindow(self):
        self._pause = None
        self._wentBack = False
        if self._resume is not None:
            if self._resume.active():
                self._resume.cancel()
            self._resume = None
        first = self.acked + 1
        n = self.policy.size()
        if n < 1:
            n = 1
        elif n > MAX_WINDOW:
            n = MAX_WINDOW
        if not self.answered:
            # Nothing sent to an address that never answered beyond one
            # block per attempt: no amplification.
            n = 1
        last = self.last
        if last is not None and first + n - 1 > last:
            n = last - first + 1
        bs = self.blksize
        try:
            data = self.source.read((first - 1) * bs, n * bs)
        except Exception as e:
            self.log.failure("reading {source}", source=getattr(self.source, "name", "?"))
            self.sender.send(wire.Error(wire.ERR_NOT_DEFINED, "read error").to_wire())
            self._finish("error", "read error: %s" % (e,))
            self._close()
            return
        if len(data) < n * bs:
            # The end of the data (a source of unknown size, or one that
            # shrank): this window holds the last block.
            n = len(data) // bs + 1
            last = self.last = first + n - 1
        count = self.sender.sendBlocks(first, data, bs, n)
        end = first + n - 1
        stats = self.stats
        stats.blocks += count
        if first <= self.highest:
            stats.retransmits += min(self.highest, first + count - 1) - first + 1
            self._rttStart = None
        else:
            self._rttStart = self.clock.seconds()
        self.sent = end
        if end > self.highest:
            self.highest = end
        if count < n:
            # The socket buffer filled up: the rest of this window in a
            # moment (not a loss).
            self._resume = self.clock.callLater(0.002, self._resumeWindow, first + count, end,
                                                data[count * bs:])
        self._arm()

    def _resumeWindow(self, start, end, data):
        self._resume = None
        if self.done or start <= self.acked:
            return
        bs = self.blksize
        n = end - start + 1
        count = self.sender.sendBlocks(start, data, bs, n)
        self.stats.blocks += count
        if count < n:
            self._resume = self.clock.callLater(0.002, self._resumeWindow, start + count, end,
                                                data[count * bs:])

    # -- receiving

    def datagramReceived(self, data, addr):
        self._handle(data, addr)
        if self.fastLane is not None and not self._inFast and not self.done:
            self._runFast()

    def _runFast(self):
        """
        The fast lane. In lockstep and small-window transfers most of the
        time per window is the reactor's own work around each datagram;
        when the server allows it (one transfer in flight), wait for the
        next ACK in a blocking C{recvfrom} on this socket alone, bounded by
        C{SO_RCVTIMEO} (L{FAST_WAIT_MS}), and handle up to L{FAST_BUDGET}
        datagrams or L{FAST_SLICE} seconds before going back to the reactor
        (where new requests are seen). The process sleeps in the kernel
        meanwhile: no spinning. The socket is non-blocking again
        before the reactor sees it.
        """
        transport = self.transport
        sock = getattr(transport, "socket", None)
        if sock is None:
            return
        allowed = self.fastLane
        if not allowed():
            return
        recvfrom = sock.recvfrom
        now = _monotonic
        end = now() + FAST_SLICE
        self._inFast = True
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _FAST_TIMEVAL)
            sock.setblocking(True)
            if self._isLockstep():
                self._lockstep(sock, now, end)
                return
            for i in range(FAST_BUDGET):
                try:
                    data, addr = recvfrom(65536)
                except OSError:
                    break
                self._handle(data, addr)
                if self.done or self.transport is None or now() > end:
                    break
        finally:
            self._inFast = False
            try:
                sock.setblocking(False)
            except OSError:
                pass

    def _isLockstep(self):
        policy = self.policy
        return (type(policy) is FixedWindow and policy.n == 1 and not self.extension
                and not self.netascii and self.last is not None and not self.waitingOACK
                and self._pause is None and self._resume is None
                and isinstance(self.sender, WindowSender))

    def _lockstep(self, sock, now, end):
        """
        The fast lane for window 1 (RFC 1350 clients, the most common boot
        ROM case), where per-block overhead is everything: the expected ACK
        is recognised from its four bytes, the next block is cut from a
        read-ahead buffer (one C{pread} per 64 KiB, dropped when the
        lane ends) and sent with one C{sendto}. Anything else (a stray or
        duplicate ACK, an ERROR, a wrong TID) goes through L{_handle}.
        """
        recvfrom = sock.recvfrom
        sendto = sock.sendto
        peer = self.peer
        host, port = peer
        bs = self.blksize
        last = self.last
        size = self.stats.size
        read = self.source.read
        pack = _H2.pack
        stats = self.stats
        # Read ahead about 64 KiB (big allocations are mmap'd and faulted in
        # again each time: slower than one pread per big block).
        chunk = max(1, 65536 // bs) * bs
        bufStart = bufEnd = 0
        view = None
        progressed = False
        try:
            while now() <= end:
                try:
                    data, addr = recvfrom(2048)
                except OSError:
                    break
                sent = self.sent
                if (len(data) != 4 or data[1] != _ACK or data[0] != 0 or addr[1] != port
                        or addr[0] != host or ((data[2] << 8) | data[3]) != sent & 0xFFFF
                        or sent == self.acked):
                    self._handle(data, addr)
                    if self.done or self.transport is None:
                        return
                    bufStart = bufEnd = 0
                    continue
                self.acked = sent
                progressed = True
                if sent >= last:
                    self.retriesLeft = self.maxRetries
                    self.backoff = 1
                    self._complete()
                    return
                off = sent * bs
                hi = off + bs
                if size is not None and hi > size:
                    hi = size
                if off < bufStart or hi > bufEnd:
                    try:
                        buf = read(off, chunk)
                    except Exception:
                        self._handle(data, addr)
                        return
                    view = memoryview(buf)
                    bufStart = off
                    bufEnd = off + len(buf)
                    if hi > bufEnd:
                        hi = bufEnd
                nxt = sent + 1
                try:
                    sendto(pack(_DATA, nxt & 0xFFFF) + view[off - bufStart:hi - bufStart], peer)
                except OSError:
                    pass
                self.sent = nxt
                if nxt > self.highest:
                    self.highest = nxt
                else:
                    stats.retransmits += 1
                stats.blocks += 1
        finally:
            if progressed and not self.done:
                self.retriesLeft = self.maxRetries
                self.backoff = 1
                self._arm()

    def _handle(self, data, addr):
        if addr[1] != self.peer[1] or addr[0] != self.peer[0]:
            self._wrongTID(data, addr)
            return
        if len(data) >= 4 and data[0] == 0 and data[1] == _ACK:
            if not self.done:
                self._ack((data[2] << 8) | data[3], data[4:] if len(data) > 4 else b"")
            return
        if self.done:
            return
        try:
            packet = wire.decode(data)
        except wire.WireError as e:
            self.log.debug("undecodable datagram from {peer}: {error}", peer=addr, error=str(e))
            return
        if isinstance(packet, wire.Error):
            self._clientError(packet)
        elif isinstance(packet, wire.ReadRequest):
            # The client repeated its request to our port: ignore.
            pass
        else:
            self.log.debug("unexpected {packet!r} from {peer}", packet=packet, peer=addr)

    def _wrongTID(self, data, addr):
        # Never answer an ERROR with an ERROR.
        if len(data) >= 2 and data[0] == 0 and data[1] == _ERROR:
            return
        if self.sender is not None:
            try:
                if isinstance(self.sender, TransportSender):
                    self.sender.send(_ERR5, addr)
                else:
                    self.sender.sock.sendto(_ERR5, addr)
            except OSError:
                pass
        self.log.debug("datagram from unknown TID {addr} (session with {peer})",
                       addr=addr, peer=self.peer)

    def _clientError(self, packet):
        if self.waitingOACK:
            self.answered = True
            self._finish("probe", "client answered the OACK with ERROR %d %s" % (
                packet.code, packet.message))
        else:
            self._finish("aborted", "client sent ERROR %d %s" % (packet.code, packet.message))
        self._close()

    def _ack(self, block, extra):
        if self.waitingOACK:
            if block != 0:
                return
            self.waitingOACK = False
            self.answered = True
            self.retriesLeft = self.maxRetries
            self.backoff = 1
            if extra and self.extension:
                self.policy.onAckExtra(extra, self.clock.seconds())
            self._next()
            return
        acked = self.acked
        delta = (block - acked) & 0xFFFF
        if delta == 0:
            self.stats.duplicates += 1
            if extra and self.extension:
                now = self.clock.seconds()
                self.policy.onAckExtra(extra, now)
                isLoss = getattr(self.policy, "repeatIsLoss", None)
                if isLoss is not None and isLoss(extra) and self.sent > acked \
                        and not self._wentBack:
                    # An adaptive client repeats its last ACK, marked as a
                    # loss, when the first block of a window is lost: go
                    # back once per window (docs/wire/adaptive.md).
                    self._wentBack = True
                    self.stats.losses += 1
                    self.policy.onLoss(now)
                    self._next()
            return
        if delta > self.sent - acked:
            # Older than what we hold, or never sent: a stray ACK.
            self.stats.duplicates += 1
            return
        block = acked + delta
        self.acked = block
        self.answered = True
        self.retriesLeft = self.maxRetries
        self.backoff = 1
        now = self.clock.seconds()
        if self._rttStart is not None:
            self._rttSample(now)
        if extra and self.extension:
            self.policy.onAckExtra(extra, now)
        if self.last is not None and block >= self.last:
            self._complete()
            return
        if block < self.sent:
            self.stats.losses += 1
            self.policy.onLoss(now)
        else:
            self.policy.onWindowAcked(now)
        self._next()

    def _next(self):
        delay = self.policy.delay()
        if delay and delay > 0:
            if self._pause is None or not self._pause.active():
                self._pause = self.clock.callLater(delay, self._sendWindow)
            self._arm()
        else:
            self._sendWindow()

    def _complete(self):
        self._finish("complete")
        if self.dallyTime > 0:
            self._dally = self.clock.callLater(self.dallyTime, self._close)
        else:
            self._close()
