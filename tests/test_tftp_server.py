"""
Tests for L{provisioner.tftp.server}: the dispatcher with malformed
datagrams, path confinement, limits, and the hooks other subsystems use
(request handlers, option extensions, stats callbacks, virtual files).
Deterministic: a fake reactor (L{task.Clock} plus fake UDP ports).
"""

import os

from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from provisioner.config import loadConfig
from provisioner.files import DirectoryResolver, ResolverChain, VirtualFiles
from provisioner.tftp import wire
from provisioner.tftp.negotiate import IOptionExtension
from provisioner.tftp.server import TFTPServer
from provisioner.tftp.transfer import SessionStats
from provisioner.tftp.window import FixedWindow
from tests.fakes import FakeDatagramPort, FakeReactor

CLIENT = ("127.0.0.1", 33000)


def rrq(name, mode="octet", **options):
    return wire.ReadRequest(name, mode, list(options.items())).to_wire()


class ServerMixin:
    """
    A server on a fake reactor serving a temporary directory.
    """

    def makeServer(self, **overrides):
        self.root = self.mktemp()
        os.makedirs(self.root)
        with open(os.path.join(self.root, "hello.txt"), "wb") as f:
            f.write(b"hello world")
        os.makedirs(os.path.join(self.root, "sub"))
        with open(os.path.join(self.root, "sub", "a.bin"), "wb") as f:
            f.write(b"A" * 1000)
        pairs = [("tftp.mtu", 0)] + [("tftp." + k, v) for k, v in overrides.items()]
        self.config = loadConfig(None, pairs)["tftp"]
        self.reactor = FakeReactor()
        self.virtual = VirtualFiles()
        self.chain = ResolverChain([self.virtual,
                                    DirectoryResolver(self.root, notFoundIsFinal=True)])
        self.server = TFTPServer(self.chain, self.config, self.reactor)
        self.listen = FakeDatagramPort(self.server, port=69)
        self.server.makeConnection(self.listen)
        self.stats = []
        self.server.statsCallbacks.append(self.stats.append)
        return self.server

    def answers(self):
        """
        Packets sent from the listen port.
        """
        return self.listen.packets()

    def sessionPort(self):
        return self.reactor.ports[-1]

    def answeredSession(self, peer):
        """
        Start a transfer of C{sub/a.bin} (two blocks) for C{peer} and ACK
        its first block: a session whose client has answered.
        """
        self.server.datagramReceived(rrq(b"sub/a.bin"), peer)
        self.reactor.ports[-1].protocol.datagramReceived(wire.encodeAck(1), peer)


