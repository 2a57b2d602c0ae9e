# -*- test-case-name: tests.test_dhcp_service -*-
"""
Tests for L{provisioner.dhcp.service} and the C{dhcp} configuration
section: real UDP sockets on 127.0.0.1 with ephemeral ports.
"""

import os
import socket

from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from provisioner.appliance import Appliance
from provisioner.config import ConfigError, loadConfig
from provisioner.dhcp import wire
from provisioner.dhcp.server import bindUDPSocket
from provisioner.dhcp.service import DHCPService, makeService
from provisioner.dhcp.wire import OPT, DHCPPacket

from tests.test_dhcp_wire import golden


def ephemeral(address, port, interface=None):
    """
    Bind like the service would, but on an ephemeral port.
    """
    return bindUDPSocket(address, 0, interface)


class Collector(DatagramProtocol):
    def __init__(self):
        self.received = defer.Deferred()

    def datagramReceived(self, data, address):
        if not self.received.called:
            self.received.callback((data, address))


class ServiceTests(TestCase):
    """
    The service on loopback.
    """

    def makeAppliance(self, text):
        from twisted.internet import reactor
        return Appliance(loadConfig(text=text), reactor)

    def start(self, text, **kw):
        appliance = self.makeAppliance(text)
        service = DHCPService(appliance, bindSocket=ephemeral, **kw)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        return appliance, service

    def port(self, service, kind):
        return [p for k, _, p in service.ports if k == kind][0].getHost().port

    def test_makeService(self):
        """
        If the tap asks for the dhcp service, it gets a L{DHCPService}.
        """
        self.assertIsInstance(makeService(self.makeAppliance("")), DHCPService)

    def test_bootServerOverUDP(self, started=None):
        """
        If a PXE client's REQUEST reaches the boot-server socket, the ACK
        comes back to the client's socket, and the client directory has
        it.
        """
        from twisted.internet import reactor
        appliance, service = started or self.start(
            "dhcp:\n  enabled: true\n  address: 127.0.0.1\n")
        client = Collector()
        listening = reactor.listenUDP(0, client, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        packet = DHCPPacket.from_wire(golden("edk2-x64-discover.bin"))
        packet.setOption(OPT.MESSAGE_TYPE, bytes((wire.DHCPREQUEST,)))
        packet.ciaddr = "127.0.0.1"
        listening.write(packet.to_wire(), ("127.0.0.1", self.port(service, "pxe")))

        def check(result):
            data, address = result
            ack = DHCPPacket.from_wire(data)
            self.assertEqual(ack.messageType, wire.DHCPACK)
            self.assertEqual(ack.file, b"snponly.efi")
            self.assertEqual(ack.siaddr, "127.0.0.1")
            self.assertEqual(appliance.clients.byMAC("52:54:00:12:34:02").boot_file,
                             "snponly.efi")
        return client.received.addCallback(check)

    def test_bootServerOnly(self):
        """
        If dhcp.port is 0 (proxy mode next to the host's own DHCP server),
        only the boot-server port is bound, and it answers.
        """
        appliance, service = self.start(
            "dhcp:\n  enabled: true\n  address: 127.0.0.1\n  port: 0\n")
        self.assertEqual([kind for kind, _, _ in service.ports], ["pxe"])
        return self.test_bootServerOverUDP(started=(appliance, service))

    def test_fullModeLifecycle(self):
        """
        If the service runs in full mode, it opens the lease store in a
        writer thread, and stopping it closes the store (the Deferred
        fires).
        """
        directory = os.path.abspath(self.mktemp())
        appliance, service = self.start(
            "dhcp:\n  enabled: true\n  mode: full\n  address: 127.0.0.1\n"
            "  lease_file: %s/l.sqlite\n  subnets:\n    - network: 127.0.0.0/8\n"
            "      range: [127.0.0.100, 127.0.0.200]\n" % (directory,))
        self.assertIsNotNone(service.leases)
        self.assertTrue(os.path.exists(os.path.join(directory, "l.sqlite")))
        d = service.stopService()
        self.assertIsInstance(d, defer.Deferred)
        return d.addCallback(lambda _: self.assertEqual(service.ports, []))

    def test_reconfigure(self):
        """
        If the configuration is reloaded, boot files change at once;
        listening keys are kept until a restart.
        """
        appliance, service = self.start("dhcp:\n  enabled: true\n  address: 127.0.0.1\n")
        new = loadConfig(text="dhcp:\n  enabled: true\n  address: 127.0.0.1\n"
                         "  port: 1067\n  boot:\n    uefi_x64: ipxe.efi\n")
        service.reconfigure(new)
        self.assertEqual(service.responder.config["boot"]["uefi_x64"], "ipxe.efi")
        self.assertEqual(service.responder.config["port"], 67)


class InterfaceBindingTests(SynchronousTestCase):
    """
    L{bindUDPSocket}.
    """

    def test_options(self):
        """
        If a socket is bound, it can broadcast and reuse the address.
        """
        sock = bindUDPSocket("127.0.0.1", 0)
        self.addCleanup(sock.close)
        self.assertTrue(sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST))
        self.assertTrue(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR))


