"""
End-to-end TFTP: the appliance run as a user runs it (twistd in a
subprocess, port 0 on 127.0.0.1) and the Debian clients (curl, tftp-hpa's
C{tftp}, atftp), byte-exact by sha256. Includes block-number rollover on a
300 MiB file, IPv6, uploads, and SIGHUP during a transfer.
"""

import os
import re
import signal
import subprocess
import time

from twisted.trial.unittest import TestCase

from tests.netlab import Appliance, requireE2E, sha256File

MiB = 1 << 20
sha256 = sha256File


def randomFile(path, size):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 16 * MiB)
            f.write(os.urandom(n))
            left -= n
    return path


def run(argv, timeout=300, **kw):
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=timeout, **kw)
    if proc.returncode != 0:
        raise AssertionError("%s failed (%d): %s" % (
            " ".join(argv), proc.returncode, proc.stdout.decode(errors="replace")))
    return proc.stdout.decode(errors="replace")


class ClientMixin:
    tools = ()
    extraConfig = ""

    def setUp(self):
        requireE2E(tools=self.tools)
        self.work = os.path.abspath(self.mktemp())
        self.root = os.path.join(self.work, "root")
        os.makedirs(self.root)
        self.out = os.path.join(self.work, "out")
        os.makedirs(self.out)
        self.small = randomFile(os.path.join(self.root, "small.bin"), 3 * MiB + 17)
        self.app = Appliance(self.work, self.config())
        self.addCleanup(self.app.stop)
        self.app.start()
        self.port = int(self.app.waitLog(r"TFTP listening on \S+ port (\d+)").group(1))

    def config(self, root=None):
        return ("tftp:\n  address: 127.0.0.1\n  port: 0\n  root: %s\n%s" % (
            root or self.root, self.extraConfig))

    def url(self, name, host="127.0.0.1"):
        return "tftp://%s:%d/%s" % (host, self.port, name)

    def assertSame(self, a, b):
        self.assertEqual(sha256(a), sha256(b))

    def atftp(self, name, out, *options, port=None):
        argv = ["atftp"]
        for option in options:
            argv += ["--option", option]
        argv += ["-g", "-r", name, "-l", out, "127.0.0.1", str(port or self.port)]
        return run(argv)


