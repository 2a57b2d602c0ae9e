# -*- test-case-name: tests.test_dhcp6_wire -*-
"""
A pure DHCPv6 codec (RFC 8415, with the network-boot options of RFC 5970):
no transport, no reactor, no policy.

L{parse} reads a datagram into a L{DHCP6Message} (client and server
messages: Solicit ... Information-request) or a L{DHCP6Relay}
(Relay-forward, Relay-reply). Every length is checked before anything is
unpacked, and every option this module knows is validated when the message
is read, so that the helpers on a parsed message never fail: anything that
cannot be read raises L{MalformedPacket}, the one decode error.

Options are kept in arrival order as C{(code, bytes)}. The structured
ones have small classes with C{from_wire}/C{to_wire}: L{IANA} (option 3)
with its L{IAAddress} options (5), L{VendorClass} (16), L{VendorOptions}
(17), L{StatusCode} (13); the others have a parse and an encode function
(DUIDs, ORO, user class, boot file parameters, client architectures, NII).
"""

import socket
import struct

__all__ = [
    "MalformedPacket",
    "OPT",
    "STATUS",
    "SOLICIT", "ADVERTISE", "REQUEST", "CONFIRM", "RENEW", "REBIND", "REPLY",
    "RELEASE", "DECLINE", "RECONFIGURE", "INFORMATION_REQUEST", "RELAY_FORW", "RELAY_REPL",
    "MESSAGE_TYPES",
    "PXE_ENTERPRISE",
    "DHCP6Message",
    "DHCP6Relay",
    "IANA",
    "IAAddress",
    "StatusCode",
    "VendorClass",
    "VendorOptions",
    "parse",
    "parseDUID",
    "duidMAC",
    "encodeDUIDLL",
    "encodeDUIDLLT",
    "encodeDUIDUUID",
    "parseORO",
    "encodeORO",
    "parseUserClass",
    "encodeUserClass",
    "parseBootfileParams",
    "encodeBootfileParams",
    "parseArchitectures",
    "encodeArchitectures",
    "parseNII",
    "encodeNII",
    "parseAddresses",
    "encodeAddresses",
]


class MalformedPacket(ValueError):
    """
    The datagram is not a DHCPv6 message this codec can read.
    """


SOLICIT = 1
ADVERTISE = 2
REQUEST = 3
CONFIRM = 4
RENEW = 5
REBIND = 6
REPLY = 7
RELEASE = 8
DECLINE = 9
RECONFIGURE = 10
INFORMATION_REQUEST = 11
RELAY_FORW = 12
RELAY_REPL = 13

MESSAGE_TYPES = {
    SOLICIT: "SOLICIT",
    ADVERTISE: "ADVERTISE",
    REQUEST: "REQUEST",
    CONFIRM: "CONFIRM",
    RENEW: "RENEW",
    REBIND: "REBIND",
    REPLY: "REPLY",
    RELEASE: "RELEASE",
    DECLINE: "DECLINE",
    RECONFIGURE: "RECONFIGURE",
    INFORMATION_REQUEST: "INFORMATION-REQUEST",
    RELAY_FORW: "RELAY-FORW",
    RELAY_REPL: "RELAY-REPL",
}

#: the enterprise number PXE clients put in options 16 and 17 (Intel)
PXE_ENTERPRISE = 343


class OPT:
    """
    Option codes (RFC 8415 section 21, RFC 5970, RFC 3646).
    """
    CLIENTID = 1
    SERVERID = 2
    IA_NA = 3
    IA_TA = 4
    IAADDR = 5
    ORO = 6
    PREFERENCE = 7
    ELAPSED_TIME = 8
    RELAY_MSG = 9
    AUTH = 11
    UNICAST = 12
    STATUS_CODE = 13
    RAPID_COMMIT = 14
    USER_CLASS = 15
    VENDOR_CLASS = 16
    VENDOR_OPTS = 17
    INTERFACE_ID = 18
    RECONF_MSG = 19
    RECONF_ACCEPT = 20
    DNS_SERVERS = 23
    DOMAIN_LIST = 24
    IA_PD = 25
    BOOTFILE_URL = 59
    BOOTFILE_PARAM = 60
    CLIENT_ARCH_TYPE = 61
    NII = 62


