# -*- test-case-name: tests.test_mtftp_server -*-
"""
The running multicast TFTP sessions (RFC 2090) and the groups they use.

L{MulticastRegistry.request} serves a multicast read request: it joins a
running L{MulticastSession
<provisioner.tftp.multicast.session.MulticastSession>} for the same file
when the request's options fit, or starts one on a group from the
L{GroupPool}. The flow-control policies of new sessions (delayed start, QoS
by load, rate control, retransmit-last) come from the C{tftp.multicast}
section through L{provisioner.tftp.multicast.flowcontrol}.

Hostile clients: a client that joins counts against
C{tftp.max_sessions_per_client} (the registry's own count of clients from
each address, and the TFTP server's through the C{holdSlot} it is given) until
it leaves; a client that never acknowledged anything is given up as master
within C{tftp.unanswered_timeout} and C{tftp.unanswered_retries} (see
L{provisioner.tftp.multicast.session}).
"""

import ipaddress

from twisted.logger import Logger

from provisioner.errors import TooManySessions
from provisioner.tftp.transfer import requestSize
from provisioner.tftp.multicast import flowcontrol
from provisioner.tftp.multicast.codec import EPOCH_OPTION, MULTICAST_OPTION
from provisioner.tftp.multicast.session import MulticastSession

__all__ = ["GroupPool", "MulticastRegistry"]


class GroupPool:
    """
    Multicast groups for sessions: one address per running session from a
    network (239.255.0.0/16 by default), all on one port.
    """

    def __init__(self, network="239.255.0.0/16", port=1758):
        self.network = ipaddress.ip_network(network)
        self.port = port
        self._used = set()
        self._cursor = 0
        self._hosts = self.network.num_addresses - 2 if self.network.num_addresses > 2 \
            else self.network.num_addresses

    def allocate(self):
        """
        @return: C{(address, port)} of a group nobody uses.
        @raise TooManySessions: the pool is exhausted.
        """
        offset = 1 if self.network.num_addresses > 2 else 0
        for i in range(self._hosts):
            index = (self._cursor + i) % self._hosts
            addr = str(self.network.network_address + offset + index)
            if addr not in self._used:
                self._used.add(addr)
                self._cursor = index + 1
                return addr, self.port
        raise TooManySessions("multicast group pool %s exhausted" % (self.network,))

    def release(self, group):
        self._used.discard(group[0])

    def __len__(self):
        return len(self._used)


