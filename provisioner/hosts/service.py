# -*- test-case-name: tests.test_hosts -*-
"""
The C{hosts} service: opens the lifecycle store, loads it into the host
book and publishes the book as C{appliance.hosts}, which the menus renderer
(boot once, tokens, adoption) and the JSON API (callbacks, redeploy, adopt,
queries) use. It listens to every transfer through the TFTP service's stats
callbacks and the HTTP service's fetch callbacks.

It is started before C{menus} and C{dhcp}, so the book exists (and is
loaded) before anything asks it.
"""

import os
import uuid

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger

from provisioner.config import ConfigError
from provisioner.hosts.book import HostBook
from provisioner.store import postgres
from provisioner.store.sqlite import FILENAME, SQLiteHostStore

__all__ = ["HostsService", "makeService", "openStore"]


def openStore(section, reactor, store=None):
    """
    Open the store C{hosts.store} names, or the shared PostgreSQL database
    when C{store.backend} (C{store}, the configuration's C{store} section)
    is C{postgresql}.

    @raise ConfigError: it cannot be opened.
    """
    if store is not None and store["backend"] == "postgresql":
        try:
            postgres.checkSchema(store)
        except Exception as e:
            raise ConfigError("store.dsn", "cannot use the lifecycle store %s: %s" % (
                postgres.redact(store["dsn"]), e))
        return postgres.PostgresHostStore(
            postgres.Database(store["dsn"], reactor, "hosts-store", store["connect_timeout"]),
            origin="%s/%s" % (postgres.applianceId(store), uuid.uuid4().hex[:8]))
    path = os.path.join(section["state_directory"], FILENAME)
    try:
        return SQLiteHostStore(path, reactor, threaded=IReactorThreads.providedBy(reactor),
                               synchronous=section["sync"].upper())
    except Exception as e:
        raise ConfigError("hosts.state_directory", "cannot open the lifecycle store %s: %s "
                          "(move it away to start with no lifecycle history)" % (path, e))


def _limits(section):
    return dict(eventsPerHost=section["events_per_host"], tokenTTL=section["token_ttl"],
                maxTokens=section["max_tokens"], maxDiscovered=section["max_discovered"],
                filesPerMachine=section["files_per_machine"],
                adminNetworks=section["admin_networks"])


class HostsService(service.Service):
    """
    @ivar book: the L{HostBook} (also C{appliance.hosts}).
    @ivar store: the open L{provisioner.store.interfaces.IHostStore}, once
        started.
    @ivar shared: with the PostgreSQL store, the
        L{provisioner.store.notify.SharedHosts} that reloads what the other
        appliances change; else L{None}.
    """

    log = Logger()

    def __init__(self, appliance, store=None):
        """
        @param store: an L{IHostStore} to use instead of opening the one the
            configuration names (tests).
        """
        self.appliance = appliance
        self.reactor = appliance.reactor
        self.section = appliance.config["hosts"]
        self.store = store
        self._givenStore = store is not None
        self._hooks = {}
        self.shared = None
        self.book = HostBook(self.reactor, inventory=lambda: self.appliance.inventory,
                             clients=appliance.clients, eventSink=appliance.events,
                             imaging=lambda: getattr(self.appliance, "imaging", None),
                             **_limits(self.section))
        appliance.hosts = self.book

    def startService(self):
        service.Service.startService(self)
        self.appliance.hosts = self.book
        if self.store is None:
            self.store = openStore(self.section, self.reactor,
                                   self.appliance.config.get("store"))
        self.book.store = self.store
        self._follow()
        d = self.store.load()
        d.addCallback(self._loaded)
        d.addErrback(lambda f: self.log.failure("hosts: cannot load {store}", f,
                                                store=self.store.location))
        self.hook()

    def _follow(self):
        """
        With the shared (PostgreSQL) store: listen to the other appliances'
        changes (L{provisioner.store.notify}).
        """
        store = self.appliance.config.get("store")
        if getattr(self.store, "reloadHost", None) is None or store is None or \
                store["backend"] != "postgresql":
            return
        from provisioner.store.notify import SharedHosts
        self.shared = SharedHosts(self.book, self.store, store["dsn"], self.reactor,
                                  store["connect_timeout"])
        self.shared.start()

    def _loaded(self, snapshot):
        self.book.restore(snapshot)
        if self.shared is not None:
            self.shared.loaded()
        self.log.info("hosts: lifecycle store {store}: {hosts} hosts, {machines} discovered "
                      "machines", store=self.store.location, hosts=len(self.book.hosts),
                      machines=len(self.book.machines))

    def hook(self):
        """
        Listen to the TFTP and HTTP services' transfers (each once; a
        service built by a reload is hooked when this runs again).
        """
        tftp = getattr(self.appliance, "tftp", None)
        if tftp is not None and id(tftp) not in self._hooks and \
                hasattr(tftp, "addStatsCallback"):
            self._hooks[id(tftp)] = tftp.addStatsCallback(self._tftpEnded)
        http = getattr(self.appliance, "http", None)
        if http is not None and id(http) not in self._hooks and \
                hasattr(http, "addFetchCallback"):
            self._hooks[id(http)] = http.addFetchCallback(self._httpEnded)

    def _tftpEnded(self, stats):
        if stats.direction == "read" and stats.peer:
            self.book.fetched("tftp", stats.peer[0], stats.path, stats.outcome)

    def _httpEnded(self, fetch):
        if fetch.peer:
            self.book.fetched("http", fetch.peer[0], fetch.path, fetch.outcome)

    def stopService(self):
        service.Service.stopService(self)
        for remove in self._hooks.values():
            remove()
        self._hooks = {}
        self.book.loaded = False
        if self.appliance.hosts is self.book:
            self.appliance.hosts = None  # switched off: no lifecycle in menus or the API
        store = self.store
        if not self._givenStore:
            self.store = None
        shared, self.shared = self.shared, None
        waits = []
        if shared is not None:
            waits.append(shared.stop())
        if store is not None:
            waits.append(store.close())
        return defer.gatherResults(waits) if waits else None

    def reconfigure(self, config):
        """
        SIGHUP: new limits and admin networks apply at once; another store
        or state directory needs a restart.
        """
        new = config["hosts"]
        old, self.section = self.section, new
        for key in ("store", "state_directory", "sync"):
            if old[key] != new[key]:
                self.log.warn("hosts.{key} changed: restart provisioner to use it", key=key)
        self.book.configure(**_limits(new))
        self.reactor.callLater(0, self.hook)


def makeService(appliance):
    """
    Build the C{hosts} service; C{appliance.hosts} is its book from now on.
    """
    return HostsService(appliance)
