# -*- test-case-name: tests.test_hosts_cli -*-
"""
Tests for C{provisioner hosts} (L{provisioner.hosts.cli}) against a real
appliance: the services built by L{provisioner.tap} from a configuration
file, running in this process on the real reactor with HTTP on 127.0.0.1
(port 0). The command (blocking urllib) runs in a thread, as it would in
its own process.
"""

import io
import json
import os

from twisted.internet import defer, reactor, task, threads
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody

from provisioner import tap
from provisioner.cli import buildParser
from provisioner.hosts.cli import baseURL
from tests.fakes import INVENTORY

ALPHA = "52:54:00:00:00:01"
STRANGER = "52:54:00:00:00:09"


class HostsCommandTests(TestCase):
    """
    C{provisioner hosts} talks to the running appliance.
    """

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        root = os.path.join(self.dir, "root")
        os.makedirs(os.path.join(root, "images", "debian"))
        with open(os.path.join(root, "images", "debian", "linux"), "wb") as f:
            f.write(b"k" * 4096)
        with open(os.path.join(self.dir, "inventory.yaml"), "w") as f:
            f.write(INVENTORY)
        self.configPath = os.path.join(self.dir, "provisioner.yaml")
        with open(self.configPath, "w") as f:
            f.write("tftp: {port: 0, address: 127.0.0.1, root: %s}\n"
                    "menus: {enabled: true}\n"
                    "inventory: {enabled: true, file: %s}\n"
                    "http: {enabled: true, port: 0, root: %s}\n"
                    "hosts: {enabled: true, state_directory: %s}\n" % (
                        root, os.path.join(self.dir, "inventory.yaml"), root,
                        os.path.join(self.dir, "state")))
        options = tap.Options()
        options.parseOptions(["--config", self.configPath])
        self.service = tap.makeService(options, reactor=reactor)
        self.service.privilegedStartService()
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.url = self.service.appliance.http.url
        self.agent = Agent(reactor)

    def command(self, *argv):
        """
        Run C{provisioner hosts ARGV --url URL} in a thread.

        @return: a Deferred firing with C{(status, stdout, stderr)}.
        """
        args = buildParser().parse_args(["hosts"] + list(argv) + ["--url", self.url])
        out, err = io.StringIO(), io.StringIO()
        d = threads.deferToThread(args.func, args, out=out, err=err)
        return d.addCallback(lambda status: (status, out.getvalue(), err.getvalue()))

    @defer.inlineCallbacks
    def fetch(self, path, method=b"GET"):
        response = yield self.agent.request(method, (self.url + path).encode("ascii"))
        body = yield readBody(response)
        defer.returnValue((response.code, body))

    @defer.inlineCallbacks
    def deployAlpha(self):
        """
        Boot alpha's deploy entry over HTTP and call back as its installer
        would.
        """
        code, menu = yield self.fetch("/menus/%s/boot.ipxe" % (ALPHA,))
        token = [w.split(b"=", 1)[1] for w in menu.split()
                 if w.startswith(b"provisioner.token=")][0].decode()
        yield self.fetch("/images/debian/linux")
        code, _ = yield self.fetch("/api/v1/hosts/alpha/callback?token=%s&state=deployed" % (
            token,), method=b"POST")
        self.assertEqual(code, 200)

    @defer.inlineCallbacks
    def test_list(self):
        """
        C{provisioner hosts} prints a table: name, MAC, state, since, last
        event; then the discovered machines.
        """
        yield self.deployAlpha()
        yield self.fetch("/menus/%s/boot.ipxe" % (STRANGER,))
        status, out, err = yield self.command()
        self.assertEqual((status, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(lines[0].split()[:5], ["NAME", "MAC", "STATE", "SINCE", "(UTC)"])
        alpha = [l for l in lines if l.startswith("alpha ")][0]
        self.assertEqual(alpha.split()[1:3], [ALPHA, "deployed"])
        self.assertIn("deploying -> deployed: the installed system called back", alpha)
        beta = [l for l in lines if l.startswith("beta ")][0]
        self.assertEqual(beta.split()[2], "ready")
        self.assertIn("discovered (adopt one: provisioner hosts adopt MAC --name NAME "
                      "--profile P):", out)
        self.assertIn(STRANGER, out.split("discovered (", 1)[1])
        status, out, err = yield self.command("--json")
        data = json.loads(out)
        self.assertEqual([m["mac"] for m in data["discovered"]], [STRANGER])

    @defer.inlineCallbacks
    def test_showAndRedeploy(self):
        """
        C{hosts show NAME} prints the timeline; C{hosts redeploy NAME} makes
        the next boot deploy again (the menu is the deploy entry once more).
        """
        yield self.deployAlpha()
        status, out, err = yield self.command("show", "alpha")
        self.assertEqual(status, 0, err)
        self.assertTrue(out.startswith("alpha: deployed since "), out)
        timeline = out.split("timeline (UTC):\n", 1)[1].splitlines()
        self.assertEqual([l.split("  ", 2)[2].split(":")[0] for l in timeline],
                         ["new -> ready", "ready -> deploying", "deploying -> deployed"])
        code, menu = yield self.fetch("/menus/%s/boot.ipxe" % (ALPHA,))
        self.assertIn(b"alpha is deployed", menu)
        status, out, err = yield self.command("redeploy", "alpha")
        self.assertEqual((status, out), (0, "alpha: ready (its next network boot deploys it "
                                            "again)\n"))
        code, menu = yield self.fetch("/menus/%s/boot.ipxe" % (ALPHA,))
        self.assertIn(b"provisioner.token=", menu)
        status, out, err = yield self.command("redeploy", "nobody")
        self.assertEqual(status, 1)
        self.assertIn("no host 'nobody' (HTTP 404)", err)

    @defer.inlineCallbacks
    def test_adopt(self):
        """
        C{hosts adopt MAC --name NAME --profile P} makes a discovered
        machine a host at once and prints the stanza to paste; C{hosts
        show} then shows it.
        """
        yield self.fetch("/menus/%s/boot.ipxe" % (STRANGER,))
        status, out, err = yield self.command("show", STRANGER)
        self.assertEqual(status, 0, err)
        self.assertIn("%s: discovered" % (STRANGER,), out)
        self.assertIn("fetched menus/%s/boot.ipxe over http" % (STRANGER,), out)
        status, out, err = yield self.command("adopt", STRANGER, "--name", "gamma",
                                          "--profile", "installer")
        self.assertEqual(status, 0, err)
        self.assertIn("  gamma:\n    mac: %s\n    profile: installer\n" % (STRANGER,), out)
        code, menu = yield self.fetch("/menus/%s/boot.ipxe" % (STRANGER,))
        self.assertIn(b"# provisioner: gamma", menu)
        status, out, err = yield self.command("show", "gamma")
        self.assertIn("gamma: ready since", out)
        self.assertIn("(not in the inventory file)", out)
        self.assertIn("discovered -> ready: adopted by 127.0.0.1", out)
        status, out, err = yield self.command("adopt", STRANGER, "--name", "delta",
                                          "--profile", "installer")
        self.assertEqual(status, 1)
        self.assertIn("HTTP 409", err)

    @defer.inlineCallbacks
    def test_tftpBoot(self):
        """
        A pxelinux boot over the real TFTP service: the per-MAC menu, then
        the deploy kernel; the TFTP stats callback makes the host deploying,
        which C{hosts show} reports.
        """
        from provisioner.client.tftp import fetch
        port = self.service.appliance.tftp.listeningPort
        menu = io.BytesIO()
        yield fetch(reactor, "127.0.0.1", port, "pxelinux.cfg/01-52-54-00-00-00-01", menu)
        self.assertIn(b"provisioner.token=", menu.getvalue())
        yield fetch(reactor, "127.0.0.1", port, "images/debian/linux", io.BytesIO())
        book = self.service.appliance.hosts
        for _ in range(200):
            if book.hostInfo("alpha")["state"] == "deploying":
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        status, out, err = yield self.command("show", "alpha")
        self.assertTrue(out.startswith("alpha: deploying since "), out + err)
        self.assertIn("fetched images/debian/linux over tftp from 127.0.0.1", out)

    @defer.inlineCallbacks
    def test_unreachable(self):
        """
        If nothing answers at the URL, the command says so and fails.
        """
        args = buildParser().parse_args(["hosts", "--url", "http://127.0.0.1:1"])
        out, err = io.StringIO(), io.StringIO()
        status = yield threads.deferToThread(args.func, args, out=out, err=err)
        self.assertEqual(status, 1)
        self.assertIn("cannot reach the appliance at http://127.0.0.1:1", err.getvalue())


class BaseURLTests(SynchronousTestCase):
    """
    Tests for L{baseURL}: where the command finds the appliance.
    """

    def parse(self, *argv):
        return buildParser().parse_args(["hosts"] + list(argv))

    def test_url(self):
        """
        C{--url} wins, without its trailing slash, before or after the
        action.
        """
        self.assertEqual(baseURL(self.parse("--url", "http://a:1/")), "http://a:1")
        self.assertEqual(baseURL(self.parse("show", "x", "--url", "http://b:2")), "http://b:2")

    def test_config(self):
        """
        From a configuration file: C{http.address} and C{http.port}, a
        wildcard address reached on loopback.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("http: {enabled: true, address: 0.0.0.0, port: 8081}\n")
        self.assertEqual(baseURL(self.parse("--config", path)), "http://127.0.0.1:8081")
        self.assertEqual(baseURL(self.parse()), "http://127.0.0.1:8080")
