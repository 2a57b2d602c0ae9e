# -*- test-case-name: tests.test_operator_auth -*-
"""
Tests of the operators' login and actions (L{provisioner.web.auth},
L{provisioner.web.actions}):

  - units: scrypt hashes, the operators file and C{provisioner operator},
    sessions and their expiry on a L{Clock}, the CSRF token, the gate;
  - a real appliance (twistd on loopback): every action refused without a
    login (401) or without its CSRF token (403), nothing changed (read back
    from the API); with them redeploy, adopt, and an imagecast session
    started and stopped, each published with the operator's name;
  - the same appliance in a network namespace, asked from another
    (198.18.171.2, outside C{hosts.admin_networks}): login, every action and
    the API's redeploy are 403, even with a session's cookie and token;
  - the dashboard in headless Chromium: log in through the form, click
    "redeploy" on a deployed host, the row's state and the API say ready.
"""

import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from provisioner import cli
from provisioner.web import auth
from tests.fakes import INVENTORY
from tests.netlab import REPO, Appliance, NetLab, requireE2E, waitFor

ALPHA = "52:54:00:00:00:01"
STRANGER = "52:54:00:00:00:99"
PASSWORD = "correct horse battery"


class HashingTests(SynchronousTestCase):
    """
    Tests of L{auth.hashPassword} and L{auth.verifyPassword}.
    """

    def test_roundTrip(self):
        """
        If a password is hashed, it verifies against its hash and another
        does not; the hash is scrypt's with its parameters and salt.
        """
        encoded = auth.hashPassword(PASSWORD)
        self.assertTrue(encoded.startswith("scrypt$16384$8$1$"))
        self.assertTrue(auth.verifyPassword(PASSWORD, encoded))
        self.assertFalse(auth.verifyPassword(PASSWORD + "x", encoded))
        self.assertFalse(auth.verifyPassword("", encoded))

    def test_salted(self):
        """
        If the same password is hashed twice, the salts and hashes differ.
        """
        a, b = auth.hashPassword(PASSWORD, n=16), auth.hashPassword(PASSWORD, n=16)
        self.assertNotEqual(a, b)
        self.assertNotEqual(a.split("$")[4], b.split("$")[4])
        self.assertTrue(auth.verifyPassword(PASSWORD, a) and auth.verifyPassword(PASSWORD, b))

    def test_garbage(self):
        """
        If the stored form is not a scrypt hash, or its cost is out of
        range, nothing verifies against it.
        """
        for bad in ("", "plain", "md5$1$2$3$4$5", "scrypt$16$8$1$!!$!!",
                    "scrypt$99999999$8$1$AAAA$AAAA", PASSWORD):
            self.assertFalse(auth.verifyPassword(PASSWORD, bad), bad)


