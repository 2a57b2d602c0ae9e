# -*- test-case-name: tests.test_dhcp6_server -*-
"""
The C{dhcp6} section of the configuration: DHCPv6 for network boot
(UDP 547 and the PXE boot server's 4011), and router advertisements. See
C{docs/dhcp6.md} for every key in context.
"""

import ipaddress

from provisioner.config import Key, Section

__all__ = ["SCHEMA", "checkSubnet6"]

_SUBNET_KEYS = {
    "prefix": "the on-link prefix, e.g. 2001:db8:1::/64 (required)",
    "range": "[first, last] addresses handed out (required)",
    "dns": "list of DNS servers (option 23)",
    "preferred_lifetime": "seconds (default: dhcp6.preferred_lifetime)",
    "valid_lifetime": "seconds (default: dhcp6.valid_lifetime)",
}


def checkSubnet6(value):
    """
    Validate one C{dhcp6.subnets} entry; return an error string or L{None}.
    """
    if not isinstance(value, dict):
        return "must be a mapping with prefix and range"
    unknown = sorted(set(value) - set(_SUBNET_KEYS))
    if unknown:
        return "unknown key %s (known: %s)" % (unknown[0], ", ".join(sorted(_SUBNET_KEYS)))
    try:
        prefix = ipaddress.IPv6Network(str(value.get("prefix")), strict=False)
    except ValueError:
        return "prefix must be an IPv6 prefix like 2001:db8:1::/64 (got %r)" % (
            value.get("prefix"),)
    span = value.get("range")
    if not isinstance(span, list) or len(span) != 2:
        return "range must be [first, last]"
    try:
        first, last = (ipaddress.IPv6Address(str(a)) for a in span)
    except ValueError:
        return "range must hold two IPv6 addresses (got %r)" % (span,)
    if first not in prefix or last not in prefix:
        return "range %s-%s is not inside %s" % (first, last, prefix)
    if first > last:
        return "range starts after it ends (%s > %s)" % (first, last)
    dns = value.get("dns", [])
    if not isinstance(dns, list):
        return "dns must be a list of addresses"
    for a in dns:
        try:
            ipaddress.IPv6Address(str(a))
        except ValueError:
            return "dns entry %r is not an IPv6 address" % (a,)
    for name in ("preferred_lifetime", "valid_lifetime"):
        v = value.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 60):
            return "%s must be a whole number of seconds, at least 60" % (name,)
    return None


def _checkBootValue(value):
    if value is not None and not value.strip():
        return "must not be empty (null: do not answer such clients)"
    return None


def _checkSection(values):
    if not values["enabled"]:
        return None
    if values["mode"] == "full" and not values["subnets"]:
        return "mode 'full' needs at least one entry in dhcp6.subnets"
    if not values["interfaces"] and values["address"] == "::":
        return ("set dhcp6.interfaces (the responder joins ff02::1:2 on each and never "
                "answers on every interface) or a specific dhcp6.address")
    if values["router_advertisements"] and not values["interfaces"]:
        return "dhcp6.router_advertisements needs dhcp6.interfaces"
    if values["router_advertisements"] and not values["subnets"] and \
            not values["ra_prefixes"]:
        return ("dhcp6.router_advertisements: no prefix to advertise (set dhcp6.subnets or "
                "dhcp6.ra_prefixes)")
    if values["preferred_lifetime"] > values["valid_lifetime"]:
        return "dhcp6.preferred_lifetime is longer than dhcp6.valid_lifetime"
    return None


def _bootKey(default, doc):
    return Key(default, "str", doc, nullable=True, check=_checkBootValue)


_BOOT = Section("boot file per client architecture (option 61): a file name (made into "
                "tftp://[server]/NAME, or http://[server]:PORT/NAME for HTTP boot "
                "architectures) or a whole URL, where {server} is replaced by the server's "
                "bracketed address", {
                    "uefi_ia32": _bootKey("ipxe-ia32.efi", "arch 6 (x86 UEFI)"),
                    "uefi_x64": _bootKey("snponly.efi", "arch 7 and 9 (x64 UEFI)"),
                    "uefi_arm32": _bootKey("ipxe-arm32.efi", "arch 10 (ARM 32-bit UEFI)"),
                    "uefi_arm64": _bootKey("ipxe-arm64.efi", "arch 11 (ARM 64-bit UEFI)"),
                    "http_ia32": _bootKey(None, "arch 15 (x86 UEFI HTTP boot); null: ignore "
                                          "such clients"),
                    "http_x64": _bootKey("snponly.efi", "arch 16 (x64 UEFI HTTP boot); "
                                         "null: ignore such clients"),
                    "http_arm64": _bootKey(None, "arch 19 (ARM64 UEFI HTTP boot); null: "
                                           "ignore such clients"),
                })


