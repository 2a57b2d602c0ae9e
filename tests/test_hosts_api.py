# -*- test-case-name: tests.test_hosts_api -*-
"""
Tests for the lifecycle's part of the JSON API: the HTTP, menus and hosts
services on 127.0.0.1 (port 0, the real reactor), driven with twisted.web's
client as a booting machine and an operator would: fetch the menu and the
kernel, call back, query, redeploy, adopt.
"""

import json
import os
from urllib.parse import urlencode

from twisted.internet import defer, reactor, task
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from provisioner.appliance import Appliance
from provisioner.config import loadConfig
from provisioner.hosts.tokens import PREVIEW_TOKEN
from provisioner.hosts.service import HostsService
from provisioner.menus.service import MenuService
from provisioner.web.service import HTTPService
from tests.fakes import INVENTORY

ALPHA = "52:54:00:00:00:01"
STRANGER = "52:54:00:00:00:09"


class HostsAPITests(TestCase):
    """
    The lifecycle over HTTP.
    """

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        root = os.path.join(self.dir, "root")
        os.makedirs(os.path.join(root, "images", "debian"))
        with open(os.path.join(root, "images", "debian", "linux"), "wb") as f:
            f.write(b"kernel" * 1000)
        inventory = os.path.join(self.dir, "inventory.yaml")
        with open(inventory, "w") as f:
            f.write(INVENTORY)
        self.config = loadConfig(overrides=[
            ("menus.enabled", True), ("inventory.enabled", True),
            ("inventory.file", inventory), ("http.enabled", True), ("http.port", 0),
            ("http.root", root), ("hosts.enabled", True),
            ("hosts.state_directory", os.path.join(self.dir, "state"))])
        self.appliance = Appliance(self.config, reactor)
        self.hosts = HostsService(self.appliance)
        self.menus = MenuService(self.appliance, watch=False)
        self.http = HTTPService(self.appliance)
        for service in (self.hosts, self.menus, self.http):
            service.privilegedStartService()
            service.startService()
        self.addCleanup(self.stop)
        self.book = self.appliance.hosts
        self.base = self.http.url
        self.agent = Agent(reactor)
        self.warnings = []
        globalLogPublisher.addObserver(self._observe)
        self.addCleanup(globalLogPublisher.removeObserver, self._observe)

    @defer.inlineCallbacks
    def stop(self):
        yield self.http.stopService()
        self.menus.stopService()
        yield self.hosts.stopService()

    def _observe(self, event):
        if event.get("log_level") == LogLevel.warn and \
                event.get("log_namespace", "").startswith("provisioner"):
            self.warnings.append(event["log_format"].format(**event))

    @defer.inlineCallbacks
    def request(self, path, method=b"GET", body=None, contentType=None, url=None, agent=None):
        headers = Headers()
        producer = None
        if body is not None:
            producer = FileBodyProducer(__import__("io").BytesIO(body))
            if contentType:
                headers.setRawHeaders(b"content-type", [contentType])
        response = yield (agent or self.agent).request(
            method, (url or self.base + path).encode("ascii"), headers, producer)
        data = yield readBody(response)
        defer.returnValue((response.code, data))

    @defer.inlineCallbacks
    def getJSON(self, path):
        code, body = yield self.request(path)
        defer.returnValue((code, json.loads(body)))

    @defer.inlineCallbacks
    def post(self, path, fields=None, body=None, contentType=b"application/json", url=None,
             agent=None):
        if fields is not None:
            url = (url or self.base + path) + "?" + urlencode(fields)
        raw = json.dumps(body).encode() if body is not None else b""
        code, data = yield self.request(path, b"POST", raw, contentType, url=url, agent=agent)
        defer.returnValue((code, json.loads(data)))

    @defer.inlineCallbacks
    def boot(self, mac=ALPHA):
        """
        Fetch the host's iPXE menu and its deploy kernel over HTTP, as iPXE
        does; return the token and the callback URL from the kernel line.
        """
        code, menu = yield self.request("/menus/%s/boot.ipxe" % (mac,))
        self.assertEqual(code, 200)
        words = menu.decode().split()
        token = [w.split("=", 1)[1] for w in words if w.startswith("provisioner.token=")]
        url = [w.split("=", 1)[1] for w in words if w.startswith("provisioner.callback=")]
        code, _ = yield self.request("/images/debian/linux")
        self.assertEqual(code, 200)
        defer.returnValue((token[0] if token else None, url[0] if url else None, menu))

    def state(self, name="alpha"):
        return self.book.hostInfo(name)["state"]

    @defer.inlineCallbacks
    def test_callbackDeployed(self):
        """
        A machine that boots its deploy entry is deploying; one POST to the
        callback URL from its command line with its token and
        C{state=deployed} makes it deployed (answered once saved); its next
        menu boots the local disk.
        """
        token, url, _ = yield self.boot()
        self.assertEqual(url, self.base + "/api/v1/hosts/alpha/callback")
        self.assertEqual(self.state(), "deploying")
        code, data = yield self.post(None, {"token": token, "state": "deployed"}, url=url)
        self.assertEqual((code, data["state"]), (200, "deployed"))
        code, described = yield self.getJSON("/api/v1/hosts/alpha")
        self.assertEqual(described["lifecycle"]["state"], "deployed")
        code, menu = yield self.request("/menus/%s/boot.ipxe" % (ALPHA,))
        self.assertIn(b"alpha is deployed", menu)
        self.assertNotIn(b"kernel http", menu)
        stored = yield self.hosts.store.events("alpha")
        self.assertEqual(stored[-1].target, "deployed")

    @defer.inlineCallbacks
    def test_callbackBodies(self):
        """
        The callback also takes its fields as a form body (C{curl -d},
        C{wget --post-data}) or a JSON object; C{state=deploying} reports
        progress.
        """
        token, url, _ = yield self.boot()
        code, data = yield self.request(
            None, b"POST", urlencode({"token": token, "state": "deploying",
                                      "message": "partitioning"}).encode(),
            b"application/x-www-form-urlencoded", url=url)
        self.assertEqual(code, 200)
        self.assertIn("partitioning", self.book.eventsOf("alpha")[-1]["why"])
        code, data = yield self.post(None, body={"token": token, "state": "deployed"}, url=url)
        self.assertEqual((code, data["state"]), (200, "deployed"))

    @defer.inlineCallbacks
    def test_badTokens(self):
        """
        A wrong, reused or expired token is 403, logged once per request,
        and changes nothing.
        """
        token, url, _ = yield self.boot()
        before = self.book.eventsOf("alpha")
        code, data = yield self.post(None, {"token": "wrong", "state": "deployed"}, url=url)
        self.assertEqual((code, data["error"]), (403, "unknown token"))
        self.assertEqual(len(self.warnings), 1)
        self.assertIn("callback deployed for alpha from 127.0.0.1 refused: unknown token",
                      self.warnings[0])
        self.assertEqual((self.state(), self.book.eventsOf("alpha")), ("deploying", before))

        self.book.clock = task.Clock()
        self.book.clock.advance(reactor.seconds() + self.config["hosts"]["token_ttl"] + 1)
        code, data = yield self.post(None, {"token": token, "state": "deployed"}, url=url)
        self.assertEqual((code, data["error"]), (403, "the token expired"))
        self.book.clock = reactor
        self.assertEqual(self.state(), "deploying")

        code, _ = yield self.post(None, {"token": token, "state": "deployed"}, url=url)
        self.assertEqual(code, 200)
        yield self.book.redeploy("alpha")
        before = self.book.eventsOf("alpha")
        code, data = yield self.post(None, {"token": token, "state": "deployed"}, url=url)
        self.assertEqual((code, data["error"]), (403, "the token was already used"))
        self.assertEqual((self.state(), self.book.eventsOf("alpha")), ("ready", before))
        self.assertEqual(len(self.warnings), 3)

    @defer.inlineCallbacks
    def test_queries(self):
        """
        C{/api/v1/hosts} lists each host's state and last event;
        C{/api/v1/hosts/NAME/events} is its timeline; C{/api/v1/hosts/NAME}
        previews its menus with a placeholder token (none minted).
        """
        yield self.boot()
        code, data = yield self.getJSON("/api/v1/hosts")
        byName = {h["name"]: h for h in data["hosts"]}
        self.assertEqual(byName["alpha"]["state"], "deploying")
        self.assertEqual(byName["beta"]["state"], "ready")
        self.assertIn("images/debian/linux", byName["alpha"]["last_event"]["why"])
        code, data = yield self.getJSON("/api/v1/hosts/alpha/events")
        self.assertEqual([(e["source"], e["target"]) for e in data["events"]],
                         [(None, "ready"), ("ready", "deploying")])
        code, _ = yield self.getJSON("/api/v1/hosts/nobody/events")
        self.assertEqual(code, 404)
        tokens = len(self.book.tokens)
        code, data = yield self.getJSON("/api/v1/hosts/beta")
        self.assertIn("provisioner.token=" + PREVIEW_TOKEN, data["menus"]["ipxe"]["text"])
        self.assertEqual(len(self.book.tokens), tokens)

    @defer.inlineCallbacks
    def test_redeployAdminOnly(self):
        """
        Redeploy works from an admin network with a JSON body; without the
        JSON content type it is 415; from another address (127.0.0.2, not
        the address the connection reached) outside C{hosts.admin_networks}
        it is 403, logged, and changes nothing.
        """
        token, url, _ = yield self.boot()
        yield self.post(None, {"token": token, "state": "deployed"}, url=url)
        code, data = yield self.post("/api/v1/hosts/alpha/redeploy", body={},
                                     contentType=b"text/plain")
        self.assertEqual(code, 415)
        other = Agent(reactor, bindAddress=("127.0.0.2", 0))
        self.book.configure(adminNetworks=["10.0.0.0/8"])
        code, data = yield self.post("/api/v1/hosts/alpha/redeploy", body={}, agent=other)
        self.assertEqual(code, 403)
        self.assertEqual(self.state(), "deployed")
        self.assertIn("redeploy of alpha from 127.0.0.2 refused", self.warnings[-1])
        self.book.configure(adminNetworks=["127.0.0.0/8"])
        code, data = yield self.post("/api/v1/hosts/alpha/redeploy", body={}, agent=other)
        self.assertEqual((code, data["state"]), (200, "ready"))
        code, data = yield self.post("/api/v1/hosts/alpha/redeploy", body={})
        self.assertEqual(code, 409)

    @defer.inlineCallbacks
    def test_discoverAndAdopt(self):
        """
        An unknown MAC that fetches its menu shows in C{/api/v1/discovered}
        with the file; adopting it (POST, JSON) answers the inventory stanza
        and its next menu is its profile's.
        """
        code, menu = yield self.request("/menus/%s/boot.ipxe" % (STRANGER,))
        self.assertIn(b"unknown host", menu)
        code, data = yield self.getJSON("/api/v1/discovered")
        machine, = data["discovered"]
        self.assertEqual(machine["mac"], STRANGER)
        self.assertEqual([f["path"] for f in machine["files"]],
                         ["menus/%s/boot.ipxe" % (STRANGER,)])
        code, data = yield self.post("/api/v1/discovered/%s/adopt" % (STRANGER,),
                                     body={"name": "gamma", "profile": "installer"})
        self.assertEqual(code, 200)
        self.assertIn("  gamma:\n    mac: %s\n    profile: installer\n" % (STRANGER,),
                      data["yaml"])
        code, menu = yield self.request("/menus/%s/boot.ipxe" % (STRANGER,))
        self.assertIn(b"gamma", menu)
        self.assertIn(b"/images/debian/linux", menu)
        code, data = yield self.post("/api/v1/discovered/%s/adopt" % (STRANGER,),
                                     body={"name": "delta", "profile": "installer"})
        self.assertEqual(code, 409)
        code, data = yield self.post("/api/v1/hosts/gamma/nothing", body={})
        self.assertEqual(code, 404)
