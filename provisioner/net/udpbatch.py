# -*- test-case-name: tests.test_udpbatch -*-
"""
Batched UDP receive: C{recvmmsg(2)} reads up to C{batch} datagrams in one
system call, and the protocol gets them as one batch.

Receivers of bulk multicast (multicast TFTP clients, image-multicast
receivers) see tens of thousands of datagrams a second. Twisted's UDP port
makes one C{recvfrom} and one C{datagramReceived} call per datagram; here a
port makes one C{recvmmsg} per batch and one call to the protocol's
C{datagramsReceived(payloads, addresses)}, so the protocol can do its
bookkeeping once per contiguous run instead of once per datagram.

Layers:

  - L{BatchSocketReader}: the system-call layer over a plain non-blocking
    socket. C{recvmmsg} through C{ctypes} (glibc or musl), or a
    C{recvfrom_into} loop with the same results where that is missing.
  - L{BatchUDPPort}, L{BatchMulticastPort}: Twisted's own UDP ports
    (C{joinGroup}, C{write}, C{stopListening} unchanged) whose C{doRead}
    reads through a L{BatchSocketReader}.
  - L{listenUDP}, L{listenMulticast}: start one on a reactor; a reactor
    that is not a file-descriptor reactor (a test's fake) gets its own
    C{listenUDP}/C{listenMulticast} with a per-datagram adapter, so callers
    need only one code path.

The payloads a protocol gets are C{memoryview}s into the reader's buffer:
valid during the call only. Copy (C{bytes(view)}) what must outlive it.
"""

import ctypes
import errno
import socket
import struct

from twisted.internet import udp
from twisted.internet.interfaces import IReactorFDSet, IReactorUDP
from twisted.logger import Logger

from provisioner.net.sockopt import libc

__all__ = ["BatchSocketReader", "BatchUDPPort", "BatchMulticastPort", "listenUDP",
           "listenMulticast", "HAVE_RECVMMSG", "adaptProtocol"]

MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0x40)
MSG_TRUNC = getattr(socket, "MSG_TRUNC", 0x20)
_NAME_SIZE = 28  # sockaddr_in6, which also holds a sockaddr_in

_AGAIN = frozenset([errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR])
_REFUSED = frozenset([errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH])


class _IOVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(_IOVec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint32)]


def _loadRecvmmsg():
    try:
        function = libc().recvmmsg
    except AttributeError:
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                         ctypes.c_void_p]
    function.restype = ctypes.c_int
    return function


_recvmmsg = _loadRecvmmsg()
HAVE_RECVMMSG = _recvmmsg is not None and ctypes.sizeof(_MMsgHdr) % 4 == 0


def _decodeName(raw):
    """
    A C{(host, port)} tuple from the bytes of a C{sockaddr_in} or
    C{sockaddr_in6}.
    """
    family = struct.unpack_from("=H", raw)[0]
    port = struct.unpack_from("!H", raw, 2)[0]
    if family == socket.AF_INET6:
        return (socket.inet_ntop(socket.AF_INET6, raw[8:24]), port)
    return (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)