class STATUS:
    """
    Status codes (RFC 8415 section 21.13).
    """
    SUCCESS = 0
    UNSPEC_FAIL = 1
    NO_ADDRS_AVAIL = 2
    NO_BINDING = 3
    NOT_ON_LINK = 4
    USE_MULTICAST = 5
    NO_PREFIX_AVAIL = 6


#: the longest DUID, type code included (RFC 8415 section 11.1)
MAX_DUID = 130


# Options as a sequence --------------------------------------------------

def readOptions(data, what="message"):
    """
    Split C{data} into C{(code, value)} pairs.

    @raise MalformedPacket: an option header or value runs past the end.
    """
    out = []
    i = 0
    end = len(data)
    while i < end:
        if end - i < 4:
            raise MalformedPacket("%s: %d stray bytes where an option header should be" % (
                what, end - i))
        code, length = struct.unpack_from("!HH", data, i)
        i += 4
        if length > end - i:
            raise MalformedPacket("%s: option %d claims %d bytes, %d left" % (
                what, code, length, end - i))
        out.append((code, bytes(data[i:i + length])))
        i += length
    return out


def writeOptions(options):
    """
    The wire form of C{(code, value)} pairs.
    """
    parts = []
    for code, value in options:
        if len(value) > 0xffff:
            raise ValueError("option %d is %d bytes, more than 65535" % (code, len(value)))
        parts.append(struct.pack("!HH", code, len(value)))
        parts.append(value)
    return b"".join(parts)


def _first(options, code):
    for c, value in options:
        if c == code:
            return value
    return None


def _ip6(data, offset=0):
    return socket.inet_ntop(socket.AF_INET6, bytes(data[offset:offset + 16]))


def _packIP6(text):
    try:
        return socket.inet_pton(socket.AF_INET6, text)
    except (OSError, TypeError) as e:
        raise ValueError("%r is not an IPv6 address (%s)" % (text, e))


# Structured options -----------------------------------------------------

class StatusCode:
    """
    Option 13: a status code and a UTF-8 message.
    """

    def __init__(self, code, message=""):
        self.code = code
        self.message = message

    @classmethod
    def from_wire(cls, data):
        if len(data) < 2:
            raise MalformedPacket("status code option: %d bytes, at least 2 needed" % (
                len(data),))
        return cls(struct.unpack_from("!H", data)[0], data[2:].decode("utf-8", "replace"))

    def to_wire(self):
        return struct.pack("!H", self.code) + self.message.encode("utf-8")

    def __eq__(self, other):
        if not isinstance(other, StatusCode):
            return NotImplemented
        return (self.code, self.message) == (other.code, other.message)

    def __repr__(self):
        return "<StatusCode %d %r>" % (self.code, self.message)


class IAAddress:
    """
    Option 5 (IA Address), inside an IA_NA: an address, its preferred and
    valid lifetimes (seconds) and its own options (a status code).
    """

    def __init__(self, address, preferred=0, valid=0, options=()):
        self.address = address
        self.preferred = preferred
        self.valid = valid
        self.options = list(options)

    @classmethod
    def from_wire(cls, data):
        if len(data) < 24:
            raise MalformedPacket("IA address option: %d bytes, at least 24 needed" % (
                len(data),))
        preferred, valid = struct.unpack_from("!II", data, 16)
        options = readOptions(data[24:], "IA address")
        _validateAll(options)
        return cls(_ip6(data), preferred, valid, options)

    def to_wire(self):
        return _packIP6(self.address) + struct.pack("!II", self.preferred, self.valid) + \
            writeOptions(self.options)

    @property
    def status(self):
        """
        The L{StatusCode} it carries, or L{None}.
        """
        raw = _first(self.options, OPT.STATUS_CODE)
        return StatusCode.from_wire(raw) if raw is not None else None

    def __eq__(self, other):
        if not isinstance(other, IAAddress):
            return NotImplemented
        return (self.address, self.preferred, self.valid, self.options) == (
            other.address, other.preferred, other.valid, other.options)

    def __repr__(self):
        return "<IAAddress %s %d/%d>" % (self.address, self.preferred, self.valid)


