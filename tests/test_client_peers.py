# -*- test-case-name: tests.test_client_peers -*-
"""
Integration tests on loopback against the Debian peers, and of the injector
with the Debian clients:

  - C{provisioner fetch} (the library) against tftpd-hpa and atftpd: the
    fallbacks (tftpd-hpa 5.2 knows no windowsize: RFC 2347; atftpd knows
    windowsize but not the adaptive option: RFC 7440; either with no
    options: RFC 1350), byte-exact, block-number rollover included;
  - the injector in provisioner's server with curl and atftp: a request
    without windowsize gets the facility's bytes, one with windowsize gets
    the file, a client marked iPXE gets the file.

tftpd-hpa and atftpd conflict as Debian packages, so neither is needed
installed: L{peerServer} uses the one on C{PATH}, else unpacks the package
with C{apt-get download} and C{dpkg -x} into a cache
(C{$PROVISIONER_PEER_CACHE}, default C{/var/cache/provisioner-peers}),
running C{apt-get update} once if the download fails. Both daemons need
root (tftpd-hpa chroots, both change user).
"""

import glob
import hashlib
import io
import os
import shutil
import socket
import subprocess
import tempfile
import time

from twisted.internet import reactor, utils
from twisted.trial.unittest import TestCase

from provisioner.client.tftp import FetchOptions, fetch
from tests.netlab import requireE2E, startTFTPService

__all__ = ["peerServer", "freePort", "startTftpdHpa", "startAtftpd"]

PEERS = {
    # binary: (package, path inside the package)
    "in.tftpd": ("tftpd-hpa", "usr/sbin/in.tftpd"),
    "atftpd": ("atftpd", "usr/sbin/atftpd"),
}


