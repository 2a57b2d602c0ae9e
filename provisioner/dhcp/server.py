# -*- test-case-name: tests.test_dhcp_server -*-
"""
The DHCP responder (UDP 67) and the PXE boot server (UDP 4011).

L{DHCPResponder} holds the logic: it turns a parsed request into replies
and calls C{send(reply, address)}. It knows nothing of sockets, so the unit
tests drive it with a fake C{send} and a L{twisted.internet.task.Clock}.
L{DHCPProtocol} and L{PXEProtocol} are the datagram protocols: one per
listening socket (one socket per configured interface, bound with
C{SO_BINDTODEVICE}), each decoding datagrams and handing them to the
responder. Nothing a packet carries can raise out of C{datagramReceived}.

Modes (C{dhcp.mode}):

  - C{proxy}: answer only network-boot clients (option 60 C{PXEClient} /
    C{HTTPClient}); the OFFER has yiaddr 0, option 60, 54, 97 echoed and
    the boot file (siaddr, C{file}, 66, 67). Another server gives addresses.
  - C{full}: a DHCP server with pools per subnet, reservations, leases
    (L{provisioner.dhcp.leases.LeaseStore}), relays (giaddr, option 82
    echoed), and the same boot information for network-boot clients.

UEFI PXE clients get their boot file either through the boot server on
4011 (C{dhcp.uefi: redirect}: no option 43 and no file in the offer, so
EDK2 sends a REQUEST to siaddr:4011) or straight from the offer (C{direct}:
option 43 sub-option 6 = 8, skip discovery).
"""

import ipaddress
import socket
import struct

from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from provisioner.dhcp import replies, wire
from provisioner.dhcp.boot import BootAnswers
from provisioner.dhcp.policy import ArchitectureBootPolicy
from provisioner.dhcp.wire import OPT, ZERO, DHCPPacket, MalformedPacket
from provisioner.dhcp.subnets import Subnets, intToIP
from provisioner.net.sockets import udpSocket

__all__ = [
    "InterfaceInfo",
    "DHCPResponder",
    "DHCPProtocol",
    "PXEProtocol",
    "bindUDPSocket",
    "interfaceAddress",
]

DECLINE_HOLD = 600
# Addresses a DISCOVER tries from the cursor, under pressure, before the
# oldest weak offer gives way.
_PRESSURE_SCAN = 64


class InterfaceInfo:
    """
    Where a request arrived.

    @ivar name: the interface name, or L{None} (a test socket on loopback).
    @ivar address: our IPv4 address there (text), or L{None}.
    @ivar network: its C{IPv4Network}, or L{None}.
    """

    def __init__(self, name=None, address=None, network=None):
        self.name = name
        self.address = address
        self.network = ipaddress.IPv4Network(network, strict=False) if network else None

    def __repr__(self):
        return "<InterfaceInfo %s %s %s>" % (self.name, self.address, self.network)


SIOCGIFADDR = 0x8915
SIOCGIFNETMASK = 0x891B


def interfaceAddress(name):
    """
    Return C{(address, network)} of an interface's first IPv4 address, or
    C{(None, None)} if it has none.
    """
    import fcntl
    request = struct.pack("256s", name.encode()[:15])
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        try:
            address = socket.inet_ntoa(fcntl.ioctl(probe.fileno(), SIOCGIFADDR, request)[20:24])
            mask = socket.inet_ntoa(fcntl.ioctl(probe.fileno(), SIOCGIFNETMASK,
                                                request)[20:24])
        except OSError:
            return None, None
    finally:
        probe.close()
    return address, "%s/%s" % (address, mask)


def bindUDPSocket(address, port, interface=None):
    """
    A non-blocking UDP socket bound to C{address:port}, able to broadcast,
    with C{SO_REUSEADDR} (so a DHCP server for another interface can share
    the port) and, given an interface, C{SO_BINDTODEVICE}: only that
    interface's packets are received, and replies leave through it. The
    receive buffer has room for a burst of a few thousand requests while
    the process is not scheduled.
    """
    return udpSocket(address, port, interface, receiveBuffer=1 << 20, reuseAddress=True,
                     broadcast=True)