class IANA:
    """
    Option 3 (Identity Association for Non-temporary Addresses): its IAID,
    T1 and T2, and its options (IA addresses, a status code).
    """

    def __init__(self, iaid, t1=0, t2=0, options=()):
        self.iaid = iaid
        self.t1 = t1
        self.t2 = t2
        self.options = list(options)

    @classmethod
    def from_wire(cls, data):
        if len(data) < 12:
            raise MalformedPacket("IA_NA option: %d bytes, at least 12 needed" % (len(data),))
        iaid, t1, t2 = struct.unpack_from("!III", data)
        options = readOptions(data[12:], "IA_NA")
        _validateAll(options)
        return cls(iaid, t1, t2, options)

    def to_wire(self):
        return struct.pack("!III", self.iaid, self.t1, self.t2) + writeOptions(self.options)

    @property
    def addresses(self):
        """
        Its L{IAAddress}es, in order.
        """
        return [IAAddress.from_wire(v) for c, v in self.options if c == OPT.IAADDR]

    @property
    def status(self):
        """
        The L{StatusCode} it carries, or L{None}.
        """
        raw = _first(self.options, OPT.STATUS_CODE)
        return StatusCode.from_wire(raw) if raw is not None else None

    def addAddress(self, address):
        """
        Append an L{IAAddress}.
        """
        self.options.append((OPT.IAADDR, address.to_wire()))

    def setStatus(self, code, message=""):
        """
        Append a status code.
        """
        self.options.append((OPT.STATUS_CODE, StatusCode(code, message).to_wire()))

    def __eq__(self, other):
        if not isinstance(other, IANA):
            return NotImplemented
        return (self.iaid, self.t1, self.t2, self.options) == (
            other.iaid, other.t1, other.t2, other.options)

    def __repr__(self):
        return "<IANA %#x T1=%d T2=%d %r>" % (self.iaid, self.t1, self.t2, self.addresses)


def _lengthPrefixed(data, what):
    """
    A sequence of 16-bit-length-prefixed items (user class, vendor class
    data, boot file parameters).
    """
    out = []
    i = 0
    while i < len(data):
        if len(data) - i < 2:
            raise MalformedPacket("%s: a stray byte where an item length should be" % (what,))
        (length,) = struct.unpack_from("!H", data, i)
        i += 2
        if length > len(data) - i:
            raise MalformedPacket("%s: item claims %d bytes, %d left" % (
                what, length, len(data) - i))
        out.append(bytes(data[i:i + length]))
        i += length
    return out


def _prefixLengths(items):
    return b"".join(struct.pack("!H", len(item)) + item for item in items)


class VendorClass:
    """
    Option 16: an enterprise number and the class data items (PXE clients:
    343 and C{PXEClient:Arch:00007:UNDI:003016}).
    """

    def __init__(self, enterprise, data=()):
        self.enterprise = enterprise
        self.data = list(data)

    @classmethod
    def from_wire(cls, raw):
        if len(raw) < 4:
            raise MalformedPacket("vendor class option: %d bytes, at least 4 needed" % (
                len(raw),))
        return cls(struct.unpack_from("!I", raw)[0], _lengthPrefixed(raw[4:], "vendor class"))

    def to_wire(self):
        return struct.pack("!I", self.enterprise) + _prefixLengths(self.data)

    def text(self):
        """
        The first class data item as text (latin-1), or L{None}.
        """
        return self.data[0].decode("latin-1") if self.data else None

    def __eq__(self, other):
        if not isinstance(other, VendorClass):
            return NotImplemented
        return (self.enterprise, self.data) == (other.enterprise, other.data)

    def __repr__(self):
        return "<VendorClass %d %r>" % (self.enterprise, self.data)


class VendorOptions:
    """
    Option 17: an enterprise number and its own C{(code, value)} options.
    """

    def __init__(self, enterprise, options=()):
        self.enterprise = enterprise
        self.options = list(options)

    @classmethod
    def from_wire(cls, raw):
        if len(raw) < 4:
            raise MalformedPacket("vendor options: %d bytes, at least 4 needed" % (len(raw),))
        return cls(struct.unpack_from("!I", raw)[0], readOptions(raw[4:], "vendor options"))

    def to_wire(self):
        return struct.pack("!I", self.enterprise) + writeOptions(self.options)

    def __eq__(self, other):
        if not isinstance(other, VendorOptions):
            return NotImplemented
        return (self.enterprise, self.options) == (other.enterprise, other.options)


