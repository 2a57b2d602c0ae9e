# -*- test-case-name: tests.test_dhcp_wire -*-
"""
A pure DHCPv4 codec (RFC 2131, RFC 2132): no transport, no reactor.

L{DHCPPacket.from_wire} parses a datagram (checking every length before it
unpacks anything) and raises L{MalformedPacket} for anything it cannot read;
L{DHCPPacket.to_wire} builds one. Options are kept as raw bytes, keyed by
code, in arrival order; repeated instances of an option are concatenated
(RFC 3396) and option overload (52) is honoured: options carried in the
C{file} and C{sname} fields are read too.

Helpers decode the options a PXE responder cares about: 43 (PXE
sub-options), 55, 57, 60, 61, 77 (both RFC 3004 length-prefixed and iPXE's
raw C{iPXE}), 82, 93, 94, 97 (the GUID with its first three fields
little-endian), 175 (iPXE's encapsulated space) and 208-211 (RFC 5071).
"""

import socket
import struct

__all__ = [
    "MalformedPacket",
    "DHCPPacket",
    "MAGIC_COOKIE",
    "BOOTREQUEST",
    "BOOTREPLY",
    "DHCPDISCOVER",
    "DHCPOFFER",
    "DHCPREQUEST",
    "DHCPDECLINE",
    "DHCPACK",
    "DHCPNAK",
    "DHCPRELEASE",
    "DHCPINFORM",
    "MESSAGE_TYPES",
    "OPT",
    "parseSubOptions",
    "encodeSubOptions",
    "parseUserClass",
    "encodeUserClass",
    "parseArchitectures",
    "parseUNDI",
    "parseClientUUID",
    "encodeClientUUID",
    "parsePXEVendor",
    "encodePXEVendor",
    "ip2bytes",
    "bytes2ip",
    "ZERO",
]

# An address field that is not set (ciaddr, yiaddr, siaddr, giaddr), as text.
ZERO = "0.0.0.0"

MAGIC_COOKIE = b"\x63\x82\x53\x63"

BOOTREQUEST = 1
BOOTREPLY = 2

DHCPDISCOVER = 1
DHCPOFFER = 2
DHCPREQUEST = 3
DHCPDECLINE = 4
DHCPACK = 5
DHCPNAK = 6
DHCPRELEASE = 7
DHCPINFORM = 8

MESSAGE_TYPES = {
    DHCPDISCOVER: "DISCOVER",
    DHCPOFFER: "OFFER",
    DHCPREQUEST: "REQUEST",
    DHCPDECLINE: "DECLINE",
    DHCPACK: "ACK",
    DHCPNAK: "NAK",
    DHCPRELEASE: "RELEASE",
    DHCPINFORM: "INFORM",
}


class OPT:
    """
    Option codes used by the responder.
    """
    PAD = 0
    SUBNET_MASK = 1
    ROUTER = 3
    DNS = 6
    HOSTNAME = 12
    DOMAIN_NAME = 15
    BROADCAST = 28
    VENDOR = 43
    REQUESTED_IP = 50
    LEASE_TIME = 51
    OVERLOAD = 52
    MESSAGE_TYPE = 53
    SERVER_ID = 54
    PARAMETER_LIST = 55
    MESSAGE = 56
    MAX_SIZE = 57
    RENEWAL_TIME = 58
    REBINDING_TIME = 59
    VENDOR_CLASS = 60
    CLIENT_ID = 61
    TFTP_SERVER = 66
    BOOTFILE = 67
    USER_CLASS = 77
    RELAY_AGENT = 82
    CLIENT_ARCH = 93
    CLIENT_NDI = 94
    CLIENT_UUID = 97
    IPXE = 175
    PXELINUX_MAGIC = 208
    PXELINUX_CONFIG = 209
    PXELINUX_PREFIX = 210
    PXELINUX_REBOOT = 211
    END = 255


# op htype hlen hops xid secs flags ciaddr yiaddr siaddr giaddr chaddr(16)
# sname(64) file(128)
_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
HEADER_SIZE = _HEADER.size  # 236
MINIMUM_SIZE = HEADER_SIZE + len(MAGIC_COOKIE)  # 240
# BOOTP's minimum message (RFC 951); some old ROMs drop shorter replies.
_MIN_REPLY = 300


