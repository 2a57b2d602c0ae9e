# -*- test-case-name: tests.test_web -*-
"""
Tests for L{provisioner.web}: range parsing and the producer
(deterministic), then the resources over a real loopback port (127.0.0.1,
port 0) with twisted.web's client.
"""

import hashlib
import json
import os

from twisted.internet import defer, reactor
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from provisioner.appliance import Appliance
from provisioner.config import loadConfig
from provisioner.files import BytesSource
from provisioner.images.service import ImagesService
from provisioner.menus.service import MenuService
from provisioner.web.service import HTTPService
from provisioner.web.streaming import SourceProducer, parseRange
from tests.fakes import INVENTORY


class ParseRangeTests(SynchronousTestCase):
    """
    Tests for L{parseRange}.
    """

    def test_table(self):
        """
        Single ranges give C{(start, length)}; unsatisfiable ones C{"416"};
        several ranges, other units and bad syntax give L{None} (serve the
        whole body, as RFC 7233 allows).
        """
        table = [
            (None, None), (b"bytes=0-0", (0, 1)), (b"bytes=10-", (10, 90)),
            (b"bytes=-5", (95, 5)), (b"bytes=90-200", (90, 10)), (b"bytes=100-", "416"),
            (b"bytes=-0", "416"), (b"bytes=5-2", None), (b"bytes=0-1,3-4", None),
            (b"items=0-1", None), (b"bytes=a-b", None), (b"bytes=", None),
            (b"bytes=1", None), (b"\xff", None), (b" Bytes = 1 - 2 ", (1, 2)),
        ]
        for header, expected in table:
            self.assertEqual(parseRange(header, 100), expected, header)


class FakeRequest:
    """
    The part of a twisted.web request L{SourceProducer} uses.
    """

    def __init__(self):
        self.written = []
        self.finished = 0
        self.producer = None
        self._finish = defer.Deferred()
        self.channel = type("Channel", (), {})()
        self.channel.transport = StringTransport()

    def registerProducer(self, producer, streaming):
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None

    def write(self, data):
        self.written.append(data)

    def finish(self):
        self.finished += 1

    def notifyFinish(self):
        return self._finish


