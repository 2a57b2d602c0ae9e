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
  - curl with Range requests and HEAD.
"""

import hashlib
import os
import subprocess
import sys

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
