# -*- test-case-name: tests.test_mtftp_server -*-
"""
Multicast TFTP (RFC 2090, C{tftp.multicast}) as the child service
C{"multicast"} of the C{tftp} service.

It plugs into the TFTP server through the tftp service's hooks only
(L{provisioner.tftp.service.TFTPService}), registered when it starts and
removed when it stops:

  - L{MulticastHandler}, an L{IRequestHandler}: read requests that carry
    the C{multicast} option go to the L{MulticastRegistry}, which joins them
    to a running session or starts one;
  - smart repair (L{provisioner.tftp.multicast.repair}): the
    L{RepairFilter} in front of the resolver chain and the
    L{RepairExtension}, the first option extension.

Stopping the service stops every multicast session.
"""

from twisted.application import service
from twisted.logger import Logger
from zope.interface import implementer

from provisioner.errors import TooManySessions
from provisioner.interfaces import IRequestHandler
from provisioner.tftp.multicast.codec import MULTICAST_OPTION
from provisioner.tftp.multicast.registry import MulticastRegistry
from provisioner.tftp.multicast.repair import RepairExtension, RepairFilter

__all__ = ["MulticastHandler", "MulticastTFTPService", "makeService"]


@implementer(IRequestHandler)
class MulticastHandler:
    """
    The request handler on L{provisioner.tftp.server.TFTPServer}: takes RRQs
    that carry the C{multicast} option (octet mode) when C{tftp.multicast}
    is enabled, and hands them to the L{MulticastRegistry}.

    @ivar registry: the L{MulticastRegistry}.
    """

    log = Logger()

    def __init__(self, reactor, config, bindAddress=""):
        self.reactor = reactor
        self._config = config
        self.registry = MulticastRegistry(reactor, config["multicast"], config, bindAddress)

    def configure(self, config, bindAddress):
        """
        Take a (re)loaded C{tftp} section and the listen address: new
        sessions use them, running ones keep theirs.
        """
        self._config = config
        self.registry.configure(config["multicast"], config, bindAddress)

    def _configure(self, server):
        """
        Follow the server's configuration and listen address (a reload, or
        the listen port moved).
        """
        if server.config is not self._config or \
                self.registry.bindAddress != server.bindAddress:
            self.configure(server.config, server.bindAddress)

    def handleRequest(self, server, request, source, packet):
        """
        A client that joins holds a slot of the server's limits until it
        leaves (C{server.holdSlot}).

        @return: L{True} when the request became (or joined) a multicast
            session.
        """
        if MULTICAST_OPTION not in request.options or packet.mode != "octet":
            return False
        self._configure(server)
        if not self.registry.enabled or source.size is None:
            return False
        negotiated = server.negotiate(request, source, packet.mode)
        try:
            self.registry.request(
                request.path, packet.options, source, request.peer,
                blksize=negotiated.blksize, windowsize=negotiated.windowsize,
                timeout=negotiated.timeout, holdSlot=getattr(server, "holdSlot", None))
        except TooManySessions as e:
            self.log.warn("multicast refused for {peer}: {reason}; serving by unicast",
                          peer=request.peer, reason=str(e))
            return False
        return True


class MulticastTFTPService(service.Service):
    """
    Multicast TFTP and smart repair, a child of the tftp service.

    @ivar tftp: the parent L{provisioner.tftp.service.TFTPService}, used
        through its public hooks only.
    @ivar handler: the L{MulticastHandler}.
    @ivar repair: the L{RepairFilter}.
    @ivar extension: the L{RepairExtension}.
    """

    def __init__(self, tftp):
        self.tftp = tftp
        config = tftp.config
        self.handler = MulticastHandler(tftp.reactor, config, config.get("address", ""))
        self.repair = RepairFilter(self._repairEnabled)
        self.extension = RepairExtension()
        self._removers = []

    @property
    def registry(self):
        """
        The L{MulticastRegistry} of the running sessions.
        """
        return self.handler.registry

    def _repairEnabled(self):
        return self.tftp.config["multicast"]["repair"]

    def startService(self):
        service.Service.startService(self)
        self._register()

    def stopService(self):
        service.Service.stopService(self)
        self._unregister()
        self.handler.registry.stop()

    def _register(self):
        """
        Plug into the tftp service: the request handler, the repair filter,
        and the repair extension first among the option extensions (a
        repair transfer gets no adaptive window).
        """
        self._unregister()
        tftp = self.tftp
        self._removers = [tftp.addRequestHandler(self.handler),
                          tftp.addResolverFilter(self.repair),
                          tftp.addExtension(self.extension, 0)]

    def _unregister(self):
        removers, self._removers = self._removers, []
        for remove in removers:
            remove()

    def reconfigure(self, config):
        """
        Take a reloaded configuration (the tftp service passes it on): new
        sessions use the new C{tftp.multicast} section; running sessions
        keep their group and options; the hooks stay as they are.
        """
        self.handler.configure(config["tftp"], self.tftp.server.bindAddress)


def makeService(tftp):
    """
    The child service C{"multicast"} for a tftp service.
    """
    child = MulticastTFTPService(tftp)
    child.setName("multicast")
    return child
