# -*- test-case-name: tests.test_tftp_service -*-
"""
The C{tftp} service: the listen port, the resolver chain, reloads.

L{makeService} builds a L{TFTPService} from the appliance. The pieces other
subsystems plug into:

  - L{TFTPService.resolvers}: the L{provisioner.files.ResolverChain}, in
    order C{[appliance.virtualFiles, *inserted, DirectoryResolver(root)]};
    L{TFTPService.addResolver} inserts before the directory (the bootstrap
    injector goes there); the directory resolver is always last and final
    (a missing file is ERROR 1).
  - L{TFTPService.server}: the L{provisioner.tftp.server.TFTPServer}, with
    its C{extensions} (option extensions: the adaptive window),
    C{requestHandlers} (the multicast registry) and C{statsCallbacks}.
  - The service registers itself as C{appliance.tftp} so other services
    can reach those lists without importing this module.

The listen port is bound in L{TFTPService.privilegedStartService} (port 69
before privileges are dropped). On SIGHUP L{TFTPService.reconfigure} takes
the new C{tftp} section: limits, timeouts and the root apply to new
transfers, transfers in flight go on with what they negotiated, and the
listen port is bound again if address, port or interface changed.
"""

import os

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from provisioner.files import DirectoryResolver, ResolverChain
from provisioner.tftp import adaptive, inject
from provisioner.tftp.server import TFTPServer
from provisioner.tftp.udp import openPort
from provisioner.tftp.write import UploadTarget

__all__ = ["TFTPService", "makeService"]


def _uploads(config):
    write = config["write"]
    if not write["enabled"]:
        return None
    return UploadTarget(write["directory"], write["max_bytes"])


class TFTPService(service.MultiService):
    """
    The TFTP server as a named service.

    @ivar appliance: the L{provisioner.appliance.Appliance}.
    @ivar config: the current C{tftp} section.
    @ivar directory: the L{DirectoryResolver} for C{tftp.root}.
    @ivar resolvers: the L{ResolverChain} the server asks.
    @ivar server: the L{TFTPServer} (the listen port's protocol).
    @ivar port: the listen port, once started.
    """

    log = Logger()

    def __init__(self, appliance):
        service.MultiService.__init__(self)
        self.appliance = appliance
        self.reactor = appliance.reactor
        self.config = appliance.config["tftp"]
        self.directory = self._directory(self.config)
        self.resolvers = ResolverChain([appliance.virtualFiles, self.directory])
        self.server = TFTPServer(self.resolvers, self.config, self.reactor,
                                 clients=appliance.clients, uploads=None)
        self.port = None
        appliance.tftp = self
        # The adaptive window (tftp.adaptive) and the injector (tftp.injector).
        adaptive.install(self)
        inject.install(self)
        # RFC 2090 multicast and range repair (tftp.multicast).
        from provisioner.tftp.multicast.session import install
        install(self)

    @staticmethod
    def _directory(config):
        root = config["root"]
        os.makedirs(root, exist_ok=True)
        return DirectoryResolver(root, notFoundIsFinal=True)

    # -- hooks

    @property
    def extensions(self):
        """
        The server's option extensions (a list to append to).
        """
        return self.server.extensions

    @property
    def requestHandlers(self):
        """
        The server's request handlers (a list to append to).
        """
        return self.server.requestHandlers

    @property
    def statsCallbacks(self):
        """
        Callables given each transfer's stats (a list to append to).
        """
        return self.server.statsCallbacks

    def addResolver(self, resolver, index=None):
        """
        Insert a resolver before the directory resolver (or at C{index}
        among the inserted ones: 0 is right after the virtual files).

        @return: a callable that removes it again.
        """
        chain = self.resolvers.resolvers
        last = chain.index(self.directory)
        position = last if index is None else min(1 + index, last)
        chain.insert(position, resolver)

        def remove():
            if resolver in chain:
                chain.remove(resolver)
        return remove

    # -- life cycle

    def privilegedStartService(self):
        if self.port is None:
            self.port = self._listen(self.config)
        service.MultiService.privilegedStartService(self)

    def startService(self):
        if self.port is None:
            self.port = self._listen(self.config)
        self.server.uploads = _uploads(self.config)
        service.MultiService.startService(self)

    def _listen(self, config):
        self.server.bindAddress = config["address"]
        port = openPort(self.reactor, self.server, config["address"], config["port"],
                        interface=config.get("interface"))
        host = port.getHost()
        self.log.info("TFTP listening on {address} port {port}{on}, serving {root}",
                      address=config["address"], port=host.port,
                      on=(" (interface %s)" % (config["interface"],))
                      if config.get("interface") else "",
                      root=self.directory.root)
        return port

    def stopService(self):
        service.MultiService.stopService(self)
        self.server.cancelAll()
        port, self.port = self.port, None
        if port is None:
            return defer.succeed(None)
        return defer.maybeDeferred(port.stopListening)

    @property
    def listeningPort(self):
        """
        The UDP port number actually bound (useful with C{tftp.port: 0}).
        """
        return self.port.getHost().port if self.port is not None else None

    # -- reload

    def reconfigure(self, config):
        """
        Apply a reloaded configuration: new transfers use the new limits and
        root; transfers in flight are not touched; the listen port is bound
        again when address, port or interface changed.
        """
        new = config["tftp"]
        old = self.config
        if new["root"] != old["root"] or \
                os.path.realpath(new["root"]) != self.directory.root:
            directory = self._directory(new)
            chain = self.resolvers.resolvers
            chain[chain.index(self.directory)] = directory
            self.directory = directory
        self.config = new
        self.server.config = new
        adaptive.install(self)
        inject.install(self)
        self.server.uploads = _uploads(new) if self.running else None
        moved = any(new[k] != old[k] for k in ("address", "port", "interface"))
        if moved and self.port is not None:
            self._rebind(new, old)
        self.log.info("TFTP reconfigured: root {root}, blksize_max {blksize}, windowsize_max "
                      "{window}", root=self.directory.root, blksize=new["blksize_max"],
                      window=new["windowsize_max"])

    def _rebind(self, new, old):
        """
        Close the listen port, then bind the new one (the protocol can only
        have one port at a time); on failure bind the old one again.

        @return: a Deferred that fires when the new port listens.
        """
        previous, self.port = self.port, None

        def listen(_):
            if not self.running:
                return
            try:
                self.port = self._listen(new)
            except Exception as e:
                self.log.error("cannot listen on {address} port {port} ({error}); keeping "
                               "{oldAddress} port {oldPort}", address=new["address"],
                               port=new["port"], error=str(e), oldAddress=old["address"],
                               oldPort=old["port"])
                self.port = self._listen(old)
                self.server.bindAddress = old["address"]

        d = defer.maybeDeferred(previous.stopListening)
        d.addCallback(listen)
        d.addErrback(lambda f: self.log.failure("rebinding the TFTP port", f))
        self._rebinding = d
        return d


def makeService(appliance):
    """
    Build the TFTP service for the appliance.
    """
    return TFTPService(appliance)
