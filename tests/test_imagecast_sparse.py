"""
Tests for sparse images in imagecast (issue 16 part 4): the extent finder
(L{provisioner.imagecast.extents}), the hole map on the wire
(C{Pieces.holes}, C{Register.features}), the digests of pieces in holes,
the schedule (only data extents in the rounds), the receiver zeroing the
holes (L{provisioner.client.holes}) and counting them as received, and
one session end to end: a 1 GiB image holding 64 MiB of data sent to
three receivers in network namespaces (two files and a loop device), the
bytes on the wire counted.
"""

import errno
import hashlib
import json
import os
import subprocess

from twisted.internet import defer, task
from twisted.protocols import amp
from twisted.trial.unittest import SynchronousTestCase

from provisioner.client.holes import zeroHoles
from provisioner.client.receiver import OutputFile, Receiver
from provisioner.config import loadConfig
from provisioner.imagecast import commands
from provisioner.imagecast import extents as E
from provisioner.imagecast import pieces as P
from provisioner.imagecast import ranges as R
from provisioner.imagecast.controller import Controller
from provisioner.imagecast.datagram import DataDatagram
from tests.fakes import FakeReactor
from tests.netlab import requireE2E

KiB = 1 << 10
MiB = 1 << 20
KEY = b"s" * 32


def sparseFile(path, size, extents, fill=None):
    """
    Make a file of C{size} bytes with data only at C{extents} (C{(offset,
    length)}): C{truncate}, then writes at the offsets.

    @param fill: a byte the data is made of (random data by default).
    @return: the file's content (bytes) when small, else L{None}.
    """
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, length in extents:
            f.seek(offset)
            f.write(fill * length if fill is not None else os.urandom(length))
    if size <= 64 * MiB:
        with open(path, "rb") as f:
            return f.read()
    return None


def sha256Of(path, size=None):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = size
        while left is None or left > 0:
            chunk = f.read(8 * MiB if left is None else min(8 * MiB, left))
            if not chunk:
                break
            h.update(chunk)
            if left is not None:
                left -= len(chunk)
    return h.hexdigest()


