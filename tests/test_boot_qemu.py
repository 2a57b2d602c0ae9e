# -*- test-case-name: tests.test_boot_qemu -*-
"""
Real kernels through the menus: QEMU (TCG) network-boots Debian's own
kernel and an initramfs built from Debian's busybox (L{tests.bootkit}) to
userspace, through each boot path an operator uses:

  - BIOS, iPXE over HTTP and over TFTP (SeaBIOS + the NIC's iPXE ROM);
  - BIOS, pxelinux over TFTP (Debian's pxelinux.0 and ldlinux.c32, loaded
    through the ROM's PXE interface);
  - UEFI, snponly.efi (iPXE) over HTTP (OVMF's own PXE client first);
  - UEFI, GRUB's network image (Debian's signed grubnetx64.efi) over TFTP
    with the grub.cfg the menus render for that machine.

Every path uses the shipped templates and one inventory profile whose
kernel command line carries per-host template variables; the initramfs
prints them (C{PROVBOOT host=... flavour=...}) on the serial console, so a
pass proves the per-host menu and the kernel command line, not only the
boot. The kernel and initrd are catalogued images.
"""

import os
import re

from twisted.trial.unittest import TestCase

from tests import bootkit
from tests.netlab import requireE2E
from tests.qemu_lab import QEMU, BootBed

BOOT_TIMEOUT = 240
MARKER = re.compile(r"PROVBOOT host=(\S+) flavour=(\S+) token=(\S+) end")
IPXE_DIR = "/usr/lib/ipxe"

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
  uefi: direct
  interfaces: [eth0]
  lease_file: {d}/leases.sqlite
  boot:
    bios: undionly.kpxe
    uefi_x64: snponly.efi
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
  {http_url}
inventory:
  enabled: true
  file: {d}/inventory.yaml
http:
  enabled: {http}
  address: 198.18.{s}.1
  port: 8080
"""

INVENTORY = """\
profiles:
  tiny:
    description: Debian kernel, busybox initramfs
    timeout: 1
    kernel: tiny/vmlinuz
    initrd: [tiny/initrd.gz]
    cmdline: "console=ttyS0 quiet provhost={{{{ host.name }}}} provflavour={{{{ vars.flavour }}}}"
hosts:
{hosts}
"""

HOST = """\
  {name}:
    mac: {mac}
    profile: tiny
    vars: {{flavour: {flavour}{extra}}}
