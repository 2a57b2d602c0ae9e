# -*- test-case-name: tests.test_events,tests.test_dashboard -*-
"""
The console's endpoints of the JSON API (L{ConsoleEndpoints}), read only:

  - C{/api/v1/events}: the events kept (L{provisioner.events}), filtered
    by C{host}, C{mac}, C{kind}, C{level}, C{since} (a sequence number),
    C{since_time} (UNIX seconds) and C{limit};
  - C{/api/v1/events/stream}: the same, live, as Server-Sent Events
    (L{EventFeed}): C{id:} is the sequence number, so that a client's
    C{Last-Event-ID} resumes where it was; a comment every
    L{HEARTBEAT} seconds; a client that does not keep up is dropped;
  - C{/api/v1/transfers}: TFTP and HTTP transfers in flight;
  - C{/api/v1/console}: what the dashboard shows besides the events:
    hosts and discovered machines, transfers, imagecast sessions with
    their receivers, DHCP pools.
"""

import collections
import json

from twisted.logger import Logger
from twisted.web import server

from provisioner.web.jsonio import jsonable

__all__ = ["ConsoleEndpoints", "EventFeed", "sseFrame", "HEARTBEAT", "MAX_FEEDS",
           "MAX_QUEUED", "MAX_LIMIT"]

#: seconds between two heartbeat comments of a feed
HEARTBEAT = 15.0

#: feeds served at once; more are refused (503)
MAX_FEEDS = 64

#: events a feed holds for a client whose connection is full before it is
#: dropped
MAX_QUEUED = 1000

#: the most events one C{/api/v1/events} answer holds
MAX_LIMIT = 10000


def eventJSON(event):
    """
    The event as one line of JSON (bytes).
    """
    return json.dumps(jsonable(event.asDict()), separators=(",", ":"),
                      sort_keys=True).encode("utf-8")


def sseFrame(event):
    """
    The Server-Sent Events frame of an event: C{id:} its sequence number,
    C{data:} its JSON (one line).
    """
    return b"id: %d\ndata: %s\n\n" % (event.seq, eventJSON(event))


def _filters(request):
    """
    The filters of a request's query: C{host}, C{mac}, C{kind}, C{level}.
    """
    out = {}
    for name in ("host", "mac", "kind", "level"):
        value = request.args.get(name.encode())
        if value:
            out[name] = value[0].decode("utf-8", "replace")
    if "mac" in out:
        from provisioner.directory import normaliseMAC
        try:
            out["mac"] = normaliseMAC(out["mac"])
        except ValueError:
            pass
    return out


def _matches(event, filters):
    from provisioner.events import kindMatches
    if "host" in filters and event.host != filters["host"]:
        return False
    if "mac" in filters and event.mac != filters["mac"]:
        return False
    if "kind" in filters and not kindMatches(event.kind, filters["kind"]):
        return False
    if "level" in filters:
        wanted = {"warn": ("warn", "error"), "error": ("error",)}.get(filters["level"])
        if wanted is not None and event.level not in wanted:
            return False
    return True


