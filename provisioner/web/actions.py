# -*- test-case-name: tests.test_operator_auth -*-
"""
The operator's side of the dashboard: C{/login} (a form, or JSON for the
command line), C{/logout}, C{/actions/session} (who is logged in, the CSRF
token, what can be chosen) and the actions, each a C{POST} to
C{/actions/NAME} with a JSON or form body:

  - C{redeploy}: C{host};
  - C{adopt}: C{mac}, C{name}, C{profile};
  - C{imagecast-start}: C{image}, C{min_receivers}, C{max_wait};
  - C{imagecast-stop}: C{session}.

Every action goes through L{provisioner.web.auth.Gate.authorize} (an
address of C{hosts.admin_networks}, over TLS when configured, a live
session, its CSRF token): without a session it is 401, from another address
(or without the token) 403, and nothing changes. What it does is logged and
published (C{operator.action}) with the operator's name; logins and logouts
too (C{operator.login}, C{operator.logout}).
"""

import html
import json
from urllib.parse import parse_qs

from twisted.internet import defer
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger
from twisted.web import resource, server

from provisioner.web.auth import CSRF_HEADER, Refused
from provisioner.web.jsonio import MAX_BODY, jsonable

__all__ = ["OperatorResource", "ConsoleActions", "stopSession", "SessionStopped"]


class SessionStopped(Exception):
    """
    An imagecast session stopped by an operator.
    """


def stopSession(session, why):
    """
    Stop the imagecast C{session}: what it waits on (its start conditions,
    a round's reports, its receivers' end) fails with L{SessionStopped}, and
    the round being sent stops; the session then ends as a failed one does
    (its receivers are told, C{imagecast.done} carries C{why}). The long
    polls of C{imagecast status} following it are left to see it done.

    @return: whether something was stopped (L{False} for a session done
        already, or one announcing a round: then call again).
    """
    if session.state == "done":
        return False
    stopped = False
    sender = getattr(session, "_sender", None)
    if sender is not None and sender._done is not None and not sender._done.called:
        sender.stop()
        sender._done.errback(SessionStopped(why))
        stopped = True
    # the waiters whose predicate holds once the session is done are
    # followers (imagecast status): they fire when it is
    state, session.state = session.state, "done"
    try:
        internal = [entry for entry in list(session._waiters) if not entry[0]()]
    finally:
        session.state = state
    for entry in internal:
        if entry in session._waiters:
            session._waiters.remove(entry)
            if entry[2] is not None and entry[2].active():
                entry[2].cancel()
            entry[1].errback(SessionStopped(why))
            stopped = True
    return stopped


def _field(body, name):
    value = body.get(name)
    if isinstance(value, str):
        value = value.strip()
    return value if value not in ("", None) else None


def _number(body, name, kind):
    value = _field(body, name)
    if value is None:
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise Refused(400, "%s must be a number (got %r)" % (name, value))


