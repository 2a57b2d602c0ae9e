# -*- test-case-name: tests.test_mtftp_client -*-
"""
The ACKs of a multicast TFTP client (RFC 2090) while it is the master
(mc=1): when one is due after a DATA, what it says (with C{mcepoch}: the
length of the first gap and the further missing ranges, so that the server
resends only those), the ACK again after C{stallTime} without DATA, and the
last ACK, repeated while the server asks for it.

L{MasterAcks} is that part of L{provisioner.client.mtftp.MulticastClient}.
"""

import time

from provisioner.client.roles import ACTIVE
from provisioner.tftp import wire
from provisioner.tftp.multicast.codec import GAP_UNKNOWN, MAX_ACK_RANGES, encodeAckExtra

__all__ = ["MasterAcks"]


class MasterAcks:
    """
    The master's ACKs of L{provisioner.client.mtftp.MulticastClient} (a
    mixin). It keeps the client's C{lastAcked}, C{sinceAck},
    C{expectUntil}, C{_draining}, C{_stalls}, its C{stats["acks"]} and the
    end of the transfer (C{_finished}, C{completedAt}, C{completedWall});
    it reads the client's C{tracker}, C{epoch}, C{windowsize},
    C{ackEvery}, C{ackRanges}, C{stallTime}, C{patience}, C{timeout} and
    C{role}, writes to the server (C{_port}, C{session}) and arms the
    client's timer (C{_arm}, C{_timer}).
    """

    # DATA as master -------------------------------------------------------

    def _masterData(self, block):
        """
        As master, after DATA C{block}: ACK the last block once complete;
        while draining a backlog, or when no ACK is due (L{_ackDue}), wait
        C{stallTime} for more DATA; else ACK.
        """
        self._stalls = 0
        self.sinceAck += 1
        if self.tracker.complete:
            self._ackFinal()
        elif not self._draining and self._ackDue(block, self.tracker.firstHole):
            self._ack()
        else:
            self._arm(self.stallTime, self._stall)

    def _ackDue(self, block, hole):
        """
        Whether the master tells the server where it is, after DATA
        C{block} with C{hole} its first missing block: the gap it declared
        is filled, or the prefix moved on by C{ackEvery}, or a new hole
        opened, or a reported one persists.
        """
        if self.epoch:
            # Our last ACK reported this hole (with its length): the
            # server resent it at once, behind at most a window of DATA
            # already in flight, so say it again only after a window
            # (or after stallTime without DATA): sooner, a receiver that
            # lags behind its socket would have the hole resent twice.
            reported = self.lastAcked == hole - 1 and self.expectUntil is not None
            repeat = self.windowsize
        else:
            reported = self.lastAcked == hole - 1
            repeat = self.ackEvery
        return ((self.expectUntil is not None and hole - 1 >= self.expectUntil) or
                hole - 1 >= self.lastAcked + self.ackEvery or
                # A plain RFC 2090 server (no mcepoch: not provisioner) may
                # answer each ACK with one block: ACK again at once when
                # the block just after our last ACK arrives.
                (not self.epoch and block == self.lastAcked + 1) or
                (block > hole and (not reported or self.sinceAck >= repeat)) or
                block == self.tracker.nblocks)

    # ACKs -----------------------------------------------------------------

    def _ackBytes(self, block):
        """
        An ACK; with C{mcepoch}, 2 bytes of epoch, 4 bytes saying how many
        blocks are missing from C{block + 1} (the server then resends just
        those, and skips what this client already has), and the further
        missing ranges below the highest block received, up to
        L{MAX_ACK_RANGES} (L{multicast.encodeAckExtra}): the server
        multicasts them too, so that a master's holes come in one round
        trip, not one round trip each.
        """
        if not self.epoch:
            return wire.encodeAck(block)
        t = self.tracker
        ranges = ()
        if block >= t.nblocks:
            gap = 0
        else:
            nxt = t.nextReceived(block)
            gap = GAP_UNKNOWN if nxt < 0 else nxt - block - 1
            if nxt > 0 and self.ackRanges:
                ranges = self._listed.take(t, nxt, min(self.ackRanges, MAX_ACK_RANGES),
                                           self.stats["data"], self.windowsize)
        self.expectUntil = None if gap == GAP_UNKNOWN else block + gap
        return wire.encodeAck(block, encodeAckExtra(block, gap, ranges))

    def _ack(self, force=False):
        block = self.tracker.firstHole - 1
        self._port.write(self._ackBytes(block), self.session)
        self.stats["acks"] += 1
        self.lastAcked = block
        self.sinceAck = 0
        self._draining = False
        self._arm(self.stallTime, self._stall)

    def _stall(self):
        """
        No DATA for C{stallTime} as master: ACK again, so that the server
        resends the hole. The timer may fire after the process was starved
        of CPU with DATA already waiting in the socket (the reactor runs due
        timers before it reads), and an ACK from before that DATA would make
        the server resend a block already here: so the ACK waits one reactor
        turn, and DATA read meanwhile cancels it (L{_arm}).
        """
        self._timer = None
        if self.role == ACTIVE and not self._finished:
            self._timer = self.reactor.callLater(0, self._stallAck)

    def _stallAck(self):
        self._timer = None
        if self.role == ACTIVE and not self._finished:
            self._stalls += 1
            if self._stalls * self.stallTime > self.patience:
                self._timer = None
                self._idle()
                return
            self._ack()

    def _ackFinal(self):
        """
        ACK the last block, then dally: if that ACK is lost the server asks
        again with an OACK (mc=1), which is answered with the same ACK.
        """
        if self._port is None:
            return
        self._port.write(self._ackBytes(self.tracker.nblocks), self.session)
        self.stats["acks"] += 1
        if not self._finished:
            self._finished = True
            self.completedAt = self.reactor.seconds() - self._started
            self.completedWall = time.time()
            self._arm(1.5 * self.timeout, self._complete)
