# -*- test-case-name: tests.test_events -*-
"""
The appliance's events: one bounded, in-memory stream of what happens
(boot decisions, transfers, menus, imagecast rounds and verdicts, host
lifecycle changes, configuration reloads), for the operator's console
(C{/api/v1/events}, its Server-Sent Events feed and the dashboard).

Every subsystem publishes through one interface, L{IEventSink}, found as
C{appliance.events} (an L{EventStream}); nothing else is shared. Publishing
is cheap (an object and a C{deque} append, then the live subscribers) and
is done once per decision, transfer, render, round or change, never per
datagram.

Transfers are published from the services' hooks (L{TransferEvents}: the
TFTP start, stats and refusal callbacks, the HTTP start and request
callbacks), as the metrics are. The menus renderer's renders and template
errors are read from its own log events (L{MenusLogBridge}): the menus
package is not changed for the console.
"""

import collections
import itertools

from twisted.logger import LogLevel, formatEvent
from zope.interface import Interface, implementer

__all__ = ["IEventSink", "Event", "EventStream", "NullSink", "NULL_SINK", "TransferEvents",
           "MenusLogBridge", "RING_SIZE", "kindMatches"]

#: the events an appliance keeps
RING_SIZE = 10000


class IEventSink(Interface):
    """
    Where subsystems publish what happens.
    """

    def publish(kind, host=None, mac=None, level="info", **fields):
        """
        Publish one event.

        @param kind: dotted, subsystem first: C{dhcp.boot}, C{tftp.start},
            C{tftp.end}, C{tftp.refused}, C{http.start}, C{http.end},
            C{http.error}, C{menu.render}, C{menu.error},
            C{imagecast.session}, C{imagecast.round},
            C{imagecast.receiver}, C{imagecast.done}, C{host.state},
            C{config.reload}.
        @param host: the host's name, if known.
        @param mac: the client's MAC, if known.
        @param level: C{info}, C{warn} (something did not go as asked) or
            C{error} (something is broken: a template, a configuration).
        @param fields: JSON-able values (text, numbers, booleans, None);
            C{ip} lets the sink find the MAC and host it does not know.
        @return: the L{Event}, or L{None}.
        """


class Event:
    """
    One event.

    @ivar seq: its sequence number (1, 2, ... in the order published).
    @ivar time: the clock's time.
    @ivar kind: see L{IEventSink.publish}.
    @ivar level: C{info}, C{warn} or C{error}.
    """

    __slots__ = ("seq", "time", "kind", "host", "mac", "level", "fields")

    def __init__(self, seq, time, kind, host, mac, level, fields):
        self.seq = seq
        self.time = time
        self.kind = kind
        self.host = host
        self.mac = mac
        self.level = level
        self.fields = fields

    def asDict(self):
        out = dict(self.fields)
        out.update(seq=self.seq, time=self.time, kind=self.kind, host=self.host, mac=self.mac,
                   level=self.level)
        return out

    def __repr__(self):
        return "<Event %d %s>" % (self.seq, self.kind)


def kindMatches(kind, wanted):
    """
    Whether C{kind} is one of C{wanted} (names, comma-separated or a list):
    a name matches itself and the kinds below it (C{tftp} matches
    C{tftp.end}).
    """
    if isinstance(wanted, str):
        wanted = wanted.split(",")
    for name in wanted:
        name = name.strip()
        if name and (kind == name or kind.startswith(name + ".")):
            return True
    return False


@implementer(IEventSink)
class NullSink:
    """
    A sink that keeps nothing (a subsystem built without an appliance).
    """

    def publish(self, kind, host=None, mac=None, level="info", **fields):
        return None


NULL_SINK = NullSink()


