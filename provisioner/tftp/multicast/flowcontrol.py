# -*- test-case-name: tests.test_mtftp_flowcontrol -*-
"""
Flow control for multicast TFTP beyond what RFC 2090 defines: delayed
start, QoS by load, rate control and retransmit-last.

Each technique is a policy object with its own configuration, a counter of
the decisions it made, and a log event for every decision that changes
behaviour:

  - L{DelayedStart}: hold the first DATA of a session until N clients have
    joined or T seconds have passed, whichever comes first (N = 0: no
    count, always T seconds).
  - L{LoadQuality}: quality of service by resource conditions: when active
    sessions, bandwidth in use or CPU load are high, new sessions get a
    smaller blksize and a longer timeout; when conditions are back below the
    low-water marks, new sessions get the normal values again.
  - L{AdaptiveRate} over a L{TokenBucket}: the multicast send rate, lowered
    when the master client times out and raised after a clean period.
  - L{RetransmitLast}: on an unexpected packet (a stale ACK, an ACK from a
    client that is not the master) retransmit the most recently transmitted
    packet, at most once per C{holdoff} seconds (so a burst of stale packets
    cannot become a Sorcerer's Apprentice storm).

Everything here is pure policy: the clock is injected, nothing touches a
socket.
"""

import os

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import Interface, implementer

from provisioner.net.pacing import IRatePolicy, MultiplicativeRate, TokenBucket

__all__ = [
    "IStartPolicy", "IQualityPolicy", "IRatePolicy", "IUnexpectedPacketPolicy",
    "DelayedStart", "StartGate", "Conditions", "LoadQuality", "systemLoad",
    "TokenBucket", "AdaptiveRate", "RetransmitLast", "fromConfig",
]


class IStartPolicy(Interface):
    """
    When a multicast session may start sending.
    """

    def gate(name):
        """
        Return a new L{StartGate} for the session called C{name}.
        """


class IQualityPolicy(Interface):
    """
    Options for a new session given the resource conditions.
    """

    def decide(blksize, timeout):
        """
        @return: C{(blksize, timeout)} to grant a new session that would
            otherwise get C{blksize} and C{timeout}.
        """


class IUnexpectedPacketPolicy(Interface):
    """
    What to do with a packet the session did not expect.
    """

    def unexpected(kind):
        """
        @return: L{True} when the most recently transmitted packet should be
            sent again.
        """


class StartGate:
    """
    One session's start gate: L{whenOpen} fires once, with the reason.

    @ivar reason: C{"clients"}, C{"timer"} or C{"immediate"} once open, else
        L{None}.
    """

    def __init__(self, policy, name):
        self._policy = policy
        self.name = name
        self.reason = None
        self.clients = 0
        self._waiters = []
        self._call = None
        self.started = policy.clock.seconds()
        if policy.minClients == 1 or policy.maxWait <= 0:
            self._open("immediate")
        else:
            self._call = policy.clock.callLater(policy.maxWait, self._open, "timer")

    @property
    def isOpen(self):
        return self.reason is not None

    def joined(self, count):
        """
        The session now has C{count} clients.
        """
        self.clients = count
        if not self.isOpen and self._policy.minClients and count >= self._policy.minClients:
            self._open("clients")

    def whenOpen(self):
        """
        A Deferred that fires with the reason when the gate opens.
        """
        if self.isOpen:
            return defer.succeed(self.reason)
        d = defer.Deferred()
        self._waiters.append(d)
        return d

    def cancel(self):
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _open(self, reason):
        if self.isOpen:
            return
        self.cancel()
        self.reason = reason
        waited = self._policy.clock.seconds() - self.started
        self._policy.opened[reason] = self._policy.opened.get(reason, 0) + 1
        if reason != "immediate":
            self._policy.log.info(
                "multicast delayed start of {session}: opened by {reason} after {waited:.2f}s "
                "with {clients} client(s) (wait for {minClients} or {maxWait}s)",
                session=self.name, reason=reason, waited=waited, clients=self.clients,
                minClients=self._policy.minClients, maxWait=self._policy.maxWait)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(reason)


@implementer(IStartPolicy)
class DelayedStart:
    """
    Wait for C{minClients} clients or C{maxWait} seconds, whichever comes
    first. C{minClients} 0 counts no clients (the wait is always
    C{maxWait}); C{minClients} 1 or C{maxWait <= 0} starts at once.

    @ivar opened: C{{reason: count}} of gates opened.
    """

    log = Logger()

    def __init__(self, clock, minClients=0, maxWait=2.0):
        self.clock = clock
        self.minClients = minClients
        self.maxWait = maxWait
        self.opened = {}

    def gate(self, name):
        return StartGate(self, name)


class Conditions:
    """
    A snapshot of resource conditions.

    @ivar sessions: multicast sessions running.
    @ivar bandwidth: bytes per second being sent by them.
    @ivar load: the 1-minute load average divided by the CPU count.
    """

    def __init__(self, sessions=0, bandwidth=0.0, load=0.0):
        self.sessions = sessions
        self.bandwidth = bandwidth
        self.load = load

    def __repr__(self):
        return "<Conditions sessions=%d bandwidth=%.0fB/s load=%.2f>" % (
            self.sessions, self.bandwidth, self.load)


def systemLoad():
    """
    The 1-minute load average per CPU (0.0 where the OS cannot say).
    """
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except (AttributeError, OSError):
        return 0.0


