# -*- test-case-name: tests.test_dhcp_policy -*-
"""
Tests for L{provisioner.dhcp.policy}.
"""

from zope.interface.verify import verifyObject

from twisted.trial.unittest import SynchronousTestCase

from provisioner.config import loadConfig
from provisioner.dhcp.policy import (
    ArchitectureBootPolicy,
    BootDecision,
    ClientFacts,
    IBootPolicy,
    archName,
)

MAC = "52:54:00:00:00:01"


def dhcpConfig(text=""):
    return loadConfig(text="dhcp:\n  mode: proxy\n" + text)["dhcp"]


class FakeInventory:
    """
    An inventory with C{host(mac)} returning a mapping.
    """

    def __init__(self, hosts):
        self.hosts = hosts

    def host(self, mac):
        return self.hosts.get(mac)


class ArchitectureBootPolicyTests(SynchronousTestCase):
    """
    The default boot-file policy.
    """

    def setUp(self):
        self.policy = ArchitectureBootPolicy(dhcpConfig())

    def test_interface(self):
        """
        If checked, the default policy provides L{IBootPolicy}.
        """
        self.assertTrue(verifyObject(IBootPolicy, self.policy))

    def test_architectures(self):
        """
        If a client sends option 93, the NBP follows it: 0 BIOS, 6 IA32, 7
        and 9 both x64 UEFI, 10 ARM32, 11 ARM64; no option 93 is BIOS.
        """
        expected = {None: "undionly.kpxe", 0: "undionly.kpxe", 6: "ipxe-ia32.efi",
                    7: "snponly.efi", 9: "snponly.efi", 10: "ipxe-arm32.efi",
                    11: "ipxe-arm64.efi"}
        for arch, bootFile in expected.items():
            decision = self.policy.decide(ClientFacts(MAC, arch=arch))
            self.assertEqual(decision, BootDecision(bootFile, None, "arch"), arch)

    def test_httpBootUnset(self):
        """
        If an HTTP boot client (16) asks and no URL is configured, there is
        no decision (the client is not answered).
        """
        self.assertIsNone(self.policy.decide(ClientFacts(MAC, arch=16, http=True)))

    def test_httpBootURL(self):
        """
        If an HTTP boot URL is configured for arch 16, the client gets it.
        """
        policy = ArchitectureBootPolicy(dhcpConfig(
            "  boot:\n    http_x64: http://198.18.0.1/ipxe.efi\n"))
        self.assertEqual(policy.decide(ClientFacts(MAC, arch=16, http=True)).bootFile,
                         "http://198.18.0.1/ipxe.efi")

    def test_unknownArch(self):
        """
        If the architecture is one with no configured file, there is no
        decision.
        """
        self.assertIsNone(self.policy.decide(ClientFacts(MAC, arch=42)))
        self.assertEqual(archName(42), "arch42")

    def test_ipxeGetsScript(self):
        """
        If the client is already iPXE, it gets the iPXE script whatever
        its architecture: the chainload loop breaker.
        """
        for arch in (0, 7):
            decision = self.policy.decide(ClientFacts(MAC, arch=arch, ipxe=True))
            self.assertEqual(decision, BootDecision("boot.ipxe", None, "ipxe"))

    def test_configOverride(self):
        """
        If C{dhcp.overrides} names a boot file for the MAC, the firmware
        gets it; once running iPXE, the override's script (or the default
        script) is used.
        """
        policy = ArchitectureBootPolicy(dhcpConfig(
            "  overrides:\n"
            "    '52-54-00-00-00-01': {boot_file: special.kpxe, ipxe_script: special.ipxe,"
            " next_server: 198.18.0.9}\n"
            "    '52:54:00:00:00:02': plain.efi\n"))
        self.assertEqual(policy.decide(ClientFacts(MAC, arch=0)),
                         BootDecision("special.kpxe", "198.18.0.9", "override"))
        self.assertEqual(policy.decide(ClientFacts(MAC, arch=0, ipxe=True)),
                         BootDecision("special.ipxe", "198.18.0.9", "override+ipxe"))
        other = "52:54:00:00:00:02"
        self.assertEqual(policy.decide(ClientFacts(other, arch=7)).bootFile, "plain.efi")
        self.assertEqual(policy.decide(ClientFacts(other, arch=7, ipxe=True)).bootFile,
                         "boot.ipxe")

    def test_inventoryOverride(self):
        """
        If the inventory knows the host, its override wins over the
        configuration's.
        """
        inventory = FakeInventory({MAC: {"boot_file": "inventory.efi"}})
        policy = ArchitectureBootPolicy(
            dhcpConfig("  overrides:\n    '52:54:00:00:00:01': config.efi\n"),
            lambda: inventory)
        self.assertEqual(policy.decide(ClientFacts(MAC, arch=7)).bootFile, "inventory.efi")
        inventory.hosts = {}
        self.assertEqual(policy.decide(ClientFacts(MAC, arch=7)).bootFile, "config.efi")

    def test_reconfigure(self):
        """
        If the policy is reconfigured, the new boot files apply.
        """
        self.policy.reconfigure(dhcpConfig("  boot:\n    bios: pxelinux.0\n"))
        self.assertEqual(self.policy.decide(ClientFacts(MAC, arch=0)).bootFile, "pxelinux.0")


class MenusInventoryTests(SynchronousTestCase):
    """
    The policy and the responder with the menus service's real inventory.
    """

    INVENTORY = """\
hosts:
  web1:
    mac: '52:54:00:00:00:01'
    vars: {boot_file: web1.efi, ip: 198.18.0.77}
  db1:
    uuid: 12345678-9abc-def0-1122-334455667788
    vars: {ipxe_script: db1.ipxe}
"""

    def setUp(self):
        from provisioner.menus.inventory import parseInventory
        self.inventory = parseInventory(self.INVENTORY)

    def test_overrideFromVars(self):
        """
        If the inventory's host (by MAC, else by UUID) has C{boot_file} or
        C{ipxe_script} in its vars, the policy uses them.
        """
        policy = ArchitectureBootPolicy(dhcpConfig(), lambda: self.inventory)
        self.assertEqual(policy.decide(ClientFacts(MAC, arch=7)),
                         BootDecision("web1.efi", None, "override"))
        facts = ClientFacts("52:54:00:00:00:05", arch=7, ipxe=True,
                            uuid="12345678-9abc-def0-1122-334455667788")
        self.assertEqual(policy.decide(facts).bootFile, "db1.ipxe")
        facts = ClientFacts("52:54:00:00:00:06", arch=7,
                            uuid="00000000-0000-0000-0000-000000000000")
        self.assertEqual(policy.decide(facts).reason, "arch")

    def test_reservations(self):
        """
        If an inventory host has an C{ip} in its vars, it is a reservation
        for each of its MACs.
        """
        from provisioner.dhcp.subnets import hostReservations
        self.assertEqual(hostReservations(self.inventory),
                         {"52:54:00:00:00:01": ("198.18.0.77", "web1")})
