# -*- test-case-name: tests.test_dashboard -*-
"""
The dashboard (C{/} and C{/ui/}): plain HTML, CSS and
JavaScript files shipped in the package (C{provisioner/web/ui/}, package
data), no framework and nothing fetched from elsewhere. The page reads the
JSON API (C{/api/v1/console}, C{/api/v1/events}) and follows the event feed
(C{/api/v1/events/stream}). It is read-only unless an operator logs in
(L{provisioner.web.actions}: its buttons POST to C{/actions/...}).
"""

import os

from twisted.web import resource, util

__all__ = ["DashboardResource", "UI_DIRECTORY", "FILES"]

#: where the files are
UI_DIRECTORY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ui")

#: the files served, by name, with their types
FILES = {
    "index.html": b"text/html; charset=utf-8",
    "app.js": b"text/javascript; charset=utf-8",
    "style.css": b"text/css; charset=utf-8",
}


class DashboardResource(resource.Resource):
    """
    Serves the files of L{FILES} from L{UI_DIRECTORY} under C{/ui/}
    (C{/ui/} is C{index.html}); anything else is 404. L{index} serves
    C{index.html} at the site's root.
    """

    isLeaf = True

    def __init__(self, directory=UI_DIRECTORY):
        resource.Resource.__init__(self)
        self.directory = directory
        self.index = _Index(self)

    def render_GET(self, request):
        parts = [p for p in request.postpath]
        if not parts:
            # /ui without the slash: the page's relative URLs need it
            return util.redirectTo(b"/ui/", request)
        name = parts[0].decode("utf-8", "replace") if len(parts) == 1 else None
        if name == "":
            name = "index.html"
        return self.serve(request, name)

    render_HEAD = render_GET

    def serve(self, request, name):
        """
        Answer with file C{name} of L{FILES}, or 404.
        """
        kind = FILES.get(name)
        if kind is None:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"404 not found\n"
        with open(os.path.join(self.directory, name), "rb") as f:
            body = f.read()
        request.setHeader(b"content-type", kind)
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"content-security-policy",
                          b"default-src 'self'; connect-src 'self'; img-src 'self' data:; "
                          b"style-src 'self' 'unsafe-inline'")
        request.setHeader(b"content-length", b"%d" % (len(body),))
        return body


class _Index(resource.Resource):
    """
    C{index.html} of a L{DashboardResource}.
    """

    isLeaf = True

    def __init__(self, dashboard):
        resource.Resource.__init__(self)
        self.dashboard = dashboard

    def render_GET(self, request):
        return self.dashboard.serve(request, "index.html")

    render_HEAD = render_GET
