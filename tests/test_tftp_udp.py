"""
Tests for L{provisioner.tftp.udp}: windows sent with UDP GSO arrive as
separate DATA datagrams; the plain path and the fallbacks. Real sockets on
127.0.0.1 (port 0), no reactor.
"""

import errno
import os
import socket

from twisted.trial.unittest import SynchronousTestCase

from provisioner.tftp import udp, wire


class Pair:
    """
    A sending and a receiving UDP socket on loopback.
    """

    def __init__(self):
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.bind(("127.0.0.1", 0))
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.rx.settimeout(2)
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tx.bind(("127.0.0.1", 0))

    def receive(self, n):
        return [wire.decode(self.rx.recv(70000)) for _ in range(n)]

    def close(self):
        self.rx.close()
        self.tx.close()


def blocks(count, blksize, short=None):
    out = b"".join(bytes([i % 251]) * blksize for i in range(count - 1))
    return out + bytes([(count - 1) % 251]) * (blksize if short is None else short)


class SenderTests(SynchronousTestCase):
    """
    Tests for L{udp.WindowSender}.
    """

    def setUp(self):
        self.pair = Pair()
        self.addCleanup(self.pair.close)

    def check(self, sender, first, count, blksize, short=None):
        data = blocks(count, blksize, short)
        sent = sender.sendBlocks(first, data, blksize, count)
        self.assertEqual(sent, count)
        got = self.pair.receive(count)
        expected = [wire.Data((first + i) & 0xFFFF, data[i * blksize:(i + 1) * blksize])
                    for i in range(count)]
        self.assertEqual(got, expected)

    def test_gsoWindow(self):
        """
        If a window of equal blocks is sent with GSO, each block arrives as
        its own DATA datagram, numbered across the 16-bit wrap, in one
        system call.
        """
        sender = udp.WindowSender(self.pair.tx, self.pair.rx.getsockname())
        self.check(sender, 65530, 16, 1468)
        if udp.gsoAvailable():
            self.assertEqual(sender.calls, 1)

    def test_gsoShortLast(self):
        """
        If the last block of the window is short (or empty), it still
        arrives whole.
        """
        sender = udp.WindowSender(self.pair.tx, self.pair.rx.getsockname())
        self.check(sender, 1, 7, 512, short=100)
        self.check(sender, 8, 3, 512, short=0)

    def test_manySegments(self):
        """
        If a window has more datagrams than one GSO send may carry, it is
        split over several calls.
        """
        sender = udp.WindowSender(self.pair.tx, self.pair.rx.getsockname())
        self.check(sender, 1, 100, 512)
        if udp.gsoAvailable():
            self.assertEqual(sender.calls, 2)

    def test_bigBlocks(self):
        """
        If blocks are too big to batch, they go one per call.
        """
        sender = udp.WindowSender(self.pair.tx, self.pair.rx.getsockname())
        self.check(sender, 1, 3, 65464)
        self.assertEqual(sender.calls, 3)

    def test_plain(self):
        """
        If GSO is off, each datagram is its own call.
        """
        sender = udp.WindowSender(self.pair.tx, self.pair.rx.getsockname(), gso=False)
        self.check(sender, 1, 5, 1000)
        self.assertEqual(sender.calls, 5)


class FakeSocket:
    """
    A socket whose sendmsg fails as told.
    """

    def __init__(self, gsoErrno=None, fullAfter=None):
        self.gsoErrno = gsoErrno
        self.fullAfter = fullAfter
        self.sent = []

    def _check(self):
        if self.fullAfter is not None and len(self.sent) >= self.fullAfter:
            raise OSError(errno.EAGAIN, "full")

    def sendmsg(self, iov, ancillary=(), flags=0, addr=None):
        if ancillary and self.gsoErrno:
            raise OSError(self.gsoErrno, "no")
        self._check()
        self.sent.append(b"".join(bytes(b) for b in iov))

    def sendto(self, data, addr):
        self._check()
        self.sent.append(bytes(data))