class ProducerTests(SynchronousTestCase):
    """
    Tests for L{SourceProducer}.
    """

    def test_streamsInChunksAndCloses(self):
        """
        The producer writes the range in chunks, finishes the request and
        closes the source.
        """
        request = FakeRequest()
        closed = []
        source = BytesSource(bytes(range(256)) * 4)
        source.close = lambda: closed.append(True)
        producer = SourceProducer(request, source, 10, 1000, chunk=300)
        d = producer.start()
        self.successResultOf(d)
        self.assertEqual([len(w) for w in request.written], [300, 300, 300, 100])
        self.assertEqual(b"".join(request.written), (bytes(range(256)) * 4)[10:1010])
        self.assertEqual(request.finished, 1)
        self.assertEqual(closed, [True])

    def test_pauses(self):
        """
        If the transport pauses the producer, nothing more is written until
        it resumes.
        """
        request = FakeRequest()
        source = BytesSource(b"x" * 1000)
        producer = SourceProducer(request, source, 0, 1000, chunk=100)
        original = request.write

        def write(data):
            original(data)
            producer.pauseProducing()
        request.write = write
        producer.start()
        self.assertEqual(len(request.written), 1)
        producer.resumeProducing()
        self.assertEqual(len(request.written), 2)

    def test_clientGone(self):
        """
        If the client goes away, the source is closed and nothing more is
        written.
        """
        request = FakeRequest()
        closed = []
        source = BytesSource(b"x" * 1000)
        source.close = lambda: closed.append(True)
        producer = SourceProducer(request, source, 0, 1000, chunk=100)
        request.write = lambda data: producer.pauseProducing()
        d = producer.start()
        request._finish.errback(ConnectionError("gone"))
        self.failureResultOf(d, ConnectionError)
        self.assertEqual(closed, [True])
        producer.resumeProducing()

    def test_shortSourceAborts(self):
        """
        If the source ends early, the connection is aborted (never a body
        shorter than its Content-Length).
        """
        request = FakeRequest()
        aborted = []
        request.channel.transport.abortConnection = lambda: aborted.append(True)
        source = BytesSource(b"x" * 10)
        d = SourceProducer(request, source, 0, 20, chunk=100).start()
        self.failureResultOf(d, IOError)
        self.assertEqual(aborted, [True])

    def test_logNamespace(self):
        """
        The producer's lines keep the namespace they had before it moved
        out of C{provisioner.web.resources}, with the producer as source.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        producer = SourceProducer(FakeRequest(), BytesSource(b"x" * 10), 0, 20, chunk=100)
        self.failureResultOf(producer.start(), IOError)
        self.assertEqual([(e["log_namespace"], e["log_format"], e["log_source"])
                          for e in events],
                         [("provisioner.web.resources.SourceProducer",
                           "HTTP transfer of {name} aborted: {why}", producer)])


class ResourceTests(TestCase):
    """
    The HTTP service on 127.0.0.1 with images, menus and the API.
    """

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        images = os.path.join(self.dir, "img")
        os.makedirs(os.path.join(images, "debian"))
        self.data = os.urandom(300000)
        with open(os.path.join(images, "debian", "linux"), "wb") as f:
            f.write(self.data)
        with open(os.path.join(images, "half.iso.part"), "wb") as f:
            f.write(b"partial")
        inventory = os.path.join(self.dir, "inventory.yaml")
        with open(inventory, "w") as f:
            f.write(INVENTORY)
        extra = os.path.join(self.dir, "root")
        os.makedirs(extra)
        with open(os.path.join(extra, "undionly.kpxe"), "wb") as f:
            f.write(b"nbp")
        config = loadConfig(overrides=[
            ("images.enabled", True), ("images.directory", images),
            ("images.state_dir", os.path.join(self.dir, "state")),
            ("images.watch", "poll"), ("images.poll_interval", 60.0),
            ("menus.enabled", True), ("inventory.enabled", True),
            ("inventory.file", inventory), ("http.enabled", True), ("http.port", 0),
            ("http.root", extra), ("http.chunk_size", 65536)])
        self.appliance = Appliance(config, reactor)
        self.images = ImagesService(self.appliance, runInThread=lambda f, *a:
                                    defer.maybeDeferred(f, *a))
        self.menus = MenuService(self.appliance, watch=False)
        self.http = HTTPService(self.appliance)
        for service in (self.images, self.menus, self.http):
            service.privilegedStartService()
            service.startService()
            self.addCleanup(service.stopService)
        self.base = self.http.url
        self.agent = Agent(reactor)
        return self.images.ready

    @defer.inlineCallbacks
    def get(self, path, method=b"GET", headers=None):
        response = yield self.agent.request(
            method, (self.base + path).encode("ascii"),
            Headers({k: [v] for k, v in (headers or {}).items()}))
        body = yield readBody(response)
        defer.returnValue((response, body))

    def header(self, response, name):
        values = response.headers.getRawHeaders(name)
        return values[0] if values else None

    @defer.inlineCallbacks
    def test_wholeImage(self):
        """
        If a catalogued image is asked for, it is served whole with its
        Content-Length, an ETag from its sha256 and Accept-Ranges.
        """
        response, body = yield self.get("/images/debian/linux")
        self.assertEqual(response.code, 200)
        self.assertEqual(body, self.data)
        self.assertEqual(response.length, 300000)
        self.assertEqual(self.header(response, b"accept-ranges"), b"bytes")
        self.assertEqual(self.header(response, b"etag"),
                         b'"' + hashlib.sha256(self.data).hexdigest()[:32].encode() + b'"')

    @defer.inlineCallbacks
    def test_head(self):
        """
        If HEAD is asked, the headers are those of GET and there is no body.
        """
        response, body = yield self.get("/images/debian/linux", method=b"HEAD")
        self.assertEqual(response.code, 200)
        self.assertEqual(body, b"")
        self.assertEqual(self.header(response, b"content-length"), b"300000")

    @defer.inlineCallbacks
    def test_range(self):
        """
        If one range is asked, 206 with Content-Range and exactly those bytes.
        """
        response, body = yield self.get("/images/debian/linux",
                                        headers={b"range": b"bytes=1000-1999"})
        self.assertEqual(response.code, 206)
        self.assertEqual(body, self.data[1000:2000])
        self.assertEqual(self.header(response, b"content-range"), b"bytes 1000-1999/300000")
        self.assertEqual(response.length, 1000)
        response, body = yield self.get("/images/debian/linux",
                                        headers={b"range": b"bytes=-10"})
        self.assertEqual(body, self.data[-10:])

    @defer.inlineCallbacks
    def test_unsatisfiableRange(self):
        """
        If the range starts past the end, 416 with C{bytes */size}.
        """
        response, body = yield self.get("/images/debian/linux",
                                        headers={b"range": b"bytes=300000-"})
        self.assertEqual(response.code, 416)
        self.assertEqual(self.header(response, b"content-range"), b"bytes */300000")

    @defer.inlineCallbacks
    def test_ifRange(self):
        """
        If If-Range does not match the ETag, the whole body is served.
        """
        response, body = yield self.get("/images/debian/linux", headers={
            b"range": b"bytes=0-9", b"if-range": b'"stale"'})
        self.assertEqual(response.code, 200)
        self.assertEqual(len(body), 300000)

    @defer.inlineCallbacks
    def test_notCatalogued(self):
        """
        If a file is in the images directory but not catalogued (partial),
        it is not served.
        """
        response, body = yield self.get("/images/half.iso.part")
        self.assertEqual(response.code, 404)

    @defer.inlineCallbacks
    def test_confinement(self):
        """
        If a path climbs out, 403.
        """
        response, body = yield self.get("/images/%2e%2e/%2e%2e/etc/passwd")
        self.assertEqual(response.code, 403)

    @defer.inlineCallbacks
    def test_extraRoot(self):
        """
        If C{http.root} is set, its files are served after images and menus.
        """
        response, body = yield self.get("/undionly.kpxe")
        self.assertEqual(body, b"nbp")

    @defer.inlineCallbacks
    def test_menus(self):
        """
        Menus are served per MAC by path or by query, with the base URL the
        client used, never cached by clients.
        """
        response, body = yield self.get("/menus/52-54-00-00-00-02/boot.ipxe")
        self.assertEqual(response.code, 200)
        self.assertIn(b"(beta)", body)
        self.assertIn(self.base.encode() + b"/images/rescue/vmlinuz", body)
        self.assertEqual(self.header(response, b"cache-control"), b"no-store")
        response, body = yield self.get("/boot.ipxe?mac=52:54:00:00:00:01&arch=0")
        self.assertIn(b"(alpha)", body)
        self.assertNotIn(b"initrd=initrd.gz", body)
        response, body = yield self.get("/boot.ipxe?mac=nonsense")
        self.assertEqual(response.code, 400)

    @defer.inlineCallbacks
    def test_api(self):
        """
        The JSON API lists the catalogue, the inventory, the hosts and what
        one host would be served.
        """
        response, body = yield self.get("/api/v1/images")
        data = json.loads(body)
        self.assertEqual([i["name"] for i in data["images"]], ["debian/linux"])
        self.assertNotIn("directory", data)
        self.assertNotIn(self.dir.encode(), body)
        response, body = yield self.get("/api/v1/inventory")
        self.assertEqual(sorted(json.loads(body)["hosts"]), ["alpha", "beta"])
        response, body = yield self.get("/api/v1/hosts")
        hosts = json.loads(body)["hosts"]
        self.assertEqual(hosts[0]["templates"]["ipxe"], "ipxe/default.j2")
        response, body = yield self.get("/api/v1/hosts/beta?arch=efi-x64")
        data = json.loads(body)
        self.assertEqual(data["inventory"]["profile"]["name"], "rescue")
        self.assertIn("efi-x64", data["menus"]["ipxe"]["text"])
        response, body = yield self.get("/api/v1/hosts/52-54-00-00-00-01")
        self.assertEqual(json.loads(body)["inventory"]["host"]["name"], "alpha")
        self.assertEqual(json.loads(body)["inventory"]["vars"], {})
        response, body = yield self.get("/api/v1/nothing")
        self.assertEqual(response.code, 404)

    @defer.inlineCallbacks
    def test_apiVarsReload(self):
        """
        The variables the API shows follow C{http.api_vars} across a reload.
        """
        response, body = yield self.get("/api/v1/inventory")
        self.assertEqual(json.loads(body)["hosts"]["beta"]["vars"], {})
        config = dict(self.appliance.config, http=dict(self.appliance.config["http"],
                                                       api_vars=["console"]))
        self.http.reconfigure(config)
        response, body = yield self.get("/api/v1/inventory")
        self.assertEqual(json.loads(body)["hosts"]["beta"]["vars"], {"console": "tty0"})

    @defer.inlineCallbacks
    def test_replacedDuringDownload(self):
        """
        If the image is replaced (rename over it) while a download is in
        flight, that download is byte-exact with the old version.
        """
        images = self.appliance.config["images"]["directory"]
        path = os.path.join(images, "debian", "linux")
        response = yield self.agent.request(b"GET", (self.base + "/images/debian/linux").encode())
        with open(path + ".new", "wb") as f:
            f.write(b"new" * 1000)
        os.rename(path + ".new", path)
        yield self.images.catalog.changed("debian/linux")
        body = yield readBody(response)
        self.assertEqual(body, self.data)
        response, body = yield self.get("/images/debian/linux")
        self.assertEqual(body, b"new" * 1000)

    @defer.inlineCallbacks
    def test_logNamespace(self):
        """
        The file resource's lines (each request, a fetch callback that
        raises) keep the namespace they had before it moved out of
        C{provisioner.web.resources}, with the resource as source.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        def broken(fetch):
            raise RuntimeError("broken callback")
        self.http.addFetchCallback(broken)
        response, body = yield self.get("/images/debian/linux")
        self.assertEqual(body, self.data)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        lines = [e for e in events if (e.get("log_format") or "").startswith("HTTP ")]
        self.assertEqual({e["log_format"] for e in lines},
                         {"HTTP {method} {path} from {peer}: {code}{length}",
                          "HTTP fetch callback {callback!r}"})
        self.assertEqual({(e["log_namespace"], id(e["log_source"])) for e in lines},
                         {("provisioner.web.resources.FileResource", id(self.http.files))})


class AloneTests(TestCase):
    """
    The HTTP service without the images and menus services.
    """

    @defer.inlineCallbacks
    def test_nothingToServe(self):
        """
        If neither images nor menus run, files are 404 and the API says the
        services are not enabled; nothing breaks.
        """
        config = loadConfig(overrides=[("http.enabled", True), ("http.port", 0)])
        appliance = Appliance(config, reactor)
        http = HTTPService(appliance)
        http.privilegedStartService()
        http.startService()
        self.addCleanup(http.stopService)
        agent = Agent(reactor)
        for path, code in (("/boot.ipxe", 404), ("/images/x", 404),
                           ("/api/v1/images", 404), ("/api/v1/hosts", 404),
                           ("/api/v1/clients", 200), ("/", 200)):
            response = yield agent.request(b"GET", (http.url + path).encode())
            yield readBody(response)
            self.assertEqual(response.code, code, path)
