# -*- test-case-name: tests.test_tftp_hostile -*-
"""
Tests for what a hostile peer on the provisioning network can do to TFTP
(issue 14, finding 6): requests from addresses that never asked (UDP is
spoofed at no cost) must not hold transfer slots for long, must not make
the server send much more than they cost, and RFC 2090 joins obey the
per-address limits too.

Deterministic (L{tests.fakes.FakeReactor}: a L{task.Clock} and fake UDP
ports), except L{LoopbackTests}: the appliance in a subprocess on
127.0.0.1, never-answering requests from plain UDP sockets, and curl.
"""

import os
import re
import socket
import subprocess
import time

from twisted.trial.unittest import SynchronousTestCase, TestCase

from provisioner.config import loadConfig
from provisioner.files import DirectoryResolver, ResolverChain
from provisioner.tftp import wire
from provisioner.tftp.multicast.service import MulticastHandler
from provisioner.tftp.server import TFTPServer
from provisioner.tftp.upload import UploadTarget
from tests.fakes import FakeDatagramPort, FakeReactor
from tests.netlab import Appliance, requireE2E

BIG = 512 * 40 + 7
LEGIT = ("198.18.0.200", 2070)

# The datagram of the report: 31 bytes, timeout 255, never answered.
RRQ_TIMEOUT_255 = b"\x00\x01pxelinux.0\x00octet\x00timeout\x00255\x00"


def rrq(name, mode="octet", **options):
    return wire.ReadRequest(name, mode, list(options.items())).to_wire()


