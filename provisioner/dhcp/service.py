# -*- test-case-name: tests.test_dhcp_service -*-
"""
The C{dhcp} service: binds UDP 67 and 4011 on each configured interface in
C{privilegedStartService}, opens the lease store (full mode), reclaims
expired leases every minute, and closes everything in C{stopService}.

The lease store is the SQLite file C{dhcp.lease_file}, or, with
C{store.backend: postgresql}, the database several appliances share
(L{provisioner.store.postgres_leases}): its schema is brought up to date
first, and this appliance's heartbeat runs while the service does.
"""

import os
import socket
import sqlite3

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from provisioner.config import ConfigError
from provisioner.startup import bindError, directoryError
from provisioner.dhcp.leases import LeaseStore, ThreadedWriter
from provisioner.store import postgres
from provisioner.store.interfaces import StoreUnavailable
from provisioner.store.postgres_leases import Membership, PostgresLeaseStore
from provisioner.dhcp.server import (
    DHCPProtocol,
    DHCPResponder,
    InterfaceInfo,
    PXEProtocol,
    bindUDPSocket,
    interfaceAddress,
)

__all__ = ["DHCPService", "makeService"]

RECLAIM_INTERVAL = 60


class DHCPService(service.Service):
    """
    @ivar appliance: the L{provisioner.appliance.Appliance}.
    @ivar responder: the L{DHCPResponder} (after start).
    @ivar ports: the listening ports, as C{(kind, interface, port)}.
    """

    log = Logger()

    def __init__(self, appliance, bindSocket=bindUDPSocket, addressOf=interfaceAddress,
                 threadedLeases=True):
        self.appliance = appliance
        self.reactor = appliance.reactor
        self._bindSocket = bindSocket
        self._addressOf = addressOf
        self._threadedLeases = threadedLeases
        self.responder = None
        self.leases = None
        self.membership = None
        self.ports = []
        self._reclaimer = None
        self._bound = False
        appliance.dhcp = self

    @property
    def config(self):
        return self.appliance.config["dhcp"]

    def _interfaces(self):
        config = self.config
        if not config["interfaces"]:
            return [InterfaceInfo(None, None if config["address"] == "0.0.0.0"
                                  else config["address"])]
        out = []
        for name in config["interfaces"]:
            address, network = self._addressOf(name)
            out.append(InterfaceInfo(name, address, network))
        return out

    def _listen(self, sock, protocol):
        try:
            return self.reactor.adoptDatagramPort(sock.fileno(), socket.AF_INET, protocol)
        finally:
            sock.close()

    def privilegedStartService(self):
        config = self.config
        store = self.appliance.config.get("store") or {"backend": "sqlite"}
        if config["mode"] == "full" and store["backend"] == "postgresql":
            self.leases = self._openShared(store)
        elif config["mode"] == "full":
            writer = None
            directory = os.path.dirname(os.path.abspath(config["lease_file"]))
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as e:
                raise directoryError(e, "dhcp.lease_file", config["lease_file"])
            if self._threadedLeases:
                try:
                    writer = ThreadedWriter(config["lease_file"], self.reactor,
                                            config["lease_sync"].upper())
                except sqlite3.Error as e:
                    raise ConfigError("dhcp.lease_file", "cannot open %s: %s" % (
                        config["lease_file"], e))
            try:
                self.leases = LeaseStore(config["lease_file"], self.reactor, writer)
            except sqlite3.Error as e:
                if writer is not None:
                    writer.close()
                raise ConfigError("dhcp.lease_file", "%s is not a usable lease database (%s); "
                                  "move it away to start with no leases" % (
                                      config["lease_file"], e))
            self.log.info("DHCP lease store {path}: {count} leases loaded",
                          path=config["lease_file"], count=len(self.leases))
        interfaces = self._interfaces()
        if self.membership is not None:
            self.membership.addresses = tuple(sorted(
                {i.address for i in interfaces if i.address} |
                ({config["server_address"]} if config["server_address"] else set())))
        self.responder = DHCPResponder(
            config, self.reactor, self.appliance.clients, self.leases,
            inventoryGetter=lambda: self.appliance.inventory, events=self.appliance.events)
        for iface in interfaces:
            if config["port"]:
                protocol = DHCPProtocol(self.responder, iface)
                port = self._listen(self._bind("port", iface.name), protocol)
                self.ports.append(("dhcp", iface, port))
            if config["pxe_port"]:
                protocol = PXEProtocol(self.responder, iface)
                port = self._listen(self._bind("pxe_port", iface.name), protocol)
                self.ports.append(("pxe", iface, port))
            self.log.info(
                "DHCP {mode} responder on {iface} ({address}) ports {port}/{pxe}",
                mode=config["mode"], iface=iface.name or config["address"],
                address=iface.address, port=config["port"] or "-",
                pxe=config["pxe_port"] or "-")
        self._bound = True
        service.Service.privilegedStartService(self)

    def _openShared(self, store):
        """
        The shared lease store of C{store.dsn}, its schema checked (and
        migrated, with C{store.migrate}).

        @raise ConfigError: the database cannot be used.
        """
        try:
            applied = postgres.checkSchema(store)
        except (postgres.SchemaError, StoreUnavailable) as e:
            raise ConfigError("store.dsn", str(e))
        if applied:
            self.log.info("shared store {dsn}: schema migrated to version {version}",
                          dsn=postgres.redact(store["dsn"]), version=applied[-1])
        timeout = store["connect_timeout"]
        self.membership = Membership(
            postgres.Database(store["dsn"], self.reactor, "dhcp-heartbeat", timeout),
            self.reactor, postgres.applianceId(store), store["failover_after"],
            store["heartbeat_interval"])
        leases = PostgresLeaseStore(
            postgres.Database(store["dsn"], self.reactor, "dhcp-leases", timeout),
            self.reactor, self.membership)
        self.log.info("DHCP leases shared on {dsn} as appliance {me} (failover after "
                      "{after}s)", dsn=leases.location, me=self.membership.me,
                      after=store["failover_after"])
        return leases

    def _bind(self, portKey, interface):
        """
        A socket bound to C{dhcp.address} and the port of C{portKey}.

        @raise provisioner.startup.StartError: it cannot be bound (the key
            at fault, its value, why).
        """
        config = self.config
        try:
            return self._bindSocket(config["address"], config[portKey], interface)
        except OSError as e:
            raise bindError(e, "dhcp", config["address"], config[portKey], interface=interface,
                            portKey=portKey, interfaceKey="interfaces")

    def startService(self):
        if not self._bound:
            self.privilegedStartService()
        service.Service.startService(self)
        if self.membership is not None:
            self.membership.start()
        if self.leases is not None:
            self._reclaimer = task.LoopingCall(self._reclaim)
            self._reclaimer.clock = self.reactor
            self._reclaimer.start(RECLAIM_INTERVAL, now=True)

    def _reclaim(self):
        try:
            count = self.leases.reclaim()
            if count:
                self.log.debug("reclaimed {count} expired leases", count=count)
        except Exception:
            self.log.failure("lease reclaim failed")

    def reconfigure(self, config):
        """
        Take a reloaded configuration: pools, boot files, overrides and
        reservations apply at once; interfaces, ports, mode and the lease
        file need a restart (logged).
        """
        new = config["dhcp"]
        if self.responder is None:
            return
        old = self.responder.config
        for key in ("interfaces", "address", "port", "pxe_port", "mode", "lease_file"):
            if old[key] != new[key]:
                self.log.warn("dhcp.{key} changed: restart provisioner to apply it", key=key)
        applied = dict(new)
        for key in ("interfaces", "address", "port", "pxe_port", "mode", "lease_file"):
            applied[key] = old[key]
        self.responder.reconfigure(applied)

    def stopService(self):
        service.Service.stopService(self)
        if self._reclaimer is not None and self._reclaimer.running:
            self._reclaimer.stop()
        self._reclaimer = None
        waits = []
        for kind, iface, port in self.ports:
            d = port.stopListening()
            if isinstance(d, defer.Deferred):
                waits.append(d)
        self.ports = []
        self._bound = False
        if self.membership is not None:
            membership, self.membership = self.membership, None
            waits.append(membership.stop().addBoth(
                lambda _: membership.database.close()))
        if self.leases is not None:
            waits.append(self.leases.close())
            self.leases = None
        return defer.gatherResults(waits, consumeErrors=True).addCallback(lambda _: None)


def makeService(appliance):
    """
    The C{dhcp} service for the appliance.
    """
    return DHCPService(appliance)
