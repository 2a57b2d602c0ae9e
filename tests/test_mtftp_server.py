# -*- test-case-name: tests.test_mtftp_server -*-
"""
Tests for L{provisioner.tftp.multicast} sessions and registry, and the
multicast client against them, on the in-memory network of
L{tests.fakes} (deterministic: a seeded loss generator and a
L{task.Clock}).
"""

import os
import random
import struct

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from provisioner.config import loadConfig
from provisioner.client import mtftp as mclient
from provisioner.tftp import wire
from provisioner.tftp.multicast import codec, flowcontrol
from provisioner.tftp.multicast import registry as mregistry
from provisioner.tftp.multicast import repair as mrepair
from provisioner.tftp.multicast import service as mservice
from provisioner.tftp.multicast import session as msession
from tests.fakes import FakeNetwork, MemorySource, runUntil

SERVER = "10.0.0.1"


class _Output:
    def __init__(self):
        self.buf = bytearray()

    def write(self, offset, data):
        end = offset + len(data)
        if len(self.buf) < end:
            self.buf.extend(b"\0" * (end - len(self.buf)))
        self.buf[offset:end] = data

    def truncate(self, n):
        del self.buf[n:]
        self.buf.extend(b"\0" * (n - len(self.buf)))

    def close(self):
        pass


class _Listener(DatagramProtocol):
    """
    The listen port of a server stand-in: RRQs go to the registry.
    """

    def __init__(self, registry, files):
        self.registry = registry
        self.files = files

    def datagramReceived(self, datagram, addr):
        packet = wire.decode(datagram)
        name = packet.filename.decode()
        self.registry.request(name, packet.options, MemorySource(self.files[name], name), addr)


class Harness:
    """
    A server host with a registry, and client hosts.
    """

    def __init__(self, case, yaml="", files=None, seed=1, probe=None):
        self.case = case
        self.net = FakeNetwork(seed=seed)
        if "start_max_wait" not in yaml:
            # Start at once unless the test is about the delayed start.
            yaml = "    start_max_wait: 0\n" + yaml
        text = "tftp:\n  multicast:\n    enabled: true\n" + yaml
        self.config = loadConfig(text=text)["tftp"]
        self.registry = mregistry.MulticastRegistry(
            self.net.reactor(SERVER), self.config["multicast"], self.config, SERVER,
            probe=probe or (lambda: flowcontrol.Conditions()))
        self.files = files or {}
        self.net.bind(SERVER, 69, _Listener(self.registry, self.files))
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        case.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.hosts = 0

    def log(self):
        return [formatEvent(e) for e in self.events]

    def client(self, path, loss=0.0, **kw):
        self.hosts += 1
        host = "10.0.1.%d" % (self.hosts,)
        self.net.loss[host] = loss
        out = _Output()
        kw.setdefault("policy", mclient.RolePolicy(repair=False))
        c = mclient.MulticastClient(self.net.reactor(host), (SERVER, 69), path, out, **kw)
        c.out = out
        c.host = host
        return c

    def raw(self, host):
        """
        A raw UDP port on a host (a hand-driven client).
        """
        class _Raw(DatagramProtocol):
            def __init__(self):
                self.received = []

            def datagramReceived(self, data, addr):
                self.received.append((wire.decode(data), addr))
        proto = _Raw()
        port = self.net.bind(host, 0, proto)
        return proto, port

    def twoHandClients(self):
        """
        Two hand-driven clients (10.0.1.8 master, then 10.0.1.9) in one
        session of file C{f}: blksize 1000, windowsize 8, mcepoch.

        @return: C{(port8, port9, session, sessionAddress)}.
        """
        a, pa = self.raw("10.0.1.8")
        b, pb = self.raw("10.0.1.9")
        rrq = wire.ReadRequest(b"f", "octet", [("blksize", "1000"), ("windowsize", "8"),
                                               ("multicast", ""), ("mcepoch", "1")])
        for port in (pa, pb):
            port.write(rrq.to_wire(), (SERVER, 69))
            self.settle(0.001)
        return pa, pb, self.registry.sessions[0], a.received[0][1]

    def settle(self, seconds):
        """
        Let the network run for C{seconds} (in steps shorter than a hop).
        """
        end = self.net.clock.seconds() + seconds
        while self.net.clock.seconds() < end - 1e-9:
            self.net.clock.advance(min(self.net.latency / 2, end - self.net.clock.seconds()))

    def run(self, deferreds, limit=120):
        return runUntil(self.net, deferreds, limit)


def _data(n, seed=7):
    return random.Random(seed).randbytes(n) if hasattr(random.Random, "randbytes") \
        else os.urandom(n)


class _HandServer(DatagramProtocol):
    """
    A hand-driven server: records what the client's ACKs say.
    """

    def __init__(self, record):
        self.acks = []
        self.record = record
        self.peer = None

    def datagramReceived(self, data, addr):
        packet = wire.decode(data)
        if isinstance(packet, wire.Ack):
            self.acks.append(self.record(packet))
        self.peer = addr


