# -*- test-case-name: tests.test_client_loopback -*-
"""
Integration tests on loopback: C{provisioner fetch}'s library against
provisioner's own TFTP server (adaptive, msftwindow, plain RFC 7440, the
injector), with real sockets on 127.0.0.1 and port 0. Losses are made on
the client's side by dropping chosen DATA blocks before the client sees
them, so the outcome does not depend on timing.
"""

import hashlib
import io
import os

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from provisioner.client.tftp import FetchOptions, fetch
from tests.netlab import startTFTPService

#: the size of the image fetched (made at each test's setUp, not at import)
SIZE = 3 * 1024 * 1024 + 77


class LossyReactor:
    """
    The real reactor, except that the client's port drops the DATA blocks
    C{drop(block, seen)} says (C{seen}: how often that wire block arrived).
    """

    def __init__(self, drop):
        self._drop = drop

    def __getattr__(self, name):
        return getattr(reactor, name)

    def listenUDP(self, port, protocol, **kw):
        original = protocol.datagramReceived
        seen = {}
        drop = self._drop

        def datagramReceived(datagram, addr):
            if datagram[:2] == b"\x00\x03":
                block = (datagram[2] << 8) | datagram[3]
                seen[block] = seen.get(block, 0) + 1
                if drop(block, seen[block]):
                    return
            original(datagram, addr)
        protocol.datagramReceived = datagramReceived
        return reactor.listenUDP(port, protocol, **kw)


class LoopbackTests(TestCase):
    """
    The client against provisioner's TFTP service on 127.0.0.1.
    """

    timeout = 120

    def setUp(self):
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)
        self.data = os.urandom(SIZE)
        with open(os.path.join(self.root, "image.bin"), "wb") as f:
            f.write(self.data)
        self.program = os.path.join(self.root, "..", "facility.kpxe")
        with open(self.program, "wb") as f:
            f.write(b"FACILITY" * 4096)
        self.real = b"REAL" * 3000
        with open(os.path.join(self.root, "pxelinux.0"), "wb") as f:
            f.write(self.real)

    def startServer(self, **overrides):
        pairs = [("tftp.root", self.root), ("tftp.timeout", 0.25)]
        pairs += sorted(overrides.items())
        # Sessions that finished linger for their dally (at most
        # tftp.timeout) after the service stops: let them close.
        self.service = startTFTPService(self, pairs, linger=0.3)
        return self.service.listeningPort

    def fetch(self, path="image.bin", options=None, drop=None):
        port = self.startServer() if not hasattr(self, "service") else \
            self.service.listeningPort
        sink = io.BytesIO()
        r = LossyReactor(drop) if drop else reactor
        d = fetch(r, "127.0.0.1", port, path, sink, options or FetchOptions())
        return d.addCallback(lambda result: (result, sink.getvalue()))

    def check(self, outcome, mode, data=None):
        data = self.data if data is None else data
        result, got = outcome
        self.assertEqual(len(got), len(data))
        self.assertEqual(hashlib.sha256(got).hexdigest(), hashlib.sha256(data).hexdigest())
        self.assertEqual(result.sha256, hashlib.sha256(data).hexdigest())
        self.assertEqual(result.mode, mode)
        return result

    def test_adaptive(self):
        """
        If the client asks for the adaptive window, the server agrees, the
        file is byte-exact and the window grows by one per clean window.
        """
        d = self.fetch(options=FetchOptions(windowsize=4))

        def check(outcome):
            result = self.check(outcome, "adaptive")
            grows = [c for c in result.trace if c.reason == "grow"]
            self.assertEqual([c.new for c in grows[:4]], [5, 6, 7, 8])
            self.assertTrue(all(c.new == c.old + 1 for c in grows))
            if result.losses == 0:
                # (A busy machine may make a spurious timeout: a loss.)
                self.assertEqual(grows[-1].new, 64)
        return d.addCallback(check)

    def test_adaptiveLosses(self):
        """
        If blocks are lost (including the first block of a window, which
        only a repeated ACK can signal), the transfer is byte-exact and the
        trace shows halving and a frozen maximum.
        """
        lost = {5, 6, 60, 61, 200, 201, 777, 1500}
        d = self.fetch(options=FetchOptions(windowsize=4, decrease=0),
                       drop=lambda block, seen: block in lost and seen == 1)

        def check(outcome):
            result = self.check(outcome, "adaptive")
            losses = [c for c in result.trace if c.reason in ("loss", "timeout")]
            self.assertGreaterEqual(len(losses), 3)
            self.assertTrue(all(c.new <= max(1, c.old // 2) for c in losses))
            self.assertTrue(losses[0].frozen)
            frozen = losses[0].maximum
            self.assertTrue(all(c.new <= frozen for c in result.trace
                                if c.time >= losses[0].time))
        return d.addCallback(check)

    def test_plainWindow(self):
        """
        If the client asks a fixed window, it gets RFC 7440 and the file.
        """
        d = self.fetch(options=FetchOptions(windowsize=16, adaptive=False))

        def check(outcome):
            result = self.check(outcome, "rfc7440")
            self.assertEqual(result.windowsize, 16)
        return d.addCallback(check)

    def test_msftwindow(self):
        """
        If the client speaks msftwindow, the server answers it and follows
        the one-byte windows in the ACKs.
        """
        d = self.fetch(options=FetchOptions(windowsize=4, msftwindow=True))

        def check(outcome):
            result = self.check(outcome, "msftwindow")
            self.assertGreater(result.maxWindow, 4)
        return d.addCallback(check)

    def test_rfc1350(self):
        """
        If the client asks no options at all, it gets 512-byte blocks,
        lock-step.
        """
        d = self.fetch(options=FetchOptions(blksize=None, windowsize=1, adaptive=False,
                                            tsize=False))
        return d.addCallback(self.check, "rfc1350")

    def test_injector(self):
        """
        If the injector is on, a plain request for the boot file gets the
        facility's bytes, and the facility's own (adaptive) request gets the
        file.
        """
        self.startServer(**{"tftp.injector.enabled": True,
                            "tftp.injector.programs": {"pxelinux.0": self.program}})
        with open(self.program, "rb") as f:
            facility = f.read()
        d = self.fetch("pxelinux.0", FetchOptions(blksize=1432, windowsize=1, adaptive=False))
        d.addCallback(self.check, "rfc2347", facility)
        d.addCallback(lambda _: self.fetch("pxelinux.0", FetchOptions()))
        d.addCallback(self.check, "adaptive", self.real)
        return d
