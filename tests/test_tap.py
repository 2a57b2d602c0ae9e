"""
Tests for L{provisioner.tap} and the twistd plugin: discovery, options,
the services built, and reloading the configuration.
"""

import os

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from provisioner import tap


class PluginTests(SynchronousTestCase):
    """
    The dropin in C{twisted/plugins}.
    """

    def test_discoverable(self):
        """
        If twistd looks for service makers, C{provisioner} is one, and it
        names L{provisioner.tap}.
        """
        makers = {p.tapname: p for p in getPlugins(IServiceMaker)}
        self.assertIn("provisioner", makers)
        self.assertEqual(makers["provisioner"].module, "provisioner.tap")
        self.assertIs(makers["provisioner"].options, tap.Options)


class OptionsTests(SynchronousTestCase):
    """
    Tests for L{tap.Options}.
    """

    def parse(self, *argv):
        options = tap.Options()
        options.parseOptions(list(argv))
        return options

    def test_defaults(self):
        """
        If no flag is given, the embedded defaults apply: TFTP on
        127.0.0.1:6969 serving ./tftpboot.
        """
        tftp = self.parse()["loaded"]["tftp"]
        self.assertEqual((tftp["address"], tftp["port"], tftp["root"]),
                         ("127.0.0.1", 6969, "tftpboot"))

    def test_flags(self):
        """
        If TFTP flags are given, they override the configuration.
        """
        tftp = self.parse("--tftp-port", "0", "--tftp-root", "/srv/x",
                          "--tftp-address", "::1", "--tftp-interface", "eth9",
                          "--set", "tftp.windowsize_max=8")["loaded"]["tftp"]
        self.assertEqual((tftp["port"], tftp["root"], tftp["address"], tftp["interface"],
                          tftp["windowsize_max"]), (0, "/srv/x", "::1", "eth9", 8))

    def test_errors(self):
        """
        If a flag or the configuration is wrong, parsing raises
        L{usage.UsageError} naming the problem.
        """
        for argv, words in [
            (["--tftp-port", "abc"], "abc"),
            (["--tftp-port", "70000"], "tftp.port"),
            (["--set", "nonsense"], "section.key=value"),
            (["--set", "tftp.bogus=1"], "tftp.bogus"),
            (["--set", "tftp.blksize_max=4"], "tftp.blksize_max"),
            (["--tftp-address", "not-an-ip"], "tftp.address"),
            (["--config", "/nonexistent/provisioner.yaml"], "cannot read"),
        ]:
            e = self.assertRaises(usage.UsageError, self.parse, *argv)
            self.assertIn(words, str(e), argv)

    def test_configLine(self):
        """
        If the configuration file has a bad value, the error names the file
        and line.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("tftp:\n  port: 6969\n  windowsize_max: 0\n")
        e = self.assertRaises(usage.UsageError, self.parse, "--config", path)
        self.assertIn("%s:3" % (os.path.basename(path),), str(e))


class ServiceTests(SynchronousTestCase):
    """
    Tests for L{tap.makeService}.
    """

    def test_namedServices(self):
        """
        If only the defaults are used, the appliance has one named service,
        C{tftp}.
        """
        options = tap.Options()
        options.parseOptions(["--tftp-root", self.mktemp(), "--tftp-port", "0"])
        service = tap.makeService(options)
        self.assertEqual(set(service.namedServices), {"tftp"})
        self.assertIs(service.appliance.tftp, service.getServiceNamed("tftp"))


class ReloadTests(TestCase):
    """
    Tests for L{tap.ProvisionerService.reload}.
    """

    def setUp(self):
        self.path = self.mktemp()
        self.root = os.path.abspath(self.mktemp())
        self.write("tftp:\n  port: 0\n  root: %s\n  windowsize_max: 32\n" % (self.root,))
        options = tap.Options()
        options.parseOptions(["--config", self.path])
        self.service = tap.makeService(options)
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def write(self, text):
        with open(self.path, "w") as f:
            f.write(text)

    def test_good(self):
        """
        If the configuration changed and is valid, reload applies it to the
        TFTP service (new root, new limits) and returns True.
        """
        other = os.path.abspath(self.mktemp())
        self.write("tftp:\n  port: 0\n  root: %s\n  windowsize_max: 8\n" % (other,))
        self.assertTrue(self.service.reload())
        tftp = self.service.getServiceNamed("tftp")
        self.assertEqual(tftp.server.config["windowsize_max"], 8)
        self.assertEqual(tftp.directory.root, os.path.realpath(other))
        self.assertIs(tftp.resolvers.resolvers[-1], tftp.directory)

    def test_bad(self):
        """
        If the new configuration is invalid, reload keeps the running one,
        logs why, and returns False.
        """
        self.write("tftp:\n  port: 0\n  windowsize_max: -1\n")
        self.assertFalse(self.service.reload())
        tftp = self.service.getServiceNamed("tftp")
        self.assertEqual(tftp.server.config["windowsize_max"], 32)
        self.assertEqual(tftp.directory.root, os.path.realpath(self.root))
