# -*- test-case-name: tests.test_tftp_hooks -*-
"""
Tests for the hooks of L{provisioner.tftp.service.TFTPService} (resolvers,
resolver filters, option extensions, request handlers, stats callbacks)
and for the services that plug in through them: the multicast TFTP child
service, the adaptive window's extensions and the injector, across
reloads. Deterministic: the service runs on L{tests.fakes.FakeReactor}.
"""

import os

from twisted.application.service import IService
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from provisioner.appliance import Appliance
from provisioner.config import ConfigError, loadConfig
from provisioner.files import BytesSource, FileRequest
from provisioner.interfaces import IRequestHandler, IResolverFilter
from provisioner.tftp import wire
from provisioner.tftp.inject import BootstrapInjector
from provisioner.tftp.multicast.repair import RepairExtension, RepairFilter
from provisioner.tftp.multicast.service import MulticastHandler, MulticastTFTPService
from provisioner.tftp.service import makeService
from tests.fakes import FakeReactor

CLIENT = ("127.0.0.1", 33000)


def rrq(name, **options):
    return wire.ReadRequest(name, "octet", list(options.items())).to_wire()


class ServiceMixin:
    """
    A TFTP service on a fake reactor serving a temporary directory.
    """

    def makeProgram(self):
        """
        A bootstrap program for the injector: its path.
        """
        self.program = os.path.abspath(self.mktemp())
        with open(self.program, "wb") as f:
            f.write(b"PROGRAM")
        return self.program

    def makeService(self, *overrides):
        self.root = os.path.abspath(self.mktemp())
        self.overrides = [("tftp.port", 0), ("tftp.mtu", 0), ("tftp.root", self.root)]
        self.overrides += list(overrides)
        self.reactor = FakeReactor()
        self.appliance = Appliance(loadConfig(None, self.overrides), self.reactor)
        self.service = makeService(self.appliance)
        with open(os.path.join(self.root, "f.bin"), "wb") as f:
            f.write(b"F" * 100)
        return self.service

    def reload(self, *overrides):
        config = loadConfig(None, self.overrides + list(overrides))
        self.appliance.config = config
        self.service.reconfigure(config)

    def read(self, path, **options):
        """
        What the service's resolvers give for C{path} (bytes), through the
        resolver the server asks.
        """
        request = FileRequest(path, CLIENT, "tftp", options=options)
        source = self.successResultOf(self.service.server.resolver.resolve(request))
        try:
            return source.read(0, 1 << 20)
        finally:
            source.close()


@implementer(IResolverFilter)
class Tag:
    """
    A filter that appends its tag to what the resolvers behind it give.
    """

    def __init__(self, tag):
        self.tag = tag

    def resolve(self, request, next):
        d = next.resolve(request)
        return d.addCallback(lambda source: BytesSource(source.read(0, 1 << 20) + self.tag))


class Named:
    """
    A resolver that knows one name.
    """

    def __init__(self, name, data):
        self.name = name
        self.data = data

    def resolve(self, request):
        return BytesSource(self.data) if request.path == self.name else None


