"""
Tests for L{provisioner.tftp.service}: the service on a real loopback port
(port 0), its resolver chain, reconfiguration and rebinding. A minimal
lockstep client written here fetches over 127.0.0.1.
"""

import os

from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import TestCase

from provisioner.appliance import Appliance
from provisioner.config import loadConfig
from provisioner.files import BytesSource
from provisioner.tftp import wire
from provisioner.tftp.service import TFTPService, makeService


class MiniClient(DatagramProtocol):
    """
    RFC 1350 client: RRQ, then ACK every DATA; fires with the bytes or with
    the L{wire.Error} packet.
    """

    def __init__(self, name, server, options=()):
        self.request = wire.ReadRequest(name.encode(), "octet", list(options)).to_wire()
        self.server = server
        self.received = []
        self.done = defer.Deferred()
        self.peer = None

    def startProtocol(self):
        self.transport.write(self.request, self.server)
        self.timeout = reactor.callLater(20, self._give, RuntimeError("no answer"))

    def _give(self, result):
        if self.timeout.active():
            self.timeout.cancel()
        port, self.transport = self.transport, None
        d = port.stopListening()
        if isinstance(result, Exception):
            d.addCallback(lambda _: self.done.errback(result))
        else:
            d.addCallback(lambda _: self.done.callback(result))

    def datagramReceived(self, data, addr):
        if self.transport is None:
            return
        packet = wire.decode(data)
        if isinstance(packet, wire.Error):
            self._give(packet)
        elif isinstance(packet, wire.OptionAck):
            self.transport.write(wire.encodeAck(0), addr)
        elif isinstance(packet, wire.Data):
            self.received.append(packet.payload)
            self.transport.write(wire.encodeAck(packet.block), addr)
            if len(packet.payload) < 512:
                self._give(b"".join(self.received))


def fetch(name, host, port):
    client = MiniClient(name, (host, port))
    reactor.listenUDP(0, client, interface=host)
    return client.done


class ServiceTests(TestCase):
    """
    L{TFTPService} on 127.0.0.1.
    """

    def setUp(self):
        self.root = os.path.abspath(self.mktemp())
        self.config = loadConfig(None, [("tftp.port", 0), ("tftp.root", self.root)])
        self.appliance = Appliance(self.config, reactor)
        self.service = makeService(self.appliance)
        self.service.privilegedStartService()
        self.service.startService()
        self.addCleanup(lambda: self.service.running and self.service.stopService())
        with open(os.path.join(self.root, "f.bin"), "wb") as f:
            f.write(b"F" * 3000)

    def test_created(self):
        """
        If the root is missing, it is created; the service is an
        L{TFTPService} registered on the appliance.
        """
        self.assertTrue(os.path.isdir(self.root))
        self.assertIsInstance(self.service, TFTPService)
        self.assertIs(self.appliance.tftp, self.service)
        self.assertGreater(self.service.listeningPort, 0)

    @defer.inlineCallbacks
    def test_fetch(self):
        """
        If a client fetches a file, it gets it.
        """
        data = yield fetch("f.bin", "127.0.0.1", self.service.listeningPort)
        self.assertEqual(data, b"F" * 3000)

    @defer.inlineCallbacks
    def test_chainOrder(self):
        """
        If a virtual file and an inserted resolver both know a name, the
        virtual file wins; the inserted resolver comes before the
        directory; removing it restores the directory's answer.
        """
        class Injector:
            def resolve(self, request):
                if request.path in ("f.bin", "v.bin"):
                    return BytesSource(b"injected")
                return None

        remove = self.service.addResolver(Injector())
        self.appliance.virtualFiles.register("v.bin", lambda request, match: b"virtual")
        port = self.service.listeningPort
        self.assertEqual((yield fetch("v.bin", "127.0.0.1", port)), b"virtual")
        self.assertEqual((yield fetch("f.bin", "127.0.0.1", port)), b"injected")
        remove()
        self.assertEqual((yield fetch("f.bin", "127.0.0.1", port)), b"F" * 3000)
        self.assertIs(self.service.resolvers.resolvers[-1], self.service.directory)

    @defer.inlineCallbacks
    def test_reconfigureRoot(self):
        """
        If the root changes on reload, new requests are served from it.
        """
        other = os.path.abspath(self.mktemp())
        new = loadConfig(None, [("tftp.port", 0), ("tftp.root", other)])
        self.service.reconfigure(new)
        with open(os.path.join(other, "g.bin"), "wb") as f:
            f.write(b"G")
        port = self.service.listeningPort
        self.assertEqual((yield fetch("g.bin", "127.0.0.1", port)), b"G")
        error = yield fetch("f.bin", "127.0.0.1", port)
        self.assertEqual(error, wire.Error(wire.ERR_FILE_NOT_FOUND, "file not found"))

    @defer.inlineCallbacks
    def test_rebind(self):
        """
        If the address changes on reload, the listen port moves there.
        """
        new = loadConfig(None, [("tftp.port", 0), ("tftp.root", self.root),
                                ("tftp.address", "127.0.0.2")])
        self.service.reconfigure(new)
        yield self.service._rebinding
        self.assertEqual(self.service.port.getHost().host, "127.0.0.2")
        data = yield fetch("f.bin", "127.0.0.2", self.service.listeningPort)
        self.assertEqual(data, b"F" * 3000)

    @defer.inlineCallbacks
    def test_stop(self):
        """
        If the service stops, its port closes (stopService's Deferred).
        """
        yield self.service.stopService()
        self.assertIsNone(self.service.port)


