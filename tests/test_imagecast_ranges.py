"""
Tests for L{provisioner.imagecast.ranges}.
"""

from twisted.trial.unittest import SynchronousTestCase

from provisioner.imagecast import ranges as R


class AlgebraTests(SynchronousTestCase):
    """
    Tests for the set algebra on range lists.
    """

    def test_normaliseMergesTouchingAndOverlapping(self):
        """
        If ranges overlap or touch, L{R.normalise} merges them, sorts, and
        drops empty ones.
        """
        self.assertEqual(R.normalise([(10, 20), (0, 5), (5, 7), (15, 25), (30, 30)]),
                         [(0, 7), (10, 25)])

    def test_union(self):
        """
        If several receivers report ranges, L{R.union} is every byte any of
        them lacks, once.
        """
        self.assertEqual(R.union([(0, 10), (20, 30)], [(5, 15)], [], [(29, 40)]),
                         [(0, 15), (20, 40)])

    def test_subtract(self):
        """
        If C{b} covers parts of C{a}, L{R.subtract} leaves the rest,
        including holes in the middle and at both ends.
        """
        self.assertEqual(R.subtract([(0, 100)], [(10, 20), (30, 40), (90, 120)]),
                         [(0, 10), (20, 30), (40, 90)])
        self.assertEqual(R.subtract([(0, 10), (20, 30)], [(0, 30)]), [])
        self.assertEqual(R.subtract([(0, 10)], []), [(0, 10)])
        self.assertEqual(R.subtract([(5, 10), (12, 20)], [(0, 6), (8, 13), (19, 25)]),
                         [(6, 8), (13, 19)])

    def test_intersect(self):
        """
        L{R.intersect} keeps only the bytes common to both lists.
        """
        self.assertEqual(R.intersect([(0, 10), (20, 30)], [(5, 25)]), [(5, 10), (20, 25)])
        self.assertEqual(R.intersect([(0, 10)], [(10, 20)]), [])

    def test_intersectRandom(self):
        """
        On random lists of any lengths, L{R.intersect} gives the bytes in
        both, normalised, whichever list is the longer.
        """
        import random
        rng = random.Random(3)

        def make():
            held = R.RangeSet()
            for _ in range(rng.randrange(0, 40)):
                start = rng.randrange(0, 300)
                held.add(start, start + rng.randrange(1, 12))
            return held.ranges()
        for _ in range(300):
            a, b = make(), make()
            want = set()
            for s, e in a:
                want.update(x for x in range(s, e) if any(bs <= x < be for bs, be in b))
            got = R.intersect(a, b)
            self.assertEqual(got, R.normalise(got))
            self.assertEqual(set(x for s, e in got for x in range(s, e)), want)
            self.assertEqual(R.intersect(b, a), got)

    def test_total(self):
        """
        L{R.total} counts bytes.
        """
        self.assertEqual(R.total([(0, 10), (20, 25)]), 15)

    def test_chunks(self):
        """
        If a range is longer than the chunk size, L{R.chunks} cuts it from its
        own start; the last piece is short.
        """
        self.assertEqual(list(R.chunks([(0, 10), (100, 103)], 4)),
                         [(0, 4), (4, 4), (8, 2), (100, 3)])


class CoalesceTests(SynchronousTestCase):
    """
    Tests for the gap rule, L{R.coalesce}.
    """

    def test_gapZeroAddsNothing(self):
        """
        If the gap is 0, only overlapping or touching ranges merge: the bytes
        are exactly the union.
        """
        union = [(0, 10), (10, 20), (25, 30)]
        self.assertEqual(R.coalesce(union), [(0, 20), (25, 30)])
        self.assertEqual(R.total(R.coalesce(union)), R.total(R.normalise(union)))

    def test_smallGapsFilled(self):
        """
        If a gap is smaller than C{gap}, it is filled; a gap of exactly
        C{gap} is not.
        """
        self.assertEqual(R.coalesce([(0, 10), (13, 20), (25, 30)], gap=4),
                         [(0, 20), (25, 30)])
        self.assertEqual(R.coalesce([(0, 10), (14, 20)], gap=4), [(0, 10), (14, 20)])

    def test_maxRangesMergesSmallestGapsFirst(self):
        """
        If there are more ranges than C{maxRanges}, the smallest gaps are
        merged first, so the fewest bytes are added.
        """
        union = [(0, 10), (100, 110), (112, 120), (150, 160)]
        self.assertEqual(R.coalesce(union, maxRanges=3), [(0, 10), (100, 120), (150, 160)])
        self.assertEqual(R.coalesce(union, maxRanges=2), [(0, 10), (100, 160)])
        self.assertEqual(R.coalesce(union, maxRanges=1), [(0, 160)])


