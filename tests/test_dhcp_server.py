# -*- test-case-name: tests.test_dhcp_server -*-
"""
Tests for L{provisioner.dhcp.server} and the responder's parts
(L{provisioner.dhcp.boot}, L{provisioner.dhcp.leasing},
L{provisioner.dhcp.subnets}, L{provisioner.dhcp.replies}): the responder's
decisions in proxy and full mode, the boot server on 4011, and the
protocols' refusal to let any datagram raise.
"""

import os
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from provisioner.directory import ClientDirectory
from provisioner.config import loadConfig
from provisioner.dhcp import wire
from provisioner.dhcp.leases import LeaseStore
from provisioner.dhcp.server import DHCPProtocol, DHCPResponder, InterfaceInfo, PXEProtocol
from provisioner.dhcp.wire import OPT, DHCPPacket

from tests.fakes import FakeDatagramPort
from tests.test_dhcp_wire import MALFORMED, golden

SERVER = "198.18.0.1"
IFACE = InterfaceInfo("eth0", SERVER, "198.18.0.0/24")

FULL = """\
dhcp:
  mode: full
  lease_time: 600
  subnets:
    - network: 198.18.0.0/24
      range: [198.18.0.100, 198.18.0.102]
      router: 198.18.0.1
      dns: [198.18.0.1]
      domain: lab.example
    - network: 198.18.7.0/24
      range: [198.18.7.10, 198.18.7.20]
      lease_time: 7200
  reservations:
    '52:54:00:00:00:99': {ip: 198.18.0.50, hostname: reserved}
"""


def config(text):
    return loadConfig(text=text)["dhcp"]


def request(kind, mac=b"\x52\x54\x00\x00\x00\x01", options=(), **fields):
    """
    A client request of message type C{kind}.
    """
    p = DHCPPacket(op=wire.BOOTREQUEST, xid=0x1234, chaddr=mac, **fields)
    p.setOption(OPT.MESSAGE_TYPE, bytes((kind,)))
    for code, value in options:
        p.setOption(code, value)
    return DHCPPacket.from_wire(p.to_wire())


def retype(name, kind, **fields):
    """
    A golden packet with another message type (and header fields).
    """
    p = DHCPPacket.from_wire(golden(name))
    p.setOption(OPT.MESSAGE_TYPE, bytes((kind,)))
    for key, value in fields.items():
        setattr(p, key, value)
    return DHCPPacket.from_wire(p.to_wire())


class Sent(list):
    """
    A C{send} callable that records C{(packet, address)}.
    """

    def __call__(self, packet, address):
        self.append((DHCPPacket.from_wire(packet.to_wire()), address))


