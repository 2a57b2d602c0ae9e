"""
Tests for L{provisioner.tftp.write} and L{provisioner.tftp.upload}:
uploads land in their own directory, through a temporary file, never over
an existing file.
"""

import gc
import os

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from provisioner import errors
from provisioner.config import loadConfig
from provisioner.files import DirectoryResolver, ResolverChain
from provisioner.tftp import wire
from provisioner.tftp.negotiate import Limits, negotiate
from provisioner.tftp.server import TFTPServer
from provisioner.tftp.transfer import AMPLIFICATION
from provisioner.tftp.upload import MAX_NAME, UploadTarget
from provisioner.tftp.write import WriteSession
from tests.fakes import FakeDatagramPort, FakeReactor

PEER = ("127.0.0.1", 41000)


class TargetTests(SynchronousTestCase):
    """
    Tests for L{UploadTarget}.
    """

    def setUp(self):
        self.dir = self.mktemp()
        self.target = UploadTarget(self.dir)

    def test_commit(self):
        """
        If an upload completes, the file appears under its name and no
        temporary file is left.
        """
        upload = self.target.open("log.txt")
        upload.write(b"abc")
        self.assertFalse(os.path.exists(os.path.join(self.dir, "log.txt")))
        upload.commit()
        with open(os.path.join(self.dir, "log.txt"), "rb") as f:
            self.assertEqual(f.read(), b"abc")
        self.assertEqual(os.listdir(self.dir), ["log.txt"])

    def test_neverOverwrite(self):
        """
        If the name exists, the upload is refused at once; if it appears
        while the upload runs, the commit fails and the old file stays.
        """
        with open(os.path.join(self.dir, "x"), "wb") as f:
            f.write(b"old")
        self.assertRaises(errors.FileExists, self.target.open, "x")
        upload = self.target.open("y")
        with open(os.path.join(self.dir, "y"), "wb") as f:
            f.write(b"first")
        upload.write(b"second")
        self.assertRaises(errors.FileExists, upload.commit)
        with open(os.path.join(self.dir, "y"), "rb") as f:
            self.assertEqual(f.read(), b"first")
        self.assertEqual(sorted(os.listdir(self.dir)), ["x", "y"])

    def test_refused(self):
        """
        If the name leaves the directory, names a missing subdirectory or a
        hidden file, it is refused.
        """
        os.symlink("/tmp", os.path.join(self.dir, "out"))
        for name in ["out/x", "missing/x", ".hidden", "a/.b"]:
            self.assertRaises(errors.AccessViolation, self.target.open, name)

    def test_abort(self):
        """
        If an upload is aborted, nothing is left.
        """
        upload = self.target.open("z")
        upload.write(b"partial")
        upload.abort()
        self.assertEqual(os.listdir(self.dir), [])


