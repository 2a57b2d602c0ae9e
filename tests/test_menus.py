# -*- test-case-name: tests.test_menus -*-
"""
Tests for L{provisioner.menus.render} and L{provisioner.menus.service}:
template lookup, the fallback menu, caches, the virtual files, reloads, and
every shipped template rendered for a BIOS, a UEFI and an iPXE client
against golden outputs in C{tests/data/golden/}.

Set C{PROVISIONER_REGOLD=1} to rewrite the golden files after a deliberate
template change (and review the diff).
"""

import os

from twisted.internet import defer, task
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from provisioner.appliance import Appliance
from provisioner.config import loadConfig
from provisioner.files import FileRequest
from provisioner.menus.inventory import EMPTY, parseInventory
from provisioner.menus.render import (
    FALLBACK, ClientFacts, Renderer, archName, shippedTemplatesDir, templateDirs)
from provisioner.menus.service import MenuService
from tests.fakes import INVENTORY

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "data", "golden")

# The three clients of the golden files.
CLIENTS = {
    "bios": dict(mac="52:54:00:00:00:01", ip="198.18.0.11", arch=0, ipxe=False),
    "uefi": dict(mac="52:54:00:00:00:01", ip="198.18.0.11", arch=7, ipxe=False),
    "ipxe": dict(mac="52:54:00:00:00:02", ip="198.18.0.12", arch=7, ipxe=True),
}


class FakeCatalog:
    """
    Stands in for L{provisioner.images.catalog.Catalog}.
    """

    generation = 1

    def subscribe(self, listener):
        """
        Changes are never announced: return the no-op that unsubscribes.
        """
        return lambda: None

    def asList(self):
        return [
            {"name": "debian/linux", "size": 8000000, "sha256": "a" * 64, "mtime": 1.0,
             "kind": "kernel"},
            {"name": "live.iso", "size": 700000000, "sha256": "b" * 64, "mtime": 2.0,
             "kind": "iso"},
            {"name": "tools.iso", "size": 1000, "sha256": "c" * 64, "mtime": 3.0,
             "kind": "iso"},
        ]


def _server(baseURL):
    http = baseURL or "http://198.18.0.1:8080"
    return {"http_url": http, "images_url": http + "/images",
            "images_base": http + "/images", "images_prefix": "images",
            "tftp_server": "198.18.0.1"}


def _renderer(dirs=None, inventory=INVENTORY, catalog=FakeCatalog):
    parsed = parseInventory(inventory) if inventory else EMPTY
    return Renderer(dirs or templateDirs(), lambda: parsed,
                    catalog=(lambda: catalog()) if catalog else (lambda: None),
                    server=_server, baseVars={"site": "lab"})


class _Errors:
    """
    Collect log events at error level while a test runs.
    """

    def __init__(self, case):
        self.events = []
        globalLogPublisher.addObserver(self)
        case.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event):
        if event.get("log_level") == LogLevel.error:
            from twisted.logger import formatEvent
            self.events.append(formatEvent(event))


class GoldenTests(SynchronousTestCase):
    """
    Every shipped template, rendered for a BIOS, a UEFI and an iPXE client,
    matches its golden output.
    """

    def test_everyShippedTemplate(self):
        """
        If a shipped template is rendered for each client kind, the output
        is byte for byte the golden file (and never empty).
        """
        renderer = _renderer()
        shipped = shippedTemplatesDir()
        regold = os.environ.get("PROVISIONER_REGOLD") == "1"
        checked = 0
        for loader in ("ipxe", "pxelinux", "grub"):
            names = sorted(n for n in os.listdir(os.path.join(shipped, loader))
                           if n.endswith(".j2"))
            self.assertIn("default.j2", names, loader)
            for name in names:
                template = renderer.env.get_template("%s/%s" % (loader, name))
                for kind, fields in sorted(CLIENTS.items()):
                    facts = ClientFacts(**fields)
                    context = renderer.context(loader, facts, renderer.resolution(facts),
                                               path="golden", protocol="tftp")
                    text = template.render(context)
                    self.assertTrue(text.strip(), (loader, name, kind))
                    golden = os.path.join(GOLDEN, "%s-%s-%s.txt" % (
                        loader, name[:-len(".j2")], kind))
                    if regold:
                        os.makedirs(GOLDEN, exist_ok=True)
                        with open(golden, "w") as f:
                            f.write(text)
                    with open(golden) as f:
                        self.assertEqual(text, f.read(), golden)
                    checked += 1
        self.assertGreaterEqual(checked, 12)


