# -*- test-case-name: tests.test_client,tests.test_mtftp_repair -*-
"""
The TFTP client library: unicast reads (RFC 1350, 2347, 2348, 2349, 7440)
with the client-adjustable window (the "flow control facility").

L{fetch} runs one download and falls back, level by level, against servers
that refuse or ignore options:

  1. C{adaptive} (or C{msftwindow}) + C{windowsize} + C{blksize} + C{tsize};
  2. C{windowsize} + C{blksize} + C{tsize} (plain RFC 7440);
  3. no options at all (RFC 1350: 512-byte blocks, window 1).

A server that ignores options answers with DATA 1 and the client drops to
RFC 1350 on the spot; a server that OACKs only some of them gets what it
accepted (an OACK without C{adaptive} means a fixed window). An ERROR 0, 4
or 8 to a request with options, or silence, moves to the next level.

Receiving: blocks are counted in 32 bits (the wire's 16-bit number wraps to
0 after 65535). A window ends every C{window} blocks after the last ACK,
and at the last block. A sequence gap, or a timeout, is a loss: the client
acknowledges the last in-order block (a duplicate ACK, so the server goes
back to the block after it), asks the controller for a smaller window and
ignores the rest of the broken window. A block that was already received
means the server missed our ACK: it is acknowledged again, once per burst.

L{fetchRanges} reads only some blocks of a file, with the option C{ranges}
(smart repair, for the multicast client), and places them at their offsets
(L{RangesView}).

The reactor is injected (C{IReactorUDP} and C{IReactorTime}).
"""

import fcntl
import hashlib
import struct
import termios

from twisted.internet import defer
from twisted.internet.interfaces import ISystemHandle
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from provisioner.net.sockopt import setPortBuffer
from provisioner.tftp import wire
from provisioner.client.window import AdaptiveController, WindowChange
from provisioner.client.options import FetchOptions, FetchResult
from provisioner.client.output import RangesView
from provisioner.tftp.adaptivewire import (
    ADAPTIVE_OPTION, ADAPTIVE_VERSION, MSFT_OPTION, MSFT_SERVER_MAGIC, encodeAdaptiveExtra,
    encodeMsftExtra, parseAdaptiveOption)
from provisioner.tftp.multicast.codec import RANGES_OPTION, formatRanges

__all__ = ["FetchOptions", "FetchResult", "TFTPError", "OptionsRefused", "TransferTimeout",
           "ReadProtocol", "RangesView", "fetch", "fetchRanges", "MODES"]

# Protocol levels, best first.
MODES = ("adaptive", "msftwindow", "rfc7440", "rfc2347", "rfc1350")

_H = struct.Struct("!H")
_DATA = b"\x00\x03"


def rearm(clock, timer, delay, what):
    """
    Make C{what} run C{delay} seconds from now, with at most one pending
    call: the same deadline pushed on (a C{reset}, far cheaper than a cancel
    and a new call when it happens once a datagram), or C{timer} replaced.

    @return: the pending call (C{timer} itself when it was reset).
    """
    if timer is not None and timer.active():
        if timer.func == what:
            timer.reset(delay)
            return timer
        timer.cancel()
    return clock.callLater(delay, what)


class TFTPError(Exception):
    """
    The server answered with an ERROR packet, or the transfer failed.

    @ivar code: the TFTP error code (or L{None} for a local failure).
    """

    def __init__(self, code, message):
        Exception.__init__(self, "%s%s" % ("" if code is None else "TFTP error %d: " % (code,),
                                            message))
        self.code = code
        self.message = message


class OptionsRefused(TFTPError):
    """
    The server refused a request with options: try the next level.
    """


class TransferTimeout(TFTPError):
    """
    The server stopped answering.

    @ivar started: whether any DATA or OACK had arrived.
    """

    def __init__(self, message, started):
        TFTPError.__init__(self, None, message)
        self.started = started


