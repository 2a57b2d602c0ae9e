# -*- test-case-name: tests.test_imagecast_service,tests.test_imagecast_limits -*-
"""
The C{imagecast} service: the control channel (AMP over TCP, optionally
TLS) in front of a L{provisioner.imagecast.controller.Controller}.

The responders live in L{ServerLocator}, one per connection, and only
translate between AMP and the controller. Operator commands
(L{commands.StartSession}, L{commands.Status}) are refused outside
C{imagecast.admin_networks}; a L{commands.Register} is refused unless the
receiver answered the connection's L{commands.Challenge} with its secret
(or its TLS client certificate names it), as C{imagecast.authentication}
says (L{provisioner.imagecast.auth}).

L{ControlProtocol} bounds what a peer can make it hold: a box of more than
C{imagecast.max_box_bytes} (or keys and values that never end a box) and
more than C{imagecast.max_write_buffer} bytes the peer has not read drop
the connection, with one log line naming the peer. Nothing a peer sends
logs a traceback: malformed boxes and arguments are one line at info or
warn.
"""

import ipaddress

from twisted.application import service
from twisted.internet import defer, endpoints, protocol
from twisted.logger import Logger, LogLevel
from twisted.protocols import amp
from twisted.python.failure import Failure

from provisioner.imagecast import commands
from provisioner.imagecast.auth import Authenticator
from provisioner.imagecast.autosession import ImagingSessions
from provisioner.imagecast.controller import Controller
from provisioner.net.sockopt import quickRecovery
from provisioner.startup import bindError

__all__ = ["ServerLocator", "ControlProtocol", "ControlFactory", "ControlServer",
           "ImagecastService", "makeService", "serverTLSOptions"]