class MalformedPacket(ValueError):
    """
    The bytes are not a DHCP (or BOOTP) message this codec can read.
    """


def ip2bytes(address):
    """
    Return the 4 bytes of a dotted IPv4 address (text, or L{None} for 0).
    """
    if address is None:
        return b"\x00\x00\x00\x00"
    try:
        packed = socket.inet_pton(socket.AF_INET, address)
    except (OSError, TypeError):
        raise ValueError("not an IPv4 address: %r" % (address,))
    return packed


def bytes2ip(data):
    """
    Return a dotted IPv4 address from 4 bytes.
    """
    if len(data) != 4:
        raise MalformedPacket("an IPv4 address is 4 bytes, not %d" % (len(data),))
    return socket.inet_ntoa(data)


def _parseOptionBlock(data, out, order, where):
    """
    Parse a TLV option block into C{out} (code -> bytes, concatenating
    repeats, RFC 3396). Stops at END; a block that ends without END is
    accepted (many clients omit it in sname/file).
    """
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == OPT.PAD:
            i += 1
            continue
        if code == OPT.END:
            return
        if i + 1 >= n:
            raise MalformedPacket("option %d in %s has no length byte" % (code, where))
        length = data[i + 1]
        if i + 2 + length > n:
            raise MalformedPacket("option %d in %s claims %d bytes, %d left" % (
                code, where, length, n - i - 2))
        value = data[i + 2:i + 2 + length]
        if code in out:
            out[code] += value
        else:
            out[code] = value
            order.append(code)
        i += 2 + length


def _cstring(field):
    """
    A NUL-terminated fixed field as bytes without the padding.
    """
    end = field.find(b"\x00")
    return field if end < 0 else field[:end]