def _handDriven(record=lambda packet: packet.block):
    """
    A multicast client (blksize 512, windowsize 8) on a fake network whose
    server at 10.0.0.9:69 the test drives by hand.

    @return: C{(net, client, acks, server, port, settle)}.
    """
    net = FakeNetwork()
    client = mclient.MulticastClient(net.reactor("10.0.1.1"), ("10.0.0.9", 69), "f",
                                     _Output(), blksize=512, windowsize=8)
    srv = _HandServer(record)
    port = net.bind("10.0.0.9", 69, srv)

    def settle(seconds):
        end = net.clock.seconds() + seconds
        while net.clock.seconds() < end - 1e-9:
            net.clock.advance(min(net.latency / 2, end - net.clock.seconds()))
    return net, client, srv.acks, srv, port, settle


class SessionTests(SynchronousTestCase):

    def test_oackAndGroup(self):
        """
        If a client asks for multicast, its OACK carries the session's
        blksize, tsize, C{multicast addr,port,1} (it is master) and
        C{mcepoch}; DATA then goes to the group from the session's port.
        """
        h = Harness(self, files={"f": b"a" * 3000})
        proto, port = h.raw("10.0.1.9")
        rrq = wire.ReadRequest(b"f", "octet", [("blksize", "1000"), ("tsize", "0"),
                                                ("multicast", ""), ("mcepoch", "1")])
        port.write(rrq.to_wire(), (SERVER, 69))
        h.settle(0.01)
        oack, session = proto.received[0]
        self.assertEqual(oack.options, [("blksize", "1000"), ("tsize", "3000"),
                                        ("multicast", "239.255.0.1,1758,1"),
                                        ("mcepoch", "1")])
        s = h.registry.sessions[0]
        self.assertEqual(session, (SERVER, s._port.port))
        self.assertEqual(s._port.ttl, 1)
        self.assertEqual(s._port.outgoingInterface, SERVER)
        port.write(wire.encodeAck(0, b"\x00\x00"), session)
        h.settle(0.01)
        data = [(d, a) for d, a in s._port.written if a == ("239.255.0.1", 1758)]
        self.assertEqual(len(data), 1)  # no windowsize: one block per ACK
        self.assertEqual(codec.decodeData32(data[0][0]), (1, b"a" * 1000))

    def test_plainClientNoEpoch(self):
        """
        If a client does not ask for C{mcepoch}, DATA has the RFC 1350
        framing and the OACK does not carry the extension.
        """
        h = Harness(self, files={"f": b"b" * 700})
        proto, port = h.raw("10.0.1.9")
        port.write(wire.ReadRequest(b"f", "octet", [("blksize", "512"), ("multicast", "")])
                   .to_wire(), (SERVER, 69))
        h.settle(0.01)
        oack, session = proto.received[0]
        self.assertEqual(oack.optionDict, {"blksize": "512",
                                           "multicast": "239.255.0.1,1758,1"})
        port.write(wire.encodeAck(0), session)
        h.settle(0.01)
        s = h.registry.sessions[0]
        self.assertEqual(wire.decode(s._port.written[-1][0]), wire.Data(1, b"b" * 512))

    def test_joinRunningSession(self):
        """
        If a second client asks for the same file with a blksize at least
        the session's, it joins the running session (same group, mc=0,
        the session's blksize in its OACK) and the join is logged.
        """
        h = Harness(self, files={"f": b"c" * 100000})
        a, pa = h.raw("10.0.1.8")
        b, pb = h.raw("10.0.1.9")
        pa.write(wire.ReadRequest(b"f", "octet", [("blksize", "1000"), ("multicast", "")])
                 .to_wire(), (SERVER, 69))
        h.settle(0.01)
        pb.write(wire.ReadRequest(b"f", "octet", [("blksize", "1400"), ("multicast", "")])
                 .to_wire(), (SERVER, 69))
        h.settle(0.01)
        self.assertEqual(len(h.registry.sessions), 1)
        oack = b.received[0][0]
        self.assertEqual(oack.optionDict, {"blksize": "1000",
                                           "multicast": "239.255.0.1,1758,0"})
        self.assertTrue(any("10.0.1.9" in t and "joined (2 client(s)" in t for t in h.log()))

    def test_differentOptionsOwnSession(self):
        """
        If a client asks for a smaller blksize than the running session's,
        or none at all (512), it gets its own session and group.
        """
        h = Harness(self, files={"f": b"d" * 100000})
        for i, opts in enumerate([[("blksize", "1000")], [("blksize", "600")], []]):
            p, port = h.raw("10.0.1.%d" % (10 + i,))
            port.write(wire.ReadRequest(b"f", "octet", opts + [("multicast", "")]).to_wire(),
                       (SERVER, 69))
            h.settle(0.01)
        self.assertEqual(sorted(s.blksize for s in h.registry.sessions), [512, 600, 1000])
        self.assertEqual(len({s.group for s in h.registry.sessions}), 3)

    def test_retransmittedRequest(self):
        """
        If a client repeats its RRQ (its OACK was lost), it gets the OACK
        again and is not added twice; the new source is closed.
        """
        h = Harness(self, files={"f": b"e" * 5000})
        p, port = h.raw("10.0.1.9")
        rrq = wire.ReadRequest(b"f", "octet", [("multicast", "")]).to_wire()
        port.write(rrq, (SERVER, 69))
        h.settle(0.01)
        port.write(rrq, (SERVER, 69))
        h.settle(0.01)
        s = h.registry.sessions[0]
        self.assertEqual(len(s.clients), 1)
        self.assertEqual(len(p.received), 2)

    def test_unknownTIDAndMalformed(self):
        """
        If a stranger sends an ACK to a session it gets ERROR 5; malformed
        datagrams are dropped; the session goes on.
        """
        h = Harness(self, files={"f": b"e" * 5000})
        p, port = h.raw("10.0.1.9")
        port.write(wire.ReadRequest(b"f", "octet", [("multicast", "")]).to_wire(),
                   (SERVER, 69))
        h.settle(0.01)
        session = p.received[0][1]
        q, qport = h.raw("10.0.1.10")
        qport.write(wire.encodeAck(3), session)
        for junk in (b"", b"\x00", b"\x00\x09zz", b"\x00\x04"):
            qport.write(junk, session)
            port.write(junk, session)
        h.settle(0.01)
        self.assertEqual(q.received[0][0].code, wire.ERR_UNKNOWN_TID)
        self.assertEqual(len(h.registry.sessions), 1)

    def test_errorLeaves(self):
        """
        If the only client sends ERROR, it leaves and the session ends,
        releasing its group and closing its source.
        """
        h = Harness(self, files={"f": b"e" * 5000})
        p, port = h.raw("10.0.1.9")
        port.write(wire.ReadRequest(b"f", "octet", [("multicast", "")]).to_wire(),
                   (SERVER, 69))
        h.settle(0.01)
        s = h.registry.sessions[0]
        port.write(wire.Error(0, "bye").to_wire(), p.received[0][1])
        h.settle(0.01)
        self.assertEqual(h.registry.sessions, [])
        self.assertEqual(len(h.registry.pool), 0)
        self.assertEqual(s.source.closed, 1)
        self.assertTrue(s.finished.called)

    def test_unexpectedRetransmitsLast(self):
        """
        If a client that is not the master ACKs, the most recently sent
        DATA goes to the group again, at most once per holdoff.
        """
        h = Harness(self, files={"f": b"g" * 50000})
        a, pa = h.raw("10.0.1.8")
        b, pb = h.raw("10.0.1.9")
        for port in (pa, pb):
            port.write(wire.ReadRequest(b"f", "octet", [("blksize", "1000"),
                                                        ("multicast", "")]).to_wire(),
                       (SERVER, 69))
            h.settle(0.001)
        session = a.received[0][1]
        pa.write(wire.encodeAck(0), session)
        h.settle(0.001)
        s = h.registry.sessions[0]
        last = s.lastPacket
        before = len(s._port.written)
        pb.write(wire.encodeAck(0), session)
        pb.write(wire.encodeAck(0), session)
        h.settle(0.001)
        self.assertEqual(s._port.written[before:], [(last, s.group)])
        self.assertEqual(s.stats["unexpected"], 2)

    def test_masterTimeoutRotation(self):
        """
        If the master stops answering, the server asks it again (OACK mc=1),
        lowers the rate at each timeout, and after C{master_retries} makes
        the next client master; a master that never ACKed is dropped, after
        C{tftp.unanswered_retries} (1) when that is fewer.
        """
        h = Harness(self, "    master_retries: 2\n", files={"f": b"h" * 50000})
        a, pa = h.raw("10.0.1.8")
        b, pb = h.raw("10.0.1.9")
        for port in (pa, pb):
            port.write(wire.ReadRequest(b"f", "octet", [("blksize", "1000"),
                                                        ("multicast", "")]).to_wire(),
                       (SERVER, 69))
            h.settle(0.001)
        s = h.registry.sessions[0]
        h.settle(1.0)
        h.settle(1.0)
        self.assertEqual([o.optionDict["multicast"][-1] for o, _ in a.received],
                         ["1", "1"])
        self.assertEqual(s.rate.reductions, 2)
        h.settle(1.0)
        self.assertIs(s.master.peer, s.clients[0].peer)
        self.assertEqual(s.master.peer[0], "10.0.1.9")
        self.assertEqual(len(s.clients), 1)
        self.assertEqual(b.received[-1][0].optionDict["multicast"], "239.255.0.1,1758,1")
        self.assertTrue(any("master 10.0.1.8" in t and "timed out; dropped" in t
                            for t in h.log()))
        self.assertTrue(any("rate of f@239.255.0.1:1758 lowered" in t for t in h.log()))

    def test_newMasterHoleNotHeldByStaleTimestamps(self):
        """
        If a new master acknowledges blocks that the previous master's pass
        sent seconds earlier, those old send times do not count as round
        trips: when the new master repeats its ACK for a hole, the hole is
        sent again at once, not after seconds of ignored ACKs (the master
        stall of issue 6).
        """
        h = Harness(self, "    master_retries: 2\n", files={"f": b"s" * 99500})
        pa, pb, s, session = h.twoHandClients()

        def ack(port, block, gap):
            port.write(wire.encodeAck(block, struct.pack("!HI", 0, gap)), session)
            h.settle(0.002)

        # The first master takes blocks 1-48, then goes silent.
        for block in range(0, 41, 8):
            ack(pa, block, 0xFFFFFFFF)
        self.assertEqual(s.highWater, 48)
        h.settle(3.5)
        self.assertEqual(s.master.peer[0], "10.0.1.9")
        # The new master misses 21, and 45 (it has the rest of 1-48).
        ack(pb, 20, 1)
        ack(pb, 44, 1)

        def sends(block):
            return sum(1 for packet, dest in s._port.written if dest == s.group and
                       codec.decodeData32(packet)[0] == block)
        self.assertEqual(sends(45), 2)
        # DATA 45 is lost again; the master repeats its ACK every 30 ms.
        for _ in range(3):
            h.settle(0.03)
            ack(pb, 44, 1)
        self.assertGreaterEqual(sends(45), 3)


