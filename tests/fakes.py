# -*- test-case-name: tests.test_fakes -*-
"""
The test doubles several test modules share: no sockets, no real time.

  - L{FakeReactor}: the time of a L{task.Clock} plus C{listenUDP} and
    C{listenMulticast} handing out L{FakeDatagramPort}s. It records every
    port it opened; each port records what it wrote.
  - L{FakeDatagramPort}: a UDP (and multicast) port that records what is
    written, the groups joined and the socket options set; it can be made
    by hand as the transport of one protocol.
  - L{FakeNetwork}: hosts on one clock that reach each other: each host's
    reactor is a L{FakeReactor}; datagrams arrive after a fixed latency
    unless a seeded per-host loss drops them; multicast reaches the hosts
    that joined the group.
  - L{runUntil}: run a fake clock until some Deferreds have fired.
  - L{MemorySource}: an L{IDataSource} in memory that counts reads and
    closes.
  - L{INVENTORY}: a sample inventory (two hosts, two profiles, a group)
    that the menus, render command and web tests render against.

A test that needs the datagrams to go somewhere gives the reactor a
C{network}: any object with C{send(port, datagram, address)} (a
L{FakeNetwork}, or a simulated server of its own).
"""

import random

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IReactorMulticast, IReactorTime, IReactorUDP
from zope.interface import implementer

from provisioner.interfaces import IDataSource

__all__ = ["FakeReactor", "FakeDatagramPort", "FakeNetwork", "runUntil", "MemorySource",
           "INVENTORY"]


class FakeDatagramPort:
    """
    A listening UDP port, also usable as a multicast port: what is written
    is recorded (and handed to the reactor's network, if any); joins,
    leaves and socket options are recorded; nothing is sent.

    @ivar protocol: the L{DatagramProtocol} it serves.
    @ivar host: the address it reports from L{getHost}.
    @ivar port: its port number.
    @ivar reactor: the L{FakeReactor} that opened it, or L{None}.
    @ivar written: C{[(datagram bytes, address)]}, in order.
    @ivar listening: true until L{stopListening}.
    @ivar groups: the multicast groups joined now.
    @ivar memberships: C{[("join" or "leave", group)]}, in order.
    @ivar ttl: the multicast TTL set, or L{None}.
    @ivar loopback: the multicast loopback mode set, or L{None}.
    @ivar outgoingInterface: the multicast outgoing interface set, or
        L{None}.
    """

    def __init__(self, protocol=None, host="127.0.0.1", port=50000, reactor=None,
                 decode=None):
        """
        @param decode: how L{packets} decodes a datagram; TFTP's
            C{wire.decode} when L{None}.
        """
        self.protocol = protocol
        self.host = host
        self.port = port
        self.reactor = reactor
        self.written = []
        self.listening = True
        self.groups = set()
        self.memberships = []
        self.ttl = None
        self.loopback = None
        self.outgoingInterface = None
        self._decode = decode

    def write(self, datagram, addr=None):
        """
        Record C{datagram} for C{addr}, and hand it to the reactor's
        network if there is one.
        """
        data = bytes(datagram)
        self.written.append((data, addr))
        network = getattr(self.reactor, "network", None)
        if network is not None:
            network.send(self, data, addr)

    def joinGroup(self, addr, interface=""):
        self.groups.add(addr)
        self.memberships.append(("join", addr))
        return defer.succeed(True)

    def leaveGroup(self, addr, interface=""):
        self.groups.discard(addr)
        self.memberships.append(("leave", addr))
        return defer.succeed(None)

    def setTTL(self, ttl):
        self.ttl = ttl

    def getTTL(self):
        return self.ttl

    def setLoopbackMode(self, mode):
        self.loopback = mode

    def getLoopbackMode(self):
        return self.loopback

    def setOutgoingInterface(self, addr):
        self.outgoingInterface = addr
        return defer.succeed(True)

    def getOutgoingInterface(self):
        return self.outgoingInterface

    def stopListening(self):
        """
        Stop listening and stop the protocol, once: a second call does
        nothing. (Twisted stops the protocol later, from C{connectionLost};
        a protocol may close its port from C{startProtocol}, before
        C{doStart} counted it, and is then not stopped.)
        """
        if self.listening:
            self.listening = False
            if self.protocol is not None and self.protocol.numPorts > 0:
                self.protocol.doStop()
        return defer.succeed(None)

    def getHost(self):
        return IPv4Address("UDP", self.host, self.port)

    def packets(self, clear=True):
        """
        What was written so far, decoded: C{[(packet, address)]}.

        @param clear: forget what was written, so that the next call
            returns only what comes after.
        """
        decode = self._decode
        if decode is None:
            from provisioner.tftp.wire import decode
        out = [(decode(data), addr) for data, addr in self.written]
        if clear:
            del self.written[:]
        return out


