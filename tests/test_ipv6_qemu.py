# -*- test-case-name: tests.test_ipv6_qemu -*-
"""
IPv6 network boot on real firmware: OVMF (Debian's, TCG) with its IPv4
network stack off, provisioner's DHCPv6 service in full mode (router
advertisements with the managed flag, an address pool, durable leases),
TFTP and HTTP over IPv6:

  - PXE over IPv6: OVMF gets a lease and C{tftp://[2001:db8:1::1]/snponly.efi},
    iPXE asks DHCPv6 again and gets its script, then the host's menu and
    Debian's kernel to the initramfs marker.

The firmware's side is IPv6 only (OVMF's IPv4 stack is off); iPXE tries
DHCPv4 too, which nobody answers: every transfer is over IPv6.

Not here: HTTP boot over IPv6. OVMF 2022.11 gets its DHCPv6 lease and the
URL, then says "Could not retrieve NBP file size from HTTP server" without
opening a TCP connection (seen in the capture); not solved yet.
"""

import os
import struct

from twisted.trial.unittest import TestCase

from tests.qemu_lab import BootBed, pcapPackets
from tests.test_boot_qemu import IPXE_DIR, MARKER, requireKit
from tests.test_dhcp6_e2e import enableIPv6

BOOT_TIMEOUT = 300
SERVER6 = "2001:db8:1::1"

CONFIG = """\
tftp:
  enabled: true
  address: "::"
  port: 69
  root: {d}/root
dhcp6:
  enabled: true
  mode: full
  interfaces: [eth0]
  lease_file: {d}/leases6.sqlite
  router_advertisements: true
  ra_interval: 3
  server_address: "{server}"
  boot:
    uefi_x64: snponly.efi
    http_x64: http://{{server}}:8080/images/ipxe/snponly.efi
  ipxe_script: http://{{server}}:8080/menus/${{mac:hexhyp}}/boot.ipxe
  subnets:
    - prefix: "2001:db8:1::/64"
      range: ["2001:db8:1::1000", "2001:db8:1::1fff"]
images:
  enabled: true
  directory: {d}/images
  state_dir: {d}/state
menus:
  enabled: true
  http_url: http://[{server}]:8080
inventory:
  enabled: true
  file: {d}/inventory.yaml
http:
  enabled: true
  address: "::"
  port: 8080
"""

INVENTORY = """\
profiles:
  tiny:
    description: Debian kernel, busybox initramfs
    timeout: 1
    kernel: tiny/vmlinuz
    initrd: [tiny/initrd.gz]
    cmdline: "console=ttyS0 quiet provhost={{ host.name }} provflavour={{ vars.flavour }}"
hosts:
  vm9:
    mac: 52:54:00:ab:06:09
    profile: tiny
    vars: {flavour: six}
"""

NO_IPV4 = ["-fw_cfg", "name=opt/org.tianocore/IPv4Support,string=n"]


def ethertypes(pcap):
    """
    The set of ethertypes in a capture of QEMU's filter-dump.
    """
    seen = set()
    for _, frame in pcapPackets(pcap):
        for skip in (10, 12, 0):
            kind = frame[skip + 12:skip + 14]
            if kind in (b"\x08\x00", b"\x86\xdd", b"\x08\x06"):
                seen.add(struct.unpack("!H", kind)[0])
                break
    return seen


class IPv6BootTests(TestCase):
    """
    OVMF over IPv6 only, full-mode DHCPv6.
    """

    subnet = 180

    def setUp(self):
        self.kit = requireKit()
        self.d = os.path.abspath(self.mktemp())
        for sub in ("root", "images/tiny", "images/ipxe", "state"):
            os.makedirs(os.path.join(self.d, sub))
        self.kit.install(os.path.join(self.d, "images"),
                         {"kernel": "tiny/vmlinuz", "initrd": "tiny/initrd.gz"})
        with open(os.path.join(IPXE_DIR, "snponly.efi"), "rb") as f:
            snponly = f.read()
        for target in ("images/ipxe/snponly.efi", "root/snponly.efi"):
            with open(os.path.join(self.d, target), "wb") as f:
                f.write(snponly)
        with open(os.path.join(self.d, "inventory.yaml"), "w") as f:
            f.write(INVENTORY)
        self.bed = BootBed(self, self.subnet, self.d)
        self.bed.routerAdvertisements.kill()
        self.bed.routerAdvertisements.wait(10)
        enableIPv6(self.bed.server, SERVER6)
        self.appliance = self.bed.start(CONFIG.format(d=self.d, server=SERVER6))
        self.appliance.waitLog("image catalogue ready", 60)

    def boot(self, mac, name, extra):
        pcap = os.path.join(self.d, name + ".pcap")
        found = self.bed.boot(mac, MARKER, os.path.join(self.d, "serial-%s.txt" % (name,)),
                              firmware="uefi", romfile="", memory=512, timeout=BOOT_TIMEOUT,
                              extra=extra + ["-object",
                                             "filter-dump,id=f0,netdev=n0,file=" + pcap])
        return found.groups(), ethertypes(pcap)

    def test_pxeOverIPv6(self):
        """
        PXE over IPv6: DHCPv6 lease, snponly.efi over TFTP, the host's
        menu and kernel over HTTP, all IPv6.
        """
        marker, kinds = self.boot("52:54:00:ab:06:09", "vm9", NO_IPV4)
        self.assertEqual(marker, ("vm9", "six", "none"))
        self.assertIn(0x86DD, kinds)
        log = self.appliance.log()
        self.assertNotRegex(log, r"(read|HTTP GET) \S+ (from )?\(?'?198\.")
        self.assertRegex(log, r"read snponly\.efi \[?2001:db8:1::[0-9a-f]+\]?:\d+ complete")
        self.assertIn("HTTP GET images/tiny/vmlinuz from 2001:db8:1::", log)
