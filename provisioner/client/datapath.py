# -*- test-case-name: tests.test_client_receiver -*-
"""
The data channel of the image receiver: the multicast group it joins, the
datagrams it reads (in batches, through the C fast path when it is built),
verifies, writes at their offsets and counts, the kernel filter that drops
what it already holds, and whether a round's data is still arriving.
"""

import fcntl
import os
import struct
import termios

from twisted.internet import protocol
from twisted.internet.interfaces import ISystemHandle

from provisioner.client import sockfilter
from provisioner.client.output import ReceiveError, describeOSError
from provisioner.imagecast.datagram import OVERHEAD
from provisioner.net.sockopt import setPortBuffer
from provisioner.net import udpbatch

__all__ = ["DataProtocol", "DataPath"]


class DataProtocol(protocol.DatagramProtocol):
    """
    The data channel: hands every batch of datagrams (a
    L{provisioner.net.udpbatch} port) or single datagram to the L{Receiver}.
    """

    def __init__(self, receiver):
        self.receiver = receiver

    def datagramsReceived(self, payloads, addresses):
        self.receiver.datagramsReceived(payloads, addresses)

    def readBatch(self, sock, batch, size):
        return self.receiver.readBatch(sock, batch, size)

    def datagramReceived(self, data, addr):
        self.receiver.datagramsReceived((data,), (addr,))


def _cut(payloads, start, pieceStart, pieceEnd):
    """
    The parts of C{payloads} (back to back from C{start}) that cover
    C{[pieceStart, pieceEnd)}, as slices.
    """
    out = []
    at = start
    for p in payloads:
        end = at + len(p)
        if end > pieceStart and at < pieceEnd:
            out.append(p[max(pieceStart, at) - at:min(pieceEnd, end) - at])
        if end >= pieceEnd:
            break
        at = end
    return out


def _socketOf(port):
    """
    The socket of the data port, or L{None} when there is none (no port,
    or a port without a system handle: C{ISystemHandle}).
    """
    if port is None or not ISystemHandle.providedBy(port):
        return None
    return port.getHandle()


