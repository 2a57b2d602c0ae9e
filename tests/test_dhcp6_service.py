# -*- test-case-name: tests.test_dhcp6_service -*-
"""
Tests for L{provisioner.dhcp6.service}: real UDP sockets on ::1 with
ephemeral ports, the lease store's thread, the tap registration; and
L{provisioner.dhcp6.service.interfaceInfo6} on files made for the test.
"""

import os

from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from provisioner.appliance import Appliance
from provisioner.config import loadConfig
from provisioner.dhcp6 import wire
from provisioner.dhcp6.service import (DHCP6Service, bindUDP6Socket, interfaceInfo6,
                                       makeService, serverDUID)
from provisioner.dhcp6.wire import OPT
from provisioner.startup import StartError
from provisioner.tap import ProvisionerService

from tests.test_dhcp6_wire import EDK2_SOLICIT


def ephemeral(address, port, interface=None):
    return bindUDP6Socket(address, 0, interface)


class Collector(DatagramProtocol):
    def __init__(self):
        self.waiting = []

    def next(self):
        d = defer.Deferred()
        self.waiting.append(d)
        return d

    def datagramReceived(self, data, address):
        if self.waiting:
            self.waiting.pop(0).callback((wire.parse(data), address))


BOOT = "dhcp6:\n  enabled: true\n  address: '::1'\n  server_address: '2001:db8:1::1'\n" \
    "  server_duid: '0003000102aabbccddee'\n"


class ServiceTests(TestCase):
    """
    The service on ::1.
    """

    def start(self, text):
        from twisted.internet import reactor
        appliance = Appliance(loadConfig(text=text), reactor)
        service = DHCP6Service(appliance, bindSocket=ephemeral)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        return appliance, service

    def client(self):
        from twisted.internet import reactor
        client = Collector()
        listening = reactor.listenUDP(0, client, interface="::1")
        self.addCleanup(listening.stopListening)
        return client, listening

    def port(self, service, kind):
        return [p for k, _, p in service.ports if k == kind][0].getHost().port

    def test_makeService(self):
        """
        If the tap asks for the dhcp6 service, it gets a L{DHCP6Service},
        published as C{appliance.dhcp6}.
        """
        from twisted.internet import reactor
        appliance = Appliance(loadConfig(text=""), reactor)
        service = makeService(appliance)
        self.assertIsInstance(service, DHCP6Service)
        self.assertIs(appliance.dhcp6, service)

    def test_namedService(self):
        """
        If C{dhcp6.enabled} is true, the appliance has a child service
        named C{dhcp6}; if not, none.
        """
        from twisted.internet import reactor
        on = ProvisionerService(loadConfig(text=BOOT), reactor=reactor)
        self.assertIsInstance(on.getServiceNamed("dhcp6"), DHCP6Service)
        off = ProvisionerService(loadConfig(text=""), reactor=reactor)
        self.assertRaises(KeyError, off.getServiceNamed, "dhcp6")

    @defer.inlineCallbacks
    def test_bootModeOverUDP(self):
        """
        If EDK2's Solicit reaches the service's port, the Advertise with
        the boot URL comes back to the client's socket; a Request sent to
        the 4011 port gets a Reply.
        """
        appliance, service = self.start(BOOT)
        client, listening = self.client()
        waiting = client.next()
        listening.write(EDK2_SOLICIT, ("::1", self.port(service, "dhcp6")))
        reply, source = yield waiting
        self.assertEqual(reply.msgType, wire.ADVERTISE)
        self.assertEqual(reply.bootfileURL(), "tftp://[2001:db8:1::1]/snponly.efi")
        request = wire.parse(EDK2_SOLICIT)
        request.msgType = wire.REQUEST
        request.addOption(OPT.SERVERID, reply.serverId)
        waiting = client.next()
        listening.write(request.to_wire(), ("::1", self.port(service, "pxe")))
        reply, source = yield waiting
        self.assertEqual(reply.msgType, wire.REPLY)
        self.assertEqual(reply.serverId, bytes.fromhex("0003000102aabbccddee"))

    @defer.inlineCallbacks
    def test_fullModeOverUDP(self):
        """
        If a client solicits and requests over UDP in full mode, the Reply
        comes once the lease is in the database (the writer thread), and
        stopping the service closes the store.
        """
        directory = os.path.abspath(self.mktemp())
        appliance, service = self.start(
            BOOT + "  mode: full\n  lease_file: %s/l6.sqlite\n  subnets:\n"
            "    - prefix: '2001:db8:1::/64'\n"
            "      range: ['2001:db8:1::100', '2001:db8:1::1ff']\n" % (directory,))
        client, listening = self.client()
        duid = wire.encodeDUIDLL("52:54:00:00:00:01")
        solicit = wire.DHCP6Message(wire.SOLICIT, 7, [(OPT.CLIENTID, duid)])
        solicit.addOption(OPT.IA_NA, wire.IANA(1))
        waiting = client.next()
        listening.write(solicit.to_wire(), ("::1", self.port(service, "dhcp6")))
        advertise, _ = yield waiting
        request = wire.DHCP6Message(wire.REQUEST, 8, [(OPT.CLIENTID, duid),
                                                      (OPT.SERVERID, advertise.serverId)])
        request.addOption(OPT.IA_NA, advertise.iaNAs()[0])
        waiting = client.next()
        listening.write(request.to_wire(), ("::1", self.port(service, "dhcp6")))
        reply, _ = yield waiting
        address = reply.iaNAs()[0].addresses[0].address
        self.assertEqual([lease.address for lease in service.leases.leases()], [address])
        yield service.stopService()
        import sqlite3
        rows = sqlite3.connect(os.path.join(directory, "l6.sqlite")).execute(
            "SELECT address, state FROM leases6").fetchall()
        self.assertEqual(rows, [(address, "bound")])
        self.assertEqual(service.ports, [])

    def test_reconfigure(self):
        """
        If the configuration is reloaded, boot files change at once and the
        listening keys are kept until a restart.
        """
        appliance, service = self.start(BOOT)
        service.reconfigure(loadConfig(text=BOOT + "  port: 1547\n  boot:\n"
                                       "    uefi_x64: ipxe.efi\n"))
        self.assertEqual(service.responder.config["boot"]["uefi_x64"], "ipxe.efi")
        self.assertEqual(service.responder.config["port"], 547)

    def test_noSuchInterface(self):
        """
        If an interface does not exist, start fails naming
        C{dhcp6.interfaces} (and nothing stays bound).
        """
        from twisted.internet import reactor
        appliance = Appliance(loadConfig(text="dhcp6:\n  enabled: true\n  interfaces: "
                                         "[provnosuch0]\n"), reactor)
        service = DHCP6Service(appliance, bindSocket=ephemeral)
        e = self.assertRaises(StartError, service.privilegedStartService)
        self.assertEqual(e.key, "dhcp6.interfaces")
        self.assertEqual(service.ports, [])