@implementer(IQualityPolicy)
class LoadQuality:
    """
    Quality of service by resource conditions, with hysteresis.

    The policy is I{degraded} while any condition is at or above its high
    mark, and returns to I{normal} only when every condition is below
    C{lowFraction} of its mark. A mark of 0 disables that condition.

    @ivar probe: a callable returning L{Conditions}.
    @ivar degraded: whether new sessions currently get the reduced options.
    @ivar changes: how many times the state flipped.
    """

    log = Logger()

    def __init__(self, probe, maxSessions=0, maxBandwidth=0, maxLoad=0.0,
                 blksize=512, timeoutFactor=2.0, lowFraction=0.8):
        self.probe = probe
        self.maxSessions = maxSessions
        self.maxBandwidth = maxBandwidth
        self.maxLoad = maxLoad
        self.blksize = blksize
        self.timeoutFactor = timeoutFactor
        self.lowFraction = lowFraction
        self.degraded = False
        self.changes = 0

    def _marks(self, c):
        return [("sessions", c.sessions, self.maxSessions),
                ("bandwidth", c.bandwidth, self.maxBandwidth),
                ("load", c.load, self.maxLoad)]

    def update(self):
        """
        Read the conditions and flip state if needed.

        @return: the L{Conditions} read.
        """
        c = self.probe()
        marks = self._marks(c)
        high = [(n, v, m) for n, v, m in marks if m and v >= m]
        if not self.degraded and high:
            self.degraded = True
            self.changes += 1
            self.log.info(
                "multicast QoS degraded ({why}): new sessions get blksize <= {blksize}, "
                "timeout x{factor}", why=", ".join("%s %s >= %s" % h for h in high),
                blksize=self.blksize, factor=self.timeoutFactor, conditions=c)
        elif self.degraded and all(not m or v < m * self.lowFraction for _, v, m in marks):
            self.degraded = False
            self.changes += 1
            self.log.info("multicast QoS back to normal ({conditions!r})", conditions=c)
        return c

    def decide(self, blksize, timeout):
        self.update()
        if not self.degraded:
            return blksize, timeout
        return min(blksize, self.blksize), timeout * self.timeoutFactor


@implementer(IRatePolicy)
class AdaptiveRate(MultiplicativeRate):
    """
    The rate of one session: the shared L{IRatePolicy} (L{MultiplicativeRate})
    with the master's timeout as congestion. The session calls
    C{congested()} when the master times out (the rate is multiplied by
    C{decrease}, not below C{minimum}) and C{clean()} when the master
    acknowledges new data (multiplied by C{increase}, not above C{maximum},
    C{cleanPeriod} seconds or more after the last timeout or raise). C{maximum} 0 means no limit until
    the first timeout, which then starts from C{fallback}. The session
    paces with L{delay}, a L{TokenBucket} kept at the rate.

    @ivar reductions: how many times the rate was lowered.
    @ivar raises: how many times it was raised.
    """

    log = Logger()

    def __init__(self, clock, name="", maximum=0, minimum=1 << 20, decrease=0.5,
                 increase=1.25, cleanPeriod=2.0, burst=65536, fallback=100 << 20):
        self.name = name
        self.bucket = TokenBucket(clock, maximum, burst)
        MultiplicativeRate.__init__(self, maximum, minimum, maximum, decrease, increase,
                                    cleanPeriod, fallback, clock)

    def delay(self, nbytes):
        """
        Return the seconds to wait before C{nbytes} may be sent (0: now),
        and take the tokens when it is 0.
        """
        return self.bucket.delay(nbytes)

    def changed(self, old, new):
        """
        Pace at the new rate, and say so (once per change, never per
        packet).
        """
        self.bucket.setRate(new)
        raised = new == 0 or (old and new > old)
        self.log.info("multicast TFTP rate of {session} {change} to {rate} ({why})",
                      session=self.name, change="raised" if raised else "lowered",
                      rate="%.0f B/s" % (new,) if new else "unlimited",
                      why="after a clean period" if raised else "master timeout")


@implementer(IUnexpectedPacketPolicy)
class RetransmitLast:
    """
    On an unexpected packet, send the most recently transmitted packet
    again, at most once per C{holdoff} seconds. C{enabled=False} never
    does.

    @ivar retransmits: how many times it said yes.
    @ivar ignored: how many unexpected packets it let pass.
    """

    log = Logger()

    def __init__(self, clock, enabled=True, holdoff=0.05):
        self.clock = clock
        self.enabled = enabled
        self.holdoff = holdoff
        self.retransmits = 0
        self.ignored = 0
        self._last = None

    def unexpected(self, kind):
        now = self.clock.seconds()
        if not self.enabled or (self._last is not None and now - self._last < self.holdoff):
            self.ignored += 1
            return False
        self._last = now
        self.retransmits += 1
        self.log.debug("unexpected {kind}: retransmitting the most recent packet", kind=kind)
        return True


def fromConfig(section, clock, probe=None):
    """
    Build the policies from the C{tftp.multicast} configuration section.

    @return: C{(start, quality, makeRate, makeUnexpected)}: the two shared
        policies and factories for the per-session ones.
    """
    start = DelayedStart(clock, section["start_min_clients"], section["start_max_wait"])
    quality = LoadQuality(
        probe or (lambda: Conditions(load=systemLoad())),
        maxSessions=section["qos_max_sessions"], maxBandwidth=section["qos_max_bandwidth"],
        maxLoad=section["qos_max_load"], blksize=section["qos_blksize"],
        timeoutFactor=section["qos_timeout_factor"])

    def makeRate(name):
        return AdaptiveRate(clock, name, maximum=section["rate_max"],
                            minimum=section["rate_min"], decrease=section["rate_decrease"],
                            increase=section["rate_increase"],
                            cleanPeriod=section["rate_clean_period"],
                            burst=section["rate_burst"])

    def makeUnexpected():
        return RetransmitLast(clock, section["retransmit_last"],
                              section["retransmit_holdoff"])

    return start, quality, makeRate, makeUnexpected
