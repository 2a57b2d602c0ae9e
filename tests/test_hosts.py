# -*- test-case-name: tests.test_hosts -*-
"""
Tests for L{provisioner.hosts}: the lifecycle's transition table, the
C{hosts} section, and the host book through the real menus service on a
L{task.Clock}: boot once, tokens and callbacks, the deploy signal (the
deploy entry's kernel fetched over TFTP or HTTP), discovery and adoption,
bounds and reloads.
"""

import os

from twisted.internet import defer, task
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from provisioner import tap
from provisioner.appliance import Appliance
from provisioner.config import ConfigError, loadConfig
from provisioner.files import FileRequest
from provisioner.hosts import lifecycle
from provisioner.hosts.tokens import PREVIEW_TOKEN, TOKENS_PER_HOST
from provisioner.hosts.errors import BadRequest, Conflict, NotFound, NotReady, Refused
from provisioner.hosts.lifecycle import (DEPLOYED, DEPLOYING, DISCOVERED, FAILED, READY,
                                         STATES, TRANSITIONS, TransitionRefused)
from provisioner.hosts.service import HostsService
from provisioner.menus.service import MenuService
from provisioner.tftp.transfer import SessionStats
from provisioner.web.files import HTTPFetch
from tests.fakes import INVENTORY

ALPHA = "52:54:00:00:00:01"
ALPHA_IP = "198.18.0.11"
STRANGER = "52:54:00:00:00:09"
STRANGER_IP = "198.18.0.19"


class LifecycleTableTests(SynchronousTestCase):
    """
    Tests for L{provisioner.hosts.lifecycle}.
    """

    EXPECTED = {
        (None, DISCOVERED), (None, READY), (DISCOVERED, READY), (READY, DEPLOYING),
        (FAILED, DEPLOYING), (DEPLOYING, DEPLOYED), (DEPLOYING, FAILED), (DEPLOYED, READY),
        (FAILED, READY), (DEPLOYING, READY),
    }

    def test_table(self):
        """
        The table allows exactly the lifecycle's transitions.
        """
        self.assertEqual(set(TRANSITIONS), self.EXPECTED)

    def test_allowed(self):
        """
        If a transition is in the table, it makes an event with the time,
        the host, from, to and why.
        """
        for source, target in sorted(TRANSITIONS, key=str):
            event = lifecycle.transition("web01", source, target, "because", 12.5)
            self.assertEqual((event.key, event.time, event.source, event.target, event.why),
                             ("web01", 12.5, source, target, "because"))

    def test_refused(self):
        """
        If a transition is not in the table (a ready host deployed without
        deploying, a deployed host deploying without a redeploy, a new
        record in any state but discovered or ready, an unknown state), it
        is refused.
        """
        for source in (None,) + STATES:
            for target in STATES + ("bogus",):
                if (source, target) in TRANSITIONS:
                    continue
                self.assertRaises(TransitionRefused, lifecycle.transition, "h", source, target,
                                  "why", 1.0)
        e = self.assertRaises(TransitionRefused, lifecycle.transition, "h", READY, DEPLOYED,
                              "why", 1.0)
        self.assertEqual(str(e), "no transition from ready to deployed")
        for source, target in [(DEPLOYED, DEPLOYING), (DISCOVERED, DEPLOYING),
                               (None, DEPLOYED), (DEPLOYED, FAILED), (READY, READY)]:
            self.assertFalse(lifecycle.allowed(source, target))

    def test_progress(self):
        """
        A progress report is an event without a change of state, taken only
        while deploying.
        """
        event = lifecycle.progress("h", DEPLOYING, "50%", 3.0)
        self.assertEqual((event.source, event.target, event.why), (DEPLOYING, DEPLOYING, "50%"))
        for state in (READY, DEPLOYED, FAILED, DISCOVERED):
            self.assertRaises(TransitionRefused, lifecycle.progress, "h", state, "x", 3.0)