class HookTests(ServiceMixin, SynchronousTestCase):
    """
    The add and remove methods of each hook.
    """

    def setUp(self):
        self.makeService()

    def test_resolver(self):
        """
        If a resolver is added, it answers before the directory; at an
        index it goes among the inserted ones (0: right after the virtual
        files); removed, the directory answers again.
        """
        first = Named("f.bin", b"first")
        second = Named("f.bin", b"second")
        removeFirst = self.service.addResolver(first)
        self.assertEqual(self.read("f.bin"), b"first")
        self.service.addResolver(second, 0)
        self.assertEqual(self.read("f.bin"), b"second")
        self.service.removeResolver(second)
        removeFirst()
        self.assertEqual(self.read("f.bin"), b"F" * 100)
        self.assertIs(self.service.resolvers.resolvers[-1], self.service.directory)

    def test_directoryStays(self):
        """
        If someone asks to remove the directory resolver, it stays last.
        """
        self.service.removeResolver(self.service.directory)
        self.assertIs(self.service.resolvers.resolvers[-1], self.service.directory)

    def test_resolverFilters(self):
        """
        If filters are added, each sees the request before those added
        after it and the chain (outermost first); removed, it is gone.
        """
        outer, inner = Tag(b"+outer"), Tag(b"+inner")
        removeOuter = self.service.addResolverFilter(outer)
        self.service.addResolverFilter(inner)
        self.assertEqual(self.read("f.bin"), b"F" * 100 + b"+inner+outer")
        removeOuter()
        self.assertEqual(self.read("f.bin"), b"F" * 100 + b"+inner")
        self.service.removeResolverFilter(inner)
        self.assertEqual(self.read("f.bin"), b"F" * 100)

    def test_extensions(self):
        """
        If an extension is added it is asked after the others, or at its
        index; the list the service shows cannot be changed behind its
        back; removed, it is no longer asked.
        """
        before = self.service.extensions
        first, last = object(), object()
        removeLast = self.service.addExtension(last)
        self.service.addExtension(first, 0)
        self.assertEqual(self.service.extensions, (first,) + before + (last,))
        self.assertIsInstance(self.service.extensions, tuple)
        removeLast()
        self.service.removeExtension(first)
        self.assertEqual(self.service.extensions, before)

    def test_requestHandler(self):
        """
        If a request handler is added, it is offered read requests and a
        request it takes starts no unicast session; removed, it is not
        offered them.
        """
        taken = []

        @implementer(IRequestHandler)
        class Handler:
            def handleRequest(self, server, request, source, packet):
                taken.append(request.path)
                source.close()
                return True

        handler = Handler()
        verifyObject(IRequestHandler, handler)
        remove = self.service.addRequestHandler(handler)
        self.assertIn(handler, self.service.requestHandlers)
        self.service.server.datagramReceived(rrq(b"f.bin"), CLIENT)
        self.assertEqual(taken, ["f.bin"])
        self.assertEqual(self.service.server.sessions, {})
        remove()
        self.service.server.datagramReceived(rrq(b"f.bin"), ("127.0.0.1", 33001))
        self.assertEqual(taken, ["f.bin"])
        self.assertEqual(len(self.service.server.sessions), 1)

    def test_statsCallback(self):
        """
        If a stats callback is added, it gets the stats of each transfer
        that ends; removed, it gets nothing more.
        """
        stats = []
        remove = self.service.addStatsCallback(stats.append)
        self.service.server.datagramReceived(rrq(b"f.bin"), CLIENT)
        self.reactor.ports[-1].protocol.datagramReceived(wire.encodeAck(1), CLIENT)
        self.assertEqual([(s.path, s.outcome, s.bytes) for s in stats],
                         [("f.bin", "complete", 100)])
        remove()
        self.assertEqual(self.service.statsCallbacks, ())
        peer = ("127.0.0.1", 33001)
        self.service.server.datagramReceived(rrq(b"f.bin"), peer)
        self.reactor.ports[-1].protocol.datagramReceived(wire.encodeAck(1), peer)
        self.assertEqual(len(stats), 1)


class MulticastChildTests(ServiceMixin, SynchronousTestCase):
    """
    Multicast TFTP as the child service C{"multicast"} of tftp.
    """

    def setUp(self):
        self.makeService()
        self.child = self.service.getServiceNamed("multicast")

    def test_named(self):
        """
        The tftp service has a child service named C{multicast}, the name of
        its configuration section, and nothing hung on the tftp service.
        """
        self.assertIsInstance(self.child, MulticastTFTPService)
        verifyObject(IService, self.child)
        self.assertIs(self.child.parent, self.service)
        self.assertIn("multicast", self.appliance.config["tftp"])
        self.assertFalse(hasattr(self.service, "multicast"))
        self.assertIs(self.service.server.resolver, self.service.filtered)

    def test_registersWhenStarted(self):
        """
        If the tftp service starts, the child plugs in through its hooks:
        the request handler, the repair filter, and the repair extension
        first among the extensions; when it stops they are gone and its
        sessions are stopped.
        """
        self.assertEqual(self.service.requestHandlers, ())
        self.service.startService()
        handler, = self.service.requestHandlers
        self.assertIsInstance(handler, MulticastHandler)
        [repair] = self.service.filtered.filters
        self.assertIsInstance(repair, RepairFilter)
        verifyObject(IResolverFilter, repair)
        self.assertIsInstance(self.service.extensions[0], RepairExtension)
        self.assertEqual(self.service.extensions[1:], tuple(self.service.adaptiveExtensions))
        stopped = []
        self.patch(self.child.registry, "stop", lambda: stopped.append(True))
        self.service.stopService()
        self.assertEqual((self.service.requestHandlers, self.service.filtered.filters),
                         ((), []))
        self.assertNotIn(self.child.extension, self.service.extensions)
        self.assertEqual(stopped, [True])

    def test_repairThroughService(self):
        """
        If the service runs, a request carrying C{ranges} gets the blocks
        it names and an OACK that echoes them.
        """
        self.service.startService()
        self.assertEqual(self.read("f.bin", ranges="10:2,4"), b"F" * 20)
        self.service.server.datagramReceived(rrq(b"f.bin", ranges="10:2,4"), CLIENT)
        [(oack, addr)] = self.reactor.ports[-1].packets()
        self.assertEqual(oack.options, [("ranges", "10:2,4")])

    def test_restartRegistersOnce(self):
        """
        If the tftp service stops and starts again, the child's hooks are
        there once.
        """
        self.service.startService()
        self.service.stopService()
        self.service.startService()
        self.assertEqual(len(self.service.requestHandlers), 1)
        self.assertEqual(len(self.service.filtered.filters), 1)
        self.assertEqual(sum(isinstance(e, RepairExtension) for e in self.service.extensions), 1)

    def test_reconfigure(self):
        """
        If the configuration is reloaded, the child takes the new
        C{tftp.multicast} section (new sessions use it), and its hooks stay
        registered once.
        """
        self.service.startService()
        self.assertFalse(self.child.registry.enabled)
        self.reload(("tftp.multicast.enabled", True), ("tftp.multicast.max_clients", 3))
        self.assertTrue(self.child.registry.enabled)
        self.assertEqual(self.child.registry.maxClients, 3)
        self.assertEqual(len(self.service.requestHandlers), 1)
        self.assertIsInstance(self.service.extensions[0], RepairExtension)


