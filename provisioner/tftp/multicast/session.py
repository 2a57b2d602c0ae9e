# -*- test-case-name: tests.test_mtftp_server -*-
"""
Multicast TFTP (RFC 2090) on the server: sessions, the registry that lets a
request join a running session, master rotation, the group pool, and the
range view that unicast gap repair serves.

One L{MulticastSession} per (file, blksize, framing): it owns an ephemeral
UDP port, sends every client its OACK (C{multicast addr,port,mc}) from that
port, sends DATA from that port to the group, and takes ACKs only from the
master client (mc=1). When the master has acknowledged the last block (or
timed out C{master_retries} times) the next client is made master by a new
OACK with mc=1; the block it acknowledges restarts the stream, so late
joiners get what they missed. Flow control beyond the RFC comes from
L{provisioner.tftp.multicast.flowcontrol}.

Extensions (docs/wire/multicast-tftp.md):

  - C{mcepoch 1}: DATA carries the high 16 bits of the 32-bit block number
    after the 16-bit block number, and ACKs carry them in 2 trailing bytes,
    so files past 65,535 blocks place exactly for late joiners.
  - C{ranges <unit>:<a>-<b>,<c>,...} on a plain (unicast) RRQ: the server
    serves a L{RangeSource}, the concatenation of just those blocks.
"""

import ipaddress

from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from provisioner.errors import TooManySessions
from provisioner.interfaces import IDataSource, IFileResolver
from provisioner.tftp import wire
from provisioner.tftp.multicast import flowcontrol
from provisioner.tftp.multicast.codec import (
    EPOCH_HEADER_SIZE, EPOCH_OPTION, GAP_UNKNOWN, MULTICAST_OPTION, RANGES_OPTION, blockCount, decodeAckExtra,
    epochHeader, formatRanges, nearest32, parseRanges)
from provisioner.tftp.negotiate import IOptionExtension
from provisioner.tftp.udp import defaultSender

__all__ = [
    "GroupPool", "MulticastRegistry", "MulticastSession", "RangeSource",
    "repairSource", "MulticastHandler", "RepairResolver", "RepairExtension", "install",
]

@implementer(IDataSource)
class RangeSource:
    """
    A view of a source holding only some of its blocks, back to back: the
    data a repair transfer sends. Block C{b} of the underlying file is the
    bytes C{[(b-1)*unit, b*unit)}; the last block of the file may be short
    or empty.
    """

    def __init__(self, source, unit, ranges):
        self.source = source
        self.unit = unit
        self.ranges = list(ranges)
        self.name = "%s[%s]" % (source.name, formatRanges(unit, self.ranges))
        # Segments (viewOffset, fileOffset, length) for each range.
        self._segments = []
        total = 0
        for first, last in self.ranges:
            start = (first - 1) * unit
            end = min(last * unit, source.size)
            length = max(0, end - start)
            self._segments.append((total, start, length))
            total += length
        self.size = total
        self.blocks = sum(b - a + 1 for a, b in self.ranges)

    def read(self, offset, length):
        out = []
        for vstart, fstart, seglen in self._segments:
            if length <= 0:
                break
            if offset >= vstart + seglen:
                continue
            skip = max(0, offset - vstart)
            take = min(seglen - skip, length)
            if take <= 0:
                continue
            out.append(self.source.read(fstart + skip, take))
            offset += take
            length -= take
        return b"".join(out)

    def close(self):
        self.source.close()


# Groups -------------------------------------------------------------------

class GroupPool:
    """
    Multicast groups for sessions: one address per running session from a
    network (239.255.0.0/16 by default), all on one port.
    """

    def __init__(self, network="239.255.0.0/16", port=1758):
        self.network = ipaddress.ip_network(network)
        self.port = port
        self._used = set()
        self._cursor = 0
        self._hosts = self.network.num_addresses - 2 if self.network.num_addresses > 2 \
            else self.network.num_addresses

    def allocate(self):
        """
        @return: C{(address, port)} of a group nobody uses.
        @raise TooManySessions: the pool is exhausted.
        """
        offset = 1 if self.network.num_addresses > 2 else 0
        for i in range(self._hosts):
            index = (self._cursor + i) % self._hosts
            addr = str(self.network.network_address + offset + index)
            if addr not in self._used:
                self._used.add(addr)
                self._cursor = index + 1
                return addr, self.port
        raise TooManySessions("multicast group pool %s exhausted" % (self.network,))

    def release(self, group):
        self._used.discard(group[0])

    def __len__(self):
        return len(self._used)