class SchemaTests(SynchronousTestCase):
    """
    The C{hosts} section and its place among the services.
    """

    def test_defaults(self):
        """
        The section is off by default, keeps its store in C{state}, and lets
        only loopback change lifecycles.
        """
        section = loadConfig()["hosts"]
        self.assertEqual((section["enabled"], section["store"], section["state_directory"],
                          section["events_per_host"], section["token_ttl"]),
                         (False, "sqlite", "state", 100, 21600))
        self.assertEqual(section["admin_networks"], ["127.0.0.0/8", "::1/128"])

    def test_badValues(self):
        """
        Bad values are errors naming the key.
        """
        for key, value in [("hosts.events_per_host", 0), ("hosts.store", "postgres"),
                           ("hosts.token_ttl", 5), ("hosts.admin_networks", ["nonsense"])]:
            e = self.assertRaises(ConfigError, loadConfig, overrides=[(key, value)])
            self.assertTrue(e.key.startswith(key), (key, e.key))

    def test_startOrder(self):
        """
        The hosts service starts before menus and dhcp, which use it.
        """
        names = [name for name, _, _ in tap.SUBSYSTEMS]
        self.assertLess(names.index("hosts"), names.index("menus"))
        self.assertLess(names.index("hosts"), names.index("dhcp"))

    def test_namedService(self):
        """
        With C{hosts.enabled} the appliance has a C{hosts} service and
        C{appliance.hosts} is its book.
        """
        state = os.path.abspath(self.mktemp())
        config = loadConfig(overrides=[("hosts.enabled", True),
                                       ("hosts.state_directory", state),
                                       ("tftp.enabled", False)])
        appliance = tap.ProvisionerService(config, reactor=task.Clock())
        hosts = appliance.getServiceNamed("hosts")
        self.assertIs(appliance.appliance.hosts, hosts.book)


class ReloadTests(SynchronousTestCase):
    """
    The hosts section switched on and off by a reload (SIGHUP).
    """

    def test_switchedOnAndOff(self):
        """
        If a reload enables C{hosts}, the service starts and publishes its
        book; if a later one disables it, the service stops and the
        appliance has no lifecycle.
        """
        path = self.mktemp()
        state = os.path.abspath(self.mktemp())

        def write(enabled):
            with open(path, "w") as f:
                f.write("tftp: {enabled: false}\nhosts: {enabled: %s, state_directory: %s}\n"
                        % ("true" if enabled else "false", state))
        write(False)
        service = tap.ProvisionerService(loadConfig(path), path, reactor=task.Clock())
        service.startService()
        self.assertIsNone(service.appliance.hosts)
        write(True)
        self.assertTrue(service.reload())
        self.assertTrue(service.appliance.hosts.loaded)
        write(False)
        self.assertTrue(service.reload())
        self.assertIsNone(service.appliance.hosts)
        self.successResultOf(service.stopService())


class FakeTFTP:
    """
    The stats-callback hook of the TFTP service.
    """

    def __init__(self):
        self.callbacks = []

    def addStatsCallback(self, callback):
        self.callbacks.append(callback)
        return lambda: self.callbacks.remove(callback)

    def ended(self, peer, path, outcome="complete", direction="read"):
        stats = SessionStats((peer, 2000), path, direction)
        stats.outcome = outcome
        for callback in list(self.callbacks):
            callback(stats)


class FakeHTTP:
    """
    The fetch-callback hook of the HTTP service.
    """

    def __init__(self):
        self.callbacks = []

    def addFetchCallback(self, callback):
        self.callbacks.append(callback)
        return lambda: self.callbacks.remove(callback)

    def served(self, peer, path, code=200):
        for callback in list(self.callbacks):
            callback(HTTPFetch((peer, 40000), path, code, 100))


class _Warnings:
    """
    Log events at warn level and above while a test runs.
    """

    def __init__(self, case):
        self.events = []
        globalLogPublisher.addObserver(self.observe)
        case.addCleanup(globalLogPublisher.removeObserver, self.observe)

    def observe(self, event):
        if event.get("log_level") in (LogLevel.warn, LogLevel.error, LogLevel.critical):
            self.events.append(event)


class BookTestCase(SynchronousTestCase):
    """
    The hosts and menus services on a clock, with fake TFTP and HTTP hooks.
    """

    overrides = ()

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.inventoryPath = os.path.join(self.dir, "inventory.yaml")
        self.writeInventory(INVENTORY)
        self.clock = task.Clock()
        self.clock.advance(1000000)
        self.config = loadConfig(overrides=[
            ("menus.enabled", True), ("inventory.enabled", True),
            ("inventory.file", self.inventoryPath),
            ("menus.http_url", "http://198.18.0.1:8080"), ("hosts.enabled", True),
            ("hosts.state_directory", os.path.join(self.dir, "state"))] + list(self.overrides))
        self.appliance = Appliance(self.config, self.clock)
        self.tftp = self.appliance.tftp = FakeTFTP()
        self.http = self.appliance.http = FakeHTTP()
        self.hosts = HostsService(self.appliance)
        self.menus = MenuService(self.appliance, watch=False)
        self.hosts.startService()
        self.menus.startService()
        self.addCleanup(self.stop)
        self.book = self.appliance.hosts
        self.appliance.clients.update(mac=ALPHA, ip=ALPHA_IP, arch=0)
        self.appliance.clients.update(mac=STRANGER, ip=STRANGER_IP, arch=7,
                                      vendor_class="PXEClient:Arch:00007:UNDI:003016",
                                      uuid="8a1c0bd4-6e0f-4d0e-9d3a-0123456789ab")

    def stop(self):
        self.menus.stopService()
        self.successResultOf(self.hosts.stopService())

    def writeInventory(self, text):
        with open(self.inventoryPath, "w") as f:
            f.write(text)

    def get(self, path, peer=ALPHA_IP, protocol="tftp"):
        source = self.appliance.virtualFiles.resolve(
            FileRequest(path, (peer, 1234), protocol=protocol))
        return source.read(0, 1 << 20).decode("utf-8")

    def token(self, text):
        for word in text.split():
            if word.startswith("provisioner.token="):
                return word.split("=", 1)[1]
        return None

    def state(self, name="alpha"):
        return self.book.hostInfo(name)["state"]

    def deploy(self, name="alpha", mac=ALPHA, ip=ALPHA_IP):
        """
        Boot a host through its deploy entry and have it call back.
        """
        menu = self.get("menus/%s/boot.ipxe" % (mac,), ip)
        self.tftp.ended(ip, "images/debian/linux")
        self.successResultOf(self.book.callback(name, self.token(menu), "deployed", "ok", ip))
        self.assertEqual(self.state(name), DEPLOYED)


