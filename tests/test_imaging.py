# -*- test-case-name: tests.test_imaging -*-
"""
Tests for profiles that image (issue 16, parts 2 and 5; docs/imaging.md):

  - the inventory's C{imaging} and its validation (file, line, key);
  - receivers' secrets registered at runtime with the control channel's
    authenticator;
  - the orders endpoint (C{GET /api/v1/hosts/NAME/orders?token=T}) over the
    HTTP, menus and hosts services on 127.0.0.1, with a fake
    L{provisioner.interfaces.IImaging};
  - the automatic sessions (by count, by time, a late joiner, a new session
    once none runs) on a L{task.Clock};
  - what C{provisioner hosts} shows of each host's receiver;
  - the deploy environment's orders URL and disk rules, in busybox sh;
  - end to end, in network namespaces: a real appliance with an imaging
    profile and two real C{provisioner receive} processes run with the
    orders' values receive a catalogued image, byte for byte, without
    anyone running C{imagecast send}.
"""

import hashlib
import io
import json
import os
import subprocess

from twisted.internet import defer, reactor, task, threads
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.client import Agent, FileBodyProducer, readBody
from zope.interface import implementer
from zope.interface.verify import verifyObject

from provisioner.appliance import Appliance
from provisioner.config import loadConfig
from provisioner.hosts import cli as hostscli
from provisioner.hosts.service import HostsService
from provisioner.imagecast import commands
from provisioner.imagecast.auth import Authenticator
from provisioner.imagecast.autosession import ImagingSessions
from provisioner.imagecast.controller import Controller
from provisioner.interfaces import IImaging
from provisioner.menus.inventory import InventoryError, parseInventory
from provisioner.menus.service import MenuService
from provisioner.web.service import HTTPService
from tests.netlab import PYTHON, REPO, Appliance as Twistd, NetLab, requireE2E, waitFor
from tests.test_imagecast_sender import FakeConnection, FakeWriter, drive

FUNCTIONS = os.path.join(REPO, "provisioner", "deployenv", "functions.sh")

IMAGING = """\
profiles:
  web-image:
    kernel: deployenv/vmlinuz
    initrd: [deployenv/initrd.gz]
    cmdline: "console=ttyS0"
    imaging:
      image: web.img
      disk: %s
      min_receivers: 2
      max_wait: 60
  rescue:
    kernel: rescue/vmlinuz
hosts:
  web01:
    mac: 52:54:00:00:16:01
    profile: web-image
  web02:
    mac: 52:54:00:00:16:02
    profile: web-image
  other:
    mac: 52:54:00:00:16:09
    profile: rescue
"""


class InventoryImagingTests(SynchronousTestCase):
    """
    A profile's C{imaging}.
    """

    def parse(self, imaging):
        return parseInventory("profiles:\n  web:\n    kernel: k\n    imaging:\n" + "".join(
            "      %s\n" % (line,) for line in imaging.splitlines()))

    def assertRefused(self, imaging, line, key, words):
        e = self.assertRaises(InventoryError, self.parse, imaging)
        self.assertIn("inventory.yaml:%d: %s:" % (line, key), str(e))
        self.assertIn(words, str(e))

    def test_pathAndDefaults(self):
        """
        If a profile says which image and disk, its imaging has them, and
        the start conditions default to one receiver or 30 seconds.
        """
        imaging = self.parse("image: web.img\ndisk: /dev/vda").profiles["web"].imaging
        self.assertEqual((imaging.image, imaging.disk, imaging.min_receivers,
                          imaging.max_wait), ("web.img", "/dev/vda", 1, 30))

    def test_rulesAndConditions(self):
        """
        If the disk is a rule (the smallest size, or a serial), it is kept
        as a mapping; min_receivers and max_wait are taken; the profile's
        asDict carries it (what templates and the API see).
        """
        inv = self.parse("image: web.img\ndisk: {min_size_gib: 8}\nmin_receivers: 4\n"
                         "max_wait: 2.5")
        self.assertEqual(inv.profiles["web"].imaging.disk, {"min_size_gib": 8})
        self.assertEqual(inv.profiles["web"].asDict()["imaging"],
                         {"image": "web.img", "disk": {"min_size_gib": 8},
                          "min_receivers": 4, "max_wait": 2.5})
        inv = self.parse("image: web.img\ndisk: {serial: ABC123}")
        self.assertEqual(inv.profiles["web"].imaging.disk, {"serial": "ABC123"})

    def test_noImaging(self):
        """
        If a profile says nothing of imaging, its imaging is None.
        """
        inv = parseInventory("profiles:\n  web:\n    kernel: k\n")
        self.assertIsNone(inv.profiles["web"].imaging)
        self.assertIsNone(inv.profiles["web"].asDict()["imaging"])

    def test_errorsNameFileLineAndKey(self):
        """
        If the imaging section is wrong, the error names the file, the line
        and the key.
        """
        self.assertRefused("disk: /dev/vda", 4, "profiles.web.imaging.image", "missing")
        self.assertRefused("image: ../etc/passwd\ndisk: /dev/vda", 5,
                           "profiles.web.imaging.image", "catalogued")
        self.assertRefused("image: web.img", 4, "profiles.web.imaging.disk", "missing")
        self.assertRefused("image: web.img\ndisk: sda", 6, "profiles.web.imaging.disk",
                           "device path")
        self.assertRefused("image: web.img\ndisk: {min_size_gib: 8, serial: A}", 6,
                           "profiles.web.imaging.disk", "one rule")
        self.assertRefused("image: web.img\ndisk: {size: 8}", 6,
                           "profiles.web.imaging.disk.size", "unknown key")
        self.assertRefused("image: web.img\ndisk: {min_size_gib: big}", 6,
                           "profiles.web.imaging.disk.min_size_gib", "number")
        self.assertRefused("image: web.img\ndisk: {serial: 'A B'}", 6,
                           "profiles.web.imaging.disk.serial", "without spaces")
        self.assertRefused("image: web.img\ndisk: /dev/vda\nmin_receivers: 0", 7,
                           "profiles.web.imaging.min_receivers", "between 1")
        self.assertRefused("image: web.img\ndisk: /dev/vda\nmax_wait: -1", 7,
                           "profiles.web.imaging.max_wait", "between 0")
        self.assertRefused("image: web.img\ndisk: /dev/vda\nrate: 5", 7,
                           "profiles.web.imaging.rate", "unknown key")
        e = self.assertRaises(InventoryError, parseInventory,
                              "profiles:\n  web:\n    imaging: yes\n")
        self.assertIn("inventory.yaml:3: profiles.web.imaging: must be a mapping", str(e))


