# -*- test-case-name: tests.test_dhcp_schema -*-
"""
The C{dhcp} section of the configuration: the DHCP / proxyDHCP / PXE
responder. See C{docs/dhcp.md} for every key in context.
"""

import ipaddress

from provisioner.directory import normaliseMAC
from provisioner.config import Key, Section

__all__ = ["SCHEMA", "checkSubnet", "checkReservations", "checkOverrides"]

_SUBNET_KEYS = {
    "network": "the subnet, e.g. 198.18.0.0/24 (required)",
    "range": "[first, last] addresses handed out (required)",
    "router": "default gateway (option 3), or omitted",
    "dns": "list of DNS servers (option 6)",
    "domain": "domain name (option 15)",
    "lease_time": "lease time in seconds for this subnet (default: dhcp.lease_time)",
    "broadcast": "broadcast address (option 28; default: the subnet's)",
}


def checkSubnet(value):
    """
    Validate one C{dhcp.subnets} entry; return an error string or L{None}.
    """
    if not isinstance(value, dict):
        return "must be a mapping with network and range"
    unknown = sorted(set(value) - set(_SUBNET_KEYS))
    if unknown:
        return "unknown key %s (known: %s)" % (unknown[0], ", ".join(sorted(_SUBNET_KEYS)))
    try:
        network = ipaddress.IPv4Network(str(value.get("network")), strict=False)
    except ValueError:
        return "network must be an IPv4 network like 198.18.0.0/24 (got %r)" % (
            value.get("network"),)
    span = value.get("range")
    if not isinstance(span, list) or len(span) != 2:
        return "range must be [first, last]"
    try:
        first, last = (ipaddress.IPv4Address(str(a)) for a in span)
    except ValueError:
        return "range must hold two IPv4 addresses (got %r)" % (span,)
    if first not in network or last not in network:
        return "range %s-%s is not inside %s" % (first, last, network)
    if first > last:
        return "range starts after it ends (%s > %s)" % (first, last)
    for name in ("router", "broadcast"):
        if value.get(name) is not None:
            try:
                ipaddress.IPv4Address(str(value[name]))
            except ValueError:
                return "%s must be an IPv4 address (got %r)" % (name, value[name])
    dns = value.get("dns", [])
    if not isinstance(dns, list):
        return "dns must be a list of addresses"
    for a in dns:
        try:
            ipaddress.IPv4Address(str(a))
        except ValueError:
            return "dns entry %r is not an IPv4 address" % (a,)
    lease = value.get("lease_time")
    if lease is not None and (isinstance(lease, bool) or not isinstance(lease, int)
                              or lease < 60):
        return "lease_time must be a whole number of seconds, at least 60"
    if value.get("domain") is not None and not isinstance(value["domain"], str):
        return "domain must be a string"
    return None


def checkReservations(value):
    """
    C{dhcp.reservations}: MAC -> IPv4 address (or a mapping with C{ip} and
    optional C{hostname}).
    """
    seen = set()
    for mac, entry in value.items():
        try:
            normaliseMAC(mac)
        except ValueError:
            return "%r is not a MAC address" % (mac,)
        if isinstance(entry, dict):
            unknown = sorted(set(entry) - {"ip", "hostname"})
            if unknown:
                return "%s: unknown key %s (known: hostname, ip)" % (mac, unknown[0])
            address = entry.get("ip")
        else:
            address = entry
        try:
            address = str(ipaddress.IPv4Address(str(address)))
        except ValueError:
            return "%s: %r is not an IPv4 address" % (mac, address)
        if address in seen:
            return "%s is reserved twice" % (address,)
        seen.add(address)
    return None


