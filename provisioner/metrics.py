# -*- test-case-name: tests.test_metrics -*-
"""
The appliance's Prometheus metrics (C{/metrics} on the http service, with
C{http.metrics}), made with C{prometheus_client}; every name and label is
in docs/metrics.md.

L{ApplianceMetrics} owns a registry of its own (not the process-wide
C{prometheus_client.REGISTRY}: tests, and several appliances in one
process, do not collide). What it exports comes from two places:

  - counters incremented from the hooks the services offer, once per
    transfer or request when it ends (never per packet): the TFTP
    service's stats callbacks (C{addStatsCallback}), the HTTP service's
    request and fetch callbacks (C{addRequestCallback},
    C{addFetchCallback});
  - L{StateCollector}, which reads the current state of the appliance's
    public objects when it is scraped: the DHCP responder's decisions and
    the lease store (C{appliance.dhcp}), the TFTP dispatcher's transfers
    in flight and refusals (C{appliance.tftp}), the host book's states
    (C{appliance.hosts}), the imagecast controller's sessions and
    receivers (C{appliance.imagecast}), and the reloads
    (C{appliance.reloads}).

No label takes a value a client chooses (no MAC, IP or file name): label
values are fixed sets, or names from the configuration (the DHCP pools).

The scrape runs in a thread of the reactor's pool (prometheus_client's
twisted.web resource is a WSGI application); the collector reads the
appliance's state in the reactor thread, where it changes.
"""

import queue
import threading

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from twisted.logger import Logger

from provisioner.hosts.lifecycle import DISCOVERED, STATES

__all__ = ["ApplianceMetrics", "StateCollector", "DURATION_BUCKETS", "statusClass"]

#: the buckets of C{provisioner_tftp_transfer_duration_seconds}: from a
#: boot menu (milliseconds) to an image (minutes)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0, 120.0, 300.0, 600.0)

