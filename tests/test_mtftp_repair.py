# -*- test-case-name: tests.test_mtftp_repair -*-
"""
Tests for smart repair through the unicast client: L{RangesView} (the
blocks of a C{ranges} read placed at their offsets),
L{provisioner.client.tftp.fetchRanges} and
L{provisioner.client.repair.smartRepair} against a simulated server on a
L{task.Clock} (the go-back-N server of L{tests.test_client}, serving the
view of the listed blocks as the appliance does).
"""

import os

from twisted.trial.unittest import SynchronousTestCase

from provisioner.client.gaps import GapTracker
from provisioner.client.output import BlockOutput, RangesView
from provisioner.client.repair import smartRepair
from provisioner.client.tftp import TFTPError, fetchRanges
from provisioner.tftp import wire
from provisioner.tftp.multicast import codec
from provisioner.tftp.window import FixedWindow
from tests.fakes import FakeReactor
from tests.test_client import LATENCY, SERVER, SimServer


class RangesServer(SimServer):
    """
    A server of C{ranges} reads: the data is the listed blocks back to back
    and the OACK echoes the option (C{honour}); or the whole file, without
    the echo (C{honour=False}: a server that does not know the option).
    """

    def __init__(self, reactor, data, honour=True, **kw):
        SimServer.__init__(self, reactor, data, **kw)
        self.file = data
        self.honour = honour

    def start(self, request):
        options = request.optionDict
        self.data = self.file
        if self.style == "ignore":
            SimServer.start(self, request)
            return
        oack = [("blksize", options["blksize"])]
        self.blksize = int(options["blksize"])
        value = options.get(codec.RANGES_OPTION)
        if self.honour and value:
            unit, ranges = codec.parseRanges(value, len(self.file))
            self.data = b"".join(self.file[(a - 1) * unit:min(b * unit, len(self.file))]
                                 for a, b in ranges)
        oack.append(("tsize", str(len(self.data))))
        window = int(options.get("windowsize", "1"))
        oack.append(("windowsize", str(window)))
        if self.honour and value:
            oack.append((codec.RANGES_OPTION, codec.formatRanges(unit, ranges)))
        self.acked = 0
        self.done = False
        self.policy = FixedWindow(window)
        self.toClient(wire.OptionAck(oack).to_wire())
        self.arm()


class RecordingOutput:
    """
    An output that records C{write(offset, data)} calls.
    """

    def __init__(self):
        self.writes = []

    def write(self, offset, data):
        self.writes.append((offset, bytes(data)))


class RangesViewTests(SynchronousTestCase):
    """
    Tests for L{RangesView}.
    """

    def test_honoured(self):
        """
        If the server honoured C{ranges}, the data (the listed blocks back
        to back, the file's last block short) goes to each block's offset,
        and every DATA with data counts as a block.
        """
        out = RecordingOutput()
        view = RangesView(out, 100, [(2, 2), (5, 6), (10, 10)], 950)
        view.granted(True)
        data = bytes(range(250)) + b"z" * 100
        for i in range(0, len(data), 120):
            view.write(data[i:i + 120])
        view.write(b"")
        placed = bytearray(950)
        for offset, chunk in out.writes:
            placed[offset:offset + len(chunk)] = chunk
        self.assertEqual(bytes(placed[100:200]), data[:100])
        self.assertEqual(bytes(placed[400:600]), data[100:300])
        self.assertEqual(bytes(placed[900:950]), data[300:350])
        self.assertEqual(view.blocks, 3)
        self.assertTrue(view.honoured)

    def test_wholeFile(self):
        """
        If the server did not echo C{ranges}, the data is the whole file,
        written as it is.
        """
        out = RecordingOutput()
        view = RangesView(out, 100, [(2, 2)], 250)
        view.granted(False)
        view.write(b"a" * 200)
        view.write(b"b" * 50)
        self.assertEqual(out.writes, [(0, b"a" * 200), (200, b"b" * 50)])
        self.assertFalse(view.honoured)


