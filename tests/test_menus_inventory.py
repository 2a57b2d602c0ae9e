# -*- test-case-name: tests.test_menus_inventory -*-
"""
Tests for L{provisioner.menus.inventory}: the model, lookups, merging and
validation errors that name the key and the line.
"""

import os

from twisted.trial.unittest import SynchronousTestCase

from provisioner.config import loadConfig
from provisioner.menus.inventory import InventoryError, loadInventory, parseInventory

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLE = os.path.join(os.path.dirname(HERE), "etc", "inventory.yaml")


class ModelTests(SynchronousTestCase):
    """
    Tests for lookups and merging.
    """

    def setUp(self):
        self.inventory = parseInventory("""\
defaults:
  profile: p0
  template: base
  vars: {a: 0, b: 0, c: 0, d: 0}
profiles:
  p0: {vars: {b: p0}}
  p1:
    kernel: k
    initrd: i
    vars: {b: p1, c: p1}
    template: prof
groups:
  g1: {profile: p1, vars: {c: g1, d: g1}}
  g2: {vars: {d: g2}, template: grp}
hosts:
  h1:
    mac: [52:54:00:00:00:01, AA-BB-CC-DD-EE-FF]
    uuid: 11111111-2222-3333-4444-555555555555
    groups: [g1, g2]
    vars: {e: h1}
  h2:
    mac: 52:54:00:00:00:02
    hostname: Web02.Example.Test
    template: mine
""")

    def test_sampleIsValid(self):
        """
        The shipped sample inventory is valid.
        """
        inventory = loadInventory(SAMPLE)
        self.assertIn("web01", inventory.hosts)

    def test_unquotedMAC(self):
        """
        If a MAC is written unquoted (YAML 1.1 would read a base-60 number),
        it is still read as the MAC.
        """
        self.assertEqual(self.inventory.hosts["h1"].macs,
                         ["52:54:00:00:00:01", "aa:bb:cc:dd:ee:ff"])

    def test_lookup(self):
        """
        Hosts are found by any MAC (any notation), by UUID, by hostname
        (case-insensitive), in that order.
        """
        self.assertEqual(self.inventory.lookup(mac="aabbccddeeff").name, "h1")
        self.assertEqual(self.inventory.lookup(
            uuid="11111111-2222-3333-4444-555555555555".upper()).name, "h1")
        self.assertEqual(self.inventory.lookup(hostname="web02.example.test").name, "h2")
        self.assertEqual(self.inventory.lookup(mac="52:54:00:00:00:09", hostname="h1").name,
                         "h1")
        self.assertIsNone(self.inventory.lookup(mac="52:54:00:00:00:09"))
        self.assertIsNone(self.inventory.lookup(mac="junk"))

    def test_merge(self):
        """
        Variables merge defaults < profile < groups in order < host; the
        profile comes from the last group naming one; the template from the
        first group naming one.
        """
        r = self.inventory.resolve(mac="52:54:00:00:00:01", baseVars={"a": "base", "z": 1})
        self.assertEqual(r.profile.name, "p1")
        self.assertEqual(r.vars, {"a": 0, "b": "p1", "c": "g1", "d": "g2", "e": "h1", "z": 1})
        self.assertEqual(r.template, "grp")
        self.assertEqual(r.profile.initrd, ["i"])

    def test_defaults(self):
        """
        If a client is not in the inventory, it gets the default profile,
        variables and template.
        """
        r = self.inventory.resolve(mac="52:54:00:00:00:09")
        self.assertIsNone(r.host)
        self.assertEqual(r.profile.name, "p0")
        self.assertEqual(r.template, "base")
        self.assertEqual(r.vars["b"], "p0")

    def test_hostTemplate(self):
        """
        If the host names a template, it wins.
        """
        self.assertEqual(self.inventory.resolve(mac="52:54:00:00:00:02").template, "mine")

    def test_asDict(self):
        """
        The inventory serialises to plain data (JSON API).
        """
        import json
        data = json.loads(json.dumps(self.inventory.asDict()))
        self.assertEqual(data["hosts"]["h2"]["hostname"], "Web02.Example.Test")


