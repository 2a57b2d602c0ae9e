# -*- test-case-name: tests.test_dhcp_server -*-
"""
What network-boot clients are told: the facts read from a request
(options 60, 77, 93, 97, 175), the boot policy's decision (logged and
recorded in the client directory), and the boot information put into a
reply (siaddr, C{file}, options 43, 60, 66, 67, 97 and the pxelinux
options). Used for the proxyDHCP OFFER, the boot server's ACK on 4011 and
the boot part of full-mode OFFERs and ACKs.

A client already running iPXE (option 175, or a user class in
C{dhcp.ipxe_user_classes}) is told so in L{ClientFacts.ipxe}; the policy
then gives it the iPXE script, which breaks the chainload loop.

UEFI PXE clients get their boot file either through the boot server on
4011 (C{dhcp.uefi: redirect}: no option 43 and no file in the offer, so
EDK2 sends a REQUEST to siaddr:4011) or straight from the offer (C{direct}:
option 43 sub-option 6 = 8, skip discovery).
"""

import struct

from twisted.logger import LogLevel

from provisioner.dhcp import replies, wire
from provisioner.dhcp.policy import HTTP_ARCHES, ClientFacts, archName
from provisioner.dhcp.wire import OPT, ZERO, MalformedPacket
from provisioner.events import NULL_SINK

__all__ = ["BootAnswers"]


