# -*- test-case-name: tests.test_dashboard -*-
"""
The console end to end: the appliance run as a user runs it (twistd, on
loopback), real clients (tftp-hpa, curl), and the dashboard in a real
browser (Debian's headless Chromium, driven through chromedriver's
WebDriver HTTP API with the standard library).

  - after a TFTP transfer, a missing file, a template error and a refused
    reload, C{/api/v1/events} holds each of them, and C{/healthz} says
    the reload was refused;
  - the Server-Sent Events feed, read with C{curl -N}, resumes from
    C{Last-Event-ID} and carries a transfer that happens while it is read;
  - the dashboard, loaded while a slow TFTP transfer runs, shows the
    transfer's row with its progress moving and the hosts with their
    state; its screenshot goes to C{docs/images/dashboard.png} with
    C{PROVISIONER_SCREENSHOTS=1} (else to the test's directory).
"""

import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request

from twisted.trial.unittest import TestCase

from tests.fakes import INVENTORY
from tests.netlab import REPO, Appliance, requireE2E, waitFor

CONFIG = """\
tftp:
  enabled: true
  address: 127.0.0.1
  port: 0
  root: {d}/tftpboot
menus:
  enabled: true
  templates: {d}/templates
inventory:
  enabled: true
  file: {d}/inventory.yaml
hosts:
  enabled: true
  state_directory: {d}/state
http:
  enabled: true
  address: 127.0.0.1
  port: 0
"""

#: a template that fails when rendered (StrictUndefined)
BROKEN = "#!ipxe\necho {{ no_such_variable.missing }}\n"