# Simple options ---------------------------------------------------------

DUID_LLT = 1
DUID_EN = 2
DUID_LL = 3
DUID_UUID = 4


def parseDUID(raw):
    """
    A DUID (options 1 and 2): C{(type, fields)} where C{fields} is a dict:
    C{hwtype}, C{time}, C{lladdr} (LLT, LL), C{enterprise}, C{identifier}
    (EN), C{uuid} (UUID); other types give C{{"data": bytes}}.

    @raise MalformedPacket: too short or too long for its type.
    """
    if not 2 <= len(raw) <= MAX_DUID:
        raise MalformedPacket("DUID of %d bytes (2 to %d)" % (len(raw), MAX_DUID))
    (kind,) = struct.unpack_from("!H", raw)
    body = raw[2:]
    if kind == DUID_LLT:
        if len(body) < 6:
            raise MalformedPacket("DUID-LLT of %d bytes" % (len(raw),))
        hwtype, time = struct.unpack_from("!HI", body)
        return kind, {"hwtype": hwtype, "time": time, "lladdr": bytes(body[6:])}
    if kind == DUID_EN:
        if len(body) < 4:
            raise MalformedPacket("DUID-EN of %d bytes" % (len(raw),))
        return kind, {"enterprise": struct.unpack_from("!I", body)[0],
                      "identifier": bytes(body[4:])}
    if kind == DUID_LL:
        if len(body) < 2:
            raise MalformedPacket("DUID-LL of %d bytes" % (len(raw),))
        return kind, {"hwtype": struct.unpack_from("!H", body)[0], "lladdr": bytes(body[2:])}
    if kind == DUID_UUID:
        if len(body) != 16:
            raise MalformedPacket("DUID-UUID of %d bytes (18 expected)" % (len(raw),))
        return kind, {"uuid": bytes(body)}
    return kind, {"data": bytes(body)}


def duidMAC(raw):
    """
    The Ethernet address inside a DUID-LLT or DUID-LL (hardware type 1), as
    C{aa:bb:cc:dd:ee:ff}, or L{None} (other DUIDs, unreadable ones).
    """
    try:
        kind, fields = parseDUID(raw)
    except MalformedPacket:
        return None
    if kind in (DUID_LLT, DUID_LL) and fields["hwtype"] == 1 and len(fields["lladdr"]) == 6:
        return ":".join("%02x" % (b,) for b in fields["lladdr"])
    return None


def _macBytes(mac):
    if isinstance(mac, bytes):
        return mac
    return bytes(int(part, 16) for part in mac.split(":"))


def encodeDUIDLL(mac):
    """
    A DUID-LL for an Ethernet address (text or 6 bytes).
    """
    return struct.pack("!HH", DUID_LL, 1) + _macBytes(mac)


def encodeDUIDLLT(mac, time):
    """
    A DUID-LLT for an Ethernet address and a time (seconds since 2000).
    """
    return struct.pack("!HHI", DUID_LLT, 1, time & 0xffffffff) + _macBytes(mac)


def encodeDUIDUUID(uuid):
    """
    A DUID-UUID (RFC 6355) from 16 bytes.
    """
    if len(uuid) != 16:
        raise ValueError("a UUID is 16 bytes")
    return struct.pack("!H", DUID_UUID) + uuid