class OperatorsFileTests(SynchronousTestCase):
    """
    Tests of the operators file and C{provisioner operator}.
    """

    def test_writeReadRemove(self):
        """
        If operators are written, read gives them by name; a second write
        of one replaces its hash; comments are kept; remove takes it out.
        """
        path = self.mktemp()
        self.assertFalse(auth.writeOperator(path, "alice", "scrypt$a"))
        self.assertFalse(auth.writeOperator(path, "bob", "scrypt$b"))
        self.assertTrue(auth.writeOperator(path, "alice", "scrypt$c"))
        self.assertEqual(auth.readOperators(path), {"alice": "scrypt$c", "bob": "scrypt$b"})
        self.assertTrue(open(path).read().startswith("#"))
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o640)
        self.assertTrue(auth.removeOperator(path, "alice"))
        self.assertFalse(auth.removeOperator(path, "alice"))
        self.assertEqual(list(auth.readOperators(path)), ["bob"])

    def test_badLine(self):
        """
        If a line is not C{NAME SCRYPT-HASH}, reading the file says which.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("# ok\nalice scrypt$x\nbob hunter2\n")
        e = self.assertRaises(ValueError, auth.readOperators, path)
        self.assertIn(":3:", str(e))

    def test_command(self):
        """
        C{provisioner operator add NAME --file F} reads the password from
        standard input (not a terminal) and writes a hash that verifies;
        a short password is refused; C{list} prints the names.
        """
        path = self.mktemp()
        self.patch(sys, "stdin", io.StringIO(PASSWORD + "\n"))
        self.patch(sys, "stdout", io.StringIO())
        self.assertEqual(cli.main(["operator", "add", "alice", "--file", path]), 0)
        self.assertTrue(auth.verifyPassword(PASSWORD, auth.readOperators(path)["alice"]))
        self.assertNotIn(PASSWORD, open(path).read())
        self.patch(sys, "stdin", io.StringIO("short\n"))
        self.assertRaises(SystemExit, cli.main, ["operator", "add", "bob", "--file", path])
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        self.assertEqual(cli.main(["operator", "list", "--file", path]), 0)
        self.assertEqual(out.getvalue(), "alice\n")


class SessionTests(SynchronousTestCase):
    """
    Tests of L{auth.OperatorSessions}.
    """

    def test_expiry(self):
        """
        A session lives C{lifetime} seconds after login, then is gone.
        """
        clock = Clock()
        sessions = auth.OperatorSessions(clock, 100)
        s = sessions.create("alice", "127.0.0.1")
        self.assertIs(sessions.get(s.id), s)
        self.assertIs(sessions.get(s.id.encode()), s)
        clock.advance(99)
        self.assertIs(sessions.get(s.id), s)
        clock.advance(1)
        self.assertIsNone(sessions.get(s.id))
        self.assertEqual(len(sessions), 0)

    def test_endAndUnknown(self):
        """
        A logout ends a session; an unknown or empty cookie is no session.
        """
        sessions = auth.OperatorSessions(Clock(), 100)
        s = sessions.create("alice")
        self.assertTrue(sessions.end(s.id))
        self.assertIsNone(sessions.get(s.id))
        self.assertIsNone(sessions.get("nonsense"))
        self.assertIsNone(sessions.get(None))

    def test_bounded(self):
        """
        At most L{auth.OperatorSessions.MAX} sessions are kept, the oldest
        dropped first.
        """
        sessions = auth.OperatorSessions(Clock(), 100)
        self.patch(auth.OperatorSessions, "MAX", 3)
        made = [sessions.create("op%d" % (i,)) for i in range(5)]
        self.assertEqual(len(sessions), 3)
        self.assertIsNone(sessions.get(made[0].id))
        self.assertIs(sessions.get(made[4].id), made[4])

    def test_csrf(self):
        """
        Each session has its own CSRF token; only it passes.
        """
        sessions = auth.OperatorSessions(Clock(), 100)
        a, b = sessions.create("alice"), sessions.create("alice")
        self.assertNotEqual(a.csrf, b.csrf)
        self.assertNotEqual(a.id, a.csrf)
        self.assertTrue(a.checkCSRF(a.csrf))
        self.assertTrue(a.checkCSRF(a.csrf.encode()))  # a header's bytes
        for bad in (b.csrf, "", None, a.csrf[:-1], a.id):
            self.assertFalse(a.checkCSRF(bad), bad)


class FakeRequest:
    def __init__(self, cookie=None, secure=False):
        self.cookie = cookie
        self.secure = secure

    def getCookie(self, name):
        return self.cookie if name == auth.COOKIE else None

    def isSecure(self):
        return self.secure


class GateTests(SynchronousTestCase):
    """
    Tests of L{auth.Gate.authorize}.
    """

    def setUp(self):
        self.path = self.mktemp()
        auth.writeOperator(self.path, "alice", auth.hashPassword(PASSWORD, n=16))
        self.config = {"http": {"operators_file": self.path, "session_lifetime": 60,
                                "tls_certificate": None},
                       "hosts": {"admin_networks": ["127.0.0.0/8"]}}
        self.gate = auth.Gate(lambda: self.config, Clock())

    def refused(self, code, request, csrf, peer, local="127.0.0.1"):
        e = self.assertRaises(auth.Refused, self.gate.authorize, request, csrf, peer, local)
        self.assertEqual(e.code, code, str(e))

    def test_order(self):
        """
        Another address is 403 before anything; no session 401; a wrong
        CSRF token 403; the session's token passes, from an admin network
        or the appliance's own address.
        """
        self.assertTrue(self.gate.checkPassword("alice", PASSWORD))
        self.assertFalse(self.gate.checkPassword("alice", "wrong"))
        self.assertFalse(self.gate.checkPassword("mallory", PASSWORD))
        s = self.gate.sessions.create("alice")
        self.refused(403, FakeRequest(s.id), s.csrf, "198.18.0.9")
        self.refused(401, FakeRequest(None), s.csrf, "127.0.0.1")
        self.refused(401, FakeRequest("forged"), s.csrf, "127.0.0.1")
        self.refused(403, FakeRequest(s.id), "wrong", "127.0.0.1")
        self.assertIs(self.gate.authorize(FakeRequest(s.id), s.csrf, "127.0.0.1", None), s)
        self.assertIs(self.gate.authorize(FakeRequest(s.id), s.csrf, "198.18.0.1", "198.18.0.1"),
                      s)

    def test_removedOperator(self):
        """
        If an operator is removed from the file, its sessions stop working
        at once (401).
        """
        s = self.gate.sessions.create("alice")
        auth.removeOperator(self.path, "alice")
        self.refused(401, FakeRequest(s.id), s.csrf, "127.0.0.1")

    def test_tls(self):
        """
        With C{http.tls_certificate}, a request not over TLS is 403.
        """
        self.config["http"]["tls_certificate"] = "/some/cert.pem"
        s = self.gate.sessions.create("alice")
        self.refused(403, FakeRequest(s.id), s.csrf, "127.0.0.1")
        self.assertIs(self.gate.authorize(FakeRequest(s.id, secure=True), s.csrf,
                                          "127.0.0.1", None), s)


# -- a real appliance

CONFIG = """\
tftp:
  enabled: true
  address: 127.0.0.1
  port: 0
  root: {d}/tftpboot