class BatchSocketReader:
    """
    Read datagrams from a non-blocking datagram socket, up to C{batch} per
    call.

    @ivar batch: the most datagrams one L{receive} returns.
    @ivar size: the largest datagram accepted; a longer one is dropped and
        counted in C{truncated}.
    @ivar truncated: datagrams dropped for being longer than C{size}.
    """

    def __init__(self, sock, batch=64, size=2048, useRecvmmsg=None):
        self.sock = sock
        self.batch = batch
        self.size = size
        self.truncated = 0
        self._fd = sock.fileno()
        self._buffer = bytearray(batch * size)
        self._view = memoryview(self._buffer)
        self._names = bytearray(batch * _NAME_SIZE)
        self._namesView = memoryview(self._names)
        self._addresses = {}
        # the bytes of a socket address that name the sender: family, port
        # and IPv4 address, or through the IPv6 address
        self._keyLength = 24 if sock.family == socket.AF_INET6 else 8
        if useRecvmmsg is None:
            useRecvmmsg = HAVE_RECVMMSG
        self._mmsg = useRecvmmsg and HAVE_RECVMMSG
        if self._mmsg:
            self._setUpMessages()

    def _setUpMessages(self):
        batch, size = self.batch, self.size
        base = ctypes.addressof(ctypes.c_char.from_buffer(self._buffer))
        names = ctypes.addressof(ctypes.c_char.from_buffer(self._names))
        self._iovecs = (_IOVec * batch)()
        self._headerBytes = bytearray(ctypes.sizeof(_MMsgHdr) * batch)
        self._headers = (_MMsgHdr * batch).from_buffer(self._headerBytes)
        for i in range(batch):
            self._iovecs[i].iov_base = base + i * size
            self._iovecs[i].iov_len = size
            header = self._headers[i].msg_hdr
            header.msg_name = names + i * _NAME_SIZE
            header.msg_namelen = _NAME_SIZE
            header.msg_iov = ctypes.pointer(self._iovecs[i])
            header.msg_iovlen = 1
        self._headersAddress = ctypes.addressof(self._headers)
        words = ctypes.sizeof(_MMsgHdr) // 4
        self._words = memoryview(self._headerBytes).cast("I")
        self._stride = words
        self._nameLenIndex = _MMsgHdr.msg_hdr.offset // 4 + _MsgHdr.msg_namelen.offset // 4
        self._flagsIndex = _MsgHdr.msg_flags.offset // 4
        self._lenIndex = _MMsgHdr.msg_len.offset // 4
        self._nameLens = memoryview(bytearray(struct.pack("=%dI" % (batch,),
                                                          *([_NAME_SIZE] * batch)))).cast("I")

    def address(self, raw):
        """
        The C{(host, port)} for the raw bytes of a socket address, cached.
        """
        address = self._addresses.get(raw)
        if address is None:
            if len(self._addresses) > 4096:
                self._addresses.clear()
            address = self._addresses[raw] = _decodeName(raw)
        return address

    def receive(self):
        """
        Read what is waiting, up to C{batch} datagrams.

        @return: C{(payloads, addresses)}: two lists of the same length,
            C{memoryview}s valid until the next call, and C{(host, port)}
            tuples. Empty when nothing is waiting.
        @raise OSError: for errors other than "nothing waiting" (for
            example C{ECONNREFUSED} on a connected socket).
        """
        if self._mmsg:
            return self._receiveMany()
        return self._receiveLoop()

    def _receiveMany(self):
        words = self._words
        stride = self._stride
        words[self._nameLenIndex::stride] = self._nameLens
        count = _recvmmsg(self._fd, self._headersAddress, self.batch, MSG_DONTWAIT, None)
        if count < 0:
            code = ctypes.get_errno()
            if code in _AGAIN:
                return [], []
            raise OSError(code, "recvmmsg: " + errno.errorcode.get(code, str(code)))
        lengths = words[self._lenIndex:count * stride:stride].tolist()
        size = self.size
        view = self._view
        payloads = [view[i * size:i * size + length] for i, length in enumerate(lengths)]
        names = bytes(self._namesView[:count * _NAME_SIZE])
        keyLength = self._keyLength
        keys = [names[at:at + keyLength] for at in range(0, count * _NAME_SIZE, _NAME_SIZE)]
        if keys.count(keys[0]) == count:
            addresses = [self.address(keys[0])] * count
        else:
            addresses = [self.address(key) for key in keys]
        flags = words[self._flagsIndex:count * stride:stride].tolist()
        if any(flags):
            keep = [i for i, f in enumerate(flags) if not f & MSG_TRUNC]
            self.truncated += count - len(keep)
            payloads = [payloads[i] for i in keep]
            addresses = [addresses[i] for i in keep]
        return payloads, addresses

    def _receiveLoop(self):
        view, size = self._view, self.size
        recv = self.sock.recvfrom_into
        payloads, addresses = [], []
        for i in range(self.batch):
            start = i * size
            try:
                length, addr = recv(view[start:start + size], size, MSG_DONTWAIT | MSG_TRUNC)
            except OSError as e:
                if e.errno in _AGAIN:
                    break
                if payloads:
                    break
                raise
            if length > size:
                self.truncated += 1
                continue
            payloads.append(view[start:start + length])
            addresses.append(tuple(addr[:2]))
        return payloads, addresses


