# -*- test-case-name: tests.test_web -*-
"""
twisted.web resources of the C{http} service (the files are
L{provisioner.web.files.FileResource}).

  - L{APIResource}: the read-only JSON API under C{/api/v1/}. It has no
    authentication, so it shows no secrets: inventory variables only when
    named in C{http.api_vars}
    (L{provisioner.web.jsonio.publicVars}), and no host paths.
"""

import json
from urllib.parse import unquote_to_bytes

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server

from provisioner.hosts.errors import HostsError
from provisioner.web.files import baseURL
from provisioner.web.jsonio import jsonable, jsonBody, publicVars

__all__ = ["APIResource", "RootResource"]


class APIResource(resource.Resource):
    """
    The JSON API (no authentication for reading: every answer goes through
    L{publicVars}, and none names a path on this host):

      - C{/api/v1/images}: the catalogue; C{/api/v1/images/NAME}: one image.
      - C{/api/v1/inventory}: the inventory (and the error of a refused
        edit, if any).
      - C{/api/v1/hosts}: every inventory host with its profile and the
        template each loader would use, and its lifecycle state when the
        hosts service runs; C{/api/v1/hosts/MAC-OR-NAME?arch=A}: everything
        that client would be served, rendered (a preview: no token is
        minted), and its lifecycle; C{/api/v1/hosts/NAME/events}: its
        history.
      - C{/api/v1/discovered}, C{/api/v1/discovered/MAC}: machines no
        inventory names that booted.
      - C{/api/v1/clients}: what DHCP and TFTP learnt about clients.

    and, with the hosts service, three POSTs (L{render_POST}): a booted
    system's callback (its per-boot token is the authentication), and
    redeploy and adopt (only from C{hosts.admin_networks}, with a JSON body).
    """

    isLeaf = True
    log = Logger()

    def __init__(self, appliance, apiVars=()):
        """
        @param apiVars: the inventory variables that may be shown
            (C{http.api_vars}); L{apiVars} may be replaced on reload.
        """
        resource.Resource.__init__(self)
        self.appliance = appliance
        self.apiVars = frozenset(apiVars)

    def render_GET(self, request):
        parts = [p for p in request.postpath if p]
        try:
            parts = [unquote_to_bytes(p).decode("utf-8") for p in parts]
        except UnicodeDecodeError:
            return self._json(request, {"error": "bad path"}, 400)
        if not parts:
            return self._json(request, {"endpoints": [
                "/api/v1/images", "/api/v1/images/NAME", "/api/v1/inventory",
                "/api/v1/hosts", "/api/v1/hosts/MAC-OR-NAME?arch=ARCH",
                "/api/v1/hosts/NAME/events", "/api/v1/discovered", "/api/v1/discovered/MAC",
                "/api/v1/clients"]})
        try:
            if parts[0] == "images":
                return self._images(request, parts[1:])
            if parts[0] == "inventory" and len(parts) == 1:
                return self._inventory(request)
            if parts[0] == "hosts":
                return self._hosts(request, parts[1:])
            if parts[0] == "discovered" and len(parts) <= 2:
                return self._discovered(request, parts[1:])
            if parts[0] == "clients" and len(parts) == 1:
                return self._json(request, {"clients": [
                    jsonable(r.asDict()) for r in self.appliance.clients]})
        except Exception:
            self.log.failure("JSON API {path} failed", path=request.path)
            return self._json(request, {"error": "internal error"}, 500)
        return self._json(request, {"error": "no such endpoint"}, 404)

    render_HEAD = render_GET

    def _json(self, request, data, code=200):
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        data = publicVars(data, self.apiVars)
        body = json.dumps(data, indent=1, sort_keys=True).encode("utf-8") + b"\n"
        request.setHeader(b"content-length", b"%d" % (len(body),))
        return body

    def _images(self, request, rest):
        catalog = self.appliance.catalog
        if catalog is None:
            return self._json(request, {"error": "the images service is not enabled"}, 404)
        if not rest:
            return self._json(request, {"prefix": catalog.prefix,
                                        "generation": catalog.generation,
                                        "images": catalog.asList()})
        entry = catalog.get("/".join(rest))
        if entry is None:
            return self._json(request, {"error": "no such image"}, 404)
        return self._json(request, entry.asDict())

    def _inventory(self, request):
        menus = self.appliance.menus
        inventory = self.appliance.inventory
        if inventory is None:
            return self._json(request, {"error": "the menus service is not enabled"}, 404)
        data = inventory.asDict()
        data["error"] = getattr(menus, "inventoryError", None)
        return self._json(request, data)

    def _hosts(self, request, rest):
        lifecycle = self.appliance.hosts
        if lifecycle is not None and len(rest) == 2 and rest[1] == "events":
            return self._lifecycle(request, lambda: {"events": lifecycle.eventsOf(rest[0])})
        menus = self.appliance.menus
        inventory = self.appliance.inventory
        if (menus is None or inventory is None) and lifecycle is not None and not rest:
            return self._lifecycle(request, lambda: {"hosts": _lifecycleHosts([], lifecycle)})
        if menus is None or inventory is None:
            return self._json(request, {"error": "the menus service is not enabled"}, 404)
        arch = request.args.get(b"arch", [None])[0]
        arch = arch.decode("ascii", "replace") if arch else None
        base = baseURL(request)
        if not rest:
            hosts = []
            for name, host in sorted(inventory.hosts.items()):
                mac = host.macs[0] if host.macs else None
                described = menus.describe(mac=mac, arch=arch, baseURL=base) if mac else None
                hosts.append({
                    "name": name, "mac": host.macs, "uuid": host.uuids,
                    "profile": (described["inventory"]["profile"] or {}).get("name")
                    if described else None,
                    "templates": {k: v["template"] for k, v in described["menus"].items()}
                    if described else None})
            if lifecycle is not None:
                return self._lifecycle(request, lambda: {
                    "hosts": _lifecycleHosts(hosts, lifecycle)})
            return self._json(request, {"hosts": hosts})
        key = "/".join(rest)
        mac = None
        name = None
        try:
            from provisioner.directory import normaliseMAC
            mac = normaliseMAC(key)
        except ValueError:
            host = inventory.hosts.get(key) or inventory.lookup(hostname=key)
            record = lifecycle.hosts.get(key) if lifecycle is not None else None
            if host is not None and host.macs:
                mac, name = host.macs[0], host.name
            elif record is not None and record.macs:
                mac, name = record.macs[0], record.name
            else:
                return self._json(request, {"error": "no host or MAC %r" % (key,)}, 404)
        described = jsonable(menus.describe(mac=mac, arch=arch, baseURL=base))
        if lifecycle is not None:
            found = described["inventory"]["host"]
            name = found["name"] if found else name
            described["lifecycle"] = lifecycle.hostInfo(name) \
                if name in lifecycle.hosts else None
            described["discovered"] = lifecycle.machineInfo(mac) \
                if found is None and mac in lifecycle.machines else None
        return self._json(request, described)

    def _discovered(self, request, rest):
        lifecycle = self.appliance.hosts
        if lifecycle is None:
            return self._json(request, {"error": "the hosts service is not enabled"}, 404)
        if not rest:
            return self._lifecycle(request, lambda: {"discovered": lifecycle.machinesList()})

        def one():
            out = lifecycle.machineInfo(rest[0])
            out["events"] = lifecycle.eventsOf(out["mac"])
            return out
        return self._lifecycle(request, one)

    def _lifecycle(self, request, produce):
        """
        Answer with what C{produce} returns; a refusal of the host book is
        its status and message.
        """
        try:
            data = produce()
        except HostsError as e:
            return self._json(request, {"error": str(e)}, e.code)
        return self._json(request, jsonable(data))

    def render_POST(self, request):
        """
        The lifecycle's changes (C{hosts} service):

          - C{POST /api/v1/hosts/NAME/callback}: C{token}, C{state}
            (C{deploying} for progress, C{deployed}, C{failed}) and an
            optional C{message}, as query or form parameters or a JSON
            object; a wrong, reused or expired token is 403;
          - C{POST /api/v1/hosts/NAME/redeploy} and
            C{POST /api/v1/discovered/MAC/adopt} (JSON C{{"name", "profile"}}):
            from C{hosts.admin_networks} only, with C{Content-Type:
            application/json} (a browser cannot send that across sites
            without asking first).

        The answer is sent once the change is saved.
        """
        parts = [p for p in request.postpath if p]
        try:
            parts = [unquote_to_bytes(p).decode("utf-8") for p in parts]
        except UnicodeDecodeError:
            return self._json(request, {"error": "bad path"}, 400)
        lifecycle = self.appliance.hosts
        if lifecycle is None:
            return self._json(request, {"error": "the hosts service is not enabled"}, 404)
        if len(parts) != 3 or (parts[0], parts[2]) not in (
                ("hosts", "callback"), ("hosts", "redeploy"), ("discovered", "adopt")):
            return self._json(request, {"error": "no such endpoint"}, 404)
        peer = getattr(request.getClientAddress(), "host", None)
        try:
            body = jsonBody(request)
        except ValueError as e:
            return self._json(request, {"error": str(e)}, 400)
        if parts[2] == "callback":
            fields = {}
            for name in ("token", "state", "message"):
                value = request.args.get(name.encode())
                if value:
                    fields[name] = value[0].decode("utf-8", "replace")
            if isinstance(body, dict):
                fields.update({k: str(v) for k, v in body.items()
                               if k in ("token", "state", "message") and v is not None})
            call = lambda: lifecycle.callback(  # noqa: E731
                parts[1], fields.get("token"), fields.get("state"), fields.get("message"), peer)
        else:
            if not lifecycle.isAdmin(peer, getattr(request.getHost(), "host", None)):
                self.log.warn("hosts: {action} of {what} from {peer} refused: not in "
                              "hosts.admin_networks", action=parts[2], what=parts[1], peer=peer)
                return self._json(request, {"error": "%s is not allowed from %s (see "
                                            "hosts.admin_networks)" % (parts[2], peer)}, 403)
            if body is None:
                return self._json(request, {"error": "send a JSON body with Content-Type: "
                                            "application/json"}, 415)
            if parts[2] == "redeploy":
                call = lambda: lifecycle.redeploy(parts[1], peer)  # noqa: E731
            else:
                if not isinstance(body, dict):
                    return self._json(request, {"error": "the body must be a JSON object"}, 400)
                call = lambda: lifecycle.adopt(  # noqa: E731
                    parts[1], body.get("name"), body.get("profile"), peer)
        d = defer.maybeDeferred(call)
        d.addCallbacks(lambda data: self._finish(request, jsonable(data), 200),
                       lambda f: self._refused(request, f))
        return server.NOT_DONE_YET

    def _refused(self, request, failure):
        if failure.check(HostsError):
            return self._finish(request, {"error": failure.getErrorMessage()},
                                failure.value.code)
        self.log.failure("JSON API {path} failed", failure, path=request.path)
        return self._finish(request, {"error": "internal error"}, 500)

    def _finish(self, request, data, code):
        if request.finished or request._disconnected:
            return
        request.write(self._json(request, data, code))
        request.finish()


