"""
Tests for L{provisioner.net.udpbatch}: batched UDP receive on loopback sockets.
"""

import socket

from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.trial import unittest

from provisioner.net import udpbatch
from tests.fakes import FakeReactor


def _pair(family=socket.AF_INET, host="127.0.0.1"):
    receiver = socket.socket(family, socket.SOCK_DGRAM)
    receiver.bind((host, 0))
    receiver.setblocking(False)
    sender = socket.socket(family, socket.SOCK_DGRAM)
    sender.bind((host, 0))
    return receiver, sender


class ReaderMixin:
    """
    The reader's contract, for both the C{recvmmsg} and the loop paths.
    """

    useRecvmmsg = None

    def reader(self, sock, **kw):
        r = udpbatch.BatchSocketReader(sock, useRecvmmsg=self.useRecvmmsg, **kw)
        return r

    def setUp(self):
        self.receiver, self.sender = _pair()
        self.addCleanup(self.receiver.close)
        self.addCleanup(self.sender.close)
        self.dest = self.receiver.getsockname()

    def test_nothingWaiting(self):
        """
        If nothing is waiting, L{receive} returns two empty lists.
        """
        self.assertEqual(self.reader(self.receiver).receive(), ([], []))

    def test_batches(self):
        """
        If more datagrams wait than one batch holds, L{receive} returns a
        full batch, then the rest, in order, each with its sender.
        """
        sent = [b"%d:" % (i,) + bytes([i]) * (i * 7 % 1400) for i in range(100)]
        for d in sent:
            self.sender.sendto(d, self.dest)
        r = self.reader(self.receiver, batch=64, size=2048)
        first, addrs1 = r.receive()
        self.assertEqual(len(first), 64)
        got = [bytes(p) for p in first]
        second, addrs2 = r.receive()
        got += [bytes(p) for p in second]
        self.assertEqual(got, sent)
        self.assertEqual(set(addrs1 + addrs2), {self.sender.getsockname()})
        self.assertEqual(r.receive(), ([], []))

    def test_truncated(self):
        """
        A datagram longer than C{size} is dropped and counted; the others
        in the batch are kept.
        """
        self.sender.sendto(b"a" * 10, self.dest)
        self.sender.sendto(b"b" * 300, self.dest)
        self.sender.sendto(b"c" * 20, self.dest)
        r = self.reader(self.receiver, batch=8, size=100)
        payloads, _ = r.receive()
        self.assertEqual([bytes(p) for p in payloads], [b"a" * 10, b"c" * 20])
        self.assertEqual(r.truncated, 1)

    def test_ipv6(self):
        """
        Senders on IPv6 are reported as C{(host, port)}.
        """
        try:
            receiver, sender = _pair(socket.AF_INET6, "::1")
        except OSError:
            raise unittest.SkipTest("no IPv6 loopback")
        self.addCleanup(receiver.close)
        self.addCleanup(sender.close)
        sender.sendto(b"six", receiver.getsockname()[:2])
        payloads, addrs = self.reader(receiver).receive()
        self.assertEqual([bytes(p) for p in payloads], [b"six"])
        self.assertEqual(addrs, [sender.getsockname()[:2]])


class RecvmmsgReaderTests(ReaderMixin, unittest.TestCase):
    """
    The C{recvmmsg} path.
    """

    useRecvmmsg = True

    def setUp(self):
        if not udpbatch.HAVE_RECVMMSG:
            raise unittest.SkipTest("no recvmmsg in this C library")
        ReaderMixin.setUp(self)


class LoopReaderTests(ReaderMixin, unittest.TestCase):
    """
    The C{recvfrom_into} fallback.
    """

    useRecvmmsg = False


class _Batches(DatagramProtocol):
    def __init__(self, want):
        self.want = want
        self.got = []
        self.calls = 0
        self.done = defer.Deferred()

    def datagramsReceived(self, payloads, addresses):
        self.calls += 1
        self.got.extend(bytes(p) for p in payloads)
        if len(self.got) >= self.want and not self.done.called:
            self.done.callback(None)


class _Single(DatagramProtocol):
    def __init__(self, want):
        self.want = want
        self.got = []
        self.done = defer.Deferred()

    def datagramReceived(self, data, addr):
        self.got.append((data, addr))
        if len(self.got) >= self.want and not self.done.called:
            self.done.callback(None)