menus:
  enabled: true
inventory:
  enabled: true
  file: {d}/inventory.yaml
hosts:
  enabled: true
  state_directory: {d}/state
imagecast:
  enabled: true
  address: 127.0.0.1
  port: 0
  root: {d}/images
  data_port: 17011
  authentication: none
http:
  enabled: true
  address: {address}
  port: {port}
  operators_file: {d}/operators
"""


class OperatorAppliance(Appliance):
    """
    TFTP, menus, inventory, hosts, imagecast and HTTP with an operators
    file holding C{alice}.
    """

    def __init__(self, directory, address="127.0.0.1", port=0, host=None):
        for sub in ("tftpboot", "state", "images"):
            os.makedirs(os.path.join(directory, sub), exist_ok=True)
        with open(os.path.join(directory, "inventory.yaml"), "w") as f:
            f.write(INVENTORY)
        with open(os.path.join(directory, "images", "disk.img"), "wb") as f:
            f.write(os.urandom(200000))
        auth.writeOperator(os.path.join(directory, "operators"), "alice",
                           auth.hashPassword(PASSWORD))
        Appliance.__init__(self, directory, CONFIG.format(d=directory, address=address,
                                                          port=port), host=host)
        self.httpPort = port

    def start(self, timeout=30):
        offset = len(self.log())
        Appliance.start(self, timeout=timeout)
        if not self.httpPort:
            self.httpPort = self.listeningPort("HTTP", after=offset)
        return self


class Client:
    """
    An HTTP client keeping one session's cookie and CSRF token.
    """

    def __init__(self, base):
        self.base = base
        self.cookie = None
        self.csrf = None

    def call(self, method, path, body=None, form=None, csrf=True, headers=None):
        data = None
        h = dict(headers or {})
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        elif form is not None:
            from urllib.parse import urlencode
            data = urlencode(form).encode()
            h["Content-Type"] = "application/x-www-form-urlencoded"
        if self.cookie:
            h["Cookie"] = self.cookie
        if csrf and self.csrf:
            h["X-CSRF-Token"] = self.csrf
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                code, raw, got = response.status, response.read(), response.headers
        except urllib.error.HTTPError as e:
            code, raw, got = e.code, e.read(), e.headers
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = raw
        return code, answer, got

    def login(self, name="alice", password=PASSWORD):
        code, answer, headers = self.call("POST", "/login", {"name": name, "password": password})
        if code == 200:
            cookie = headers["Set-Cookie"]
            self.cookie = cookie.split(";")[0]
            self.csrf = answer["csrf"]
        return code, answer, headers


def bootDeployed(base, mac=ALPHA):
    """
    Make the host of C{mac} deployed as a machine does: its menu, then the
    callback from its command line.
    """
    with urllib.request.urlopen(base + "/menus/%s/boot.ipxe" % (mac,), timeout=30) as r:
        words = r.read().decode().split()
    token = [w.split("=", 1)[1] for w in words if w.startswith("provisioner.token=")][0]
    url = [w.split("=", 1)[1] for w in words if w.startswith("provisioner.callback=")][0]
    request = urllib.request.Request(url, data=b"token=%s&state=deployed" % (token.encode(),),
                                     method="POST")
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())


def hostStates(client):
    code, answer, _ = client.call("GET", "/api/v1/hosts")
    return {h["name"]: h["state"] for h in answer["hosts"]}


ACTIONS = [("redeploy", {"host": "alpha"}),
           ("adopt", {"mac": STRANGER, "name": "gamma", "profile": "installer"}),
           ("imagecast-start", {"image": "disk.img", "min_receivers": 2, "max_wait": 600}),
           ("imagecast-stop", {"session": 1})]


class LoopbackTests(TestCase):
    """
    The operators' actions on a real appliance, from loopback.
    """

    def setUp(self):
        requireE2E()
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.appliance = OperatorAppliance(directory)
        self.addCleanup(self.appliance.stop)
        self.appliance.start()
        self.base = "http://127.0.0.1:%d" % (self.appliance.httpPort,)
        bootDeployed(self.base)
        # the stranger fetches its menu: discovered
        urllib.request.urlopen(self.base + "/menus/%s/boot.ipxe" % (STRANGER,), timeout=30).read()

    def snapshot(self, client):
        code, discovered, _ = client.call("GET", "/api/v1/discovered")
        code, console, _ = client.call("GET", "/api/v1/console")
        return (hostStates(client), sorted(m["mac"] for m in discovered["discovered"]),
                console["imagecast"])

    def test_refusedWithoutLogin(self):
        """
        Without a session every action is 401; with a session but no or a
        wrong CSRF token 403; a wrong password is 401; and nothing changed.
        """
        client = Client(self.base)
        before = self.snapshot(client)
        self.assertEqual(before[0]["alpha"], "deployed")
        self.assertEqual(before[1], [STRANGER])
        for action, body in ACTIONS:
            code, answer, _ = client.call("POST", "/actions/" + action, body)
            self.assertEqual(code, 401, (action, answer))
            code, answer, _ = client.call("POST", "/actions/" + action, form=body)
            self.assertEqual(code, 401, (action, answer))
        self.assertEqual(client.login(password="wrong")[0], 401)
        self.assertIsNone(client.cookie)
        self.assertEqual(client.login()[0], 200)
        for action, body in ACTIONS:
            code, answer, _ = client.call("POST", "/actions/" + action, body, csrf=False)
            self.assertEqual(code, 403, (action, answer))
            code, answer, _ = client.call("POST", "/actions/" + action, body,
                                          headers={"X-CSRF-Token": "forged"}, csrf=False)
            self.assertEqual(code, 403, (action, answer))
        self.assertEqual(self.snapshot(client), before)
        code, events, _ = client.call("GET", "/api/v1/events?kind=operator.action")
        self.assertEqual(events["events"], [])
        self.assertIn("operator action redeploy from 127.0.0.1 refused",
                      self.appliance.log())

    def test_actions(self):
        """
        Logged in, with the session's CSRF token: redeploy makes the
        deployed host ready, adopt makes the stranger a host, an imagecast
        session starts and stops; each is an C{operator.action} event naming
        C{alice}; logging out ends the session (401 again).
        """
        client = Client(self.base)
        code, answer, headers = client.login()
        self.assertEqual(code, 200, answer)
        cookie = headers["Set-Cookie"]
        self.assertIn("HttpOnly", cookie)
        self.assertIn("SameSite=strict", cookie)
        self.assertNotIn("Secure", cookie)
        code, info, _ = client.call("GET", "/actions/session")
        self.assertEqual((info["operator"], info["csrf"]), ("alice", client.csrf))
        self.assertEqual(info["images"], [])
        code, answer, _ = client.call("POST", "/actions/redeploy", {"host": "alpha"})
        self.assertEqual((code, answer["result"]["state"]), (200, "ready"), answer)
        self.assertEqual(hostStates(client)["alpha"], "ready")
        code, events, _ = client.call("GET", "/api/v1/events?host=alpha&kind=host.state")
        self.assertIn("operator alice at 127.0.0.1", events["events"][-1]["why"])
        code, answer, _ = client.call("POST", "/actions/redeploy", {"host": "alpha"})
        self.assertEqual(code, 409, answer)
        code, answer, _ = client.call(
            "POST", "/actions/adopt", form={"mac": STRANGER, "name": "gamma",
                                            "profile": "installer", "csrf": client.csrf},
            csrf=False)
        self.assertEqual(code, 200, answer)
        self.assertEqual(hostStates(client)["gamma"], "ready")
        code, answer, _ = client.call("POST", "/actions/imagecast-start",
                                      {"image": "disk.img", "min_receivers": 2,
                                       "max_wait": 600})
        self.assertEqual(code, 200, answer)
        session = answer["result"]["session"]
        code, console, _ = client.call("GET", "/api/v1/console")
        self.assertEqual([(s["session"], s["state"]) for s in console["imagecast"]],
                         [(session, "waiting")])
        code, answer, _ = client.call("POST", "/actions/imagecast-stop", {"session": session})
        self.assertEqual(code, 200, answer)
        self.assertEqual(answer["result"]["state"], "done")
        self.assertIn("stopped by operator alice", answer["result"]["error"])
        code, console, _ = client.call("GET", "/api/v1/console")
        self.assertEqual([s["state"] for s in console["imagecast"]], ["done"])
        code, events, _ = client.call("GET", "/api/v1/events?kind=operator.action")
        self.assertEqual([(e["operator"], e["action"], e["result"]) for e in events["events"]],
                         [("alice", "redeploy", "done"), ("alice", "redeploy", "refused"),
                          ("alice", "adopt", "done"), ("alice", "imagecast-start", "done"),
                          ("alice", "imagecast-stop", "done")])
        code, answer, _ = client.call("POST", "/logout", {})
        self.assertEqual(code, 200)
        code, answer, _ = client.call("POST", "/actions/redeploy", {"host": "beta"})
        self.assertEqual(code, 401)

    def test_cliFromLoopback(self):
        """
        C{provisioner hosts redeploy} from loopback needs no operator (the
        appliance itself).
        """
        proc = subprocess.run([sys.executable, "-m", "provisioner", "hosts", "--url",
                               self.base, "redeploy", "alpha"], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stdout)
        self.assertEqual(hostStates(Client(self.base))["alpha"], "ready")


class NamespaceTests(TestCase):
    """
    The appliance in a namespace (198.18.171.1), asked from another
    (198.18.171.2), outside C{hosts.admin_networks}.
    """

    def curl(self, host, method, url, body=None, cookie=None, csrf=None):
        argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method,
                "--max-time", "20"]
        if body is not None:
            argv += ["-H", "Content-Type: application/json", "--data", json.dumps(body)]
        if cookie:
            argv += ["-H", "Cookie: " + cookie]
        if csrf:
            argv += ["-H", "X-CSRF-Token: " + csrf]
        return int(host.run(argv + [url]).stdout)

    def test_otherAddress(self):
        """
        From 198.18.171.2 the login and every action are 403, also with a
        session's cookie and CSRF token made on the appliance itself, and
        so is the API's redeploy; nothing changed.
        """
        requireE2E(netns=True, tools=["curl"])
        lab = NetLab(hosts=2, subnet=171)
        self.addCleanup(lab.close)
        server, other = lab.hosts
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        appliance = OperatorAppliance(directory, address="0.0.0.0", port=18080, host=server)
        self.addCleanup(appliance.stop)
        appliance.start()
        local = "http://127.0.0.1:18080"
        remote = "http://%s:18080" % (server.ip,)
        # set up on the appliance itself: alpha deployed, a session
        script = ("import json, sys; sys.path.insert(0, %r)\n"
                  "from tests.test_operator_auth import Client, bootDeployed\n"
                  "bootDeployed(%r)\nc = Client(%r)\nc.login()\n"
                  "print(json.dumps([c.cookie, c.csrf]))\n" % (REPO, local, local))
        out = server.run([sys.executable, "-c", script]).stdout.decode().strip().splitlines()
        cookie, csrf = json.loads(out[-1])

        def states():
            proc = server.run(["curl", "-s", local + "/api/v1/hosts"])
            return {h["name"]: h["state"] for h in json.loads(proc.stdout)["hosts"]}
        before = states()
        self.assertEqual(before["alpha"], "deployed")
        self.assertEqual(self.curl(other, "POST", remote + "/login",
                                   {"name": "alice", "password": PASSWORD}), 403)
        for action, body in ACTIONS:
            self.assertEqual(self.curl(other, "POST", remote + "/actions/" + action, body), 403,
                             action)
            self.assertEqual(self.curl(other, "POST", remote + "/actions/" + action, body,
                                       cookie, csrf), 403, action)
        self.assertEqual(self.curl(other, "POST", remote + "/api/v1/hosts/alpha/redeploy", {}),
                         403)
        self.assertEqual(states(), before)
        # the same session works from the appliance itself
        self.assertEqual(self.curl(server, "POST", remote + "/actions/redeploy",
                                   {"host": "alpha"}, cookie, csrf), 200)
        self.assertEqual(states()["alpha"], "ready")


class BrowserTests(TestCase):
    """
    The dashboard's login and redeploy button in headless Chromium.
    """

    def test_loginAndRedeploy(self):
        """
        Not logged in the page has no button; logged in through the form,
        the deployed host's row has "redeploy"; a click makes it ready in
        the page and in the API, published with the operator's name.
        """
        requireE2E(tools=["chromium", "chromedriver"])
        from tests.test_dashboard import WebDriver
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        appliance = OperatorAppliance(directory)
        self.addCleanup(appliance.stop)
        appliance.start()
        base = "http://127.0.0.1:%d" % (appliance.httpPort,)
        bootDeployed(base)
        browser = WebDriver(directory)
        self.addCleanup(browser.quit)
        browser.get(base + "/")
        self.assertTrue(waitFor(lambda: browser.run(
            "return document.querySelector('tr[data-host=\"alpha\"]') !== null;"), 20, 0.2))
        self.assertEqual(browser.run("return document.querySelectorAll('button').length;"), 0)
        browser.run("document.getElementById('login-link').click();")
        self.assertTrue(waitFor(lambda: browser.run(
            "return document.getElementById('login-form') !== null;"), 20, 0.2))
        browser.run("document.getElementById('login-name').value = arguments[0];"
                    "document.getElementById('login-password').value = arguments[1];"
                    "document.getElementById('login-submit').click();", "alice", PASSWORD)
        button = 'document.querySelector(\'tr[data-host="alpha"] button[data-action="redeploy"]\')'
        self.assertTrue(waitFor(lambda: browser.run("return %s !== null;" % (button,)), 20, 0.2),
                        "no redeploy button once logged in")
        self.assertEqual(browser.run(
            "return document.getElementById('operator-name').textContent;"), "alice")
        self.assertEqual(browser.run(
            "return document.querySelector('tr[data-host=\"alpha\"]').dataset.state;"),
            "deployed")
        browser.run("%s.click();" % (button,))
        state = waitFor(lambda: browser.run(
            "return document.querySelector('tr[data-host=\"alpha\"]').dataset.state;")
            == "ready", 20, 0.2)
        self.assertTrue(state, "the row did not become ready")
        self.assertEqual(hostStates(Client(base))["alpha"], "ready")
        code, events, _ = Client(base).call("GET", "/api/v1/events?kind=operator.action")
        self.assertEqual([(e["operator"], e["action"], e["target"]) for e in events["events"]],
                         [("alice", "redeploy", "alpha")])
        time.sleep(1)
        if os.environ.get("PROVISIONER_SCREENSHOTS") == "1":
            path = os.path.join(REPO, "docs", "images", "dashboard-operator.png")
        else:
            path = os.path.join(directory, "dashboard-operator.png")
        browser.screenshot(path)
