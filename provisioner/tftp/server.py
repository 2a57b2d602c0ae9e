# -*- test-case-name: tests.test_tftp_server -*-
"""
The TFTP dispatcher: the protocol on the listen port.

It decodes each datagram (L{provisioner.tftp.wire.decode}; nothing that
arrives can raise out of L{TFTPServer.datagramReceived}), and for a request:

  1. checks mode and limits (total and per-client transfers in flight);
  2. normalises the path (L{provisioner.files.normalisePath}) into a
     L{provisioner.files.FileRequest};
  3. asks its resolver for a data source (a Deferred): the tftp service's
     resolver filters in front of its resolver chain;
  4. offers the request to the L{TFTPServer.requestHandlers}
     (L{provisioner.interfaces.IRequestHandler}s), in order; the first
     whose C{handleRequest(server, request, source, packet)} returns true
     owns it (multicast TFTP takes requests with the C{multicast} option
     here);
  5. otherwise negotiates the options (L{TFTPServer.negotiate}, which
     consults L{TFTPServer.extensions}) and starts a unicast
     L{provisioner.tftp.session.ReadSession} on a fresh ephemeral port
     (L{TFTPServer.startReadSession}: the one place where a negotiated
     request becomes a session).

When a transfer ends, one line is logged at info (see docs/tftp.md, "The
per-transfer log line") and every callable in L{TFTPServer.statsCallbacks}
gets the L{provisioner.tftp.transfer.SessionStats}.

Hostile clients (docs/tftp.md, "Hostile clients"): a request may come from
an address that never asked (UDP is spoofed at no cost). Until its client
has answered once, a read session sends little (its first datagram, resent
within a byte budget) and gives up within seconds
(C{tftp.unanswered_timeout}, C{tftp.unanswered_retries}); when a limit is
reached, a new request takes the slot of the oldest session whose client
never answered (of the same address for the per-client limit) before it is
refused; a request repeated by a client that has not answered yet gets the
session's first datagram again; ERRORs for read requests are cut to
L{AMPLIFICATION} times the request's size. Request handlers count the
clients they keep serving against the limits with L{TFTPServer.holdSlot}
(multicast TFTP does, for each client that joins). The slots and their
eviction are L{provisioner.tftp.slots}.

The hook lists are filled through the tftp service's add and remove
methods (L{provisioner.tftp.service.TFTPService}); the server only reads
them.

Errors for requests (file not found, access violation, too many transfers)
are sent from the listen port. Datagrams that do not decode are logged at
debug and dropped; ERROR packets are never answered.
"""

import socket

from twisted.internet import defer
from twisted.internet.interfaces import IReactorFDSet
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from provisioner import errors
from provisioner.files import FileRequest, normalisePath
from provisioner.tftp import wire
from provisioner.tftp.negotiate import Limits, blksizeForMTU, negotiate
from provisioner.tftp.session import ReadSession
from provisioner.tftp.slots import SlotAccounting
from provisioner.tftp.transfer import AMPLIFICATION, requestSize
from provisioner.tftp.udp import (
    SessionMux, interfaceMTU, openPort, openSessionSocket, pathMTU)

__all__ = ["TFTPServer", "SEND_BUFFER"]

# Send buffer asked for each session socket (bytes).
SEND_BUFFER = 4 * 1024 * 1024


#: the refusal reasons of L{TFTPServer.refusals}, by error (most specific
#: first); any other error is C{error}
_REASONS = ((errors.FileNotFound, "not_found"), (errors.AccessViolation, "access_violation"),
            (errors.TooManySessions, "busy"), (errors.DiskFull, "disk_full"),
            (errors.FileExists, "file_exists"))


def _refusalReason(error):
    for kind, reason in _REASONS:
        if isinstance(error, kind):
            return reason
    return "error"


def _isIPv6(host):
    return ":" in host and not host.lower().startswith("::ffff:")


