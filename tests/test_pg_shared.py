"""
Tests for what several appliances share live through one PostgreSQL
database (issue 20, parts 3 and 4), against a throwaway cluster of
L{tests.pglab}: host changes announced with LISTEN/NOTIFY and reloaded by
the other appliances' host books (L{provisioner.store.notify}), everything
reloaded after the listener reconnects, the menus' cache dropped for a
changed host, one appliance per imagecast session (advisory locks,
L{provisioner.store.postgres_imagecast}) and the orders pointing at it,
and C{/healthz} while the database is away.
"""

import os
import time

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from provisioner.appliance import Appliance
from provisioner.config import loadConfig
from provisioner.hosts.book import HostBook
from provisioner.hosts.service import HostsService
from provisioner.store import postgres
from provisioner.store.notify import SharedHosts
from provisioner.store.postgres_imagecast import SessionLocks
from provisioner.store.records import HostRecord
from provisioner.web.health import health
from tests import pglab


@defer.inlineCallbacks
def until(predicate, timeout=10.0, interval=0.05):
    """
    Poll C{predicate} on the reactor until it is true or C{timeout}
    seconds pass; fire with its last value.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        yield task.deferLater(reactor, interval, lambda: None)


class _Appliance:
    """
    One appliance's host side: its store, book and listener.
    """

    def __init__(self, dsn, name):
        self.store = postgres.PostgresHostStore(
            postgres.Database(dsn, reactor, "hosts-" + name), origin=name + "/1")
        self.book = HostBook(reactor, store=self.store)
        self.changes = []
        self.book.onChange(lambda host, macs: self.changes.append((host, macs)))
        self.shared = SharedHosts(self.book, self.store, dsn, reactor, timeout=1)

    @defer.inlineCallbacks
    def start(self):
        self.shared.start()
        snapshot = yield self.store.load()
        self.book.restore(snapshot)
        self.shared.loaded()
        yield until(lambda: self.shared.listener.connected)

    @defer.inlineCallbacks
    def stop(self):
        yield self.shared.stop()
        yield self.store.close()


class SharedHostsTests(TestCase):
    """
    Two host books on one database, each with its listener.
    """

    def setUp(self):
        self.cluster = pglab.cluster(self)
        self.dsn = self.cluster.createDatabase()
        postgres.upgrade(self.dsn)
        self.a = _Appliance(self.dsn, "a")
        self.b = _Appliance(self.dsn, "b")
        self.addCleanup(self.b.stop)
        self.addCleanup(self.a.stop)
        return defer.gatherResults([self.a.start(), self.b.start()])

    @defer.inlineCallbacks
    def test_changeSeenAtOnce(self):
        """
        If appliance a makes a host and moves it to deploying, b's book has
        it within a second: its state, its events and the token a minted
        for its boot (so a callback with that token is accepted by b); b's
        change listeners are told, a (which made the change) reloads
        nothing.
        """
        record, d = self.a.book._newHost("web01", ["52:54:00:00:00:01"], "test")
        yield d
        token = self.a.book._ledger.mint("web01", "198.18.0.5", ["debian/linux"],
                                         reactor.seconds())
        yield self.a.book._write(self.a.store.saveToken(self.a.book.tokens[
            list(self.a.book.tokens)[-1]]), "token")
        yield self.a.book._transition(record, "deploying", "booted")
        seen = yield until(lambda: getattr(self.b.book.hosts.get("web01"), "state", None) ==
                           "deploying", 1.0)
        self.assertTrue(seen, self.b.book.hosts)
        self.assertEqual([e.target for e in self.b.book.events["web01"]],
                         ["ready", "deploying"])
        self.assertIn(("web01", ["52:54:00:00:00:01"]), self.b.changes)
        self.assertEqual(self.a.shared.reloads, 0)
        answer = yield self.b.book.callback("web01", token, "deployed", peer="198.18.0.5")
        self.assertEqual(answer["state"], "deployed")
        seen = yield until(lambda: self.a.book.hosts["web01"].state == "deployed", 1.0)
        self.assertTrue(seen, "a did not see b's callback")

    @defer.inlineCallbacks
    def test_reconnectReloadsEverything(self):
        """
        If the database goes away, the listener says since when; a host
        written meanwhile without a notification is in b's book after the
        database is back (everything is reloaded when it listens again).
        """
        self.cluster.stop()
        down = yield until(lambda: self.b.shared.downSince is not None, 10)
        self.assertTrue(down)
        self.cluster.start()
        # written with no notification while b is not listening yet
        self.cluster.query(self.dsn, "INSERT INTO hosts (name, state, since, reason, macs, "
                           "adopted, created) VALUES ('quiet', 'deployed', 1, 'x', "
                           "'[\"52:54:00:00:00:09\"]', false, 1)")
        seen = yield until(lambda: "quiet" in self.b.book.hosts, 15)
        self.assertTrue(seen, "b did not reload after reconnecting")
        self.assertIsNone(self.b.shared.downSince)
        self.assertGreaterEqual(self.b.shared.listener.connections, 2)

    @defer.inlineCallbacks
    def test_ownWriteNewerThanReload(self):
        """
        If b writes a host after a reload of it was asked, the reload's
        (older) answer is not applied over b's memory.
        """
        yield self.b.store.saveHost(HostRecord(name="x", state="ready", since=1.0, reason="r",
                                               macs=[], profile=None, adopted=False,
                                               created=1.0))
        d = self.b.store.reloadHost("x")
        self.b.store.saveHost(HostRecord(name="x", state="deploying", since=2.0, reason="r",
                                         macs=[], profile=None, adopted=False, created=1.0))
        state = yield d
        self.assertIsNone(state)
        state = yield self.b.store.reloadHost("x")
        self.assertEqual(state[0].state, "deploying")


class MenusFollowTests(TestCase):
    """
    The menus service drops a changed host's cached menus.
    """

    def test_hostChangedDropsItsMenus(self):
        """
        If the book reloads a host another appliance changed, the cached
        menus rendered for that host or its MACs are dropped, others kept.
        """
        from provisioner.menus.service import MenuService
        appliance = Appliance(loadConfig(overrides=[("menus.enabled", True)]), reactor)
        book = appliance.hosts = HostBook(reactor)
        book.loaded = True
        menus = MenuService(appliance, watch=False)
        menus._followHosts()
        self.addCleanup(menus._unfollowHosts)
        cache = menus.renderer._cache
        mine = ("ipxe", ("52:54:00:00:00:01",) + (None,) * 5, None, None, None,
                ("web01", "ready", False, None, None))
        byMAC = ("ipxe", ("52:54:00:00:00:01",) + (None,) * 5, None, None, None, None)
        other = ("ipxe", ("52:54:00:00:00:02",) + (None,) * 5, None, None, None,
                 ("web02", "deployed", True, None, None))
        for key in (mine, byMAC, other):
            cache[key] = ("text", "t")
        book.refreshHost("web01", HostRecord(name="web01", state="deployed", since=2.0,
                                             reason="callback", macs=["52:54:00:00:00:01"],
                                             profile=None, adopted=False, created=1.0),
                         [], [], origin="a")
        self.assertEqual(list(cache), [other])


class SessionLocksTests(TestCase):
    """
    One appliance sends a given image's session.
    """

    def setUp(self):
        self.cluster = pglab.cluster(self)
        self.dsn = self.cluster.createDatabase()
        self.a = SessionLocks(self.dsn, reactor, "198.18.195.1:7010")
        self.b = SessionLocks(self.dsn, reactor, "198.18.195.2:7010")
        self.addCleanup(self.b.close)
        self.addCleanup(self.a.close)

    @defer.inlineCallbacks
    def test_oneHolder(self):
        """
        If a takes the lock of web.img, b cannot and is told a's control
        channel; a is told nobody else holds it; another image is free for
        b; once a releases it (or its connection is gone), b takes it.
        """
        self.assertIsNone((yield self.a.acquire("web.img")))
        self.assertEqual((yield self.b.acquire("web.img")), "198.18.195.1:7010")
        self.assertEqual((yield self.b.holder("web.img")), "198.18.195.1:7010")
        self.assertIsNone((yield self.a.holder("web.img")))
        self.assertIsNone((yield self.b.acquire("db.img")))
        self.assertEqual((yield self.a.holder("db.img")), "198.18.195.2:7010")
        self.assertTrue((yield self.a.release("web.img")))
        self.assertIsNone((yield self.b.holder("web.img")))
        self.assertIsNone((yield self.b.acquire("web.img")))
        self.assertEqual((yield self.a.acquire("web.img")), "198.18.195.2:7010")
        yield self.b.close()
        self.assertIsNone((yield self.a.acquire("web.img")))


class HealthStoreTests(TestCase):
    """
    C{/healthz} reports the shared store.
    """

    def setUp(self):
        self.cluster = pglab.cluster(self)
        self.dsn = self.cluster.createDatabase()

    @defer.inlineCallbacks
    def test_databaseAway(self):
        """
        With the PostgreSQL store, C{/healthz} says C{store: ok} (healthy);
        with the cluster stopped, C{unavailable since} the time it was lost
        and unhealthy (503); with it started again, ok and healthy without a
        restart.
        """
        config = loadConfig(overrides=[("store.backend", "postgresql"), ("store.dsn", self.dsn),
                                       ("hosts.enabled", True),
                                       ("hosts.state_directory", self.mktemp())])
        appliance = Appliance(config, reactor)
        service = HostsService(appliance)
        service.setName("hosts")
        service.startService()
        self.addCleanup(service.stopService)
        ok = yield until(lambda: health(appliance, [service])[0], 10)
        self.assertTrue(ok, health(appliance, [service]))
        self.assertEqual(health(appliance, [service])[1]["store"], "ok")
        before = time.time()
        self.cluster.stop()
        try:
            down = yield until(lambda: not health(appliance, [service])[0], 10)
            self.assertTrue(down)
            report = health(appliance, [service])[1]
            self.assertTrue(report["store"].startswith("unavailable since "), report)
            since = time.mktime(time.strptime(report["store"][len("unavailable since "):],
                                              "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
            self.assertLess(abs(since - before), 5)
            self.assertFalse(report["ok"])
        finally:
            self.cluster.start()
        back = yield until(lambda: health(appliance, [service])[0], 15)
        self.assertTrue(back, health(appliance, [service]))
        self.assertEqual(health(appliance, [service])[1]["store"], "ok")


class _Writer:
    """
    A datagram writer that sends nothing.
    """

    def write(self, *a, **kw):
        return True

    def __getattr__(self, name):
        return lambda *a, **kw: None


class SessionOwnerTests(TestCase):
    """
    Two imagecast controllers (two appliances) with their session locks on
    one database.
    """

    def setUp(self):
        from provisioner.imagecast.controller import Controller
        self.cluster = pglab.cluster(self)
        self.dsn = self.cluster.createDatabase()
        root = self.mktemp()
        os.makedirs(root)
        with open(os.path.join(root, "web.img"), "wb") as f:
            f.write(b"x" * 50000)
        config = loadConfig(text="imagecast:\n  enabled: true\n  authentication: none\n"
                            "  root: %s\n" % (root,))["imagecast"]
        self.clock = task.Clock()
        self.controllers = {}
        for name, address in (("a", "198.18.195.1:7010"), ("b", "198.18.195.2:7010")):
            controller = Controller(self.clock, config, writerFactory=lambda g, p: _Writer(),
                                    hasher=lambda p: defer.succeed("SHA"))
            controller.sessionLocks = SessionLocks(self.dsn, reactor, address)
            self.addCleanup(controller.sessionLocks.close)
            self.controllers[name] = controller

    @defer.inlineCallbacks
    def test_oneApplianceSends(self):
        """
        If a starts the session of web.img, b is refused one (naming a's
        control channel, kept in C{elsewhere}) and its imaging side says
        the session runs at a (where orders point), a's says here; when a's
        session ends its lock is released and b starts one.
        """
        from provisioner.imagecast import commands
        from provisioner.imagecast.service import LocatedImagingSessions
        a, b = self.controllers["a"], self.controllers["b"]
        session = yield a.startSession("web.img", minReceivers=2, maxWait=600)
        e = yield self.assertFailure(b.startSession("web.img", minReceivers=2, maxWait=600),
                                     commands.BadRequest)
        self.assertIn("198.18.195.1:7010", str(e))
        self.assertEqual(b.sessions, {})
        self.assertEqual(b.elsewhere, {"web.img": "198.18.195.1:7010"})
        where = yield LocatedImagingSessions(b, None).where("web.img")
        self.assertEqual(where, ("198.18.195.1", 7010))
        where = yield LocatedImagingSessions(a, None).where("web.img")
        self.assertIsNone(where)
        self.assertFalse(b.autoStart("web.img") and b.sessions)
        a._sessionDone(None, session)
        yield a.sessionLocks.database.run(lambda c: None)  # the release is done
        other = yield b.startSession("web.img", minReceivers=2, maxWait=600)
        self.assertIn(other.id, b.sessions)
        a.stop()
        b.stop()


class OrdersPointAtHolderTests(TestCase):
    """
    The orders of an imaging host name the appliance whose session sends
    its image.
    """

    def setUp(self):
        from tests import test_imaging
        for name in ("writeInventory", "stop", "get", "boot", "orders"):
            setattr(self, name, getattr(test_imaging.OrdersTests, name).__get__(self))
        test_imaging.OrdersTests.setUp(self)

    @defer.inlineCallbacks
    def test_ordersPointAtHolder(self):
        """
        If the imaging side says another appliance sends the image
        (C{where}), the orders' C{provisioner.imagecast} is that
        appliance's control channel; the rest is as ever.
        """
        self.imaging.where = lambda image: defer.succeed(("198.18.195.2", 7011))
        token, _ = yield self.boot()
        code, _, text = yield self.orders("web01", token)
        self.assertEqual(code, 200, text)
        self.assertIn("provisioner.imagecast=198.18.195.2:7011\n", text)
        self.assertIn("provisioner.image=web.img\n", text)
        del self.imaging.where
        code, _, text = yield self.orders("web01", token)
        self.assertIn("provisioner.imagecast=198.18.0.1:7010\n", text)


E2E_SUBNET = 197

E2E_INVENTORY = """\
profiles:
  installer:
    kernel: debian/linux
    initrd: [debian/initrd.gz]
    cmdline: auto=true