SCHEMA = Section("DHCPv6 for network boot (UDP 547 and 4011) and router advertisements", {
    "enabled": Key(False, "bool", "run the DHCPv6 responder (needs root or "
                   "CAP_NET_BIND_SERVICE + CAP_NET_RAW for port 547, SO_BINDTODEVICE and "
                   "router advertisements)"),
    "mode": Key("boot", "str", "boot: beside a site's own DHCPv6 server, answer only "
                "network-boot clients, with the boot file URL (options 59, 60) and no "
                "address; full: be the DHCPv6 server (address pools, leases)",
                choices=["boot", "full"]),
    "interfaces": Key([], "list", "network interfaces to answer on (SO_BINDTODEVICE, "
                      "ff02::1:2 joined on each); nothing else is ever answered",
                      items=Key("", "str", "interface")),
    "address": Key("::", "ip", "address the sockets bind to; keep :: (multicast arrives "
                   "there) except in tests"),
    "port": Key(547, "port", "DHCPv6 server port"),
    "pxe_port": Key(4011, "port", "PXE boot server port: EDK2 asks it for the boot file "
                    "after an offer that carries the PXEClient vendor class (boot mode); 0 "
                    "disables it"),
    "server_address": Key(None, "ip", "our address in boot file URLs; null: the "
                          "interface's first global (or ULA) IPv6 address",
                          nullable=True),
    "server_duid": Key(None, "str", "our DUID (option 2) in hex; null: a DUID-LL of the "
                       "first interface's MAC address", nullable=True),
    "http_port": Key(None, "port", "port in the http:// boot file URLs; null: http.port",
                     nullable=True),
    "boot": _BOOT,
    "ipxe_script": Key("boot.ipxe", "str", "what a client already running iPXE (user class "
                       "in ipxe_user_classes) gets: a file name (tftp://[server]/NAME) or a "
                       "URL ({server} replaced)"),
    "ipxe_user_classes": Key(["iPXE"], "list", "option 15 values that mark a client as iPXE",
                             items=Key("", "str", "user class")),
    "vendor_classes": Key(["PXEClient", "HTTPClient"], "list", "option 16 prefixes that "
                          "mark a network-boot client (besides option 61)",
                          items=Key("", "str", "vendor class prefix")),
    "bootfile_params": Key([], "list", "option 60 (boot file parameters) sent with the URL",
                           items=Key("", "str", "parameter")),
    "preference": Key(None, "int", "option 7 in Advertises (full mode); null: none. Never "
                      "255 beside another server: the client would not wait for its offer",
                      nullable=True, minimum=0, maximum=255),
    "rapid_commit": Key(True, "bool", "full mode: answer a Solicit carrying rapid commit "
                        "(14) with a Reply and a lease at once"),
    "subnets": Key([], "list", "full mode: address pools, one per prefix: {prefix, range: "
                   "[first, last], dns: [...], preferred_lifetime, valid_lifetime}",
                   items=Key({}, "any", "subnet", check=checkSubnet6)),
    "dns_servers": Key([], "list", "option 23 for every client that asks (a subnet's dns "
                       "comes first)", items=Key("", "ip", "address")),
    "preferred_lifetime": Key(3000, "int", "full mode: default preferred lifetime (seconds)",
                              minimum=60),
    "valid_lifetime": Key(3600, "int", "full mode: default valid lifetime (seconds)",
                          minimum=60),
    "offer_hold": Key(30, "int", "full mode: seconds an advertised address stays held for "
                      "the client", minimum=1, maximum=600),
    "lease_file": Key("dhcp6-leases.sqlite", "path", "full mode: the SQLite lease database "
                      "(WAL; apart from the DHCPv4 leases)"),
    "lease_sync": Key("full", "str", "full: fsync each group commit before the Replies it "
                      "carries leave; normal: no fsync", choices=["full", "normal"]),
    "router_advertisements": Key(False, "bool", "send router advertisements on each "
                                 "interface (as dnsmasq's enable-ra): M=1, O=1, each "
                                 "subnet's prefix on-link without the A flag; and answer "
                                 "router solicitations"),
    "ra_interval": Key(10, "int", "seconds between unsolicited router advertisements",
                       minimum=3, maximum=1800),
    "ra_router_lifetime": Key(0, "int", "router lifetime in the advertisements (0: we are "
                              "not a default router, the isolated-network case)",
                              minimum=0, maximum=9000),
    "ra_prefixes": Key([], "list", "more prefixes to advertise on-link (boot mode on a "
                       "network with no other router)", items=Key("", "ipnet", "prefix")),
}, check=_checkSection)
