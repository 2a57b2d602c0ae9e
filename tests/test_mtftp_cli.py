# -*- test-case-name: tests.test_mtftp_cli -*-
"""
Tests for C{provisioner fetch --multicast} (L{provisioner.client.mtftp.fetchRunner}
through L{provisioner.client.cli.runFetch}) against servers that do not do
multicast: the simulated unicast server of L{tests.test_client}, on a fake
reactor.
"""

import io
import os

from twisted.trial.unittest import SynchronousTestCase

from provisioner.cli import buildParser
from provisioner.client import cli
from provisioner.tftp import wire
from tests.fakes import FakeReactor
from tests.test_client import LATENCY, SimServer


class RefusedTests(SynchronousTestCase):
    """
    A server that refuses multicast: the fetch falls back to unicast.
    """

    def setUp(self):
        self.reactor = FakeReactor()
        self.data = os.urandom(100000)
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "out.bin")

    def fetch(self, *argv, url="tftp://198.18.0.1/boot/x.img"):
        args = buildParser().parse_args(["fetch", "--multicast", "-q", url] + list(argv))
        out, err = io.StringIO(), io.StringIO()
        d = cli.runFetch(self.reactor, args, out, err)
        fired = []
        d.addBoth(lambda result: fired.append(True) or result)
        for _ in range(100000):
            if fired:
                break
            self.reactor.advance(LATENCY)
        return self.successResultOf(d), out.getvalue(), err.getvalue()

    def assertFile(self, path):
        with open(path, "rb") as f:
            self.assertEqual(f.read(), self.data)

    def test_noMulticastInOACK(self):
        """
        If the server's OACK has no C{multicast}, the client ends that
        transfer (ERROR 8), says so, and fetches the file by unicast.
        """
        server = SimServer(self.reactor, self.data)
        status, out, err = self.fetch("-o", self.path)
        self.assertEqual(status, 0, err)
        self.assertFile(self.path)
        self.assertIn("multicast: refused by the server (server did not grant multicast); "
                      "fetching by unicast", err)
        self.assertEqual(["multicast" in r.optionDict for r in server.requests],
                         [True, False])

    def test_noOptions(self):
        """
        If the server ignores options (DATA 1 at once), the fetch falls back
        to unicast.
        """
        server = SimServer(self.reactor, self.data, style="ignore")
        status, out, err = self.fetch("-o", self.path)
        self.assertEqual(status, 0, err)
        self.assertFile(self.path)
        self.assertIn("no OACK", err)
        self.assertGreaterEqual(len(server.requests), 2)

    def test_optionsRefused(self):
        """
        If the server answers ERROR 8 (options refused), the fetch falls
        back to unicast (which itself retries without options).
        """
        SimServer(self.reactor, self.data, style="refuse")
        status, out, err = self.fetch("-o", self.path)
        self.assertEqual(status, 0, err)
        self.assertFile(self.path)
        self.assertIn("server error 8", err)

    def test_noFallback(self):
        """
        If C{--no-fallback} is given, a refusal fails the fetch (status 1)
        and leaves no file.
        """
        server = SimServer(self.reactor, self.data)
        status, out, err = self.fetch("-o", self.path, "--no-fallback")
        self.assertEqual(status, 1)
        self.assertIn("server did not grant multicast", err)
        self.assertEqual(len(server.requests), 1)
        self.assertFalse(os.path.exists(self.path))
        self.assertFalse(os.path.exists(self.path + ".part"))

    def test_fileNotFound(self):
        """
        If the server answers ERROR 1, that is no refusal of multicast: the
        fetch fails without a unicast try.
        """
        requests = []

        class Net:
            def send(net, port, datagram, addr):
                requests.append(datagram)
                self.reactor.callLater(LATENCY, port.protocol.datagramReceived,
                                       wire.Error(1, "File not found").to_wire(),
                                       ("198.18.0.1", 4000))
        self.reactor.network = Net()
        status, out, err = self.fetch("-o", self.path)
        self.assertEqual(status, 1)
        self.assertIn("server error 1: File not found", err)
        self.assertEqual(len(requests), 1)

    def test_defaultOutput(self):
        """
        If C{-o} is missing, the file is written under its base name in the
        current directory, as by the unicast fetch.
        """
        SimServer(self.reactor, self.data)
        cwd = os.getcwd()
        os.chdir(self.dir)
        self.addCleanup(os.chdir, cwd)
        status, out, err = self.fetch()
        self.assertEqual(status, 0, err)
        self.assertFile(os.path.join(self.dir, "x.img"))
        self.assertEqual(sorted(os.listdir(self.dir)), ["x.img"])
