# -*- test-case-name: tests.test_dhcp6_server -*-
"""
The dispatcher on the DHCPv6 server port (UDP 547) and the PXE boot
server's port (UDP 4011).

L{DHCP6Protocol} and L{BootServer6Protocol} are the datagram protocols,
one per listening socket (one socket per configured interface): they decode
datagrams with L{provisioner.dhcp6.wire}, hand them to the responder and
send its replies back where the request came from. Nothing a datagram
carries can raise out of C{datagramReceived}.

L{DHCP6Responder} turns a parsed message into replies, through a
C{send(reply, address)} callable, so the unit tests drive it with a fake.

Modes (C{dhcp6.mode}):

  - C{boot}: beside a site's DHCPv6 server. A Solicit from a network-boot
    client (vendor class 16 C{PXEClient}/C{HTTPClient}, an architecture
    in 61, or iPXE's user class) gets an Advertise with no IA_NA, with the
    boot file URL (59), its parameters (60), and the vendor class echoed
    (EDK2 calls such an offer a proxy offer and asks 4011 for the boot file
    once it has its address); an Information-request from such a client
    gets a Reply with the same. Everything else is left to the site's
    server.
  - C{full}: the DHCPv6 server: Solicit (Advertise, or a Reply with rapid
    commit), Request, Renew, Rebind, Confirm, Release, Decline and
    Information-request, with address pools per prefix and durable leases
    (L{provisioner.dhcp6.leases}); network-boot clients also get the boot
    file URL.

On 4011 (both modes) a Request or Information-request from a network-boot
client gets a Reply with the boot file URL.
"""

import ipaddress
import socket
import struct

from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from provisioner.dhcp6 import wire
from provisioner.dhcp6.boot import BootAnswers6
from provisioner.dhcp6.pools import Pools6
from provisioner.dhcp6.wire import OPT, STATUS, DHCP6Message, MalformedPacket

__all__ = ["Interface6", "DHCP6Responder", "DHCP6Protocol", "BootServer6Protocol",
           "ALL_DHCP_RELAY_AGENTS_AND_SERVERS"]

ALL_DHCP_RELAY_AGENTS_AND_SERVERS = "ff02::1:2"


class Interface6:
    """
    Where a request arrived.

    @ivar name: the interface name, or L{None} (a test socket).
    @ivar addresses: our IPv6 addresses there (text, global ones first).
    @ivar mac: its hardware address (text), or L{None}.
    """

    def __init__(self, name=None, addresses=(), mac=None):
        self.name = name
        self.addresses = list(addresses)
        self.mac = mac

    @property
    def address(self):
        """
        Our first address that is not link-local, or L{None}.
        """
        for a in self.addresses:
            if not ipaddress.IPv6Address(a.split("%")[0]).is_link_local:
                return a
        return None

    def __repr__(self):
        return "<Interface6 %s %s>" % (self.name, self.addresses)


#: what each message type became, for the counters
_REQUESTS = {k: wire.MESSAGE_TYPES[k] for k in (
    wire.SOLICIT, wire.REQUEST, wire.CONFIRM, wire.RENEW, wire.REBIND, wire.RELEASE,
    wire.DECLINE, wire.INFORMATION_REQUEST)}


