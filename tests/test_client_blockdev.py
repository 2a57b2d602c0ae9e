# -*- test-case-name: tests.test_client_blockdev -*-
"""
Tests for C{provisioner receive --output /dev/...}: the image receiver
writing a whole block device (L{provisioner.client.output.OutputFile} on a
device, the state file beside it, the read-back of
L{provisioner.client.imagehash.readBack}), on real loop devices made by the
tests (root and C{losetup}; skipped otherwise, a failure under
C{PROVISIONER_REQUIRE_E2E=1}), and once end to end with the appliance.
"""

import hashlib
import os
import subprocess

from twisted.internet import defer
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from provisioner.client import output, receivecli
from provisioner.client.imagehash import ImageHash, readBack
from provisioner.client.output import OutputFile, ReceiveError, defaultStatePath
from provisioner.client.receiver import Receiver
from provisioner.imagecast import commands
from provisioner.imagecast import pieces as P
from provisioner.imagecast.datagram import DataDatagram
from tests.fakes import FakeReactor
from tests.netlab import requireE2E, run

KEY = b"k" * 32
MiB = 1 << 20
#: what the tests' devices hold before a test writes them
FILL = b"\xa5"


def loopDevice(case, size, fill=FILL):
    """
    Make a loop device of C{size} bytes over a sparse file (or one filled
    with C{fill}) in a temporary directory; it is detached (C{losetup -d})
    when the test ends.

    @return: C{(device path, backing file path)}.
    """
    requireE2E(root=True, tools=("losetup",))
    directory = os.path.abspath(case.mktemp())
    os.makedirs(directory)
    backing = os.path.join(directory, "disk")
    with open(backing, "wb") as f:
        if fill:
            f.write(fill * size)
        else:
            f.truncate(size)
    made = subprocess.run(["losetup", "--find", "--show", backing], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
    if made.returncode != 0:
        reason = "needs loop devices (%s)" % (made.stdout.decode().strip(),)
        if os.environ.get("PROVISIONER_REQUIRE_E2E") == "1":
            raise AssertionError("PROVISIONER_REQUIRE_E2E=1 but this test " + reason)
        raise SkipTest(reason)
    device = made.stdout.decode().strip()
    case.addCleanup(run, ["losetup", "-d", device], check=False)
    return device, backing


def pushPieces(receiver, data=None, size=None):
    """
    What the server sends before its first announcement: the digests of
    the image's pieces (of C{data}; of C{size} zero bytes' worth of
    arbitrary digests when only the size matters).
    """
    size = len(data) if data is not None else size
    pieceSize = P.pieceSizeFor(size)
    if data is not None:
        digests = b"".join(hashlib.sha256(data[o:o + pieceSize]).digest()
                           for o in range(0, size, pieceSize))
    else:
        digests = b"\0" * (P.DIGEST_SIZE * P.pieceCount(size, pieceSize))
    receiver.pieces(session=5, pieceSize=pieceSize, digests=digests)


def readFile(path, size=None, offset=0):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read() if size is None else f.read(size)


def corrupt(backing, offset, data):
    """
    Change the loop device's bytes under it, in its backing file: what the
    device now holds, which its page cache does not know.
    """
    fd = os.open(backing, os.O_RDWR)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


class FakeServer:
    """
    The receiver's control connection: records calls, answers C{{}}.
    """

    def __init__(self):
        self.calls = []

    def callRemote(self, command, **kw):
        self.calls.append((command, kw))
        return defer.succeed({})

    def named(self, command):
        return [kw for c, kw in self.calls if c is command]


class OutputDeviceTests(SynchronousTestCase):
    """
    L{OutputFile} on a loop device.
    """

    def test_sizeWritesReadBack(self):
        """
        If the output is a block device, its size is the device's (not
        C{st_size}, which is 0), preparing for a smaller image neither
        truncates nor allocates it, writes land at their offsets on the
        device, and the image reads back from the device.
        """
        device, backing = loopDevice(self, 4 * MiB)
        out = OutputFile(device)
        self.addCleanup(out.close)
        self.assertTrue(out.isDevice)
        self.assertEqual(out.deviceSize, 4 * MiB)
        size = 3 * MiB + 1234
        out.prepare(size)
        self.assertEqual(out.size, size)
        self.assertEqual(os.path.getsize(backing), 4 * MiB)
        image = os.urandom(size)
        out.write(0, image[:1000])
        out.writeRun(2 * MiB, [image[2 * MiB:2 * MiB + 5000], image[2 * MiB + 5000:]])
        out.write(1000, image[1000:2 * MiB])
        out.datasync()
        self.assertEqual(readFile(backing, size), image)
        self.assertEqual(readFile(backing, offset=size), FILL * (4 * MiB - size))
        self.assertEqual(readBack(device, size).hexdigest(),
                         hashlib.sha256(image).hexdigest())

    def test_readBackFromTheDevice(self):
        """
        If the device's content changes under the page cache after the
        image was written (here in the loop device's backing file), the
        check at the end sees it: it reads the device (C{O_DIRECT}, or the
        fallback that drops the cached pages first), not the cache and not
        the hash of what arrived.
        """
        device, backing = loopDevice(self, 2 * MiB)
        out = OutputFile(device)
        self.addCleanup(out.close)
        size = MiB + 513
        out.prepare(size)
        image = os.urandom(size)
        out.write(0, image)
        hasher = ImageHash(out, lambda f, *a: defer.maybeDeferred(f, *a))
        hasher.prefix.update(image)
        hasher.upTo = size
        good = hashlib.sha256(image).hexdigest()
        self.assertEqual(self.successResultOf(hasher.check(device)), good)
        self.assertEqual(hasher.checkStart(), 0)
        # (a read through the page cache would still give the image: the
        # device's pages written above are cached and clean)
        corrupt(backing, size - 1, b"\0" if image[-1:] != b"\0" else b"\1")
        self.assertNotEqual(self.successResultOf(hasher.check(device)), good)
        corrupt(backing, 0, b"\0" if image[:1] != b"\0" else b"\1")
        self.assertNotEqual(readBack(device, 1, direct=False).digest(),
                            hashlib.sha256(image[:1]).digest())

    def test_tooSmall(self):
        """
        If the device is smaller than the image, preparing it fails with
        one line naming the device, its size and the image's, and no byte
        of the device is written.
        """
        device, backing = loopDevice(self, MiB)
        out = OutputFile(device)
        self.addCleanup(out.close)
        e = self.assertRaises(ReceiveError, out.prepare, 3 * MiB + 7)
        message = str(e)
        self.assertEqual(message, "%s: device too small for the image: the device holds "
                         "1048576 bytes (1.0 MiB), the image is 3145735 bytes (3.0 MiB)" % (
                             device,))
        out.close()
        self.assertEqual(readFile(device), FILL * MiB)
        self.assertEqual(readFile(backing), FILL * MiB)

    def test_tooSmallReportedToTheServer(self):
        """
        If a receiver on a device smaller than the image is announced the
        image, it refuses the announcement, tells the server (C{Leave} with
        the size message) and exits with status 1, without writing a byte.
        """
        device, backing = loopDevice(self, MiB)
        out = OutputFile(device)
        self.addCleanup(out.close)
        receiver = Receiver(FakeReactor(), out, "me",
                            statePath=os.path.abspath(self.mktemp()))
        server = FakeServer()
        receiver.connected(server)
        pushPieces(receiver, size=2 * MiB)
        self.assertRaises(commands.BadRequest, receiver.announce, session=5, name="img",
                          size=2 * MiB, sha256="0" * 64, chunkSize=1000,
                          ranges=[(0, 2 * MiB)], group="239.255.42.1", port=7011, key=KEY,
                          round=1)
        self.assertEqual(self.successResultOf(receiver.result), 1)
        reason = server.named(commands.Leave)[-1]["reason"]
        self.assertIn("device too small", reason)
        self.assertIn(device, reason)
        self.assertEqual(readFile(backing), FILL * MiB)

    def test_exclusive(self):
        """
        If another program holds the device exclusively (as a mount does),
        it is refused with one clear line, before anything is written.
        """
        device, backing = loopDevice(self, MiB)
        held = os.open(device, os.O_RDONLY | os.O_EXCL)
        self.addCleanup(os.close, held)
        e = self.assertRaises(ReceiveError, OutputFile, device)
        self.assertEqual(str(e), "%s is in use (mounted?); refusing to write it" % (device,))

    def test_mounted(self):
        """
        If the device holds a mounted file system, it is refused with the
        same line.
        """
        requireE2E(root=True, tools=("mkfs.ext4", "mount", "unshare"))
        device, backing = loopDevice(self, 8 * MiB, fill=None)
        run(["mkfs.ext4", "-q", device])
        mountpoint = os.path.abspath(self.mktemp())
        os.makedirs(mountpoint)
        # mounted in a mount namespace of its own, which goes with the process
        holder = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             'mount "$0" "$1" && echo mounted && exec sleep 600', device, mountpoint],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

        def unmount():
            holder.kill()
            holder.wait()
            holder.stdout.close()
        self.addCleanup(unmount)
        line = holder.stdout.readline().decode().strip()
        self.assertEqual(line, "mounted")
        before = readFile(backing)
        e = self.assertRaises(ReceiveError, OutputFile, device)
        self.assertEqual(str(e), "%s is in use (mounted?); refusing to write it" % (device,))
        self.assertEqual(readFile(backing), before)


