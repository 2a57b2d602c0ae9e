# -*- test-case-name: tests.test_dhcp6_server -*-
"""
Tests for L{provisioner.dhcp6.server} (the responder and the datagram
protocols, with fakes), L{provisioner.dhcp6.leases}, L{provisioner.dhcp6.pools},
L{provisioner.dhcp6.ra} and the C{dhcp6} schema.
"""

import os

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from provisioner.config import ConfigError, loadConfig
from provisioner.directory import ClientDirectory
from provisioner.dhcp6 import ra, wire
from provisioner.dhcp6.leases import Lease6Store
from provisioner.dhcp6.server import (BootServer6Protocol, DHCP6Protocol, DHCP6Responder,
                                      Interface6)
from provisioner.dhcp6.wire import OPT, STATUS, DHCP6Message

from tests.fakes import FakeDatagramPort
from tests.test_dhcp6_wire import (BOOT_ADVERTISE, EDK2_HTTP_SOLICIT, EDK2_SOLICIT,
                                   IPXE_SOLICIT)

SERVER_DUID = wire.encodeDUIDLL("02:aa:bb:cc:dd:ee")
IFACE = Interface6("eth0", ["2001:db8:1::1", "fe80::aa:bbff:fecc:ddee"], "02:aa:bb:cc:dd:ee")

BOOT = """
dhcp6:
  enabled: true
  interfaces: [eth0]
"""

FULL = """
dhcp6:
  enabled: true
  interfaces: [eth0]
  mode: full
  dns_servers: ["2001:db8::53"]
  subnets:
    - prefix: 2001:db8:1::/64
      range: ["2001:db8:1::1000", "2001:db8:1::1fff"]
"""


def config(text, **extra):
    values = loadConfig(text=text)["dhcp6"]
    values.update(extra)
    return values


def message(kind, duid=b"\x00\x03\x00\x01\x52\x54\x00\x00\x00\x01", xid=1, ias=(),
            server=None, options=()):
    m = DHCP6Message(kind, xid)
    if duid is not None:
        m.addOption(OPT.CLIENTID, duid)
    if server is not None:
        m.addOption(OPT.SERVERID, server)
    for ia in ias:
        m.addOption(OPT.IA_NA, ia)
    for code, value in options:
        m.addOption(code, value)
    return m


def clientDUID(n):
    return wire.encodeDUIDLL(bytes((0x52, 0x54, 0, 0, n >> 8, n & 0xff)))


class Sent:
    """
    A fake C{send}: the replies, parsed back from their bytes.
    """

    def __init__(self):
        self.replies = []

    def __call__(self, reply):
        self.replies.append(wire.parse(reply.to_wire()))

    def one(self, case):
        case.assertEqual(len(self.replies), 1, self.replies)
        return self.replies.pop()


class Responder:
    def makeResponder(self, text, leases=False, **extra):
        self.clock = task.Clock()
        self.clock.advance(1700000000)
        self.clients = ClientDirectory()
        store = None
        if leases:
            self.path = os.path.join(self.mktemp(), "leases6.sqlite")
            store = Lease6Store(self.path, self.clock)
        self.responder = DHCP6Responder(config(text, **extra), SERVER_DUID, self.clients,
                                        store, httpPort=8080)
        return self.responder

    def ask(self, m, iface=IFACE, port="dhcp6"):
        sent = Sent()
        handle = self.responder.handle if port == "dhcp6" else \
            self.responder.handleBootServer
        result = handle(m, iface, sent)
        if isinstance(result, defer.Deferred):
            self.successResultOf(result)
        return sent