class ServerLocator(amp.CommandLocator):
    """
    The responders of one control connection.

    @ivar protocol: the L{ControlProtocol} this locator answers for.
    @ivar authenticator: the L{Authenticator} of L{commands.Register}.
    """

    log = Logger()

    def __init__(self, controller, adminNetworks, authenticator=None):
        self.controller = controller
        self.adminNetworks = adminNetworks
        self.authenticator = authenticator or Authenticator(controller.config)
        self.protocol = None
        self._refusalLogged = False

    def _peerHost(self):
        try:
            return self.protocol.transport.getPeer().host
        except Exception:
            return None

    def locateResponder(self, name):
        """
        The responder of C{name}, guarded: arguments that do not parse are
        answered with C{BAD_REQUEST} and logged in one line (AMP would log a
        traceback at critical level and drop the connection), and an error
        no responder declares is logged at error level, not critical.
        """
        responder = amp.CommandLocator.locateResponder(self, name)
        if responder is None:
            return None

        def guarded(box):
            try:
                # parses the arguments, then calls the responder in a
                # Deferred: what raises here is the peer's box
                d = responder(box)
            except Exception as e:
                description = _short(e)
                self.log.info("imagecast: malformed {command} from {peer}: {error}",
                              command=_short(name), peer=self._peer(), error=description)
                raise amp.RemoteAmpError(b"BAD_REQUEST",
                                         "malformed arguments: %s" % (description,))
            return d.addErrback(self._unexpected, name)
        return guarded

    def _unexpected(self, f, name):
        if f.check(amp.RemoteAmpError):
            return f
        self.log.failure("imagecast: {command} from {peer} failed", f,
                         level=LogLevel.error, command=_short(name), peer=self._peer())
        return Failure(amp.RemoteAmpError(amp.UNKNOWN_ERROR_CODE, "Unknown Error", fatal=True))

    def _peer(self):
        return _peerName(self.protocol.transport if self.protocol is not None else None)

    def _checkAdmin(self):
        host = self._peerHost()
        try:
            address = ipaddress.ip_address(host)
        except (TypeError, ValueError):
            raise commands.NotAllowed("operator commands need an IP peer")
        for net in self.adminNetworks:
            if address in ipaddress.ip_network(net, strict=False):
                return
        raise commands.NotAllowed("%s is not in imagecast.admin_networks" % (host,))

    def _certificateName(self):
        """
        The common name of the peer's TLS client certificate, or L{None}.
        """
        transport = self.protocol.transport if self.protocol is not None else None
        get = getattr(transport, "getPeerCertificate", None)
        if get is None:
            return None
        try:
            certificate = get()
            if certificate is None:
                return None
            return certificate.get_subject().commonName
        except Exception:
            return None

    @commands.Challenge.responder
    def challenge(self):
        return self.authenticator.challenge(self.protocol)

    @commands.Register.responder
    def register(self, clientId, address, image=None, proof=None, features=None):
        try:
            self.authenticator.check(self.protocol, clientId, proof,
                                     self._certificateName())
        except commands.NotAuthenticated as e:
            if not self._refusalLogged:
                # once per connection: a peer that keeps trying is not
                # logged again
                self._refusalLogged = True
                self.log.info("imagecast: registration of {client} from {peer} refused: "
                              "{error} (further refusals on this connection are not logged)",
                              client=_short(clientId), peer=self._peer(), error=e)
            raise
        self.controller.register(self.protocol, clientId, address or self._peerHost() or "",
                                 image, features=features or ())
        config = self.controller.config
        return {"server": "provisioner",
                "maxReportRanges": config.get("max_report_ranges"),
                "maxBoxBytes": config.get("max_box_bytes")}

    @commands.ReportMissing.responder
    def reportMissing(self, session, round, ranges):
        # ranges is still encoded: the controller decodes it once it knows
        # the connection is enrolled, the round current and the image size
        self.controller.reportMissing(self.protocol, session, round, ranges)
        return {}

    @commands.Complete.responder
    def complete(self, session, sha256):
        self.controller.complete(self.protocol, session, sha256)
        return {}

    @commands.Leave.responder
    def leave(self, session, reason):
        self.controller.leave(self.protocol, session, reason)
        return {}

    @commands.Progress.responder
    def progress(self, session, round, position):
        try:
            self.controller.progress(self.protocol, session, round, position)
        except commands.ImagecastError:
            pass
        return {}

    @commands.FetchRange.responder
    def fetchRange(self, session, offset, length):
        return {"data": self.controller.fetch(self.protocol, session, offset, length)}

    @commands.StartSession.responder
    def startSession(self, image, minReceivers=None, maxWait=None, rate=None, maxRounds=None):
        self._checkAdmin()
        d = self.controller.startSession(image, minReceivers, maxWait, rate, maxRounds)
        return d.addCallback(lambda s: {"session": s.id, "name": s.name, "size": s.size})

    @commands.Status.responder
    def status(self, session=None, detail=None, wait=None, rounds=None):
        self._checkAdmin()
        if wait is not None and session is not None:
            d = self.controller.statusAfter(session, rounds or 0, wait, bool(detail))
            return d.addCallback(lambda card: {"scorecard": card})
        return {"scorecard": self.controller.status(session, bool(detail))}


def _short(value, most=120):
    """
    C{value} (peer data: bytes, text or an exception) as a short printable
    string for one log line.
    """
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = repr(value) if not isinstance(value, str) else value
    text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= most else text[:most] + "..."


def _peerName(transport):
    """
    C{host:port} of the peer of C{transport}, or C{?}.
    """
    try:
        peer = transport.getPeer()
        return "%s:%s" % (peer.host, peer.port)
    except Exception:
        return "?"


def _pendingBytes(transport):
    """
    The bytes written to C{transport} that the kernel has not taken yet
    (the peer is not reading), or L{None} if the transport does not tell.

    A TCP transport (C{twisted.internet.abstract.FileDescriptor}) keeps them
    in C{dataBuffer} from C{offset} on plus the C{_tempDataLen} bytes of its
    list; TLS (C{TLSMemoryBIOProtocol}) adds what waits for the handshake
    and writes through to the TCP transport below it.
    """
    extra = 0
    for _ in range(4):
        if transport is None:
            return None
        if hasattr(transport, "dataBuffer") and hasattr(transport, "_tempDataLen"):
            return (extra + len(transport.dataBuffer) - getattr(transport, "offset", 0)
                    + transport._tempDataLen)
        waiting = getattr(transport, "_appSendBuffer", None)
        if waiting:
            extra += sum(len(b) for b in waiting)
        transport = getattr(transport, "transport", None)
    return None


