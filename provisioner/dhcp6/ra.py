# -*- test-case-name: tests.test_dhcp6_server -*-
"""
Router advertisements for an isolated provisioning network (as dnsmasq's
C{enable-ra}): every C{dhcp6.ra_interval} seconds, and at once (at most
every L{MIN_DELAY} seconds) to a router solicitation, each configured
interface gets an RA to ff02::1 with the managed and other-configuration
flags set (M=1, O=1: get addresses and the rest from DHCPv6) and each
prefix (C{dhcp6.subnets}, C{dhcp6.ra_prefixes}) on-link (L=1) without the
autonomous flag (A=0: no SLAAC address).

L{encodeRouterAdvertisement} is the pure encoder (RFC 4861 section 4.2;
the kernel fills in the ICMPv6 checksum of a raw ICMPv6 socket).
L{RouterAdvertiser} owns one raw ICMPv6 socket per interface (hop limit
255, joined to ff02::2 for solicitations), opened by L{openRASocket} in
C{privilegedStartService}.
"""

import ipaddress
import socket
import struct

from twisted.internet import task
from twisted.internet.interfaces import IReactorFDSet
from twisted.logger import Logger

__all__ = ["encodeRouterAdvertisement", "parseRouterAdvertisement", "RouterAdvertiser",
           "openRASocket", "MIN_DELAY"]

ICMP6_ROUTER_SOLICIT = 133
ICMP6_ROUTER_ADVERT = 134
FLAG_MANAGED = 0x80
FLAG_OTHER = 0x40
PREFIX_ONLINK = 0x80
PREFIX_AUTONOMOUS = 0x40
ALL_NODES = "ff02::1"
ALL_ROUTERS = "ff02::2"
#: ICMP6_FILTER (netinet/icmp6.h), which Python's socket module lacks
ICMP6_FILTER = 1
#: seconds between two RAs sent to solicitations (RFC 4861
#: MIN_DELAY_BETWEEN_RAS)
MIN_DELAY = 3.0


def encodeRouterAdvertisement(prefixes, routerLifetime=0, mac=None, managed=True,
                              other=True, hopLimit=64):
    """
    An ICMPv6 router advertisement (checksum left 0).

    @param prefixes: C{(network, valid, preferred)}: each prefix (an
        C{IPv6Network} or text) on-link, not autonomous.
    @param mac: our hardware address (text) for the source link-layer
        address option, or L{None}.
    """
    flags = (FLAG_MANAGED if managed else 0) | (FLAG_OTHER if other else 0)
    out = [struct.pack("!BBHBBHII", ICMP6_ROUTER_ADVERT, 0, 0, hopLimit, flags,
                       routerLifetime, 0, 0)]
    if mac:
        out.append(struct.pack("!BB", 1, 1) + bytes(int(p, 16) for p in mac.split(":")))
    for network, valid, preferred in prefixes:
        network = ipaddress.IPv6Network(network, strict=False)
        out.append(struct.pack("!BBBBIII", 3, 4, network.prefixlen, PREFIX_ONLINK, valid,
                               preferred, 0) + network.network_address.packed)
    return b"".join(out)


def parseRouterAdvertisement(data):
    """
    Read an RA back (tests, tools): C{dict} with C{flags}, C{lifetime},
    C{hopLimit}, C{prefixes} (C{(text, flags, valid, preferred)}) and
    C{mac}.

    @raise ValueError: not a readable RA.
    """
    if len(data) < 16 or data[0] != ICMP6_ROUTER_ADVERT:
        raise ValueError("not a router advertisement")
    hopLimit, flags, lifetime = struct.unpack_from("!BBH", data, 4)
    out = {"flags": flags, "lifetime": lifetime, "hopLimit": hopLimit, "prefixes": [],
           "mac": None}
    i = 16
    while i + 2 <= len(data):
        kind, units = data[i], data[i + 1]
        if units == 0 or i + units * 8 > len(data):
            raise ValueError("bad option length")
        body = data[i:i + units * 8]
        if kind == 1 and units == 1:
            out["mac"] = ":".join("%02x" % (b,) for b in body[2:8])
        elif kind == 3 and units == 4:
            length, pflags, valid, preferred = struct.unpack_from("!BBII", body, 2)
            prefix = socket.inet_ntop(socket.AF_INET6, body[16:32])
            out["prefixes"].append(("%s/%d" % (prefix, length), pflags, valid, preferred))
        i += units * 8
    return out