class ReceiverDeviceTests(SynchronousTestCase):
    """
    L{Receiver} writing a loop device, in process (the control channel and
    the reactor faked, the device real).
    """

    def setUp(self):
        self.data = os.urandom(300 * 1000 + 1)
        self.sha = hashlib.sha256(self.data).hexdigest()
        self.device, self.backing = loopDevice(self, MiB)
        self.statePath = os.path.abspath(self.mktemp()) + ".imagecast-state"

    def make(self):
        out = OutputFile(self.device)
        self.addCleanup(out.close)
        reactor = FakeReactor()
        receiver = Receiver(reactor, out, "me", statePath=self.statePath)
        server = FakeServer()
        receiver.connected(server)
        pushPieces(receiver, self.data)
        receiver.announce(session=5, name="img", size=len(self.data), sha256=self.sha,
                          chunkSize=1000, ranges=[(0, len(self.data))], group="239.255.42.1",
                          port=7011, key=KEY, round=1)
        return receiver, reactor, server

    def send(self, receiver, offsets):
        for o in offsets:
            wire = DataDatagram(5, 1, o, self.data[o:o + 1000]).to_wire(KEY)
            receiver.datagramReceived(wire, ("198.18.0.1", 1))

    def test_receiveAndResume(self):
        """
        If a receiver on a device stops halfway, its state file (at the
        path given, not beside the device) lets the next one resume; the
        image then completes, is verified by reading the device back from
        offset 0, and the state file is removed.
        """
        receiver, reactor, server = self.make()
        self.send(receiver, range(0, 150000, 1000))
        receiver._save()
        self.assertTrue(os.path.exists(self.statePath))
        receiver.output.close()

        receiver, reactor, server = self.make()
        self.assertEqual(receiver.resumed, 150000)
        self.send(receiver, range(150000, len(self.data), 1000))
        reactor.advance(0)
        self.assertEqual(self.successResultOf(receiver.result), 0)
        self.assertEqual(server.named(commands.Complete)[-1]["sha256"], self.sha)
        self.assertEqual(receiver.hashedInOrder, 0)
        self.assertEqual(readFile(self.backing, len(self.data)), self.data)
        self.assertEqual(readFile(self.backing, offset=len(self.data)),
                         FILL * (MiB - len(self.data)))
        self.assertFalse(os.path.exists(self.statePath))


