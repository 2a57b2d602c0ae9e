# -*- test-case-name: tests.test_imagecast_datagram -*-
"""
The data-channel datagram: a 15-byte header, the payload, and a 12-byte
HMAC-SHA256 tag under the per-session key handed out over the control
channel. Pure codec: no sockets, no reactor. Layout in C{docs/wire/imagecast.md}::

    0      1         5       7              13      15        15+len   +12
    | ver  | session | round | offset (u48) | len   | payload | tag    |

All integers are big-endian. The tag covers header and payload.

L{SessionKey} is the fast path of both ends (the same bytes as L{encode}
and L{parse}): the HMAC's key pads are hashed once per session, and
L{SessionKey.verifyBatch} verifies a whole batch of datagrams and returns
them as contiguous runs, so that the receiver does its bookkeeping and its
writes once per run instead of once per datagram.
"""

import hashlib
import hmac
import struct

try:
    # the receiver's hot loop in C (optional: built by setup.py where a
    # compiler and OpenSSL's headers are); the same results as the Python
    # loop of SessionKey.verifyBatch
    from provisioner.imagecast import _fastpath
except ImportError:
    _fastpath = None

__all__ = ["DataDatagram", "DatagramError", "parse", "encode", "VERSION", "HEADER_SIZE", "TAG_SIZE",
           "OVERHEAD", "payloadSize", "newKey", "SessionKey"]

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


_BLOCK = 64  # SHA-256 block size (RFC 2104's B)


