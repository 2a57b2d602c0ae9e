# -*- test-case-name: tests.test_imagecast_service,tests.test_imagecast_limits -*-
"""
The control channel's AMP commands and their errors (C{docs/wire/imagecast.md}).

Receivers send L{Challenge} and L{Register} (authenticated: the answer to
the challenge proves the receiver holds its secret, see L{registrationProof}),
then L{ReportMissing}, L{Complete}, L{Leave} and L{FetchRange}; the server
pushes L{Pieces} (the digest of every piece of the image, which
authenticates the multicast data), L{Announce}, L{EndRound}, L{EndSession}
and L{Ping}.
Operators send L{StartSession} and L{Status}. Every error a responder may
raise on purpose is declared, so that it reaches the caller as a failure
instead of closing the connection. Fields added after the first version carry
C{optional=True}.

AMP values are at most 65,535 bytes: range lists and JSON travel in
L{ChunkedBytes}, which spreads one value over several keys. A range list is
never expanded beyond the limits of its command: L{RangeList} counts its
ranges before it builds them, and the ranges of L{ReportMissing} stay
encoded (L{_ranges.EncodedRanges}) until the server knows the connection
may report for the session and how large its image is.
"""

import hashlib
import hmac
import json
import struct

from twisted.protocols import amp

from provisioner.imagecast import ranges as _ranges

__all__ = [
    "ChunkedBytes", "RangeList", "HoleList", "JSON",
    "Challenge", "Register", "Pieces", "Ping", "Announce", "EndRound", "EndSession", "ReportMissing", "Complete",
    "Leave", "Progress", "FetchRange", "StartSession", "Status",
    "ImagecastError", "MulticastError", "NotRegistered", "UnknownSession", "StaleRound",
    "BadRanges", "ChecksumMismatch", "NotAllowed", "NoSuchImage", "BadRequest",
    "NotAuthenticated",
    "FETCH_MAX", "MAX_LIST_RANGES", "MAX_HOLE_RANGES", "FEATURE_HOLES", "FEATURES",
    "MalformedRanges", "checkRanges",
    "NONCE_SIZE", "registrationProof", "AUTHENTICATION_MODES",
]

#: the most bytes one L{FetchRange} returns
FETCH_MAX = 60000

#: the most ranges a range list pushed by the server (L{Announce},
#: L{EndSession}) may hold; the server announces at most
#: C{imagecast.max_ranges} (see the schema)
MAX_LIST_RANGES = 1 << 22

#: the most holes a L{Pieces} may announce (the sender announces at most
#: L{provisioner.imagecast.extents.MAX_HOLES})
MAX_HOLE_RANGES = 1 << 16

#: the feature of L{Register} that says the receiver takes the holes of a
#: sparse image (L{Pieces}' C{holes}): zeroes them on its output and
#: counts them as received (docs/wire/imagecast.md, I{Sparse images})
FEATURE_HOLES = "holes"

#: the features this tree's receiver registers with
FEATURES = (FEATURE_HOLES,)

_PIECE = 0xFFFF

#: bytes of the nonce a L{Challenge} answers with
NONCE_SIZE = 32

#: the values of C{imagecast.authentication} (and of L{Challenge}'s answer)
AUTHENTICATION_MODES = ("secret", "certificate", "none")

_PROOF_LABEL = b"provisioner imagecast register v1\0"


def _field(text):
    data = text.encode("utf-8")
    return struct.pack("!H", len(data)) + data


def registrationProof(secret, nonce, clientId, serverName):
    """
    What a receiver answers a L{Challenge} with in L{Register}:
    HMAC-SHA256 under its secret of the label, the server's nonce, its
    client id and the server's name (each text preceded by its length in
    two bytes, so that no two pairs of id and name give the same bytes).

    @param secret: the receiver's secret (bytes, as read from its file).
    @return: the 32-byte proof.
    """
    message = _PROOF_LABEL + bytes(nonce) + _field(clientId) + _field(serverName)
    return hmac.digest(secret, message, hashlib.sha256)


