# -*- test-case-name: tests.test_menus_qemu -*-
"""
A real iPXE client boots its per-MAC menu and fetches a file over HTTP:
QEMU (TCG, SeaBIOS + the iPXE option ROM) on the DHCP test bed
(L{tests.qemu_lab}); provisioner in the lab's host 0 with DHCP, TFTP,
images, menus, the inventory and HTTP. DHCP hands iPXE C{boot.ipxe}; the
menus service renders it for this MAC from the operator's
C{ipxe/host-NAME.j2}; that script chains a catalogued image over HTTP,
which prints a marker with the host name the menu set and the MAC.
"""

import os
import re

from twisted.trial.unittest import TestCase

from tests.netlab import requireE2E
from tests.qemu_lab import QEMU, BootBed

SUBNET = 47
MAC = "52:54:00:2f:00:07"
BOOT_TIMEOUT = 120
MARKER = re.compile(r"PROVHTTP host=(\S+) mac=([0-9a-f:]+) end")

CONFIG = """\
tftp:
  enabled: true
  address: 0.0.0.0
  port: 69
  interface: eth0
  root: {d}/root
dhcp:
  enabled: true
  mode: full
  interfaces: [eth0]
  lease_file: {d}/leases.sqlite
  ipxe_script: boot.ipxe
  subnets:
    - network: 198.18.{s}.0/24
      range: [198.18.{s}.100, 198.18.{s}.150]
      router: 198.18.{s}.1
images:
  enabled: true
  directory: {d}/images
  state_dir: {d}/state
menus:
  enabled: true
  templates: {d}/templates
  http_url: http://198.18.{s}.1:8080
inventory:
  enabled: true
  file: {d}/inventory.yaml
http:
  enabled: true
  address: 198.18.{s}.1
  port: 8080
"""

INVENTORY = """\
hosts:
  vm7:
    mac: {mac}
"""

HOST_TEMPLATE = """\
#!ipxe
set provhost {{{{ host.name }}}}
chain {{{{ image_url("hello.ipxe") }}}}
"""

HELLO = """\
#!ipxe
echo PROVHTTP host=${provhost} mac=${net0/mac} end
"""


class IPXEHTTPBootTests(TestCase):
    """
    BIOS + iPXE ROM, full DHCP mode.
    """

    def setUp(self):
        requireE2E(root=True, netns=True, tools=[QEMU, "ip"])
        self.d = os.path.abspath(self.mktemp())
        for sub in ("root", "images", "templates/ipxe"):
            os.makedirs(os.path.join(self.d, sub))
        with open(os.path.join(self.d, "images", "hello.ipxe"), "w") as f:
            f.write(HELLO)
        with open(os.path.join(self.d, "templates", "ipxe", "host-vm7.j2"), "w") as f:
            f.write(HOST_TEMPLATE.format())
        with open(os.path.join(self.d, "inventory.yaml"), "w") as f:
            f.write(INVENTORY.format(mac=MAC))
        self.bed = BootBed(self, SUBNET, self.d)
        self.provisioner = self.bed.start(CONFIG.format(d=self.d, s=SUBNET))
        self.provisioner.waitLog("image hello.ipxe catalogued")

    def test_perMACScriptFetchesOverHTTP(self):
        """
        If the inventory names the machine's MAC, iPXE gets that host's
        menu as boot.ipxe, and the menu fetches a catalogued image over
        HTTP.
        """
        found = self.bed.boot(MAC, MARKER, os.path.join(self.d, "serial.txt"),
                              firmware="bios", timeout=BOOT_TIMEOUT)
        self.assertEqual(found.groups(), ("vm7", MAC))
        log = self.provisioner.log()
        self.assertIn("HTTP GET images/hello.ipxe from 198.18.%d." % (SUBNET,), log)
