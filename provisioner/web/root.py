# -*- test-case-name: tests.test_web,tests.test_dashboard,tests.test_health -*-
"""
The root of the C{http} service's site (L{RootResource}): the JSON API
(L{provisioner.web.api.APIResource}), the Prometheus metrics
(C{/metrics}, L{provisioner.metrics}), the health check (C{/healthz},
L{provisioner.web.health}), the dashboard (C{/ui/},
L{provisioner.web.dashboard}; C{/} is its page), the operators' login and
actions (C{/login}, C{/logout}, C{/actions/...},
L{provisioner.web.actions}) or the files
(L{provisioner.web.files.FileResource}).
"""

from twisted.web import resource

__all__ = ["RootResource"]


class RootResource(resource.Resource):
    """
    C{/api/v1/...} goes to the API (when enabled), C{/metrics} to the
    metrics (when enabled), C{/healthz} to the health check, C{/ui/...} to
    the dashboard and C{/} to its page (when the dashboard is given),
    everything else to the files.

    @ivar metrics: a callable returning the metrics resource, or L{None}.
    @ivar health: the health resource, or L{None}.
    @ivar dashboard: the dashboard resource, or L{None}.
    @ivar operators: the resource of C{/login}, C{/logout} and
        C{/actions/...}, or L{None}.
    """

    def __init__(self, files, api=None, metrics=None, health=None, dashboard=None,
                 operators=None):
        resource.Resource.__init__(self)
        self.files = files
        self.api = api
        self.metrics = metrics
        self.health = health
        self.dashboard = dashboard
        self.operators = operators

    def getChildWithDefault(self, name, request):
        if self.api is not None and name == b"api" and request.postpath[:1] == [b"v1"]:
            request.prepath.append(request.postpath.pop(0))
            return self.api
        if self.metrics is not None and name == b"metrics" and not request.postpath:
            return self.metrics()
        if self.health is not None and name == b"healthz" and not request.postpath:
            return self.health
        if self.dashboard is not None:
            if name == b"ui":
                return self.dashboard
            if name == b"" and not request.postpath:
                return self.dashboard.index
        if self.operators is not None and name in (b"login", b"logout", b"actions"):
            return self.operators
        # Leave the whole path to the file resource.
        request.postpath.insert(0, name)
        request.prepath.pop()
        return self.files