class ExtentTests(SynchronousTestCase):
    """
    Tests for L{E.dataExtents}, L{E.findHoles} and L{E.largestHoles}.
    """

    def open(self, size, extents):
        path = self.mktemp()
        sparseFile(path, size, extents)
        fd = os.open(path, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        return fd

    def test_extentsOfASparseFile(self):
        """
        If a file is made with C{truncate} and writes at offsets (on 4 KiB
        boundaries), its data extents are exactly the writes (touching
        writes are one extent) and its holes the rest.
        """
        size = 16 * MiB
        fd = self.open(size, [(MiB, 64 * KiB), (MiB + 64 * KiB, 4 * KiB),
                              (8 * MiB, 128 * KiB), (size - 4 * KiB, 4 * KiB)])
        data = [(MiB, MiB + 68 * KiB), (8 * MiB, 8 * MiB + 128 * KiB),
                (size - 4 * KiB, size)]
        self.assertEqual(E.dataExtents(fd, size), data)
        self.assertEqual(E.findHoles(fd, size), R.subtract([(0, size)], data))

    def test_dataOnly(self):
        """
        If a file has no hole, it has one extent and no hole.
        """
        fd = self.open(MiB, [(0, MiB)])
        self.assertEqual(E.dataExtents(fd, MiB), [(0, MiB)])
        self.assertEqual(E.findHoles(fd, MiB), [])

    def test_holesOnly(self):
        """
        If a file is all hole (only truncated), it has no extent and one
        hole, the whole image; a hole at the end counts up to the image's
        size.
        """
        fd = self.open(4 * MiB, [])
        self.assertEqual(E.dataExtents(fd, 4 * MiB), [])
        self.assertEqual(E.findHoles(fd, 4 * MiB), [(0, 4 * MiB)])
        fd = self.open(4 * MiB, [(0, 4 * KiB)])
        self.assertEqual(E.findHoles(fd, 4 * MiB), [(4 * KiB, 4 * MiB)])

    def test_noSeekData(self):
        """
        If the file system refuses C{SEEK_DATA} (or the descriptor does not
        seek), the whole file is data.
        """
        fd = self.open(4 * MiB, [(0, 4 * KiB)])

        def refuse(fd, offset, how):
            raise OSError(errno.EINVAL, "no")
        self.patch(os, "lseek", refuse)
        self.assertEqual(E.dataExtents(fd, 4 * MiB), [(0, 4 * MiB)])
        self.assertEqual(E.findHoles(fd, 4 * MiB), [])

    def test_notSeekable(self):
        """
        If the descriptor does not seek at all (a pipe), everything is data.
        """
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        self.assertEqual(E.dataExtents(r, MiB), [(0, MiB)])

    def test_smallHolesAreData(self):
        """
        Holes shorter than L{E.MIN_HOLE} are sent as data; beyond C{most},
        the smallest holes are sent as data.
        """
        holes = [(0, 4 * KiB), (MiB, MiB + E.MIN_HOLE), (3 * MiB, 4 * MiB),
                 (5 * MiB, 5 * MiB + 200 * KiB)]
        self.assertEqual(E.largestHoles(holes), holes[1:])
        self.assertEqual(E.largestHoles(holes, most=2),
                         [(3 * MiB, 4 * MiB), (5 * MiB, 5 * MiB + 200 * KiB)])
        size = 4 * MiB
        fd = self.open(size, [(o, 4 * KiB) for o in range(0, size, E.MIN_HOLE // 2)])
        self.assertEqual(E.findHoles(fd, size), [])



class WireTests(SynchronousTestCase):
    """
    The hole map on the control channel: C{Pieces.holes} and
    C{Register.features}.
    """

    def roundTrip(self, command, **kw):
        box = command.makeArguments(kw, None)
        strings = amp.AmpBox(box)
        return box, command.parseArguments(strings, None)

    def test_holesRoundTrip(self):
        """
        If C{Pieces} carries holes, they come back as the same ranges.
        """
        holes = [(0, MiB), (3 * MiB, 1 << 30)]
        box, args = self.roundTrip(commands.Pieces, session=1, pieceSize=MiB,
                                   digests=b"d" * 32, holes=holes)
        self.assertIn(b"holes", box)
        self.assertEqual(args["holes"], holes)

    def test_noHolesLeftOut(self):
        """
        If an image has no holes, C{Pieces} has no C{holes} key, and the
        responder is not given the argument (responders without it work).
        """
        box, args = self.roundTrip(commands.Pieces, session=1, pieceSize=MiB,
                                   digests=b"d" * 32, holes=None)
        self.assertNotIn(b"holes", box)
        self.assertNotIn("holes", args)

    def test_tooManyHoles(self):
        """
        If a hole list holds more than L{commands.MAX_HOLE_RANGES} ranges,
        it decodes as malformed, and the receiver refuses it.
        """
        holes = [(i * 2, i * 2 + 1) for i in range(commands.MAX_HOLE_RANGES + 1)]
        box, args = self.roundTrip(commands.Pieces, session=1, pieceSize=MiB,
                                   digests=b"d" * 32, holes=holes)
        self.assertIsInstance(args["holes"], commands.MalformedRanges)
        r = Receiver(FakeReactor(), OutputFile(self.mktemp()), "me")
        self.assertRaises(commands.BadRanges, r.pieces, **args)

    def test_features(self):
        """
        If a receiver registers, it names the feature C{holes}; an older
        one's C{Register} parses with no features.
        """
        box, args = self.roundTrip(commands.Register, clientId="a", address="x",
                                   features=list(commands.FEATURES))
        self.assertEqual(args["features"], ["holes"])
        box, args = self.roundTrip(commands.Register, clientId="a", address="x")
        self.assertIsNone(args["features"])


class PieceDigestTests(SynchronousTestCase):
    """
    The digests of the pieces of a sparse image.
    """

    def test_holesNotRead(self):
        """
        If the holes are given, the digests are those of the file read
        whole, and the pieces inside holes are not read (their digest is
        that of zeros); parts of pieces in a hole are not read either.
        """
        size = 8 * MiB + 1000
        path = self.mktemp()
        sparseFile(path, size, [(MiB + 4 * KiB, 8 * KiB), (5 * MiB, MiB)])
        fd = os.open(path, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        whole = P.pieceDigests(fd, size, MiB)
        holes = E.findHoles(fd, size, minimum=1)
        read = []
        real = os.pread

        def pread(fd, n, offset):
            read.append((offset, n))
            return real(fd, n, offset)
        self.patch(os, "pread", pread)
        self.assertEqual(P.pieceDigests(fd, size, MiB, holes=holes), whole)
        self.assertEqual(sum(n for o, n in read), 8 * KiB + MiB)
        self.assertEqual(whole[:32], P.zeroDigest(MiB))
        self.assertEqual(whole[-32:], P.zeroDigest(1000))


class _Writer:
    def __init__(self):
        self.batches = []

    def writeBatch(self, datagrams):
        self.batches.append(list(datagrams))
        return len(datagrams)

    def close(self):
        pass


class _Connection:
    def __init__(self):
        self.calls = []
        self.dropped = None

    def callRemote(self, command, **kw):
        self.calls.append((command, kw))
        return defer.succeed({})

    def named(self, command):
        return [kw for c, kw in self.calls if c is command]

    def drop(self, why):
        self.dropped = why


class ScheduleTests(SynchronousTestCase):
    """
    The sender's side: a sparse image's session announces its holes and
    sends only its data.
    """

    size = 6 * MiB
    extents = [(MiB, 256 * KiB), (4 * MiB, 4 * KiB)]

    def setUp(self):
        self.root = self.mktemp()
        os.makedirs(self.root)
        self.data = sparseFile(os.path.join(self.root, "img"), self.size, self.extents)
        self.clock = task.Clock()
        self.writer = _Writer()
        config = loadConfig(text=(
            "imagecast:\n  enabled: true\n  authentication: none\n  root: %s\n"
            "  report_timeout: 5\n  announce_timeout: 1\n  tail_bytes: 0\n" % (
                self.root,)))["imagecast"]
        self.controller = Controller(self.clock, config,
                                     writerFactory=lambda g, p: self.writer,
                                     hasher=lambda p: defer.succeed(
                                         hashlib.sha256(self.data).hexdigest()),
                                     sessionIds=lambda: 7)

    def start(self):
        return self.successResultOf(self.controller.startSession(
            "img", minReceivers=1, maxWait=30))

    def test_holesAnnouncedDataSent(self):
        """
        If a sparse image is sent, the receiver is sent its holes with the
        piece digests, round 1 announces only the data extents, and the
        datagrams carry exactly those bytes; the scorecard counts the
        holes.
        """
        session = self.start()
        data = [(MiB, MiB + 256 * KiB), (4 * MiB, 4 * MiB + 4 * KiB)]
        holes = R.subtract([(0, self.size)], data)
        self.assertEqual(session.holes, holes)
        a = _Connection()
        self.controller.register(a, "a", "x", features=commands.FEATURES)
        for _ in range(100):
            self.clock.advance(0.01)
        self.assertEqual([c.__name__ for c, kw in a.calls][:2], ["Pieces", "Announce"])
        self.assertEqual(a.named(commands.Pieces)[0]["holes"], holes)
        self.assertEqual(a.named(commands.Announce)[0]["ranges"], data)
        sent = R.RangeSet()
        for batch in self.writer.batches:
            for wire in batch:
                d = DataDatagram.from_wire(bytes(wire), session.key)
                self.assertEqual(d.payload, self.data[d.offset:d.offset + len(d.payload)])
                sent.add(d.offset, d.offset + len(d.payload))
        self.assertEqual(sent.ranges(), data)
        self.assertEqual(session.rounds[0]["bytes"], 260 * KiB)
        card = session.scorecard()
        self.assertEqual((card["holes"], card["hole_bytes"]), (3, self.size - 260 * KiB))
        digests = P.splitDigests(session.digests, self.size, session.pieceSize)
        self.assertEqual(digests[0], P.zeroDigest(MiB))
        self.assertEqual(digests[1], hashlib.sha256(self.data[MiB:2 * MiB]).digest())

    def test_olderReceiverRefused(self):
        """
        If a receiver registers without the feature C{holes} for a sparse
        image's session, it is refused with C{NOT_AUTHENTICATED} (the
        refusal older receivers give up on) and a message saying why; one
        that registered before the session started is closed when it
        starts (and refused when it registers again).
        """
        early = _Connection()
        self.controller.register(early, "early", "x")
        session = self.start()
        self.assertIn("early", early.dropped)
        self.assertNotIn("early", session.members)
        late = _Connection()
        e = self.assertRaises(commands.NotAuthenticated, self.controller.register,
                              late, "late", "x")
        self.assertIn("image img is sparse", str(e))
        self.assertIn("upgrade provisioner receive", str(e))
        self.assertNotIn("late", session.members)

    def test_notSparseUnchanged(self):
        """
        If the image has no hole, nothing about holes is sent: C{Pieces}
        without holes, round 1 the whole image; a receiver without features
        is enrolled as before.
        """
        with open(os.path.join(self.root, "img"), "wb") as f:
            f.write(os.urandom(self.size))
        session = self.start()
        a = _Connection()
        self.controller.register(a, "a", "x")
        self.clock.advance(0.01)
        self.assertEqual(session.holes, [])
        self.assertIsNone(a.named(commands.Pieces)[0]["holes"])
        self.assertEqual(a.named(commands.Announce)[0]["ranges"], [(0, self.size)])


class ZeroHoleTests(SynchronousTestCase):
    """
    Tests for L{zeroHoles} and L{OutputFile.prepare} with holes.
    """

    def test_freshFileKnownZero(self):
        """
        If the output is a new file, only the data extents are allocated
        and the holes are left as holes: nothing is written, they read as
        zeros.
        """
        path = self.mktemp()
        out = OutputFile(path)
        self.addCleanup(out.close)
        holes = [(0, 60 * MiB), (61 * MiB, 64 * MiB)]
        out.prepare(64 * MiB, holes)
        self.assertEqual(zeroHoles(out, holes), "known zero")
        st = os.stat(path)
        self.assertEqual(st.st_size, 64 * MiB)
        # the data extent is allocated (where the file system preallocates)
        # and nothing else
        self.assertLess(st.st_blocks * 512, MiB + 64 * KiB)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), bytes(64 * MiB))

    def test_usedFilePunched(self):
        """
        If the output held data already, the holes are punched out: they
        read as zeros and their blocks are freed; the data is kept.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"\xa5" * (8 * MiB))
        out = OutputFile(path)
        self.addCleanup(out.close)
        holes = [(4096, 3 * MiB), (5 * MiB, 8 * MiB)]
        out.prepare(8 * MiB, holes)
        self.assertEqual(zeroHoles(out, holes), "punched")
        with open(path, "rb") as f:
            content = f.read()
        self.assertEqual(content[:4096], b"\xa5" * 4096)
        self.assertEqual(content[4096:3 * MiB], bytes(3 * MiB - 4096))
        self.assertEqual(content[3 * MiB:5 * MiB], b"\xa5" * (2 * MiB))
        self.assertEqual(content[5 * MiB:], bytes(3 * MiB))
        self.assertLess(os.stat(path).st_blocks * 512, 2 * MiB + 64 * KiB + 4096)

    def test_punchRefusedWritesZeros(self):
        """
        If the file system cannot punch holes, zeros are written.
        """
        import provisioner.client.holes as H
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"\xa5" * MiB)
        out = OutputFile(path)
        self.addCleanup(out.close)
        out.prepare(MiB, [(1000, 5000)])
        self.patch(H, "_punch", lambda fd, start, end: False)
        self.assertEqual(zeroHoles(out, [(1000, 5000)]), "written")
        with open(path, "rb") as f:
            content = f.read()
        self.assertEqual(content, b"\xa5" * 1000 + bytes(4000) + b"\xa5" * (MiB - 5000))

    def test_blockDeviceZeroOut(self):
        """
        If the output is a block device (a loop device), the holes are
        zeroed with C{BLKZEROOUT}, unaligned edges written with zeros; the
        rest of the device is untouched.
        """
        from tests.test_client_blockdev import loopDevice, FILL
        device, backing = loopDevice(self, 4 * MiB)
        out = OutputFile(device)
        self.addCleanup(out.close)
        out.prepare(3 * MiB + 100)
        holes = [(1000, MiB + 7), (2 * MiB, 3 * MiB + 100)]
        self.assertEqual(zeroHoles(out, holes), "BLKZEROOUT")
        out.datasync()
        fd = os.open(device, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        content = os.pread(fd, 4 * MiB, 0)
        expected = bytearray(FILL * (4 * MiB))
        for start, end in holes:
            expected[start:end] = bytes(end - start)
        self.assertEqual(content, bytes(expected))


class ReceiverHoleTests(SynchronousTestCase):
    """
    The receiver of a sparse image: the holes are zeroed and held, never
    reported nor fetched, and the image's sha256 is checked over them.
    """

    size = 4 * MiB + 500

    def setUp(self):
        self.holes = [(0, 2 * MiB), (3 * MiB, 4 * MiB)]
        data = bytearray(self.size)
        for start, end in R.subtract([(0, self.size)], self.holes):
            data[start:end] = os.urandom(end - start)
        self.data = bytes(data)
        self.sha = hashlib.sha256(self.data).hexdigest()
        self.path = self.mktemp()
        self.reactor = FakeReactor()
        self.calls = []
        self.server = _Connection()

    def make(self):
        r = Receiver(self.reactor, OutputFile(self.path), "me")
        r.connected(self.server)
        return r

    def announce(self, r, holes):
        pieceSize = P.pieceSizeFor(self.size)
        digests = b"".join(hashlib.sha256(self.data[o:o + pieceSize]).digest()
                           for o in range(0, self.size, pieceSize))
        r.pieces(session=5, pieceSize=pieceSize, digests=digests, holes=holes)
        ranges = R.subtract([(0, self.size)], self.holes)
        r.announce(session=5, name="img", size=self.size, sha256=self.sha, chunkSize=1000,
                   ranges=ranges, group="239.255.42.1", port=7011, key=KEY, round=1)
        return ranges

    def send(self, r, ranges, skip=()):
        for start, end in ranges:
            for o in range(start, end, 1000):
                if o in skip:
                    continue
                wire = DataDatagram(5, 1, o, self.data[o:min(end, o + 1000)]).to_wire(KEY)
                r.datagramReceived(wire, ("198.18.0.1", 1))

    def test_holesHeldNotReported(self):
        """
        If a sparse image is announced, the receiver zeroes its holes
        (punched: the output held other data), holds them, reports only the
        data it lacks, and completes with the image's sha256; the hole
        pieces are verified without reading them back.
        """
        with open(self.path, "wb") as f:
            f.write(b"\xa5" * self.size)
        r = self.make()
        ranges = self.announce(r, self.holes)
        self.assertEqual(r.missing(), ranges)
        self.assertEqual(r.holesHow, "punched")
        self.assertEqual(r.holesZeroed, 3 * MiB)
        self.send(r, ranges, skip={2 * MiB + 5000})
        r.endRound(session=5, round=1)
        self.reactor.advance(1)
        reports = self.server.named(commands.ReportMissing)
        self.assertEqual(reports[-1]["ranges"], [(2 * MiB + 5000, 2 * MiB + 6000)])
        o = 2 * MiB + 5000
        r.datagramReceived(DataDatagram(5, 2, o, self.data[o:o + 1000]).to_wire(KEY),
                           ("198.18.0.1", 1))
        r.announce(session=5, name="img", size=self.size, sha256=self.sha, chunkSize=1000,
                   ranges=[(o, o + 1000)], group="239.255.42.1", port=7011, key=KEY, round=2)
        r.endRound(session=5, round=2)
        self.reactor.advance(1)
        self.assertEqual(self.server.named(commands.ReportMissing)[-1]["ranges"], [])
        self.reactor.advance(1)
        self.assertEqual(self.server.named(commands.Complete)[-1]["sha256"], self.sha)
        self.assertEqual(self.successResultOf(r.result), 0)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), self.data)
        self.assertEqual(r.checks.readBack, 2)  # the two pieces with data
        self.assertEqual(self.server.named(commands.FetchRange), [])
        self.assertEqual(r.summary()["holes_zeroed"], 3 * MiB)

    def test_withoutHolesTheHolesAreReported(self):
        """
        If the same image comes without its hole map (a server that does
        not send it), the receiver lacks the holes and reports them: the
        hole map is what keeps them off the wire.
        """
        r = self.make()
        ranges = self.announce(r, None)
        self.send(r, ranges)
        r.endRound(session=5, round=1)
        self.reactor.advance(1)
        self.assertEqual(self.server.named(commands.ReportMissing)[-1]["ranges"],
                         self.holes)
        self.assertIsNone(r.holesHow)

    def test_reportWaitsForZeroing(self):
        """
        If zeroing the holes is still running (a slow disk), the report
        waits for it and does not name the holes.
        """
        pending = defer.Deferred()
        r = self.make()
        real = r.runInThread

        def runInThread(f, *args):
            if f is zeroHoles:
                return pending.addCallback(lambda _: f(*args))
            return real(f, *args)
        r.runInThread = runInThread
        ranges = self.announce(r, self.holes)
        self.send(r, ranges)
        r.endRound(session=5, round=1)
        self.reactor.advance(1)
        self.assertEqual(self.server.named(commands.ReportMissing), [])
        pending.callback(None)
        self.reactor.advance(1)
        self.assertEqual(self.server.named(commands.ReportMissing)[-1]["ranges"], [])
        self.assertEqual(r.holesHow, "known zero")


class SparseEndToEndTests(SynchronousTestCase):
    """
    A 1 GiB image holding 64 MiB of data, sent by the appliance under
    twistd in a namespace to three receivers in theirs (the lab of
    L{tests.test_imagecast_e2e}): a new file, a file that held other data,
    and a 1 GiB loop device. The bytes on the wire are counted by
    iptables in the sender's namespace (multicast data and the control
    connections) and by the sender's scorecard.
    """

    def test_sparseImage(self):
        """
        If a sparse 1 GiB image with 64 MiB of data is sent, every
        receiver ends with the image's sha256 (the holes are zeros on each
        output), and the bytes on the wire stay under 1.1 times the data.
        """
        from tests.test_client_blockdev import loopDevice
        from tests.test_imagecast_e2e import PROVISIONER, MulticastLab
        size, dataBytes = 1 << 30, 64 * MiB
        requireE2E(root=True, netns=True, tools=("ip", "iptables", "losetup"))
        device, backing = loopDevice(self, size, fill=None)
        lab = MulticastLab(self, receivers=3, size=4096, rate=400)
        # 16 extents of 4 MiB spread over the image
        extents = [(i * 64 * MiB + (i % 3) * MiB, 4 * MiB) for i in range(16)]
        sparseFile(lab.image, size, extents)
        sha = sha256Of(lab.image)
        lab.sha256 = sha
        # what the outputs held before: other data where the image has holes
        garbage = [(o + 16 * MiB, MiB) for o, _ in extents]
        sparseFile(os.path.join(lab.dir, "used"), size, garbage, fill=b"\xa5")
        with open(backing, "r+b") as f:
            for o, n in garbage:
                f.seek(o)
                f.write(b"\x5a" * n)
        sender = lab.sender
        for rule in (["-p", "udp", "-d", "239.255.42.0/24"],
                     ["-p", "tcp", "--sport", "7010"]):
            sender.run(["iptables", "-w", "-I", "OUTPUT"] + rule)

        lab.receive(lab.lab.hosts[1], "fresh")
        lab.receive(lab.lab.hosts[2], "used")
        log = open(os.path.join(lab.dir, "disk.log"), "wb")
        self.addCleanup(log.close)
        state = os.path.join(lab.dir, "disk.imagecast-state")
        disk = lab.lab.hosts[3].popen(PROVISIONER + [
            "receive", "--server", sender.ip, "--output", device, "--state", state,
            "--id", "disk", "--json", "-q", "--timeout", "30"] + lab.secretArgs("disk"),
            env=lab.env, stdout=log, stderr=subprocess.STDOUT)
        send, session = lab.send(minReceivers=3)
        status, card, err = lab.finish(send, timeout=300)
        self.assertEqual(status, 0, err)
        self.assertEqual(sorted(card["complete"]), ["disk", "fresh", "used"])

        lab.assertByteExact("fresh")
        lab.assertByteExact("used")
        self.assertEqual(disk.wait(60), 0, open(os.path.join(lab.dir, "disk.log")).read())
        self.assertEqual(sha256Of(device, size), sha)
        hows = {}
        for name in ("fresh", "used"):
            summary, text = lab.summary(name)
            hows[name] = summary["holes_how"]
        with open(os.path.join(lab.dir, "disk.log")) as f:
            diskSummary = [json.loads(line) for line in f if line.startswith("{")][-1]
        hows["disk"] = diskSummary["holes_how"]
        self.assertEqual(hows, {"fresh": "known zero", "used": "punched",
                                "disk": "BLKZEROOUT"})
        # the new file holds its data extents only
        self.assertLess(os.stat(os.path.join(lab.dir, "fresh")).st_blocks * 512,
                        dataBytes * 1.1)

        counters = sender.run(["iptables", "-w", "-L", "OUTPUT", "-v", "-x",
                               "-n"]).stdout.decode()
        udp = tcp = None
        for line in counters.splitlines():
            fields = line.split()
            # (iptables -n shows the protocol as a name or a number)
            if len(fields) > 3 and "239.255.42.0/24" in line:
                udp = int(fields[1])
            if len(fields) > 3 and "spt:7010" in line:
                tcp = int(fields[1])
        wire = sum(r["wire_bytes"] for r in card["rounds"])
        self.assertEqual(card["hole_bytes"], size - dataBytes)
        self.assertGreaterEqual(wire, dataBytes)
        self.assertLess(wire, dataBytes * 1.1)
        self.assertIsNotNone(udp, counters)
        self.assertIsNotNone(tcp, counters)
        self.assertGreaterEqual(udp, dataBytes)
        self.assertLess(udp + tcp, dataBytes * 1.1, counters)
        with open(os.path.join(lab.dir, "sparse-figures.json"), "w") as f:
            json.dump({"data": dataBytes, "size": size, "scorecard_wire_bytes": wire,
                       "iptables_udp_bytes": udp, "iptables_control_bytes": tcp,
                       "rounds": len(card["rounds"]), "holes": hows}, f)
        print("sparse figures:", json.dumps({
            "data": dataBytes, "scorecard_wire_bytes": wire, "iptables_udp_bytes": udp,
            "iptables_control_bytes": tcp, "ratio": round((udp + tcp) / dataBytes, 4),
            "rounds": len(card["rounds"])}))
