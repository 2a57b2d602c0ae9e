# -*- test-case-name: tests.test_imagecast_sender -*-
"""
The output of imagecast: where a round's datagrams go and how they are cut
and paced.

  - L{IDatagramWriter}: where a round's datagrams go.
  - L{UDPWriter}: the send path, with UDP GSO (C{UDP_SEGMENT}) for batches of
    equal-size datagrams where the kernel has it.
  - L{RoundSender}: one round's datagrams, cut from the announced ranges and
    paced by a L{provisioner.net.pacing.TokenBucket} at the round's rate.

Nothing here imports the reactor: L{RoundSender} takes a clock.
"""

import errno
import socket
import struct

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import Interface, implementer

from provisioner.imagecast import ranges as R
from provisioner.imagecast.datagram import OVERHEAD, SessionKey
from provisioner.net.pacing import TokenBucket
from provisioner.net.sockopt import SOL_UDP, UDP_SEGMENT, probeGSO, setSendBuffer

__all__ = ["IDatagramWriter", "UDPWriter", "RoundSender", "MAX_SEGMENTS"]

#: the most datagrams in one batch (one UDP GSO send)
MAX_SEGMENTS = 64


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
                 rate, batch=MAX_SEGMENTS, gate=None):
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
        self.bucket = TokenBucket(clock, rate, max(datagramSize * self.batchMax, rate * 0.004))
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
                self._call = self.clock.callLater(max(0.0005, self.bucket.wait(cost)),
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
                self.bucket.giveBack(sum(len(d) for d in self._pending))
                self._call = self.clock.callLater(0.001, self._tick)
                return
