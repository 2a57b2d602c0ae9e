# -*- test-case-name: tests.test_images_cli -*-
"""
Tests for C{provisioner images} (L{provisioner.images.cli}).
"""

import io
import json
import os

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from provisioner.cli import buildParser
from provisioner.images.catalog import Catalog


class ImagesCommandTests(SynchronousTestCase):
    """
    C{provisioner images} reads the persisted catalogue.
    """

    def setUp(self):
        self.dir = self.mktemp()
        images = os.path.join(self.dir, "img")
        os.makedirs(images)
        with open(os.path.join(images, "vmlinuz"), "wb") as f:
            f.write(b"k" * 2048)
        catalog = Catalog(task.Clock(), images, stateDir=os.path.join(self.dir, "state"))
        self.successResultOf(catalog.rescan())
        self.successResultOf(catalog.stop())
        self.config = os.path.join(self.dir, "p.yaml")
        with open(self.config, "w") as f:
            f.write("images: {enabled: true, directory: %s, state_dir: %s}\n" % (
                images, os.path.join(self.dir, "state")))

    def invoke(self, *argv):
        args = buildParser().parse_args(["images", "--config", self.config] + list(argv))
        out, err = io.StringIO(), io.StringIO()
        return args.func(args, out=out, err=err), out.getvalue()

    def test_table(self):
        """
        It lists each image with kind, size and the start of its sha256.
        """
        status, out = self.invoke()
        self.assertEqual(status, 0)
        self.assertIn("vmlinuz", out)
        self.assertIn("kernel", out)
        self.assertIn("2.0 KiB", out)

    def test_json(self):
        """
        With --json it prints the entries, each saying whether the file is
        still the one catalogued.
        """
        status, out = self.invoke("--json")
        data = json.loads(out)
        self.assertEqual(data[0]["name"], "vmlinuz")
        self.assertTrue(data[0]["current"])
        self.assertEqual(len(data[0]["sha256"]), 64)

    def test_noState(self):
        """
        If nothing was persisted yet, it says so and exits 1.
        """
        os.unlink(os.path.join(self.dir, "state", "images-catalog.json"))
        self.assertEqual(self.invoke()[0], 1)
