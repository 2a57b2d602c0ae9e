# -*- test-case-name: tests.test_mcast_datagram -*-
"""
The data-channel datagram: a 15-byte header, the payload, and a 12-byte
HMAC-SHA256 tag under the per-session key handed out over the control
channel. Pure codec: no sockets, no reactor. Layout in C{docs/wire/mcast.md}::

    0      1         5       7              13      15        15+len   +12
    | ver  | session | round | offset (u48) | len   | payload | tag    |

All integers are big-endian. The tag covers header and payload.
"""

import hashlib
import hmac
import struct

__all__ = ["DataDatagram", "DatagramError", "parse", "encode", "VERSION", "HEADER_SIZE", "TAG_SIZE",
           "OVERHEAD", "payloadSize", "newKey"]

VERSION = 1
_HEADER = struct.Struct("!BIHHIH")
HEADER_SIZE = _HEADER.size
TAG_SIZE = 12
OVERHEAD = HEADER_SIZE + TAG_SIZE
MAX_OFFSET = (1 << 48) - 1


class DatagramError(ValueError):
    """
    A datagram is malformed, not ours, or its tag does not verify.
    """


def payloadSize(datagramSize):
    """
    Return the payload bytes that fit a datagram of C{datagramSize} bytes.
    """
    return datagramSize - OVERHEAD


def newKey():
    """
    Return a fresh random 32-byte session key.
    """
    import os
    return os.urandom(32)


def _tag(key, data):
    return hmac.digest(key, data, hashlib.sha256)[:TAG_SIZE]


class DataDatagram:
    """
    One data datagram.

    @ivar session: the session id (32 bits).
    @ivar round: the round number (16 bits, from 1).
    @ivar offset: the byte offset in the image (48 bits).
    @ivar payload: the bytes at C{offset}.
    """

    __slots__ = ("session", "round", "offset", "payload")

    def __init__(self, session, round, offset, payload):
        self.session = session
        self.round = round
        self.offset = offset
        self.payload = payload

    def __repr__(self):
        return "<DataDatagram session=%d round=%d offset=%d len=%d>" % (
            self.session, self.round, self.offset, len(self.payload))

    def __eq__(self, other):
        if not isinstance(other, DataDatagram):
            return NotImplemented
        return (self.session, self.round, self.offset, self.payload) == (
            other.session, other.round, other.offset, other.payload)

    def to_wire(self, key):
        """
        Encode and sign under C{key}.

        @rtype: L{bytes}
        """
        if not 0 <= self.offset <= MAX_OFFSET:
            raise DatagramError("offset %d out of range" % (self.offset,))
        header = _HEADER.pack(VERSION, self.session, self.round,
                              self.offset >> 32, self.offset & 0xffffffff,
                              len(self.payload))
        body = header + self.payload
        return body + _tag(key, body)

    @classmethod
    def from_wire(cls, data, key, session=None):
        """
        Decode and verify a datagram.

        @param key: the session key; the tag must verify under it.
        @param session: when given, a datagram of another session is refused
            before its tag is computed.
        @raise DatagramError: if it is short, of another version or session,
            its length field disagrees with its size, or the tag is wrong.
        """
        sess, rnd, offset, payload = parse(data, key, session)
        return cls(sess, rnd, offset, bytes(payload))


def encode(session, roundNumber, offset, payload, key):
    """
    Encode and sign one datagram without building a L{DataDatagram}: the
    sender's fast path (same bytes as L{DataDatagram.to_wire}).
    """
    if not 0 <= offset <= MAX_OFFSET:
        raise DatagramError("offset %d out of range" % (offset,))
    body = _HEADER.pack(VERSION, session, roundNumber, offset >> 32, offset & 0xffffffff,
                        len(payload)) + payload
    return body + hmac.digest(key, body, "sha256")[:TAG_SIZE]


def parse(data, key, session=None):
    """
    Verify a datagram and return C{(session, round, offset, payload)}
    without copying the payload (a C{memoryview} of C{data}): the receiver's
    fast path.

    @raise DatagramError: as L{DataDatagram.from_wire}.
    """
    size = len(data)
    if size < OVERHEAD:
        raise DatagramError("datagram of %d bytes is shorter than the %d-byte overhead"
                            % (size, OVERHEAD))
    version, sess, rnd, hi, lo, length = _HEADER.unpack_from(data)
    if version != VERSION:
        raise DatagramError("unknown version %d" % (version,))
    if session is not None and sess != session:
        raise DatagramError("datagram of session %d, expected %d" % (sess, session))
    if HEADER_SIZE + length + TAG_SIZE != size:
        raise DatagramError("length field %d disagrees with datagram size %d"
                            % (length, size))
    view = memoryview(data)
    if not hmac.compare_digest(
            hmac.digest(key, view[:size - TAG_SIZE], "sha256")[:TAG_SIZE],
            view[size - TAG_SIZE:]):
        raise DatagramError("bad tag")
    return sess, rnd, (hi << 32) | lo, view[HEADER_SIZE:size - TAG_SIZE]
