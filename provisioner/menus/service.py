# -*- test-case-name: tests.test_menus -*-
"""
The C{menus} service: loads the inventory (C{appliance.inventory}), renders
per-client boot menus (C{appliance.menus}) and registers them in
C{appliance.virtualFiles}, which TFTP and HTTP both serve:

  - iPXE: C{boot.ipxe} (the client found by its address) and
    C{menus/<mac>/boot.ipxe} (any separator; what C{unknown.j2} chains to);
    over HTTP also C{boot.ipxe?mac=...&arch=...}.
  - pxelinux: C{pxelinux.cfg/01-<mac>}, the hex-IP names
    (C{pxelinux.cfg/C0A80164} down to C{C}) and C{pxelinux.cfg/default},
    below any directory.
  - GRUB: C{grub.cfg-01-<mac>}, C{grub.cfg-<HEXIP>} and C{grub.cfg}, below any
    directory (e.g. C{grub/}).

The inventory file and the template directories are watched: a change
reloads the inventory (an invalid edit is logged and the last good one
kept) and drops every cached menu; so does a change of the image catalogue.
"""

import ipaddress
import os

from twisted.application import service
from twisted.logger import Logger

from provisioner.directory import normaliseMAC
from provisioner.images.watch import makeWatcher
from provisioner.menus.inventory import EMPTY, InventoryError, loadInventory
from provisioner.menus.render import ClientFacts, Renderer, archNumber, templateDirs

__all__ = ["MenuService", "makeService", "PATTERNS"]

_MAC = r"(?P<mac>[0-9a-fA-F]{2}(?:[:-][0-9a-fA-F]{2}){5})"
_HEX = r"(?P<hexip>[0-9A-Fa-f]{1,8})"
_DIR = r"(?:.*/)?"

# (loader, regular expression, what identifies the client)
PATTERNS = [
    ("ipxe", r"boot\.ipxe", "peer"),
    ("ipxe", r"(?i)" + _DIR + r"menus/" + _MAC + r"/boot\.ipxe", "mac"),
    ("pxelinux", r"(?i)" + _DIR + r"pxelinux\.cfg/01-" + _MAC, "mac"),
    ("pxelinux", _DIR + r"pxelinux\.cfg/" + _HEX, "hexip"),
    ("pxelinux", _DIR + r"pxelinux\.cfg/default", "peer"),
    ("grub", r"(?i)" + _DIR + r"grub\.cfg-01-" + _MAC, "mac"),
    ("grub", _DIR + r"grub\.cfg-" + _HEX, "hexip"),
    ("grub", _DIR + r"grub\.cfg", "peer"),
]


def _hexIP(ip):
    try:
        address = ipaddress.IPv4Address(ip)
    except (ValueError, TypeError):
        return None
    return "%08X" % (int(address),)


def _httpOptions(request):
    """
    The query parameters of an HTTP request (C{mac}, C{arch}, C{base_url}
    set by the web layer); TFTP options never name a client.
    """
    if getattr(request, "protocol", None) != "http":
        return {}
    return getattr(request, "options", None) or {}