class MulticastRegistry:
    """
    The running multicast sessions, by file: a request for a file whose
    session is running joins it when its options fit (see L{request}),
    otherwise it gets a new session and group.

    @ivar sessions: the running L{MulticastSession}s.
    @ivar sent: bytes of DATA sent by every session since start.
    @ivar perHost: C{{host: clients}} in every session, by address.
    """

    log = Logger()

    def __init__(self, reactor, config, tftpConfig=None, bindAddress="", probe=None):
        self.reactor = reactor
        self.sessions = []
        self.sent = 0
        self.perHost = {}
        self._lastSent = (reactor.seconds(), 0)
        self._bandwidth = 0.0
        self.configure(config, tftpConfig, bindAddress, probe)

    def configure(self, config, tftpConfig=None, bindAddress="", probe=None):
        """
        Take a (re)loaded C{tftp.multicast} section: running sessions keep
        their group and options; new sessions use the new values.
        """
        self.config = config
        tftp = tftpConfig or {}
        self.enabled = config["enabled"]
        self.bindAddress = bindAddress
        self.ttl = config["ttl"]
        self.outgoingInterface = config["interface"]
        if not self.outgoingInterface and bindAddress not in ("", "0.0.0.0", "::"):
            self.outgoingInterface = bindAddress
        self.masterRetries = config["master_retries"]
        self.maxClients = config["max_clients"]
        self.maxSessions = config["max_sessions"]
        self.allowEpoch = config["epoch"]
        self.blksizeMax = tftp.get("blksize_max", 65464)
        self.windowsizeMax = tftp.get("windowsize_max", 64)
        self.defaultTimeout = tftp.get("timeout", 1.0)
        self.maxPerClient = tftp.get("max_sessions_per_client")
        self.unansweredTimeout = tftp.get("unanswered_timeout")
        self.unansweredRetries = tftp.get("unanswered_retries")
        self.gso = tftp.get("gso", True)
        old = getattr(self, "pool", None)
        self.pool = GroupPool(config["group_pool"], config["port"])
        if old is not None:
            self.pool._used |= old._used
        self.start, self.quality, self._makeRate, self._makeUnexpected = \
            flowcontrol.fromConfig(config, self.reactor, probe or self.conditions)

    def conditions(self):
        """
        The resource conditions the QoS policy reads.
        """
        now = self.reactor.seconds()
        then, before = self._lastSent
        if now - then >= 0.5:
            self._bandwidth = (self.sent - before) / (now - then)
            self._lastSent = (now, self.sent)
        return flowcontrol.Conditions(len(self.sessions), self._bandwidth,
                                      flowcontrol.systemLoad())

    @staticmethod
    def wants(options):
        """
        Whether a request (its options, a C{dict} or pairs) asks for
        multicast.
        """
        return MULTICAST_OPTION in dict(options)

    def _find(self, path, blksize, exactBlksize, epoch):
        for s in self.sessions:
            if s.path != path or s.epoch != epoch or s._port is None:
                continue
            if len(s.clients) >= self.maxClients:
                continue
            if (s.blksize == blksize) if exactBlksize else (s.blksize <= blksize):
                return s
        return None

    def sessionOf(self, peer, path):
        for s in self.sessions:
            if s.path == path and s.find(peer) is not None:
                return s
        return None

    def request(self, path, options, source, peer, blksize=None, windowsize=None,
                timeout=None, holdSlot=None):
        """
        Serve a multicast read request: join a running session for C{path}
        or start one.

        @param options: the requested options, C{[(name, value)]} in order.
        @param source: the L{IDataSource} (closed here when a running session
            is joined).
        @param blksize, windowsize, timeout: the values the server's
            negotiation granted, or L{None} to negotiate here.
        @param holdSlot: the TFTP server's
            L{provisioner.tftp.server.TFTPServer.holdSlot}, or L{None}: a
            client that joins holds a slot of the server's limits until it
            leaves.
        @return: the L{MulticastSession}.
        @raise TooManySessions: no group or session left, or the address
            has C{tftp.max_sessions_per_client} clients in sessions already
            (the source is then left open).
        """
        opts = dict(options)
        if blksize is None:
            blksize = _int(opts.get("blksize"), 512, 8, 65464)
            blksize = min(blksize, self.blksizeMax)
        if windowsize is None:
            windowsize = min(_int(opts.get("windowsize"), 1, 1, 65535), self.windowsizeMax)
        if timeout is None and "timeout" in opts:
            t = _int(opts.get("timeout"), None, 1, 255)
            timeout = t
        epoch = self.allowEpoch and opts.get(EPOCH_OPTION) == "1"
        # what the request cost its sender (its name normalised: no longer
        # than it came), which bounds what a client that never answers gets
        size = requestSize(path, "octet", options)
        existing = self.sessionOf(peer, path)
        if existing is None:
            # A new client: counted against the per-address limit.
            limit = self.maxPerClient
            if limit is not None and self.perHost.get(peer[0], 0) >= limit:
                raise TooManySessions("too many multicast clients from %s" % (peer[0],))
            existing = self._find(path, blksize, "blksize" not in opts, epoch)
        if existing is not None:
            source.close()
            self._held(existing.join(peer, list(options), windowsize, timeout, size),
                       holdSlot)
            return existing
        if len(self.sessions) >= self.maxSessions:
            raise TooManySessions("too many multicast sessions")
        session = self._start(path, source, blksize, "blksize" in opts, timeout, epoch)
        self.log.info("multicast session {session} started for {peer}: blksize {blksize}, "
                      "{blocks} blocks{epoch}", session=session.name, peer="%s:%d" % peer,
                      blksize=session.blksize, blocks=session.nblocks,
                      epoch=" (mcepoch framing)" if epoch else "")
        self._held(session.join(peer, list(options), windowsize, timeout, size), holdSlot)
        return session

    def _held(self, client, holdSlot):
        """
        Count a client that joined (once: a repeated request of a client
        already counted changes nothing) against the limits: in L{perHost},
        and in the server's through C{holdSlot}. Its C{release}, called when
        it leaves, undoes both.
        """
        if client is None or client.release is not None:
            return
        host = client.peer[0]
        self.perHost[host] = self.perHost.get(host, 0) + 1
        releaseSlot = holdSlot(client.peer) if holdSlot is not None else None

        def release():
            client.release = _alreadyReleased
            n = self.perHost.get(host, 0) - 1
            if n > 0:
                self.perHost[host] = n
            else:
                self.perHost.pop(host, None)
            if releaseSlot is not None:
                releaseSlot()
        client.release = release

    def _start(self, path, source, blksize, askedBlksize, timeout, epoch):
        """
        Start a new session of C{path} on a free group, with the blksize and
        timeout the QoS policy grants (512 when the client did not ask for a
        blksize) and the flow-control policies of the configuration.

        @return: the listening L{MulticastSession}.
        @raise TooManySessions: no group left.
        """
        grantedBlksize, sessionTimeout = self.quality.decide(
            blksize, timeout or self.defaultTimeout)
        if not askedBlksize:
            grantedBlksize = 512
        group = self.pool.allocate()
        key = (path, grantedBlksize, epoch)
        name = "%s@%s:%d" % (path, group[0], group[1])
        session = MulticastSession(
            self, key, path, source, grantedBlksize, epoch, sessionTimeout, group,
            self._makeRate(name), self._makeUnexpected(), self.start.gate(name))
        self.sessions.append(session)
        try:
            session.listen()
        except Exception:
            self.sessions.remove(session)
            self.pool.release(group)
            raise
        return session

    def _sessionDone(self, session):
        if session in self.sessions:
            self.sessions.remove(session)
            self.pool.release(session.group)

    def stop(self):
        """
        Stop every session (service shutdown).
        """
        for s in list(self.sessions):
            s.close()


def _alreadyReleased():
    """
    The C{release} of a client that has left: nothing more to do.
    """


def _int(value, default, lo, hi):
    try:
        n = int(value)
    except (TypeError, ValueError):
        return default
    if n < lo:
        return default
    return min(n, hi)