class FallbackTests(SynchronousTestCase):
    """
    When the kernel refuses GSO or the buffer is full.
    """

    def test_refused(self):
        """
        If GSO is refused, the window goes out one datagram at a time and
        that sender stays plain.
        """
        sock = FakeSocket(gsoErrno=errno.EINVAL)
        sender = udp.WindowSender(sock, ("127.0.0.1", 9))
        self.assertEqual(sender.sendBlocks(1, b"a" * 2048, 512, 4), 4)
        self.assertEqual(len(sock.sent), 4)
        self.assertFalse(sender.gso)

    def test_full(self):
        """
        If the socket buffer fills up, the sender says how many left.
        """
        sock = FakeSocket(fullAfter=2)
        sender = udp.WindowSender(sock, ("127.0.0.1", 9), gso=False)
        self.assertEqual(sender.sendBlocks(1, b"a" * 2048, 512, 4), 2)


class HelperTests(SynchronousTestCase):
    """
    Socket helpers.
    """

    def test_pathMTU(self):
        """
        The MTU towards loopback is the loopback MTU.
        """
        mtu = udp.pathMTU("127.0.0.1")
        self.assertTrue(mtu is None or mtu >= 1280)
        self.assertGreaterEqual(udp.interfaceMTU("lo"), 1280)
        self.assertIsNone(udp.interfaceMTU("no-such-interface"))


class ControlSocketTests(SynchronousTestCase):
    """
    L{netio.quickRecovery} and L{netio.memoryBacked}.
    """

    def test_quickRecovery(self):
        """
        The TCP socket under a transport (through wrappers) gets the minimum
        retransmission timeout and the delayed-ACK bound asked for, where
        the kernel has the options; 0 leaves it alone.
        """
        from provisioner.net import sockopt as netio
        server = socket.socket()
        self.addCleanup(server.close)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        client = socket.create_connection(server.getsockname())
        self.addCleanup(client.close)

        class TCP:
            socket = client

        class TLS:
            transport = TCP()
        self.assertIs(netio.streamSocket(TLS()), client)
        self.assertIsNone(netio.streamSocket(object()))
        self.assertFalse(netio.quickRecovery(TLS(), 0))
        if not netio.quickRecovery(TLS(), 0.02):
            raise self.skipTest("this kernel has no TCP_RTO_MIN_US (Linux 6.15)")
        # the kernel rounds to its clock tick
        rto = client.getsockopt(socket.IPPROTO_TCP, netio.TCP_RTO_MIN_US)
        self.assertTrue(15000 <= rto <= 30000, rto)
        self.assertEqual(client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 1)

    def test_memoryBacked(self):
        """
        /dev/shm (tmpfs) is memory-backed; a descriptor that is not open
        is not.
        """
        import os
        from provisioner.net import sockopt as netio
        if os.path.isdir("/dev/shm"):
            shm = os.open("/dev/shm", os.O_RDONLY)
            self.addCleanup(os.close, shm)
            self.assertTrue(netio.memoryBacked(shm))
        self.assertFalse(netio.memoryBacked(10 ** 6))