class ChunkedBytes(amp.Argument):
    """
    Bytes of any length, spread over the keys C{name}, C{name.1}, C{name.2},
    ... each at most 65,535 bytes long.
    """

    def toBox(self, name, strings, objects, proto):
        value = objects.get(amp._wireNameToPythonIdentifier(name))
        if value is None:
            if self.optional:
                return
            raise amp.InvalidSignature("%r is required" % (name,))
        value = self.toString(value)
        pieces = [value[i:i + _PIECE] for i in range(0, len(value), _PIECE)] or [b""]
        strings[name] = pieces[0]
        for i, piece in enumerate(pieces[1:], 1):
            strings[name + b"." + str(i).encode()] = piece

    #: the most bytes the value may have, or L{None} (the box's limit)
    maxBytes = None

    def fromBox(self, name, strings, objects, proto):
        nk = amp._wireNameToPythonIdentifier(name)
        first = strings.get(name)
        if first is None:
            if self.optional:
                objects[nk] = None
                return
            raise amp.InvalidSignature("%r is missing" % (name,))
        pieces = [first]
        size = len(first)
        i = 1
        while True:
            piece = strings.get(name + b"." + str(i).encode())
            if piece is None:
                break
            size += len(piece)
            if self.maxBytes is not None and size > self.maxBytes:
                objects[nk] = self.tooLarge(size)
                return
            pieces.append(piece)
            i += 1
        objects[nk] = self.fromString(b"".join(pieces))

    def tooLarge(self, size):
        """
        The value of one longer than L{maxBytes}.

        @raise amp.InvalidSignature: by default.
        """
        raise amp.InvalidSignature("value of more than %d bytes" % (self.maxBytes,))

    def toString(self, value):
        return value

    def fromString(self, data):
        return data


class MalformedRanges(str):
    """
    What L{RangeList} decodes a malformed value to: argument parsing must
    not raise (AMP would answer with an undeclared error and drop the
    connection), so responders pass values through L{checkRanges}, which
    raises the declared L{BadRanges}.
    """


class RangeList(ChunkedBytes):
    """
    A normalised list of C{(start, end)} byte ranges (L{_ranges.toWire}).
    The last list encoded is remembered: one round's announcement goes to
    every receiver.

    Decoding checks the encoded size (at most C{maxBytes}) and counts the
    ranges as the list inflates: one of more than C{maxRanges} is refused
    before a single range is built (L{MalformedRanges}).

    @ivar maxRanges: the most ranges a list of this command may hold, or
        L{None}.
    @ivar lazy: decode nothing: the value is an L{_ranges.EncodedRanges}
        that L{checkRanges} (or the server, with the image's size) decodes
        once the peer is known to be allowed to send it.
    """

    _last = (None, None)

    def __init__(self, optional=False, maxRanges=None, maxBytes=None, lazy=False):
        ChunkedBytes.__init__(self, optional)
        self.maxRanges = maxRanges
        self.maxBytes = maxBytes
        self.lazy = lazy

    def toString(self, value):
        if isinstance(value, _ranges.EncodedRanges):
            return value.data
        if self._last[0] is value:
            return self._last[1]
        data = _ranges.toWire(value)
        RangeList._last = (value, data)
        return data

    def fromString(self, data):
        if self.lazy:
            return _ranges.EncodedRanges(data)
        try:
            return _ranges.fromWire(data, maxRanges=self.maxRanges)
        except _ranges.RangeError as e:
            return MalformedRanges(str(e))

    def tooLarge(self, size):
        return MalformedRanges("range list of more than %d bytes" % (self.maxBytes,))


class HoleList(RangeList):
    """
    The holes of a sparse image (L{Pieces}): an optional L{RangeList} that
    is left out of the responder's arguments when the box does not carry
    it (an image without holes), so that responders written before it
    (which take no C{holes}) answer such a L{Pieces} as before.
    """

    def __init__(self, maxRanges=None):
        RangeList.__init__(self, optional=True, maxRanges=maxRanges)

    def fromBox(self, name, strings, objects, proto):
        if strings.get(name) is None:
            return
        RangeList.fromBox(self, name, strings, objects, proto)


