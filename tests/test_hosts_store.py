# -*- test-case-name: tests.test_hosts_store -*-
"""
Tests for L{provisioner.store}: the L{IHostStore} interface and its SQLite
implementation (inline, and with its writer thread), and the persistence of
the host lifecycle across a restart of the hosts service.
"""

import os
import sqlite3

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from provisioner.appliance import Appliance
from provisioner.config import ConfigError, loadConfig
from provisioner.hosts.errors import Refused
from provisioner.hosts.service import HostsService, openStore
from provisioner.menus.service import MenuService
from provisioner.store.interfaces import IHostStore
from provisioner.store.records import Event, HostRecord, Machine, Token
from provisioner.store.sqlite import FILENAME, SQLiteHostStore, StoreVersionError
from tests.fakes import INVENTORY


def host(name="web01", state="ready", since=10.0, **fields):
    values = dict(name=name, state=state, since=since, reason="why", macs=["52:54:00:00:00:01"],
                  profile=None, adopted=False, created=5.0)
    values.update(fields)
    return HostRecord(**values)


def event(key="web01", time=10.0, source=None, target="ready", why="why"):
    return Event(key=key, time=time, source=source, target=target, why=why)


def machine(mac="52:54:00:00:00:09", last=20.0, **fields):
    values = dict(mac=mac, arch=7, vendor_class="PXEClient:Arch:00007", uuid=None,
                  ip="198.18.0.9", first_seen=15.0, last_seen=last,
                  files=[{"path": "ipxe.efi", "protocol": "tftp", "time": 15.0}])
    values.update(fields)
    return Machine(**values)


def token(digest="d1", host="web01", minted=10.0, **fields):
    values = dict(digest=digest, host=host, minted=minted, expires=minted + 100, used=None,
                  ip="198.18.0.11", paths=["images/debian/linux"])
    values.update(fields)
    return Token(**values)


