# -*- test-case-name: tests.test_tftp_service -*-
"""
The C{tftp} service: the listen port, the resolver chain, the hooks other
services plug into, reloads.

L{makeService} builds a L{TFTPService} from the appliance. Its hooks, each
with an C{add} method that returns a callable removing it again and a
C{remove} method:

  - resolvers (L{TFTPService.addResolver}): the
    L{provisioner.files.ResolverChain} L{TFTPService.resolvers}, in order
    C{[appliance.virtualFiles, *inserted, DirectoryResolver(root)]}; an
    inserted resolver goes before the directory, or at an index among the
    inserted ones. The appliance's order is: virtual files (boot menus),
    the image catalogue (the images service inserts it at 0), the
    bootstrap-program injector (C{tftp.injector}), the boot programs
    (C{tftp.boot_programs}, L{provisioner.tftp.bootprograms}: a file of
    the root wins over them), the root directory, which is always last
    and final (a missing file is ERROR 1);
  - resolver filters (L{TFTPService.addResolverFilter}): an
    L{provisioner.interfaces.IResolverFilter} sees each request before the
    chain (smart repair serves a view of the file the chain finds);
  - option extensions (L{TFTPService.addExtension}): an
    L{provisioner.tftp.negotiate.IOptionExtension}, asked in order after
    the standard options (smart repair's first, then the adaptive window's
    from C{tftp.adaptive});
  - request handlers (L{TFTPService.addRequestHandler}): an
    L{provisioner.interfaces.IRequestHandler} offered each resolved read
    request before a unicast session starts (multicast TFTP);
  - stats callbacks (L{TFTPService.addStatsCallback}): callables given the
    L{provisioner.tftp.transfer.SessionStats} of each transfer.

The service registers itself as C{appliance.tftp} so that other services
reach these hooks without importing this module. Multicast TFTP
(C{tftp.multicast}) is its child service C{"multicast"}
(L{provisioner.tftp.multicast.service}), which plugs in through these
hooks when it starts.

The listen port is bound in L{TFTPService.privilegedStartService} (port 69
before privileges are dropped). On SIGHUP L{TFTPService.reconfigure} takes
the new C{tftp} section: limits, timeouts and the root apply to new
transfers, transfers in flight go on with what they negotiated, and the
listen port is bound again if address, port or interface changed.
"""

import os

from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from provisioner.files import DirectoryResolver, FilteredResolver, ResolverChain
from provisioner.startup import bindError, directoryError
from provisioner.tftp import adaptive, bootprograms, inject
from provisioner.tftp.multicast import service as multicast
from provisioner.tftp.server import TFTPServer
from provisioner.tftp.udp import openPort
from provisioner.tftp.upload import UploadTarget

__all__ = ["TFTPService", "makeService"]


def _uploads(config, current=None):
    """
    The upload target for a C{tftp} section, or L{None} (uploads off); the
    C{current} one, with the new limits, when the directory is the same
    (uploads in flight stay counted against the quota and per client).
    """
    write = config["write"]
    if not write["enabled"]:
        return None
    limits = (write["max_bytes"], write["max_total_bytes"], write["max_per_client"])
    if current is not None and current.directory == os.path.realpath(write["directory"]):
        current.configure(*limits)
        return current
    try:
        return UploadTarget(write["directory"], *limits)
    except OSError as e:
        raise directoryError(e, "tftp.write.directory", write["directory"])


