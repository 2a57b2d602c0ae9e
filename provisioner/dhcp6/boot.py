# -*- test-case-name: tests.test_dhcp6_server -*-
"""
What DHCPv6 network-boot clients are told: the facts read from a message
(options 1, 15, 16, 61, 62), the boot policy's decision, and the boot
file URL (option 59, RFC 5970) with its parameters (60) and the vendor
class echoed (16).

The decision is the DHCPv4 policy's (L{provisioner.dhcp.policy}, the same
L{IBootPolicy} seam) given the C{dhcp6} section's boot files: a client
running iPXE (user class in C{dhcp6.ipxe_user_classes}) gets
C{dhcp6.ipxe_script}; otherwise its first architecture picks the file from
C{dhcp6.boot}. A name becomes a URL on the server's address:
C{tftp://[ADDR]/NAME}, or C{http://[ADDR]:PORT/NAME} for the HTTP boot
architectures (15, 16, 19) and C{HTTPClient} vendor classes; a value that
is already a URL has C{{server}} replaced by C{[ADDR]}.
"""

from twisted.logger import LogLevel

from provisioner.dhcp.policy import HTTP_ARCHES, ArchitectureBootPolicy, ClientFacts, archName
from provisioner.dhcp6 import wire
from provisioner.dhcp6.wire import OPT, PXE_ENTERPRISE
from provisioner.events import NULL_SINK

__all__ = ["BootAnswers6", "bootURL"]


def bootURL(value, server, http, httpPort):
    """
    The boot file URL for a policy's answer.

    @param value: a file name or a URL (C{{server}} is replaced).
    @param server: our IPv6 address (text).
    @param http: whether the client boots over HTTP.
    @param httpPort: the HTTP port.
    """
    host = "[%s]" % (server,)
    if "://" in value:
        return value.replace("{server}", host)
    name = value.lstrip("/")
    if http:
        return "http://%s:%d/%s" % (host, httpPort, name)
    return "tftp://%s/%s" % (host, name)


def _policyConfig(config):
    """
    The C{dhcp6} section as the DHCPv4 policy reads a section.
    """
    return {"boot": dict(config["boot"], bios=None), "ipxe_script": config["ipxe_script"],
            "overrides": {}}


class BootAnswers6:
    """
    The boot part of the DHCPv6 answers.

    @ivar config: the C{dhcp6} section.
    @ivar policy: an L{provisioner.dhcp.policy.IBootPolicy}.
    """

    def __init__(self, config, clients, log, policy=None, inventoryGetter=lambda: None,
                 events=None, httpPort=8080):
        self.log = log
        self.clients = clients
        self.events = events if events is not None else NULL_SINK
        self.httpPort = httpPort
        self._lastDecision = {}
        self._ownPolicy = policy is None
        self.policy = policy if policy is not None else ArchitectureBootPolicy(
            _policyConfig(config), inventoryGetter)
        self.config = config

    def reconfigure(self, config, httpPort=None):
        self.config = config
        if httpPort is not None:
            self.httpPort = httpPort
        if self._ownPolicy:
            self.policy.reconfigure(_policyConfig(config))

    def facts(self, message):
        """
        Read a message into L{ClientFacts} (C{mac} from a DUID-LL or
        DUID-LLT, else L{None}). The message was validated when it was
        read, so nothing here raises.
        """
        mac = wire.duidMAC(message.clientId) if message.clientId is not None else None
        arches = message.architectures()
        arch = arches[0] if arches else None
        vendor = None
        for vc in message.vendorClasses():
            if vc.data:
                vendor = vc.text()
                break
        userClasses = [c.decode("latin-1") for c in message.userClasses()]
        ipxe = any(c in self.config["ipxe_user_classes"] for c in userClasses)
        http = bool(vendor and vendor.startswith("HTTPClient")) or arch in HTTP_ARCHES
        facts = ClientFacts(mac, arch, vendor, userClasses, ipxe, None, http)
        facts.duid = message.clientId.hex() if message.clientId is not None else None
        return facts

    def isBootClient(self, facts):
        """
        Whether the client asks to network-boot: a vendor class in
        C{dhcp6.vendor_classes}, an architecture (61), or iPXE.
        """
        if facts.arch is not None or facts.ipxe:
            return True
        vendor = facts.vendorClass
        return bool(vendor) and any(vendor.startswith(p) for p in self.config["vendor_classes"])

    def decide(self, facts, server, ip=None):
        """
        Ask the policy and make the URL.

        @return: the boot file URL, or L{None} (the policy gave nothing).
        """
        try:
            decision = self.policy.decide(facts)
        except Exception:
            self.log.failure("boot policy failed for {duid}", duid=facts.duid)
            decision = None
        url = None
        if decision is not None and server:
            url = bootURL(decision.bootFile, server, facts.http, self.httpPort)
        key = (facts.arch, facts.ipxe, url)
        level = LogLevel.debug
        if self._lastDecision.get(facts.duid) != key:
            self._lastDecision[facts.duid] = key
            if len(self._lastDecision) > 100000:
                self._lastDecision.clear()
            level = LogLevel.info
        self.log.emit(level, "DHCPv6 boot decision: {duid} mac={mac} arch={arch} ({archName}) "
                      "vendor={vendor!r} ipxe={ipxe} -> {url} ({reason})", duid=facts.duid,
                      mac=facts.mac, arch=facts.arch, archName=archName(facts.arch),
                      vendor=facts.vendorClass, ipxe=facts.ipxe, url=url,
                      reason=decision.reason if decision is not None else "none")
        if level == LogLevel.info:
            self.events.publish("dhcp6.boot", mac=facts.mac, level="info" if url else "warn",
                                ip=ip, duid=facts.duid, arch=facts.arch,
                                arch_name=archName(facts.arch), vendor=facts.vendorClass,
                                ipxe=bool(facts.ipxe), http=bool(facts.http), boot_file=url)
        if facts.mac is not None:
            try:
                self.clients.update(mac=facts.mac, ip=ip, arch=facts.arch, ipxe=facts.ipxe,
                                    vendor_class=facts.vendorClass,
                                    user_class=",".join(facts.userClasses) or None,
                                    boot_file=url)
            except Exception:
                self.log.failure("client directory update failed for {mac}", mac=facts.mac)
        return url

    def addBoot(self, reply, facts, url, echoVendor):
        """
        Put the boot file URL (59), its parameters (60) and, with
        C{echoVendor}, the vendor class (16: C{PXEClient} or
        C{HTTPClient}, enterprise 343) into a reply.
        """
        if echoVendor:
            name = b"HTTPClient" if facts.http else b"PXEClient"
            reply.addOption(OPT.VENDOR_CLASS, wire.VendorClass(PXE_ENTERPRISE, [name]))
        reply.addOption(OPT.BOOTFILE_URL, url.encode("ascii", "replace"))
        params = self.config["bootfile_params"]
        if params:
            reply.addOption(OPT.BOOTFILE_PARAM, wire.encodeBootfileParams(params))