class Connection:
    """
    A stand-in for a control connection (the authenticator keys nonces by
    it).
    """


class SecretRegistrationTests(SynchronousTestCase):
    """
    Receivers' secrets registered at runtime (L{Authenticator.addReceiver}).
    """

    SECRET = "0123456789abcdef0123"

    def setUp(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("node07 %s\n" % ("f" * 32,))
        os.chmod(path, 0o600)
        self.auth = Authenticator({"authentication": "secret", "receivers_file": path,
                                   "server_name": "appliance"})

    def register(self, clientId, secret):
        conn = Connection()
        nonce = self.auth.challenge(conn)["nonce"]
        proof = commands.registrationProof(secret.encode(), nonce, clientId, "appliance")
        return self.auth.check(conn, clientId, proof)

    def test_registeredSecretAuthenticates(self):
        """
        If a secret is registered for a host, a receiver proving it under
        the host's id, or an id C{HOST:DISK}, is accepted; another secret is
        not.
        """
        self.auth.addReceiver("web01", self.SECRET)
        self.register("web01", self.SECRET)
        self.register("web01:/dev/vda", self.SECRET)
        self.assertRaises(commands.NotAuthenticated, self.register, "web01", "x" * 20)
        self.assertEqual(self.auth.registered(), ["web01"])

    def test_removed(self):
        """
        If the registration is removed, the secret no longer authenticates.
        """
        remove = self.auth.addReceiver("web01", self.SECRET)
        remove()
        remove()
        self.assertRaises(commands.NotAuthenticated, self.register, "web01", self.SECRET)
        self.assertEqual(self.auth.registered(), [])

    def test_fileStillServes(self):
        """
        If an id has a line in the receivers file and a registered secret,
        either authenticates it.
        """
        self.auth.addReceiver("node07", self.SECRET)
        self.register("node07", self.SECRET)
        self.register("node07", "f" * 32)

    def test_refusedRegistrations(self):
        """
        If the secret is short or the id has spaces, nothing is registered.
        """
        self.assertRaises(ValueError, self.auth.addReceiver, "web01", "short")
        self.assertRaises(ValueError, self.auth.addReceiver, "web 01", self.SECRET)
        self.assertRaises(ValueError, self.auth.addReceiver, "", self.SECRET)
        self.assertEqual(self.auth.registered(), [])


@implementer(IImaging)
class FakeImaging:
    """
    An L{IImaging} that records what the orders ask of it.
    """

    authentication = "secret"

    def __init__(self):
        self.added = []
        self.removed = []
        self.wanted = []
        self.status = {}
        self.address = ("198.18.0.1", 7010)

    def addReceiver(self, receiverId, secret):
        self.added.append((receiverId, secret))
        return lambda: self.removed.append(receiverId)

    def controlAddress(self, local=None):
        self.local = local
        return self.address

    def want(self, image, minReceivers, maxWait, receiverId):
        self.wanted.append((image, minReceivers, maxWait, receiverId))
        return True

    def receivers(self):
        return self.status


class OrdersTests(TestCase):
    """
    C{GET /api/v1/hosts/NAME/orders?token=T} over the HTTP, menus and hosts
    services on 127.0.0.1 (port 0, the real reactor).
    """

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.dir, "root"))
        self.inventory = os.path.join(self.dir, "inventory.yaml")
        self.writeInventory("/dev/vda")
        config = loadConfig(overrides=[
            ("menus.enabled", True), ("inventory.enabled", True),
            ("inventory.file", self.inventory), ("http.enabled", True), ("http.port", 0),
            ("http.address", "127.0.0.1"), ("http.root", os.path.join(self.dir, "root")),
            ("hosts.enabled", True), ("hosts.state_directory", os.path.join(self.dir, "st"))])
        self.appliance = Appliance(config, reactor)
        self.imaging = FakeImaging()
        self.appliance.imaging = self.imaging
        secrets = iter("secret-%02d-0123456789abcdef" % (i,) for i in range(100))
        self.hosts = HostsService(self.appliance)
        self.hosts.book._orders.newSecret = lambda: next(secrets)
        self.menus = MenuService(self.appliance, watch=False)
        self.http = HTTPService(self.appliance)
        for service in (self.hosts, self.menus, self.http):
            service.privilegedStartService()
            service.startService()
        self.addCleanup(self.stop)
        self.book = self.appliance.hosts
        self.agent = Agent(reactor)

    def writeInventory(self, disk):
        with open(self.inventory, "w") as f:
            f.write(IMAGING % (disk,))

    @defer.inlineCallbacks
    def stop(self):
        yield self.http.stopService()
        self.menus.stopService()
        yield self.hosts.stopService()

    @defer.inlineCallbacks
    def get(self, path, method=b"GET", body=None):
        producer = FileBodyProducer(io.BytesIO(body)) if body is not None else None
        response = yield self.agent.request(method, (self.http.url + path).encode(), None,
                                            producer)
        data = yield readBody(response)
        defer.returnValue((response.code, response.headers, data.decode()))

    @defer.inlineCallbacks
    def boot(self, mac="52:54:00:00:16:01"):
        """
        Fetch the host's iPXE menu: the token and callback URL of its
        kernel line.
        """
        code, _, menu = yield self.get("/menus/%s/boot.ipxe" % (mac,))
        self.assertEqual(code, 200, menu)
        words = dict(w.split("=", 1) for w in menu.split() if w.startswith("provisioner."))
        defer.returnValue((words.get("provisioner.token"), words.get("provisioner.callback")))

    def orders(self, name, token):
        return self.get("/api/v1/hosts/%s/orders?token=%s" % (name, token))

    def test_fakeIsAnIImaging(self):
        """
        The fake provides the interface the orders use.
        """
        verifyObject(IImaging, self.imaging)

    @defer.inlineCallbacks
    def test_orders(self):
        """
        If a host of an imaging profile asks with its boot's token, it gets
        its orders as text, one C{provisioner.KEY=VALUE} line each: the
        image, the disk, the control channel, its id and a secret that was
        registered for it; its image's session is wanted with the profile's
        conditions; the host becomes deploying, and the token stays good
        (asked again: the same secret, registered once).
        """
        token, callback = yield self.boot()
        self.assertTrue(callback.endswith("/api/v1/hosts/web01/callback"))
        code, headers, text = yield self.orders("web01", token)
        self.assertEqual(code, 200, text)
        self.assertEqual(headers.getRawHeaders(b"content-type"),
                         [b"text/plain; charset=utf-8"])
        self.assertEqual(text, "provisioner.image=web.img\nprovisioner.disk=/dev/vda\n"
                         "provisioner.imagecast=198.18.0.1:7010\nprovisioner.id=web01\n"
                         "provisioner.secret=secret-00-0123456789abcdef\n")
        self.assertEqual(self.imaging.added, [("web01", "secret-00-0123456789abcdef")])
        self.assertEqual(self.imaging.wanted, [("web.img", 2, 60, "web01")])
        self.assertEqual(self.imaging.local, "127.0.0.1")
        self.assertEqual(self.book.hostInfo("web01")["state"], "deploying")
        code, _, again = yield self.orders("web01", token)
        self.assertEqual((code, again), (200, text))
        self.assertEqual(len(self.imaging.added), 1)
        events = self.book.eventsOf("web01")
        self.assertIn("image web.img onto disk=/dev/vda", events[-1]["why"])

    @defer.inlineCallbacks
    def test_diskRule(self):
        """
        If the profile's disk is a rule, the orders carry it as
        C{disk_min_gib} or C{disk_serial}, for the deploy environment to
        apply.
        """
        self.writeInventory("{min_size_gib: 8}")
        self.reload()
        token, _ = yield self.boot()
        code, _, text = yield self.orders("web01", token)
        self.assertEqual(code, 200, text)
        self.assertIn("provisioner.disk_min_gib=8\n", text)
        self.assertNotIn("provisioner.disk=", text)
        self.writeInventory("{serial: ABC123}")
        self.reload()
        code, _, text = yield self.orders("web01", token)
        self.assertIn("provisioner.disk_serial=ABC123\n", text)

    def reload(self):
        """
        Make the menus service read the inventory file again.
        """
        self.assertTrue(self.menus.loadInventory())

    @defer.inlineCallbacks
    def test_wrongToken(self):
        """
        If the token is wrong, missing or another host's, the answer is 403
        and says nothing more; no secret is registered, no session wanted.
        """
        token, _ = yield self.boot("52:54:00:00:16:02")
        for name, given in (("web01", "nonsense"), ("web01", ""), ("web01", token),
                            ("nosuchhost", "nonsense")):
            code, _, text = yield self.orders(name, given)
            self.assertEqual((code, text), (403, "refused\n"))
        self.assertEqual((self.imaging.added, self.imaging.wanted), ([], []))

    @defer.inlineCallbacks
    def test_refusedOnceDeployed(self):
        """
        If the host called back deployed, its token is used up: its orders
        are refused.
        """
        token, callback = yield self.boot()
        code, _, _ = yield self.orders("web01", token)
        self.assertEqual(code, 200)
        code, _, _ = yield self.get(
            "/api/v1/hosts/web01/callback?token=%s&state=deployed" % (token,),
            method=b"POST", body=b"")
        self.assertEqual(code, 200)
        code, _, text = yield self.orders("web01", token)
        self.assertEqual((code, text), (403, "refused\n"))

    @defer.inlineCallbacks
    def test_notImaging(self):
        """
        If the host's profile does not image it, the answer is 404 (after
        its token was checked) and nothing is registered.
        """
        token, _ = yield self.boot("52:54:00:00:16:09")
        code, _, text = yield self.orders("other", token)
        self.assertEqual(code, 404, text)
        self.assertIn("does not image it", text)
        self.assertEqual(self.imaging.added, [])

    @defer.inlineCallbacks
    def test_noImagecast(self):
        """
        If imagecast is not running, the orders answer 503.
        """
        self.appliance.imaging = None
        token, _ = yield self.boot()
        code, _, text = yield self.orders("web01", token)
        self.assertEqual(code, 503, text)

    @defer.inlineCallbacks
    def test_listingShowsImaging(self):
        """
        If imagecast knows a host's receiver, the API's host list and the
        host's own page carry it as C{imaging}, and C{provisioner hosts}
        prints its session, round, bytes received and repaired and verdict.
        """
        self.imaging.status = {"web01": {
            "session": 42, "image": "web.img", "session_state": "running", "round": 3,
            "size": 8 << 20, "received_bytes": 6 << 20, "repaired_bytes": 1 << 20,
            "verdict": "receiving", "reason": None, "receiver": "web01:/dev/vda"}}
        code, _, text = yield self.get("/api/v1/hosts")
        hosts = {h["name"]: h for h in json.loads(text)["hosts"]}
        self.assertEqual(hosts["web01"]["imaging"]["round"], 3)
        self.assertIsNone(hosts["web02"]["imaging"])
        code, _, text = yield self.get("/api/v1/hosts/web01")
        self.assertEqual(json.loads(text)["imaging"]["session"], 42)
        out = io.StringIO()
        args = type("Args", (), {"url": self.http.url, "config": None, "json": False,
                                 "action": None})()
        # the command blocks on the API: in a thread, while the reactor serves
        status = yield threads.deferToThread(hostscli.hostsCommand, args, out,
                                             io.StringIO())
        self.assertEqual(status, 0, out.getvalue())
        table = out.getvalue().split("imaging (imagecast sessions):\n", 1)[1]
        self.assertIn("NAME   SESSION  IMAGE    ROUND  RECEIVED       REPAIRED  VERDICT\n"
                      "web01  42       web.img  3      6.0 MiB (75%)  1.0 MiB   receiving\n",
                      table)
        self.assertNotIn("web02", table)