class ProxyModeTests(SynchronousTestCase):
    """
    C{dhcp.mode: proxy}.
    """

    def setUp(self):
        self.clock = Clock()
        self.clients = ClientDirectory(clock=self.clock.seconds)
        self.responder = DHCPResponder(config("dhcp:\n  mode: proxy\n"), self.clock,
                                       self.clients)
        self.sent = Sent()

    def test_ignoresNonPXE(self):
        """
        If a client that is not network-booting (udhcpc) sends a DISCOVER,
        the proxy stays silent.
        """
        self.responder.handleDHCP(DHCPPacket.from_wire(golden("udhcpc-discover.bin")),
                                  IFACE, self.sent)
        self.assertEqual(self.sent, [])

    def test_iPXEOffer(self):
        """
        If iPXE (BIOS ROM) sends a DISCOVER, the proxy offer has yiaddr 0,
        option 60 PXEClient, 54 our address, 97 echoed, siaddr and file,
        66 and 67 with the iPXE script, 43 with discovery control 8, and
        is broadcast.
        """
        packet = DHCPPacket.from_wire(golden("ipxe-bios-discover.bin"))
        self.responder.handleDHCP(packet, IFACE, self.sent)
        [(offer, address)] = self.sent
        self.assertEqual(address, ("255.255.255.255", 68))
        self.assertEqual(offer.messageType, wire.DHCPOFFER)
        self.assertEqual((offer.yiaddr, offer.siaddr, offer.xid), (
            "0.0.0.0", SERVER, packet.xid))
        self.assertEqual(offer.option(OPT.VENDOR_CLASS), b"PXEClient")
        self.assertEqual(offer.ipOption(OPT.SERVER_ID), SERVER)
        self.assertEqual(offer.option(OPT.CLIENT_UUID), packet.option(OPT.CLIENT_UUID))
        self.assertEqual(offer.file, b"boot.ipxe")
        self.assertEqual(offer.option(OPT.BOOTFILE), b"boot.ipxe")
        self.assertEqual(offer.option(OPT.TFTP_SERVER), SERVER.encode())
        self.assertEqual(wire.parsePXEVendor(offer.option(OPT.VENDOR))["discovery_control"], 8)
        self.assertNotIn(OPT.LEASE_TIME, offer.options)

    def test_recordsClient(self):
        """
        If a PXE client is answered, the client directory records its
        architecture, iPXE-ness, vendor and user class, UUID and boot file.
        """
        self.responder.handleDHCP(DHCPPacket.from_wire(golden("edk2-x64-uuid-discover.bin")),
                                  IFACE, self.sent)
        record = self.clients.byMAC("52:54:00:12:34:12")
        self.assertEqual((record.arch, record.ipxe, record.boot_file, record.uuid), (
            7, False, "snponly.efi", "12345678-9abc-def0-1122-334455667788"))
        self.assertTrue(record.vendor_class.startswith("PXEClient:Arch:00007"))
        self.responder.handleDHCP(DHCPPacket.from_wire(golden("ipxe-bios-discover.bin")),
                                  IFACE, self.sent)
        record = self.clients.byMAC("52:54:00:12:34:01")
        self.assertEqual((record.ipxe, record.user_class), (True, "iPXE"))

    def test_uefiRedirect(self):
        """
        If EDK2 (UEFI, not iPXE) sends a DISCOVER with C{uefi: redirect},
        the offer has siaddr but neither option 43 nor a file: the client
        must ask the boot server on 4011.
        """
        self.responder.handleDHCP(DHCPPacket.from_wire(golden("edk2-x64-discover.bin")),
                                  IFACE, self.sent)
        [(offer, _)] = self.sent
        self.assertEqual(offer.siaddr, SERVER)
        self.assertNotIn(OPT.VENDOR, offer.options)
        self.assertNotIn(OPT.BOOTFILE, offer.options)
        self.assertEqual(offer.file, b"")

    def test_uefiDirect(self):
        """
        If C{uefi: direct}, EDK2's offer carries 43.6 = 8 and the NBP.
        """
        self.responder.reconfigure(config("dhcp:\n  mode: proxy\n  uefi: direct\n"))
        self.responder.handleDHCP(DHCPPacket.from_wire(golden("edk2-x64-discover.bin")),
                                  IFACE, self.sent)
        [(offer, _)] = self.sent
        self.assertEqual(offer.option(OPT.VENDOR), b"\x06\x01\x08\xff")
        self.assertEqual(offer.file, b"snponly.efi")

    def test_ignoresRequestOn67(self):
        """
        If a REQUEST arrives on 67 in proxy mode (it is for the address
        server), nothing is sent.
        """
        self.responder.handleDHCP(DHCPPacket.from_wire(golden("ipxe-bios-request.bin")),
                                  IFACE, self.sent)
        self.assertEqual(self.sent, [])

    def test_bootServer(self):
        """
        If EDK2 sends its REQUEST to 4011 with a boot item, the ACK goes
        back to its address and port with the NBP, option 60, 54, and the
        boot item echoed; the directory learns its address.
        """
        item = wire.encodePXEVendor(bootItem=(0, 0))
        packet = retype("edk2-x64-discover.bin", wire.DHCPREQUEST, ciaddr="198.18.0.160")
        packet.setOption(OPT.VENDOR, item)
        self.responder.handlePXE(packet, IFACE, self.sent, ("198.18.0.160", 4011))
        [(ack, address)] = self.sent
        self.assertEqual(address, ("198.18.0.160", 4011))
        self.assertEqual(ack.messageType, wire.DHCPACK)
        self.assertEqual((ack.file, ack.siaddr), (b"snponly.efi", SERVER))
        self.assertEqual(ack.option(OPT.VENDOR_CLASS), b"PXEClient")
        self.assertEqual(wire.parsePXEVendor(ack.option(OPT.VENDOR))["boot_item"], (0, 0))
        self.assertEqual(self.clients.byMAC("52:54:00:12:34:02").ip, "198.18.0.160")

    def test_bootServerGolden(self):
        """
        If OVMF's real port-4011 REQUEST arrives, the ACK goes back to it
        with the x64 NBP; then snponly.efi's DISCOVER gets the script.
        """
        packet = DHCPPacket.from_wire(golden("edk2-x64-bootserver-request.bin"))
        self.responder.handlePXE(packet, IFACE, self.sent, ("198.18.45.100", 4011))
        [(ack, address)] = self.sent
        self.assertEqual((ack.file, address), (b"snponly.efi", ("198.18.45.100", 4011)))
        self.assertNotIn(OPT.VENDOR, ack.options)
        self.responder.handleDHCP(DHCPPacket.from_wire(golden("snponly-efi-discover.bin")),
                                  IFACE, self.sent)
        self.assertEqual(self.sent[-1][0].file, b"boot.ipxe")

    def test_bootServerIgnoresOthers(self):
        """
        If a non-PXE client or a DISCOVER reaches 4011, nothing is sent.
        """
        self.responder.handlePXE(retype("udhcpc-discover.bin", wire.DHCPREQUEST), IFACE,
                                 self.sent, ("198.18.0.5", 68))
        self.responder.handlePXE(DHCPPacket.from_wire(golden("edk2-x64-discover.bin")),
                                 IFACE, self.sent, ("198.18.0.5", 68))
        self.assertEqual(self.sent, [])

    def test_httpClient(self):
        """
        If a UEFI HTTP boot client (HTTPClient, arch 16) asks and a URL is
        configured, the offer carries option 60 HTTPClient and the URL.
        """
        self.responder.reconfigure(config(
            "dhcp:\n  mode: proxy\n  boot:\n    http_x64: http://198.18.0.1/ipxe.efi\n"))
        packet = request(wire.DHCPDISCOVER, options=[
            (OPT.VENDOR_CLASS, b"HTTPClient:Arch:00016:UNDI:003000"),
            (OPT.CLIENT_ARCH, b"\x00\x10")])
        self.responder.handleDHCP(packet, IFACE, self.sent)
        [(offer, _)] = self.sent
        self.assertEqual(offer.option(OPT.VENDOR_CLASS), b"HTTPClient")
        self.assertEqual(offer.option(OPT.BOOTFILE), b"http://198.18.0.1/ipxe.efi")
        self.assertNotIn(OPT.VENDOR, offer.options)

    def test_vendorClassesConfigurable(self):
        """
        If C{vendor_classes} names another prefix (a vendor ROM's
        C{HW-Client}), such clients are answered.
        """
        packet = request(wire.DHCPDISCOVER, options=[(OPT.VENDOR_CLASS, b"HW-Client")])
        self.responder.handleDHCP(packet, IFACE, self.sent)
        self.assertEqual(self.sent, [])
        self.responder.reconfigure(config(
            "dhcp:\n  mode: proxy\n  vendor_classes: [PXEClient, HW-Client]\n"))
        self.responder.handleDHCP(packet, IFACE, self.sent)
        self.assertEqual(len(self.sent), 1)

    def test_replyDelay(self):
        """
        If C{reply_delay} is set, the offer leaves only after it.
        """
        self.responder.reconfigure(config("dhcp:\n  mode: proxy\n  reply_delay: 1.5\n"))
        self.responder.handleDHCP(DHCPPacket.from_wire(golden("ipxe-bios-discover.bin")),
                                  IFACE, self.sent)
        self.assertEqual(self.sent, [])
        self.clock.advance(1.5)
        self.assertEqual(len(self.sent), 1)

    def test_relayed(self):
        """
        If the DISCOVER came through a relay (giaddr), the offer goes to the
        relay's server port with option 82 echoed.
        """
        agent = b"\x01\x04eth7"
        packet = retype("ipxe-bios-discover.bin", wire.DHCPDISCOVER, giaddr="198.18.7.1")
        packet.setOption(OPT.RELAY_AGENT, agent)
        self.responder.handleDHCP(packet, IFACE, self.sent)
        [(offer, address)] = self.sent
        self.assertEqual(address, ("198.18.7.1", 67))
        self.assertEqual(offer.giaddr, "198.18.7.1")
        self.assertEqual(offer.option(OPT.RELAY_AGENT), agent)

    def test_pxelinuxOptions(self):
        """
        If C{pxelinux} keys are set, options 208-211 are sent.
        """
        self.responder.reconfigure(config(
            "dhcp:\n  mode: proxy\n  pxelinux:\n    config_file: pxelinux.cfg/x\n"
            "    path_prefix: /boot/\n    reboot_time: 30\n"))
        self.responder.handleDHCP(DHCPPacket.from_wire(golden("edk2-x64-discover.bin")),
                                  IFACE, self.sent)
        self.responder.reconfigure(config("dhcp:\n  mode: proxy\n  uefi: direct\n"
                                          "  pxelinux:\n    reboot_time: 30\n"))
        self.responder.handleDHCP(DHCPPacket.from_wire(golden("edk2-x64-discover.bin")),
                                  IFACE, self.sent)
        offer = self.sent[-1][0]
        self.assertEqual(offer.option(OPT.PXELINUX_MAGIC), b"\xf1\x00\x74\x7e")
        self.assertEqual(struct.unpack("!I", offer.option(OPT.PXELINUX_REBOOT))[0], 30)