class BootModeTests(Responder, SynchronousTestCase):
    """
    C{mode: boot}: only network-boot clients, boot information, no
    addresses.
    """

    def setUp(self):
        self.makeResponder(BOOT)

    def test_edk2SolicitGoldenAdvertise(self):
        """
        If EDK2's PXE Solicit arrives, the Advertise is byte for byte the
        golden boot-only Advertise: no IA_NA, the PXEClient vendor class
        (so EDK2 takes it as a proxy offer), the TFTP URL of snponly.efi
        on the interface's global address.
        """
        sent = self.ask(wire.parse(EDK2_SOLICIT))
        self.assertEqual(sent.one(self).to_wire(), BOOT_ADVERTISE)
        self.assertEqual(self.responder.decisions[("dhcp6", "SOLICIT", "advertise")], 1)

    def test_clientDirectory(self):
        """
        If a client with a DUID-LL boots, the client directory has its
        MAC, architecture and boot file.
        """
        self.ask(wire.parse(EDK2_SOLICIT))
        record = self.clients.byMAC("52:54:00:12:34:56")
        self.assertEqual(record.arch, 7)
        self.assertEqual(record.boot_file, "tftp://[2001:db8:1::1]/snponly.efi")

    def test_ipxeGetsScript(self):
        """
        If iPXE solicits (user class iPXE), the URL is the iPXE script's.
        """
        reply = self.ask(wire.parse(IPXE_SOLICIT)).one(self)
        self.assertEqual(reply.bootfileURL(), "tftp://[2001:db8:1::1]/boot.ipxe")

    def test_ipxeScriptURL(self):
        """
        If C{dhcp6.ipxe_script} is a URL with C{{server}}, the server's
        bracketed address is put in.
        """
        self.makeResponder(BOOT, ipxe_script="http://{server}:8080/menus/boot.ipxe")
        reply = self.ask(wire.parse(IPXE_SOLICIT)).one(self)
        self.assertEqual(reply.bootfileURL(), "http://[2001:db8:1::1]:8080/menus/boot.ipxe")

    def test_httpClient(self):
        """
        If EDK2's HTTP boot Solicit (arch 16, HTTPClient) arrives, the URL
        is http:// on the HTTP port and HTTPClient is echoed.
        """
        reply = self.ask(wire.parse(EDK2_HTTP_SOLICIT)).one(self)
        self.assertEqual(reply.bootfileURL(), "http://[2001:db8:1::1]:8080/snponly.efi")
        self.assertEqual(reply.vendorClasses()[0].data, [b"HTTPClient"])

    def test_notBootClient(self):
        """
        If a Solicit carries no vendor class, architecture or iPXE user
        class (an ordinary host), nothing is sent.
        """
        sent = self.ask(message(wire.SOLICIT, ias=[wire.IANA(1)]))
        self.assertEqual(sent.replies, [])
        self.assertEqual(self.responder.decisions[("dhcp6", "SOLICIT", "ignored")], 1)

    def test_noFileForArch(self):
        """
        If the architecture has no boot file (C{null}), nothing is sent.
        """
        m = message(wire.SOLICIT, options=[(OPT.CLIENT_ARCH_TYPE, b"\x00\x13")])
        self.assertEqual(self.ask(m).replies, [])

    def test_addressRequestsLeftAlone(self):
        """
        If Request, Renew or Release arrive, nothing is sent (the site's
        server answers them).
        """
        for kind in (wire.REQUEST, wire.RENEW, wire.RELEASE, wire.REBIND, wire.CONFIRM):
            m = wire.parse(EDK2_SOLICIT)
            m.msgType = kind
            m.addOption(OPT.SERVERID, SERVER_DUID)
            self.assertEqual(self.ask(m).replies, [], kind)

    def test_informationRequest(self):
        """
        If a boot client sends an Information-request, the Reply carries
        the URL and our server id.
        """
        m = wire.parse(IPXE_SOLICIT)
        m.msgType = wire.INFORMATION_REQUEST
        m.options = [(c, v) for c, v in m.options if c != OPT.IA_NA]
        reply = self.ask(m).one(self)
        self.assertEqual((reply.msgType, reply.serverId), (wire.REPLY, SERVER_DUID))
        self.assertEqual(reply.bootfileURL(), "tftp://[2001:db8:1::1]/boot.ipxe")

    def test_solicitWithServerIdIgnored(self):
        """
        If a Solicit carries a server id, it is not answered (RFC 8415
        16.2).
        """
        m = wire.parse(EDK2_SOLICIT)
        m.addOption(OPT.SERVERID, SERVER_DUID)
        self.assertEqual(self.ask(m).replies, [])

    def test_bootServerRequest(self):
        """
        If EDK2's Request reaches port 4011 with our server id (what it
        sends after a proxy offer), the Reply carries the URL.
        """
        m = wire.parse(EDK2_SOLICIT)
        m.msgType = wire.REQUEST
        m.options = [(c, v) for c, v in m.options if c != OPT.IA_NA]
        m.addOption(OPT.SERVERID, SERVER_DUID)
        reply = self.ask(m, port="pxe").one(self)
        self.assertEqual(reply.msgType, wire.REPLY)
        self.assertEqual(reply.bootfileURL(), "tftp://[2001:db8:1::1]/snponly.efi")
        self.assertEqual(reply.vendorClasses()[0].data, [b"PXEClient"])

    def test_bootServerOtherServer(self):
        """
        If the Request on 4011 names another server, nothing is sent.
        """
        m = wire.parse(EDK2_SOLICIT)
        m.msgType = wire.REQUEST
        m.addOption(OPT.SERVERID, wire.encodeDUIDLL("02:00:00:00:00:99"))
        self.assertEqual(self.ask(m, port="pxe").replies, [])

    def test_serverAddressKey(self):
        """
        If C{dhcp6.server_address} is set, the URL names it.
        """
        self.makeResponder(BOOT, server_address="2001:db8:9::9")
        reply = self.ask(wire.parse(EDK2_SOLICIT)).one(self)
        self.assertEqual(reply.bootfileURL(), "tftp://[2001:db8:9::9]/snponly.efi")

    def test_bootfileParams(self):
        """
        If C{dhcp6.bootfile_params} is set, option 60 carries it.
        """
        self.makeResponder(BOOT, bootfile_params=["console=ttyS0"])
        reply = self.ask(wire.parse(EDK2_SOLICIT)).one(self)
        self.assertEqual(wire.parseBootfileParams(reply.option(OPT.BOOTFILE_PARAM)),
                         ["console=ttyS0"])

    def test_relayIgnored(self):
        """
        If a Relay-forward arrives, it is counted and not answered.
        """
        relay = wire.DHCP6Relay(wire.RELAY_FORW, 0, "::", "fe80::1",
                                [(OPT.RELAY_MSG, EDK2_SOLICIT)])
        self.assertEqual(self.ask(relay).replies, [])
        self.assertEqual(self.responder.stats["relay-ignored"], 1)


