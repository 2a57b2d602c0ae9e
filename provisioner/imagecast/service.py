# -*- test-case-name: tests.test_imagecast_service -*-
"""
The C{imagecast} service: the control channel (AMP over TCP, optionally
TLS) in front of a L{provisioner.imagecast.controller.Controller}.

The responders live in L{ServerLocator}, one per connection, and only
translate between AMP and the controller. Operator commands
(L{commands.StartSession}, L{commands.Status}) are refused outside
C{imagecast.admin_networks}.
"""

import ipaddress

from twisted.application import service
from twisted.internet import defer, endpoints, protocol
from twisted.logger import Logger
from twisted.protocols import amp

from provisioner.imagecast import commands
from provisioner.imagecast.controller import Controller
from provisioner.net.sockopt import quickRecovery

__all__ = ["ServerLocator", "ControlProtocol", "ControlFactory", "ControlServer",
           "ImagecastService", "makeService", "serverTLSOptions"]


class ServerLocator(amp.CommandLocator):
    """
    The responders of one control connection.

    @ivar protocol: the L{ControlProtocol} this locator answers for.
    """

    log = Logger()

    def __init__(self, controller, adminNetworks):
        self.controller = controller
        self.adminNetworks = adminNetworks
        self.protocol = None

    def _peerHost(self):
        try:
            return self.protocol.transport.getPeer().host
        except Exception:
            return None

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

    @commands.Register.responder
    def register(self, clientId, address, image=None):
        self.controller.register(self.protocol, clientId, address or self._peerHost() or "",
                                 image)
        return {"server": "provisioner"}

    @commands.ReportMissing.responder
    def reportMissing(self, session, round, ranges):
        self.controller.reportMissing(self.protocol, session, round,
                                      commands.checkRanges(ranges))
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


class ControlProtocol(amp.AMP):
    """
    One control connection; tells the controller when it goes away.
    """

    def __init__(self, locator, controller):
        amp.AMP.__init__(self, locator=locator)
        locator.protocol = self
        self.controller = controller

    def connectionLost(self, reason):
        amp.AMP.connectionLost(self, reason)
        self.controller.connectionLost(self)


class ControlFactory(protocol.Factory):
    """
    Builds a L{ControlProtocol} with its own L{ServerLocator}.
    """

    def __init__(self, controller, adminNetworks):
        self.controller = controller
        self.adminNetworks = adminNetworks

    def buildProtocol(self, addr):
        p = ControlProtocol(ServerLocator(self.controller, self.adminNetworks), self.controller)
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

    def stopService(self):
        service.Service.stopService(self)
        if self.port is not None:
            port, self.port = self.port, None
            return defer.maybeDeferred(port.stopListening)
        return defer.succeed(None)


class ImagecastService(service.MultiService):
    """
    The C{imagecast} subsystem.

    @ivar controller: the L{Controller}.
    @ivar server: the L{ControlServer}.
    """

    log = Logger()

    def __init__(self, appliance):
        service.MultiService.__init__(self)
        self.appliance = appliance
        config = appliance.config["imagecast"]
        self.controller = Controller(appliance.reactor, config,
                                     catalog=lambda: getattr(appliance, "catalog", None))
        self.server = ControlServer(appliance.reactor, config,
                                    ControlFactory(self.controller, config["admin_networks"]))
        self.server.setServiceParent(self)

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

    def stopService(self):
        self.controller.stop()
        return service.MultiService.stopService(self)


def makeService(appliance):
    """
    Build the C{imagecast} service for C{appliance}.
    """
    return ImagecastService(appliance)