class FullModeTests(SynchronousTestCase):
    """
    C{dhcp.mode: full}.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(10000)
        self.clients = ClientDirectory(clock=self.clock.seconds)
        self.leases = LeaseStore(os.path.join(self.mktemp(), "l.sqlite"), self.clock)
        self.addCleanup(self.leases.close)
        self.inventory = None
        self.responder = DHCPResponder(config(FULL), self.clock, self.clients, self.leases,
                                       inventoryGetter=lambda: self.inventory)
        self.sent = Sent()

    def handshake(self, mac=b"\x52\x54\x00\x00\x00\x01", options=()):
        self.responder.handleDHCP(request(wire.DHCPDISCOVER, mac, options), IFACE, self.sent)
        if not self.sent:
            return None, None
        offer = self.sent[-1][0]
        self.responder.handleDHCP(request(wire.DHCPREQUEST, mac, list(options) + [
            (OPT.SERVER_ID, wire.ip2bytes(SERVER)),
            (OPT.REQUESTED_IP, wire.ip2bytes(offer.yiaddr))]), IFACE, self.sent)
        return offer, self.sent[-1][0]

    def test_offerAndAck(self):
        """
        If a client does DISCOVER then REQUEST, it is offered and then ACKed
        the first pool address with mask, router, DNS, domain, lease time
        and T1/T2, broadcast; the lease is stored and the client directory
        knows the client.
        """
        offer, ack = self.handshake()
        self.assertEqual(offer.messageType, wire.DHCPOFFER)
        self.assertEqual(ack.messageType, wire.DHCPACK)
        self.assertEqual(ack.yiaddr, "198.18.0.100")
        self.assertEqual(self.sent[-1][1], ("255.255.255.255", 68))
        self.assertEqual(ack.option(OPT.SUBNET_MASK), b"\xff\xff\xff\x00")
        self.assertEqual(ack.ipOption(OPT.ROUTER), SERVER)
        self.assertEqual(ack.option(OPT.DOMAIN_NAME), b"lab.example")
        self.assertEqual(struct.unpack("!I", ack.option(OPT.LEASE_TIME))[0], 600)
        self.assertEqual(struct.unpack("!I", ack.option(OPT.RENEWAL_TIME))[0], 300)
        self.assertEqual(struct.unpack("!I", ack.option(OPT.REBINDING_TIME))[0], 525)
        self.assertEqual(self.leases.byMAC("52:54:00:00:00:01").ip, "198.18.0.100")
        self.assertNotIn(OPT.VENDOR_CLASS, ack.options)
        self.assertEqual(self.clients.byIP("198.18.0.100").mac, "52:54:00:00:00:01")

    def test_sameAddressAgain(self):
        """
        If a client with a lease asks again, it gets the same address.
        """
        self.handshake()
        offer, _ = self.handshake()
        self.assertEqual(offer.yiaddr, "198.18.0.100")

    def test_requestedAddress(self):
        """
        If a new client asks for a free pool address (option 50), it is
        offered that one.
        """
        self.responder.handleDHCP(request(wire.DHCPDISCOVER, options=[
            (OPT.REQUESTED_IP, wire.ip2bytes("198.18.0.102"))]), IFACE, self.sent)
        self.assertEqual(self.sent[-1][0].yiaddr, "198.18.0.102")

    def test_exhausted(self):
        """
        If the pool is used up, a further client is not answered.
        """
        for i in range(3):
            self.handshake(bytes([0x52, 0x54, 0, 0, 1, i]))
        count = len(self.sent)
        self.responder.handleDHCP(request(wire.DHCPDISCOVER, b"\x52\x54\x00\x00\x02\x00"),
                                  IFACE, self.sent)
        self.assertEqual(len(self.sent), count)
        self.assertEqual(self.responder.stats["pool-exhausted"], 1)

    def test_expiredReclaimed(self):
        """
        If a lease expires, its address goes to the next client.
        """
        for i in range(3):
            self.handshake(bytes([0x52, 0x54, 0, 0, 1, i]))
        self.clock.advance(601)
        offer, ack = self.handshake(b"\x52\x54\x00\x00\x02\x00")
        self.assertEqual(ack.messageType, wire.DHCPACK)

    def test_reservation(self):
        """
        If the MAC has a reservation, it is offered the reserved address
        (outside the range is fine) with its hostname, and nobody else gets
        it: a client with a lease of its own that asks for it is NAKed, a
        client this server has no record of gets no answer.
        """
        offer, ack = self.handshake(b"\x52\x54\x00\x00\x00\x99")
        self.assertEqual(ack.yiaddr, "198.18.0.50")
        self.assertEqual(ack.option(OPT.HOSTNAME), b"reserved")
        sent = len(self.sent)
        self.responder.handleDHCP(request(wire.DHCPREQUEST, options=[
            (OPT.REQUESTED_IP, wire.ip2bytes("198.18.0.50"))]), IFACE, self.sent)
        self.assertEqual(len(self.sent), sent)
        self.handshake()
        self.responder.handleDHCP(request(wire.DHCPREQUEST, options=[
            (OPT.REQUESTED_IP, wire.ip2bytes("198.18.0.50"))]), IFACE, self.sent)
        self.assertEqual(self.sent[-1][0].messageType, wire.DHCPNAK)

    def test_inventoryReservations(self):
        """
        If the inventory exists, its hosts' reservations are added to
        C{dhcp.reservations} (the inventory wins for a MAC or address both
        name); a reserved address still leased to another machine is not
        taken from it.
        """
        class Inventory:
            hosts = {"a": {"mac": "52:54:00:00:00:01", "ip": "198.18.0.60",
                           "hostname": "from-inventory"}}
        self.inventory = Inventory()
        _, ack = self.handshake()
        self.assertEqual(ack.yiaddr, "198.18.0.60")
        self.assertEqual(ack.option(OPT.HOSTNAME), b"from-inventory")
        _, ack = self.handshake(b"\x52\x54\x00\x00\x00\x99")
        self.assertEqual(ack.yiaddr, "198.18.0.50")
        self.inventory.hosts["b"] = {"mac": "52:54:00:00:00:98", "ip": "198.18.0.50"}
        _, ack = self.handshake(b"\x52\x54\x00\x00\x00\x98")
        self.assertEqual(ack.yiaddr, "198.18.0.100")

    def test_otherServerChosen(self):
        """
        If the client's REQUEST names another server, we stay silent and
        release our offer.
        """
        self.responder.handleDHCP(request(wire.DHCPDISCOVER), IFACE, self.sent)
        self.responder.handleDHCP(request(wire.DHCPREQUEST, options=[
            (OPT.SERVER_ID, wire.ip2bytes("198.18.0.2")),
            (OPT.REQUESTED_IP, wire.ip2bytes("198.18.0.100"))]), IFACE, self.sent)
        self.assertEqual(len(self.sent), 1)
        self.assertIsNone(self.leases.byMAC("52:54:00:00:00:01"))

    def test_initRebootUnknownClientSilent(self):
        """
        If a client this server has no record of (no offer, lease or
        reservation) sends an INIT-REBOOT REQUEST for an address of the
        subnet, it gets no answer and nothing is bound (RFC 2131 4.3.2),
        so that a flood of them cannot take the pool.
        """
        for i in range(20):
            self.responder.handleDHCP(request(wire.DHCPREQUEST, mac=bytes(
                [0x02, 0, 0, 0, 9, i]), options=[
                (OPT.REQUESTED_IP, wire.ip2bytes("198.18.0.%d" % (100 + i,)))]),
                IFACE, self.sent)
        self.assertEqual(self.sent, [])
        self.assertEqual(list(self.leases), [])
        _, ack = self.handshake()
        self.assertEqual(ack.messageType, wire.DHCPACK)

    def test_initRebootWrongNetwork(self):
        """
        If a client in INIT-REBOOT asks for an address of another network,
        it gets a broadcast NAK.
        """
        self.responder.handleDHCP(request(wire.DHCPREQUEST, options=[
            (OPT.REQUESTED_IP, wire.ip2bytes("10.0.0.5"))]), IFACE, self.sent)
        [(nak, address)] = self.sent
        self.assertEqual(nak.messageType, wire.DHCPNAK)
        self.assertEqual(address, ("255.255.255.255", 68))

    def test_notAuthoritative(self):
        """
        If C{authoritative} is false, a bad request gets no NAK.
        """
        self.responder.reconfigure(config(FULL + "  authoritative: false\n"))
        self.responder.handleDHCP(request(wire.DHCPREQUEST, options=[
            (OPT.REQUESTED_IP, wire.ip2bytes("10.0.0.5"))]), IFACE, self.sent)
        self.assertEqual(self.sent, [])

    def test_renewUnicast(self):
        """
        If a bound client renews (ciaddr set, no 54/50), the ACK goes by
        unicast to ciaddr; a renewal of an address it does not hold is
        NAKed.
        """
        self.handshake()
        self.responder.handleDHCP(request(wire.DHCPREQUEST, ciaddr="198.18.0.100"),
                                  IFACE, self.sent)
        ack, address = self.sent[-1]
        self.assertEqual((ack.messageType, address), (wire.DHCPACK, ("198.18.0.100", 68)))
        self.handshake(b"\x52\x54\x00\x00\x00\x02")
        self.responder.handleDHCP(request(wire.DHCPREQUEST, ciaddr="198.18.0.101"),
                                  IFACE, self.sent)
        self.assertEqual(self.sent[-1][0].messageType, wire.DHCPNAK)

    def test_releaseAndDecline(self):
        """
        If a client releases, its lease is gone; if the holder of a lease
        declines it, the address is held away from the next clients.
        """
        self.handshake()
        self.responder.handleDHCP(request(wire.DHCPRELEASE, ciaddr="198.18.0.100", options=[
            (OPT.SERVER_ID, wire.ip2bytes(SERVER))]), IFACE, self.sent)
        self.assertIsNone(self.leases.byMAC("52:54:00:00:00:01"))
        _, ack = self.handshake(b"\x52\x54\x00\x00\x00\x02")
        self.assertEqual(ack.yiaddr, "198.18.0.101")
        self.responder.handleDHCP(request(wire.DHCPDECLINE, b"\x52\x54\x00\x00\x00\x02",
                                          options=[
            (OPT.SERVER_ID, wire.ip2bytes(SERVER)),
            (OPT.REQUESTED_IP, wire.ip2bytes("198.18.0.101"))]), IFACE, self.sent)
        self.assertIsNone(self.leases.byMAC("52:54:00:00:00:02"))
        offers = [self.handshake(bytes([0x52, 0x54, 0, 0, 0, i]))[0].yiaddr for i in (3, 4)]
        self.assertEqual(offers, ["198.18.0.102", "198.18.0.100"])

    def test_inform(self):
        """
        If a configured client sends INFORM, it gets an ACK by unicast with
        the subnet options but no address and no lease time.
        """
        self.responder.handleDHCP(request(wire.DHCPINFORM, ciaddr="198.18.0.33"),
                                  IFACE, self.sent)
        [(ack, address)] = self.sent
        self.assertEqual(address, ("198.18.0.33", 68))
        self.assertEqual(ack.yiaddr, "0.0.0.0")
        self.assertNotIn(OPT.LEASE_TIME, ack.options)
        self.assertEqual(ack.ipOption(OPT.ROUTER), SERVER)

    def test_informRate(self):
        """
        If INFORMs come faster than C{INFORM_RATE} a second, those beyond
        the burst get no answer (their replies go unicast to an address
        that may never answer ARP, and would fill the socket), and are
        counted; the budget comes back with time, and relayed INFORMs
        (answered to their relay) and other messages are not limited by
        it.
        """
        from provisioner.dhcp.leasing import INFORM_BURST, INFORM_RATE
        for i in range(200):
            self.responder.handleDHCP(request(wire.DHCPINFORM, ciaddr="198.18.0.%d" % (
                10 + i % 100,)), IFACE, self.sent)
        self.assertEqual(len(self.sent), INFORM_BURST)
        self.assertEqual(self.responder.stats["INFORM-over-rate"], 200 - INFORM_BURST)
        self.clock.advance(1)
        for i in range(200):
            self.responder.handleDHCP(request(wire.DHCPINFORM, ciaddr="198.18.0.33"),
                                      IFACE, self.sent)
        self.assertEqual(len(self.sent), INFORM_BURST + INFORM_RATE)
        self.responder.handleDHCP(request(wire.DHCPINFORM, ciaddr="198.18.7.9",
                                          giaddr="198.18.7.1"), IFACE, self.sent)
        self.assertEqual(len(self.sent), INFORM_BURST + INFORM_RATE + 1)
        _, ack = self.handshake()
        self.assertEqual(ack.messageType, wire.DHCPACK)

    def test_relayedInformRate(self):
        """
        Relayed INFORMs (answered to giaddr, which a spoofer chooses) have
        a budget of their own: beyond its burst they get no answer and are
        counted, and the direct INFORMs' budget is untouched.
        """
        from provisioner.dhcp.leasing import RELAYED_INFORM_BURST, RELAYED_INFORM_RATE
        for i in range(500):
            self.responder.handleDHCP(request(wire.DHCPINFORM, ciaddr="198.18.7.%d" % (
                10 + i % 100,), giaddr="198.18.7.%d" % (200 + i % 50,)), IFACE, self.sent)
        self.assertEqual(len(self.sent), RELAYED_INFORM_BURST)
        self.assertEqual(self.responder.stats["relayed-INFORM-over-rate"],
                         500 - RELAYED_INFORM_BURST)
        self.responder.handleDHCP(request(wire.DHCPINFORM, ciaddr="198.18.0.33"),
                                  IFACE, self.sent)
        self.assertEqual(len(self.sent), RELAYED_INFORM_BURST + 1)
        self.clock.advance(1)
        for i in range(500):
            self.responder.handleDHCP(request(wire.DHCPINFORM, ciaddr="198.18.7.9",
                                              giaddr="198.18.7.1"), IFACE, self.sent)
        self.assertEqual(len(self.sent), RELAYED_INFORM_BURST + 1 + RELAYED_INFORM_RATE)

    def test_relay(self):
        """
        If a DISCOVER comes through a relay on the second subnet, the offer
        is from that pool with its lease time, goes to the relay, and
        option 82 is echoed.
        """
        packet = request(wire.DHCPDISCOVER, giaddr="198.18.7.1",
                         options=[(OPT.RELAY_AGENT, b"\x01\x02ab")])
        self.responder.handleDHCP(packet, IFACE, self.sent)
        [(offer, address)] = self.sent
        self.assertEqual(offer.yiaddr, "198.18.7.10")
        self.assertEqual(address, ("198.18.7.1", 67))
        self.assertEqual(offer.option(OPT.RELAY_AGENT), b"\x01\x02ab")
        self.assertEqual(struct.unpack("!I", offer.option(OPT.LEASE_TIME))[0], 7200)

    def test_interfaceOutsidePools(self):
        """
        If a DISCOVER arrives on an interface whose address is in no
        configured subnet, nothing is sent (no addresses of another
        network).
        """
        self.responder.handleDHCP(request(wire.DHCPDISCOVER),
                                  InterfaceInfo("eth9", "10.0.0.1", "10.0.0.0/24"), self.sent)
        self.assertEqual(self.sent, [])

    def test_unknownRelay(self):
        """
        If the relay's giaddr is in no configured subnet, nothing is sent.
        """
        self.responder.handleDHCP(request(wire.DHCPDISCOVER, giaddr="10.9.9.1"), IFACE,
                                  self.sent)
        self.assertEqual(self.sent, [])

    def test_pxeClientInFullMode(self):
        """
        If a PXE client does the handshake in full mode, the OFFER and ACK
        carry an address and the boot information, option 60 PXEClient
        included.
        """
        packet = DHCPPacket.from_wire(golden("ipxe-bios-discover.bin"))
        self.responder.handleDHCP(packet, IFACE, self.sent)
        [(offer, _)] = self.sent
        self.assertEqual(offer.yiaddr, "198.18.0.100")
        self.assertEqual(offer.option(OPT.VENDOR_CLASS), b"PXEClient")
        self.assertEqual(offer.file, b"boot.ipxe")
        self.assertEqual(self.clients.byMAC("52:54:00:12:34:01").ip, "198.18.0.100")

    def test_bootpIgnored(self):
        """
        If a plain BOOTP request (no option 53) arrives, nothing is sent.
        """
        p = DHCPPacket(chaddr=b"\x52\x54\x00\x00\x00\x01")
        self.responder.handleDHCP(DHCPPacket.from_wire(p.to_wire()), IFACE, self.sent)
        self.assertEqual(self.sent, [])

    def test_oneLogNamespace(self):
        """
        If the responder's parts log (the boot decision, the ACK, an ignored
        RELEASE, unreadable inventory reservations), every line carries the
        responder's namespace, as it did before the parts were split out.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        class Broken:
            def reservations(self):
                raise RuntimeError("unreadable")
        self.inventory = Broken()
        self.handshake(options=[(OPT.VENDOR_CLASS, b"PXEClient:Arch:00000")])
        self.responder.handleDHCP(request(wire.DHCPRELEASE, b"\x52\x54\x00\x00\x00\x07",
                                          ciaddr="198.18.0.100"), IFACE, self.sent)
        self.flushLoggedErrors(RuntimeError)
        formats = {e["log_format"] for e in events}
        for line in ("boot decision: {mac} arch={arch} ({archName}) vendor={vendor!r} "
                     "ipxe={ipxe} -> {bootFile} ({reason})",
                     "ACK {ip} to {mac} for {seconds}s",
                     "{kind} of {ip} from {mac} ignored: {why}",
                     "inventory reservations unreadable; using dhcp.reservations"):
            self.assertIn(line, formats)
        self.assertEqual({e["log_namespace"] for e in events},
                         {"provisioner.dhcp.server.DHCPResponder"})


