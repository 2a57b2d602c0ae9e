# -*- test-case-name: tests.test_metrics -*-
"""
Tests for L{provisioner.metrics}: the scrape, parsed with
C{prometheus_client}'s own parser, after known traffic. Unit tests drive
the hooks and the collector with a L{Clock} and fakes; one test runs the
appliance on loopback with tftp-hpa as the client and scrapes C{/metrics}
over HTTP.
"""

import os
import threading
import types

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor, task, utils
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from provisioner.appliance import Appliance
from provisioner.config import loadConfig
from provisioner.dhcp import wire
from provisioner.dhcp.leases import LeaseStore
from provisioner.dhcp.server import DHCPResponder
from provisioner.dhcp.wire import OPT
from provisioner import metrics as metrics_module
from provisioner.metrics import ApplianceMetrics, statusClass
from provisioner.tftp.transfer import SessionStats

from tests.netlab import requireE2E
from tests.test_dhcp_server import FULL, IFACE, SERVER, Sent, config, request


def parse(text):
    """
    C{{(sample name, frozenset(labels)): value}} of a scrape.
    """
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name, frozenset(sample.labels.items())] = sample.value
    return out


def scrape(metrics):
    """
    The parsed scrape of an L{ApplianceMetrics}' registry.
    """
    return parse(generate_latest(metrics.registry).decode("utf-8"))


def value(samples, name, **labels):
    """
    The value of one sample, or L{None} when there is none.
    """
    return samples.get((name, frozenset(labels.items())))


def labelValues(samples):
    """
    Every label value of a scrape.
    """
    return {v for (_, labels) in samples for (_, v) in labels}


class FakeService:
    """
    A service with the hooks of the tftp and http services: C{add...}
    records the callback and returns its remover.
    """

    def __init__(self):
        self.callbacks = {}

    def _add(self, kind, callback):
        self.callbacks.setdefault(kind, []).append(callback)
        return lambda: self.callbacks[kind].remove(callback)

    def addStatsCallback(self, callback):
        return self._add("stats", callback)

    def addRequestCallback(self, callback):
        return self._add("request", callback)

    def addFetchCallback(self, callback):
        return self._add("fetch", callback)

    def fire(self, kind, thing):
        for callback in list(self.callbacks.get(kind, ())):
            callback(thing)


def stats(path, peer, bytes, duration, outcome="complete", retransmits=0, direction="read",
          timeouts=0):
    s = SessionStats(peer, path, direction, bytes)
    s.bytes, s.blocks, s.retransmits, s.timeouts = bytes, bytes // 512 + 1, retransmits, timeouts
    s.started, s.ended, s.outcome = 100.0, 100.0 + duration, outcome
    return s


def appliance(clock=None):
    return Appliance(loadConfig(None, [("tftp.enabled", False)]), clock or Clock())


