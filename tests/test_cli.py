"""
Tests for L{provisioner.cli}: the built-in configuration commands.
"""

import io
import os
import sys

import yaml
from twisted.trial.unittest import SynchronousTestCase

from provisioner import cli
from provisioner.config import defaults, loadConfig, sample

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CLITests(SynchronousTestCase):
    """
    Tests for C{provisioner check-config}, C{config-sample}, C{config-keys}.
    """

    def run_cli(self, argv):
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        status = cli.main(argv)
        return status, out.getvalue(), err.getvalue()

    def test_checkConfigGood(self):
        """
        If the file is valid, check-config says ok and exits 0.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("tftp:\n  port: 1069\n")
        status, out, err = self.run_cli(["check-config", path])
        self.assertEqual((status, out.strip()), (0, path + ": ok"))

    def test_checkConfigBad(self):
        """
        If the file is invalid, check-config names file, line and key and
        exits 2.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("tftp:\n  port: 1069\n  nonsense: 1\n")
        status, out, err = self.run_cli(["check-config", path])
        self.assertEqual(status, 2)
        self.assertIn(":3: tftp.nonsense: unknown key", err)

    def test_sampleRoundTrips(self):
        """
        The sample is valid YAML that loads back to exactly the defaults.
        """
        status, out, err = self.run_cli(["config-sample"])
        self.assertEqual(status, 0)
        self.assertEqual(loadConfig("sample.yaml", text=out), defaults())
        self.assertIsInstance(yaml.safe_load(out), dict)
        self.assertEqual(out, sample())

    def test_keysMarkdown(self):
        """
        The Markdown reference lists every key.
        """
        status, out, err = self.run_cli(["config-keys", "--markdown"])
        self.assertEqual(status, 0)
        self.assertIn("| `tftp.port` | port | `6969` |", out)

    def test_noCommand(self):
        """
        Without a command, usage goes to stderr and the status is 2.
        """
        status, out, err = self.run_cli([])
        self.assertEqual(status, 2)
        self.assertIn("usage", err)