class ConfiguredExtensionsTests(ServiceMixin, SynchronousTestCase):
    """
    The adaptive window's extensions and the injector, registered by the
    service itself through its hooks, and again on each reload.
    """

    def test_adaptiveOnReload(self):
        """
        If the configuration is reloaded, the adaptive extensions are
        replaced, never doubled; disabled, they are gone.
        """
        self.makeService()
        old = list(self.service.adaptiveExtensions)
        self.assertEqual(len(old), 3)
        self.assertEqual(self.service.extensions, tuple(old))
        self.reload()
        new = self.service.adaptiveExtensions
        self.assertEqual(self.service.extensions, tuple(new))
        self.assertFalse(set(map(id, old)) & set(map(id, new)))
        self.reload(("tftp.adaptive.enabled", False))
        self.assertEqual(self.service.extensions, ())

    def test_injectorOnReload(self):
        """
        If the injector is enabled, it sits before the directory; a reload
        replaces it (once, keeping its deliveries); disabled, it leaves the
        chain; nothing is hung on the service but its declared attributes.
        """
        self.makeService(("tftp.injector.enabled", True),
                         ("tftp.injector.programs", {"f.bin": self.makeProgram()}))
        injector = self.service.injector
        self.assertIsInstance(injector, BootstrapInjector)
        chain = self.service.resolvers.resolvers
        # Before the directory (Debian's boot programs come between them).
        self.assertEqual([r for r in chain if r in (injector, self.service.directory)],
                         [injector, self.service.directory])
        self.assertEqual(self.read("f.bin"), b"PROGRAM")
        injector.delivered["10.0.0.9"] = 5.0
        self.reload()
        self.assertIsNot(self.service.injector, injector)
        self.assertEqual(self.service.injector.delivered, injector.delivered)
        self.assertEqual(self.service.injector.delivered["10.0.0.9"], 5.0)
        self.assertEqual(sum(isinstance(r, BootstrapInjector)
                             for r in self.service.resolvers.resolvers), 1)
        self.service.configureInjector(self.service.config)
        self.assertEqual(sum(isinstance(r, BootstrapInjector)
                             for r in self.service.resolvers.resolvers), 1)
        self.reload(("tftp.injector.enabled", False))
        self.assertIsNone(self.service.injector)
        self.assertEqual(self.read("f.bin"), b"F" * 100)
        self.assertNotIn("_removeInjector", vars(self.service))

    def test_badInjectorReload(self):
        """
        If a reload names a missing program, the running injector is kept;
        at the first configuration it is an error.
        """
        self.makeService(("tftp.injector.enabled", True),
                         ("tftp.injector.programs", {"f.bin": self.makeProgram()}))
        injector = self.service.injector
        self.reload(("tftp.injector.programs", {"f.bin": "/nonexistent/p"}))
        self.assertIs(self.service.injector, injector)
        self.assertIn(injector, self.service.resolvers.resolvers)
        config = loadConfig(None, self.overrides + [
            ("tftp.injector.programs", {"f.bin": "/nonexistent/p"})])
        self.assertRaises(ConfigError, makeService, Appliance(config, FakeReactor()))


class ImportBoundaryTests(SynchronousTestCase):
    """
    The TFTP server imports no client program.
    """

    def test_noClientModule(self):
        """
        If the tftp service (with multicast TFTP) is imported in a fresh
        interpreter, no module of L{provisioner.client} is loaded.
        """
        import subprocess
        import sys
        code = ("import sys, provisioner.tftp.service, provisioner.tftp.multicast.service; "
                "print(sorted(m for m in sys.modules if m.startswith('provisioner.client')))")
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        out = subprocess.run([sys.executable, "-c", code], cwd=repo, check=True,
                             capture_output=True, text=True).stdout
        self.assertEqual(out.strip(), "[]")