class AckRangesTests(SynchronousTestCase):
    """
    A master's ACK that names further missing ranges (mcepoch): the server
    multicasts them at once, at most a window per ACK, and a repeated ACK
    does not send them again while they are in flight.
    """

    def setUp(self):
        h = self.h = Harness(self, files={"f": b"r" * 47500})
        pa, pb, self.s, self.session = h.twoHandClients()
        self.pb = pb
        # The first master takes the whole file (48 blocks) and leaves; the
        # second is made master.
        for block in range(0, 49, 8):
            pa.write(wire.encodeAck(block, struct.pack("!HI", 0, 0xFFFFFFFF)),
                     self.session)
            h.settle(0.002)
        self.assertEqual(self.s.highWater, 48)
        self.assertEqual(self.s.master.peer[0], "10.0.1.9")

    def ack(self, block, gap, ranges=(), extra=None, settle=0.001):
        if extra is None:
            extra = codec.encodeAckExtra(block, gap, ranges)
        self.pb.write(wire.encodeAck(block, extra), self.session)
        self.h.settle(settle)

    def sends(self):
        counts = {}
        for packet, dest in self.s._port.written:
            if dest == self.s.group:
                block = codec.decodeData32(packet)[0]
                counts[block] = counts.get(block, 0) + 1
        return counts

    def since(self, before):
        after = self.sends()
        return {b: n - before.get(b, 0) for b, n in after.items() if n > before.get(b, 0)}

    def test_rangesSentAtOnce(self):
        """
        If the new master's first ACK names its first gap and three further
        ranges, the server multicasts exactly those blocks, each once, at
        once (not one gap per round trip).
        """
        before = self.sends()
        self.ack(4, 1, [(9, 10), (20, 20), (33, 33)])
        self.assertEqual(self.since(before), {5: 1, 9: 1, 10: 1, 20: 1, 33: 1})
        self.assertEqual(self.s.stats["ranges"], 3)

    def test_repeatedAckBounded(self):
        """
        If the master repeats the same ACK many times while the blocks are
        in flight, nothing more is sent (no Sorcerer's Apprentice); once
        the guard time is over, a repeat sends each missing block once
        more.
        """
        before = self.sends()
        self.ack(4, 1, [(9, 10), (20, 20)])
        for _ in range(20):
            self.ack(4, 1, [(9, 10), (20, 20)], settle=0)
        self.h.settle(0.0005)
        self.assertEqual(self.since(before), {5: 1, 9: 1, 10: 1, 20: 1})
        self.h.settle(msession.MulticastSession.GUARD_MAX + 0.01)
        for _ in range(5):
            self.ack(4, 1, [(9, 10), (20, 20)], settle=0)
        self.h.settle(0.0005)
        self.assertEqual(self.since(before), {5: 2, 9: 2, 10: 2, 20: 2})

    def test_atMostAWindow(self):
        """
        If the ranges hold more blocks than the master's window, one ACK
        sends a window of them; the repeated ACK sends the rest, not the
        first window again.
        """
        before = self.sends()
        self.ack(4, 1, [(20, 31)])
        self.assertEqual(self.since(before), dict.fromkeys([5] + list(range(20, 28)), 1))
        self.ack(4, 1, [(20, 31)])
        self.assertEqual(self.since(before), dict.fromkeys([5] + list(range(20, 32)), 1))

    def test_progressDoesNotResendInFlight(self):
        """
        If the master's next ACK moves its first gap onto a block that the
        previous ACK's ranges had sent (still in flight: sent less than
        C{LIST_GUARD_MIN} ago, though more than twice the round trip), that
        block is not sent again.
        """
        before = self.sends()
        self.ack(4, 1, [(9, 10), (20, 20)], settle=0.01)
        self.ack(8, 2, [(20, 20)], settle=0)
        self.h.settle(0.0005)
        self.assertEqual(self.since(before), {5: 1, 9: 1, 10: 1, 20: 1})

    def test_malformedIgnored(self):
        """
        If the range list is malformed (not whole pairs) or oversized (more
        than L{codec.MAX_ACK_RANGES} pairs), it is ignored without
        error: the ACK and its gap still count, no range is sent.
        """
        before = self.sends()
        self.ack(4, 1, extra=struct.pack("!HI", 0, 1) + b"\x00\x00\x00\x0b\x00")
        self.assertEqual(self.since(before), {5: 1})
        pairs = struct.pack("!II", 20, 1) * (codec.MAX_ACK_RANGES + 1)
        self.h.settle(msession.MulticastSession.GUARD_MAX + 0.01)
        self.ack(4, 1, extra=struct.pack("!HI", 0, 1) + pairs)
        self.assertEqual(self.since(before), {5: 2})
        self.assertEqual(self.s.stats["badRanges"], 2)
        self.assertEqual(self.s.stats["ranges"], 0)
        self.assertIs(self.s.master.peer[0], "10.0.1.9")

    def test_rangesPastTheEnd(self):
        """
        If the ranges reach past the blocks the session has sent, or past
        the end of the file, only blocks below the high-water mark are
        sent again.
        """
        before = self.sends()
        self.ack(4, 1, [(47, 100000)])
        self.assertEqual(self.since(before), {5: 1, 47: 1, 48: 1})

    def test_plainAckClearsQueue(self):
        """
        If the master's next ACK has no range list, blocks queued for the
        last one and not yet sent (the rate policy held them) are dropped:
        the latest ACK says what is missing.
        """
        self.s.repairQueue = [30, 31]
        self.s.rate.delay = lambda nbytes: 1.0
        self.ack(4, 1)
        self.assertEqual(self.s.repairQueue, [])