class RangeSetTests(SynchronousTestCase):
    """
    Tests for L{R.RangeSet}.
    """

    def test_inOrder(self):
        """
        If datagrams arrive in order, the set stays one range and each add
        reports the new bytes.
        """
        s = R.RangeSet()
        self.assertEqual(s.add(0, 10), 10)
        self.assertEqual(s.add(10, 20), 10)
        self.assertEqual(s.ranges(), [(0, 20)])

    def test_outOfOrderAndDuplicates(self):
        """
        If datagrams arrive out of order, twice, or bridging two ranges, the
        set merges them and counts only new bytes.
        """
        s = R.RangeSet()
        s.add(20, 30)
        s.add(0, 10)
        self.assertEqual(s.add(0, 10), 0)
        self.assertEqual(s.add(5, 25), 10)
        self.assertEqual(s.ranges(), [(0, 30)])
        s.add(40, 50)
        s.add(60, 70)
        self.assertEqual(s.add(35, 65), 30 - 10 - 5)
        self.assertEqual(s.ranges(), [(0, 30), (35, 70)])
        self.assertEqual(s.total(), 65)
        self.assertIn(36, s)
        self.assertNotIn(30, s)

    def test_gaps(self):
        """
        If a run of datagrams covers held and missing bytes, L{R.RangeSet.gaps}
        returns exactly the missing parts, in order, the same as
        L{R.subtract}.
        """
        import random
        s = R.RangeSet([(10, 20), (30, 40), (50, 60)])
        self.assertEqual(s.gaps(0, 70), [(0, 10), (20, 30), (40, 50), (60, 70)])
        self.assertEqual(s.gaps(12, 18), [])
        self.assertEqual(s.gaps(15, 35), [(20, 30)])
        self.assertEqual(s.gaps(60, 65), [(60, 65)])
        self.assertEqual(s.gaps(5, 10), [(5, 10)])
        self.assertEqual(R.RangeSet().gaps(3, 9), [(3, 9)])
        rnd = random.Random(5)
        for _ in range(200):
            held = [(a, a + rnd.randrange(1, 20)) for a in rnd.sample(range(0, 300), 12)]
            s = R.RangeSet(held)
            a = rnd.randrange(0, 320)
            b = a + rnd.randrange(1, 60)
            self.assertEqual(s.gaps(a, b), R.subtract([(a, b)], s.ranges()))

    def test_covers(self):
        """
        L{R.RangeSet.covers} is true only when one held range holds the
        whole of C{[start, end)}.
        """
        s = R.RangeSet([(10, 20), (30, 40)])
        self.assertTrue(s.covers(10, 20))
        self.assertTrue(s.covers(32, 35))
        self.assertFalse(s.covers(15, 25))
        self.assertFalse(s.covers(5, 12))
        self.assertFalse(s.covers(20, 30))
        self.assertFalse(s.covers(40, 41))
        self.assertFalse(R.RangeSet().covers(0, 1))

    def test_roundBytes(self):
        """
        If an offset falls before, inside, between or after a round's
        ranges, L{R.RoundBytes.at} counts the round's bytes below it.
        """
        where = R.RoundBytes([(10, 20), (50, 55), (100, 200)])
        self.assertEqual(where.total, 115)
        self.assertEqual([where.at(o) for o in (0, 10, 15, 20, 30, 52, 60, 150, 500)],
                         [0, 0, 5, 10, 10, 12, 15, 65, 115])
        self.assertEqual(R.RoundBytes([]).at(10), 0)

    def test_matchesNormalise(self):
        """
        If many ranges are added in a scrambled order, the result equals
        L{R.normalise} of them.
        """
        import random
        rnd = random.Random(3)
        pieces = [(i * 10, i * 10 + rnd.randint(1, 15)) for i in range(200)]
        rnd.shuffle(pieces)
        s = R.RangeSet()
        for a, b in pieces:
            s.add(a, b)
        self.assertEqual(s.ranges(), R.normalise(pieces))


