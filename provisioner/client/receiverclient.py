# -*- test-case-name: tests.test_client_receiver -*-
"""
The image receiver's control connection (L{ReceiverClient}): connects,
asks for a challenge and registers with its answer (HMAC-SHA256 of the
server's nonce, the receiver's id and the server's name under the
receiver's secret, L{commands.registrationProof}), keeps the connection up
with C{ClientService} (reconnecting and re-registering after a loss),
gives up when the server has been unreachable too long or refuses the
receiver's credentials, and ends with the receiver's exit status.
"""

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import protocol
from twisted.logger import Logger
from twisted.protocols import amp

from provisioner.imagecast import commands
from provisioner.net.sockopt import CONTROL_RTO_MIN, quickRecovery

__all__ = ["ReceiverClient"]


class _ReceiverAMP(amp.AMP):
    #: see C{multicast.control_rto_min}: a lost report or progress message
    #: is sent again after tens of milliseconds, not hundreds
    rtoMin = CONTROL_RTO_MIN

    def __init__(self, receiver):
        amp.AMP.__init__(self, locator=receiver)
        self.receiver = receiver

    def connectionMade(self):
        amp.AMP.connectionMade(self)
        quickRecovery(self.transport, self.rtoMin)


class _ReceiverFactory(protocol.Factory):
    def __init__(self, receiver):
        self.receiver = receiver

    def buildProtocol(self, addr):
        p = _ReceiverAMP(self.receiver)
        p.factory = self
        return p


class ReceiverClient:
    """
    The control connection of a L{Receiver}: connects, registers, reconnects
    and re-registers after a loss, and gives up when the server has been
    unreachable for C{timeout} seconds, or refused the receiver's
    credentials.

    @ivar secret: the receiver's secret (bytes), or L{None}.
    """

    log = Logger()

    def __init__(self, reactor, endpoint, receiver, address, timeout=60.0, serverName="",
                 secret=None):
        self.reactor = reactor
        self.endpoint = endpoint
        self.receiver = receiver
        self.address = address
        self.timeout = timeout
        self.serverName = serverName
        self.secret = secret
        self.lastUp = reactor.seconds()
        self.everConnected = False
        self.service = ClientService(
            endpoint, _ReceiverFactory(receiver),
            retryPolicy=backoffPolicy(initialDelay=0.3, maxDelay=3.0, factor=1.7),
            clock=reactor, prepareConnection=self._register)
        self._watch = None

    def _register(self, proto):
        # The server may push Announce while it handles Register (the
        # receiver that completes min_receivers starts the session): answers
        # to it, Leave included, go on this connection, after Register.
        self.receiver.connection = proto
        address = self.address
        if not address:
            try:
                address = proto.transport.getHost().host
            except Exception:
                address = ""
        clientId = self.receiver.clientId

        def register(challenge):
            mode = challenge["authentication"]
            proof = None
            if mode == "secret":
                if self.secret is None:
                    raise commands.NotAuthenticated(
                        "the appliance authenticates receivers: give this receiver its "
                        "secret (--secret-file)")
                proof = commands.registrationProof(self.secret, challenge["nonce"],
                                                   clientId, challenge["server"])
            return proto.callRemote(commands.Register, clientId=clientId, address=address,
                                    image=self.receiver.image, proof=proof,
                                    features=list(commands.FEATURES))
        d = proto.callRemote(commands.Challenge).addCallback(register)

        def registered(answer):
            self.everConnected = True
            self.receiver.limits(answer)
            self.receiver.connected(proto)
            proto.connectionLost = self._wrapLost(proto.connectionLost)

        def refused(f):
            # a wrong or missing secret does not get better by retrying
            f.trap(commands.NotAuthenticated)
            self.receiver.fail("the appliance refused this receiver (%s): %s" % (
                clientId, f.getErrorMessage()))
            return f
        return d.addCallback(registered).addErrback(refused)

    def _wrapLost(self, original):
        def connectionLost(reason):
            self.lastUp = self.reactor.seconds()
            if self.receiver.connection is not None:
                self.receiver.connection = None
                if not self.receiver.result.called:
                    self.log.info("control connection lost; reconnecting")
            return original(reason)
        return connectionLost

    def _check(self):
        self._watch = None
        if self.receiver.result.called:
            return
        if self.receiver.connection is None and \
                self.reactor.seconds() - self.lastUp > self.timeout:
            what = "lost the server" if self.everConnected else "cannot reach the server"
            self.receiver.fail("%s %s (no control connection for %.0f s)" % (
                what, self.serverName, self.timeout))
            return
        self._watch = self.reactor.callLater(0.5, self._check)

    def run(self):
        """
        @return: a Deferred firing with the exit status.
        """
        self.service.startService()
        self._watch = self.reactor.callLater(0.5, self._check)
        d = self.receiver.result

        def stop(status):
            if self._watch is not None and self._watch.active():
                self._watch.cancel()
            stopped = self.service.stopService()
            return stopped.addBoth(lambda _: status)
        return d.addCallback(stop)