@implementer(IEventSink)
class EventStream:
    """
    The ring of the newest L{RING_SIZE} events, and live subscribers.

    @ivar seq: the sequence number of the newest event (0: none yet).
    @ivar identify: C{identify(ip, mac)} returns C{(mac, host)} for an event
        published without them (L{None} values when unknown), or L{None}.
    """

    def __init__(self, clock, size=RING_SIZE, identify=None):
        self.clock = clock
        self.seq = 0
        self.identify = identify
        self._ring = collections.deque(maxlen=size)
        self._subscribers = []

    @property
    def size(self):
        return self._ring.maxlen

    def __len__(self):
        return len(self._ring)

    def publish(self, kind, host=None, mac=None, level="info", **fields):
        if (host is None or mac is None) and self.identify is not None:
            try:
                foundMAC, foundHost = self.identify(fields.get("ip"), mac)
            except Exception:
                foundMAC = foundHost = None
            mac = mac or foundMAC
            host = host or foundHost
        self.seq += 1
        event = Event(self.seq, self.clock.seconds(), kind, host, mac, level, fields)
        self._ring.append(event)
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception:
                # a subscriber (a feed's client) must not stop the publisher
                self._subscribers.remove(subscriber)
        return event

    def subscribe(self, callback):
        """
        Call C{callback(event)} for each event published from now on (in
        the publisher's call: it must be quick and not raise; one that
        raises is removed).

        @return: a callable that removes it.
        """
        self._subscribers.append(callback)

        def remove():
            if callback in self._subscribers:
                self._subscribers.remove(callback)
        return remove

    @property
    def subscribers(self):
        return len(self._subscribers)

    def oldest(self):
        """
        The sequence number of the oldest event kept (L{None}: none).
        """
        return self._ring[0].seq if self._ring else None

    def after(self, seq):
        """
        The events kept whose sequence number is above C{seq}, oldest first
        (without going over the older ones).
        """
        ring = self._ring
        if not ring:
            return []
        start = max(0, seq - ring[0].seq + 1)
        if start >= len(ring):
            return []
        return list(itertools.islice(ring, start, None))

    def query(self, host=None, mac=None, kind=None, since=None, sinceTime=None, level=None,
              limit=100):
        """
        The newest C{limit} events kept that match every filter given,
        oldest first.

        @param since: only events whose sequence number is above it.
        @param sinceTime: only events at or after this time.
        @param kind: names (see L{kindMatches}).
        @param level: C{warn}: warnings and errors; C{error}: errors.
        """
        events = self.after(since) if since is not None else self._ring
        levels = {"warn": ("warn", "error"), "error": ("error",)}.get(level)
        out = []
        for event in reversed(events):
            if sinceTime is not None and event.time < sinceTime:
                break
            if host is not None and event.host != host:
                continue
            if mac is not None and event.mac != mac:
                continue
            if kind is not None and not kindMatches(event.kind, kind):
                continue
            if levels is not None and event.level not in levels:
                continue
            out.append(event)
            if len(out) >= limit:
                break
        out.reverse()
        return out


def applianceIdentify(appliance):
    """
    The C{identify} of an appliance's stream: the MAC the client directory
    knows for an address, and the host (inventory, or adopted by the host
    lifecycle) of a MAC.
    """
    def identify(ip, mac):
        if mac is None and ip:
            record = appliance.clients.byIP(ip)
            mac = getattr(record, "mac", None)
        host = None
        if mac:
            inventory = appliance.inventory
            found = inventory.lookup(mac=mac) if inventory is not None else None
            host = getattr(found, "name", None)
            if host is None and appliance.hosts is not None:
                adopted = appliance.hosts.adoption(mac)
                host = adopted[0] if adopted else None
        return mac, host
    return identify


def _rate(nbytes, seconds):
    return round(nbytes / seconds) if seconds and seconds > 0 else None