class BootOnceTests(BookTestCase):
    """
    A deployed host is served its local disk until it is redeployed.
    """

    def test_readyHostGetsDeployEntry(self):
        """
        A ready host's menus (iPXE, pxelinux, GRUB) boot its profile's
        kernel, with a per-boot token and the callback URL on the command
        line.
        """
        callback = "provisioner.callback=http://198.18.0.1:8080/api/v1/hosts/alpha/callback"
        ipxe = self.get("menus/%s/boot.ipxe" % (ALPHA,))
        pxelinux = self.get("pxelinux.cfg/01-52-54-00-00-00-01")
        grub = self.get("grub/grub.cfg-01-52-54-00-00-00-01")
        for text, line in [(ipxe, "kernel http://198.18.0.1:8080/images/debian/linux"),
                           (pxelinux, "APPEND auto=true"), (grub, "linux /images/debian/linux")]:
            kernel = [l for l in text.splitlines() if line in l]
            self.assertEqual(len(kernel), 1, text)
            self.assertIn(callback, kernel[0])
            self.assertIsNotNone(self.token(kernel[0]))
        self.assertEqual(len({self.token(ipxe), self.token(pxelinux), self.token(grub)}), 3)

    def test_deployedHostBootsLocalDisk(self):
        """
        If a host is deployed, its next menus are the local-disk entry:
        iPXE C{sanboot --drive 0x80} (BIOS) or C{exit} (UEFI), pxelinux
        C{LOCALBOOT 0}, GRUB C{exit}; no kernel and no token. The inventory
        file is not touched.
        """
        with open(self.inventoryPath, "rb") as f:
            inventory = f.read()
        self.deploy()
        ipxe = self.get("menus/%s/boot.ipxe" % (ALPHA,))
        self.assertIn("sanboot --no-describe --drive 0x80 || exit", ipxe)
        self.appliance.clients.update(mac=ALPHA, ip=ALPHA_IP, arch=7)
        efi = self.get("menus/%s/boot.ipxe" % (ALPHA,))
        self.assertEqual(efi.splitlines()[-1], "exit")
        pxelinux = self.get("pxelinux.cfg/01-52-54-00-00-00-01")
        self.assertIn("DEFAULT local", pxelinux)
        self.assertIn("LOCALBOOT 0", pxelinux)
        grub = self.get("grub/grub.cfg-01-52-54-00-00-00-01")
        self.assertIn("  exit\n", grub)
        for text in (ipxe, efi, pxelinux, grub):
            self.assertNotIn("debian/linux", text)
            self.assertNotIn("provisioner.token", text)
            self.assertIn("alpha is deployed", text)
        with open(self.inventoryPath, "rb") as f:
            self.assertEqual(f.read(), inventory)

    def test_redeployDeploysAgain(self):
        """
        If a deployed host is redeployed, it is ready and its next menus are
        the deploy entry again, with a new token; the old token is refused.
        """
        old = self.token(self.get("menus/%s/boot.ipxe" % (ALPHA,)))
        self.deploy()
        info = self.successResultOf(self.book.redeploy("alpha", "127.0.0.1"))
        self.assertEqual(info["state"], READY)
        for path, kernel in [("menus/%s/boot.ipxe" % (ALPHA,), "kernel http://"),
                             ("pxelinux.cfg/01-52-54-00-00-00-01", "KERNEL images/debian/linux"),
                             ("grub/grub.cfg-01-52-54-00-00-00-01", "linux /images/debian/")]:
            text = self.get(path)
            self.assertIn(kernel, text)
            self.assertNotIn("is deployed", text)
            self.assertNotIn(self.token(text), (None, old))
        self.assertRaises(Refused, self.book.callback, "alpha", old, DEPLOYED)

    def test_redeployRules(self):
        """
        Redeploying a ready host is a conflict, an unknown one not found;
        redeploying a deploying or failed host makes it ready and uses up
        its tokens.
        """
        self.assertRaises(Conflict, self.book.redeploy, "alpha")
        self.assertRaises(NotFound, self.book.redeploy, "nobody")
        token = self.token(self.get("menus/%s/boot.ipxe" % (ALPHA,)))
        self.tftp.ended(ALPHA_IP, "images/debian/linux")
        self.assertEqual(self.state(), DEPLOYING)
        self.successResultOf(self.book.redeploy("alpha"))
        self.assertEqual(self.state(), READY)
        self.assertRaises(Refused, self.book.callback, "alpha", token, DEPLOYED)

    def test_tokenMenusNotCached(self):
        """
        Every render of a deploy menu mints its own token (a cached menu
        would hand out a used one).
        """
        first = self.token(self.get("menus/%s/boot.ipxe" % (ALPHA,)))
        second = self.token(self.get("menus/%s/boot.ipxe" % (ALPHA,)))
        self.assertNotEqual(first, second)

    def test_previewMintsNothing(self):
        """
        A preview (the JSON API, C{provisioner render}-like calls) shows a
        placeholder token, mints none and discovers nobody.
        """
        text, _ = self.menus.render("ipxe", mac=ALPHA, arch=0)
        self.assertIn("provisioner.token=" + PREVIEW_TOKEN, text)
        described = self.menus.describe(mac=STRANGER)
        self.assertEqual(described["inventory"]["host"], None)
        self.assertEqual(self.book.tokens, {})
        self.assertEqual(list(self.book.machines), [])

    def test_notLoaded(self):
        """
        Until the store is loaded, the lifecycle takes no part in boots and
        refuses requests.
        """
        self.book.loaded = False
        self.assertIsNone(self.token(self.get("menus/%s/boot.ipxe" % (ALPHA,))))
        self.assertRaises(NotReady, self.book.callback, "alpha", "t", DEPLOYED)
        self.book.loaded = True


