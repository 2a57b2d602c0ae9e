# -*- test-case-name: tests.test_tftp_udp -*-
"""
The send path of a read session: a window of DATA datagrams in as few
system calls as the kernel allows.

L{WindowSender.sendBlocks} takes the bytes of consecutive blocks (one
C{pread} per window) and sends them:

  - with UDP generic segmentation offload (C{UDP_SEGMENT}, Linux 4.18+):
    one C{sendmsg} carries up to 64 datagrams of equal size (the last may be
    shorter), the TFTP headers and the file data passed as a scatter list,
    so nothing is copied in Python;
  - otherwise, one C{sendto} per datagram.

GSO is probed once per process on the first send; an error from it (old
kernel, a device that refuses it) switches that socket to the plain path
for good; C{tftp.gso: false} turns it off (to compare). A full socket
buffer (C{EAGAIN}, C{ENOBUFS}) stops the window early: the rest is sent
again after the retransmission timeout, like a lost packet.

L{TransportSender} does the same through any C{IUDPTransport} (one C{write}
per datagram), and L{defaultSender} picks one of the two. Both take the
DATA framing as constructor arguments: L{dataHeader} (RFC 1350) unless told
otherwise (multicast TFTP's C{mcepoch} framing).

Also here: the ports of the TFTP server (L{openPort}; sockets come from
L{provisioner.net.sockets.udpSocket}) and L{SessionMux}, which reads every
session socket through one reactor reader.
"""

import errno
import struct
from time import monotonic as _monotonic

from twisted.internet.interfaces import IReactorSocket, ISystemHandle
from twisted.logger import Logger
from zope.interface import implementer

from provisioner.net.sockets import udpSocket
from provisioner.net.sockopt import SOL_UDP, UDP_SEGMENT, interfaceMTU, pathMTU

__all__ = ["WindowSender", "TransportSender", "defaultSender", "dataHeader",
           "DATA_HEADER_SIZE", "openPort", "SessionMux", "MuxPort", "openSessionSocket",
           "pathMTU", "interfaceMTU", "GSO_MAX_SEGMENTS", "GSO_MAX_BYTES", "gsoAvailable"]

# The kernel's UDP_MAX_SEGMENTS is 64 on older kernels (128 on newer ones).
GSO_MAX_SEGMENTS = 64
# One GSO send must stay below the IP datagram limit.
GSO_MAX_BYTES = 65000

_DATA = 3
_H = struct.Struct("!HH")
_SEG = struct.Struct("=H")
_SOFT_ERRORS = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS, errno.ENOMEM)
_UNREACHABLE = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)

# What the kernel said of UDP GSO in this process: None until first tried.
_gso = {"available": None}

#: bytes of the RFC 1350 DATA header (opcode, 16-bit block number)
DATA_HEADER_SIZE = 4


def dataHeader(block):
    """
    The RFC 1350 DATA header of a (32-bit) block: opcode and the block
    number wrapped to 16 bits.
    """
    return _H.pack(_DATA, block & 0xFFFF)


def gsoAvailable():
    """
    Whether UDP GSO worked here (L{None} until first tried).
    """
    return _gso["available"]