class ReadBackErrorTests(SynchronousTestCase):
    """
    The check at the end when the output cannot be read back; no device
    needed.
    """

    def test_shortDevice(self):
        """
        If the read-back ends before the image does (or fails), the check
        fails with a L{ReceiveError} naming the path, which fails the
        receiver (it tells the server) instead of leaving it waiting for a
        digest.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"x" * 5)

        class Device:
            isDevice = True
            size = 10

            def datasync(self):
                pass
        hasher = ImageHash(Device(), lambda f, *a: defer.maybeDeferred(f, *a))
        failure = self.failureResultOf(hasher.check(path), ReceiveError)
        self.assertIn(path, failure.getErrorMessage())

    def test_unreadable(self):
        """
        If the output cannot be opened for the check, the check fails with
        a L{ReceiveError} naming the path.
        """
        out = OutputFile(self.mktemp())
        self.addCleanup(out.close)
        hasher = ImageHash(out, lambda f, *a: defer.maybeDeferred(f, *a))
        missing = self.mktemp()
        failure = self.failureResultOf(hasher.check(missing), ReceiveError)
        self.assertIn(missing, failure.getErrorMessage())


class StatePathTests(SynchronousTestCase):
    """
    Where the state file of a block device goes (L{defaultStatePath},
    C{provisioner receive --state}); no device needed.
    """

    class Device:
        isDevice = True
        path = "/dev/disk/by-id/wwn-0x5000"

    def test_file(self):
        """
        If the output is a regular file, the state file is beside it, as
        before.
        """
        out = OutputFile(self.mktemp())
        self.addCleanup(out.close)
        self.assertEqual(defaultStatePath(out), (out.path + ".imagecast-state", False))

    def test_device(self):
        """
        If the output is a block device, the state file is
        C{<device name>.imagecast-state} in the state directory, which is
        made if need be.
        """
        directory = os.path.join(os.path.abspath(self.mktemp()), "receive")
        self.assertEqual(defaultStatePath(self.Device(), directory),
                         (os.path.join(directory, "wwn-0x5000.imagecast-state"), False))
        self.assertTrue(os.path.isdir(directory))

    def test_deviceFallback(self):
        """
        If the state directory cannot be made or written, the state file
        is in the current directory, and the command says so.
        """
        blocker = os.path.abspath(self.mktemp())
        with open(blocker, "w"):
            pass
        self.patch(output, "STATE_DIRECTORY", os.path.join(blocker, "receive"))
        cwd = os.path.abspath(self.mktemp())
        self.patch(os, "getcwd", lambda: cwd)
        self.assertEqual(defaultStatePath(self.Device()),
                         (os.path.join(cwd, "wwn-0x5000.imagecast-state"), True))

        class Args:
            state = None
        printed = []

        class Err:
            write = printed.append
        self.assertEqual(receivecli.receiveStatePath(Args(), self.Device(), Err()),
                         os.path.join(cwd, "wwn-0x5000.imagecast-state"))
        self.assertEqual(printed, ["provisioner receive: %s is not writable; the state file "
                                   "is %s\n" % (os.path.join(blocker, "receive"),
                                                os.path.join(cwd, "wwn-0x5000.imagecast-state"))])

    def test_option(self):
        """
        If C{--state FILE} is given, that is the state file.
        """
        import argparse
        parser = argparse.ArgumentParser()
        receivecli.addReceiveParser(parser.add_subparsers())
        args = parser.parse_args(["receive", "--server", "h", "--output", "/dev/sdb",
                                  "--state", "/tmp/x.st"])
        self.assertEqual(receivecli.receiveStatePath(args, self.Device(), None), "/tmp/x.st")


class ReceiveEndToEndTests(SynchronousTestCase):
    """
    C{provisioner receive --output /dev/loopN} against the appliance run
    as a user runs it (the image multicast lab of
    L{tests.test_imagecast_e2e}: the appliance in a sender namespace, each
    receiver in its own, with the secret the lab gives it).
    """

    def test_receiveOntoLoopDevice(self):
        """
        If two receivers write loop devices, one large enough and one
        smaller than the image: the first ends with the image on the
        device, says C{sha256 ok} and exits 0, its state file gone; the
        second exits 1 with the size message, is recorded as failed with
        that reason by the appliance, and its device is untouched.
        """
        from tests.test_imagecast_e2e import PROVISIONER, MulticastLab
        size = 3 * MiB + 4321
        big, bigBacking = loopDevice(self, 8 * MiB)
        small, smallBacking = loopDevice(self, 2 * MiB)
        lab = MulticastLab(self, receivers=2, size=size)
        with open(lab.image, "rb") as f:
            image = f.read()
        procs = {}
        for name, device, host in (("big", big, lab.lab.hosts[1]),
                                   ("small", small, lab.lab.hosts[2])):
            log = open(os.path.join(lab.dir, name + ".log"), "wb")
            self.addCleanup(log.close)
            state = os.path.join(lab.dir, name + ".imagecast-state")
            procs[name] = (host.popen(PROVISIONER + [
                "receive", "--server", lab.sender.ip, "--output", device, "--state", state,
                "--id", name, "-q", "--timeout", "30"] + lab.secretArgs(name), env=lab.env,
                stdout=log,
                stderr=subprocess.STDOUT), state)
        send, session = lab.send(minReceivers=2)
        status, card, err = lab.finish(send)

        def logOf(name):
            return readFile(os.path.join(lab.dir, name + ".log")).decode(errors="replace")
        proc, state = procs["big"]
        self.assertEqual(proc.wait(60), 0, logOf("big"))
        self.assertIn("%s: sha256 ok" % (big,), logOf("big"))
        self.assertEqual(readFile(big, size), image)
        self.assertEqual(readFile(bigBacking, offset=size), FILL * (8 * MiB - size))
        self.assertFalse(os.path.exists(state))

        proc, state = procs["small"]
        self.assertEqual(proc.wait(60), 1, logOf("small"))
        message = ("%s: device too small for the image: the device holds 2097152 bytes "
                   "(2.0 MiB), the image is %d bytes (3.0 MiB)" % (small, size))
        self.assertIn("provisioner receive: error: " + message, logOf("small"))
        self.assertEqual(card["members"]["small"]["state"], "failed")
        self.assertIn("device too small", card["members"]["small"]["reason"])
        self.assertEqual(card["members"]["big"]["state"], "complete")
        self.assertEqual(status, 1, err)
        self.assertEqual(readFile(smallBacking), FILL * 2 * MiB)