class ErrorTests(SynchronousTestCase):
    """
    Every validation error names the file, the line and the key.
    """

    def check(self, text, where, key, words):
        e = self.assertRaises(InventoryError, parseInventory, text, "inv.yaml")
        self.assertTrue(str(e).startswith("inv.yaml:%d: %s: " % (where, key)), str(e))
        self.assertIn(words, str(e))

    def test_badMAC(self):
        """
        A bad MAC, even inside a list.
        """
        self.check("hosts:\n  a:\n    mac: zz\n", 3, "hosts.a.mac", "not a MAC")
        self.check("hosts:\n  a:\n    mac:\n      - 52:54:00:00:00:01\n      - 12\n", 5,
                   "hosts.a.mac[1]", "not a MAC")

    def test_duplicateHost(self):
        """
        A host written twice (YAML would keep the last silently).
        """
        self.check("hosts:\n  a: {}\n  a: {}\n", 3, "hosts.a", "duplicate key")

    def test_duplicateMAC(self):
        """
        One MAC on two hosts.
        """
        self.check("hosts:\n  a: {mac: 52:54:00:00:00:01}\n  b:\n    mac: 52-54-00-00-00-01\n",
                   4, "hosts.b.mac", "already host 'a'")

    def test_unknownKey(self):
        """
        An unknown key, at the top and in an entry.
        """
        self.check("host:\n  a: {}\n", 1, "host", "unknown key")
        self.check("profiles:\n  p:\n    entries:\n      - label: a\n      - labl: b\n", 5,
                   "profiles.p.entries[1].labl", "unknown key")

    def test_missingReferences(self):
        """
        A group, a profile or a default entry that does not exist.
        """
        self.check("hosts:\n  a:\n    groups: [x]\n", 3, "hosts.a.groups", "no group")
        self.check("hosts:\n  a:\n    profile: x\n", 3, "hosts.a.profile", "no profile")
        self.check("groups:\n  g:\n    profile: x\n", 3, "groups.g.profile", "no profile")
        self.check("defaults:\n  profile: x\n", 2, "defaults.profile", "no profile")
        self.check("profiles:\n  p:\n    default_entry: x\n", 3, "profiles.p.default_entry",
                   "no entry")

    def test_types(self):
        """
        Wrong types: a mapping expected, a number expected, a bool expected.
        """
        self.check("hosts: 3\n", 1, "hosts", "must be a mapping")
        self.check("profiles:\n  p:\n    timeout: soon\n", 3, "profiles.p.timeout",
                   "whole number")
        self.check("profiles:\n  p:\n    entries:\n      - local: 1\n", 4,
                   "profiles.p.entries[0].local", "true or false")

    def test_badName(self):
        """
        A name with a slash or a space (it becomes part of a template name).
        """
        self.check("groups:\n  a/b: {}\n", 2, "groups.a/b", "must be a name")

    def test_notYAML(self):
        """
        Text that is not YAML names the line.
        """
        e = self.assertRaises(InventoryError, parseInventory, "hosts:\n  a: [\n", "inv.yaml")
        self.assertIn("inv.yaml:", str(e))
        self.assertIn("not valid YAML", str(e))

    def test_unreadable(self):
        """
        A missing file names the path.
        """
        e = self.assertRaises(InventoryError, loadInventory, "/nonexistent/inv.yaml")
        self.assertIn("/nonexistent/inv.yaml", str(e))
        self.assertIn("cannot read", str(e))

    def test_notUTF8(self):
        """
        A file that is not UTF-8 text is refused, naming the path.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"hosts:\n  \xe9t\xe9: {mac: 52:54:00:00:00:01}\n")
        e = self.assertRaises(InventoryError, loadInventory, path)
        self.assertEqual(str(e), "%s is not UTF-8 text" % (path,))

    def test_emptyIsValid(self):
        """
        An empty file is an empty inventory.
        """
        self.assertEqual(parseInventory("").hosts, {})


class SchemaTests(SynchronousTestCase):
    """
    Tests for the C{inventory} and C{menus} sections.
    """

    def test_defaultsOff(self):
        """
        Menus and the inventory are off by default.
        """
        config = loadConfig()
        self.assertFalse(config["menus"]["enabled"])
        self.assertFalse(config["inventory"]["enabled"])
        self.assertEqual(config["inventory"]["file"], "etc/inventory.yaml")