class ControlProtocol(amp.AMP):
    """
    One control connection; tells the controller when it goes away.

    The limits are read from the controller's configuration at each use (a
    reload applies to open connections): C{max_box_bytes} for what the peer
    sends, C{max_write_buffer} for what it does not read.

    @ivar dropped: the reason the connection was dropped for breaking a
        limit, or L{None}.
    """

    log = Logger()

    def __init__(self, locator, controller):
        amp.AMP.__init__(self, locator=locator)
        locator.protocol = self
        self.locator = locator
        self.controller = controller
        self.dropped = None
        self._boxBytes = 0

    def _limit(self, key, default):
        return self.controller.config.get(key, default)

    def peer(self):
        """
        @return: C{host:port} of the peer, for log lines.
        """
        return _peerName(self.transport)

    def drop(self, why):
        """
        Drop the connection at once (nothing more is read, written or
        buffered), with one log line naming the peer.
        """
        if self.dropped is not None:
            return
        self.dropped = why
        self.log.warn("imagecast: dropping the control connection of {peer}: {why}",
                      peer=self.peer(), why=why)
        transport = self.transport
        if transport is None:
            return
        abort = getattr(transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            transport.loseConnection()

    # -- what the peer sends -------------------------------------------------

    def dataReceived(self, data):
        if self.dropped is not None:
            return
        return amp.AMP.dataReceived(self, data)

    def stringReceived(self, string):
        """
        Count each key and value of the box being received (with its
        2-byte length): a box that grows beyond C{max_box_bytes} before its
        terminator drops the connection.
        """
        if self.dropped is not None:
            return
        self._boxBytes += 2 + len(string)
        most = self._limit("max_box_bytes", 16 << 20)
        if self._boxBytes > most:
            self.drop("an AMP box beyond %d bytes (imagecast.max_box_bytes)" % (most,))
            return
        amp.AMP.stringReceived(self, string)
        if self._currentBox is None:
            # the box ended (its empty key)
            self._boxBytes = 0

    def lengthLimitExceeded(self, length):
        """
        A key longer than AMP's 255 bytes.
        """
        self.drop("an AMP key of %d bytes" % (length,))

    def ampBoxReceived(self, box):
        """
        A box that is neither a command nor an answer to one of ours (no
        C{_command}, an unknown C{_answer} tag, an error box without its
        code) drops the connection with one line, not a traceback.
        """
        try:
            amp.AMP.ampBoxReceived(self, box)
        except Exception as e:
            self.drop("a malformed AMP box (%s)" % (_short(e),))

    def unhandledError(self, failure):
        """
        A command that asks for no answer (C{Progress}) failed: the peer's
        mistake (a declared or protocol error) is one line at info; anything
        else is logged at error level and drops the connection.
        """
        if failure.check(amp.RemoteAmpError):
            # its text ends with Twisted's brief traceback: the first line
            # says what failed
            message = failure.getErrorMessage().split("\n", 1)[0]
            self.log.info("imagecast: a call from {peer} without answer failed: {error}",
                          peer=self.peer(), error=_short(message))
            return
        self.log.failure("imagecast: control connection of {peer}", failure,
                         level=LogLevel.error, peer=self.peer())
        self.drop("an unexpected error")

    # -- what the peer does not read -------------------------------------------

    def sendBox(self, box):
        """
        Send C{box}, unless the peer has left more than
        C{max_write_buffer} bytes unread: then drop it instead of
        buffering (after a drop nothing more is sent; calls waiting for an
        answer fail when the connection is lost).
        """
        if self.dropped is not None:
            return
        pending = _pendingBytes(self.transport)
        most = self._limit("max_write_buffer", 4 << 20)
        if pending is not None and pending > most:
            self.drop("it does not read: %d bytes waiting (imagecast.max_write_buffer)" % (
                pending,))
            return
        amp.AMP.sendBox(self, box)

    def makeConnection(self, transport):
        """
        Start the connection with one line at debug (L{amp.AMP} logs each
        connection at info, with the addresses' reprs: two lines per
        C{imagecast status}).
        """
        self._transportPeer = transport.getPeer()
        self._transportHost = transport.getHost()
        self.log.debug("imagecast: control connection from {peer}",
                       peer=_peerName(transport))
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionLost(self, reason):
        self.log.debug("imagecast: control connection from {peer} closed", peer=self.peer())
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None
        self.controller.connectionLost(self)
        self.locator.authenticator.forget(self)


class ControlFactory(protocol.Factory):
    """
    Builds a L{ControlProtocol} with its own L{ServerLocator}; every
    locator shares the factory's L{Authenticator}. Not noisy: its start and
    stop are not logged.
    """

    noisy = False

    def __init__(self, controller, adminNetworks, authenticator=None):
        self.controller = controller
        self.adminNetworks = adminNetworks
        self.authenticator = authenticator or Authenticator(controller.config)

    def buildProtocol(self, addr):
        p = ControlProtocol(ServerLocator(self.controller, self.adminNetworks,
                                          self.authenticator), self.controller)
        p.factory = self
        return p


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def serverTLSOptions(tls):
    """
    Return the TLS context factory for the C{imagecast.tls} section.
    """
    from twisted.internet import ssl
    cert = ssl.PrivateCertificate.loadPEM(_read(tls["certificate"]) + b"\n" + _read(tls["key"]))
    kw = {}
    if tls["client_ca"]:
        from OpenSSL import crypto
        pem = _read(tls["client_ca"])
        cas = []
        marker = b"-----END CERTIFICATE-----"
        for part in pem.split(marker):
            if b"-----BEGIN CERTIFICATE-----" in part:
                cas.append(crypto.load_certificate(crypto.FILETYPE_PEM, part + marker))
        kw = dict(verify=True, caCerts=cas,
                  requireCertificate=bool(tls["require_client_certificate"]))
    return ssl.CertificateOptions(privateKey=cert.privateKey.original,
                                  certificate=cert.original, **kw)


class ControlServer(service.Service):
    """
    Listens for control connections; binds in L{privilegedStartService}.

    @ivar port: the listening port, once bound.
    """

    log = Logger()

    def __init__(self, reactor, config, factory):
        self.reactor = reactor
        self.config = config
        self.factory = factory
        self.port = None

    def _endpoint(self):
        cfg = self.config
        address = cfg["address"]
        if cfg["tls"]["enabled"]:
            if ":" in address:
                base = endpoints.TCP6ServerEndpoint(self.reactor, cfg["port"], interface=address)
            else:
                base = endpoints.TCP4ServerEndpoint(self.reactor, cfg["port"], interface=address)
            from twisted.protocols.tls import TLSMemoryBIOFactory
            options = serverTLSOptions(cfg["tls"])

            class _TLS:
                def __init__(self, inner):
                    self.inner = inner

                def listen(self, factory):
                    return self.inner.listen(TLSMemoryBIOFactory(options, False, factory))
            return _TLS(base)
        if ":" in address:
            return endpoints.TCP6ServerEndpoint(self.reactor, cfg["port"], interface=address)
        return endpoints.TCP4ServerEndpoint(self.reactor, cfg["port"], interface=address)

    def privilegedStartService(self):
        service.Service.privilegedStartService(self)
        d = self._endpoint().listen(self.factory)

        def bound(port):
            self.port = port
            # accepted connections inherit it (the options are copied to
            # each from the listening socket), from their first RTT sample
            quickRecovery(port, self.config.get("control_rto_min", 0))
            host = port.getHost()
            self.log.info("imagecast control channel on {host}:{port}{tls}", host=host.host,
                          port=host.port, tls=" (TLS)" if self.config["tls"]["enabled"] else "")
            return port
        self._listening = d.addCallback(bound)
        if d.called and isinstance(d.result, Failure):
            # the TCP endpoints bind at once: a failed bind is a start failure
            failure = d.result
            d.addErrback(lambda _: None)
            raise bindError(failure.value, "imagecast", self.config["address"],
                            self.config["port"])

    def stopService(self):
        service.Service.stopService(self)
        if self.port is not None:
            port, self.port = self.port, None
            return defer.maybeDeferred(port.stopListening)
        return defer.succeed(None)


class LocatedImagingSessions(ImagingSessions):
    """
    L{ImagingSessions} that also say where an image's session runs when
    several appliances share one database (the holder of its lock,
    L{provisioner.store.postgres_imagecast}); the orders point receivers
    there.
    """

    def where(self, image):
        """
        @return: a Deferred firing with C{(host, port)} of the appliance
            that sends C{image}'s session when that is another one, else
            L{None} (this one, nobody, one appliance, or not told).
        """
        locks = self.controller.sessionLocks
        if locks is None:
            return defer.succeed(None)

        def parse(holder):
            host, _, port = (holder or "").rpartition(":")
            if not host or not port.isdigit():
                return None
            return host.strip("[]"), int(port)
        return locks.holder(image).addCallback(parse)


class ImagecastService(service.MultiService):
    """
    The C{imagecast} subsystem.

    @ivar controller: the L{Controller}.
    @ivar server: the L{ControlServer}.
    @ivar imaging: the L{ImagingSessions} (an
        L{provisioner.interfaces.IImaging}), published as
        C{appliance.imaging} while the service runs: the host lifecycle's
        orders use it.
    """

    log = Logger()

    def __init__(self, appliance):
        service.MultiService.__init__(self)
        self.appliance = appliance
        config = appliance.config["imagecast"]
        self.controller = Controller(appliance.reactor, config,
                                     catalog=lambda: getattr(appliance, "catalog", None),
                                     events=appliance.events)
        self.server = ControlServer(appliance.reactor, config,
                                    ControlFactory(self.controller, config["admin_networks"]))
        self.server.setServiceParent(self)
        self.imaging = LocatedImagingSessions(self.controller,
                                              self.server.factory.authenticator,
                                              port=lambda: self.server.port)
        appliance.imagecast = self
        appliance.imaging = self.imaging

    def startService(self):
        self.appliance.imaging = self.imaging
        result = service.MultiService.startService(self)
        self._lockSessions()
        return result

    def _lockSessions(self):
        """
        With the PostgreSQL store (several appliances): one appliance per
        image's session, through an advisory lock that also tells the
        others this appliance's control channel (C{imagecast.address}, or
        nothing when it listens on every address).
        """
        store = self.appliance.config.get("store")
        if store is None or store["backend"] != "postgresql" or \
                self.controller.sessionLocks is not None:
            return
        from provisioner.store.postgres_imagecast import SessionLocks
        port = self.server.port
        host = port.getHost() if port is not None else None
        address = ""
        if host is not None and host.host not in ("", "0.0.0.0", "::"):
            address = ("[%s]:%d" if ":" in host.host else "%s:%d") % (host.host, host.port)
        self.controller.sessionLocks = SessionLocks(store["dsn"], self.appliance.reactor,
                                                    address, store["connect_timeout"])

    def reconfigure(self, config):
        """
        Take a reloaded configuration: new sessions use it; sessions in
        flight and the listening socket keep theirs.
        """
        section = config["imagecast"]
        old = self.controller.config
        if (section["address"], section["port"], section["tls"]) != (
                old["address"], old["port"], old["tls"]):
            self.log.warn("imagecast.address, port and tls take effect on restart")
        self.controller.config = section
        self.server.factory.adminNetworks = section["admin_networks"]
        self.server.factory.authenticator.reconfigure(section)

    def stopService(self):
        self.controller.stop()
        if getattr(self.appliance, "imaging", None) is self.imaging:
            self.appliance.imaging = None
        locks, self.controller.sessionLocks = self.controller.sessionLocks, None
        d = service.MultiService.stopService(self)
        if locks is not None:
            d = defer.gatherResults([defer.maybeDeferred(lambda: d), locks.close()])
        return d


def makeService(appliance):
    """
    Build the C{imagecast} service for C{appliance}.
    """
    return ImagecastService(appliance)