class _BatchReadMixin:
    """
    The C{doRead} of a batching port: drain the socket in batches, up to
    C{maxThroughput} bytes, handing each batch to the protocol.
    """

    batchSize = 64
    _reader = None
    _readItselfFailed = False
    _log = Logger()

    def _readItself(self, readBatch):
        """
        Let a protocol that reads the socket itself do so: C{readBatch(sock,
        batch, size)} takes what waits (up to C{batch} datagrams of at most
        C{size} bytes, with one system call: the image-multicast receiver's
        C loop) and returns how many it took, or L{None} when it cannot
        (then this port reads as usual). Up to C{maxThroughput} bytes.

        @return: whether the protocol read the socket.
        """
        read = 0
        size = self.maxPacketSize
        while read < self.maxThroughput:
            try:
                count = readBatch(self.socket, self.batchSize, size)
            except OSError as e:
                if e.errno in _REFUSED:
                    return True
                raise
            except Exception:
                # a bug must not stop the port (nor spin on it): read as
                # usual from now on
                self._readItselfFailed = True
                self._log.failure("the protocol failed reading the socket itself; the port "
                                  "reads it from now on")
                return read > 0
            if count is None:
                return read > 0
            if count < self.batchSize:
                return True
            read += count * size
        return True

    def _deliver(self, payloads, addresses):
        protocol = self.protocol
        many = getattr(protocol, "datagramsReceived", None)
        if many is not None:
            many(payloads, addresses)
            return
        for payload, address in zip(payloads, addresses):
            protocol.datagramReceived(bytes(payload), address)

    def doRead(self):
        readBatch = getattr(self.protocol, "readBatch", None)
        if readBatch is not None and not self._readItselfFailed and self._readItself(readBatch):
            return
        reader = self._reader
        if reader is None or reader.sock is not self.socket:
            reader = self._reader = BatchSocketReader(
                self.socket, batch=self.batchSize, size=self.maxPacketSize)
        read = 0
        while read < self.maxThroughput:
            try:
                payloads, addresses = reader.receive()
            except OSError as e:
                if e.errno in _REFUSED and self._connectedAddr:
                    self.protocol.connectionRefused()
                    return
                if e.errno in _REFUSED:
                    return
                raise
            if not payloads:
                return
            try:
                self._deliver(payloads, addresses)
            except BaseException:
                self._log.failure("a protocol failed on a batch of {count} datagrams",
                                  count=len(payloads))
            if len(payloads) < reader.batch:
                return
            read += sum(map(len, payloads))


class BatchUDPPort(_BatchReadMixin, udp.Port):
    """
    Twisted's UDP port, reading in batches.
    """


class BatchMulticastPort(_BatchReadMixin, udp.MulticastPort):
    """
    Twisted's multicast UDP port, reading in batches.
    """


class _PerDatagram:
    """
    A per-datagram protocol in front of a batch protocol, for reactors
    without file descriptors (test fakes).
    """

    def __init__(self, protocol):
        self.protocol = protocol

    def __getattr__(self, name):
        return getattr(self.protocol, name)

    def datagramReceived(self, data, addr):
        receive = getattr(self.protocol, "datagramsReceived", None)
        if receive is None:
            self.protocol.datagramReceived(data, addr)
        else:
            receive([memoryview(data)], [addr])


def adaptProtocol(protocol):
    """
    A protocol with C{datagramReceived} for one with C{datagramsReceived}.
    """
    return _PerDatagram(protocol)


def _fdReactor(reactor):
    return IReactorFDSet.providedBy(reactor) and IReactorUDP.providedBy(reactor)


def listenUDP(reactor, port, protocol, interface="", maxPacketSize=8192, batch=64):
    """
    Listen on a UDP port, reading in batches (see the module docstring).

    @return: the listening port (L{BatchUDPPort} on a real reactor).
    """
    if not _fdReactor(reactor):
        return reactor.listenUDP(port, adaptProtocol(protocol), interface, maxPacketSize)
    p = BatchUDPPort(port, protocol, interface, maxPacketSize, reactor)
    p.batchSize = batch
    p.startListening()
    return p


def listenMulticast(reactor, port, protocol, interface="", maxPacketSize=8192,
                    listenMultiple=False, batch=64):
    """
    Listen on a multicast UDP port, reading in batches.

    @return: the listening port (L{BatchMulticastPort} on a real reactor).
    """
    if not _fdReactor(reactor):
        return reactor.listenMulticast(port, adaptProtocol(protocol), interface,
                                       maxPacketSize, listenMultiple)
    p = BatchMulticastPort(port, protocol, interface, maxPacketSize, reactor, listenMultiple)
    p.batchSize = batch
    p.startListening()
    return p
