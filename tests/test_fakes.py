# -*- test-case-name: tests.test_fakes -*-
"""
Tests for L{tests.fakes}: the shared reactor, port and network doubles do
what the tests that use them rely on.
"""

from twisted.internet import defer
from twisted.internet.interfaces import IReactorMulticast, IReactorTime, IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from provisioner.interfaces import IDataSource
from provisioner.tftp import wire
from tests.fakes import FakeDatagramPort, FakeNetwork, FakeReactor, MemorySource, runUntil


class Recorder(DatagramProtocol):
    """
    Records what it receives and how often it was stopped.
    """

    def __init__(self):
        self.received = []
        self.stopped = 0

    def datagramReceived(self, data, addr):
        self.received.append((data, addr))

    def stopProtocol(self):
        self.stopped += 1


class FakeReactorTests(SynchronousTestCase):
    """
    Tests for L{FakeReactor}.
    """

    def test_interfaces(self):
        """
        It provides the reactor interfaces the code under test asks for.
        """
        reactor = FakeReactor()
        for interface in (IReactorTime, IReactorUDP, IReactorMulticast):
            self.assertTrue(verifyObject(interface, reactor))

    def test_time(self):
        """
        Time moves only when the test advances it, and delayed calls run
        when they fall due.
        """
        reactor = FakeReactor()
        calls = []
        reactor.callLater(1.5, calls.append, "late")
        reactor.advance(1)
        self.assertEqual((reactor.seconds(), calls), (1, []))
        reactor.pump([0.25, 0.25])
        self.assertEqual((reactor.seconds(), calls), (1.5, ["late"]))
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_sharedClock(self):
        """
        If two reactors share a clock, advancing one moves the other.
        """
        first = FakeReactor()
        second = FakeReactor(clock=first.clock)
        calls = []
        second.callLater(2, calls.append, True)
        first.advance(2)
        self.assertEqual((second.seconds(), calls), (2, [True]))

    def test_listenUDP(self):
        """
        If a protocol listens, it is started on a new port, which the
        reactor records; port 0 gives distinct ephemeral numbers, and a
        port on every interface reports the reactor's host.
        """
        reactor = FakeReactor(host="198.18.0.1")
        first, second = Recorder(), Recorder()
        p1 = reactor.listenUDP(0, first)
        p2 = reactor.listenUDP(69, second, interface="198.18.0.2")
        self.assertIs(first.transport, p1)
        self.assertEqual(first.numPorts, 1)
        self.assertEqual(reactor.ports, [p1, p2])
        self.assertEqual((p1.getHost().host, p2.getHost().host), ("198.18.0.1", "198.18.0.2"))
        self.assertEqual(p2.getHost().port, 69)
        p3 = reactor.listenMulticast(0, Recorder(), listenMultiple=True)
        self.assertEqual(len({p1.port, p3.port}), 2)
        self.assertNotIn(0, (p1.port, p3.port))

    def test_writesGoToTheNetwork(self):
        """
        If the reactor has a network, what a port writes is recorded and
        handed to it.
        """
        handed = []

        class Network:
            def send(self, port, datagram, addr):
                handed.append((port, datagram, addr))
        reactor = FakeReactor(network=Network())
        port = reactor.listenUDP(0, Recorder())
        port.write(bytearray(b"hi"), ("198.18.0.9", 69))
        self.assertEqual(port.written, [(b"hi", ("198.18.0.9", 69))])
        self.assertEqual(handed, [(port, b"hi", ("198.18.0.9", 69))])


class FakeDatagramPortTests(SynchronousTestCase):
    """
    Tests for L{FakeDatagramPort}.
    """

    def test_packets(self):
        """
        L{FakeDatagramPort.packets} decodes what was written (TFTP by
        default) and forgets it, unless told to keep it.
        """
        port = FakeDatagramPort(Recorder())
        port.write(wire.encodeAck(3), ("198.18.0.9", 4000))
        self.assertEqual(port.packets(clear=False), [(wire.Ack(3), ("198.18.0.9", 4000))])
        self.assertEqual(port.packets(), [(wire.Ack(3), ("198.18.0.9", 4000))])
        self.assertEqual(port.packets(), [])
        raw = FakeDatagramPort(decode=bytes.upper)
        raw.write(b"abc", None)
        self.assertEqual(raw.packets(), [(b"ABC", None)])

    def test_stopListening(self):
        """
        Stopping a port stops its protocol once; a second stop does nothing;
        a port whose protocol was never started does not stop it.
        """
        proto = Recorder()
        port = FakeReactor().listenUDP(0, proto)
        d = port.stopListening()
        self.assertIsNone(self.successResultOf(d))
        port.stopListening()
        self.assertEqual((port.listening, proto.stopped, proto.numPorts), (False, 1, 0))
        unstarted = Recorder()
        FakeDatagramPort(unstarted).stopListening()
        self.assertEqual(unstarted.stopped, 0)

    def test_multicast(self):
        """
        Joins and leaves are kept in order and as the current set; the
        socket options are recorded.
        """
        port = FakeDatagramPort()
        self.assertTrue(self.successResultOf(port.joinGroup("239.255.0.1")))
        port.joinGroup("239.255.0.2", "198.18.0.1")
        port.leaveGroup("239.255.0.1")
        self.assertEqual(port.groups, {"239.255.0.2"})
        self.assertEqual(port.memberships, [("join", "239.255.0.1"), ("join", "239.255.0.2"),
                                            ("leave", "239.255.0.1")])
        port.setTTL(4)
        port.setLoopbackMode(0)
        port.setOutgoingInterface("198.18.0.1")
        self.assertEqual((port.getTTL(), port.getLoopbackMode(), port.getOutgoingInterface()),
                         (4, 0, "198.18.0.1"))


