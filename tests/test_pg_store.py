"""
Tests for the store backends behind L{IHostStore}: the same tests run
against the embedded SQLite store and against PostgreSQL
(L{provisioner.store.postgres}, a throwaway cluster of L{tests.pglab});
then what only PostgreSQL has: versioned migrations, the connection
dropped and found again, the C{provisioner db} command, and the hosts
service opening the store C{store.backend} names.
"""

import io
import os
from contextlib import redirect_stderr, redirect_stdout

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from provisioner.appliance import Appliance
from provisioner.config import ConfigError, loadConfig
from provisioner.hosts.service import HostsService, openStore
from provisioner.store import postgres
from provisioner.store.interfaces import IHostStore, StoreUnavailable
from provisioner.store.migrations import MIGRATIONS
from provisioner.store.sqlite import FILENAME, SQLiteHostStore
from tests import pglab
from tests.test_hosts_store import event, host, machine, token


class _HostStoreTests:
    """
    What every L{IHostStore} does; subclasses say how to open one.
    """

    def open(self):
        raise NotImplementedError()

    def setUp(self):
        self.store = self.open()

    @defer.inlineCallbacks
    def reopen(self):
        yield self.store.close()
        self.store = self.open()
        snapshot = yield self.store.load()
        return snapshot

    def test_interface(self):
        """
        The store provides L{IHostStore}.
        """
        self.assertTrue(verifyObject(IHostStore, self.store))

    @defer.inlineCallbacks
    def test_empty(self):
        """
        A new store holds nothing.
        """
        snapshot = yield self.store.load()
        self.assertEqual((snapshot.hosts, snapshot.events, snapshot.machines, snapshot.tokens),
                         ([], {}, [], []))

    @defer.inlineCallbacks
    def test_reopenKeepsEverything(self):
        """
        If the store is closed and opened again, hosts, events, machines and
        tokens read back equal to what was saved.
        """
        yield self.store.saveHost(host(), event())
        yield self.store.saveHost(host(state="deploying", since=11.0),
                                  event(time=11.0, source="ready", target="deploying"))
        yield self.store.addEvent(event(time=12.0, source="deploying", target="deploying",
                                        why="50%"))
        yield self.store.saveMachine(machine(), event(key="52:54:00:00:00:09", time=15.0,
                                                      target="discovered"))
        yield self.store.saveToken(token())
        snapshot = yield self.reopen()
        self.assertEqual(snapshot.hosts, [host(state="deploying", since=11.0)])
        self.assertEqual([e.why for e in snapshot.events["web01"]], ["why", "why", "50%"])
        self.assertEqual(snapshot.events["web01"][1], event(time=11.0, source="ready",
                                                            target="deploying"))
        self.assertEqual(snapshot.machines, [machine()])
        self.assertEqual(snapshot.tokens, [token()])

    @defer.inlineCallbacks
    def test_eventsTrimmed(self):
        """
        If an event is saved with C{keep}, only the newest C{keep} of its key
        stay; C{events} reads them oldest first, the newest C{limit}.
        """
        yield self.store.addEvent(event(key="other", why="other"))
        for i in range(5):
            yield self.store.addEvent(event(time=float(i), why=str(i)), keep=3)
        events = yield self.store.events("web01")
        self.assertEqual([e.why for e in events], ["2", "3", "4"])
        events = yield self.store.events("web01", 2)
        self.assertEqual([e.why for e in events], ["3", "4"])
        events = yield self.store.events("other")
        self.assertEqual(len(events), 1)

    @defer.inlineCallbacks
    def test_adoptMovesHistory(self):
        """
        If a machine is adopted, it is gone, the host is saved and the
        machine's events are the host's, followed by the adoption's.
        """
        mac = "52:54:00:00:00:09"
        yield self.store.saveMachine(machine(), event(key=mac, target="discovered"))
        adopted = host(name="gamma", macs=[mac], profile="installer", adopted=True)
        yield self.store.adopt(mac, adopted, event(key="gamma", time=30.0,
                                                   source="discovered", target="ready",
                                                   why="adopted"))
        snapshot = yield self.reopen()
        self.assertEqual(snapshot.machines, [])
        self.assertEqual(snapshot.hosts, [adopted])
        self.assertEqual([(e.key, e.target) for e in snapshot.events["gamma"]],
                         [("gamma", "discovered"), ("gamma", "ready")])

    @defer.inlineCallbacks
    def test_forgetAndReplace(self):
        """
        Forgetting a machine deletes it and its events; forgetting tokens
        deletes those only; saving again replaces (by name, digest).
        """
        mac = "52:54:00:00:00:09"
        yield self.store.saveMachine(machine(), event(key=mac, target="discovered"))
        yield self.store.saveToken(token("a"))
        yield self.store.saveToken(token("b", minted=11.0))
        yield self.store.saveToken(token("b", minted=11.0, used=50.0))
        yield self.store.saveHost(host())
        yield self.store.saveHost(host(state="deployed"))
        yield self.store.forgetMachine(mac)
        yield self.store.forgetTokens(["a"])
        snapshot = yield self.reopen()
        self.assertEqual((snapshot.machines, snapshot.events), ([], {}))
        self.assertEqual([(t.digest, t.used) for t in snapshot.tokens], [("b", 50.0)])
        self.assertEqual([h.state for h in snapshot.hosts], ["deployed"])

    @defer.inlineCallbacks
    def test_failureIsolated(self):
        """
        If one call fails (a host without a state), its Deferred fails and
        nothing of it is saved; the store goes on.
        """
        with self.assertRaises(Exception):
            yield self.store.saveHost(host(state=None), event())
        yield self.store.saveHost(host(name="ok"))
        snapshot = yield self.reopen()
        self.assertEqual([h.name for h in snapshot.hosts], ["ok"])
        self.assertEqual(snapshot.events, {})