class StarvedMasterTests(SynchronousTestCase):
    """
    A master client whose stall timer fires with DATA already waiting.
    """

    def test_stallAckWaitsForPendingData(self):
        """
        If the master's stall timer fires in the same instant as DATA that
        fills its hole is read (a process starved of CPU: the reactor runs
        due timers before reading), it sends no ACK for the old hole: the
        ACK waits one reactor turn and the DATA cancels it.
        """
        net, client, acks, srv, port, settle = _handDriven()
        client.start()
        settle(0.001)
        oack = wire.OptionAck([("blksize", "512"), ("tsize", str(512 * 9 + 100)),
                               ("windowsize", "8"), ("multicast", "239.255.0.1,1758,1"),
                               ("mcepoch", "1")])
        port.write(oack.to_wire(), srv.peer)
        settle(0.001)
        self.assertEqual(acks, [0])
        group = ("239.255.0.1", 1758)
        for block in (1, 3):
            port.write(codec.encodeData32(block, b"d" * 512), group)
        settle(0.001)
        self.assertEqual(acks, [0, 1])  # the hole at 2
        # The stall timer fires, and in the same reactor turn block 2 is read
        # (it waited in the socket while the process was starved).
        timer = client._timer
        self.assertEqual(timer.func, client._stall)
        timer.cancel()
        client._stall()
        net._deliver(client._groupPort, codec.encodeData32(2, b"d" * 512),
                     ("10.0.0.9", 69))
        settle(0.001)
        self.assertEqual(acks, [0, 1, 3])

    def test_newMasterDrainsBacklogFirst(self):
        """
        If a passive client is made master while DATA is still arriving (a
        backlog it has not read yet), its first ACK waits until the group is
        quiet and so names only what it really misses, not the whole rest
        of the file.
        """
        net, client, acks, srv, port, settle = _handDriven(
            lambda packet: (packet.block, struct.unpack("!HI", packet.extra[:6])[1]))

        def oack(mc):
            port.write(wire.OptionAck([
                ("blksize", "512"), ("tsize", str(512 * 40 + 100)), ("windowsize", "8"),
                ("multicast", "239.255.0.1,1758,%d" % (mc,)), ("mcepoch", "1")]).to_wire(),
                srv.peer)
        group = ("239.255.0.1", 1758)
        client.start()
        settle(0.001)
        oack(0)
        settle(0.001)
        for block in range(1, 11):
            port.write(codec.encodeData32(block, b"d" * 512), group)
        settle(0.001)
        self.assertEqual((client.role, acks), (mclient.PASSIVE, []))
        # Made master; blocks 11-30 (but 20) were sent before and are still
        # coming in.
        oack(1)
        settle(0.0005)
        for block in range(11, 31):
            if block != 20:
                port.write(codec.encodeData32(block, b"d" * 512), group)
            settle(0.002)
        self.assertEqual(client.role, mclient.ACTIVE)
        self.assertEqual(acks, [])
        settle(0.05)
        # Block 20 is missing, 21-30 are here, 31 onwards never came.
        self.assertEqual(acks[0], (19, 1))

    def test_reportedHoleRepeatedAfterAWindow(self):
        """
        If the master has reported a hole (ACK with its length), it says so
        again only once a window of DATA has come since (the resend, sent
        at once, comes behind at most a window): not every quarter window.
        A new hole is reported at once.
        """
        net, client, acks, srv, port, settle = _handDriven()
        group = ("239.255.0.1", 1758)

        def data(*blocks):
            for block in blocks:
                port.write(codec.encodeData32(block, b"d" * 512), group)
            settle(0.001)
        client.start()
        settle(0.001)
        port.write(wire.OptionAck([
            ("blksize", "512"), ("tsize", str(512 * 40 + 100)), ("windowsize", "8"),
            ("multicast", "239.255.0.1,1758,1"), ("mcepoch", "1")]).to_wire(), srv.peer)
        settle(0.001)
        data(1, 3)
        self.assertEqual(acks, [0, 1])
        data(*range(4, 11))
        self.assertEqual(acks, [0, 1])
        data(11)
        self.assertEqual(acks, [0, 1, 1])