class TFTPServer(SlotAccounting, DatagramProtocol):
    """
    The dispatcher.

    @ivar resolver: an L{provisioner.interfaces.IFileResolver} (the
        service's L{provisioner.files.FilteredResolver}).
    @ivar config: the current C{tftp} configuration section (replaced on
        reload; read at each request).
    @ivar reactor: the reactor (C{IReactorUDP}, C{IReactorTime}).
    @ivar clients: the appliance's client directory, or L{None}.
    @ivar extensions: L{provisioner.tftp.negotiate.IOptionExtension}s,
        asked in order after the standard options.
    @ivar requestHandlers: L{provisioner.interfaces.IRequestHandler}s,
        asked in order before a unicast session starts.
    @ivar statsCallbacks: callables taking a
        L{provisioner.tftp.transfer.SessionStats} when a transfer ends.
    @ivar startCallbacks: callables taking a session's
        L{provisioner.tftp.transfer.SessionStats} when it starts.
    @ivar refusalCallbacks: callables taking C{(direction, reason, peer,
        path)} when a request is refused before a session.
    @ivar sessions: C{{(host, port): session}} in flight.
    @ivar refusals: C{{(direction, reason): count}}: the requests refused
        before a session started (C{read} or C{write}; C{not_found},
        C{access_violation}, C{busy}, C{illegal_operation}, C{disk_full},
        C{file_exists}, C{error}). Read by the metrics.
    @ivar unanswered: the read sessions whose client has not answered yet
        (L{provisioner.tftp.slots}).
    @ivar uploads: the L{provisioner.tftp.upload.UploadTarget} for WRQ, or
        L{None} (uploads refused).
    @ivar fastLane: whether a lone session may wait for its next ACK in a
        short blocking read (L{provisioner.tftp.fastlane}) when
        C{tftp.fast_lane} allows it. Set it false when the client runs on
        the same reactor (in-process tests, an embedding application): its
        ACK could not be sent while we wait.
    """

    log = Logger()
    noisy = False

    def __init__(self, resolver, config, reactor, clients=None, uploads=None):
        self.resolver = resolver
        self.config = config
        self.reactor = reactor
        self.clients = clients
        self.uploads = uploads
        self.extensions = []
        self.requestHandlers = []
        self.statsCallbacks = []
        self.startCallbacks = []
        self.refusalCallbacks = []
        self.fastLane = True
        self.sessions = {}
        self.refusals = {}
        # Sessions whose port is still open (in flight, or dallying).
        self.open = set()
        self._mux = None
        self._initSlots()
        self._family = socket.AF_INET
        self.bindAddress = config.get("address", "127.0.0.1")

    # -- the listen port

    def datagramReceived(self, data, addr):
        try:
            self._dispatch(data, addr)
        except Exception:
            self.log.failure("handling a datagram from {peer}", peer=addr)

    def _dispatch(self, data, addr):
        try:
            packet = wire.decode(data)
        except wire.WireError as e:
            self.log.debug("dropped undecodable datagram from {peer}: {error}",
                           peer=addr, error=str(e))
            return
        if isinstance(packet, wire.ReadRequest):
            self.handleRead(packet, addr, len(data))
        elif isinstance(packet, wire.WriteRequest):
            self.handleWrite(packet, addr, len(data))
        else:
            self.log.debug("dropped {packet!r} to the listen port from {peer}",
                           packet=packet, peer=addr)

    def sendError(self, addr, error, requestBytes=None):
        """
        Send an ERROR packet from the listen port.

        @param requestBytes: the size of the request it answers: the message
            is cut so that the ERROR is at most L{AMPLIFICATION} times that
            (the address may never have asked).
        """
        if self.transport is None:
            return
        if requestBytes:
            room = max(0, AMPLIFICATION * requestBytes - 5)
            if len(error.message) > room:
                error = wire.Error(error.code, error.message[:room])
        try:
            self.transport.write(error.to_wire(), addr)
        except Exception as e:
            self.log.debug("cannot send ERROR to {peer}: {error}", peer=addr, error=str(e))

    # -- requests

    def _countRefusal(self, write, reason, addr=None, path=None):
        key = ("write" if write else "read", reason)
        self.refusals[key] = self.refusals.get(key, 0) + 1
        if addr is not None:
            self._tell(self.refusalCallbacks, key[0], reason, addr, path)

    def _tell(self, callbacks, *args):
        for callback in list(callbacks):
            try:
                callback(*args)
            except Exception:
                self.log.failure("TFTP callback {callback!r}", callback=callback)

    def transfers(self):
        """
        The transfers in flight, read only: C{[{peer, path, direction, size,
        bytes, started, blksize, windowsize, retransmits, timeouts}]}
        (C{bytes}: acknowledged by the client, or stored).
        """
        out = []
        for session in list(self.sessions.values()):
            stats = getattr(session, "stats", None)
            if stats is None or getattr(session, "done", False):
                continue
            if stats.direction == "write":
                upload = getattr(session, "upload", None)
                done = getattr(upload, "size", 0) or 0
            else:
                done = getattr(session, "acked", 0) * stats.blksize
                if stats.size is not None:
                    done = min(done, stats.size)
            out.append({"peer": "%s:%d" % tuple(stats.peer[:2]), "path": stats.path,
                        "direction": stats.direction, "size": stats.size, "bytes": done,
                        "started": stats.started, "blksize": stats.blksize,
                        "windowsize": stats.windowsize, "retransmits": stats.retransmits,
                        "timeouts": stats.timeouts})
        return out

    def _request(self, packet, addr, write=False, size=None):
        """
        The checks both requests share.

        @param size: the request datagram's size.
        @return: a L{FileRequest}, or L{None} when an ERROR was sent.
        """
        session = self.sessions.get(addr)
        if session is not None:
            # The client repeated its request: the session answers it (a
            # read session whose client has not answered yet sends its
            # first datagram again).
            repeated = getattr(session, "requestRepeated", None)
            if repeated is not None and not write:
                repeated(size or requestSize(packet.filename, packet.mode, packet.options))
            return None
        if addr in self._pending:
            return None
        if packet.mode not in ("octet", "netascii"):
            self.sendError(addr, wire.Error(wire.ERR_ILLEGAL_OP,
                                            "transfer mode %s not supported" % (packet.mode,)),
                           size)
            self._countRefusal(write, "illegal_operation", addr, packet.filename)
            self.log.info("refused {mode} request from {peer}", mode=packet.mode, peer=addr)
            return None
        try:
            path = normalisePath(packet.filename)
        except errors.BackendError as e:
            self.sendError(addr, wire.errorFor(e), size)
            self._countRefusal(write, _refusalReason(e), addr, packet.filename)
            self.log.info("refused {kind} of {raw!r} from {peer}: {reason}",
                          kind="write" if write else "read", raw=packet.filename,
                          peer=addr, reason=str(e))
            return None
        try:
            self._admit(addr)
        except errors.TooManySessions as e:
            self.sendError(addr, wire.errorFor(e), size)
            self._countRefusal(write, "busy", addr, path)
            self.log.warn("refused {path} to {peer}: {reason}", path=path, peer=addr,
                          reason=str(e))
            return None
        client = None
        if self.clients is not None:
            try:
                client = self.clients.byIP(addr[0])
            except Exception:
                client = None
        return FileRequest(path, addr, "tftp", options=packet.optionDict, client=client,
                           rawPath=packet.filename)

    def handleRead(self, packet, addr, size=None):
        """
        An RRQ: resolve, then hand to a request handler or a session.

        @param size: the size of the datagram (by default, of the packet
            encoded again).
        """
        if size is None:
            size = requestSize(packet.filename, packet.mode, packet.options)
        request = self._request(packet, addr, size=size)
        if request is None:
            return
        d = defer.maybeDeferred(self.resolver.resolve, request)
        d.addCallbacks(self._resolved, self._refused, (request, packet, addr, size), None,
                       (request, addr, "read", size))
        d.addErrback(self._crashed, request, addr, size)

    def _resolved(self, source, request, packet, addr, size=None):
        if source is None:
            raise errors.FileNotFound("file not found")
        try:
            for handler in list(self.requestHandlers):
                if handler.handleRequest(self, request, source, packet):
                    self._release(addr)
                    return
            negotiated = self.negotiate(request, source, packet.mode)
            self.startReadSession(request, source, negotiated, packet.mode, requestBytes=size)
        except BaseException:
            try:
                source.close()
            except Exception:
                pass
            raise

    def _refused(self, failure, request, addr, kind, size=None):
        self._release(addr)
        exc = failure.value
        if not isinstance(exc, errors.BackendError):
            return failure
        self.sendError(addr, wire.errorFor(exc), size)
        self._countRefusal(kind == "write", _refusalReason(exc), addr, request.path)
        if isinstance(exc, errors.FileNotFound):
            self.log.info("{kind} {path} from {peer}: not found", kind=kind, path=request.path,
                          peer=addr)
        else:
            self.log.warn("refused {kind} of {path} from {peer}: {reason}", kind=kind,
                          path=request.path, peer=addr, reason=str(exc))
        return None

    def _crashed(self, failure, request, addr, size=None):
        self._release(addr)
        self._countRefusal(False, "error", addr, request.path)
        self.log.failure("request {path} from {peer}", failure, path=request.path, peer=addr)
        self.sendError(addr, wire.Error(wire.ERR_NOT_DEFINED, "server error"), size)

    # -- negotiation and sessions

    def limitsFor(self, peer):
        """
        The L{Limits} for a client: configuration and MTU (C{tftp.mtu}; null
        reads the bound interface's MTU, else the route's towards the peer).
        """
        config = self.config
        mtu = config.get("mtu")
        ipv6 = _isIPv6(peer[0])
        if mtu is None:
            ifname = config.get("interface")
            if ifname:
                mtu = interfaceMTU(ifname)
            else:
                mtu = pathMTU(peer[0], socket.AF_INET6 if ":" in peer[0] else socket.AF_INET)
        return Limits.fromConfig(config, blksizeForMTU(mtu, ipv6))

    def negotiate(self, request, source, mode="octet", write=False):
        """
        Negotiate the request's options.

        @return: a L{provisioner.tftp.negotiate.Negotiated}.
        """
        limits = self.limitsFor(request.peer)
        return negotiate(request.options, limits, source=source, mode=mode, write=write,
                         request=request, extensions=self.extensions)

    def startReadSession(self, request, source, negotiated, mode="octet", requestBytes=None):
        """
        Start a unicast read session for a negotiated request: the one place
        where a request becomes a session.

        @param requestBytes: the size of the request datagram (what bounds
            the bytes sent before the client answers); by default, the
            request encoded again.
        @return: the L{ReadSession}.
        """
        addr = request.peer
        config = self.config
        if requestBytes is None:
            requestBytes = requestSize(request.rawPath, mode, request.options.items())
        session = ReadSession(source, negotiated, addr, self.reactor,
                              timeout=config["timeout"], retries=config["retries"],
                              onEnd=lambda stats: self._ended(addr, stats),
                              path=request.path, netascii=(mode == "netascii"),
                              fastLane=self._fastLane if self._fastLaneAllowed() else None,
                              maxDuration=config.get("max_transfer_time") or None,
                              timeoutMin=config.get("timeout_min"),
                              gso=config.get("gso", True),
                              unansweredTimeout=config.get("unanswered_timeout"),
                              unansweredRetries=config.get("unanswered_retries"),
                              requestBytes=requestBytes)
        self._pending.discard(addr)
        self.sessions[addr] = session
        self.open.add(session)
        session.onClose = self.open.discard
        self._trackUnanswered(addr, session)
        try:
            self.listenSession(session, addr)
        except Exception:
            self.sessions.pop(addr, None)
            self._forgetUnanswered(addr)
            self._pending.add(addr)
            raise
        self._tell(self.startCallbacks, session.stats)
        return session

    def _fastLaneAllowed(self):
        """
        Whether new sessions may take the fast lane at all (C{tftp.fast_lane}
        and L{fastLane}).
        """
        return self.fastLane and self.config.get("fast_lane", True)

    def _fastLane(self):
        """
        Sessions may wait for their ACKs outside the reactor only while they
        are the only transfer in flight.
        """
        return len(self.sessions) + len(self._pending) <= 1

    def listenSession(self, protocol, peer, maxPacketSize=8192):
        """
        Bind a fresh ephemeral UDP port for a session (same address family
        and local address as the listen port, same interface) and start
        C{protocol} on it. Session sockets are read through one
        L{SessionMux} (one reactor reader for all of them) when the reactor
        takes file descriptors (C{IReactorFDSet}); any other reactor gives
        a port of its own (L{openPort}).

        @return: the port.
        """
        if not IReactorFDSet.providedBy(self.reactor):
            return openPort(self.reactor, protocol, self.bindAddress, 0,
                            interface=self.config.get("interface"),
                            maxPacketSize=maxPacketSize, sendBuffer=SEND_BUFFER)
        if self._mux is None:
            self._mux = SessionMux(self.reactor)
        sock = openSessionSocket(self.bindAddress, self.config.get("interface"), SEND_BUFFER)
        try:
            return self._mux.add(sock, protocol, maxPacketSize)
        except BaseException:
            sock.close()
            raise

    def _ended(self, addr, stats):
        self._release(addr)
        self.logStats(stats)
        for callback in list(self.statsCallbacks):
            try:
                callback(stats)
            except Exception:
                self.log.failure("stats callback {callback!r}", callback=callback)

    def logStats(self, stats):
        """
        The one line per transfer, at info.
        """
        duration = stats.duration
        rate = stats.bytes / duration / 1e6 if duration > 0 else 0.0
        self.log.info(
            "{direction} {path} {host}:{port} {outcome}: {bytes} bytes in {duration:.3f}s "
            "({rate:.1f} MB/s) blksize={blksize} windowsize={windowsize} blocks={blocks} "
            "retransmits={retransmits} timeouts={timeouts}{detail}",
            direction=stats.direction, path=stats.path, host=stats.peer[0],
            port=stats.peer[1], outcome=stats.outcome, bytes=stats.bytes,
            duration=duration, rate=rate, blksize=stats.blksize,
            windowsize=stats.windowsize, blocks=stats.blocks,
            retransmits=stats.retransmits, timeouts=stats.timeouts,
            detail=(" (%s)" % (stats.detail,)) if stats.detail else "", stats=stats.asDict())

    # -- uploads

    def handleWrite(self, packet, addr, size=None):
        """
        A WRQ: refused unless uploads are enabled.
        """
        if self.uploads is None:
            self.sendError(addr, wire.Error(wire.ERR_ACCESS_VIOLATION, "uploads are disabled"),
                           size)
            self._countRefusal(True, "access_violation", addr, packet.filename)
            self.log.info("refused upload of {raw!r} from {peer}: uploads are disabled",
                          raw=packet.filename, peer=addr)
            return
        request = self._request(packet, addr, write=True, size=size)
        if request is None:
            return
        from provisioner.tftp.write import WriteSession
        try:
            target = self.uploads.open(request.path, addr)
        except errors.BackendError as e:
            # The client's doing (a name, a limit, the quota): one info line.
            self._release(addr)
            self.sendError(addr, wire.errorFor(e), size)
            self._countRefusal(True, _refusalReason(e), addr, request.path)
            path = request.path
            self.log.info("refused upload of {path} from {peer}: {reason}",
                          path=path if len(path) <= 200 else path[:200] + "...",
                          peer=addr, reason=str(e))
            return
        except Exception:
            self._release(addr)
            self.log.failure("upload of {path} from {peer}", path=request.path, peer=addr)
            self.sendError(addr, wire.Error(wire.ERR_NOT_DEFINED, "server error"), size)
            self._countRefusal(True, "error")
            return
        try:
            negotiated = self.negotiate(request, None, packet.mode, write=True)
        except Exception:
            self._release(addr)
            target.abort()
            self.log.failure("upload of {path} from {peer}", path=request.path, peer=addr)
            self.sendError(addr, wire.Error(wire.ERR_NOT_DEFINED, "server error"), size)
            self._countRefusal(True, "error")
            return
        config = self.config
        session = WriteSession(target, negotiated, addr, self.reactor,
                               timeout=config["timeout"], retries=config["retries"],
                               onEnd=lambda stats: self._ended(addr, stats),
                               path=request.path, netascii=(packet.mode == "netascii"),
                               maxBytes=self.uploads.maxBytes,
                               maxDuration=config.get("max_transfer_time") or None,
                               unansweredTimeout=config.get("unanswered_timeout"),
                               unansweredRetries=config.get("unanswered_retries"),
                               requestBytes=size)
        self._pending.discard(addr)
        self.sessions[addr] = session
        self.open.add(session)
        session.onClose = self.open.discard
        try:
            self.listenSession(session, addr, maxPacketSize=65536 + 64)
        except Exception:
            self._release(addr)
            target.abort()
            raise
        self._tell(self.startCallbacks, session.stats)

    # -- shutdown

    def cancelAll(self):
        """
        Stop every session (service shutdown).
        """
        for session in list(self.sessions.values()) + list(self.open):
            try:
                session.cancel()
            except Exception:
                self.log.failure("cancelling {session!r}", session=session)
