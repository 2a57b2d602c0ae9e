# -*- test-case-name: tests.test_images_e2e -*-
"""
End-to-end: the appliance run as a user would (C{twistd -n provisioner
--config FILE} as a subprocess, everything on 127.0.0.1 with ports picked by
the kernel), real file operations in its watched directory, and the Debian
clients curl and atftp:

  - a 200 MiB file copied slowly into the directory is never served
    partial, then served whole;
  - an image replaced by rename during an HTTP download and during a TFTP
    download: both downloads are byte-exact with the old version;
  - a deleted image is no longer served;
  - a restart does not hash unchanged images again;
  - curl with Range requests and HEAD;
  - the directory against a local user (issue 14, finding 8): a symlink
    leading outside is served by neither HTTP nor TFTP, FIFOs block
    nothing, 20,000 files at once overflow inotify and are all catalogued
    by the rescan that follows, with no descriptor held per image.
"""

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time

from twisted.trial.unittest import TestCase

from tests.netlab import LoopbackAppliance, requireE2E, sha256File, waitFor

MiB = 1 << 20


def writeRandom(path, size, seed):
    """
    Write C{size} deterministic pseudo-random bytes (fast) and return their
    sha256.
    """
    import random
    rng = random.Random(seed)
    block = rng.randbytes(MiB)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        i = 0
        while left:
            chunk = block[i % 97:] + block[:i % 97]
            chunk = chunk[:min(MiB, left)]
            f.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
            i += 1
    return digest.hexdigest()


# Writes argv[2] bytes to argv[1] in 1 MiB pieces, pausing between them,
# keeping the file open the whole time (a slow cp).
SLOW_COPY = r"""
import sys, time
path, size, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
block = bytes(range(256)) * 4096
with open(path, "wb") as f:
    left = size
    while left:
        n = min(len(block), left)
        f.write(block[:n])
        f.flush()
        left -= n
        time.sleep(pause)
"""


