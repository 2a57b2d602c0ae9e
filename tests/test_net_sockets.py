# -*- test-case-name: tests.test_net_sockets -*-
"""
Tests for L{provisioner.net.sockets.udpSocket}, the one place the servers
make their UDP sockets (the TFTP listen and session ports, DHCP and PXE).
Real sockets on loopback.
"""

import socket

from twisted.trial.unittest import SynchronousTestCase

from provisioner.net.sockets import udpSocket


class UDPSocketTests(SynchronousTestCase):
    """
    L{udpSocket}.
    """

    def open(self, *args, **kw):
        sock = udpSocket(*args, **kw)
        self.addCleanup(sock.close)
        return sock

    def test_plain(self):
        """
        If asked for nothing else, the socket is a bound, non-blocking
        IPv4 UDP socket on an ephemeral port, without address reuse or
        broadcast.
        """
        sock = self.open("127.0.0.1")
        host, port = sock.getsockname()
        self.assertEqual((sock.family, sock.type, host), (socket.AF_INET, socket.SOCK_DGRAM,
                                                          "127.0.0.1"))
        self.assertGreater(port, 0)
        self.assertFalse(sock.getblocking())
        self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR), 0)
        self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST), 0)

    def test_options(self):
        """
        If asked, address reuse, broadcast and both buffer sizes are set
        (the kernel doubles what it grants; an unprivileged process may get
        less than asked, never less than its default).
        """
        sock = self.open("127.0.0.1", 0, reuseAddress=True, broadcast=True,
                         sendBuffer=1 << 20, receiveBuffer=1 << 20)
        self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR), 1)
        self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST), 1)
        self.assertGreaterEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF), 1 << 19)
        self.assertGreaterEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF), 1 << 19)

    def test_sharedPort(self):
        """
        If two sockets ask for address reuse, they share a port (the DHCP
        server's one socket per interface).
        """
        first = self.open("0.0.0.0", 0, reuseAddress=True)
        port = first.getsockname()[1]
        second = self.open("0.0.0.0", port, reuseAddress=True)
        self.assertEqual(second.getsockname()[1], port)

    def test_ipv6(self):
        """
        If the address has a colon, the socket is IPv6.
        """
        try:
            sock = self.open("::1")
        except OSError as e:
            raise self.skipTest("no IPv6 loopback: %s" % (e,))
        self.assertEqual(sock.family, socket.AF_INET6)

    def test_failureCloses(self):
        """
        If the socket cannot be bound, the error is raised and nothing is
        left open.
        """
        opened = []
        real = socket.socket

        def tracking(*args, **kw):
            sock = real(*args, **kw)
            opened.append(sock)
            return sock
        self.patch(socket, "socket", tracking)
        self.assertRaises(OSError, udpSocket, "192.0.2.1", 0)
        self.assertEqual([s.fileno() for s in opened], [-1])

    def test_interface(self):
        """
        If an interface is named that does not exist, the error is raised.
        """
        self.assertRaises(OSError, udpSocket, "127.0.0.1", 0, interface="no-such-if0")

    def test_dhcpSocket(self):
        """
        The DHCP server's sockets come from it: address reuse, broadcast, a
        1 MiB receive buffer.
        """
        from provisioner.dhcp.server import bindUDPSocket
        sock = bindUDPSocket("127.0.0.1", 0)
        self.addCleanup(sock.close)
        self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR), 1)
        self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST), 1)
        self.assertFalse(sock.getblocking())