class FullModeTests(Responder, SynchronousTestCase):
    """
    C{mode: full}: addresses from the pool, durable leases.
    """

    def setUp(self):
        self.makeResponder(FULL, leases=True)

    def handshake(self, duid, iaid=1, boot=()):
        adv = self.ask(message(wire.SOLICIT, duid, ias=[wire.IANA(iaid)],
                               options=boot)).one(self)
        self.assertEqual(adv.msgType, wire.ADVERTISE)
        [ia] = adv.iaNAs()
        [address] = ia.addresses
        reply = self.ask(message(wire.REQUEST, duid, ias=[ia], server=SERVER_DUID,
                                 options=boot)).one(self)
        self.assertEqual(reply.msgType, wire.REPLY)
        return adv, reply

    def test_solicitRequest(self):
        """
        If a client solicits then requests, the Advertise offers a pool
        address with the lifetimes, T1/T2, and the Reply binds the same
        address in the lease database.
        """
        adv, reply = self.handshake(clientDUID(1))
        [ia] = reply.iaNAs()
        [address] = ia.addresses
        self.assertEqual(adv.iaNAs()[0].addresses[0].address, address.address)
        self.assertTrue(address.address.startswith("2001:db8:1::1"))
        self.assertEqual((address.preferred, address.valid, ia.t1, ia.t2),
                         (3000, 3600, 1500, 2400))
        store = Lease6Store(self.path, self.clock)
        self.assertEqual([lease.address for lease in store.leases()], [address.address])

    def test_manyClientsDistinct(self):
        """
        If 300 clients complete the handshake, they hold 300 distinct
        addresses.
        """
        addresses = set()
        for n in range(300):
            _, reply = self.handshake(clientDUID(n))
            addresses.add(reply.iaNAs()[0].addresses[0].address)
        self.assertEqual(len(addresses), 300)
        self.assertEqual(len(self.responder.leases), 300)

    def test_sameClientSameAddress(self):
        """
        If a client solicits again, it is offered the address it holds.
        """
        _, reply = self.handshake(clientDUID(7))
        adv, _ = self.handshake(clientDUID(7))
        self.assertEqual(adv.iaNAs()[0].addresses[0].address,
                         reply.iaNAs()[0].addresses[0].address)

    def test_exhaustion(self):
        """
        If the pool is used up, a Solicit's IA_NA carries NoAddrsAvail.
        """
        self.makeResponder(FULL.replace('"2001:db8:1::1fff"', '"2001:db8:1::1001"'),
                           leases=True)
        self.handshake(clientDUID(1))
        self.handshake(clientDUID(2))
        adv = self.ask(message(wire.SOLICIT, clientDUID(3), ias=[wire.IANA(1)])).one(self)
        self.assertEqual(adv.iaNAs()[0].status.code, STATUS.NO_ADDRS_AVAIL)

    def test_rapidCommit(self):
        """
        If a Solicit carries rapid commit, a Reply with rapid commit binds
        at once.
        """
        reply = self.ask(message(wire.SOLICIT, clientDUID(1), ias=[wire.IANA(5)],
                                 options=[(OPT.RAPID_COMMIT, b"")])).one(self)
        self.assertEqual(reply.msgType, wire.REPLY)
        self.assertTrue(reply.rapidCommit)
        self.assertEqual(len(self.responder.leases), 1)

    def test_requestOtherServer(self):
        """
        If a Request names another server, it is not answered.
        """
        m = message(wire.REQUEST, clientDUID(1), ias=[wire.IANA(1)],
                    server=wire.encodeDUIDLL("02:00:00:00:00:99"))
        self.assertEqual(self.ask(m).replies, [])

    def test_renewRebind(self):
        """
        If a bound client renews (or rebinds), its lease is extended; an
        unknown IA gets NoBinding.
        """
        _, reply = self.handshake(clientDUID(1))
        ia = reply.iaNAs()[0]
        self.clock.advance(1000)
        renewed = self.ask(message(wire.RENEW, clientDUID(1), ias=[ia],
                                   server=SERVER_DUID)).one(self)
        self.assertEqual(renewed.iaNAs()[0].addresses[0].valid, 3600)
        lease = self.responder.leases.get(clientDUID(1).hex(), 1)
        self.assertEqual(lease.expires, self.clock.seconds() + 3600)
        rebound = self.ask(message(wire.REBIND, clientDUID(1), ias=[ia])).one(self)
        self.assertEqual(rebound.iaNAs()[0].addresses[0].address, ia.addresses[0].address)
        unknown = self.ask(message(wire.RENEW, clientDUID(2), ias=[wire.IANA(1)],
                                   server=SERVER_DUID)).one(self)
        self.assertEqual(unknown.iaNAs()[0].status.code, STATUS.NO_BINDING)

    def test_release(self):
        """
        If a client releases, its lease is gone (from the database too)
        and the Reply says Success.
        """
        _, reply = self.handshake(clientDUID(1))
        done = self.ask(message(wire.RELEASE, clientDUID(1), ias=reply.iaNAs(),
                                server=SERVER_DUID)).one(self)
        self.assertEqual(done.status().code, STATUS.SUCCESS)
        self.assertEqual(len(self.responder.leases), 0)
        self.assertEqual(Lease6Store(self.path, self.clock).leases(), [])

    def test_decline(self):
        """
        If a client declines its address, the address is held from every
        client and the client is offered another one.
        """
        _, reply = self.handshake(clientDUID(1))
        address = reply.iaNAs()[0].addresses[0].address
        self.ask(message(wire.DECLINE, clientDUID(1), ias=reply.iaNAs(), server=SERVER_DUID))
        self.assertEqual(self.responder.leases.holder(address).state, "declined")
        adv = self.ask(message(wire.SOLICIT, clientDUID(1), ias=[wire.IANA(1)])).one(self)
        self.assertNotEqual(adv.iaNAs()[0].addresses[0].address, address)

    def test_confirm(self):
        """
        If a client confirms an address in the prefix, Success; outside
        it, NotOnLink.
        """
        ia = wire.IANA(1)
        ia.addAddress(wire.IAAddress("2001:db8:1::1234", 0, 0))
        self.assertEqual(self.ask(message(wire.CONFIRM, ias=[ia])).one(self).status().code,
                         STATUS.SUCCESS)
        ia = wire.IANA(1)
        ia.addAddress(wire.IAAddress("2001:db8:2::1", 0, 0))
        self.assertEqual(self.ask(message(wire.CONFIRM, ias=[ia])).one(self).status().code,
                         STATUS.NOT_ON_LINK)

    def test_bootClientGetsURLAndAddress(self):
        """
        If EDK2 solicits in full mode, the Advertise has an address and the
        boot URL, and no vendor class (EDK2 then boots from this offer and
        does not ask 4011).
        """
        adv = self.ask(wire.parse(EDK2_SOLICIT)).one(self)
        self.assertEqual(len(adv.iaNAs()[0].addresses), 1)
        self.assertEqual(adv.bootfileURL(), "tftp://[2001:db8:1::1]/snponly.efi")
        self.assertEqual(adv.vendorClasses(), [])

    def test_dnsWhenAsked(self):
        """
        If the ORO asks for option 23, the configured DNS servers are sent.
        """
        adv = self.ask(message(wire.SOLICIT, clientDUID(1), ias=[wire.IANA(1)],
                               options=[(OPT.ORO, wire.encodeORO([23]))])).one(self)
        self.assertEqual(wire.parseAddresses(adv.option(OPT.DNS_SERVERS)), ["2001:db8::53"])

    def test_informationRequest(self):
        """
        If an Information-request arrives, the Reply has our server id and
        the DNS servers asked for.
        """
        reply = self.ask(message(wire.INFORMATION_REQUEST, clientDUID(1),
                                 options=[(OPT.ORO, wire.encodeORO([23]))])).one(self)
        self.assertEqual(reply.serverId, SERVER_DUID)
        self.assertEqual(wire.parseAddresses(reply.option(OPT.DNS_SERVERS)), ["2001:db8::53"])

    def test_noClientId(self):
        """
        If a Solicit has no client id, nothing is sent.
        """
        self.assertEqual(self.ask(message(wire.SOLICIT, duid=None,
                                          ias=[wire.IANA(1)])).replies, [])

    def test_replyWaitsForDisk(self):
        """
        If the lease write has not finished, the Reply is not sent; it is
        once the write is done.
        """
        pending = defer.Deferred()

        class SlowWriter:
            def submit(self, item):
                return pending

            def close(self):
                return defer.succeed(None)
        self.responder.leases.writer = SlowWriter()
        sent = Sent()
        d = self.responder.handle(message(wire.REQUEST, clientDUID(1), ias=[wire.IANA(1)],
                                          server=SERVER_DUID), IFACE, sent)
        self.assertEqual(sent.replies, [])
        pending.callback(None)
        self.successResultOf(d)
        self.assertEqual(len(sent.replies), 1)

    def test_leasesSurviveRestart(self):
        """
        If the store is opened again, a bound client is offered its
        address.
        """
        _, reply = self.handshake(clientDUID(1))
        address = reply.iaNAs()[0].addresses[0].address
        self.responder.leases = Lease6Store(self.path, self.clock)
        adv = self.ask(message(wire.SOLICIT, clientDUID(1), ias=[wire.IANA(1)])).one(self)
        self.assertEqual(adv.iaNAs()[0].addresses[0].address, address)

    def test_reclaim(self):
        """
        If a lease expires, reclaim forgets it and its address is free.
        """
        _, reply = self.handshake(clientDUID(1))
        self.clock.advance(3601)
        self.assertEqual(self.responder.leases.reclaim(), 1)
        self.assertEqual(Lease6Store(self.path, self.clock).leases(), [])


