"""
Tests for L{provisioner.imagecast.datagram}.
"""

from twisted.trial.unittest import SynchronousTestCase

import hashlib
import os
import hmac

from provisioner.imagecast.datagram import (
    HEADER_SIZE, OVERHEAD, TAG_SIZE, DataDatagram, DatagramError, SessionKey, encode,
    payloadSize)

KEY = b"k" * 32


class DatagramTests(SynchronousTestCase):
    """
    Tests for L{DataDatagram}.
    """

    def test_roundTrip(self):
        """
        A datagram survives C{to_wire}/C{from_wire} under the same key; the
        overhead is the header plus the tag.
        """
        dg = DataDatagram(7, 3, (1 << 40) + 5, b"payload")
        wire = dg.to_wire(KEY)
        self.assertEqual(len(wire), OVERHEAD + 7)
        self.assertEqual(DataDatagram.from_wire(wire, KEY, 7), dg)
        self.assertEqual(HEADER_SIZE + TAG_SIZE, 27)
        self.assertEqual(payloadSize(1472), 1445)

    def test_golden(self):
        """
        The header layout is fixed: version, session, round, 48-bit offset,
        length, big-endian.
        """
        wire = DataDatagram(0x01020304, 5, 0x060708090A0B, b"ab").to_wire(KEY)
        self.assertEqual(wire[:HEADER_SIZE + 2],
                         b"\x01\x01\x02\x03\x04\x00\x05\x06\x07\x08\x09\x0a\x0b\x00\x02ab")

    def test_spoofed(self):
        """
        If a datagram was signed under another key (a spoofer without the
        session key) or altered on the way, it is refused.
        """
        wire = DataDatagram(7, 1, 0, b"data").to_wire(b"x" * 32)
        self.assertRaises(DatagramError, DataDatagram.from_wire, wire, KEY, 7)
        good = bytearray(DataDatagram(7, 1, 0, b"data").to_wire(KEY))
        good[HEADER_SIZE] ^= 1
        self.assertRaises(DatagramError, DataDatagram.from_wire, bytes(good), KEY, 7)
        good = bytearray(DataDatagram(7, 1, 0, b"data").to_wire(KEY))
        good[8] ^= 1  # the offset
        self.assertRaises(DatagramError, DataDatagram.from_wire, bytes(good), KEY, 7)

    def test_otherSession(self):
        """
        If a datagram belongs to another (stale) session, it is refused.
        """
        wire = DataDatagram(8, 1, 0, b"data").to_wire(KEY)
        e = self.assertRaises(DatagramError, DataDatagram.from_wire, wire, KEY, 7)
        self.assertIn("session 8", str(e))

    def test_malformed(self):
        """
        If a datagram is short (0, 1 bytes, header only), of another version,
        or its length field disagrees with its size, it is refused with
        L{DatagramError} and nothing else.
        """
        wire = DataDatagram(7, 1, 0, b"data").to_wire(KEY)
        for bad in [b"", b"\x01", wire[:HEADER_SIZE], wire[:-1], wire + b"x",
                    b"\x02" + wire[1:], b"\x00" * 100]:
            self.assertRaises(DatagramError, DataDatagram.from_wire, bad, KEY, 7)

    def test_offsetRange(self):
        """
        If an offset does not fit 48 bits, encoding refuses it.
        """
        self.assertRaises(DatagramError, DataDatagram(1, 1, 1 << 48, b"").to_wire, KEY)


