# -*- test-case-name: tests.test_tap -*-
"""
The state the subsystems share, built once per process and handed to each
service's factory: the reactor, the configuration, the client directory and
the virtual files. Services find each other's public objects here (the image
catalogue, the inventory) instead of importing each other.
"""

from provisioner.directory import ClientDirectory
from provisioner.events import EventStream, applianceIdentify
from provisioner.files import VirtualFiles

__all__ = ["Appliance"]


class Appliance:
    """
    @ivar reactor: the reactor every service uses (injected, never imported
        at module level).
    @ivar config: the current configuration (a nested C{dict}); replaced on
        reload.
    @ivar clients: the L{provisioner.directory.ClientDirectory}.
    @ivar virtualFiles: the L{provisioner.files.VirtualFiles} registry served
        by TFTP and HTTP.
    @ivar catalog: the image catalogue, set by the images service (or L{None}).
    @ivar inventory: the inventory, set by the menus service (or L{None}).
    @ivar menus: the menu renderer, set by the menus service (or L{None}).
    @ivar tftp: the TFTP service, set by it (C{addResolver(resolver, index)}
        inserts a resolver into its chain), or L{None}.
    @ivar http: the HTTP service, set by it (C{.url} is its base URL), or
        L{None}.
    @ivar hosts: the host lifecycle (L{provisioner.hosts.book.HostBook}),
        set by the hosts service, or L{None}.
    @ivar dhcp: the DHCP service, set by it (C{.responder}: its decisions
        and counters, C{.leases}: the lease store), or L{None}; read by the
        metrics.
    @ivar imagecast: the imagecast service, set by it (C{.controller}: its
        sessions and receivers), or L{None}; read by the metrics.
    @ivar imaging: the imagecast service's
        L{provisioner.interfaces.IImaging} (receivers' secrets, the imaging
        profiles' sessions, each host's receiver), set by it while it runs,
        or L{None}; read by the host lifecycle (orders) and the hosts API.
    @ivar reloads: configuration reloads by result (C{applied},
        C{refused}, C{failed}: applied, but a service could not take it),
        counted by tap; read by the metrics.
    @ivar lastReload: the last reload (C{time}, C{result}, C{error}), or
        L{None}; read by C{/healthz}.
    @ivar events: the L{provisioner.events.EventStream} every subsystem
        publishes to (L{provisioner.events.IEventSink}).
    """

    def __init__(self, config, reactor):
        self.config = config
        self.reactor = reactor
        self.clients = ClientDirectory()
        self.virtualFiles = VirtualFiles()
        self.catalog = None
        self.inventory = None
        self.menus = None
        self.tftp = None
        self.http = None
        self.hosts = None
        self.dhcp = None
        self.imagecast = None
        self.imaging = None
        self.reloads = {"applied": 0, "refused": 0, "failed": 0}
        self.lastReload = None
        self.events = EventStream(reactor, identify=applianceIdentify(self))
