# -*- test-case-name: tests.test_dhcp_qemu -*-
"""
Real firmware network-boots through provisioner's DHCP and TFTP: QEMU
(TCG) with SeaBIOS + the iPXE option ROM, or OVMF with EDK2's own PXE
client (no option ROM) chainloading Debian's C{snponly.efi}. The served
iPXE script prints a marker with the client's MAC and IP on the serial
console.

Topology: a L{tests.netlab.NetLab} bridge; provisioner in host 0
(198.18.K.1), a tap device for QEMU on the bridge, and, for proxy mode,
busybox udhcpd (addresses only) in host 1. Host 0 sends empty IPv6 router
advertisements so iPXE does not wait ~13 s for one.
"""

import os
import re
import shutil

from twisted.trial.unittest import TestCase

from tests.netlab import requireE2E
from tests.qemu_lab import OVMF_CODE, QEMU, BootBed

IPXE_DIR = "/usr/lib/ipxe"
SCRIPT = """#!ipxe
echo PROVMARK mac=${net0/mac} ip=${net0/ip} end
"""
MARKER = re.compile(r"PROVMARK mac=([0-9a-f:]+) ip=([0-9.]+) end")

CONFIG = """\
tftp:
  enabled: true
  address: 0.0.0.0
  port: 69
  interface: eth0
  root: %(root)s
dhcp:
  enabled: true
  mode: %(mode)s
  port: %(port)d
  uefi: %(uefi)s
  interfaces: [eth0]
  lease_file: %(leases)s
  boot:
    bios: undionly.kpxe
    uefi_x64: snponly.efi
  ipxe_script: boot.ipxe
  subnets:
    - network: 198.18.%(subnet)d.0/24
      range: [198.18.%(subnet)d.100, 198.18.%(subnet)d.150]
      router: 198.18.%(subnet)d.1
"""

UDHCPD = """\
start 198.18.%(subnet)d.160
end 198.18.%(subnet)d.180
interface eth0
lease_file %(leases)s
option subnet 255.255.255.0
option router 198.18.%(subnet)d.2
option lease 600
"""

# The site's own DHCP server on provisioner's host (same-host proxy): dnsmasq
# gives addresses with option 60 "PXEClient" and no boot file (so PXE ROMs
# ask port 4011 of this host), and the iPXE stage its script by user class.
DNSMASQ = [
    "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
    "--interface=eth0", "--bind-interfaces", "--pid-file=",
    "--dhcp-range=198.18.%(subnet)d.160,198.18.%(subnet)d.180,255.255.255.0,10m",
    "--dhcp-option-force=60,PXEClient", "--dhcp-leasefile=%(leases)s",
    "--dhcp-userclass=set:ipxe,iPXE",
    "--dhcp-boot=tag:ipxe,boot.ipxe,provisioner,198.18.%(subnet)d.1",
    "--log-dhcp", "--log-facility=%(log)s",
]

BOOT_TIMEOUT = 120