class SessionKeyTests(SynchronousTestCase):
    """
    Tests for L{SessionKey}, the fast path of both ends.
    """

    def test_sameBytes(self):
        """
        If a datagram is encoded with L{SessionKey}, it is byte for byte what
        L{encode} gives, and its tag is the truncated HMAC-SHA256; a key
        longer than the hash block is hashed first, as in RFC 2104.
        """
        for key in (KEY, b"q" * 100):
            sk = SessionKey(key, 7)
            wire = sk.encode(3, (1 << 33) + 9, b"payload" * 100)
            self.assertEqual(wire, encode(7, 3, (1 << 33) + 9, b"payload" * 100, key))
            self.assertEqual(sk.tag(b"abc"), hmac.digest(key, b"abc", hashlib.sha256)[:TAG_SIZE])
        self.assertRaises(DatagramError, SessionKey(KEY, 7).encode, 1, 1 << 48, b"")

    def test_encodeRun(self):
        """
        If consecutive pieces of one buffer are encoded as a run, each
        datagram is byte for byte what L{encode} gives; an offset beyond 48
        bits is refused.
        """
        sk = SessionKey(KEY, 7)
        data = bytes(range(256)) * 4
        pieces = [(5000, 300), (5300, 300), (5600, 100)]
        self.assertEqual(sk.encodeRun(2, 4900, data, pieces),
                         [encode(7, 2, o, data[o - 4900:o - 4900 + n], KEY) for o, n in pieces])
        self.assertRaises(DatagramError, sk.encodeRun, 2, 1 << 48, data, [(1 << 48, 1)])

    def test_runs(self):
        """
        If a batch holds consecutive datagrams, a gap, and a datagram out of
        order, they come back as runs of consecutive payloads (memoryviews,
        not copies), in arrival order.
        """
        sk = SessionKey(KEY, 7)
        batch = [memoryview(sk.encode(1, o, bytes([o // 10]) * 10))
                 for o in (0, 10, 20, 50, 60, 30)]
        runs, rejected, stale = sk.verifyBatch(batch, 1, 1000)
        self.assertEqual((rejected, stale), (0, 0))
        self.assertEqual([(s, e) for s, e, _ in runs], [(0, 30), (50, 70), (30, 40)])
        self.assertEqual(b"".join(runs[0][2]), bytes([0]) * 10 + bytes([1]) * 10 + bytes([2]) * 10)
        self.assertIsInstance(runs[1][2][0], memoryview)

    def test_heldSkipped(self):
        """
        If a datagram's bytes are already held, it is dropped before its tag
        is computed: not in a run, not counted, even when spoofed.
        """
        from provisioner.imagecast.ranges import RangeSet
        sk = SessionKey(KEY, 7)
        held = RangeSet([(0, 20)])
        batch = [sk.encode(1, 0, b"a" * 10), SessionKey(b"x" * 32, 7).encode(1, 10, b"b" * 10),
                 sk.encode(1, 15, b"c" * 10), sk.encode(1, 25, b"d" * 10)]
        runs, rejected, stale = sk.verifyBatch(batch, 1, 1000, held)
        self.assertEqual((rejected, stale), (0, 0))
        self.assertEqual([(s, e) for s, e, _ in runs], [(15, 35)])

    def test_laterRoundKept(self):
        """
        If a datagram verifies but belongs to a later round than the one
        announced (the sender started a repair round before this receiver
        processed its announcement), it is kept, not counted as stale.
        """
        sk = SessionKey(KEY, 7)
        batch = [sk.encode(3, 0, b"a" * 10), sk.encode(4, 10, b"b" * 10),
                 sk.encode(2, 20, b"c" * 10)]
        runs, rejected, stale = sk.verifyBatch(batch, 3, 1000)
        self.assertEqual((rejected, stale), (0, 1))
        self.assertEqual([(s, e, b"".join(p)) for s, e, p in runs],
                         [(0, 20, b"a" * 10 + b"b" * 10)])

    def test_rejectedAndStale(self):
        """
        If datagrams are short, of another session or version, altered,
        signed under another key, or end beyond the image, they are counted
        as rejected; good ones of an earlier round as stale; none is in a run,
        and the runs around them are cut.
        """
        sk = SessionKey(KEY, 7)
        good = sk.encode(2, 0, b"a" * 10)
        altered = bytearray(sk.encode(2, 10, b"b" * 10))
        altered[HEADER_SIZE] ^= 1
        batch = [good, b"", b"\x01", good[:HEADER_SIZE], good + b"x",
                 b"\x02" + good[1:], bytes(altered), SessionKey(KEY, 8).encode(2, 10, b"c" * 10),
                 SessionKey(b"x" * 32, 7).encode(2, 10, b"d" * 10),
                 sk.encode(2, 995, b"e" * 10), sk.encode(1, 10, b"f" * 10),
                 sk.encode(2, 10, b"g" * 10)]
        runs, rejected, stale = sk.verifyBatch(batch, 2, 1000)
        self.assertEqual((rejected, stale), (9, 1))
        self.assertEqual([(s, e, b"".join(p)) for s, e, p in runs],
                         [(0, 20, b"a" * 10 + b"g" * 10)])


class _CountingFastPath:
    """
    The C fast path module, counting the calls of C{verify_batch}.
    """

    def __init__(self, module):
        self.module = module
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.module, name)

    def verify_batch(self, *args):
        self.calls += 1
        return self.module.verify_batch(*args)


class FastPathTests(SynchronousTestCase):
    """
    The C fast path (C{provisioner.imagecast._fastpath}) gives what the Python
    loop of L{SessionKey.verifyBatch} gives, on the same batches.
    """

    def setUp(self):
        from provisioner.imagecast import datagram
        if datagram._fastpath is None:
            if os.environ.get("PROVISIONER_REQUIRE_E2E") == "1":
                self.fail("the C fast path is not built (scripts/setup builds it)")
            raise self.skipTest("the C fast path is not built (python setup.py build_ext "
                                "--inplace)")

    def compare(self, batch, roundNumber, limit, held=None, key=KEY):
        from provisioner.imagecast import datagram
        spy = _CountingFastPath(datagram._fastpath)
        self.patch(datagram, "_fastpath", spy)
        fast = SessionKey(key, 7).verifyBatch(batch, roundNumber, limit, held)
        self.assertEqual(spy.calls, 1, "the C fast path was not taken")
        slow = SessionKey(key, 7, fast=False).verifyBatch(batch, roundNumber, limit, held)
        self.assertEqual(spy.calls, 1, "the Python loop took the C fast path")

        def plain(result):
            runs, rejected, stale = result
            return [(s, e, b"".join(bytes(p) for p in ps)) for s, e, ps in runs], rejected, stale
        self.assertEqual(plain(fast), plain(slow))
        return fast

    def test_random(self):
        """
        Random batches of good, duplicate, held, altered, truncated,
        foreign, stale, later-round and out-of-image datagrams, as bytes
        and as memoryviews of one buffer, with and without held ranges,
        beyond 4 GiB too.
        """
        import random
        from provisioner.imagecast.ranges import RangeSet
        rng = random.Random(7)
        sk = SessionKey(KEY, 7)
        for trial in range(60):
            base = rng.choice([0, 5 << 32])
            batch = []
            for i in range(rng.randrange(1, 80)):
                offset = base + rng.randrange(0, 40) * 100
                kind = rng.random()
                d = sk.encode(rng.choice([2, 2, 2, 1, 3]), offset, bytes([i]) * 100)
                if kind < 0.05:
                    d = d[:rng.randrange(0, len(d))]
                elif kind < 0.1:
                    d = bytearray(d)
                    d[rng.randrange(len(d))] ^= 1
                    d = bytes(d)
                elif kind < 0.15:
                    d = SessionKey(KEY, 8).encode(2, offset, b"x" * 100)
                elif kind < 0.2:
                    d = SessionKey(b"y" * 70, 7).encode(2, offset, b"x" * 100)
                batch.append(d)
            held = None
            if trial % 2:
                held = RangeSet([(base + s * 100, base + s * 100 + rng.randrange(1, 500))
                                 for s in rng.sample(range(40), 8)])
            limit = base + rng.choice([4000, 3050, 1 << 62])
            self.compare(batch, 2, limit, held)
            buffer = bytearray(b"".join(batch))
            view, at, views = memoryview(buffer), 0, []
            for d in batch:
                views.append(view[at:at + len(d)])
                at += len(d)
            runs, _, _ = self.compare(views, 2, limit, held)
            for _, _, payloads in runs:
                self.assertTrue(all(isinstance(p, memoryview) for p in payloads))

    def test_longKey(self):
        """
        A key longer than the hash block is hashed first (RFC 2104), in
        both paths.
        """
        key = b"z" * 100
        batch = [SessionKey(key, 7).encode(1, o, b"q" * 50) for o in (0, 50, 100)]
        runs, rejected, stale = self.compare(batch, 1, 1000, key=key)
        self.assertEqual([(s, e) for s, e, _ in runs], [(0, 150)])


class ReceiveBatchTests(SynchronousTestCase):
    """
    L{SessionKey.receiveBatch} (the C read loop) reads a real socket on
    loopback, keeps and writes what L{SessionKey.verifyBatch} keeps, and
    reports what it drops.
    """

    def setUp(self):
        FastPathTests.setUp(self)
        import socket
        import tempfile
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(self.rx.close)
        self.rx.bind(("127.0.0.1", 0))
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(self.tx.close)
        self.tx.connect(self.rx.getsockname())
        fd, self.path = tempfile.mkstemp()
        self.addCleanup(os.unlink, self.path)
        self.out = fd
        self.addCleanup(os.close, fd)
        os.ftruncate(fd, 8192)

    def receive(self, batch, held=None, hashAt=0, size=256, outfd=None, roundNumber=2):
        from provisioner.imagecast.ranges import RangeSet
        for d in batch:
            self.tx.send(d)
        buf = bytearray(64 * size)
        return SessionKey(KEY, 7).receiveBatch(
            self.rx.fileno(), buf, size, 64, roundNumber, 8000,
            held if held is not None else RangeSet(), self.out if outfd is None else outfd,
            hashAt)

    def test_sameAsVerifyBatch(self):
        """
        Good datagrams in and out of order, duplicates, held, altered,
        foreign, stale and out-of-image ones: the runs are those of
        L{SessionKey.verifyBatch}, written at their offsets; the run at
        C{hashAt} comes with its bytes.
        """
        from provisioner.imagecast.ranges import RangeSet
        sk = SessionKey(KEY, 7)
        altered = bytearray(sk.encode(2, 300, b"z" * 100))
        altered[20] ^= 1
        batch = [sk.encode(2, 0, b"a" * 100), sk.encode(2, 100, b"b" * 100),
                 bytes(altered), sk.encode(2, 200, b"c" * 100),
                 sk.encode(2, 600, b"d" * 100), sk.encode(1, 500, b"s" * 100),
                 SessionKey(KEY, 8).encode(2, 700, b"f" * 100),
                 sk.encode(2, 7950, b"x" * 100), sk.encode(3, 400, b"e" * 100),
                 sk.encode(2, 1000, b"h" * 100)]
        held = RangeSet([(1000, 1100)])
        count, runs, rejected, stale, truncated, peer, error, at = self.receive(batch, held)
        self.assertEqual((count, rejected, stale, truncated, error), (10, 3, 1, 0, 0))
        from provisioner.net.udpbatch import _decodeName
        self.assertEqual(_decodeName(peer), self.tx.getsockname())
        expected, _, _ = sk.verifyBatch(batch, 2, 8000, held)
        self.assertEqual([(s, e) for s, e, _ in runs], [(s, e) for s, e, _ in expected])
        self.assertEqual(runs[0], (0, 300, b"a" * 100 + b"b" * 100 + b"c" * 100))
        self.assertEqual([d for _, _, d in runs[1:]], [None, None])
        with open(self.path, "rb") as f:
            data = f.read()
        self.assertEqual(data[:300], b"a" * 100 + b"b" * 100 + b"c" * 100)
        self.assertEqual(data[400:500], b"e" * 100)
        self.assertEqual(data[600:700], b"d" * 100)
        self.assertEqual(data[500:600], b"\0" * 100)
        self.assertEqual(data[1000:1100], b"\0" * 100)

    def test_onlyNewBytesWritten(self):
        """
        A datagram partly over held bytes writes only the bytes not held,
        and bytes written by an earlier datagram of the batch count as
        held: a second datagram for them (forged by someone who knows the
        key) is not written over them, and the runs are what was written
        (the prefix's bytes those of the first datagram).
        """
        from provisioner.imagecast.ranges import RangeSet
        sk = SessionKey(KEY, 7)
        batch = [sk.encode(2, 0, b"a" * 100),
                 sk.encode(2, 50, b"F" * 100),     # over 50-100 (this batch) and 100-150
                 sk.encode(2, 250, b"G" * 100),    # over 300-320 (held) and 320-350
                 sk.encode(2, 0, b"H" * 100),      # all of it written already
                 sk.encode(2, 400, b"i" * 100),
                 sk.encode(2, 420, b"J" * 40)]     # inside 400-500, written already
        held = RangeSet([(300, 320)])
        count, runs, rejected, stale, truncated, peer, error, at = self.receive(batch, held)
        self.assertEqual((count, rejected, error), (6, 0, 0))
        self.assertEqual(runs, [(0, 150, b"a" * 100 + b"F" * 50), (250, 300, None),
                                (320, 350, None), (400, 500, None)])
        with open(self.path, "rb") as f:
            data = f.read()
        self.assertEqual(data[:150], b"a" * 100 + b"F" * 50)
        self.assertEqual(data[250:300], b"G" * 50)
        self.assertEqual(data[300:320], b"\0" * 20)
        self.assertEqual(data[320:350], b"G" * 30)
        self.assertEqual(data[400:500], b"i" * 100)

    def test_nothingWaiting(self):
        """
        An empty socket gives a count of 0 and no runs.
        """
        self.assertEqual(self.receive([])[:2], (0, []))

    def test_truncated(self):
        """
        A datagram longer than a slot is counted as truncated and dropped.
        """
        sk = SessionKey(KEY, 7)
        result = self.receive([sk.encode(2, 0, b"a" * 300), sk.encode(2, 0, b"b" * 100)])
        self.assertEqual(result[:5], (2, [(0, 100, b"b" * 100)], 0, 0, 1))

    def test_writeFails(self):
        """
        A write that fails is reported with its errno and offset, and the
        run is not returned as written.
        """
        import errno
        sk = SessionKey(KEY, 7)
        readOnly = os.open(self.path, os.O_RDONLY)
        self.addCleanup(os.close, readOnly)
        count, runs, _, _, _, _, error, at = self.receive(
            [sk.encode(2, 100, b"a" * 100), sk.encode(2, 300, b"b" * 100)], outfd=readOnly)
        self.assertEqual((count, runs, error, at), (2, [], errno.EBADF, 100))