class ProtocolTests(SynchronousTestCase):
    """
    The datagram protocols never let a packet raise.
    """

    def setUp(self):
        self.clock = Clock()
        self.leases = LeaseStore(os.path.join(self.mktemp(), "l.sqlite"), self.clock)
        self.addCleanup(self.leases.close)
        self.responders = [
            DHCPResponder(config("dhcp:\n  mode: proxy\n"), self.clock, ClientDirectory()),
            DHCPResponder(config(FULL), self.clock, ClientDirectory(), self.leases),
        ]
        self.protocols = []
        for responder in self.responders:
            for cls in (DHCPProtocol, PXEProtocol):
                protocol = cls(responder, IFACE)
                protocol.transport = FakeDatagramPort(protocol)
                self.protocols.append(protocol)

    def test_malformedDropped(self):
        """
        If any malformed datagram of the table arrives, it is dropped
        without a reply or a logged error.
        """
        for protocol in self.protocols:
            for name, data in MALFORMED:
                protocol.datagramReceived(data, ("198.18.0.9", 68))
            self.assertEqual(protocol.transport.written, [])
            self.assertEqual(protocol.dropped, len(MALFORMED))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_answers(self):
        """
        If a good DISCOVER arrives through the protocol, the reply is
        written to the transport.
        """
        protocol = self.protocols[0]
        protocol.datagramReceived(golden("ipxe-bios-discover.bin"), ("0.0.0.0", 68))
        [(data, address)] = protocol.transport.written
        self.assertEqual(DHCPPacket.from_wire(data).messageType, wire.DHCPOFFER)

    @settings(max_examples=200, deadline=None, derandomize=True)
    @given(st.sampled_from(sorted(n for n in os.listdir(
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "dhcp"))
        if n.endswith(".bin"))),
        st.lists(st.tuples(st.integers(0, 599), st.integers(0, 255)), max_size=12),
        st.integers(0, 600), st.integers(1, 8))
    def test_fuzz(self, name, flips, cut, kind):
        """
        If golden packets are mutated (bytes changed, message type changed,
        truncated) and fed to every protocol in both modes, nothing raises
        and no error is logged.
        """
        data = bytearray(golden(name))
        if len(data) > 242 and data[240] == OPT.MESSAGE_TYPE:
            data[242] = kind
        for offset, value in flips:
            if offset < len(data):
                data[offset] = value
        data = bytes(data[:cut]) if cut < len(data) else bytes(data)
        for protocol in self.protocols:
            protocol.datagramReceived(data, ("198.18.0.9", 68))
        self.assertEqual(self.flushLoggedErrors(), [])