class TargetConfinementTests(SynchronousTestCase):
    """
    Uploads are created below the upload directory's descriptor, never
    through a path a symlink could redirect.
    """

    def setUp(self):
        base = os.path.abspath(self.mktemp())
        self.dir = os.path.join(base, "up")
        self.outside = os.path.join(base, "outside")
        os.makedirs(os.path.join(self.dir, "sub"))
        os.makedirs(self.outside)
        self.target = UploadTarget(self.dir)

    def read(self, *parts):
        with open(os.path.join(*parts), "rb") as f:
            return f.read()

    def test_symlinkOutsideRefused(self):
        """
        If the name goes through a symlinked subdirectory leading outside
        (absolute or relative), the upload is refused with
        L{errors.AccessViolation} and nothing is created outside.
        """
        os.symlink(self.outside, os.path.join(self.dir, "abs"))
        os.symlink("../outside", os.path.join(self.dir, "rel"))
        os.symlink("../../outside", os.path.join(self.dir, "sub", "up"))
        for name in ("abs/x", "rel/x", "sub/up/x"):
            e = self.assertRaises(errors.AccessViolation, self.target.open, name)
            self.assertEqual(str(e), "outside the upload directory")
        self.assertEqual(os.listdir(self.outside), [])

    def test_symlinkInside(self):
        """
        If the name goes through a symlinked subdirectory that stays inside,
        the upload lands in the subdirectory it leads to.
        """
        os.symlink("sub", os.path.join(self.dir, "alias"))
        upload = self.target.open("alias/x")
        upload.write(b"inside")
        upload.commit()
        self.assertEqual(self.read(self.dir, "sub", "x"), b"inside")

    def test_subdirectorySwappedDuringUpload(self):
        """
        If the subdirectory is swapped for a symlink to outside while the
        upload runs, the upload still lands in the directory that was
        opened; nothing is created outside.
        """
        upload = self.target.open("sub/x")
        upload.write(b"first half ")
        os.rename(os.path.join(self.dir, "sub"), os.path.join(self.dir, "sub.old"))
        os.symlink(self.outside, os.path.join(self.dir, "sub"))
        upload.write(b"second half")
        upload.commit()
        self.assertEqual(os.listdir(self.outside), [])
        self.assertEqual(os.listdir(os.path.join(self.dir, "sub.old")), ["x"])
        self.assertEqual(self.read(self.dir, "sub.old", "x"), b"first half second half")

    def test_finalNameBecameSymlink(self):
        """
        If a symlink to outside takes the final name while the upload runs,
        the commit fails with L{errors.FileExists}: the symlink is neither
        followed nor replaced, and the temporary file is removed.
        """
        upload = self.target.open("sub/x")
        upload.write(b"data")
        os.symlink(os.path.join(self.outside, "x"), os.path.join(self.dir, "sub", "x"))
        self.assertRaises(errors.FileExists, upload.commit)
        self.assertEqual(os.listdir(self.outside), [])
        self.assertEqual(os.listdir(os.path.join(self.dir, "sub")), ["x"])
        self.assertTrue(os.path.islink(os.path.join(self.dir, "sub", "x")))

    def test_missingSubdirectoryNotCreated(self):
        """
        If the name's subdirectory does not exist (or is a file), the upload
        is refused and no directory is created.
        """
        with open(os.path.join(self.dir, "file"), "wb") as f:
            f.write(b"f")
        for name in ("new/x", "sub/new/x", "file/x"):
            e = self.assertRaises(errors.AccessViolation, self.target.open, name)
            self.assertEqual(str(e), "no such directory")
        self.assertEqual(sorted(os.listdir(self.dir)), ["file", "sub"])
        self.assertEqual(os.listdir(os.path.join(self.dir, "sub")), [])

    def test_directoryReplaced(self):
        """
        If the upload directory is removed, uploads are refused; once it is
        made again, uploads land in the new one. An upload in flight ends
        in the directory it started in.
        """
        running = self.target.open("early")
        os.rename(self.dir, self.dir + ".old")
        e = self.assertRaises(errors.AccessViolation, self.target.open, "x")
        self.assertEqual(str(e), "no upload directory")
        os.makedirs(self.dir)
        upload = self.target.open("x")
        upload.write(b"new")
        upload.commit()
        running.write(b"old")
        running.commit()
        self.assertEqual(os.listdir(self.dir), ["x"])
        self.assertEqual(self.read(self.dir + ".old", "early"), b"old")

    def test_rescanDoesNotFollowSymlinks(self):
        """
        The quota's count walks the directory without following symlinked
        directories (files outside do not count).
        """
        with open(os.path.join(self.outside, "big"), "wb") as f:
            f.write(b"b" * 1000)
        with open(os.path.join(self.dir, "sub", "small"), "wb") as f:
            f.write(b"s" * 10)
        os.symlink(self.outside, os.path.join(self.dir, "out"))
        self.target.rescan()
        self.assertEqual(self.target.stored, 10)

    def test_descriptors(self):
        """
        An upload holds its file and its directory open until it ends; the
        target holds one descriptor for the upload directory.
        """
        def count():
            return len(os.listdir("/proc/self/fd"))
        gc.collect()  # descriptors other tests left to the garbage
        self.target.handle.current()
        before = count()
        upload = self.target.open("sub/x")
        self.assertEqual(count(), before + 2)
        upload.write(b"x")
        upload.commit()
        self.assertEqual(count(), before)
        self.target.open("y").abort()
        self.assertEqual(count(), before)