class HookTests(SynchronousTestCase):
    """
    The counters fed by the TFTP and HTTP services' callbacks.
    """

    def setUp(self):
        self.appliance = appliance()
        self.tftp = self.appliance.tftp = FakeService()
        self.http = self.appliance.http = FakeService()
        self.metrics = ApplianceMetrics(self.appliance)
        self.metrics.hook()

    def test_tftpTransfers(self):
        """
        If three reads complete and one write times out, the transfers,
        bytes, blocks, retransmits, timeouts and the duration histogram
        count exactly those.
        """
        for s in (stats("a", ("10.0.0.1", 1000), 1000, 0.02, retransmits=1),
                  stats("b", ("10.0.0.2", 1001), 2000, 0.2),
                  stats("c", ("10.0.0.3", 1002), 3000, 3.0, retransmits=2),
                  stats("u", ("10.0.0.4", 1003), 700, 30.5, "timeout", direction="write",
                        timeouts=5)):
            self.tftp.fire("stats", s)
        got = scrape(self.metrics)
        self.assertEqual(value(got, "provisioner_tftp_transfers_total", direction="read",
                               outcome="complete"), 3)
        self.assertEqual(value(got, "provisioner_tftp_transfers_total", direction="write",
                               outcome="timeout"), 1)
        self.assertEqual(value(got, "provisioner_tftp_bytes_total", direction="read"), 6000)
        self.assertEqual(value(got, "provisioner_tftp_bytes_total", direction="write"), 700)
        self.assertEqual(value(got, "provisioner_tftp_blocks_total", direction="read"),
                         2 + 4 + 6)
        self.assertEqual(value(got, "provisioner_tftp_retransmits_total", direction="read"), 3)
        self.assertEqual(value(got, "provisioner_tftp_timeouts_total", direction="write"), 5)
        name = "provisioner_tftp_transfer_duration_seconds"
        self.assertEqual(value(got, name + "_count", direction="read"), 3)
        self.assertAlmostEqual(value(got, name + "_sum", direction="read"), 3.22)
        self.assertEqual(value(got, name + "_bucket", direction="read", le="0.025"), 1)
        self.assertEqual(value(got, name + "_bucket", direction="read", le="0.25"), 2)
        self.assertEqual(value(got, name + "_bucket", direction="read", le="5.0"), 3)
        self.assertEqual(value(got, name + "_bucket", direction="write", le="30.0"), 0)
        self.assertEqual(value(got, name + "_bucket", direction="write", le="60.0"), 1)

    def test_unknownOutcome(self):
        """
        If a transfer ends with an outcome the metrics do not know, it is
        counted as C{other}, not under a new label value.
        """
        self.tftp.fire("stats", stats("a", ("10.0.0.1", 1), 10, 0.1, outcome="weird"))
        got = scrape(self.metrics)
        self.assertEqual(value(got, "provisioner_tftp_transfers_total", direction="read",
                               outcome="other"), 1)
        self.assertNotIn("weird", labelValues(got))

    def test_http(self):
        """
        If the http service reports answered requests and whole fetches,
        requests are counted by method and status class, body bytes by
        status class, fetches by outcome; a method nobody knows is
        C{other}.
        """
        def answered(method, code, length):
            self.http.fire("request", types.SimpleNamespace(method=method, code=code,
                                                            sentLength=length))
        answered(b"GET", 200, 1000)
        answered(b"GET", 206, 24)
        answered(b"HEAD", 200, 0)
        answered(b"GET", 404, 14)
        answered(b"BREW", 405, 5)
        self.http.fire("fetch", types.SimpleNamespace(outcome="complete"))
        self.http.fire("fetch", types.SimpleNamespace(outcome="partial"))
        got = scrape(self.metrics)
        self.assertEqual(value(got, "provisioner_http_requests_total", method="GET",
                               code="2xx"), 2)
        self.assertEqual(value(got, "provisioner_http_requests_total", method="HEAD",
                               code="2xx"), 1)
        self.assertEqual(value(got, "provisioner_http_requests_total", method="GET",
                               code="4xx"), 1)
        self.assertEqual(value(got, "provisioner_http_requests_total", method="other",
                               code="4xx"), 1)
        self.assertEqual(value(got, "provisioner_http_response_bytes_total", code="2xx"), 1024)
        self.assertEqual(value(got, "provisioner_http_response_bytes_total", code="4xx"), 19)
        self.assertEqual(value(got, "provisioner_http_fetches_total", outcome="complete"), 1)
        self.assertEqual(value(got, "provisioner_http_fetches_total", outcome="partial"), 1)

    def test_statusClass(self):
        """
        Status codes fall in their class; what is not a status is C{other}.
        """
        self.assertEqual([statusClass(c) for c in (101, 200, 302, 404, 503, 99, 600, None)],
                         ["1xx", "2xx", "3xx", "4xx", "5xx", "other", "other", "other"])

    def test_hookOnce(self):
        """
        If L{ApplianceMetrics.hook} runs again (after a reload), a service
        already hooked is not hooked twice; one built since is hooked;
        L{ApplianceMetrics.unhook} removes every registration.
        """
        self.metrics.hook()
        self.assertEqual(len(self.tftp.callbacks["stats"]), 1)
        newer = self.appliance.tftp = FakeService()
        self.metrics.hook()
        self.assertEqual(len(newer.callbacks["stats"]), 1)
        self.metrics.unhook()
        self.assertEqual((self.tftp.callbacks["stats"], newer.callbacks["stats"],
                          self.http.callbacks["request"], self.http.callbacks["fetch"]),
                         ([], [], [], []))

    def test_ownRegistry(self):
        """
        Each appliance's metrics are in a registry of their own: a second
        one in the same process is independent, and the process-wide
        registry has none of them.
        """
        other = ApplianceMetrics(appliance())
        self.tftp.fire("stats", stats("a", ("10.0.0.1", 1), 10, 0.1))
        self.assertEqual(value(scrape(other), "provisioner_tftp_transfers_total",
                               direction="read", outcome="complete"), None)
        self.assertEqual(value(scrape(self.metrics), "provisioner_tftp_transfers_total",
                               direction="read", outcome="complete"), 1)
        self.assertFalse([n for n in REGISTRY._names_to_collectors
                          if n.startswith("provisioner_")])


