# -*- test-case-name: tests.test_mtftp_client -*-
"""
The multicast TFTP client (RFC 2090) with client roles and unicast gap
repair (seeds 001 and 002).

  - L{GapTracker}: which blocks arrived; the gap list with sizes, how often
    new gaps opened (frequency) and runs of adjacent gaps.
  - L{RolePolicy}: after the first pass (the stream reached the end of the
    file), a passive client with gaps becomes I{smart} (leaves the group and
    repairs its own gaps over unicast) when they are few and small, or is
    I{promoted} to I{active} (stays and takes its turn as master, so the
    server re-multicasts what it misses) when they are many or large.
  - L{MulticastClient}: the protocol: RRQ with C{multicast}, joins the group
    from the OACK, ACKs only while master (mc=1), records role changes.
  - L{RepairClient}: a windowed unicast RRQ naming only the missing block
    ranges (C{ranges}, docs/wire/multicast-tftp.md); a server that ignores
    the option sends the whole file, which is written as-is.
  - L{fetch}: the whole flow, for C{provisioner fetch --multicast}.
"""

import os
import struct
import time

from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from provisioner.hashing import sha256File
from provisioner.net.sockopt import setReceiveBuffer, setSendBuffer
from provisioner.net import udpbatch
from provisioner.tftp import wire
from provisioner.client.tftp import rearm
from provisioner.tftp.multicast.codec import (
    EPOCH_OPTION, GAP_UNKNOWN, MAX_ACK_RANGES, MULTICAST_OPTION, RANGES_OPTION,
    blockCount, decodeData32, encodeAckExtra, nearest32, rangesOption)

__all__ = ["GapTracker", "RolePolicy", "MulticastClient", "RepairClient", "fetch",
           "ACTIVE", "PASSIVE", "SMART", "PROMOTED", "FetchError", "MulticastRefused",
           "addArguments",
           "fetchRunner", "main"]

ACTIVE, PASSIVE, SMART, PROMOTED = "active", "passive", "smart", "promoted"

_H = struct.Struct("!H")


def _bigBuffer(port, receive=True, size=8 << 20):
    """
    Ask for a large socket buffer (multicast streams arrive in bursts);
    root may go past C{rmem_max}/C{wmem_max}. Fakes without a socket are
    left alone.
    """
    getHandle = getattr(port, "getHandle", None)
    if getHandle is None:
        return
    (setReceiveBuffer if receive else setSendBuffer)(getHandle(), size)


def _sessionPacket(client, datagram, addr):
    """
    The decoded packet of a datagram on a client's unicast port, or L{None}:
    a datagram from another TID than the session's gets ERROR 5 (RFC 1350:
    tell it, carry on), an undecodable one is dropped.
    """
    if client.session is not None and addr != client.session:
        client._port.write(wire.Error(wire.ERR_UNKNOWN_TID, "unknown transfer ID").to_wire(),
                           addr)
        return None
    try:
        return wire.decode(datagram)
    except wire.WireError:
        return None


class FetchError(Exception):
    """
    The transfer failed (the message says why).
    """


class MulticastRefused(FetchError):
    """
    The server answered the request without a multicast session: an OACK
    without C{multicast}, DATA without an OACK (no options), or an ERROR
    other than "file not found" and "access violation" before any OACK.
    Nothing was written; an ordinary unicast read may still work.
    """


