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
        If the file is valid, check-config (the alias of check) ends with a
        summary saying ok and exits 0.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("tftp:\n  port: 1069\n")
        status, out, err = self.run_cli(["check-config", path])
        self.assertEqual(status, 0)
        self.assertTrue(out.strip().splitlines()[-1].startswith(path + ": ok ("), out)

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
        self.assertIn(":3: tftp.nonsense: unknown key", out)

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


class GeneratedFilesTests(SynchronousTestCase):
    """
    The shipped sample configuration and the configuration reference are
    generated from the schema; they must be regenerated when it changes:
    C{python -m provisioner config-sample > etc/provisioner.yaml} and
    C{python -m provisioner config-keys --markdown > docs/config-reference.md}.
    """

    def test_sampleCurrent(self):
        """
        etc/provisioner.yaml is the current sample.
        """
        with open(os.path.join(REPO, "etc", "provisioner.yaml")) as f:
            self.assertEqual(f.read(), sample())

    def test_referenceCurrent(self):
        """
        docs/config-reference.md is the current reference.
        """
        with open(os.path.join(REPO, "docs", "config-reference.md")) as f:
            self.assertEqual(f.read(), cli.referenceMarkdown())