class SQLiteStoreTests(SynchronousTestCase):
    """
    Tests for L{SQLiteHostStore} writing inline.
    """

    def setUp(self):
        self.path = os.path.join(self.mktemp(), "state", FILENAME)
        self.store = self.open()

    def open(self):
        store = SQLiteHostStore(self.path, threaded=False)
        self.addCleanup(store.close)
        return store

    def reopen(self):
        self.successResultOf(self.store.close())
        self.store = self.open()
        return self.successResultOf(self.store.load())

    def test_interface(self):
        """
        The SQLite store provides L{IHostStore}.
        """
        self.assertTrue(verifyObject(IHostStore, self.store))
        self.assertEqual(self.store.location, self.path)

    def test_empty(self):
        """
        A new file (its directory made) holds nothing.
        """
        snapshot = self.successResultOf(self.store.load())
        self.assertEqual((snapshot.hosts, snapshot.events, snapshot.machines, snapshot.tokens),
                         ([], {}, [], []))
        self.assertTrue(os.path.exists(self.path))

    def test_reopenKeepsEverything(self):
        """
        If the store is closed and opened again, hosts, events, machines and
        tokens read back equal to what was saved.
        """
        self.successResultOf(self.store.saveHost(host(), event()))
        self.successResultOf(self.store.saveHost(
            host(state="deploying", since=11.0), event(time=11.0, source="ready",
                                                       target="deploying")))
        self.successResultOf(self.store.addEvent(event(time=12.0, source="deploying",
                                                       target="deploying", why="50%")))
        self.successResultOf(self.store.saveMachine(machine(), event(
            key="52:54:00:00:00:09", time=15.0, target="discovered")))
        self.successResultOf(self.store.saveToken(token()))
        snapshot = self.reopen()
        self.assertEqual(snapshot.hosts, [host(state="deploying", since=11.0)])
        self.assertEqual([e.why for e in snapshot.events["web01"]], ["why", "why", "50%"])
        self.assertEqual(snapshot.events["web01"][1], event(time=11.0, source="ready",
                                                            target="deploying"))
        self.assertEqual(snapshot.machines, [machine()])
        self.assertEqual(snapshot.tokens, [token()])

    def test_eventsTrimmed(self):
        """
        If an event is saved with C{keep}, only the newest C{keep} of its key
        stay; other keys are untouched.
        """
        self.successResultOf(self.store.addEvent(event(key="other", why="other")))
        for i in range(5):
            self.successResultOf(self.store.addEvent(event(time=float(i), why=str(i)), keep=3))
        self.assertEqual([e.why for e in self.successResultOf(self.store.events("web01"))],
                         ["2", "3", "4"])
        self.assertEqual([e.why for e in self.successResultOf(self.store.events("web01", 2))],
                         ["3", "4"])
        self.assertEqual(len(self.successResultOf(self.store.events("other"))), 1)

    def test_adoptMovesHistory(self):
        """
        If a machine is adopted, it is gone, the host is saved and the
        machine's events are the host's, followed by the adoption's.
        """
        mac = "52:54:00:00:00:09"
        self.successResultOf(self.store.saveMachine(machine(), event(key=mac,
                                                                     target="discovered")))
        adopted = host(name="gamma", macs=[mac], profile="installer", adopted=True)
        self.successResultOf(self.store.adopt(mac, adopted, event(
            key="gamma", time=30.0, source="discovered", target="ready", why="adopted")))
        snapshot = self.reopen()
        self.assertEqual(snapshot.machines, [])
        self.assertEqual(snapshot.hosts, [adopted])
        self.assertEqual([(e.key, e.target) for e in snapshot.events["gamma"]],
                         [("gamma", "discovered"), ("gamma", "ready")])
        self.assertNotIn(mac, snapshot.events)

    def test_forget(self):
        """
        Forgetting a machine deletes it and its events; forgetting tokens
        deletes those tokens only.
        """
        mac = "52:54:00:00:00:09"
        self.successResultOf(self.store.saveMachine(machine(), event(key=mac,
                                                                     target="discovered")))
        self.successResultOf(self.store.saveToken(token("a")))
        self.successResultOf(self.store.saveToken(token("b", minted=11.0)))
        self.successResultOf(self.store.forgetMachine(mac))
        self.successResultOf(self.store.forgetTokens(["a"]))
        snapshot = self.reopen()
        self.assertEqual((snapshot.machines, snapshot.events), ([], {}))
        self.assertEqual([t.digest for t in snapshot.tokens], ["b"])

    def test_replace(self):
        """
        Saving a host, machine or token again replaces it (by name, MAC,
        digest).
        """
        self.successResultOf(self.store.saveHost(host()))
        self.successResultOf(self.store.saveHost(host(state="deployed")))
        self.successResultOf(self.store.saveToken(token()))
        self.successResultOf(self.store.saveToken(token(used=50.0)))
        snapshot = self.reopen()
        self.assertEqual([h.state for h in snapshot.hosts], ["deployed"])
        self.assertEqual([t.used for t in snapshot.tokens], [50.0])

    def test_failureIsolated(self):
        """
        If one call fails (here a host without a state), its Deferred fails
        and nothing of it is saved; the store goes on.
        """
        self.failureResultOf(self.store.saveHost(host(state=None), event()),
                             sqlite3.IntegrityError)
        self.successResultOf(self.store.saveHost(host(name="ok")))
        snapshot = self.reopen()
        self.assertEqual([h.name for h in snapshot.hosts], ["ok"])
        self.assertEqual(snapshot.events, {})

    def test_closed(self):
        """
        After close, writes fail instead of being lost silently.
        """
        self.successResultOf(self.store.close())
        self.failureResultOf(self.store.saveHost(host()), RuntimeError)

    def test_newerFileRefused(self):
        """
        A file written by a newer schema is refused with a clear error.
        """
        self.successResultOf(self.store.close())
        connection = sqlite3.connect(self.path)
        connection.execute("PRAGMA user_version=99")
        connection.close()
        e = self.assertRaises(StoreVersionError, SQLiteHostStore, self.path, threaded=False)
        self.assertIn("schema version 99", str(e))

    def test_walJournal(self):
        """
        The file uses the WAL journal.
        """
        connection = sqlite3.connect(self.path)
        self.addCleanup(connection.close)
        self.assertEqual(connection.execute("PRAGMA journal_mode").fetchone()[0], "wal")


class ThreadedStoreTests(TestCase):
    """
    Tests for L{SQLiteHostStore} with its writer thread (the real reactor).
    """

    @defer.inlineCallbacks
    def test_writesOffTheReactorThread(self):
        """
        Writes submitted together are committed (in fewer transactions than
        calls) and fire in the reactor thread; after close, a new store reads
        them back in order.
        """
        path = os.path.join(self.mktemp(), FILENAME)
        store = SQLiteHostStore(path, reactor)
        writes = [store.saveHost(host(), event())]
        for i in range(50):
            writes.append(store.addEvent(event(time=float(i), source="ready", target="ready",
                                               why=str(i)), keep=20))
        yield defer.gatherResults(writes)
        self.assertLess(store.batches, 51)
        events = yield store.events("web01")
        self.assertEqual([e.why for e in events], [str(i) for i in range(30, 50)])
        yield store.close()
        again = SQLiteHostStore(path, reactor)
        snapshot = yield again.load()
        yield again.close()
        self.assertEqual([h.name for h in snapshot.hosts], ["web01"])
        self.assertEqual(len(snapshot.events["web01"]), 20)