class SQLiteHostStoreTests(_HostStoreTests, TestCase):
    """
    The shared tests against the SQLite store.
    """

    def setUp(self):
        self.path = os.path.join(self.mktemp(), FILENAME)
        _HostStoreTests.setUp(self)
        self.addCleanup(lambda: self.store.close())

    def open(self):
        return SQLiteHostStore(self.path, threaded=False)


class PostgresHostStoreTests(_HostStoreTests, TestCase):
    """
    The shared tests against PostgreSQL, each test on a new database.
    """

    def setUp(self):
        self.cluster = pglab.cluster(self)
        self.dsn = self.cluster.createDatabase()
        postgres.upgrade(self.dsn)
        _HostStoreTests.setUp(self)
        self.addCleanup(lambda: self.store.close())

    def open(self):
        return postgres.PostgresHostStore(postgres.Database(self.dsn, reactor))

    def test_location(self):
        """
        The store's location is its DSN without the password.
        """
        self.assertEqual(self.store.location, self.dsn)
        self.assertEqual(postgres.redact("host=h password=s3cret dbname=d"),
                         "host=h password=*** dbname=d")
        self.assertEqual(postgres.redact("postgresql://u:s3cret@h/d"), "postgresql://u:***@h/d")

    @defer.inlineCallbacks
    def test_ordered(self):
        """
        Calls submitted one after the other without waiting are applied in
        that order (the last save wins).
        """
        waits = [self.store.saveHost(host(state="ready", reason=str(i))) for i in range(30)]
        yield defer.gatherResults(waits)
        snapshot = yield self.store.load()
        self.assertEqual([h.reason for h in snapshot.hosts], ["29"])

    @defer.inlineCallbacks
    def test_databaseGoneAndBack(self):
        """
        If the server stops, calls fail with L{StoreUnavailable} (not a
        driver error, not a hang); once it is back, the same store works
        again without being reopened, and what was saved before is there.
        """
        yield self.store.saveHost(host(name="before"))
        self.cluster.stop()
        try:
            with self.assertRaises(StoreUnavailable):
                yield self.store.saveHost(host(name="during"))
            with self.assertRaises(StoreUnavailable):
                yield self.store.load()
        finally:
            self.cluster.start()
        yield self.store.saveHost(host(name="after"))
        snapshot = yield self.store.load()
        self.assertEqual([h.name for h in snapshot.hosts], ["after", "before"])


