# -*- test-case-name: tests.test_client_cli -*-
"""
Tests for L{provisioner.client.cli}: C{provisioner fetch}, on a fake reactor
against the simulated server of L{tests.test_client}.
"""

import hashlib
import io
import os

from twisted.trial.unittest import SynchronousTestCase

from provisioner.cli import buildParser
from provisioner.client import cli
from tests.fakes import FakeReactor
from tests.test_client import LATENCY, SimServer


class TTY(io.StringIO):
    def isatty(self):
        return True


class TargetTests(SynchronousTestCase):
    """
    L{cli.parseTarget}.
    """

    def test_hostPortPath(self):
        """
        If the URL has a port and a path, both are parsed; the path loses its
        leading slash and is unquoted.
        """
        t = cli.parseTarget("tftp://198.18.0.1:6969/boot/ipxe%20x.efi")
        self.assertEqual((t.host, t.port, t.path), ("198.18.0.1", 6969, "boot/ipxe x.efi"))

    def test_defaultPort(self):
        """
        If the URL has no port, it is 69.
        """
        self.assertEqual(cli.parseTarget("tftp://server/pxelinux.0").port, 69)

    def test_ipv6(self):
        """
        If the host is a bracketed IPv6 address, it is parsed.
        """
        self.assertEqual(cli.parseTarget("tftp://[::1]:69/x").host, "::1")

    def test_bad(self):
        """
        If the URL is not tftp:// or names no file, L{ValueError}.
        """
        for url in ("http://x/y", "tftp://x/", "tftp:///y", "tftp://x:99999/y"):
            self.assertRaises(ValueError, cli.parseTarget, url)


class ArgumentTests(SynchronousTestCase):
    """
    The C{fetch} parser.
    """

    def parse(self, *argv):
        return buildParser().parse_args(["fetch", "tftp://h/f"] + list(argv))

    def test_defaults(self):
        """
        If no flag is given, the fetch is adaptive from window 32 with
        blksize 1468, growth after each clean window, WS/2+8 after a loss.
        """
        options = cli.optionsFromArgs(self.parse())
        self.assertEqual((options.adaptive, options.windowsize, options.blksize),
                         (True, 32, 1468))
        self.assertEqual((options.growWindows, options.growSeconds, options.decrease),
                         (1, None, 8))

    def test_flags(self):
        """
        If flags are given, they reach the options: growth by time, WS/2+N,
        no adaptive, msftwindow, pinned window.
        """
        options = cli.optionsFromArgs(self.parse(
            "--grow-after", "0.1s", "--decrease", "2", "--no-adaptive", "--windowsize", "16",
            "--blksize", "0", "--msftwindow", "--pin-window", "--max-window", "32"))
        self.assertEqual(options.growSeconds, 0.1)
        self.assertEqual(options.decrease, 2)
        self.assertFalse(options.adaptive)
        self.assertTrue(options.msftwindow)
        self.assertTrue(options.pin)
        self.assertIsNone(options.blksize)
        self.assertEqual((options.windowsize, options.maxWindow), (16, 32))

    def test_badWindow(self):
        """
        If the window is out of range, the parser refuses it.
        """
        self.assertRaises(SystemExit, self.parse, "--windowsize", "0")


class RunTests(SynchronousTestCase):
    """
    L{cli.runFetch} end to end on the fake network.
    """

    def setUp(self):
        self.reactor = FakeReactor()
        self.data = os.urandom(200000)
        self.server = SimServer(self.reactor, self.data)
        self.dir = self.mktemp()
        os.makedirs(self.dir)

    def fetch(self, *argv):
        args = buildParser().parse_args(["fetch", "tftp://198.18.0.1/x"] + list(argv))
        out, err = io.StringIO(), TTY()
        d = cli.runFetch(self.reactor, args, out, err)
        for _ in range(100000):
            if d.called:
                break
            self.reactor.advance(LATENCY)
        return self.successResultOf(d), out.getvalue(), err.getvalue()

    def test_fetchToFile(self):
        """
        If the fetch succeeds, the file is written whole (no .part left), and
        the sha256, stats and trace are printed on request.
        """
        path = os.path.join(self.dir, "out.bin")
        status, out, err = self.fetch("-o", path, "--sha256", "--trace", "--stats")
        self.assertEqual(status, 0)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), self.data)
        self.assertFalse(os.path.exists(path + ".part"))
        self.assertIn("%s  %s" % (hashlib.sha256(self.data).hexdigest(), path), out)
        self.assertIn("mode adaptive", out)
        self.assertIn(" grow ", out)
        self.assertIn("100%|", err)  # the progress bar, on a terminal

    def test_quiet(self):
        """
        If -q is given, no progress bar is drawn.
        """
        path = os.path.join(self.dir, "out.bin")
        status, out, err = self.fetch("-o", path, "-q")
        self.assertEqual((status, out, err), (0, "", ""))

    def test_failure(self):
        """
        If the server answers ERROR 1, the status is 1, the message names it
        and no file is left behind.
        """
        from provisioner.tftp import wire

        class Net:
            def send(net, port, datagram, addr):
                self.reactor.callLater(LATENCY, port.protocol.datagramReceived,
                                       wire.Error(1, "File not found").to_wire(),
                                       ("198.18.0.1", 4000))
        self.reactor.network = Net()
        path = os.path.join(self.dir, "out.bin")
        status, out, err = self.fetch("-o", path)
        self.assertEqual(status, 1)
        self.assertIn("TFTP error 1: File not found", err)
        self.assertFalse(os.path.exists(path))
        self.assertFalse(os.path.exists(path + ".part"))

    def test_runnerHook(self):
        """
        If a runner in L{cli.FETCH_RUNNERS} accepts the arguments, it runs
        instead of the unicast fetch.
        """
        from twisted.internet import defer
        from provisioner.client.tftp import FetchResult
        calls = []

        def runner(reactor, args, target, sink, reporter, fallback):
            calls.append(target.path)
            sink.write(b"other")
            result = FetchResult()
            result.size = 5
            return defer.succeed(result)
        entry = ("test", lambda args: True, runner)
        cli.FETCH_RUNNERS.append(entry)
        self.addCleanup(cli.FETCH_RUNNERS.remove, entry)
        path = os.path.join(self.dir, "out.bin")
        status, out, err = self.fetch("-o", path)
        self.assertEqual((status, calls), (0, ["x"]))
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"other")
