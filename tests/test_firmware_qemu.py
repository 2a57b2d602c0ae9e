# -*- test-case-name: tests.test_firmware_qemu -*-
"""
Modern firmware paths on real firmware (QEMU, TCG, Debian's OVMF):

  - UEFI HTTP boot: OVMF with PXE switched off (fw_cfg) asks DHCP as an
    C{HTTPClient}, gets a URL, loads snponly.efi over HTTP; iPXE gets its
    script and the kernel over HTTP: no TFTP at all in QEMU's capture of
    the VM's link. Full mode, and proxy mode beside dnsmasq handing out
    the addresses.
  - Secure Boot: OVMF's Secure Boot build with Microsoft's keys enrolled
    boots Debian's signed chain over TFTP: shimx64.efi, then grubx64.efi
    (Debian's signed grubnetx64) with the grub.cfg the menus render, then
    Debian's signed kernel, to the initramfs marker; the kernel says Secure
    Boot was on. The negative control: an unsigned boot program
    (Debian's snponly.efi) is refused by the firmware.
"""

import os
import re
import struct

from twisted.trial.unittest import TestCase

from tests.netlab import requireE2E
from tests.qemu_lab import BootBed, pcapPackets
from tests.test_boot_qemu import IPXE_DIR, MARKER, requireKit

BOOT_TIMEOUT = 240
SECBOOT_CODE = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
MS_VARS = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
NO_PXE = ["-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n",
          "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n"]

CONFIG = """\
tftp:
  enabled: true
  address: 0.0.0.0
  port: 69
  interface: eth0
  root: {d}/root
dhcp:
  enabled: true
  mode: {mode}
  uefi: direct
  interfaces: [eth0]
  lease_file: {d}/leases.sqlite
  boot:
    bios: undionly.kpxe
    uefi_x64: snponly.efi
    http_x64: http://198.18.{s}.1:8080/images/ipxe/snponly.efi
  ipxe_script: {script}
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
profiles:
  tiny:
    description: Debian kernel, busybox initramfs
    timeout: 1
    kernel: tiny/vmlinuz
    initrd: [tiny/initrd.gz]
    cmdline: "console=ttyS0 {quiet}provhost={{{{ host.name }}}} provflavour={{{{ vars.flavour }}}}"
hosts:
  vm6:
    mac: 52:54:00:ab:03:06
    profile: tiny
    vars: {{flavour: http}}
  vm7:
    mac: 52:54:00:ab:03:07
    profile: tiny
    vars: {{flavour: signed, boot_file: shimx64.efi}}
  vm8:
    mac: 52:54:00:ab:03:08
    profile: tiny
    vars: {{flavour: unsigned, boot_file: snponly.efi}}
"""

# dnsmasq as the site's own DHCP server (proxy mode): addresses only.
DNSMASQ = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
           "--interface=eth0", "--bind-interfaces", "--pid-file=",
           "--dhcp-range=198.18.%(s)d.160,198.18.%(s)d.180,255.255.255.0,10m",
           "--dhcp-leasefile=%(d)s/dnsmasq.leases", "--dhcp-authoritative"]


def protocolsSeen(pcap):
    """
    The set of C{"tftp"} / C{"http"} seen in a capture of QEMU's
    filter-dump (frames after the tap's virtio-net header).
    """
    seen = set()
    for _, frame in pcapPackets(pcap):
        for skip in (10, 12, 0):
            if frame[skip + 12:skip + 14] == b"\x08\x00":
                break
        else:
            continue
        ip = frame[skip + 14:]
        ihl = (ip[0] & 0x0F) * 4
        if len(ip) < ihl + 4:
            continue
        sport, dport = struct.unpack("!HH", ip[ihl:ihl + 4])
        if ip[9] == 17 and 69 in (sport, dport):
            seen.add("tftp")
        if ip[9] == 6 and 8080 in (sport, dport):
            seen.add("http")
    return seen


class FirmwareBed(TestCase):

    subnet = None
    mode = "full"
    script = "http://198.18.{s}.1:8080/boot.ipxe"
    quiet = "quiet "

    def setUp(self):
        self.kit = requireKit()
        self.d = os.path.abspath(self.mktemp())
        for sub in ("root", "images/tiny", "images/ipxe", "state"):
            os.makedirs(os.path.join(self.d, sub))
        self.kit.install(os.path.join(self.d, "images"),
                         {"kernel": "tiny/vmlinuz", "initrd": "tiny/initrd.gz"})
        # Debian's signed chain: shim loads grubx64.efi beside itself.
        self.kit.install(os.path.join(self.d, "root"), {"shim": "shimx64.efi",
                                                        "grub": "grubx64.efi"})
        with open(os.path.join(IPXE_DIR, "snponly.efi"), "rb") as f:
            snponly = f.read()
        for target in ("images/ipxe/snponly.efi", "root/snponly.efi"):
            with open(os.path.join(self.d, target), "wb") as f:
                f.write(snponly)
        with open(os.path.join(self.d, "inventory.yaml"), "w") as f:
            f.write(INVENTORY.format(quiet=self.quiet))
        self.bed = BootBed(self, self.subnet, self.d, hosts=2)
        if self.mode == "proxy":
            peer = self.bed.lab.hosts[1]
            peer.popen([a % {"s": self.subnet, "d": self.d} for a in DNSMASQ])
        self.appliance = self.bed.start(CONFIG.format(
            d=self.d, s=self.subnet, mode=self.mode, script=self.script.format(s=self.subnet)))
        self.appliance.waitLog("image catalogue ready", 60)

    def serial(self, name):
        return os.path.join(self.d, "serial-%s.txt" % (name,))


