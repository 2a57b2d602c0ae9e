# -*- test-case-name: tests.test_web,tests.test_hostile_inputs,tests.test_hosts_api -*-
"""
The JSON API under C{/api/v1/} (L{APIResource}): the catalogue, the
inventory and the client directory, read; the hosts endpoints
(L{provisioner.web.hostsapi.HostsEndpoints}). It has no authentication for
reading, so it shows no secrets: inventory variables only when named in
C{http.api_vars} (L{provisioner.web.jsonio.publicVars}), and no host
paths.
"""

import json
from urllib.parse import unquote_to_bytes

from twisted.web import resource

from provisioner.web.eventsapi import ConsoleEndpoints
from provisioner.web.hostsapi import HostsEndpoints
from provisioner.web.jsonio import jsonable, publicVars
from provisioner.web.logs import NamedLogger

__all__ = ["APIResource"]


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
      - C{/api/v1/events}, C{/api/v1/events/stream} (Server-Sent Events),
        C{/api/v1/transfers}, C{/api/v1/console}: the operator's console
        (L{provisioner.web.eventsapi.ConsoleEndpoints}).

    and, with the hosts service, three POSTs (L{render_POST}): a booted
    system's callback (its per-boot token is the authentication), and
    redeploy and adopt (only from C{hosts.admin_networks}, with a JSON body).

    The hosts endpoints are L{provisioner.web.hostsapi.HostsEndpoints}.
    """

    isLeaf = True
    log = NamedLogger("provisioner.web.resources.APIResource")

    def __init__(self, appliance, apiVars=()):
        """
        @param apiVars: the inventory variables that may be shown
            (C{http.api_vars}); L{apiVars} may be replaced on reload.
        """
        resource.Resource.__init__(self)
        self.appliance = appliance
        self.apiVars = frozenset(apiVars)
        self._hostsEndpoints = HostsEndpoints(self)
        self.console = ConsoleEndpoints(self)

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
                "/api/v1/clients"] + ConsoleEndpoints.ENDPOINTS})
        try:
            if parts[0] == "images":
                return self._images(request, parts[1:])
            if parts[0] == "inventory" and len(parts) == 1:
                return self._inventory(request)
            if parts[0] == "hosts":
                return self._hostsEndpoints.hosts(request, parts[1:])
            if parts[0] == "discovered" and len(parts) <= 2:
                return self._hostsEndpoints.discovered(request, parts[1:])
            if self.console.handles(parts[0]):
                return self.console.get(request, parts)
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
        return self._hostsEndpoints.post(request)