class DataPath:
    """
    The data channel of L{provisioner.client.receiver.Receiver} (a mixin;
    its answers to the pushes, its rounds, its end and the bookkeeping are
    its other parts). It uses the receiver's session (C{_verifier},
    C{round}, C{size}, C{group}, C{port}, C{chunkSize}, C{session}), its
    holdings (C{received}, C{output}, C{imageHash}, C{checks}: the piece
    check, or L{None}) and its round state
    (C{_position}, C{_roundEnd}, C{_roundOver}, C{_reportedRound},
    C{_lastDatagramRead}), and calls C{fail} when the disk fails.

    @ivar dataPort: the UDP port of the data channel, or L{None}.
    @ivar joined: the group joined, or L{None}.
    @ivar lastDatagram: when the last good datagram was read.
    @ivar rejected: datagrams dropped as malformed, forged, of another
        session or beyond the image.
    @ivar stale: datagrams of an earlier round.
    """

    _readBuffer = None

    def _armFilter(self, ranges, need):
        """
        Have the kernel drop the datagrams of this round that carry only
        bytes held here (L{sockfilter}): a repair round's receivers each
        want a small part of it.
        """
        sock = _socketOf(self.dataPort)
        if sock is None:
            return
        if self._filter is None or self._filter.sock is not sock:
            self._filter = sockfilter.RepairFilter(sock, self.session)
        self._filter.session = self.session
        self._filter.arm(ranges, need, self.chunkSize)

    def _dataPending(self):
        """
        Whether datagrams wait in the data socket (C{FIONREAD}): a round
        has not settled while this receiver still has data to read.
        """
        sock = _socketOf(self.dataPort)
        if sock is None or self.joined is None:
            return False
        try:
            raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
        except (OSError, ValueError):
            return False
        return struct.unpack("i", raw)[0] > 0

    def datagramReceived(self, data, addr):
        """
        One datagram (see L{datagramsReceived}).
        """
        self.datagramsReceived((data,), (addr,))

    def datagramsReceived(self, datagrams, addresses):
        """
        A batch of data datagrams (C{memoryview}s valid during the call
        only): every tag is verified, then the bookkeeping is done once per
        run of consecutive datagrams: the parts of a run this receiver
        lacks are written with one C{pwritev} each (never the bytes it
        holds: they may be checked already), added to the received ranges
        once, and hashed into the in-order prefix when they extend it; the
        pieces they complete are checked against their digests
        (L{provisioner.client.pieces}). Bad and stale datagrams are
        counted, not logged one by one.
        """
        verifier = self._verifier
        if verifier is None or self.finishing or self.failed:
            return
        runs, rejected, stale = verifier.verifyBatch(datagrams, self.round, self.size,
                                                     self.received)
        self._dropped(rejected, stale, addresses[0] if addresses else None)
        if not runs:
            return
        self.lastDatagram = self.reactor.seconds()
        write = self.output.writeRun
        image = self.imageHash
        checks = self.checks
        position = self._position
        new = 0
        try:
            for start, end, payloads in runs:
                if end > position:
                    position = end
                # (self.received: a piece that does not match is dropped
                # from it, in place)
                pieces = self.received.gaps(start, end)
                if not pieces:
                    continue
                for pieceStart, pieceEnd in pieces:
                    if pieceStart == start and pieceEnd == end:
                        buffers = payloads
                    else:
                        buffers = _cut(payloads, start, pieceStart, pieceEnd)
                    write(pieceStart, buffers)
                    new += self.received.add(pieceStart, pieceEnd)
                    if pieceStart == image.upTo:
                        # in order: hash it now, so that the check at the
                        # end only reads what came out of order (and the
                        # pieces it goes through are checked on the way)
                        image.extend(buffers, pieceEnd)
                    if checks is not None:
                        checks.added(pieceStart, pieceEnd)
        except ReceiveError as e:
            self.fail(str(e))
            return
        finally:
            self._position = position
        self._afterRuns(position, new)

    def _dropped(self, rejected, stale, peer):
        """
        Count a batch's bad and stale datagrams (not logged one by one);
        C{peer} is the source of a bad one, for the debug log.
        """
        if rejected:
            self.rejected += rejected
            self.log.debug("dropped {count} datagrams from {peer} (malformed, bad tag, other "
                           "session or beyond the image)", count=rejected, peer=peer)
        if stale:
            self.stale += stale

    _readBuffer = None

    def readBatch(self, sock, batch, size):
        """
        Take up to C{batch} datagrams off the data socket with the C fast
        path (L{SessionKey.receiveBatch}: read, verify and write in one
        call, no Python object per datagram), then do the bookkeeping of
        L{datagramsReceived} once per run. Only bytes not held are written
        (a datagram wholly here is dropped before its tag, and bytes
        written earlier in the batch count as held): the runs are what was
        written.

        @return: the datagrams read, or L{None} when the fast path cannot
            be used now (not built, no session, finishing): the port then
            reads and hands the batch to L{datagramsReceived}.
        """
        verifier = self._verifier
        if (verifier is None or self.finishing or self.failed
                or not verifier.canReceive() or self.output.fd is None):
            return None
        buf = self._readBuffer
        if buf is None or len(buf) < batch * size:
            buf = self._readBuffer = bytearray(batch * size)
        (count, runs, rejected, stale, truncated, peer, error,
         at) = verifier.receiveBatch(sock.fileno(), buf, size, batch, self.round, self.size,
                                     self.received, self.output.fd, self.imageHash.upTo)
        # (peer is None unless a datagram was rejected)
        self._dropped(rejected + truncated, stale, udpbatch._decodeName(peer) if peer else None)
        if runs:
            self.lastDatagram = self.reactor.seconds()
            image = self.imageHash
            checks = self.checks
            position = self._position
            new = 0
            for start, end, data in runs:
                if end > position:
                    position = end
                new += self.received.add(start, end)
                if data is not None and image.upTo == end - len(data):
                    # in order: hash it now (see datagramsReceived)
                    image.extend((data,), end)
                if checks is not None:
                    checks.added(start, end)
            self._position = position
        if error:
            self.fail(describeOSError(OSError(error, os.strerror(error)), self.output.path,
                                       "writing at %d" % (at,)))
            return count
        if runs:
            self._afterRuns(position, new)
        return count

    def _afterRuns(self, position, new):
        """
        After a batch's runs are written: move the kernel filter's window,
        report at the round's end, count the new bytes.
        """
        window = self._filter
        if window is not None and window.end is not None and position >= window.end:
            window.advance(position)
        if (self._roundEnd is not None and position >= self._roundEnd
                and self._roundOver != self.round and self._reportedRound < self.round):
            self._lastDatagramRead()
        if new:
            self.bytesReceived += new
            if self.round > 1:
                self.bytesRepaired += new
            self._dirty = True

    def _join(self):
        if self.joined == self.group:
            return
        from twisted.internet import error as ierror
        if self.dataPort is None:
            try:
                # recvmmsg batches: one system call and one bookkeeping
                # pass per up to 64 datagrams
                self.dataPort = udpbatch.listenMulticast(
                    self.reactor, self.port, DataProtocol(self),
                    maxPacketSize=max(2048, (self.chunkSize or 0) + OVERHEAD),
                    listenMultiple=True)
            except ierror.CannotListenError as e:
                self.fail("cannot listen on UDP port %d: %s" % (self.port, e))
                return
            setPortBuffer(self.dataPort, size=64 * 1024 * 1024)
        self.dataPort.joinGroup(self.group, self.interface or "0.0.0.0")
        self.joined = self.group
        self.log.debug("joined {group}:{port}", group=self.group, port=self.port)

    def _leave(self):
        if self.joined is None or self.dataPort is None:
            return
        try:
            self.dataPort.leaveGroup(self.joined, self.interface or "0.0.0.0")
        except Exception:
            pass
        self.joined = None

    def _closeData(self):
        self._filter = None
        if self.dataPort is not None:
            self.dataPort.stopListening()
            self.dataPort = None
