# -*- test-case-name: tests.test_dhcp_server -*-
"""
The dispatcher on the DHCP port (UDP 67) and the PXE boot server's port
(UDP 4011).

L{DHCPProtocol} and L{PXEProtocol} are the datagram protocols: one per
listening socket (one socket per configured interface, bound with
C{SO_BINDTODEVICE}, see L{bindUDPSocket}), each decoding datagrams, handing
them to the responder and sending its replies. Nothing a packet carries can
raise out of C{datagramReceived}.

L{DHCPResponder} turns a parsed request into replies and calls
C{send(reply, address)}. It knows nothing of sockets, so the unit tests
drive it with a fake C{send} and a L{twisted.internet.task.Clock}. It
counts each request, drops what no mode answers (BOOTP, non-Ethernet, a
relay address replies may not go to) and hands the rest to its parts:

  - L{provisioner.dhcp.subnets.Subnets}: the subnets and reservations,
    which subnet serves a request, which relays are answered;
  - L{provisioner.dhcp.boot.BootAnswers}: what network-boot clients are
    told (the proxyDHCP OFFER, the boot server's ACK on 4011, the boot
    part of full-mode replies);
  - L{provisioner.dhcp.leasing.LeaseResponder}: full-mode DISCOVER,
    REQUEST, RELEASE, DECLINE and INFORM, offers and leases.

Modes (C{dhcp.mode}):

  - C{proxy}: answer only network-boot clients (option 60 C{PXEClient} /
    C{HTTPClient}); the OFFER has yiaddr 0, option 60, 54, 97 echoed and
    the boot file (siaddr, C{file}, 66, 67). Another server gives addresses.
  - C{full}: a DHCP server with pools per subnet, reservations, leases
    (L{provisioner.dhcp.leases.LeaseStore}), relays (giaddr, option 82
    echoed), and the same boot information for network-boot clients.
"""

import ipaddress
import socket
import struct

from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from provisioner.dhcp import wire
from provisioner.dhcp.boot import BootAnswers
from provisioner.dhcp.leasing import LeaseResponder
from provisioner.dhcp.policy import ArchitectureBootPolicy
from provisioner.dhcp.subnets import Subnets
from provisioner.dhcp.wire import DHCPPacket, MalformedPacket
from provisioner.net.sockets import udpSocket

__all__ = [
    "InterfaceInfo",
    "DHCPResponder",
    "DHCPProtocol",
    "PXEProtocol",
    "bindUDPSocket",
    "interfaceAddress",
]

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
    the process is not scheduled; the send buffer for replies that wait
    for ARP (unicast to a client's own address) besides the others.
    """
    return udpSocket(address, port, interface, receiveBuffer=1 << 20, sendBuffer=1 << 20,
                     reuseAddress=True, broadcast=True)


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
    @ivar decisions: C{{(port, type, decision): count}}: each request by
        the port it came to (C{dhcp}, C{pxe}), its message type (C{DISCOVER},
        ...; C{BOOTP}, C{other}) and what became of it: the reply sent
        (C{offer}, C{ack}, C{nak}), C{noreply} (a RELEASE or DECLINE, never
        answered), C{ignored} or C{error}. Read by the metrics.
    @ivar subnets: the L{Subnets}.
    @ivar boot: the L{BootAnswers}.
    @ivar leasing: the L{LeaseResponder}.
    """

    log = Logger()

    def __init__(self, config, reactor, clients, leases=None, policy=None,
                 inventoryGetter=lambda: None, events=None):
        """
        @param events: the L{provisioner.events.IEventSink} the boot
            decisions are published to (none by default).
        """
        self.reactor = reactor
        self.clients = clients
        self.inventoryGetter = inventoryGetter
        self.policy = policy if policy is not None else ArchitectureBootPolicy(
            config, inventoryGetter)
        self.stats = {}
        self.decisions = {}
        # The parts log through this logger: every line keeps the namespace
        # it had when they were one class.
        self.subnets = Subnets(config, inventoryGetter, self.log)
        self.boot = BootAnswers(config, reactor, clients, self.policy, self.log, self._count,
                                events)
        self.leasing = LeaseResponder(config, reactor, clients, leases, self.subnets,
                                      self.boot, self.log, self._count)
        self.config = config
        self._reconfigurePolicy(config)

    @property
    def leases(self):
        """
        The lease store, which the L{LeaseResponder} holds.
        """
        return self.leasing.leases

    @leases.setter
    def leases(self, leases):
        self.leasing.leases = leases

    def reconfigure(self, config):
        """
        Take a new C{dhcp} section (pools, boot files, overrides, ...).
        """
        self.config = config
        self.subnets.reconfigure(config)
        self.boot.reconfigure(config)
        self.leasing.reconfigure(config)
        self._reconfigurePolicy(config)

    def _reconfigurePolicy(self, config):
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
        return self._decide("dhcp", packet, send, self._handleDHCP, iface)

    def _decide(self, port, packet, send, handle, *args):
        """
        Call C{handle(packet, *args, send)} and count what became of the
        request in L{decisions} once it is answered (or not).
        """
        sent = []

        def counted(reply, address):
            sent.append(reply.messageType)
            send(reply, address)
        try:
            result = handle(packet, *args, counted)
        except BaseException:
            self._decided(port, packet, sent, True)
            raise
        if isinstance(result, defer.Deferred):
            def done(outcome):
                self._decided(port, packet, sent, isinstance(outcome, Failure))
                return outcome
            result.addBoth(done)
        else:
            self._decided(port, packet, sent, False)
        return result

    def _decided(self, port, packet, sent, failed):
        kind = packet.messageType if packet.op == wire.BOOTREQUEST else -1
        name = "BOOTP" if kind is None else _REQUEST_TYPES.get(kind, "other")
        if failed:
            decision = "error"
        elif sent:
            decision = _REPLY_TYPES.get(sent[-1], "other")
        elif kind in (wire.DHCPRELEASE, wire.DHCPDECLINE):
            decision = "noreply"
        else:
            decision = "ignored"
        key = (port, name, decision)
        self.decisions[key] = self.decisions.get(key, 0) + 1

    def _handleDHCP(self, packet, iface, send):
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
            wire.DHCPDISCOVER: self.leasing.discover,
            wire.DHCPREQUEST: self.leasing.request,
            wire.DHCPRELEASE: self.leasing.release,
            wire.DHCPDECLINE: self.leasing.decline,
            wire.DHCPINFORM: self.leasing.inform,
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
        return self._decide("pxe", packet, send, self._handlePXE, iface, source)

    def _handlePXE(self, packet, iface, source, send):
        if packet.op != wire.BOOTREQUEST or packet.mac is None:
            return None
        kind = packet.messageType
        if kind not in (wire.DHCPREQUEST, wire.DHCPINFORM):
            return None
        self._count("pxe-" + wire.MESSAGE_TYPES[kind])
        return self.boot.bootServerAck(packet, iface, send, source)


#: the message types a client sends, as the metrics name them (bounded)
_REQUEST_TYPES = {k: wire.MESSAGE_TYPES[k] for k in (
    wire.DHCPDISCOVER, wire.DHCPREQUEST, wire.DHCPDECLINE, wire.DHCPRELEASE, wire.DHCPINFORM)}

#: the replies, as the decisions name them
_REPLY_TYPES = {wire.DHCPOFFER: "offer", wire.DHCPACK: "ack", wire.DHCPNAK: "nak"}


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
