# -*- test-case-name: tests.test_client -*-
"""
Tests for L{provisioner.client.tftp}: the client against a simulated server
on a L{tests.fakes.FakeReactor} (a clock and fake UDP ports). Deterministic:
losses are chosen by block number, latency is a fixed delay on the clock.
"""

import hashlib
import io

from twisted.internet.interfaces import ISystemHandle
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from provisioner.files import FileRequest
from provisioner.tftp import adaptive, adaptivewire, wire
from provisioner.client.tftp import FetchOptions, OptionsRefused, TFTPError, fetch
from provisioner.tftp.negotiate import Limits, negotiate
from tests.fakes import FakeReactor

SERVER = ("198.18.0.1", 69)
SERVER_TID = ("198.18.0.1", 40000)
LATENCY = 0.001


class SimServer:
    """
    A small go-back-N TFTP server for one transfer, with a pluggable policy
    (the server's own L{adaptive} policies) and a drop rule for DATA.

    @ivar style: C{"full"} (adaptive, msftwindow, windowsize),
        C{"rfc7440"} (ignores unknown options), C{"ignore"} (ignores all
        options: DATA 1 at once), C{"refuse"} (ERROR 8 to any option).
    """

    def __init__(self, reactor, data, style="full", drop=None, maxWindow=64,
                 blksizeMax=1468, timeout=0.5):
        self.reactor = reactor
        self.data = data
        self.style = style
        self.drop = drop or (lambda block, sent: False)
        self.maxWindow = maxWindow
        self.blksizeMax = blksizeMax
        self.timeout = timeout
        self.sent = {}        # block -> times sent
        self.requests = []
        self.acks = []
        self.client = None
        self.policy = None
        self.blksize = 512
        self.acked = 0
        self.timer = None
        self.done = False
        self.reactor.network = self

    # the network

    def send(self, port, datagram, addr):
        self.reactor.callLater(LATENCY, self.receive, port, datagram, addr)

    def toClient(self, datagram, src=SERVER_TID):
        port = self.client
        self.reactor.callLater(LATENCY, self._deliver, port, datagram, src)

    def _deliver(self, port, datagram, src):
        if port.listening:
            port.protocol.datagramReceived(datagram, src)

    # the server

    @property
    def blocks(self):
        return len(self.data) // self.blksize + 1

    def receive(self, port, datagram, addr):
        packet = wire.decode(datagram)
        if isinstance(packet, wire.ReadRequest):
            self.requests.append(packet)
            self.client = port
            self.start(packet)
        elif isinstance(packet, wire.Ack):
            self.acks.append(packet)
            self.ack(packet)

    def start(self, request):
        options = request.optionDict
        self.acked = 0
        self.blksize = 512
        self.policy = adaptive.ClientDrivenWindow(1, 1)
        if self.style == "refuse" and options:
            self.toClient(wire.Error(8, "no options").to_wire())
            return
        if self.style == "ignore" or not options:
            self.policy = adaptive.ClientDrivenWindow(1, 1)
            self.sendWindow()
            return
        limits = Limits(blksizeMax=self.blksizeMax, windowsizeMax=self.maxWindow)
        extensions = adaptive.extensionsFromConfig({}) if self.style == "full" else []
        req = FileRequest("x", ("c", 1), options=options)

        class Source:
            size = len(self.data)
        result = negotiate(options, limits, source=Source(), request=req, extensions=extensions)
        self.blksize = result.blksize
        self.policy = result.windowPolicy()
        self.negotiated = result
        self.toClient(wire.OptionAck(result.oack).to_wire())
        self.arm()

    def arm(self):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = self.reactor.callLater(self.timeout, self.timedOut)

    def timedOut(self):
        self.timer = None
        if self.done:
            return
        self.policy.onTimeout(self.reactor.seconds())
        self.sendWindow()

    def ack(self, packet):
        if self.done:
            return
        block = self.acked + ((packet.block - self.acked) & 0xFFFF)
        if block > self.acked + 0x8000:
            return  # an old ACK
        if packet.extra and hasattr(self.policy, "onAckExtra"):
            self.policy.onAckExtra(packet.extra, self.reactor.seconds())
        if block == self.acked and self.windowEnd > self.acked:
            # A duplicate/partial ACK: go back.
            self.policy.onLoss(self.reactor.seconds())
        elif block < self.windowEnd:
            self.policy.onLoss(self.reactor.seconds())
        else:
            self.policy.onWindowAcked(self.reactor.seconds())
        self.acked = max(self.acked, block)
        if self.acked >= self.blocks:
            self.done = True
            if self.timer is not None and self.timer.active():
                self.timer.cancel()
            return
        self.sendWindow()

    windowEnd = 0

    def sendWindow(self):
        first = self.acked + 1
        last = min(self.acked + self.policy.size(), self.blocks)
        self.windowEnd = last
        for block in range(first, last + 1):
            self.sent[block] = self.sent.get(block, 0) + 1
            if self.drop(block, self.sent[block]):
                continue
            payload = self.data[(block - 1) * self.blksize:block * self.blksize]
            self.toClient(wire.encodeData(block, payload))
        self.arm()


