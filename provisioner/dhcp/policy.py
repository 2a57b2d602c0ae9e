# -*- test-case-name: tests.test_dhcp_policy -*-
"""
The boot-file policy: which network bootstrap program (or iPXE script) a
client gets, decided from what DHCP saw of it. Behind L{IBootPolicy} so a
site can replace it.

The default policy (L{ArchitectureBootPolicy}):

  1. a per-host override (inventory first, then C{dhcp.overrides});
  2. a client already running iPXE (option 77 in C{dhcp.ipxe_user_classes},
     or option 175 present) gets C{dhcp.ipxe_script}: this breaks the
     chainload loop (firmware -> iPXE NBP -> iPXE asks again -> script);
  3. otherwise the client architecture (option 93) picks the NBP from
     C{dhcp.boot}: 0 BIOS, 6 IA32, 7 and 9 x64 UEFI, 10 ARM32, 11 ARM64,
     15/16/19 HTTP boot (a URL).
"""

from zope.interface import Attribute, Interface, implementer

from provisioner.directory import normaliseMAC

__all__ = [
    "IBootPolicy",
    "ClientFacts",
    "BootDecision",
    "ArchitectureBootPolicy",
    "ARCH_NAMES",
    "archName",
]

# RFC 4578 / IANA "Processor Architecture Types". 7 is x64 UEFI in the
# IANA registry and in firmware; RFC 4578 called it "EFI BC" and 9 "EFI
# x86-64": map both to x64.
ARCH_NAMES = {
    0: "bios",
    6: "uefi_ia32",
    7: "uefi_x64",
    9: "uefi_x64",
    10: "uefi_arm32",
    11: "uefi_arm64",
    15: "http_ia32",
    16: "http_x64",
    19: "http_arm64",
}

HTTP_ARCHES = (15, 16, 19)


def archName(arch):
    """
    The C{dhcp.boot} key for an architecture number, or C{"arch<N>"}.
    """
    if arch is None:
        return "bios"
    return ARCH_NAMES.get(arch, "arch%d" % (arch,))


class ClientFacts:
    """
    What DHCP learnt about a client, handed to the policy.

    @ivar mac: C{aa:bb:cc:dd:ee:ff}.
    @ivar arch: option 93's first architecture, or L{None} (BIOS ROMs that
        predate RFC 4578 send none).
    @ivar vendorClass: option 60 as text, or L{None}.
    @ivar userClasses: option 77 as a list of text.
    @ivar ipxe: whether the client is running iPXE (77 or 175).
    @ivar uuid: option 97 GUID text, or L{None}.
    @ivar http: whether it is a UEFI HTTP boot client (C{HTTPClient}).
    @ivar ip: the address it has or will have, or L{None}.
    """

    def __init__(self, mac, arch=None, vendorClass=None, userClasses=(), ipxe=False,
                 uuid=None, http=False, ip=None):
        self.mac = mac
        self.arch = arch
        self.vendorClass = vendorClass
        self.userClasses = list(userClasses)
        self.ipxe = ipxe
        self.uuid = uuid
        self.http = http
        self.ip = ip

    def __repr__(self):
        return "<ClientFacts mac=%s arch=%s ipxe=%s vendor=%r>" % (
            self.mac, self.arch, self.ipxe, self.vendorClass)


class BootDecision:
    """
    What to tell the client.

    @ivar bootFile: the file name or URL (C{file} field and option 67).
    @ivar nextServer: the TFTP server (siaddr and option 66), or L{None} for
        the responder's default.
    @ivar reason: one word for the log (C{override}, C{ipxe}, C{arch}).
    """

    def __init__(self, bootFile, nextServer=None, reason="arch"):
        self.bootFile = bootFile
        self.nextServer = nextServer
        self.reason = reason

    def __repr__(self):
        return "<BootDecision %r via %s>" % (self.bootFile, self.reason)

    def __eq__(self, other):
        if not isinstance(other, BootDecision):
            return NotImplemented
        return (self.bootFile, self.nextServer, self.reason) == (
            other.bootFile, other.nextServer, other.reason)


class IBootPolicy(Interface):
    """
    Chooses a boot file for a network-boot client.
    """

    name = Attribute("A short name for logs.")

    def decide(facts):
        """
        @param facts: a L{ClientFacts}.
        @return: a L{BootDecision}, or L{None} to send no boot information
            (in proxy mode the client is then not answered at all).
        """


def _inventoryOverride(inventory, mac, uuid=None):
    """
    Ask the inventory (set by the menus service) for a host's boot override.
    Duck-typed: C{lookup(mac=, uuid=)} (the menus inventory), else C{host(mac)}
    or C{byMAC(mac)}, returning an object or mapping with C{boot_file} /
    C{ipxe_script} / C{next_server}, as attributes, keys, or in its C{vars}.
    """
    if inventory is None:
        return None
    host = None
    lookup = getattr(inventory, "lookup", None)
    if uuid is not None and not uuid.strip("0-"):
        uuid = None  # all-zero GUIDs (QEMU without -uuid, many NICs) identify nobody
    if callable(lookup):
        try:
            host = lookup(mac=mac, uuid=uuid)
        except Exception:
            host = None
    else:
        for name in ("host", "byMAC"):
            finder = getattr(inventory, name, None)
            if callable(finder):
                try:
                    host = finder(mac)
                except Exception:
                    host = None
                break
    if host is None:
        return None
    out = {}
    extra = host.get("vars") if isinstance(host, dict) else getattr(host, "vars", None)
    for key in ("boot_file", "ipxe_script", "next_server"):
        value = host.get(key) if isinstance(host, dict) else getattr(host, key, None)
        if value is None and isinstance(extra, dict):
            value = extra.get(key)
        if value is not None:
            out[key] = value
    return out or None


@implementer(IBootPolicy)
class ArchitectureBootPolicy:
    """
    The default policy (see the module docstring).

    @ivar config: the C{dhcp} section.
    @ivar inventoryGetter: a callable returning the current inventory or
        L{None}.
    """

    name = "architecture"

    def __init__(self, config, inventoryGetter=lambda: None):
        self.config = config
        self.inventoryGetter = inventoryGetter
        self._overrides = {}
        self.reconfigure(config)

    def reconfigure(self, config):
        """
        Take a new C{dhcp} section.
        """
        self.config = config
        overrides = {}
        for mac, entry in (config.get("overrides") or {}).items():
            if isinstance(entry, str):
                entry = {"boot_file": entry}
            overrides[normaliseMAC(mac)] = dict(entry)
        self._overrides = overrides

    def _override(self, mac, uuid=None):
        found = _inventoryOverride(self.inventoryGetter(), mac, uuid)
        if found is not None:
            return found
        return self._overrides.get(mac)

    def decide(self, facts):
        override = self._override(facts.mac, facts.uuid) if facts.mac else None
        nextServer = override.get("next_server") if override else None
        if facts.ipxe:
            script = (override or {}).get("ipxe_script") or self.config["ipxe_script"]
            reason = "override+ipxe" if override and override.get("ipxe_script") else "ipxe"
            return BootDecision(script, nextServer, reason)
        if override and override.get("boot_file"):
            return BootDecision(override["boot_file"], nextServer, "override")
        name = archName(facts.arch)
        bootFile = self.config["boot"].get(name)
        if bootFile is None:
            return None
        return BootDecision(bootFile, nextServer, "arch")
