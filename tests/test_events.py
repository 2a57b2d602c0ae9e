# -*- test-case-name: tests.test_events -*-
"""
Tests for L{provisioner.events} and the events endpoints
(L{provisioner.web.eventsapi}): the ring and its filters, the Server-Sent
Events framing and feed (resume, heartbeat, a slow client dropped), the
JSON API, and what each subsystem publishes (TFTP and HTTP hooks, the
menus' log, DHCP boot decisions, host lifecycle changes, reloads), all on a
L{task.Clock}.
"""

import json
import os

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest
from zope.interface.verify import verifyObject

from provisioner.appliance import Appliance
from provisioner.config import loadConfig
from provisioner.events import (NULL_SINK, EventStream, IEventSink, MenusLogBridge,
                                TransferEvents, kindMatches)
from provisioner.tftp.transfer import SessionStats
from provisioner.web.api import APIResource
from provisioner.web.eventsapi import EventFeed, sseFrame
from tests.fakes import INVENTORY

ALPHA = "52:54:00:00:00:01"


def parseSSE(data):
    """
    The frames of a Server-Sent Events body: C{[{field: value}]}, comments
    under C{":"}.
    """
    frames = []
    for block in data.decode("utf-8").split("\n\n"):
        if not block:
            continue
        frame = {}
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            frame.setdefault(field, []).append(value[1:] if value.startswith(" ") else value)
        frames.append({k: "\n".join(v) for k, v in frame.items()})
    return frames


class StreamTests(SynchronousTestCase):
    """
    Tests for L{EventStream}: the ring, its sequence and its filters.
    """

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1000)
        self.stream = EventStream(self.clock, size=5)

    def test_interface(self):
        """
        The stream and the null sink provide L{IEventSink}.
        """
        verifyObject(IEventSink, self.stream)
        verifyObject(IEventSink, NULL_SINK)
        self.assertIsNone(NULL_SINK.publish("x.y", a=1))

    def test_sequenceAndBound(self):
        """
        If more events are published than the ring holds, the oldest go;
        sequence numbers go on from 1, with the clock's time.
        """
        for i in range(8):
            self.clock.advance(1)
            self.stream.publish("tftp.end", n=i)
        self.assertEqual(len(self.stream), 5)
        self.assertEqual(self.stream.seq, 8)
        self.assertEqual(self.stream.oldest(), 4)
        events = self.stream.query(limit=100)
        self.assertEqual([e.seq for e in events], [4, 5, 6, 7, 8])
        self.assertEqual([e.fields["n"] for e in events], [3, 4, 5, 6, 7])
        self.assertEqual(events[-1].time, 1008)
        self.assertEqual(events[0].asDict(), {"seq": 4, "time": 1004, "kind": "tftp.end",
                                              "host": None, "mac": None, "level": "info",
                                              "n": 3})

    def test_after(self):
        """
        L{EventStream.after} gives the events above a sequence number kept,
        oldest first; none past the newest; all kept for one before the
        oldest.
        """
        for i in range(7):
            self.stream.publish("k")
        self.assertEqual([e.seq for e in self.stream.after(5)], [6, 7])
        self.assertEqual(self.stream.after(7), [])
        self.assertEqual(self.stream.after(99), [])
        self.assertEqual([e.seq for e in self.stream.after(0)], [3, 4, 5, 6, 7])

    def test_filters(self):
        """
        If filtered by host, MAC, kind (a name matches the kinds below it,
        several comma-separated), level, sequence or time, the query keeps
        what matches every filter, the newest C{limit}, oldest first.
        """
        stream = EventStream(self.clock, size=100)
        stream.publish("dhcp.boot", mac=ALPHA, host="alpha")
        self.clock.advance(10)
        stream.publish("tftp.start", host="alpha", mac=ALPHA)
        stream.publish("tftp.end", host="alpha", mac=ALPHA, level="warn")
        stream.publish("tftp.end", host="beta")
        stream.publish("menu.error", level="error")
        q = stream.query
        self.assertEqual([e.seq for e in q(host="alpha")], [1, 2, 3])
        self.assertEqual([e.seq for e in q(mac=ALPHA, kind="tftp")], [2, 3])
        self.assertEqual([e.seq for e in q(kind="tftp.end,menu")], [3, 4, 5])
        self.assertEqual([e.seq for e in q(kind="tft")], [])
        self.assertEqual([e.seq for e in q(level="warn")], [3, 5])
        self.assertEqual([e.seq for e in q(level="error")], [5])
        self.assertEqual([e.seq for e in q(since=3)], [4, 5])
        self.assertEqual([e.seq for e in q(sinceTime=1005)], [2, 3, 4, 5])
        self.assertEqual([e.seq for e in q(limit=2)], [4, 5])
        self.assertTrue(kindMatches("imagecast.round", ["dhcp", "imagecast"]))

    def test_identify(self):
        """
        If an event names an address and no MAC or host, the stream's
        C{identify} fills them in; given ones are kept.
        """
        stream = EventStream(self.clock, identify=lambda ip, mac: (
            mac or {"198.18.0.11": ALPHA}.get(ip), "alpha" if ip == "198.18.0.11" else None))
        event = stream.publish("tftp.end", ip="198.18.0.11")
        self.assertEqual((event.mac, event.host), (ALPHA, "alpha"))
        event = stream.publish("tftp.end", ip="198.18.0.99", host="given")
        self.assertEqual((event.mac, event.host), (None, "given"))

    def test_applianceIdentify(self):
        """
        An appliance's stream finds the MAC of an address in the client
        directory and its host in the inventory.
        """
        from provisioner.menus.inventory import parseInventory
        appliance = Appliance(loadConfig(), self.clock)
        appliance.inventory = parseInventory(INVENTORY)
        appliance.clients.update(mac=ALPHA, ip="198.18.0.11", arch=0)
        event = appliance.events.publish("tftp.end", ip="198.18.0.11")
        self.assertEqual((event.mac, event.host), (ALPHA, "alpha"))

    def test_subscribers(self):
        """
        Subscribers get each event as it is published until removed; one
        that raises is removed and the publisher goes on.
        """
        got = []
        remove = self.stream.subscribe(got.append)

        def broken(event):
            raise RuntimeError("broken")
        self.stream.subscribe(broken)
        first = self.stream.publish("a")
        self.assertEqual(self.stream.subscribers, 1)
        remove()
        self.stream.publish("b")
        self.assertEqual(got, [first])
        self.assertEqual(self.stream.subscribers, 0)


