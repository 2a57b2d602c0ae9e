# -*- test-case-name: tests.test_dhcp_server,tests.test_dhcp_hardening -*-
"""
The full-mode responder (C{dhcp.mode: full}): DISCOVER, REQUEST, RELEASE,
DECLINE and INFORM; which address is offered (reservation, the client's
lease, the requested address, the next free one in the pool); offers and
leases in the L{provisioner.dhcp.leases.LeaseStore}; and what keeps a
DISCOVER flood from holding the pool (weak offers under pressure, the
oldest weak offer giving way, a bounded scan). Network-boot clients also
get the boot information of L{provisioner.dhcp.boot.BootAnswers}.

With a shared lease store (L{provisioner.store.interfaces.ILeaseStore}
C{shared}: several appliances on one database) a DISCOVER is answered only
by the appliance the client hashes to, each offer is claimed in the
database before it is sent (an address another appliance holds is learnt,
and another one chosen), and a REQUEST without a server identifier is
answered by the client's appliance or by one whose memory holds that very
lease (a renewal unicast to the appliance that granted it). See
C{docs/multi-appliance.md}.
"""

import random
import struct

from provisioner.dhcp import replies, wire
from provisioner.dhcp.subnets import intToIP
from provisioner.dhcp.wire import OPT, ZERO
from provisioner.net.pacing import TokenBucket
from provisioner.store.interfaces import AddressTaken, StoreUnavailable

__all__ = ["LeaseResponder", "DECLINE_HOLD"]

# Direct INFORMs answered per second (and the burst): their replies go to
# ciaddr unicast and may wait for ARP; bounded so that they cannot fill the
# socket.
INFORM_RATE = 20
INFORM_BURST = 40
# Relayed INFORMs answered per second (and the burst): their replies go to
# the relay (giaddr), which anyone can write into a packet: an address of a
# subnet that never answers ARP would hold them in the socket the same way.
# A real relay forwards a whole subnet's INFORMs: a larger budget of its own.
RELAYED_INFORM_RATE = 100
RELAYED_INFORM_BURST = 200

# Seconds a declined address is held.
DECLINE_HOLD = 600
# Addresses a DISCOVER tries from the cursor, under pressure, before the
# oldest weak offer gives way.
_PRESSURE_SCAN = 64
# Shared store: addresses a DISCOVER claims, each found taken by another
# appliance, before it gives up (the client asks again).
_CLAIM_TRIES = 16


