# -*- test-case-name: tests.test_mtftp_client -*-
"""
Tests for the pure parts of multicast TFTP: the gap tracker, the role
policy, range encoding, the range view, 32-bit block framing.
"""

import struct

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from provisioner.interfaces import IDataSource
from provisioner.client import mtftp as mclient
from provisioner.client.output import BlockOutput
from provisioner.tftp import wire
from provisioner.tftp.multicast import codec
from provisioner.tftp.multicast import registry, repair
from tests.fakes import MemorySource


class GapTrackerTests(SynchronousTestCase):

    def test_empty(self):
        """
        If nothing arrived, the whole file is one gap.
        """
        t = mclient.GapTracker(10)
        self.assertEqual(t.gaps(), [(1, 10)])
        self.assertEqual(t.firstHole, 1)
        self.assertFalse(t.complete)

    def test_gaps(self):
        """
        If blocks arrive with holes, L{GapTracker.gaps} lists the missing
        ranges and C{firstHole} the lowest missing block.
        """
        t = mclient.GapTracker(10)
        for b in (1, 2, 5, 6, 9):
            self.assertTrue(t.add(b))
        self.assertEqual(t.gaps(), [(3, 4), (7, 8), (10, 10)])
        self.assertEqual(t.firstHole, 3)
        self.assertEqual(t.gaps(upTo=6), [(3, 4)])
        t.add(3)
        t.add(4)
        self.assertEqual(t.firstHole, 7)

    def test_duplicatesAndRange(self):
        """
        If a block arrives twice it counts as a duplicate; block 0 and
        blocks past the end are ignored.
        """
        t = mclient.GapTracker(3)
        t.add(2)
        self.assertFalse(t.add(2))
        self.assertFalse(t.add(0))
        self.assertFalse(t.add(4))
        self.assertEqual((t.received, t.duplicates), (1, 1))

    def test_complete(self):
        """
        If every block arrived, the tracker is complete and C{firstHole} is
        past the end.
        """
        t = mclient.GapTracker(3)
        for b in (3, 1, 2):
            t.add(b)
        self.assertTrue(t.complete)
        self.assertEqual(t.firstHole, 4)
        self.assertEqual(t.gaps(), [])

    def test_stats(self):
        """
        If there are gaps, L{GapTracker.stats} gives their count, sizes in
        blocks and bytes (the short last block counted as it is), the
        largest, the frequency per 1000 blocks, the runs of nearby gaps and
        how many gaps opened during reception.
        """
        t = mclient.GapTracker(10)
        for b in (1, 3, 5, 6, 7):
            t.add(b)
        s = t.stats(blksize=100, size=950)
        self.assertEqual(s["gaps"], 3)            # 2, 4, 8-10
        self.assertEqual(s["blocks"], 5)
        self.assertEqual(s["bytes"], 450)          # 4 full blocks, the last 50
        self.assertEqual(s["largest"], 3)
        self.assertEqual(s["frequency"], 300.0)
        self.assertEqual(s["runs"], 1)             # 2 and 4 are one block apart
        self.assertEqual(s["opened"], 2)

    def test_statsNone(self):
        """
        If nothing is missing, the stats are all zero.
        """
        t = mclient.GapTracker(2)
        t.add(1)
        t.add(2)
        s = t.stats(512, 600)
        self.assertEqual((s["gaps"], s["blocks"], s["bytes"], s["largest"]), (0, 0, 0, 0))