class MenuService(service.Service):
    """
    Inventory, renderer and the menu virtual files.

    @ivar inventory: the current L{provisioner.menus.inventory.Inventory}
        (also C{appliance.inventory}).
    @ivar renderer: the L{Renderer}.
    @ivar inventoryError: the message of the last refused inventory, or
        L{None}.
    """

    log = Logger()

    def __init__(self, appliance, watch=True):
        self.appliance = appliance
        self.reactor = appliance.reactor
        self.watch = watch
        self.config = appliance.config
        self.inventory = EMPTY
        self.inventoryError = None
        self._unregister = []
        self._watchers = []
        self._pending = {}
        self._unsubscribe = None
        self._unfollowHosts = None
        menus = self.config["menus"]
        self.renderer = Renderer(templateDirs(menus["templates"]), lambda: self.inventory,
                                 catalog=lambda: self.appliance.catalog, server=self.server,
                                 baseVars=menus["vars"], cacheSize=menus["cache_size"],
                                 lifecycle=lambda: getattr(self.appliance, "hosts", None))
        self.loadInventory()
        appliance.menus = self

    # The inventory.

    def loadInventory(self):
        """
        Load the inventory file when the C{inventory} section is enabled.
        An invalid one is logged and the current one kept.

        @return: L{True} when a new inventory was taken.
        """
        section = self.config["inventory"]
        if not section["enabled"]:
            self._setInventory(EMPTY)
            return True
        try:
            inventory = loadInventory(section["file"])
        except InventoryError as e:
            self.inventoryError = str(e)
            self.log.error("inventory refused, keeping the last good one ({hosts} hosts): "
                           "{error}", hosts=len(self.inventory.hosts), error=str(e))
            return False
        self.inventoryError = None
        self._setInventory(inventory)
        self.log.info("inventory loaded from {file}: {hosts} hosts, {groups} groups, "
                      "{profiles} profiles", file=section["file"],
                      hosts=len(inventory.hosts), groups=len(inventory.groups),
                      profiles=len(inventory.profiles))
        return True

    def _setInventory(self, inventory):
        self.inventory = inventory
        self.appliance.inventory = inventory
        self.renderer.invalidate("inventory")

    # What templates see as `server`.

    def server(self, baseURL=None):
        config = self.config
        menus = config["menus"]
        http = baseURL or menus["http_url"]
        if not http:
            web = getattr(self.appliance, "http", None)
            http = getattr(web, "url", None)
        if not http and config["http"]["enabled"]:
            address = config["http"]["address"]
            port = config["http"]["port"]
            if address not in ("0.0.0.0", "::") and port:
                host = "[%s]" % (address,) if ":" in address else address
                http = "http://%s:%d" % (host, port)
        if http:
            http = http.rstrip("/")
        prefix = config["images"]["prefix"]
        if http:
            imagesURL = http + "/" + prefix if prefix else http
        else:
            imagesURL = None
        return {
            "http_url": http,
            "images_url": imagesURL,
            "images_base": imagesURL if imagesURL else prefix,
            "images_prefix": prefix,
            "tftp_server": menus["tftp_server"] or config["tftp"]["address"],
        }

    # Serving.

    def facts(self, request, mac=None, arch=None, ipxe=False):
        """
        Who is asking: the MAC in the path or query if any, else the client
        the request carries, else the one the directory has for the peer's
        address.
        """
        clients = self.appliance.clients
        options = _httpOptions(request)
        mac = mac or options.get("mac")
        if arch is None:
            arch = options.get("arch")
        peerIP = request.peer[0] if request.peer else None
        record = None
        if mac:
            mac = normaliseMAC(mac)
            record = clients.byMAC(mac)
        else:
            record = request.client
            if record is None and peerIP is not None:
                record = clients.byIP(peerIP)
        ip = (record.ip if record is not None and record.ip else None) or peerIP
        return ClientFacts.fromRecord(record, mac=mac, ip=ip, arch=archNumber(arch),
                                      ipxe=ipxe or None)

    def produce(self, loader, how, request, match):
        """
        The virtual-file producer: the rendered menu as bytes, or L{None}
        (not ours: fall through).
        """
        mac = None
        if how == "mac":
            try:
                mac = normaliseMAC(match.group("mac"))
            except ValueError:
                return None
        elif how == "hexip":
            # pxelinux/GRUB walk down the hex of their own address; answer
            # only for that address (another prefix is someone's static file).
            mine = _hexIP(request.peer[0]) if request.peer else None
            if mine is None or not mine.startswith(match.group("hexip").upper()):
                return None
        facts = self.facts(request, mac=mac, ipxe=(loader == "ipxe"))
        options = _httpOptions(request)
        text, template = self.renderer.render(loader, facts, baseURL=options.get("base_url"),
                                              path=request.path, protocol=request.protocol,
                                              peer=request.peer[0] if request.peer else None)
        self.log.debug("menu {path} for {client}: {template}", path=request.path,
                       client=facts.mac or facts.ip, template=template)
        return text.encode("utf-8")

    def registerFiles(self, virtualFiles):
        """
        Register the menu files of the enabled loaders.
        """
        self.unregisterFiles()
        menus = self.config["menus"]
        for loader, pattern, how in PATTERNS:
            if not menus[loader]:
                continue

            def producer(request, match, loader=loader, how=how):
                return self.produce(loader, how, request, match)
            exact = pattern == r"boot\.ipxe"
            self._unregister.append(virtualFiles.register(
                "boot.ipxe" if exact else pattern, producer, exact=exact))

    def unregisterFiles(self):
        for unregister in self._unregister:
            unregister()
        self._unregister = []

    def render(self, loader, mac=None, arch=None, ip=None, ipxe=None, baseURL=None):
        """
        Render one loader's menu for a client named by MAC (tools, API): a
        preview, which the host lifecycle does not take as a boot.
        """
        record = self.appliance.clients.byMAC(mac) if mac else None
        facts = ClientFacts.fromRecord(record, mac=mac, ip=ip, arch=archNumber(arch),
                                       ipxe=ipxe)
        return self.renderer.render(loader, facts, baseURL=baseURL, preview=True)

    def describe(self, mac=None, arch=None, ip=None, baseURL=None):
        """
        What a client would be served (JSON API).
        """
        record = self.appliance.clients.byMAC(mac) if mac else None
        facts = ClientFacts.fromRecord(record, mac=mac, ip=ip, arch=archNumber(arch))
        out = self.renderer.describe(facts, baseURL=baseURL)
        out["record"] = record.asDict() if record is not None else None
        return out

    # Watching.

    def _debounced(self, key, action, delay=0.2):
        call = self._pending.get(key)
        if call is not None and call.active():
            call.reset(delay)
            return
        self._pending[key] = self.reactor.callLater(delay, self._run, key, action)

    def _run(self, key, action):
        self._pending.pop(key, None)
        try:
            action()
        except Exception:
            self.log.failure("menus: {what} failed", what=key)

    def _startWatching(self):
        menus = self.config["menus"]
        section = self.config["inventory"]
        for directory in self.renderer.dirs:
            if not os.path.isdir(directory):
                self.log.warn("templates directory {dir} does not exist", dir=directory)
                continue
            self._watch(directory, lambda kind, rel: self._debounced(
                "templates", lambda: self.renderer.invalidate("templates")),
                menus["poll_interval"], recursive=True)
        if section["enabled"]:
            path = os.path.abspath(section["file"])
            parent, name = os.path.split(path)
            if os.path.isdir(parent):
                self._watch(parent, lambda kind, rel: self._debounced(
                    "inventory", self._inventoryChanged), section["poll_interval"],
                    recursive=False, accept=lambda rel: rel == name)
            else:
                self.log.warn("cannot watch the inventory: {dir} does not exist", dir=parent)
        catalog = self.appliance.catalog
        if catalog is not None:
            self._unsubscribe = catalog.subscribe(
                lambda c: self.renderer.invalidate("images"))

    def _watch(self, directory, callback, interval, recursive, accept=None):
        watcher = makeWatcher(self.reactor, directory, callback, interval=interval,
                              recursive=recursive, accept=accept)
        try:
            watcher.start()
        except Exception as e:
            self.log.warn("cannot watch {dir} with inotify ({error}); polling",
                          dir=directory, error=str(e))
            watcher = makeWatcher(self.reactor, directory, callback, mode="poll",
                                  interval=interval, recursive=recursive, accept=accept)
            watcher.start()
        self._watchers.append(watcher)

    def _inventoryChanged(self):
        path = self.config["inventory"]["file"]
        if not os.path.exists(path):
            self.log.warn("inventory {file} is gone; keeping the last good one", file=path)
            return
        self.loadInventory()

    def _stopWatching(self):
        for watcher in self._watchers:
            watcher.stop()
        self._watchers = []
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending = {}
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    # Life cycle.

    def startService(self):
        service.Service.startService(self)
        self._followHosts()
        self.registerFiles(self.appliance.virtualFiles)
        if self.watch:
            self._startWatching()
        self.log.info("menus: templates from {dirs}; serving {loaders}",
                      dirs=", ".join(self.renderer.dirs),
                      loaders=", ".join(name for name in ("ipxe", "pxelinux", "grub")
                                        if self.config["menus"][name]))

    def _followHosts(self):
        """
        When another appliance changes a host (the shared store), drop
        that host's cached menus (L{hostChanged}).
        """
        onChange = getattr(getattr(self.appliance, "hosts", None), "onChange", None)
        if onChange is not None and self._unfollowHosts is None:
            self._unfollowHosts = onChange(self.hostChanged)

    def hostChanged(self, name, macs):
        """
        Drop the cached menus of host C{name} (rendered for it, or for one
        of C{macs}).
        """
        macs = set(macs)
        cache = self.renderer._cache
        for key in [k for k in cache if (k[-1] is not None and k[-1][0] == name) or
                    k[1][0] in macs]:
            del cache[key]

    def stopService(self):
        service.Service.stopService(self)
        if self._unfollowHosts is not None:
            self._unfollowHosts()
            self._unfollowHosts = None
        self._stopWatching()
        self.unregisterFiles()

    def reconfigure(self, config):
        """
        SIGHUP: take the new C{menus} and C{inventory} sections, reload the
        inventory (an invalid one is refused, the last good kept) and drop
        every cached menu.
        """
        self.config = config
        menus = config["menus"]
        self.renderer.baseVars = dict(menus["vars"])
        self.renderer.cacheSize = menus["cache_size"]
        dirs = templateDirs(menus["templates"])
        if dirs != self.renderer.dirs:
            self.renderer.setDirs(dirs)
        self.loadInventory()
        self.renderer.invalidate("reload")
        if self.running:
            self.registerFiles(self.appliance.virtualFiles)
            if self.watch:
                self._stopWatching()
                self._startWatching()


def makeService(appliance):
    """
    Build the C{menus} service: the inventory is loaded now, so
    C{appliance.inventory} and C{appliance.menus} are set for the services
    built after it.
    """
    return MenuService(appliance)