class AutoSessionTests(SynchronousTestCase):
    """
    The imaging profiles' automatic sessions (L{ImagingSessions} on a
    L{Controller} and a L{task.Clock}).
    """

    def setUp(self):
        self.root = self.mktemp()
        os.makedirs(self.root)
        with open(os.path.join(self.root, "web.img"), "wb") as f:
            f.write(os.urandom(50000))
        self.clock = task.Clock()
        self.writer = FakeWriter()
        config = loadConfig(text=(
            "imagecast:\n  enabled: true\n  authentication: none\n  root: %s\n"
            "  datagram_size: 1027\n  max_rounds: 4\n  report_timeout: 5\n"
            "  announce_timeout: 1\n  tail_bytes: 0\n  min_receivers: 9\n"
            "  max_wait: 900\n" % (self.root,)))["imagecast"]
        ids = iter(range(100, 200))
        self.controller = Controller(self.clock, config, writerFactory=lambda g, p: self.writer,
                                     hasher=lambda p: defer.succeed("SHA"),
                                     sessionIds=lambda: next(ids))
        self.imaging = ImagingSessions(self.controller, Authenticator(config))

    def register(self, name):
        conn = FakeConnection()
        self.controller.register(conn, name + ":/dev/vda", "198.18.0.9", image="web.img")
        return conn

    def test_interface(self):
        """
        L{ImagingSessions} provides L{IImaging}.
        """
        verifyObject(IImaging, self.imaging)

    def test_byCount(self):
        """
        If hosts of an imaging profile ask, one session starts for the image
        once min_receivers of them are registered, not before, and not with
        the configuration's conditions.
        """
        self.assertTrue(self.imaging.want("web.img", 2, 60, "web01"))
        self.imaging.want("web.img", 2, 60, "web02")
        self.assertEqual(len(self.controller.sessions), 1)
        session = list(self.controller.sessions.values())[0]
        self.assertEqual((session.minReceivers, session.maxWait), (2, 60))
        a = self.register("web01")
        drive(self.clock, 1)
        self.assertEqual(session.state, "waiting")
        self.assertEqual(a.named(commands.Announce), [])
        b = self.register("web02")
        drive(self.clock, 0.1)
        self.assertEqual(session.state, "running")
        self.assertEqual(sorted(session.members), ["web01:/dev/vda", "web02:/dev/vda"])
        self.assertEqual(len(a.named(commands.Announce)), 1)
        self.assertEqual(len(b.named(commands.Announce)), 1)
        self.assertEqual(len(self.controller.sessions), 1)

    def test_byTime(self):
        """
        If fewer than min_receivers register, the session starts max_wait
        seconds after the first host asked, with whoever registered.
        """
        self.imaging.want("web.img", 3, 5, "web01")
        session = list(self.controller.sessions.values())[0]
        drive(self.clock, 2)
        self.register("web01")
        drive(self.clock, 2.8)
        self.assertEqual(session.state, "waiting")
        drive(self.clock, 0.5)
        self.assertEqual(session.state, "running")
        self.assertEqual(list(session.members), ["web01:/dev/vda"])

    def test_registrationStarts(self):
        """
        If a host's receiver registers for the image of a profile that asked
        before, and no session sends it, one starts with the profile's
        conditions (C{auto_start} is off).
        """
        self.imaging.conditions["web.img"] = (1, 7)
        self.register("web01")
        session = list(self.controller.sessions.values())[0]
        self.assertEqual((session.minReceivers, session.maxWait), (1, 7))
        self.assertIn("web01:/dev/vda", session.members)

    def test_noConditionsNoSession(self):
        """
        If a receiver asks for an image no profile wanted (and auto_start is
        off), no session starts.
        """
        self.register("web01")
        self.assertEqual(self.controller.sessions, {})

    def finish(self, session, conns):
        """
        Run C{session}'s first round and complete every receiver.
        """
        drive(self.clock, 2)
        for name, conn in conns.items():
            self.controller.reportMissing(conn, session.id, 1, [])
            self.controller.complete(conn, session.id, "SHA")
        drive(self.clock, 0.1)
        self.assertEqual(session.state, "done")

    def test_lateJoinerAndNewSession(self):
        """
        If a host asks while its image's session runs, its receiver joins it
        at the current round (one session still); once the session is done,
        the next host to ask starts a new one.
        """
        self.imaging.want("web.img", 1, 60, "web01")
        a = self.register("web01")
        session = list(self.controller.sessions.values())[0]
        drive(self.clock, 0.5)
        self.assertEqual(session.state, "running")
        self.imaging.want("web.img", 1, 60, "web02")
        self.assertEqual(list(self.controller.sessions), [session.id])
        late = self.register("web02")
        self.assertIn("web02:/dev/vda", session.members)
        self.assertEqual(late.named(commands.Announce)[0]["round"], session.round)
        self.finish(session, {"web01": a, "web02": late})
        self.assertEqual(self.controller.sessions, {})
        self.imaging.want("web.img", 1, 60, "web03")
        self.assertEqual(len(self.controller.sessions), 1)
        self.assertNotEqual(list(self.controller.sessions)[0], session.id)

    def test_receivers(self):
        """
        Each host's receiver is seen by its host name: session, round,
        bytes received and repaired, verdict; the newest session wins.
        """
        self.imaging.want("web.img", 2, 60, "web01")
        a = self.register("web01")
        session = list(self.controller.sessions.values())[0]
        seen = self.imaging.receivers()
        self.assertEqual((seen["web01"]["verdict"], seen["web01"]["received_bytes"],
                          seen["web01"]["size"]), ("waiting", 0, 50000))
        self.assertNotIn("web02", seen)
        b = self.register("web02")
        drive(self.clock, 2)
        self.controller.reportMissing(a, session.id, 1, [(0, 10000)])
        self.controller.reportMissing(b, session.id, 1, [])
        self.controller.complete(b, session.id, "SHA")
        drive(self.clock, 2)
        seen = self.imaging.receivers()
        self.assertEqual(seen["web01"]["verdict"], "receiving")
        self.assertEqual(seen["web01"]["received_bytes"], 40000)
        self.assertEqual(seen["web01"]["session"], session.id)
        self.assertEqual(seen["web01"]["round"], session.round)
        self.assertEqual(seen["web02"]["verdict"], "complete")
        self.assertEqual(seen["web02"]["received_bytes"], 50000)
        self.controller.reportMissing(a, session.id, 2, [(0, 1000)])
        self.controller.complete(a, session.id, "SHA")
        drive(self.clock, 1)
        seen = self.imaging.receivers()
        self.assertEqual((seen["web01"]["verdict"], seen["web01"]["repaired_bytes"],
                          seen["web01"]["received_bytes"]), ("complete", 10000, 50000))
        self.assertEqual(session.state, "done")
        # the receivers exit once complete
        self.controller.connectionLost(a)
        self.controller.connectionLost(b)
        self.imaging.want("web.img", 1, 60, "web01")
        self.register("web01")
        newer = list(self.controller.sessions.values())[0]
        self.assertEqual(self.imaging.receivers()["web01"]["session"], newer.id)
        self.assertEqual(self.imaging.receivers()["web02"]["session"], session.id)

    def test_failedVerdict(self):
        """
        If a receiver leaves (a disk too small), its verdict is failed with
        the reason.
        """
        self.imaging.want("web.img", 1, 60, "web01")
        a = self.register("web01")
        session = list(self.controller.sessions.values())[0]
        drive(self.clock, 1)
        self.controller.leave(a, session.id, "/dev/vda: device too small")
        seen = self.imaging.receivers()["web01"]
        self.assertEqual((seen["verdict"], seen["reason"]),
                         ("failed", "/dev/vda: device too small"))

    def test_controlAddress(self):
        """
        The control channel's address is the port's, or the one the asking
        machine reached when the port listens on every address; none before
        it listens.
        """
        class Port:
            def __init__(self, host):
                self.host = host

            def getHost(self):
                return type("A", (), {"host": self.host, "port": 7010})()
        port = [None]
        imaging = ImagingSessions(self.controller, Authenticator(self.controller.config),
                                  port=lambda: port[0])
        self.assertIsNone(imaging.controlAddress("10.0.0.1"))
        port[0] = Port("0.0.0.0")
        self.assertEqual(imaging.controlAddress("10.0.0.1"), ("10.0.0.1", 7010))
        port[0] = Port("192.0.2.10")
        self.assertEqual(imaging.controlAddress("10.0.0.1"), ("192.0.2.10", 7010))
        self.assertEqual(imaging.authentication, "none")


