# -*- test-case-name: tests.test_imagecast_sender -*-
"""
The sending side: sessions, rounds, the scorecard and the paced sender.

  - L{TokenBucket}: pacing on an injected clock.
  - L{UDPWriter}: the send path, with UDP GSO (C{UDP_SEGMENT}) for batches of
    equal-size datagrams where the kernel has it.
  - L{RoundSender}: one round's datagrams, cut from the announced ranges.
  - L{BurstLossRate}: the rate policy between rounds: only burst loss (runs
    of consecutive missing datagrams, the mark of overrun queues) lowers the
    rate; isolated random loss never does.
  - L{Session}: one image to a permanent group of receivers, round after
    round, until the current group is empty or the round limit is reached.
  - L{Controller}: the sessions and the receivers' control connections; what
    the AMP responders call.

Nothing here imports the reactor: L{Controller} takes it.
"""

import errno
import ipaddress
import os
import random
import socket
import struct

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import Interface, implementer

from provisioner.imagecast import commands
from provisioner.imagecast import ranges as R
from provisioner.imagecast.datagram import OVERHEAD, SessionKey, newKey, payloadSize
from provisioner.hashing import sha256File as hashFile
from provisioner.net.sockopt import SOL_UDP, UDP_SEGMENT, probeGSO, setSendBuffer

__all__ = ["TokenBucket", "IDatagramWriter", "UDPWriter", "RoundSender", "IRatePolicy",
           "BurstLossRate", "Member", "Session", "Controller", "hashFile", "resolveImage",
           "UDP_SEGMENT", "SOL_UDP"]

_MAX_SEGMENTS = 64


def _mbps(bytesPerSecond):
    return bytesPerSecond * 8 / 1e6


class TokenBucket:
    """
    A token bucket in bytes on an injected clock.

    @ivar rate: bytes per second.
    @ivar burst: the most tokens held.
    """

    def __init__(self, rate, burst, clock):
        self.rate = float(rate)
        self.burst = float(burst)
        self.clock = clock
        self.tokens = float(burst)
        self._last = clock.seconds()

    def refill(self):
        now = self.clock.seconds()
        self.tokens = min(self.burst, self.tokens + (now - self._last) * self.rate)
        self._last = now

    def take(self, amount):
        """
        Take C{amount} tokens if there are enough.

        @return: L{True} if taken.
        """
        self.refill()
        if self.tokens >= amount:
            self.tokens -= amount
            return True
        return False

    def delay(self, amount):
        """
        Return the seconds until C{amount} tokens are there.
        """
        self.refill()
        return max(0.0, (amount - self.tokens) / self.rate)


class IDatagramWriter(Interface):
    """
    Where a round's datagrams go.
    """

    def writeBatch(datagrams):
        """
        Send datagrams, in order; all but the last of equal size.

        @return: how many were sent (fewer when the socket is full).
        """

    def close():
        """
        Release the socket.
        """


@implementer(IDatagramWriter)
class UDPWriter:
    """
    A non-blocking UDP socket sending to one multicast group, with UDP GSO
    when available.

    @ivar gso: whether batches go out as one C{sendmsg} with C{UDP_SEGMENT}.
    @ivar sentDatagrams, sentBytes: UDP payload counters.
    """

    log = Logger()

    def __init__(self, group, port, interface=None, ttl=1, gso=True, sock=None):
        self.destination = (group, port)
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            if interface:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                                socket.inet_aton(interface))
            setSendBuffer(sock, 4 * 1024 * 1024)
            sock.bind((interface or "0.0.0.0", 0))
            sock.setblocking(False)
        self.sock = sock
        self.gso = gso and probeGSO(self.sock)
        self.sentDatagrams = 0
        self.sentBytes = 0

    def writeBatch(self, datagrams):
        if self.gso and len(datagrams) > 1:
            size = len(datagrams[0])
            try:
                self.sock.sendmsg([b"".join(datagrams)],
                                  [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))],
                                  0, self.destination)
            except BlockingIOError:
                return 0
            except OSError as e:
                if e.errno in (errno.ENOBUFS, errno.EAGAIN):
                    return 0
                self.log.info("UDP GSO refused ({error}); sending datagrams one by one",
                              error=e.strerror)
                self.gso = False
            else:
                self.sentDatagrams += len(datagrams)
                self.sentBytes += sum(len(d) for d in datagrams)
                return len(datagrams)
        sent = 0
        for d in datagrams:
            try:
                self.sock.sendto(d, self.destination)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    break
                raise
            sent += 1
            self.sentDatagrams += 1
            self.sentBytes += len(d)
        return sent

    def close(self):
        self.sock.close()


