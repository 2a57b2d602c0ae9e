# -*- test-case-name: tests.test_tftp_udp -*-
"""
Socket helpers shared by every UDP sender and receiver (TFTP, multicast
TFTP, image multicast, DHCP): the Linux constants the C{socket} module does
not always name, buffer sizing, interface binding, MTUs and a UDP GSO probe.
"""

import socket

__all__ = ["SOL_UDP", "UDP_SEGMENT", "SO_BINDTODEVICE", "setSendBuffer", "setReceiveBuffer",
           "bindToDevice", "interfaceMTU", "pathMTU", "probeGSO"]

SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
IP_MTU = getattr(socket, "IP_MTU", 14)
IPV6_MTU = getattr(socket, "IPV6_MTU", 24)


def _setBuffer(sock, force, plain, size):
    for option in (force, plain):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
            return
        except OSError:
            continue


def setSendBuffer(sock, size):
    """
    Ask for a send buffer of C{size} bytes (C{SO_SNDBUFFORCE} as root, else
    C{SO_SNDBUF}, which the kernel caps at C{net.core.wmem_max}).
    """
    _setBuffer(sock, SO_SNDBUFFORCE, socket.SO_SNDBUF, size)


def setReceiveBuffer(sock, size):
    """
    Ask for a receive buffer of C{size} bytes (C{SO_RCVBUFFORCE} as root,
    else C{SO_RCVBUF}, capped at C{net.core.rmem_max}).
    """
    _setBuffer(sock, SO_RCVBUFFORCE, socket.SO_RCVBUF, size)


def bindToDevice(sock, ifname):
    """
    Restrict a socket to one interface (C{SO_BINDTODEVICE}; needs
    CAP_NET_RAW).
    """
    sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode() + b"\0")


def interfaceMTU(ifname):
    """
    The MTU of an interface from sysfs, or L{None}.
    """
    try:
        with open("/sys/class/net/%s/mtu" % (ifname,)) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def pathMTU(host, family=None):
    """
    The MTU of the route towards C{host} (C{IP_MTU} on a connected socket),
    or L{None} when the system cannot say.
    """
    if family is None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        s = socket.socket(family, socket.SOCK_DGRAM)
    except OSError:
        return None
    try:
        s.connect((host, 9))
        if family == socket.AF_INET6:
            return s.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU)
        return s.getsockopt(socket.IPPROTO_IP, IP_MTU)
    except OSError:
        return None
    finally:
        s.close()


def probeGSO(sock):
    """
    Whether this socket accepts C{UDP_SEGMENT} (UDP GSO, Linux 4.18+).
    """
    try:
        sock.setsockopt(SOL_UDP, UDP_SEGMENT, 0)
    except OSError:
        return False
    return True