class TFTPService(service.MultiService):
    """
    The TFTP server as a named service.

    @ivar appliance: the L{provisioner.appliance.Appliance}.
    @ivar config: the current C{tftp} section.
    @ivar directory: the L{DirectoryResolver} for C{tftp.root}.
    @ivar resolvers: the L{ResolverChain}.
    @ivar filtered: the L{FilteredResolver} the server asks: the resolver
        filters in front of L{resolvers}.
    @ivar server: the L{TFTPServer} (the listen port's protocol).
    @ivar port: the listen port, once started.
    @ivar injector: the bootstrap-program injector C{tftp.injector}
        configures (in L{resolvers}), or L{None}.
    @ivar adaptiveExtensions: the option extensions C{tftp.adaptive}
        enables (registered after any others).
    """

    log = Logger()

    def __init__(self, appliance):
        service.MultiService.__init__(self)
        self.appliance = appliance
        self.reactor = appliance.reactor
        self.config = appliance.config["tftp"]
        self.directory = self._directory(self.config)
        self.resolvers = ResolverChain([appliance.virtualFiles, self.directory])
        self.filtered = FilteredResolver(self.resolvers)
        self.server = TFTPServer(self.filtered, self.config, self.reactor,
                                 clients=appliance.clients, uploads=None)
        self.port = None
        self.injector = None
        self.bootPrograms = None
        self.adaptiveExtensions = []
        appliance.tftp = self
        self.configureAdaptive(self.config)
        self.configureInjector(self.config)
        self.configureBootPrograms(self.config)
        multicast.makeService(self).setServiceParent(self)

    @staticmethod
    def _directory(config):
        root = config["root"]
        try:
            os.makedirs(root, exist_ok=True)
        except OSError as e:
            raise directoryError(e, "tftp.root", root)
        return DirectoryResolver(root, notFoundIsFinal=True)

    # -- hooks

    @property
    def extensions(self):
        """
        The option extensions, in the order they are asked (a tuple: use
        L{addExtension} and L{removeExtension}).
        """
        return tuple(self.server.extensions)

    @property
    def requestHandlers(self):
        """
        The request handlers, in order (a tuple: use L{addRequestHandler}).
        """
        return tuple(self.server.requestHandlers)

    @property
    def statsCallbacks(self):
        """
        The stats callbacks (a tuple: use L{addStatsCallback}).
        """
        return tuple(self.server.statsCallbacks)

    @staticmethod
    def _add(hooks, hook, index=None):
        if index is None:
            hooks.append(hook)
        else:
            hooks.insert(index, hook)

        def remove():
            _discard(hooks, hook)
        return remove

    def addResolver(self, resolver, index=None):
        """
        Insert an L{provisioner.interfaces.IFileResolver} before the
        directory resolver (or at C{index} among the inserted ones: 0 is
        right after the virtual files).

        @return: a callable that removes it again.
        """
        chain = self.resolvers.resolvers
        last = chain.index(self.directory)
        position = last if index is None else min(1 + index, last)
        chain.insert(position, resolver)
        return lambda: self.removeResolver(resolver)

    def removeResolver(self, resolver):
        """
        Take an inserted resolver out of the chain (if it is there).
        """
        if resolver is not self.directory:
            _discard(self.resolvers.resolvers, resolver)

    def addResolverFilter(self, filter):
        """
        Put an L{provisioner.interfaces.IResolverFilter} in front of the
        resolver chain (behind the filters added before it).

        @return: a callable that removes it again.
        """
        return self._add(self.filtered.filters, filter)

    def removeResolverFilter(self, filter):
        _discard(self.filtered.filters, filter)

    def addExtension(self, extension, index=None):
        """
        Add an L{provisioner.tftp.negotiate.IOptionExtension}, asked after
        those added before it (or at C{index}: 0 is first).

        @return: a callable that removes it again.
        """
        return self._add(self.server.extensions, extension, index)

    def removeExtension(self, extension):
        _discard(self.server.extensions, extension)

    def addRequestHandler(self, handler):
        """
        Add an L{provisioner.interfaces.IRequestHandler}, offered requests
        after those added before it.

        @return: a callable that removes it again.
        """
        return self._add(self.server.requestHandlers, handler)

    def removeRequestHandler(self, handler):
        _discard(self.server.requestHandlers, handler)

    def addStatsCallback(self, callback):
        """
        Add a callable given the L{provisioner.tftp.transfer.SessionStats}
        of each transfer when it ends.

        @return: a callable that removes it again.
        """
        return self._add(self.server.statsCallbacks, callback)

    def removeStatsCallback(self, callback):
        _discard(self.server.statsCallbacks, callback)

    def addStartCallback(self, callback):
        """
        Add a callable given the L{provisioner.tftp.transfer.SessionStats}
        of each session when it starts (the events).

        @return: a callable that removes it again.
        """
        return self._add(self.server.startCallbacks, callback)

    def addRefusalCallback(self, callback):
        """
        Add a callable given C{(direction, reason, peer, path)} for each
        request refused before a session (C{path}: the name asked, text or
        the raw bytes when it could not be read).

        @return: a callable that removes it again.
        """
        return self._add(self.server.refusalCallbacks, callback)

    # -- the extensions the tftp section configures

    def configureAdaptive(self, config):
        """
        Register the option extensions the C{adaptive} part of a C{tftp}
        section enables, in place of those registered before.

        @return: the extensions.
        """
        for extension in self.adaptiveExtensions:
            self.removeExtension(extension)
        self.adaptiveExtensions = adaptive.extensionsFromConfig(config.get("adaptive", {}))
        for extension in self.adaptiveExtensions:
            self.addExtension(extension)
        return self.adaptiveExtensions

    def configureInjector(self, config):
        """
        Put the injector the C{injector} part of a C{tftp} section describes
        in the resolver chain (before the directory), in place of the one
        there before, which hands over its deliveries. A bad section on a
        reload is logged and the running injector kept.

        @return: the injector, or L{None} when it is disabled.
        @raise provisioner.config.ConfigError: the section is bad and no
            injector runs (the first configuration).
        """
        previous = self.injector
        injector = inject.reloadInjector(previous, config.get("injector", {}), self.appliance)
        if injector is previous:
            return injector
        if previous is not None:
            self.removeResolver(previous)
        self.injector = injector
        if injector is not None:
            self.addResolver(injector)
        return injector

    def configureBootPrograms(self, config):
        """
        Put the boot programs of C{boot_programs} (L{bootprograms}) last in
        the chain before the directory, after the injector, in place of the
        ones there before.

        @return: the resolver, or L{None} when it is off.
        """
        if self.bootPrograms is not None:
            self.removeResolver(self.bootPrograms)
        self.bootPrograms = bootprograms.fromConfig(config, shadow=lambda: self.directory)
        if self.bootPrograms is not None:
            self.addResolver(self.bootPrograms)
        return self.bootPrograms

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
        bootprograms.warnUnserved(self, self.appliance.config)

    def _listen(self, config):
        self.server.bindAddress = config["address"]
        try:
            port = openPort(self.reactor, self.server, config["address"], config["port"],
                            interface=config.get("interface"))
        except (OSError, CannotListenError) as e:
            raise bindError(e, "tftp", config["address"], config["port"],
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
        self.configureAdaptive(new)
        self.configureInjector(new)
        self.configureBootPrograms(new)
        for child in self:
            reconfigure = getattr(child, "reconfigure", None)
            if reconfigure is not None:
                reconfigure(config)
        self.server.uploads = _uploads(new, self.server.uploads) if self.running else None
        moved = any(new[k] != old[k] for k in ("address", "port", "interface"))
        if moved and self.port is not None:
            self._rebind(new, old)
        self.log.info("TFTP reconfigured: root {root}, blksize_max {blksize}, windowsize_max "
                      "{window}", root=self.directory.root, blksize=new["blksize_max"],
                      window=new["windowsize_max"])
        bootprograms.warnUnserved(self, config)

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


def _discard(hooks, hook):
    """
    Remove C{hook} from the list C{hooks} if it is there.
    """
    if hook in hooks:
        hooks.remove(hook)