class InterfaceTests(SynchronousTestCase):
    """
    Reading an interface's addresses and MAC, and the server DUID.
    """

    def test_interfaceInfo6(self):
        """
        If C{/proc/net/if_inet6} lists a link-local and a global address,
        the global comes first; the MAC is read from sysfs.
        """
        d = self.mktemp()
        os.makedirs(os.path.join(d, "net", "eth0"))
        inet6 = os.path.join(d, "if_inet6")
        with open(inet6, "w") as f:
            f.write("fe800000000000000000000000000001 02 40 20 80 eth0\n"
                    "20010db8000100000000000000000001 02 40 00 80 eth0\n"
                    "20010db8000200000000000000000001 03 40 00 80 eth1\n")
        with open(os.path.join(d, "net", "eth0", "address"), "w") as f:
            f.write("02:aa:bb:cc:dd:ee\n")
        iface = interfaceInfo6("eth0", inet6, os.path.join(d, "net"))
        self.assertEqual(iface.addresses, ["2001:db8:1::1", "fe80::1"])
        self.assertEqual(iface.address, "2001:db8:1::1")
        self.assertEqual(iface.mac, "02:aa:bb:cc:dd:ee")

    def test_serverDUID(self):
        """
        If no DUID is configured, it is a DUID-LL of the first interface
        MAC; a configured one is used as it is.
        """
        from provisioner.dhcp6.server import Interface6
        c = loadConfig(text="")["dhcp6"]
        self.assertEqual(serverDUID(c, [Interface6("a"), Interface6("b", mac="02:00:00:00:00:01")]),
                         wire.encodeDUIDLL("02:00:00:00:00:01"))
        c["server_duid"] = "00:02:00:00:01:57:01"
        self.assertEqual(serverDUID(c, []), bytes.fromhex("00020000015701"))
