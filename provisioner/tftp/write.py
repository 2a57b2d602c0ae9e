# -*- test-case-name: tests.test_tftp_write -*-
"""
Uploads (WRQ), off by default (C{tftp.write.enabled}): the write session,
which receives one upload from one client. Where the data lands (the upload
directory, its quota and per-client limits, the temporary file linked to
its name at the end) is L{provisioner.tftp.upload}.

L{WriteSession} is the receiving side of RFC 1350 (plus RFC 2347 options
and an RFC 7440 window: it acknowledges every C{windowsize} blocks, and
the last in-order block once per gap), with dally after the final ACK: a
repeated last DATA gets the final ACK again. Until the client has sent its
first DATA it may be an address that never asked (a spoofed WRQ), so, as
for reads (L{provisioner.tftp.session}), the ACK 0 or OACK is resent after
at most C{unansweredTimeout} seconds whatever C{timeout} was negotiated, at
most C{unansweredRetries} times, and only while the bytes sent stay within
L{AMPLIFICATION} times the request's.
"""

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from provisioner import errors
from provisioner.tftp import wire
from provisioner.tftp.transfer import AMPLIFICATION, MAX_BACKOFF, SessionEnding, SessionStats
from provisioner.tftp.udp import defaultSender

__all__ = ["WriteSession"]


class _NetasciiDecoder:
    """
    Netascii to local text, streamed: CR LF to LF, CR NUL to CR.
    """

    def __init__(self):
        self._cr = False

    def feed(self, data, final=False):
        if self._cr:
            data = b"\r" + data
            self._cr = False
        if data.endswith(b"\r") and not final:
            data = data[:-1]
            self._cr = True
        return data.replace(b"\r\n", b"\n").replace(b"\r\0", b"\r")