class ConsoleAppliance(Appliance):
    """
    The appliance of these tests: TFTP, menus (with an operator template
    that fails), inventory, hosts and HTTP on loopback.
    """

    def __init__(self, directory):
        for sub in ("tftpboot", "templates/ipxe", "state"):
            os.makedirs(os.path.join(directory, sub), exist_ok=True)
        with open(os.path.join(directory, "inventory.yaml"), "w") as f:
            f.write(INVENTORY)
        for name in ("default.j2", "unknown.j2"):
            with open(os.path.join(directory, "templates", "ipxe", name), "w") as f:
                f.write(BROKEN)
        self.goodConfig = CONFIG.format(d=directory)
        Appliance.__init__(self, directory, self.goodConfig)
        self.root = os.path.join(directory, "tftpboot")

    def start(self, timeout=30):
        offset = len(self.log())
        Appliance.start(self, timeout=timeout)
        self.httpPort = self.listeningPort("HTTP", after=offset)
        self.tftpPort = self.listeningPort("TFTP", after=offset)
        return self

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def url(self, path):
        return "http://127.0.0.1:%d/%s" % (self.httpPort, path.lstrip("/"))

    def getJSON(self, path):
        try:
            with urllib.request.urlopen(self.url(path), timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def tftpGet(self, name, output):
        return subprocess.run(["tftp", "-m", "binary", "127.0.0.1", str(self.tftpPort),
                               "-c", "get", name, output], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=60)


def startAppliance(test):
    directory = os.path.abspath(test.mktemp())
    os.makedirs(directory)
    appliance = ConsoleAppliance(directory)
    test.addCleanup(appliance.stop)
    appliance.start()
    return appliance


class EventsLoopbackTests(TestCase):
    """
    C{/api/v1/events}, its feed and C{/healthz} from a real appliance.
    """

    def setUp(self):
        requireE2E(tools=["tftp", "curl"])
        self.appliance = startAppliance(self)

    def test_eventsAfterTraffic(self):
        """
        After a tftp-hpa transfer, a request for a missing file, a menu whose
        template fails and a refused reload, the events API holds each of
        them (the transfer's bytes, the path refused, the template's error,
        the reload's reason) and the inventory hosts' states; C{/healthz}
        is 200 before the reload and 503 after, naming it.
        """
        a = self.appliance
        status, health = a.getJSON("/healthz")
        self.assertEqual((status, health["ok"]), (200, True), health)
        self.assertEqual(set(health["services"]), {"menus", "hosts", "tftp", "http"})
        data = os.urandom(70000)
        with open(os.path.join(a.root, "undionly.kpxe"), "wb") as f:
            f.write(data)
        out = os.path.join(a.directory, "got")
        a.tftpGet("undionly.kpxe", out)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), data)
        a.tftpGet("pxelinux.0", out)
        menu = subprocess.run(["curl", "-s", a.url("boot.ipxe?mac=52:54:00:00:00:aa")],
                              stdout=subprocess.PIPE, timeout=30).stdout
        self.assertIn(b"#!ipxe", menu)
        offset = len(a.log())
        a.writeConfig(a.goodConfig + "tftp:\n  windowsize_max: -1\n")
        a.signal(signal.SIGHUP)
        a.waitLog("reload refused", after=offset)

        def events(**query):
            path = "/api/v1/events?" + "&".join("%s=%s" % kv for kv in query.items())
            return a.getJSON(path)[1]["events"]
        ends = events(kind="tftp.end")
        self.assertEqual([(e["path"], e["outcome"], e["bytes"]) for e in ends],
                         [("undionly.kpxe", "complete", 70000)])
        self.assertEqual([e["path"] for e in events(kind="tftp.start")], ["undionly.kpxe"])
        refused = events(kind="tftp.refused")
        self.assertEqual([(e["path"], e["reason"]) for e in refused],
                         [("pxelinux.0", "not_found")])
        errors = events(kind="menu.error")
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("no_such_variable", errors[0]["message"])
        self.assertEqual(errors[0]["mac"], "52:54:00:00:00:aa")
        renders = events(kind="menu.render", mac="52:54:00:00:00:aa")
        self.assertEqual([(r["template"], r["level"]) for r in renders], [("fallback", "warn")])
        reloads = events(kind="config.reload")
        self.assertEqual([(r["result"], r["level"]) for r in reloads], [("refused", "error")])
        self.assertIn("duplicate key", reloads[0]["error"])
        states = events(kind="host.state")
        self.assertEqual(sorted((e["host"] or e["mac"], e["target"]) for e in states),
                         [("52:54:00:00:00:aa", "discovered"), ("alpha", "ready"),
                          ("beta", "ready")])
        problems = events(level="warn")
        self.assertEqual({e["kind"] for e in problems},
                         {"tftp.refused", "menu.render", "menu.error", "config.reload"})
        status, health = a.getJSON("/healthz")
        self.assertEqual((status, health["ok"], health["reload"]["result"]),
                         (503, False, "refused"))
        self.assertTrue(all(s["ok"] for s in health["services"].values()), health)

    def test_stream(self):
        """
        C{curl -N} on the feed with C{Last-Event-ID} gets the events after
        it (each C{id:} its sequence number, in order), then a transfer made
        while it reads, as it happens.
        """
        a = self.appliance
        with open(os.path.join(a.root, "menu.c32"), "wb") as f:
            f.write(b"x" * 3000)
        seq = a.getJSON("/api/v1/events")[1]["seq"]
        self.assertGreaterEqual(seq, 2)  # the hosts' states
        out = os.path.join(a.directory, "feed.txt")
        with open(out, "wb") as f:
            curl = subprocess.Popen(["curl", "-s", "-N", "--max-time", "4", "-H",
                                     "Last-Event-ID: 1", a.url("/api/v1/events/stream")],
                                    stdout=f)
        time.sleep(1.0)
        a.tftpGet("menu.c32", os.path.join(a.directory, "got"))
        curl.wait(20)
        with open(out, "rb") as f:
            body = f.read()
        frames = [block for block in body.decode().split("\n\n") if block.startswith("id:")]
        ids = [int(block.split("\n")[0][4:]) for block in frames]
        self.assertEqual(ids, list(range(2, 2 + len(ids))))
        kinds = [json.loads(block.split("\ndata: ", 1)[1])["kind"] for block in frames]
        self.assertEqual(kinds[-2:], ["tftp.start", "tftp.end"])
        self.assertTrue(body.startswith(b"retry: 3000\n\n"), body[:40])


# -- the browser