class MigrationTests(TestCase):
    """
    The versioned schema of L{provisioner.store.postgres.upgrade}.
    """

    def setUp(self):
        self.cluster = pglab.cluster(self)
        self.dsn = self.cluster.createDatabase()

    def test_upgradeOnce(self):
        """
        An empty database is brought to the newest version, each migration
        recorded; a second upgrade applies nothing.
        """
        self.assertEqual(postgres.schemaVersion(self.dsn), 0)
        self.assertEqual(postgres.upgrade(self.dsn), [v for v, _, _ in MIGRATIONS])
        self.assertEqual(postgres.upgrade(self.dsn), [])
        self.assertEqual(postgres.schemaVersion(self.dsn), postgres.SCHEMA_VERSION)
        rows = self.cluster.query(self.dsn, "SELECT version FROM schema_migrations")
        self.assertEqual([r[0] for r in rows], [v for v, _, _ in MIGRATIONS])
        tables = {r[0] for r in self.cluster.query(
            self.dsn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        self.assertTrue({"hosts", "events", "machines", "tokens", "leases",
                         "appliances"} <= tables)

    def test_laterMigration(self):
        """
        A migration added later is applied on top of the existing schema,
        alone; a failing one leaves the version where it was.
        """
        postgres.upgrade(self.dsn)
        extra = MIGRATIONS + [(99, "test", ["CREATE TABLE extra (x INTEGER)"])]
        self.assertEqual(postgres.upgrade(self.dsn, migrations=extra), [99])
        broken = extra + [(100, "broken", ["CREATE TABLE extra (x INTEGER)"])]
        self.assertRaises(Exception, postgres.upgrade, self.dsn, migrations=broken)
        self.assertEqual(postgres.schemaVersion(self.dsn), 99)

    def test_newerRefused(self):
        """
        A database migrated by a newer provisioner is refused by name.
        """
        postgres.upgrade(self.dsn, migrations=MIGRATIONS + [(99, "future", [])])
        e = self.assertRaises(postgres.SchemaError, postgres.upgrade, self.dsn)
        self.assertIn("schema version 99", str(e))

    def test_checkSchemaWithoutMigrate(self):
        """
        With C{store.migrate: false} an old schema is refused with the
        command that fixes it; with the default it is migrated.
        """
        section = dict(loadConfig(overrides=[("store.backend", "postgresql"),
                                             ("store.dsn", self.dsn),
                                             ("store.migrate", False)])["store"])
        e = self.assertRaises(postgres.SchemaError, postgres.checkSchema, section)
        self.assertIn("provisioner db upgrade", str(e))
        section["migrate"] = True
        self.assertEqual(postgres.checkSchema(section), [1])

    def test_unreachable(self):
        """
        A database that cannot be reached is L{StoreUnavailable} naming the
        DSN without its password.
        """
        dsn = "host=%s port=1 dbname=x password=s3cret" % (self.cluster.socketDir,)
        e = self.assertRaises(StoreUnavailable, postgres.upgrade, dsn)
        self.assertIn("password=***", str(e))
        self.assertNotIn("s3cret", str(e))


class CommandTests(TestCase):
    """
    C{provisioner db upgrade|status --config FILE}.
    """

    def setUp(self):
        self.cluster = pglab.cluster(self)
        self.dsn = self.cluster.createDatabase()
        self.config = self.mktemp()
        with open(self.config, "w") as f:
            f.write("store:\n  backend: postgresql\n  dsn: '%s'\n" % (self.dsn,))

    def run_cli(self, argv):
        from provisioner.cli import main
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            status = main(argv)
        return status, out.getvalue(), err.getvalue()

    def test_upgradeThenStatus(self):
        """
        C{db status} says the schema is behind (status 1); C{db upgrade}
        applies the migrations and says which; then status is current (0).
        """
        status, out, err = self.run_cli(["db", "status", "--config", self.config])
        self.assertEqual((status, err), (1, ""))
        self.assertIn("version 0", out)
        status, out, err = self.run_cli(["db", "upgrade", "--config", self.config])
        self.assertEqual((status, err), (0, ""))
        self.assertIn("version 1", out)
        self.assertEqual(postgres.schemaVersion(self.dsn), postgres.SCHEMA_VERSION)
        status, out, err = self.run_cli(["db", "status", "--config", self.config])
        self.assertEqual(status, 0)
        self.assertIn("up to date", out)

    def test_sqliteRefused(self):
        """
        With the SQLite backend there is nothing to migrate by hand: status 2
        and why.
        """
        with open(self.config, "w") as f:
            f.write("store:\n  backend: sqlite\n")
        status, out, err = self.run_cli(["db", "upgrade", "--config", self.config])
        self.assertEqual(status, 2)
        self.assertIn("store.backend", err)

    def test_unreachable(self):
        """
        A database that cannot be reached: status 1 and one line.
        """
        with open(self.config, "w") as f:
            f.write("store:\n  backend: postgresql\n  dsn: 'host=%s port=1'\n" % (
                self.cluster.socketDir,))
        status, out, err = self.run_cli(["db", "upgrade", "--config", self.config])
        self.assertEqual(status, 1)
        self.assertEqual(len(err.strip().splitlines()), 1)


class HostsServiceTests(TestCase):
    """
    The hosts service keeps the lifecycle where C{store.backend} says.
    """

    def setUp(self):
        self.cluster = pglab.cluster(self)
        self.dsn = self.cluster.createDatabase()

    @defer.inlineCallbacks
    def test_postgresBackend(self):
        """
        With C{store.backend: postgresql}, the hosts service migrates the
        database and keeps its lifecycle there: a host saved through one
        service is loaded by another (another appliance) on the same
        database, and no SQLite file is made.
        """
        state = self.mktemp()
        config = loadConfig(overrides=[("store.backend", "postgresql"), ("store.dsn", self.dsn),
                                       ("hosts.enabled", True),
                                       ("hosts.state_directory", state)])
        store = openStore(config["hosts"], reactor, config["store"])
        self.assertIsInstance(store, postgres.PostgresHostStore)
        yield store.saveHost(host(name="shared"))
        yield store.close()
        service = HostsService(Appliance(config, reactor))
        service.startService()
        yield service.store.load()
        self.assertEqual(list(service.book.hosts), ["shared"])
        yield service.stopService()
        self.assertFalse(os.path.exists(os.path.join(state, FILENAME)))

    def test_postgresUnreachable(self):
        """
        A database that cannot be reached is a start failure naming
        C{store.dsn}.
        """
        config = loadConfig(overrides=[("store.backend", "postgresql"),
                                       ("store.dsn", "host=%s port=1" % (
                                           self.cluster.socketDir,))])
        e = self.assertRaises(ConfigError, openStore, config["hosts"], reactor,
                              config["store"])
        self.assertEqual(e.key, "store.dsn")