class ReadProtocol(DatagramProtocol):
    """
    One read request at one level, on its own ephemeral port.

    @ivar done: a Deferred firing with a L{FetchResult} once the last block
        is in and the port is closed (it stays open a moment after the last
        ACK, the dally, to acknowledge a retransmitted last block again).
    """

    log = Logger()

    def __init__(self, reactor, server, path, sink, mode, options, fetchOptions,
                 progress=None):
        self.reactor = reactor
        self.server = server
        self.path = path.encode("utf-8") if isinstance(path, str) else path
        self.sink = sink
        self.mode = mode
        self.requested = dict(options)
        self.requestOptions = options
        self.opts = fetchOptions
        self.progress = progress
        self.done = defer.Deferred()
        self.result = FetchResult()
        self.result.mode = mode
        self._hash = hashlib.sha256()
        self._peer = None          # the server's TID, once known
        self._blksize = 512
        self._window = 1
        self._extra = None         # encoder for trailing ACK bytes, or None
        self._controller = None
        self._last = 0             # last in-order block (32 bits)
        self._acked = 0            # last block acknowledged
        self._recovering = False   # a loss was signalled; waiting for _last + 1
        self._reacked = False      # already re-acked a stale burst since the last ACK
        self._timer = None
        self._tries = 0
        self._started = False
        self._finished = False
        self._start = None
        self._lastAckTime = None
        self._srtt = None          # ACK -> first block of the next window
        self._gap = None           # inter-arrival of blocks inside a window
        self._lastArrival = None
        self._dallyCall = None
        self._progressAt = None

    # -- lifecycle --

    def startProtocol(self):
        if self.opts.rcvbuf:
            setPortBuffer(self.transport, size=self.opts.rcvbuf)
        self._start = self.reactor.seconds()
        self._sendRequest()

    def _sendRequest(self):
        request = wire.ReadRequest(self.path, "octet", self.requestOptions)
        self.transport.write(request.to_wire(), self.server)
        timeout = self.opts.timeout * (2 ** self._tries)
        self._arm(timeout, self._requestTimedOut)

    def _requestTimedOut(self):
        self._timer = None
        self._tries += 1
        if self._tries > self.opts.retries:
            self._fail(TransferTimeout("no answer from %s:%d" % self.server, False))
            return
        self._sendRequest()

    def _arm(self, delay, what):
        self._timer = rearm(self.reactor, self._timer, delay, what)

    def _disarm(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _fail(self, failure):
        if self._finished:
            return
        self._finished = True
        self._disarm()
        self._close()
        self.done.errback(failure)

    def _close(self):
        if self.transport is not None:
            port, self.transport = self.transport, None
            port.stopListening()

    def abort(self):
        """
        Stop now (the caller gave up).
        """
        self._fail(TFTPError(None, "aborted"))

    # -- receiving --

    def datagramReceived(self, datagram, addr):
        if self._finished and self._dallyCall is None:
            return
        if self._peer is None:
            if addr[0] != self.server[0]:
                return
        elif addr != self._peer:
            self.log.debug("packet from unknown TID {addr}", addr=addr)
            self.transport.write(wire.Error(wire.ERR_UNKNOWN_TID, "unknown transfer ID")
                                 .to_wire(), addr)
            return
        if datagram[:2] == _DATA and len(datagram) >= 4:
            self._data(_H.unpack_from(datagram, 2)[0], datagram[4:], addr)
            return
        try:
            packet = wire.decode(datagram)
        except wire.WireError as e:
            self.log.debug("undecodable datagram from {addr}: {why}", addr=addr, why=e)
            return
        if isinstance(packet, wire.OptionAck):
            self._oack(packet, addr)
        elif isinstance(packet, wire.Error):
            self._error(packet, addr)

    def _error(self, packet, addr):
        if self._finished:
            return
        if not self._started and self.requestOptions and packet.code in (
                wire.ERR_NOT_DEFINED, wire.ERR_ILLEGAL_OP, wire.ERR_OPTION_REFUSED):
            self._fail(OptionsRefused(packet.code, packet.message))
        else:
            self._fail(TFTPError(packet.code, packet.message))

    def _oack(self, packet, addr):
        if self._started:
            if addr == self._peer and self._acked == 0:
                # Our ACK 0 was lost: acknowledge the OACK again.
                self._sendAck(0, resend=True)
            return
        options = packet.optionDict
        try:
            self._applyOptions(options)
        except TFTPError as e:
            self.transport.write(wire.Error(wire.ERR_OPTION_REFUSED, e.message).to_wire(), addr)
            self._fail(OptionsRefused(wire.ERR_OPTION_REFUSED, e.message))
            return
        self._begin(addr, options)
        self._sendAck(0)

    def _begin(self, addr, options):
        """
        The transfer has begun: an OACK with C{options} came from C{addr},
        or DATA 1 to a request whose options the server ignored (C{{}}). A
        read of a L{RangesView} learns whether only the listed blocks come.
        """
        self._peer = addr
        self._started = True
        self._tries = 0
        self._progressAt = self.reactor.seconds()
        if RANGES_OPTION in self.requested:
            self.sink.granted(RANGES_OPTION in options)

    def _applyOptions(self, options):
        now = self.reactor.seconds()
        blksize = options.get("blksize")
        if blksize is not None:
            n = _int(blksize)
            asked = _int(self.requested.get("blksize", "0"))
            if n is None or n < 8 or (asked and n > asked):
                raise TFTPError(None, "bad blksize %r" % (blksize,))
            self._blksize = n
        window = options.get("windowsize")
        if window is not None:
            n = _int(window)
            asked = _int(self.requested.get("windowsize", "0"))
            if n is None or n < 1 or (asked and n > asked):
                raise TFTPError(None, "bad windowsize %r" % (window,))
            self._window = n
        tsize = options.get("tsize")
        if tsize is not None:
            self.result.tsize = _int(tsize)
        mode = "rfc2347" if (blksize is not None or tsize is not None) else "rfc1350"
        if window is not None:
            mode = "rfc7440"
        if ADAPTIVE_OPTION in options and ADAPTIVE_OPTION in self.requested:
            parsed = parseAdaptiveOption(options[ADAPTIVE_OPTION])
            if parsed is None or parsed[0] != ADAPTIVE_VERSION:
                raise TFTPError(None, "unsupported adaptive %r" % (options[ADAPTIVE_OPTION],))
            mode = "adaptive"
            self._extra = encodeAdaptiveExtra
            limit = self.opts.maxWindow
            if parsed[1] is not None:
                limit = min(limit, parsed[1])
            self._controller = self._newController(limit, now)
        elif options.get(MSFT_OPTION, "").strip() == MSFT_SERVER_MAGIC and \
                MSFT_OPTION in self.requested:
            mode = "msftwindow"
            self._extra = encodeMsftExtra
            self._controller = self._newController(min(255, self.opts.maxWindow), now)
        self.result.mode = mode
        self.result.blksize = self._blksize
        self.result.windowsize = self._window

    def _newController(self, limit, now):
        if self.opts.pin:
            return None
        asked = _int(self.requested.get("windowsize", "1")) or 1
        controller = AdaptiveController(
            initial=asked, growWindows=self.opts.growWindows, growSeconds=self.opts.growSeconds,
            decrease=self.opts.decrease, limit=limit, now=now - self._start)
        controller.accept(self._window, now - self._start)
        return controller

    def _toBlock(self, wireBlock):
        """
        The 32-bit block number nearest to the next expected one.
        """
        expected = self._last + 1
        candidate = (expected & ~0xFFFF) | wireBlock
        if candidate - expected > 0x8000:
            candidate -= 0x10000
        elif expected - candidate > 0x8000:
            candidate += 0x10000
        return candidate

    def _data(self, wireBlock, payload, addr):
        if not self._started:
            if wireBlock != 1:
                return
            # The server ignored our options: plain RFC 1350 from here.
            self._begin(addr, {})
            self._blksize = 512
            self._window = 1
            self.result.mode = "rfc1350"
            self.result.blksize = 512
            self.result.windowsize = 1
        if self._finished:
            # Dallying: the last ACK was lost.
            if self._toBlock(wireBlock) <= self._last:
                self._sendAck(self._last, resend=True)
            return
        now = self.reactor.seconds()
        block = self._toBlock(wireBlock)
        expected = self._last + 1
        if block == expected:
            self._arrived(now, block)
            self._deliver(block, payload, now)
        elif block > expected:
            if not self._recovering:
                self._loss(now, "loss")
        else:
            self.result.duplicates += 1
            if not self._reacked:
                # The server missed our ACK: tell it what we hold, once per
                # burst.
                self._sendAck(self._last)
                self._reacked = True

    def _arrived(self, now, block):
        if block == self._acked + 1 and self._lastAckTime is not None:
            sample = now - self._lastAckTime
            self._srtt = sample if self._srtt is None else 0.875 * self._srtt + 0.125 * sample
        elif self._lastArrival is not None:
            sample = now - self._lastArrival
            self._gap = sample if self._gap is None else 0.875 * self._gap + 0.125 * sample
        self._lastArrival = now

    def _deliver(self, block, payload, now):
        self._recovering = False
        self._tries = 0
        self._progressAt = now
        self._last = block
        self.sink.write(payload)
        self._hash.update(payload)
        self.result.size += len(payload)
        final = len(payload) < self._blksize
        if final:
            self._complete(now)
            return
        if block - self._acked >= self._window:
            if self._controller is not None:
                self._window = self._controller.windowCompleted(now - self._start)
            self._sendAck(block)
        else:
            self._arm(self._dataTimeout(), self._dataTimedOut)
        if self.progress is not None:
            self.progress(self.result.size, self.result.tsize)

    def _dataTimeout(self):
        """
        How long to wait for the next block: a few round trips, within
        [minTimeout, timeout]; doubled for every timeout in a row, up to
        C{timeout}.
        """
        estimate = self.opts.timeout
        if self._srtt is not None:
            estimate = 4 * self._srtt + 8 * (self._gap or 0.0) + 0.002
        estimate = max(self.opts.minTimeout, min(self.opts.timeout, estimate))
        return min(estimate * (2 ** self._tries), max(estimate, self.opts.timeout))

    def _sendAck(self, block, resend=False, loss=False):
        extra = b""
        if self._extra is not None:
            extra = self._extra(self._window, loss) if loss else self._extra(self._window)
        if not resend:
            self._acked = block
            self._reacked = False
            self._lastAckTime = self.reactor.seconds()
        if not self._finished:
            self._arm(self._dataTimeout(), self._dataTimedOut)
        self.transport.write(wire.encodeAck(block, extra), self._peer)

    def _loss(self, now, reason):
        self.result.losses += 1
        if self._controller is not None:
            self._window = self._controller.lossDetected(now - self._start, reason)
        self._recovering = True
        self._sendAck(self._last, loss=True)

    def _dataTimedOut(self):
        self._timer = None
        if _pending(self.transport):
            # The data is here, we were just not scheduled in time (a busy
            # machine): not a loss. Let the reactor read it.
            self._arm(self._dataTimeout(), self._dataTimedOut)
            return
        self._tries += 1
        self.result.timeouts += 1
        now = self.reactor.seconds()
        if self._tries > self.opts.retries and now - self._progressAt >= self.opts.idleLimit:
            self._fail(TransferTimeout("transfer timed out after block %d (nothing for "
                                       "%.0fs)" % (self._last, now - self._progressAt), True))
            return
        self.result.losses += 1
        if self._controller is not None:
            self._window = self._controller.lossDetected(now - self._start, "timeout")
        self._recovering = True
        self._sendAck(self._last, loss=True)

    def _complete(self, now):
        self._finished = True
        self._disarm()
        self._sendAck(self._last)
        result = self.result
        result.elapsed = now - self._start
        result.sha256 = self._hash.hexdigest()
        if self._controller is not None:
            result.trace = list(self._controller.trace)
            result.windowsize = self._controller.trace[0].new
        else:
            result.trace = [WindowChange(0.0, self._window, self._window, "fixed", None, False)]
        if self.progress is not None:
            self.progress(result.size, result.tsize)
        # Dally: re-acknowledge a retransmitted last block for a moment.
        dally = max(self.opts.minTimeout, min(self.opts.timeout, 2 * (self._srtt or 0.05)))
        self._dallyCall = self.reactor.callLater(dally, self._endDally)

    def _endDally(self):
        self._dallyCall = None
        self._close()
        self.done.callback(self.result)

    def stopProtocol(self):
        self._disarm()
        if self._dallyCall is not None and self._dallyCall.active():
            self._dallyCall.cancel()
        self._dallyCall = None


def _pending(transport):
    """
    Whether a datagram waits in the socket of C{transport} (FIONREAD), so
    that a timer that fired before the reactor read it is not taken for a
    loss. L{False} when it cannot be told (a port without a system handle,
    C{ISystemHandle}; other platforms).
    """
    if not ISystemHandle.providedBy(transport):
        return False
    sock = transport.getHandle()
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD,
                                              b"\0\0\0\0"))[0] > 0
    except (OSError, ValueError, AttributeError):
        return False


