# -*- test-case-name: tests.test_dhcp_server -*-
"""
Where addresses come from: the configured subnets (C{dhcp.subnets}), the
reservations (C{dhcp.reservations}, overlaid with the inventory's hosts),
which subnet serves a request (the relay's, the receiving interface's, the
server address's), and which relay addresses (giaddr) replies may go to.
"""

import ipaddress
import socket
import struct

from provisioner.directory import normaliseMAC
from provisioner.dhcp.wire import ZERO

__all__ = [
    "Subnet",
    "Subnets",
    "hostReservations",
    "ipToInt",
    "intToIP",
]


def ipToInt(ip):
    """
    A dotted IPv4 address as an integer, or L{None} if it is not one.
    """
    try:
        return struct.unpack("!I", socket.inet_pton(socket.AF_INET, ip))[0]
    except (OSError, TypeError):
        return None


def intToIP(value):
    """
    An integer as a dotted IPv4 address.
    """
    return socket.inet_ntoa(struct.pack("!I", value))


class Subnet:
    """
    One C{dhcp.subnets} entry, parsed.

    @ivar cursor: where the next search for a free pool address starts.
    """

    def __init__(self, entry, defaultLease):
        self.network = ipaddress.IPv4Network(entry["network"], strict=False)
        self.first = int(ipaddress.IPv4Address(entry["range"][0]))
        self.last = int(ipaddress.IPv4Address(entry["range"][1]))
        self.router = entry.get("router")
        self.dns = list(entry.get("dns") or [])
        self.domain = entry.get("domain")
        self.leaseTime = entry.get("lease_time") or defaultLease
        self.broadcast = entry.get("broadcast") or str(self.network.broadcast_address)
        self.cursor = self.first
        self._base = int(self.network.network_address)
        self._mask = int(self.network.netmask)

    def inRange(self, ip):
        value = ipToInt(ip)
        return value is not None and self.first <= value <= self.last

    def __contains__(self, ip):
        value = ipToInt(ip)
        return value is not None and (value & self._mask) == self._base

    def __repr__(self):
        return "<Subnet %s>" % (self.network,)


def _field(thing, name):
    """
    C{name} from a mapping or an object, else from its C{vars} mapping.
    """
    if isinstance(thing, dict):
        value = thing.get(name)
        extra = thing.get("vars")
    else:
        value = getattr(thing, name, None)
        extra = getattr(thing, "vars", None)
    if value is None and isinstance(extra, dict):
        value = extra.get(name)
    return value


def hostReservations(inventory):
    """
    MAC -> C{(ip, hostname)} from an inventory (duck-typed): its
    C{reservations()} mapping MAC -> ip if it has one, else each of its
    C{hosts} (a mapping or a list) with an C{ip} (attribute, key, or in
    C{vars}) and its C{mac} or C{macs}.
    """
    out = {}
    finder = getattr(inventory, "reservations", None)
    if callable(finder):
        for mac, ip in finder().items():
            out[normaliseMAC(mac)] = (str(ipaddress.IPv4Address(str(ip))), None)
        return out
    hosts = getattr(inventory, "hosts", None)
    if hosts is None and isinstance(inventory, dict):
        hosts = inventory.get("hosts")
    if hosts is None:
        return out
    if isinstance(hosts, dict):
        hosts = hosts.values()
    for host in hosts:
        ip = _field(host, "ip")
        if not ip:
            continue
        ip = str(ipaddress.IPv4Address(str(ip)))
        macs = _field(host, "macs") or _field(host, "mac") or []
        if isinstance(macs, str):
            macs = [macs]
        for mac in macs:
            out[normaliseMAC(mac)] = (ip, _field(host, "hostname"))
    return out


class Subnets:
    """
    The configured subnets and reservations.

    @ivar config: the C{dhcp} section.
    @ivar subnets: the L{Subnet}s, in configuration order.
    @ivar inventoryGetter: returns the inventory (or L{None}).
    @ivar log: the responder's logger.
    """

    def __init__(self, config, inventoryGetter, log):
        self.inventoryGetter = inventoryGetter
        self.log = log
        self.reconfigure(config)

    def reconfigure(self, config):
        """
        Take a new C{dhcp} section: the subnets (their cursors start again
        at the first pool address) and C{dhcp.reservations}.
        """
        self.config = config
        self.subnets = [Subnet(entry, config["lease_time"]) for entry in config["subnets"]]
        reservations = {}
        for mac, entry in (config.get("reservations") or {}).items():
            ip = entry["ip"] if isinstance(entry, dict) else entry
            hostname = entry.get("hostname") if isinstance(entry, dict) else None
            reservations[normaliseMAC(mac)] = (str(ipaddress.IPv4Address(str(ip))), hostname)
        self._configReservations = reservations

    # Reservations -------------------------------------------------------

    def reservations(self):
        """
        MAC -> C{(ip, hostname)}: C{dhcp.reservations}, overlaid with the
        inventory's hosts once the inventory exists (see L{hostReservations}).
        """
        inventory = self.inventoryGetter()
        if inventory is None:
            return self._configReservations
        try:
            found = hostReservations(inventory)
        except Exception:
            self.log.failure("inventory reservations unreadable; using dhcp.reservations")
            return self._configReservations
        if not found:
            return self._configReservations
        out = dict(self._configReservations)
        taken = {ip: mac for mac, (ip, _) in found.items()}
        for mac, (ip, _) in list(out.items()):
            if ip in taken and taken[ip] != mac:
                del out[mac]
        out.update(found)
        return out

    def reservedIPs(self):
        """
        IP -> MAC of every reservation.
        """
        return {ip: mac for mac, (ip, _) in self.reservations().items()}

    # Relays and subnet selection ------------------------------------------

    def relayProblem(self, giaddr):
        """
        Why a relay address (giaddr) is not one replies may go to, or
        L{None} (no relay, or a good one): not a unicast host address; the
        network or broadcast address of a configured subnet (a reply would
        go to a whole remote segment); in full mode, in no configured subnet.
        """
        if giaddr == ZERO:
            return None
        try:
            address = ipaddress.IPv4Address(giaddr)
        except ValueError:
            return "not an IPv4 address"
        if (address.is_multicast or address.is_loopback or address.is_reserved or
                address.is_link_local or int(address) >> 24 == 0):
            return "not a unicast host address"
        inside = False
        for subnet in self.subnets:
            if giaddr not in subnet:
                continue
            inside = True
            network = subnet.network
            edges = {subnet.broadcast}
            if network.prefixlen < 31:
                edges.update((str(network.network_address), str(network.broadcast_address)))
            if giaddr in edges:
                return "the network or broadcast address of %s" % (network,)
        if not inside and self.config["mode"] == "full":
            return "in no configured subnet"
        return None

    def subnetFor(self, packet, iface):
        """
        The pool serving a request: the relay's subnet (giaddr), else the
        receiving interface's, else the only one configured.
        """
        if packet.giaddr != ZERO:
            for subnet in self.subnets:
                if packet.giaddr in subnet:
                    return subnet
            return None
        if iface.address is not None:
            for subnet in self.subnets:
                if iface.address in subnet:
                    return subnet
        server = self.config["server_address"]
        if server is not None:
            for subnet in self.subnets:
                if server in subnet:
                    return subnet
        if iface.address is None and server is None and len(self.subnets) == 1:
            # A socket with no known address (tests on loopback): the only pool.
            return self.subnets[0]
        return None