class TransferTests(SynchronousTestCase):

    def fetchAll(self, h, clients, limit=120):
        ds = [c.start() for c in clients]
        h.run(ds, limit)
        return ds

    def test_threeClients(self):
        """
        If three clients fetch at once without loss, each ends byte-exact,
        the file crosses the wire about once, and every client was master
        in turn (the last two ACK the end at once).
        """
        data = _data(300000)
        h = Harness(self, files={"f": data})
        clients = [h.client("f") for _ in range(3)]
        ds = self.fetchAll(h, clients)
        for c, d in zip(clients, ds):
            self.assertIs(self.successResultOf(d), c)
            self.assertEqual(bytes(c.out.buf), data)
        sent = h.net.sent[SERVER]
        self.assertLess(sent, 1.05 * len(data))

    def test_lossAndLateJoiner(self):
        """
        If clients lose 2% and 10% of packets and one joins late, every
        client still ends byte-exact: the late joiner is promoted and its
        missing start is multicast again when it is master.
        """
        data = _data(400000)
        h = Harness(self, files={"f": data}, seed=3)
        early = [h.client("f", loss) for loss in (0.0, 0.02, 0.1)]
        ds = [c.start() for c in early]
        h.settle(0.02)
        late = h.client("f", 0.02)
        ds.append(late.start())
        h.run(ds)
        for c, d in zip(early + [late], ds):
            self.successResultOf(d)
            self.assertEqual(bytes(c.out.buf), data)
        self.assertIn(mclient.PROMOTED, [r for _, r, _ in late.roles])
        self.assertEqual(late.role, mclient.ACTIVE)
        self.assertTrue(any("restarts the stream at block 1" in t for t in h.log()))

    def test_smartLeaves(self):
        """
        If a passive client's gaps are small after the first pass, it turns
        smart and leaves the group (ERROR to the session) for unicast
        repair, with its gap statistics.
        """
        data = _data(200000)
        h = Harness(self, files={"f": data}, seed=5)
        master = h.client("f", 0.0)
        smart = h.client("f", 0.05, policy=mclient.RolePolicy())
        ds = self.fetchAll(h, [master, smart])
        self.successResultOf(ds[1])
        self.assertEqual(smart.role, mclient.SMART)
        self.assertTrue(smart.needRepair)
        self.assertGreater(smart.gapStats["gaps"], 0)
        self.assertTrue(any("left (ERROR 0 repairing by unicast)" in t for t in h.log()))

    def test_masterTurnsWithRanges(self):
        """
        If 8 clients lose 2% each with the default roles, the ones with many
        gaps are promoted, not smart; each master turn fetches its holes
        through the ACK's range list, every client ends byte-exact, and the
        file crosses the wire about 1 + (1 - 0.98^8) = 1.15 times (the
        union of the losses), not 1 + 8 x 0.02.
        """
        data = _data(4000000)
        h = Harness(self, "    start_min_clients: 8\n    start_max_wait: 5\n",
                    files={"f": data}, seed=5)
        clients = [h.client("f", policy=mclient.RolePolicy()) for _ in range(8)]
        ds = [c.start() for c in clients]
        h.settle(0.002)
        session = h.registry.sessions[0]
        for c in clients:
            h.net.loss[c.host] = 0.02
        h.run(ds)
        self.assertGreater(session.stats["ranges"], 0)
        for c, d in zip(clients, ds):
            self.successResultOf(d)
            self.assertEqual(bytes(c.out.buf), data)
            self.assertNotIn(mclient.SMART, [r for _, r, _ in c.roles])
        self.assertGreaterEqual(
            sum(1 for c in clients if mclient.PROMOTED in [r for _, r, _ in c.roles]), 6)
        finished = [t for t in h.log() if "finished:" in t]
        self.assertEqual(len(finished), 1)
        self.assertLess(h.net.sent[SERVER], 1.2 * len(data))

    def test_killedMaster(self):
        """
        If the master dies midway, the next client becomes master, restarts
        the stream where it needs, and finishes byte-exact.
        """
        data = _data(300000)
        h = Harness(self, "    master_retries: 1\n", files={"f": data})
        first = h.client("f")
        second = h.client("f")
        d1 = first.start()
        d2 = second.start()
        while first.tracker is None or first.tracker.highest < 50:
            h.settle(0.0001)
        first._close()
        h.run([d2])
        self.assertEqual(bytes(second.out.buf), data)
        self.assertTrue(any("master 10.0.1.1" in t and "timed out" in t for t in h.log()))
        self.assertNoResult(d1)

    def test_delayedStart(self):
        """
        If the session waits for 3 clients, no DATA goes out before the
        third joins; then it starts and the decision is logged.
        """
        data = _data(50000)
        h = Harness(self, "    start_min_clients: 3\n    start_max_wait: 5\n",
                    files={"f": data})
        clients = [h.client("f") for _ in range(3)]
        ds = [clients[0].start(), clients[1].start()]
        h.settle(1)
        s = h.registry.sessions[0]
        self.assertEqual(s.stats["packets"], 0)
        ds.append(clients[2].start())
        h.run(ds)
        for c in clients:
            self.assertEqual(bytes(c.out.buf), data)
        self.assertTrue(any("delayed start" in t and "opened by clients" in t
                            for t in h.log()))

    def test_delayedStartRepeatsOACK(self):
        """
        If a delayed start opens, the clients that waited get their OACK
        (mc=0) again when they asked for mcepoch (one whose OACK was lost
        joins the group before the stream runs); plain RFC 2090 clients
        get no second OACK.
        """
        for epoch, expected in ((True, 2), (False, 1)):
            h = Harness(self, "    start_min_clients: 3\n    start_max_wait: 5\n",
                        files={"f": b"o" * 5000})
            opts = [("blksize", "1000"), ("multicast", "")]
            if epoch:
                opts.append(("mcepoch", "1"))
            rrq = wire.ReadRequest(b"f", "octet", opts).to_wire()
            raws = [h.raw("10.0.1.%d" % (i,)) for i in range(1, 4)]
            for proto, port in raws:
                port.write(rrq, (SERVER, 69))
                h.settle(0.001)
            oacks = [[p.optionDict["multicast"] for p, _ in proto.received
                      if isinstance(p, wire.OptionAck)] for proto, _ in raws]
            self.assertEqual(oacks[0][-1], "239.255.0.1,1758,1")
            self.assertEqual(oacks[1], ["239.255.0.1,1758,0"] * expected)

    def test_runsOfBlocks(self):
        """
        If the window allows many blocks, they leave in runs of up to
        C{RUN} consecutive blocks (one read and one send each; with mcepoch
        framing), the token bucket cutting a run where it runs dry.
        """
        h = Harness(self, "    rate_max: 30000\n    rate_burst: 10000\n",
                    files={"f": _data(100 * 1000)})
        proto, port = h.raw("10.0.1.9")
        rrq = wire.ReadRequest(b"f", "octet", [("blksize", "1000"), ("tsize", "0"),
                                                ("windowsize", "64"), ("multicast", ""),
                                                ("mcepoch", "1")])
        port.write(rrq.to_wire(), (SERVER, 69))
        h.settle(0.01)
        oack, session = proto.received[0]
        s = h.registry.sessions[0]
        runs = []
        sendBlocks = s._sender.sendBlocks

        def recording(first, data, blksize, count):
            runs.append((first, count))
            return sendBlocks(first, data, blksize, count)
        s._sender.sendBlocks = recording
        port.write(wire.encodeAck(0, b"\x00\x00\x00\x00\x00\x00"), session)
        h.settle(0.01)
        # a 10000-byte burst: 9 blocks of 1006 bytes at once, then what the
        # bucket refills
        self.assertEqual(runs[0], (1, 9))
        self.assertTrue(all(count < 9 for first, count in runs[1:]), runs)
        h.settle(3.0)
        self.assertEqual([first for first, count in runs],
                         [1] + [10 + sum(c for f, c in runs[1:i]) for i in range(1, len(runs))])
        self.assertEqual(sum(c for f, c in runs), 64)
        data = [codec.decodeData32(d) for d, a in s._port.written
                if a == ("239.255.0.1", 1758)]
        self.assertEqual([b for b, payload in data], list(range(1, 65)))

    def test_qosChange(self):
        """
        If the resource conditions are high when a session starts, it gets
        the QoS blksize and the clients still end byte-exact.
        """
        data = _data(20000)
        h = Harness(self, "    qos_max_sessions: 1\n    qos_blksize: 256\n",
                    files={"f": data},
                    probe=lambda: flowcontrol.Conditions(sessions=5))
        c = h.client("f")
        self.fetchAll(h, [c])
        self.assertEqual(c.blksize, 256)
        self.assertEqual(bytes(c.out.buf), data)
        self.assertTrue(any("QoS degraded" in t for t in h.log()))

    def test_pastRollover(self):
        """
        If a file has more than 65535 blocks, clients with C{mcepoch} (one
        joining after the wrap) place every block and end byte-exact.
        """
        data = _data(66000 * 16 + 5)
        h = Harness(self, files={"f": data})
        first = h.client("f", blksize=16, windowsize=64)
        d1 = first.start()
        h.settle(0.0)
        while first.tracker is None or first.tracker.highest < 66000:
            h.settle(0.0002)
        late = h.client("f", blksize=16, windowsize=64)
        d2 = late.start()
        h.run([d1, d2], limit=300)
        self.assertEqual(bytes(first.out.buf), data)
        self.assertEqual(bytes(late.out.buf), data)
        self.assertGreater(late.tracker.nblocks, 65535)


