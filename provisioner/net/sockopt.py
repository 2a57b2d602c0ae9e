# -*- test-case-name: tests.test_tftp_udp -*-
"""
Socket helpers shared by every UDP sender and receiver (TFTP, multicast
TFTP, image multicast, DHCP): the Linux constants the C{socket} module does
not always name, buffer sizing, interface binding, MTUs and a UDP GSO probe.
"""

import socket

from twisted.internet.interfaces import ISystemHandle

__all__ = ["SOL_UDP", "UDP_SEGMENT", "SO_BINDTODEVICE", "setSendBuffer", "setReceiveBuffer",
           "setPortBuffer",
           "bindToDevice", "interfaceMTU", "pathMTU", "probeGSO", "streamSocket", "quickRecovery",
           "memoryBacked", "libc", "CONTROL_RTO_MIN"]

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


def setPortBuffer(port, receive=True, size=8 << 20):
    """
    Ask for a large buffer on the socket of a Twisted port (multicast
    streams arrive and leave in bursts): the receive buffer, or with
    C{receive=False} the send buffer; root may go past
    C{rmem_max}/C{wmem_max}. A port with no system handle
    (C{ISystemHandle}) has no socket to size and is left alone.
    """
    if not ISystemHandle.providedBy(port):
        return
    (setReceiveBuffer if receive else setSendBuffer)(port.getHandle(), size)


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


def libc():
    """
    Return the C library through C{ctypes} (errno kept), loaded once, or
    L{None} where it cannot be loaded.
    """
    global _libc
    if _libc is False:
        try:
            import ctypes
            import ctypes.util
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        except OSError:
            _libc = None
    return _libc


_libc = False

#: the default of C{multicast.control_rto_min}, which receivers use too
CONTROL_RTO_MIN = 0.02

#: Linux 6.15+: per-socket floor of the retransmission timeout, and the
#: longest delayed ACK, both in microseconds
TCP_RTO_MIN_US = 45
TCP_DELACK_MAX_US = 46


def streamSocket(transport):
    """
    Return the TCP socket under C{transport} (through TLS wrappers), or
    L{None}.
    """
    for _ in range(4):
        if transport is None:
            return None
        sock = getattr(transport, "socket", None)
        if isinstance(sock, socket.socket):
            return sock
        transport = getattr(transport, "transport", None)
    return None


def quickRecovery(transport, rtoMin):
    """
    Let a LAN control connection recover a lost segment in about C{rtoMin}
    seconds instead of the kernel's 200 ms floor (and its doublings): the
    socket's minimum retransmission timeout and its longest delayed ACK
    (which also times the tail-loss probe) are set to C{rtoMin}. RTT still
    adapts the timeout upwards. No-op when C{rtoMin} is 0 or the kernel
    lacks the options (before Linux 6.15).

    @return: whether the options were set.
    """
    sock = streamSocket(transport)
    if sock is None or not rtoMin:
        return False
    micros = max(1000, int(rtoMin * 1e6))
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.IPPROTO_TCP, TCP_RTO_MIN_US, micros)
        sock.setsockopt(socket.IPPROTO_TCP, TCP_DELACK_MAX_US, micros)
    except OSError:
        return False
    return True


#: statfs(2) f_type of tmpfs and ramfs
_MEMORY_FILESYSTEMS = (0x01021994, 0x858458f6)


def memoryBacked(fd):
    """
    Whether the file open on C{fd} lives in memory (tmpfs, ramfs), where
    preallocating commits and zeroes pages at once. Linux only (C{fstatfs}
    through ctypes); L{False} when it cannot tell.
    """
    c = libc()
    try:
        import ctypes
        buf = ctypes.create_string_buffer(256)
        if c is None or c.fstatfs(int(fd), buf) != 0:
            return False
        fsType = ctypes.c_long.from_buffer(buf).value
    except (AttributeError, ValueError):
        return False
    return fsType in _MEMORY_FILESYSTEMS