class DeployingTests(BookTestCase):
    """
    A ready host becomes deploying when it fetches its deploy entry's
    kernel (or image), over TFTP or HTTP, from the address its menu went to.
    """

    def test_tftpKernelFetch(self):
        """
        If the address a deploy menu went to fetches the deploy entry's
        kernel whole over TFTP, the host is deploying, and the event says
        what was fetched.
        """
        self.get("pxelinux.cfg/01-52-54-00-00-00-01")
        self.assertEqual(self.state(), READY)
        self.tftp.ended(ALPHA_IP, "images/debian/linux")
        self.assertEqual(self.state(), DEPLOYING)
        event = self.book.eventsOf("alpha")[-1]
        self.assertEqual((event["source"], event["target"]), (READY, DEPLOYING))
        self.assertIn("images/debian/linux over tftp from 198.18.0.11", event["why"])

    def test_httpKernelFetch(self):
        """
        The same over HTTP (the HTTP service's fetch callbacks).
        """
        self.get("menus/%s/boot.ipxe" % (ALPHA,), protocol="http")
        self.http.served(ALPHA_IP, "images/debian/linux")
        self.assertEqual(self.state(), DEPLOYING)

    def test_otherTransfersDoNotCount(self):
        """
        An initrd, another entry's image, another address, a probe, a range,
        an upload, or a kernel fetched before any menu: the host stays
        ready.
        """
        self.tftp.ended(ALPHA_IP, "images/debian/linux")
        self.get("menus/%s/boot.ipxe" % (ALPHA,))
        self.tftp.ended(ALPHA_IP, "images/debian/initrd.gz")
        self.tftp.ended(ALPHA_IP, "images/live.iso")
        self.tftp.ended("198.18.0.99", "images/debian/linux")
        self.tftp.ended(ALPHA_IP, "images/debian/linux", outcome="probe")
        self.tftp.ended(ALPHA_IP, "images/debian/linux", direction="write")
        self.http.served(ALPHA_IP, "images/debian/linux", code=206)
        self.assertEqual(self.state(), READY)

    def test_failedHostDeploysAgain(self):
        """
        A failed host that boots its deploy entry again is deploying.
        """
        menu = self.get("menus/%s/boot.ipxe" % (ALPHA,))
        self.tftp.ended(ALPHA_IP, "images/debian/linux")
        self.successResultOf(self.book.callback("alpha", self.token(menu), FAILED, "disk"))
        self.assertEqual(self.state(), FAILED)
        self.get("menus/%s/boot.ipxe" % (ALPHA,))
        self.tftp.ended(ALPHA_IP, "/images/debian/linux")
        self.assertEqual(self.state(), DEPLOYING)

    def test_profileWithoutEntries(self):
        """
        For a profile that is one kernel (no entries), that kernel is the
        deploy entry's.
        """
        self.appliance.clients.update(mac="52:54:00:00:00:02", ip="198.18.0.12", arch=0)
        self.get("menus/52:54:00:00:00:02/boot.ipxe", "198.18.0.12")
        self.tftp.ended("198.18.0.12", "images/rescue/vmlinuz")
        self.assertEqual(self.state("beta"), DEPLOYING)

    def test_hooksRemovedOnStop(self):
        """
        When the service stops, it no longer listens to transfers.
        """
        self.assertEqual((len(self.tftp.callbacks), len(self.http.callbacks)), (1, 1))
        self.menus.stopService()
        self.successResultOf(self.hosts.stopService())
        self.assertEqual((self.tftp.callbacks, self.http.callbacks), ([], []))
        self.assertIsNone(self.appliance.hosts)
        self.hosts.startService()
        self.menus.startService()
        self.assertIs(self.appliance.hosts, self.book)