class WiringTests(SynchronousTestCase):
    """
    The pieces the multicast TFTP service plugs into the TFTP service.
    """

    def test_repairFilterAndExtension(self):
        """
        If a request carries C{ranges}, the repair filter serves the view of
        those blocks from the resolver behind it, negotiation records the
        normalised value as C{rangesGranted} and the extension echoes it;
        without it both stay out of the way.
        """
        from provisioner.files import FileRequest, FilteredResolver, ResolverChain
        from provisioner.tftp.negotiate import Limits, negotiate

        class Files:
            def resolve(self, request):
                return MemorySource(bytes(range(200)) * 10, request.path)

        chain = FilteredResolver(ResolverChain([Files()]),
                                 [mrepair.RepairFilter(lambda: True)])
        extension = mrepair.RepairExtension()
        request = FileRequest("f", ("10.0.1.1", 5), options={"ranges": "100:19,3-4,50"})
        view = self.successResultOf(chain.resolve(request))
        self.assertEqual(view.read(0, 1000), (bytes(range(200)) * 10)[200:400] +
                         (bytes(range(200)) * 10)[1800:1900])
        result = negotiate(request.options, Limits(), source=view, request=request,
                           extensions=[extension])
        self.assertEqual(result.rangesGranted, "100:3-4,19")
        self.assertEqual(result.oack, [("ranges", "100:3-4,19")])
        self.assertIs(result.extension, extension)
        self.assertFalse(hasattr(request, "rangesGranted"))
        plain = FileRequest("f", ("10.0.1.1", 5), options={"blksize": "512"})
        source = self.successResultOf(chain.resolve(plain))
        self.assertEqual(source.size, 2000)
        result = negotiate(plain.options, Limits(), source=source, request=plain,
                           extensions=[extension])
        self.assertIsNone(result.rangesGranted)
        self.assertEqual(result.oack, [("blksize", "512")])

    def test_repairDisabled(self):
        """
        If repair is disabled, C{ranges} is ignored: the whole file, no echo.
        """
        from provisioner.files import FileRequest, FilteredResolver, ResolverChain
        from provisioner.tftp.negotiate import Limits, negotiate

        class Files:
            def resolve(self, request):
                return MemorySource(b"z" * 1000, request.path)

        chain = FilteredResolver(ResolverChain([Files()]),
                                 [mrepair.RepairFilter(lambda: False)])
        request = FileRequest("f", ("10.0.1.1", 5), options={"ranges": "100:3"})
        source = self.successResultOf(chain.resolve(request))
        self.assertEqual(source.size, 1000)
        result = negotiate(request.options, Limits(), source=source, request=request,
                           extensions=[mrepair.RepairExtension()])
        self.assertIsNone(result.rangesGranted)
        self.assertEqual(result.oack, [])

    def test_handlerDeclines(self):
        """
        If a request has no C{multicast} option, is netascii, or multicast
        is disabled, the handler leaves it to the unicast server.
        """
        from provisioner.files import FileRequest
        net = FakeNetwork()
        config = loadConfig(text="tftp:\n  multicast:\n    enabled: false\n")["tftp"]
        handler = mservice.MulticastHandler(net.reactor(SERVER), config, SERVER)

        class Server:
            bindAddress = SERVER

        server = Server()
        server.config = config
        src = MemorySource(b"x" * 100)
        plain = wire.ReadRequest(b"f", "octet", [])
        req = FileRequest("f", ("10.0.1.1", 5), options={})
        self.assertFalse(handler.handleRequest(server, req, src, plain))
        mc = wire.ReadRequest(b"f", "octet", [("multicast", "")])
        req = FileRequest("f", ("10.0.1.1", 5), options={"multicast": ""})
        self.assertFalse(handler.handleRequest(server, req, src, mc))
        ascii = wire.ReadRequest(b"f", "netascii", [("multicast", "")])
        self.assertFalse(handler.handleRequest(server, req, src, ascii))