class LeaseResponder:
    """
    The answers of a DHCP server: addresses, offers and leases.

    @ivar config: the C{dhcp} section.
    @ivar reactor: C{IReactorTime} for reply delays.
    @ivar clients: the appliance's client directory.
    @ivar leases: the L{provisioner.dhcp.leases.LeaseStore}.
    @ivar subnets: the L{provisioner.dhcp.subnets.Subnets}.
    @ivar boot: the L{provisioner.dhcp.boot.BootAnswers}.
    @ivar log: the responder's logger.
    """

    def __init__(self, config, reactor, clients, leases, subnets, boot, log, count):
        """
        @param count: C{count(name)} adds one to the responder's counter
            C{name}.
        """
        self.config = config
        self.reactor = reactor
        self.clients = clients
        self.leases = leases
        self.subnets = subnets
        self.boot = boot
        self.log = log
        self._count = count
        # INFORM answers go to the client's own address (ciaddr), or to the
        # relay (giaddr), which may never answer ARP: such replies wait in
        # the socket for seconds, so a flood of them could fill it and mute
        # every other reply. Direct and relayed ones have budgets of their
        # own, so that neither can use up the other's.
        self._informs = TokenBucket(reactor, INFORM_RATE, INFORM_BURST)
        self._relayedInforms = TokenBucket(reactor, RELAYED_INFORM_RATE, RELAYED_INFORM_BURST)

    def reconfigure(self, config):
        """
        Take a new C{dhcp} section.
        """
        self.config = config

    # Messages ------------------------------------------------------------

    def discover(self, packet, iface, send):
        """
        An OFFER of an address, held for the client (weakly under
        pressure), sent after C{dhcp.reply_delay}; nothing if the request
        has no subnet or the pool is exhausted.

        @return: a Deferred if the reply waits for the delay, else L{None}.
        """
        subnet = self.subnets.subnetFor(packet, iface)
        if subnet is None:
            self._count("no-subnet")
            self.log.debug("DISCOVER from {mac}: no subnet for giaddr {giaddr} on {iface}",
                           mac=packet.mac, giaddr=packet.giaddr, iface=iface.name)
            return None
        if self.leases.shared:
            return self._discoverShared(packet, iface, send, subnet)
        hold, weak = self._offerTerms(packet, subnet)
        ip = self._choose(packet, subnet, iface, weak)
        if ip is None:
            self._exhausted(packet, subnet)
            return None
        clientId = packet.option(OPT.CLIENT_ID)
        self.leases.offer(packet.mac, ip, hold, clientId=clientId.hex() if clientId else None,
                          pool=str(subnet.network), weak=weak)
        reply = self._fullReply(packet, wire.DHCPOFFER, ip, subnet, iface, subnet.leaseTime)
        # One debug line per handshake (at the ACK): twistd formats every
        # event it is given, and that is a sizeable share of a handshake.
        return replies.later(self.reactor, self.config["reply_delay"], send, reply,
                             replies.destination(self.config, packet, reply))

    def _exhausted(self, packet, subnet):
        self._count("pool-exhausted")
        self.log.warn("pool {network} exhausted: no address for {mac}",
                      network=str(subnet.network), mac=packet.mac)

    def _discoverShared(self, packet, iface, send, subnet):
        """
        L{discover} with a shared store: only for a client of this
        appliance; what the database holds of the client is read first (its
        lease from another appliance), and the offer is claimed in the
        database before it is sent, trying another address while the one
        chosen is found taken.

        @return: a Deferred, or L{None} when this appliance does not answer.
        """
        mac = packet.mac
        if not self.leases.available:
            self._count("refused-store-unavailable")
            return None
        if not self.leases.answers(mac):
            self._count("DISCOVER-other-appliance")
            return None
        clientId = packet.option(OPT.CLIENT_ID)
        tries = [0]

        def attempt(_):
            hold, weak = self._offerTerms(packet, subnet)
            ip = self._choose(packet, subnet, iface, weak)
            if ip is None:
                self._exhausted(packet, subnet)
                return None
            d = self.leases.claimOffer(mac, ip, hold,
                                       clientId=clientId.hex() if clientId else None,
                                       pool=str(subnet.network), weak=weak)
            d.addCallback(claimed)
            return d

        def claimed(lease):
            if lease is None:
                # another appliance holds it (the store now knows): jump to
                # a random point of the pool, so that appliances sharing it
                # spread out instead of racing for the same next address
                self._count("offer-collision")
                tries[0] += 1
                if tries[0] >= _CLAIM_TRIES:
                    self._count("offer-gave-up")
                    return None
                size = subnet.last - subnet.first + 1
                subnet.cursor = subnet.first + random.randrange(size)
                return attempt(None)
            reply = self._fullReply(packet, wire.DHCPOFFER, lease.ip, subnet, iface,
                                    subnet.leaseTime)
            return replies.later(self.reactor, self.config["reply_delay"], send, reply,
                                 replies.destination(self.config, packet, reply))

        d = self.leases.lookup(mac)
        d.addCallback(attempt)
        d.addErrback(self._storeAway)
        return d

    def _storeAway(self, failure):
        """
        A shared store's database cannot be reached: nothing is sent (the
        store logs the outage once).
        """
        failure.trap(StoreUnavailable)
        self._count("refused-store-unavailable")
        return None

    def request(self, packet, iface, send):
        """
        An ACK once the lease is stored, a NAK (if C{dhcp.authoritative})
        for an address the client may not have, or nothing: a REQUEST for
        another server (which gives up this client's offer), or from a
        client with no address or no subnet.

        @return: the Deferred of the lease commit, or L{None}.
        """
        mac = packet.mac
        server = replies.serverAddress(self.config, iface)
        serverID = packet.ipOption(OPT.SERVER_ID)
        requested = packet.ipOption(OPT.REQUESTED_IP)
        subnet = self.subnets.subnetFor(packet, iface)
        if serverID is not None and server is not None and serverID != server and \
                self.leases.adopts(serverID, mac):
            # SELECTING an appliance of the shared store that has gone: its
            # offer is in the database, and the client is this appliance's
            self._count("REQUEST-adopted")
            ip = requested or (packet.ciaddr if packet.ciaddr != ZERO else None)
            if subnet is None or ip is None:
                return None
            d = self.leases.lookup(mac)
            d.addCallback(lambda _: self._requested(packet, iface, send, subnet, ip, serverID))
            d.addErrback(self._storeAway)
            return d
        if serverID is not None:
            # SELECTING: the client picked a server.
            if server is not None and serverID != server:
                lease = self.leases.byMAC(mac)
                if lease is not None and lease.state == "offered":
                    self.leases.release(mac)
                return None
            ip = requested or (packet.ciaddr if packet.ciaddr != ZERO else None)
        elif requested is not None:
            ip = requested  # INIT-REBOOT
        elif packet.ciaddr != ZERO:
            ip = packet.ciaddr  # RENEWING / REBINDING
        else:
            return None
        if subnet is None:
            return None
        if serverID is None and self.leases.shared and ip in subnet:
            lease = self.leases.byMAC(mac)
            granted = lease is not None and lease.ip == ip and lease.state == "bound"
            if not granted and not self.leases.answers(mac):
                self._count("REQUEST-other-appliance")
                return None
            if lease is None:
                # Maybe another appliance granted it: read the database.
                d = self.leases.lookup(mac)
                d.addCallback(lambda _: self._requested(packet, iface, send, subnet, ip,
                                                        serverID))
                d.addErrback(self._storeAway)
                return d
        return self._requested(packet, iface, send, subnet, ip, serverID)

    def _requested(self, packet, iface, send, subnet, ip, serverID):
        """
        The answer to a REQUEST for C{ip} of C{subnet}, once this server
        knows what it holds of the client.
        """
        mac = packet.mac
        if serverID is None and ip in subnet and not self._knows(mac, ip):
            # INIT-REBOOT, RENEWING or REBINDING from a client this server
            # has no record of: stay silent (RFC 2131 4.3.2; a wrong
            # network still gets its NAK), or a flood of such REQUESTs
            # from random MACs would bind the whole pool
            self.log.debug("REQUEST for {ip} from {mac} ignored: no offer, lease or "
                           "reservation of this client", ip=ip, mac=mac)
            self._count("REQUEST-unknown-ignored")
            return None
        why = self._refusal(subnet, ip, mac, iface)
        if why is not None:
            return self._nak(packet, iface, send, why)
        return self._bind(packet, iface, send, subnet, ip)

    def _knows(self, mac, ip):
        """
        Whether this server has a record of C{mac}: an offer or a lease (of
        any address: a NAK then tells it to start over), or a reservation
        of C{ip}.
        """
        if self.leases.byMAC(mac) is not None:
            return True
        mine = self.subnets.reservations().get(mac)
        return mine is not None and mine[0] == ip

    def _refusal(self, subnet, ip, mac, iface):
        """
        Why C{mac} may not have C{ip} of C{subnet} (the text of the NAK), or
        L{None}.
        """
        if ip not in subnet:
            return "wrong network"
        reserved = self.subnets.reservedIPs()
        lease = self.leases.byMAC(mac)
        ours = lease is not None and lease.ip == ip
        if not ours:
            # The first REQUEST wins an address that was only weakly offered.
            if not self._available(subnet, ip, mac, reserved, iface, takeWeak=True):
                return "address not available"
            mine = self.subnets.reservations().get(mac)
            if mine is not None and mine[0] in subnet and mine[0] != ip:
                return "address reserved elsewhere"
        elif not self._available(subnet, ip, mac, reserved, iface):
            return "address not available"
        return None

    def _bind(self, packet, iface, send, subnet, ip):
        """
        Store the lease, then send the ACK; if it cannot be stored, log it
        and send nothing.

        @return: the Deferred of the commit.
        """
        mac = packet.mac
        leaseTime = subnet.leaseTime
        clientId = packet.option(OPT.CLIENT_ID)
        hostname = packet.textOption(OPT.HOSTNAME)
        d = self.leases.bind(mac, ip, leaseTime, hostname=hostname,
                             clientId=clientId.hex() if clientId else None)

        def committed(_):
            reply = self._fullReply(packet, wire.DHCPACK, ip, subnet, iface, leaseTime)
            self.log.debug("ACK {ip} to {mac} for {seconds}s", ip=ip, mac=mac,
                           seconds=leaseTime)
            send(reply, replies.destination(self.config, packet, reply))

        def failed(failure):
            if failure.check(AddressTaken):
                # a shared store: another appliance gave it first
                return self._nak(packet, iface, send, "address not available")
            if failure.check(StoreUnavailable):
                self._count("refused-store-unavailable")
                return None
            self.log.failure("lease for {mac} not stored; no ACK", failure, mac=mac)
        d.addCallbacks(committed, failed)
        return d

    def release(self, packet, iface, send):
        """
        Give up a lease, if the RELEASE comes from its holder (see
        L{_fromHolder}) and is not for another server.
        """
        serverID = packet.ipOption(OPT.SERVER_ID)
        server = replies.serverAddress(self.config, iface)
        if serverID is not None and server is not None and serverID != server:
            return None
        if self._fromHolder(packet, iface, packet.ciaddr, "RELEASE") is None:
            return None
        self.log.debug("RELEASE {ip} by {mac}", ip=packet.ciaddr, mac=packet.mac)
        return self.leases.release(packet.mac, packet.ciaddr)

    def decline(self, packet, iface, send):
        """
        Hold a declined address for C{DECLINE_HOLD} seconds (the client
        found it in use), if the DECLINE comes from its holder and is not
        for another server; at most C{dhcp.decline_share} of the pool is
        held so (the oldest gives way).
        """
        serverID = packet.ipOption(OPT.SERVER_ID)
        server = replies.serverAddress(self.config, iface)
        if serverID is not None and server is not None and serverID != server:
            return None
        ip = packet.ipOption(OPT.REQUESTED_IP)
        if ip is None:
            return None
        subnet = self._fromHolder(packet, iface, ip, "DECLINE")
        if subnet is None:
            return None
        self.log.info("DECLINE of {ip} by {mac}: address in use, held for {hold}s",
                      ip=ip, mac=packet.mac, hold=DECLINE_HOLD)
        size = subnet.last - subnet.first + 1
        return self.leases.decline(
            packet.mac, ip, DECLINE_HOLD,
            limit=max(1, int(self.config["decline_share"] * size)),
            within=subnet.__contains__)

    def inform(self, packet, iface, send):
        """
        An ACK with the subnet's options (and boot information) to a client
        that has its address (ciaddr) already.
        """
        subnet = self.subnets.subnetFor(packet, iface)
        if subnet is None or packet.ciaddr == ZERO:
            return None
        relayed = packet.giaddr != ZERO
        bucket = self._relayedInforms if relayed else self._informs
        if not bucket.take(1):
            self._count("relayed-INFORM-over-rate" if relayed else "INFORM-over-rate")
            self.log.debug("INFORM from {mac} for {ip} not answered: more than {rate} a "
                           "second", mac=packet.mac, ip=packet.ciaddr,
                           rate=RELAYED_INFORM_RATE if relayed else INFORM_RATE)
            return None
        reply = self._fullReply(packet, wire.DHCPACK, None, subnet, iface, None)
        send(reply, replies.destination(self.config, packet, reply))
        return None

    # Addresses -----------------------------------------------------------

    def _offerTerms(self, packet, subnet):
        """
        How long an offer holds its address, and whether it is weak. A pool
        is under pressure when its outstanding offers reach
        C{dhcp.offer_pressure} of its size (a DISCOVER flood from random
        MACs, or a crowd booting at once): a client with no lease, no
        reservation and no offer of its own then gets a weak offer, held
        C{dhcp.offer_hold_pressure} seconds and given up to another
        client's REQUEST (see L{provisioner.dhcp.leases.Lease.weak}).

        @return: C{(seconds, weak)}.
        """
        hold = self.config["offer_hold"]
        mac = packet.mac
        lease = self.leases.byMAC(mac)
        if lease is not None and (lease.state == "bound" or (
                lease.state == "offered" and not lease.weak and
                lease.expires > self.leases.clock.seconds())):
            return hold, False
        if mac in self.subnets.reservations():
            return hold, False
        size = subnet.last - subnet.first + 1
        limit = max(1, int(self.config["offer_pressure"] * size))
        if self.leases.outstandingOffers(str(subnet.network)) < limit:
            return hold, False
        self._count("offer-under-pressure")
        return min(hold, self.config["offer_hold_pressure"]), True

    def _choose(self, packet, subnet, iface, weak=False):
        """
        The address to offer: the reservation, the client's lease, the
        requested address, then the next free one in the pool, else the
        address of the pool's oldest weak offer.

        @param weak: whether this will be a weak offer (the pool is under
            pressure): then only the next C{_PRESSURE_SCAN} addresses are
            tried before the oldest weak offer gives way, so that a flood
            does not cost a scan of the whole pool per DISCOVER.
        """
        mac = packet.mac
        reserved = self.subnets.reservedIPs()
        mine = self.subnets.reservations().get(mac)
        if mine is not None and mine[0] in subnet:
            if self.leases.isFree(mine[0], mac):
                return mine[0]
            # As dnsmasq: a reserved address still leased to another machine
            # is not taken from it; this client gets a pool address meanwhile.
            self.log.info("reserved address {ip} for {mac} is leased to another client; "
                          "offering a pool address", ip=mine[0], mac=mac)
        lease = self.leases.byMAC(mac)
        if lease is not None and lease.ip in subnet and self._available(
                subnet, lease.ip, mac, reserved, iface):
            return lease.ip
        wanted = packet.ipOption(OPT.REQUESTED_IP)
        if wanted is not None and wanted in subnet and self._available(
                subnet, wanted, mac, reserved, iface):
            return wanted
        size = subnet.last - subnet.first + 1
        cursor = subnet.cursor
        window = min(size, _PRESSURE_SCAN) if weak else size
        for step in range(size):
            if step == window:
                given = self._oldestWeak(subnet, mac, reserved, iface)
                if given is not None:
                    return given
            value = subnet.first + (cursor - subnet.first + step) % size
            ip = intToIP(value)
            if self._available(subnet, ip, mac, reserved, iface):
                subnet.cursor = subnet.first + (value - subnet.first + 1) % size
                return ip
        return self._oldestWeak(subnet, mac, reserved, iface)

    def _oldestWeak(self, subnet, mac, reserved, iface):
        """
        The address of the pool's oldest weak offer (to another client),
        which gives way so that a DISCOVER flood cannot keep the pool from
        a new client; or L{None}.
        """
        offer = self.leases.oldestWeakOffer(str(subnet.network))
        if offer is not None and self._available(subnet, offer.ip, mac, reserved, iface,
                                                 takeWeak=True):
            return offer.ip
        return None

    def _available(self, subnet, ip, mac, reserved, iface, takeWeak=False):
        """
        Whether C{ip} may go to C{mac}; C{takeWeak}: a weak offer (made
        under pressure) to another client does not keep it (a REQUEST).
        """
        if not subnet.inRange(ip) and reserved.get(ip) != mac:
            return False
        if ip in (iface.address, self.config["server_address"]):
            return False
        holder = reserved.get(ip)
        if holder is not None and holder != mac:
            return False
        return self.leases.isFree(ip, mac, takeWeak)

    def _fromHolder(self, packet, iface, ip, kind):
        """
        Check that a RELEASE or DECLINE of C{ip} comes from the client that
        holds it (chaddr, and option 61 when its offer or lease recorded
        one) and that C{ip} is an address of the pool the packet arrived
        for (or this client's reservation there). Anything else is counted
        and logged at debug.

        @return: the L{Subnet}, or L{None} to ignore the packet.
        """
        subnet = self.subnets.subnetFor(packet, iface)
        if subnet is None or ip is None or ip not in subnet:
            why = "not an address of the subnet it arrived for"
        elif not subnet.inRange(ip) and self.subnets.reservedIPs().get(ip) != packet.mac:
            why = "not a pool address"
        else:
            clientId = packet.option(OPT.CLIENT_ID)
            why = self.leases.holderMismatch(packet.mac, ip,
                                             clientId.hex() if clientId else None)
        if why is None:
            return subnet
        self._count(kind + "-ignored")
        self.log.debug("{kind} of {ip} from {mac} ignored: {why}", kind=kind, ip=ip,
                       mac=packet.mac, why=why)
        return None

    # Replies -------------------------------------------------------------

    def _fullReply(self, packet, kind, ip, subnet, iface, leaseTime):
        """
        An OFFER or ACK of C{ip} (or, for an INFORM, of no address): the
        subnet's options, the reservation's hostname, boot information for
        a network-boot client, option 82 echoed. A client bound by an ACK
        goes into the client directory.
        """
        server = replies.serverAddress(self.config, iface)
        reply = replies.newReply(packet, kind, server)
        if ip is not None:
            reply.yiaddr = ip
        self._addAddressOptions(reply, subnet, leaseTime)
        hostname = None
        reservation = self.subnets.reservations().get(packet.mac)
        if reservation is not None and reservation[0] == ip:
            hostname = reservation[1]
        if hostname:
            reply.setOption(OPT.HOSTNAME, hostname.encode())
        facts = self.boot.facts(packet)
        if self.boot.isBootClient(facts):
            decision = self.boot.decide(facts, ip)
            self.boot.addBoot(reply, packet, facts, decision, server, port4011=False)
        elif kind == wire.DHCPACK:
            # Every bound client goes into the directory, not only PXE ones.
            try:
                self.clients.update(
                    mac=facts.mac, ip=ip or (packet.ciaddr if packet.ciaddr != ZERO else None),
                    vendor_class=facts.vendorClass,
                    user_class=",".join(facts.userClasses) or None,
                    hostname=hostname or packet.textOption(OPT.HOSTNAME))
            except Exception:
                self.log.failure("client directory update failed for {mac}", mac=facts.mac)
        replies.echoRelay(packet, reply)
        return reply

    def _addAddressOptions(self, reply, subnet, leaseTime):
        """
        The subnet's options (1, 3, 6, 15, 28) and, given C{leaseTime}, the
        lease times (51, 58, 59).
        """
        reply.setOption(OPT.SUBNET_MASK, subnet.network.netmask.packed)
        if subnet.router:
            reply.setOption(OPT.ROUTER, wire.ip2bytes(subnet.router))
        if subnet.dns:
            reply.setOption(OPT.DNS, b"".join(wire.ip2bytes(a) for a in subnet.dns))
        if subnet.domain:
            reply.setOption(OPT.DOMAIN_NAME, subnet.domain.encode())
        reply.setOption(OPT.BROADCAST, wire.ip2bytes(subnet.broadcast))
        if leaseTime is not None:
            reply.setOption(OPT.LEASE_TIME, struct.pack("!I", leaseTime))
            reply.setOption(OPT.RENEWAL_TIME, struct.pack("!I", leaseTime // 2))
            reply.setOption(OPT.REBINDING_TIME, struct.pack("!I", leaseTime * 7 // 8))

    def _nak(self, packet, iface, send, why):
        """
        Count and log a refusal; send a NAK saying C{why} if
        C{dhcp.authoritative}.
        """
        self._count("NAK-sent")
        self.log.debug("NAK to {mac}: {why}", mac=packet.mac, why=why)
        if not self.config["authoritative"]:
            return None
        reply = replies.newReply(packet, wire.DHCPNAK, replies.serverAddress(self.config, iface))
        reply.ciaddr = ZERO
        reply.setOption(OPT.MESSAGE, why.encode())
        replies.echoRelay(packet, reply)
        send(reply, replies.destination(self.config, packet, reply, nak=True))
        return None
