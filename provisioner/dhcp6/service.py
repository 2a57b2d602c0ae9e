# -*- test-case-name: tests.test_dhcp6_service -*-
"""
The C{dhcp6} service: in C{privilegedStartService} it binds UDP 547 (and
the PXE boot server's 4011) on each configured interface, joins
ff02::1:2 (All_DHCP_Relay_Agents_and_Servers) there, opens the lease store
(full mode) and the router advertisement sockets (with
C{dhcp6.router_advertisements}); it reclaims expired leases every minute
and closes everything in C{stopService}. It publishes itself as
C{appliance.dhcp6}.
"""

import os
import socket
import sqlite3
import uuid

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from provisioner.config import ConfigError
from provisioner.dhcp6 import wire
from provisioner.dhcp6.leases import Lease6Store, threadedWriter6
from provisioner.dhcp6.ra import RouterAdvertiser, openRASocket
from provisioner.dhcp6.server import (
    ALL_DHCP_RELAY_AGENTS_AND_SERVERS,
    BootServer6Protocol,
    DHCP6Protocol,
    DHCP6Responder,
    Interface6,
    joinGroup,
)
from provisioner.net.sockets import udpSocket
from provisioner.startup import StartError, bindError, directoryError

__all__ = ["DHCP6Service", "makeService", "interfaceInfo6", "bindUDP6Socket", "serverDUID"]

RECLAIM_INTERVAL = 60


def interfaceInfo6(name, inet6="/proc/net/if_inet6", sysfs="/sys/class/net"):
    """
    An L{Interface6} for interface C{name}: its IPv6 addresses (global
    ones first, link-local last; tentative and deprecated ones too) from
    C{/proc/net/if_inet6}, and its MAC from sysfs.
    """
    addresses = []
    try:
        with open(inet6) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and parts[5] == name:
                    raw = bytes.fromhex(parts[0])
                    addresses.append((int(parts[3], 16) == 0x20,
                                      socket.inet_ntop(socket.AF_INET6, raw)))
    except OSError:
        pass
    addresses.sort(key=lambda pair: pair[0])
    mac = None
    try:
        with open(os.path.join(sysfs, name, "address")) as f:
            mac = f.read().strip() or None
    except OSError:
        pass
    if mac is not None and (len(mac.split(":")) != 6 or mac == "00:00:00:00:00:00"):
        mac = None
    return Interface6(name, [a for _, a in addresses], mac)


def bindUDP6Socket(address, port, interface=None):
    """
    A non-blocking UDP socket bound to C{[address]:port}, with
    C{SO_REUSEADDR} and, given an interface, C{SO_BINDTODEVICE} and
    ff02::1:2 joined there.
    """
    sock = udpSocket(address, port, interface, receiveBuffer=1 << 20, sendBuffer=1 << 20,
                     reuseAddress=True)
    if interface:
        try:
            joinGroup(sock, ALL_DHCP_RELAY_AGENTS_AND_SERVERS, interface)
        except BaseException:
            sock.close()
            raise
    return sock


def serverDUID(config, interfaces):
    """
    Our DUID: C{dhcp6.server_duid}, else a DUID-LL of the first interface
    MAC, else a DUID-UUID made from the host name.
    """
    if config["server_duid"]:
        return bytes.fromhex(config["server_duid"].replace(":", ""))
    for iface in interfaces:
        if iface.mac:
            return wire.encodeDUIDLL(iface.mac)
    return wire.encodeDUIDUUID(uuid.uuid5(uuid.NAMESPACE_DNS, socket.gethostname()).bytes)