# Sessions -----------------------------------------------------------------

class _Client:
    """
    One client of a multicast session.
    """

    def __init__(self, peer, options, windowsize, timeout, joined):
        self.peer = peer
        self.options = options  # requested, in order
        self.windowsize = windowsize
        self.timeout = timeout
        self.joined = joined
        self.lastAck = 0
        self.acked = False
        self.demotions = 0

    def __repr__(self):
        return "<client %s:%d>" % self.peer


class MulticastSession(DatagramProtocol):
    """
    One multicast transfer of one file at one blksize.

    @ivar clients: the L{_Client}s in rotation order; C{clients[0]} is the
        master once the stream runs.
    @ivar stats: counters (C{bytes}, C{packets}, C{retransmits},
        C{masters}, C{timeouts}, C{joins}, C{unexpected}).
    """

    log = Logger()

    #: The longest a hole the master reports is taken to be still in flight
    #: (seconds): the master repeats an unanswered ACK every 30 ms or so,
    #: and each repeat past this guard sends the hole again (a bound on the
    #: round-trip estimate; a starved receiver can take a good part of it).
    GUARD_MAX = 0.25

    #: The most new blocks one step of the pump sends together: one C{pread}
    #: and, where the kernel has UDP GSO, one C{sendmsg}.
    RUN = 64

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
        from provisioner.client.mtftp import _bigBuffer
        _bigBuffer(self._port, receive=False, size=4 << 20)
        if r.outgoingInterface:
            self._port.setOutgoingInterface(r.outgoingInterface)
        self._sender = defaultSender(self._port, self.group)
        if self.epoch:
            self._sender.header = epochHeader
            self._sender.headerSize = EPOCH_HEADER_SIZE
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
                    self._sendOACK(client, False)

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

    # Joining --------------------------------------------------------------

    def find(self, peer):
        for c in self.clients:
            if c.peer == peer:
                return c
        return None

    def join(self, peer, options, windowsize, timeout):
        """
        Add a client (or answer a retransmitted request again) and send
        its OACK.
        """
        client = self.find(peer)
        if client is None:
            client = _Client(peer, options, windowsize, timeout, self.clock.seconds())
            self.clients.append(client)
            self.stats["joins"] += 1
            self.log.info("multicast {session}: {peer} joined ({count} client(s), "
                          "stream at block {block})", session=self.name,
                          peer="%s:%d" % peer, count=len(self.clients), block=self.nextSend)
            self.gate.joined(len(self.clients))
        if self.master is None and self.gate.isOpen:
            self._nextMaster()
        else:
            self._sendOACK(client, client is self.master)
        return client

    def oackFor(self, client, master):
        out = []
        for name, value in client.options:
            if name == "blksize":
                out.append(("blksize", str(self.blksize)))
            elif name == "tsize":
                out.append(("tsize", str(self.size)))
            elif name == "timeout" and client.timeout is not None:
                out.append(("timeout", value))
            elif name == "windowsize":
                out.append(("windowsize", str(client.windowsize)))
            elif name == MULTICAST_OPTION:
                out.append((MULTICAST_OPTION, "%s,%d,%d" % (self.group[0], self.group[1],
                                                            1 if master else 0)))
            elif name == EPOCH_OPTION and self.epoch:
                out.append((EPOCH_OPTION, "1"))
        return wire.OptionAck(out)

    def _sendOACK(self, client, master):
        if self._port is None:
            return
        self.stats["control"] += 1
        self._port.write(self.oackFor(client, master).to_wire(), client.peer)

    def _remove(self, client, why):
        if client not in self.clients:
            return
        self.clients.remove(client)
        self.log.info("multicast {session}: {peer} left ({why}); {count} client(s) remain",
                      session=self.name, peer="%s:%d" % client.peer, why=why,
                      count=len(self.clients))
        if client is self.master:
            self.master = None
            self._nextMaster()
        elif not self.clients:
            self._finish("finished")

    # Master rotation ------------------------------------------------------

    def _nextMaster(self):
        self._cancelTimer()
        if not self.clients:
            self.master = None
            self._finish("finished")
            return
        self.master = self.clients[0]
        self.awaitingRestart = True
        self.retries = 0
        # Send times and the round-trip estimate belong to one master's
        # turn: a block the previous pass sent seconds ago, acknowledged by
        # the new master, is no round trip (taken as one it held every
        # hole retransmission back by seconds: the issue 6 master stall).
        self.sentAt.clear()
        self.sentSeq.clear()
        self.srtt = None
        self.repairQueue = []
        self.listed.clear()
        self.stats["masters"] += 1
        self.log.info("multicast {session}: master is now {peer}", session=self.name,
                      peer="%s:%d" % self.master.peer)
        self._sendOACK(self.master, True)
        self._startTimer()

    def _masterTimedOut(self):
        client = self.master
        self.stats["timeouts"] += 1
        client.demotions += 1
        drop = not client.acked or client.demotions > 1
        self.log.info("multicast {session}: master {peer} timed out; {action}",
                      session=self.name, peer="%s:%d" % client.peer,
                      action="dropped" if drop else "moved to the end of the queue")
        self.clients.remove(client)
        if not drop:
            self.clients.append(client)
            self._sendOACK(client, False)
        elif self._port is not None:
            # Tell it (if it is still there) so that it does not wait as master.
            self._port.write(wire.Error(wire.ERR_NOT_DEFINED, "dropped from the multicast "
                                        "session (master timeout)").to_wire(), client.peer)
        self.master = None
        self._nextMaster()

    def _cancelTimer(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _startTimer(self):
        self._cancelTimer()
        timeout = self.timeout
        if self.master is not None and self.master.timeout:
            timeout = self.master.timeout
        self._timer = self.clock.callLater(timeout, self._timeout)

    def _timeout(self):
        self._timer = None
        if self.master is None:
            return
        self.retries += 1
        self.rate.masterTimeout()
        if self.retries > self.registry.masterRetries:
            self._masterTimedOut()
            return
        # Ask the master where it is: a new OACK (mc=1) makes an RFC 2090
        # client ACK its first missing block (which also answers a lost
        # final ACK); that ACK then repairs the hole.
        self._sendOACK(self.master, True)
        self._startTimer()

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
        block, gap, ranges = self._ackBlock(client, ack)
        if block > self.nblocks:
            self._unexpected("ACK past the end")
            return
        now = self.clock.seconds()
        self.retries = 0
        self.gapEnd = self.nblocks if gap is None else min(self.nblocks, block + gap)
        if self.awaitingRestart:
            self.awaitingRestart = False
            self.ackBase = block
            self.nextSend = block + 1
            if self.stats["masters"] > 1 or block:
                self.log.info("multicast {session}: master {peer} restarts the stream at "
                              "block {block}", session=self.name,
                              peer="%s:%d" % client.peer, block=block + 1)
        elif block < self.ackBase:
            client.lastAck = max(client.lastAck, block)
            self._unexpected("stale ACK")
            self._startTimer()
            return
        else:
            sent = self.sentAt.get(block)
            if sent is not None:
                sample = now - sent
                self.srtt = sample if self.srtt is None else 0.875 * self.srtt + 0.125 * sample
            if block > self.ackBase:
                self.rate.progress()
                for b in range(self.ackBase + 1, block + 1):
                    self.sentAt.pop(b, None)
                    self.sentSeq.pop(b, None)
                self.ackBase = block
            if block + 1 > self.nextSend:
                self.nextSend = block + 1
            # The master misses [block + 1, gapEnd]: what of it was already
            # sent in this pass and is not merely in flight goes again.
            # A block sent before the one the master has just past its gap
            # was lost (datagrams on a link stay in order); otherwise wait
            # a guard time in case it is still in flight.
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
            while self.nextSend <= end and self._inFlight(self.nextSend, after, now,
                                                          listGuard):
                self.nextSend += 1
        if ranges is not None:
            self._queueRanges(client, ranges, now)
        else:
            self.repairQueue = []
        client.lastAck = block
        client.acked = True
        if block >= self.nblocks:
            self._cancelTimer()
            self.log.info("multicast {session}: {peer} has the whole file",
                          session=self.name, peer="%s:%d" % client.peer)
            self.clients.remove(client)
            self.master = None
            self._nextMaster()
            return
        self._startTimer()
        self._pump()

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

    def _sendRepairs(self):
        """
        Multicast the queued blocks of the master's range list: runs of
        consecutive blocks with one read and one GSO send, paced by the
        rate policy.

        @return: seconds to wait before the rest (the rate policy), or 0.
        """
        queue = self.repairQueue
        now = self.clock.seconds()
        i = 0
        wait = 0.0
        count = 0
        while i < len(queue):
            first = queue[i]
            run = 1
            while (i + run < len(queue) and queue[i + run] == first + run and
                   run < self.RUN):
                run += 1
            count, wait = self._tokensFor(first, run)
            if count:
                sent, data = self._sendRun(first, count)
                if sent is None:
                    return 0.0
                if sent:
                    self._sentAgain(first, sent, data, now)
                i += sent
                if sent < count:
                    wait = max(wait, 0.002)
            if wait > 0 or not count:
                del queue[:i]
                return max(wait, 0.002)
        del queue[:]
        return 0.0

    def _tokensFor(self, first, count):
        """
        How many of the C{count} blocks from C{first} the rate policy lets
        go now (their tokens taken), and how long to wait for the next.
        """
        bs = self.blksize
        nblocks = self.nblocks
        lastSize = self.size - (nblocks - 1) * bs
        headerSize = self._sender.headerSize
        delay = self.rate.delay
        allowed = 0
        wait = 0.0
        for block in range(first, first + count):
            wait = delay(headerSize + (bs if block < nblocks else lastSize))
            if wait > 0:
                break
            allowed += 1
        return allowed, wait

    def _sendRun(self, first, count):
        """
        Read blocks C{first} .. C{first + count - 1} with one read and send
        them (one GSO send where the kernel has it).

        @return: C{(sent, data)}; C{(None, None)} after a read error, which
            ends the session.
        """
        bs = self.blksize
        try:
            data = self.source.read((first - 1) * bs, count * bs)
        except Exception:
            self.log.failure("multicast {session}: reading the file", session=self.name)
            self._finish("failed (read error)")
            return None, None
        return self._sender.sendBlocks(first, data, bs, count), data

    def _sentAgain(self, first, count, data, now):
        """
        Account for blocks C{first} .. C{first + count - 1} sent again from
        C{data} (below the high-water mark).
        """
        self.listed.update(range(first, first + count))
        self._account(first, count, data, now)
        self.stats["retransmits"] += count

    def _account(self, first, count, data, now):
        """
        What every send of blocks C{first} .. C{first + count - 1} (from
        C{data}) records: their send times and order, the byte and packet
        counts, and the last packet (for C{retransmit_last}).
        """
        bs = self.blksize
        stamp = self._stamp
        for block in range(first, first + count):
            stamp(block, now)
        nbytes = min(len(data), count * bs) + count * self._sender.headerSize
        stats = self.stats
        stats["bytes"] += nbytes
        stats["packets"] += count
        self.registry.sent += nbytes
        off = (count - 1) * bs
        self.lastPacket = self._sender.header(first + count - 1) + bytes(data[off:off + bs])

    # Sending --------------------------------------------------------------

    def _write(self, packet):
        if self._port is None:
            return
        self._port.write(packet, self.group)
        self.stats["bytes"] += len(packet)
        self.stats["packets"] += 1
        self.registry.sent += len(packet)

    def _resend(self, block):
        if block > self.nblocks:
            return
        sent, data = self._sendRun(block, 1)
        if sent:
            self._account(block, 1, data, self.clock.seconds())
            self.stats["retransmits"] += 1

    def _stamp(self, block, now):
        self.sendSeq += 1
        self.sentAt[block] = now
        self.sentSeq[block] = self.sendSeq

    def _pump(self):
        """
        Send what the window allows: blocks never sent before (past the
        high-water mark) always; blocks an earlier pass sent only inside
        the master's declared gap (it may have the rest). Consecutive
        blocks go in runs of up to L{RUN}: one read, one GSO send.
        """
        self._pumpCall = None
        if self.master is None or self.awaitingRestart or self._port is None:
            return
        self._pumpBlocks()
        if self.repairQueue and self._pumpCall is None and self._port is not None:
            wait = self._sendRepairs()
            if wait > 0 and self._pumpCall is None and self._port is not None:
                self._pumpCall = self.clock.callLater(wait, self._pump)

    def _pumpBlocks(self):
        """
        The new blocks and the master's first gap (L{_pump}).
        """
        limit = min(self.ackBase + max(1, self.master.windowsize), self.nblocks)
        now = self.clock.seconds()
        while self.nextSend <= limit:
            first = self.nextSend
            highWater = self.highWater
            if first <= highWater and first > self.gapEnd:
                return
            end = min(limit, first + self.RUN - 1)
            if first <= highWater and self.gapEnd < highWater:
                end = min(end, self.gapEnd)
            count, wait = self._tokensFor(first, end - first + 1)
            if count:
                sent, data = self._sendRun(first, count)
                if sent is None:
                    return
                if sent:
                    self._sent(first, sent, data, highWater, now)
                if sent < count:
                    # The socket buffer is full: the rest in a moment.
                    wait = max(wait, 0.002)
                    count = 0
            if wait > 0 or not count:
                if self._pumpCall is None:
                    self._pumpCall = self.clock.callLater(max(wait, 0.002), self._pump)
                return

    def _sent(self, first, count, data, highWater, now):
        """
        Account for blocks C{first} .. C{first + count - 1} just sent from
        C{data} (C{highWater}: the mark before them).
        """
        last = first + count - 1
        self._account(first, count, data, now)
        if first <= highWater:
            self.stats["retransmits"] += min(last, highWater) - first + 1
        if last > highWater:
            self.highWater = last
            wrap = (max(first, highWater + 1) + 0xFFFF) & ~0xFFFF
            if wrap <= last:
                self.log.info("multicast {session}: block numbers wrapped past {block} "
                              "(epoch {epoch} begins)", session=self.name, block=wrap,
                              epoch=wrap >> 16)
        self.nextSend = last + 1


# Registry -----------------------------------------------------------------

class MulticastRegistry:
    """
    The running multicast sessions, by file: a request for a file whose
    session is running joins it when its options fit (see L{request}),
    otherwise it gets a new session and group.

    @ivar sessions: the running L{MulticastSession}s.
    @ivar sent: bytes of DATA sent by every session since start.
    """

    log = Logger()

    def __init__(self, reactor, config, tftpConfig=None, bindAddress="", probe=None):
        self.reactor = reactor
        self.sessions = []
        self.sent = 0
        self._lastSent = (reactor.seconds(), 0)
        self._bandwidth = 0.0
        self.configure(config, tftpConfig, bindAddress, probe)

    def configure(self, config, tftpConfig=None, bindAddress="", probe=None):
        """
        Take a (re)loaded C{tftp.multicast} section: running sessions keep
        their group and options; new sessions use the new values.
        """
        self.config = config
        tftp = tftpConfig or {}
        self.enabled = config["enabled"]
        self.bindAddress = bindAddress
        self.ttl = config["ttl"]
        self.outgoingInterface = config["interface"]
        if not self.outgoingInterface and bindAddress not in ("", "0.0.0.0", "::"):
            self.outgoingInterface = bindAddress
        self.masterRetries = config["master_retries"]
        self.maxClients = config["max_clients"]
        self.maxSessions = config["max_sessions"]
        self.allowEpoch = config["epoch"]
        self.blksizeMax = tftp.get("blksize_max", 65464)
        self.windowsizeMax = tftp.get("windowsize_max", 64)
        self.defaultTimeout = tftp.get("timeout", 1.0)
        old = getattr(self, "pool", None)
        self.pool = GroupPool(config["group_pool"], config["port"])
        if old is not None:
            self.pool._used |= old._used
        self.start, self.quality, self._makeRate, self._makeUnexpected = \
            flowcontrol.fromConfig(config, self.reactor, probe or self.conditions)

    def conditions(self):
        """
        The resource conditions the QoS policy reads.
        """
        now = self.reactor.seconds()
        then, before = self._lastSent
        if now - then >= 0.5:
            self._bandwidth = (self.sent - before) / (now - then)
            self._lastSent = (now, self.sent)
        return flowcontrol.Conditions(len(self.sessions), self._bandwidth,
                                      flowcontrol.systemLoad())

    @staticmethod
    def wants(options):
        """
        Whether a request (its options, a C{dict} or pairs) asks for
        multicast.
        """
        return MULTICAST_OPTION in dict(options)

    def _find(self, path, blksize, exactBlksize, epoch):
        for s in self.sessions:
            if s.path != path or s.epoch != epoch or s._port is None:
                continue
            if len(s.clients) >= self.maxClients:
                continue
            if (s.blksize == blksize) if exactBlksize else (s.blksize <= blksize):
                return s
        return None

    def sessionOf(self, peer, path):
        for s in self.sessions:
            if s.path == path and s.find(peer) is not None:
                return s
        return None

    def request(self, path, options, source, peer, blksize=None, windowsize=None,
                timeout=None):
        """
        Serve a multicast read request: join a running session for C{path}
        or start one.

        @param options: the requested options, C{[(name, value)]} in order.
        @param source: the L{IDataSource} (closed here when a running session
            is joined).
        @param blksize, windowsize, timeout: the values the server's
            negotiation granted, or L{None} to negotiate here.
        @return: the L{MulticastSession}.
        @raise TooManySessions: no group or session left.
        """
        opts = dict(options)
        if blksize is None:
            blksize = _int(opts.get("blksize"), 512, 8, 65464)
            blksize = min(blksize, self.blksizeMax)
        if windowsize is None:
            windowsize = min(_int(opts.get("windowsize"), 1, 1, 65535), self.windowsizeMax)
        if timeout is None and "timeout" in opts:
            t = _int(opts.get("timeout"), None, 1, 255)
            timeout = t
        epoch = self.allowEpoch and opts.get(EPOCH_OPTION) == "1"
        existing = self.sessionOf(peer, path)
        if existing is None:
            existing = self._find(path, blksize, "blksize" not in opts, epoch)
        if existing is not None:
            source.close()
            existing.join(peer, list(options), windowsize, timeout)
            return existing
        if len(self.sessions) >= self.maxSessions:
            raise TooManySessions("too many multicast sessions")
        grantedBlksize, sessionTimeout = self.quality.decide(
            blksize, timeout or self.defaultTimeout)
        if "blksize" not in opts:
            grantedBlksize = 512
        group = self.pool.allocate()
        key = (path, grantedBlksize, epoch)
        name = "%s@%s:%d" % (path, group[0], group[1])
        session = MulticastSession(
            self, key, path, source, grantedBlksize, epoch, sessionTimeout, group,
            self._makeRate(name), self._makeUnexpected(), self.start.gate(name))
        self.sessions.append(session)
        try:
            session.listen()
        except Exception:
            self.sessions.remove(session)
            self.pool.release(group)
            raise
        self.log.info("multicast session {session} started for {peer}: blksize {blksize}, "
                      "{blocks} blocks{epoch}", session=session.name, peer="%s:%d" % peer,
                      blksize=grantedBlksize, blocks=session.nblocks,
                      epoch=" (mcepoch framing)" if epoch else "")
        session.join(peer, list(options), windowsize, timeout)
        return session

    def _sessionDone(self, session):
        if session in self.sessions:
            self.sessions.remove(session)
            self.pool.release(session.group)

    def stop(self):
        """
        Stop every session (service shutdown).
        """
        for s in list(self.sessions):
            s.close()


def _int(value, default, lo, hi):
    try:
        n = int(value)
    except (TypeError, ValueError):
        return default
    if n < lo:
        return default
    return min(n, hi)


def repairSource(source, options):
    """
    Wrap C{source} in a L{RangeSource} when the request carries C{ranges}.

    @return: C{(source, oackValue)}; C{oackValue} is L{None} when the
        request has no (valid) C{ranges} option and C{source} is unchanged.
    """
    value = dict(options).get(RANGES_OPTION)
    if value is None or source.size is None:
        return source, None
    try:
        unit, ranges = parseRanges(value)
        last = blockCount(source.size, unit)
        ranges = [(a, min(b, last)) for a, b in ranges if a <= last]
        if not ranges:
            return source, None
    except ValueError:
        return source, None
    view = RangeSource(source, unit, ranges)
    return view, formatRanges(unit, ranges)


# Wiring into the TFTP service ------------------------------------------------

class MulticastHandler:
    """
    The request handler on L{provisioner.tftp.server.TFTPServer}: takes RRQs
    that carry the C{multicast} option (octet mode) when C{tftp.multicast}
    is enabled, and hands them to the L{MulticastRegistry}.
    """

    log = Logger()

    def __init__(self, reactor, config, bindAddress=""):
        self.reactor = reactor
        self._config = config
        self.registry = MulticastRegistry(reactor, config["multicast"], config, bindAddress)

    def _configure(self, server):
        config = server.config
        if config is not self._config:
            self._config = config
            self.registry.configure(config["multicast"], config, server.bindAddress)
        elif self.registry.bindAddress != server.bindAddress:
            self.registry.configure(config["multicast"], config, server.bindAddress)

    def handleRequest(self, server, request, source, packet):
        """
        @return: L{True} when the request became (or joined) a multicast
            session.
        """
        if MULTICAST_OPTION not in request.options or packet.mode != "octet":
            return False
        self._configure(server)
        if not self.registry.enabled or source.size is None:
            return False
        negotiated = server.negotiate(request, source, packet.mode)
        try:
            self.registry.request(
                request.path, packet.options, source, request.peer,
                blksize=negotiated.blksize, windowsize=negotiated.windowsize,
                timeout=negotiated.timeout)
        except TooManySessions as e:
            self.log.warn("multicast refused for {peer}: {reason}; serving by unicast",
                          peer=request.peer, reason=str(e))
            return False
        return True


@implementer(IFileResolver)
class RepairResolver:
    """
    In front of the TFTP server's resolver chain (it wraps it, so the
    chain's order is untouched): for a request carrying C{ranges}, resolve
    the file through the chain and serve a L{RangeSource} of just those
    blocks; any other request goes to the chain unchanged. L{RepairExtension} echoes the option in the OACK so
    the client knows it got the view (a client that does not see C{ranges}
    in the OACK is getting the whole file).
    """

    log = Logger()

    def __init__(self, chain, enabled):
        self.chain = chain
        self.enabled = enabled

    def resolve(self, request):
        value = request.options.get(RANGES_OPTION)
        if value is None or not self.enabled():
            return self.chain.resolve(request)
        from provisioner.files import FileRequest
        inner = FileRequest(request.path, request.peer, request.protocol,
                            options={k: v for k, v in request.options.items()
                                     if k != RANGES_OPTION},
                            client=request.client, rawPath=request.rawPath)
        d = self.chain.resolve(inner)

        def wrap(source):
            view, granted = repairSource(source, [(RANGES_OPTION, value)])
            if granted is not None:
                request.rangesGranted = granted
                self.log.info("repair of {path} for {peer}: {blocks} block(s) in {count} "
                              "range(s)", path=request.path, peer=request.peer,
                              blocks=view.blocks, count=len(view.ranges))
            return view
        return d.addCallback(wrap)


@implementer(IOptionExtension)
class RepairExtension:
    """
    The option extension that echoes C{ranges} when L{RepairResolver}
    served a range view for the request.
    """

    def negotiate(self, request, accepted, limits):
        granted = getattr(request, "rangesGranted", None)
        if granted is None:
            return None
        return [(RANGES_OPTION, granted)], None


def install(tftp):
    """
    Plug multicast and range repair into a
    L{provisioner.tftp.service.TFTPService}: the request handler, the
    repair resolver (wrapping the server's resolver chain), the option
    extension (first), and
    a child service that stops every session with the TFTP service.

    @return: the L{MulticastHandler}.
    """
    from twisted.application import service as _service
    handler = MulticastHandler(tftp.reactor, tftp.config, tftp.config.get("address", ""))
    tftp.requestHandlers.append(handler)

    def enabled():
        return tftp.server.config["multicast"]["repair"]
    tftp.server.resolver = RepairResolver(tftp.server.resolver, enabled)
    tftp.extensions.insert(0, RepairExtension())

    class _Stopper(_service.Service):
        def stopService(self):
            _service.Service.stopService(self)
            handler.registry.stop()
    stopper = _Stopper()
    stopper.setName("multicast")
    stopper.setServiceParent(tftp)
    tftp.multicast = handler
    return handler