class GapTracker:
    """
    Received blocks of a file of C{nblocks} blocks (1-based), and the gaps.

    @ivar received: how many distinct blocks arrived.
    @ivar duplicates: blocks that arrived again.
    @ivar gapsOpened: times a block arrived beyond a missing one that was
        not already known missing (new gaps seen during reception: their
        frequency).
    @ivar highest: the highest block seen.
    """

    def __init__(self, nblocks):
        self.nblocks = nblocks
        self._have = bytearray(nblocks + 1)
        self._have[0] = 1
        self.received = 0
        self.duplicates = 0
        self.gapsOpened = 0
        self.highest = 0
        self._firstHole = 1

    def add(self, block):
        """
        Record a block.

        @return: L{True} if it is new.
        """
        if not 1 <= block <= self.nblocks:
            return False
        if self._have[block]:
            self.duplicates += 1
            return False
        if block > self.highest + 1 and self.highest >= self._firstHole - 1:
            self.gapsOpened += 1
        self._have[block] = 1
        self.received += 1
        if block > self.highest:
            self.highest = block
        if block == self._firstHole:
            self._advance()
        return True

    def _advance(self):
        n = self.nblocks
        h = self._firstHole
        have = self._have
        while h <= n and have[h]:
            h += 1
        self._firstHole = h

    def has(self, block):
        return 0 <= block <= self.nblocks and bool(self._have[block])

    def gapsAfter(self, start, count, upTo=None):
        """
        The first C{count} missing ranges C{[(first, last)]} from block
        C{start} on, up to block C{upTo} (default: the highest block seen,
        past which nothing is known missing yet).
        """
        end = (self.highest if upTo is None else min(upTo, self.nblocks)) + 1
        have = self._have
        out = []
        b = max(1, start)
        while len(out) < count and b < end:
            b = have.find(0, b, end)
            if b < 0:
                break
            e = have.find(1, b, end)
            last = end - 1 if e < 0 else e - 1
            out.append((b, last))
            b = last + 1
        return out

    @property
    def firstHole(self):
        """
        The lowest missing block, or C{nblocks + 1} when complete.
        """
        return self._firstHole

    @property
    def complete(self):
        return self.received == self.nblocks

    @property
    def missing(self):
        return self.nblocks - self.received

    def gaps(self, upTo=None):
        """
        The missing ranges C{[(first, last)]} up to block C{upTo} (default:
        all).
        """
        end = self.nblocks if upTo is None else min(upTo, self.nblocks)
        out = []
        have = self._have
        b = self._firstHole
        while b <= end:
            if have[b]:
                nxt = have.find(0, b, end + 1)
                if nxt < 0:
                    break
                b = nxt
                continue
            e = have.find(1, b, end + 1)
            last = end if e < 0 else e - 1
            out.append((b, last))
            b = last + 1
        return out

    def stats(self, blksize, size=None):
        """
        The gap information of seed 002.

        @return: a C{dict}: C{gaps} (count), C{blocks} and C{bytes} missing,
            C{largest} gap in blocks, C{mean} gap size, C{frequency} (gaps
            per 1000 blocks), C{runs} (gaps separated by at most one
            received block: a continuity of gaps), C{opened}.
        """
        gaps = self.gaps()
        blocks = sum(b - a + 1 for a, b in gaps)
        nbytes = blocks * blksize
        if size is not None and gaps and gaps[-1][1] == self.nblocks:
            nbytes -= blksize - (size - (self.nblocks - 1) * blksize)
        runs = sum(1 for (a, b), (c, d) in zip(gaps, gaps[1:]) if c - b <= 2)
        return dict(gaps=len(gaps), blocks=blocks, bytes=max(0, nbytes),
                    largest=max((b - a + 1 for a, b in gaps), default=0),
                    mean=(blocks / float(len(gaps))) if gaps else 0.0,
                    frequency=1000.0 * len(gaps) / max(1, self.nblocks),
                    runs=runs, opened=self.gapsOpened)


class RolePolicy:
    """
    Seed 002: what a passive client does once the first pass is over.

    It becomes I{smart} (unicast repair of its own gaps) when every
    threshold holds: missing bytes at most C{smartMaxBytes}, at most
    C{smartMaxGaps} gaps, none longer than C{smartMaxGap} blocks, and at most
    C{smartMaxFraction} of the file missing. Otherwise it is promoted to
    I{active}: it stays in the group and takes its turn as master.

    With a server that granted C{mcepoch} (so a master's ACK names all its
    holes and its turn fetches them in about one round trip, each
    multicast once for every member that misses it), a client with more
    than C{promoteGaps} gaps is promoted whatever the smart thresholds:
    master turns put the union of the group's losses on the wire, smart
    repair the sum. A negative C{promoteGaps} turns this off.
    """

    def __init__(self, smartMaxBytes=8 << 20, smartMaxGaps=4096, smartMaxGap=1024,
                 smartMaxFraction=0.25, repair=True, promoteGaps=32):
        self.smartMaxBytes = smartMaxBytes
        self.smartMaxGaps = smartMaxGaps
        self.smartMaxGap = smartMaxGap
        self.smartMaxFraction = smartMaxFraction
        self.repair = repair
        self.promoteGaps = promoteGaps

    def decide(self, stats, nblocks, groupRepair=False):
        """
        @param groupRepair: whether master turns fetch every hole at once
            (the server granted C{mcepoch}).
        @return: C{(role, reason)}, role L{SMART} or L{ACTIVE}.
        """
        if not self.repair:
            return ACTIVE, "unicast repair disabled"
        why = []
        if groupRepair and 0 <= self.promoteGaps < stats["gaps"]:
            why.append("%d gaps > %d: a master turn multicasts them for the group" % (
                stats["gaps"], self.promoteGaps))
        if stats["bytes"] > self.smartMaxBytes:
            why.append("%d bytes missing > %d" % (stats["bytes"], self.smartMaxBytes))
        if stats["gaps"] > self.smartMaxGaps:
            why.append("%d gaps > %d" % (stats["gaps"], self.smartMaxGaps))
        if stats["largest"] > self.smartMaxGap:
            why.append("largest gap %d blocks > %d" % (stats["largest"], self.smartMaxGap))
        if stats["blocks"] > self.smartMaxFraction * nblocks:
            why.append("%.1f%% missing > %.1f%%" % (100.0 * stats["blocks"] / nblocks,
                                                  100.0 * self.smartMaxFraction))
        if why:
            return ACTIVE, "; ".join(why)
        return SMART, "%d gaps, %d bytes missing" % (stats["gaps"], stats["bytes"])