def checkRanges(value, limit=None, maxRanges=None):
    """
    Return a decoded L{RangeList} value, or raise L{BadRanges} if it was
    malformed, ends beyond C{limit} or holds more than C{maxRanges}
    ranges. An L{_ranges.EncodedRanges} is decoded here, its count checked
    before it is expanded.
    """
    if isinstance(value, MalformedRanges):
        raise BadRanges(str(value))
    if isinstance(value, _ranges.EncodedRanges):
        try:
            return value.decode(limit, maxRanges)
        except _ranges.RangeError as e:
            raise BadRanges(str(e))
    if limit is not None and value and value[-1][1] > limit:
        raise BadRanges("range %d-%d ends beyond %d" % (value[-1][0], value[-1][1], limit))
    if maxRanges is not None and len(value) > maxRanges:
        raise BadRanges("range list holds more than %d ranges" % (maxRanges,))
    return value


class JSON(ChunkedBytes):
    """
    A JSON document of any size.
    """

    def toString(self, value):
        return json.dumps(value, sort_keys=True).encode("utf-8")

    def fromString(self, data):
        return json.loads(data.decode("utf-8"))


class ImagecastError(Exception):
    """
    Base of the declared errors.
    """


#: the name before imagecast was named apart from multicast TFTP
MulticastError = ImagecastError


class NotRegistered(ImagecastError):
    """
    The connection has not sent L{Register}.
    """


class UnknownSession(ImagecastError):
    """
    No such session (it finished long ago, or never existed).
    """


class StaleRound(ImagecastError):
    """
    A report names a round other than the current one.
    """


class BadRanges(ImagecastError):
    """
    A range list is malformed or leaves the image.
    """


class ChecksumMismatch(ImagecastError):
    """
    The receiver's sha256 is not the image's.
    """


class NotAllowed(ImagecastError):
    """
    The peer may not do this (operator commands from outside
    C{imagecast.admin_networks}).
    """


class NoSuchImage(ImagecastError):
    """
    The image named in L{StartSession} is not there or is not readable.
    """


class BadRequest(ImagecastError):
    """
    An argument is out of range.
    """


class NotAuthenticated(ImagecastError):
    """
    A L{Register} without a valid proof (no challenge, a wrong secret, an
    id the receiver's certificate does not name).
    """


_COMMON = {NotRegistered: b"NOT_REGISTERED", UnknownSession: b"UNKNOWN_SESSION",
           BadRanges: b"BAD_RANGES", BadRequest: b"BAD_REQUEST"}


def _errors(extra=None):
    out = dict(_COMMON)
    out.update(extra or {})
    return out


class Challenge(amp.Command):
    """
    Receiver to server, before each L{Register}: the answer carries a fresh
    C{nonce} (L{NONCE_SIZE} bytes, good for the next L{Register} on this
    connection only), the C{server}'s name and how receivers are
    C{authentication}: C{secret} (L{Register} carries
    L{registrationProof}), C{certificate} (the id must be named by the
    receiver's TLS client certificate) or C{none} (anyone may register).
    """
    arguments = []
    response = [(b"nonce", amp.String()),
                (b"server", amp.Unicode()),
                (b"authentication", amp.Unicode())]
    errors = {}