class DHCP6Responder:
    """
    The decisions: which messages get answers and what the answers say.

    @ivar config: the C{dhcp6} section.
    @ivar serverDUID: our DUID (bytes).
    @ivar leases: the L{provisioner.dhcp6.leases.Lease6Store} (full mode),
        or L{None}.
    @ivar stats: counters by event name.
    @ivar decisions: C{{(port, type, decision): count}}: each message by
        the port it came to (C{dhcp6}, C{pxe}), its type and what became
        of it (C{advertise}, C{reply}, C{ignored}, C{error}).
    """

    log = Logger()

    def __init__(self, config, serverDUID, clients, leases=None, policy=None,
                 inventoryGetter=lambda: None, events=None, httpPort=8080):
        self.config = config
        self.serverDUID = serverDUID
        self.leases = leases
        self.stats = {}
        self.decisions = {}
        self.pools = Pools6(config)
        self.boot = BootAnswers6(config, clients, self.log, policy, inventoryGetter, events,
                                 httpPort)

    def reconfigure(self, config, httpPort=None):
        self.config = config
        self.pools.reconfigure(config)
        self.boot.reconfigure(config, httpPort)

    def _count(self, name):
        self.stats[name] = self.stats.get(name, 0) + 1

    # Entry points -------------------------------------------------------

    def handle(self, message, iface, send):
        """
        A message on the DHCPv6 port.

        @param send: C{send(reply)}: to where the message came from.
        @return: a Deferred when the answer waits for a lease commit, else
            L{None}.
        """
        return self._decide("dhcp6", message, send, self._handle, iface)

    def handleBootServer(self, message, iface, send):
        """
        A message on the PXE boot server's port.
        """
        return self._decide("pxe", message, send, self._handleBootServer, iface)

    def _decide(self, port, message, send, handle, iface):
        sent = []

        def counted(reply):
            sent.append(reply.msgType)
            send(reply)
        try:
            result = handle(message, iface, counted)
        except BaseException:
            self._decided(port, message, sent, True)
            raise
        if isinstance(result, defer.Deferred):
            def done(outcome):
                self._decided(port, message, sent, not sent and
                              isinstance(outcome, Failure))
                return outcome
            result.addBoth(done)
        else:
            self._decided(port, message, sent, False)
        return result

    def _decided(self, port, message, sent, failed):
        name = _REQUESTS.get(message.msgType, "other")
        if failed:
            decision = "error"
        elif sent:
            decision = wire.MESSAGE_TYPES[sent[-1]].lower()
        else:
            decision = "ignored"
        key = (port, name, decision)
        self.decisions[key] = self.decisions.get(key, 0) + 1

    def _handle(self, message, iface, send):
        if not isinstance(message, DHCP6Message):
            self._count("relay-ignored")
            return None
        kind = message.msgType
        if kind not in _REQUESTS:
            self._count("not-a-request")
            return None
        self._count(message.typeName)
        if message.clientId is None and kind != wire.INFORMATION_REQUEST:
            self._count("no-client-id")
            return None
        if self.config["mode"] == "boot":
            if kind == wire.SOLICIT and message.serverId is None:
                return self._bootOnly(message, iface, send, wire.ADVERTISE)
            if kind == wire.INFORMATION_REQUEST and self._forUs(message, True):
                return self._bootOnly(message, iface, send, wire.REPLY)
            return None
        handler = {
            wire.SOLICIT: self._solicit,
            wire.REQUEST: self._request,
            wire.RENEW: self._renew,
            wire.REBIND: self._rebind,
            wire.CONFIRM: self._confirm,
            wire.RELEASE: self._release,
            wire.DECLINE: self._decline,
            wire.INFORMATION_REQUEST: self._information,
        }[kind]
        return handler(message, iface, send)

    def _handleBootServer(self, message, iface, send):
        if not isinstance(message, DHCP6Message) or message.msgType not in (
                wire.REQUEST, wire.INFORMATION_REQUEST, wire.SOLICIT):
            return None
        self._count("pxe-" + message.typeName)
        if message.serverId is not None and message.serverId != self.serverDUID:
            self._count("pxe-other-server")
            return None
        return self._bootOnly(message, iface, send, wire.REPLY)

    # What replies share -------------------------------------------------

    def _forUs(self, message, optional):
        """
        Whether a message's server identifier is ours (or absent, when
        C{optional}).
        """
        server = message.serverId
        if server is None:
            return optional
        if server != self.serverDUID:
            self._count("other-server")
            return False
        return True

    def _reply(self, message, kind):
        reply = DHCP6Message(kind, message.transactionId)
        reply.addOption(OPT.SERVERID, self.serverDUID)
        if message.clientId is not None:
            reply.addOption(OPT.CLIENTID, message.clientId)
        return reply

    def _serverAddress(self, iface):
        return self.config["server_address"] or iface.address or (
            iface.addresses[0] if iface.addresses else None)

    def _bootInfo(self, message, iface, reply, echoVendor, ip=None):
        """
        Add the boot file URL to C{reply} if the client network-boots and
        the policy has a file for it.

        @return: whether it was added.
        """
        facts = self.boot.facts(message)
        if not self.boot.isBootClient(facts):
            return False
        url = self.boot.decide(facts, self._serverAddress(iface), ip)
        if url is None:
            return False
        self.boot.addBoot(reply, facts, url, echoVendor)
        return True

    def _addDNS(self, message, reply, pool):
        if OPT.DNS_SERVERS not in message.requested():
            return
        servers = (pool.dns if pool is not None else []) + [
            a for a in self.config["dns_servers"] if pool is None or a not in pool.dns]
        if servers:
            reply.addOption(OPT.DNS_SERVERS, wire.encodeAddresses(servers))

    # Boot mode and the boot server ----------------------------------------

    def _bootOnly(self, message, iface, send, kind):
        """
        A reply carrying only the boot information, or nothing for a client
        that does not network-boot (or that the policy gives nothing).
        """
        reply = self._reply(message, kind)
        if not self._bootInfo(message, iface, reply, echoVendor=True):
            self._count("not-boot-client")
            return None
        send(reply)
        return None

    # Full mode ------------------------------------------------------------

    def _duid(self, message):
        return message.clientId.hex()

    def _lifetimes(self, pool):
        valid = pool.valid
        preferred = pool.preferred
        return preferred, valid, preferred // 2, preferred * 4 // 5

    def _solicit(self, message, iface, send):
        if message.serverId is not None:
            self._count("solicit-with-server-id")
            return None
        rapid = message.rapidCommit and self.config["rapid_commit"]
        reply = self._reply(message, wire.REPLY if rapid else wire.ADVERTISE)
        if rapid:
            reply.addOption(OPT.RAPID_COMMIT, b"")
        pool = self.pools.forInterface(iface)
        binds, first = self._assign(message, pool, reply, bind=rapid)
        if self.config["preference"] is not None and not rapid:
            reply.addOption(OPT.PREFERENCE, bytes((self.config["preference"],)))
        self._addDNS(message, reply, pool)
        self._bootInfo(message, iface, reply, echoVendor=False, ip=first)
        return self._sendAfter(binds, send, reply)

    def _assign(self, message, pool, reply, bind):
        """
        An address for each of the message's IA_NAs, added to C{reply}:
        bound (a lease write) with C{bind}, else offered (held briefly).

        @return: C{(lease writes, the first address or None)}.
        """
        duid = self._duid(message)
        binds = []
        first = None
        for ia in message.iaNAs():
            out = wire.IANA(ia.iaid)
            address = self._pick(pool, duid, ia)
            if address is None:
                out.setStatus(STATUS.NO_ADDRS_AVAIL, "no addresses available")
                self._count("no-addresses")
            else:
                first = first or address
                preferred, valid, out.t1, out.t2 = self._lifetimes(pool)
                out.addAddress(wire.IAAddress(address, preferred, valid))
                if bind:
                    binds.append(self.leases.bind(duid, ia.iaid, address, valid))
                else:
                    self.leases.offer(duid, ia.iaid, address, self.config["offer_hold"])
            reply.addOption(OPT.IA_NA, out)
        return binds, first

    def _pick(self, pool, duid, ia):
        """
        The address for an IA: its lease or offer in the pool, else the
        one it asks for if free, else a free one; L{None} if there is none.
        """
        if pool is None or self.leases is None:
            return None
        lease = self.leases.get(duid, ia.iaid)
        if lease is not None and pool.inRange(lease.address) and lease.state != "declined":
            return lease.address
        hints = [a.address for a in ia.addresses]
        return pool.choose(self.leases, duid, ia.iaid, hints[0] if hints else None)

    def _sendAfter(self, writes, send, reply):
        """
        Send C{reply} once every write is on disk (at once without writes).
        """
        if not writes:
            send(reply)
            return None
        d = defer.gatherResults(writes, consumeErrors=True)

        def written(_):
            send(reply)

        def failed(f):
            self._count("lease-write-failed")
            self.log.failure("DHCPv6 lease not stored; no reply", f)
        return d.addCallbacks(written, failed)

    def _request(self, message, iface, send):
        if not self._forUs(message, False):
            return None
        reply = self._reply(message, wire.REPLY)
        pool = self.pools.forInterface(iface)
        binds, first = self._assign(message, pool, reply, bind=True)
        self._addDNS(message, reply, pool)
        self._bootInfo(message, iface, reply, echoVendor=False, ip=first)
        return self._sendAfter(binds, send, reply)

    def _extend(self, message, iface, send, rebinding):
        reply = self._reply(message, wire.REPLY)
        pool = self.pools.forInterface(iface)
        duid = self._duid(message)
        binds = []
        for ia in message.iaNAs():
            out = wire.IANA(ia.iaid)
            lease = self.leases.get(duid, ia.iaid) if self.leases is not None else None
            asked = [a.address for a in ia.addresses]
            if lease is not None and lease.state == "bound" and pool is not None and \
                    pool.inRange(lease.address):
                preferred, valid, out.t1, out.t2 = self._lifetimes(pool)
                out.addAddress(wire.IAAddress(lease.address, preferred, valid))
                binds.append(self.leases.bind(duid, ia.iaid, lease.address, valid))
                for other in asked:
                    if other != lease.address:
                        out.addAddress(wire.IAAddress(other, 0, 0))
            elif rebinding and asked and not any(
                    pool is not None and pool.onLink(a) for a in asked):
                for other in asked:
                    out.addAddress(wire.IAAddress(other, 0, 0))
            else:
                out.setStatus(STATUS.NO_BINDING, "no binding for this IA")
                self._count("no-binding")
            reply.addOption(OPT.IA_NA, out)
        self._addDNS(message, reply, pool)
        self._bootInfo(message, iface, reply, echoVendor=False)
        return self._sendAfter(binds, send, reply)

    def _renew(self, message, iface, send):
        if not self._forUs(message, False):
            return None
        return self._extend(message, iface, send, rebinding=False)

    def _rebind(self, message, iface, send):
        if message.serverId is not None:
            return None
        return self._extend(message, iface, send, rebinding=True)

    def _confirm(self, message, iface, send):
        if message.serverId is not None:
            return None
        addresses = [a.address for ia in message.iaNAs() for a in ia.addresses]
        if not addresses:
            return None
        pool = self.pools.forInterface(iface)
        reply = self._reply(message, wire.REPLY)
        if pool is not None and all(pool.onLink(a) for a in addresses):
            reply.addOption(OPT.STATUS_CODE, wire.StatusCode(STATUS.SUCCESS, "on link"))
        else:
            reply.addOption(OPT.STATUS_CODE, wire.StatusCode(STATUS.NOT_ON_LINK,
                                                              "not on link"))
        send(reply)
        return None

    def _release(self, message, iface, send):
        if not self._forUs(message, False):
            return None
        duid = self._duid(message)
        writes = []
        reply = self._reply(message, wire.REPLY)
        for ia in message.iaNAs():
            lease = self.leases.get(duid, ia.iaid) if self.leases is not None else None
            if lease is not None and lease.state == "bound" and lease.address in [
                    a.address for a in ia.addresses]:
                writes.append(self.leases.release(duid, ia.iaid))
            else:
                out = wire.IANA(ia.iaid)
                out.setStatus(STATUS.NO_BINDING, "no binding for this IA")
                reply.addOption(OPT.IA_NA, out)
        reply.addOption(OPT.STATUS_CODE, wire.StatusCode(STATUS.SUCCESS, "released"))
        return self._sendAfter(writes, send, reply)

    def _decline(self, message, iface, send):
        if not self._forUs(message, False):
            return None
        duid = self._duid(message)
        writes = []
        reply = self._reply(message, wire.REPLY)
        for ia in message.iaNAs():
            lease = self.leases.get(duid, ia.iaid) if self.leases is not None else None
            declined = [a.address for a in ia.addresses]
            if lease is not None and lease.state == "bound" and lease.address in declined:
                self.log.info("DHCPv6 address {address} declined by {duid}",
                              address=lease.address, duid=duid)
                writes.append(self.leases.decline(duid, ia.iaid, lease.address))
            else:
                out = wire.IANA(ia.iaid)
                out.setStatus(STATUS.NO_BINDING, "no binding for this IA")
                reply.addOption(OPT.IA_NA, out)
        reply.addOption(OPT.STATUS_CODE, wire.StatusCode(STATUS.SUCCESS, "declined"))
        return self._sendAfter(writes, send, reply)

    def _information(self, message, iface, send):
        if not self._forUs(message, True):
            return None
        if message.iaNAs():
            return None  # RFC 8415 16.12: an Information-request carries no IA
        reply = self._reply(message, wire.REPLY)
        pool = self.pools.forInterface(iface)
        self._addDNS(message, reply, pool)
        self._bootInfo(message, iface, reply, echoVendor=False)
        send(reply)
        return None


