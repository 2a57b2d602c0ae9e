# -*- test-case-name: tests.test_mtftp_server -*-
"""
The send side of a multicast TFTP session: runs of consecutive blocks read
with one C{pread} and sent with one GSO C{sendmsg} where the kernel has it,
paced by the session's rate policy, and the accounting every send shares
(send times and order, byte counts, the last packet for retransmit-last).
"""

__all__ = ["SessionSending"]


class SessionSending:
    """
    The send side, mixed into L{MulticastSession
    <provisioner.tftp.multicast.session.MulticastSession>}: it uses the
    session's state (C{master}, C{nextSend}, C{highWater}, C{gapEnd},
    C{repairQueue}, C{source}, C{rate}, C{stats}, ...) and sends through its
    C{_sender} and C{_port}.

    @cvar RUN: the most new blocks one step of the pump sends together: one
        C{pread} and, where the kernel has UDP GSO, one C{sendmsg}.
    """

    RUN = 64

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