class Meddler(MiniClient):
    """
    A lockstep client that also repeats an ACK (which must not bring DATA)
    and, from a second socket, sends an ACK to the transfer's port (which
    must bring ERROR 5 there and nothing else).
    """

    def __init__(self, name, server, stranger):
        MiniClient.__init__(self, name, server)
        self.stranger = stranger
        self.blocks = []

    def datagramReceived(self, data, addr):
        packet = wire.decode(data) if self.transport is not None else None
        if isinstance(packet, wire.Data):
            self.blocks.append(packet.block)
            if packet.block == 5:
                self.transport.write(wire.encodeAck(4), addr)
            if packet.block == 10:
                self.stranger.transport.write(wire.encodeAck(9), addr)
        MiniClient.datagramReceived(self, data, addr)


class Stranger(DatagramProtocol):
    def __init__(self):
        self.received = []

    def datagramReceived(self, data, addr):
        self.received.append(wire.decode(data))


class FastLaneTests(TestCase):
    """
    The lockstep fast path on real sockets (one transfer in flight).
    """

    @defer.inlineCallbacks
    def test_duplicateAndWrongTID(self):
        """
        If a lockstep client repeats an ACK and a stranger writes to the
        transfer's port, no DATA is sent twice, the stranger gets ERROR 5,
        and the file arrives whole.
        """
        from provisioner.tftp.session import ReadSession
        lanes = []
        original = ReadSession._lockstep

        def lockstep(session, *args):
            lanes.append(session)
            return original(session, *args)
        self.patch(ReadSession, "_lockstep", lockstep)
        root = os.path.abspath(self.mktemp())
        config = loadConfig(None, [("tftp.port", 0), ("tftp.root", root)])
        service = makeService(Appliance(config, reactor))
        service.startService()
        self.addCleanup(service.stopService)
        payload = os.urandom(512 * 40 + 7)
        with open(os.path.join(root, "f"), "wb") as f:
            f.write(payload)
        stranger = Stranger()
        strangerPort = reactor.listenUDP(0, stranger, interface="127.0.0.1")
        self.addCleanup(strangerPort.stopListening)
        client = Meddler("f", ("127.0.0.1", service.listeningPort), stranger)
        reactor.listenUDP(0, client, interface="127.0.0.1")
        data = yield client.done
        self.assertEqual(data, payload)
        self.assertEqual(client.blocks, list(range(1, 42)))
        d = defer.Deferred()
        reactor.callLater(0.2, d.callback, None)
        yield d
        self.assertEqual([(p.opcode, p.code) for p in stranger.received],
                         [(wire.ERROR, wire.ERR_UNKNOWN_TID)])
        self.assertTrue(lanes, "the lockstep fast path was not used")


