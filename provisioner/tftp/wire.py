# -*- test-case-name: tests.test_tftp_wire -*-
"""
TFTP wire format (RFC 1350, 2347): one class per packet type with
C{from_wire}/C{to_wire}, and L{decode} for any datagram. Pure: no sockets,
no reactor, no policy.

Block numbers on the wire are 16 bits; sessions count 32 bits internally and
use L{wireBlock} to go out.
"""

import struct

__all__ = [
    "RRQ", "WRQ", "DATA", "ACK", "ERROR", "OACK",
    "ERR_NOT_DEFINED", "ERR_FILE_NOT_FOUND", "ERR_ACCESS_VIOLATION", "ERR_DISK_FULL",
    "ERR_ILLEGAL_OP", "ERR_UNKNOWN_TID", "ERR_FILE_EXISTS", "ERR_NO_SUCH_USER",
    "ERR_OPTION_REFUSED",
    "WireError", "Request", "ReadRequest", "WriteRequest", "Data", "Ack", "Error",
    "OptionAck", "decode", "encodeData", "encodeAck", "wireBlock", "errorFor",
    "MAX_REQUEST", "MAX_WINDOW", "MODES",
]

RRQ, WRQ, DATA, ACK, ERROR, OACK = 1, 2, 3, 4, 5, 6

ERR_NOT_DEFINED = 0
ERR_FILE_NOT_FOUND = 1
ERR_ACCESS_VIOLATION = 2
ERR_DISK_FULL = 3
ERR_ILLEGAL_OP = 4
ERR_UNKNOWN_TID = 5
ERR_FILE_EXISTS = 6
ERR_NO_SUCH_USER = 7
ERR_OPTION_REFUSED = 8  # RFC 2347

# The largest request we decode. RFC 2347 says requests fit 512 octets; some
# clients send more (long paths, many options), so we accept up to this.
MAX_REQUEST = 2048

# The largest window RFC 7440 allows (and the 16-bit window of our ACK extensions).
MAX_WINDOW = 65535
# The most options we keep from one packet.
MAX_OPTIONS = 32
MODES = ("netascii", "octet", "mail")

_H = struct.Struct("!H")
_HH = struct.Struct("!HH")


class WireError(ValueError):
    """
    A datagram is not valid TFTP. The message says why (for a debug log
    line and, where useful, an ERROR 4 to the peer).
    """


def wireBlock(block):
    """
    The 16-bit block number for a 32-bit internal one (wrap to 0).
    """
    return block & 0xFFFF


def _strings(payload, what):
    """
    Split NUL-terminated strings; the payload must end with a NUL.
    """
    if not payload.endswith(b"\x00"):
        raise WireError("%s: unterminated string" % (what,))
    return payload[:-1].split(b"\x00")


def _text(raw):
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _options(fields, what):
    """
    Pair option names with values: names lower-cased; the first of a
    duplicated name wins; a trailing name with no value is dropped; empty
    names are dropped.

    @return: a list of C{(name, value)} in request order.
    """
    options = []
    seen = set()
    for i in range(0, len(fields) - 1, 2):
        name = _text(fields[i]).lower()
        if not name or name in seen:
            continue
        seen.add(name)
        options.append((name, _text(fields[i + 1])))
        if len(options) >= MAX_OPTIONS:
            break
    return options


def _encodeOptions(options):
    """
    Encode C{[(name, value)]} as NUL-terminated name/value strings.
    """
    parts = []
    for name, value in options:
        parts += [name.encode("ascii"), b"\x00", str(value).encode("ascii"), b"\x00"]
    return b"".join(parts)


class Request:
    """
    RRQ or WRQ.

    @ivar filename: C{bytes} as sent (decoding is the server's business).
    @ivar mode: lower-case text (C{octet}, C{netascii}, C{mail}, or what the
        client sent).
    @ivar options: C{[(name, value)]}, names lower-case, in request order.
    """

    opcode = None

    def __init__(self, filename, mode="octet", options=()):
        self.filename = filename
        self.mode = mode
        self.options = list(options)

    @property
    def optionDict(self):
        return dict(self.options)

    @classmethod
    def from_wire(cls, payload):
        if len(payload) > MAX_REQUEST:
            raise WireError("request too long (%d bytes)" % (len(payload),))
        fields = _strings(payload, "request")
        if len(fields) < 2:
            raise WireError("request without mode")
        filename, mode = fields[0], _text(fields[1]).lower()
        if not filename:
            raise WireError("empty file name")
        return cls(filename, mode, _options(fields[2:], "request"))

    def to_wire(self):
        return b"".join([_H.pack(self.opcode), self.filename, b"\x00",
                         self.mode.encode("ascii"), b"\x00", _encodeOptions(self.options)])

    def __eq__(self, other):
        return (type(self) is type(other) and self.filename == other.filename and
                self.mode == other.mode and self.options == other.options)

    def __repr__(self):
        return "<%s %r %s %r>" % (type(self).__name__, self.filename, self.mode, self.options)