def _int(text):
    try:
        return int(str(text).strip())
    except ValueError:
        return None


@defer.inlineCallbacks
def fetch(reactor, host, port, path, sink, options=None, progress=None, interface=""):
    """
    Download C{path} from a TFTP server into C{sink} (anything with
    C{write(bytes)}; it receives the file in order, once).

    @param reactor: provides C{IReactorUDP} and C{IReactorTime}.
    @param host: the server's IP address (text).
    @param progress: called as C{progress(received, total or None)}.
    @return: a Deferred firing with a L{FetchResult}, or failing with
        L{TFTPError} (L{TransferTimeout} when the server stopped answering).
    """
    options = options or FetchOptions()
    attempts = []
    levels = options.levels()
    for i, (mode, requestOptions) in enumerate(levels):
        proto = ReadProtocol(reactor, (host, port), path, sink, mode, requestOptions, options,
                             progress)
        reactor.listenUDP(0, proto, interface=interface, maxPacketSize=65536 + 4)
        try:
            result = yield proto.done
        except OptionsRefused as e:
            attempts.append((mode, str(e)))
            if i + 1 < len(levels):
                continue
            raise
        except TransferTimeout as e:
            attempts.append((mode, str(e)))
            if not e.started and i + 1 < len(levels) and requestOptions:
                continue
            raise
        attempts.append((mode, "ok"))
        result.attempts = attempts
        return result