def checkOverrides(value):
    """
    C{dhcp.overrides}: MAC -> boot file (text), or a mapping with
    C{boot_file}, C{ipxe_script}, C{next_server}.
    """
    for mac, entry in value.items():
        try:
            normaliseMAC(mac)
        except ValueError:
            return "%r is not a MAC address" % (mac,)
        if isinstance(entry, str):
            continue
        if not isinstance(entry, dict):
            return "%s: must be a boot file name or a mapping" % (mac,)
        unknown = sorted(set(entry) - {"boot_file", "ipxe_script", "next_server"})
        if unknown:
            return "%s: unknown key %s (known: boot_file, ipxe_script, next_server)" % (
                mac, unknown[0])
        for name in ("boot_file", "ipxe_script"):
            if entry.get(name) is not None and not isinstance(entry[name], str):
                return "%s: %s must be text" % (mac, name)
        if entry.get("next_server") is not None:
            try:
                ipaddress.IPv4Address(str(entry["next_server"]))
            except ValueError:
                return "%s: next_server must be an IPv4 address" % (mac,)
    return None


def _checkSection(values):
    if values["enabled"] and values["mode"] == "full" and not values["subnets"]:
        return "mode 'full' needs at least one entry in dhcp.subnets"
    if values["enabled"] and not values["port"]:
        if values["mode"] == "full":
            return "dhcp.port 0 (no DHCP port) only works in mode 'proxy'"
        if not values["pxe_port"]:
            return "dhcp.port and dhcp.pxe_port are both 0: nothing to listen on"
    if values["enabled"] and not values["interfaces"] and values["address"] in (
            "0.0.0.0", "::"):
        return ("set dhcp.interfaces (the responder never answers on every interface) "
                "or a specific dhcp.address")
    return None


_ARCH_FILES = Section("network bootstrap program per client architecture (option 93)", {
    "bios": Key("undionly.kpxe", "str", "arch 0 (x86 BIOS)"),
    "uefi_ia32": Key("ipxe-ia32.efi", "str", "arch 6 (x86 UEFI)"),
    "uefi_x64": Key("snponly.efi", "str", "arch 7 and 9 (x64 UEFI; firmware uses 7, "
                    "some ROMs still send 9)"),
    "uefi_arm32": Key("ipxe-arm32.efi", "str", "arch 10 (ARM 32-bit UEFI)"),
    "uefi_arm64": Key("ipxe-arm64.efi", "str", "arch 11 (ARM 64-bit UEFI)"),
    "http_ia32": Key(None, "str", "arch 15 (x86 UEFI HTTP boot): a URL, or null to ignore "
                     "such clients", nullable=True),
    "http_x64": Key(None, "str", "arch 16 (x64 UEFI HTTP boot): a URL, or null to ignore "
                    "such clients", nullable=True),
    "http_arm64": Key(None, "str", "arch 19 (ARM64 UEFI HTTP boot): a URL, or null to "
                      "ignore such clients", nullable=True),
})


