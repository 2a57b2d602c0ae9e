# -*- test-case-name: tests.test_net_sockets -*-
"""
Making UDP sockets: the one place where the appliance's servers create,
configure and bind a datagram socket (the TFTP listen port, the TFTP session
ports, the DHCP and PXE ports).

The options go on in the order the kernel needs them: address reuse and
broadcast, buffer sizes, C{SO_BINDTODEVICE}, all before C{bind}.
"""

import socket

from provisioner.net.sockopt import bindToDevice, setReceiveBuffer, setSendBuffer

__all__ = ["udpSocket"]


def udpSocket(address, port=0, interface=None, sendBuffer=None, receiveBuffer=None,
              reuseAddress=False, broadcast=False):
    """
    A bound, non-blocking UDP socket.

    @param address: the local address (text); IPv6 when it has a colon.
    @param port: the local port (0: an ephemeral one).
    @param interface: restrict the socket to this interface
        (C{SO_BINDTODEVICE}), or L{None}.
    @param sendBuffer: ask for a send buffer of this many bytes, or L{None}.
    @param receiveBuffer: ask for a receive buffer of this many bytes, or
        L{None}.
    @param reuseAddress: set C{SO_REUSEADDR} (several sockets, one per
        interface, share the port).
    @param broadcast: set C{SO_BROADCAST}.
    @return: the socket; the caller owns it.
    @raise OSError: the socket cannot be made, configured or bound (nothing
        is left open).
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if reuseAddress:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if broadcast:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if sendBuffer:
            setSendBuffer(sock, sendBuffer)
        if receiveBuffer:
            setReceiveBuffer(sock, receiveBuffer)
        if interface:
            bindToDevice(sock, interface)
        sock.bind((address, port))
    except BaseException:
        sock.close()
        raise
    return sock