class RolePolicyTests(SynchronousTestCase):

    def stats(self, gaps=2, blocks=4, nbytes=4096, largest=2):
        return dict(gaps=gaps, blocks=blocks, bytes=nbytes, largest=largest, mean=0,
                    frequency=0, runs=0, opened=gaps)

    def test_smart(self):
        """
        If gaps are few and small, the client becomes smart.
        """
        role, why = mclient.RolePolicy().decide(self.stats(), 1000)
        self.assertEqual(role, mclient.SMART)
        self.assertIn("2 gaps", why)

    def test_promotedByBytes(self):
        """
        If too many bytes are missing, the client is promoted to active and
        the reason names the threshold.
        """
        role, why = mclient.RolePolicy(smartMaxBytes=1000).decide(self.stats(), 1000)
        self.assertEqual(role, mclient.ACTIVE)
        self.assertIn("4096 bytes missing > 1000", why)

    def test_promotedByGapCountSizeFraction(self):
        """
        If gaps are too many, too long, or too much of the file, the client
        is promoted.
        """
        policy = mclient.RolePolicy(smartMaxGaps=1, smartMaxGap=1, smartMaxFraction=0.001)
        role, why = policy.decide(self.stats(), 1000)
        self.assertEqual(role, mclient.ACTIVE)
        self.assertIn("2 gaps > 1", why)
        self.assertIn("largest gap 2 blocks > 1", why)
        self.assertIn("missing >", why)

    def test_promotedForGroupRepair(self):
        """
        If the server does group repair (mcepoch: multi-range ACKs) and the
        client has more gaps than C{promoteGaps}, it is promoted even when
        the smart thresholds hold; without group repair, or with
        C{promoteGaps} negative, the smart thresholds alone decide.
        """
        stats = self.stats(gaps=40, blocks=40, nbytes=40000, largest=1)
        role, why = mclient.RolePolicy().decide(stats, 10000, groupRepair=True)
        self.assertEqual(role, mclient.ACTIVE)
        self.assertIn("40 gaps > 32", why)
        role, _ = mclient.RolePolicy().decide(stats, 10000)
        self.assertEqual(role, mclient.SMART)
        role, _ = mclient.RolePolicy(promoteGaps=-1).decide(stats, 10000, groupRepair=True)
        self.assertEqual(role, mclient.SMART)
        role, _ = mclient.RolePolicy().decide(self.stats(), 10000, groupRepair=True)
        self.assertEqual(role, mclient.SMART)

    def test_noRepair(self):
        """
        If repair is off, the client always stays active.
        """
        role, _ = mclient.RolePolicy(repair=False).decide(self.stats(), 1000)
        self.assertEqual(role, mclient.ACTIVE)


class RangeTests(SynchronousTestCase):

    def test_roundTrip(self):
        """
        If ranges are formatted and parsed, they come back sorted and merged.
        """
        unit, ranges = codec.parseRanges("1428:9,3-5,6,20-22")
        self.assertEqual(unit, 1428)
        self.assertEqual(ranges, [(3, 6), (9, 9), (20, 22)])
        self.assertEqual(codec.formatRanges(unit, ranges), "1428:3-6,9,20-22")

    def test_bad(self):
        """
        If a ranges value is malformed, L{parseRanges} raises L{ValueError}.
        """
        for bad in ("3-5", "1428:", "1428:0", "1428:5-3", "1428:x", "4:1", "1428:1-99"):
            self.assertRaises(ValueError, codec.parseRanges, bad, 50)

    def test_large(self):
        """
        If blocks are past 65535, they are carried as they are (32-bit).
        """
        self.assertEqual(codec.parseRanges("1428:70000-70002")[1], [(70000, 70002)])

    def test_split(self):
        """
        If the list is long, L{rangesOption} splits it into values under the
        limit that together hold every range.
        """
        ranges = [(i * 10, i * 10 + 2) for i in range(1, 200)]
        parts = codec.rangesOption(1428, ranges, limit=100)
        self.assertTrue(all(len(v) <= 100 for v, _ in parts))
        self.assertEqual(sum((r for _, r in parts), []), ranges)
        for value, chunk in parts:
            self.assertEqual(codec.parseRanges(value)[1], chunk)


class RangeSourceTests(SynchronousTestCase):

    def test_view(self):
        """
        If a L{RangeSource} covers blocks 2, 4-5 of a file with a short last
        block, its size and bytes are those blocks back to back.
        """
        data = bytes(range(256)) * 2  # 512 bytes, unit 100: blocks 1-5, 6 short
        view = repair.RangeSource(MemorySource(data), 100, [(2, 2), (4, 6)])
        verifyObject(IDataSource, view)
        expected = data[100:200] + data[300:512]
        self.assertEqual(view.size, len(expected))
        self.assertEqual(view.blocks, 4)
        self.assertEqual(view.read(0, 10000), expected)
        self.assertEqual(view.read(95, 10), expected[95:105])
        self.assertEqual(view.read(len(expected), 5), b"")

    def test_repairSource(self):
        """
        If a request carries C{ranges}, L{repairSource} returns the view and
        the value to echo (clipped to the file); without it, or malformed,
        the source is unchanged.
        """
        src = MemorySource(b"x" * 1000)
        view, echo = repair.repairSource(src, [("ranges", "100:3-4,9-40")])
        self.assertEqual(echo, "100:3-4,9-11")
        self.assertEqual(view.size, 200 + 200)
        self.assertIs(repair.repairSource(src, [])[0], src)
        self.assertEqual(repair.repairSource(src, [("ranges", "junk")]), (src, None))