class RendererTests(SynchronousTestCase):
    """
    Tests for L{Renderer}.
    """

    def setUp(self):
        self.operator = self.mktemp()
        for loader in ("ipxe", "pxelinux", "grub"):
            os.makedirs(os.path.join(self.operator, loader))
        self.renderer = _renderer([self.operator] + templateDirs())
        self.errors = _Errors(self)

    def write(self, name, text):
        with open(os.path.join(self.operator, name), "w") as f:
            f.write(text)
        self.renderer.invalidate("test")

    def test_archNames(self):
        """
        Option 93 numbers and common names map to template names; 7 and 9
        are both x64 UEFI.
        """
        self.assertEqual(archName(0), "bios")
        self.assertEqual(archName(7), "efi-x64")
        self.assertEqual(archName(9), "efi-x64")
        self.assertEqual(archName("x64"), "efi-x64")
        self.assertEqual(archName("11"), "efi-arm64")
        self.assertIsNone(archName(None))
        self.assertIsNone(archName("z80"))

    def test_candidatesSpecificToGeneric(self):
        """
        Templates are looked up host, MAC, group, profile, architecture,
        firmware family, then default.
        """
        facts = ClientFacts(mac="52:54:00:00:00:01", arch=7)
        names = self.renderer.candidates("ipxe", facts, self.renderer.resolution(facts))
        self.assertEqual(names, [
            "ipxe/host-alpha.j2", "ipxe/mac-52-54-00-00-00-01.j2", "ipxe/group-racks.j2",
            "ipxe/profile-installer.j2", "ipxe/arch-efi-x64.j2", "ipxe/arch-efi.j2",
            "ipxe/default.j2"])

    def test_unknownClientCandidates(self):
        """
        If the MAC is unknown, C{unknown.j2} comes before C{default.j2}.
        """
        facts = ClientFacts(ip="198.18.0.9")
        names = self.renderer.candidates("ipxe", facts, self.renderer.resolution(facts))
        self.assertEqual(names, ["ipxe/profile-rescue.j2", "ipxe/unknown.j2",
                                 "ipxe/default.j2"])

    def test_operatorTemplateWins(self):
        """
        If the operator's directory has a more specific template, it is
        used; others still get the shipped default.
        """
        self.write("ipxe/host-alpha.j2", "#!ipxe\necho alpha {{ vars.rack }} {{ vars.site }}\n")
        text, name = self.renderer.render("ipxe", ClientFacts(mac="52:54:00:00:00:01"))
        self.assertEqual((text, name), ("#!ipxe\necho alpha 7 lab\n", "ipxe/host-alpha.j2"))
        text, name = self.renderer.render("ipxe", ClientFacts(mac="52:54:00:00:00:02"))
        self.assertEqual(name, "ipxe/default.j2")

    def test_undefinedVariableFallback(self):
        """
        If a template uses an undefined variable, the fallback menu is
        served and one error line names the template, the line and the
        client.
        """
        self.write("ipxe/default.j2", "#!ipxe\n\necho {{ nosuchthing }}\n")
        text, name = self.renderer.render("ipxe", ClientFacts(mac="52:54:00:00:00:09"))
        self.assertEqual((text, name), (FALLBACK["ipxe"], "fallback"))
        self.assertEqual(len(self.errors.events), 1)
        self.assertIn("ipxe/default.j2 line 3", self.errors.events[0])
        self.assertIn("nosuchthing", self.errors.events[0])
        self.assertIn("52:54:00:00:00:09", self.errors.events[0])

    def test_commandLineVariables(self):
        """
        A profile's kernel command line may use template variables: each
        host's menu carries its own values (name, merged vars), in every
        loader's shipped template.
        """
        inventory = INVENTORY.replace(
            'cmdline: auto=true priority=critical',
            'cmdline: "auto=true hostname={{ host.hostname }} rack={{ vars.rack }}"')
        renderer = _renderer([self.operator] + templateDirs(), inventory=inventory)
        for loader in ("ipxe", "pxelinux", "grub"):
            text, _ = renderer.render(loader, ClientFacts(mac="52:54:00:00:00:01", arch=0))
            self.assertIn("auto=true hostname=alpha rack=7", text, loader)
            self.assertNotIn("{{", text, loader)

    def test_commandLineVariableUndefined(self):
        """
        A command line naming an undefined variable is an error naming the
        profile and entry, and the fallback menu is served.
        """
        inventory = INVENTORY.replace('cmdline: auto=true priority=critical',
                                      'cmdline: "auto=true x={{ vars.nosuch }}"')
        renderer = _renderer([self.operator] + templateDirs(), inventory=inventory)
        text, name = renderer.render("pxelinux", ClientFacts(mac="52:54:00:00:00:01", arch=0))
        self.assertEqual((text, name), (FALLBACK["pxelinux"], "fallback"))
        self.assertIn("profile installer entry install: cmdline:", self.errors.events[0])
        self.assertIn("nosuch", self.errors.events[0])

    def test_syntaxErrorFallback(self):
        """
        If a template does not compile, the fallback menu is served and the
        error names the line.
        """
        self.write("grub/default.j2", "set x=1\n{% if %}\n")
        text, name = self.renderer.render("grub", ClientFacts(mac="52:54:00:00:00:09"))
        self.assertEqual(text, FALLBACK["grub"])
        self.assertIn("grub/default.j2 line 2: syntax error", self.errors.events[0])

    def test_sandbox(self):
        """
        If a template reaches for Python internals, the sandbox refuses and
        the fallback menu is served.
        """
        self.write("pxelinux/default.j2",
                   "{{ ''.__class__.__mro__[1].__subclasses__() }}\n")
        text, name = self.renderer.render("pxelinux", ClientFacts(mac="52:54:00:00:00:09"))
        self.assertEqual(text, FALLBACK["pxelinux"])
        self.assertIn("SecurityError", self.errors.events[0])

    def test_emptyIsAnError(self):
        """
        If a template renders only whitespace, the fallback menu is served.
        """
        self.write("ipxe/default.j2", "{# nothing #}\n\n")
        text, name = self.renderer.render("ipxe", ClientFacts(mac="52:54:00:00:00:09"))
        self.assertEqual(text, FALLBACK["ipxe"])

    def test_noTemplateAtAll(self):
        """
        If no template exists for a loader, the fallback menu is served.
        """
        renderer = _renderer([self.operator])
        text, name = renderer.render("grub", ClientFacts(mac="52:54:00:00:00:09"))
        self.assertEqual((text, name), (FALLBACK["grub"], "fallback"))
        self.assertIn("no grub template", self.errors.events[0])

    def test_cacheAndInvalidate(self):
        """
        If the same client asks again, the cached menu is served without
        rendering; after L{Renderer.invalidate} it is rendered again.
        """
        facts = ClientFacts(mac="52:54:00:00:00:01", arch=0)
        first = self.renderer.render("pxelinux", facts)
        renders = self.renderer.renders
        self.assertEqual(self.renderer.render("pxelinux", facts), first)
        self.assertEqual(self.renderer.renders, renders)
        self.write("pxelinux/default.j2", "DEFAULT changed\n")
        self.assertEqual(self.renderer.render("pxelinux", facts)[0], "DEFAULT changed\n")

    def test_cacheBounded(self):
        """
        If more clients than C{cacheSize} ask, the oldest menus are dropped.
        """
        self.renderer.cacheSize = 3
        for i in range(10):
            self.renderer.render("ipxe", ClientFacts(mac="52:54:00:00:01:%02x" % (i,)))
        self.assertEqual(len(self.renderer._cache), 3)

    def test_catalogueVisible(self):
        """
        If there is no profile, the default menus list the catalogue's
        ISOs.
        """
        renderer = _renderer(inventory=None)
        text, name = renderer.render("ipxe", ClientFacts(mac="52:54:00:00:00:09", arch=7))
        self.assertIn("sanboot http://198.18.0.1:8080/images/tools.iso", text)
        self.assertIn("item iso1 live.iso", text)

    def test_describe(self):
        """
        L{Renderer.describe} tells the host, profile and, per loader, the
        template chosen and the menu.
        """
        out = self.renderer.describe(ClientFacts(mac="52:54:00:00:00:02", arch=0))
        self.assertEqual(out["inventory"]["host"]["name"], "beta")
        self.assertEqual(out["inventory"]["profile"]["name"], "rescue")
        self.assertEqual(out["menus"]["grub"]["template"], "grub/default.j2")
        self.assertIn("rescue/vmlinuz", out["menus"]["pxelinux"]["text"])