class FramingTests(SynchronousTestCase):
    """
    The DATA framing is a constructor argument of both senders (multicast
    TFTP's C{mcepoch} header), and L{udp.defaultSender} passes it on.
    """

    def setUp(self):
        self.pair = Pair()
        self.addCleanup(self.pair.close)

    def test_windowSenderHeader(self):
        """
        If a L{udp.WindowSender} is built with the C{mcepoch} header, every
        datagram of a window (plain or GSO) carries the 32-bit block.
        """
        from provisioner.tftp.multicast.codec import (
            EPOCH_HEADER_SIZE, decodeData32, epochHeader)
        for gso in (True, False):
            sender = udp.WindowSender(self.pair.tx, self.pair.rx.getsockname(), gso=gso,
                                      header=epochHeader, headerSize=EPOCH_HEADER_SIZE)
            self.assertEqual(sender.sendBlocks(0x1FFFE, b"ab" * 8, 4, 4), 4)
            got = [decodeData32(self.pair.rx.recv(100)) for _ in range(4)]
            self.assertEqual(got, [(0x1FFFE + i, b"abab") for i in range(4)])

    def test_defaultHeader(self):
        """
        Without a header argument, the RFC 1350 header.
        """
        self.assertIs(udp.WindowSender(self.pair.tx, ("127.0.0.1", 9)).header, udp.dataHeader)
        self.assertEqual(udp.dataHeader(0x10001), b"\x00\x03\x00\x01")

    def test_transportSenderHeader(self):
        """
        If a L{udp.TransportSender} is built with a header, it frames each
        block with it.
        """
        written = []

        class Transport:
            def write(self, datagram, addr):
                written.append((datagram, addr))

        sender = udp.TransportSender(Transport(), ("10.0.0.1", 5),
                                     header=lambda block: b"H%d:" % (block,), headerSize=3)
        self.assertEqual(sender.sendBlocks(7, b"aabb", 2, 2), 2)
        self.assertEqual(written, [(b"H7:aa", ("10.0.0.1", 5)), (b"H8:bb", ("10.0.0.1", 5))])

    def test_defaultSender(self):
        """
        L{udp.defaultSender} gives a L{udp.WindowSender} on a transport with
        a socket (C{ISystemHandle}; with the GSO choice and framing it is
        given), else a L{udp.TransportSender}.
        """
        from twisted.internet.interfaces import ISystemHandle
        from zope.interface import implementer
        sock = self.pair.tx

        @implementer(ISystemHandle)
        class Port:
            def getHandle(self):
                return sock

        header = lambda block: b""  # noqa: E731
        sender = udp.defaultSender(Port(), ("127.0.0.1", 9), False, header, 0)
        self.assertIsInstance(sender, udp.WindowSender)
        self.assertEqual((sender.sock, sender.gso, sender.header, sender.headerSize),
                         (sock, False, header, 0))
        sender = udp.defaultSender(object(), ("127.0.0.1", 9), True, header, 0)
        self.assertIsInstance(sender, udp.TransportSender)
        self.assertIs(sender.header, header)


class OpenPortTests(SynchronousTestCase):
    """
    L{udp.openPort} adopts a socket of its own only on a reactor that
    provides C{IReactorSocket}.
    """

    def test_fakeReactor(self):
        """
        If the reactor cannot adopt sockets, the port comes from its
        C{listenUDP}.
        """
        from tests.fakes import FakeReactor
        from twisted.internet.protocol import DatagramProtocol
        reactor = FakeReactor()
        port = udp.openPort(reactor, DatagramProtocol(), "127.0.0.1", 0, interface="lo")
        self.assertEqual(reactor.ports, [port])

    def test_adopts(self):
        """
        If the reactor provides C{IReactorSocket}, it is handed a socket
        bound to the address (with the asked send buffer).
        """
        from twisted.internet.interfaces import IReactorSocket
        from zope.interface import implementer
        adopted = []

        @implementer(IReactorSocket)
        class Reactor:
            def adoptDatagramPort(self, fileDescriptor, addressFamily, protocol,
                                  maxPacketSize=8192):
                sock = socket.socket(fileno=os.dup(fileDescriptor))
                adopted.append((sock.getsockname(), addressFamily, maxPacketSize,
                                sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)))
                sock.close()
                return "port"

        self.assertEqual(udp.openPort(Reactor(), None, "127.0.0.1", 0, maxPacketSize=100,
                                      sendBuffer=1 << 20), "port")
        [(address, family, size, sndbuf)] = adopted
        self.assertEqual((address[0], family, size), ("127.0.0.1", socket.AF_INET, 100))
        self.assertGreaterEqual(sndbuf, 1 << 19)


class PortBufferTests(SynchronousTestCase):
    """
    L{provisioner.net.sockopt.setPortBuffer}.
    """

    def test_port(self):
        """
        If the port has a system handle, its socket gets the buffer.
        """
        from twisted.internet import udp as tudp
        from twisted.internet.protocol import DatagramProtocol
        from provisioner.net.sockopt import setPortBuffer
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        port = tudp.Port(0, DatagramProtocol())
        port.socket = sock
        setPortBuffer(port, receive=False, size=1 << 20)
        self.assertGreaterEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF), 1 << 19)
        setPortBuffer(port, size=1 << 20)
        self.assertGreaterEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF), 1 << 19)

    def test_noHandle(self):
        """
        If the port has no system handle (a fake), it is left alone.
        """
        from provisioner.net.sockopt import setPortBuffer
        from tests.fakes import FakeDatagramPort
        setPortBuffer(FakeDatagramPort(), size=1 << 20)