def freePort():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class WebDriver:
    """
    Chromium through chromedriver's W3C WebDriver HTTP API (no client
    library: JSON over HTTP).
    """

    ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
            "--disable-dev-shm-usage", "--window-size=1440,1100"]

    def __init__(self, directory):
        self.port = freePort()
        self.profile = tempfile.mkdtemp(prefix="chromium-", dir=directory)
        self.process = subprocess.Popen(
            [shutil.which("chromedriver") or "/usr/bin/chromedriver", "--port=%d" % (self.port,)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not waitFor(self._ready, 20):
            raise AssertionError("chromedriver did not start")
        options = {"binary": shutil.which("chromium") or "/usr/bin/chromium",
                   "args": self.ARGS + ["--user-data-dir=" + self.profile]}
        answer = self._call("POST", "/session", {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": options}}})
        self.session = answer["sessionId"]

    def _ready(self):
        try:
            return self._call("GET", "/status")["ready"]
        except OSError:
            return False

    def _call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request("http://127.0.0.1:%d%s" % (self.port, path),
                                         data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as e:
            raise AssertionError("WebDriver %s %s: %s" % (method, path, e.read()[:500]))

    def call(self, method, path, body=None):
        return self._call(method, "/session/%s%s" % (self.session, path), body)

    def get(self, url):
        self.call("POST", "/url", {"url": url})

    def run(self, script, *args):
        return self.call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def screenshot(self, path):
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.call("GET", "/screenshot")))

    def quit(self):
        try:
            self.call("DELETE", "")
        except Exception:
            pass
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


class SlowTFTPClient(threading.Thread):
    """
    A TFTP client that acknowledges each 1024-byte block after C{delay}
    seconds (lock-step: about 1024/delay bytes a second), until the file
    ends or it is stopped.
    """

    def __init__(self, port, name, delay=0.02):
        threading.Thread.__init__(self, daemon=True)
        self.port = port
        self.name_ = name
        self.delay = delay
        self.stopped = threading.Event()
        self.received = 0

    def run(self):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(5)
        try:
            sock.sendto(b"\x00\x01" + self.name_.encode() + b"\x00octet\x00blksize\x001024\x00"
                        b"tsize\x000\x00", ("127.0.0.1", self.port))
            expected = 1
            while not self.stopped.is_set():
                data, peer = sock.recvfrom(2048)
                opcode = struct.unpack("!H", data[:2])[0]
                if opcode == 6:  # OACK
                    sock.sendto(b"\x00\x04\x00\x00", peer)
                    continue
                if opcode != 3:
                    return
                block = struct.unpack("!H", data[2:4])[0]
                if block == expected & 0xFFFF:
                    self.received += len(data) - 4
                    expected += 1
                time.sleep(self.delay)
                sock.sendto(b"\x00\x04" + data[2:4], peer)
                if len(data) - 4 < 1024:
                    return
        except socket.timeout:
            return
        finally:
            sock.close()


class DashboardBrowserTests(TestCase):
    """
    The dashboard in headless Chromium.
    """

    def setUp(self):
        requireE2E(tools=["tftp", "curl", "chromium", "chromedriver"])
        self.appliance = startAppliance(self)

    def test_dashboard(self):
        """
        Loaded while a slow TFTP transfer runs, the dashboard shows the
        transfer's row, whose bytes and progress bar move; the inventory's
        hosts with their state; the live feed connected and the latest
        events; and no action button. Its screenshot is saved.
        """
        a = self.appliance
        with open(os.path.join(a.root, "big.img"), "wb") as f:
            f.write(os.urandom(2 * 1024 * 1024))
        with open(os.path.join(a.root, "undionly.kpxe"), "wb") as f:
            f.write(os.urandom(30000))
        a.tftpGet("undionly.kpxe", os.path.join(a.directory, "got"))
        a.tftpGet("ldlinux.c32", os.path.join(a.directory, "got"))
        subprocess.run(["curl", "-s", "-o", "/dev/null", a.url("boot.ipxe?mac=52:54:00:00:00:01")],
                       timeout=30)
        client = SlowTFTPClient(a.tftpPort, "big.img")
        client.start()
        self.addCleanup(client.stopped.set)
        browser = WebDriver(a.directory)
        self.addCleanup(browser.quit)
        browser.get(a.url("/"))

        row = 'document.querySelector(\'tr[data-transfer*="big.img"]\')'

        def progress():
            return browser.run(
                "const r = %s; if (!r) return null; return [Number(r.dataset.bytes), "
                "Number(r.querySelector('.bar').dataset.progress)];" % (row,))
        first = waitFor(progress, 20, 0.2)
        self.assertIsNotNone(first, "no row for the transfer")
        later = waitFor(lambda: (progress() or first)[0] > first[0] and progress(), 20, 0.2)
        self.assertTrue(later, "the transfer's bytes did not move from %r" % (first,))
        self.assertGreater(later[1], first[1])
        self.assertGreater(later[0], 0)
        hosts = browser.run(
            "return Array.from(document.querySelectorAll('tr[data-host]'))"
            ".map(r => [r.dataset.host, r.dataset.state]);")
        self.assertEqual(sorted(map(tuple, hosts)), [("alpha", "ready"), ("beta", "ready")])
        feed = waitFor(lambda: browser.run("return document.getElementById('feed').textContent;")
                       == "feed: live", 10, 0.2)
        self.assertTrue(feed)
        kinds = waitFor(lambda: browser.run(
            "return Array.from(document.querySelectorAll('#events li'))"
            ".map(li => li.dataset.kind);"), 10, 0.2)
        self.assertIn("tftp.start", kinds)
        self.assertIn("tftp.refused", kinds)
        self.assertEqual(browser.run("return document.querySelectorAll('button, form').length;"),
                         0)
        # let the sparkline gather a few samples
        time.sleep(6)
        if os.environ.get("PROVISIONER_SCREENSHOTS") == "1":
            path = os.path.join(REPO, "docs", "images", "dashboard.png")
            os.makedirs(os.path.dirname(path), exist_ok=True)
        else:
            path = os.path.join(a.directory, "dashboard.png")
        browser.screenshot(path)
        with open(path, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