class WriteSession(SessionEnding, DatagramProtocol):
    """
    Receives one upload from one peer.

    @param upload: the L{provisioner.tftp.upload.Upload} the data goes to.
    """

    log = Logger()
    noisy = False
    onClose = None

    def __init__(self, upload, negotiated, peer, clock, timeout=1.0, retries=6, onEnd=None,
                 path="?", netascii=False, maxBytes=1 << 32, senderFactory=None,
                 maxDuration=None, unansweredTimeout=None, unansweredRetries=None,
                 requestBytes=None):
        """
        @param unansweredTimeout: until the client has sent a DATA, the
            retransmission timeout is at most this (seconds), whatever it
            negotiated; L{None}: no cap (C{tftp.unanswered_timeout}).
        @param unansweredRetries: retransmissions of the ACK 0 or OACK
            before the client has sent a DATA (at most C{retries});
            L{None}: C{retries} (C{tftp.unanswered_retries}).
        @param requestBytes: the size of the WRQ: until the client has
            answered, a retransmission goes only while the bytes sent stay
            within L{AMPLIFICATION} times this (L{None}: no byte bound).
        """
        self.upload = upload
        self.maxDuration = maxDuration
        self.negotiated = negotiated
        self.peer = (peer[0], peer[1])
        self.clock = clock
        self.blksize = negotiated.blksize
        self.windowsize = max(1, negotiated.windowsize)
        self.timeout = float(negotiated.timeout) if negotiated.timeout else float(timeout)
        self.maxRetries = retries
        self.retriesLeft = retries
        # Until the client answers (its first DATA): the capped timeout,
        # retries and byte budget.
        self.answered = False
        self.firstTimeout = self.timeout
        if unansweredTimeout is not None:
            self.firstTimeout = min(self.timeout, float(unansweredTimeout))
        if unansweredRetries is not None:
            self.retriesLeft = max(0, min(retries, unansweredRetries))
        self.budget = AMPLIFICATION * requestBytes if requestBytes else None
        self.unansweredBytes = 0
        self.backoff = 1
        self.onEnd = onEnd
        self.maxBytes = maxBytes
        self.decoder = _NetasciiDecoder() if netascii else None
        self.senderFactory = senderFactory or defaultSender
        self.expected = 1       # next block wanted (32-bit)
        self.inWindow = 0
        self.gapAcked = None
        self.done = False
        self.finalBlock = None
        self.lastSent = None
        self.sender = None
        self.stats = SessionStats(self.peer, path, "write", negotiated.tsize)
        self.stats.blksize = self.blksize
        self.stats.windowsize = self.windowsize
        self._timer = None

    def startProtocol(self):
        self.sender = self.senderFactory(self.transport, self.peer)
        self.stats.started = self.clock.seconds()
        self._startLimit()
        tsize = self.negotiated.tsize
        if tsize is not None and tsize > self.maxBytes:
            self._fail(wire.ERR_DISK_FULL, "upload too large", "refused")
            return
        room = self.upload.room()
        if tsize is not None and room is not None and tsize > room:
            self._fail(wire.ERR_DISK_FULL, "upload quota reached", "refused")
            return
        if self.negotiated.oack:
            self._send(wire.OptionAck(self.negotiated.oack).to_wire())
        else:
            self._send(wire.encodeAck(0))
        self._arm()

    def stopProtocol(self):
        self._cancelTimers()

    def _send(self, datagram):
        self.lastSent = datagram
        self._sendCounted(datagram)

    def _sendCounted(self, datagram):
        if not self.answered:
            self.unansweredBytes += len(datagram)
        self.sender.send(datagram)

    def _arm(self, delay=None):
        if delay is None:
            delay = (self.timeout if self.answered else self.firstTimeout) * self.backoff
        if self._timer is not None and self._timer.active():
            self._timer.reset(delay)
        else:
            self._timer = self.clock.callLater(delay, self._timedOut)

    def _cancelTimers(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timedOut(self):
        self._timer = None
        if self.done:
            self._close()
            return
        self.stats.timeouts += 1
        if self.retriesLeft <= 0:
            self._finish("timeout", "no DATA after block %d" % (self.expected - 1,))
            self._close()
            return
        self.retriesLeft -= 1
        self.backoff = min(self.backoff * 2, MAX_BACKOFF)
        self.gapAcked = None
        self.inWindow = 0
        if self.lastSent is not None and self._withinBudget(self.lastSent):
            self._sendCounted(self.lastSent)
        self._arm()

    def _withinBudget(self, datagram):
        """
        Whether C{datagram} may be resent: always once the client has
        answered; before, only while the bytes sent stay within
        L{AMPLIFICATION} times the request's.
        """
        return self.answered or self.budget is None or \
            self.unansweredBytes + len(datagram) <= self.budget

    def datagramReceived(self, data, addr):
        if addr[1] != self.peer[1] or addr[0] != self.peer[0]:
            if not (len(data) >= 2 and data[0] == 0 and data[1] == wire.ERROR):
                try:
                    self.transport.write(wire.Error(wire.ERR_UNKNOWN_TID,
                                                    "unknown transfer ID").to_wire(), addr)
                except Exception:
                    pass
            return
        if len(data) >= 4 and data[0] == 0 and data[1] == wire.DATA:
            if not self.answered:
                self.answered = True
                self.retriesLeft = self.maxRetries
            self._data((data[2] << 8) | data[3], data[4:])
            return
        try:
            packet = wire.decode(data)
        except wire.WireError:
            return
        if isinstance(packet, wire.Error) and not self.done:
            self._finish("aborted", "client sent ERROR %d %s" % (packet.code, packet.message))
            self._close()

    def _data(self, block, payload):
        if self.done:
            # Dally: the client did not get our final ACK.
            if self.finalBlock is not None and block == self.finalBlock & 0xFFFF:
                self.sender.send(wire.encodeAck(self.finalBlock))
            return
        if len(payload) > self.blksize:
            self._fail(wire.ERR_ILLEGAL_OP, "DATA larger than blksize", "error")
            return
        expected = self.expected
        if (block - expected) & 0xFFFF != 0:
            if self.gapAcked != expected:
                self.gapAcked = expected
                self.inWindow = 0
                self.stats.losses += 1
                self._send(wire.encodeAck(expected - 1))
            else:
                self.stats.duplicates += 1
            return
        final = len(payload) < self.blksize
        if self.decoder is not None:
            payload = self.decoder.feed(payload, final)
        if self.upload.size + len(payload) > self.maxBytes:
            self._fail(wire.ERR_DISK_FULL, "upload too large", "error")
            return
        try:
            self.upload.write(payload)
        except errors.DiskFull as e:
            self._fail(wire.ERR_DISK_FULL, str(e) or "disk full", "error")
            return
        except OSError as e:
            self._fail(wire.ERR_NOT_DEFINED, "write error", "error", str(e))
            return
        self.stats.blocks += 1
        self.expected = expected + 1
        self.gapAcked = None
        self.retriesLeft = self.maxRetries
        self.backoff = 1
        self.inWindow += 1
        if final:
            try:
                self.upload.commit()
            except errors.FileExists:
                self._fail(wire.ERR_FILE_EXISTS, "file already exists", "error", abort=False)
                return
            except OSError as e:
                self._fail(wire.ERR_NOT_DEFINED, "write error", "error", str(e), abort=False)
                return
            self.finalBlock = expected
            self.sender.send(wire.encodeAck(expected))
            self.stats.bytes = self.upload.size
            self._finish("complete")
            # Dally: stay to repeat the final ACK if it was lost.
            self._arm(self.timeout * 2)
            return
        if self.inWindow >= self.windowsize:
            self.inWindow = 0
            self._send(wire.encodeAck(expected))
        self._arm()

    def _fail(self, code, message, outcome, detail=None, abort=True):
        try:
            self.sender.send(wire.Error(code, message).to_wire())
        except Exception:
            pass
        if abort:
            self.upload.abort()
        self._finish(outcome, detail or message)
        self._close()

    def cancel(self, reason="cancelled"):
        if not self.done:
            self._finish("cancelled", reason)
        self._close()

    def _finish(self, outcome, detail=""):
        if self.done:
            return
        self.done = True
        if outcome != "complete":
            self.upload.abort()
        stats = self.stats
        stats.ended = self.clock.seconds()
        stats.outcome = outcome
        stats.detail = detail
        if not stats.bytes:
            stats.bytes = self.upload.size
        self._reportEnd(stats)
