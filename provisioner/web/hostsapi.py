# -*- test-case-name: tests.test_hosts_api,tests.test_hostile_inputs -*-
"""
The hosts endpoints of the JSON API: the inventory's hosts with their
lifecycle, one client's preview (everything it would be served, rendered,
with no token minted), histories and discovered machines (C{GET}), and the
lifecycle's changes (C{POST}): a booted system's callback, whose per-boot
token is its authentication, and redeploy and adopt, from
C{hosts.admin_networks} only, with a JSON body, and from any address but
the appliance itself (loopback, its own address) only with an operator's
session and its CSRF token (L{provisioner.web.auth}). A host whose profile
images it gets its orders (C{GET /api/v1/hosts/NAME/orders?token=T}, plain
text), and every host's listing carries C{imaging}: what its imagecast
receiver did (session, round, bytes received and repaired, verdict).
"""

from urllib.parse import unquote_to_bytes

from twisted.internet import defer
from twisted.web import server

from provisioner.hosts.errors import HostsError
from provisioner.web.auth import CSRF_HEADER, Refused, isLocalAddress
from provisioner.web.files import baseURL
from provisioner.web.jsonio import jsonable, jsonBody

__all__ = ["HostsEndpoints", "lifecycleHosts"]

#: the POSTs: C{(first part, last part)} of C{/api/v1/FIRST/KEY/LAST}
_POSTS = (("hosts", "callback"), ("hosts", "redeploy"), ("discovered", "adopt"))

#: the fields of a callback
_CALLBACK_FIELDS = ("token", "state", "message")


def lifecycleHosts(hosts, lifecycle):
    """
    The inventory's hosts with their lifecycle, then the hosts only the
    lifecycle knows (adopted, or gone from the inventory); each with
    C{imaging}, what its imagecast receiver did (or L{None}).
    """
    out = []
    listed = set()
    imaging = lifecycle.imagingStatus()
    for entry in hosts:
        entry = dict(entry)
        info = lifecycle.hostInfo(entry["name"]) if entry["name"] in lifecycle.hosts else None
        for key in ("state", "since", "reason", "last_event", "adopted"):
            entry[key] = info[key] if info else None
        entry["in_inventory"] = True
        entry["imaging"] = imaging.get(entry["name"])
        listed.add(entry["name"])
        out.append(entry)
    for info in lifecycle.hostsList():
        if info["name"] in listed:
            continue
        out.append({"name": info["name"], "mac": info["macs"], "uuid": [],
                    "profile": info["profile"], "templates": None,
                    "state": info["state"], "since": info["since"], "reason": info["reason"],
                    "last_event": info["last_event"], "adopted": info["adopted"],
                    "in_inventory": info["in_inventory"],
                    "imaging": imaging.get(info["name"])})
    return out


