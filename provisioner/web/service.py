# -*- test-case-name: tests.test_web -*-
"""
The C{http} service: images, rendered menus and a read-only JSON API over
HTTP (twisted.web), so iPXE and UEFI HTTP boot can fetch kernels and images
over TCP instead of TFTP.

A path is served from, in order: the virtual files (menus; C{boot.ipxe}
also takes C{?mac=...&arch=...}), the image catalogue
(C{<images.prefix>/NAME}, only complete, hashed files), then C{http.root}
if set, then, when C{http.root} is the TFTP root, the TFTP service's boot
programs (C{tftp.boot_programs}). C{/metrics} serves the Prometheus
metrics (C{http.metrics}, L{provisioner.metrics}), C{/healthz} the health
check (L{provisioner.web.health}) and C{/ui/} the dashboard
(L{provisioner.web.dashboard}, with the API; C{/} is its page), and with it
the operators' C{/login}, C{/logout} and C{/actions/...}
(L{provisioner.web.actions}, L{provisioner.web.auth}). With
C{http.tls_certificate} the same site also listens over HTTPS on
C{http.tls_port}, and logins and actions are taken there only. The service
registers itself as C{appliance.http}; its C{url} is the base URL it
listens at.
"""

from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.web import server

from provisioner.files import DirectoryResolver
from provisioner.startup import bindError
from provisioner.metrics import ApplianceMetrics
from provisioner.web.actions import OperatorResource
from provisioner.web.api import APIResource
from provisioner.web.auth import Gate
from provisioner.web.dashboard import DashboardResource
from provisioner.web.health import HealthResource
from provisioner.web.files import FileResource
from provisioner.web.root import RootResource

__all__ = ["HTTPService", "makeService"]


class _Site(server.Site):
    """
    A site whose access log goes through twisted.logger (debug, or info with
    C{http.access_log}) instead of a log file.
    """

    noisy = False
    displayTracebacks = False

    def __init__(self, resource):
        server.Site.__init__(self, resource)
        self.requestCallbacks = []

    def log(self, request):
        # FileResource logs each request itself, with the resolved path; the
        # request callbacks count it
        for callback in list(self.requestCallbacks):
            try:
                callback(request)
            except Exception:
                HTTPService.log.failure("HTTP request callback {callback!r}",
                                        callback=callback)