class ReadRequest(Request):
    opcode = RRQ


class WriteRequest(Request):
    opcode = WRQ


class _BlockPacket:
    """
    A 16-bit block number followed by bytes: DATA and ACK share this shape.
    Subclasses name the trailing bytes (C{payload}, C{extra}).
    """

    opcode = None
    _tail = None

    def __init__(self, block, tail=b""):
        self.block = block
        setattr(self, self._tail, tail)

    @classmethod
    def from_wire(cls, payload):
        if len(payload) < 2:
            raise WireError("%s too short" % (cls.__name__.upper(),))
        return cls(_H.unpack_from(payload)[0], payload[2:])

    def to_wire(self):
        return _HH.pack(self.opcode, self.block & 0xFFFF) + getattr(self, self._tail)

    def __eq__(self, other):
        return (type(self) is type(other) and self.block == other.block and
                getattr(self, self._tail) == getattr(other, self._tail))


class Data(_BlockPacket):
    """
    DATA: a 16-bit block number and up to blksize bytes (C{payload}).
    """

    opcode = DATA
    _tail = "payload"

    def __repr__(self):
        return "<Data %d (%d bytes)>" % (self.block, len(self.payload))


class Ack(_BlockPacket):
    """
    ACK: a 16-bit block number, and optional trailing bytes (C{extra}) that
    carry a negotiated extension (the adaptive window); plain clients send
    none and trailing bytes are ignored unless an extension was negotiated.
    """

    opcode = ACK
    _tail = "extra"

    def __repr__(self):
        return "<Ack %d%s>" % (self.block, " +%r" % (self.extra,) if self.extra else "")


class Error:
    """
    ERROR: a code and a message.
    """

    opcode = ERROR

    def __init__(self, code, message=""):
        self.code = code
        self.message = message

    @classmethod
    def from_wire(cls, payload):
        if len(payload) < 2:
            raise WireError("ERROR too short")
        code = _H.unpack_from(payload)[0]
        rest = payload[2:]
        # Be lenient: some stacks omit the final NUL.
        message = _text(rest.split(b"\x00", 1)[0])
        return cls(code, message)

    def to_wire(self):
        message = self.message.encode("ascii", "replace")[:500]
        return _HH.pack(ERROR, self.code) + message + b"\x00"

    def __eq__(self, other):
        return type(self) is type(other) and (self.code, self.message) == (other.code, other.message)

    def __repr__(self):
        return "<Error %d %r>" % (self.code, self.message)


class OptionAck:
    """
    OACK (RFC 2347): the accepted options.
    """

    opcode = OACK

    def __init__(self, options=()):
        self.options = list(options)

    @property
    def optionDict(self):
        return dict(self.options)

    @classmethod
    def from_wire(cls, payload):
        if not payload:
            return cls([])
        return cls(_options(_strings(payload, "OACK"), "OACK"))

    def to_wire(self):
        return _H.pack(OACK) + _encodeOptions(self.options)

    def __eq__(self, other):
        return type(self) is type(other) and self.options == other.options

    def __repr__(self):
        return "<OptionAck %r>" % (self.options,)


_TYPES = {RRQ: ReadRequest, WRQ: WriteRequest, DATA: Data, ACK: Ack, ERROR: Error,
          OACK: OptionAck}


def decode(datagram):
    """
    Decode any TFTP datagram.

    @raise WireError: not valid TFTP (never anything else).
    """
    if len(datagram) < 2:
        raise WireError("datagram too short (%d bytes)" % (len(datagram),))
    opcode = _H.unpack_from(datagram)[0]
    kind = _TYPES.get(opcode)
    if kind is None:
        raise WireError("unknown opcode %d" % (opcode,))
    return kind.from_wire(bytes(datagram[2:]))


def encodeData(block, payload):
    """
    Encode DATA for a block (the number is wrapped to 16 bits).
    """
    return _HH.pack(DATA, block & 0xFFFF) + payload


def encodeAck(block, extra=b""):
    """
    Encode ACK for a block (wrapped to 16 bits), with optional extension
    bytes.
    """
    return _HH.pack(ACK, block & 0xFFFF) + extra


def errorFor(exc):
    """
    Map an exception from a resolver or data source to an L{Error} packet:
    the one place where backend errors become wire codes.
    """
    from provisioner import errors
    table = [
        (errors.FileNotFound, ERR_FILE_NOT_FOUND),
        (errors.AccessViolation, ERR_ACCESS_VIOLATION),
        (errors.DiskFull, ERR_DISK_FULL),
        (errors.FileExists, ERR_FILE_EXISTS),
        (errors.TooManySessions, ERR_NOT_DEFINED),
    ]
    for kind, code in table:
        if isinstance(exc, kind):
            return Error(code, str(exc) or kind.__name__)
    return Error(ERR_NOT_DEFINED, "server error")