def openRASocket(interface):
    """
    A raw ICMPv6 socket on C{interface}: hop limit 255 (RFC 4861 needs it),
    only router solicitations let in, ff02::2 joined.

    @raise OSError: it cannot be made (no CAP_NET_RAW, no such interface).
    """
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        index = socket.if_nametoindex(interface)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        words = [0xffffffff] * 8
        words[ICMP6_ROUTER_SOLICIT >> 5] &= ~(1 << (ICMP6_ROUTER_SOLICIT & 31))
        sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("@8I", *words))
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                        socket.inet_pton(socket.AF_INET6, ALL_ROUTERS) +
                        struct.pack("@I", index))
    except BaseException:
        sock.close()
        raise
    return sock


class _Reader:
    """
    The reactor's view of one RA socket: solicitations arrive here.
    """

    def __init__(self, advertiser, name, sock):
        self.advertiser = advertiser
        self.name = name
        self.sock = sock

    def fileno(self):
        return self.sock.fileno()

    def doRead(self):
        self.advertiser.readable(self.name)

    def connectionLost(self, reason):
        pass

    def logPrefix(self):
        return "RA %s" % (self.name,)


class RouterAdvertiser:
    """
    Periodic and solicited RAs on each interface.

    @ivar sent: RAs sent, by interface name.
    """

    log = Logger()

    def __init__(self, reactor, config, interfaces, openSocket=openRASocket):
        """
        @param interfaces: the L{provisioner.dhcp6.server.Interface6}s.
        @param openSocket: C{openSocket(name)} returns the interface's
            socket (tests give fakes).
        """
        self.reactor = reactor
        self.config = config
        self.interfaces = list(interfaces)
        self._openSocket = openSocket
        self.sockets = {}
        self._readers = []
        self._lastSolicited = {}
        self._loop = None
        self.sent = {}

    def open(self):
        """
        Open the sockets (C{privilegedStartService}).

        @raise OSError: one cannot be opened (the others are closed).
        """
        try:
            for iface in self.interfaces:
                self.sockets[iface.name] = self._openSocket(iface.name)
        except BaseException:
            self.close()
            raise

    def prefixes(self):
        """
        C{(prefix, valid, preferred)} for each prefix advertised.
        """
        seen = []
        out = []
        config = self.config
        for entry in config["subnets"]:
            network = ipaddress.IPv6Network(entry["prefix"], strict=False)
            valid = entry.get("valid_lifetime") or config["valid_lifetime"]
            preferred = min(entry.get("preferred_lifetime") or config["preferred_lifetime"],
                            valid)
            if network not in seen:
                seen.append(network)
                out.append((network, valid, preferred))
        for text in config["ra_prefixes"]:
            network = ipaddress.IPv6Network(text, strict=False)
            if network not in seen:
                seen.append(network)
                out.append((network, config["valid_lifetime"], config["preferred_lifetime"]))
        return out

    def start(self):
        if IReactorFDSet.providedBy(self.reactor):
            for iface in self.interfaces:
                sock = self.sockets.get(iface.name)
                if sock is not None:
                    reader = _Reader(self, iface.name, sock)
                    self._readers.append(reader)
                    self.reactor.addReader(reader)
        self._loop = task.LoopingCall(self.advertise)
        self._loop.clock = self.reactor
        self._loop.start(self.config["ra_interval"], now=True)

    def reconfigure(self, config):
        self.config = config

    def advertise(self, only=None):
        """
        Send an RA on every interface (or only on C{only}).
        """
        for iface in self.interfaces:
            if only is not None and iface.name != only:
                continue
            sock = self.sockets.get(iface.name)
            if sock is None:
                continue
            data = encodeRouterAdvertisement(self.prefixes(),
                                             self.config["ra_router_lifetime"], iface.mac)
            try:
                sock.sendto(data, (ALL_NODES, 0, 0, socket.if_nametoindex(iface.name)
                                   if iface.name else 0))
                self.sent[iface.name] = self.sent.get(iface.name, 0) + 1
            except OSError as e:
                self.log.debug("RA on {iface} not sent: {error}", iface=iface.name, error=e)

    def readable(self, name):
        """
        Read what waits on C{name}'s socket; answer a solicitation with an
        RA unless one was sent to a solicitation within L{MIN_DELAY}.
        """
        sock = self.sockets.get(name)
        if sock is None:
            return
        solicited = False
        for _ in range(64):
            try:
                data, _address = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self.log.debug("RA socket on {iface}: {error}", iface=name, error=e)
                break
            if data and data[0] == ICMP6_ROUTER_SOLICIT:
                solicited = True
        if not solicited:
            return
        now = self.reactor.seconds()
        last = self._lastSolicited.get(name)
        if last is not None and now - last < MIN_DELAY:
            return
        self._lastSolicited[name] = now
        self.advertise(only=name)

    def close(self):
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        for reader in self._readers:
            self.reactor.removeReader(reader)
        self._readers = []
        for sock in self.sockets.values():
            sock.close()
        self.sockets = {}