class DHCPResponder:
    """
    The decisions: which requests get answers, and what the answers say.

    @ivar config: the C{dhcp} section.
    @ivar policy: an L{provisioner.dhcp.policy.IBootPolicy}.
    @ivar clients: the appliance's client directory.
    @ivar leases: a L{provisioner.dhcp.leases.LeaseStore} (full mode), or
        L{None}.
    @ivar reactor: C{IReactorTime} for reply delays.
    @ivar inventoryGetter: returns the inventory (or L{None}).
    @ivar stats: counters by event name.
    """

    log = Logger()

    def __init__(self, config, reactor, clients, leases=None, policy=None,
                 inventoryGetter=lambda: None):
        self.reactor = reactor
        self.clients = clients
        self.leases = leases
        self.inventoryGetter = inventoryGetter
        self.policy = policy if policy is not None else ArchitectureBootPolicy(
            config, inventoryGetter)
        self.stats = {}
        self.subnets = Subnets(config, inventoryGetter, self.log)
        self.boot = BootAnswers(config, reactor, clients, self.policy, self.log, self._count)
        self.reconfigure(config)

    def reconfigure(self, config):
        """
        Take a new C{dhcp} section (pools, boot files, overrides, ...).
        """
        self.config = config
        self.subnets.reconfigure(config)
        self.boot.reconfigure(config)
        if hasattr(self.policy, "reconfigure"):
            self.policy.reconfigure(config)

    def _count(self, name):
        self.stats[name] = self.stats.get(name, 0) + 1

    # Entry points -------------------------------------------------------

    def handleDHCP(self, packet, iface, send):
        """
        A request on port 67.

        @param send: C{send(replyPacket, (host, port))}.
        @return: a Deferred when the answer waits for something (a lease
            commit or a reply delay), else L{None}.
        """
        if packet.op != wire.BOOTREQUEST:
            return None
        kind = packet.messageType
        if kind is None:
            self._count("bootp-ignored")
            self.log.debug("BOOTP request from {mac} ignored", mac=packet.chaddr.hex())
            return None
        if packet.mac is None:
            self._count("not-ethernet")
            return None
        self._count(wire.MESSAGE_TYPES.get(kind, "type%d" % (kind,)))
        problem = self.subnets.relayProblem(packet.giaddr)
        if problem is not None:
            self._count("bad-giaddr")
            self.log.debug("{kind} from {mac} via relay {giaddr} ignored: {problem}",
                           kind=wire.MESSAGE_TYPES.get(kind, kind), mac=packet.mac,
                           giaddr=packet.giaddr, problem=problem)
            return None
        if self.config["mode"] == "proxy":
            if kind == wire.DHCPDISCOVER:
                return self.boot.proxyOffer(packet, iface, send)
            return None
        handler = {
            wire.DHCPDISCOVER: self._discover,
            wire.DHCPREQUEST: self._request,
            wire.DHCPRELEASE: self._release,
            wire.DHCPDECLINE: self._decline,
            wire.DHCPINFORM: self._inform,
        }.get(kind)
        if handler is None:
            return None
        return handler(packet, iface, send)

    def handlePXE(self, packet, iface, send, source):
        """
        A request to the boot server on 4011 (ProxyDHCP REQUEST from iPXE,
        BINL REQUEST from EDK2, boot server discovery): an ACK with the
        boot file, sent back where it came from.
        """
        if packet.op != wire.BOOTREQUEST or packet.mac is None:
            return None
        kind = packet.messageType
        if kind not in (wire.DHCPREQUEST, wire.DHCPINFORM):
            return None
        self._count("pxe-" + wire.MESSAGE_TYPES[kind])
        return self.boot.bootServerAck(packet, iface, send, source)

    # Full mode -----------------------------------------------------------

    def _available(self, subnet, ip, mac, reserved, iface, takeWeak=False):
        """
        Whether C{ip} may go to C{mac}; C{takeWeak}: a weak offer (made
        under pressure) to another client does not keep it (a REQUEST).
        """
        if not subnet.inRange(ip) and reserved.get(ip) != mac:
            return False
        if ip in (iface.address, self.config["server_address"]):
            return False
        holder = reserved.get(ip)
        if holder is not None and holder != mac:
            return False
        return self.leases.isFree(ip, mac, takeWeak)

    def _choose(self, packet, subnet, iface, weak=False):
        """
        The address to offer: the reservation, the client's lease, the
        requested address, then the next free one in the pool, else the
        address of the pool's oldest weak offer.

        @param weak: whether this will be a weak offer (the pool is under
            pressure): then only the next C{_PRESSURE_SCAN} addresses are
            tried before the oldest weak offer gives way, so that a flood
            does not cost a scan of the whole pool per DISCOVER.
        """
        mac = packet.mac
        reserved = self.subnets.reservedIPs()
        mine = self.subnets.reservations().get(mac)
        if mine is not None and mine[0] in subnet:
            if self.leases.isFree(mine[0], mac):
                return mine[0]
            # As dnsmasq: a reserved address still leased to another machine
            # is not taken from it; this client gets a pool address meanwhile.
            self.log.info("reserved address {ip} for {mac} is leased to another client; "
                          "offering a pool address", ip=mine[0], mac=mac)
        lease = self.leases.byMAC(mac)
        if lease is not None and lease.ip in subnet and self._available(
                subnet, lease.ip, mac, reserved, iface):
            return lease.ip
        wanted = packet.ipOption(OPT.REQUESTED_IP)
        if wanted is not None and wanted in subnet and self._available(
                subnet, wanted, mac, reserved, iface):
            return wanted
        size = subnet.last - subnet.first + 1
        cursor = subnet.cursor
        window = min(size, _PRESSURE_SCAN) if weak else size
        for step in range(size):
            if step == window:
                given = self._oldestWeak(subnet, mac, reserved, iface)
                if given is not None:
                    return given
            value = subnet.first + (cursor - subnet.first + step) % size
            ip = intToIP(value)
            if self._available(subnet, ip, mac, reserved, iface):
                subnet.cursor = subnet.first + (value - subnet.first + 1) % size
                return ip
        return self._oldestWeak(subnet, mac, reserved, iface)

    def _oldestWeak(self, subnet, mac, reserved, iface):
        """
        The address of the pool's oldest weak offer (to another client),
        which gives way so that a DISCOVER flood cannot keep the pool from
        a new client; or L{None}.
        """
        offer = self.leases.oldestWeakOffer(str(subnet.network))
        if offer is not None and self._available(subnet, offer.ip, mac, reserved, iface,
                                                 takeWeak=True):
            return offer.ip
        return None

    def _addAddressOptions(self, reply, subnet, leaseTime):
        reply.setOption(OPT.SUBNET_MASK, subnet.network.netmask.packed)
        if subnet.router:
            reply.setOption(OPT.ROUTER, wire.ip2bytes(subnet.router))
        if subnet.dns:
            reply.setOption(OPT.DNS, b"".join(wire.ip2bytes(a) for a in subnet.dns))
        if subnet.domain:
            reply.setOption(OPT.DOMAIN_NAME, subnet.domain.encode())
        reply.setOption(OPT.BROADCAST, wire.ip2bytes(subnet.broadcast))
        if leaseTime is not None:
            reply.setOption(OPT.LEASE_TIME, struct.pack("!I", leaseTime))
            reply.setOption(OPT.RENEWAL_TIME, struct.pack("!I", leaseTime // 2))
            reply.setOption(OPT.REBINDING_TIME, struct.pack("!I", leaseTime * 7 // 8))

    def _fullReply(self, packet, kind, ip, subnet, iface, leaseTime):
        server = replies.serverAddress(self.config, iface)
        reply = replies.newReply(packet, kind, server)
        if ip is not None:
            reply.yiaddr = ip
        self._addAddressOptions(reply, subnet, leaseTime)
        hostname = None
        reservation = self.subnets.reservations().get(packet.mac)
        if reservation is not None and reservation[0] == ip:
            hostname = reservation[1]
        if hostname:
            reply.setOption(OPT.HOSTNAME, hostname.encode())
        facts = self.boot.facts(packet)
        if self.boot.isBootClient(facts):
            decision = self.boot.decide(facts, ip)
            self.boot.addBoot(reply, packet, facts, decision, server, port4011=False)
        elif kind == wire.DHCPACK:
            # Every bound client goes into the directory, not only PXE ones.
            try:
                self.clients.update(
                    mac=facts.mac, ip=ip or (packet.ciaddr if packet.ciaddr != ZERO else None),
                    vendor_class=facts.vendorClass,
                    user_class=",".join(facts.userClasses) or None,
                    hostname=hostname or packet.textOption(OPT.HOSTNAME))
            except Exception:
                self.log.failure("client directory update failed for {mac}", mac=facts.mac)
        replies.echoRelay(packet, reply)
        return reply

    def _offerTerms(self, packet, subnet):
        """
        How long an offer holds its address, and whether it is weak. A pool
        is under pressure when its outstanding offers reach
        C{dhcp.offer_pressure} of its size (a DISCOVER flood from random
        MACs, or a crowd booting at once): a client with no lease, no
        reservation and no offer of its own then gets a weak offer, held
        C{dhcp.offer_hold_pressure} seconds and given up to another
        client's REQUEST (see L{provisioner.dhcp.leases.Lease.weak}).

        @return: C{(seconds, weak)}.
        """
        hold = self.config["offer_hold"]
        mac = packet.mac
        lease = self.leases.byMAC(mac)
        if lease is not None and (lease.state == "bound" or (
                lease.state == "offered" and not lease.weak and
                lease.expires > self.leases.clock.seconds())):
            return hold, False
        if mac in self.subnets.reservations():
            return hold, False
        size = subnet.last - subnet.first + 1
        limit = max(1, int(self.config["offer_pressure"] * size))
        if self.leases.outstandingOffers(str(subnet.network)) < limit:
            return hold, False
        self._count("offer-under-pressure")
        return min(hold, self.config["offer_hold_pressure"]), True

    def _discover(self, packet, iface, send):
        subnet = self.subnets.subnetFor(packet, iface)
        if subnet is None:
            self._count("no-subnet")
            self.log.debug("DISCOVER from {mac}: no subnet for giaddr {giaddr} on {iface}",
                           mac=packet.mac, giaddr=packet.giaddr, iface=iface.name)
            return None
        hold, weak = self._offerTerms(packet, subnet)
        ip = self._choose(packet, subnet, iface, weak)
        if ip is None:
            self._count("pool-exhausted")
            self.log.warn("pool {network} exhausted: no address for {mac}",
                          network=str(subnet.network), mac=packet.mac)
            return None
        clientId = packet.option(OPT.CLIENT_ID)
        self.leases.offer(packet.mac, ip, hold, clientId=clientId.hex() if clientId else None,
                          pool=str(subnet.network), weak=weak)
        reply = self._fullReply(packet, wire.DHCPOFFER, ip, subnet, iface, subnet.leaseTime)
        # One debug line per handshake (at the ACK): twistd formats every
        # event it is given, and that is a sizeable share of a handshake.
        return replies.later(self.reactor, self.config["reply_delay"], send, reply,
                             replies.destination(self.config, packet, reply))

    def _nak(self, packet, iface, send, why):
        self._count("NAK-sent")
        self.log.debug("NAK to {mac}: {why}", mac=packet.mac, why=why)
        if not self.config["authoritative"]:
            return None
        reply = replies.newReply(packet, wire.DHCPNAK, replies.serverAddress(self.config, iface))
        reply.ciaddr = ZERO
        reply.setOption(OPT.MESSAGE, why.encode())
        replies.echoRelay(packet, reply)
        send(reply, replies.destination(self.config, packet, reply, nak=True))
        return None

    def _request(self, packet, iface, send):
        mac = packet.mac
        server = replies.serverAddress(self.config, iface)
        serverID = packet.ipOption(OPT.SERVER_ID)
        requested = packet.ipOption(OPT.REQUESTED_IP)
        subnet = self.subnets.subnetFor(packet, iface)
        if serverID is not None:
            # SELECTING: the client picked a server.
            if server is not None and serverID != server:
                lease = self.leases.byMAC(mac)
                if lease is not None and lease.state == "offered":
                    self.leases.release(mac)
                return None
            ip = requested or (packet.ciaddr if packet.ciaddr != ZERO else None)
        elif requested is not None:
            ip = requested  # INIT-REBOOT
        elif packet.ciaddr != ZERO:
            ip = packet.ciaddr  # RENEWING / REBINDING
        else:
            return None
        if subnet is None:
            return None
        if ip not in subnet:
            return self._nak(packet, iface, send, "wrong network")
        reserved = self.subnets.reservedIPs()
        lease = self.leases.byMAC(mac)
        ours = lease is not None and lease.ip == ip
        if not ours:
            # The first REQUEST wins an address that was only weakly offered.
            if not self._available(subnet, ip, mac, reserved, iface, takeWeak=True):
                return self._nak(packet, iface, send, "address not available")
            mine = self.subnets.reservations().get(mac)
            if mine is not None and mine[0] in subnet and mine[0] != ip:
                return self._nak(packet, iface, send, "address reserved elsewhere")
        elif not self._available(subnet, ip, mac, reserved, iface):
            return self._nak(packet, iface, send, "address not available")
        leaseTime = subnet.leaseTime
        clientId = packet.option(OPT.CLIENT_ID)
        hostname = packet.textOption(OPT.HOSTNAME)
        d = self.leases.bind(mac, ip, leaseTime, hostname=hostname,
                             clientId=clientId.hex() if clientId else None)

        def committed(_):
            reply = self._fullReply(packet, wire.DHCPACK, ip, subnet, iface, leaseTime)
            self.log.debug("ACK {ip} to {mac} for {seconds}s", ip=ip, mac=mac,
                           seconds=leaseTime)
            send(reply, replies.destination(self.config, packet, reply))

        def failed(failure):
            self.log.failure("lease for {mac} not stored; no ACK", failure, mac=mac)
        d.addCallbacks(committed, failed)
        return d

    def _release(self, packet, iface, send):
        serverID = packet.ipOption(OPT.SERVER_ID)
        server = replies.serverAddress(self.config, iface)
        if serverID is not None and server is not None and serverID != server:
            return None
        if self._fromHolder(packet, iface, packet.ciaddr, "RELEASE") is None:
            return None
        self.log.debug("RELEASE {ip} by {mac}", ip=packet.ciaddr, mac=packet.mac)
        return self.leases.release(packet.mac, packet.ciaddr)

    def _fromHolder(self, packet, iface, ip, kind):
        """
        Check that a RELEASE or DECLINE of C{ip} comes from the client that
        holds it (chaddr, and option 61 when its offer or lease recorded
        one) and that C{ip} is an address of the pool the packet arrived
        for (or this client's reservation there). Anything else is counted
        and logged at debug.

        @return: the L{Subnet}, or L{None} to ignore the packet.
        """
        subnet = self.subnets.subnetFor(packet, iface)
        if subnet is None or ip is None or ip not in subnet:
            why = "not an address of the subnet it arrived for"
        elif not subnet.inRange(ip) and self.subnets.reservedIPs().get(ip) != packet.mac:
            why = "not a pool address"
        else:
            clientId = packet.option(OPT.CLIENT_ID)
            why = self.leases.holderMismatch(packet.mac, ip,
                                             clientId.hex() if clientId else None)
        if why is None:
            return subnet
        self._count(kind + "-ignored")
        self.log.debug("{kind} of {ip} from {mac} ignored: {why}", kind=kind, ip=ip,
                       mac=packet.mac, why=why)
        return None

    def _decline(self, packet, iface, send):
        serverID = packet.ipOption(OPT.SERVER_ID)
        server = replies.serverAddress(self.config, iface)
        if serverID is not None and server is not None and serverID != server:
            return None
        ip = packet.ipOption(OPT.REQUESTED_IP)
        if ip is None:
            return None
        subnet = self._fromHolder(packet, iface, ip, "DECLINE")
        if subnet is None:
            return None
        self.log.info("DECLINE of {ip} by {mac}: address in use, held for {hold}s",
                      ip=ip, mac=packet.mac, hold=DECLINE_HOLD)
        size = subnet.last - subnet.first + 1
        return self.leases.decline(
            packet.mac, ip, DECLINE_HOLD,
            limit=max(1, int(self.config["decline_share"] * size)),
            within=subnet.__contains__)

    def _inform(self, packet, iface, send):
        subnet = self.subnets.subnetFor(packet, iface)
        if subnet is None or packet.ciaddr == ZERO:
            return None
        reply = self._fullReply(packet, wire.DHCPACK, None, subnet, iface, None)
        send(reply, replies.destination(self.config, packet, reply))
        return None


class _ResponderProtocol(DatagramProtocol):
    """
    Shared by the two ports: decode, hand to the responder, never raise.
    """

    log = Logger()
    noisy = False

    def __init__(self, responder, iface):
        self.responder = responder
        self.iface = iface
        self.dropped = 0

    def send(self, reply, address):
        if self.transport is None:
            return
        try:
            self.transport.write(reply.to_wire(), address)
        except Exception as e:
            self.log.debug("reply to {address} not sent: {error}", address=address, error=e)

    def datagramReceived(self, data, address):
        try:
            packet = DHCPPacket.from_wire(data)
        except MalformedPacket as e:
            self.dropped += 1
            self.log.debug("malformed DHCP packet from {address} on {iface}: {error}",
                           address=address, iface=self.iface.name, error=str(e))
            return
        except Exception as e:
            self.dropped += 1
            self.log.debug("undecodable DHCP packet from {address}: {error!r}",
                           address=address, error=e)
            return
        try:
            d = self.dispatch(packet, address)
        except Exception:
            self.dropped += 1
            self.log.failure("DHCP request from {address} failed", address=address)
            return
        if isinstance(d, defer.Deferred):
            d.addErrback(lambda f: self.log.failure(
                "DHCP request from {address} failed", f, address=address))

    def dispatch(self, packet, address):
        raise NotImplementedError()


class DHCPProtocol(_ResponderProtocol):
    """
    UDP 67 on one interface.
    """

    def dispatch(self, packet, address):
        return self.responder.handleDHCP(packet, self.iface, self.send)


class PXEProtocol(_ResponderProtocol):
    """
    UDP 4011 (PXE boot server) on one interface.
    """

    def dispatch(self, packet, address):
        return self.responder.handlePXE(packet, self.iface, self.send, address)