def _lifecycleHosts(hosts, lifecycle):
    """
    The inventory's hosts with their lifecycle, then the hosts only the
    lifecycle knows (adopted, or gone from the inventory).
    """
    out = []
    listed = set()
    for entry in hosts:
        entry = dict(entry)
        info = lifecycle.hostInfo(entry["name"]) if entry["name"] in lifecycle.hosts else None
        for key in ("state", "since", "reason", "last_event", "adopted"):
            entry[key] = info[key] if info else None
        entry["in_inventory"] = True
        listed.add(entry["name"])
        out.append(entry)
    for info in lifecycle.hostsList():
        if info["name"] in listed:
            continue
        out.append({"name": info["name"], "mac": info["macs"], "uuid": [],
                    "profile": info["profile"], "templates": None,
                    "state": info["state"], "since": info["since"], "reason": info["reason"],
                    "last_event": info["last_event"], "adopted": info["adopted"],
                    "in_inventory": info["in_inventory"]})
    return out


class RootResource(resource.Resource):
    """
    C{/api/v1/...} goes to the API (when enabled), everything else to the
    files.
    """

    def __init__(self, files, api=None):
        resource.Resource.__init__(self)
        self.files = files
        self.api = api

    def getChildWithDefault(self, name, request):
        if self.api is not None and name == b"api" and request.postpath[:1] == [b"v1"]:
            request.prepath.append(request.postpath.pop(0))
            return self.api
        # Leave the whole path to the file resource.
        request.postpath.insert(0, name)
        request.prepath.pop()
        return self.files
