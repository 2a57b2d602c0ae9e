# -*- test-case-name: tests.test_tftp_session -*-
"""
The ACK turn of a read session: what a L{ReadSession
<provisioner.tftp.session.ReadSession>} does with each datagram its peer
sends (the rules are in L{provisioner.tftp.session}).

An ACK of the block the window ended with starts the next window; an ACK of
an earlier block in flight is a loss (go-back-N from the block after it);
an ACK of the last acknowledged block again is a duplicate, answered with
nothing (no Sorcerer's Apprentice) unless an adaptive client marked it as a
loss; an ACK of anything else is stray. ACK 0 answers the OACK. The first
answer of any kind tells the server that the client is there. An ERROR
ends the transfer (a probe, right after the OACK); a datagram from another
address gets ERROR 5 and the transfer goes on.
"""

from provisioner.tftp import wire
from provisioner.tftp.udp import TransportSender

__all__ = ["AckTurn"]

_ACK = wire.ACK
_ERROR = wire.ERROR
_ERR5 = wire.Error(wire.ERR_UNKNOWN_TID, "unknown transfer ID").to_wire()


class AckTurn:
    """
    The receiving side, mixed into L{provisioner.tftp.session.ReadSession}
    (no call or lookup is added per datagram: the methods are the
    session's own): it uses the session's state (C{peer}, C{acked},
    C{sent}, C{last}, C{policy}, C{stats}, C{sender}, ...), its logger
    (C{log}, so the log namespace is the session's), and its C{_sendWindow},
    C{_rttSample}, C{_arm}, C{_complete}, C{_finish}, C{_close} and
    C{_runFast}.
    """

    def datagramReceived(self, data, addr):
        self._handle(data, addr)
        if self.fastLane is not None and not self._inFast and not self.done:
            self._runFast()

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
            self._firstAnswer()
            self._finish("probe", "client answered the OACK with ERROR %d %s" % (
                packet.code, packet.message))
        else:
            self._finish("aborted", "client sent ERROR %d %s" % (packet.code, packet.message))
        self._close()

    def _ack(self, block, extra):
        """
        An ACK of the 16-bit C{block} from the peer, with the bytes after
        the block number (C{extra}: an extension's window request).
        """
        if self.waitingOACK:
            if block == 0:
                self._oackAnswered(extra)
            return
        acked = self.acked
        delta = (block - acked) & 0xFFFF
        if delta == 0:
            self._repeatedAck(extra)
            return
        if delta > self.sent - acked:
            # Older than what we hold, or never sent: a stray ACK.
            self.stats.duplicates += 1
            return
        self._newAck(acked + delta, extra)

    def _oackAnswered(self, extra):
        """
        ACK 0 after the OACK: the transfer starts.
        """
        self.waitingOACK = False
        self._firstAnswer()
        self.retriesLeft = self.maxRetries
        self.backoff = 1
        if extra and self.extension:
            self.policy.onAckExtra(extra, self.clock.seconds())
        self._next()

    def _repeatedAck(self, extra):
        """
        An ACK of the last acknowledged block again: a duplicate, never
        answered with DATA (no Sorcerer's Apprentice), unless an adaptive
        client marked it as a loss.
        """
        self.stats.duplicates += 1
        if not extra or not self.extension:
            return
        now = self.clock.seconds()
        self.policy.onAckExtra(extra, now)
        isLoss = getattr(self.policy, "repeatIsLoss", None)
        if isLoss is not None and isLoss(extra) and self.sent > self.acked \
                and not self._wentBack:
            # An adaptive client repeats its last ACK, marked as a loss,
            # when the first block of a window is lost: go back once per
            # window (docs/wire/adaptive.md).
            self._wentBack = True
            self.stats.losses += 1
            self.policy.onLoss(now)
            self._next()

    def _newAck(self, block, extra):
        """
        An ACK of the 32-bit C{block}, past the last acknowledged one: the
        window policy learns whether the whole window arrived, and the next
        window goes (from the block after C{block}: go-back-N).
        """
        self.acked = block
        if not self.answered:
            self._firstAnswer()
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

    def _firstAnswer(self):
        """
        The client answered for the first time: it is there. Its own
        timeout applies from now on, and the server is told.
        """
        self.answered = True
        if self.rtoMax < self.timeout:
            self.rto = self.rtoMax = self.timeout
        self.fastLane = self._laneGate
        onAnswered, self.onAnswered = self.onAnswered, None
        if onAnswered is not None:
            onAnswered()