class DispatchTests(ServerMixin, SynchronousTestCase):
    """
    Requests on the listen port.
    """

    def setUp(self):
        self.makeServer()

    def test_read(self):
        """
        If a client asks for a file, DATA 1 comes from a new port and the
        listen port says nothing.
        """
        self.server.datagramReceived(rrq(b"hello.txt"), CLIENT)
        self.assertEqual(self.answers(), [])
        port = self.sessionPort()
        [(packet, addr)] = port.packets()
        self.assertEqual((packet, addr), (wire.Data(1, b"hello world"), CLIENT))
        port.protocol.datagramReceived(wire.encodeAck(1), CLIENT)
        self.assertEqual(self.stats[0].outcome, "complete")
        self.assertEqual(self.stats[0].path, "hello.txt")
        self.assertEqual(self.server.sessions, {})

    def test_options(self):
        """
        If the request has options, the session starts with an OACK.
        """
        self.server.datagramReceived(rrq(b"sub/a.bin", blksize="100", tsize="0",
                                         windowsize="4", bogus="1"), CLIENT)
        [(packet, addr)] = self.sessionPort().packets()
        self.assertEqual(packet, wire.OptionAck([("blksize", "100"), ("tsize", "1000"),
                                                 ("windowsize", "4")]))

    def test_notFound(self):
        """
        If the file does not exist, ERROR 1 comes from the listen port.
        """
        self.server.datagramReceived(rrq(b"nope"), CLIENT)
        [(packet, addr)] = self.answers()
        self.assertEqual((packet.code, addr), (wire.ERR_FILE_NOT_FOUND, CLIENT))
        self.assertEqual(self.reactor.ports, [])
        self.assertEqual(self.server._perClient, {})

    def test_mode(self):
        """
        If the mode is neither octet nor netascii, ERROR 4.
        """
        self.server.datagramReceived(rrq(b"hello.txt", mode="mail"), CLIENT)
        self.assertEqual(self.answers()[0][0].code, wire.ERR_ILLEGAL_OP)

    def test_netascii(self):
        """
        If the mode is netascii, the file is converted.
        """
        with open(os.path.join(self.root, "t.txt"), "wb") as f:
            f.write(b"a\nb\n")
        self.server.datagramReceived(rrq(b"t.txt", mode="netascii"), CLIENT)
        [(packet, addr)] = self.sessionPort().packets()
        self.assertEqual(packet.payload, b"a\r\nb\r\n")

    def test_duplicateRequest(self):
        """
        If the client repeats its request while the session runs, no second
        session starts.
        """
        self.server.datagramReceived(rrq(b"hello.txt"), CLIENT)
        self.server.datagramReceived(rrq(b"hello.txt"), CLIENT)
        self.assertEqual(len(self.reactor.ports), 1)

    def test_writeDisabled(self):
        """
        If uploads are disabled, a WRQ gets ERROR 2.
        """
        self.server.datagramReceived(wire.WriteRequest(b"x").to_wire(), CLIENT)
        self.assertEqual(self.answers()[0][0].code, wire.ERR_ACCESS_VIOLATION)

    def test_notRequests(self):
        """
        If DATA, ACK, ERROR or OACK reach the listen port, they are dropped
        silently.
        """
        for datagram in [wire.encodeAck(1), wire.encodeData(1, b"x"),
                         wire.Error(0, "x").to_wire(), wire.OptionAck([]).to_wire()]:
            self.server.datagramReceived(datagram, CLIENT)
        self.assertEqual(self.answers(), [])

    def test_virtualFile(self):
        """
        If a virtual file is registered, it is served before the directory.
        """
        self.virtual.register("hello.txt", lambda request, match: b"generated for %s" % (
            request.peer[0].encode(),))
        self.server.datagramReceived(rrq(b"/hello.txt"), CLIENT)
        [(packet, addr)] = self.sessionPort().packets()
        self.assertEqual(packet.payload, b"generated for 127.0.0.1")

    def test_resolverCrash(self):
        """
        If a resolver raises something unexpected, the client gets ERROR 0,
        the failure is logged, and the server goes on.
        """
        class Broken:
            def resolve(self, request):
                raise RuntimeError("boom")
        self.chain.resolvers.insert(0, Broken())
        self.server.datagramReceived(rrq(b"hello.txt"), CLIENT)
        self.assertEqual(self.answers()[0][0], wire.Error(0, "server error"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        del self.chain.resolvers[0]
        self.server.datagramReceived(rrq(b"hello.txt"), ("127.0.0.1", 1))
        self.assertEqual(len(self.reactor.ports), 1)


class MalformedTests(ServerMixin, SynchronousTestCase):
    """
    Malformed datagrams to the listen port.
    """

    def test_table(self):
        """
        If any malformed datagram arrives, nothing raises, nothing is
        logged as an error, and the server keeps serving.
        """
        from tests.test_tftp_wire import MALFORMED
        self.makeServer()
        extra = [
            ("options without value", b"\x00\x01hello.txt\x00octet\x00blksize\x00"),
            ("duplicate options", b"\x00\x01hello.txt\x00octet\x00blksize\x00512\x00"
                                  b"blksize\x00600\x00"),
            ("huge option value", b"\x00\x01hello.txt\x00octet\x00blksize\x00" +
             b"9" * 400 + b"\x00"),
            ("not utf-8 name", b"\x00\x01\xff\xfe\x00octet\x00"),
            ("over 512 bytes", b"\x00\x01" + b"x/" * 400 + b"\x00octet\x00"),
        ]
        for i, (name, datagram) in enumerate(MALFORMED + extra):
            self.server.datagramReceived(datagram, ("127.0.0.1", 1000 + i))
        self.assertEqual(self.flushLoggedErrors(), [])
        before = len(self.reactor.ports)
        self.server.datagramReceived(rrq(b"hello.txt"), CLIENT)
        self.assertEqual(len(self.reactor.ports), before + 1)
        [(packet, addr)] = self.sessionPort().packets()
        self.assertEqual(packet.payload, b"hello world")


class ConfinementTests(ServerMixin, SynchronousTestCase):
    """
    Path traversal: every escape is refused with ERROR 1 or 2.
    """

    def test_table(self):
        """
        If a name tries to leave the root (dot-dot, absolute, backslashes,
        NUL, control characters, symlinks out, over-long), the client gets
        ERROR 2 (or 1 when the name ends up naming nothing), no session
        starts, and the refusal is logged.
        """
        self.makeServer()
        outside = os.path.abspath(self.mktemp())
        os.makedirs(outside)
        with open(os.path.join(outside, "secret"), "wb") as f:
            f.write(b"secret")
        os.symlink(os.path.join(outside, "secret"), os.path.join(self.root, "link"))
        os.symlink(outside, os.path.join(self.root, "dirlink"))
        table = [
            (b"../etc/passwd", 2),
            (b"sub/../../etc/passwd", 2),
            (b"..\\..\\windows\\win.ini", 2),
            (b"sub\\..\\..\\x", 2),
            (b"/etc/passwd", 1),          # absolute: read below the root, not there
            (b"\\etc\\passwd", 1),
            (b"link", 2),
            (b"dirlink/secret", 2),
            (b"a" * 2000, 2),
            (b"a\x01b", 2),
            (b"/", 1),
            (b".", 1),
        ]
        for i, (name, code) in enumerate(table):
            addr = ("127.0.0.1", 2000 + i)
            self.server.datagramReceived(rrq(name), addr)
            answers = self.answers()
            self.assertEqual([(p.opcode, p.code, a) for p, a in answers],
                             [(wire.ERROR, code, addr)], name)
        self.assertEqual(self.reactor.ports, [])
        self.assertEqual(self.server._perClient, {})
        # NUL inside a name cannot reach the server (it ends the string):
        # what is left is a different, missing name.
        self.server.datagramReceived(b"\x00\x01hello\x00.txt\x00octet\x00", CLIENT)
        self.assertEqual(self.answers()[0][0].opcode, wire.ERROR)

    def test_symlinkInside(self):
        """
        If a symlink stays inside the root, it is followed.
        """
        self.makeServer()
        os.symlink("sub/a.bin", os.path.join(self.root, "alias"))
        self.server.datagramReceived(rrq(b"alias"), CLIENT)
        self.assertEqual(self.sessionPort().packets()[0][0].payload, b"A" * 512)


class LimitTests(ServerMixin, SynchronousTestCase):
    """
    Session limits.
    """

    def test_perClient(self):
        """
        If one address has max_sessions_per_client transfers in flight (whose
        clients answered), its next request gets ERROR 0; other addresses
        are served; when one ends, the address is served again.
        """
        self.makeServer(max_sessions_per_client=2)
        self.answeredSession(("127.0.0.1", 1))
        self.answeredSession(("127.0.0.1", 2))
        self.server.datagramReceived(rrq(b"hello.txt"), ("127.0.0.1", 3))
        [(packet, addr)] = self.answers()
        self.assertEqual((packet.code, addr), (0, ("127.0.0.1", 3)))
        self.server.datagramReceived(rrq(b"hello.txt"), ("127.0.0.2", 3))
        self.assertEqual(len(self.reactor.ports), 3)
        first = self.reactor.ports[0]
        first.protocol.datagramReceived(wire.encodeAck(2), ("127.0.0.1", 1))
        self.server.datagramReceived(rrq(b"hello.txt"), ("127.0.0.1", 4))
        self.assertEqual(len(self.reactor.ports), 4)

    def test_total(self):
        """
        If max_sessions transfers are in flight (whose clients answered),
        the next request gets ERROR 0.
        """
        self.makeServer(max_sessions=2)
        for i in range(2):
            self.answeredSession(("127.0.0.%d" % (i + 1,), 1))
        self.server.datagramReceived(rrq(b"hello.txt"), ("127.0.0.3", 1))
        self.assertEqual(len(self.reactor.ports), 2)
        self.assertEqual(self.answers()[0][0].code, 0)

    def test_timeoutFreesSlot(self):
        """
        If a client vanishes, its slot is free again after the session's
        retries, and its port is closed.
        """
        self.makeServer(max_sessions=1, retries=2, timeout=1.0)
        self.server.datagramReceived(rrq(b"hello.txt"), ("127.0.0.1", 1))
        self.reactor.pump([1] * 20)
        self.assertEqual(self.server.sessions, {})
        self.assertFalse(self.reactor.ports[0].listening)
        self.assertEqual(self.stats[0].outcome, "timeout")
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.server.datagramReceived(rrq(b"hello.txt"), ("127.0.0.2", 1))
        self.assertEqual(len(self.reactor.ports), 2)

    def test_transferTimeLimit(self):
        """
        If a client keeps a transfer alive by ACKing just before every
        timeout, it gets an ERROR when max_transfer_time has passed, the
        session ends as a timeout, and its slot and port are freed.
        """
        self.makeServer(max_transfer_time=10.0, timeout=1.0, blksize_max=512)
        with open(os.path.join(self.root, "big.bin"), "wb") as f:
            f.write(b"B" * 512 * 100)
        self.server.datagramReceived(rrq(b"big.bin"), ("127.0.0.1", 1))
        port = self.sessionPort()
        for block in range(1, 12):
            self.reactor.advance(0.95)
            port.protocol.datagramReceived(wire.encodeAck(block), ("127.0.0.1", 1))
        sent = [wire.decode(d) for d, a in port.written]
        self.assertIsInstance(sent[-1], wire.Error)
        self.assertIn(b"time limit", sent[-1].message.encode()
                      if isinstance(sent[-1].message, str) else sent[-1].message)
        self.assertEqual(self.stats[0].outcome, "timeout")
        self.assertEqual(self.server.sessions, {})
        self.assertFalse(port.listening)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_noTransferTimeLimit(self):
        """
        If max_transfer_time is 0 there is no limit: a slow transfer goes
        on.
        """
        self.makeServer(max_transfer_time=0, timeout=1.0)
        self.server.datagramReceived(rrq(b"sub/a.bin"), ("127.0.0.1", 1))
        port = self.sessionPort()
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)
        for block in (1, 2):
            self.reactor.advance(0.5)
            port.protocol.datagramReceived(wire.encodeAck(block), ("127.0.0.1", 1))
        self.assertEqual(self.stats[0].outcome, "complete")

    def test_cancelAll(self):
        """
        If the server is shut down, every session stops and closes its port.
        """
        self.makeServer()
        self.server.datagramReceived(rrq(b"hello.txt"), ("127.0.0.1", 1))
        self.server.datagramReceived(rrq(b"hello.txt"), ("127.0.0.1", 2))
        self.server.cancelAll()
        self.assertEqual(self.server.sessions, {})
        self.assertEqual([p.listening for p in self.reactor.ports], [False, False])
        self.assertEqual(self.reactor.getDelayedCalls(), [])


@implementer(IOptionExtension)
class Doubler:
    """
    An extension that answers C{double} with a window twice the negotiated
    one.
    """

    def negotiate(self, request, accepted, limits, negotiated):
        if "double" not in request.options:
            return None
        return [("double", "1")], lambda accepted: FixedWindow(accepted["windowsize"] * 2)


class HookTests(ServerMixin, SynchronousTestCase):
    """
    The places other subsystems plug in.
    """

    def setUp(self):
        self.makeServer()

    def test_requestHandler(self):
        """
        If a request handler takes a request, no unicast session starts and
        the handler gets the request and the source.
        """
        taken = []

        class Handler:
            def handleRequest(self, server, request, source, packet):
                if "multicast" in request.options:
                    taken.append((request.path, source.size))
                    source.close()
                    return True
                return False

        self.server.requestHandlers.append(Handler())
        self.server.datagramReceived(rrq(b"sub/a.bin", multicast=""), CLIENT)
        self.assertEqual(taken, [("sub/a.bin", 1000)])
        self.assertEqual(self.reactor.ports, [])
        self.assertEqual(self.server._perClient, {})
        self.server.datagramReceived(rrq(b"sub/a.bin"), CLIENT)
        self.assertEqual(len(self.reactor.ports), 1)

    def test_extension(self):
        """
        If an extension answers, its options join the OACK and its window
        policy drives the session.
        """
        self.server.extensions.append(Doubler())
        self.server.datagramReceived(rrq(b"sub/a.bin", blksize="8", windowsize="3",
                                         double="yes"), CLIENT)
        port = self.sessionPort()
        [(oack, addr)] = port.packets()
        self.assertEqual(oack.options, [("blksize", "8"), ("windowsize", "3"), ("double", "1")])
        port.protocol.datagramReceived(wire.encodeAck(0), CLIENT)
        self.assertEqual(len(port.packets()), 6)

    def test_stats(self):
        """
        If a transfer ends, every stats callback gets its digest, and one
        line is logged at info.
        """
        events = []
        from twisted.logger import globalLogPublisher
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.server.datagramReceived(rrq(b"hello.txt"), CLIENT)
        self.sessionPort().protocol.datagramReceived(wire.encodeAck(1), CLIENT)
        [stats] = self.stats
        self.assertIsInstance(stats, SessionStats)
        digest = stats.asDict()
        self.assertEqual((digest["bytes"], digest["blocks"], digest["retransmits"]),
                         (11, 1, 0))
        lines = [e for e in events if "stats" in e]
        self.assertEqual(len(lines), 1)
        self.assertEqual(lines[0]["log_level"].name, "info")


class SwitchTests(ServerMixin, SynchronousTestCase):
    """
    C{tftp.fast_lane} and C{tftp.gso} reach the sessions (they were read
    from the environment before).
    """

    def test_defaults(self):
        """
        By default a session may take the fast lane (once its client has
        answered) and use GSO.
        """
        self.makeServer()
        self.server.datagramReceived(rrq(b"sub/a.bin"), CLIENT)
        session = self.server.sessions[CLIENT]
        self.assertIsNone(session.fastLane)  # not before the client answers
        session.datagramReceived(wire.encodeAck(1), CLIENT)
        self.assertTrue(session.fastLane())
        self.assertTrue(session.gso)

    def test_fastLaneOff(self):
        """
        If C{tftp.fast_lane} is false, sessions get no fast lane.
        """
        self.makeServer(fast_lane=False)
        self.answeredSession(CLIENT)
        self.assertIsNone(self.server.sessions[CLIENT].fastLane)

    def test_fastLaneOffByServer(self):
        """
        If the embedding code turns the server's C{fastLane} off, likewise.
        """
        self.makeServer()
        self.server.fastLane = False
        self.answeredSession(CLIENT)
        self.assertIsNone(self.server.sessions[CLIENT].fastLane)

    def test_gsoOff(self):
        """
        If C{tftp.gso} is false, sessions send without GSO.
        """
        self.makeServer(gso=False)
        self.server.datagramReceived(rrq(b"hello.txt"), CLIENT)
        self.assertFalse(self.server.sessions[CLIENT].gso)

    def test_schema(self):
        """
        Both keys are documented booleans of the C{tftp} section, true by
        default.
        """
        from provisioner.tftp.schema import SCHEMA
        for name in ("gso", "fast_lane"):
            key = SCHEMA.keys[name]
            self.assertIs(key.default, True)
            self.assertTrue(key.doc)