class HTTPBootTests(FirmwareBed):
    """
    OVMF's UEFI HTTP boot, full mode.
    """

    subnet = 177

    def test_httpBootNoTFTP(self):
        """
        With PXE off, OVMF boots by HTTP: snponly.efi from the URL DHCP
        gave, then the host's menu and kernel, with no TFTP packet at all.
        """
        pcap = os.path.join(self.d, "vm6.pcap")
        found = self.bed.boot("52:54:00:ab:03:06", MARKER, self.serial("vm6"), firmware="uefi",
                              romfile="", memory=512, timeout=BOOT_TIMEOUT,
                              extra=NO_PXE + ["-object",
                                              "filter-dump,id=f0,netdev=n0,file=" + pcap])
        self.assertEqual(found.groups(), ("vm6", "http", "none"))
        self.assertEqual(protocolsSeen(pcap), {"http"})
        log = self.appliance.log()
        self.assertRegex(log, r"boot decision: 52:54:00:ab:03:06 arch=16 .*HTTPClient.* -> "
                              r"http://198\.18\.%d\.1:8080/images/ipxe/snponly\.efi"
                              % (self.subnet,))
        self.assertIn("HTTP GET images/ipxe/snponly.efi from 198.18.%d." % (self.subnet,), log)
        if self.mode == "proxy":
            # The address came from the site's DHCP server.
            with open(os.path.join(self.d, "dnsmasq.leases")) as f:
                self.assertIn("52:54:00:ab:03:06", f.read())


class ProxyHTTPBootTests(HTTPBootTests):
    """
    The same in proxy mode, beside dnsmasq handing out the addresses.
    """

    subnet = 178
    mode = "proxy"

class SecureBootTests(FirmwareBed):
    """
    OVMF with Secure Boot on and Microsoft's keys: Debian's signed chain.
    """

    subnet = 179
    script = "boot.ipxe"
    quiet = ""

    def secureBoot(self, mac, name, marker, timeout=BOOT_TIMEOUT):
        return self.bed.boot(mac, marker, self.serial(name), firmware="uefi", romfile="",
                             memory=512, timeout=timeout, code=SECBOOT_CODE, variables=MS_VARS,
                             extra=["-machine", "q35,smm=on", "-global",
                                    "driver=cfi.pflash01,property=secure,value=on"])

    def test_signedChain(self):
        """
        shim, GRUB and the kernel, all signed, boot to the marker with
        Secure Boot on.
        """
        requireE2E(tools=[SECBOOT_CODE, MS_VARS])
        found = self.secureBoot("52:54:00:ab:03:07", "vm7", MARKER)
        self.assertEqual(found.groups(), ("vm7", "signed", "none"))
        with open(self.serial("vm7"), errors="replace") as f:
            console = f.read()
        self.assertIn("secureboot: Secure boot enabled", console)
        log = self.appliance.log()
        for name in ("shimx64.efi", "grubx64.efi", "images/tiny/vmlinuz"):
            self.assertRegex(log, r"read %s 198\.18\.179\.\d+:\d+ complete" % (re.escape(name),))
        self.assertIn("menu grub/grub.cfg for 52:54:00:ab:03:07", log)

    def test_unsignedRefused(self):
        """
        An unsigned boot program (Debian's snponly.efi) is refused by the
        firmware: it is fetched, never run (no iPXE asks for its script).
        """
        requireE2E(tools=[SECBOOT_CODE, MS_VARS])
        self.secureBoot("52:54:00:ab:03:08", "vm8",
                        re.compile(r"Access Denied|Security Violation|BdsDxe: failed"),
                        timeout=BOOT_TIMEOUT)
        log = self.appliance.log()
        self.assertRegex(log, r"read snponly\.efi 198\.18\.179\.\d+:\d+ complete")
        self.assertNotIn("ipxe=True", log)
        self.assertNotIn("boot.ipxe", log.split("read snponly.efi")[-1])