class FramingTests(SynchronousTestCase):

    def test_data32(self):
        """
        If a block past 65535 is framed with C{mcepoch}, it decodes to the
        same 32-bit number and payload; a plain decoder sees the low bits.
        """
        packet = codec.encodeData32(70000, b"abc")
        self.assertEqual(codec.decodeData32(packet), (70000, b"abc"))
        self.assertEqual(wire.decode(packet).block, 70000 & 0xFFFF)
        self.assertRaises(wire.WireError, codec.decodeData32, b"\x00\x03\x00")
        self.assertRaises(wire.WireError, codec.decodeData32,
                          wire.encodeAck(1) + b"\x00\x00")

    def test_nearest32(self):
        """
        If a 16-bit block number is placed near a reference, the nearest
        32-bit number wins, across a wrap in either direction.
        """
        self.assertEqual(codec.nearest32(5, 65530), 65541)
        self.assertEqual(codec.nearest32(65530, 65541), 65530)
        self.assertEqual(codec.nearest32(100, 0), 100)
        self.assertEqual(codec.nearest32(65535, 3), 65535)

    def test_blockCount(self):
        """
        If a file is an exact multiple of blksize, it still ends with an
        empty block.
        """
        self.assertEqual(codec.blockCount(1024, 512), 3)
        self.assertEqual(codec.blockCount(1000, 512), 2)
        self.assertEqual(codec.blockCount(0, 512), 1)


class AckRangesTests(SynchronousTestCase):
    """
    The C{mcepoch} ACK's list of further missing ranges
    (docs/wire/multicast-tftp.md, section 2).
    """

    def test_roundTrip(self):
        """
        If an ACK's trailing bytes carry a gap and ranges, they decode to
        the same block, gap and ranges; offsets are from the ACKed block.
        """
        extra = codec.encodeAckExtra(70000, 2, [(70004, 70004), (70010, 70012)])
        self.assertEqual(len(extra), 6 + 2 * 8)
        self.assertEqual(extra[6:], struct.pack("!IIII", 4, 1, 10, 3))
        self.assertEqual(codec.decodeAckExtra(70000 & 0xFFFF, extra),
                         (70000, 2, [(70004, 70004), (70010, 70012)]))

    def test_plainAndShort(self):
        """
        If an ACK has only the epoch, or the epoch and the gap, there is no
        range list; fewer than 2 trailing bytes is an error.
        """
        self.assertEqual(codec.decodeAckExtra(5, b"\x00\x01"), (65541, None, None))
        self.assertEqual(codec.decodeAckExtra(5, codec.encodeAckExtra(5, 3)),
                         (5, 3, None))
        self.assertRaises(wire.WireError, codec.decodeAckExtra, 5, b"\x00")

    def test_atMost(self):
        """
        If more ranges are given than L{codec.MAX_ACK_RANGES}, only the
        first ones are written, and the ACK fits 512 octets.
        """
        ranges = [(10 + 3 * i, 10 + 3 * i) for i in range(100)]
        extra = codec.encodeAckExtra(1, 1, ranges)
        self.assertEqual(len(extra), 6 + 8 * codec.MAX_ACK_RANGES)
        self.assertLessEqual(len(wire.encodeAck(1, extra)), 512)
        self.assertEqual(codec.decodeAckExtra(1, extra)[2],
                         ranges[:codec.MAX_ACK_RANGES])

    def test_malformed(self):
        """
        If the range list is not whole pairs, too long, has a zero offset or
        length, overlaps the gap or itself, is out of order, or follows an
        unknown gap, it is dropped (L{None}) and the block and gap stand.
        """
        head = struct.pack("!HI", 0, 2)
        bad = [
            head + b"\x00" * 5,
            head + struct.pack("!II", 4, 1) * (codec.MAX_ACK_RANGES + 1),
            head + struct.pack("!II", 0, 1),
            head + struct.pack("!II", 5, 0),
            head + struct.pack("!II", 2, 1),
            head + struct.pack("!IIII", 10, 3, 11, 1),
            head + struct.pack("!IIII", 10, 1, 5, 1),
            struct.pack("!HI", 0, 0xFFFFFFFF) + struct.pack("!II", 5, 1),
        ]
        for extra in bad:
            block, gap, ranges = codec.decodeAckExtra(7, extra)
            self.assertEqual(block, 7)
            self.assertIsNone(ranges, extra)

    def test_gapsAfter(self):
        """
        If a tracker is asked for the gaps after a block, it lists at most
        that many, and none past the highest block received.
        """
        t = mclient.GapTracker(30)
        for b in (1, 2, 5, 6, 9, 12, 20):
            t.add(b)
        self.assertEqual(t.gapsAfter(5, 10), [(7, 8), (10, 11), (13, 19)])
        self.assertEqual(t.gapsAfter(5, 2), [(7, 8), (10, 11)])
        self.assertEqual(t.gapsAfter(21, 5), [])
        self.assertEqual(t.gapsAfter(21, 5, upTo=30), [(21, 30)])

    def client(self, **kw):
        c = mclient.MulticastClient(task.Clock(), ("10.0.0.1", 69), "f", None, **kw)
        c.epoch = True
        c.tracker = mclient.GapTracker(100)
        for b in range(1, 81):
            if b not in (3, 4, 10, 20, 21, 22, 30):
                c.tracker.add(b)
        return c

    def test_clientAck(self):
        """
        If a master with C{mcepoch} ACKs, its ACK names the first gap in the
        gap field and the further gaps below its highest block as ranges.
        """
        c = self.client()
        packet = wire.decode(c._ackBytes(2))
        self.assertEqual(codec.decodeAckExtra(packet.block, packet.extra),
                         (2, 2, [(10, 10), (20, 22), (30, 30)]))
        self.assertEqual(c.expectUntil, 4)

    def test_clientAckRepeatsAfterAWindow(self):
        """
        If a range was listed in an ACK, the next ACKs leave it out until a
        window of DATA has come since (the server sent it at once), then
        list it again.
        """
        c = self.client(windowsize=8)
        c.windowsize = 8

        def ranges():
            packet = wire.decode(c._ackBytes(2))
            return codec.decodeAckExtra(packet.block, packet.extra)[2]
        self.assertEqual(ranges(), [(10, 10), (20, 22), (30, 30)])
        self.assertIsNone(ranges())
        c.stats["data"] += 7
        self.assertIsNone(ranges())
        c.stats["data"] += 1
        self.assertEqual(ranges(), [(10, 10), (20, 22), (30, 30)])

    def test_clientAckNoRanges(self):
        """
        If the client is told to send no ranges (C{ackRanges=0}), or knows
        nothing past its first gap, the ACK is the 6-byte one.
        """
        c = self.client(ackRanges=0)
        self.assertEqual(len(wire.decode(c._ackBytes(2)).extra), 6)
        c = self.client()
        c.tracker = mclient.GapTracker(100)
        c.tracker.add(1)
        self.assertEqual(wire.decode(c._ackBytes(1)).extra, struct.pack("!HI", 0, 0xFFFFFFFF))