@implementer(IReactorTime, IReactorUDP, IReactorMulticast)
class FakeReactor:
    """
    A reactor for unit tests: the time of a L{task.Clock} (C{seconds},
    C{callLater}, C{advance}, C{pump}, ...) and UDP and multicast ports that
    are L{FakeDatagramPort}s.

    @ivar clock: the L{task.Clock}; several reactors may share one (the
        hosts of a L{FakeNetwork}).
    @ivar network: where the ports' datagrams go: an object with
        C{send(port, datagram, address)}, or L{None} to only record them.
    @ivar host: this host's address: what a port listening on every
        interface reports as its own, and its source address on a network.
    @ivar ports: every port opened, in order, the closed ones too.
    """

    def __init__(self, clock=None, network=None, host="127.0.0.1"):
        self.clock = clock if clock is not None else task.Clock()
        self.network = network
        self.host = host
        self.ports = []
        self._lastPort = 50000

    # IReactorTime, and the rest of task.Clock

    def seconds(self):
        return self.clock.seconds()

    def callLater(self, delay, callable, *args, **kw):
        return self.clock.callLater(delay, callable, *args, **kw)

    def getDelayedCalls(self):
        return self.clock.getDelayedCalls()

    def advance(self, amount):
        """
        Move time on by C{amount} seconds, running what falls due.
        """
        self.clock.advance(amount)

    def pump(self, timings):
        """
        Advance by each of C{timings} in turn.
        """
        self.clock.pump(timings)

    # IReactorUDP, IReactorMulticast

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        """
        Open a L{FakeDatagramPort} for C{protocol} (an ephemeral number
        when C{port} is 0) and start the protocol on it.
        """
        return self._listen(port, protocol, interface)

    def listenMulticast(self, port, protocol, interface="", maxPacketSize=8192,
                        listenMultiple=False):
        """
        As L{listenUDP}; the port also joins and leaves groups.
        """
        return self._listen(port, protocol, interface)

    def _listen(self, number, protocol, interface):
        if not number:
            self._lastPort += 1
            number = self._lastPort
        if interface in ("", "0.0.0.0"):
            interface = self.host
        port = FakeDatagramPort(protocol, interface, number, reactor=self)
        self.ports.append(port)
        protocol.makeConnection(port)
        return port


