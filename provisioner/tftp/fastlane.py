# -*- test-case-name: tests.test_tftp_session -*-
"""
The fast lane of a read session.

In lockstep and small-window transfers most of the time per window is the
reactor's own work around each datagram. When the server allows it (one
transfer in flight, and C{tftp.fast_lane} on), a L{ReadSession
<provisioner.tftp.session.ReadSession>} that has just handled a datagram
waits for the next ACK in a short blocking read on its own socket instead
of returning to the reactor. The process sleeps in the kernel meanwhile:
no spinning.
"""

import socket
import struct
from time import monotonic as _monotonic

from provisioner.tftp import wire
from provisioner.tftp.udp import WindowSender
from provisioner.tftp.window import FixedWindow

__all__ = ["FastLane", "FAST_WAIT_MS", "FAST_BUDGET", "FAST_SLICE"]

# How long to wait for the next ACK outside the reactor (milliseconds), and
# how many datagrams to handle there before going back.
FAST_WAIT_MS = 1
FAST_BUDGET = 512
# ... and for at most this long (seconds), so that new requests wait little.
FAST_SLICE = 0.004
_FAST_TIMEVAL = struct.pack("@ll", 0, FAST_WAIT_MS * 1000)

_ACK = wire.ACK
_DATA = wire.DATA
_H2 = struct.Struct("!HH")


class FastLane:
    """
    The fast lane, mixed into L{provisioner.tftp.session.ReadSession}: it
    uses the session's state (C{transport}, C{policy}, C{sender}, C{acked},
    C{sent}, ...) and its C{_handle}, C{_complete} and C{_arm}.

    @ivar fastLane: a callable returning true while the session may take
        the fast lane, or L{None} (never).
    """

    fastLane = None
    _inFast = False

    def _runFast(self):
        """
        Take the fast lane after a datagram: when the server allows it (one
        transfer in flight), wait for the next ACK in a blocking
        C{recvfrom} on this socket alone, bounded by C{SO_RCVTIMEO}
        (L{FAST_WAIT_MS}), and handle up to L{FAST_BUDGET} datagrams or
        L{FAST_SLICE} seconds before going back to the reactor (where new
        requests are seen). The socket is non-blocking again before the
        reactor sees it.
        """
        sender = self.sender
        if not isinstance(sender, WindowSender) or not self.fastLane():
            # Only a session on a socket of its own can wait on it.
            return
        sock = sender.sock
        recvfrom = sock.recvfrom
        now = _monotonic
        end = now() + FAST_SLICE
        self._inFast = True
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _FAST_TIMEVAL)
            sock.setblocking(True)
            if self._isLockstep():
                self._lockstep(sock, now, end)
                return
            for i in range(FAST_BUDGET):
                try:
                    data, addr = recvfrom(65536)
                except OSError:
                    break
                self._handle(data, addr)
                if self.done or self.transport is None or now() > end:
                    break
        finally:
            self._inFast = False
            try:
                sock.setblocking(False)
            except OSError:
                pass

    def _isLockstep(self):
        policy = self.policy
        return (type(policy) is FixedWindow and policy.n == 1 and not self.extension
                and not self.netascii and self.last is not None and not self.waitingOACK
                and self._pause is None and self._resume is None
                and isinstance(self.sender, WindowSender))

    def _lockstep(self, sock, now, end):
        """
        The fast lane for window 1 (RFC 1350 clients, the most common boot
        ROM case), where per-block overhead is everything: the expected ACK
        is recognised from its four bytes, the next block is cut from a
        read-ahead buffer (one C{pread} per 64 KiB, dropped when the
        lane ends) and sent with one C{sendto}. Anything else (a stray or
        duplicate ACK, an ERROR, a wrong TID) goes through L{_handle}.

        One function on purpose: this loop runs once per block of a
        lockstep transfer, and a method call per step (check the ACK, cut
        the block, send it, count it) would cost about as much as the work
        it does; the state it needs is kept in locals for the same reason.
        """
        recvfrom = sock.recvfrom
        sendto = sock.sendto
        peer = self.peer
        host, port = peer
        bs = self.blksize
        last = self.last
        size = self.stats.size
        read = self.source.read
        pack = _H2.pack
        stats = self.stats
        # Read ahead about 64 KiB (big allocations are mmap'd and faulted in
        # again each time: slower than one pread per big block).
        chunk = max(1, 65536 // bs) * bs
        bufStart = bufEnd = 0
        view = None
        progressed = False
        try:
            while now() <= end:
                try:
                    data, addr = recvfrom(2048)
                except OSError:
                    break
                sent = self.sent
                if (len(data) != 4 or data[1] != _ACK or data[0] != 0 or addr[1] != port
                        or addr[0] != host or ((data[2] << 8) | data[3]) != sent & 0xFFFF
                        or sent == self.acked):
                    self._handle(data, addr)
                    if self.done or self.transport is None:
                        return
                    bufStart = bufEnd = 0
                    continue
                self.acked = sent
                progressed = True
                if sent >= last:
                    self.retriesLeft = self.maxRetries
                    self.backoff = 1
                    self._complete()
                    return
                off = sent * bs
                hi = off + bs
                if size is not None and hi > size:
                    hi = size
                if off < bufStart or hi > bufEnd:
                    try:
                        buf = read(off, chunk)
                    except Exception:
                        self._handle(data, addr)
                        return
                    view = memoryview(buf)
                    bufStart = off
                    bufEnd = off + len(buf)
                    if hi > bufEnd:
                        hi = bufEnd
                nxt = sent + 1
                try:
                    sendto(pack(_DATA, nxt & 0xFFFF) + view[off - bufStart:hi - bufStart], peer)
                except OSError:
                    pass
                self.sent = nxt
                if nxt > self.highest:
                    self.highest = nxt
                else:
                    stats.retransmits += 1
                stats.blocks += 1
        finally:
            if progressed and not self.done:
                self.retriesLeft = self.maxRetries
                self.backoff = 1
                self._arm()
