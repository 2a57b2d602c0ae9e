# -*- test-case-name: tests.test_dhcp_server -*-
"""
What every reply shares, whoever builds it: the header copied from the
request with options 53 and 54, option 82 echoed to relays, where a reply
to a port-67 request goes (RFC 2131 4.1), and replies held back by
C{dhcp.reply_delay}.
"""

from twisted.internet import defer

from provisioner.dhcp import wire
from provisioner.dhcp.wire import OPT, ZERO, DHCPPacket

__all__ = [
    "BROADCAST",
    "newReply",
    "serverAddress",
    "destination",
    "echoRelay",
    "later",
]

BROADCAST = "255.255.255.255"


def newReply(request, messageType, serverAddress):
    """
    A reply to C{request}: its header fields, option 53 C{messageType} and,
    given C{serverAddress}, option 54.
    """
    reply = DHCPPacket(op=wire.BOOTREPLY, htype=request.htype, hlen=request.hlen,
                       xid=request.xid, flags=request.flags, ciaddr=request.ciaddr,
                       giaddr=request.giaddr, chaddr=request.chaddr)
    reply.setOption(OPT.MESSAGE_TYPE, bytes((messageType,)))
    if serverAddress:
        reply.setOption(OPT.SERVER_ID, wire.ip2bytes(serverAddress))
    return reply


def serverAddress(config, iface):
    """
    Our address in replies from C{iface}: C{dhcp.server_address}, else the
    interface's.
    """
    return config["server_address"] or iface.address


def destination(config, request, reply, nak=False):
    """
    Where a reply to a port-67 request goes (RFC 2131 4.1).
    """
    serverPort = config["port"]
    clientPort = config["client_port"]
    if request.giaddr != ZERO:
        if nak:
            reply.flags |= 0x8000
        return (request.giaddr, serverPort)
    if not nak and request.ciaddr != ZERO:
        return (request.ciaddr, clientPort)
    # No address yet (or a NAK): broadcast on the interface the request
    # came in on; the socket is bound to that interface.
    return (BROADCAST, clientPort)


def echoRelay(request, reply):
    """
    Copy the relay agent information (option 82) of a request to its reply.
    """
    relay = request.option(OPT.RELAY_AGENT)
    if relay is not None:
        reply.setOption(OPT.RELAY_AGENT, relay)


def later(reactor, delay, f, *args):
    """
    Call C{f(*args)} now, or after C{delay} seconds on C{reactor}.

    @return: L{None} if called now, else a Deferred that fires after it.
    """
    if delay <= 0:
        f(*args)
        return None
    d = defer.Deferred()

    def fire():
        try:
            f(*args)
        finally:
            d.callback(None)
    reactor.callLater(delay, fire)
    return d