class Sink(io.BytesIO):
    pass


def _run(testCase, server, options, path="x"):
    sink = Sink()
    d = fetch(server.reactor, SERVER[0], SERVER[1], path, sink, options)
    for _ in range(200000):
        if d.called:
            break
        server.reactor.advance(LATENCY)
    server.reactor.advance(LATENCY * 2)  # deliver the last ACK
    return testCase.successResultOf(d), sink.getvalue()


class FetchTests(SynchronousTestCase):
    """
    L{fetch} against the simulated server.
    """

    def setUp(self):
        self.reactor = FakeReactor()
        self.data = bytes(range(256)) * 1200 + b"tail"  # 307204 bytes

    def test_adaptiveCleanGrowsByOne(self):
        """
        If nothing is lost, an adaptive fetch is byte-exact and the window
        grows by one per window up to the server's maximum.
        """
        data = self.data * 4
        server = SimServer(self.reactor, data, maxWindow=32)
        result, got = _run(self, server, FetchOptions(windowsize=4))
        self.assertEqual(got, data)
        self.assertEqual(result.sha256, hashlib.sha256(data).hexdigest())
        self.assertEqual(result.mode, "adaptive")
        news = [c.new for c in result.trace if c.reason == "grow"]
        self.assertEqual(news[:5], [5, 6, 7, 8, 9])
        self.assertEqual(max(news), 32)
        self.assertEqual(result.losses, 0)
        self.assertEqual(dict(server.requests[0].options)["adaptive"], "1")

    def test_adaptiveLossHalvesAndFreezes(self):
        """
        If a block is lost mid-window, the client sends a duplicate ACK of the
        last in-order block asking for half the window, the maximum is frozen
        20% below the best, and the file is still byte-exact.
        """
        lost = {55}
        server = SimServer(self.reactor, self.data,
                           drop=lambda b, n: b in lost and n == 1)
        result, got = _run(self, server, FetchOptions(windowsize=4, decrease=0))
        self.assertEqual(got, self.data)
        losses = [c for c in result.trace if c.reason == "loss"]
        self.assertEqual(len(losses), 1)
        self.assertEqual(losses[0].new, losses[0].old // 2)
        self.assertTrue(losses[0].frozen)
        grows = [c for c in result.trace if c.reason == "grow"]
        best = max(c.old for c in grows if c.time <= losses[0].time)
        self.assertEqual(losses[0].maximum, int(best * 0.8))
        self.assertLessEqual(max(c.new for c in result.trace if c.time > losses[0].time),
                             losses[0].maximum)
        # The duplicate ACK: block 59 acknowledged with the halved window.
        dup = [a for a in server.acks if a.block == 54]
        self.assertTrue(any(adaptivewire.decodeAdaptiveExtra(a.extra) == losses[0].new
                            for a in dup))

    def test_tailLossTimeout(self):
        """
        If the last block of a window is lost, the client times out, counts
        a loss, and the transfer completes byte-exact.
        """
        server = SimServer(self.reactor, self.data, drop=lambda b, n: b == 4 and n == 1)
        result, got = _run(self, server, FetchOptions(windowsize=4, decrease=0))
        self.assertEqual(got, self.data)
        self.assertEqual([c.reason for c in result.trace if c.reason != "grow"][-1], "timeout")
        self.assertEqual(result.timeouts, 1)

    def test_halfPlusN(self):
        """
        If the client is configured with WS/2+N, a loss asks for that.
        """
        server = SimServer(self.reactor, self.data, drop=lambda b, n: b == 100 and n == 1)
        result, got = _run(self, server, FetchOptions(windowsize=4, decrease=2))
        self.assertEqual(got, self.data)
        loss = [c for c in result.trace if c.reason == "loss"][0]
        self.assertEqual(loss.new, min(loss.old // 2 + 2, loss.maximum))

    def test_manyLosses(self):
        """
        If one DATA in 20 is lost on its first sending, the transfer still
        completes byte-exact.
        """
        server = SimServer(self.reactor, self.data, drop=lambda b, n: b % 20 == 7 and n == 1)
        result, got = _run(self, server, FetchOptions(windowsize=8))
        self.assertEqual(got, self.data)
        self.assertGreater(result.losses, 5)

    def test_plainRFC7440(self):
        """
        If the server does not know the adaptive option, the client uses the
        fixed window it was granted and sends no extra ACK bytes.
        """
        server = SimServer(self.reactor, self.data, style="rfc7440")
        result, got = _run(self, server, FetchOptions(windowsize=8))
        self.assertEqual(got, self.data)
        self.assertEqual(result.mode, "rfc7440")
        self.assertEqual(result.windowsize, 8)
        self.assertTrue(all(a.extra == b"" for a in server.acks))
        # One ACK per window of 8 blocks (plus the OACK's and the last one).
        self.assertEqual(len(server.acks), 1 + (len(self.data) // 1468 + 1 + 7) // 8)

    def test_ignoresOptions(self):
        """
        If the server ignores options (DATA 1 straight away), the client
        falls back to RFC 1350: 512-byte blocks, window 1.
        """
        server = SimServer(self.reactor, self.data, style="ignore")
        result, got = _run(self, server, FetchOptions(windowsize=8))
        self.assertEqual(got, self.data)
        self.assertEqual(result.mode, "rfc1350")
        self.assertEqual(result.blksize, 512)

    def test_refusesOptions(self):
        """
        If the server refuses options with ERROR 8, the client retries with
        fewer options, down to none.
        """
        server = SimServer(self.reactor, self.data, style="refuse")
        result, got = _run(self, server, FetchOptions(windowsize=8))
        self.assertEqual(got, self.data)
        self.assertEqual(result.mode, "rfc1350")
        self.assertEqual([m for m, _ in result.attempts],
                         ["adaptive", "rfc7440", "rfc2347", "rfc1350"])
        self.assertEqual(server.requests[-1].options, [])

    def test_msftwindow(self):
        """
        If the client speaks msftwindow, the server answers 27182 and every
        ACK carries one byte, the next window.
        """
        server = SimServer(self.reactor, self.data)
        result, got = _run(self, server, FetchOptions(windowsize=4, msftwindow=True))
        self.assertEqual(got, self.data)
        self.assertEqual(result.mode, "msftwindow")
        self.assertEqual(dict(server.requests[0].options)["msftwindow"], "31416")
        self.assertTrue(all(len(a.extra) == 1 for a in server.acks))
        self.assertGreater(server.policy.size(), 4)

    def test_exactMultiple(self):
        """
        If the file is an exact multiple of the block size, the transfer ends
        with an empty block.
        """
        data = b"x" * (1468 * 10)
        server = SimServer(self.reactor, data)
        result, got = _run(self, server, FetchOptions(windowsize=4))
        self.assertEqual(got, data)
        self.assertEqual(server.acks[-1].block, 11)

    def test_rollover(self):
        """
        If the transfer has more than 65535 blocks, block numbers wrap to 0
        and the file is still byte-exact.
        """
        data = bytes(range(251)) * (70000 * 8 // 251 + 1)
        data = data[:70000 * 8 + 3]
        server = SimServer(self.reactor, data, blksizeMax=8, maxWindow=64)
        result, got = _run(self, server, FetchOptions(blksize=8, windowsize=16))
        self.assertEqual(len(got), len(data))
        self.assertEqual(got, data)
        blocks = [a.block for a in server.acks[1:]]
        self.assertTrue(any(b < a for a, b in zip(blocks, blocks[1:])))

    def test_errorFromServer(self):
        """
        If the server answers ERROR 1, the fetch fails with that code and no
        fallback is tried.
        """
        sink = Sink()

        class Net:
            def send(net, port, datagram, addr):
                self.reactor.callLater(LATENCY, port.protocol.datagramReceived,
                                       wire.Error(1, "File not found").to_wire(), SERVER_TID)
        self.reactor.network = Net()
        d = fetch(self.reactor, SERVER[0], SERVER[1], "x", sink, FetchOptions())
        self.reactor.advance(0.01)
        f = self.failureResultOf(d, TFTPError)
        self.assertEqual(f.value.code, 1)
        self.assertNotIsInstance(f.value, OptionsRefused)

    def test_silentServer(self):
        """
        If nobody answers, each level retries with backoff and the fetch
        fails with a timeout.
        """
        sink = Sink()

        class Net:
            sent = []

            def send(net, port, datagram, addr):
                net.sent.append(datagram)
        self.reactor.network = Net()
        d = fetch(self.reactor, SERVER[0], SERVER[1], "x", sink,
                  FetchOptions(timeout=0.1, retries=1))
        self.reactor.pump([0.1] * 100)
        self.failureResultOf(d, TFTPError)
        self.assertEqual(len(Net.sent), 8)  # 4 levels x 2 tries

    def test_unknownTID(self):
        """
        If a packet comes from another port of the server during a transfer,
        it gets ERROR 5 and the transfer goes on.
        """
        SimServer(self.reactor, self.data)
        sink = Sink()
        d = fetch(self.reactor, SERVER[0], SERVER[1], "x", sink, FetchOptions())
        self.reactor.pump([LATENCY] * 10)
        port = self.reactor.ports[0]
        written = []
        orig = port.write
        port.write = lambda dg, addr: (written.append((dg, addr)), orig(dg, addr))
        port.protocol.datagramReceived(wire.encodeData(1, b"evil"), ("198.18.0.1", 1))
        errors = [wire.decode(dg) for dg, addr in written if addr == ("198.18.0.1", 1)]
        self.assertEqual([e.code for e in errors], [5])
        for _ in range(100000):
            if d.called:
                break
            self.reactor.advance(LATENCY)
        self.assertEqual(sink.getvalue(), self.data)


class PendingTests(SynchronousTestCase):
    """
    L{provisioner.client.tftp._pending}: a timer that fires while data waits
    in the socket is not a loss.
    """

    def test_pending(self):
        """
        If a datagram waits in the socket, it is pending; once read, not.
        """
        import socket
        from provisioner.client.tftp import _pending
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(a.close)
        self.addCleanup(b.close)

        @implementer(ISystemHandle)
        class Transport:
            def getHandle(self):
                return b
        self.assertFalse(_pending(Transport()))
        a.send(b"\x00\x03\x00\x01data")
        self.assertTrue(_pending(Transport()))
        b.recv(100)
        self.assertFalse(_pending(Transport()))

    def test_noSocket(self):
        """
        If the transport has no system handle (no socket), nothing is
        pending.
        """
        from provisioner.client.tftp import _pending
        self.assertFalse(_pending(object()))
