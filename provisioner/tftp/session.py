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
    backoff, at most C{retries} times.
  - Until the client has answered once (ACK 0 of the OACK, or the ACK of
    DATA 1), the peer may be an address that never asked (a spoofed
    request): only the first datagram is ever sent (the OACK, or DATA 1
    alone whatever the window), the retransmission timeout is capped
    (C{unansweredTimeout}, whatever C{timeout} the client negotiated; the
    OACK still echoes it), at most C{unansweredRetries} retransmissions
    are made, and only while the bytes sent stay within
    L{AMPLIFICATION} times the bytes of the request (a plain RRQ's DATA 1
    is never retransmitted by the timer: the client's repeated request,
    which the dispatcher hands to L{ReadSession.requestRepeated}, gets it
    again, one datagram per request datagram). A peer that never answers
    frees its slot after C{T x (2 ** (unansweredRetries + 1) - 1)} seconds
    (up to 3 retries; the backoff stops at 8 x T), T the smaller of its
    timeout and C{unansweredTimeout}: 6 s with the defaults.
  - Block numbers are 32-bit inside and wrap to 0 on the wire; the 32-bit
    block an ACK means is inferred from the window in flight.
  - The transfer ends with a block shorter than blksize (0 bytes when the
    size is a multiple of it). After the last ACK the port stays open a
    short while (dally) and absorbs late duplicates silently.

Memory: a session holds no file data between windows (each window is read
with one C{pread}, sent, and dropped), so a slow peer costs a socket, a
timer and a few hundred bytes.

