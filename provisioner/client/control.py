# -*- test-case-name: tests.test_imagecast_e2e -*-
"""
The control channel as the client programs reach it: the connection
options of C{receive} and C{imagecast send|status}, the endpoint (TCP or
TLS), and running the reactor around one command.
"""

import sys

from provisioner.imagecast import commands

__all__ = ["DEFAULT_PORT", "addConnectionArguments", "connectEndpoint", "connect",
           "runReactor", "message"]

DEFAULT_PORT = 7010


def addConnectionArguments(parser, serverRequired):
    parser.add_argument("--server", required=serverRequired, default="127.0.0.1",
                        help="appliance host (control channel)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help="control channel TCP port (default %d)" % (DEFAULT_PORT,))
    parser.add_argument("--tls", action="store_true", help="use TLS on the control channel")
    parser.add_argument("--ca", metavar="FILE",
                        help="PEM CA certificate the server's certificate must chain to "
                        "(default: the system's trust store)")
    parser.add_argument("--cert", metavar="FILE", help="PEM client certificate")
    parser.add_argument("--key", metavar="FILE",
                        help="PEM private key of --cert (default: in the --cert file)")
    parser.add_argument("--server-name", metavar="NAME",
                        help="name the server's certificate must carry (default: --server)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="give up after this many seconds without a control connection "
                        "(default 60)")


def connectEndpoint(reactor, args):
    """
    Return the client endpoint for the control channel from C{args}.
    """
    from twisted.internet import endpoints, ssl
    endpoint = endpoints.HostnameEndpoint(reactor, args.server, args.port, timeout=10)
    if not args.tls:
        return endpoint
    name = args.server_name or args.server
    kw = {}
    if args.ca:
        with open(args.ca, "rb") as f:
            kw["trustRoot"] = ssl.Certificate.loadPEM(f.read())
    if args.cert:
        with open(args.cert, "rb") as f:
            pem = f.read()
        if args.key:
            with open(args.key, "rb") as f:
                pem += b"\n" + f.read()
        kw["clientCertificate"] = ssl.PrivateCertificate.loadPEM(pem)
    options = ssl.optionsForClientTLS(name, **kw)
    return endpoints.wrapClientTLS(options, endpoint)


def _quietCollector():
    """
    The data path allocates short-lived objects by the million and keeps
    few: move what start-up built out of the collector's sight and run it
    less often (a receiver spent several percent of its time in it).
    """
    import gc
    gc.collect()
    gc.freeze()
    gc.set_threshold(50000, 20, 20)


def runReactor(start):
    """
    Run the reactor around C{start(reactor)} (a Deferred of the exit
    status) and return that status.
    """
    from twisted.internet import reactor
    out = []

    def go():
        from twisted.internet import defer
        d = defer.maybeDeferred(start, reactor)

        def failed(f):
            print("provisioner: error: %s" % (message(f),), file=sys.stderr)
            return 1
        d.addErrback(failed)
        d.addCallback(out.append)
        d.addBoth(lambda _: reactor.stop())
    reactor.callWhenRunning(go)
    _quietCollector()
    reactor.run(installSignalHandlers=True)
    return out[0] if out else 1


class Unreachable(Exception):
    """
    The control channel cannot be reached; C{str()} names the server and
    the port and why.
    """


def message(f):
    from twisted.internet import error
    if f.check(Unreachable):
        return f.getErrorMessage()
    if f.check(error.ConnectError, error.DNSLookupError, error.TimeoutError):
        return "cannot reach the appliance's control channel: %s" % (f.getErrorMessage(),)
    if f.check(commands.MulticastError):
        return f.getErrorMessage()
    if f.check(OSError):
        return f.getErrorMessage()
    return "%s: %s" % (f.type.__name__, f.getErrorMessage())


def connect(reactor, args):
    from twisted.protocols import amp
    from twisted.internet import protocol
    factory = protocol.Factory.forProtocol(amp.AMP)
    factory.noisy = False  # no "Starting factory" line per connection
    d = connectEndpoint(reactor, args).connect(factory)

    def unreachable(f):
        from twisted.internet import error
        if not f.check(error.ConnectError, error.DNSLookupError, error.TimeoutError):
            return f
        reason = f.getErrorMessage()
        if f.check(error.ConnectionRefusedError):
            reason = "connection refused (is the imagecast service enabled and listening there?)"
        elif f.check(error.DNSLookupError):
            reason = "no such host"
        raise Unreachable("cannot reach the appliance's control channel at %s port %s "
                          "(--server, --port): %s" % (args.server, args.port, reason))
    return d.addErrback(unreachable)