class _Protocol6(DatagramProtocol):
    """
    Shared by the two ports: decode, hand to the responder, never raise.

    @ivar dropped: datagrams dropped (undecodable, or the responder
        failed).
    """

    log = Logger()
    noisy = False

    def __init__(self, responder, iface):
        self.responder = responder
        self.iface = iface
        self.dropped = 0

    def _destination(self, address):
        host, port = address[0], address[1]
        if self.iface.name and "%" not in host and host.lower().startswith("fe80:"):
            host = "%s%%%s" % (host, self.iface.name)
        return (host, port)

    def _sender(self, address):
        destination = self._destination(address)

        def send(reply):
            if self.transport is None:
                return
            try:
                self.transport.write(reply.to_wire(), destination)
            except Exception as e:
                self.log.debug("DHCPv6 reply to {address} not sent: {error}",
                               address=destination, error=e)
        return send

    def datagramReceived(self, data, address):
        try:
            message = wire.parse(data)
        except MalformedPacket as e:
            self.dropped += 1
            self.log.debug("malformed DHCPv6 message from {address} on {iface}: {error}",
                           address=address, iface=self.iface.name, error=str(e))
            return
        except Exception as e:
            self.dropped += 1
            self.log.debug("undecodable DHCPv6 message from {address}: {error!r}",
                           address=address, error=e)
            return
        try:
            d = self.dispatch(message, self._sender(address))
        except Exception:
            self.dropped += 1
            self.log.failure("DHCPv6 message from {address} failed", address=address)
            return
        if isinstance(d, defer.Deferred):
            d.addErrback(lambda f: self.log.failure(
                "DHCPv6 message from {address} failed", f, address=address))

    def dispatch(self, message, send):
        raise NotImplementedError()


class DHCP6Protocol(_Protocol6):
    """
    UDP 547 on one interface.
    """

    def dispatch(self, message, send):
        return self.responder.handle(message, self.iface, send)


class BootServer6Protocol(_Protocol6):
    """
    UDP 4011 (the PXE boot server) on one interface.
    """

    def dispatch(self, message, send):
        return self.responder.handleBootServer(message, self.iface, send)


def joinGroup(sock, group, interface):
    """
    Join the IPv6 multicast C{group} on C{interface} (by name).

    @raise OSError: the interface does not exist or the join fails.
    """
    index = socket.if_nametoindex(interface)
    request = socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", index)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, request)