class _Output:
    """
    The local file, written at block offsets: a path (created, truncated)
    or an open file whose descriptor is used (and not closed).

    Between L{hold} and L{release} (one batch of received datagrams),
    contiguous writes are gathered and go to the file in one C{pwritev}.
    """

    _MAX_RUN = 256

    def __init__(self, path=None, fileobj=None):
        self.path = path
        self._own = fileobj is None
        self._holding = False
        self._run = None
        if fileobj is not None:
            self.fd = fileobj.fileno()
        else:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)

    def write(self, offset, data):
        if not data:
            return
        if not self._holding:
            os.pwrite(self.fd, data, offset)
            return
        run = self._run
        if run is not None and run[1] == offset and len(run[2]) < self._MAX_RUN:
            run[2].append(data)
            run[1] += len(data)
            return
        self.flush()
        self._run = [offset, offset + len(data), [data]]

    def hold(self):
        """
        Gather contiguous writes until L{release}.
        """
        self._holding = True

    def release(self):
        """
        Write what was gathered and stop gathering.
        """
        self._holding = False
        self.flush()

    def flush(self):
        run, self._run = self._run, None
        if run is None:
            return
        offset, end, buffers = run
        written = os.pwritev(self.fd, buffers, offset)
        if written < end - offset:
            # a short write (rare on a regular file): the rest one by one
            data = b"".join(buffers)[written:]
            while data:
                n = os.pwrite(self.fd, data, offset + written)
                written += n
                data = data[n:]

    def truncate(self, size):
        self.flush()
        os.ftruncate(self.fd, size)

    def close(self):
        self.flush()
        if self.fd is not None and self._own:
            os.close(self.fd)
        self.fd = None


class _GroupListener(DatagramProtocol):
    def __init__(self, client):
        self.client = client

    def datagramReceived(self, datagram, addr):
        self.client.groupDatagram(datagram, addr)

    def datagramsReceived(self, payloads, addresses):
        """
        A batch from L{provisioner.net.udpbatch}: the payloads are views into
        its buffer, so the writes they cause are gathered and done before
        returning.
        """
        client = self.client
        receive = client.groupDatagram
        hold = getattr(client.output, "hold", None)
        if hold is None:
            # an output of the caller's: it may keep what it is given
            for payload, addr in zip(payloads, addresses):
                receive(bytes(payload), addr)
            return
        hold()
        try:
            for payload, addr in zip(payloads, addresses):
                receive(payload if client.epoch else bytes(payload), addr)
        finally:
            client.output.release()


