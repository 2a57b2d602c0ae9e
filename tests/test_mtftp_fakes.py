# -*- test-case-name: tests.test_mtftp_server -*-
"""
Fakes for the multicast TFTP tests: an in-memory network of hosts with
UDP and multicast ports, a shared L{task.Clock}, per-host deterministic
loss, and a small resolver/server stand-in. No sockets, no real time.
"""

import random

from twisted.internet import task
from zope.interface import implementer

from provisioner.interfaces import IDataSource

__all__ = ["FakeNetwork", "FakeReactor", "FakePort", "MemorySource", "runUntil"]


@implementer(IDataSource)
class MemorySource:
    """
    Bytes in memory, counting reads and closes.
    """

    def __init__(self, data, name="file"):
        self.data = data
        self.size = len(data)
        self.name = name
        self.closed = 0

    def read(self, offset, length):
        return self.data[offset:offset + length]

    def close(self):
        self.closed += 1


class FakePort:
    """
    A bound UDP (and multicast) port on a L{FakeNetwork} host.
    """

    def __init__(self, network, host, port, protocol):
        self.network = network
        self.host = host
        self.port = port
        self.protocol = protocol
        self.groups = set()
        self.ttl = None
        self.outgoing = None
        self.written = []
        self.open = True

    def write(self, data, addr):
        self.written.append((data, addr))
        self.network.send((self.host, self.port), bytes(data), addr)

    def joinGroup(self, addr, interface=""):
        self.groups.add(addr)

    def leaveGroup(self, addr, interface=""):
        self.groups.discard(addr)

    def setTTL(self, ttl):
        self.ttl = ttl

    def setOutgoingInterface(self, addr):
        self.outgoing = addr

    def stopListening(self):
        if self.open:
            self.open = False
            self.network.unbind(self)
            self.protocol.doStop()

    def getHost(self):
        class _A:
            pass
        a = _A()
        a.host, a.port = self.host, self.port
        return a


class FakeNetwork:
    """
    Hosts by address; datagrams arrive after C{latency} seconds unless the
    receiving host's loss (a probability, drawn from a seeded generator)
    drops them. Multicast goes to every port bound to the group's port on
    a host that joined the group (not back to the sender's host).

    @ivar sent: C{{host: bytes}} sent by each host.
    @ivar dropped: datagrams dropped by loss.
    """

    def __init__(self, latency=0.0002, seed=1):
        self.clock = task.Clock()
        self.latency = latency
        self.random = random.Random(seed)
        self.loss = {}
        self.ports = {}
        self.nextPort = 40000
        self.sent = {}
        self.dropped = 0
        self.filters = []

    def reactor(self, host):
        return FakeReactor(self, host)

    def bind(self, host, port, protocol):
        if port == 0:
            self.nextPort += 1
            port = self.nextPort
        p = FakePort(self, host, port, protocol)
        self.ports.setdefault((host, port), []).append(p)
        protocol.makeConnection(p)
        return p

    def unbind(self, port):
        lst = self.ports.get((port.host, port.port), [])
        if port in lst:
            lst.remove(port)

    def send(self, src, data, dst):
        self.sent[src[0]] = self.sent.get(src[0], 0) + len(data)
        for f in self.filters:
            if f(src, data, dst) is False:
                return
        first = int(dst[0].split(".")[0])
        if 224 <= first <= 239:
            targets = [p for (h, n), ps in self.ports.items() for p in ps
                       if n == dst[1] and h != src[0] and dst[0] in p.groups]
        else:
            targets = list(self.ports.get(tuple(dst), []))
        for p in targets:
            if self.random.random() < self.loss.get(p.host, 0.0):
                self.dropped += 1
                continue
            self.clock.callLater(self.latency, self._deliver, p, data, src)

    def _deliver(self, port, data, src):
        if port.open:
            port.protocol.datagramReceived(data, src)


class FakeReactor:
    """
    IReactorTime, IReactorUDP and IReactorMulticast for one host.
    """

    def __init__(self, network, host):
        self.network = network
        self.host = host
        self.clock = network.clock

    def seconds(self):
        return self.clock.seconds()

    def callLater(self, delay, f, *a, **kw):
        return self.clock.callLater(delay, f, *a, **kw)

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        return self.network.bind(self.host, port, protocol)

    def listenMulticast(self, port, protocol, interface="", maxPacketSize=8192,
                        listenMultiple=False):
        return self.network.bind(self.host, port, protocol)


def runUntil(network, deferreds, limit=120.0, step=0.001):
    """
    Advance the clock until every Deferred has fired or C{limit} simulated
    seconds pass.

    @return: the simulated seconds used.
    """
    start = network.clock.seconds()
    while network.clock.seconds() - start < limit:
        if all(d.called for d in deferreds):
            break
        calls = network.clock.getDelayedCalls()
        if calls:
            nxt = min(c.getTime() for c in calls)
            network.clock.advance(max(0.0, nxt - network.clock.seconds()))
        else:
            network.clock.advance(step)
    return network.clock.seconds() - start