class ServicePersistenceTests(SynchronousTestCase):
    """
    The hosts service keeps states and events in its state directory: a new
    service (a restart) finds them.
    """

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.inventory = os.path.join(self.dir, "inventory.yaml")
        with open(self.inventory, "w") as f:
            f.write(INVENTORY)
        self.clock = task.Clock()
        self.clock.advance(1000)

    def start(self):
        config = loadConfig(overrides=[
            ("menus.enabled", True), ("inventory.enabled", True),
            ("inventory.file", self.inventory), ("hosts.enabled", True),
            ("hosts.state_directory", os.path.join(self.dir, "state"))])
        appliance = Appliance(config, self.clock)
        hosts = HostsService(appliance)
        menus = MenuService(appliance, watch=False)
        hosts.startService()
        menus.startService()
        return appliance, hosts, menus

    def stop(self, hosts, menus):
        menus.stopService()
        self.successResultOf(hosts.stopService())

    def test_restartKeepsStatesAndEvents(self):
        """
        If a host is deployed and a machine discovered, then the service is
        stopped and another started on the same state directory, the host
        is still deployed with the same timeline, the machine still
        discovered, and the deployed host still boots its local disk.
        """
        appliance, hosts, menus = self.start()
        book = appliance.hosts
        self.assertIsInstance(hosts.store, SQLiteHostStore)
        self.assertIsNone(hosts.store._committer)  # task.Clock: inline writes
        decision = book.boot(_facts("52:54:00:00:00:01", "198.18.0.11"),
                             menus.renderer.resolution(_facts("52:54:00:00:00:01")),
                             server={"http_url": "http://h", "images_prefix": "images"})
        book.fetched("tftp", "198.18.0.11", "images/debian/linux")
        self.successResultOf(book.callback("alpha", decision.token, "deployed", "ok", "p"))
        book.boot(_facts("52:54:00:00:00:09", "198.18.0.19"),
                  menus.renderer.resolution(_facts("52:54:00:00:00:09")))
        before = book.eventsOf("alpha")
        self.stop(hosts, menus)

        appliance, hosts, menus = self.start()
        book = appliance.hosts
        self.assertEqual(book.hostInfo("alpha")["state"], "deployed")
        self.assertEqual(book.eventsOf("alpha"), before)
        self.assertEqual([e["target"] for e in before], ["ready", "deploying", "deployed"])
        self.assertEqual([m["mac"] for m in book.machinesList()], ["52:54:00:00:00:09"])
        text, _ = menus.render("ipxe", mac="52:54:00:00:00:01", arch=0)
        self.assertIn("sanboot --no-describe --drive 0x80", text)
        self.stop(hosts, menus)

    def test_usedTokenStaysUsed(self):
        """
        A token used before a restart is refused after it.
        """
        appliance, hosts, menus = self.start()
        book = appliance.hosts
        decision = book.boot(_facts("52:54:00:00:00:01", "198.18.0.11"),
                             menus.renderer.resolution(_facts("52:54:00:00:00:01")))
        self.successResultOf(book.callback("alpha", decision.token, "deployed", None, "p"))
        self.stop(hosts, menus)
        appliance, hosts, menus = self.start()
        e = self.assertRaises(Refused, appliance.hosts.callback, "alpha", decision.token,
                              "deployed", None, "p")
        self.assertEqual(str(e), "the token was already used")
        self.assertEqual(len(self.flushLoggedErrors()), 0)
        self.stop(hosts, menus)

    def test_unusableStore(self):
        """
        If the state directory cannot hold the database, opening the store
        is a configuration error naming the key.
        """
        blocker = os.path.join(self.dir, "file")
        with open(blocker, "w") as f:
            f.write("x")
        config = loadConfig(overrides=[("hosts.state_directory", blocker)])
        e = self.assertRaises(ConfigError, openStore, config["hosts"], self.clock)
        self.assertEqual(e.key, "hosts.state_directory")


def _facts(mac, ip=None):
    from provisioner.menus.render import ClientFacts
    return ClientFacts(mac=mac, ip=ip, arch=0)