class FakeNetworkTests(SynchronousTestCase):
    """
    Tests for L{FakeNetwork}.
    """

    def test_unicast(self):
        """
        A datagram reaches the port with the address and number it was sent
        to, after the latency, from the sender's host and port; the bytes
        each host sent are counted.
        """
        net = FakeNetwork(latency=0.01)
        server, client = Recorder(), Recorder()
        net.bind("10.0.0.1", 69, server)
        port = net.bind("10.0.0.2", 0, client)
        port.write(b"rrq", ("10.0.0.1", 69))
        port.write(b"lost", ("10.0.0.1", 70))
        net.settle(0.009)
        self.assertEqual(server.received, [])
        net.settle(0.002)
        self.assertEqual(server.received, [(b"rrq", ("10.0.0.2", port.port))])
        self.assertEqual(net.sent, {"10.0.0.2": 7})

    def test_multicast(self):
        """
        A datagram to a group reaches the ports on the group's number that
        joined it on other hosts, and not the sender's own host.
        """
        net = FakeNetwork()
        members = {}
        for host in ("10.0.0.2", "10.0.0.3", "10.0.0.4"):
            members[host] = Recorder()
            port = net.reactor(host).listenMulticast(1758, members[host])
            if host != "10.0.0.4":
                port.joinGroup("239.255.0.1")
        sender = net.reactor("10.0.0.2").listenUDP(0, Recorder())
        sender.write(b"data", ("239.255.0.1", 1758))
        net.settle(0.01)
        self.assertEqual({h: len(r.received) for h, r in members.items()},
                         {"10.0.0.2": 0, "10.0.0.3": 1, "10.0.0.4": 0})

    def test_loss(self):
        """
        A host's loss drops that fraction of what is sent to it (seeded: the
        same every run) and counts it; a closed port receives nothing.
        """
        net = FakeNetwork(seed=3)
        net.loss["10.0.0.1"] = 0.5
        server = Recorder()
        listening = net.bind("10.0.0.1", 69, server)
        port = net.bind("10.0.0.2", 0, Recorder())
        for _ in range(200):
            port.write(b"x", ("10.0.0.1", 69))
        net.settle(0.01)
        self.assertEqual(len(server.received) + net.dropped, 200)
        self.assertTrue(60 < net.dropped < 140, net.dropped)
        listening.stopListening()
        port.write(b"x", ("10.0.0.1", 69))
        net.settle(0.01)
        self.assertEqual(len(server.received) + net.dropped, 200)

    def test_reactorPerHost(self):
        """
        Each host has one reactor, on the network's clock.
        """
        net = FakeNetwork()
        self.assertIs(net.reactor("10.0.0.1"), net.reactor("10.0.0.1"))
        self.assertIsNot(net.reactor("10.0.0.1"), net.reactor("10.0.0.2"))
        self.assertIs(net.reactor("10.0.0.2").clock, net.clock)


class RunUntilTests(SynchronousTestCase):
    """
    Tests for L{runUntil}.
    """

    def test_stopsWhenFired(self):
        """
        The clock runs until the Deferreds have fired, and no further.
        """
        reactor = FakeReactor()
        d = defer.Deferred()
        reactor.callLater(3, d.callback, None)
        reactor.callLater(10, lambda: None)
        self.assertEqual(runUntil(reactor, [d]), 3)
        self.assertEqual(reactor.seconds(), 3)

    def test_limit(self):
        """
        If the Deferreds never fire, it gives up after C{limit} seconds.
        """
        reactor = FakeReactor()
        used = runUntil(reactor, [defer.Deferred()], limit=0.5, step=0.1)
        self.assertAlmostEqual(used, 0.5)


class MemorySourceTests(SynchronousTestCase):
    """
    Tests for L{MemorySource}.
    """

    def test_readsAndCloses(self):
        """
        It serves its bytes by offset and counts reads and closes.
        """
        source = MemorySource(b"0123456789", "ten")
        self.assertTrue(verifyObject(IDataSource, source))
        self.assertEqual(source.read(8, 5), b"89")
        source.close()
        source.close()
        self.assertEqual((source.size, source.reads, source.closed), (10, 1, 2))