class DHCP6Service(service.Service):
    """
    @ivar responder: the L{DHCP6Responder} (after start).
    @ivar leases: the lease store (full mode), or L{None}.
    @ivar ports: C{(kind, interface, port)} for each listening port.
    @ivar advertiser: the L{RouterAdvertiser}, or L{None}.
    """

    log = Logger()

    def __init__(self, appliance, bindSocket=bindUDP6Socket, interfaceInfo=interfaceInfo6,
                 openRA=openRASocket, threadedLeases=True):
        self.appliance = appliance
        self.reactor = appliance.reactor
        self._bindSocket = bindSocket
        self._interfaceInfo = interfaceInfo
        self._openRA = openRA
        self._threadedLeases = threadedLeases
        self.responder = None
        self.leases = None
        self.advertiser = None
        self.ports = []
        self._reclaimer = None
        self._bound = False
        appliance.dhcp6 = self

    @property
    def config(self):
        return self.appliance.config["dhcp6"]

    def _httpPort(self):
        config = self.config
        if config["http_port"] is not None:
            return config["http_port"]
        return self.appliance.config.get("http", {}).get("port", 8080)

    def _interfaces(self):
        config = self.config
        if not config["interfaces"]:
            address = None if config["address"] == "::" else config["address"]
            return [Interface6(None, [address] if address else [])]
        return [self._interfaceInfo(name) for name in config["interfaces"]]

    def _openLeases(self):
        config = self.config
        path = config["lease_file"]
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        except OSError as e:
            raise directoryError(e, "dhcp6.lease_file", path)
        writer = None
        try:
            if self._threadedLeases:
                writer = threadedWriter6(path, self.reactor, config["lease_sync"].upper())
            self.leases = Lease6Store(path, self.reactor, writer)
        except sqlite3.Error as e:
            if writer is not None:
                writer.close()
            raise ConfigError("dhcp6.lease_file", "%s is not a usable lease database (%s); "
                              "move it away to start with no leases" % (path, e))
        self.log.info("DHCPv6 lease store {path}: {count} leases loaded", path=path,
                      count=len(self.leases))

    def privilegedStartService(self):
        config = self.config
        if config["mode"] == "full":
            self._openLeases()
        interfaces = self._interfaces()
        duid = serverDUID(config, interfaces)
        self.responder = DHCP6Responder(
            config, duid, self.appliance.clients, self.leases,
            inventoryGetter=lambda: self.appliance.inventory, events=self.appliance.events,
            httpPort=self._httpPort())
        try:
            for iface in interfaces:
                for kind, key, protocol in (("dhcp6", "port", DHCP6Protocol),
                                            ("pxe", "pxe_port", BootServer6Protocol)):
                    if not config[key]:
                        continue
                    sock = self._bind(key, iface.name)
                    try:
                        port = self.reactor.adoptDatagramPort(
                            sock.fileno(), socket.AF_INET6, protocol(self.responder, iface))
                    finally:
                        sock.close()
                    self.ports.append((kind, iface, port))
                if self.config["server_address"] is None and iface.name and \
                        iface.address is None:
                    self.log.warn("DHCPv6: {iface} has no global IPv6 address: boot file "
                                  "URLs need dhcp6.server_address", iface=iface.name)
                self.log.info("DHCPv6 {mode} responder on {iface} ({addresses}) ports "
                              "{port}/{pxe}, DUID {duid}", mode=config["mode"],
                              iface=iface.name or config["address"],
                              addresses=", ".join(iface.addresses) or "-",
                              port=config["port"] or "-", pxe=config["pxe_port"] or "-",
                              duid=duid.hex())
            if config["router_advertisements"]:
                self.advertiser = RouterAdvertiser(self.reactor, config, interfaces,
                                                   self._openRA)
                try:
                    self.advertiser.open()
                except OSError as e:
                    self.advertiser = None
                    raise StartError("dhcp6.router_advertisements", True,
                                     "cannot open a raw ICMPv6 socket (%s): needs root or "
                                     "CAP_NET_RAW" % (e.strerror or e,))
        except BaseException:
            self._closePorts()
            raise
        self._bound = True
        service.Service.privilegedStartService(self)

    def _bind(self, portKey, interface):
        config = self.config
        try:
            return self._bindSocket(config["address"], config[portKey], interface)
        except OSError as e:
            raise bindError(e, "dhcp6", config["address"], config[portKey],
                            interface=interface, portKey=portKey, interfaceKey="interfaces")

    def startService(self):
        if not self._bound:
            self.privilegedStartService()
        service.Service.startService(self)
        if self.advertiser is not None:
            self.advertiser.start()
            self.log.info("DHCPv6 router advertisements every {interval}s (M=1, O=1) of "
                          "{prefixes}", interval=self.config["ra_interval"],
                          prefixes=", ".join(str(p) for p, _, _ in
                                             self.advertiser.prefixes()))
        if self.leases is not None:
            self._reclaimer = task.LoopingCall(self._reclaim)
            self._reclaimer.clock = self.reactor
            self._reclaimer.start(RECLAIM_INTERVAL, now=True)

    def _reclaim(self):
        try:
            count = self.leases.reclaim()
            if count:
                self.log.debug("reclaimed {count} expired DHCPv6 leases", count=count)
        except Exception:
            self.log.failure("DHCPv6 lease reclaim failed")

    def reconfigure(self, config):
        """
        Take a reloaded configuration: boot files, pools, lifetimes and RA
        timings apply at once; interfaces, address, ports, mode and the
        lease file need a restart (logged).
        """
        if self.responder is None:
            return
        new = config["dhcp6"]
        old = self.responder.config
        fixed = ("interfaces", "address", "port", "pxe_port", "mode", "lease_file",
                 "server_duid", "router_advertisements")
        applied = dict(new)
        for key in fixed:
            if old[key] != new[key]:
                self.log.warn("dhcp6.{key} changed: restart provisioner to apply it", key=key)
            applied[key] = old[key]
        self.responder.reconfigure(applied, self._httpPort())
        if self.advertiser is not None:
            self.advertiser.reconfigure(applied)

    def _closePorts(self):
        waits = []
        for kind, iface, port in self.ports:
            d = port.stopListening()
            if isinstance(d, defer.Deferred):
                waits.append(d)
        self.ports = []
        if self.advertiser is not None:
            self.advertiser.close()
            self.advertiser = None
        return waits

    def stopService(self):
        service.Service.stopService(self)
        if self._reclaimer is not None and self._reclaimer.running:
            self._reclaimer.stop()
        self._reclaimer = None
        waits = self._closePorts()
        self._bound = False
        if self.leases is not None:
            waits.append(self.leases.close())
            self.leases = None
        return defer.gatherResults(waits, consumeErrors=True).addCallback(lambda _: None)


def makeService(appliance):
    """
    The C{dhcp6} service for the appliance.
    """
    return DHCP6Service(appliance)