class QEMUBootMixin:
    """
    Build the bed, boot, read the marker.
    """

    mode = "full"
    uefi = "redirect"
    subnet = 41
    # proxy mode: the address server (udhcpd on another host, or dnsmasq
    # on provisioner's own host with dhcp.port 0)
    siteServer = "udhcpd"

    def setUp(self):
        requireE2E(root=True, netns=True, tools=[
            QEMU, "busybox", "ip", OVMF_CODE, os.path.join(IPXE_DIR, "snponly.efi"),
            os.path.join(IPXE_DIR, "undionly.kpxe")] + (
                ["dnsmasq"] if self.siteServer == "dnsmasq" else []))
        self.directory = os.path.abspath(self.mktemp())
        root = os.path.join(self.directory, "root")
        os.makedirs(root)
        for name in ("undionly.kpxe", "snponly.efi"):
            shutil.copy(os.path.join(IPXE_DIR, name), root)
        with open(os.path.join(root, "boot.ipxe"), "w") as f:
            f.write(SCRIPT)
        sameHost = self.siteServer == "dnsmasq"
        self.bed = BootBed(self, self.subnet, self.directory,
                           hosts=2 if self.mode == "proxy" and not sameHost else 1)
        server = self.bed.server
        if sameHost:
            self.dnsmasqLog = os.path.join(self.directory, "dnsmasq.log")
            argv = [a % {"subnet": self.subnet, "log": self.dnsmasqLog,
                         "leases": os.path.join(self.directory, "dnsmasq.leases")}
                    for a in DNSMASQ]
            dnsmasq = server.popen(argv)

            def stopDnsmasq():
                dnsmasq.terminate()
                dnsmasq.wait(10)
            self.addCleanup(stopDnsmasq)
        elif self.mode == "proxy":
            conf = os.path.join(self.directory, "udhcpd.conf")
            with open(conf, "w") as f:
                f.write(UDHCPD % {"subnet": self.subnet,
                                  "leases": os.path.join(self.directory, "udhcpd.leases")})
            self.bed.lab.hosts[1].popen(["busybox", "udhcpd", "-f", conf])
        self.provisioner = self.bed.start(CONFIG % {
            "root": root, "mode": self.mode, "uefi": self.uefi, "subnet": self.subnet,
            "port": 0 if sameHost else 67,
            "leases": os.path.join(self.directory, "leases.sqlite")})

    def boot(self, mac, firmware, romfile=None):
        """
        Boot a VM and return C{(mac, ip)} from its marker.
        """
        found = self.bed.boot(mac, MARKER,
                              os.path.join(self.directory, "serial-%s.txt" % (firmware,)),
                              firmware=firmware, romfile=romfile, timeout=BOOT_TIMEOUT)
        return found.group(1), found.group(2)

    def assertAddress(self, ip, first, last):
        host = int(ip.rsplit(".", 1)[1])
        self.assertTrue(ip.startswith("198.18.%d." % (self.subnet,)) and first <= host <= last,
                        ip)

    def decisions(self, mac):
        """
        The boot files the log says were chosen for C{mac}, in order.
        """
        return re.findall(r"boot decision: %s .*? -> (\S+)" % (re.escape(mac),),
                          self.provisioner.log())

    def tftpReads(self, name):
        return len(re.findall(r"read %s \S+ complete" % (re.escape(name),),
                              self.provisioner.log()))


class FullModeBootTests(QEMUBootMixin, TestCase):
    """
    provisioner is the DHCP server.
    """

    mode = "full"
    subnet = 41

    def test_biosIPXE(self):
        """
        If a BIOS machine with the iPXE ROM boots, DHCP sees iPXE (77/175),
        hands it the script at once, and the script prints the machine's
        MAC and leased address.
        """
        mac = "52:54:00:29:00:01"
        self.assertEqual(self.boot(mac, "bios"), (mac, "198.18.41.100"))
        self.assertEqual(set(self.decisions(mac)), {"boot.ipxe"})

    def test_uefiChainloadRedirect(self):
        """
        If OVMF's own PXE client boots (no iPXE ROM), it gets snponly.efi
        through the port-4011 boot server, iPXE then asks again as iPXE
        and gets the script: exactly one NBP download, no loop.
        """
        mac = "52:54:00:29:00:02"
        gotMAC, ip = self.boot(mac, "uefi", romfile="")
        self.assertEqual(gotMAC, mac)
        self.assertAddress(ip, 100, 150)
        self.assertEqual(self.decisions(mac)[0], "snponly.efi")
        self.assertEqual(self.decisions(mac)[-1], "boot.ipxe")
        self.assertIn("PXE boot server ACK to %s" % (mac,), self.provisioner.log())
        self.assertEqual(self.tftpReads("snponly.efi"), 1)
        self.assertEqual(self.tftpReads("boot.ipxe"), 1)