class MulticastClient(DatagramProtocol):
    """
    One multicast download. L{done} fires with the client itself once the
    file is complete or handed over to repair (C{needRepair}).

    @ivar role: L{ACTIVE}, L{PASSIVE} or L{SMART}.
    @ivar roles: the role history, C{[(seconds, role, reason)]}.
    """

    log = Logger()

    def __init__(self, reactor, server, path, output, blksize=1428, windowsize=64,
                 timeout=1, policy=None, epoch=True, ackEvery=None, interface="",
                 patience=None, retries=6, stallTime=0.03, ackRanges=MAX_ACK_RANGES):
        self.reactor = reactor
        self.ackRanges = ackRanges
        self._listedAt = {}
        self.server = server
        self.path = path
        self.output = output
        self.blksize = blksize
        self.windowsize = windowsize
        self.timeout = timeout
        self.policy = policy or RolePolicy()
        self.wantEpoch = epoch
        self.ackEvery = ackEvery
        self.interface = interface
        self.patience = patience if patience is not None else max(10.0, 8.0 * timeout)
        self.retries = retries
        self.role = None
        self.roles = []
        self.session = None
        self.group = None
        self.epoch = False
        self.size = None
        self.tracker = None
        self.lastPlaced = 0
        self.lastAcked = -1
        self.sinceAck = 0
        self.expectUntil = None
        self._draining = False
        self.stallTime = stallTime
        self.firstPassOver = False
        self.needRepair = False
        self.stats = dict(data=0, acks=0, oacks=0, bytes=0)
        self.done = defer.Deferred()
        self._port = None
        self._groupPort = None
        self._timer = None
        self._tries = 0
        self._lastPacketAt = None
        self._finished = False
        self._started = reactor.seconds()

    # Roles ----------------------------------------------------------------

    def _setRole(self, role, reason):
        if role == self.role:
            return
        old = self.role
        self.role = role
        self.roles.append((self.reactor.seconds() - self._started, role, reason))
        self.log.info("multicast client {path}: role {old} -> {role} ({reason})",
                      path=self.path, old=old or "none", role=role, reason=reason)

    # Start ----------------------------------------------------------------

    def start(self):
        self._port = self.reactor.listenUDP(0, self, interface=self.interface,
                                            maxPacketSize=65536)
        _bigBuffer(self._port)
        self._sendRequest()
        return self.done

    def request(self):
        options = [("blksize", str(self.blksize)), ("tsize", "0"),
                   ("timeout", str(int(self.timeout)) if self.timeout >= 1 else "1")]
        if self.windowsize > 1:
            options.append(("windowsize", str(self.windowsize)))
        options.append((MULTICAST_OPTION, ""))
        if self.wantEpoch:
            options.append((EPOCH_OPTION, "1"))
        return wire.ReadRequest(self.path.encode("utf-8"), "octet", options)

    def _sendRequest(self):
        self._tries += 1
        if self._tries > self.retries:
            self._fail("no answer from %s:%d" % self.server)
            return
        self._port.write(self.request().to_wire(), self.server)
        self._arm(self.timeout)

    def _arm(self, delay, what=None):
        self._timer = rearm(self.reactor, self._timer, delay, what or self._timedOut)

    # Unicast socket: OACK, ERROR ----------------------------------------------

    def datagramReceived(self, datagram, addr):
        packet = _sessionPacket(self, datagram, addr)
        if packet is None:
            return
        if isinstance(packet, wire.OptionAck):
            self._oack(packet, addr)
        elif isinstance(packet, wire.Error):
            if self.tracker is not None and self.policy.repair and not self._finished:
                # Dropped from the session: what is missing comes by unicast.
                self.log.info("multicast client {path}: the server ended our membership "
                              "({message}); repairing by unicast", path=self.path,
                              message=packet.message)
                self._setRole(SMART, "dropped by the server")
                self._leave("dropped", repair=True)
                return
            refused = (self.session is None and
                       packet.code not in (wire.ERR_FILE_NOT_FOUND, wire.ERR_ACCESS_VIOLATION))
            self._fail("server error %d: %s" % (packet.code, packet.message),
                       MulticastRefused if refused else FetchError)
        elif isinstance(packet, wire.Data) and self.session is None:
            # A unicast transfer has begun: end it (we asked for multicast).
            self._port.write(wire.Error(wire.ERR_OPTION_REFUSED, "multicast wanted")
                             .to_wire(), addr)
            self._fail("server does not do options (no OACK)", MulticastRefused)
        elif isinstance(packet, wire.Data):
            self._data(datagram)

    def _oack(self, oack, addr):
        opts = oack.optionDict
        self.stats["oacks"] += 1
        if MULTICAST_OPTION not in opts:
            if self.session is None:
                # RFC 2347: a client refusing the OACK ends the transfer.
                self._port.write(wire.Error(wire.ERR_OPTION_REFUSED, "multicast not granted")
                                 .to_wire(), addr)
            self._fail("server did not grant multicast", MulticastRefused)
            return
        try:
            gaddr, gport, mc = opts[MULTICAST_OPTION].split(",")
            gport, mc = int(gport), int(mc)
        except ValueError:
            self._fail("bad multicast option %r" % (opts[MULTICAST_OPTION],))
            return
        if self.session is None:
            self.session = addr
            self.blksize = int(opts.get("blksize", 512))
            if "tsize" not in opts:
                self._fail("server sent no tsize")
                return
            self.size = int(opts["tsize"])
            self.epoch = opts.get(EPOCH_OPTION) == "1"
            self.windowsize = int(opts.get("windowsize", 1))
            if self.ackEvery is None:
                self.ackEvery = max(1, self.windowsize // 4)
            self.tracker = GapTracker(blockCount(self.size, self.blksize))
            self.output.truncate(self.size)
            self._join(gaddr, gport)
        if self._finished:
            if mc and self.tracker.complete:
                self._ackFinal()
            return
        if mc:
            self._setRole(ACTIVE, "promoted client made master by the server"
                          if self.role == PROMOTED else "made master by the server")
            self.lastAcked = -1
            if self.stats["data"]:
                # The server holds the stream while it changes masters, so
                # DATA still coming is a backlog this client has not read
                # yet (starved of CPU, it may not even have seen it yet): an
                # ACK now would ask again for all of it. ACK once the group
                # socket has been quiet for stallTime (L{_stall}).
                self._draining = True
                self._arm(self.stallTime, self._stall)
            else:
                self._ack(force=True)
        else:
            self._setRole(PASSIVE, "listening to %s:%d" % (gaddr, gport))
            self._arm(self.patience, self._idle)

    def _join(self, gaddr, gport):
        self.group = (gaddr, gport)
        self._groupPort = udpbatch.listenMulticast(self.reactor, gport, _GroupListener(self),
                                                   listenMultiple=True,
                                                   maxPacketSize=self.blksize + 8)
        _bigBuffer(self._groupPort)
        self._groupPort.joinGroup(gaddr, self.interface or "0.0.0.0")

    # Group socket: DATA ---------------------------------------------------

    def groupDatagram(self, datagram, addr):
        if addr != self.session or self._finished:
            return
        self._data(datagram)

    def _data(self, datagram):
        try:
            if self.epoch:
                block, payload = decodeData32(datagram)
            else:
                packet = wire.decode(datagram)
                if not isinstance(packet, wire.Data):
                    return
                block, payload = nearest32(packet.block, self.lastPlaced), packet.payload
        except wire.WireError:
            return
        t = self.tracker
        if block < 1 or block > t.nblocks:
            return
        if (self.lastPlaced and block < self.lastPlaced - self.windowsize - 1 and
                t.highest >= t.nblocks - self.windowsize - 1):
            # The stream reached the end (this client lost the very last
            # block) and a new master restarted it: the first pass is over.
            self._firstPass()
        self.lastPlaced = block
        self.stats["data"] += 1
        if t.add(block):
            self.output.write((block - 1) * self.blksize, payload)
            self.stats["bytes"] += len(payload)
        if block == t.nblocks:
            self._firstPass()
        if self.role == ACTIVE:
            self._stalls = 0
            self.sinceAck += 1
            hole = t.firstHole
            if t.complete:
                self._ackFinal()
                return
            if self._draining:
                self._arm(self.stallTime, self._stall)
                return
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
            if ((self.expectUntil is not None and hole - 1 >= self.expectUntil) or
                    hole - 1 >= self.lastAcked + self.ackEvery or
                    # A plain RFC 2090 server (no mcepoch: not provisioner) may
                    # answer each ACK with one block: ACK again at once when
                    # the block just after our last ACK arrives.
                    (not self.epoch and block == self.lastAcked + 1) or
                    (block > hole and (not reported or self.sinceAck >= repeat)) or
                    block == t.nblocks):
                # The gap we declared is filled, or the prefix moved on by
                # ackEvery, or a new hole, or a reported one persists: tell
                # the server.
                self._ack()
            else:
                self._arm(self.stallTime, self._stall)
        else:
            if t.complete:
                self._leave("complete")
                return
            self._arm(self.patience, self._idle)

    def _firstPass(self):
        if self.firstPassOver:
            return
        self.firstPassOver = True
        if self.role != PASSIVE or self.tracker.complete:
            return
        self._evaluate()

    def _evaluate(self):
        stats = self.tracker.stats(self.blksize, self.size)
        role, reason = self.policy.decide(stats, self.tracker.nblocks,
                                          groupRepair=self.epoch and self.ackRanges > 0)
        self.gapStats = stats
        self.log.info("multicast client {path}: first pass over with {gaps} gap(s), "
                      "{blocks} block(s) missing, largest {largest}, {frequency:.2f} per "
                      "1000 blocks", path=self.path, **stats)
        if role == SMART:
            self._setRole(SMART, reason)
            self._leave("repairing by unicast", repair=True)
        else:
            # Promoted: stays in the group and takes its turn as master, so
            # that what it misses is multicast again (for everyone).
            self._setRole(PROMOTED, reason)
            self.promoted = reason

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
            nxt = t._have.find(1, block + 1)
            gap = GAP_UNKNOWN if nxt < 0 else nxt - block - 1
            if nxt > 0 and self.ackRanges:
                ranges = self._ranges(nxt, min(self.ackRanges, MAX_ACK_RANGES))
        self.expectUntil = None if gap == GAP_UNKNOWN else block + gap
        return wire.encodeAck(block, encodeAckExtra(block, gap, ranges))

    def _ranges(self, start, count):
        """
        The missing ranges from block C{start} on for an ACK's range list:
        those not listed before, or listed a window of DATA ago or more
        (the server sent them at once, so they come behind at most a
        window; sooner, a receiver that lags behind its socket would have
        them sent twice), at most C{count}.
        """
        listedAt = self._listedAt
        now = self.stats["data"]
        window = self.windowsize
        out = []
        for first, last in self.tracker.gapsAfter(start, 4 * count):
            when = listedAt.get(first)
            if when is None or now - when >= window:
                listedAt[first] = now
                out.append((first, last))
                if len(out) >= count:
                    break
        if len(listedAt) > 4096:
            # Forget ranges long filled (bounded memory).
            hole = self.tracker.firstHole
            for first in [b for b in listedAt if b < hole]:
                del listedAt[first]
        return out

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
            self._stalls = getattr(self, "_stalls", 0) + 1
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

    # Endings --------------------------------------------------------------

    def _timedOut(self):
        self._timer = None
        if self.session is None:
            self._sendRequest()

    def _idle(self):
        self._timer = None
        if self._finished:
            return
        if self.tracker is not None and self.policy.repair:
            self.log.info("multicast client {path}: no data for {patience}s, "
                          "repairing by unicast", path=self.path, patience=self.patience)
            self._setRole(SMART, "stream idle")
            self._leave("idle", repair=True)
        else:
            self._fail("no data for %ss" % (self.patience,))

    def _leave(self, why, repair=False):
        if repair and self.tracker is not None:
            # The gaps the repair will fetch (fewer than at the end of the
            # first pass if the client stayed for master turns meanwhile).
            self.gapStats = self.tracker.stats(self.blksize, self.size)
        self._finished = True
        self.completedAt = self.reactor.seconds() - self._started
        self.completedWall = time.time()
        self.needRepair = repair
        if self.session is not None and self._port is not None:
            self._port.write(wire.Error(wire.ERR_NOT_DEFINED, why).to_wire(), self.session)
        self._complete()

    def _complete(self):
        self._timer = None
        self._close()
        if not self.done.called:
            self.done.callback(self)

    def _fail(self, why, kind=FetchError):
        self._finished = True
        self._close()
        if not self.done.called:
            self.done.errback(kind(why))

    def _close(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        gp, self._groupPort = self._groupPort, None
        if gp is not None:
            try:
                gp.leaveGroup(self.group[0], self.interface or "0.0.0.0")
            except Exception:
                pass
            gp.stopListening()
        p, self._port = self._port, None
        if p is not None:
            p.stopListening()


class RepairClient(DatagramProtocol):
    """
    A unicast windowed (RFC 7440) download of the blocks C{ranges} of a
    file: RRQ with C{ranges}; the data is the listed blocks back to back,
    written at their places in C{output}. If the server does not echo
    C{ranges}, the data is the whole file.

    @ivar blocksReceived: DATA blocks taken (the count of repaired blocks
        when the server honoured C{ranges}).
    """

    log = Logger()

    def __init__(self, reactor, server, path, output, unit, ranges, size, blksize=1428,
                 windowsize=64, timeout=1, retries=6, interface=""):
        self.reactor = reactor
        self.server = server
        self.path = path
        self.output = output
        self.unit = unit
        self.ranges = list(ranges)
        self.fileSize = size
        self.blksize = blksize
        self.windowsize = windowsize
        self.timeout = timeout
        self.retries = retries
        self.interface = interface
        self.session = None
        self.expected = 1
        self.blocksReceived = 0
        self.bytesReceived = 0
        self.honoured = False
        self.done = defer.Deferred()
        self._timer = None
        self._tries = 0
        self._port = None
        self._segments = None
        self._started = False

    def start(self):
        self._port = self.reactor.listenUDP(0, self, interface=self.interface,
                                            maxPacketSize=65536)
        _bigBuffer(self._port)
        self._send(self._request())
        return self.done

    def _request(self):
        from provisioner.tftp.multicast.codec import formatRanges
        opts = [("blksize", str(self.blksize)), ("tsize", "0"),
                ("timeout", str(max(1, int(self.timeout))))]
        if self.windowsize > 1:
            opts.append(("windowsize", str(self.windowsize)))
        opts.append((RANGES_OPTION, formatRanges(self.unit, self.ranges)))
        return wire.ReadRequest(self.path.encode("utf-8"), "octet", opts).to_wire()

    def _send(self, packet, dest=None):
        self._last = packet
        self._lastDest = dest or self.session or self.server
        self._port.write(packet, self._lastDest)
        self._arm()

    def _arm(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self.reactor.callLater(self.timeout, self._timedOut)

    def _timedOut(self):
        self._timer = None
        self._tries += 1
        if self._tries > self.retries:
            self._finish(FetchError("repair: no answer"))
            return
        if self.session is None:
            self._send(self._request(), self.server)
        else:
            self._send(wire.encodeAck(self.expected - 1))

    def _layout(self, honoured):
        self.honoured = honoured
        segs = []
        total = 0
        if honoured:
            for a, b in self.ranges:
                start = (a - 1) * self.unit
                end = min(b * self.unit, self.fileSize)
                segs.append((total, start, max(0, end - start)))
                total += max(0, end - start)
        else:
            segs.append((0, 0, self.fileSize))
            total = self.fileSize
        self._segments = segs
        self.viewSize = total

    def _place(self, voffset, data):
        for vstart, fstart, length in self._segments:
            if not data:
                return
            if voffset >= vstart + length:
                continue
            skip = voffset - vstart
            take = min(length - skip, len(data))
            self.output.write(fstart + skip, data[:take])
            data = data[take:]
            voffset += take

    def datagramReceived(self, datagram, addr):
        packet = _sessionPacket(self, datagram, addr)
        if packet is None:
            return
        if isinstance(packet, wire.Error):
            self._finish(FetchError("repair: server error %d: %s" % (
                packet.code, packet.message)))
            return
        if self.session is None:
            self.session = addr
            if isinstance(packet, wire.OptionAck):
                opts = packet.optionDict
                self.blksize = int(opts.get("blksize", 512))
                self.windowsize = int(opts.get("windowsize", 1))
                self._layout(RANGES_OPTION in opts)
                self._tries = 0
                self._send(wire.encodeAck(0))
                return
            self.blksize = 512
            self.windowsize = 1
            self._layout(False)
        if isinstance(packet, wire.Data):
            self._tries = 0
            block = nearest32(packet.block, self.expected)
            if block == self.expected:
                self._place((block - 1) * self.blksize, packet.payload)
                if packet.payload:
                    self.blocksReceived += 1
                self.bytesReceived += len(packet.payload)
                self.expected += 1
                last = len(packet.payload) < self.blksize
                if last or (block % self.windowsize) == 0:
                    self._send(wire.encodeAck(block))
                if last:
                    self._finish(None)
            elif block > self.expected:
                self._send(wire.encodeAck(self.expected - 1))

    def _finish(self, error):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._port is not None:
            self._port.stopListening()
            self._port = None
        if self.done.called:
            return
        if error is None:
            self.done.callback(self)
        else:
            self.done.errback(error)


@defer.inlineCallbacks
def fetch(reactor, server, path, local, blksize=1428, windowsize=64, timeout=1,
          policy=None, epoch=True, interface="", patience=None):
    """
    Download C{path} from C{server} by multicast, repairing over unicast
    as the role policy decides.

    @return: a Deferred firing with a summary C{dict}: C{role}, C{roles},
        C{gaps} (the gap statistics at the end of the first pass, if any),
        C{repaired} (blocks received by unicast repair), C{repairRequests},
        C{size}.
    """
    output = local if hasattr(local, "write") and hasattr(local, "truncate") and \
        not hasattr(local, "fileno") else (
            _Output(fileobj=local) if hasattr(local, "fileno") else _Output(local))
    log = Logger(namespace="provisioner.client.mtftp.fetch")
    try:
        client = MulticastClient(reactor, server, path, output, blksize, windowsize,
                                 timeout, policy, epoch, interface=interface,
                                 patience=patience)
        yield client.start()
        summary = dict(role=client.role, roles=client.roles,
                       gaps=getattr(client, "gapStats", None), repaired=0,
                       repairRequests=0, size=client.size, multicastBlocks=client.stats["data"],
                       promoted=getattr(client, "promoted", None),
                       doneAt=getattr(client, "completedWall", None))
        if client.needRepair and not client.tracker.complete:
            gaps = client.tracker.gaps()
            for value, chunk in rangesOption(client.blksize, gaps):
                repair = RepairClient(reactor, server, path, output, client.blksize, chunk,
                                      client.size, blksize=client.blksize,
                                      windowsize=windowsize, timeout=timeout,
                                      interface=interface)
                yield repair.start()
                summary["repairRequests"] += 1
                summary["repaired"] += repair.blocksReceived
                for a, b in chunk:
                    for blk in range(a, b + 1):
                        client.tracker.add(blk)
                if not repair.honoured:
                    break
            summary["doneAt"] = time.time()
            log.info("smart repair of {path}: {blocks} block(s) by unicast in {requests} "
                     "request(s) ({gaps} gap(s))", path=path, blocks=summary["repaired"],
                     requests=summary["repairRequests"], gaps=len(gaps))
        output.truncate(client.size)
        defer.returnValue(summary)
    finally:
        output.close()


# Command line -------------------------------------------------------------

def fetchRunner(reactor, args, target, sink, reporter, fallback):
    """
    The C{--multicast} runner of C{provisioner fetch}
    (L{provisioner.client.cli.FETCH_RUNNERS}): multicast into C{sink} (a
    regular file), then a L{provisioner.client.tftp.FetchResult}; the role
    history and gap figures go to standard error. When the server refuses
    multicast (L{MulticastRefused}) the file is fetched by the ordinary
    unicast runner C{fallback} instead, unless C{--no-fallback}.
    """
    import sys

    from provisioner.client.tftp import FetchResult
    err = getattr(reporter, "stream", None) or sys.stderr
    if not hasattr(sink, "fileno") or not _isRegular(sink):
        return defer.fail(FetchError("--multicast needs -o FILE (a regular file)"))
    policy = RolePolicy(args.mc_smart_max_bytes, args.mc_smart_max_gaps,
                        args.mc_smart_max_gap, args.mc_smart_max_fraction,
                        repair=not args.mc_no_repair,
                        promoteGaps=getattr(args, "mc_promote_gaps", 32))
    started = reactor.seconds()
    d = fetch(reactor, (target.address, target.port), target.path, sink,
              blksize=args.blksize or 1428, windowsize=args.windowsize,
              timeout=max(1, int(args.timeout)), policy=policy, epoch=not args.mc_no_epoch,
              patience=args.mc_patience)

    def done(summary):
        result = FetchResult()
        result.mode = "multicast"
        result.size = summary["size"]
        result.tsize = summary["size"]
        result.blksize = args.blksize
        result.windowsize = args.windowsize
        result.elapsed = reactor.seconds() - started
        result.losses = (summary["gaps"] or {}).get("blocks", 0)
        sink.flush()
        result.sha256 = sha256File("/proc/self/fd/%d" % sink.fileno())
        err.write("multicast: role %s (%s); %d block(s) repaired by unicast in %d "
                         "request(s)\n" % (summary["role"], " -> ".join(
                             r for _, r, _ in summary["roles"]), summary["repaired"],
                             summary["repairRequests"]))
        return result

    def refused(f):
        f.trap(MulticastRefused)
        if not getattr(args, "fallback", True):
            return f
        err.write("multicast: refused by the server (%s); fetching by unicast\n" % (
            f.getErrorMessage(),))
        return fallback(reactor, args, target, sink, reporter)
    return d.addCallbacks(done, refused)


def _isRegular(f):
    import stat
    try:
        return stat.S_ISREG(os.fstat(f.fileno()).st_mode)
    except (OSError, ValueError):
        return False


def addArguments(parser):
    """
    The multicast flags of C{provisioner fetch} (also used by L{main}).
    """
    parser.add_argument("--multicast", action="store_true",
                        help="download by RFC 2090 multicast, repairing gaps by unicast")
    parser.add_argument("--mc-smart-max-bytes", type=int, default=8 << 20,
                        help="largest missing total a client repairs by unicast (smart); "
                        "above it the client stays in the group as active")
    parser.add_argument("--mc-smart-max-gaps", type=int, default=4096,
                        help="most gaps a smart client repairs by unicast")
    parser.add_argument("--mc-smart-max-gap", type=int, default=1024,
                        help="longest gap (blocks) a smart client repairs by unicast")
    parser.add_argument("--mc-smart-max-fraction", type=float, default=0.25,
                        help="largest missing fraction of the file for smart repair")
    parser.add_argument("--mc-promote-gaps", type=int, default=32,
                        help="with a server that grants mcepoch, a client with more gaps "
                        "than this after the first pass stays for a master turn (its "
                        "holes are multicast for the group) instead of repairing by "
                        "unicast; -1: only the smart thresholds decide")
    parser.add_argument("--mc-no-repair", action="store_true",
                        help="never repair by unicast (plain RFC 2090 client)")
    parser.add_argument("--mc-no-epoch", action="store_true",
                        help="do not ask for the mcepoch extension")
    parser.add_argument("--mc-patience", type=float, default=10.0,
                        help="seconds without multicast data (passive or master) before "
                        "the client repairs what it misses by unicast")


def runFetch(args):
    """
    Run a multicast fetch from parsed arguments (C{server}, C{port},
    C{path}, C{output}, C{blksize}, C{windowsize}, C{timeout} and the
    flags of L{addArguments}); prints a summary; returns the exit status.
    """
    import json
    import sys

    from twisted.internet import task

    policy = RolePolicy(args.mc_smart_max_bytes, args.mc_smart_max_gaps,
                        args.mc_smart_max_gap, args.mc_smart_max_fraction,
                        repair=not args.mc_no_repair,
                        promoteGaps=getattr(args, "mc_promote_gaps", 32))
    result = {}

    def go(reactor):
        d = fetch(reactor, (args.server, args.port), args.path, args.output,
                  blksize=args.blksize, windowsize=args.windowsize, timeout=args.timeout,
                  policy=policy, epoch=not args.mc_no_epoch, patience=args.mc_patience)

        def ok(summary):
            result.update(summary)
            result["ok"] = True

        def bad(f):
            result["ok"] = False
            result["error"] = f.getErrorMessage()
        return d.addCallbacks(ok, bad)

    try:
        task.react(go)
    except SystemExit:
        pass
    print(json.dumps(result, sort_keys=True))
    sys.stdout.flush()
    return 0 if result.get("ok") else 1


def _common(p):
    p.add_argument("server")
    p.add_argument("path")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("-p", "--port", type=int, default=69)
    p.add_argument("--blksize", type=int, default=1428)
    p.add_argument("--windowsize", type=int, default=64)
    p.add_argument("--timeout", type=int, default=1)
    addArguments(p)


def main(argv=None):
    import argparse
    import sys
    from twisted.logger import globalLogBeginner, textFileLogObserver
    parser = argparse.ArgumentParser(prog="python -m provisioner.client.mtftp")
    _common(parser)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.verbose:
        globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])
    return runFetch(args)


if __name__ == "__main__":
    import sys
    sys.exit(main())
