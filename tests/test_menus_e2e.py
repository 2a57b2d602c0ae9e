# -*- test-case-name: tests.test_menus_e2e -*-
"""
End-to-end: the appliance run as a user would (twistd subprocess on
127.0.0.1, kernel-picked ports) serves per-client menus over TFTP (atftp,
tftp-hpa) and HTTP (curl), byte for byte what C{provisioner render} says
that client gets.
"""

import os
import subprocess

from twisted.trial.unittest import TestCase

from tests.fakes import INVENTORY
from tests.netlab import PYTHON, REPO, LoopbackAppliance, requireE2E

MAC = "52:54:00:00:00:02"


class MenusEndToEndTests(TestCase):
    """
    Menus over TFTP and HTTP against C{provisioner render}.
    """

    timeout = 120

    def setUp(self):
        requireE2E(tools=["curl", "atftp", "tftp"])
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        with open(os.path.join(self.dir, "inventory.yaml"), "w") as f:
            f.write(INVENTORY)
        self.appliance = LoopbackAppliance(
            self.dir, "inventory:\n  enabled: true\n  file: %s/inventory.yaml\n" % (self.dir,))
        self.addCleanup(self.appliance.stop)
        self.appliance.start()
        if self.appliance.tftpPort is None:
            self.fail("TFTP did not start:\n" + self.appliance.log())

    def render(self, path, *extra):
        """
        What C{provisioner render} prints for this client and file.
        """
        result = subprocess.run(
            [PYTHON, "-m", "provisioner", "render", "--config", self.appliance.configPath,
             "--mac", MAC, "--ip", "127.0.0.1"] + list(extra) + [path],
            cwd=self.dir, env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, check=True)
        return result.stdout

    def read(self, name):
        with open(os.path.join(self.dir, name), "rb") as f:
            return f.read()

    def test_pxelinuxOverTFTP(self):
        """
        If atftp asks for pxelinux.cfg/01-MAC, it gets that host's menu,
        exactly what provisioner render prints.
        """
        path = "pxelinux.cfg/01-" + MAC.replace(":", "-")
        subprocess.run(["atftp", "--get", "-r", path, "-l", os.path.join(self.dir, "pxe"),
                        "127.0.0.1", str(self.appliance.tftpPort)], check=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        got = self.read("pxe")
        self.assertIn(b"beta", got)
        self.assertEqual(got, self.render(path))

    def test_grubOverTFTP(self):
        """
        If tftp-hpa asks for grub/grub.cfg-01-MAC, it gets that host's GRUB
        menu, exactly what provisioner render prints.
        """
        path = "grub/grub.cfg-01-" + MAC.replace(":", "-")
        subprocess.run(["tftp", "-m", "binary", "127.0.0.1", str(self.appliance.tftpPort),
                        "-c", "get", path, os.path.join(self.dir, "grub")], check=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        got = self.read("grub")
        self.assertIn(b"menuentry", got)
        self.assertEqual(got, self.render(path))

    def test_ipxeOverHTTP(self):
        """
        If curl asks for menus/MAC/boot.ipxe, it gets that host's iPXE menu,
        exactly what provisioner render prints for an HTTP client at that
        URL.
        """
        path = "menus/%s/boot.ipxe" % (MAC.replace(":", "-"),)
        code, size = self.appliance.curl(path, os.path.join(self.dir, "ipxe"))
        self.assertEqual(code, 200)
        base = "http://127.0.0.1:%d" % (self.appliance.httpPort,)
        self.assertEqual(self.read("ipxe"),
                         self.render(path, "--protocol", "http", "--base-url", base))