class FeedRequest(DummyRequest):
    """
    A request a feed can hold: it keeps its producer, and its connection
    can be aborted.
    """

    class _Transport:
        aborted = False

        def abortConnection(self):
            self.aborted = True

    class _Channel:
        def __init__(self):
            self.transport = FeedRequest._Transport()

    def __init__(self, postpath=(), headers=None):
        DummyRequest.__init__(self, list(postpath))
        self.channel = self._Channel()
        self.producer = None
        for name, value in (headers or {}).items():
            self.requestHeaders.setRawHeaders(name, [value])

    def registerProducer(self, producer, streaming):
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None

    def getClientAddress(self):
        return IPv4Address("TCP", "198.18.0.50", 40000)

    def body(self):
        return b"".join(self.written)


class FramingTests(SynchronousTestCase):
    """
    Tests for L{sseFrame} and L{EventFeed}.
    """

    def setUp(self):
        self.clock = task.Clock()
        self.stream = EventStream(self.clock, size=10)

    def feed(self, **kw):
        request = FeedRequest()
        feed = EventFeed(request, self.stream, self.clock, **kw)
        feed.start()
        return request, feed

    def test_frame(self):
        """
        A frame is C{id:} the sequence number and C{data:} the event's JSON
        on one line, ended by a blank line.
        """
        event = self.stream.publish("tftp.end", host="alpha", path="a\nb", bytes=3)
        frame = sseFrame(event)
        self.assertTrue(frame.startswith(b"id: 1\ndata: {"))
        self.assertTrue(frame.endswith(b"}\n\n"))
        self.assertEqual(frame.count(b"\n"), 3)
        data = json.loads(frame.split(b"data: ", 1)[1])
        self.assertEqual((data["kind"], data["path"], data["seq"]), ("tftp.end", "a\nb", 1))

    def test_live(self):
        """
        A feed answers text/event-stream, tells the client to retry after
        3 s, then sends each event that passes its filters as it is
        published.
        """
        request, feed = self.feed(filters={"kind": "tftp"})
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"),
                         [b"text/event-stream; charset=utf-8"])
        self.stream.publish("tftp.start", path="x")
        self.stream.publish("dhcp.boot")
        self.stream.publish("tftp.end", path="x")
        frames = parseSSE(request.body())
        self.assertEqual(frames[0], {"retry": "3000"})
        self.assertEqual([f["id"] for f in frames[1:]], ["1", "3"])
        self.assertEqual([json.loads(f["data"])["kind"] for f in frames[1:]],
                         ["tftp.start", "tftp.end"])

    def test_resume(self):
        """
        If the client gives the last id it saw, the feed sends the events
        after it first, then the live ones; a comment says which were no
        longer kept.
        """
        for i in range(4):
            self.stream.publish("k", n=i)
        request, feed = self.feed(lastId=2)
        self.stream.publish("k", n=4)
        self.assertEqual([f.get("id") for f in parseSSE(request.body())[1:]], ["3", "4", "5"])
        for i in range(10):
            self.stream.publish("k")
        request, feed = self.feed(lastId=1)
        frames = parseSSE(request.body())
        self.assertEqual(frames[1], {"": "events 2 to 5 are no longer kept"})
        self.assertEqual(frames[2]["id"], "6")

    def test_heartbeat(self):
        """
        Every 15 seconds the feed sends a comment, so that proxies and the
        client know it lives.
        """
        request, feed = self.feed()
        self.clock.advance(14.9)
        self.assertNotIn(b": heartbeat", request.body())
        self.clock.advance(0.1)
        self.assertEqual(request.body().count(b": heartbeat\n\n"), 1)
        self.clock.advance(15)
        self.assertEqual(request.body().count(b": heartbeat\n\n"), 2)

    def test_slowClient(self):
        """
        While the connection is full (paused) events wait in a bounded
        queue and go out in order on resume; one more than the bound and
        the client is dropped: connection aborted, unsubscribed, no timer
        left, nothing more held.
        """
        request, feed = self.feed(maxQueued=3)
        request.producer.pauseProducing()
        for i in range(3):
            self.stream.publish("k")
        self.assertEqual(len(parseSSE(request.body())), 1)
        request.producer.resumeProducing()
        self.assertEqual([f["id"] for f in parseSSE(request.body())[1:]], ["1", "2", "3"])
        feed.pauseProducing()
        for i in range(4):
            self.stream.publish("k")
        self.assertTrue(feed.dropped)
        self.assertTrue(request.channel.transport.aborted)
        self.assertEqual(self.stream.subscribers, 0)
        self.assertEqual(len(feed.queue), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_clientGone(self):
        """
        If the client goes away, the feed unsubscribes and stops its
        heartbeat.
        """
        closed = []
        request, feed = self.feed(onClose=closed.append)
        request.processingFailed(Failure(ConnectionError("gone")))
        self.assertEqual(self.stream.subscribers, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(closed, [feed])


class APITests(SynchronousTestCase):
    """
    The events endpoints through L{APIResource}.
    """

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(500)
        self.appliance = Appliance(loadConfig(), self.clock)
        self.api = APIResource(self.appliance)
        events = self.appliance.events
        events.publish("dhcp.boot", mac=ALPHA, host="alpha", boot_file="undionly.kpxe")
        events.publish("tftp.end", mac=ALPHA, host="alpha", path="undionly.kpxe")
        events.publish("config.reload", level="error", result="refused", error="bad")

    def get(self, path, args=None, headers=None):
        request = FeedRequest(path.split("/"), headers)
        for name, value in (args or {}).items():
            request.args[name.encode()] = [value.encode()]
        body = self.api.render_GET(request)
        return request, body

    def test_events(self):
        """
        C{/api/v1/events} answers the events matching the query, with the
        newest sequence number and the oldest kept.
        """
        request, body = self.get("events", {"host": "alpha", "kind": "tftp,dhcp"})
        answer = json.loads(body)
        self.assertEqual([e["kind"] for e in answer["events"]], ["dhcp.boot", "tftp.end"])
        self.assertEqual((answer["seq"], answer["oldest"], answer["size"]), (3, 1, 10000))
        answer = json.loads(self.get("events", {"since": "2"})[1])
        self.assertEqual([e["seq"] for e in answer["events"]], [3])
        answer = json.loads(self.get("events", {"level": "error", "limit": "5"})[1])
        self.assertEqual([e["error"] for e in answer["events"]], ["bad"])
        answer = json.loads(self.get("events", {"mac": ALPHA.upper().replace(":", "-")})[1])
        self.assertEqual(len(answer["events"]), 2)

    def test_badQuery(self):
        """
        A C{since} or C{limit} that is not a number is 400.
        """
        request, body = self.get("events", {"since": "yesterday"})
        self.assertEqual(request.responseCode, 400)
        self.assertIn(b"since must be a number", body)

    def test_stream(self):
        """
        C{/api/v1/events/stream} with C{Last-Event-ID} sends what came
        after it, then live events; beyond the feeds allowed it is 503.
        """
        from twisted.web import server
        request, body = self.get("events/stream", headers={"Last-Event-ID": "1"})
        self.assertIs(body, server.NOT_DONE_YET)
        self.appliance.events.publish("tftp.start")
        self.assertEqual([f.get("id") for f in parseSSE(request.body())[1:]], ["2", "3", "4"])
        self.api.console.maxFeeds = 1
        request2, body = self.get("events/stream")
        self.assertEqual(request2.responseCode, 503)
        request.processingFailed(Failure(ConnectionError("gone")))
        self.assertEqual(self.api.console.feeds, set())


class FakeTransfer:
    """
    An L{provisioner.web.files.HTTPTransfer} as the start callbacks see it.
    """

    def __init__(self):
        self.peer = ("198.18.0.11", 5000)
        self.path = "images/debian/linux"
        self.size = self.length = 1000
        self.code = 200
        self.sent = 0
        self.finished = defer.Deferred()

    def duration(self):
        return 2.0


class TransferEventsTests(SynchronousTestCase):
    """
    Tests for L{TransferEvents}: the TFTP and HTTP hooks as events.
    """

    def setUp(self):
        self.clock = task.Clock()
        self.appliance = Appliance(loadConfig(), self.clock)
        self.appliance.clients.update(mac=ALPHA, ip="198.18.0.11", arch=0)
        self.events = TransferEvents(self.appliance)

    def kinds(self):
        return [(e.kind, e.level) for e in self.appliance.events.query()]

    def test_hooks(self):
        """
        L{TransferEvents.hook} registers with each service's hooks once, and
        L{TransferEvents.unhook} removes them.
        """
        registered = []

        class Service:
            def __getattr__(self, name):
                if not name.startswith("add"):
                    raise AttributeError(name)

                def add(callback):
                    registered.append(name)
                    return lambda: registered.remove(name)
                return add
        self.appliance.tftp = Service()
        self.appliance.http = Service()
        self.events.hook()
        self.events.hook()
        self.assertEqual(sorted(registered), sorted([
            "addStartCallback", "addStatsCallback", "addRefusalCallback",
            "addStartCallback", "addRequestCallback"]))
        self.events.unhook()
        self.assertEqual(registered, [])

    def test_tftp(self):
        """
        A TFTP session's start and end are events with the path, bytes,
        rate and retransmits; an end that is not complete is a warning;
        a refusal names the path asked.
        """
        stats = SessionStats(("198.18.0.11", 3000), "undionly.kpxe", size=4000)
        self.events.tftpStarted(stats)
        stats.started, stats.ended = 10.0, 12.0
        stats.bytes, stats.retransmits, stats.outcome = 4000, 2, "complete"
        self.events.tftpEnded(stats)
        stats.outcome = "timeout"
        self.events.tftpEnded(stats)
        self.events.tftpRefused("read", "not_found", ("198.18.0.11", 3001), b"pxelinux.0")
        self.assertEqual(self.kinds(), [("tftp.start", "info"), ("tftp.end", "info"),
                                        ("tftp.end", "warn"), ("tftp.refused", "warn")])
        events = self.appliance.events.query()
        self.assertEqual((events[1].mac, events[1].fields["rate"],
                          events[1].fields["retransmits"]), (ALPHA, 2000, 2))
        self.assertEqual(events[3].fields["path"], "pxelinux.0")

    def test_http(self):
        """
        An HTTP body's start is an event, and its end when it is written
        (complete) or not (aborted, a warning with why); a file answered 404
        is an error event, an API request is none.
        """
        done, broken = FakeTransfer(), FakeTransfer()
        self.events.httpStarted(done)
        self.events.httpStarted(broken)
        done.sent = 1000
        done.finished.callback(None)
        broken.finished.callback("client went away")
        events = self.appliance.events.query()
        self.assertEqual([(e.kind, e.fields.get("outcome")) for e in events], [
            ("http.start", None), ("http.start", None), ("http.end", "complete"),
            ("http.end", "aborted")])
        self.assertEqual((events[2].fields["bytes"], events[2].fields["rate"]), (1000, 500))
        self.assertEqual(events[3].fields["detail"], "client went away")

        for path, code in ((b"/boot.ipxe", 404), (b"/api/v1/nothing", 404), (b"/x", 200)):
            request = FeedRequest()
            request.path, request.code = path, code
            self.events.httpAnswered(request)
        self.assertEqual([(e.kind, e.fields.get("path")) for e in
                          self.appliance.events.query(kind="http.error")],
                         [("http.error", "/boot.ipxe")])


class MenusLogTests(SynchronousTestCase):
    """
    Tests for L{MenusLogBridge}: the menus' log lines of one appliance as
    events.
    """

    def test_bridge(self):
        """
        The menus service's line for a menu served is C{menu.render} (a
        warning when the fallback was served); the renderer's error lines
        are C{menu.error}; the lines of any other source, and the renderer's
        lines below error, are no event.
        """
        clock = task.Clock()
        appliance = Appliance(loadConfig(), clock)
        bridge = MenusLogBridge(appliance)

        class Renderer:
            log = Logger(observer=bridge)

        class Menus:
            log = Logger(observer=bridge)

            def __init__(self):
                self.renderer = Renderer()
        appliance.menus = menus = Menus()
        other = Menus()
        menus.log.debug("menu {path} for {client}: {template}", path="boot.ipxe",
                        client=ALPHA, template="ipxe/default.ipxe")
        other.log.debug("menu {path} for {client}: {template}", path="boot.ipxe",
                        client=ALPHA, template="x")
        menus.log.debug("menu {path} for {client}: {template}", path="boot.ipxe",
                        client="198.18.0.11", template="fallback")
        menus.renderer.log.error("menus: template {template} line {line}: {kind}: {error}",
                                 template="bad.ipxe", line=3, kind="UndefinedError",
                                 error="'nope' is undefined", loader="ipxe", client=ALPHA)
        menus.renderer.log.info("nothing to see")
        other.renderer.log.error("another appliance")
        events = appliance.events.query()
        self.assertEqual([(e.kind, e.level, e.mac) for e in events], [
            ("menu.render", "info", ALPHA), ("menu.render", "warn", None),
            ("menu.error", "error", ALPHA)])
        self.assertEqual(events[0].fields["template"], "ipxe/default.ipxe")
        self.assertEqual(events[1].fields["ip"], "198.18.0.11")
        self.assertEqual(events[2].fields["message"],
                         "menus: template bad.ipxe line 3: UndefinedError: 'nope' is undefined")
        self.assertEqual(events[2].fields["template"], "bad.ipxe")


class SubsystemTests(SynchronousTestCase):
    """
    What the subsystems publish through C{appliance.events}.
    """

    def test_dhcpBootDecision(self):
        """
        A DHCP boot decision is a C{dhcp.boot} event with the MAC,
        architecture, vendor class, boot file and why; the same decision
        for the same MAC within 10 s is not published again; no decision
        is a warning.
        """
        from provisioner.dhcp.boot import BootAnswers
        from provisioner.dhcp.policy import BootDecision, ClientFacts
        clock = task.Clock()
        clock.advance(100)
        appliance = Appliance(loadConfig(), clock)

        class Policy:
            answer = BootDecision("undionly.kpxe", reason="arch")

            def decide(self, facts):
                return self.answer
        policy = Policy()
        boot = BootAnswers(loadConfig()["dhcp"], clock, appliance.clients, policy, Logger(),
                           lambda name: None, appliance.events)

        def decide():
            return boot.decide(ClientFacts(ALPHA, 0, "PXEClient:Arch:00000", [], False, None,
                                           False), "198.18.0.11")
        decide()
        clock.advance(5)
        decide()
        clock.advance(6)
        decide()
        policy.answer = None
        decide()
        events = appliance.events.query(kind="dhcp.boot")
        self.assertEqual([(e.mac, e.level, e.fields["boot_file"]) for e in events], [
            (ALPHA, "info", "undionly.kpxe"), (ALPHA, "info", "undionly.kpxe"),
            (ALPHA, "warn", None)])
        self.assertEqual((events[0].fields["arch"], events[0].fields["vendor"],
                          events[0].fields["reason"], events[0].fields["ip"]),
                         (0, "PXEClient:Arch:00000", "arch", "198.18.0.11"))

    def test_hostStates(self):
        """
        Each host lifecycle event is a C{host.state} event: the inventory's
        hosts become ready when the book loads.
        """
        from provisioner.hosts.service import HostsService
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        inventory = os.path.join(directory, "inventory.yaml")
        with open(inventory, "w") as f:
            f.write(INVENTORY)
        clock = task.Clock()
        config = loadConfig(overrides=[
            ("menus.enabled", True), ("inventory.enabled", True), ("inventory.file", inventory),
            ("hosts.enabled", True), ("hosts.state_directory", os.path.join(directory, "s"))])
        appliance = Appliance(config, clock)
        from provisioner.menus.inventory import loadInventory
        appliance.inventory = loadInventory(inventory)
        hosts = HostsService(appliance)
        hosts.startService()
        self.addCleanup(lambda: self.successResultOf(hosts.stopService()))
        events = appliance.events.query(kind="host.state")
        self.assertEqual(sorted((e.host, e.fields["source"], e.fields["target"])
                                for e in events),
                         [("alpha", None, "ready"), ("beta", None, "ready")])
        self.assertEqual([e.mac for e in events if e.host == "alpha"], [ALPHA])

    def test_reloads(self):
        """
        A refused reload is a C{config.reload} error event with why, and is
        the appliance's last reload; an applied one is an info event.
        """
        from provisioner.tap import ProvisionerService
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("tftp:\n  enabled: false\n")
        clock = task.Clock()
        service = ProvisionerService(loadConfig(path), path, reactor=clock)
        with open(path, "w") as f:
            f.write("tftp:\n  windowsize_max: -1\n")
        self.assertFalse(service.reload())
        event = service.appliance.events.query(kind="config.reload")[-1]
        self.assertEqual((event.level, event.fields["result"]), ("error", "refused"))
        self.assertIn("windowsize_max", event.fields["error"])
        self.assertEqual(service.appliance.lastReload["result"], "refused")
        with open(path, "w") as f:
            f.write("tftp:\n  enabled: false\n")
        self.assertTrue(service.reload())
        event = service.appliance.events.query(kind="config.reload")[-1]
        self.assertEqual((event.level, event.fields["result"]), ("info", "applied"))
        self.assertEqual(service.appliance.lastReload["result"], "applied")