class SenderFramingTests(SynchronousTestCase):
    """
    A session's DATA framing and GSO choice are given to its sender when it
    is built (nothing overrides the sender afterwards).
    """

    def test_epochFraming(self):
        """
        If a session uses C{mcepoch}, its sender is built with the
        C{mcepoch} header; otherwise with the RFC 1350 one.
        """
        from provisioner.tftp.udp import DATA_HEADER_SIZE, dataHeader
        h = Harness(self, files={"f": b"x" * 3000})
        a, pa = h.raw("10.0.1.8")
        b, pb = h.raw("10.0.1.9")
        pa.write(wire.ReadRequest(b"f", "octet", [("multicast", ""), ("mcepoch", "1")])
                 .to_wire(), (SERVER, 69))
        pb.write(wire.ReadRequest(b"f", "octet", [("multicast", "")]).to_wire(), (SERVER, 69))
        h.settle(0.001)
        framing = sorted(((s.epoch, s._sender.header, s._sender.headerSize)
                          for s in h.registry.sessions), key=lambda t: t[0])
        self.assertEqual(framing, [(False, dataHeader, DATA_HEADER_SIZE),
                                   (True, codec.epochHeader, codec.EPOCH_HEADER_SIZE)])
        self.assertNotIn("header", vars(type(h.registry.sessions[0]._sender)))

    def test_gso(self):
        """
        If C{tftp.gso} is false, the registry's sessions send without GSO.
        """
        config = loadConfig(text="tftp:\n  gso: false\n")["tftp"]
        registry = mregistry.MulticastRegistry(FakeNetwork().reactor(SERVER),
                                               config["multicast"], config, SERVER)
        self.assertFalse(registry.gso)
        config = loadConfig()["tftp"]
        registry.configure(config["multicast"], config, SERVER)
        self.assertTrue(registry.gso)