class CallbackTests(BookTestCase):
    """
    Tests for L{HostBook.callback}.
    """

    def setUp(self):
        BookTestCase.setUp(self)
        self.menu = self.get("menus/%s/boot.ipxe" % (ALPHA,))
        self.good = self.token(self.menu)
        self.tftp.ended(ALPHA_IP, "images/debian/linux")
        self.warnings = _Warnings(self)

    def assertRefused(self, token, why, state=DEPLOYED, name="alpha"):
        before = (self.state(), list(self.book.eventsOf("alpha")))
        e = self.assertRaises(Refused, self.book.callback, name, token, state, "x", "10.0.0.1")
        self.assertEqual(str(e), why)
        self.assertEqual((self.state(), self.book.eventsOf("alpha")), before)
        self.assertEqual(len(self.warnings.events), 1)
        text = self.warnings.events[0]["log_format"].format(**self.warnings.events[0])
        self.assertIn("refused: %s; nothing changed" % (why,), text)
        self.assertIn("10.0.0.1", text)
        self.assertNotIn(token or "\0", text)
        del self.warnings.events[:]

    def test_rightToken(self):
        """
        With the token of the host's boot, C{deployed} makes it deployed,
        with an event naming the caller and the message.
        """
        info = self.successResultOf(self.book.callback("alpha", self.good, DEPLOYED,
                                                       "installed", ALPHA_IP))
        self.assertEqual(info["state"], DEPLOYED)
        self.assertEqual(info["last_event"]["why"],
                         "the installed system called back from 198.18.0.11: installed")

    def test_wrongToken(self):
        """
        A missing or unknown token, or another host's, is refused and
        logged once; nothing changes.
        """
        self.assertRefused(None, "no token")
        self.assertRefused("guess", "unknown token")
        self.appliance.clients.update(mac="52:54:00:00:00:02", ip="198.18.0.12", arch=0)
        other = self.token(self.get("menus/52:54:00:00:00:02/boot.ipxe", "198.18.0.12"))
        self.assertRefused(other, "the token is another host's")

    def test_reusedToken(self):
        """
        A token that was used for a final report is refused afterwards, as
        are the host's other tokens of that boot.
        """
        spare = self.token(self.get("menus/%s/boot.ipxe" % (ALPHA,)))
        self.successResultOf(self.book.redeploy("alpha"))
        self.get("menus/%s/boot.ipxe" % (ALPHA,))
        self.tftp.ended(ALPHA_IP, "images/debian/linux")
        self.assertRefused(self.good, "the token was already used")
        self.assertRefused(spare, "the token was already used")

    def test_expiredToken(self):
        """
        A token older than C{hosts.token_ttl} is refused.
        """
        self.clock.advance(self.config["hosts"]["token_ttl"] + 1)
        self.assertRefused(self.good, "the token expired")

    def test_oldTokensForgotten(self):
        """
        A token expired for more than another TTL is forgotten, in memory
        and in the store (then it is an unknown token).
        """
        self.clock.advance(2 * self.config["hosts"]["token_ttl"] + 1)
        self.get("menus/%s/boot.ipxe" % (ALPHA,))
        self.assertRefused(self.good, "unknown token")
        self.assertEqual(len(self.book.tokens), 1)
        snapshot = self.successResultOf(self.hosts.store.load())
        self.assertEqual(len(snapshot.tokens), 1)

    def test_progress(self):
        """
        C{deploying} reports progress: an event, no change of state, the
        token still good for the final report.
        """
        self.successResultOf(self.book.callback("alpha", self.good, DEPLOYING, "partitioning",
                                                ALPHA_IP))
        self.assertEqual(self.state(), DEPLOYING)
        event = self.book.eventsOf("alpha")[-1]
        self.assertEqual((event["source"], event["target"]), (DEPLOYING, DEPLOYING))
        self.assertIn("partitioning", event["why"])
        self.successResultOf(self.book.callback("alpha", self.good, DEPLOYED))
        self.assertEqual(self.state(), DEPLOYED)

    def test_failed(self):
        """
        C{failed} makes the host failed, with the message as its reason.
        """
        info = self.successResultOf(self.book.callback("alpha", self.good, FAILED,
                                                       "no disk", ALPHA_IP))
        self.assertEqual(info["state"], FAILED)
        self.assertIn("no disk", info["reason"])

    def test_callbackBeforeFetchSeen(self):
        """
        If the kernel fetch was not seen (a kernel served elsewhere), a good
        token's callback first records the host as deploying.
        """
        self.successResultOf(self.book.redeploy("alpha"))
        token = self.token(self.get("menus/%s/boot.ipxe" % (ALPHA,)))
        self.successResultOf(self.book.callback("alpha", token, DEPLOYED, None, ALPHA_IP))
        targets = [e["target"] for e in self.book.eventsOf("alpha")[-3:]]
        self.assertEqual(targets, [READY, DEPLOYING, DEPLOYED])

    def test_badState(self):
        """
        A state other than deploying, deployed or failed is a bad request.
        """
        self.assertRaises(BadRequest, self.book.callback, "alpha", self.good, "ready")
        self.assertEqual(self.state(), DEPLOYING)

    def test_tokensBounded(self):
        """
        A host keeps its newest few live tokens; older ones are forgotten.
        C{hosts.max_tokens} bounds them all.
        """
        tokens = [self.token(self.get("menus/%s/boot.ipxe" % (ALPHA,))) for _ in range(6)]
        live = [t for t in self.book.tokens.values() if t.host == "alpha" and t.used is None]
        self.assertEqual(len(live), TOKENS_PER_HOST)
        self.assertRefused(tokens[0], "unknown token")
        self.book.configure(maxTokens=16)
        self.appliance.clients.update(mac="52:54:00:00:00:02", ip="198.18.0.12", arch=0)
        for _ in range(40):
            self.get("menus/52:54:00:00:00:02/boot.ipxe", "198.18.0.12")
        self.assertLessEqual(len(self.book.tokens), 16)