class WindowSender:
    """
    Sends windows of DATA on one UDP socket to one peer.

    @ivar sock: the socket (a Twisted port's C{socket}).
    @ivar peer: C{(host, port)} the datagrams go to.
    @ivar gso: use UDP GSO (cleared after the kernel refuses it).
    @ivar calls: send system calls made (for tests and stats).
    @ivar header: C{header(block)} returns the framing of a (32-bit)
        block's DATA datagram (L{dataHeader} unless told otherwise).
    @ivar headerSize: bytes of that framing before each block's data.
    """

    log = Logger()

    def __init__(self, sock, peer, gso=True, header=dataHeader, headerSize=DATA_HEADER_SIZE):
        self.sock = sock
        self.peer = peer
        self.gso = gso and _gso["available"] is not False
        self.header = header
        self.headerSize = headerSize
        self.calls = 0

    def send(self, datagram):
        """
        Send one datagram (OACK, ERROR, a single DATA).

        @return: C{True} if it left, C{False} if the socket buffer was full.
        """
        self.calls += 1
        try:
            self.sock.sendto(datagram, self.peer)
        except OSError as e:
            if e.errno in _SOFT_ERRORS:
                return False
            if e.errno in _UNREACHABLE:
                return False
            raise
        return True

    def sendBlocks(self, first, data, blksize, count):
        """
        Send C{count} DATA datagrams for blocks C{first}, C{first+1}, ...
        (32-bit numbers, wrapped on the wire) cut from C{data} at C{blksize}
        (the last one may be short, or empty).

        @return: how many datagrams left (fewer than C{count} when the socket
            buffer filled up).
        """
        view = memoryview(data)
        header = self.header
        if count == 1:
            return 1 if self.send(header(first) + data) else 0
        segment = blksize + self.headerSize
        if self.gso and segment * 2 <= GSO_MAX_BYTES:
            perCall = min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // segment)
            sent = 0
            while sent < count:
                n = min(perCall, count - sent)
                iov = []
                append = iov.append
                base = sent * blksize
                block = first + sent
                for i in range(n):
                    append(header(block + i))
                    off = base + i * blksize
                    append(view[off:off + blksize])
                if n == 1:
                    ok = self._plain(iov)
                else:
                    ok = self._gsoSend(iov, segment)
                    if ok is None:
                        # GSO refused: this and later windows go plain.
                        ok = self._plainAll(iov)
                        if ok < n:
                            return sent + ok
                        sent += n
                        continue
                if not ok:
                    return sent
                sent += n
            return sent
        sent = 0
        for i in range(count):
            off = i * blksize
            if not self.send(header(first + i) + view[off:off + blksize]):
                return sent
            sent += 1
        return sent

    def _plain(self, iov):
        self.calls += 1
        try:
            self.sock.sendmsg(iov, (), 0, self.peer)
        except OSError as e:
            if e.errno in _SOFT_ERRORS or e.errno in _UNREACHABLE:
                return False
            raise
        return True

    def _plainAll(self, iov):
        sent = 0
        for i in range(0, len(iov), 2):
            if not self._plain(iov[i:i + 2]):
                return sent
            sent += 1
        return sent

    def _gsoSend(self, iov, segment):
        """
        One GSO C{sendmsg}. C{True} sent, C{False} buffer full, L{None} the
        kernel refused GSO.
        """
        self.calls += 1
        try:
            self.sock.sendmsg(iov, [(SOL_UDP, UDP_SEGMENT, _SEG.pack(segment))], 0, self.peer)
        except OSError as e:
            if e.errno in _SOFT_ERRORS:
                return False
            if e.errno in _UNREACHABLE:
                return False
            if e.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOPROTOOPT, errno.EIO):
                # This socket goes plain; the whole process only when the
                # kernel lacks the option (EINVAL can be a route's MTU).
                self.gso = False
                if _gso["available"] is None and e.errno != errno.EINVAL:
                    _gso["available"] = False
                    self.log.info("UDP GSO unavailable ({error}); sending one datagram per "
                                  "system call", error=e.strerror)
                return None
            raise
        _gso["available"] = True
        return True


class TransportSender:
    """
    A sender for transports without a socket (any C{IUDPTransport}): one
    C{write} per datagram, the same framing arguments as L{WindowSender}.
    """

    def __init__(self, transport, peer, header=dataHeader, headerSize=DATA_HEADER_SIZE):
        self.transport = transport
        self.peer = peer
        self.header = header
        self.headerSize = headerSize
        self.calls = 0

    def send(self, datagram, peer=None):
        self.calls += 1
        self.transport.write(datagram, peer or self.peer)
        return True

    def sendBlocks(self, first, data, blksize, count):
        view = memoryview(data)
        header = self.header
        for i in range(count):
            off = i * blksize
            self.send(header(first + i) + bytes(view[off:off + blksize]))
        return count


def defaultSender(transport, peer, gso=True, header=dataHeader, headerSize=DATA_HEADER_SIZE):
    """
    A L{WindowSender} on the transport's socket when it has one (it
    provides C{ISystemHandle}: a Twisted UDP port or a L{MuxPort}), else a
    L{TransportSender}.

    @param gso: whether the L{WindowSender} may use UDP GSO (C{tftp.gso}).
    @param header: C{header(block)}, the framing of each DATA datagram.
    @param headerSize: its length in bytes.
    """
    if ISystemHandle.providedBy(transport):
        return WindowSender(transport.getHandle(), peer, gso, header, headerSize)
    return TransportSender(transport, peer, header, headerSize)


def openPort(reactor, protocol, address, port=0, interface=None, maxPacketSize=8192,
             sendBuffer=None):
    """
    Make, configure and bind a UDP socket (L{udpSocket}: C{SO_BINDTODEVICE}
    before C{bind}, a bigger send buffer), then start C{protocol} on it.

    A reactor that cannot adopt sockets (one that does not provide
    C{IReactorSocket}) gets C{listenUDP} instead, without the interface
    binding and the buffer.

    @return: the listening port.
    @raise OSError: the socket cannot be made or bound.
    """
    if not IReactorSocket.providedBy(reactor):
        return reactor.listenUDP(port, protocol, interface=address, maxPacketSize=maxPacketSize)
    sock = udpSocket(address, port, interface, sendBuffer=sendBuffer)
    try:
        return reactor.adoptDatagramPort(sock.fileno(), sock.family, protocol, maxPacketSize)
    finally:
        sock.close()