class RepairTests(SynchronousTestCase):
    """
    Tests for L{fetchRanges} and L{smartRepair} against L{RangesServer}.
    """

    def setUp(self):
        self.reactor = FakeReactor()
        self.data = os.urandom(100 * 399 + 37)
        self.path = self.mktemp()
        self.output = BlockOutput(self.path)
        self.addCleanup(self.output.close)
        self.output.truncate(len(self.data))
        self.tracker = GapTracker(codec.blockCount(len(self.data), 100))

    def receive(self, blocks):
        """
        Write C{blocks} of the file as if multicast had brought them.
        """
        for b in blocks:
            self.tracker.add(b)
            self.output.write((b - 1) * 100, self.data[(b - 1) * 100:b * 100])

    def drive(self, d):
        for _ in range(100000):
            if d.called:
                break
            self.reactor.advance(LATENCY)
        return d

    def written(self):
        with open(self.path, "rb") as f:
            return f.read()

    def repair(self):
        return self.drive(smartRepair(self.reactor, SERVER, "x", self.output, self.tracker, 100,
                                    len(self.data), windowsize=8))

    def test_onlyTheGaps(self):
        """
        If the server honours C{ranges}, one read brings exactly the
        missing blocks, each lands at its offset, and the count of blocks
        repaired is theirs; the request carries blksize, tsize, timeout,
        windowsize and the ranges, as before.
        """
        self.receive(b for b in range(1, 401) if b not in (2, 5, 6, 400))
        server = RangesServer(self.reactor, self.data)
        requests, blocks = self.successResultOf(self.repair())
        self.assertEqual((requests, blocks), (1, 4))
        self.assertEqual(self.written(), self.data)
        self.assertTrue(self.tracker.complete)
        self.assertEqual(server.requests[0].options,
                         [("blksize", "100"), ("tsize", "0"), ("timeout", "1"),
                          ("windowsize", "8"), ("ranges", "100:2,5-6,400")])

    def test_manyGapsManyRequests(self):
        """
        If the gaps do not fit one request's ranges value, several reads
        follow one another, each under 512 octets, and together repair
        everything.
        """
        self.receive(b for b in range(1, 401) if b % 2)
        server = RangesServer(self.reactor, self.data)
        requests, blocks = self.successResultOf(self.repair())
        self.assertGreater(requests, 1)
        self.assertEqual(len(server.requests), requests)
        self.assertTrue(all(len(r.to_wire()) < 512 for r in server.requests))
        self.assertEqual(blocks, 200)
        self.assertEqual(self.written(), self.data)

    def test_serverIgnoresRanges(self):
        """
        If the server does not echo C{ranges}, the whole file comes and is
        written as it is, and no further read is made.
        """
        self.receive(b for b in range(1, 401) if b % 2)
        server = RangesServer(self.reactor, self.data, honour=False)
        requests, blocks = self.successResultOf(self.repair())
        self.assertEqual(requests, 1)
        self.assertEqual(len(server.requests), 1)
        self.assertEqual(self.written(), self.data)

    def test_serverIgnoresOptions(self):
        """
        If the server ignores every option (DATA 1 at once, RFC 1350), the
        view takes the data as the whole file.
        """
        out = RecordingOutput()
        view = RangesView(out, 100, [(3, 4)], len(self.data))
        RangesServer(self.reactor, self.data, style="ignore")
        result = self.successResultOf(self.drive(fetchRanges(
            self.reactor, SERVER[0], SERVER[1], "x", view)))
        self.assertFalse(view.honoured)
        self.assertEqual(result.size, len(self.data))
        self.assertEqual(b"".join(d for _, d in out.writes), self.data)
        self.assertEqual(out.writes[1][0], 512)

    def test_serverError(self):
        """
        If the server answers with an ERROR, the repair fails with it.
        """
        self.receive([1])

        class Net:
            def send(net, port, datagram, addr):
                self.reactor.callLater(LATENCY, port.protocol.datagramReceived,
                                       wire.Error(2, "Access violation").to_wire(),
                                       ("198.18.0.1", 4000))
        self.reactor.network = Net()
        failure = self.failureResultOf(self.repair(), TFTPError)
        self.assertEqual(failure.value.code, 2)
