"""
Tests for the C{store} section of the configuration
(L{provisioner.store.schema}).
"""

from twisted.trial.unittest import SynchronousTestCase

from provisioner.config import ConfigError, loadConfig


class StoreSectionTests(SynchronousTestCase):
    """
    C{store.backend}, C{store.dsn} and their checks.
    """

    def test_defaults(self):
        """
        By default the store is SQLite, with no DSN, failing over after 3
        seconds of missed heartbeats sent every second.
        """
        store = loadConfig()["store"]
        self.assertEqual((store["backend"], store["dsn"], store["failover_after"],
                          store["heartbeat_interval"], store["migrate"]),
                         ("sqlite", None, 3.0, 1.0, True))

    def test_postgresqlNeedsDSN(self):
        """
        The postgresql backend without a DSN is refused, naming C{store.dsn};
        with one it loads.
        """
        e = self.assertRaises(ConfigError, loadConfig,
                              overrides=[("store.backend", "postgresql")])
        self.assertEqual(e.key, "store.dsn")
        store = loadConfig(overrides=[("store.backend", "postgresql"),
                                      ("store.dsn", "dbname=p")])["store"]
        self.assertEqual(store["dsn"], "dbname=p")

    def test_unknownBackendAndEmptyId(self):
        """
        A backend other than sqlite and postgresql, and an empty appliance
        id, are refused by key.
        """
        e = self.assertRaises(ConfigError, loadConfig, overrides=[("store.backend", "mysql")])
        self.assertEqual(e.key, "store.backend")
        e = self.assertRaises(ConfigError, loadConfig,
                              overrides=[("store.appliance_id", " ")])
        self.assertEqual(e.key, "store.appliance_id")