class DiscoveryTests(BookTestCase):
    """
    Machines no inventory names are discovered; adoption makes them hosts.
    """

    def discover(self):
        menu = self.get("menus/%s/boot.ipxe" % (STRANGER,), STRANGER_IP)
        self.clock.advance(30)
        self.tftp.ended(STRANGER_IP, "ipxe.efi")
        self.http.served(STRANGER_IP, "images/rescue/vmlinuz")
        return menu

    def test_discovered(self):
        """
        If an unknown MAC gets a menu (the default one) and fetches files,
        it is discovered with its MAC, architecture, vendor class, UUID,
        first and last seen, and the files it fetched.
        """
        menu = self.discover()
        self.assertIn("unknown host", menu)
        machine = self.book.machineInfo(STRANGER)
        self.assertEqual(machine["arch"], 7)
        self.assertEqual(machine["vendor_class"], "PXEClient:Arch:00007:UNDI:003016")
        self.assertEqual(machine["uuid"], "8a1c0bd4-6e0f-4d0e-9d3a-0123456789ab")
        self.assertEqual(machine["first_seen"], 1000000)
        self.assertEqual(machine["last_seen"], 1000030)
        self.assertEqual([(f["path"], f["protocol"]) for f in machine["files"]],
                         [("ipxe.efi", "tftp"), ("images/rescue/vmlinuz", "http")])
        self.assertEqual([e["target"] for e in self.book.eventsOf(STRANGER)], [DISCOVERED])
        self.assertNotIn("provisioner.token", menu)

    def test_fetchAloneDiscovers(self):
        """
        A machine DHCP told the directory about is discovered by its first
        fetch (the NBP), before any menu.
        """
        self.tftp.ended(STRANGER_IP, "undionly.kpxe")
        self.assertEqual(self.book.machineInfo(STRANGER)["files"][0]["path"], "undionly.kpxe")

    def test_knownAreNotDiscovered(self):
        """
        An inventory host, and an address whose MAC nobody knows, are not
        discovered.
        """
        self.get("menus/%s/boot.ipxe" % (ALPHA,))
        self.tftp.ended(ALPHA_IP, "ipxe.efi")
        self.tftp.ended("198.18.0.77", "ipxe.efi")
        self.assertEqual(self.book.machinesList(), [])

    def test_adopt(self):
        """
        If a discovered machine is adopted, it is a ready host at once: its
        next menu is its profile's deploy entry with a token, its history
        carries on under its name, and the answer holds the inventory
        stanza.
        """
        self.discover()
        answer = self.successResultOf(self.book.adopt(STRANGER, "gamma", "installer",
                                                      "127.0.0.1"))
        self.assertEqual(answer["yaml"],
                         "# provisioner hosts adopt: paste under hosts: in your inventory "
                         "file\n  gamma:\n    mac: 52:54:00:00:00:09\n    profile: installer\n")
        self.assertEqual((answer["host"]["state"], answer["host"]["adopted"],
                          answer["host"]["in_inventory"]), (READY, True, False))
        self.assertEqual(self.book.machinesList(), [])
        self.assertEqual([(e["source"], e["target"]) for e in self.book.eventsOf("gamma")],
                         [(None, DISCOVERED), (DISCOVERED, READY)])
        menu = self.get("menus/%s/boot.ipxe" % (STRANGER,), STRANGER_IP)
        self.assertIn("# provisioner: gamma (52:54:00:00:00:09), efi-x64, profile installer",
                      menu)
        self.assertIn("provisioner.callback=http://198.18.0.1:8080/api/v1/hosts/gamma/callback",
                      menu)
        self.tftp.ended(STRANGER_IP, "images/debian/linux")
        self.assertEqual(self.state("gamma"), DEPLOYING)

    def test_adoptRefusals(self):
        """
        Adoption refuses a bad MAC or name, an unknown profile, a name or a
        MAC already a host's.
        """
        self.discover()
        self.assertRaises(BadRequest, self.book.adopt, "nonsense", "gamma", "installer")
        self.assertRaises(BadRequest, self.book.adopt, STRANGER, "bad name", "installer")
        self.assertRaises(BadRequest, self.book.adopt, STRANGER, "gamma", "nosuch")
        self.assertRaises(Conflict, self.book.adopt, STRANGER, "alpha", "installer")
        self.assertRaises(Conflict, self.book.adopt, ALPHA, "gamma", "installer")
        self.successResultOf(self.book.adopt(STRANGER, "gamma", "installer"))
        self.assertRaises(Conflict, self.book.adopt, STRANGER, "delta", "installer")

    def test_pastedStanza(self):
        """
        If the operator pastes the stanza into the inventory, the host is
        the inventory's (no longer adopted) and keeps its state and history.
        """
        self.discover()
        answer = self.successResultOf(self.book.adopt(STRANGER, "gamma", "installer"))
        self.tftp.ended(STRANGER_IP, "images/debian/linux")
        self.get("menus/%s/boot.ipxe" % (STRANGER,), STRANGER_IP)
        self.tftp.ended(STRANGER_IP, "images/debian/linux")
        self.writeInventory(INVENTORY + answer["yaml"].split("\n", 1)[1])
        self.assertTrue(self.menus.loadInventory())
        info = self.book.hostInfo("gamma")
        self.assertEqual((info["in_inventory"], info["adopted"], info["state"]),
                         (True, False, DEPLOYING))
        self.assertEqual(len(self.book.eventsOf("gamma")), 3)

    def test_inventoryNamesDiscovered(self):
        """
        If the inventory gains a host with a discovered MAC, the machine
        becomes that host (discovered -> ready).
        """
        self.discover()
        self.writeInventory(INVENTORY + "  gamma:\n    mac: %s\n    profile: rescue\n" % (
            STRANGER,))
        self.menus.loadInventory()
        self.assertEqual(self.book.machinesList(), [])
        self.assertEqual([(e["source"], e["target"]) for e in self.book.eventsOf("gamma")],
                         [(None, DISCOVERED), (DISCOVERED, READY)])