class ServiceTests(SynchronousTestCase):
    """
    Tests for L{MenuService}: the virtual files, client identification and
    reloading the inventory.
    """

    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.inventoryPath = os.path.join(self.dir, "inventory.yaml")
        with open(self.inventoryPath, "w") as f:
            f.write(INVENTORY)
        self.config = loadConfig(overrides=[
            ("menus.enabled", True), ("inventory.enabled", True),
            ("inventory.file", self.inventoryPath),
            ("menus.http_url", "http://198.18.0.1:8080")])
        self.appliance = Appliance(self.config, task.Clock())
        self.service = MenuService(self.appliance, watch=False)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.errors = _Errors(self)

    def get(self, path, peer="198.18.0.50", client=None, options=None, protocol="tftp"):
        source = self.appliance.virtualFiles.resolve(
            FileRequest(path, (peer, 1234), client=client, options=options,
                        protocol=protocol))
        if source is None:
            return None
        return source.read(0, 1 << 20).decode("utf-8")

    def test_published(self):
        """
        The service publishes the inventory and itself on the appliance.
        """
        self.assertIs(self.appliance.menus, self.service)
        self.assertEqual(sorted(self.appliance.inventory.hosts), ["alpha", "beta"])

    def test_bootIPXEByPeer(self):
        """
        If C{boot.ipxe} is asked by an address DHCP knows, that client's
        menu is served; an unknown address gets the script that asks again
        with the MAC.
        """
        self.appliance.clients.update(mac="52:54:00:00:00:01", ip="198.18.0.11", arch=7)
        self.assertIn("(alpha)", self.get("boot.ipxe", "198.18.0.11"))
        unknown = self.get("boot.ipxe", "198.18.0.99")
        self.assertIn("chain http://198.18.0.1:8080/menus/${mac:hexhyp}/boot.ipxe", unknown)

    def test_perMACPaths(self):
        """
        The MAC in the path picks the client, with any separator and case.
        """
        self.assertIn("(beta)", self.get("menus/52-54-00-00-00-02/boot.ipxe"))
        self.assertIn("(beta)", self.get("menus/52:54:00:00:00:02/boot.ipxe"))
        self.assertIn("beta", self.get("pxelinux.cfg/01-52-54-00-00-00-02"))
        self.assertIn("beta", self.get("bios/pxelinux.cfg/01-52-54-00-00-00-02"))
        self.assertIn("beta", self.get("grub/grub.cfg-01-52-54-00-00-00-02"))
        self.assertIn("beta", self.get("GRUB.CFG-01-52-54-00-00-00-02".lower()))

    def test_queryMAC(self):
        """
        If an HTTP request carries C{?mac=}, it picks the client; a TFTP
        option of that name does not.
        """
        self.assertIn("(beta)", self.get("boot.ipxe", options={"mac": "52:54:00:00:00:02"},
                                         protocol="http"))
        self.assertNotIn("(beta)", self.get("boot.ipxe", options={"mac": "52:54:00:00:00:02"}))

    def test_hexIP(self):
        """
        The hex-IP names are answered for the asking address's own prefixes
        only; C{default} and C{grub.cfg} are answered for the peer.
        """
        self.appliance.clients.update(mac="52:54:00:00:00:02", ip="198.18.0.12")
        # 198.18.0.12 = C612000C
        self.assertIn("beta", self.get("pxelinux.cfg/C612000C", "198.18.0.12"))
        self.assertIn("beta", self.get("pxelinux.cfg/C61", "198.18.0.12"))
        self.assertIsNone(self.get("pxelinux.cfg/0A000001", "198.18.0.12"))
        self.assertIn("beta", self.get("pxelinux.cfg/default", "198.18.0.12"))
        self.assertIn("beta", self.get("grub/grub.cfg", "198.18.0.12"))
        self.assertIn("beta", self.get("grub/grub.cfg-C612000C", "198.18.0.12"))

    def test_requestClient(self):
        """
        If the request carries a client record, it is used.
        """
        record = self.appliance.clients.update(mac="52:54:00:00:00:01", ip="198.18.0.77")
        self.assertIn("alpha", self.get("pxelinux.cfg/default", "10.0.0.1", client=record))

    def test_notOurs(self):
        """
        Other paths are not answered.
        """
        self.assertIsNone(self.get("pxelinux.cfg/11111111-2222-3333-4444-555555555555"))
        self.assertIsNone(self.get("undionly.kpxe"))

    def test_disabledLoader(self):
        """
        If a loader is switched off, its files are not registered.
        """
        config = loadConfig(overrides=[
            ("menus.enabled", True), ("menus.grub", False), ("inventory.enabled", True),
            ("inventory.file", self.inventoryPath)])
        self.service.reconfigure(config)
        self.assertIsNone(self.get("grub/grub.cfg"))
        self.assertIsNotNone(self.get("pxelinux.cfg/default"))

    def test_invalidEditKeepsLastGood(self):
        """
        If the inventory file becomes invalid, the reload is refused with
        an error naming the key and line, and the last good inventory stays.
        """
        before = self.get("menus/52-54-00-00-00-02/boot.ipxe")
        with open(self.inventoryPath, "a") as f:
            f.write("  gamma:\n    mac: not-a-mac\n")
        self.assertFalse(self.service.loadInventory())
        self.assertIn("inventory.yaml:", self.errors.events[-1])
        self.assertIn("hosts.gamma.mac", self.errors.events[-1])
        self.assertIn("gamma", self.service.inventoryError)
        self.assertEqual(self.get("menus/52-54-00-00-00-02/boot.ipxe"), before)
        self.assertEqual(sorted(self.appliance.inventory.hosts), ["alpha", "beta"])

    def test_validEditApplies(self):
        """
        If the inventory changes validly, the next request sees it (caches
        dropped).
        """
        self.assertIn("(beta)", self.get("menus/52-54-00-00-00-02/boot.ipxe"))
        with open(self.inventoryPath, "w") as f:
            f.write(INVENTORY.replace("  beta:", "  gamma:"))
        self.service.reconfigure(self.config)
        self.assertIn("(gamma)", self.get("menus/52-54-00-00-00-02/boot.ipxe"))

    def test_catalogChangeInvalidates(self):
        """
        If the image catalogue changes, cached menus are dropped.
        """
        listeners = []

        class Catalog(FakeCatalog):
            def subscribe(self, listener):
                listeners.append(listener)
                return lambda: listeners.remove(listener)
        service = MenuService(Appliance(self.config, task.Clock()), watch=True)
        service.appliance.catalog = Catalog()
        service.startService()
        self.addCleanup(service.stopService)
        generation = service.renderer.generation
        for listener in listeners:
            listener(service.appliance.catalog)
        self.assertGreater(service.renderer.generation, generation)

    def test_watchedInventoryReload(self):
        """
        If the inventory file changes and the watcher fires (several times),
        it is reloaded once after a short delay.
        """
        clock = task.Clock()
        config = loadConfig(overrides=[
            ("menus.enabled", True), ("inventory.enabled", True),
            ("inventory.file", self.inventoryPath), ("inventory.poll_interval", 1.0)])
        appliance = Appliance(config, clock)
        service = MenuService(appliance, watch=False)
        self.addCleanup(service._stopWatching)
        with open(self.inventoryPath, "w") as f:
            f.write(INVENTORY.replace("  beta:", "  delta:"))
        self.assertIn("beta", appliance.inventory.hosts)
        # What the watcher's callback does: several events, one reload.
        service._debounced("inventory", service._inventoryChanged)
        service._debounced("inventory", service._inventoryChanged)
        clock.advance(1)
        self.assertIn("delta", appliance.inventory.hosts)