class PortTests(unittest.TestCase):
    """
    L{udpbatch.listenUDP} on the real reactor.
    """

    def send(self, port, datagrams):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(s.close)
        s.bind(("127.0.0.1", 0))
        for d in datagrams:
            s.sendto(d, ("127.0.0.1", port.getHost().port))
        return s.getsockname()

    @defer.inlineCallbacks
    def test_batchProtocol(self):
        """
        A protocol with C{datagramsReceived} gets every datagram, in fewer
        calls than datagrams when they queue up.
        """
        proto = _Batches(200)
        port = udpbatch.listenUDP(reactor, 0, proto, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.assertIsInstance(port, udpbatch.BatchUDPPort)
        sent = [b"x%d" % (i,) for i in range(200)]
        self.send(port, sent)
        yield proto.done
        self.assertEqual(proto.got, sent)
        self.assertLess(proto.calls, 200)

    @defer.inlineCallbacks
    def test_singleProtocol(self):
        """
        A protocol with only C{datagramReceived} gets each datagram as
        C{bytes} with its sender.
        """
        proto = _Single(3)
        port = udpbatch.listenUDP(reactor, 0, proto, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        source = self.send(port, [b"a", b"b", b"c"])
        yield proto.done
        self.assertEqual(proto.got, [(b"a", source), (b"b", source), (b"c", source)])
        self.assertIsInstance(proto.got[0][0], bytes)

    @defer.inlineCallbacks
    def test_protocolError(self):
        """
        If the protocol raises, the error is logged and the port keeps
        reading.
        """
        proto = _Batches(2)
        calls = []

        def datagramsReceived(payloads, addresses):
            calls.append(len(payloads))
            if len(calls) == 1:
                raise RuntimeError("boom")
            _Batches.datagramsReceived(proto, payloads, addresses)

        proto.datagramsReceived = datagramsReceived
        port = udpbatch.listenUDP(reactor, 0, proto, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.send(port, [b"one"])
        while not calls:
            yield _tick()
        self.send(port, [b"two", b"three"])
        yield proto.done
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    @defer.inlineCallbacks
    def test_protocolReadsItself(self):
        """
        A protocol with C{readBatch} reads the socket itself while it
        accepts to (a count); when it declines (L{None}) the port reads and
        hands the datagrams over as usual.
        """
        proto = _Batches(2)
        reads = []

        def readBatch(sock, batch, size):
            if reads:
                return None
            data = sock.recv(size)
            reads.append((data, batch, size))
            return 1

        proto.readBatch = readBatch
        port = udpbatch.listenUDP(reactor, 0, proto, interface="127.0.0.1",
                                  maxPacketSize=1500)
        self.addCleanup(port.stopListening)
        self.send(port, [b"first"])
        while not reads:
            yield _tick()
        self.assertEqual(reads, [(b"first", port.batchSize, 1500)])
        self.send(port, [b"a", b"b"])
        yield proto.done
        self.assertEqual(proto.got, [b"a", b"b"])

    @defer.inlineCallbacks
    def test_protocolReadFails(self):
        """
        If the protocol's C{readBatch} raises, the error is logged once and
        the port reads the socket itself from then on.
        """
        proto = _Batches(2)
        calls = []

        def readBatch(sock, batch, size):
            calls.append(1)
            raise RuntimeError("boom")

        proto.readBatch = readBatch
        port = udpbatch.listenUDP(reactor, 0, proto, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.send(port, [b"a", b"b"])
        yield proto.done
        self.assertEqual(proto.got, [b"a", b"b"])
        self.assertEqual(len(calls), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_multicastPort(self):
        """
        L{udpbatch.listenMulticast} gives a multicast port that can join
        groups (its behaviour is Twisted's).
        """
        port = udpbatch.listenMulticast(reactor, 0, _Batches(1), interface="127.0.0.1",
                                        listenMultiple=True)
        self.addCleanup(port.stopListening)
        self.assertIsInstance(port, udpbatch.BatchMulticastPort)

    def test_fakeReactor(self):
        """
        On a reactor without file descriptors the reactor's own port is
        used, with batches of one.
        """
        fake = FakeReactor()
        protos = [_Batches(2), _Batches(2)]
        udpbatch.listenMulticast(fake, 1234, protos[0], listenMultiple=True)
        udpbatch.listenUDP(fake, 0, protos[1])
        self.assertEqual(len(fake.ports), 2)
        self.assertEqual(fake.ports[0].port, 1234)
        for port in fake.ports:
            port.protocol.datagramReceived(b"hello", ("198.18.0.1", 69))
        self.assertEqual([p.got for p in protos], [[b"hello"], [b"hello"]])


def _tick():
    d = defer.Deferred()
    reactor.callLater(0.01, d.callback, None)
    return d