class TargetLimitTests(SynchronousTestCase):
    """
    Tests for the quota and the per-client limit of L{UploadTarget}.
    """

    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        with open(os.path.join(self.dir, "old"), "wb") as f:
            f.write(b"o" * 40)
        self.clock = task.Clock()
        self.target = UploadTarget(self.dir, maxTotalBytes=100, maxPerClient=2,
                                   clock=self.clock, rescanInterval=10)

    def test_existingFilesCount(self):
        """
        The files already in the directory count against the quota; kept
        uploads add to it, aborted ones give their bytes back.
        """
        self.assertEqual(self.target.used(), 40)
        upload = self.target.open("a", ("h", 1))
        upload.write(b"a" * 30)
        self.assertEqual((self.target.used(), upload.room()), (70, 30))
        upload.commit()
        dropped = self.target.open("b", ("h", 1))
        dropped.write(b"b" * 20)
        dropped.abort()
        self.assertEqual(self.target.used(), 70)

    def test_quota(self):
        """
        If a write would pass the quota, L{errors.DiskFull}; if the quota
        is used up, a new upload is refused at once.
        """
        upload = self.target.open("a", ("h", 1))
        upload.write(b"a" * 60)
        self.assertRaises(errors.DiskFull, upload.write, b"!")
        upload.commit()
        self.assertRaises(errors.DiskFull, self.target.open, "b", ("h", 1))

    def test_rescanAfterDelete(self):
        """
        If an operator deletes files, their room is given back at the next
        refusal at least C{rescanInterval} seconds after the last scan.
        """
        upload = self.target.open("a", ("h", 1))
        upload.write(b"a" * 60)
        upload.commit()
        os.unlink(os.path.join(self.dir, "old"))
        self.assertRaises(errors.DiskFull, self.target.open, "b", ("h", 1))
        self.clock.advance(10)
        self.target.open("b", ("h", 1)).abort()
        self.assertEqual(self.target.used(), 60)

    def test_perClient(self):
        """
        If an address has C{maxPerClient} uploads in flight, another is
        refused with L{errors.AccessViolation} until one ends.
        """
        first = self.target.open("a", ("h", 1))
        self.target.open("b", ("h", 2))
        self.assertRaises(errors.AccessViolation, self.target.open, "c", ("h", 3))
        self.target.open("c", ("other", 3))
        first.abort()
        first.abort()
        self.target.open("d", ("h", 4))
        self.assertRaises(errors.AccessViolation, self.target.open, "e", ("h", 5))

    def test_names(self):
        """
        If a component is longer than L{MAX_NAME} bytes, the name is
        refused with L{errors.AccessViolation} before anything is created.
        """
        self.target.maxTotalBytes = None
        for name in ["x" * (MAX_NAME + 1), "\u00e9" * (MAX_NAME // 2 + 1), "a/" + "y" * 300]:
            self.assertRaises(errors.AccessViolation, self.target.open, name)
        self.target.open("z" * MAX_NAME).abort()
        self.assertEqual(os.listdir(self.dir), ["old"])


def session(target, name="up.bin", options=None, windowsize=None, maxBytes=1 << 20,
            netascii=False, maxDuration=None):
    negotiated = negotiate(options or {}, Limits(), write=True)
    clock = task.Clock()
    ended = []
    s = WriteSession(target.open(name), negotiated, PEER, clock, timeout=1, retries=2,
                     onEnd=ended.append, path=name, maxBytes=maxBytes, netascii=netascii,
                     maxDuration=maxDuration)
    transport = FakeDatagramPort(s)
    s.makeConnection(transport)
    return s, transport, clock, ended


class WriteSessionTests(SynchronousTestCase):
    """
    Tests for L{WriteSession}.
    """

    def setUp(self):
        self.dir = self.mktemp()
        self.target = UploadTarget(self.dir)

    def read(self, name):
        with open(os.path.join(self.dir, name), "rb") as f:
            return f.read()

    def test_upload(self):
        """
        If the client sends blocks, each is acknowledged; the short one
        ends the upload and the file appears.
        """
        s, transport, clock, ended = session(self.target)
        self.assertEqual(transport.packets()[0][0], wire.Ack(0))
        s.datagramReceived(wire.encodeData(1, b"a" * 512), PEER)
        s.datagramReceived(wire.encodeData(2, b"b" * 10), PEER)
        self.assertEqual([p for p, a in transport.packets()], [wire.Ack(1), wire.Ack(2)])
        self.assertEqual(self.read("up.bin"), b"a" * 512 + b"b" * 10)
        self.assertEqual(ended[0].outcome, "complete")

    def test_transferTimeLimit(self):
        """
        If an upload is still running when its time limit passes, the
        client gets an ERROR, the partial file is dropped and the port
        closes.
        """
        s, transport, clock, ended = session(self.target, maxDuration=5)
        for block in range(1, 7):
            clock.advance(0.9)
            s.datagramReceived(wire.encodeData(block, b"a" * 512), PEER)
        packets = [p for p, a in transport.packets()]
        self.assertIsInstance(packets[-1], wire.Error)
        self.assertEqual(ended[0].outcome, "timeout")
        self.assertFalse(transport.listening)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "up.bin")))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_dally(self):
        """
        If the final DATA comes again (our ACK was lost), the final ACK is
        sent again; then the port closes.
        """
        s, transport, clock, ended = session(self.target)
        s.datagramReceived(wire.encodeData(1, b"x"), PEER)
        transport.packets()
        s.datagramReceived(wire.encodeData(1, b"x"), PEER)
        self.assertEqual(transport.packets()[0][0], wire.Ack(1))
        clock.advance(10)
        self.assertFalse(transport.listening)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_oackAndWindow(self):
        """
        If options were accepted, the OACK replaces ACK 0, and with a window
        only the last block of each window is acknowledged.
        """
        s, transport, clock, ended = session(
            self.target, options={"blksize": "8", "windowsize": "2", "tsize": "20"})
        self.assertEqual(transport.packets()[0][0].options,
                         [("blksize", "8"), ("windowsize", "2"), ("tsize", "20")])
        s.datagramReceived(wire.encodeData(1, b"12345678"), PEER)
        self.assertEqual(transport.packets(), [])
        s.datagramReceived(wire.encodeData(2, b"abcdefgh"), PEER)
        self.assertEqual(transport.packets()[0][0], wire.Ack(2))
        s.datagramReceived(wire.encodeData(4, b"lost3"), PEER)   # gap: ACK 2 once
        s.datagramReceived(wire.encodeData(5, b"lost3"), PEER)
        self.assertEqual([p for p, a in transport.packets()], [wire.Ack(2)])
        s.datagramReceived(wire.encodeData(3, b"wxyz"), PEER)
        self.assertEqual(transport.packets()[0][0], wire.Ack(3))
        self.assertEqual(self.read("up.bin"), b"12345678abcdefghwxyz")

    def test_tooLarge(self):
        """
        If the announced or the received size exceeds the limit, ERROR 3 and
        nothing is kept.
        """
        s, transport, clock, ended = session(self.target, options={"tsize": "5000"},
                                             maxBytes=1000)
        self.assertEqual(transport.packets()[0][0].code, wire.ERR_DISK_FULL)
        s, transport, clock, ended = session(self.target, name="b", maxBytes=600)
        s.datagramReceived(wire.encodeData(1, b"a" * 512), PEER)
        s.datagramReceived(wire.encodeData(2, b"a" * 512), PEER)
        self.assertEqual(transport.packets()[-1][0].code, wire.ERR_DISK_FULL)
        self.assertEqual(os.listdir(self.dir), [])

    def test_tsizeOverQuota(self):
        """
        If the announced size is more than the quota leaves, ERROR 3 at
        once.
        """
        target = UploadTarget(self.mktemp(), maxTotalBytes=1000)
        s, transport, clock, ended = session(target, options={"tsize": "1001"})
        [(error, _)] = transport.packets()
        self.assertEqual((error.code, error.message), (wire.ERR_DISK_FULL,
                                                       "upload quota reached"))
        self.assertEqual(target.used(), 0)

    def test_vanished(self):
        """
        If the client stops sending, the ACK is repeated with backoff, then
        the upload is dropped, the port closed, no timer left.
        """
        s, transport, clock, ended = session(self.target)
        s.datagramReceived(wire.encodeData(1, b"a" * 512), PEER)
        transport.packets()
        clock.pump([1] * 20)
        self.assertEqual([p for p, a in transport.packets()], [wire.Ack(1), wire.Ack(1)])
        self.assertEqual(ended[0].outcome, "timeout")
        self.assertFalse(transport.listening)
        self.assertEqual(os.listdir(self.dir), [])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_netascii(self):
        """
        If the mode is netascii, CR LF becomes LF and CR NUL becomes CR,
        also across blocks.
        """
        s, transport, clock, ended = session(self.target, options={"blksize": "8"},
                                             netascii=True)
        s.datagramReceived(wire.encodeData(1, b"ab\r\ncd\r\r"), PEER)
        s.datagramReceived(wire.encodeData(2, b"\nx\r\x00y"), PEER)
        self.assertEqual(self.read("up.bin"), b"ab\ncd\r\nx\ry")

    def test_unansweredCapped(self):
        """
        If the client negotiated a long timeout and never sends a DATA, the
        OACK is resent after at most C{unansweredTimeout} seconds, at most
        C{unansweredRetries} times and within L{AMPLIFICATION} times the
        request's bytes, and the upload is given up within seconds.
        """
        negotiated = negotiate({"timeout": "255", "blksize": "1024"}, Limits(), write=True)
        clock = task.Clock()
        ended = []
        request = wire.WriteRequest(b"up.bin", "octet", [("timeout", "255"),
                                                         ("blksize", "1024")]).to_wire()
        s = WriteSession(self.target.open("up.bin"), negotiated, PEER, clock, timeout=1,
                         retries=6, onEnd=ended.append, path="up.bin",
                         unansweredTimeout=2.0, unansweredRetries=1,
                         requestBytes=len(request))
        transport = FakeDatagramPort(s)
        s.makeConnection(transport)
        clock.pump([0.5] * 40)
        sent = [p for p, a in transport.packets()]
        self.assertEqual(len(sent), 2)
        self.assertTrue(all(isinstance(p, wire.OptionAck) for p in sent))
        self.assertEqual(s.unansweredBytes, 2 * len(sent[0].to_wire()))
        self.assertLessEqual(s.unansweredBytes, AMPLIFICATION * len(request))
        self.assertEqual(ended[0].outcome, "timeout")
        # 2 s, then 4 s (backoff): given up after 6 s, not 255 x 7.
        self.assertLessEqual(ended[0].ended - ended[0].started, 6.0)
        self.assertEqual(os.listdir(self.dir), [])

    def test_unansweredBudget(self):
        """
        If resending the first datagram would pass L{AMPLIFICATION} times
        the request's bytes, it is not resent.
        """
        negotiated = negotiate({"blksize": "1024", "tsize": "0"}, Limits(), write=True)
        clock = task.Clock()
        s = WriteSession(self.target.open("up.bin"), negotiated, PEER, clock, timeout=1,
                         retries=6, unansweredTimeout=2.0, unansweredRetries=3,
                         requestBytes=10)
        transport = FakeDatagramPort(s)
        s.makeConnection(transport)
        clock.pump([1] * 60)
        self.assertEqual(len(transport.packets()), 1)

    def test_answeredUsesNegotiated(self):
        """
        Once the client has sent a DATA, the timeout it negotiated and the
        full retries apply.
        """
        negotiated = negotiate({"timeout": "10"}, Limits(), write=True)
        clock = task.Clock()
        s = WriteSession(self.target.open("up.bin"), negotiated, PEER, clock, timeout=1,
                         retries=6, unansweredTimeout=2.0, unansweredRetries=1,
                         requestBytes=30)
        transport = FakeDatagramPort(s)
        s.makeConnection(transport)
        self.assertEqual(s._timer.getTime(), 2.0)
        s.datagramReceived(wire.encodeData(1, b"a" * 512), PEER)
        self.assertTrue(s.answered)
        self.assertEqual((s._timer.getTime() - clock.seconds(), s.retriesLeft), (10.0, 6))

    def test_wrongTID(self):
        """
        If DATA comes from another port, that port gets ERROR 5.
        """
        s, transport, clock, ended = session(self.target)
        transport.packets()
        s.datagramReceived(wire.encodeData(1, b"x"), ("127.0.0.1", 1))
        [(packet, addr)] = transport.packets()
        self.assertEqual((packet.code, addr), (5, ("127.0.0.1", 1)))