class SchemaTests(SynchronousTestCase):
    """
    The C{dhcp} section of the configuration.
    """

    def test_defaults(self):
        """
        If nothing is configured, DHCP is off and the mode is proxy.
        """
        dhcp = loadConfig()["dhcp"]
        self.assertEqual((dhcp["enabled"], dhcp["mode"], dhcp["uefi"]),
                         (False, "proxy", "redirect"))

    def assertBad(self, text, fragment):
        e = self.assertRaises(ConfigError, loadConfig, text=text)
        self.assertIn(fragment, str(e))
        return e

    def test_fullNeedsSubnet(self):
        """
        If full mode is enabled with no subnet, the error says so.
        """
        self.assertBad("dhcp:\n  enabled: true\n  mode: full\n  interfaces: [eth0]\n",
                       "dhcp.subnets")

    def test_noDHCPPort(self):
        """
        If dhcp.port is 0 in full mode, or with pxe_port 0 too, the
        configuration is refused with the reason.
        """
        self.assertBad("dhcp:\n  enabled: true\n  mode: full\n  interfaces: [eth0]\n"
                       "  port: 0\n  subnets:\n    - network: 198.18.0.0/24\n"
                       "      range: [198.18.0.10, 198.18.0.20]\n", "only works in mode 'proxy'")
        self.assertBad("dhcp:\n  enabled: true\n  interfaces: [eth0]\n  port: 0\n"
                       "  pxe_port: 0\n", "nothing to listen on")

    def test_needsInterface(self):
        """
        If the responder is enabled on every address with no interface
        list, the configuration is refused.
        """
        self.assertBad("dhcp:\n  enabled: true\n", "dhcp.interfaces")

    def test_badSubnet(self):
        """
        If a subnet's range leaves its network, the error names the key and
        line.
        """
        e = self.assertBad("dhcp:\n  subnets:\n    - network: 198.18.0.0/24\n"
                           "      range: [198.18.0.10, 198.18.1.5]\n", "not inside")
        self.assertIn("<config>:", str(e))
        self.assertIn("dhcp.subnets[0]", str(e))

    def test_badReservation(self):
        """
        If a reservation's MAC or address is wrong, or an address is reserved
        twice, the configuration is refused.
        """
        self.assertBad("dhcp:\n  reservations:\n    nomac: 198.18.0.1\n", "MAC")
        self.assertBad("dhcp:\n  reservations:\n    '52:54:00:00:00:01': x\n", "IPv4")
        self.assertBad("dhcp:\n  reservations:\n    '52:54:00:00:00:01': 198.18.0.1\n"
                       "    '52:54:00:00:00:02': 198.18.0.1\n", "twice")

    def test_badOverride(self):
        """
        If an override has an unknown key, it is named.
        """
        self.assertBad("dhcp:\n  overrides:\n    '52:54:00:00:00:01': {file: x}\n",
                       "unknown key file")

    def test_badMode(self):
        """
        If the mode is neither proxy nor full, the configuration is refused.
        """
        self.assertBad("dhcp:\n  mode: relay\n", "dhcp.mode")


class LeaseFileTests(TestCase):
    """
    A lease file that is not a database.
    """

    def test_corrupt(self):
        """
        If the lease file is not an SQLite database, starting the service
        raises L{ConfigError} naming C{dhcp.lease_file}.
        """
        from twisted.internet import reactor
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "l.sqlite")
        with open(path, "wb") as f:
            f.write(b"this is not a database" * 100)
        appliance = Appliance(loadConfig(text=(
            "dhcp:\n  enabled: true\n  mode: full\n  address: 127.0.0.1\n"
            "  lease_file: %s\n  subnets:\n    - network: 127.0.0.0/8\n"
            "      range: [127.0.0.100, 127.0.0.200]\n") % (path,)), reactor)
        service = DHCPService(appliance, bindSocket=ephemeral)
        e = self.assertRaises(ConfigError, service.privilegedStartService)
        self.assertIn("dhcp.lease_file", str(e))