class CurlTests(ClientMixin, TestCase):
    """
    curl's TFTP client.
    """

    tools = ("curl",)

    def test_default(self):
        """
        If curl fetches with its defaults (blksize 512, tsize), the file
        arrives byte-exact.
        """
        out = os.path.join(self.out, "a")
        run(["curl", "-sS", "-o", out, self.url("small.bin")])
        self.assertSame(out, self.small)

    def test_blksize(self):
        """
        If curl asks for blksize 1468, the file arrives byte-exact and the
        log line shows the block size.
        """
        out = os.path.join(self.out, "b")
        run(["curl", "-sS", "--tftp-blksize", "1468", "-o", out, self.url("small.bin")])
        self.assertSame(out, self.small)
        self.app.waitLog(r"read small.bin \S+ complete: %d bytes .* blksize=1468" % (
            os.path.getsize(self.small),))

    def test_notFound(self):
        """
        If the file is missing, curl exits with its TFTP-not-found status
        (68) and the server logs it.
        """
        proc = subprocess.run(["curl", "-sS", "-o", os.devnull, self.url("missing")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        self.assertEqual(proc.returncode, 68, proc.stdout)
        self.app.waitLog(r"read missing from .*: not found")

    def test_traversal(self):
        """
        If curl asks for a path outside the root, it is refused and the
        refusal is logged.
        """
        proc = subprocess.run(["curl", "-sS", "--path-as-is", "-o", os.devnull,
                               self.url("../../../../etc/passwd")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        self.assertNotEqual(proc.returncode, 0)
        self.app.waitLog(r"refused read of .*etc/passwd")

    def test_virtualFileFromDisk(self):
        """
        If files sit in subdirectories, they are reachable by their path.
        """
        os.makedirs(os.path.join(self.root, "efi", "boot"))
        f = randomFile(os.path.join(self.root, "efi", "boot", "bootx64.efi"), 100000)
        out = os.path.join(self.out, "c")
        run(["curl", "-sS", "-o", out, self.url("efi/boot/bootx64.efi")])
        self.assertSame(out, f)


class IPv6Tests(ClientMixin, TestCase):
    """
    The server on ::1.
    """

    tools = ("curl",)

    def config(self, root=None):
        return "tftp:\n  address: '::1'\n  port: 0\n  root: %s\n" % (root or self.root,)

    def setUp(self):
        import socket
        try:
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            s.bind(("::1", 0))
            s.close()
        except OSError:
            requireE2E(tools=["IPv6 on loopback (::1)"])
        ClientMixin.setUp(self)

    def test_curl(self):
        """
        If curl fetches over IPv6, the file arrives byte-exact.
        """
        out = os.path.join(self.out, "v6")
        run(["curl", "-sS", "--tftp-blksize", "1428", "-o", out,
             self.url("small.bin", host="[::1]")])
        self.assertSame(out, self.small)


class TftpHpaTests(ClientMixin, TestCase):
    """
    tftp-hpa's C{tftp} client.
    """

    tools = ("tftp",)
    extraConfig = "  write:\n    enabled: true\n    directory: %s\n"

    def config(self, root=None):
        self.upload = os.path.join(os.path.abspath(self.mktemp()), "up")
        return ClientMixin.config(self, root) % (self.upload,)

    def tftp(self, *command, mode="binary"):
        return run(["tftp", "-m", mode, "127.0.0.1", str(self.port), "-c"] +
                   list(command))

    def test_get(self):
        """
        If tftp-hpa fetches in binary mode, the file arrives byte-exact.
        """
        out = os.path.join(self.out, "h")
        self.tftp("get", "small.bin", out)
        self.assertSame(out, self.small)

    def test_netascii(self):
        """
        If tftp-hpa fetches a text file in netascii mode, it gets back the
        same text (converted to CR LF on the wire and back).
        """
        text = b"".join(b"line %d\n" % (i,) for i in range(5000)) + b"bare\rcr\n"
        with open(os.path.join(self.root, "t.txt"), "wb") as f:
            f.write(text)
        out = os.path.join(self.out, "t.txt")
        self.tftp("get", "t.txt", out, mode="netascii")
        with open(out, "rb") as f:
            self.assertEqual(f.read(), text)

    def test_put(self):
        """
        If uploads are enabled, tftp-hpa's put lands in the upload
        directory; a second put of the same name is refused and the first
        file stays.
        """
        self.tftp("put", self.small, "up.bin")
        self.assertSame(os.path.join(self.upload, "up.bin"), self.small)
        other = randomFile(os.path.join(self.work, "other"), 1000)
        proc = subprocess.run(["tftp", "-m", "binary", "127.0.0.1", str(self.port), "-c",
                               "put", other, "up.bin"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=60)
        self.assertIn(b"exists", proc.stdout.lower())
        self.assertSame(os.path.join(self.upload, "up.bin"), self.small)
        self.assertEqual(os.listdir(self.upload), ["up.bin"])


class AtftpTests(ClientMixin, TestCase):
    """
    atftp with options.
    """

    tools = ("atftp",)

    def test_options(self):
        """
        If atftp asks for blksize, windowsize, tsize and timeout, the OACK
        grants them and the file arrives byte-exact.
        """
        out = os.path.join(self.out, "o")
        self.atftp("small.bin", out, "blksize 1428", "windowsize 8", "tsize 0", "timeout 2")
        self.assertSame(out, self.small)
        self.app.waitLog(r"read small.bin \S+ complete: .* blksize=1428 windowsize=8")

    def test_windows(self):
        """
        If atftp asks for windows of 1, 16, 64 and 200 (clamped to 64) with
        a big blksize, every fetch is byte-exact.
        """
        for i, (window, blksize) in enumerate([(1, 1468), (16, 1468), (64, 8192),
                                               (200, 65464)]):
            out = os.path.join(self.out, "w%d" % (i,))
            self.atftp("small.bin", out, "blksize %d" % (blksize,),
                       "windowsize %d" % (window,))
            self.assertSame(out, self.small)
        self.app.waitLog(r"blksize=65464 windowsize=64")

    def test_emptyAndExact(self):
        """
        If the file is empty or an exact multiple of blksize, it arrives
        whole (a final empty DATA).
        """
        for name, size in [("empty", 0), ("exact", 512 * 64)]:
            f = randomFile(os.path.join(self.root, name), size)
            out = os.path.join(self.out, name)
            self.atftp(name, out, "windowsize 4")
            self.assertSame(out, f)


class RolloverTests(ClientMixin, TestCase):
    """
    300 MiB at blksize 512: 614400 blocks, the 16-bit block number wraps 9
    times.
    """

    tools = ("atftp",)
    timeout = 900

    def setUp(self):
        ClientMixin.setUp(self)
        self.big = randomFile(os.path.join(self.root, "big.bin"), 300 * MiB)

    def test_lockstep(self):
        """
        If atftp fetches 300 MiB at blksize 512, one block at a time, the
        file arrives byte-exact.
        """
        out = os.path.join(self.out, "big1")
        self.atftp("big.bin", out, "blksize 512")
        self.assertSame(out, self.big)
        os.unlink(out)

    def test_windowed(self):
        """
        If atftp fetches 300 MiB at blksize 512 with windowsize 16, the file
        arrives byte-exact.
        """
        out = os.path.join(self.out, "big16")
        self.atftp("big.bin", out, "blksize 512", "windowsize 16")
        self.assertSame(out, self.big)
        os.unlink(out)


class ReloadTests(ClientMixin, TestCase):
    """
    SIGHUP while a transfer runs.
    """

    tools = ("atftp", "curl")
    timeout = 600

    def test_sighup(self):
        """
        If the configuration changes (new root, new limits) and SIGHUP
        arrives mid-transfer, the transfer completes byte-exact with what
        it had, and new requests see the new root.
        """
        big = randomFile(os.path.join(self.root, "big.bin"), 120 * MiB)
        newRoot = os.path.join(self.work, "root2")
        os.makedirs(newRoot)
        other = randomFile(os.path.join(newRoot, "other.bin"), 100000)
        out = os.path.join(self.out, "big")
        client = subprocess.Popen(
            ["atftp", "--option", "blksize 512", "-g", "-r", "big.bin", "-l", out,
             "127.0.0.1", str(self.port)], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT)
        self.addCleanup(lambda: client.poll() is None and client.kill())
        time.sleep(0.5)
        self.app.writeConfig(self.config(newRoot) + "  windowsize_max: 4\n")
        self.app.signal(signal.SIGHUP)
        self.app.waitLog(r"TFTP reconfigured: root %s" % (re.escape(newRoot),))
        running = client.poll() is None
        self.assertEqual(client.wait(300), 0, client.stdout.read())
        self.assertSame(out, big)
        self.assertTrue(running, "the transfer ended before SIGHUP: test proves nothing")
        out2 = os.path.join(self.out, "other")
        run(["curl", "-sS", "-o", out2, self.url("other.bin")])
        self.assertSame(out2, other)


class InterfaceTests(ClientMixin, TestCase):
    """
    C{tftp.interface}: SO_BINDTODEVICE, and the MTU read from it.
    """

    tools = ("atftp",)

    def setUp(self):
        requireE2E(root=True)
        ClientMixin.setUp(self)

    def config(self, root=None):
        return ClientMixin.config(self, root) + "  interface: lo\n  mtu: 1500\n"

    def test_boundAndClamped(self):
        """
        If the server is bound to lo with an MTU of 1500, it serves over lo,
        and a request for blksize 8192 is answered with 1468 (MTU - 32).
        """
        out = os.path.join(self.out, "i")
        self.atftp("small.bin", out, "blksize 8192", "windowsize 4")
        self.assertSame(out, self.small)
        self.app.waitLog(r"TFTP listening on 127.0.0.1 port \d+ \(interface lo\)")
        self.app.waitLog(r"read small.bin \S+ complete: .* blksize=1468 windowsize=4")