class ServerWriteTests(SynchronousTestCase):
    """
    WRQ through the dispatcher.
    """

    def test_enabled(self):
        """
        If uploads are enabled, a WRQ starts a write session on a new port;
        a WRQ for an existing name gets ERROR 6.
        """
        updir = self.mktemp()
        config = loadConfig(None, [("tftp.mtu", 0), ("tftp.write.enabled", True)])["tftp"]
        reactor = FakeReactor()
        root = self.mktemp()
        os.makedirs(root)
        server = TFTPServer(ResolverChain([DirectoryResolver(root, True)]), config, reactor,
                            uploads=UploadTarget(updir))
        listen = FakeDatagramPort(server)
        server.makeConnection(listen)
        server.datagramReceived(wire.WriteRequest(b"new.txt").to_wire(), PEER)
        port = reactor.ports[0]
        self.assertEqual(port.packets()[0][0], wire.Ack(0))
        port.protocol.datagramReceived(wire.encodeData(1, b"hi"), PEER)
        with open(os.path.join(updir, "new.txt"), "rb") as f:
            self.assertEqual(f.read(), b"hi")
        server.datagramReceived(wire.WriteRequest(b"new.txt").to_wire(), ("127.0.0.1", 2))
        self.assertEqual(listen.packets()[0][0].code, wire.ERR_FILE_EXISTS)

    def test_reloadKeepsCounts(self):
        """
        If the configuration is reloaded with the same upload directory, the
        target is kept with the new limits (uploads in flight stay counted);
        with another directory, a new target is made.
        """
        from provisioner.tftp.service import _uploads
        updir = self.mktemp()
        overrides = [("tftp.write.enabled", True), ("tftp.write.directory", updir)]
        target = _uploads(loadConfig(None, overrides)["tftp"])
        upload = target.open("x", PEER)
        same = _uploads(loadConfig(None, overrides + [
            ("tftp.write.max_per_client", 1)])["tftp"], target)
        self.assertIs(same, target)
        self.assertEqual(target.maxPerClient, 1)
        self.assertRaises(errors.AccessViolation, target.open, "y", PEER)
        upload.abort()
        other = _uploads(loadConfig(None, [("tftp.write.enabled", True), (
            "tftp.write.directory", self.mktemp())])["tftp"], target)
        self.assertIsNot(other, target)