class DHCPPacket:
    """
    One DHCP message.

    @ivar op: 1 request, 2 reply.
    @ivar htype, hlen, hops, xid, secs, flags: the fixed header fields.
    @ivar ciaddr, yiaddr, siaddr, giaddr: dotted text (C{0.0.0.0} if unset).
    @ivar chaddr: the client hardware address: C{hlen} bytes (at most 16).
    @ivar sname, file: bytes without the NUL padding (empty when the field
        carried options, see C{overload}).
    @ivar options: a C{dict} of option code to raw bytes.
    @ivar optionOrder: the codes in the order first seen (and written).
    @ivar overload: the value of option 52 seen on the wire (0 if none).
    """

    def __init__(self, op=BOOTREQUEST, htype=1, hlen=6, hops=0, xid=0, secs=0, flags=0,
                 ciaddr="0.0.0.0", yiaddr="0.0.0.0", siaddr="0.0.0.0", giaddr="0.0.0.0",
                 chaddr=b"", sname=b"", file=b"", options=None):
        self.op = op
        self.htype = htype
        self.hlen = hlen
        self.hops = hops
        self.xid = xid
        self.secs = secs
        self.flags = flags
        self.ciaddr = ciaddr
        self.yiaddr = yiaddr
        self.siaddr = siaddr
        self.giaddr = giaddr
        self.chaddr = chaddr
        self.sname = sname
        self.file = file
        self.options = {}
        self.optionOrder = []
        self.overload = 0
        for code, value in (options or []):
            self.setOption(code, value)

    def __repr__(self):
        return "<DHCPPacket %s xid=%08x chaddr=%s>" % (
            MESSAGE_TYPES.get(self.messageType, self.messageType), self.xid,
            self.chaddr.hex())

    # Options -----------------------------------------------------------

    def setOption(self, code, value):
        """
        Set option C{code} to C{value} (bytes); C{None} removes it.
        """
        if value is None:
            self.options.pop(code, None)
            if code in self.optionOrder:
                self.optionOrder.remove(code)
            return
        value = bytes(value)
        if code not in self.options:
            self.optionOrder.append(code)
        self.options[code] = value

    def option(self, code, default=None):
        """
        Return the raw bytes of option C{code}, or C{default}.
        """
        return self.options.get(code, default)

    @property
    def messageType(self):
        """
        The DHCP message type (53), or L{None} for plain BOOTP.
        """
        value = self.options.get(OPT.MESSAGE_TYPE)
        if not value or len(value) != 1:
            return None
        return value[0]

    @property
    def mac(self):
        """
        C{aa:bb:cc:dd:ee:ff} for Ethernet clients, else L{None}.
        """
        if self.htype == 1 and self.hlen == 6 and len(self.chaddr) == 6:
            return self.chaddr.hex(":")
        return None

    @property
    def broadcast(self):
        """
        Whether the client set the BROADCAST flag.
        """
        return bool(self.flags & 0x8000)

    def ipOption(self, code):
        """
        Option C{code} as one dotted address, or L{None} if absent or bad.
        """
        value = self.options.get(code)
        if value is None or len(value) != 4:
            return None
        return bytes2ip(value)

    def textOption(self, code):
        """
        Option C{code} decoded as text (latin-1, trailing NULs dropped), or
        L{None}.
        """
        value = self.options.get(code)
        if value is None:
            return None
        return value.rstrip(b"\x00").decode("latin-1")

    # Wire --------------------------------------------------------------

    @classmethod
    def from_wire(cls, data):
        """
        Parse one datagram.

        @raise MalformedPacket: for anything short, inconsistent or not DHCP.
        """
        data = bytes(data)
        if len(data) < MINIMUM_SIZE:
            raise MalformedPacket("%d bytes is shorter than a DHCP message (%d)" % (
                len(data), MINIMUM_SIZE))
        (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr,
         chaddr, sname, bootfile) = _HEADER.unpack_from(data, 0)
        if op not in (BOOTREQUEST, BOOTREPLY):
            raise MalformedPacket("op %d is neither request nor reply" % (op,))
        if hlen > 16:
            raise MalformedPacket("hlen %d is more than 16" % (hlen,))
        if data[HEADER_SIZE:MINIMUM_SIZE] != MAGIC_COOKIE:
            raise MalformedPacket("no DHCP magic cookie")
        packet = cls(op=op, htype=htype, hlen=hlen, hops=hops, xid=xid, secs=secs,
                     flags=flags, ciaddr=bytes2ip(ciaddr), yiaddr=bytes2ip(yiaddr),
                     siaddr=bytes2ip(siaddr), giaddr=bytes2ip(giaddr),
                     chaddr=chaddr[:hlen])
        options = {}
        order = []
        _parseOptionBlock(data[MINIMUM_SIZE:], options, order, "options")
        overload = options.get(OPT.OVERLOAD)
        overloadValue = 0
        if overload is not None:
            if len(overload) != 1 or overload[0] not in (1, 2, 3):
                raise MalformedPacket("option 52 must be one byte 1..3")
            overloadValue = overload[0]
        # RFC 2131 4.1: options, then file, then sname.
        if overloadValue & 1:
            _parseOptionBlock(bootfile, options, order, "file")
            bootfile = b""
        if overloadValue & 2:
            _parseOptionBlock(sname, options, order, "sname")
            sname = b""
        packet.sname = _cstring(sname)
        packet.file = _cstring(bootfile)
        packet.options = options
        packet.optionOrder = order
        packet.overload = overloadValue
        return packet

    def to_wire(self):
        """
        Serialise: header, cookie, options (in C{optionOrder}, 53 first,
        values over 255 bytes split into several instances, RFC 3396), END,
        padded to 300 bytes.
        """
        if len(self.sname) > 64 or len(self.file) > 128:
            raise ValueError("sname is at most 64 bytes and file at most 128")
        chaddr = bytes(self.chaddr)
        if len(chaddr) > 16:
            raise ValueError("chaddr is at most 16 bytes")
        head = _HEADER.pack(
            self.op, self.htype, self.hlen, self.hops, self.xid & 0xffffffff,
            self.secs & 0xffff, self.flags & 0xffff, ip2bytes(self.ciaddr),
            ip2bytes(self.yiaddr), ip2bytes(self.siaddr), ip2bytes(self.giaddr),
            chaddr.ljust(16, b"\x00"), bytes(self.sname).ljust(64, b"\x00"),
            bytes(self.file).ljust(128, b"\x00"))
        parts = [head, MAGIC_COOKIE]
        order = list(self.optionOrder)
        if OPT.MESSAGE_TYPE in order:
            order.remove(OPT.MESSAGE_TYPE)
            order.insert(0, OPT.MESSAGE_TYPE)
        for code in order:
            if code in (OPT.PAD, OPT.END, OPT.OVERLOAD):
                continue
            value = self.options[code]
            if not value:
                parts.append(bytes((code, 0)))
            for i in range(0, len(value), 255):
                chunk = value[i:i + 255]
                parts.append(bytes((code, len(chunk))) + chunk)
        parts.append(bytes((OPT.END,)))
        out = b"".join(parts)
        if len(out) < _MIN_REPLY:
            out += b"\x00" * (_MIN_REPLY - len(out))
        return out