@implementer(ISystemHandle)
class MuxPort:
    """
    The transport of one session socket served by a L{SessionMux}: what a
    session needs of a Twisted UDP port (C{socket}, C{getHandle}, C{write},
    C{stopListening}, C{getHost}).
    """

    def __init__(self, mux, sock, protocol, maxPacketSize):
        self.mux = mux
        self.socket = sock
        self.protocol = protocol
        self.maxPacketSize = maxPacketSize
        self.fd = sock.fileno()
        self.closed = False

    def getHandle(self):
        """
        The socket (C{ISystemHandle}).
        """
        return self.socket

    def write(self, datagram, addr=None):
        try:
            self.socket.sendto(datagram, addr)
        except OSError as e:
            if e.errno not in _SOFT_ERRORS and e.errno not in _UNREACHABLE:
                raise

    def getHost(self):
        from twisted.internet.address import IPv4Address, IPv6Address
        host, port = self.socket.getsockname()[:2]
        if ":" in host:
            return IPv6Address("UDP", host, port)
        return IPv4Address("UDP", host, port)

    def stopListening(self):
        """
        Stop reading now; close the socket and stop the protocol on the next
        reactor turn (as Twisted's ports do).
        """
        if self.closed:
            return None
        self.closed = True
        self.mux.remove(self)
        self.mux.reactor.callLater(0, self._lost)
        return None

    def _lost(self):
        try:
            if self.protocol.numPorts > 0:
                self.protocol.doStop()
        finally:
            self.socket.close()

    def __repr__(self):
        return "<MuxPort fd=%d %r>" % (self.fd, self.protocol)


class SessionMux:
    """
    All session sockets in one C{epoll} set, registered with the reactor as a
    single reader.

    With one Twisted port per transfer, every ACK costs a full reactor event
    (dispatch, log context) of some tens of microseconds. Here the reactor
    wakes this one reader, which drains every ready session socket in a
    tight loop: with hundreds of lockstep transfers, most of the per-ACK
    work is the session's own.
    """

    log = Logger()
    # Datagrams read from one socket before the next socket's turn.
    perSocket = 64

    def __init__(self, reactor):
        import select
        self.reactor = reactor
        self._epoll = select.epoll()
        self._ports = {}
        self._reading = False

    def fileno(self):
        return self._epoll.fileno()

    def logPrefix(self):
        return "tftp-sessions"

    def connectionLost(self, reason):
        pass

    def add(self, sock, protocol, maxPacketSize=8192):
        """
        Serve C{sock} (bound, non-blocking) for C{protocol}; start it.

        @return: the L{MuxPort}.
        """
        import select
        port = MuxPort(self, sock, protocol, maxPacketSize)
        self._epoll.register(port.fd, select.EPOLLIN)
        self._ports[port.fd] = port
        if not self._reading:
            self._reading = True
            self.reactor.addReader(self)
        protocol.makeConnection(port)
        return port

    def remove(self, port):
        if self._ports.get(port.fd) is port:
            del self._ports[port.fd]
            try:
                self._epoll.unregister(port.fd)
            except (OSError, ValueError):
                pass
        if not self._ports and self._reading:
            self._reading = False
            self.reactor.removeReader(self)

    # After a pass over the ready sockets, look again (ACKs that arrived
    # meanwhile) for up to this long before giving the reactor its turn.
    slice = 0.002

    def doRead(self):
        ports = self._ports
        perSocket = self.perSocket
        poll = self._epoll.poll
        end = _monotonic() + self.slice
        while True:
            ready = poll(0, 1024)
            if not ready:
                return
            for fd, events in ready:
                port = ports.get(fd)
                if port is None:
                    continue
                recvfrom = port.socket.recvfrom
                size = port.maxPacketSize
                received = port.protocol.datagramReceived
                for _ in range(perSocket):
                    try:
                        data, addr = recvfrom(size)
                    except OSError:
                        break
                    try:
                        received(data, addr[:2])
                    except Exception:
                        self.log.failure("session {port!r}", port=port)
                    if port.closed:
                        break
            if _monotonic() > end:
                return

    def close(self):
        for port in list(self._ports.values()):
            port.stopListening()
        if self._reading:
            self._reading = False
            self.reactor.removeReader(self)


def openSessionSocket(address, interface=None, sendBuffer=None):
    """
    A bound, non-blocking UDP socket for a session (L{udpSocket} on an
    ephemeral port).
    """
    return udpSocket(address, 0, interface, sendBuffer=sendBuffer)