class GroupPoolTests(SynchronousTestCase):

    def test_allocate(self):
        """
        If groups are allocated, each is unique in the network and released
        ones are reused; an exhausted pool raises L{TooManySessions}.
        """
        from provisioner.errors import TooManySessions
        pool = registry.GroupPool("239.255.7.0/30", 1758)
        a = pool.allocate()
        b = pool.allocate()
        self.assertEqual({a, b}, {("239.255.7.1", 1758), ("239.255.7.2", 1758)})
        self.assertRaises(TooManySessions, pool.allocate)
        pool.release(a)
        self.assertEqual(pool.allocate(), a)


class GroupBatchTests(SynchronousTestCase):
    """
    L{mtftp._GroupListener} with batches from L{provisioner.net.udpbatch}.
    """

    def test_batchOfViews(self):
        """
        If a batch of views into a reused buffer arrives, each DATA is
        placed before the buffer can change, and the deadline timer is
        pushed on rather than replaced.
        """
        from twisted.internet.task import Clock
        clock = Clock()
        path = self.mktemp()
        out = BlockOutput(path)
        self.addCleanup(out.close)
        c = mclient.MulticastClient(clock, ("198.18.0.1", 69), "f", out, blksize=4)
        c.session = ("198.18.0.1", 1000)
        c.epoch = True
        c.size = 14
        c.tracker = mclient.GapTracker(4)
        c.role = mclient.PASSIVE
        out.truncate(14)
        buf = bytearray(b"\0\3\0\1\0\0abcd" + b"\0\3\0\2\0\0efgh")
        views = [memoryview(buf)[:10], memoryview(buf)[10:]]
        listener = mclient._GroupListener(c)
        listener.datagramsReceived(views, [c.session, c.session])
        timer = c._timer
        buf[:] = b"\0\3\0\3\0\0ijkl" + b"\0" * 10
        listener.datagramsReceived([memoryview(buf)[:10]], [c.session])
        self.assertIs(c._timer, timer)
        self.assertEqual(c.stats["data"], 3)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"abcdefghijkl\0\0")