"""


def requireKit():
    """
    The boot kit, or a skip (a failure under C{PROVISIONER_REQUIRE_E2E}).
    """
    requireE2E(root=True, netns=True, tools=[QEMU, "ip"])
    kit = bootkit.kit(build=True)
    if kit is None:
        requireE2E(tools=["the boot kit (python -m tests.bootkit, as root)"])
    return kit


class BootBase(TestCase):
    """
    A bed with the kit's kernel and initrd catalogued, Debian's iPXE,
    pxelinux and GRUB in the TFTP root, and one inventory host per test.
    """

    subnet = None
    http = True

    def setUp(self):
        self.kit = requireKit()
        self.d = os.path.abspath(self.mktemp())
        for sub in ("root/pxelinux.cfg", "images/tiny"):
            os.makedirs(os.path.join(self.d, sub))
        self.kit.install(os.path.join(self.d, "images"),
                         {"kernel": "tiny/vmlinuz", "initrd": "tiny/initrd.gz"})
        self.kit.install(os.path.join(self.d, "root"),
                         {"pxelinux": "pxelinux.0", "ldlinux": "ldlinux.c32",
                          "grub": "grubnetx64.efi"})
        for name in ("undionly.kpxe", "snponly.efi"):
            with open(os.path.join(IPXE_DIR, name), "rb") as src, \
                    open(os.path.join(self.d, "root", name), "wb") as dst:
                dst.write(src.read())
        self.bed = BootBed(self, self.subnet, self.d)

    def start(self, hosts):
        """
        Write the inventory (C{hosts}: C{(name, mac, flavour, extra vars)})
        and start the appliance.
        """
        text = "".join(HOST.format(name=n, mac=m, flavour=f, extra=x) for n, m, f, x in hosts)
        with open(os.path.join(self.d, "inventory.yaml"), "w") as f:
            f.write(INVENTORY.format(hosts=text))
        url = "http_url: http://198.18.%d.1:8080" % (self.subnet,) if self.http else ""
        self.appliance = self.bed.start(CONFIG.format(d=self.d, s=self.subnet, http_url=url,
                                                      http="true" if self.http else "false"))
        self.appliance.waitLog("image tiny/initrd.gz catalogued")

    def boot(self, mac, firmware, romfile=None):
        # GRUB under OVMF runs out of memory loading the kernel in 256 MiB.
        found = self.bed.boot(mac, MARKER, os.path.join(self.d, "serial-%s.txt" % (
            mac.replace(":", ""),)), firmware=firmware, romfile=romfile, timeout=BOOT_TIMEOUT,
            memory=512 if firmware == "uefi" else 256)
        return found.groups()

    def assertFetched(self, protocol, name):
        """
        The appliance's log shows the catalogued C{name} sent whole over
        C{protocol} (C{tftp} or C{http}).
        """
        log = self.appliance.log()
        if protocol == "http":
            self.assertIn("HTTP GET images/%s from 198.18.%d." % (name, self.subnet), log)
        else:
            self.assertTrue(re.search(r"read (images/)?%s 198\.18\.%d\.\d+:\d+ complete"
                                      % (re.escape(name), self.subnet), log), log[-3000:])


class BIOSBootTests(BootBase):
    """
    SeaBIOS and the NIC's iPXE ROM: iPXE over HTTP, iPXE over TFTP,
    pxelinux over TFTP.
    """

    subnet = 171

    def test_ipxeHTTP(self):
        """
        iPXE gets the host's menu as boot.ipxe and boots the catalogued
        kernel and initrd over HTTP; the kernel prints the host's values.
        """
        self.start([("vm1", "52:54:00:ab:01:01", "blue", "")])
        self.assertEqual(self.boot("52:54:00:ab:01:01", "bios"), ("vm1", "blue", "none"))
        self.assertFetched("http", "tiny/vmlinuz")
        self.assertFetched("http", "tiny/initrd.gz")

    def test_ipxeTFTP(self):
        """
        Without the HTTP service, iPXE fetches the kernel and the initrd
        over TFTP, relative to its script.
        """
        self.http = False
        self.start([("vm2", "52:54:00:ab:01:02", "green", "")])
        self.assertEqual(self.boot("52:54:00:ab:01:02", "bios"), ("vm2", "green", "none"))
        self.assertFetched("tftp", "tiny/vmlinuz")
        self.assertFetched("tftp", "tiny/initrd.gz")

    def test_pxelinuxTFTP(self):
        """
        A host whose DHCP boot file is pxelinux.0 gets Debian's pxelinux,
        its per-MAC pxelinux.cfg/01-... from the menus, and boots the
        kernel and initrd over TFTP.
        """
        self.start([("vm3", "52:54:00:ab:01:03", "red", ", ipxe_script: pxelinux.0")])
        self.assertEqual(self.boot("52:54:00:ab:01:03", "bios"), ("vm3", "red", "none"))
        log = self.appliance.log()
        self.assertIn("pxelinux.cfg/01-52-54-00-ab-01-03", log)
        self.assertFetched("tftp", "tiny/vmlinuz")


class UEFIBootTests(BootBase):
    """
    OVMF's own PXE client: snponly.efi (iPXE) over HTTP, and GRUB's
    network image over TFTP.
    """

    subnet = 172

    def test_ipxeHTTP(self):
        """
        OVMF loads snponly.efi, iPXE gets the host's menu and boots the
        kernel (its EFI stub, with initrd=) over HTTP.
        """
        self.start([("vm4", "52:54:00:ab:02:04", "amber", "")])
        self.assertEqual(self.boot("52:54:00:ab:02:04", "uefi", romfile=""),
                         ("vm4", "amber", "none"))
        self.assertFetched("http", "tiny/vmlinuz")

    def test_grubTFTP(self):
        """
        A host whose boot file is Debian's signed grubnetx64.efi gets its
        own grub.cfg from the menus and boots the kernel over TFTP. (This
        GRUB asks for C{grub/grub.cfg} only, not C{grub.cfg-01-MAC}; the
        menus know the machine by the address DHCP gave it.)
        """
        self.start([("vm5", "52:54:00:ab:02:05", "violet", ", boot_file: grubnetx64.efi")])
        self.assertEqual(self.boot("52:54:00:ab:02:05", "uefi", romfile=""),
                         ("vm5", "violet", "none"))
        self.assertIn("menu grub/grub.cfg for 52:54:00:ab:02:05: grub/default.j2",
                      self.appliance.log())
        self.assertFetched("tftp", "tiny/vmlinuz")