class ResolverOrderTests(TestCase):
    """
    The order in which the appliance's services answer a TFTP read, pinned
    through the services as C{twistd provisioner} builds them
    (L{provisioner.tap.ProvisionerService}): the virtual files (boot
    menus), then the image catalogue, then the bootstrap-program injector,
    then the boot programs (C{tftp.boot_programs}, behind the root's own
    files), then the root directory.
    """

    timeout = 60

    def setUp(self):
        base = os.path.abspath(self.mktemp())
        root, images, state = (os.path.join(base, d) for d in ("root", "images", "state"))
        for d in (root, images):
            os.makedirs(d)
        program = os.path.join(base, "program.kpxe")
        files = {program: b"PROGRAM"}
        for name in ("boot.ipxe", "x.efi", "y.efi", "z.efi", "snponly.efi"):
            files[os.path.join(root, name)] = b"ROOT " + name.encode()
        programs = os.path.join(base, "programs")
        os.makedirs(programs)
        for name in ("undionly.kpxe", "snponly.efi"):
            files[os.path.join(programs, name)] = b"IPXE " + name.encode()
        for name in ("boot.ipxe", "x.efi"):
            files[os.path.join(images, name)] = b"IMAGE " + name.encode()
        for path, data in files.items():
            with open(path, "wb") as f:
                f.write(data)
        self.overrides = [
            ("tftp.port", 0), ("tftp.root", root), ("tftp.injector.enabled", True),
            ("tftp.injector.programs", {n: program for n in ("boot.ipxe", "x.efi", "y.efi")}),
            ("tftp.injector.holdoff", 0.0), ("tftp.boot_programs", programs),
            ("images.enabled", True), ("images.directory", images),
            ("images.state_dir", state), ("images.prefix", ""), ("images.watch", "poll"),
            ("menus.enabled", True)]
        from provisioner.tap import ProvisionerService
        self.appliance = ProvisionerService(loadConfig(None, self.overrides), None,
                                            self.overrides, reactor=reactor)
        self.appliance.startService()
        self.addCleanup(self.appliance.stopService)
        self.tftp = self.appliance.getServiceNamed("tftp")
        return self.appliance.getServiceNamed("images").ready

    @defer.inlineCallbacks
    def assertOrder(self):
        from provisioner.files import DirectoryResolver, VirtualFiles
        from provisioner.images.resolver import ImagesResolver
        from provisioner.tftp.bootprograms import BootProgramsResolver
        from provisioner.tftp.inject import BootstrapInjector
        self.assertEqual([type(r) for r in self.tftp.resolvers.resolvers],
                         [VirtualFiles, ImagesResolver, BootstrapInjector, BootProgramsResolver,
                          DirectoryResolver])
        port = self.tftp.listeningPort
        menu = yield fetch("boot.ipxe", "127.0.0.1", port)
        self.assertTrue(menu.startswith(b"#!ipxe"), menu[:40])
        self.assertEqual((yield fetch("x.efi", "127.0.0.1", port)), b"IMAGE x.efi")
        self.assertEqual((yield fetch("y.efi", "127.0.0.1", port)), b"PROGRAM")
        self.assertEqual((yield fetch("z.efi", "127.0.0.1", port)), b"ROOT z.efi")
        self.assertEqual((yield fetch("undionly.kpxe", "127.0.0.1", port)),
                         b"IPXE undionly.kpxe")
        self.assertEqual((yield fetch("snponly.efi", "127.0.0.1", port)), b"ROOT snponly.efi")

    def test_order(self):
        """
        If a boot menu, an image, the injector's boot file and a file of the
        root share a name, the menu wins; without the menu the image wins;
        without both the injector's program; then the root's file, which
        also wins over a boot program of the same name.
        """
        return self.assertOrder()

    @defer.inlineCallbacks
    def test_orderAfterReload(self):
        """
        If the configuration is reloaded (SIGHUP), the order is the same.
        """
        self.assertTrue(self.appliance.reload())
        yield self.assertOrder()