class ConsoleActions:
    """
    What the dashboard's buttons do, through the subsystems' own
    interfaces (C{appliance.hosts}: redeploy, adopt;
    C{appliance.imagecast.controller}: start; L{stopSession}).
    """

    log = Logger()

    def __init__(self, appliance):
        self.appliance = appliance

    def _hosts(self):
        hosts = getattr(self.appliance, "hosts", None)
        if hosts is None:
            raise Refused(404, "the hosts service is not enabled")
        return hosts

    def _controller(self):
        service = getattr(self.appliance, "imagecast", None)
        if service is None:
            raise Refused(404, "the imagecast service is not enabled")
        return service.controller

    def run(self, action, body, operator, peer):
        """
        Do C{action} for C{operator} (from C{peer}).

        @return: a Deferred firing with the answer (a dict).
        @raise Refused: an unknown action (404) or a bad field (400).
        """
        method = getattr(self, "do_" + action.replace("-", "_"), None)
        if method is None:
            raise Refused(404, "no action %r" % (action,))
        return defer.maybeDeferred(method, body, "operator %s at %s" % (operator, peer))

    def do_redeploy(self, body, who):
        host = _field(body, "host")
        if not isinstance(host, str):
            raise Refused(400, "give the host's name (host)")
        return self._hosts().redeploy(host, who)

    def do_adopt(self, body, who):
        return self._hosts().adopt(_field(body, "mac"), _field(body, "name"),
                                   _field(body, "profile"), who)

    def do_imagecast_start(self, body, who):
        image = _field(body, "image")
        if not isinstance(image, str):
            raise Refused(400, "give the image's name (image)")
        controller = self._controller()
        d = controller.startSession(image, _number(body, "min_receivers", int),
                                    _number(body, "max_wait", float))
        return d.addCallback(lambda session: {
            "session": session.id, "name": session.name, "state": session.state,
            "min_receivers": session.minReceivers, "max_wait": session.maxWait})

    def do_imagecast_stop(self, body, who):
        sessionId = _number(body, "session", int)
        if sessionId is None:
            raise Refused(400, "give the session's number (session)")
        controller = self._controller()
        session = controller.sessions.get(sessionId)
        if session is None:
            raise Refused(404, "no running imagecast session %d" % (sessionId,))
        why = "stopped by " + who
        stopSession(session, why)
        d = session.waitFor(lambda: session.state == "done", 30.0)
        clock = controller.clock
        calls = []

        def again():
            # announcing a round: nothing to stop until its data starts
            if session.state != "done":
                stopSession(session, why)
                calls[:] = [clock.callLater(0.2, again)]
        calls.append(clock.callLater(0.2, again))

        def over(done):
            for call in calls:
                if call.active():
                    call.cancel()
            return {"session": sessionId, "state": session.state, "stopped": done,
                    "error": session.error}
        return d.addCallback(over)


