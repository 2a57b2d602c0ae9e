# -*- test-case-name: tests.test_web -*-
"""
The root of the C{http} service's site (L{RootResource}): the JSON API
(L{provisioner.web.api.APIResource}), the Prometheus metrics
(C{/metrics}, L{provisioner.metrics}) or the files
(L{provisioner.web.files.FileResource}).
"""

from twisted.web import resource

__all__ = ["RootResource"]


class RootResource(resource.Resource):
    """
    C{/api/v1/...} goes to the API (when enabled), C{/metrics} to the
    metrics (when enabled), everything else to the files.

    @ivar metrics: a callable returning the metrics resource, or L{None}.
    """

    def __init__(self, files, api=None, metrics=None):
        resource.Resource.__init__(self)
        self.files = files
        self.api = api
        self.metrics = metrics

    def getChildWithDefault(self, name, request):
        if self.api is not None and name == b"api" and request.postpath[:1] == [b"v1"]:
            request.prepath.append(request.postpath.pop(0))
            return self.api
        if self.metrics is not None and name == b"metrics" and not request.postpath:
            return self.metrics()
        # Leave the whole path to the file resource.
        request.postpath.insert(0, name)
        request.prepath.pop()
        return self.files