def _number(request, name, kind=int):
    value = request.args.get(name.encode())
    if not value:
        return None
    try:
        return kind(value[0].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError("%s must be a number" % (name,))


class EventFeed:
    """
    One client of C{/api/v1/events/stream}: a push producer on its request.
    Events go out as they are published; while the connection's buffer is
    full (paused) they wait in a queue of at most C{maxQueued}; one more,
    and the client is dropped (its connection aborted): a slow client never
    makes the appliance hold more.
    """

    log = Logger()

    def __init__(self, request, stream, clock, filters=None, lastId=None,
                 heartbeat=HEARTBEAT, maxQueued=MAX_QUEUED, onClose=None):
        self.request = request
        self.stream = stream
        self.clock = clock
        self.filters = filters or {}
        self.lastId = lastId
        self.heartbeat = heartbeat
        self.maxQueued = maxQueued
        self.onClose = onClose
        self.paused = False
        self.closed = False
        self.dropped = False
        self.queue = collections.deque()
        self._unsubscribe = None
        self._beat = None

    def start(self):
        request = self.request
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-accel-buffering", b"no")
        request.registerProducer(self, True)
        request.notifyFinish().addBoth(self._finished)
        self._write(b"retry: 3000\n\n")
        if self.lastId is not None:
            oldest = self.stream.oldest()
            if oldest is not None and self.lastId + 1 < oldest:
                self._write(b": events %d to %d are no longer kept\n\n" % (
                    self.lastId + 1, oldest - 1))
            for event in self.stream.after(self.lastId):
                self.send(event)
        self._unsubscribe = self.stream.subscribe(self.send)
        self._beat = self.clock.callLater(self.heartbeat, self._heartbeat)
        return server.NOT_DONE_YET

    def send(self, event):
        """
        A subscriber of the stream: frame the event for this client (if it
        passes the filters), or queue it while the connection is full.
        """
        if self.closed or not _matches(event, self.filters):
            return
        if self.paused:
            if len(self.queue) >= self.maxQueued:
                self.drop("more than %d events waiting" % (self.maxQueued,))
                return
            self.queue.append(event)
            return
        self._write(sseFrame(event))

    def _write(self, data):
        if not self.closed:
            self.request.write(data)

    def _heartbeat(self):
        self._beat = None
        if self.closed:
            return
        if not self.paused:
            self._write(b": heartbeat\n\n")
        self._beat = self.clock.callLater(self.heartbeat, self._heartbeat)

    # -- IPushProducer

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False
        while self.queue and not self.paused and not self.closed:
            self._write(sseFrame(self.queue.popleft()))

    def stopProducing(self):
        self._close()

    def drop(self, why):
        """
        Drop a client that does not keep up: abort its connection.
        """
        if self.closed:
            return
        self.dropped = True
        self.log.info("event feed to {peer} dropped: {why}", peer=self._peer(), why=why)
        self._close()
        transport = getattr(getattr(self.request, "channel", None), "transport", None)
        if transport is not None:
            transport.abortConnection()

    def _peer(self):
        address = self.request.getClientAddress()
        return getattr(address, "host", "?")

    def _finished(self, _):
        self._close()
        return None

    def _close(self):
        if self.closed:
            return
        self.closed = True
        self.queue.clear()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._beat is not None and self._beat.active():
            self._beat.cancel()
        self._beat = None
        onClose, self.onClose = self.onClose, None
        if onClose is not None:
            onClose(self)


class ConsoleEndpoints:
    """
    The console's part of the JSON API (see the module docstring), for
    L{provisioner.web.api.APIResource}.

    @ivar feeds: the L{EventFeed}s being served.
    """

    ENDPOINTS = ["/api/v1/events?host=&mac=&kind=&level=&since=&since_time=&limit=",
                 "/api/v1/events/stream", "/api/v1/transfers", "/api/v1/console"]

    def __init__(self, api, maxFeeds=MAX_FEEDS, heartbeat=HEARTBEAT, maxQueued=MAX_QUEUED):
        self.api = api
        self.appliance = api.appliance
        self.maxFeeds = maxFeeds
        self.heartbeat = heartbeat
        self.maxQueued = maxQueued
        self.feeds = set()

    def handles(self, name):
        return name in ("events", "transfers", "console")

    def get(self, request, parts):
        """
        Answer C{GET /api/v1/PARTS...}.
        """
        name, rest = parts[0], parts[1:]
        if name == "events" and not rest:
            return self.events(request)
        if name == "events" and rest == ["stream"]:
            return self.feed(request)
        if name == "transfers" and not rest:
            return self.api._json(request, jsonable({"transfers": transfers(self.appliance)}))
        if name == "console" and not rest:
            return self.api._json(request, jsonable(console(self.appliance)))
        return self.api._json(request, {"error": "no such endpoint"}, 404)

    def events(self, request):
        stream = self.appliance.events
        filters = _filters(request)
        try:
            since = _number(request, "since")
            sinceTime = _number(request, "since_time", float)
            limit = _number(request, "limit")
        except ValueError as e:
            return self.api._json(request, {"error": str(e)}, 400)
        limit = 100 if limit is None else max(0, min(limit, MAX_LIMIT))
        found = stream.query(host=filters.get("host"), mac=filters.get("mac"),
                             kind=filters.get("kind"), level=filters.get("level"),
                             since=since, sinceTime=sinceTime, limit=limit)
        body = b'{"events":[' + b",".join(eventJSON(e) for e in found) + \
            b'],"oldest":%s,"seq":%d,"size":%d}\n' % (
                json.dumps(stream.oldest()).encode(), stream.seq, stream.size)
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-length", b"%d" % (len(body),))
        return body

    def feed(self, request):
        if len(self.feeds) >= self.maxFeeds:
            return self.api._json(request, {"error": "%d event feeds are served already" % (
                self.maxFeeds,)}, 503)
        lastId = request.getHeader(b"last-event-id")
        try:
            lastId = int(lastId) if lastId else _number(request, "since")
        except ValueError:
            return self.api._json(request, {"error": "Last-Event-ID must be a number"}, 400)
        feed = EventFeed(request, self.appliance.events, self.appliance.reactor,
                         _filters(request), lastId, self.heartbeat, self.maxQueued,
                         onClose=self.feeds.discard)
        self.feeds.add(feed)
        return feed.start()


# -- what the dashboard reads besides the events


def transfers(appliance):
    """
    The TFTP and HTTP transfers in flight, each with its protocol.
    """
    out = []
    server_ = getattr(appliance.tftp, "server", None)
    if server_ is not None and hasattr(server_, "transfers"):
        for t in server_.transfers():
            out.append(dict(t, protocol="tftp"))
    files = getattr(appliance.http, "files", None)
    for t in list(getattr(files, "transfers", ())):
        out.append(dict(t.asDict(), protocol="http", direction="read"))
    identify = appliance.events.identify
    now = appliance.reactor.seconds()
    for t in out:
        t["ip"] = t["peer"].rsplit(":", 1)[0]
        t["elapsed"] = round(now - t["started"], 3) if t.get("started") is not None else None
        if identify is not None:
            try:
                t["mac"], t["host"] = identify(t["ip"], None)
            except Exception:
                t["mac"] = t["host"] = None
    return out


def _hosts(appliance):
    book = appliance.hosts
    if book is None or not getattr(book, "loaded", False):
        return [], []
    return book.hostsList(), book.machinesList()


def _imagecast(appliance):
    controller = getattr(appliance.imagecast, "controller", None)
    if controller is None:
        return []
    out = []
    sessions = list(controller.sessions.values()) + list(reversed(controller.finished))[:4]
    for s in sessions:
        receivers = []
        for m in sorted(s.members.values(), key=lambda m: m.clientId):
            if m.state == "complete":
                progress = 1.0
            elif m.missing is not None and s.size:
                progress = max(0.0, 1.0 - m.missingBytes / s.size)
            else:
                progress = 0.0
            receivers.append({"id": m.clientId, "address": m.address, "state": m.state,
                              "connected": m.connected, "reason": m.reason,
                              "round": m.reportedRound, "progress": round(progress, 4)})
        rounds = s.rounds[-1] if s.rounds else {}
        out.append({"session": s.id, "name": s.name, "size": s.size, "state": s.state,
                    "phase": s.phase, "round": s.round, "max_rounds": s.maxRounds,
                    "rate": s.rate, "group": s.group, "port": s.port,
                    "round_bytes": rounds.get("bytes"), "receivers": receivers,
                    "error": s.error})
    return out


def _pools(appliance):
    dhcp = appliance.dhcp
    responder = getattr(dhcp, "responder", None)
    if responder is None:
        return {"mode": None, "pools": []}
    pools = []
    for subnet in list(responder.subnets.subnets):
        pools.append({"network": str(subnet.network), "size": subnet.last - subnet.first + 1,
                      "bound": 0, "offered": 0, "declined": 0, "_subnet": subnet})
    store = responder.leases
    if store is not None and pools:
        now = appliance.reactor.seconds()
        try:
            leases = list(store)
        except Exception:
            leases = []
        for lease in leases:
            if lease.expires <= now:
                continue
            for pool in pools:
                if pool["_subnet"].inRange(lease.ip):
                    if lease.state in ("bound", "offered", "declined"):
                        pool[lease.state] += 1
                    break
    for pool in pools:
        del pool["_subnet"]
    return {"mode": responder.config.get("mode"), "pools": pools}


def console(appliance):
    """
    What the dashboard polls: hosts and discovered machines, transfers in
    flight, imagecast sessions, DHCP pools, and where the events are.
    """
    hosts, discovered = _hosts(appliance)
    clients = {}
    for record in appliance.clients:
        info = record.asDict()
        clients[info.get("mac")] = info
    stream = appliance.events
    return {"time": appliance.reactor.seconds(), "hosts": hosts, "discovered": discovered,
            "clients": list(clients.values()), "transfers": transfers(appliance),
            "imagecast": _imagecast(appliance), "dhcp": _pools(appliance),
            "events": {"seq": stream.seq, "oldest": stream.oldest(), "size": stream.size}}