# Option helpers ------------------------------------------------------------

def parseSubOptions(data):
    """
    Parse an encapsulated TLV space (43, 82, 175) into a C{dict} of
    sub-option code to bytes. PAD (0) is skipped and END (255) stops.

    @raise MalformedPacket: when a length runs past the end.
    """
    out = {}
    _parseOptionBlock(bytes(data), out, [], "sub-options")
    return out


def encodeSubOptions(items):
    """
    Encode C{(code, bytes)} pairs as TLV, ending with 255 when non-empty.
    """
    parts = []
    for code, value in items:
        value = bytes(value)
        if len(value) > 255:
            raise ValueError("sub-option %d is longer than 255 bytes" % (code,))
        parts.append(bytes((code, len(value))) + value)
    if parts:
        parts.append(b"\xff")
    return b"".join(parts)


def parseUserClass(data):
    """
    Option 77 as a list of byte strings. RFC 3004 says each class is
    length-prefixed; iPXE and some others send one raw string (C{iPXE}).
    As dnsmasq does, the value is read as RFC 3004 only when the length
    prefixes add up to exactly the option's length.
    """
    data = bytes(data)
    if not data:
        return []
    out = []
    i = 0
    while i < len(data):
        length = data[i]
        if length == 0 or i + 1 + length > len(data):
            return [data]
        out.append(data[i + 1:i + 1 + length])
        i += 1 + length
    return out


def encodeUserClass(classes):
    """
    Encode user classes the RFC 3004 way.
    """
    return b"".join(bytes((len(c),)) + bytes(c) for c in classes)


def parseArchitectures(data):
    """
    Option 93 (RFC 4578) as a list of architecture numbers (16-bit each).

    @raise MalformedPacket: for an odd length.
    """
    data = bytes(data)
    if len(data) % 2:
        raise MalformedPacket("option 93 has odd length %d" % (len(data),))
    return [struct.unpack_from("!H", data, i)[0] for i in range(0, len(data), 2)]


def parseUNDI(data):
    """
    Option 94 (RFC 4578): C{(type, major, minor)}, type 1 = UNDI.

    @raise MalformedPacket: unless 3 bytes.
    """
    data = bytes(data)
    if len(data) != 3:
        raise MalformedPacket("option 94 must be 3 bytes (got %d)" % (len(data),))
    return data[0], data[1], data[2]


def parseClientUUID(data):
    """
    Option 97 (RFC 4578): type 0 plus a 16-byte GUID. The GUID's first
    three fields are little-endian on the wire (SMBIOS order), as firmware
    sends them; the text returned is the canonical form the firmware and
    C{dmidecode} print. An all-zero GUID is returned as is.

    @raise MalformedPacket: unless 17 bytes of type 0.
    """
    data = bytes(data)
    if len(data) != 17 or data[0] != 0:
        raise MalformedPacket("option 97 must be type 0 and 16 bytes")
    g = data[1:]
    return "%08x-%04x-%04x-%s-%s" % (
        struct.unpack("<I", g[0:4])[0], struct.unpack("<H", g[4:6])[0],
        struct.unpack("<H", g[6:8])[0], g[8:10].hex(), g[10:16].hex())