def busybox(script):
    """
    Run C{script} in busybox sh after sourcing the deploy environment's
    C{functions.sh}; return its standard output.
    """
    if not os.path.exists("/usr/bin/busybox") and not os.path.exists("/bin/busybox"):
        raise SkipTest("busybox is not installed")
    out = subprocess.run(["busybox", "sh", "-c", ". %s\n%s" % (FUNCTIONS, script)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if out.returncode != 0:
        raise AssertionError("busybox sh failed: %s %s" % (out.stdout, out.stderr))
    return out.stdout.decode()


class DeployEnvironmentOrdersTests(SynchronousTestCase):
    """
    The deploy environment's orders URL and disk rules (C{functions.sh} in
    busybox sh).
    """

    def test_ordersFromCallback(self):
        """
        If the command line has no C{provisioner.orders}, the orders are
        beside the callback URL; an explicit one wins; without either there
        are none. The token is added to the query.
        """
        out = busybox(
            "readCmdline /dev/null\n"
            "parseWords 'provisioner.token=T1 "
            "provisioner.callback=http://198.18.0.1:8080/api/v1/hosts/web01/callback'\n"
            "echo \"$(withToken \"$(ordersURL)\")\"\n"
            "orders=http://x/o?a=1; echo \"$(withToken \"$(ordersURL)\")\"\n"
            "orders= callback=; echo \"[$(ordersURL)]\"\n")
        self.assertEqual(out.splitlines(), [
            "http://198.18.0.1:8080/api/v1/hosts/web01/orders?token=T1",
            "http://x/o?a=1&token=T1", "[]"])

    def test_ordersWords(self):
        """
        If the orders document is read, its words set the receiver's
        command line: image, disk, server and port, id and secret.
        """
        out = busybox(
            "readCmdline /dev/null\n"
            "parseWords 'provisioner.callback=http://a:8080/api/v1/hosts/web01/callback'\n"
            "parseWords \"$(printf 'provisioner.image=web.img\\nprovisioner.disk=/dev/vda\\n"
            "provisioner.imagecast=198.18.0.1:7010\\nprovisioner.id=web01\\n"
            "provisioner.secret=S3\\n')\"\n"
            "receiveCommand\n")
        self.assertEqual(out.split(), [
            "python3", "-m", "provisioner.cli", "receive", "--server", "198.18.0.1",
            "--port", "7010", "--output", "/dev/vda", "--image", "web.img", "--id",
            "web01:/dev/vda", "--state", "/tmp/receive.state", "--secret-file",
            "/tmp/imagecast.secret", "--quiet", "--json"])

    def test_diskRules(self):
        """
        If the orders give a disk rule, the first disk that meets it is
        chosen: at least N GiB, or the serial (virtio's serial, NVMe's
        device/serial, SCSI's unit serial VPD page); none that meets it:
        nothing, and the rule for the message.
        """
        sys = os.path.abspath(self.mktemp())
        disks = {"vda": (4 << 21, None, None), "vdb": (16 << 21, "serial", b"VB123"),
                 "sda": (16 << 21, "device/vpd_pg80", b"\x00\x80\x00\x05SA999"),
                 "nvme0n1": (1 << 21, "device/serial", b"NV77   \n")}
        for name, (sectors, where, serial) in disks.items():
            os.makedirs(os.path.join(sys, "block", name, "device"))
            with open(os.path.join(sys, "block", name, "size"), "w") as f:
                f.write("%d\n" % (sectors,))
            if where:
                with open(os.path.join(sys, "block", name, where), "wb") as f:
                    f.write(serial)
        out = busybox(
            "DE_SYS=%s\nreadCmdline /dev/null\n"
            "firstDisk\n"
            "diskMinGib=8; firstDisk\n"
            "diskMinGib=0.5; firstDisk\n"
            "diskMinGib=; diskSerial=SA999; firstDisk\n"
            "diskSerial=NV77; firstDisk\n"
            "parseWords provisioner.disk_serial=VB123; firstDisk\n"
            "diskSerial=; parseWords provisioner.disk_min_gib=64\n"
            "firstDisk || echo \"none$(diskRule)\"\n" % (sys,))
        self.assertEqual(out.splitlines(), [
            "/dev/vda", "/dev/vdb", "/dev/vda", "/dev/sda", "/dev/nvme0n1", "/dev/vdb",
            "none of at least 64 GiB"])


APPLIANCE = """\
tftp: {enabled: false}
images:
  enabled: true
  directory: %(d)s/images
  state_dir: %(d)s/state
menus:
  enabled: true
  http_url: http://%(ip)s:8080
inventory:
  enabled: true
  file: %(d)s/inventory.yaml
http:
  enabled: true
  address: 0.0.0.0
  port: 8080
hosts:
  enabled: true
  state_directory: %(d)s/state
imagecast:
  enabled: true
  address: 0.0.0.0
  root: %(d)s/images
  interface: %(ip)s
  rate: 200
  receivers_file: %(d)s/receivers
"""

#: what the deploy environment does after DHCP, up to the receiver: the
#: command line (the menu's kernel line), the orders beside the callback
#: URL, then the values the receiver is run with
DEPLOY_SCRIPT = """\
readCmdline /dev/null
parseWords "$(cat %(menu)s)"
url=$(ordersURL)
[ -n "$url" ] || exit 3
timeout 30 busybox wget -q -O %(orders)s "$(withToken "$url")" || exit 4
parseWords "$(cat %(orders)s)"
echo "image=$image"
echo "disk=$disk"
echo "server=$(imagecastServer)"
echo "port=$(imagecastPort)"
echo "id=${receiverId:-$(hostName "$callback")}"
echo "secret=$secret"
"""


class ImagingEndToEndTests(TestCase):
    """
    A real appliance (twistd) with an imaging profile in one network
    namespace, two machines in others that do what the deploy environment
    does: fetch their menu, their orders beside the callback URL (with
    busybox and C{functions.sh}), and run C{provisioner receive} with the
    orders' values into files. Nobody runs C{imagecast send}.
    """

    SIZE = 3 << 20

    def setUp(self):
        requireE2E(netns=True, tools=("ip", "busybox"))
        self.d = os.path.abspath(self.mktemp())
        for sub in ("images/deployenv", "state"):
            os.makedirs(os.path.join(self.d, sub))
        for name in ("vmlinuz", "initrd.gz"):
            with open(os.path.join(self.d, "images/deployenv", name), "wb") as f:
                f.write(b"not a kernel")
        data = os.urandom(self.SIZE)
        with open(os.path.join(self.d, "images", "web.img"), "wb") as f:
            f.write(data)
        self.sha256 = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.d, "receivers"), "w") as f:
            f.write("# the hosts' secrets come with their orders\n")
        os.chmod(os.path.join(self.d, "receivers"), 0o600)
        with open(os.path.join(self.d, "inventory.yaml"), "w") as f:
            f.write(IMAGING % ("/dev/vda",))
        self.lab = NetLab(hosts=3, subnet=116)
        self.addCleanup(self.lab.close)
        self.server = self.lab.hosts[0]
        self.server.run(["ip", "link", "set", "dev", "eth0", "gso_max_segs", "1"])
        self.appliance = Twistd(self.d, APPLIANCE % {"d": self.d, "ip": self.server.ip},
                                host=self.server)
        self.addCleanup(self.appliance.stop)
        self.appliance.start(ready="imagecast control channel on", timeout=120)
        self.appliance.waitLog("image catalogue ready|web.img", 120)
        self.env = dict(os.environ, PYTHONPATH=REPO)

    def deploy(self, host, name, mac):
        """
        What the deploy environment does on C{host}, then the receiver.

        @return: C{(process, output path, log path, orders)}.
        """
        base = "http://%s:8080" % (self.server.ip,)
        menu = os.path.join(self.d, name + ".menu")
        host.run(["busybox", "wget", "-q", "-O", menu, "%s/menus/%s/boot.ipxe" % (base, mac)])
        run = subprocess.run(host.argv(["busybox", "sh", "-c", ". %s\n%s" % (
            FUNCTIONS, DEPLOY_SCRIPT % {"menu": menu,
                                        "orders": os.path.join(self.d, name + ".orders")})]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.assertEqual(run.returncode, 0, run.stderr.decode(errors="replace") +
                         self.appliance.log()[-2000:])
        out = run.stdout.decode()
        orders = dict(line.split("=", 1) for line in out.splitlines())
        secret = os.path.join(self.d, name + ".secret")
        with open(secret, "w") as f:
            f.write(orders["secret"] + "\n")
        output = os.path.join(self.d, name + ".disk")
        log = os.path.join(self.d, name + ".log")
        argv = [PYTHON, "-m", "provisioner.cli", "receive", "--server", orders["server"],
                "--port", orders["port"], "--output", output, "--image", orders["image"],
                "--id", "%s:%s" % (orders["id"], orders["disk"]),
                "--state", os.path.join(self.d, name + ".state"), "--secret-file", secret,
                "--quiet", "--json", "--timeout", "60"]
        with open(log, "wb") as f:
            proc = host.popen(argv, env=self.env, stdout=f, stderr=subprocess.STDOUT)
        return proc, output, log, orders

    def test_twoHostsOneAutomaticSession(self):
        """
        If two hosts of a profile that images fetch their orders, each gets
        its own secret and the control channel's address, and their
        receivers, run with those values, get the catalogued image byte for
        byte in one session that started by itself; the API and
        C{provisioner hosts} show both complete in that session.
        """
        runs = {}
        for host, name, mac in ((self.lab.hosts[1], "web01", "52:54:00:00:16:01"),
                                (self.lab.hosts[2], "web02", "52:54:00:00:16:02")):
            runs[name] = self.deploy(host, name, mac)
        first, second = runs["web01"][3], runs["web02"][3]
        self.assertEqual((first["image"], first["disk"], first["server"], first["port"],
                          first["id"]),
                         ("web.img", "/dev/vda", self.server.ip, "7010", "web01"))
        self.assertNotEqual(first["secret"], second["secret"])
        for name, (proc, output, log, _) in runs.items():
            try:
                status = proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                status = None
            with open(log, errors="replace") as f:
                text = f.read()
            self.assertEqual(status, 0, "%s: %s\n%s" % (name, text[-2000:],
                                                        self.appliance.log()[-3000:]))
            with open(output, "rb") as f:
                self.assertEqual(hashlib.sha256(f.read()).hexdigest(), self.sha256, name)
        log = self.appliance.log()
        self.assertEqual(log.count("started automatically for web.img"), 1, log[-3000:])
        self.assertIn("waiting for 2 receivers or 60", log)
        listing = subprocess.run(
            self.server.argv([PYTHON, "-m", "provisioner.cli", "hosts", "--json", "--url",
                              "http://%s:8080" % (self.server.ip,)]),
            env=self.env, stdout=subprocess.PIPE, check=True).stdout
        hosts = {h["name"]: h for h in json.loads(listing)["hosts"]}
        one, two = hosts["web01"]["imaging"], hosts["web02"]["imaging"]
        self.assertEqual((one["verdict"], two["verdict"]), ("complete", "complete"))
        self.assertEqual(one["session"], two["session"])
        self.assertEqual((one["received_bytes"], one["size"]), (self.SIZE, self.SIZE))
        self.assertEqual(hosts["web01"]["state"], "deploying")
        text = subprocess.run(
            self.server.argv([PYTHON, "-m", "provisioner.cli", "hosts", "--url",
                              "http://%s:8080" % (self.server.ip,)]),
            env=self.env, stdout=subprocess.PIPE, check=True).stdout.decode()
        self.assertIn("imaging (imagecast sessions):", text)
        self.assertRegex(text, r"web01 +%d +web\.img +\d+ +3\.0 MiB \(100%%\)" % (
            one["session"],))