class FullModeDirectTests(QEMUBootMixin, TestCase):
    """
    The UEFI alternative: option 43 sub-option 6 = 8 in the offer.
    """

    mode = "full"
    uefi = "direct"
    subnet = 42

    def test_uefiChainloadDirect(self):
        """
        If the offer tells EDK2 to boot its file directly (43.6 = 8), OVMF
        boots snponly.efi without asking port 4011, then the script.
        """
        mac = "52:54:00:2a:00:02"
        gotMAC, ip = self.boot(mac, "uefi", romfile="")
        self.assertEqual(gotMAC, mac)
        self.assertAddress(ip, 100, 150)
        self.assertNotIn("PXE boot server ACK to %s" % (mac,), self.provisioner.log())
        self.assertEqual(self.tftpReads("snponly.efi"), 1)


class ProxyModeBootTests(QEMUBootMixin, TestCase):
    """
    busybox udhcpd gives addresses; provisioner only boot information.
    """

    mode = "proxy"
    subnet = 43

    def test_biosIPXE(self):
        """
        If a BIOS machine with the iPXE ROM boots next to an address-only
        DHCP server, it takes its address from that server (160-180) and
        the script from provisioner's proxy offer.
        """
        mac = "52:54:00:2b:00:01"
        gotMAC, ip = self.boot(mac, "bios")
        self.assertEqual(gotMAC, mac)
        self.assertAddress(ip, 160, 180)
        self.assertEqual(set(self.decisions(mac)), {"boot.ipxe"})

    def test_uefiChainload(self):
        """
        If OVMF's own PXE client boots next to an address-only DHCP server,
        the proxy offer (redirect: the boot server on 4011) gets it
        snponly.efi, and iPXE then gets the script.
        """
        mac = "52:54:00:2b:00:02"
        gotMAC, ip = self.boot(mac, "uefi", romfile="")
        self.assertEqual(gotMAC, mac)
        self.assertAddress(ip, 160, 180)
        self.assertEqual(self.decisions(mac)[0], "snponly.efi")
        self.assertEqual(self.decisions(mac)[-1], "boot.ipxe")
        self.assertEqual(self.tftpReads("snponly.efi"), 1)


class ProxyModeDirectTests(QEMUBootMixin, TestCase):
    """
    Proxy mode with the UEFI alternative (43.6 = 8 in the proxy offer).
    """

    mode = "proxy"
    uefi = "direct"
    subnet = 44

    def test_uefiChainloadDirect(self):
        """
        If the proxy offer tells EDK2 to boot its file directly, OVMF
        boots snponly.efi from the offer (no port-4011 request), then the
        script.
        """
        mac = "52:54:00:2c:00:02"
        gotMAC, ip = self.boot(mac, "uefi", romfile="")
        self.assertEqual(gotMAC, mac)
        self.assertAddress(ip, 160, 180)
        self.assertNotIn("PXE boot server ACK to %s" % (mac,), self.provisioner.log())
        self.assertEqual(self.tftpReads("snponly.efi"), 1)


class SameHostProxyTests(QEMUBootMixin, TestCase):
    """
    The site's DHCP server (dnsmasq) runs on provisioner's own host and has
    port 67; provisioner runs with C{dhcp.port: 0}, as the PXE boot server
    on 4011 only.
    """

    mode = "proxy"
    siteServer = "dnsmasq"
    subnet = 45

    def test_uefiBootServer(self):
        """
        If OVMF's PXE client gets an address offer with option 60
        "PXEClient" and no boot file from the host's DHCP server, it asks
        port 4011 of that host, where provisioner gives it snponly.efi;
        iPXE then boots the script (its file from dnsmasq by user class).
        """
        mac = "52:54:00:2d:00:02"
        gotMAC, ip = self.boot(mac, "uefi", romfile="")
        self.assertEqual(gotMAC, mac)
        self.assertAddress(ip, 160, 180)
        self.assertIn("PXE boot server ACK to %s" % (mac,), self.provisioner.log())
        self.assertEqual(self.decisions(mac), ["snponly.efi"])
        self.assertEqual(self.tftpReads("snponly.efi"), 1)
        self.assertEqual(self.tftpReads("boot.ipxe"), 1)