class LogNamespaceTests(BookTestCase):
    """
    The book's parts (L{provisioner.hosts.tokens},
    L{provisioner.hosts.discovery}, L{provisioner.hosts.deploy},
    L{provisioner.hosts.boot}, L{provisioner.hosts.callbacks},
    L{provisioner.hosts.admin}) log through the book's logger.
    """

    def test_oneLogNamespace(self):
        """
        If the book and its parts log (a discovery, a new host, the deploy
        signal, progress, a refused callback, an adoption, a failed save),
        every line carries the book's namespace and the book as its source,
        as before the parts were split out of L{provisioner.hosts.book}.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.get("menus/%s/boot.ipxe" % (STRANGER,), STRANGER_IP)
        self.writeInventory(INVENTORY + "  delta:\n    mac: 52:54:00:00:00:04\n")
        self.assertTrue(self.menus.loadInventory())
        menu = self.get("menus/%s/boot.ipxe" % (ALPHA,))
        self.tftp.ended(ALPHA_IP, "images/debian/linux")
        self.successResultOf(self.book.callback("alpha", self.token(menu), DEPLOYING, "50%",
                                                ALPHA_IP))
        self.assertRaises(Refused, self.book.callback, "alpha", "guess", DEPLOYED)
        self.successResultOf(self.book.adopt(STRANGER, "gamma", "installer"))
        self.patch(self.book.store, "addEvent",
                   lambda *a, **k: defer.fail(RuntimeError("disk full")))
        self.failureResultOf(self.book.callback("alpha", self.token(menu), DEPLOYING, "60%",
                                                ALPHA_IP))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        lines = [e for e in events if (e.get("log_format") or "").startswith("hosts: ") and
                 e.get("log_namespace", "").startswith("provisioner.hosts.")]
        self.assertEqual({e["log_format"] for e in lines}, {
            "hosts: discovered {mac}: {why}", "hosts: {host} is ready: {why}",
            "hosts: {host} {source} -> {target}: {why}", "hosts: {host} progress: {why}",
            "hosts: callback {state} for {host} from {peer} refused: {why}; nothing changed",
            "hosts: {mac} is host {host} now, ready: {why}",
            "hosts: could not save {what} to {store}"})
        self.assertEqual({e["log_namespace"] for e in lines},
                         {"provisioner.hosts.book.HostBook"})
        self.assertEqual({id(e["log_source"]) for e in lines}, {id(self.book)})


class BoundsTests(BookTestCase):
    """
    What the book keeps is bounded by the configuration.
    """

    overrides = [("hosts.max_discovered", 2), ("hosts.files_per_machine", 2),
                 ("hosts.events_per_host", 3)]

    def test_discoveredBounded(self):
        """
        The least recently seen machine goes first; each keeps its newest
        files.
        """
        for i in range(3):
            mac = "52:54:00:00:01:%02x" % (i,)
            self.appliance.clients.update(mac=mac, ip="198.18.1.%d" % (i,))
            self.clock.advance(1)
            for name in ("a", "b", "c"):
                self.tftp.ended("198.18.1.%d" % (i,), name)
        self.assertEqual([m["mac"] for m in self.book.machinesList()],
                         ["52:54:00:00:01:02", "52:54:00:00:01:01"])
        self.assertEqual([f["path"] for f in self.book.machineInfo("52:54:00:00:01:02")["files"]],
                         ["b", "c"])

    def test_eventsBounded(self):
        """
        A host keeps its newest C{events_per_host} events, in memory and in
        the store.
        """
        self.deploy()
        self.successResultOf(self.book.redeploy("alpha"))
        events = self.book.eventsOf("alpha")
        self.assertEqual([e["target"] for e in events], [DEPLOYING, DEPLOYED, READY])
        stored = self.successResultOf(self.hosts.store.events("alpha"))
        self.assertEqual([e.asDict() for e in stored], events)

    def test_reload(self):
        """
        A reload applies new limits and admin networks.
        """
        self.deploy()
        config = dict(self.config, hosts=dict(self.config["hosts"], events_per_host=1,
                                              admin_networks=["10.0.0.0/8"]))
        self.hosts.reconfigure(config)
        self.clock.advance(0)
        self.assertEqual(len(self.book.eventsOf("alpha")), 1)
        self.assertTrue(self.book.isAdmin("10.1.2.3"))
        self.assertFalse(self.book.isAdmin("127.0.0.1"))


class AdminTests(SynchronousTestCase):
    """
    Tests for L{HostBook.isAdmin}.
    """

    def test_networks(self):
        """
        Loopback (also IPv4-mapped) is an admin by default; others and
        garbage are not.
        """
        from provisioner.hosts.book import HostBook
        book = HostBook(task.Clock())
        for address, expected in [("127.0.0.1", True), ("::1", True),
                                  ("::ffff:127.0.0.1", True), ("198.18.0.1", False),
                                  ("nonsense", False), ("", False)]:
            self.assertEqual(book.isAdmin(address), expected, address)

    def test_ownAddress(self):
        """
        A connection from the appliance's own address (the address it
        reached) is an admin's: the command line on the appliance when HTTP
        listens on a specific address.
        """
        from provisioner.hosts.book import HostBook
        book = HostBook(task.Clock())
        self.assertTrue(book.isAdmin("198.18.0.1", "198.18.0.1"))
        self.assertTrue(book.isAdmin("::ffff:198.18.0.1", "198.18.0.1"))
        self.assertFalse(book.isAdmin("198.18.0.2", "198.18.0.1"))
        self.assertFalse(book.isAdmin("198.18.0.2", "nonsense"))