class ProtocolTests(Responder, SynchronousTestCase):
    """
    The datagram protocols: decode, dispatch, answer where it came from,
    never raise.
    """

    def setUp(self):
        self.makeResponder(BOOT)

    def protocol(self, kind=DHCP6Protocol):
        protocol = kind(self.responder, IFACE)
        port = FakeDatagramPort(protocol, host="::", port=547)
        protocol.makeConnection(port)
        return protocol, port

    def test_answerToLinkLocalSource(self):
        """
        If a Solicit comes from a link-local address, the Advertise goes
        to that address with the interface as its zone, and to the source
        port.
        """
        protocol, port = self.protocol()
        protocol.datagramReceived(EDK2_SOLICIT, ("fe80::5054:ff:fe12:3456", 546))
        [(data, address)] = port.written
        self.assertEqual(data, BOOT_ADVERTISE)
        self.assertEqual(address, ("fe80::5054:ff:fe12:3456%eth0", 546))

    def test_bootServerPort(self):
        """
        If a Request reaches the 4011 protocol, the Reply goes back to its
        source port.
        """
        protocol, port = self.protocol(BootServer6Protocol)
        m = wire.parse(EDK2_SOLICIT)
        m.msgType = wire.REQUEST
        protocol.datagramReceived(m.to_wire(), ("2001:db8:1::1000", 4011))
        [(data, address)] = port.written
        self.assertEqual(address, ("2001:db8:1::1000", 4011))
        self.assertEqual(wire.parse(data).msgType, wire.REPLY)

    def test_malformedDropped(self):
        """
        If malformed datagrams arrive (empty, one byte, a broken option),
        they are counted as dropped and nothing is sent or raised.
        """
        from tests.test_dhcp6_wire import MALFORMED
        protocol, port = self.protocol()
        for _, data in MALFORMED:
            protocol.datagramReceived(data, ("fe80::1", 546))
        self.assertEqual(protocol.dropped, len(MALFORMED))
        self.assertEqual(port.written, [])

    def test_responderFailureDropped(self):
        """
        If the responder raises, the datagram is dropped, the failure
        logged, and nothing escapes.
        """
        protocol, port = self.protocol()

        def broken(*a):
            raise RuntimeError("boom")
        self.responder.handle = broken
        protocol.datagramReceived(EDK2_SOLICIT, ("fe80::1", 546))
        self.assertEqual(protocol.dropped, 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_sendFailureSwallowed(self):
        """
        If the transport refuses the reply, nothing escapes.
        """
        protocol, port = self.protocol()

        def refuse(data, address=None):
            raise OSError("no route")
        port.write = refuse
        protocol.datagramReceived(EDK2_SOLICIT, ("fe80::1", 546))


class FakeRawSocket:
    def __init__(self, incoming=()):
        self.sent = []
        self.incoming = list(incoming)
        self.closed = False

    def sendto(self, data, address):
        self.sent.append((data, address))

    def recvfrom(self, size):
        if not self.incoming:
            raise BlockingIOError()
        return self.incoming.pop(0), ("fe80::1", 0)

    def fileno(self):
        return -1

    def close(self):
        self.closed = True


class RouterAdvertisementTests(SynchronousTestCase):
    """
    L{provisioner.dhcp6.ra}: the RA's bytes, the periodic and the
    solicited RAs.
    """

    def test_encode(self):
        """
        If an RA is encoded, it has M=1, O=1, the router lifetime, the
        source link-layer address, and the prefix on-link without the A
        flag; its bytes are what RFC 4861 lays out.
        """
        data = ra.encodeRouterAdvertisement([("2001:db8:1::/64", 3600, 3000)], 0,
                                            "02:aa:bb:cc:dd:ee")
        self.assertEqual(data, bytes.fromhex(
            "8600 0000 40 c0 0000 00000000 00000000"
            "01 01 02aabbccddee"
            "03 04 40 80 00000e10 00000bb8 00000000 20010db8000100000000000000000000"
            .replace(" ", "")))
        parsed = ra.parseRouterAdvertisement(data)
        self.assertEqual(parsed["flags"], ra.FLAG_MANAGED | ra.FLAG_OTHER)
        self.assertEqual(parsed["prefixes"], [("2001:db8:1::/64", ra.PREFIX_ONLINK, 3600, 3000)])

    def advertiser(self, incoming=()):
        clock = task.Clock()
        sockets = {}

        def open(name):
            sockets[name] = FakeRawSocket(incoming)
            return sockets[name]
        cfg = config(FULL, router_advertisements=True, ra_interval=10)
        iface = Interface6("lo", ["2001:db8:1::1"], "02:aa:bb:cc:dd:ee")
        advertiser = ra.RouterAdvertiser(clock, cfg, [iface], open)
        advertiser.open()
        return clock, advertiser, sockets["lo"]

    def test_periodic(self):
        """
        If the advertiser runs for 25 seconds with ra_interval 10, three
        RAs go to ff02::1 on the interface, each with the subnet's prefix.
        """
        clock, advertiser, sock = self.advertiser()
        advertiser.start()
        clock.pump([5] * 5)
        self.assertEqual(len(sock.sent), 3)
        data, address = sock.sent[0]
        self.assertEqual(address[0], "ff02::1")
        self.assertEqual(ra.parseRouterAdvertisement(data)["prefixes"][0][0], "2001:db8:1::/64")
        advertiser.close()
        self.assertTrue(sock.closed)

    def test_solicited(self):
        """
        If a router solicitation arrives, an RA is sent at once, and a
        second one within L{ra.MIN_DELAY} seconds gets none.
        """
        clock, advertiser, sock = self.advertiser([b"\x85\x00\x00\x00\x00\x00\x00\x00"] * 2)
        advertiser.readable("lo")
        self.assertEqual(len(sock.sent), 1)
        sock.incoming.append(b"\x85\x00\x00\x00\x00\x00\x00\x00")
        clock.advance(1)
        advertiser.readable("lo")
        self.assertEqual(len(sock.sent), 1)
        clock.advance(3)
        sock.incoming.append(b"\x85\x00\x00\x00\x00\x00\x00\x00")
        advertiser.readable("lo")
        self.assertEqual(len(sock.sent), 2)


class SchemaTests(SynchronousTestCase):
    """
    The C{dhcp6} section.
    """

    def test_defaults(self):
        """
        If nothing is configured, dhcp6 is off, in boot mode, on 547 and
        4011, x64 UEFI gets snponly.efi.
        """
        c = loadConfig(text="")["dhcp6"]
        self.assertEqual((c["enabled"], c["mode"], c["port"], c["pxe_port"]),
                         (False, "boot", 547, 4011))
        self.assertEqual(c["boot"]["uefi_x64"], "snponly.efi")

    def test_refusals(self):
        """
        If the section is wrong (full mode without subnets, no interface,
        a range outside its prefix, an IPv4 prefix, RA without a prefix),
        loading names the key.
        """
        bad = [
            "dhcp6:\n  enabled: true\n  interfaces: [eth0]\n  mode: full\n",
            "dhcp6:\n  enabled: true\n",
            "dhcp6:\n  enabled: true\n  interfaces: [eth0]\n  mode: full\n  subnets:\n"
            "    - {prefix: '2001:db8:1::/64', range: ['2001:db8:2::1', '2001:db8:2::9']}\n",
            "dhcp6:\n  subnets:\n    - {prefix: 198.18.0.0/24, range: [198.18.0.1, "
            "198.18.0.2]}\n",
            "dhcp6:\n  enabled: true\n  interfaces: [eth0]\n  router_advertisements: true\n",
            "dhcp6:\n  mode: relay\n",
        ]
        for text in bad:
            e = self.assertRaises(ConfigError, loadConfig, text=text)
            self.assertIn("dhcp6", str(e))