class HTTPService(service.Service):
    """
    @ivar port: the listening port, once started.
    @ivar url: C{http://address:port} once listening (L{None} before).
    @ivar metrics: the L{ApplianceMetrics} served at C{/metrics}, or L{None}
        (C{http.metrics} off).
    @ivar gate: the operators' L{Gate} (sessions, who may act).
    @ivar tlsPort: the HTTPS listening port, once started with
        C{http.tls_certificate}, else L{None}.
    """

    log = Logger()

    def __init__(self, appliance):
        self.appliance = appliance
        self.reactor = appliance.reactor
        self.config = appliance.config["http"]
        self.port = None
        self.tlsPort = None
        self.url = None
        self._directory = None
        self._setDirectory(self.config["root"])
        self.files = FileResource(appliance, self.resolvers, chunk=self.config["chunk_size"],
                                  accessLog=self.config["access_log"])
        self.api = APIResource(appliance, self.config["api_vars"])
        self.dashboard = DashboardResource()
        self.gate = Gate(lambda: appliance.config, appliance.reactor)
        self.operators = OperatorResource(appliance, self.gate)
        self.root = RootResource(self.files, self.api if self.config["api"] else None,
                                 health=HealthResource(appliance, lambda: self.parent),
                                 dashboard=self.dashboard if self.config["api"] else None,
                                 operators=self.operators if self.config["api"] else None)
        self.site = _Site(self.root)
        appliance.http = self
        self.metrics = None
        self._setMetrics(self.config["metrics"])

    def _setMetrics(self, enabled):
        """
        Serve the metrics at C{/metrics} or not (made once; kept while
        switched off, so counters do not restart when switched on again).
        """
        if enabled and self.metrics is None:
            self.metrics = ApplianceMetrics(self.appliance)
        self.root.metrics = self.metrics.resource if enabled else None
        if self.metrics is not None:
            if enabled and self.running:
                self.metrics.hook()
            elif not enabled:
                self.metrics.unhook()

    def _setDirectory(self, root):
        self._directory = DirectoryResolver(root) if root else None

    def resolvers(self):
        """
        The chain asked for each request (built per request: the catalogue
        may be replaced on reload).
        """
        chain = [self.appliance.virtualFiles]
        catalog = self.appliance.catalog
        if catalog is not None:
            chain.append(catalog.resolver)
        if self._directory is not None:
            chain.append(self._directory)
            # the TFTP service's boot programs (tftp.boot_programs), when
            # http.root is the TFTP root: served after its own files
            tftp = getattr(self.appliance, "tftp", None)
            programs = getattr(tftp, "bootPrograms", None)
            if programs is not None and tftp.directory.root == self._directory.root:
                chain.append(programs)
        return chain

    def addFetchCallback(self, callback):
        """
        Add a callable given an L{provisioner.web.files.HTTPFetch} each
        time a file's body (menu, image, file of C{http.root}) has been
        served whole.

        @return: a callable that removes it again.
        """
        callbacks = self.files.fetchCallbacks
        callbacks.append(callback)

        def remove():
            if callback in callbacks:
                callbacks.remove(callback)
        return remove

    def addStartCallback(self, callback):
        """
        Add a callable given an L{provisioner.web.files.HTTPTransfer} each
        time a file's body starts.

        @return: a callable that removes it again.
        """
        callbacks = self.files.startCallbacks
        callbacks.append(callback)

        def remove():
            if callback in callbacks:
                callbacks.remove(callback)
        return remove

    def addRequestCallback(self, callback):
        """
        Add a callable given each request the site has answered (a finished
        C{twisted.web} request: C{method}, C{code}, C{sentLength}).

        @return: a callable that removes it again.
        """
        callbacks = self.site.requestCallbacks
        callbacks.append(callback)

        def remove():
            if callback in callbacks:
                callbacks.remove(callback)
        return remove

    def _listen(self):
        address = self.config["address"]
        try:
            port = self.reactor.listenTCP(self.config["port"], self.site, interface=address)
        except CannotListenError as e:
            raise bindError(e, "http", address, self.config["port"])
        bound = port.getHost()
        host = "[%s]" % (address,) if ":" in address else address
        if address in ("0.0.0.0", "::"):
            self.url = None  # templates need menus.http_url then
        else:
            self.url = "http://%s:%d" % (host, bound.port)
        self.log.info("HTTP listening on {address} port {port}", address=address,
                      port=bound.port)
        return port

    def _listenTLS(self):
        """
        The HTTPS listener of C{http.tls_certificate}, or L{None}.
        """
        certificate = self.config.get("tls_certificate")
        if not certificate:
            return None
        from twisted.internet import ssl
        address = self.config["address"]
        try:
            options = ssl.DefaultOpenSSLContextFactory(
                self.config.get("tls_key") or certificate, certificate)
        except Exception as e:
            from provisioner.startup import StartError
            raise StartError("http.tls_certificate", certificate,
                             "cannot load the certificate and key: %s" % (e,))
        try:
            port = self.reactor.listenSSL(self.config["tls_port"], self.site, options,
                                          interface=address)
        except CannotListenError as e:
            raise bindError(e, "http", address, self.config["tls_port"])
        self.log.info("HTTPS listening on {address} port {port}", address=address,
                      port=port.getHost().port)
        return port

    def privilegedStartService(self):
        if self.port is None:
            self.port = self._listen()
        if self.tlsPort is None:
            self.tlsPort = self._listenTLS()
        service.Service.privilegedStartService(self)

    def startService(self):
        if self.port is None:
            self.port = self._listen()
        if self.tlsPort is None:
            self.tlsPort = self._listenTLS()
        service.Service.startService(self)
        if self.root.metrics is not None:
            self.metrics.hook()

    def stopService(self):
        service.Service.stopService(self)
        if self.metrics is not None:
            self.metrics.unhook()
        port, self.port = self.port, None
        tls, self.tlsPort = self.tlsPort, None
        stopping = [defer.maybeDeferred(p.stopListening) for p in (port, tls) if p is not None]
        return defer.gatherResults(stopping).addCallback(lambda _: None)

    def reconfigure(self, config):
        """
        SIGHUP: a new address or port is bound again (transfers in flight go
        on over their connections); the rest applies to new requests.
        """
        new = config["http"]
        old, self.config = self.config, new
        self._setDirectory(new["root"])
        self.files.chunk = new["chunk_size"]
        self.files.accessLog = new["access_log"]
        self.root.api = self.api if new["api"] else None
        self.root.dashboard = self.dashboard if new["api"] else None
        self.root.operators = self.operators if new["api"] else None
        self.gate.reconfigure()
        if [old.get(k) for k in ("tls_certificate", "tls_key", "tls_port")] != \
                [new.get(k) for k in ("tls_certificate", "tls_key", "tls_port")]:
            self.log.warn("http.tls_certificate, tls_key and tls_port take effect on restart")
        self.api.apiVars = frozenset(new["api_vars"])
        self._setMetrics(new["metrics"])
        if self.root.metrics is not None:
            # a service a reload builds (tftp switched on) is hooked after it
            self.reactor.callLater(0, self.metrics.hook)
        if (old["address"], old["port"]) != (new["address"], new["port"]) and self.running:
            oldPort, self.port = self.port, None
            d = defer.maybeDeferred(oldPort.stopListening) if oldPort else defer.succeed(None)

            def relisten(_):
                try:
                    self.port = self._listen()
                except Exception as e:
                    self.log.error("HTTP cannot listen on {address} port {port}: {error}",
                                   address=new["address"], port=new["port"], error=str(e))
            return d.addCallback(relisten)


def makeService(appliance):
    """
    Build the C{http} service.
    """
    return HTTPService(appliance)