class SnapshotTests(SynchronousTestCase):
    """
    The collector reads the appliance's state in the reactor thread.
    """

    def inThread(self, f):
        out = []
        thread = threading.Thread(target=lambda: out.append(self.attempt(f)))
        thread.start()
        thread.join(5)
        return out[0]

    @staticmethod
    def attempt(f):
        try:
            return ("ok", f())
        except Exception as e:
            return ("error", e)

    def test_fromAnotherThread(self):
        """
        If a scrape runs in another thread (the WSGI resource's pool), the
        state is read by a call the reactor runs (C{callFromThread}).
        """
        ran = []

        class Reactor(Clock):
            def callFromThread(self, f, *args):
                ran.append(threading.get_ident())
                f(*args)
        metrics = ApplianceMetrics(Appliance(loadConfig(None, [("tftp.enabled", False)]),
                                             Reactor()))
        kind, result = self.inThread(lambda: metrics.snapshot(lambda: threading.get_ident()))
        self.assertEqual((kind, ran), ("ok", [result]))

    def test_reactorSilent(self):
        """
        If the reactor does not run the read in time (it is stopping), the
        scrape fails instead of waiting for ever.
        """
        self.patch(metrics_module, "SNAPSHOT_TIMEOUT", 0.05)

        class Reactor(Clock):
            def callFromThread(self, f, *args):
                pass
        metrics = ApplianceMetrics(Appliance(loadConfig(None, [("tftp.enabled", False)]),
                                             Reactor()))
        kind, error = self.inThread(lambda: metrics.snapshot(lambda: 1))
        self.assertEqual(kind, "error")
        self.assertIsInstance(error, RuntimeError)