class FakeNetwork:
    """
    Hosts on one L{task.Clock} that reach each other by address. A datagram
    arrives C{latency} seconds after it is written, unless the receiving
    host's loss (a probability, drawn from a generator seeded with
    C{seed}) drops it. Multicast reaches every listening port with the
    group's port number on another host that joined the group.

    @ivar clock: the shared L{task.Clock}.
    @ivar latency: the one-way delay in seconds.
    @ivar loss: C{{host: probability}} of dropping a datagram to C{host}.
    @ivar sent: C{{host: bytes}} written by each host.
    @ivar dropped: how many datagrams loss dropped.
    """

    def __init__(self, latency=0.0002, seed=1):
        self.clock = task.Clock()
        self.latency = latency
        self.random = random.Random(seed)
        self.loss = {}
        self.sent = {}
        self.dropped = 0
        self._hosts = {}

    def reactor(self, host):
        """
        The L{FakeReactor} of C{host} (made on first use).
        """
        if host not in self._hosts:
            self._hosts[host] = FakeReactor(self.clock, self, host)
        return self._hosts[host]

    def bind(self, host, port, protocol):
        """
        Listen with C{protocol} on C{host}'s C{port} (0: an ephemeral one).

        @return: the L{FakeDatagramPort}.
        """
        return self.reactor(host).listenUDP(port, protocol)

    def send(self, port, data, addr):
        """
        Deliver what C{port} wrote to C{addr}, after the latency.
        """
        src = (port.reactor.host, port.port)
        self.sent[src[0]] = self.sent.get(src[0], 0) + len(data)
        if 224 <= int(addr[0].split(".")[0]) <= 239:
            targets = [p for h, r in self._hosts.items() if h != src[0] for p in r.ports
                       if p.listening and p.port == addr[1] and addr[0] in p.groups]
        else:
            reactor = self._hosts.get(addr[0])
            targets = [p for p in (reactor.ports if reactor else ())
                       if p.listening and p.port == addr[1]]
        for target in targets:
            if self.random.random() < self.loss.get(target.reactor.host, 0.0):
                self.dropped += 1
                continue
            self.clock.callLater(self.latency, self._deliver, target, data, src)

    def _deliver(self, port, data, src):
        if port.listening:
            port.protocol.datagramReceived(data, src)

    def settle(self, seconds):
        """
        Let the network run for C{seconds}, in steps shorter than a hop.
        """
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end - 1e-9:
            self.clock.advance(min(self.latency / 2, end - self.clock.seconds()))


def runUntil(network, deferreds, limit=120.0, step=0.001):
    """
    Advance C{network}'s clock (a L{FakeNetwork}'s or a L{FakeReactor}'s)
    from one delayed call to the next until every Deferred in C{deferreds}
    has fired or C{limit} simulated seconds pass; by C{step} when nothing is
    scheduled.

    @return: the simulated seconds used.
    """
    clock = network.clock
    start = clock.seconds()
    while clock.seconds() - start < limit:
        if all(d.called for d in deferreds):
            break
        calls = clock.getDelayedCalls()
        if calls:
            nxt = min(c.getTime() for c in calls)
            clock.advance(max(0.0, nxt - clock.seconds()))
        else:
            clock.advance(step)
    return clock.seconds() - start


@implementer(IDataSource)
class MemorySource:
    """
    Bytes in memory, counting reads and closes.

    @ivar reads: how many times L{read} was called.
    @ivar closed: how many times L{close} was called.
    """

    def __init__(self, data, name="file"):
        self.data = data
        self.size = len(data)
        self.name = name
        self.reads = 0
        self.closed = 0

    def read(self, offset, length):
        self.reads += 1
        return self.data[offset:offset + length]

    def close(self):
        self.closed += 1


INVENTORY = """\
defaults:
  profile: rescue
  vars:
    console: ttyS0,115200n8
profiles:
  rescue:
    description: Rescue system
    kernel: rescue/vmlinuz
    initrd: [rescue/initrd.img]
    cmdline: "boot=live quiet"
  installer:
    description: Debian installer
    timeout: 10
    default_entry: install
    entries:
      - label: install
        title: Install "Debian"
        kernel: debian/linux
        initrd: [debian/initrd.gz, debian/firmware.cpio.gz]
        cmdline: auto=true priority=critical
      - label: live
        title: Live ISO
        image: live.iso
      - label: local
        title: Local disk
        local: true
groups:
  racks:
    profile: installer
    vars: {rack: 7}
hosts:
  alpha:
    mac: 52:54:00:00:00:01
    groups: [racks]
  beta:
    mac: 52:54:00:00:00:02
    uuid: 11111111-2222-3333-4444-555555555555
    profile: rescue
    vars: {console: tty0}
"""


def readAll(source):
    """
    The whole content of an L{provisioner.interfaces.IDataSource}, read in
    64 KiB pieces as a transfer would.
    """
    out, offset = [], 0
    while True:
        data = source.read(offset, 65536)
        if not data:
            return b"".join(out)
        out.append(data)
        offset += len(data)