class RoundSender:
    """
    Send one round: every byte of C{ranges}, cut into datagrams of at most
    C{chunkSize} payload bytes from each range's start, paced by a
    L{TokenBucket}.

    @ivar datagrams, payloadBytes, wireBytes: what was sent.
    """

    log = Logger()

    def __init__(self, clock, writer, readAt, session, roundNumber, key, ranges, chunkSize,
                 rate, batch=_MAX_SEGMENTS, gate=None):
        self.clock = clock
        self.writer = writer
        self.readAt = readAt
        self.session = session
        self.round = roundNumber
        self.key = key
        # the HMAC's key pads hashed once for the whole round
        self._sessionKey = SessionKey(key, session)
        self.chunkSize = chunkSize
        self.rate = rate
        datagramSize = chunkSize + OVERHEAD
        self.batchMax = max(1, min(batch, 65000 // datagramSize))
        self.bucket = TokenBucket(rate, max(datagramSize * self.batchMax, rate * 0.004), clock)
        self.gate = gate
        self.paused = 0
        self._pieces = list(R.chunks(ranges, chunkSize))
        self._index = 0
        self._pending = []
        self.datagrams = 0
        self.payloadBytes = 0
        self.wireBytes = 0
        self._call = None
        self._done = None
        self._stopped = False

    def start(self):
        """
        @return: a Deferred fired with this sender when the last datagram has
            been handed to the kernel.
        """
        d = self._done = defer.Deferred(lambda d: self.stop())
        self._tick()
        return d

    def stop(self):
        self._stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _nextBatch(self):
        """
        Return the datagrams of the next batch: the next pieces, all of one
        size (the last may be shorter), at most C{batchMax} of them, taken
        across ranges (a repair round's ranges are mostly one or two
        datagrams long: one UDP GSO send still carries a full batch). Each
        contiguous part is read with one C{pread}.
        """
        if self._pending:
            return self._pending
        pieces = self._pieces
        i = self._index
        if i >= len(pieces):
            return []
        size = pieces[i][1]
        j = i + 1
        last = min(len(pieces), i + self.batchMax)
        while j < last and pieces[j - 1][1] == size:
            j += 1
        self._index = j
        out = []
        encodeRun = self._sessionKey.encodeRun
        roundNumber = self.round
        k = i
        while k < j:
            start = pieces[k][0]
            end = start + pieces[k][1]
            m = k + 1
            while m < j and pieces[m][0] == end:
                end += pieces[m][1]
                m += 1
            out.extend(encodeRun(roundNumber, start, self.readAt(start, end - start),
                                 pieces[k:m]))
            k = m
        self._pending = out
        return out

    def _gateOpen(self):
        """
        Whether the flow-control gate lets the next batch go (it is given
        the batch's end offset).
        """
        last = self._pieces[self._index - 1]
        return self.gate(last[0] + last[1])

    def _tick(self):
        self._call = None
        if self._stopped:
            return
        while True:
            batch = self._nextBatch()
            if not batch:
                done, self._done = self._done, None
                if done is not None:
                    done.callback(self)
                return
            if self.gate is not None and not self._gateOpen():
                self.paused += 1
                self._call = self.clock.callLater(0.005, self._tick)
                return
            cost = sum(map(len, batch))
            if not self.bucket.take(cost):
                self._call = self.clock.callLater(max(0.0005, self.bucket.delay(cost)),
                                                  self._tick)
                return
            sent = self.writer.writeBatch(batch)
            if sent == len(batch):
                wire = cost
            else:
                wire = sum(map(len, batch[:sent]))
            self.datagrams += sent
            self.wireBytes += wire
            self.payloadBytes += wire - sent * OVERHEAD
            self._pending = batch[sent:]
            if sent < len(batch):
                # socket full: give back the tokens of what stayed, retry soon
                self.bucket.tokens += sum(len(d) for d in self._pending)
                self._call = self.clock.callLater(0.001, self._tick)
                return


class IRatePolicy(Interface):
    """
    How the rate changes between rounds.
    """

    def nextRate(rate, roundRanges, reports, chunkSize):
        """
        @param rate: the rate of the round just sent (bytes/s).
        @param roundRanges: what the round carried.
        @param reports: C{{clientId: missing ranges}} of receivers that were
            enrolled for the whole round.
        @return: the rate for the next round (bytes/s).
        """


@implementer(IRatePolicy)
class BurstLossRate:
    """
    Lower the rate only on burst loss, raise it slowly when there is none.

    A receiver's I{burst loss} is the part of the round it missed in runs of
    at least C{runChunks} consecutive datagrams. Independent random loss at
    probability p makes such runs with probability about p^(runChunks-1) per
    lost datagram (0.1% at 10% loss with the default 4), so it is not taken
    for congestion; overrun socket buffers and queues drop whole runs.

      - worst burst fraction above C{high}: the rate is multiplied by
        C{down} (at least C{minimum});
      - below C{low} for every receiver: multiplied by C{up} (at most
        C{maximum});
      - otherwise unchanged.
    """

    def __init__(self, minimum, maximum, runChunks=4, high=0.02, low=0.002, down=0.7, up=1.25):
        self.minimum = minimum
        self.maximum = maximum
        self.runChunks = runChunks
        self.high = high
        self.low = low
        self.down = down
        self.up = up

    def burstFraction(self, roundRanges, missing, chunkSize):
        roundBytes = R.total(roundRanges)
        if not roundBytes:
            return 0.0
        lost = R.intersect(roundRanges, missing)
        burst = sum(e - s for s, e in lost if e - s >= self.runChunks * chunkSize)
        return burst / float(roundBytes)

    def nextRate(self, rate, roundRanges, reports, chunkSize):
        if not reports:
            return rate
        worst = max(self.burstFraction(roundRanges, m, chunkSize) for m in reports.values())
        if worst > self.high:
            return max(self.minimum, rate * self.down)
        if worst < self.low:
            return min(self.maximum, rate * self.up)
        return rate


def resolveImage(root, name):
    """
    Return the real path of image C{name} below C{root}.

    @raise commands.NoSuchImage: if it leaves C{root}, is missing or is not a
        regular readable file.
    """
    rootReal = os.path.realpath(root)
    candidate = name if os.path.isabs(name) else os.path.join(rootReal, name)
    real = os.path.realpath(candidate)
    if real != rootReal and not real.startswith(rootReal + os.sep):
        raise commands.NoSuchImage("%s is not below the image root %s" % (name, root))
    if not os.path.isfile(real):
        raise commands.NoSuchImage("no image %s below %s" % (name, root))
    if not os.access(real, os.R_OK):
        raise commands.NoSuchImage("image %s is not readable" % (name,))
    return real


# Member states
ACTIVE = "active"
COMPLETE = "complete"
FAILED = "failed"
LOST = "lost"


class Member:
    """
    One receiver in one session's permanent group.

    @ivar connection: its control connection (an object with C{callRemote}),
        or L{None} while disconnected.
    @ivar missing: what it last reported missing (L{None}: no report yet).
    @ivar reportedRound: the round of that report.
    @ivar history: C{{round: (bytes missing, ranges, assumed)}}.
    @ivar cleanFrom: the first round it was enrolled and connected for from
        the announcement on (rate policy).
    """

    def __init__(self, clientId, address, connection, now):
        self.clientId = clientId
        self.address = address
        self.connection = connection
        self.state = ACTIVE
        self.reason = None
        self.missing = None
        self.reportedRound = 0
        self.history = {}
        self.enrolledAt = now
        self.disconnectedAt = None
        self.cleanFrom = None
        self.reconnects = 0
        self.sha256 = None
        self.progress = None
        self.completedAt = None

    @property
    def connected(self):
        return self.connection is not None

    @property
    def finished(self):
        return self.state in (COMPLETE, FAILED, LOST)

    def inCurrentGroup(self):
        return self.state == ACTIVE and (self.missing is None or bool(self.missing))


class Session:
    """
    One image to a group of receivers.

    States: C{waiting} (for the start conditions), C{running} (rounds),
    C{repair} (rounds over, receivers fetch the rest over the control
    channel), C{done}.
    """

    log = Logger()

    def __init__(self, controller, sessionId, name, path, size, sha256, group, port, key,
                 chunkSize, rate, maxRounds, minReceivers, maxWait, wanted=None, fd=None):
        self.controller = controller
        self.clock = controller.clock
        self.config = controller.config
        self.id = sessionId
        self.name = name
        self.path = path
        self.size = size
        self.sha256 = sha256
        self.group = group
        self.port = port
        self.key = key
        self.chunkSize = chunkSize
        self.rate = rate
        self.maxRounds = maxRounds
        self.minReceivers = minReceivers
        self.maxWait = maxWait
        self.wanted = wanted
        self.state = "waiting"
        self.round = 0
        self.roundRanges = []
        self.phase = "idle"  # announce, data, collect, idle
        self.members = {}
        self.rounds = []
        self.unrecoverable = []
        self.tail = []
        self.created = self.clock.seconds()
        self.started = None
        self.finished = None
        self.error = None
        self._waiters = []
        self._fd = fd
        self._sender = None
        self._periodic = None
        self.done = defer.Deferred()

    # -- membership -----------------------------------------------------

    def enroll(self, clientId, address, connection):
        """
        Put a receiver in the permanent group (or give a returning one its
        place back) and bring it up to date.
        """
        now = self.clock.seconds()
        member = self.members.get(clientId)
        if member is None:
            member = self.members[clientId] = Member(clientId, address, connection, now)
            self.log.info("session {session}: {client} ({address}) enrolled",
                          session=self.id, client=clientId, address=address)
        else:
            member.connection = connection
            member.address = address
            member.disconnectedAt = None
            member.reconnects += 1
            member.cleanFrom = None
            if member.state == LOST:
                member.state = ACTIVE
                member.reason = None
            self.log.info("session {session}: {client} is back", session=self.id,
                          client=clientId)
        if self.state in ("running", "repair"):
            self._catchUp(member)
        self._poke()
        return member

    def _catchUp(self, member):
        if member.finished:
            return
        if self.state == "repair":
            self._push(member, commands.EndSession, session=self.id,
                       unrecoverable=self.unrecoverable or self.tail, reason="rounds over")
            return
        if self.round:
            self._push(member, commands.Announce, **self._announcement())
            if self.phase in ("collect", "idle"):
                self._push(member, commands.EndRound, session=self.id, round=self.round)

    def disconnected(self, member):
        member.connection = None
        member.disconnectedAt = self.clock.seconds()
        self._poke()

    def report(self, member, roundNumber, missing):
        if roundNumber != self.round or self.state != "running":
            raise commands.StaleRound("round %d is over (current: %d)" % (
                roundNumber, self.round))
        if missing and missing[-1][1] > self.size:
            raise commands.BadRanges("ranges beyond the image size %d" % (self.size,))
        member.missing = missing
        member.reportedRound = roundNumber
        member.history[roundNumber] = (R.total(missing), missing, False)
        self._poke()

    def complete(self, member, sha256):
        if sha256 != self.sha256:
            raise commands.ChecksumMismatch("sha256 %s is not the image's %s" % (
                sha256, self.sha256))
        member.state = COMPLETE
        member.sha256 = sha256
        if self.started is not None:
            member.completedAt = self.clock.seconds() - self.started
        member.missing = []
        self.log.info("session {session}: {client} complete", session=self.id,
                      client=member.clientId)
        self._poke()

    def leave(self, member, reason):
        member.state = FAILED
        member.reason = reason
        self.log.warn("session {session}: {client} left: {reason}", session=self.id,
                      client=member.clientId, reason=reason)
        self._poke()

    def readAt(self, offset, length):
        if offset < 0 or length < 0 or offset + length > self.size:
            raise commands.BadRanges("%d+%d is outside the image" % (offset, length))
        return os.pread(self._fd, length, offset)

    # -- waiting helpers --------------------------------------------------

    def _poke(self):
        for entry in list(self._waiters):
            predicate, d, call = entry
            # a callback may have poked (and taken waiters off) already
            if entry in self._waiters and predicate():
                self._waiters.remove(entry)
                if call is not None and call.active():
                    call.cancel()
                d.callback(True)

    def _waitFor(self, predicate, timeout):
        if predicate():
            return defer.succeed(True)
        d = defer.Deferred()
        entry = [predicate, d, None]

        def expire():
            if entry in self._waiters:
                self._waiters.remove(entry)
                d.callback(False)
        if timeout is not None:
            entry[2] = self.clock.callLater(timeout, expire)
        self._waiters.append(entry)
        return d

    def _checkLost(self):
        self._periodic = None
        now = self.clock.seconds()
        for m in self.members.values():
            if (m.state == ACTIVE and not m.connected and m.disconnectedAt is not None
                    and now - m.disconnectedAt >= self.config["client_timeout"]):
                m.state = LOST
                m.reason = "disconnected for %.0f s" % (now - m.disconnectedAt,)
                self.log.warn("session {session}: {client} lost ({reason})",
                              session=self.id, client=m.clientId, reason=m.reason)
        self._poke()
        if self.state != "done":
            self._periodic = self.clock.callLater(1.0, self._checkLost)

    # -- the run ------------------------------------------------------------

    def _push(self, member, command, **kw):
        conn = member.connection
        if conn is None:
            return defer.succeed(None)
        d = conn.callRemote(command, **kw)

        def failed(f):
            self.log.debug("session {session}: {command} to {client} failed: {error}",
                           session=self.id, command=command.__name__,
                           client=member.clientId, error=f.getErrorMessage())
        d.addErrback(failed)
        return d

    def _active(self):
        return [m for m in self.members.values() if m.state == ACTIVE]

    def _announcement(self):
        return dict(session=self.id, name=self.name, size=self.size, sha256=self.sha256,
                    chunkSize=self.chunkSize, ranges=self.roundRanges, group=self.group,
                    port=self.port, key=self.key, round=self.round)

    def run(self, writerFactory):
        """
        Wait for the start conditions, then run rounds.

        @param writerFactory: called with C{(group, port)}, returns an
            L{IDatagramWriter}.
        @return: L{Session.done}, fired when every receiver has finished.
        """
        d = self._run(writerFactory)

        def finish(result):
            self.state = "done"
            self.finished = self.clock.seconds()
            self._poke()
            if self._periodic is not None and self._periodic.active():
                self._periodic.cancel()
            self._periodic = None
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            return result

        def failed(f):
            self.error = f.getErrorMessage()
            self.log.failure("session {session} failed", f, session=self.id)
            for m in self._active():
                self._push(m, commands.EndSession, session=self.id,
                           unrecoverable=[(0, self.size)] if self.size else [],
                           reason="sender failed: %s" % (self.error,))
        d.addErrback(failed)
        d.addBoth(finish)
        d.chainDeferred(self.done)
        return self.done

    @defer.inlineCallbacks
    def _run(self, writerFactory):
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        self._checkLost()

        def enough():
            return len([m for m in self.members.values() if m.connected]) >= self.minReceivers
        yield self._waitFor(enough, self.maxWait)
        if not self.members:
            yield self._waitFor(lambda: bool(self.members), None)
        self.state = "running"
        self.started = self.clock.seconds()
        policy = self.controller.ratePolicy(self)
        writer = writerFactory(self.group, self.port)
        try:
            nextRanges = [(0, self.size)] if self.size else []
            while True:
                self.round += 1
                self.roundRanges = nextRanges
                record = {"round": self.round, "ranges": len(nextRanges),
                          "bytes": R.total(nextRanges), "rate_mbps": round(_mbps(self.rate), 1),
                          "datagrams": 0, "wire_bytes": 0, "reports": {}, "assumed": [],
                          "started": self.clock.seconds() - self.started}
                self.rounds.append(record)
                self._poke()
                # announce
                self.phase = "announce"
                for m in self._active():
                    if m.connected and m.cleanFrom is None:
                        m.cleanFrom = self.round
                # every active receiver gets the announcement; the data
                # waits only for those that have not reported yet (they may
                # not have the image prepared nor the group joined): one
                # that reported ranges missing is still on the group and
                # keeps datagrams of a later round, and the flow gate holds
                # the round at its start until it reports progress
                acks = []
                for m in self._active():
                    d = self._push(m, commands.Announce, **self._announcement())
                    if m.missing is None:
                        acks.append(d)
                if acks:
                    yield _withTimeout(defer.DeferredList(acks), self.clock,
                                       self.config["announce_timeout"])
                record["announce_seconds"] = round(
                    self.clock.seconds() - self.started - record["started"], 3)
                # data
                self.phase = "data"
                gate = None
                if self.config["flow_window"]:
                    gate = self._flowGate(self.round, self.config["flow_window"])
                self._sender = RoundSender(self.clock, writer, self.readAt, self.id, self.round,
                                           self.key, nextRanges, self.chunkSize, self.rate,
                                           gate=gate)
                yield self._sender.start()
                record["datagrams"] = self._sender.datagrams
                record["wire_bytes"] = self._sender.wireBytes
                record["seconds"] = self.clock.seconds() - self.started - record["started"]
                record["paused"] = self._sender.paused
                # collect
                self.phase = "collect"
                for m in self._active():
                    self._push(m, commands.EndRound, session=self.id, round=self.round)
                r = self.round

                def allReported():
                    return all(m.reportedRound >= r for m in self._active()
                               if m.connected and m.inCurrentGroup())
                collecting = self.clock.seconds()
                yield self._waitFor(allReported, self.config["report_timeout"])
                record["collect_seconds"] = round(self.clock.seconds() - collecting, 3)
                self.phase = "idle"
                nextRanges = self._aggregate(record)
                while not nextRanges:
                    if all(m.finished for m in self.members.values()):
                        return
                    # someone is verifying, disconnected, or will report late
                    yield self._waitFor(
                        lambda: all(m.finished for m in self.members.values()) or
                        any(m.state == ACTIVE and m.connected and m.missing
                            and m.reportedRound >= r for m in self.members.values()),
                        None)
                    nextRanges = self._aggregate(record)
                if self.config["adapt_rate"]:
                    clean = {m.clientId: m.missing for m in self._active()
                             if m.connected and m.cleanFrom is not None
                             and m.cleanFrom <= r and m.missing is not None
                             and m.reportedRound == r}
                    self.rate = policy.nextRate(self.rate, self.roundRanges, clean,
                                                self.chunkSize)
                if self.round >= self.maxRounds:
                    reason = "round limit reached"
                    break
                if self.round >= 2 and self._smallTail(record):
                    reason = "small tail"
                    break
            # rounds over: the rest goes over the control channel
            self.state = "repair"
            if reason == "small tail":
                # after a repair round what is left is a few datagrams, each
                # missed by one receiver: a round for them would cost an
                # announcement, the data and every report, and save nothing
                self.tail = nextRanges
                self.log.info("session {session}: the last {bytes} bytes ({count} ranges) go "
                              "over the control channel after {rounds} rounds",
                              session=self.id, bytes=R.total(nextRanges),
                              count=len(nextRanges), rounds=self.round)
            else:
                self.unrecoverable = nextRanges
                self.log.warn("session {session}: {bytes} bytes in {count} ranges "
                              "unrecoverable after {rounds} rounds; receivers fetch them over "
                              "the control channel", session=self.id,
                              bytes=R.total(nextRanges), count=len(nextRanges),
                              rounds=self.round)
            for m in self._active():
                self._push(m, commands.EndSession, session=self.id,
                           unrecoverable=nextRanges, reason=reason)
            yield self._waitFor(lambda: all(m.finished for m in self.members.values()), None)
        finally:
            self._sender = None
            writer.close()

    #: a receiver whose reported position has not moved for this long stops
    #: holding the sender back (its data path is broken or it has left)
    FLOW_STALL = 2.0

    def progress(self, member, roundNumber, position):
        """
        A receiver's C{Progress}: remember its position and when it last
        moved forward.
        """
        if roundNumber != self.round:
            return
        old = member.progress
        if old is not None and old[0] == roundNumber and position <= old[1]:
            return
        member.progress = (roundNumber, position, self.clock.seconds())

    def _flowGate(self, roundNumber, window):
        """
        Flow control, every round: a batch ending at image offset C{end}
        may go when every connected receiver of the current group (except
        one whose position has not moved for L{FLOW_STALL} seconds) is less
        than C{window} bytes of this round's data behind it. One that has
        not reported progress for this round yet stands at the round's
        start since the data started (the sender does not wait for repair
        rounds' announcements to be acknowledged: the first C{window}
        bytes go at once, the rest once every receiver is taking them).
        Positions are image offsets; they are compared in bytes the round
        carries (L{R.RoundBytes}), so a repair round spread over the whole
        image gets the same window as the first.
        """
        where = R.RoundBytes(self.roundRanges)
        opened = self.clock.seconds()

        def gate(end):
            now = self.clock.seconds()
            ahead = where.at(end) - window
            if ahead <= 0:
                return True
            for m in self.members.values():
                if not m.connected or not m.inCurrentGroup():
                    continue
                p = m.progress
                if p is None or p[0] != roundNumber:
                    # no progress for this round yet (the announcement may
                    # still wait in its queue): it stands at the round's
                    # start, from the moment the data started
                    p = (roundNumber, None, opened)
                if now - p[2] > self.FLOW_STALL:
                    continue
                if p[1] is None or where.at(p[1]) < ahead:
                    return False
            return True
        return gate

    def _smallTail(self, record):
        """
        The tail rule: whether what the receivers still lack is better sent
        over their control connections than in another round. Each
        receiver would then be sent its own missing bytes: that sum must be
        at most C{tail_bytes}, and at most a quarter above the union (bytes
        several receivers lack stay multicast, as after a burst lost by
        all).
        """
        wanted = record["reported_bytes"]
        return (wanted <= self.config["tail_bytes"]
                and wanted * 4 <= record["union_bytes"] * 5)

    def _aggregate(self, record):
        """
        The minimum retransmission set: the union of the current group's
        missing ranges, coalesced by the gap rule. Receivers that did not
        report keep their last report (marked as assumed).
        """
        reports = []
        for m in self._active():
            if not m.connected or m.missing is None:
                continue
            if m.reportedRound < self.round:
                record["assumed"].append(m.clientId)
                m.history.setdefault(self.round, (R.total(m.missing), m.missing, True))
            record["reports"][m.clientId] = R.total(m.missing)
            reports.append(m.missing)
        union = R.union(*reports)
        coalesced = R.coalesce(union, self.config["coalesce_gap"], self.config["max_ranges"])
        record["union_bytes"] = R.total(union)
        record["reported_bytes"] = sum(R.total(r) for r in reports)
        record["next_bytes"] = R.total(coalesced)
        return coalesced

    # -- scorecard --------------------------------------------------------

    def scorecard(self, detail=False):
        members = {}
        for cid, m in sorted(self.members.items()):
            entry = {"address": m.address, "state": m.state, "connected": m.connected,
                     "reason": m.reason, "reconnects": m.reconnects,
                     "completed_at": (None if m.completedAt is None
                                      else round(m.completedAt, 3)),
                     "missing_by_round": {str(k): v[0] for k, v in sorted(m.history.items())},
                     "assumed_rounds": [k for k, v in sorted(m.history.items()) if v[2]]}
            if detail:
                entry["reported_ranges"] = {str(k): [list(x) for x in v[1]]
                                            for k, v in sorted(m.history.items())}
            members[cid] = entry
        now = self.finished if self.finished is not None else self.clock.seconds()
        return {
            "session": self.id, "name": self.name, "size": self.size, "sha256": self.sha256,
            "state": self.state, "phase": self.phase, "round": self.round,
            "group": self.group, "port": self.port, "chunk_size": self.chunkSize,
            "rate_mbps": round(_mbps(self.rate), 1),
            "permanent_group": sorted(self.members),
            "current_group": sorted(m.clientId for m in self.members.values()
                                    if m.inCurrentGroup()),
            "complete": sorted(m.clientId for m in self.members.values()
                               if m.state == COMPLETE),
            "members": members,
            "rounds": [dict(r, reports=dict(r["reports"])) for r in self.rounds],
            "unrecoverable": [list(x) for x in self.unrecoverable],
            "unrecoverable_bytes": R.total(self.unrecoverable),
            "tail": [list(x) for x in self.tail],
            "tail_bytes": R.total(self.tail),
            "elapsed": round(now - (self.started or self.created), 3),
            "error": self.error,
        }


def _withTimeout(d, clock, timeout):
    """
    Fire with C{d}'s result, or with L{None} after C{timeout}, whichever is
    first (C{d} is not cancelled).
    """
    out = defer.Deferred()
    call = clock.callLater(timeout, lambda: out.called or out.callback(None))

    def done(result):
        if call.active():
            call.cancel()
        if not out.called:
            out.callback(result)
    d.addBoth(done)
    return out


class Controller:
    """
    The multicast sessions and the receivers' control connections.

    @ivar reactor: provides C{IReactorTime} (and C{IReactorThreads} for the
        default hasher).
    @ivar config: the C{multicast} section.
    @ivar writerFactory: C{(group, port) -> IDatagramWriter}.
    @ivar hasher: C{path -> Deferred(sha256 hex)}.
    @ivar catalog: a callable returning the image catalogue
        (C{appliance.catalog}) or L{None}; catalogue images are sent by name
        from the catalogue's descriptor with its digest, without hashing.
    """

    log = Logger()

    def __init__(self, reactor, config, writerFactory=None, hasher=None, sessionIds=None,
                 catalog=None):
        self.reactor = reactor
        self.clock = reactor
        self.config = config
        self.writerFactory = writerFactory or self._udpWriter
        self.hasher = hasher or self._threadHash
        self._ids = sessionIds or (lambda: random.SystemRandom().randrange(1, 1 << 31))
        self.catalog = catalog
        self.sessions = {}
        self.finished = []
        self.clients = {}  # clientId -> (connection, address, image)
        self._starting = set()

    def _udpWriter(self, group, port):
        return UDPWriter(group, port, interface=self.config["interface"],
                         ttl=self.config["ttl"], gso=self.config["gso"])

    def _threadHash(self, path):
        from twisted.internet import threads
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                         hashFile, path)

    def ratePolicy(self, session):
        return BurstLossRate(self.config["rate_min"] * 1e6 / 8, self.config["rate_max"] * 1e6 / 8)

    # -- receivers ------------------------------------------------------------

    def register(self, connection, clientId, address, image=None):
        if not clientId or len(clientId) > 200:
            raise commands.BadRequest("client id must be 1..200 characters")
        old = self.clients.get(clientId)
        if old is not None and old[0] is not connection:
            self.log.info("{client} registered again from {address}; the old connection "
                          "is replaced", client=clientId, address=address)
            for session in self.sessions.values():
                m = session.members.get(clientId)
                if m is not None and m.connection is old[0]:
                    m.connection = None
        self.clients[clientId] = (connection, address, image)
        for session in list(self.sessions.values()):
            if self._wants(session, image) or clientId in session.members:
                if session.state != "done":
                    session.enroll(clientId, address, connection)
        if image and self.config["auto_start"]:
            self._autoStart(image)

    def _wants(self, session, image):
        return not image or image == session.name or image == os.path.basename(session.path)

    def connectionLost(self, connection):
        for clientId, (conn, address, image) in list(self.clients.items()):
            if conn is connection:
                del self.clients[clientId]
                for session in self.sessions.values():
                    m = session.members.get(clientId)
                    if m is not None and m.connection is connection:
                        session.disconnected(m)

    def _member(self, connection, sessionId):
        session = self.sessions.get(sessionId)
        if session is None:
            raise commands.UnknownSession("no session %d" % (sessionId,))
        for m in session.members.values():
            if m.connection is connection:
                return session, m
        raise commands.NotRegistered("this connection is not enrolled in session %d"
                                     % (sessionId,))

    def reportMissing(self, connection, sessionId, roundNumber, missing):
        session, member = self._member(connection, sessionId)
        session.report(member, roundNumber, missing)

    def complete(self, connection, sessionId, sha256):
        session, member = self._member(connection, sessionId)
        session.complete(member, sha256)

    def leave(self, connection, sessionId, reason):
        session, member = self._member(connection, sessionId)
        session.leave(member, reason)

    def progress(self, connection, sessionId, roundNumber, position):
        session, member = self._member(connection, sessionId)
        session.progress(member, roundNumber, position)

    def fetch(self, connection, sessionId, offset, length):
        session, member = self._member(connection, sessionId)
        if length > commands.FETCH_MAX or length < 0:
            raise commands.BadRequest("at most %d bytes a fetch" % (commands.FETCH_MAX,))
        return session.readAt(offset, length)

    # -- operators --------------------------------------------------------------

    def _groupFor(self):
        base = ipaddress.ip_address(self.config["group"])
        used = set(s.group for s in self.sessions.values())
        for i in range(256):
            candidate = str(base + i)
            if candidate not in used:
                return candidate
        raise commands.BadRequest("256 sessions already running")

    def startSession(self, image, minReceivers=None, maxWait=None, rate=None, maxRounds=None):
        """
        Start multicasting C{image}.

        @return: a Deferred firing with the L{Session} once it is hashed and
            waiting for receivers.
        """
        cfg = self.config
        entry = self._catalogEntry(image)
        fd = None
        if entry is not None:
            catalog = self.catalog()
            path = os.path.join(catalog.directory, entry.name)
            name = entry.name
        else:
            path = resolveImage(cfg["root"], image)
            name = os.path.basename(path)
        if minReceivers is not None and minReceivers < 1:
            raise commands.BadRequest("min receivers must be at least 1")
        if maxWait is not None and maxWait < 0:
            raise commands.BadRequest("max wait must not be negative")
        if rate is not None and not cfg["rate_min"] <= rate <= cfg["rate_max"]:
            raise commands.BadRequest("rate must be within %s..%s Mbit/s" % (
                cfg["rate_min"], cfg["rate_max"]))
        if maxRounds is not None and not 1 <= maxRounds <= 65535:
            raise commands.BadRequest("max rounds must be 1..65535")
        if entry is not None:
            # the catalogue hashed it already: send from its descriptor, the
            # very content that was hashed
            size = entry.size
            fd = os.dup(entry.fd)
            d = defer.succeed(entry.sha256)
        else:
            size = os.path.getsize(path)
            d = self.hasher(path)

        def hashed(sha256):
            sessionId = self._ids()
            while sessionId in self.sessions:
                sessionId = self._ids()
            session = Session(
                self, sessionId, name, path, size, sha256,
                self._groupFor(), cfg["data_port"], newKey(),
                payloadSize(cfg["datagram_size"]), (rate or cfg["rate"]) * 1e6 / 8,
                maxRounds or cfg["max_rounds"], minReceivers or cfg["min_receivers"],
                cfg["max_wait"] if maxWait is None else maxWait, fd=fd)
            self.sessions[sessionId] = session
            self.log.info("session {session}: {name} ({size} bytes) to {group}:{port}, "
                          "waiting for {min} receivers or {wait} s",
                          session=sessionId, name=session.name, size=size,
                          group=session.group, port=session.port,
                          min=session.minReceivers, wait=session.maxWait)
            for clientId, (conn, address, want) in list(self.clients.items()):
                if self._wants(session, want):
                    session.enroll(clientId, address, conn)
            session.run(self.writerFactory).addBoth(self._sessionDone, session)
            return session
        return d.addCallback(hashed)

    def _catalogEntry(self, image):
        catalog = self.catalog() if self.catalog is not None else None
        if catalog is None:
            return None
        try:
            entry = catalog.get(image)
        except Exception:
            return None
        if entry is None or getattr(entry, "fd", None) is None or not entry.intact():
            return None
        return entry

    def _autoStart(self, image):
        """
        C{auto_start}: a receiver asked for C{image} by name and no session
        sends it: start one with the configured start conditions.
        """
        if image in self._starting:
            return
        for session in self.sessions.values():
            if self._wants(session, image):
                return
        try:
            d = self.startSession(image)
        except commands.MulticastError as e:
            self.log.info("no automatic session for {image}: {error}", image=image, error=e)
            return
        self._starting.add(image)

        def started(session):
            self._starting.discard(image)
            self.log.info("session {session} started automatically for {image}",
                          session=session.id, image=image)

        def failed(f):
            self._starting.discard(image)
            self.log.failure("automatic session for {image} failed", f, image=image)
        d.addCallbacks(started, failed)

    def _sessionDone(self, result, session):
        self.sessions.pop(session.id, None)
        self.finished.append(session)
        keep = self.config["keep_sessions"]
        self.finished = self.finished[-keep:] if keep else []
        card = session.scorecard()
        self.log.info("session {session}: done after {rounds} rounds, {complete} of {members} "
                      "receivers complete", session=session.id, rounds=session.round,
                      complete=len(card["complete"]), members=len(card["permanent_group"]))
        return None

    #: the longest a Status call waits for a change (seconds)
    STATUS_WAIT_MAX = 60.0

    def statusAfter(self, sessionId, rounds, wait, detail=False):
        """
        The scorecard of one session once it has more than C{rounds} rounds
        or is done, or after C{wait} seconds (at most L{STATUS_WAIT_MAX}):
        a long poll, so that C{send} follows a session without polling and
        ends as soon as it does.

        @return: a Deferred firing with what L{status} returns.
        """
        session = self._kept(sessionId)[0]
        d = session._waitFor(lambda: session.state == "done" or len(session.rounds) > rounds,
                             max(0.0, min(wait, self.STATUS_WAIT_MAX)))
        return d.addCallback(lambda _: self.status(sessionId, detail))

    def _kept(self, sessionId=None):
        """
        The sessions kept (finished ones first), or the one C{sessionId}.

        @raise commands.UnknownSession: if there is no such session.
        """
        every = list(self.finished) + list(self.sessions.values())
        if sessionId is not None:
            every = [s for s in every if s.id == sessionId]
            if not every:
                raise commands.UnknownSession("no session %d" % (sessionId,))
        return every

    def status(self, sessionId=None, detail=False):
        return {"sessions": [s.scorecard(detail) for s in self._kept(sessionId)],
                "receivers": sorted(self.clients)}

    def stop(self):
        """
        Stop every session's sender (service shutdown).
        """
        for session in list(self.sessions.values()):
            if session._sender is not None:
                session._sender.stop()