def parseORO(raw):
    """
    Option 6: the requested option codes.
    """
    if len(raw) % 2:
        raise MalformedPacket("option request option of odd length %d" % (len(raw),))
    return list(struct.unpack("!%dH" % (len(raw) // 2,), raw))


def encodeORO(codes):
    return struct.pack("!%dH" % (len(codes),), *codes)


def parseUserClass(raw):
    """
    Option 15: the user class items (iPXE sends C{[b"iPXE"]}).
    """
    return _lengthPrefixed(raw, "user class")


def encodeUserClass(items):
    return _prefixLengths(items)


def parseBootfileParams(raw):
    """
    Option 60 (RFC 5970): the boot file parameters, as text.
    """
    return [item.decode("utf-8", "replace") for item in _lengthPrefixed(raw, "boot file params")]


def encodeBootfileParams(params):
    return _prefixLengths([p.encode("utf-8") for p in params])


def parseArchitectures(raw):
    """
    Option 61 (RFC 5970): the client's architecture types, most preferred
    first.
    """
    if not raw or len(raw) % 2:
        raise MalformedPacket("client architecture option of length %d" % (len(raw),))
    return list(struct.unpack("!%dH" % (len(raw) // 2,), raw))


def encodeArchitectures(arches):
    return struct.pack("!%dH" % (len(arches),), *arches)


def parseNII(raw):
    """
    Option 62 (RFC 5970): C{(type, major, minor)} of the network interface
    (UNDI 3.16 is C{(1, 3, 16)}).
    """
    if len(raw) != 3:
        raise MalformedPacket("client NII option of length %d (3 expected)" % (len(raw),))
    return tuple(raw)


def encodeNII(kind, major, minor):
    return bytes((kind, major, minor))


def parseAddresses(raw):
    """
    A list of IPv6 addresses (option 23, DNS servers).
    """
    if len(raw) % 16:
        raise MalformedPacket("address list of length %d" % (len(raw),))
    return [_ip6(raw, i) for i in range(0, len(raw), 16)]


def encodeAddresses(addresses):
    return b"".join(_packIP6(a) for a in addresses)


def _expectLength(n):
    def check(raw):
        if len(raw) != n:
            raise MalformedPacket("option of length %d (%d expected)" % (len(raw), n))
    return check


def _duid(raw):
    parseDUID(raw)


def _bootfileURL(raw):
    try:
        raw.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedPacket("boot file URL is not ASCII")


#: how each known option is checked when a message is read
_VALIDATORS = {
    OPT.CLIENTID: _duid,
    OPT.SERVERID: _duid,
    OPT.IA_NA: IANA.from_wire,
    OPT.IAADDR: IAAddress.from_wire,
    OPT.ORO: parseORO,
    OPT.PREFERENCE: _expectLength(1),
    OPT.ELAPSED_TIME: _expectLength(2),
    OPT.STATUS_CODE: StatusCode.from_wire,
    OPT.RAPID_COMMIT: _expectLength(0),
    OPT.USER_CLASS: parseUserClass,
    OPT.VENDOR_CLASS: VendorClass.from_wire,
    OPT.VENDOR_OPTS: VendorOptions.from_wire,
    OPT.DNS_SERVERS: parseAddresses,
    OPT.BOOTFILE_URL: _bootfileURL,
    OPT.BOOTFILE_PARAM: parseBootfileParams,
    OPT.CLIENT_ARCH_TYPE: parseArchitectures,
    OPT.NII: parseNII,
}


def _validateAll(options):
    for code, value in options:
        check = _VALIDATORS.get(code)
        if check is not None:
            try:
                check(value)
            except MalformedPacket as e:
                raise MalformedPacket("option %d: %s" % (code, e))


# Messages ---------------------------------------------------------------

class _Options:
    """
    What messages and relay messages share: their options.
    """

    def option(self, code):
        """
        The first value of option C{code}, or L{None}.
        """
        return _first(self.options, code)

    def all(self, code):
        """
        Every value of option C{code}, in order.
        """
        return [v for c, v in self.options if c == code]

    def addOption(self, code, value):
        """
        Append an option (C{bytes}, or anything with C{to_wire}).
        """
        if not isinstance(value, (bytes, bytearray)):
            value = value.to_wire()
        self.options.append((code, bytes(value)))

    def setOption(self, code, value):
        """
        Replace every instance of option C{code} with one value.
        """
        self.options = [(c, v) for c, v in self.options if c != code]
        self.addOption(code, value)


class DHCP6Message(_Options):
    """
    A client or server message: type, 24-bit transaction id, options.
    """

    def __init__(self, msgType, transactionId, options=()):
        self.msgType = msgType
        self.transactionId = transactionId
        self.options = list(options)

    @classmethod
    def from_wire(cls, data):
        """
        @raise MalformedPacket: not a readable client/server message (a
            relay message too: use L{parse} for those).
        """
        if len(data) < 4:
            raise MalformedPacket("%d bytes: shorter than a DHCPv6 header" % (len(data),))
        msgType = data[0]
        if msgType == 0:
            raise MalformedPacket("message type 0 is reserved")
        if msgType in (RELAY_FORW, RELAY_REPL):
            raise MalformedPacket("a relay message, not a client/server message")
        transactionId = int.from_bytes(data[1:4], "big")
        options = readOptions(data[4:])
        _validateAll(options)
        return cls(msgType, transactionId, options)

    def to_wire(self):
        if not 0 <= self.transactionId <= 0xffffff:
            raise ValueError("transaction id %r is not 24 bits" % (self.transactionId,))
        return bytes((self.msgType,)) + self.transactionId.to_bytes(3, "big") + \
            writeOptions(self.options)

    @property
    def typeName(self):
        return MESSAGE_TYPES.get(self.msgType, "type%d" % (self.msgType,))

    # Readers of the options a server looks at; all safe on a parsed
    # message (validated when it was read).

    @property
    def clientId(self):
        return self.option(OPT.CLIENTID)

    @property
    def serverId(self):
        return self.option(OPT.SERVERID)

    def iaNAs(self):
        """
        Its L{IANA} options, in order.
        """
        return [IANA.from_wire(v) for v in self.all(OPT.IA_NA)]

    def requested(self):
        """
        The option codes of its ORO (empty without one).
        """
        raw = self.option(OPT.ORO)
        return parseORO(raw) if raw is not None else []

    def vendorClasses(self):
        return [VendorClass.from_wire(v) for v in self.all(OPT.VENDOR_CLASS)]

    def userClasses(self):
        out = []
        for raw in self.all(OPT.USER_CLASS):
            out.extend(parseUserClass(raw))
        return out

    def architectures(self):
        raw = self.option(OPT.CLIENT_ARCH_TYPE)
        return parseArchitectures(raw) if raw is not None else []

    def elapsed(self):
        """
        Option 8 in hundredths of a second, or L{None}.
        """
        raw = self.option(OPT.ELAPSED_TIME)
        return struct.unpack("!H", raw)[0] if raw is not None else None

    def status(self):
        raw = self.option(OPT.STATUS_CODE)
        return StatusCode.from_wire(raw) if raw is not None else None

    def bootfileURL(self):
        raw = self.option(OPT.BOOTFILE_URL)
        return raw.decode("ascii") if raw is not None else None

    @property
    def rapidCommit(self):
        return self.option(OPT.RAPID_COMMIT) is not None

    def __repr__(self):
        return "<DHCP6Message %s xid=%06x %d options>" % (
            self.typeName, self.transactionId, len(self.options))


class DHCP6Relay(_Options):
    """
    A Relay-forward or Relay-reply: hop count, link and peer address,
    options (the relayed message in option 9).
    """

    def __init__(self, msgType, hopCount, linkAddress, peerAddress, options=()):
        self.msgType = msgType
        self.hopCount = hopCount
        self.linkAddress = linkAddress
        self.peerAddress = peerAddress
        self.options = list(options)

    @classmethod
    def from_wire(cls, data):
        if len(data) < 34:
            raise MalformedPacket("%d bytes: shorter than a relay header" % (len(data),))
        if data[0] not in (RELAY_FORW, RELAY_REPL):
            raise MalformedPacket("not a relay message")
        options = readOptions(data[34:], "relay message")
        _validateAll(options)
        return cls(data[0], data[1], _ip6(data, 2), _ip6(data, 18), options)

    def to_wire(self):
        return bytes((self.msgType, self.hopCount)) + _packIP6(self.linkAddress) + \
            _packIP6(self.peerAddress) + writeOptions(self.options)

    @property
    def typeName(self):
        return MESSAGE_TYPES[self.msgType]


def parse(data):
    """
    Read a datagram.

    @return: a L{DHCP6Message} or a L{DHCP6Relay}.
    @raise MalformedPacket: it cannot be read.
    """
    if len(data) >= 1 and data[0] in (RELAY_FORW, RELAY_REPL):
        return DHCP6Relay.from_wire(data)
    return DHCP6Message.from_wire(data)
