# -*- test-case-name: tests.test_menus_cli -*-
"""
Tests for C{provisioner render} (L{provisioner.menus.cli}).
"""

import io
import os

from twisted.trial.unittest import SynchronousTestCase

from provisioner.cli import buildParser
from tests.fakes import INVENTORY


class RenderCommandTests(SynchronousTestCase):
    """
    C{provisioner render --mac MAC [--arch ARCH] FILE}.
    """

    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(os.path.join(self.dir, "img", "debian"))
        with open(os.path.join(self.dir, "inventory.yaml"), "w") as f:
            f.write(INVENTORY)
        self.config = os.path.join(self.dir, "p.yaml")
        with open(self.config, "w") as f:
            f.write("menus: {enabled: true, http_url: 'http://198.18.0.1:8080'}\n"
                    "inventory: {enabled: true, file: %s}\n"
                    "images: {enabled: true, directory: %s, state_dir: %s}\n" % (
                        os.path.join(self.dir, "inventory.yaml"),
                        os.path.join(self.dir, "img"), os.path.join(self.dir, "state")))

    def invoke(self, *argv):
        args = buildParser().parse_args(["render", "--config", self.config] + list(argv))
        out, err = io.BytesIO(), io.StringIO()
        status = args.func(args, out=out, err=err)
        return status, out.getvalue().decode("utf-8", "replace"), err.getvalue()

    def test_ipxe(self):
        """
        If asked for boot.ipxe, it prints that client's iPXE menu.
        """
        status, out, err = self.invoke("--mac", "52:54:00:00:00:01", "--arch", "efi-x64",
                                    "boot.ipxe")
        self.assertEqual(status, 0, err)
        self.assertIn("(alpha)", out)
        self.assertIn("initrd=initrd.gz", out)

    def test_arch(self):
        """
        If C{--arch} is given, the client gets that architecture's menu and
        the status is 0: a BIOS client's kernel line has no EFI C{initrd=}
        arguments, an efi-x64 client's has them.
        """
        bios = self.invoke("--mac", "52:54:00:00:00:01", "--arch", "0", "boot.ipxe")
        efi = self.invoke("--mac", "52:54:00:00:00:01", "--arch", "efi-x64", "boot.ipxe")
        self.assertEqual((bios[0], bios[2]), (0, ""))
        self.assertEqual((efi[0], efi[2]), (0, ""))
        self.assertIn("# provisioner: alpha (52:54:00:00:00:01), bios,", bios[1])
        self.assertIn("/images/debian/linux auto=true priority=critical", bios[1])
        self.assertNotIn("initrd=", bios[1])
        self.assertIn("# provisioner: alpha (52:54:00:00:00:01), efi-x64,", efi[1])
        self.assertIn("/images/debian/linux initrd=initrd.gz initrd=firmware.cpio.gz auto=true",
                      efi[1])

    def test_pxelinuxAndGrub(self):
        """
        pxelinux and GRUB names render too.
        """
        status, out, err = self.invoke("--mac", "52:54:00:00:00:02",
                                    "pxelinux.cfg/01-52-54-00-00-00-02")
        self.assertIn("rescue/vmlinuz", out)
        status, out, err = self.invoke("--mac", "52:54:00:00:00:02", "grub/grub.cfg")
        self.assertIn("menuentry", out)

    def test_notFound(self):
        """
        If nothing would be served, it says so and exits 1.
        """
        status, out, err = self.invoke("--mac", "52:54:00:00:00:02", "nothing/here")
        self.assertEqual(status, 1)
        self.assertIn("not found", err)

    def test_badArguments(self):
        """
        A bad MAC or architecture exits 2 with a message.
        """
        self.assertEqual(self.invoke("--mac", "zz", "boot.ipxe")[0], 2)
        status, out, err = self.invoke("--mac", "52:54:00:00:00:02", "--arch", "z80", "boot.ipxe")
        self.assertEqual(status, 2)
        self.assertIn("unknown architecture", err)
