# -*- test-case-name: tests.test_health -*-
"""
C{/healthz}: whether the appliance is healthy, as JSON: each service
running and its ports bound, the last configuration reload applied, and
the shared store (PostgreSQL) reachable (C{store}: C{ok}, or
C{unavailable since T}). 200 when healthy, 503 otherwise (for a load balancer, a monitor, systemd's
watchdog scripts).
"""

import json
import time

from twisted.web import resource

__all__ = ["HealthResource", "health", "storeDownSince"]


def _bound(service):
    """
    The ports a service has bound, C{{name: port number}}, and whether it
    should have bound some (L{None}: it binds none).
    """
    name = service.name
    if name == "tftp":
        return {"tftp": getattr(service, "listeningPort", None)}, True
    if name == "http":
        port = getattr(service, "port", None)
        return {"http": port.getHost().port if port is not None else None}, True
    if name == "dhcp":
        ports = {}
        for kind, iface, port in list(getattr(service, "ports", ())):
            ports["%s %s" % (kind, getattr(iface, "name", None) or
                             getattr(iface, "address", None) or "")] = port.getHost().port
        config = service.config
        expected = bool(config.get("port") or config.get("pxe_port"))
        return ports, expected
    if name == "imagecast":
        port = getattr(getattr(service, "server", None), "port", None)
        return {"control": port.getHost().port if port is not None else None}, True
    return {}, None


def storeDownSince(services):
    """
    When the shared store was found unreachable: the earliest of what the
    services that use it saw (the hosts service's listener, the DHCP
    heartbeat: each has C{downSince}), or L{None} while it is reachable
    (and with SQLite).
    """
    down = []
    for service in list(services or ()):
        for part in (getattr(service, "shared", None), getattr(service, "membership", None)):
            since = getattr(part, "downSince", None)
            if since is not None:
                down.append(since)
    return min(down) if down else None


def health(appliance, services):
    """
    The appliance's health.

    @param services: the running C{MultiService} (its children are the
        subsystems), or L{None}.
    @return: C{(healthy, report)}.
    """
    report = {"services": {}, "reload": None}
    healthy = True
    for service in list(services or ()):
        entry = {"running": bool(service.running)}
        problems = []
        if not service.running:
            problems.append("not running")
        try:
            ports, expected = _bound(service)
        except Exception as e:
            ports, expected = {}, True
            problems.append("cannot read its ports: %s" % (e,))
        if expected is not None:
            entry["ports"] = ports
            if expected and (not ports or any(p is None for p in ports.values())):
                problems.append("a port is not bound")
        if service.name == "hosts":
            book = getattr(service, "book", None)
            loaded = bool(getattr(book, "loaded", False))
            entry["loaded"] = loaded
            if not loaded:
                problems.append("the host store is not loaded")
        entry["ok"] = not problems
        if problems:
            entry["problems"] = problems
            healthy = False
        report["services"][service.name] = entry
    last = appliance.lastReload
    if last is not None:
        report["reload"] = dict(last, ok=last.get("result") == "applied")
        if last.get("result") != "applied":
            healthy = False
    report["reloads"] = dict(appliance.reloads)
    down = storeDownSince(services)
    if down is None:
        report["store"] = "ok"
    else:
        report["store"] = "unavailable since %s" % (
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(down)),)
        healthy = False
    report["ok"] = healthy
    return healthy, report


class HealthResource(resource.Resource):
    """
    C{GET /healthz}: see L{health}.
    """

    isLeaf = True

    def __init__(self, appliance, services):
        """
        @param services: a callable returning the running C{MultiService}.
        """
        resource.Resource.__init__(self)
        self.appliance = appliance
        self.services = services

    def render_GET(self, request):
        healthy, report = health(self.appliance, self.services())
        body = json.dumps(report, indent=1, sort_keys=True).encode("utf-8") + b"\n"
        request.setResponseCode(200 if healthy else 503)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-length", b"%d" % (len(body),))
        return body

    render_HEAD = render_GET