class Register(amp.Command):
    """
    A receiver enrolls (permanent group of the session it wants, now or when
    one starts). Sent again after every reconnection: the same C{clientId}
    resumes its place, once the connection that held it is gone (an id is
    never taken from a live connection: C{BAD_REQUEST}). Refused
    (C{NOT_AUTHENTICATED}) without a valid C{proof} when the server
    authenticates receivers by secret (see L{Challenge}), and
    (C{BAD_REQUEST}) beyond the server's limits: ids per connection,
    receivers registered, members of a session.

    The answer's C{maxReportRanges} (optional: older servers leave it out)
    is the most ranges the server keeps of one L{ReportMissing}; a longer
    report is cut there (everything after its last kept range counts as
    missing), so a receiver lacking more should merge its smallest gaps
    first (L{_ranges.coalesce}). C{maxBoxBytes} is the largest box the
    server reads (C{imagecast.max_box_bytes}): a report must stay below it.

    C{features} (optional, since sparse images) names what the receiver
    understands beyond the first version of these commands:
    L{FEATURE_HOLES}. A receiver without it is refused
    (C{NOT_AUTHENTICATED}, the one refusal older receivers take as final)
    when the session it would join sends a sparse image.
    """
    arguments = [(b"clientId", amp.Unicode()),
                 (b"address", amp.Unicode()),
                 (b"image", amp.Unicode(optional=True)),
                 (b"proof", amp.String(optional=True)),
                 (b"features", amp.ListOf(amp.Unicode(), optional=True))]
    response = [(b"server", amp.Unicode()),
                (b"maxReportRanges", amp.Integer(optional=True)),
                (b"maxBoxBytes", amp.Integer(optional=True))]
    errors = {BadRequest: b"BAD_REQUEST", NotAuthenticated: b"NOT_AUTHENTICATED"}


class PieceDigests(ChunkedBytes):
    """
    The digests of a L{Pieces}: at most C{maxBytes} bytes; a longer value
    decodes to L{None} (the receiver refuses it).
    """

    maxBytes = (1 << 20) * 32

    def tooLarge(self, size):
        return None


class Pieces(amp.Command):
    """
    Server to receiver, before the first L{Announce} on each connection:
    the SHA-256 C{digests} (32 bytes each, back to back) of the pieces of
    C{pieceSize} bytes of C{session}'s image. A receiver keeps the bytes
    of a piece only once they hash to its digest (the data key of
    L{Announce} is the same for every receiver and authenticates nothing
    between them).

    C{holes} (optional, only for a sparse image, and only to receivers
    that registered L{FEATURE_HOLES}): the ranges of the image that read
    as zeros and are never sent; the receiver zeroes them on its output
    and counts them as received.
    """
    arguments = [(b"session", amp.Integer()),
                 (b"pieceSize", amp.Integer()),
                 (b"digests", PieceDigests()),
                 (b"holes", HoleList(maxRanges=MAX_HOLE_RANGES))]
    response = []
    errors = _errors()


class Ping(amp.Command):
    """
    Server to receiver: are you there? Sent on the connection holding an
    id that another connection tries to register; a connection that does
    not answer in time is closed, and the id may then be registered again.
    """
    arguments = []
    response = []
    errors = {}


class Announce(amp.Command):
    """
    Server to receiver: round C{round} of C{session} will carry exactly
    C{ranges} on C{group}:C{port}, each datagram tagged under C{key}.
    """
    arguments = [(b"session", amp.Integer()),
                 (b"name", amp.Unicode()),
                 (b"size", amp.Integer()),
                 (b"sha256", amp.Unicode()),
                 (b"chunkSize", amp.Integer()),
                 (b"ranges", RangeList(maxRanges=MAX_LIST_RANGES)),
                 (b"group", amp.Unicode()),
                 (b"port", amp.Integer()),
                 (b"key", amp.String()),
                 (b"round", amp.Integer())]
    response = []
    errors = _errors()


class EndRound(amp.Command):
    """
    Server to receiver: the last datagram of C{round} has been sent; report
    what is missing.
    """
    arguments = [(b"session", amp.Integer()),
                 (b"round", amp.Integer())]
    response = []
    errors = _errors()


class EndSession(amp.Command):
    """
    Server to receiver: no more multicast rounds. Whatever the receiver still
    misses (C{unrecoverable} is the union the server knows of) it fetches
    with L{FetchRange}.
    """
    arguments = [(b"session", amp.Integer()),
                 (b"unrecoverable", RangeList(maxRanges=MAX_LIST_RANGES)),
                 (b"reason", amp.Unicode(optional=True))]
    response = []
    errors = _errors()


