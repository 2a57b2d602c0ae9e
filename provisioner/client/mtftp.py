# -*- test-case-name: tests.test_mtftp_client -*-
"""
The multicast TFTP client (RFC 2090) with client roles and smart repair.

  - L{MulticastClient}: the protocol: RRQ with C{multicast}, joins the group
    from the OACK, ACKs only while master (mc=1: its ACKs are
    L{provisioner.client.masteracks}), records role changes
    (L{provisioner.client.roles}) and the gaps (L{GapTracker}).
  - L{fetch}: the whole flow, for C{provisioner fetch --multicast}: the
    multicast download, then smart repair of what is still missing by
    unicast reads of only the missing blocks (L{smartRepair}).

The command line (C{provisioner fetch --multicast}, and C{python -m
provisioner.client.mtftp}, which prints a JSON summary) is in
L{provisioner.client.cli}.
"""

import time

from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from provisioner.client.gaps import GapTracker, RangeLister
from provisioner.client.masteracks import MasterAcks
from provisioner.client.output import BlockOutput
from provisioner.client.repair import smartRepair
from provisioner.client.roles import ACTIVE, PASSIVE, PROMOTED, SMART, RolePolicy
from provisioner.client.tftp import TFTPError, TransferTimeout, rearm
from provisioner.net.sockopt import setPortBuffer
from provisioner.net import udpbatch
from provisioner.tftp import wire
from provisioner.tftp.multicast.codec import (
    EPOCH_OPTION, MAX_ACK_RANGES, MULTICAST_OPTION, blockCount, decodeData32, nearest32)

__all__ = ["GapTracker", "RolePolicy", "MulticastClient", "fetch",
           "ACTIVE", "PASSIVE", "SMART", "PROMOTED", "FetchError", "MulticastRefused"]


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


class MulticastClient(MasterAcks, DatagramProtocol):
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
        self._listed = RangeLister()
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
        self._finished = False
        self._started = reactor.seconds()
        self._stalls = 0
        self.gapStats = None
        self.promoted = None
        self.completedAt = None
        self.completedWall = None

    # Roles ----------------------------------------------------------------

    def _setRole(self, role, reason):
        if role == self.role:
            return
        old = self.role
        self.role = role
        self.roles.append((self.reactor.seconds() - self._started, role, reason))
        self.log.info("multicast TFTP client {path}: role {old} -> {role} ({reason})",
                      path=self.path, old=old or "none", role=role, reason=reason)

    # Start ----------------------------------------------------------------

    def start(self):
        self._port = self.reactor.listenUDP(0, self, interface=self.interface,
                                            maxPacketSize=65536)
        setPortBuffer(self._port)
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
                self.log.info("multicast TFTP client {path}: the server ended our membership "
                              "({message}); smart repair of the rest", path=self.path,
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
        setPortBuffer(self._groupPort)
        self._groupPort.joinGroup(gaddr, self.interface or "0.0.0.0")

    # Group socket: DATA ---------------------------------------------------

    def groupDatagram(self, datagram, addr):
        if addr != self.session or self._finished:
            return
        self._data(datagram)

    def _data(self, datagram):
        """
        A DATA datagram of the session: placed (L{_place}); then the master
        decides whether to ACK (L{_masterData}), and a passive client
        leaves once complete or waits for more.
        """
        block = self._place(datagram)
        if block is None:
            return
        if self.role == ACTIVE:
            self._masterData(block)
        elif self.tracker.complete:
            self._leave("complete")
        else:
            self._arm(self.patience, self._idle)

    def _place(self, datagram):
        """
        Decode a DATA datagram, write its block if it is new, and notice
        the end of the first pass.

        @return: the block number, or L{None} if the datagram is no DATA of
            this file.
        """
        try:
            if self.epoch:
                block, payload = decodeData32(datagram)
            else:
                packet = wire.decode(datagram)
                if not isinstance(packet, wire.Data):
                    return None
                block, payload = nearest32(packet.block, self.lastPlaced), packet.payload
        except wire.WireError:
            return None
        t = self.tracker
        if block < 1 or block > t.nblocks:
            return None
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
        return block

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
        self.log.info("multicast TFTP client {path}: first pass over with {gaps} gap(s), "
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
            self.log.info("multicast TFTP client {path}: no data for {patience}s, "
                          "smart repair of the rest", path=self.path, patience=self.patience)
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


@defer.inlineCallbacks
def fetch(reactor, server, path, local, blksize=1428, windowsize=64, timeout=1,
          policy=None, epoch=True, interface="", patience=None):
    """
    Download C{path} from C{server} by multicast, repairing over unicast
    (smart repair) as the role policy decides.

    @param local: a path, an open file, or an output of the caller's (with
        C{write(offset, data)}, C{truncate(size)} and C{close()}).
    @return: a Deferred firing with a summary C{dict}: C{role}, C{roles},
        C{gaps} (the gap statistics at the end of the first pass, if any),
        C{repaired} (blocks received by unicast repair), C{repairRequests},
        C{size}.
    """
    output = _output(local)
    try:
        client = MulticastClient(reactor, server, path, output, blksize, windowsize,
                                 timeout, policy, epoch, interface=interface,
                                 patience=patience)
        yield client.start()
        summary = dict(role=client.role, roles=client.roles,
                       gaps=client.gapStats, repaired=0,
                       repairRequests=0, size=client.size, multicastBlocks=client.stats["data"],
                       promoted=client.promoted, doneAt=client.completedWall)
        if client.needRepair and not client.tracker.complete:
            try:
                requests, repaired = yield smartRepair(
                    reactor, server, path, output, client.tracker, client.blksize,
                    client.size, windowsize=windowsize, timeout=timeout, interface=interface)
            except TransferTimeout:
                raise FetchError("repair: no answer")
            except TFTPError as e:
                raise FetchError("repair: server error %d: %s" % (e.code, e.message)
                                 if e.code is not None else "repair: %s" % (e.message,))
            summary.update(repairRequests=requests, repaired=repaired, doneAt=time.time())
        output.truncate(client.size)
        defer.returnValue(summary)
    finally:
        output.close()


def _output(local):
    """
    The output of L{fetch} for C{local}: an output of the caller's as it
    is, else a L{BlockOutput} on the open file or the path.
    """
    if hasattr(local, "fileno"):
        return BlockOutput(fileobj=local)
    if hasattr(local, "write") and hasattr(local, "truncate"):
        return local
    return BlockOutput(local)


if __name__ == "__main__":
    # python -m provisioner.client.mtftp: the command line is in the CLI module
    import sys

    from provisioner.client.cli import mtftpMain
    sys.exit(mtftpMain())