When a session ends it calls C{onEnd(stats)} with a
L{provisioner.tftp.transfer.SessionStats}. What read and write sessions
share (stats, ending, the netascii form) is in L{provisioner.tftp.transfer};
what the session does with each ACK (and any other datagram) its peer
sends in L{provisioner.tftp.ackturn}; the fast lane (a blocking wait for
the next ACK while one transfer is in flight) in
L{provisioner.tftp.fastlane}; the send path in L{provisioner.tftp.udp}.
"""

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from provisioner.tftp import wire
from provisioner.tftp.ackturn import AckTurn
from provisioner.tftp.fastlane import FastLane
from provisioner.tftp.transfer import (
    AMPLIFICATION, MAX_BACKOFF, NetasciiSource, SessionEnding, SessionStats)
from provisioner.tftp.udp import defaultSender
from provisioner.tftp.window import MAX_WINDOW

__all__ = ["ReadSession", "DALLY"]

# How long a finished read session keeps its port (seconds, at most).
DALLY = 1.0


class ReadSession(SessionEnding, FastLane, AckTurn, DatagramProtocol):
    """
    Sends one data source to one peer.

    @param source: an L{provisioner.interfaces.IDataSource}.
    @param negotiated: the L{provisioner.tftp.negotiate.Negotiated} options.
    @param peer: C{(host, port)} of the client.
    @param clock: an C{IReactorTime}.
    @param timeout: first retransmission timeout (the client's C{timeout}
        option wins when it sent one).
    @param retries: retransmissions before giving up.
    @param onEnd: called once with the L{SessionStats
        <provisioner.tftp.transfer.SessionStats>} when the transfer is
        over (before the dally).
    @param path: the requested path, for stats and logs.
    @param netascii: convert to netascii on the fly (window 1).
    @param senderFactory: C{(transport, peer)} to a sender (tests); by
        default L{provisioner.tftp.udp.defaultSender}.
    @param gso: whether the default sender may use UDP GSO (C{tftp.gso}).
    @param dally: how long the port stays open after the last ACK (at most
        the timeout).
    @param fastLane: a callable returning true while this session may wait
        for its next ACK in a short blocking C{poll} on its own socket
        instead of returning to the reactor (the server allows it when this
        is the only transfer in flight), from the client's first answer
        on (the C{fastLane} attribute is L{None} until then); L{None}
        disables it.
    @param maxDuration: seconds after which the transfer is ended with an
        ERROR whatever its progress (L{None} or 0: no limit).
    @param timeoutMin: when the client did not negotiate C{timeout}, the
        retransmission timeout follows the measured round trip (RFC 6298:
        mean + 4 x variation, samples only from windows sent once) between
        this and C{timeout}; L{None} keeps C{timeout} fixed.
    @param unansweredTimeout: until the client has answered once, the
        retransmission timeout is at most this (seconds), whatever it
        negotiated; L{None}: no cap.
    @param unansweredRetries: retransmissions before the client has
        answered once (at most C{retries}); L{None}: C{retries}.
    @param requestBytes: the size of the request datagram: until the client
        has answered, a retransmission goes only while the bytes sent stay
        within L{AMPLIFICATION} times the bytes it sent (L{None}: no byte
        bound).

    @ivar answered: whether the client has answered once.
    @ivar unansweredBytes: bytes sent before the client answered (or so
        far, if it never did).
    @ivar onAnswered: called once, without arguments, when the client
        answers for the first time (the server stops counting the session
        as never answered).
    """

    log = Logger()
    noisy = False
    # Called with the session when its port closes (after the dally).
    onClose = None
    # Called once when the client first answers.
    onAnswered = None

    def __init__(self, source, negotiated, peer, clock, timeout=1.0, retries=6, onEnd=None,
                 path="?", netascii=False, senderFactory=None, dally=DALLY,
                 fastLane=None, maxDuration=None, timeoutMin=None, gso=True,
                 unansweredTimeout=None, unansweredRetries=None, requestBytes=None):
        self.source = NetasciiSource(source) if netascii else source
        self.maxDuration = maxDuration
        self.negotiated = negotiated
        self.peer = (peer[0], peer[1])
        self.clock = clock
        self.blksize = negotiated.blksize
        self.policy = negotiated.windowPolicy()
        self.netascii = netascii
        self._initTimeouts(negotiated, timeout, timeoutMin, unansweredTimeout)
        self.maxRetries = retries
        self.onEnd = onEnd
        self.gso = gso
        self.senderFactory = senderFactory or (
            lambda transport, peer: defaultSender(transport, peer, self.gso))
        self.extension = negotiated.extension is not None
        self.dallyTime = min(dally, self.timeout)
        size = getattr(source, "size", None)
        self._initBlocks(None if netascii else size)
        self._initUnanswered(retries, unansweredRetries, requestBytes)
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
        # The fast lane opens once the client has answered (a session
        # that has not been answered sends nothing but its first datagram).
        self.fastLane = None
        self._laneGate = fastLane
        self._inFast = False

    def _initTimeouts(self, negotiated, timeout, timeoutMin, unansweredTimeout):
        """
        The retransmission timeout (a step of C{__init__}): the client's,
        else C{timeout}; following the measured round trip from
        C{timeoutMin} up when the client did not negotiate one; at most
        C{unansweredTimeout} until the client answers.
        """
        self.timeout = float(negotiated.timeout) if negotiated.timeout else float(timeout)
        # the adaptive retransmission timeout (None: fixed at self.timeout)
        self.timeoutMin = (min(float(timeoutMin), self.timeout)
                           if timeoutMin is not None and not negotiated.timeout else None)
        self.rto = self.timeout
        # what an adapted timer backs off to: the timeout, capped until the
        # client answers
        self.rtoMax = self.timeout
        if unansweredTimeout is not None and unansweredTimeout < self.timeout:
            self.rto = self.rtoMax = float(unansweredTimeout)
        self.srtt = None
        self.rttvar = 0.0
        self._rttStart = None

    def _initBlocks(self, size):
        """
        The 32-bit block numbers (a step of C{__init__}): the last block
        (from the source's C{size}; L{None} until known), the last one
        acknowledged in order, the last one sent, the highest one sent.
        """
        self.last = None
        if isinstance(size, int):
            self.last = size // self.blksize + 1
        self.acked = 0
        self.sent = 0
        self.highest = 0

    def _initUnanswered(self, retries, unansweredRetries, requestBytes):
        """
        What holds until the client answers (a step of C{__init__}): at
        most C{unansweredRetries} retransmissions, and the byte budget
        (L{AMPLIFICATION} times the request's C{requestBytes}).
        """
        self.retriesLeft = retries
        if unansweredRetries is not None:
            self.retriesLeft = max(0, min(retries, unansweredRetries))
        self.budget = AMPLIFICATION * requestBytes if requestBytes else None
        self.unansweredBytes = 0
        self._oackWire = None

    # -- life cycle

    def startProtocol(self):
        self.sender = self.senderFactory(self.transport, self.peer)
        self.stats.started = self.clock.seconds()
        self._startLimit()
        self._sendFirst()

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

    def evict(self):
        """
        Give the slot up now, silently: the client never answered, and a
        new request needs the slot (the server's limits are reached).
        """
        if not self.done:
            self._finish("timeout", "never answered; its slot went to a new request")
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
        if self.rto < self.rtoMax:
            # Below the configured timeout (an adapted one): back it off
            # (RFC 6298 5.5) without using a retry, so a peer that went
            # quiet is given up no sooner than with the fixed timeout.
            self.rto = min(self.rtoMax, self.rto * 2)
        elif self.retriesLeft <= 0:
            if self.waitingOACK:
                self._finish("timeout", "no answer to the OACK")
            elif not self.answered:
                self._finish("timeout", "no answer to DATA 1")
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
        if self.answered:
            self._sendWindow()
        elif self._withinBudget():
            self._sendFirst()
        else:
            # Sending again would reflect more than AMPLIFICATION times the
            # request to an address that may never have asked: wait for an
            # answer (or the repeated request) until the retries run out.
            self._arm()

    # -- before the client has answered

    def _firstSize(self):
        """
        The size of the first datagram (the one sent until the client
        answers): the OACK, or DATA 1 (a full block when the size is
        unknown).
        """
        if self.waitingOACK:
            return len(self._oack())
        size = self.stats.size
        bs = self.blksize
        return 4 + (bs if size is None or size > bs else size)

    def _withinBudget(self):
        """
        Whether the first datagram may go once more to a client that has
        not answered: within L{AMPLIFICATION} times its request's bytes.
        """
        budget = self.budget
        return budget is None or self.unansweredBytes + self._firstSize() <= budget

    def _sendFirst(self):
        """
        Send the first datagram (again): the OACK, or DATA 1.
        """
        if self.waitingOACK:
            self._sendOACK()
        else:
            self.unansweredBytes += self._firstSize()
            self._sendWindow()

    def requestRepeated(self, size):
        """
        The client sent its request again to the listen port (C{size}
        bytes): before it has answered, it lost the first datagram; it gets
        it again at once, one datagram for each request datagram (so the
        ratio of bytes sent to bytes received stays that of the first
        answer), and the retransmission schedule is not extended. After it
        has answered, the request is ignored.
        """
        if self.done or self.answered or self.sender is None:
            return
        if self.budget is not None:
            self.budget += AMPLIFICATION * size
        timer = self._timer
        when = timer.getTime() if timer is not None and timer.active() else None
        self._sendFirst()
        timer = self._timer
        if when is not None and timer is not None and timer.active():
            # Sending armed the timer again: keep the schedule it had.
            timer.reset(max(0.0, when - self.clock.seconds()))

    # -- sending

    def _oack(self):
        datagram = self._oackWire
        if datagram is None:
            datagram = self._oackWire = wire.OptionAck(self.negotiated.oack).to_wire()
        return datagram

    def _sendOACK(self):
        datagram = self._oack()
        self.unansweredBytes += len(datagram)
        self.sender.send(datagram)
        self._arm()

    def _sendWindow(self):
        """
        Send the window after the last acknowledged block: as many blocks
        as the policy says (L{_windowSize}), read with one C{pread}.
        """
        self._pause = None
        self._wentBack = False
        if self._resume is not None:
            if self._resume.active():
                self._resume.cancel()
            self._resume = None
        first = self.acked + 1
        n = self._windowSize(first)
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
            self.last = first + n - 1
        count = self.sender.sendBlocks(first, data, bs, n)
        self._windowSent(first, n, count)
        if count < n:
            # The socket buffer filled up: the rest of this window in a
            # moment (not a loss).
            self._resume = self.clock.callLater(0.002, self._resumeWindow, first + count,
                                                first + n - 1, data[count * bs:])
        self._arm()

    def _windowSize(self, first):
        """
        How many blocks the window from C{first} holds: the policy's size
        (1 to L{MAX_WINDOW}), one block while the peer has never answered
        (no amplification towards an address that never asked), and no
        further than the last block when it is known.
        """
        n = self.policy.size()
        if n < 1:
            n = 1
        elif n > MAX_WINDOW:
            n = MAX_WINDOW
        if not self.answered:
            n = 1
        last = self.last
        if last is not None and first + n - 1 > last:
            n = last - first + 1
        return n

    def _windowSent(self, first, n, count):
        """
        Account for a window of C{n} blocks from C{first} of which C{count}
        left: stats, the round-trip sample (only for a window sent for the
        first time, Karn's rule) and the highest block sent.
        """
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

    def _complete(self):
        self._finish("complete")
        if self.dallyTime > 0:
            self._dally = self.clock.callLater(self.dallyTime, self._close)
        else:
            self._close()