def encodeClientUUID(text):
    """
    The inverse of L{parseClientUUID}.
    """
    hexText = text.replace("-", "")
    if len(hexText) != 32:
        raise ValueError("a GUID is 32 hex digits")
    raw = bytes.fromhex(hexText)
    return b"\x00" + (raw[0:4][::-1] + raw[4:6][::-1] + raw[6:8][::-1] + raw[8:])


# PXE vendor options (43) -------------------------------------------------

PXE_DISCOVERY_CONTROL = 6
PXE_BOOT_SERVERS = 8
PXE_BOOT_MENU = 9
PXE_MENU_PROMPT = 10
PXE_BOOT_ITEM = 71


def parsePXEVendor(data):
    """
    Option 43 of a PXE message as a C{dict}: C{discovery_control} (int),
    C{boot_item} (C{(type, layer)}), C{boot_servers} (list of C{(type,
    [ip...])}), C{menu} (list of C{(type, text)}), C{prompt} (C{(timeout,
    text)}), and C{raw} (every sub-option).

    @raise MalformedPacket: for truncated sub-options.
    """
    raw = parseSubOptions(data)
    out = {"raw": raw}
    value = raw.get(PXE_DISCOVERY_CONTROL)
    if value is not None and len(value) == 1:
        out["discovery_control"] = value[0]
    value = raw.get(PXE_BOOT_ITEM)
    if value is not None:
        if len(value) != 4:
            raise MalformedPacket("PXE boot item must be 4 bytes")
        out["boot_item"] = struct.unpack("!HH", value)
    value = raw.get(PXE_BOOT_SERVERS)
    if value is not None:
        servers = []
        i = 0
        while i < len(value):
            if i + 3 > len(value):
                raise MalformedPacket("truncated PXE boot server entry")
            kind, count = struct.unpack_from("!HB", value, i)
            i += 3
            if i + 4 * count > len(value):
                raise MalformedPacket("truncated PXE boot server list")
            servers.append((kind, [bytes2ip(value[i + 4 * k:i + 4 * k + 4])
                                   for k in range(count)]))
            i += 4 * count
        out["boot_servers"] = servers
    value = raw.get(PXE_BOOT_MENU)
    if value is not None:
        menu = []
        i = 0
        while i < len(value):
            if i + 3 > len(value):
                raise MalformedPacket("truncated PXE menu entry")
            kind, length = struct.unpack_from("!HB", value, i)
            i += 3
            if i + length > len(value):
                raise MalformedPacket("truncated PXE menu text")
            menu.append((kind, value[i:i + length].decode("latin-1")))
            i += length
        out["menu"] = menu
    value = raw.get(PXE_MENU_PROMPT)
    if value is not None:
        if len(value) < 1:
            raise MalformedPacket("empty PXE menu prompt")
        out["prompt"] = (value[0], value[1:].decode("latin-1"))
    return out


def encodePXEVendor(discoveryControl=None, bootItem=None, bootServers=(), menu=(),
                    prompt=None):
    """
    Build option 43 for PXE clients (PXE 2.1 sub-options 6, 8, 9, 10, 71).
    """
    items = []
    if discoveryControl is not None:
        items.append((PXE_DISCOVERY_CONTROL, bytes((discoveryControl,))))
    if bootServers:
        value = b""
        for kind, addresses in bootServers:
            value += struct.pack("!HB", kind, len(addresses))
            value += b"".join(ip2bytes(a) for a in addresses)
        items.append((PXE_BOOT_SERVERS, value))
    if menu:
        value = b""
        for kind, text in menu:
            encoded = text.encode("latin-1")
            value += struct.pack("!HB", kind, len(encoded)) + encoded
        items.append((PXE_BOOT_MENU, value))
    if prompt is not None:
        timeout, text = prompt
        items.append((PXE_MENU_PROMPT, bytes((timeout,)) + text.encode("latin-1")))
    if bootItem is not None:
        items.append((PXE_BOOT_ITEM, struct.pack("!HH", *bootItem)))
    return encodeSubOptions(items)
