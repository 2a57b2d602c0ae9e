# -*- test-case-name: tests.test_sdnotify -*-
"""
Tests of L{provisioner.sdnotify} and of the appliance's readiness and
reload notifications: a unix datagram socket the test binds plays
systemd's C{$NOTIFY_SOCKET}, for the notifier alone, for
L{provisioner.tap.ProvisionerService} on a L{Clock}, and for a real
C{twistd} run (READY=1 once its ports are bound, a reload applied, a reload
refused and why, the stop).
"""

import os
import signal
import shutil
import socket
import tempfile

from twisted.application import service
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from provisioner.config import loadConfig
from provisioner.sdnotify import Notifier, notify
from provisioner.tap import ProvisionerService
from tests.netlab import Appliance, requireE2E, waitFor


class FakeSystemd:
    """
    A bound unix datagram socket: what systemd listens on.
    """

    def __init__(self, case, abstract=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = "provisioner-test-%d-%d" % (os.getpid(), id(self))
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            # A short directory of its own: the test's temporary directory
            # can be longer than a unix socket path may be (108 bytes).
            directory = tempfile.mkdtemp(prefix="provsd-")
            case.addCleanup(shutil.rmtree, directory, True)
            self.address = os.path.join(directory, "notify")
            self.sock.bind(self.address)
        self.sock.settimeout(0)
        case.addCleanup(self.sock.close)
        self.messages = []

    def receive(self):
        """
        Every message waiting, as C{[{key: value}]} (also kept in
        L{messages}).
        """
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return self.messages
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.messages.append(fields)


class NotifyTests(SynchronousTestCase):
    """
    Tests of L{notify} and L{Notifier}.
    """

    def test_sends(self):
        """
        If C{NOTIFY_SOCKET} names a socket, L{notify} sends one datagram of
        C{KEY=VALUE} lines there, a value's line breaks made spaces.
        """
        systemd = FakeSystemd(self)
        self.assertTrue(notify([("READY", 1), ("STATUS", "a\nb")],
                               {"NOTIFY_SOCKET": systemd.address}))
        self.assertEqual(systemd.receive(), [{"READY": "1", "STATUS": "a b"}])

    def test_abstract(self):
        """
        If C{NOTIFY_SOCKET} starts with C{@}, the socket is in the abstract
        namespace.
        """
        systemd = FakeSystemd(self, abstract=True)
        self.assertTrue(notify([("READY", 1)], {"NOTIFY_SOCKET": systemd.address}))
        self.assertEqual(systemd.receive(), [{"READY": "1"}])

    def test_noSocket(self):
        """
        If C{NOTIFY_SOCKET} is not set, or names nothing, nothing is sent
        and nothing raises.
        """
        self.assertFalse(notify([("READY", 1)], {}))
        self.assertFalse(notify([("READY", 1)], {"NOTIFY_SOCKET": "/nonexistent/sock"}))
        self.assertFalse(Notifier({}).ready("x"))

    def test_reloading(self):
        """
        L{Notifier.reloading} sends C{RELOADING=1} with C{MONOTONIC_USEC}
        (what C{Type=notify-reload} asks for).
        """
        systemd = FakeSystemd(self)
        Notifier({"NOTIFY_SOCKET": systemd.address}).reloading()
        message, = systemd.receive()
        self.assertEqual(message["RELOADING"], "1")
        self.assertGreater(int(message["MONOTONIC_USEC"]), 0)


class FakeHTTP(service.Service):
    """
    A child service named C{http} whose port is bound when the test says
    (C{/healthz} reads C{port}).
    """

    name = "http"

    def __init__(self):
        self.port = None


class FakePort:
    def getHost(self):
        class Host:
            port = 8080
        return Host()


class ServiceReadinessTests(SynchronousTestCase):
    """
    L{ProvisionerService} tells systemd it is ready once every port is
    bound, on an injected clock.
    """

    def setUp(self):
        self.systemd = FakeSystemd(self)
        self.clock = Clock()
        self.notifier = Notifier({"NOTIFY_SOCKET": self.systemd.address})
        self.service = ProvisionerService(loadConfig(None, [("tftp.enabled", False)]),
                                          reactor=self.clock,
                                          notifier=self.notifier)
        self.http = FakeHTTP()
        self.http.setServiceParent(self.service)
        self.patch(signal, "signal", lambda *a: None)

    def test_readyOncePortsBound(self):
        """
        While a service's port is not bound, no C{READY=1} is sent; once it
        is, C{READY=1} with the services in C{STATUS}, once.
        """
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.clock.advance(0)
        self.clock.advance(1)
        self.assertEqual(self.systemd.receive(), [])
        self.assertEqual(self.service.unbound(), ["http: a port is not bound"])
        self.http.port = FakePort()
        self.clock.advance(0.1)
        self.assertEqual(self.systemd.receive(), [{"READY": "1", "STATUS": "running: http"}])
        self.clock.advance(10)
        self.assertEqual(len(self.systemd.receive()), 1)

    def test_notReady(self):
        """
        If a port is still not bound after C{READY_WAIT} seconds, C{STATUS}
        says which and C{READY=1} is never sent.
        """
        self.service.startService()
        self.addCleanup(self.service.stopService)
        for _ in range(int(ProvisionerService.READY_WAIT / 0.1) + 20):
            self.clock.advance(0.1)
        self.assertEqual(self.systemd.receive(),
                         [{"STATUS": "not ready: http: a port is not bound"}])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reloadRefused(self):
        """
        A reload whose configuration does not load sends C{RELOADING=1},
        then C{READY=1} and C{STATUS=reload refused: } with the reason.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("tftp:\n  port: nonsense\n")
        self.service.configPath = path
        self.assertFalse(self.service.reload())
        reloading, ready = self.systemd.receive()
        self.assertEqual(reloading["RELOADING"], "1")
        self.assertEqual(ready["READY"], "1")
        self.assertTrue(ready["STATUS"].startswith("reload refused: "), ready)
        self.assertIn("tftp.port", ready["STATUS"])

    def test_reloadApplied(self):
        """
        A reload applied sends C{RELOADING=1}, then C{READY=1} with
        C{STATUS=running: configuration reloaded from} the file.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("tftp:\n  enabled: false\n")  # as running: nothing to start
        self.service.configPath = path
        self.assertTrue(self.service.reload())
        reloading, ready = self.systemd.receive()
        self.assertEqual(reloading["RELOADING"], "1")
        self.assertEqual(ready, {"READY": "1",
                                 "STATUS": "running: configuration reloaded from " + path})


class TwistdNotifyTests(TestCase):
    """
    A real C{twistd -n provisioner} with C{NOTIFY_SOCKET} set.
    """

    def test_twistd(self):
        """
        The appliance sends C{READY=1} once started, and its HTTP and TFTP
        ports then take traffic; a SIGHUP with a good file sends
        C{RELOADING=1} then C{READY=1} and C{STATUS=running: configuration
        reloaded}; one with a broken file C{STATUS=reload refused: } and
        why; SIGTERM C{STOPPING=1}.
        """
        requireE2E()
        systemd = FakeSystemd(self)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(directory, "tftpboot"))
        config = ("tftp:\n  enabled: true\n  address: 127.0.0.1\n  port: 0\n  root: %s\n"
                  "http:\n  enabled: true\n  address: 127.0.0.1\n  port: 0\n" % (
                      os.path.join(directory, "tftpboot"),))
        appliance = Appliance(directory, config)
        os.environ["NOTIFY_SOCKET"] = systemd.address
        try:
            appliance.start()
        finally:
            del os.environ["NOTIFY_SOCKET"]
        self.addCleanup(appliance.stop)
        ready = waitFor(lambda: [m for m in systemd.receive() if m.get("READY") == "1"], 20)
        self.assertEqual(ready, [{"READY": "1", "STATUS": "running: tftp, http"}])
        port = appliance.listeningPort("HTTP")
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        systemd.messages[:] = []
        appliance.signal(signal.SIGHUP)
        applied = waitFor(lambda: len(systemd.receive()) >= 2 and systemd.messages, 20)
        self.assertEqual([m.get("RELOADING") or m.get("READY") for m in applied], ["1", "1"])
        self.assertIn("RELOADING", applied[0])
        self.assertEqual(applied[1]["STATUS"],
                         "running: configuration reloaded from " + appliance.configPath)
        systemd.messages[:] = []
        appliance.writeConfig(config + "tftp:\n  port: 1\n")
        appliance.signal(signal.SIGHUP)
        refused = waitFor(lambda: len(systemd.receive()) >= 2 and systemd.messages, 20)
        self.assertIn("RELOADING", refused[0])
        self.assertEqual(refused[1]["READY"], "1")
        self.assertTrue(refused[1]["STATUS"].startswith("reload refused: "), refused[1])
        self.assertIn("duplicate key", refused[1]["STATUS"])
        systemd.messages[:] = []
        appliance.stop()
        stopping = waitFor(lambda: [m for m in systemd.receive() if m.get("STOPPING")], 20)
        self.assertEqual(stopping, [{"STOPPING": "1", "STATUS": "stopping"}])