def peerServer(binary):
    """
    The path of a peer TFTP daemon: on C{PATH}, or unpacked from its Debian
    package into the cache (downloaded on first use).

    @return: the path, or L{None} when it cannot be had.
    """
    found = shutil.which(binary)
    if found:
        return found
    package, inner = PEERS[binary]
    cache = os.environ.get("PROVISIONER_PEER_CACHE", "/var/cache/provisioner-peers")
    target = os.path.join(cache, package)
    path = os.path.join(target, inner)
    if os.path.exists(path):
        return path
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    os.makedirs(target, exist_ok=True)
    work = tempfile.mkdtemp(prefix="provpeer")
    try:
        for attempt in range(2):
            proc = subprocess.run(["apt-get", "download", package], cwd=work,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            debs = glob.glob(os.path.join(work, package + "_*.deb"))
            if proc.returncode == 0 and debs:
                break
            if attempt == 0:
                subprocess.run(["apt-get", "update"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        else:
            return None
        subprocess.run(["dpkg", "-x", debs[0], target], check=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path if os.path.exists(path) else None


def requirePeer(binary):
    """
    The peer's path, or skip (fail under C{PROVISIONER_REQUIRE_E2E=1}).
    """
    requireE2E(root=True)
    path = peerServer(binary)
    if path is None:
        requireE2E(tools=[binary])
    return path


def freePort():
    """
    A UDP port free on 127.0.0.1 right now (the peers cannot bind port 0 and
    tell us).
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _served(root):
    # The daemons drop to another user: the tree must be readable by all.
    os.chmod(root, 0o755)
    for name in os.listdir(root):
        os.chmod(os.path.join(root, name), 0o644)


def startTftpdHpa(binary, root, port, address="127.0.0.1", argvPrefix=()):
    """
    Start tftpd-hpa in the foreground, serving C{root} (chrooted there).

    @return: the L{subprocess.Popen}.
    """
    _served(root)
    return subprocess.Popen(list(argvPrefix) + [
        binary, "-L", "-a", "%s:%d" % (address, port), "-u", "root", "-s", root],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def startAtftpd(binary, root, port, address="127.0.0.1", argvPrefix=()):
    """
    Start atftpd in the foreground, serving C{root}.
    """
    _served(root)
    return subprocess.Popen(list(argvPrefix) + [
        binary, "--daemon", "--no-fork", "--port", str(port), "--bind-address", address,
        "--user", "root", "--group", "root", "--logfile", "/dev/null", root],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class PeerTests(TestCase):
    """
    The client library against tftpd-hpa and atftpd on 127.0.0.1.
    """

    timeout = 180

    def setUp(self):
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)
        self.data = os.urandom(2 * 1024 * 1024 + 333)
        with open(os.path.join(self.root, "image.bin"), "wb") as f:
            f.write(self.data)

    def serve(self, which):
        binary = requirePeer(which)
        port = freePort()
        start = startTftpdHpa if which == "in.tftpd" else startAtftpd
        proc = start(binary, self.root, port)
        self.addCleanup(_stop, proc)
        time.sleep(0.3)  # the client retries its request anyway
        return port

    def get(self, port, options, path="image.bin", data=None):
        sink = io.BytesIO()
        d = fetch(reactor, "127.0.0.1", port, path, sink, options)

        def check(result):
            expected = self.data if data is None else data
            got = sink.getvalue()
            self.assertEqual(len(got), len(expected))
            self.assertEqual(hashlib.sha256(got).digest(), hashlib.sha256(expected).digest())
            return result
        return d.addCallback(check)

    def test_tftpdHpaFallsBackToRFC2347(self):
        """
        If the server is tftpd-hpa (no windowsize, no adaptive option), the
        adaptive client gets blksize and tsize only: a byte-exact RFC 2347
        transfer with window 1.
        """
        port = self.serve("in.tftpd")
        d = self.get(port, FetchOptions())

        def check(result):
            self.assertEqual(result.mode, "rfc2347")
            self.assertEqual(result.windowsize, 1)
            self.assertEqual(result.tsize, len(self.data))
        return d.addCallback(check)

    def test_tftpdHpaRFC1350(self):
        """
        If the client asks no options of tftpd-hpa, it is plain RFC 1350.
        """
        port = self.serve("in.tftpd")
        d = self.get(port, FetchOptions(blksize=None, windowsize=1, adaptive=False,
                                        tsize=False))
        return d.addCallback(lambda r: self.assertEqual(r.mode, "rfc1350"))

    def test_tftpdHpaRollover(self):
        """
        If a transfer from tftpd-hpa has more than 65535 blocks, the block
        number wraps to 0 and the file is byte-exact.
        """
        data = os.urandom(70000 * 16 + 5)
        with open(os.path.join(self.root, "big.bin"), "wb") as f:
            f.write(data)
        port = self.serve("in.tftpd")
        d = self.get(port, FetchOptions(blksize=16), "big.bin", data)
        return d.addCallback(lambda r: self.assertEqual(r.blksize, 16))

    def test_atftpdFallsBackToRFC7440(self):
        """
        If the server is atftpd (windowsize, no adaptive option), the client
        gets a fixed RFC 7440 window, byte-exact.
        """
        port = self.serve("atftpd")
        d = self.get(port, FetchOptions(windowsize=16))

        def check(result):
            self.assertEqual(result.mode, "rfc7440")
            self.assertEqual(result.windowsize, 16)
        return d.addCallback(check)

    def test_atftpdRollover(self):
        """
        If a windowed transfer from atftpd has more than 65535 blocks, the
        file is byte-exact.
        """
        data = os.urandom(70000 * 32 + 7)
        with open(os.path.join(self.root, "big.bin"), "wb") as f:
            f.write(data)
        port = self.serve("atftpd")
        return self.get(port, FetchOptions(blksize=32, windowsize=32), "big.bin", data)

    def test_atftpdRFC1350(self):
        """
        If the client asks no options of atftpd, it is plain RFC 1350.
        """
        port = self.serve("atftpd")
        d = self.get(port, FetchOptions(blksize=None, windowsize=1, adaptive=False,
                                        tsize=False))
        return d.addCallback(lambda r: self.assertEqual(r.mode, "rfc1350"))


class InjectorClientTests(TestCase):
    """
    The injector in provisioner's TFTP server, with curl and atftp.
    """

    timeout = 60

    def setUp(self):
        requireE2E(tools=["curl", "atftp"])
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)
        self.facility = b"FACILITY" * 9000
        self.real = os.urandom(100000)
        program = os.path.join(self.root, "..", "undionly.kpxe")
        with open(program, "wb") as f:
            f.write(self.facility)
        with open(os.path.join(self.root, "pxelinux.0"), "wb") as f:
            f.write(self.real)
        # Finished sessions linger for their dally (curl asks a timeout,
        # and the dally is at most that or the server's DALLY).
        service = startTFTPService(self, [
            ("tftp.root", self.root), ("tftp.timeout", 0.25),
            ("tftp.injector.enabled", True),
            ("tftp.injector.programs", {"pxelinux.0": os.path.abspath(program)}),
            ("tftp.injector.holdoff", 0.0)], linger=1.2)
        self.appliance = service.appliance
        self.port = service.listeningPort
        self.out = os.path.abspath(self.mktemp())

    def curl(self):
        d = utils.getProcessOutputAndValue(
            "curl", ["-s", "-o", self.out, "tftp://127.0.0.1:%d/pxelinux.0" % (self.port,)])
        return d.addCallback(self.read)

    def atftp(self, *options):
        argv = []
        for option in options:
            argv += ["--option", option]
        argv += ["-g", "-r", "pxelinux.0", "-l", self.out, "127.0.0.1", str(self.port)]
        d = utils.getProcessOutputAndValue(shutil.which("atftp"), argv)
        return d.addCallback(self.read)

    def read(self, outcome):
        out, err, code = outcome
        self.assertEqual(code, 0, err)
        with open(self.out, "rb") as f:
            return f.read()

    def test_curlGetsFacility(self):
        """
        If curl (no windowsize) asks for the boot file, it gets the
        facility's bytes.
        """
        d = self.curl()
        return d.addCallback(self.assertEqual, self.facility)

    def test_atftpPlainGetsFacility(self):
        """
        If atftp asks with blksize only (like iPXE: blksize 1432, tsize), it
        gets the facility's bytes.
        """
        d = self.atftp("blksize 1432", "tsize 0")
        return d.addCallback(self.assertEqual, self.facility)

    def test_atftpWindowsizeGetsFile(self):
        """
        If atftp asks with windowsize 4 (like EDK2), it gets the real file.
        """
        d = self.atftp("windowsize 4", "blksize 1468")
        return d.addCallback(self.assertEqual, self.real)

    def test_iPXEClientGetsFile(self):
        """
        If DHCP marked the client as iPXE, curl (no windowsize) gets the real
        file.
        """
        self.appliance.clients.update(mac="02:18:00:00:00:09", ip="127.0.0.1", ipxe=True)
        d = self.curl()
        return d.addCallback(self.assertEqual, self.real)