#: the HTTP methods counted by name; any other is C{other}
_METHODS = frozenset(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"])

#: the outcomes a TFTP transfer ends with (L{provisioner.tftp.transfer.SessionStats});
#: anything else is counted as C{other}
_OUTCOMES = frozenset(["complete", "probe", "refused", "aborted", "timeout", "error",
                       "cancelled"])

#: how long a scrape waits for the reactor thread to read the state
SNAPSHOT_TIMEOUT = 10.0


def statusClass(code):
    """
    C{"2xx"} for 200 and so on; C{"other"} for what is not an HTTP status.
    """
    try:
        code = int(code)
    except (TypeError, ValueError):
        return "other"
    if 100 <= code <= 599:
        return "%dxx" % (code // 100,)
    return "other"


class ApplianceMetrics:
    """
    The metrics of one appliance.

    @ivar appliance: the L{provisioner.appliance.Appliance}.
    @ivar registry: its C{prometheus_client.CollectorRegistry}.
    """

    log = Logger()

    def __init__(self, appliance):
        self.appliance = appliance
        self.registry = registry = CollectorRegistry()
        self._thread = threading.get_ident()
        self._hooks = {}
        self._resource = None
        self.tftpTransfers = Counter(
            "provisioner_tftp_transfers", "TFTP transfers that ended, by direction and outcome",
            ["direction", "outcome"], registry=registry)
        self.tftpBytes = Counter(
            "provisioner_tftp_bytes", "bytes of TFTP transfers that ended: acknowledged by "
            "the client (read) or stored (write)", ["direction"], registry=registry)
        self.tftpBlocks = Counter(
            "provisioner_tftp_blocks", "DATA datagrams of TFTP transfers that ended, "
            "retransmissions included", ["direction"], registry=registry)
        self.tftpRetransmits = Counter(
            "provisioner_tftp_retransmits", "DATA blocks sent again by TFTP transfers that "
            "ended", ["direction"], registry=registry)
        self.tftpTimeouts = Counter(
            "provisioner_tftp_timeouts", "retransmission timer expiries of TFTP transfers "
            "that ended", ["direction"], registry=registry)
        self.tftpDuration = Histogram(
            "provisioner_tftp_transfer_duration_seconds", "how long TFTP transfers took, "
            "from request to end", ["direction"], buckets=DURATION_BUCKETS, registry=registry)
        self.httpRequests = Counter(
            "provisioner_http_requests", "HTTP requests answered, by method and status class",
            ["method", "code"], registry=registry)
        self.httpBytes = Counter(
            "provisioner_http_response_bytes", "HTTP response body bytes written, by status "
            "class", ["code"], registry=registry)
        self.httpFetches = Counter(
            "provisioner_http_fetches", "file bodies (menus, images, files) written whole "
            "over HTTP: complete (200) or a range (partial)", ["outcome"], registry=registry)
        for direction in ("read", "write"):
            for family in (self.tftpBytes, self.tftpBlocks, self.tftpRetransmits,
                           self.tftpTimeouts, self.tftpDuration):
                family.labels(direction)
        self.collector = StateCollector(appliance, self.snapshot)
        registry.register(self.collector)

    # -- the services' hooks

    def hook(self):
        """
        Register with the TFTP and HTTP services the appliance has (each
        once; a service built by a reload is hooked when this runs again).
        """
        for service, hooks in ((self.appliance.tftp, (("addStatsCallback", self.tftpEnded),)),
                               (self.appliance.http, (("addRequestCallback", self.httpAnswered),
                                                      ("addFetchCallback", self.httpFetched)))):
            if service is None or service in self._hooks:
                continue
            removers = []
            for name, callback in hooks:
                add = getattr(service, name, None)
                if add is not None:
                    removers.append(add(callback))
            self._hooks[service] = removers

    def unhook(self):
        """
        Remove every registration L{hook} made.
        """
        hooks, self._hooks = self._hooks, {}
        for removers in hooks.values():
            for remove in removers:
                remove()

    def tftpEnded(self, stats):
        """
        A TFTP stats callback: one transfer ended
        (L{provisioner.tftp.transfer.SessionStats}).
        """
        direction = "write" if stats.direction == "write" else "read"
        outcome = stats.outcome if stats.outcome in _OUTCOMES else "other"
        self.tftpTransfers.labels(direction, outcome).inc()
        self.tftpBytes.labels(direction).inc(stats.bytes)
        self.tftpBlocks.labels(direction).inc(stats.blocks)
        self.tftpRetransmits.labels(direction).inc(stats.retransmits)
        self.tftpTimeouts.labels(direction).inc(stats.timeouts)
        self.tftpDuration.labels(direction).observe(stats.duration)

    def httpAnswered(self, request):
        """
        An HTTP request callback: one request was answered (a
        C{twisted.web} request, finished).
        """
        try:
            method = request.method.decode("ascii")
        except (AttributeError, UnicodeDecodeError):
            method = "other"
        if method not in _METHODS:
            method = "other"
        code = statusClass(request.code)
        self.httpRequests.labels(method, code).inc()
        self.httpBytes.labels(code).inc(request.sentLength or 0)

    def httpFetched(self, fetch):
        """
        An HTTP fetch callback: a file body was written whole
        (L{provisioner.web.files.HTTPFetch}).
        """
        self.httpFetches.labels("complete" if fetch.outcome == "complete" else "partial").inc()

    # -- scraping

    def resource(self):
        """
        The twisted.web resource serving the registry
        (C{prometheus_client.twisted.MetricsResource}: a WSGI application
        run in the global reactor's thread pool), made on first use.
        """
        if self._resource is None:
            from prometheus_client.twisted import MetricsResource
            self._resource = MetricsResource(registry=self.registry)
        return self._resource

    def snapshot(self, read):
        """
        Call C{read()} in the reactor thread (where the state it reads
        changes) and return its result: at once when called there, else
        through C{reactor.callFromThread}, waiting at most
        L{SNAPSHOT_TIMEOUT} seconds.

        @raise RuntimeError: the reactor did not run it in time.
        """
        if threading.get_ident() == self._thread:
            return read()
        answer = queue.Queue(1)

        def run():
            try:
                answer.put((True, read()))
            except BaseException as e:
                answer.put((False, e))
        self.appliance.reactor.callFromThread(run)
        try:
            ok, value = answer.get(timeout=SNAPSHOT_TIMEOUT)
        except queue.Empty:
            raise RuntimeError("the reactor did not answer the scrape in %gs" % (
                SNAPSHOT_TIMEOUT,))
        if not ok:
            raise value
        return value


class StateCollector:
    """
    A C{prometheus_client} collector of what the appliance holds now
    (gauges), and of the counters the subsystems keep themselves.
    """

    def __init__(self, appliance, snapshot=lambda read: read()):
        """
        @param snapshot: C{snapshot(read)} calls C{read} where the state may
            be read (L{ApplianceMetrics.snapshot}).
        """
        self.appliance = appliance
        self._snapshot = snapshot

    def collect(self):
        return self._snapshot(self._families)

    def _families(self):
        families = []
        for part in (self._dhcp, self._tftp, self._hosts, self._imagecast, self._reloads):
            families.extend(part())
        return families

    # -- DHCP

    def _dhcp(self):
        requests = CounterMetricFamily(
            "provisioner_dhcp_requests", "DHCP requests by port (dhcp: 67, pxe: 4011), "
            "message type and what became of them", labels=["port", "type", "decision"])
        leases = GaugeMetricFamily(
            "provisioner_dhcp_leases", "addresses of each pool held now, by state (bound: "
            "leased and not expired; offered; declined)", labels=["pool", "state"])
        size = GaugeMetricFamily("provisioner_dhcp_pool_addresses",
                                 "addresses in each pool's range", labels=["pool"])
        responder = getattr(self.appliance.dhcp, "responder", None)
        if responder is not None:
            for (port, kind, decision), count in sorted(dict(responder.decisions).items()):
                requests.add_metric([port, kind, decision], count)
            self._pools(responder, leases, size)
        return [requests, leases, size]

    def _pools(self, responder, leases, size):
        subnets = list(responder.subnets.subnets)
        counts = {}
        for subnet in subnets:
            pool = str(subnet.network)
            size.add_metric([pool], subnet.last - subnet.first + 1)
            for state in ("bound", "offered", "declined"):
                counts[pool, state] = 0
        store = responder.leases
        if store is None:
            return
        now = self.appliance.reactor.seconds()
        for lease in store:
            if lease.expires <= now:
                continue
            for subnet in subnets:
                if subnet.inRange(lease.ip):
                    key = (str(subnet.network), lease.state)
                    if key in counts:
                        counts[key] += 1
                    break
        for (pool, state), count in sorted(counts.items()):
            leases.add_metric([pool, state], count)

    # -- TFTP

    def _tftp(self):
        inFlight = GaugeMetricFamily(
            "provisioner_tftp_transfers_in_flight", "TFTP transfers counted against "
            "tftp.max_sessions now: sessions, requests being resolved, multicast clients")
        limit = GaugeMetricFamily("provisioner_tftp_transfers_max",
                                  "tftp.max_sessions: the most transfers in flight")
        refused = CounterMetricFamily(
            "provisioner_tftp_requests_refused", "TFTP requests refused before a transfer "
            "started, by direction and reason", labels=["direction", "reason"])
        server = getattr(self.appliance.tftp, "server", None)
        if server is not None:
            inFlight.add_metric([], server.inFlight())
            limit.add_metric([], server.config.get("max_sessions", 0))
            for (direction, reason), count in sorted(dict(server.refusals).items()):
                refused.add_metric([direction, reason], count)
        return [inFlight, limit, refused]

    # -- hosts

    def _hosts(self):
        hosts = GaugeMetricFamily(
            "provisioner_hosts", "hosts by lifecycle state (discovered: machines no "
            "inventory names)", labels=["state"])
        book = self.appliance.hosts
        if book is not None:
            counts = dict.fromkeys(STATES, 0)
            for record in list(book.hosts.values()):
                if record.state in counts:
                    counts[record.state] += 1
            counts[DISCOVERED] += len(book.machines)
            for state in STATES:
                hosts.add_metric([state], counts[state])
        return [hosts]

    # -- imagecast

    def _imagecast(self):
        sessions = GaugeMetricFamily(
            "provisioner_imagecast_sessions", "imagecast sessions running now, by state",
            labels=["state"])
        ended = CounterMetricFamily("provisioner_imagecast_sessions_ended",
                                    "imagecast sessions that ended")
        rounds = CounterMetricFamily("provisioner_imagecast_rounds",
                                     "imagecast rounds started")
        wire = CounterMetricFamily(
            "provisioner_imagecast_wire_bytes", "bytes imagecast sent on the multicast "
            "group (datagrams with their headers), counted when each round's data is sent")
        receivers = GaugeMetricFamily(
            "provisioner_imagecast_receivers", "receivers of the running imagecast sessions, "
            "by state", labels=["state"])
        registered = GaugeMetricFamily(
            "provisioner_imagecast_receivers_registered",
            "receivers registered on the control channel now")
        controller = getattr(self.appliance.imagecast, "controller", None)
        if controller is not None:
            self._sessions(controller, sessions, ended, rounds, wire, receivers)
            registered.add_metric([], len(controller.clients))
        return [sessions, ended, rounds, wire, receivers, registered]

    def _sessions(self, controller, sessions, ended, rounds, wire, receivers):
        totals = dict(controller.totals)
        states = dict.fromkeys(("waiting", "running", "repair"), 0)
        members = dict.fromkeys(("active", "complete", "failed", "lost"), 0)
        roundCount, wireBytes = totals["rounds"], totals["wire_bytes"]
        for session in list(controller.sessions.values()):
            states[session.state] = states.get(session.state, 0) + 1
            records = list(session.rounds)
            roundCount += len(records)
            wireBytes += sum(r.get("wire_bytes", 0) for r in records)
            for member in list(session.members.values()):
                members[member.state] = members.get(member.state, 0) + 1
        for state, count in sorted(states.items()):
            sessions.add_metric([state], count)
        for state, count in sorted(members.items()):
            receivers.add_metric([state], count)
        ended.add_metric([], totals["sessions"])
        rounds.add_metric([], roundCount)
        wire.add_metric([], wireBytes)

    # -- configuration

    def _reloads(self):
        reloads = CounterMetricFamily(
            "provisioner_config_reloads", "configuration reloads (SIGHUP) by result: applied, "
            "refused (a bad file: the running configuration kept), failed (applied, but a "
            "service could not take it)", labels=["result"])
        for result, count in sorted(dict(getattr(self.appliance, "reloads", {})).items()):
            reloads.add_metric([result], count)
        return [reloads]