class ImagesEndToEndTests(TestCase):
    """
    The images and HTTP services as a user runs them.
    """

    timeout = 600

    def setUp(self):
        requireE2E(tools=["curl"])
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.appliance = LoopbackAppliance(self.dir)
        self.addCleanup(self.appliance.stop)
        self.appliance.start()

    def out(self, name):
        return os.path.join(self.dir, name)

    def test_slowCopyNeverServedPartial(self):
        """
        If a 200 MiB file is copied slowly into the watched directory while
        a client keeps asking for it, every answer is 404 until it is
        complete and hashed, then it is served whole and byte-exact.
        """
        size = 200 * MiB
        target = os.path.join(self.appliance.images, "big.img")
        copier = subprocess.Popen([sys.executable, "-c", SLOW_COPY, target, str(size),
                                   "0.01"])
        self.addCleanup(lambda: copier.poll() is None and copier.kill())
        answers = []
        while copier.poll() is None:
            code, got = self.appliance.curl("images/big.img", self.out("partial"))
            answers.append(code)
            if code != 404:
                self.assertEqual((code, got), (200, size), "served while being written")
        self.assertEqual(copier.returncode, 0)
        self.assertGreater(len(answers), 3)
        self.assertTrue(waitFor(lambda: self.appliance.catalogued("big.img"), 120),
                        self.appliance.log())
        code, got = self.appliance.curl("images/big.img", self.out("whole"))
        self.assertEqual((code, got), (200, size))
        self.assertEqual(sha256File(self.out("whole")), sha256File(target))

    def test_rangesAndHead(self):
        """
        If curl asks for byte ranges, it gets exactly those bytes; HEAD
        gives the length.
        """
        path = os.path.join(self.appliance.images, "k.efi")
        writeRandom(path, 3 * MiB + 17, 1)
        self.assertTrue(waitFor(lambda: self.appliance.catalogued("k.efi"), 30))
        with open(path, "rb") as f:
            data = f.read()
        self.assertEqual(self.appliance.curl("images/k.efi", self.out("r1"), "-r", "0-99"),
                         (206, 100))
        with open(self.out("r1"), "rb") as f:
            self.assertEqual(f.read(), data[:100])
        self.appliance.curl("images/k.efi", self.out("r2"), "-r", "%d-" % (3 * MiB,))
        with open(self.out("r2"), "rb") as f:
            self.assertEqual(f.read(), data[3 * MiB:])
        result = subprocess.run(["curl", "-sI", self.appliance.url("images/k.efi")],
                                stdout=subprocess.PIPE)
        self.assertIn(b"Content-Length: %d" % (len(data),), result.stdout)
        # Resume a partial download the way curl -C does.
        with open(self.out("r3"), "wb") as f:
            f.write(data[:1000])
        subprocess.run(["curl", "-s", "-C", "-", "-o", self.out("r3"),
                        self.appliance.url("images/k.efi")], check=True)
        with open(self.out("r3"), "rb") as f:
            self.assertEqual(f.read(), data)

    def test_renameReplaceDuringHTTPDownload(self):
        """
        If an image is replaced by renaming a new file over it while a slow
        HTTP download runs, the download is byte-exact with the old
        version; later downloads get the new one.
        """
        path = os.path.join(self.appliance.images, "disk.img")
        oldSHA = writeRandom(path, 64 * MiB, 2)
        self.assertTrue(waitFor(lambda: self.appliance.catalogued("disk.img", oldSHA), 60))
        download = subprocess.Popen(["curl", "-s", "--limit-rate", "16M", "-o",
                                     self.out("old"), self.appliance.url("images/disk.img")])
        self.addCleanup(lambda: download.poll() is None and download.kill())
        self.assertTrue(waitFor(lambda: os.path.exists(self.out("old")) and
                                os.path.getsize(self.out("old")) > MiB, 30))
        newSHA = writeRandom(path + ".tmp", 32 * MiB, 3)
        os.rename(path + ".tmp", path)
        self.assertTrue(waitFor(lambda: self.appliance.catalogued("disk.img", newSHA), 60))
        self.assertIsNone(download.poll(), "the download ended before the replacement")
        self.assertEqual(download.wait(120), 0)
        self.assertEqual(sha256File(self.out("old")), oldSHA)
        self.appliance.curl("images/disk.img", self.out("new"))
        self.assertEqual(sha256File(self.out("new")), newSHA)

    def test_renameReplaceDuringTFTPDownload(self):
        """
        If an image is replaced by rename while a TFTP download of it runs,
        the download is byte-exact with the old version.
        """
        requireE2E(tools=["atftp"])
        if self.appliance.tftpPort is None:
            self.fail("TFTP did not start:\n" + self.appliance.log())
        path = os.path.join(self.appliance.images, "tftp.img")
        oldSHA = writeRandom(path, 48 * MiB, 4)
        self.assertTrue(waitFor(lambda: self.appliance.catalogued("tftp.img", oldSHA), 60))
        download = subprocess.Popen(
            ["atftp", "--option", "blksize 1024", "--get", "-r", "images/tftp.img", "-l",
             self.out("tftp-old"), "127.0.0.1", str(self.appliance.tftpPort)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.addCleanup(lambda: download.poll() is None and download.kill())
        self.assertTrue(waitFor(lambda: os.path.exists(self.out("tftp-old")) and
                                os.path.getsize(self.out("tftp-old")) > 256 * 1024, 30))
        replacedWhileRunning = download.poll() is None
        newSHA = writeRandom(path + ".tmp", 8 * MiB, 5)
        os.rename(path + ".tmp", path)
        output, _ = download.communicate(timeout=300)
        self.assertEqual(download.returncode, 0, output)
        self.assertTrue(replacedWhileRunning, "the download ended before the replacement")
        self.assertEqual(sha256File(self.out("tftp-old")), oldSHA)
        self.assertTrue(waitFor(lambda: self.appliance.catalogued("tftp.img", newSHA), 60))

    def test_deleteAndRestartWithoutRehash(self):
        """
        If an image is deleted it is no longer served; after a restart the
        unchanged images are restored without hashing them again.
        """
        keep = os.path.join(self.appliance.images, "keep.iso")
        gone = os.path.join(self.appliance.images, "gone.iso")
        writeRandom(keep, 5 * MiB, 6)
        writeRandom(gone, MiB, 7)
        self.assertTrue(waitFor(lambda: self.appliance.catalogued("keep.iso") and
                                self.appliance.catalogued("gone.iso"), 30))
        self.assertEqual(self.appliance.curl("images/gone.iso", self.out("g"))[0], 200)
        os.unlink(gone)
        self.assertTrue(waitFor(lambda: "image gone.iso removed" in self.appliance.log(), 30))
        self.assertEqual(self.appliance.curl("images/gone.iso", self.out("g"))[0], 404)
        self.appliance.stop()
        before = self.appliance.log().count("catalogued:")
        self.appliance.start()
        self.assertIn("1 images restored without hashing", self.appliance.log())
        self.assertEqual(self.appliance.log().count("catalogued:"), before)
        code, size = self.appliance.curl("images/keep.iso", self.out("k"))
        self.assertEqual((code, size), (200, 5 * MiB))
        self.assertEqual(sha256File(self.out("k")), sha256File(keep))


def _openDescriptors(pid):
    return len(os.listdir("/proc/%d/fd" % (pid,)))


class ImageDirectoryHardeningTests(TestCase):
    """
    The watched directory against a local user who can write to it (issue
    14, finding 8): a symlink leading outside, FIFOs, and 20,000 files at
    once (an inotify queue overflow).
    """

    timeout = 900

    def setUp(self):
        requireE2E(tools=["curl"])
        self.dir = os.path.abspath(self.mktemp())
        self.staging = os.path.join(self.dir, "staging")
        self.outside = os.path.join(self.dir, "outside")
        os.makedirs(self.staging)
        os.makedirs(self.outside)
        self.secret = os.path.join(self.outside, "shadow")
        with open(self.secret, "wb") as f:
            f.write(b"root:$6$not-for-clients\n")
        self.appliance = LoopbackAppliance(self.dir)
        self.addCleanup(self.appliance.stop)
        self.appliance.start()

    def out(self, name):
        return os.path.join(self.dir, name)

    def renameIn(self, name, make):
        staged = os.path.join(self.staging, name)
        make(staged)
        os.rename(staged, os.path.join(self.appliance.images, name))

    def tftp(self, name, output):
        """
        Fetch C{name} with atftp; return C{(exit status, what it printed)}.
        """
        result = subprocess.run(
            ["atftp", "--get", "-r", name, "-l", output, "127.0.0.1",
             str(self.appliance.tftpPort)], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, timeout=60)
        return result.returncode, result.stdout.decode(errors="replace")

    def fullLog(self):
        """
        The log with the parts twistd rotated away (every 1 MB).
        """
        parts = []
        for n in range(20, 0, -1):
            path = "%s.%d" % (self.appliance.logPath, n)
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    parts.append(f.read())
        return "".join(parts) + self.appliance.log()

    def cataloguedCount(self):
        """
        How many images the running appliance's catalogue has (JSON API).
        """
        import json
        import urllib.request
        try:
            with urllib.request.urlopen(self.appliance.url("api/v1/images"),
                                        timeout=30) as r:
                return len(json.load(r)["images"])
        except (OSError, ValueError):
            return -1

    def assertStopsOnSIGTERM(self):
        """
        SIGTERM stops the appliance within seconds, as a clean shutdown.
        """
        process = self.appliance.process
        started = time.monotonic()
        self.appliance.stop(timeout=30)
        self.assertLess(time.monotonic() - started, 29, "SIGTERM did not stop it")
        self.assertNotEqual(process.returncode, -signal.SIGKILL)
        self.assertIn("Server Shut Down", self.appliance.log()[-2000:],
                      "exit status %s:\n%s" % (process.returncode,
                                                self.appliance.log()[-3000:]))

    def test_symlinkOutsideNotServed(self):
        """
        If a symlink to a file outside the directory is renamed into it, or
        renamed over a catalogued image, it is not catalogued and neither
        HTTP nor TFTP serves it; a symlink that stays inside is served.
        """
        requireE2E(tools=["atftp"])
        images = self.appliance.images
        os.makedirs(os.path.join(images, "real"))
        writeRandom(os.path.join(images, "real", "kernel"), 4096, 11)
        writeRandom(os.path.join(images, "victim.efi"), 4096, 12)
        self.assertTrue(waitFor(lambda: self.appliance.catalogued("victim.efi") and
                                self.appliance.catalogued("real/kernel"), 30))
        self.renameIn("evil.img", lambda p: os.symlink(self.secret, p))
        self.renameIn("victim.efi", lambda p: os.symlink("../outside/shadow", p))
        self.renameIn("good.img", lambda p: os.symlink("real/kernel", p))
        # Wait until the appliance has dealt with all three, whatever it did.
        self.assertTrue(waitFor(lambda: self.appliance.catalogued("good.img") and
                                self.appliance.log().count("image victim.efi ") >= 2 and
                                "image evil.img " in self.appliance.log(), 30),
                        self.appliance.log()[-3000:])
        for name in ("evil.img", "victim.efi"):
            self.assertEqual(self.appliance.curl("images/" + name, self.out("h-" + name))[0],
                             404)
            code, said = self.tftp("images/" + name, self.out("t-" + name))
            self.assertNotEqual(code, 0, said)
            for path in (self.out("h-" + name), self.out("t-" + name)):
                if os.path.exists(path):
                    with open(path, "rb") as f:
                        self.assertNotIn(b"not-for-clients", f.read())
        self.assertEqual(self.appliance.curl("images/good.img", self.out("good")), (200, 4096))
        self.assertEqual(sha256File(self.out("good")),
                         sha256File(os.path.join(images, "real", "kernel")))
        self.assertEqual(self.tftp("images/good.img", self.out("tgood"))[0], 0)
        self.assertEqual(sha256File(self.out("tgood")), sha256File(self.out("good")))
        self.assertIn("image evil.img refused: it leads outside", self.appliance.log())

    def test_fifosDoNotBlock(self):
        """
        If two FIFOs are renamed into the directory, neither is opened, a
        regular image added after them is catalogued and served, and SIGTERM
        still stops the appliance.
        """
        self.renameIn("a.img", os.mkfifo)
        self.renameIn("b.img", os.mkfifo)
        time.sleep(1)  # the appliance sees them first
        path = os.path.join(self.appliance.images, "k.efi")
        sha = writeRandom(path, 2 * MiB, 13)
        self.assertTrue(waitFor(lambda: self.appliance.catalogued("k.efi", sha), 30),
                        self.appliance.log()[-3000:])
        self.assertEqual(self.appliance.curl("images/k.efi", self.out("k")), (200, 2 * MiB))
        self.assertEqual(sha256File(self.out("k")), sha)
        self.assertEqual(self.appliance.curl("images/a.img", self.out("a"))[0], 404)
        self.assertIn("image a.img skipped: not a regular file (FIFO)", self.appliance.log())
        for name in ("a.img", "b.img"):
            # Nobody has it open for reading.
            with self.assertRaises(OSError) as caught:
                os.open(os.path.join(self.appliance.images, name),
                        os.O_WRONLY | os.O_NONBLOCK)
            self.assertEqual(caught.exception.errno, errno.ENXIO)
        self.assertStopsOnSIGTERM()

    def test_twentyThousandFiles(self):
        """
        If 20,000 files are created while the appliance cannot read its
        inotify queue (stopped with SIGSTOP, so that the queue overflows
        whatever the machine's speed), the overflow is logged, the rescan
        that follows catalogues every file, the appliance holds about as
        many descriptors as before, and it still serves over HTTP and TFTP.
        """
        with open("/proc/sys/fs/inotify/max_queued_events") as f:
            queued = int(f.read())
        count = max(20000, queued // 2 + 2000)  # two events per file
        pid = self.appliance.process.pid
        baseline = _openDescriptors(pid)
        os.kill(pid, signal.SIGSTOP)
        self.addCleanup(lambda: self.appliance.process.poll() is None and
                        os.kill(pid, signal.SIGCONT))
        images = self.appliance.images
        try:
            for i in range(count):
                fd = os.open(os.path.join(images, "f%05d.img" % (i,)),
                             os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                os.write(fd, b"%d\n" % (i,))
                os.close(fd)
        finally:
            os.kill(pid, signal.SIGCONT)
        started = time.monotonic()
        # Well before the periodic rescan (images.rescan_interval, 300 s).
        self.assertTrue(waitFor(lambda: self.cataloguedCount() >= count, 240, interval=1),
                        "%d of %d catalogued" % (self.cataloguedCount(), count))
        took = time.monotonic() - started
        self.assertEqual(self.fullLog().count("inotify queue overflow below"), 1)
        peak = _openDescriptors(pid)
        self.assertLessEqual(peak, baseline + 8, (baseline, peak))
        code, size = self.appliance.curl("images/f12345.img", self.out("h"))
        self.assertEqual((code, size), (200, 6))
        if self.appliance.tftpPort is not None and os.path.exists("/usr/bin/atftp"):
            code, said = self.tftp("images/f19999.img", self.out("t"))
            self.assertEqual(code, 0, said)
            with open(self.out("t"), "rb") as f:
                self.assertEqual(f.read(), b"19999\n")
        self.assertLessEqual(_openDescriptors(pid), baseline + 8)
        self.assertLess(took, 240)
        self.assertStopsOnSIGTERM()