class HostsEndpoints:
    """
    The hosts endpoints of one L{provisioner.web.api.APIResource}. They read
    the appliance's C{hosts}, C{menus} and C{inventory} on every request
    (services come and go on reload), answer through the API's C{_json} (so
    every answer goes through its L{provisioner.web.jsonio.publicVars}),
    and log through the API's logger (namespace
    C{provisioner.web.resources.APIResource}, as before they were split
    out).
    """

    def __init__(self, api):
        self.api = api

    # GET

    def hosts(self, request, rest):
        """
        C{GET /api/v1/hosts[/MAC-OR-NAME[/events]]}; C{rest} is the path
        after C{hosts}.
        """
        api = self.api
        lifecycle = api.appliance.hosts
        if lifecycle is not None and len(rest) == 2 and rest[1] == "events":
            return self._lifecycle(request, lambda: {"events": lifecycle.eventsOf(rest[0])})
        if len(rest) == 2 and rest[1] == "orders":
            return self._orders(request, rest[0], lifecycle)
        menus = api.appliance.menus
        inventory = api.appliance.inventory
        if (menus is None or inventory is None) and lifecycle is not None and not rest:
            return self._lifecycle(request, lambda: {"hosts": lifecycleHosts([], lifecycle)})
        if menus is None or inventory is None:
            return api._json(request, {"error": "the menus service is not enabled"}, 404)
        arch = request.args.get(b"arch", [None])[0]
        arch = arch.decode("ascii", "replace") if arch else None
        base = baseURL(request)
        if not rest:
            return self._list(request, menus, inventory, lifecycle, arch, base)
        return self._one(request, "/".join(rest), menus, inventory, lifecycle, arch, base)

    def _list(self, request, menus, inventory, lifecycle, arch, base):
        """
        Every inventory host with its profile and the template each loader
        would use, with its lifecycle (and then the hosts only the
        lifecycle knows) when the hosts service runs.
        """
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
                "hosts": lifecycleHosts(hosts, lifecycle)})
        return self.api._json(request, {"hosts": hosts})

    def _one(self, request, key, menus, inventory, lifecycle, arch, base):
        """
        Everything the client C{key} (a MAC, an inventory host's name or
        hostname, or a host only the lifecycle knows) would be served, and
        its lifecycle or discovery.
        """
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
                return self.api._json(request, {"error": "no host or MAC %r" % (key,)}, 404)
        described = jsonable(menus.describe(mac=mac, arch=arch, baseURL=base))
        if lifecycle is not None:
            found = described["inventory"]["host"]
            name = found["name"] if found else name
            described["lifecycle"] = lifecycle.hostInfo(name) \
                if name in lifecycle.hosts else None
            described["imaging"] = lifecycle.imagingStatus().get(name) if name else None
            described["discovered"] = lifecycle.machineInfo(mac) \
                if found is None and mac in lifecycle.machines else None
        return self.api._json(request, described)

    def _orders(self, request, name, lifecycle):
        """
        C{GET /api/v1/hosts/NAME/orders?token=T}: the host's orders as
        plain text (L{provisioner.hosts.book.HostBook.orders}); a refusal is
        its status and one line of text (a refused token: C{refused}, no
        more).
        """
        if lifecycle is None:
            return self._text(request, "the hosts service is not enabled\n", 404)
        token = request.args.get(b"token", [b""])[0].decode("utf-8", "replace")
        peer = getattr(request.getClientAddress(), "host", None)
        local = getattr(request.getHost(), "host", None)
        d = defer.maybeDeferred(lifecycle.orders, name, token, peer, local)

        def refused(f):
            if f.check(HostsError):
                return self._text(request, f.getErrorMessage() + "\n", f.value.code)
            self.api.log.failure("JSON API {path} failed", f, path=request.path)
            return self._text(request, "internal error\n", 500)
        d.addCallbacks(lambda text: self._text(request, text, 200), refused)
        return server.NOT_DONE_YET

    def _text(self, request, text, code):
        """
        Finish C{request} with C{text} as C{text/plain}, not cached.
        """
        if request.finished or request._disconnected:
            return
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        request.write(text.encode("utf-8"))
        request.finish()

    def discovered(self, request, rest):
        """
        C{GET /api/v1/discovered[/MAC]}; C{rest} is the path after
        C{discovered}.
        """
        lifecycle = self.api.appliance.hosts
        if lifecycle is None:
            return self.api._json(request, {"error": "the hosts service is not enabled"}, 404)
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
            return self.api._json(request, {"error": str(e)}, e.code)
        return self.api._json(request, jsonable(data))

    # POST

    def post(self, request):
        """
        See L{provisioner.web.api.APIResource.render_POST}.
        """
        api = self.api
        parts = [p for p in request.postpath if p]
        try:
            parts = [unquote_to_bytes(p).decode("utf-8") for p in parts]
        except UnicodeDecodeError:
            return api._json(request, {"error": "bad path"}, 400)
        lifecycle = api.appliance.hosts
        if lifecycle is None:
            return api._json(request, {"error": "the hosts service is not enabled"}, 404)
        if len(parts) != 3 or (parts[0], parts[2]) not in _POSTS:
            return api._json(request, {"error": "no such endpoint"}, 404)
        peer = getattr(request.getClientAddress(), "host", None)
        try:
            body = jsonBody(request)
        except ValueError as e:
            return api._json(request, {"error": str(e)}, 400)
        action, key = parts[2], parts[1]
        if action == "callback":
            call = self._callback(request, key, body, lifecycle, peer)
        else:
            refused = self._adminRefusal(request, action, key, body, lifecycle, peer)
            if refused is not None:
                return refused
            call = self._adminAction(action, key, body, lifecycle, peer)
        d = defer.maybeDeferred(call)
        d.addCallbacks(lambda data: self._finish(request, jsonable(data), 200),
                       lambda f: self._refused(request, f))
        return server.NOT_DONE_YET

    def _callback(self, request, name, body, lifecycle, peer):
        """
        The call a callback makes: its fields from the query or form
        parameters, then from a JSON object.
        """
        fields = {}
        for field in _CALLBACK_FIELDS:
            value = request.args.get(field.encode())
            if value:
                fields[field] = value[0].decode("utf-8", "replace")
        if isinstance(body, dict):
            fields.update({k: str(v) for k, v in body.items()
                           if k in _CALLBACK_FIELDS and v is not None})
        return lambda: lifecycle.callback(
            name, fields.get("token"), fields.get("state"), fields.get("message"), peer)

    def _adminRefusal(self, request, action, key, body, lifecycle, peer):
        """
        The answer refusing an admin action (not from
        C{hosts.admin_networks}: logged; no JSON body; an adopt whose body
        is not an object), or L{None}.
        """
        api = self.api
        if not lifecycle.isAdmin(peer, getattr(request.getHost(), "host", None)):
            api.log.warn("hosts: {action} of {what} from {peer} refused: not in "
                         "hosts.admin_networks", action=action, what=key, peer=peer)
            return api._json(request, {"error": "%s is not allowed from %s (see "
                                       "hosts.admin_networks)" % (action, peer)}, 403)
        local = getattr(request.getHost(), "host", None)
        gate = getattr(getattr(api.appliance, "http", None), "gate", None)
        if not isLocalAddress(peer, local):
            # away from the appliance: an operator's session too
            try:
                if gate is None:
                    raise Refused(401, "log in as an operator first (/login)")
                session = gate.authorize(request, request.getHeader(CSRF_HEADER), peer, local)
            except Refused as e:
                api.log.warn("hosts: {action} of {what} from {peer} refused: {why}",
                             action=action, what=key, peer=peer, why=str(e))
                return api._json(request, {"error": "%s from %s: %s" % (action, peer, e)},
                                 e.code)
            api.log.info("hosts: {action} of {what} by operator {operator} at {peer}",
                         action=action, what=key, operator=session.operator, peer=peer)
        if body is None:
            return api._json(request, {"error": "send a JSON body with Content-Type: "
                                       "application/json"}, 415)
        if action == "adopt" and not isinstance(body, dict):
            return api._json(request, {"error": "the body must be a JSON object"}, 400)
        return None

    def _adminAction(self, action, key, body, lifecycle, peer):
        """
        The call an accepted admin action makes.
        """
        if action == "redeploy":
            return lambda: lifecycle.redeploy(key, peer)
        return lambda: lifecycle.adopt(key, body.get("name"), body.get("profile"), peer)

    def _refused(self, request, failure):
        if failure.check(HostsError):
            return self._finish(request, {"error": failure.getErrorMessage()},
                                failure.value.code)
        self.api.log.failure("JSON API {path} failed", failure, path=request.path)
        return self._finish(request, {"error": "internal error"}, 500)

    def _finish(self, request, data, code):
        if request.finished or request._disconnected:
            return
        request.write(self.api._json(request, data, code))
        request.finish()
