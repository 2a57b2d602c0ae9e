# -*- test-case-name: tests.test_imagecast_auth -*-
"""
The pieces of an image and their SHA-256 digests: how imagecast data is
authenticated (C{docs/wire/imagecast.md}, I{Data authentication}).

The image is cut into pieces of L{pieceSizeFor} bytes (1 MiB, doubled for
images of more than L{MAX_PIECES} MiB); the sender sends the SHA-256 of
every piece to each receiver over its own control connection
(L{provisioner.imagecast.commands.Pieces}) before its first announcement.
The multicast datagrams' tag (one key per session, known to every
receiver) only filters blind spoofing; a receiver accepts a piece once
the bytes it wrote there hash to the piece's digest, and asks for it again
otherwise. Shared by the sender and the receiver: pure functions, and one
blocking hasher (run it in a thread).
"""

import hashlib
import os

__all__ = ["DIGEST_SIZE", "PIECE_MIN", "MAX_PIECES", "MAX_PIECES_ACCEPTED",
           "pieceSizeFor", "pieceCount", "pieceBounds", "pieceDigests", "splitDigests",
           "zeroDigest", "PieceError"]

#: bytes of one digest (SHA-256)
DIGEST_SIZE = 32

#: the smallest piece the sender uses
PIECE_MIN = 1 << 20

#: the most pieces the sender cuts an image into (2 MiB of digests)
MAX_PIECES = 1 << 16

#: the most pieces a receiver accepts a list of (32 MiB of digests)
MAX_PIECES_ACCEPTED = 1 << 20


class PieceError(ValueError):
    """
    A piece list does not fit its image.
    """


def pieceSizeFor(size):
    """
    @return: the piece size for an image of C{size} bytes: 1 MiB, doubled
        until the image has at most L{MAX_PIECES} pieces.
    """
    piece = PIECE_MIN
    while size > piece * MAX_PIECES:
        piece *= 2
    return piece


def pieceCount(size, pieceSize):
    """
    @return: how many pieces of C{pieceSize} bytes an image of C{size}
        bytes has (the last one may be shorter).
    """
    return (size + pieceSize - 1) // pieceSize


def pieceBounds(index, size, pieceSize):
    """
    @return: C{(start, end)} of piece C{index}.
    """
    start = index * pieceSize
    return start, min(size, start + pieceSize)


_ZEROS = bytes(1 << 20)
_zeroDigests = {}


def zeroDigest(length):
    """
    @return: the SHA-256 of C{length} zero bytes (kept per length: the
        digest of a piece that lies in a hole of a sparse image).
    """
    digest = _zeroDigests.get(length)
    if digest is None:
        h = hashlib.sha256()
        left = length
        while left > 0:
            take = min(left, len(_ZEROS))
            h.update(memoryview(_ZEROS)[:take])
            left -= take
        digest = h.digest()
        if len(_zeroDigests) < 64:
            _zeroDigests[length] = digest
    return digest


def pieceDigests(fd, size, pieceSize, read=1 << 20, holes=()):
    """
    The digests of every piece of the first C{size} bytes of the file open
    on C{fd} (blocking: run it in a thread).

    @param holes: normalised ranges known to read as zeros (the holes of a
        sparse image, L{provisioner.imagecast.extents.findHoles}): a piece
        that lies in one is not read, its digest is L{zeroDigest}; zeros
        are hashed for the parts of other pieces that do.
    @return: the digests, back to back (L{DIGEST_SIZE} bytes each).
    @raise EOFError: if the file ends before C{size}.
    """
    out = []
    offset = 0
    h = 0  # the first hole that may reach the current piece
    holes = list(holes)
    while offset < size:
        end = min(size, offset + pieceSize)
        while h < len(holes) and holes[h][1] <= offset:
            h += 1
        if h < len(holes) and holes[h][0] <= offset and holes[h][1] >= end:
            out.append(zeroDigest(end - offset))
            offset = end
            continue
        digest = hashlib.sha256()
        at = offset
        k = h
        while at < end:
            while k < len(holes) and holes[k][1] <= at:
                k += 1
            if k < len(holes) and holes[k][0] <= at:
                # in a hole: zeros, not read
                stop = min(end, holes[k][1])
                left = stop - at
                while left > 0:
                    take = min(left, len(_ZEROS))
                    digest.update(memoryview(_ZEROS)[:take])
                    left -= take
                at = stop
                continue
            stop = end if k >= len(holes) else min(end, holes[k][0])
            data = os.pread(fd, min(read, stop - at), at)
            if not data:
                raise EOFError("short read at %d while hashing pieces" % (at,))
            digest.update(data)
            at += len(data)
        out.append(digest.digest())
        offset = end
    return b"".join(out)


def splitDigests(digests, size, pieceSize, most=MAX_PIECES_ACCEPTED):
    """
    Check a piece list against its image and cut it into digests.

    @return: a list of L{DIGEST_SIZE}-byte digests, one per piece.
    @raise PieceError: if the piece size is not positive, the image has
        more than C{most} pieces, or the list does not hold one digest per
        piece.
    """
    if pieceSize < 1 or size < 0:
        raise PieceError("piece size %d for an image of %d bytes" % (pieceSize, size))
    count = pieceCount(size, pieceSize)
    if count > most:
        raise PieceError("%d pieces of %d bytes: more than %d" % (count, pieceSize, most))
    if len(digests) != count * DIGEST_SIZE:
        raise PieceError("%d bytes of digests for %d pieces" % (len(digests), count))
    return [bytes(digests[i:i + DIGEST_SIZE])
            for i in range(0, len(digests), DIGEST_SIZE)]