class HostileMixin:
    """
    A server on a fake reactor serving a directory with C{pxelinux.0}
    (C{BIG} bytes) and C{small} (11 bytes).
    """

    def makeServer(self, *overrides):
        self.root = self.mktemp()
        os.makedirs(self.root)
        with open(os.path.join(self.root, "pxelinux.0"), "wb") as f:
            f.write(bytes(range(256)) * (BIG // 256) + b"x" * (BIG % 256))
        with open(os.path.join(self.root, "small"), "wb") as f:
            f.write(b"hello world")
        pairs = [("tftp.mtu", 0)] + list(overrides)
        self.config = loadConfig(None, pairs)["tftp"]
        self.reactor = FakeReactor()
        chain = ResolverChain([DirectoryResolver(self.root, notFoundIsFinal=True)])
        self.server = TFTPServer(chain, self.config, self.reactor)
        self.server.fastLane = False
        self.listen = FakeDatagramPort(self.server, port=69)
        self.server.makeConnection(self.listen)
        self.stats = []
        self.server.statsCallbacks.append(self.stats.append)
        return self.server

    def passTime(self, seconds):
        """
        Let C{seconds} of fake time pass, from one timer to the next, each
        run on time (one C{advance} would run them all at the end).
        """
        reactor = self.reactor
        end = reactor.seconds() + seconds
        while True:
            due = [c.getTime() for c in reactor.getDelayedCalls()]
            now = reactor.seconds()
            if not due or min(due) > end:
                reactor.advance(max(0.0, end - now))
                return
            reactor.advance(max(0.0, min(due) - now))

    def sentTo(self, peer):
        """
        The datagrams sent to C{peer} from every port (listen port and
        session ports), in order.
        """
        out = [d for d, a in self.listen.written if a == peer]
        for port in self.reactor.ports:
            out.extend(d for d, a in port.written if a == peer)
        return out

    def portOf(self, peer):
        return self.server.sessions[peer].transport

    def fetch(self, peer, name=b"pxelinux.0", **options):
        """
        A well-behaved client: ask, answer every datagram at once, and
        return the file (or L{None} when refused).
        """
        self.server.datagramReceived(rrq(name, **options), peer)
        session = self.server.sessions.get(peer)
        if session is None:
            return None
        port = session.transport
        got = []
        while not session.done:
            packets = [p for p, a in port.packets() if a == peer]
            if not packets:
                self.reactor.advance(0.01)
                continue
            for packet in packets:
                if isinstance(packet, wire.OptionAck):
                    session.datagramReceived(wire.encodeAck(0), peer)
                elif isinstance(packet, wire.Data):
                    got.append(packet.payload)
                    session.datagramReceived(wire.encodeAck(packet.block), peer)
        return b"".join(got)

    def expected(self, name="pxelinux.0"):
        with open(os.path.join(self.root, name), "rb") as f:
            return f.read()


class SlotTests(HostileMixin, SynchronousTestCase):
    """
    Never-answering requests and the transfer slots.
    """

    def fill(self, addresses=3, perAddress=4):
        """
        Take every slot with never-answering C{timeout 255} requests of 31
        bytes from several addresses.

        @return: the spoofed peers.
        """
        peers = [("198.18.1.%d" % (a,), 1000 + p) for a in range(1, addresses + 1)
                 for p in range(perAddress)]
        for peer in peers:
            self.server.datagramReceived(RRQ_TIMEOUT_255, peer)
        self.assertEqual(len(self.server.sessions), len(peers))
        self.assertEqual(self.listen.written, [])
        return peers

    def test_timeout255SlotsFreedInSeconds(self):
        """
        If every slot is held by never-answering C{timeout 255} requests
        from several addresses, every one of them has given its slot back
        within 3 x C{tftp.unanswered_timeout} (6 s), not after
        C{max_transfer_time} (an hour): ports closed, no timer left, one
        C{timeout} line each, and a legitimate client is then served.
        """
        self.makeServer(("tftp.max_sessions", 12), ("tftp.max_sessions_per_client", 4))
        peers = self.fill()
        self.passTime(5.9)
        self.assertEqual(len(self.server.sessions), 12)
        self.passTime(0.11)
        self.assertEqual(self.server.sessions, {})
        self.assertEqual(self.server._perClient, {})
        self.assertEqual([s.outcome for s in self.stats], ["timeout"] * len(peers))
        self.assertFalse(any(p.listening for p in self.reactor.ports))
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(self.fetch(LEGIT, blksize="1468", tsize="0"), self.expected())

    def test_timeout255LegitimateServedAtOnce(self):
        """
        If every slot is held by never-answering C{timeout 255} requests
        from several addresses, a legitimate client (loopback included) is
        served at once: its request takes the slot of the oldest session
        that was never answered, which ends silently as a C{timeout}.
        """
        self.makeServer(("tftp.max_sessions", 12), ("tftp.max_sessions_per_client", 4))
        peers = self.fill()
        before = {peer: len(self.sentTo(peer)) for peer in peers}
        self.assertEqual(self.fetch(("127.0.0.1", 4000)), self.expected())
        self.assertEqual(self.fetch(LEGIT, timeout="255", blksize="1468"), self.expected())
        self.assertEqual(self.reactor.seconds(), 0)
        evicted = [s for s in self.stats if s.peer in peers]
        # the first legitimate transfer was over before the second came
        self.assertEqual([s.peer for s in evicted], peers[:1])
        self.assertEqual({s.outcome for s in evicted}, {"timeout"})
        self.assertIn("never answered", evicted[0].detail)
        self.assertEqual({peer: len(self.sentTo(peer)) for peer in peers}, before)
        self.assertEqual(len(self.server.sessions), 11)

    def test_perClientSpoofedPorts(self):
        """
        If a peer fills an address's C{max_sessions_per_client} with
        never-answering requests from spoofed ports, the real client at
        that address is served at once.
        """
        self.makeServer(("tftp.max_sessions_per_client", 4))
        victim = "198.18.0.50"
        for port in range(4):
            self.server.datagramReceived(RRQ_TIMEOUT_255, (victim, 5000 + port))
        self.assertEqual(self.fetch((victim, 2070)), self.expected())
        self.assertEqual(self.listen.written, [])

    def test_answeredNeverEvicted(self):
        """
        If the slots are held by transfers whose clients answered, a new
        request is refused (ERROR 0): only sessions never answered give
        their slot up.
        """
        self.makeServer(("tftp.max_sessions", 2))
        for i in range(2):
            peer = ("198.18.2.%d" % (i,), 1)
            self.server.datagramReceived(rrq(b"pxelinux.0"), peer)
            self.portOf(peer).protocol.datagramReceived(wire.encodeAck(1), peer)
        self.server.datagramReceived(rrq(b"small"), LEGIT)
        [(packet, addr)] = self.listen.packets()
        self.assertEqual((packet.code, addr), (wire.ERR_NOT_DEFINED, LEGIT))
        self.assertEqual(len(self.server.sessions), 2)
        self.assertEqual(self.stats, [])

    def test_answeringClientKeepsItsTimeout(self):
        """
        If a client negotiated C{timeout 255} and answers, the OACK echoes
        255 and, once it has answered, the server waits 255 s before
        sending again (RFC 2349 unchanged); before it answered, the OACK
        was resent after 2 s.
        """
        self.makeServer()
        self.server.datagramReceived(RRQ_TIMEOUT_255, LEGIT)
        port = self.portOf(LEGIT)
        [(oack, addr)] = port.packets()
        self.assertEqual(oack.options, [("timeout", "255")])
        self.passTime(2.0)
        self.assertEqual([p for p, a in port.packets()], [oack])
        port.protocol.datagramReceived(wire.encodeAck(0), LEGIT)
        [(data, addr)] = port.packets()
        self.assertEqual(data.block, 1)
        self.passTime(254.8)
        self.assertEqual(port.packets(), [])
        self.passTime(0.3)
        self.assertEqual([p.block for p, a in port.packets()], [1])


class AmplificationTests(HostileMixin, SynchronousTestCase):
    """
    What a request that is never answered makes the server send, against
    its own size.
    """

    def ratio(self, request, peer=("198.18.3.1", 1069), seconds=60):
        """
        Send C{request} from C{peer}, never answer, and let the session
        run out.

        @return: C{(bytes sent to peer / bytes of the request, datagrams)}.
        """
        self.server.datagramReceived(request, peer)
        self.passTime(seconds + 0.05)
        self.assertNotIn(peer, self.server.sessions)
        sent = self.sentTo(peer)
        return sum(len(d) for d in sent) / len(request), sent

    def test_withOptions(self):
        """
        If a request with options is never answered, at most 3 times its
        bytes go back to its address (the OACK first, resent within that
        budget), whatever the options, the size of the file or the
        timeout asked for; no DATA is ever sent.
        """
        self.makeServer()
        with open(os.path.join(self.root, "a"), "wb") as f:
            f.truncate(5 * 10 ** 9)
        table = [
            RRQ_TIMEOUT_255,
            rrq(b"pxelinux.0", blksize="1468"),
            rrq(b"pxelinux.0", tsize="0", blksize="1468"),
            rrq(b"a", tsize="0"),
            rrq(b"a", tsize="0", timeout="1"),
            rrq(b"pxelinux.0", windowsize="64", blksize="65464"),
            rrq(b"pxelinux.0", timeout="255", blksize="1468", tsize="0", windowsize="8"),
        ]
        for i, request in enumerate(table):
            ratio, sent = self.ratio(request, peer=("198.18.3.%d" % (i,), 1069))
            self.assertLessEqual(ratio, 3.0, request)
            self.assertTrue(all(wire.decode(d).opcode == wire.OACK for d in sent), request)
            self.assertIn(len(sent), (1, 2), request)
        self.assertEqual({s.outcome for s in self.stats}, {"timeout"})

    def test_timeout255Ratio(self):
        """
        If the 31-byte C{timeout 255} request of the report is never
        answered, it gets two 14-byte OACKs (0.9 x its size), the second
        after 2 s, and its slot is free 6 s after it came.
        """
        self.makeServer()
        ratio, sent = self.ratio(RRQ_TIMEOUT_255, seconds=6)
        self.assertEqual(len(RRQ_TIMEOUT_255), 31)
        self.assertEqual([len(d) for d in sent], [14, 14])
        self.assertLess(ratio, 1)
        self.assertAlmostEqual(self.stats[0].duration, 6.0, delta=1e-6)

    def test_plain(self):
        """
        If a plain RRQ (no options) is never answered, DATA 1 goes once
        and is never retransmitted by the timer (the ratio the protocol
        cannot go below: 516 / 19 = 27 for C{pxelinux.0}); the session is
        given up after 3 x C{tftp.timeout} (3 s).
        """
        self.makeServer()
        request = rrq(b"pxelinux.0")
        ratio, sent = self.ratio(request, seconds=3)
        self.assertEqual([len(d) for d in sent], [516])
        self.assertEqual(ratio, 516 / len(request))
        self.assertEqual(len(request), 19)
        self.assertEqual(self.stats[0].outcome, "timeout")
        self.assertEqual(self.stats[0].detail, "no answer to DATA 1")

    def test_plainSmallFile(self):
        """
        If DATA 1 fits the budget (a small file), the timer resends it once
        like an OACK.
        """
        self.makeServer()
        request = rrq(b"small")
        ratio, sent = self.ratio(request)
        self.assertEqual(sent, [wire.encodeData(1, b"hello world")] * 2)
        self.assertLessEqual(ratio, 3)

    def test_repeatedRequest(self):
        """
        If a client that has not answered repeats its request (it lost DATA
        1), it gets DATA 1 again at once, one datagram per request (the
        ratio stays that of the first answer), and the session is not
        kept any longer; once it answers, the transfer goes on and repeats
        are ignored.
        """
        self.makeServer()
        request = rrq(b"pxelinux.0")
        peer = ("198.18.3.9", 1069)
        self.server.datagramReceived(request, peer)
        for i in range(4):
            self.passTime(0.5)
            self.server.datagramReceived(request, peer)
        self.assertEqual(len(self.reactor.ports), 1)
        self.assertEqual(len(self.sentTo(peer)), 5)
        self.passTime(1.05)
        self.assertNotIn(peer, self.server.sessions)
        self.assertAlmostEqual(self.stats[0].duration, 3.0, delta=1e-6)
        # A client that lost DATA 1 and asked again completes.
        self.assertEqual(self.reactor.ports[0].listening, False)
        lossy = ("198.18.3.10", 1069)
        self.server.datagramReceived(request, lossy)
        port = self.portOf(lossy)
        port.packets()
        self.passTime(0.8)
        self.server.datagramReceived(request, lossy)
        [(data, addr)] = port.packets()
        self.assertEqual(data.block, 1)
        port.protocol.datagramReceived(wire.encodeAck(1), lossy)
        self.server.datagramReceived(request, lossy)
        self.assertEqual([p.block for p, a in port.packets()], [2])

    def test_errorsCut(self):
        """
        If a request is refused, the ERROR from the listen port is at most
        3 times the request's size (its message cut), and still an ERROR.
        """
        self.makeServer()
        table = [
            (b"\x00\x01a\x00mail\x00", wire.ERR_ILLEGAL_OP),
            (b"\x00\x01" + b"../x" + b"\x00octet\x00", wire.ERR_ACCESS_VIOLATION),
            (b"\x00\x01nope\x00octet\x00", wire.ERR_FILE_NOT_FOUND),
        ]
        for i, (request, code) in enumerate(table):
            peer = ("198.18.4.%d" % (i,), 1)
            self.server.datagramReceived(request, peer)
            [datagram] = self.sentTo(peer)
            self.assertEqual(wire.decode(datagram).code, code)
            self.assertLessEqual(len(datagram), 3 * len(request))
        self.assertEqual(self.reactor.ports, [])


class UnansweredUploadTests(HostileMixin, SynchronousTestCase):
    """
    Write requests that are never answered, as read requests: the cap on
    their timeout and their retransmissions comes from the server.
    """

    def test_timeout255UploadFreedInSeconds(self):
        """
        If a write request asks for C{timeout 255} and never sends DATA, its
        session gives its slot back within 3 x C{tftp.unanswered_timeout}
        (6 s), and no more than 3 times the request's bytes went back.
        """
        self.makeServer(("tftp.write.enabled", True))
        self.server.uploads = UploadTarget(self.mktemp(), clock=self.reactor)
        peer = ("198.18.3.7", 1069)
        request = wire.WriteRequest(b"up.bin", "octet", [("timeout", "255")]).to_wire()
        self.server.datagramReceived(request, peer)
        self.assertIn(peer, self.server.sessions)
        self.passTime(6.1)
        self.assertNotIn(peer, self.server.sessions)
        sent = sum(len(d) for d in self.sentTo(peer))
        self.assertLessEqual(sent, 3 * len(request))
        self.assertEqual([s.outcome for s in self.stats], ["timeout"])


class MulticastJoinTests(HostileMixin, SynchronousTestCase):
    """
    RFC 2090 joins from spoofed ports.
    """

    def makeMulticast(self, *overrides):
        self.makeServer(("tftp.multicast.enabled", True),
                        ("tftp.multicast.start_max_wait", 0), *overrides)
        self.handler = MulticastHandler(self.reactor, self.config, "127.0.0.1")
        self.server.requestHandlers.append(self.handler)
        self.registry = self.handler.registry

    def join(self, peer, **options):
        """
        Ask for C{pxelinux.0} by multicast from C{peer}.

        @return: the request's size.
        """
        options.setdefault("blksize", "1024")
        request = rrq(b"pxelinux.0", multicast="", **options)
        self.server.datagramReceived(request, peer)
        return len(request)

    def test_perAddressLimit(self):
        """
        If joins come from many ports of one address, only
        C{max_sessions_per_client} of them join; the others get ERROR 0
        from the listen port (no more than 3x their size), and a unicast
        request from that address is refused too while they are in; a
        joined client repeating its request gets its OACK again.
        """
        self.makeMulticast(("tftp.max_sessions_per_client", 4))
        spoofer = "198.18.5.1"
        for port in range(40):
            size = self.join((spoofer, 3000 + port))
        [session] = self.registry.sessions
        self.assertEqual(len(session.clients), 4)
        self.assertEqual(self.registry.perHost, {spoofer: 4})
        self.assertEqual(self.server._perClient, {spoofer: 4})
        self.assertTrue(all(len(d) <= 3 * size for d, a in self.listen.written))
        refusals = self.listen.packets()
        self.assertEqual(len(refusals), 36)
        self.assertEqual({p.code for p, a in refusals}, {wire.ERR_NOT_DEFINED})
        self.server.datagramReceived(rrq(b"small"), (spoofer, 9999))
        [(packet, addr)] = self.listen.packets()
        self.assertEqual(addr, (spoofer, 9999))
        # A client in the session that asks again gets its OACK again, not
        # a refusal, and still counts once.
        before = len(self.sentTo((spoofer, 3001)))
        self.join((spoofer, 3001))
        self.assertEqual(self.listen.packets(), [])
        self.assertEqual(len(self.sentTo((spoofer, 3001))), before + 1)
        self.assertEqual(self.server._perClient, {spoofer: 4})
        # Other addresses join.
        self.join(LEGIT)
        self.assertEqual(len(session.clients), 5)

    def test_neverAckingDroppedQuickly(self):
        """
        If joined clients never acknowledge anything, each is dropped
        C{2 x tftp.timeout} (2 s) after it is made master, without an
        ERROR, even when it asked for C{timeout 255} (then 2 x 2 s, not
        4 x 255 s); each was sent OACKs of at most 3x its request; a
        legitimate client that joined behind four of them is master after
        10 s, and the slots they held are free.
        """
        self.makeMulticast(("tftp.max_sessions_per_client", 4))
        spoofer = "198.18.5.2"
        sizes = [self.join((spoofer, 3000))]
        for port in range(1, 4):
            sizes.append(self.join((spoofer, 3000 + port),
                                   timeout="255" if port == 1 else "1"))
        self.join(LEGIT)
        [session] = self.registry.sessions
        self.assertEqual(session.master.peer, (spoofer, 3000))
        self.passTime(1.9)
        self.assertEqual(session.master.peer, (spoofer, 3000))
        self.passTime(0.1)
        self.assertEqual(session.master.peer, (spoofer, 3001))
        self.passTime(3.9)
        self.assertEqual(session.master.peer, (spoofer, 3001))
        self.passTime(0.1)
        self.assertEqual(session.master.peer, (spoofer, 3002))
        self.passTime(2.0)
        self.assertEqual(session.master.peer, (spoofer, 3003))
        self.passTime(2.0)
        self.assertEqual(session.master.peer, LEGIT)
        self.assertEqual(self.registry.perHost, {LEGIT[0]: 1})
        self.assertEqual(self.server._perClient, {LEGIT[0]: 1})
        for port in range(4):
            sent = self.sentTo((spoofer, 3000 + port))
            self.assertTrue(all(wire.decode(d).opcode == wire.OACK for d in sent), sent)
            self.assertLessEqual(sum(len(d) for d in sent), 3 * sizes[port])
        # The legitimate master answers: the stream starts.
        session.datagramReceived(wire.encodeAck(0), LEGIT)
        self.assertTrue(any(a == session.group for d, a in session._port.written))
        session.close()
        self.assertEqual(self.server._perClient, {})
        self.assertEqual(self.registry.perHost, {})


class LoopbackTests(TestCase):
    """
    The appliance on 127.0.0.1 (a subprocess), never-answering requests
    from plain UDP sockets, and curl.
    """

    timeout = 120

    def setUp(self):
        requireE2E(tools=("curl",))
        self.work = os.path.abspath(self.mktemp())
        self.root = os.path.join(self.work, "root")
        os.makedirs(self.root)
        self.data = os.urandom(200000)
        with open(os.path.join(self.root, "pxelinux.0"), "wb") as f:
            f.write(self.data)
        config = ("tftp:\n  address: 127.0.0.1\n  port: 0\n  root: %s\n"
                  "  max_sessions: 16\n  max_sessions_per_client: 64\n" % (self.root,))
        self.app = Appliance(self.work, config)
        self.addCleanup(self.app.stop)
        self.app.start()
        self.port = int(self.app.waitLog(r"TFTP listening on \S+ port (\d+)").group(1))

    def test_timeout255(self):
        """
        If every slot is held by never-answering C{timeout 255} requests
        from 127.0.0.1, curl is served at once, every one of those sessions
        has ended within about 6 s, and what they were sent is at most 3x
        what they sent.
        """
        sockets = []
        for i in range(16):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.addCleanup(s.close)
            s.bind(("127.0.0.1", 0))
            s.sendto(RRQ_TIMEOUT_255, ("127.0.0.1", self.port))
            sockets.append(s)
        ports = [s.getsockname()[1] for s in sockets]
        started = time.monotonic()
        out = os.path.join(self.work, "out")
        proc = subprocess.run(["curl", "-sS", "--max-time", "5", "-o", out,
                               "tftp://127.0.0.1:%d/pxelinux.0" % (self.port,)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        self.assertEqual(proc.returncode, 0, proc.stdout)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), self.data)
        self.assertLess(time.monotonic() - started, 3)
        for port in ports:
            self.app.waitLog(r"read pxelinux.0 127\.0\.0\.1:%d timeout:" % (port,), timeout=15)
        self.assertLess(time.monotonic() - started, 9)
        received = 0
        for s in sockets:
            s.setblocking(False)
            while True:
                try:
                    received += len(s.recv(65536))
                except BlockingIOError:
                    break
        self.assertLessEqual(received, 3 * len(RRQ_TIMEOUT_255) * len(sockets))
        self.assertEqual(len(re.findall(r"complete:", self.app.log())), 1)