class SessionKey:
    """
    HMAC-SHA256 under one session key with the inner and outer pads hashed
    once (RFC 2104): each tag then costs one C{copy} of each half-done hash
    instead of hashing the key twice again, about half the CPU of
    C{hmac.digest} for a 1472-byte datagram. Tags are the same bytes.

    @ivar key: the 32-byte session key.
    @ivar session: the session id datagrams must carry.
    """

    __slots__ = ("key", "session", "_inner", "_outer", "_pads")

    def __init__(self, key, session, fast=True):
        self.key = key
        self.session = session
        block = key if len(key) <= _BLOCK else hashlib.sha256(key).digest()
        block = block.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
        self._pads = _fastpath.prepare(key) if fast and _fastpath is not None else None

    def tag(self, body):
        """
        Return the 12-byte tag of C{body} (header and payload).
        """
        inner = self._inner.copy()
        inner.update(body)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:TAG_SIZE]

    def encode(self, roundNumber, offset, payload):
        """
        Encode and sign one datagram (the bytes of L{encode}).
        """
        if not 0 <= offset <= MAX_OFFSET:
            raise DatagramError("offset %d out of range" % (offset,))
        body = _HEADER.pack(VERSION, self.session, roundNumber, offset >> 32,
                            offset & 0xffffffff, len(payload)) + payload
        return body + self.tag(body)

    def encodeRun(self, roundNumber, start, data, pieces):
        """
        Encode and sign consecutive pieces of one buffer (the sender's
        batch: one C{pread}, one datagram per piece).

        @param start: the image offset of C{data}'s first byte.
        @param pieces: C{(offset, length)} pairs inside C{data}.
        @return: a list of datagrams (the bytes of L{encode}).
        """
        pack = _HEADER.pack
        innerHash, outerHash = self._inner, self._outer
        session = self.session
        view = memoryview(data)
        out = []
        for offset, length in pieces:
            if not 0 <= offset <= MAX_OFFSET:
                raise DatagramError("offset %d out of range" % (offset,))
            at = offset - start
            body = pack(VERSION, session, roundNumber, offset >> 32, offset & 0xffffffff,
                        length) + view[at:at + length]
            inner = innerHash.copy()
            inner.update(body)
            outer = outerHash.copy()
            outer.update(inner.digest())
            out.append(body + outer.digest()[:TAG_SIZE])
        return out

    def canReceive(self):
        """
        Whether L{receiveBatch} is available (the C fast path is built).
        """
        return self._pads is not None and hasattr(_fastpath, "receive_batch")

    def receiveBatch(self, fd, buffer, slot, batch, roundNumber, limit, held, outfd, hashAt):
        """
        The receiver's read loop in one C call (see L{canReceive}): one
        C{recvmmsg} of up to C{batch} datagrams from the socket C{fd} into
        C{buffer} (C{batch * slot} writable bytes), the checks of
        L{verifyBatch}, and the bytes not held written to C{outfd} with
        C{pwritev} at their offsets: bytes in C{held}, or written by an
        earlier datagram of the batch, are never written again (they may
        have been checked against their piece's digest already).

        @param held: the bytes already here (a
            L{provisioner.imagecast.ranges.RangeSet}).
        @param hashAt: the end of the in-order prefix: the run holding
            that offset is returned with its bytes from there on, for the
            prefix hash.
        @return: C{(count, runs, rejected, stale, truncated, peer, error,
            at)}: the datagrams read (0: none waited); the runs written
            (only new bytes),
            each C{(start, end, data)} with C{data} the bytes from
            C{hashAt} to C{end} of the run holding C{hashAt} (else
            L{None}); the counts of
            L{verifyBatch} and of datagrams longer than C{slot}; the raw
            source address of the first rejected datagram or L{None}; the
            C{errno} and offset of a write that failed (C{0, 0} when none
            did; the runs after it are not written).
        @raise OSError: when the socket fails (not for "nothing waits").
        """
        starts, ends = held.bounds()
        return _fastpath.receive_batch(fd, buffer, slot, batch, self.session, roundNumber,
                                       limit, self._pads, starts, ends, outfd, hashAt)

    def verifyBatch(self, datagrams, roundNumber, limit, held=None):
        """
        Verify a batch of datagrams and group what is good into runs.

        A datagram is I{rejected} when it is short, of another version or
        session, its length field disagrees with its size, its tag does not
        verify, or it ends beyond C{limit}; I{stale} when it verifies but
        belongs to an earlier round. A datagram of a later round is kept
        (the sender starts a repair round's data without waiting for the
        receivers that still take data to acknowledge its announcement).
        The tag proves only that the sender knew the session's key, which
        every receiver of the session knows: the receiver checks the bytes
        with their piece's digest
        (L{provisioner.imagecast.pieces}). The others are returned as runs of
        consecutive datagrams (each starting where the previous one ended),
        in the order they came.

        A datagram whose bytes C{held} already covers is dropped before its
        tag is computed (most of a repair round, for a receiver that missed
        little of it): it would not be written, so it needs no
        authentication.

        Without the C fast path this is the receiver's per-datagram loop:
        it stays one loop over local names, with no call per datagram
        other than the hashes (a helper per check would cost a call per
        datagram), and follows C{check()} in C{_fastpath.c} step by step.

        @param datagrams: a sequence of bytes-like objects (a C{recvmmsg}
            batch: C{memoryview}s are not copied).
        @param roundNumber: the round announced (datagrams of earlier
            rounds are stale).
        @param limit: the image size.
        @param held: the bytes already here (a
            L{provisioner.imagecast.ranges.RangeSet}), or L{None}.
        @return: C{(runs, rejected, stale)}; each run is C{(start, end,
            payloads)} with C{payloads} the C{memoryview}s of the payloads
            in offset order.
        """
        if self._pads is not None:
            bounds = held.bounds() if held is not None else (None, None)
            return _fastpath.verify_batch(datagrams, self.session, roundNumber, limit,
                                          self._pads, *bounds)
        unpack = _HEADER.unpack_from
        innerHash, outerHash = self._inner, self._outer
        compare = hmac.compare_digest
        session = self.session
        covers = held.covers if held is not None else None
        runs = []
        rejected = stale = 0
        runStart = runEnd = -1
        payloads = None
        for data in datagrams:
            size = len(data)
            if size < OVERHEAD:
                rejected += 1
                continue
            version, sess, rnd, hi, lo, length = unpack(data)
            if version != VERSION or sess != session or length + OVERHEAD != size:
                rejected += 1
                continue
            offset = (hi << 32) | lo
            if covers is not None and covers(offset, offset + length):
                continue
            view = memoryview(data)
            body = size - TAG_SIZE
            inner = innerHash.copy()
            inner.update(view[:body])
            outer = outerHash.copy()
            outer.update(inner.digest())
            if not compare(outer.digest()[:TAG_SIZE], view[body:]):
                rejected += 1
                continue
            if rnd < roundNumber:
                stale += 1
                continue
            end = offset + length
            if end > limit:
                rejected += 1
                continue
            if offset == runEnd:
                payloads.append(view[HEADER_SIZE:body])
                runEnd = end
            else:
                if payloads:
                    runs.append((runStart, runEnd, payloads))
                runStart, runEnd = offset, end
                payloads = [view[HEADER_SIZE:body]]
        if payloads:
            runs.append((runStart, runEnd, payloads))
        return runs, rejected, stale
