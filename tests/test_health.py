# -*- test-case-name: tests.test_health -*-
"""
Tests for L{provisioner.web.health}: C{/healthz} from the services'
state and the last reload (the real appliance's answer is checked in
L{tests.test_dashboard}).
"""

import json

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from provisioner.appliance import Appliance
from provisioner.config import loadConfig
from provisioner.web.health import HealthResource, health


class _Port:
    def __init__(self, number):
        self.number = number

    def getHost(self):
        return type("Host", (), {"port": self.number})()


class FakeService:
    def __init__(self, name, running=True, **attributes):
        self.name = name
        self.running = running
        self.__dict__.update(attributes)


class HealthTests(SynchronousTestCase):
    """
    Tests for L{health} and L{HealthResource}.
    """

    def setUp(self):
        self.appliance = Appliance(loadConfig(), task.Clock())
        self.services = [
            FakeService("tftp", listeningPort=6969),
            FakeService("http", port=_Port(8080)),
            FakeService("menus"),
            FakeService("hosts", book=type("Book", (), {"loaded": True})()),
        ]

    def get(self):
        request = DummyRequest([])
        body = HealthResource(self.appliance, lambda: self.services).render_GET(request)
        return request.responseCode, json.loads(body)

    def test_healthy(self):
        """
        If every service runs with its ports bound and no reload failed,
        C{/healthz} is 200 with each service and its ports.
        """
        code, report = self.get()
        self.assertEqual(code, 200)
        self.assertTrue(report["ok"])
        self.assertEqual(report["services"]["tftp"], {"running": True, "ok": True,
                                                      "ports": {"tftp": 6969}})
        self.assertEqual(report["services"]["http"]["ports"], {"http": 8080})
        self.assertEqual(report["services"]["menus"], {"running": True, "ok": True})

    def test_notRunning(self):
        """
        If a service is not running, or a port is not bound, or the host
        store is not loaded, C{/healthz} is 503 and names the problem.
        """
        for service, problem in ((FakeService("menus", running=False), "not running"),
                                 (FakeService("tftp", listeningPort=None),
                                  "a port is not bound"),
                                 (FakeService("hosts", book=None),
                                  "the host store is not loaded")):
            saved = list(self.services)
            self.services = [service if s.name == service.name else s for s in saved]
            code, report = self.get()
            self.services = saved
            self.assertEqual(code, 503, problem)
            self.assertFalse(report["ok"])
            self.assertIn(problem, report["services"][service.name]["problems"])

    def test_reload(self):
        """
        If the last reload was refused or failed, C{/healthz} is 503 with
        why; once one is applied it is 200 again.
        """
        self.appliance.lastReload = {"time": 5.0, "result": "refused", "error": "bad key"}
        code, report = self.get()
        self.assertEqual((code, report["reload"]["ok"], report["reload"]["error"]),
                         (503, False, "bad key"))
        self.appliance.lastReload = {"time": 6.0, "result": "applied", "error": None}
        self.assertEqual(health(self.appliance, self.services)[0], True)