class WatchingTests(TestCase):
    """
    The menus service with its real watchers (inotify or polling) on the
    reactor: editing files on disk takes effect without a restart.
    """

    def setUp(self):
        from twisted.internet import reactor
        self.reactor = reactor
        self.dir = os.path.abspath(self.mktemp())
        self.templates = os.path.join(self.dir, "templates")
        os.makedirs(os.path.join(self.templates, "ipxe"))
        self.inventoryPath = os.path.join(self.dir, "inventory.yaml")
        with open(self.inventoryPath, "w") as f:
            f.write(INVENTORY)
        config = loadConfig(overrides=[
            ("menus.enabled", True), ("menus.templates", self.templates),
            ("menus.poll_interval", 0.1), ("inventory.enabled", True),
            ("inventory.file", self.inventoryPath), ("inventory.poll_interval", 0.1)])
        self.appliance = Appliance(config, reactor)
        self.service = MenuService(self.appliance)
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def render(self):
        return self.service.render("ipxe", mac="52:54:00:00:00:02")[0]

    def waitUntil(self, predicate, timeout=10.0):
        """
        A Deferred firing with L{True} once C{predicate()} holds (checked
        every 50 ms), or L{False} after C{timeout} seconds.
        """
        from twisted.internet.task import deferLater
        deadline = self.reactor.seconds() + timeout

        def check(_=None):
            if predicate():
                return True
            if self.reactor.seconds() > deadline:
                return False
            return deferLater(self.reactor, 0.05, lambda: None).addCallback(check)
        return check()

    @defer.inlineCallbacks
    def test_newTemplateTakesEffect(self):
        """
        If an operator adds a more specific template, the next render uses
        it (caches dropped on the directory's change).
        """
        self.assertIn("(beta)", self.render())
        with open(os.path.join(self.templates, "ipxe", "host-beta.j2"), "w") as f:
            f.write("#!ipxe\necho custom {{ host.name }}\n")
        ok = yield self.waitUntil(lambda: self.render() == "#!ipxe\necho custom beta\n")
        self.assertTrue(ok, self.render())

    @defer.inlineCallbacks
    def test_inventoryEditReloaded(self):
        """
        If the inventory file is replaced by an editor (write, rename), it
        is reloaded; an invalid edit after that is refused and the good one
        kept.
        """
        with open(self.inventoryPath + ".tmp", "w") as f:
            f.write(INVENTORY.replace("  beta:", "  gamma:"))
        os.rename(self.inventoryPath + ".tmp", self.inventoryPath)
        ok = yield self.waitUntil(lambda: "gamma" in self.appliance.inventory.hosts)
        self.assertTrue(ok)
        self.assertIn("(gamma)", self.render())
        with open(self.inventoryPath, "a") as f:
            f.write("  broken: [\n")
        ok = yield self.waitUntil(lambda: self.service.inventoryError is not None)
        self.assertTrue(ok)
        self.assertIn("inventory.yaml", self.service.inventoryError)
        self.assertIn("(gamma)", self.render())
        self.flushLoggedErrors()