class TransferEvents:
    """
    Transfers as events, from the services' hooks (like the metrics):
    C{tftp.start}, C{tftp.end}, C{tftp.refused}; C{http.start}, C{http.end},
    C{http.error} (a file answered 4xx or 5xx; the API and console paths are
    left out).
    """

    def __init__(self, appliance):
        self.appliance = appliance
        self._hooks = {}

    @property
    def events(self):
        return self.appliance.events

    def hook(self):
        """
        Register with the TFTP and HTTP services the appliance has (each
        once; a service built by a reload is hooked when this runs again).
        """
        for service, hooks in ((self.appliance.tftp, (("addStartCallback", self.tftpStarted),
                                                      ("addStatsCallback", self.tftpEnded),
                                                      ("addRefusalCallback", self.tftpRefused))),
                               (self.appliance.http, (("addStartCallback", self.httpStarted),
                                                      ("addRequestCallback", self.httpAnswered)))):
            if service is None or service in self._hooks:
                continue
            removers = []
            for name, callback in hooks:
                add = getattr(service, name, None)
                if add is not None:
                    removers.append(add(callback))
            self._hooks[service] = removers

    def unhook(self):
        hooks, self._hooks = self._hooks, {}
        for removers in hooks.values():
            for remove in removers:
                remove()

    # -- TFTP

    def tftpStarted(self, stats):
        """
        A TFTP session started (its L{provisioner.tftp.transfer.SessionStats}).
        """
        self.events.publish("tftp.start", ip=stats.peer[0], peer="%s:%d" % tuple(stats.peer[:2]),
                            path=stats.path, direction=stats.direction, size=stats.size,
                            blksize=stats.blksize, windowsize=stats.windowsize)

    def tftpEnded(self, stats):
        duration = stats.duration
        ok = stats.outcome in ("complete", "probe")
        self.events.publish(
            "tftp.end", level="info" if ok else "warn", ip=stats.peer[0],
            peer="%s:%d" % tuple(stats.peer[:2]), path=stats.path, direction=stats.direction,
            outcome=stats.outcome, detail=stats.detail or None, size=stats.size,
            bytes=stats.bytes, duration=round(duration, 6), rate=_rate(stats.bytes, duration),
            blocks=stats.blocks, retransmits=stats.retransmits, timeouts=stats.timeouts)

    def tftpRefused(self, direction, reason, peer, path):
        if isinstance(path, bytes):
            path = path.decode("utf-8", "replace")
        path = path[:256] if path else path
        self.events.publish("tftp.refused", level="warn", ip=peer[0],
                            peer="%s:%d" % tuple(peer[:2]), direction=direction,
                            reason=reason, path=path)

    # -- HTTP

    def httpStarted(self, transfer):
        """
        A file body started (L{provisioner.web.files.HTTPTransfer}); its
        end is published when its C{finished} fires.
        """
        self.events.publish("http.start", ip=transfer.peer[0], path=transfer.path,
                            size=transfer.size, length=transfer.length, code=transfer.code)

        def ended(result):
            duration = transfer.duration()
            outcome = "complete" if result is None else "aborted"
            self.events.publish(
                "http.end", level="info" if result is None else "warn", ip=transfer.peer[0],
                path=transfer.path, outcome=outcome, code=transfer.code, size=transfer.size,
                bytes=transfer.sent, duration=round(duration, 6),
                rate=_rate(transfer.sent, duration),
                detail=result)
            return None
        transfer.finished.addBoth(ended)

    def httpAnswered(self, request):
        code = request.code or 0
        if code < 400:
            return
        path = request.path.decode("utf-8", "replace") if request.path else ""
        if path.startswith(("/api/", "/ui/", "/metrics", "/healthz")):
            return
        address = request.getClientAddress()
        self.events.publish("http.error", level="warn", ip=getattr(address, "host", None),
                            path=path[:256], code=code,
                            method=request.method.decode("ascii", "replace"))


class MenusLogBridge:
    """
    A log observer that publishes the menus' renders (C{menu.render}: the
    menus service's line for each menu served, with its template, or
    C{fallback}) and template errors (C{menu.error}: the renderer's error
    lines) of one appliance: only events whose source is that appliance's
    menus service or renderer.
    """

    def __init__(self, appliance):
        self.appliance = appliance

    def __call__(self, event):
        source = event.get("log_source")
        if source is None:
            return
        menus = self.appliance.menus
        if menus is None:
            return
        if source is menus:
            if "template" in event and "path" in event:
                template = event.get("template")
                client = _text(event.get("client"))
                isMAC = client is not None and client.count(":") == 5
                self.appliance.events.publish(
                    "menu.render", mac=client if isMAC else None,
                    level="warn" if template == "fallback" else "info",
                    ip=None if isMAC else client, path=_text(event.get("path")),
                    template=_text(template))
        elif source is getattr(menus, "renderer", None):
            level = event.get("log_level")
            if level is not None and level >= LogLevel.error:
                client = _text(event.get("client"))
                isMAC = client is not None and client.count(":") == 5
                self.appliance.events.publish(
                    "menu.error", mac=client if isMAC else None, level="error",
                    ip=client if client and client.count(".") == 3 else None,
                    message=formatEvent(event), template=_text(event.get("template")),
                    line=_text(event.get("line")), loader=_text(event.get("loader")))


def _text(value):
    return None if value is None else str(value)