SCHEMA = Section("the DHCP / proxyDHCP / PXE responder (UDP 67 and 4011)", {
    "enabled": Key(False, "bool", "run the DHCP responder (needs root or "
                   "CAP_NET_BIND_SERVICE + CAP_NET_RAW for port 67 and SO_BINDTODEVICE)"),
    "mode": Key("proxy", "str", "proxy: answer PXE/HTTPClient clients only, with boot "
                "information and no address (another DHCP server hands out addresses); "
                "full: be the DHCP server (pools, leases, reservations)",
                choices=["proxy", "full"]),
    "interfaces": Key([], "list", "network interfaces to answer on (SO_BINDTODEVICE); "
                      "nothing else is ever answered", items=Key("", "str", "interface")),
    "address": Key("0.0.0.0", "ip", "address the sockets bind to; keep 0.0.0.0 (broadcasts "
                   "arrive there) except in tests"),
    "port": Key(67, "port", "DHCP server port; 0 in proxy mode: do not use it, answer "
                "only as the PXE boot server on pxe_port, for a host whose own DHCP server "
                "has port 67 and puts option 60 'PXEClient' in its offers (PXE 2.1: the "
                "client then asks port 4011 of that host)"),
    "client_port": Key(68, "port", "port replies go to (DHCP client port)"),
    "pxe_port": Key(4011, "port", "PXE boot server port (ProxyDHCP REQUEST / boot "
                    "server discovery); 0 disables it"),
    "server_address": Key(None, "ip", "our address in replies (option 54, default "
                          "siaddr); null: the interface's first IPv4 address",
                          nullable=True),
    "next_server": Key(None, "ip", "TFTP server handed to clients (siaddr, option 66); "
                       "null: server_address", nullable=True),
    "uefi": Key("redirect", "str", "how UEFI PXE clients get their boot file in proxy "
                "mode: redirect (no option 43; the client asks the boot server on "
                "pxe_port, the dnsmasq/pixiecore way) or direct (option 43 sub-option 6 = 8: "
                "boot the file in the offer, the smee way)", choices=["redirect", "direct"]),
    "boot": _ARCH_FILES,
    "ipxe_script": Key("boot.ipxe", "str", "what a client already running iPXE (option 77 "
                       "'iPXE' or option 175 present) gets instead of an NBP: a TFTP file "
                       "name or an http:// URL. This is the chainload loop breaker"),
    "ipxe_user_classes": Key(["iPXE"], "list", "option 77 values that mark a client as "
                             "iPXE (embedded builds may set their own)",
                             items=Key("", "str", "user class")),
    "vendor_classes": Key(["PXEClient", "HTTPClient"], "list", "option 60 prefixes that "
                          "mark a network-boot client (add e.g. 'HW-Client' for vendor ROMs)",
                          items=Key("", "str", "vendor class prefix")),
    "overrides": Key({}, "map", "per-host boot overrides: MAC -> boot file, or MAC -> "
                     "{boot_file, ipxe_script, next_server} (the inventory's, once it "
                     "exists, take precedence)", check=checkOverrides),
    "pxelinux": Section("RFC 5071 PXELINUX options, sent when set", {
        "config_file": Key(None, "str", "option 209", nullable=True),
        "path_prefix": Key(None, "str", "option 210", nullable=True),
        "reboot_time": Key(None, "int", "option 211, seconds", nullable=True, minimum=0),
    }),
    "reply_delay": Key(0.0, "float", "seconds to wait before answering a DISCOVER (some "
                       "ROMs need the address server's offer first)", minimum=0, maximum=10),
    "subnets": Key([], "list", "full mode: address pools, one per subnet: {network, range: "
                   "[first, last], router, dns: [...], domain, lease_time, broadcast}",
                   items=Key({}, "any", "subnet", check=checkSubnet)),
    "reservations": Key({}, "map", "full mode: MAC -> IPv4 address (or {ip, hostname}); "
                        "the inventory's reservations are used instead once it exists",
                        check=checkReservations),
    "lease_time": Key(3600, "int", "full mode: default lease time in seconds", minimum=60),
    "offer_hold": Key(30, "int", "full mode: seconds an offered address stays held for the "
                      "client before it can go to another", minimum=1, maximum=600),
    "offer_pressure": Key(0.5, "float", "full mode: share of a pool that outstanding offers "
                          "(sent, not yet requested) may take before the pool is under "
                          "pressure (a DISCOVER flood, or many machines booting at once); "
                          "then a client with no lease, reservation or offer of its own gets "
                          "a weak offer: held offer_hold_pressure seconds, and the first "
                          "REQUEST for its address wins it", minimum=0.0, maximum=1.0),
    "offer_hold_pressure": Key(3, "int", "full mode: seconds a weak offer (see "
                               "offer_pressure) keeps its address from other DISCOVERs",
                               minimum=1, maximum=600),
    "decline_share": Key(0.25, "float", "full mode: at most this share of a pool (at least "
                         "one address) is held away at once by DECLINEs (each for 10 "
                         "minutes); a DECLINE beyond it frees the pool's oldest declined "
                         "address first", minimum=0.0, maximum=1.0),
    "authoritative": Key(True, "bool", "full mode: NAK requests for addresses we did not "
                         "give (false: stay silent)"),
    "lease_file": Key("dhcp-leases.sqlite", "path", "full mode: the SQLite lease database "
                      "(WAL); survives restarts"),
    "lease_sync": Key("full", "str", "full: fsync each group commit before the ACKs it "
                      "carries leave (survives a power cut); normal: no fsync (survives a "
                      "crash or kill -9 of the process, faster on slow disks)",
                      choices=["full", "normal"]),
}, check=_checkSection)
