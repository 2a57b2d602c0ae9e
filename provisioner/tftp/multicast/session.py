# -*- test-case-name: tests.test_mtftp_server -*-
"""
One multicast TFTP (RFC 2090) transfer: its port, the stream, and the ACKs
of the master.

One L{MulticastSession} per (file, blksize, framing): it owns an ephemeral
UDP port, sends every client its OACK (C{multicast addr,port,mc}) from that
port, sends DATA from that port to the group, and takes ACKs only from the
master client (mc=1). When the master has acknowledged the last block (or
timed out C{master_retries} times) the next client is made master by a new
OACK with mc=1; the block it acknowledges restarts the stream, so late
joiners get what they missed. Flow control beyond the RFC comes from
L{provisioner.tftp.multicast.flowcontrol}; the send side is
L{provisioner.tftp.multicast.sending}; the clients, their OACKs and the
master rotation (with what bounds a client that never answered) are
L{provisioner.tftp.multicast.clients}; the sessions are started and found
by L{provisioner.tftp.multicast.registry}.

C{mcepoch 1} (docs/wire/multicast-tftp.md): DATA carries the high 16 bits
of the 32-bit block number after the 16-bit block number (the session's
sender is built with that framing), and ACKs carry them in 2 trailing
bytes, so files past 65,535 blocks place exactly for late joiners.
"""

from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from provisioner.net.sockopt import setPortBuffer
from provisioner.tftp import wire
from provisioner.tftp.multicast.codec import (
    EPOCH_HEADER_SIZE, GAP_UNKNOWN, blockCount, decodeAckExtra, epochHeader, nearest32)
from provisioner.tftp.multicast.clients import SessionClients
from provisioner.tftp.multicast.sending import SessionSending
from provisioner.tftp.udp import DATA_HEADER_SIZE, dataHeader, defaultSender

__all__ = ["MulticastSession"]

#: Send buffer asked for each session's port (bytes).
SEND_BUFFER = 4 << 20