class BootAnswers:
    """
    The boot part of the answers.

    @ivar config: the C{dhcp} section.
    @ivar reactor: C{IReactorTime} for reply delays.
    @ivar clients: the appliance's client directory.
    @ivar policy: an L{provisioner.dhcp.policy.IBootPolicy}.
    @ivar log: the responder's logger.
    @ivar events: the L{provisioner.events.IEventSink} of boot decisions.
    """

    #: seconds within which the same decision for a MAC is published once
    #: (a boot's DISCOVER, REQUEST and 4011 exchange are one event)
    EVENT_INTERVAL = 10.0

    def __init__(self, config, reactor, clients, policy, log, count, events=None):
        """
        @param count: C{count(name)} adds one to the responder's counter
            C{name}.
        @param events: where decisions are published (none by default).
        """
        self.config = config
        self.reactor = reactor
        self.clients = clients
        self.policy = policy
        self.log = log
        self._count = count
        self._lastDecision = {}
        self._published = {}
        self.events = events if events is not None else NULL_SINK

    def reconfigure(self, config):
        """
        Take a new C{dhcp} section.
        """
        self.config = config

    # Facts --------------------------------------------------------------

    def facts(self, packet):
        """
        Read a request into L{ClientFacts}. Options that are malformed are
        treated as absent.
        """
        mac = packet.mac
        arch = None
        raw = packet.option(OPT.CLIENT_ARCH)
        if raw is not None:
            try:
                arches = wire.parseArchitectures(raw)
            except MalformedPacket:
                arches = []
            if arches:
                arch = arches[0]
        vendor = packet.textOption(OPT.VENDOR_CLASS)
        userClasses = []
        raw = packet.option(OPT.USER_CLASS)
        if raw is not None:
            userClasses = [c.decode("latin-1") for c in wire.parseUserClass(raw)]
        ipxe = OPT.IPXE in packet.options or any(
            c in self.config["ipxe_user_classes"] for c in userClasses)
        uuid = None
        raw = packet.option(OPT.CLIENT_UUID)
        if raw is not None:
            try:
                uuid = wire.parseClientUUID(raw)
            except MalformedPacket:
                uuid = None
        http = bool(vendor and vendor.startswith("HTTPClient")) or arch in HTTP_ARCHES
        return ClientFacts(mac, arch, vendor, userClasses, ipxe, uuid, http)

    def isBootClient(self, facts):
        """
        Whether the client asks to network-boot (option 60 prefix).
        """
        vendor = facts.vendorClass
        if not vendor:
            return False
        return any(vendor.startswith(prefix) for prefix in self.config["vendor_classes"])

    # Decisions ----------------------------------------------------------

    def decide(self, facts, ip):
        """
        Ask the policy, log the decision, record the client. Returns a
        L{BootDecision} or L{None}.
        """
        facts.ip = ip
        try:
            decision = self.policy.decide(facts)
        except Exception:
            self.log.failure("boot policy {policy} failed for {mac}",
                             policy=getattr(self.policy, "name", self.policy), mac=facts.mac)
            decision = None
        bootFile = decision.bootFile if decision is not None else None
        key = (facts.arch, facts.ipxe, bootFile)
        level = LogLevel.debug
        if self._lastDecision.get(facts.mac) != key:
            self._lastDecision[facts.mac] = key
            if len(self._lastDecision) > 100000:
                self._lastDecision.clear()
            level = LogLevel.info
        self.log.emit(
            level, "boot decision: {mac} arch={arch} ({archName}) vendor={vendor!r} "
            "ipxe={ipxe} -> {bootFile} ({reason})", mac=facts.mac, arch=facts.arch,
            archName=archName(facts.arch), vendor=facts.vendorClass, ipxe=facts.ipxe,
            bootFile=bootFile, reason=decision.reason if decision is not None else "none")
        self._publish(facts, ip, decision, key)
        if facts.mac is not None:
            try:
                self.clients.update(
                    mac=facts.mac, ip=ip, arch=facts.arch, ipxe=facts.ipxe,
                    vendor_class=facts.vendorClass,
                    user_class=",".join(facts.userClasses) or None,
                    uuid=facts.uuid, boot_file=bootFile)
            except Exception:
                self.log.failure("client directory update failed for {mac}", mac=facts.mac)
        return decision

    def _publish(self, facts, ip, decision, key):
        """
        Publish a decision (C{dhcp.boot}): once per MAC and decision within
        L{EVENT_INTERVAL} seconds.
        """
        now = self.reactor.seconds()
        last = self._published.get(facts.mac)
        if last is not None and last[0] == key and now - last[1] < self.EVENT_INTERVAL:
            return
        self._published[facts.mac] = (key, now)
        if len(self._published) > 100000:
            self._published.clear()
        self.events.publish(
            "dhcp.boot", mac=facts.mac, level="info" if decision is not None else "warn",
            ip=ip, arch=facts.arch, arch_name=archName(facts.arch), vendor=facts.vendorClass,
            ipxe=bool(facts.ipxe), http=bool(facts.http), uuid=facts.uuid,
            boot_file=decision.bootFile if decision is not None else None,
            reason=decision.reason if decision is not None else "the policy gave nothing")

    # Boot information in a reply ------------------------------------------

    def addBoot(self, reply, request, facts, decision, serverAddress, port4011):
        """
        Put boot information into a reply to a network-boot client.

        @param port4011: whether this is the boot server's answer (always
            carries the file).
        """
        http = facts.http
        reply.setOption(OPT.VENDOR_CLASS, b"HTTPClient" if http else b"PXEClient")
        uuid = request.option(OPT.CLIENT_UUID)
        if uuid is not None:
            reply.setOption(OPT.CLIENT_UUID, uuid)
        if decision is None:
            return
        nextServer = decision.nextServer or self.config["next_server"] or serverAddress
        if nextServer:
            reply.siaddr = nextServer
            reply.setOption(OPT.TFTP_SERVER, nextServer.encode())
            reply.sname = nextServer.encode()[:63]
        uefi = facts.arch not in (None, 0) and not facts.ipxe and not http
        redirect = uefi and not port4011 and self.config["uefi"] == "redirect"
        if redirect:
            # No option 43 and no file: EDK2 asks siaddr:4011 (BINL).
            return
        bootFile = decision.bootFile.encode("utf-8")
        if len(bootFile) <= 127:
            reply.file = bootFile
        reply.setOption(OPT.BOOTFILE, bootFile)
        self._addVendor(reply, request, http, port4011)
        self._addPXELinux(reply)

    def _addVendor(self, reply, request, http, port4011):
        """
        Option 43: in an offer to a PXE client, skip boot server discovery;
        in the boot server's answer, the boot item the client asked for.
        """
        if not http and not port4011:
            # Skip boot server discovery: boot the file in this packet.
            reply.setOption(OPT.VENDOR, wire.encodePXEVendor(discoveryControl=8))
        if port4011:
            vendor = request.option(OPT.VENDOR)
            item = None
            if vendor is not None:
                try:
                    item = wire.parsePXEVendor(vendor).get("boot_item")
                except MalformedPacket:
                    item = None
            if item is not None:
                reply.setOption(OPT.VENDOR, wire.encodePXEVendor(bootItem=item))

    def _addPXELinux(self, reply):
        """
        Options 208-211 (C{dhcp.pxelinux}), when any is set.
        """
        pxelinux = self.config["pxelinux"]
        if any(v is not None for v in pxelinux.values()):
            reply.setOption(OPT.PXELINUX_MAGIC, b"\xf1\x00\x74\x7e")
            if pxelinux["config_file"] is not None:
                reply.setOption(OPT.PXELINUX_CONFIG, pxelinux["config_file"].encode())
            if pxelinux["path_prefix"] is not None:
                reply.setOption(OPT.PXELINUX_PREFIX, pxelinux["path_prefix"].encode())
            if pxelinux["reboot_time"] is not None:
                reply.setOption(OPT.PXELINUX_REBOOT, struct.pack("!I", pxelinux["reboot_time"]))

    # Answers --------------------------------------------------------------

    def proxyOffer(self, packet, iface, send):
        """
        The proxyDHCP OFFER to a DISCOVER on port 67: no address, the boot
        information, sent after C{dhcp.reply_delay}.

        @return: a Deferred if the reply waits for the delay, else L{None}.
        """
        facts = self.facts(packet)
        if not self.isBootClient(facts):
            self._count("proxy-not-pxe")
            return None
        decision = self.decide(facts, None)
        if decision is None:
            return None
        server = replies.serverAddress(self.config, iface)
        reply = replies.newReply(packet, wire.DHCPOFFER, server)
        self.addBoot(reply, packet, facts, decision, server, port4011=False)
        replies.echoRelay(packet, reply)
        destination = replies.destination(self.config, packet, reply)
        return replies.later(self.reactor, self.config["reply_delay"], send, reply, destination)

    def bootServerAck(self, packet, iface, send, source):
        """
        The boot server's ACK to a REQUEST or INFORM on port 4011: the boot
        file, sent back to C{source}; nothing to a client that does not
        network-boot or that the policy gives nothing.
        """
        facts = self.facts(packet)
        if not self.isBootClient(facts):
            return None
        ip = packet.ciaddr if packet.ciaddr != ZERO else None
        decision = self.decide(facts, ip)
        if decision is None:
            return None
        server = replies.serverAddress(self.config, iface)
        reply = replies.newReply(packet, wire.DHCPACK, server)
        self.addBoot(reply, packet, facts, decision, server, port4011=True)
        self.log.debug("PXE boot server ACK to {mac} at {source}: {file}",
                       mac=facts.mac, source=source, file=decision.bootFile)
        send(reply, source)
        return None