hosts:
  alpha:
    mac: 52:54:00:00:00:01
    profile: installer
"""

E2E_CONFIG = """\
tftp:
  enabled: false
dhcp:
  enabled: false
http:
  enabled: true
  address: %(ip)s
  port: 8080
  root: %(root)s
menus:
  enabled: true
inventory:
  enabled: true
  file: %(inventory)s
hosts:
  enabled: true
store:
  backend: postgresql
  dsn: '%(dsn)s'
  appliance_id: %(id)s
log:
  level: info
"""


class TwoAppliancesHostsTests(TestCase):
    """
    Two appliances (twistd, each in its own network namespace on one
    bridge) on one database: a host's state changed through one is served
    by the other at once.
    """

    def setUp(self):
        from tests.netlab import Appliance as Twistd, NetLab, requireE2E
        requireE2E(root=True, netns=True, tools=["ip", "curl"])
        self.cluster = pglab.cluster(self)
        self.dsn = self.cluster.createDatabase()
        self.lab = NetLab(hosts=2, subnet=E2E_SUBNET)
        self.addCleanup(self.lab.close)
        directory = os.path.abspath(self.mktemp())
        root = os.path.join(directory, "root")
        os.makedirs(os.path.join(root, "debian"))
        inventory = os.path.join(directory, "inventory.yaml")
        with open(inventory, "w") as f:
            f.write(E2E_INVENTORY)
        self.appliances = {}
        for name, host in zip("ab", self.lab.hosts):
            os.makedirs(os.path.join(directory, name))
            appliance = Twistd(os.path.join(directory, name), E2E_CONFIG % {
                "ip": host.ip, "root": root, "inventory": inventory, "dsn": self.dsn,
                "id": name}, host=host)
            self.addCleanup(appliance.kill)
            appliance.host = host
            self.appliances[name] = appliance
        for appliance in self.appliances.values():
            appliance.start()
        # the lifecycle is loaded and the listener listening on both
        for appliance in self.appliances.values():
            appliance.waitLog(r"hosts: lifecycle store", 15)
        self.client = self.lab.addHost()

    def tail(self):
        return "\n".join("--- %s ---\n%s" % (n, a.log()[-2500:])
                         for n, a in sorted(self.appliances.items()))

    def curl(self, appliance, path, *extra, host=None):
        url = "http://%s:8080%s" % (self.appliances[appliance].host.ip, path)
        result = (host or self.client).run(["curl", "-sS", "-m", "5", "-w", "\n%{http_code}"] +
                                           list(extra) + [url], check=False)
        text = result.stdout.decode(errors="replace")
        body, _, code = text.rpartition("\n")
        return code, body

    def menu(self, appliance):
        """
        The iPXE menu C{appliance} serves alpha (by MAC, over HTTP, as
        C{unknown.j2} chains to): C{(token or None, text)}.
        """
        code, text = self.curl(appliance, "/menus/52-54-00-00-00-01/boot.ipxe")
        self.assertEqual(code, "200", text + self.tail())
        words = dict(w.split("=", 1) for w in text.split() if w.startswith("provisioner."))
        return words.get("provisioner.token"), text

    def test_stateSeenByTheOther(self):
        """
        If b serves alpha's deploy entry (a token minted by b) and alpha's
        installed system calls back C{deployed} through a with that token,
        b's very next menu for alpha is its local disk; if alpha is
        redeployed through a, b's next menu is the deploy entry again.
        """
        from tests.netlab import waitFor
        token, text = self.menu("b")
        self.assertIsNotNone(token, text)
        self.assertNotIn("booting the local disk", text)
        # a learns b's token from the notification of its write
        accepted = waitFor(lambda: self.curl(
            "a", "/api/v1/hosts/alpha/callback?token=%s&state=deployed" % (token,),
            "-X", "POST")[0] == "200", 2, interval=0.1)
        self.assertTrue(accepted, self.tail())
        started = time.monotonic()
        local = waitFor(lambda: "booting the local disk" in self.menu("b")[1], 2,
                        interval=0.02)
        self.assertTrue(local, self.menu("b")[1] + self.tail())
        self.assertLess(time.monotonic() - started, 1.0)
        self.assertIsNone(self.menu("b")[0])
        a = self.appliances["a"]
        code, text = self.curl("a", "/api/v1/hosts/alpha/redeploy", "-X", "POST", "-H",
                               "Content-Type: application/json", "-d", "{}", host=a.host)
        self.assertEqual(code, "200", text + self.tail())
        started = time.monotonic()
        deploy = waitFor(lambda: self.menu("b")[0] is not None, 2, interval=0.02)
        self.assertTrue(deploy, self.menu("b")[1] + self.tail())
        self.assertLess(time.monotonic() - started, 1.0)
        self.assertIn("hosts: alpha is ready (changed on appliance a", self.appliances["b"].log())