class MulticastSession(SessionClients, SessionSending, DatagramProtocol):
    """
    One multicast transfer of one file at one blksize.

    @param registry: the L{MulticastRegistry
        <provisioner.tftp.multicast.registry.MulticastRegistry>} (its
        reactor, addresses, TTL, C{gso} and C{masterRetries}).
    @param key: C{(path, blksize, epoch)}.
    @param source: the L{provisioner.interfaces.IDataSource} (closed when
        the session ends).
    @param epoch: whether DATA and ACKs use the C{mcepoch} framing (the
        session's sender is built with its header).
    @param timeout: seconds without an ACK from the master before it is
        asked again.
    @param group: C{(address, port)} of the multicast group.
    @param rate: the rate policy, C{unexpected} the retransmit-last policy,
        C{gate} the delayed-start gate (L{provisioner.tftp.multicast.flowcontrol}).
    @ivar clients: the clients (L{provisioner.tftp.multicast.clients}) in
        rotation order; C{clients[0]} is the master once the stream runs.
    @ivar stats: counters (C{bytes}, C{packets}, C{retransmits},
        C{masters}, C{timeouts}, C{joins}, C{unexpected}).
    """

    log = Logger()

    #: The longest a hole the master reports is taken to be still in flight
    #: (seconds): the master repeats an unanswered ACK every 30 ms or so,
    #: and each repeat past this guard sends the hole again (a bound on the
    #: round-trip estimate; a starved receiver can take a good part of it).
    GUARD_MAX = 0.25

    #: The most blocks of a master's further missing ranges (the ACK's
    #: range list) looked at for one ACK, in multiples of its window.
    REPAIR_SCAN = 16

    #: The shortest time a block sent for a master's range list is taken to
    #: be in flight (seconds; the guard is twice the round trip, at most
    #: L{GUARD_MAX}, and at least this): a receiver that lags behind its
    #: socket names blocks that are already waiting in it, and each of its
    #: ACKs as its first gap moves on would otherwise send them again.
    LIST_GUARD_MIN = 0.1

    def __init__(self, registry, key, path, source, blksize, epoch, timeout, group,
                 rate, unexpected, gate):
        self.registry = registry
        self.key = key
        self.path = path
        self.source = source
        self.blksize = blksize
        self.epoch = epoch
        self.timeout = timeout
        self.group = group
        self.rate = rate
        self.unexpectedPolicy = unexpected
        self.gate = gate
        self.clock = registry.reactor
        self.size = source.size
        self.nblocks = blockCount(self.size, blksize)
        self.clients = []
        self.master = None
        self.awaitingRestart = False
        self.ackBase = 0
        self.nextSend = 1
        self.retries = 0
        self.gapEnd = self.nblocks
        self.highWater = 0
        self.lastPacket = None
        self.sentAt = {}
        self.sentSeq = {}
        self.sendSeq = 0
        self.srtt = None
        self.repairQueue = []
        self.listed = set()
        self.stats = dict(bytes=0, packets=0, retransmits=0, masters=0, timeouts=0,
                          joins=0, unexpected=0, control=0, ranges=0, badRanges=0)
        self._timer = None
        self._pumpCall = None
        self._port = None
        self._sender = None
        self.finished = defer.Deferred()
        self.name = "%s@%s:%d" % (path, group[0], group[1])
        self.started = self.clock.seconds()

    # Lifecycle ------------------------------------------------------------

    def listen(self):
        """
        Bind the session's port (ephemeral, on the registry's address).
        """
        r = self.registry
        self._port = r.reactor.listenMulticast(0, self, interface=r.bindAddress,
                                               maxPacketSize=65536)
        self._port.setTTL(r.ttl)
        setPortBuffer(self._port, receive=False, size=SEND_BUFFER)
        if r.outgoingInterface:
            self._port.setOutgoingInterface(r.outgoingInterface)
        if self.epoch:
            header, headerSize = epochHeader, EPOCH_HEADER_SIZE
        else:
            header, headerSize = dataHeader, DATA_HEADER_SIZE
        self._sender = defaultSender(self._port, self.group, r.gso, header, headerSize)
        self.gate.whenOpen().addCallback(self._gateOpen)

    def _gateOpen(self, reason):
        if self.master is None and self.clients:
            self._nextMaster()
            if self.epoch:
                # The clients waiting for the delayed start get their OACK
                # (mc=0) again: one whose OACK was lost would otherwise ask
                # again only after its timeout and miss the start of the
                # stream, which its master turn then sends again for it (a
                # quarter of the file at 16 x 2% loss). Only for mcepoch
                # clients (provisioner's), which take a repeated OACK as is.
                for client in self.clients[1:]:
                    self._sendOACK(client, False, again=True)

    def close(self):
        """
        Stop at once (service shutdown): nothing more is sent.
        """
        self._finish("stopped")

    def _finish(self, why):
        if self._port is None and self.finished.called:
            return
        for call in (self._timer, self._pumpCall):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._pumpCall = None
        self.gate.cancel()
        port, self._port = self._port, None
        if port is not None:
            port.stopListening()
        for client in self.clients:
            self._released(client)
        self.source.close()
        elapsed = self.clock.seconds() - self.started
        self.log.info(
            "multicast session {session} {why}: {joins} client(s), {masters} master(s), "
            "{bytes} bytes in {packets} DATA ({ratio:.3f}x the file), {retransmits} "
            "retransmitted, {timeouts} master timeouts, {ranges} ACK range(s), {elapsed:.2f}s",
            session=self.name, why=why, ratio=self.stats["bytes"] / float(max(1, self.size)),
            elapsed=elapsed, **self.stats)
        self.registry._sessionDone(self)
        if not self.finished.called:
            self.finished.callback(self.stats)

    # Receiving ------------------------------------------------------------

    def datagramReceived(self, datagram, addr):
        try:
            packet = wire.decode(datagram)
        except wire.WireError as e:
            self.log.debug("multicast {session}: bad datagram from {peer}: {error}",
                           session=self.name, peer=addr, error=str(e))
            return
        client = self.find(addr)
        if client is None:
            if not isinstance(packet, wire.Error) and self._port is not None:
                self._port.write(wire.Error(wire.ERR_UNKNOWN_TID, "unknown transfer ID")
                                 .to_wire(), addr)
            return
        if isinstance(packet, wire.Error):
            self._remove(client, "ERROR %d %s" % (packet.code, packet.message))
        elif isinstance(packet, wire.Ack):
            if client is self.master:
                self._masterAck(client, packet)
            else:
                self._unexpected("ACK from a client that is not the master")
        else:
            self._unexpected(type(packet).__name__)

    def _unexpected(self, kind):
        self.stats["unexpected"] += 1
        if self.lastPacket is not None and self.unexpectedPolicy.unexpected(kind):
            self._write(self.lastPacket)
            self.stats["retransmits"] += 1

    def _ackBlock(self, client, ack):
        """
        @return: C{(block, gap, ranges)}: the 32-bit block acknowledged;
            from a C{mcepoch} client, how many blocks it misses from
            C{block + 1} (L{None}: unknown, treated as "up to the end"),
            and its further missing ranges C{[(first, last)]} (L{None}:
            none given, or a malformed list, which is ignored).
        """
        gap = None
        if self.epoch and len(ack.extra) >= 2:
            block, n, ranges = decodeAckExtra(ack.block, ack.extra)
            if n is not None:
                gap = None if n == GAP_UNKNOWN else max(1, n)
            if ranges is None and len(ack.extra) > 6:
                self.stats["badRanges"] += 1
                self.log.debug("multicast {session}: malformed range list in an ACK from "
                               "{peer} ({length} bytes) ignored", session=self.name,
                               peer=client.peer, length=len(ack.extra))
            return block, gap, ranges
        return nearest32(ack.block, client.lastAck), gap, None

    def _masterAck(self, client, ack):
        """
        An ACK from the master: the stream restarts from it (a new master's
        first ACK) or moves on, the holes it reports go again, and a master
        that has the whole file leaves for the next.
        """
        block, gap, ranges = self._ackBlock(client, ack)
        if block > self.nblocks:
            self._unexpected("ACK past the end")
            return
        now = self.clock.seconds()
        self.retries = 0
        self.gapEnd = self.nblocks if gap is None else min(self.nblocks, block + gap)
        if self.awaitingRestart:
            self._restartAt(client, block)
        elif block < self.ackBase:
            client.lastAck = max(client.lastAck, block)
            self._unexpected("stale ACK")
            self._startTimer()
            return
        else:
            self._advance(block, now)
            self._repairGap(client, block, gap, now)
        if ranges is not None:
            self._queueRanges(client, ranges, now)
        else:
            self.repairQueue = []
        client.lastAck = block
        client.acked = True
        if block >= self.nblocks:
            self._masterDone(client)
            return
        self._startTimer()
        self._pump()

    def _restartAt(self, client, block):
        """
        The first ACK of a master's turn: the stream goes on from the block
        after it.
        """
        self.awaitingRestart = False
        self.ackBase = block
        self.nextSend = block + 1
        if self.stats["masters"] > 1 or block:
            self.log.info("multicast {session}: master {peer} restarts the stream at "
                          "block {block}", session=self.name,
                          peer="%s:%d" % client.peer, block=block + 1)

    def _advance(self, block, now):
        """
        The master acknowledged C{block} in its turn: a round-trip sample,
        the rate policy told of progress, and the send records below it
        dropped.
        """
        sent = self.sentAt.get(block)
        if sent is not None:
            sample = now - sent
            self.srtt = sample if self.srtt is None else 0.875 * self.srtt + 0.125 * sample
        if block > self.ackBase:
            self.rate.clean()
            for b in range(self.ackBase + 1, block + 1):
                self.sentAt.pop(b, None)
                self.sentSeq.pop(b, None)
            self.ackBase = block
        if block + 1 > self.nextSend:
            self.nextSend = block + 1

    def _repairGap(self, client, block, gap, now):
        """
        The master misses C{[block + 1, gapEnd]}: what of it was already
        sent in this pass and is not merely in flight goes again. A block
        sent before the one the master has just past its gap was lost
        (datagrams on a link stay in order); otherwise wait a guard time in
        case it is still in flight.
        """
        guard = self._guard()
        last = min(self.gapEnd, self.nextSend - 1, block + max(1, client.windowsize))
        after = self.sentSeq.get(self.gapEnd + 1) if gap is not None else None
        listed = self.listed
        listGuard = self._guard(True)
        for hole in range(block + 1, last + 1):
            sent = self.sentAt.get(hole)
            seq = self.sentSeq.get(hole)
            if (sent is None or (after is not None and seq is not None and seq < after)
                    or now - sent > (listGuard if hole in listed else guard)):
                self._resend(hole)
        # Blocks of the gap that an earlier ACK's range list already had
        # sent again, and that are still in flight, are not sent again.
        end = min(self.gapEnd, self.highWater)
        while self.nextSend <= end and self._inFlight(self.nextSend, after, now, listGuard):
            self.nextSend += 1

    def _guard(self, listed=False):
        """
        How long a block sent in this master's turn is taken to be in
        flight: twice the round trip, at most L{GUARD_MAX}; for a block
        sent for a range list (C{listed}), at least L{LIST_GUARD_MIN}.
        """
        guard = max(0.002, 2 * (self.srtt or 0.001))
        if listed:
            guard = max(guard, self.LIST_GUARD_MIN)
        return min(self.GUARD_MAX, guard)

    def _inFlight(self, block, after, now, guard):
        """
        Whether C{block}, which the master misses, may still be on its way:
        sent in this turn less than C{guard} ago, and not before C{after}
        (the send sequence of a block the master holds past the hole:
        datagrams on one link stay in order, so one sent before it is lost).
        """
        sent = self.sentAt.get(block)
        if sent is None or now - sent > guard:
            return False
        if after is not None and self.sentSeq.get(block, 0) < after:
            return False
        return True

    def _queueRanges(self, client, ranges, now):
        """
        The master's further missing ranges (its ACK's range list): queue
        the blocks of them that are due, to be multicast by L{_pump}. The
        queue is replaced by each ACK (the latest ACK says what is missing)
        and holds at most a window of blocks; a block still in flight
        (L{_inFlight}) is not queued, so a repeated ACK resends a block at
        most once per guard time. Blocks the pump sends anyway (the first
        gap from C{nextSend}, blocks past the high-water mark) are left to
        it.
        """
        budget = max(1, client.windowsize)
        scan = self.REPAIR_SCAN * budget
        guard = self._guard(True)
        top = min(self.highWater, self.nblocks)
        queue = []
        self.stats["ranges"] += len(ranges)
        for first, last in ranges:
            if first > top or len(queue) >= budget or scan <= 0:
                break
            after = self.sentSeq.get(last + 1)
            for b in range(first, min(last, top) + 1):
                scan -= 1
                if scan < 0 or len(queue) >= budget:
                    break
                if self.nextSend <= b <= self.gapEnd:
                    continue
                if not self._inFlight(b, after, now, guard):
                    queue.append(b)
        self.repairQueue = queue
