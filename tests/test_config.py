"""
Tests for L{provisioner.config}.
"""

from twisted.trial.unittest import SynchronousTestCase

from provisioner.config import ConfigError, defaults, describe, loadConfig, parseOverride
from provisioner.yamlfile import readText


class LoadConfigTests(SynchronousTestCase):
    """
    Tests for L{loadConfig}.
    """

    def test_defaults(self):
        """
        If no file is given, the embedded defaults are safe: TFTP on loopback,
        an unprivileged port, DHCP off.
        """
        config = loadConfig()
        self.assertEqual(config["tftp"]["address"], "127.0.0.1")
        self.assertGreater(config["tftp"]["port"], 1023)
        self.assertFalse(config["dhcp"]["enabled"])
        self.assertEqual(config, defaults())

    def test_fileValues(self):
        """
        If the YAML sets a key, the value is taken and the other keys keep
        their defaults.
        """
        config = loadConfig("p.yaml", text="tftp:\n  port: 1069\n  windowsize_max: 32\n")
        self.assertEqual(config["tftp"]["port"], 1069)
        self.assertEqual(config["tftp"]["windowsize_max"], 32)
        self.assertEqual(config["tftp"]["blksize_max"], defaults()["tftp"]["blksize_max"])

    def test_unknownKey(self):
        """
        If the YAML has an unknown key, the error names the key and its line.
        """
        e = self.assertRaises(ConfigError, loadConfig, "p.yaml",
                              text="tftp:\n  port: 1069\n  prot: 3\n")
        self.assertIn("p.yaml:3", str(e))
        self.assertIn("tftp.prot", str(e))
        self.assertIn("unknown key", str(e))

    def test_renamedSection(self):
        """
        If the YAML has the old C{multicast} section of image multicast, the
        error names its new name, C{imagecast}, and the line.
        """
        e = self.assertRaises(ConfigError, loadConfig, "p.yaml",
                              text="tftp:\n  port: 1069\nmulticast:\n  enabled: true\n")
        self.assertIn("p.yaml:3", str(e))
        self.assertIn("use imagecast", str(e))

    def test_badValue(self):
        """
        If a value is out of range, the error names the key, the line and the
        allowed range.
        """
        e = self.assertRaises(ConfigError, loadConfig, "p.yaml",
                              text="\ntftp:\n  blksize_max: 70000\n")
        self.assertIn("p.yaml:3: tftp.blksize_max: must be at most 65464", str(e))

    def test_wrongType(self):
        """
        If a value has the wrong type, the error says what was expected.
        """
        e = self.assertRaises(ConfigError, loadConfig, "p.yaml", text="tftp:\n  port: abc\n")
        self.assertIn("must be a whole number", str(e))

    def test_badYAML(self):
        """
        If the file is not YAML, the error says so with the line.
        """
        e = self.assertRaises(ConfigError, loadConfig, "p.yaml", text="tftp:\n  port: [1\n")
        self.assertIn("p.yaml:", str(e))
        self.assertIn("YAML", str(e))

    def test_notMapping(self):
        """
        If the top level or a section is not a mapping, the error says so.
        """
        self.assertRaises(ConfigError, loadConfig, "p.yaml", text="- 1\n- 2\n")
        self.assertRaises(ConfigError, loadConfig, "p.yaml", text="tftp: 3\n")

    def test_duplicateKey(self):
        """
        If a key appears twice, the error names it and both lines (YAML would
        silently keep the last one).
        """
        e = self.assertRaises(ConfigError, loadConfig, "p.yaml",
                              text="tftp:\n  port: 1069\n  port: 1070\n")
        self.assertIn("p.yaml:3: tftp.port: duplicate key (an earlier one at line 2)", str(e))

    def test_emptyFile(self):
        """
        An empty file means the defaults.
        """
        self.assertEqual(loadConfig("p.yaml", text=""), defaults())

    def test_missingFile(self):
        """
        If the file cannot be read, the error names it.
        """
        e = self.assertRaises(ConfigError, loadConfig, "/nonexistent/p.yaml")
        self.assertIn("/nonexistent/p.yaml", str(e))
        self.assertIn("cannot read", str(e))

    def test_notUTF8(self):
        """
        If the file is not UTF-8 text, the error names it and says so.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"tftp:\n  root: /srv/\xe9t\xe9\n")
        e = self.assertRaises(ConfigError, loadConfig, path)
        self.assertEqual(str(e), "%s is not UTF-8 text" % (path,))

    def test_overrides(self):
        """
        Overrides apply after the file and are validated like it.
        """
        config = loadConfig("p.yaml", [("tftp.port", 2000)], text="tftp:\n  port: 1069\n")
        self.assertEqual(config["tftp"]["port"], 2000)
        e = self.assertRaises(ConfigError, loadConfig, None, [("tftp.port", -1)])
        self.assertIn("command line", str(e))

    def test_parseOverride(self):
        """
        C{key=value} overrides read the value as YAML.
        """
        self.assertEqual(parseOverride("tftp.port=69"), ("tftp.port", 69))
        self.assertEqual(parseOverride("a.b=[x, y]"), ("a.b", ["x", "y"]))
        self.assertRaises(ConfigError, parseOverride, "novalue")

    def test_everyKeyDocumented(self):
        """
        Every key has a doc line.
        """
        for key, item in describe():
            self.assertTrue(item.doc, key)


class ReadTextTests(SynchronousTestCase):
    """
    Tests for L{readText}, which reads the configuration and the inventory.
    """

    def test_text(self):
        """
        A UTF-8 file is read as text.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write("r\u00e9seau: 1\n".encode("utf-8"))
        self.assertEqual(readText(path, ConfigError), "r\u00e9seau: 1\n")

    def test_errors(self):
        """
        A file that cannot be read, or is not UTF-8, raises the given error
        type with a message naming the file.
        """
        class Refused(ConfigError):
            pass
        e = self.assertRaises(Refused, readText, self.mktemp(), Refused)
        self.assertIn("cannot read", str(e))
        self.assertIsNone(e.key)
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"\xff\xfe")
        e = self.assertRaises(Refused, readText, path, Refused)
        self.assertEqual(str(e), "%s is not UTF-8 text" % (path,))