class WireTests(SynchronousTestCase):
    """
    Tests for L{R.toWire} and L{R.fromWire}.
    """

    def test_roundTrip(self):
        """
        A range list survives encoding, large offsets included; a list of
        chunk-aligned ranges takes a few bytes a range.
        """
        ranges = [(0, 1), (5, 1 << 40), ((1 << 40) + 7, (1 << 41))]
        self.assertEqual(R.fromWire(R.toWire(ranges)), ranges)
        self.assertEqual(R.fromWire(R.toWire([])), [])
        import random
        rnd = random.Random(5)
        many = R.normalise((c * 1445, c * 1445 + 1445 * rnd.randint(1, 3))
                           for c in range(0, 200000, 9) if rnd.random() < 0.5)
        data = R.toWire(many)
        self.assertEqual(R.fromWire(data), many)
        self.assertLess(len(data), 4 * len(many))

    def test_malformed(self):
        """
        If the format byte is unknown, the data does not decompress, a
        range is empty or touches the previous one, a varint is cut, or a
        range ends beyond the limit, L{R.RangeError} is raised.
        """
        import zlib
        self.assertRaises(R.RangeError, R.fromWire, b"")
        self.assertRaises(R.RangeError, R.fromWire, b"\x02" + zlib.compress(b""))
        self.assertRaises(R.RangeError, R.fromWire, b"\x01garbage")
        self.assertRaises(R.RangeError, R.fromWire, b"\x01" + zlib.compress(b"\x00\x00"))
        self.assertRaises(R.RangeError, R.fromWire,
                          b"\x01" + zlib.compress(b"\x00\x05\x00\x05"))
        self.assertRaises(R.RangeError, R.fromWire, b"\x01" + zlib.compress(b"\x00\x85"))
        self.assertRaises(R.RangeError, R.fromWire, b"\x01" + zlib.compress(b"\x00"))
        self.assertRaises(R.RangeError, R.fromWire, R.toWire([(0, 10)]), limit=9)
        self.patch(R, "_MAX_DECODED", 1000)
        self.assertRaises(R.RangeError, R.fromWire,
                          b"\x01" + zlib.compress(b"\x00\x01" * 1000))


class FastDecodeTests(SynchronousTestCase):
    """
    L{R.fromWire} gives the same ranges, or the same error, with the C
    decoder (C{_fastpath.decode_ranges}) as with the Python loop.
    """

    def setUp(self):
        if R._fastpath is None:
            import os
            if os.environ.get("PROVISIONER_REQUIRE_E2E") == "1":
                self.fail("the C fast path is not built (scripts/setup builds it)")
            raise self.skipTest("the C fast path is not built")

    def decode(self, data, limit):
        try:
            return R.fromWire(data, limit)
        except R.RangeError as e:
            return "error: %s" % (e,)

    def test_random(self):
        """
        Random lists, limits and corrupted bodies (bytes flipped, cut,
        appended; huge varints) decode alike.
        """
        import random
        import zlib
        rng = random.Random(5)
        spy = _CountingDecoder(R._fastpath)
        for trial in range(400):
            held = R.RangeSet()
            base = rng.choice([0, 1 << 40, (1 << 62) - 5000])
            for _ in range(rng.randrange(0, 30)):
                start = base + rng.randrange(0, 4000)
                held.add(start, start + rng.randrange(1, 200))
            wire = R.toWire(held.ranges())
            body = bytearray(zlib.decompress(wire[1:]))
            kind = rng.random()
            if body and kind < 0.2:
                body[rng.randrange(len(body))] = rng.randrange(256)
            elif body and kind < 0.3:
                del body[rng.randrange(len(body)):]
            elif kind < 0.4:
                body += bytes([0xFF] * rng.randrange(1, 12) + [rng.randrange(128)])
            elif kind < 0.45:
                body += b"\x00\x00"
            data = bytes([R.FORMAT_VARINT_ZLIB]) + zlib.compress(bytes(body))
            limit = rng.choice([None, base + 2000, base + 5000, 1 << 63])
            self.patch(R, "_fastpath", spy)
            fast = self.decode(data, limit)
            self.assertEqual(spy.calls, trial + 1, "the C decoder was not taken")
            self.patch(R, "_fastpath", None)
            slow = self.decode(data, limit)
            self.assertEqual(fast, slow, (trial, bytes(body)))


class _CountingDecoder:
    """
    The C fast path module, counting the calls of C{decode_ranges}.
    """

    def __init__(self, module):
        self.module = module
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.module, name)

    def decode_ranges(self, *args):
        self.calls += 1
        return self.module.decode_ranges(*args)