class ReportMissing(amp.Command):
    """
    Receiver to server: after C{round}, these ranges of the image are still
    missing (empty: nothing, the receiver leaves the current group).

    The server decodes C{ranges} only once the connection is enrolled in
    C{session} and the round is current (the value stays encoded until
    then), at most C{imagecast.max_report_ranges} of them and none beyond
    the image (see L{Register}'s C{maxReportRanges}).
    """
    arguments = [(b"session", amp.Integer()),
                 (b"round", amp.Integer()),
                 (b"ranges", RangeList(lazy=True))]
    response = []
    errors = _errors({StaleRound: b"STALE_ROUND"})


class Complete(amp.Command):
    """
    Receiver to server: the whole image is written and its sha256, computed
    by the receiver over what it holds, is this. Accepted only from the
    connection that holds the receiver's id, and only with the image's
    digest (C{CHECKSUM_MISMATCH} otherwise).
    """
    arguments = [(b"session", amp.Integer()),
                 (b"sha256", amp.Unicode())]
    response = []
    errors = _errors({ChecksumMismatch: b"CHECKSUM_MISMATCH"})


class Leave(amp.Command):
    """
    Receiver to server: giving up on C{session} (disk full, operator), with a
    reason for the scorecard.
    """
    arguments = [(b"session", amp.Integer()),
                 (b"reason", amp.Unicode())]
    response = []
    errors = _errors()


class Progress(amp.Command):
    """
    Receiver to server, during a round's data: every datagram up to byte
    C{position} of the image has been taken off the socket (the first round
    only). The sender keeps at most C{imagecast.flow_window} bytes ahead of
    the slowest receiver, so that no receiver's socket buffer overflows.

    :since: flow control (optional: a server or receiver without it ignores
        it).
    """
    arguments = [(b"session", amp.Integer()),
                 (b"round", amp.Integer()),
                 (b"position", amp.Integer())]
    response = []
    errors = _errors()
    requiresAnswer = False


class FetchRange(amp.Command):
    """
    Receiver to server: the bytes at C{offset} (at most L{FETCH_MAX}), for
    ranges multicast could not deliver.
    """
    arguments = [(b"session", amp.Integer()),
                 (b"offset", amp.Integer()),
                 (b"length", amp.Integer())]
    response = [(b"data", amp.String())]
    errors = _errors()


class StartSession(amp.Command):
    """
    Operator to server: imagecast C{image} (a name below C{imagecast.root})
    once C{minReceivers} are enrolled or C{maxWait} seconds have passed.
    """
    arguments = [(b"image", amp.Unicode()),
                 (b"minReceivers", amp.Integer(optional=True)),
                 (b"maxWait", amp.Float(optional=True)),
                 (b"rate", amp.Float(optional=True)),
                 (b"maxRounds", amp.Integer(optional=True))]
    response = [(b"session", amp.Integer()),
                (b"name", amp.Unicode()),
                (b"size", amp.Integer())]
    errors = {NotAllowed: b"NOT_ALLOWED", NoSuchImage: b"NO_SUCH_IMAGE",
              BadRequest: b"BAD_REQUEST"}


class Status(amp.Command):
    """
    Operator to server: the scorecard of every session kept (or one).
    With C{wait} (seconds, one C{session}) the answer comes once the
    session has more than C{rounds} rounds or is done, or when C{wait} has
    passed: a long poll.
    """
    arguments = [(b"session", amp.Integer(optional=True)),
                 (b"detail", amp.Boolean(optional=True)),
                 (b"wait", amp.Float(optional=True)),
                 (b"rounds", amp.Integer(optional=True))]
    response = [(b"scorecard", JSON())]
    errors = {NotAllowed: b"NOT_ALLOWED", UnknownSession: b"UNKNOWN_SESSION"}