class DHCPTests(SynchronousTestCase):
    """
    The DHCP requests and pools, read from the responder and its lease
    store at scrape time.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(10000)
        self.appliance = appliance(self.clock)
        self.leases = LeaseStore(os.path.join(self.mktemp(), "l.sqlite"), self.clock)
        self.addCleanup(self.leases.close)
        self.responder = DHCPResponder(config(FULL), self.clock, self.appliance.clients,
                                       self.leases)
        self.appliance.dhcp = types.SimpleNamespace(responder=self.responder)
        self.metrics = ApplianceMetrics(self.appliance)
        self.sent = Sent()

    def handshake(self, mac):
        self.responder.handleDHCP(request(wire.DHCPDISCOVER, mac), IFACE, self.sent)
        offer = self.sent[-1][0]
        self.responder.handleDHCP(request(wire.DHCPREQUEST, mac, [
            (OPT.SERVER_ID, wire.ip2bytes(SERVER)),
            (OPT.REQUESTED_IP, wire.ip2bytes(offer.yiaddr))]), IFACE, self.sent)
        return offer.yiaddr

    def test_requestsAndLeases(self):
        """
        If two clients do DISCOVER and REQUEST through the dispatcher, one
        asks for an address of another network and one releases its
        address, the scrape counts two offers, two ACKs, a NAK and a
        RELEASE without reply; the pool has one address bound and the
        sizes of both pools.
        """
        macs = [b"\x52\x54\x00\x00\x00\x01", b"\x52\x54\x00\x00\x00\x02"]
        ips = [self.handshake(mac) for mac in macs]
        self.responder.handleDHCP(request(wire.DHCPREQUEST, b"\x52\x54\x00\x00\x00\x03", [
            (OPT.REQUESTED_IP, wire.ip2bytes("10.9.9.9"))]), IFACE, self.sent)
        self.responder.handleDHCP(request(wire.DHCPRELEASE, macs[1], ciaddr=ips[1]),
                                  IFACE, self.sent)
        got = scrape(self.metrics)
        name = "provisioner_dhcp_requests_total"
        self.assertEqual(value(got, name, port="dhcp", type="DISCOVER", decision="offer"), 2)
        self.assertEqual(value(got, name, port="dhcp", type="REQUEST", decision="ack"), 2)
        self.assertEqual(value(got, name, port="dhcp", type="REQUEST", decision="nak"), 1)
        self.assertEqual(value(got, name, port="dhcp", type="RELEASE", decision="noreply"), 1)
        self.assertEqual(value(got, "provisioner_dhcp_leases", pool="198.18.0.0/24",
                               state="bound"), 1)
        self.assertEqual(value(got, "provisioner_dhcp_leases", pool="198.18.7.0/24",
                               state="bound"), 0)
        self.assertEqual(value(got, "provisioner_dhcp_pool_addresses", pool="198.18.0.0/24"), 3)
        self.assertEqual(value(got, "provisioner_dhcp_pool_addresses", pool="198.18.7.0/24"),
                         11)
        values = labelValues(got)
        for secret in ips + ["52:54:00:00:00:01", "52:54:00:00:00:02", "10.9.9.9"]:
            self.assertNotIn(secret, values)

    def test_expiredNotInUse(self):
        """
        If a lease has expired, the pool does not count it as bound.
        """
        self.handshake(b"\x52\x54\x00\x00\x00\x01")
        self.clock.advance(601)
        self.assertEqual(value(scrape(self.metrics), "provisioner_dhcp_leases",
                               pool="198.18.0.0/24", state="bound"), 0)

    def test_ignoredAndBOOTP(self):
        """
        A request no mode answers is C{ignored}; a BOOTP request is of type
        C{BOOTP}.
        """
        bootp = wire.DHCPPacket(op=wire.BOOTREQUEST, xid=1, chaddr=b"\x52\x54\x00\x00\x00\x09")
        self.responder.handleDHCP(wire.DHCPPacket.from_wire(bootp.to_wire()), IFACE, self.sent)
        self.responder.handleDHCP(request(wire.DHCPREQUEST, b"\x52\x54\x00\x00\x00\x08"),
                                  IFACE, self.sent)
        got = scrape(self.metrics)
        name = "provisioner_dhcp_requests_total"
        self.assertEqual(value(got, name, port="dhcp", type="BOOTP", decision="ignored"), 1)
        self.assertEqual(value(got, name, port="dhcp", type="REQUEST", decision="ignored"), 1)


class StateTests(SynchronousTestCase):
    """
    The gauges read from the TFTP dispatcher, the host book and the
    imagecast controller, and the reloads.
    """

    def setUp(self):
        self.appliance = appliance()
        self.metrics = ApplianceMetrics(self.appliance)

    def test_tftpState(self):
        """
        Transfers in flight, the limit and the refusals are read from the
        TFTP dispatcher when scraped.
        """
        server = types.SimpleNamespace(
            inFlight=lambda: 7, config={"max_sessions": 50},
            refusals={("read", "not_found"): 2, ("write", "access_violation"): 1})
        self.appliance.tftp = types.SimpleNamespace(server=server)
        got = scrape(self.metrics)
        self.assertEqual(value(got, "provisioner_tftp_transfers_in_flight"), 7)
        self.assertEqual(value(got, "provisioner_tftp_transfers_max"), 50)
        self.assertEqual(value(got, "provisioner_tftp_requests_refused_total",
                               direction="read", reason="not_found"), 2)
        self.assertEqual(value(got, "provisioner_tftp_requests_refused_total",
                               direction="write", reason="access_violation"), 1)

    def test_hosts(self):
        """
        Hosts are counted by lifecycle state, discovered machines as
        C{discovered}; every state has a sample.
        """
        record = lambda state: types.SimpleNamespace(state=state)
        self.appliance.hosts = types.SimpleNamespace(
            hosts={"a": record("ready"), "b": record("deploying"), "c": record("deploying"),
                   "d": record("failed")},
            machines={"52:54:00:00:00:01": object()})
        got = scrape(self.metrics)
        self.assertEqual({s: value(got, "provisioner_hosts", state=s) for s in (
            "discovered", "ready", "deploying", "deployed", "failed")},
            {"discovered": 1, "ready": 1, "deploying": 2, "deployed": 0, "failed": 1})

    def test_imagecast(self):
        """
        Sessions by state, receivers by state and the registered ones are
        read from the controller; rounds and wire bytes add the running
        sessions' to what ended sessions did.
        """
        member = lambda state: types.SimpleNamespace(state=state)
        running = types.SimpleNamespace(
            state="running", rounds=[{"wire_bytes": 1000}, {"wire_bytes": 0}],
            members={"r1": member("active"), "r2": member("complete")})
        waiting = types.SimpleNamespace(state="waiting", rounds=[], members={
            "r3": member("active")})
        controller = types.SimpleNamespace(
            totals={"sessions": 3, "rounds": 9, "wire_bytes": 50000},
            sessions={1: running, 2: waiting}, clients={"r1": 0, "r2": 0, "r3": 0, "r4": 0})
        self.appliance.imagecast = types.SimpleNamespace(controller=controller)
        got = scrape(self.metrics)
        self.assertEqual(value(got, "provisioner_imagecast_sessions", state="running"), 1)
        self.assertEqual(value(got, "provisioner_imagecast_sessions", state="waiting"), 1)
        self.assertEqual(value(got, "provisioner_imagecast_sessions", state="repair"), 0)
        self.assertEqual(value(got, "provisioner_imagecast_sessions_ended_total"), 3)
        self.assertEqual(value(got, "provisioner_imagecast_rounds_total"), 11)
        self.assertEqual(value(got, "provisioner_imagecast_wire_bytes_total"), 51000)
        self.assertEqual(value(got, "provisioner_imagecast_receivers", state="active"), 2)
        self.assertEqual(value(got, "provisioner_imagecast_receivers", state="complete"), 1)
        self.assertEqual(value(got, "provisioner_imagecast_receivers", state="lost"), 0)
        self.assertEqual(value(got, "provisioner_imagecast_receivers_registered"), 4)

    def test_reloads(self):
        """
        If the appliance reloads a good file, then a bad one, the scrape
        counts one applied and one refused reload.
        """
        from provisioner.tap import ProvisionerService
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("tftp:\n  enabled: false\n")
        service = ProvisionerService(loadConfig(path), path, reactor=Clock())
        metrics = ApplianceMetrics(service.appliance)
        self.assertTrue(service.reload())
        with open(path, "w") as f:
            f.write("tftp:\n  enabled: maybe\n")
        self.assertFalse(service.reload())
        got = scrape(metrics)
        self.assertEqual(value(got, "provisioner_config_reloads_total", result="applied"), 1)
        self.assertEqual(value(got, "provisioner_config_reloads_total", result="refused"), 1)
        self.assertEqual(value(got, "provisioner_config_reloads_total", result="failed"), 0)

    def test_nothingRunning(self):
        """
        With no subsystem running, the scrape still parses and has the
        families, with no samples for what is not there.
        """
        got = scrape(self.metrics)
        self.assertIsNone(value(got, "provisioner_tftp_transfers_in_flight"))
        self.assertEqual(value(got, "provisioner_config_reloads_total", result="applied"), 0)


class RouteTests(SynchronousTestCase):
    """
    C{/metrics} on the http service, as C{http.metrics} says.
    """

    def service(self, enabled):
        from provisioner.web.service import HTTPService
        app = Appliance(loadConfig(None, [("tftp.enabled", False), ("http.enabled", True),
                                          ("http.metrics", enabled)]), Clock())
        return HTTPService(app)

    def child(self, http, path):
        from twisted.web.test.requesthelper import DummyRequest
        request = DummyRequest(path.split(b"/")[1:])
        name = request.postpath.pop(0)
        request.prepath.append(name)
        return http.root.getChildWithDefault(name, request)

    def test_served(self):
        """
        With C{http.metrics} on, C{/metrics} is prometheus_client's
        resource serving the service's registry; C{/metrics/x} is a file.
        """
        from twisted.web.wsgi import WSGIResource
        http = self.service(True)
        self.assertIsInstance(self.child(http, b"/metrics"), WSGIResource)
        self.assertIs(self.child(http, b"/metrics/x"), http.files)

    def test_off(self):
        """
        With C{http.metrics} off, C{/metrics} is a file path like any other,
        and a reload that switches it on serves it.
        """
        http = self.service(False)
        self.assertIsNone(http.metrics)
        self.assertIs(self.child(http, b"/metrics"), http.files)
        config = loadConfig(None, [("tftp.enabled", False), ("http.enabled", True)])
        http.reconfigure(config)
        self.assertIsNot(self.child(http, b"/metrics"), http.files)


class LoopbackTests(TestCase):
    """
    The appliance on loopback (TFTP and HTTP), real clients, and the scrape
    of C{/metrics} over HTTP.
    """

    timeout = 60

    def setUp(self):
        requireE2E(tools=["tftp"])
        base = os.path.abspath(self.mktemp())
        self.root = os.path.join(base, "root")
        os.makedirs(self.root)
        self.sizes = {"a.bin": 100000, "b.bin": 5000}
        for name, size in self.sizes.items():
            with open(os.path.join(self.root, name), "wb") as f:
                f.write(os.urandom(size))
        self.out = os.path.join(base, "out")
        os.makedirs(self.out)
        overrides = [("tftp.port", 0), ("tftp.root", self.root), ("http.enabled", True),
                     ("http.port", 0), ("http.root", self.root)]
        from provisioner.tap import ProvisionerService
        self.service = ProvisionerService(loadConfig(None, overrides), None, overrides,
                                          reactor=reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.tftp = self.service.getServiceNamed("tftp")
        self.http = self.service.getServiceNamed("http")
        self.ended = []
        self.tftp.addStatsCallback(self.ended.append)

    def tftpGet(self, name):
        return utils.getProcessOutputAndValue("tftp", [
            "-m", "binary", "127.0.0.1", str(self.tftp.listeningPort),
            "-c", "get", name, os.path.join(self.out, name)], env=os.environ)

    @defer.inlineCallbacks
    def httpGet(self, path):
        from twisted.web.client import Agent, readBody
        response = yield Agent(reactor).request(b"GET", (self.http.url + path).encode())
        body = yield readBody(response)
        return response.code, body

    @defer.inlineCallbacks
    def waitFor(self, condition, seconds=10):
        for _ in range(int(seconds / 0.05)):
            if condition():
                return
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.fail("timed out")

    @defer.inlineCallbacks
    def test_scrape(self):
        """
        If tftp-hpa fetches three files and asks for a missing one, and an
        HTTP client fetches a file and a missing path, C{/metrics} (parsed
        with prometheus_client's parser) counts three complete reads of
        exactly the bytes sent, with the retransmits the sessions made,
        one refused read, nothing in flight, and the HTTP requests and
        bytes by status class; no label names a file or an address.
        """
        for name in ("a.bin", "b.bin", "a.bin", "missing.bin"):
            yield self.tftpGet(name)
        yield self.waitFor(lambda: len(self.ended) >= 3)
        code, body = yield self.httpGet("/b.bin")
        self.assertEqual((code, len(body)), (200, self.sizes["b.bin"]))
        code, _ = yield self.httpGet("/nothing.bin")
        self.assertEqual(code, 404)
        code, text = yield self.httpGet("/metrics")
        self.assertEqual(code, 200)
        got = parse(text.decode("utf-8"))
        sent = 2 * self.sizes["a.bin"] + self.sizes["b.bin"]
        self.assertEqual([s.outcome for s in self.ended], ["complete"] * 3)
        self.assertEqual(value(got, "provisioner_tftp_transfers_total", direction="read",
                               outcome="complete"), 3)
        self.assertEqual(value(got, "provisioner_tftp_bytes_total", direction="read"), sent)
        self.assertEqual(value(got, "provisioner_tftp_retransmits_total", direction="read"),
                         sum(s.retransmits for s in self.ended))
        self.assertEqual(value(got, "provisioner_tftp_transfer_duration_seconds_count",
                               direction="read"), 3)
        self.assertEqual(value(got, "provisioner_tftp_requests_refused_total",
                               direction="read", reason="not_found"), 1)
        self.assertEqual(value(got, "provisioner_tftp_transfers_in_flight"), 0)
        self.assertEqual(value(got, "provisioner_http_requests_total", method="GET",
                               code="2xx"), 1)
        self.assertEqual(value(got, "provisioner_http_requests_total", method="GET",
                               code="4xx"), 1)
        self.assertGreaterEqual(value(got, "provisioner_http_response_bytes_total",
                                      code="2xx"), self.sizes["b.bin"])
        self.assertEqual(value(got, "provisioner_http_fetches_total", outcome="complete"), 1)
        values = labelValues(got)
        for secret in ("127.0.0.1", "a.bin", "b.bin", "missing.bin", "nothing.bin"):
            self.assertFalse([v for v in values if secret in v], secret)