def _body(request):
    """
    The request's fields: a JSON object, or a form (URL-encoded).

    @raise Refused: 400 when it is neither.
    """
    kind = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
    content = request.content
    raw = b""
    if content is not None:
        content.seek(0)
        raw = content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise Refused(400, "the body is larger than %d bytes" % (MAX_BODY,))
    if kind == b"application/json":
        try:
            body = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except (UnicodeDecodeError, ValueError):
            raise Refused(400, "the body is not JSON")
        if not isinstance(body, dict):
            raise Refused(400, "the body must be a JSON object")
        return body
    try:
        fields = parse_qs(raw.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise Refused(400, "the form is not UTF-8")
    return {k: v[0] for k, v in fields.items()}


def _addresses(request):
    peer = getattr(request.getClientAddress(), "host", None)
    local = getattr(request.getHost(), "host", None)
    return peer, local


def _json(request, data, code=200):
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    body = json.dumps(jsonable(data), indent=1, sort_keys=True).encode("utf-8") + b"\n"
    request.setHeader(b"content-length", b"%d" % (len(body),))
    return body


def _finish(request, body):
    if request.finished or request._disconnected:
        return
    request.write(body)
    request.finish()


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>provisioner: operator login</title><link rel="icon" href="data:,">
<link rel="stylesheet" href="/ui/style.css"></head>
<body class="login"><header><h1>provisioner</h1><span class="note">operator login</span></header>
<main class="login"><section>
<h2>Log in</h2>%(message)s
<form method="post" action="/login" id="login-form">
<label>operator <input name="name" id="login-name" autocomplete="username" required></label>
<label>password <input name="password" id="login-password" type="password"
 autocomplete="current-password" required></label>
<button type="submit" id="login-submit">log in</button>
</form>
<p class="empty">Operators are the lines of <code>http.operators_file</code>
(<code>provisioner operator add NAME</code>). Logins are accepted from
<code>hosts.admin_networks</code>%(tls)s.</p>
<p><a href="/">back to the dashboard</a></p>
</section></main></body></html>
"""


class OperatorResource(resource.Resource):
    """
    C{/login}, C{/logout} and C{/actions/...} (the site's root hands this
    one its first path segment in C{request.prepath}).

    @ivar gate: the L{provisioner.web.auth.Gate}.
    @ivar actions: the L{ConsoleActions}.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, appliance, gate, actions=None):
        resource.Resource.__init__(self)
        self.appliance = appliance
        self.gate = gate
        self.actions = actions or ConsoleActions(appliance)
        self.reactor = appliance.reactor

    def _publish(self, kind, level="info", **fields):
        events = getattr(self.appliance, "events", None)
        if events is not None:
            events.publish(kind, level=level, **fields)

    def _which(self, request):
        return request.prepath[-1].decode("ascii", "replace") if request.prepath else ""

    # GET

    def render_GET(self, request):
        which = self._which(request)
        if which == "login":
            return self._page(request, None, 200)
        if which == "actions" and request.postpath == [b"session"]:
            return self._sessionInfo(request)
        return _json(request, {"error": "not found"}, 404)

    def _page(self, request, message, code):
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-frame-options", b"DENY")
        request.setHeader(b"content-security-policy",
                          b"default-src 'self'; style-src 'self'; frame-ancestors 'none'")
        tls = ""
        if self.gate.tls:
            tls = ", over HTTPS only (port %d)" % (
                self.appliance.config["http"]["tls_port"],)
        text = _PAGE % {"message": '<p class="error" id="login-error">%s</p>' % (
            html.escape(message),) if message else "", "tls": tls}
        return text.encode("utf-8")

    def _sessionInfo(self, request):
        """
        C{GET /actions/session}: the operator logged in (or L{None}), the
        session's CSRF token, and what the forms offer (profiles, images).
        """
        session = self.gate.session(request)
        out = {"operator": None, "csrf": None, "expires": None, "tls": self.gate.tls,
               "login": bool(self.gate.config()["http"].get("operators_file"))}
        if session is not None:
            inventory = getattr(self.appliance, "inventory", None)
            catalog = getattr(self.appliance, "catalog", None)
            out.update(operator=session.operator, csrf=session.csrf, expires=session.expires,
                       profiles=sorted(inventory.profiles) if inventory is not None else [],
                       images=sorted(e["name"] for e in catalog.asList())
                       if catalog is not None else [],
                       imagecast=getattr(self.appliance, "imagecast", None) is not None)
        return _json(request, out)

    # POST

    def render_POST(self, request):
        which = self._which(request)
        if which == "login":
            return self._login(request)
        if which == "logout":
            return self._logout(request)
        if which == "actions" and len(request.postpath) == 1:
            return self._action(request, request.postpath[0].decode("ascii", "replace"))
        return _json(request, {"error": "not found"}, 404)

    def _wantsJSON(self, request):
        kind = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
        return kind == b"application/json"

    def _login(self, request):
        peer, local = _addresses(request)
        asJSON = self._wantsJSON(request)
        try:
            self.gate.checkAddress(peer, local, request.isSecure())
            body = _body(request)
        except Refused as e:
            self.log.warn("operator login from {peer} refused: {why}", peer=peer, why=str(e))
            return _json(request, {"error": str(e)}, e.code) if asJSON else \
                self._page(request, str(e), e.code)
        name, password = body.get("name"), body.get("password")
        if IReactorThreads.providedBy(self.reactor):
            from twisted.internet import threads
            d = threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                          self.gate.checkPassword, name, password)
        else:
            d = defer.maybeDeferred(self.gate.checkPassword, name, password)

        def checked(good):
            if not good:
                self.log.warn("operator login as {name} from {peer} refused: wrong name or "
                              "password", name=str(name)[:64], peer=peer)
                self._publish("operator.login", level="warn", operator=str(name)[:64],
                              peer=peer, result="refused")
                message = "wrong operator name or password"
                return _json(request, {"error": message}, 401) if asJSON else \
                    self._page(request, message, 401)
            session = self.gate.sessions.create(name, peer)
            self.gate.cookie(request, session)
            self.log.info("operator {name} logged in from {peer}", name=name, peer=peer)
            self._publish("operator.login", operator=name, peer=peer, result="ok")
            if asJSON:
                return _json(request, {"operator": name, "csrf": session.csrf,
                                       "expires": session.expires})
            request.setResponseCode(303)
            request.setHeader(b"location", b"/")
            request.setHeader(b"cache-control", b"no-store")
            return b""

        def failed(f):
            self.log.failure("operator login failed", f)
            return _json(request, {"error": "internal error"}, 500)
        d.addCallback(checked).addErrback(failed)
        d.addCallback(lambda body: _finish(request, body))
        return server.NOT_DONE_YET

    def _csrf(self, request, body):
        token = request.getHeader(CSRF_HEADER)
        if token is None and isinstance(body, dict):
            token = body.get("csrf")
        return token

    def _logout(self, request):
        peer, local = _addresses(request)
        try:
            body = _body(request)
            session = self.gate.authorize(request, self._csrf(request, body), peer, local)
        except Refused as e:
            return _json(request, {"error": str(e)}, e.code)
        self.gate.sessions.end(session.id)
        self.gate.cookie(request, None)
        self.log.info("operator {name} logged out from {peer}", name=session.operator,
                      peer=peer)
        self._publish("operator.logout", operator=session.operator, peer=peer)
        if self._wantsJSON(request):
            return _json(request, {"operator": None})
        request.setResponseCode(303)
        request.setHeader(b"location", b"/")
        return b""

    def _action(self, request, action):
        peer, local = _addresses(request)
        session = None
        body, bad = {}, None
        try:
            body = _body(request)
        except Refused as e:
            bad = e
        try:
            session = self.gate.authorize(request, self._csrf(request, body), peer, local)
            if bad is not None:
                raise bad
            body.pop("csrf", None)
            d = self.actions.run(action, body, session.operator, peer)
        except Refused as e:
            if session is None:
                self.log.warn("operator action {action} from {peer} refused: {why}",
                              action=action[:40], peer=peer, why=str(e))
                return _json(request, {"error": str(e)}, e.code)
            return self._refusedAction(request, action, body, session, peer, e.code, str(e))

        def done(result):
            target = _target(action, body, result)
            self.log.info("operator {operator} at {peer}: {action} {target}",
                          operator=session.operator, peer=peer, action=action, target=target)
            self._publish("operator.action", operator=session.operator, peer=peer,
                          action=action, target=target, result="done")
            return _json(request, {"action": action, "operator": session.operator,
                                   "result": result})

        def refused(f):
            code = getattr(f.value, "code", None)
            if not isinstance(code, int):
                from provisioner.imagecast.commands import ImagecastError
                if not f.check(ImagecastError):
                    self.log.failure("operator action {action} failed", f, action=action)
                    return _json(request, {"error": "internal error"}, 500)
                code = 409 if f.check(SessionStopped) else 400
            return self._refusedAction(request, action, body, session, peer, code,
                                       f.getErrorMessage())
        d.addCallbacks(done, refused)
        d.addCallback(lambda answer: _finish(request, answer))
        return server.NOT_DONE_YET

    def _refusedAction(self, request, action, body, session, peer, code, message):
        target = _target(action, body or {}, None)
        self.log.warn("operator {operator} at {peer}: {action} {target} refused: {why}",
                      operator=session.operator, peer=peer, action=action[:40], target=target,
                      why=message)
        self._publish("operator.action", level="warn", operator=session.operator, peer=peer,
                      action=action[:40], target=target, result="refused", error=message)
        return _json(request, {"error": message}, code)


def _target(action, body, result):
    """
    What C{action} was done to, for its log line and event.
    """
    if action == "redeploy":
        return str(body.get("host"))
    if action == "adopt":
        return "%s as %s (profile %s)" % (body.get("mac"), body.get("name"), body.get("profile"))
    if action == "imagecast-start":
        session = result.get("session") if isinstance(result, dict) else None
        return "%s%s" % (body.get("image"), " (session %s)" % (session,) if session else "")
    if action == "imagecast-stop":
        return "session %s" % (body.get("session"),)
    return ""
