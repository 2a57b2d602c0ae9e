"""
Tests for L{provisioner.client.sockfilter}: the pieces a receiver wants, and
the classic BPF window run by the kernel on a real loopback socket.
"""

import random
import socket

from twisted.trial.unittest import SynchronousTestCase

from provisioner.imagecast import ranges as R
from provisioner.client import sockfilter
from provisioner.imagecast.datagram import SessionKey, encode

KEY = b"k" * 32
SESSION = 77
CHUNK = 1000


class WantedPiecesTests(SynchronousTestCase):
    """
    L{sockfilter.wantedPieces}.
    """

    def test_randomLoss(self):
        """
        The offsets wanted are exactly the sender's pieces of the round (cut
        from each range's start) that overlap what the receiver lacks.
        """
        rng = random.Random(3)
        size = 500 * CHUNK + 123
        lost = [R.normalise([(i * CHUNK, min(size, (i + 1) * CHUNK)) for i in range(501)
                             if rng.random() < 0.1]) for _ in range(4)]
        roundRanges = R.union(*lost)
        # a range that does not start on a chunk boundary, as a coalesced
        # or resumed one may
        roundRanges = R.union(roundRanges, [(size - 2500, size)])
        for missing in lost + [[(size - 1700, size - 1600)]]:
            pieces = [(o, o + n) for o, n in R.chunks(roundRanges, CHUNK)]
            expected = [s for s, e in pieces if R.intersect([(s, e)], missing)]
            self.assertEqual(sockfilter.wantedPieces(roundRanges, missing, CHUNK), expected)

    def test_nothing(self):
        """
        Nothing missing: nothing wanted.
        """
        self.assertEqual(sockfilter.wantedPieces([(0, 5000)], [], CHUNK), [])


class FilterTests(SynchronousTestCase):
    """
    The program on a real socket: what comes through.
    """

    def setUp(self):
        self.receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(self.receiver.close)
        self.receiver.bind(("127.0.0.1", 0))
        self.receiver.setblocking(False)
        self.sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(self.sender.close)

    def through(self, datagrams):
        """
        Send C{datagrams}; return the offsets (or raw bytes, for what is not
        a data datagram) that reached the socket.
        """
        for d in datagrams:
            self.sender.sendto(d, self.receiver.getsockname())
        out = []
        while True:
            try:
                data = self.receiver.recv(65536)
            except BlockingIOError:
                return out
            runs, rejected, stale = SessionKey(KEY, SESSION).verifyBatch([data], 1, 1 << 62)
            out.extend(run[0] for run in runs)
            if rejected:
                out.append(data)

    def data(self, offset, session=SESSION):
        return encode(session, 2, offset, b"x" * 10, KEY)

    def test_window(self):
        """
        Inside the window only the listed offsets come through; outside it,
        other sessions' datagrams and foreign datagrams come through.
        """
        program = sockfilter.windowProgram(SESSION, 10000, 20000, [12000, 15000])
        if not sockfilter.attach(self.receiver, program):
            raise self.skipTest("SO_ATTACH_FILTER refused here")
        offsets = [5000, 10000, 12000, 13000, 15000, 19999, 20000, 30000]
        self.assertEqual(self.through([self.data(o) for o in offsets]),
                         [5000, 12000, 15000, 20000, 30000])
        other = self.data(13000, session=SESSION + 1)
        self.assertEqual(self.through([other, b"not ours"]), [other, b"not ours"])
        sockfilter.detach(self.receiver)
        self.assertEqual(self.through([self.data(13000)]), [13000])

    def test_highOffsets(self):
        """
        Offsets beyond 4 GiB compare on both words: a window above 4 GiB
        does not drop the same low word below it.
        """
        base = 5 << 32
        program = sockfilter.windowProgram(SESSION, base + 10000, base + 20000,
                                           [base + 12000])
        if not sockfilter.attach(self.receiver, program):
            raise self.skipTest("SO_ATTACH_FILTER refused here")
        self.assertEqual(
            self.through([self.data(o) for o in (13000, base + 13000, base + 12000)]),
            [13000, base + 12000])

    def test_windowSize(self):
        """
        A window holds at most L{sockfilter.WINDOW} offsets (the longest
        jump classic BPF has).
        """
        offsets = list(range(0, (sockfilter.WINDOW + 1) * CHUNK, CHUNK))
        self.assertRaises(ValueError, sockfilter.windowProgram, SESSION, 0, 10 ** 9, offsets)
        program = sockfilter.windowProgram(SESSION, 0, 10 ** 9, offsets[:-1])
        self.assertTrue(all(jt <= 255 and jf <= 255 for _, jt, jf, _ in program))

    def test_repairFilter(self):
        """
        L{sockfilter.RepairFilter} filters a repair round window by window
        as the position moves: every wanted datagram comes through, and most
        of the others do not; the round's last datagram always comes
        through. A first round (everything wanted) gets no filter.
        """
        f = sockfilter.RepairFilter(self.receiver, SESSION)
        roundRanges = [(0, 2000 * CHUNK)]
        f.arm(roundRanges, roundRanges, CHUNK)
        self.assertFalse(f.attached)
        wanted = list(range(3 * CHUNK, 2000 * CHUNK, 7 * CHUNK))
        missing = R.normalise([(o, o + CHUNK) for o in wanted])
        f.arm(roundRanges, missing, CHUNK)
        if not f.attached:
            raise self.skipTest("SO_ATTACH_FILTER refused here")
        got = []
        for o in range(0, 2000 * CHUNK, CHUNK):
            got.extend(self.through([self.data(o)]))
            if f.end is not None and o + CHUNK >= f.end:
                f.advance(o + CHUNK)
        self.assertTrue(set(wanted) <= set(got))
        self.assertIn(1999 * CHUNK, got)
        self.assertLess(len(got), len(wanted) + 50)
        f.disarm()
        self.assertFalse(f.attached)
        self.assertEqual(self.through([self.data(1000)]), [1000])

    def test_refusedWindowDetaches(self):
        """
        If the kernel refuses a new window, the old one is taken off the
        socket: a stale window never judges the rest of the round.
        """
        f = sockfilter.RepairFilter(self.receiver, SESSION)
        wanted = list(range(3 * CHUNK, 2000 * CHUNK, 7 * CHUNK))
        f.arm([(0, 2000 * CHUNK)], R.normalise([(o, o + CHUNK) for o in wanted]), CHUNK)
        if not f.attached:
            raise self.skipTest("SO_ATTACH_FILTER refused here")
        self.assertEqual(self.through([self.data(CHUNK)]), [])
        self.patch(sockfilter, "attach", lambda sock, program: False)
        f.advance(f.end)
        self.assertFalse(f.attached)
        self.assertIsNone(f.end)
        self.assertEqual(self.through([self.data(CHUNK)]), [CHUNK])