def fetchRanges(reactor, host, port, path, view, blksize=1428, windowsize=64, timeout=1,
                retries=6, interface=""):
    """
    Read only the blocks of C{path} that C{view} lists, with the RFC 2347
    option C{ranges} (smart repair: the blocks a multicast client
    missed), and place them in the file: an ordinary windowed (RFC 7440)
    read of the view that the server makes of them. A server that does not
    echo C{ranges} sends the whole file, which the view writes as it is.

    @param view: a L{RangesView} (its C{unit}, C{ranges} and output).
    @param timeout: the transfer's timeout (the RFC 2349 option), the
        first retransmission timeout and the ceiling of the data timeout.
    @return: a Deferred firing with a L{FetchResult} of the view's bytes
        (C{view.honoured} says which data came), or failing with
        L{TFTPError} (L{TransferTimeout} when the server stopped
        answering).
    """
    options = FetchOptions(blksize=blksize, windowsize=windowsize, adaptive=False,
                           timeout=timeout, retries=retries, fallback=False, rcvbuf=8 << 20)
    requestOptions = [("blksize", str(blksize)), ("tsize", "0"),
                      ("timeout", str(max(1, int(timeout))))]
    if windowsize > 1:
        requestOptions.append(("windowsize", str(windowsize)))
    requestOptions.append((RANGES_OPTION, formatRanges(view.unit, view.ranges)))
    proto = ReadProtocol(reactor, (host, port), path, view, "rfc7440", requestOptions, options)
    reactor.listenUDP(0, proto, interface=interface, maxPacketSize=65536 + 4)
    return proto.done
