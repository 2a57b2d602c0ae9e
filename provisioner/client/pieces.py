# -*- test-case-name: tests.test_client_receiver -*-
"""
The receiver's check of the pieces it holds against the digests the
server sent over its control connection (L{provisioner.imagecast.pieces}):
the multicast data's tag only filters blind spoofing (every receiver knows
the session key), the digests say which bytes are the image's.

A piece is checked as soon as the receiver holds all of it: while the
in-order prefix is hashed as data arrives, by the same bytes
(L{provisioner.client.imagehash.ImageHash.extend}), else by reading it back
from the output in a thread (L{PieceCheck.added}). A piece whose bytes do
not hash to its digest is dropped from what the receiver holds (and from
the in-order hash) and asked for again in the next report, or fetched over
the control connection once the rounds are over.
"""

import hashlib

from twisted.internet import defer
from twisted.logger import Logger

from provisioner.hashing import hashRange
from provisioner.imagecast import pieces as P

__all__ = ["PieceCheck"]


def _readPiece(path, start, end):
    """
    The digest of bytes C{start} to C{end} of the file at C{path}
    (blocking).
    """
    return hashRange(path, hashlib.sha256(), start, end).digest()


class PieceCheck:
    """
    The pieces of one image and what is known of them.

    @ivar size: the image size.
    @ivar pieceSize: the piece size.
    @ivar digests: one L{P.DIGEST_SIZE}-byte digest per piece.
    @ivar verified: one byte per piece, 1 once its bytes matched.
    @ivar rejected: pieces whose bytes did not match (each time).
    @ivar readBack: pieces checked by reading them back.
    """

    log = Logger()

    def __init__(self, size, pieceSize, digests, path, covers, runInThread, rejected):
        """
        @param digests: the digests, back to back (checked against C{size}
            and C{pieceSize}: L{P.PieceError}).
        @param path: the output, read back for pieces that did not arrive
            in order.
        @param covers: C{covers(start, end)}: whether the receiver holds all
            of C{[start, end)}.
        @param runInThread: C{runInThread(f, *args)} returns a Deferred of
            C{f(*args)} run off the reactor thread.
        @param rejected: called with C{(index, start, end, inOrder)} when a
            piece does not match: the receiver drops its bytes.
        """
        self.size = size
        self.pieceSize = pieceSize
        self.digests = P.splitDigests(digests, size, pieceSize)
        self.count = len(self.digests)
        self.verified = bytearray(self.count)
        self.rejected = 0
        self.readBack = 0
        self.path = path
        self._covers = covers
        self._runInThread = runInThread
        self._onRejected = rejected
        self._pending = {}
        self._waiters = []

    def bounds(self, index):
        """
        @return: C{(start, end)} of piece C{index}.
        """
        return P.pieceBounds(index, self.size, self.pieceSize)

    def compare(self, index, digest, inOrder):
        """
        Piece C{index}'s bytes hash to C{digest}: mark it verified, or
        reject it.

        @return: whether it matched.
        """
        if digest == self.digests[index]:
            self.verified[index] = 1
            return True
        self.verified[index] = 0
        self.rejected += 1
        start, end = self.bounds(index)
        if self.rejected == 1:
            self.log.info("piece {index} ({start}-{end}) does not match its digest (forged "
                          "or damaged data): dropped and asked for again", index=index,
                          start=start, end=end)
        else:
            self.log.debug("piece {index} ({start}-{end}) does not match its digest",
                           index=index, start=start, end=end)
        self._onRejected(index, start, end, inOrder)
        return False

    def added(self, start, end):
        """
        Bytes C{[start, end)} were written: check each piece they complete
        that no in-order hash has checked (read back in a thread).
        """
        if end <= start:
            return
        size = self.pieceSize
        for index in range(start // size, (end - 1) // size + 1):
            if self.verified[index] or index in self._pending:
                continue
            pieceStart, pieceEnd = self.bounds(index)
            if self._covers(pieceStart, pieceEnd):
                self._readBack(index)

    def zeroed(self, holes):
        """
        The receiver made C{holes} (the holes of a sparse image, normalised)
        read as zeros itself: each piece that lies in one is verified
        without reading it back, if its digest is that of zeros (the others
        are checked as usual once held whole).

        @return: how many pieces were verified.
        """
        size = self.pieceSize
        count = 0
        for start, end in holes:
            for index in range(-(-start // size), end // size + 1):
                pieceStart, pieceEnd = self.bounds(index) if index < self.count else (0, -1)
                if pieceStart < start or pieceEnd > end or pieceEnd <= pieceStart:
                    continue
                if not self.verified[index] and (
                        self.digests[index] == P.zeroDigest(pieceEnd - pieceStart)):
                    self.verified[index] = 1
                    count += 1
        return count

    def sweep(self):
        """
        Check every piece held whole and not verified (after resuming from
        the state file, before the end).
        """
        for index in range(self.count):
            if not self.verified[index] and index not in self._pending:
                pieceStart, pieceEnd = self.bounds(index)
                if self._covers(pieceStart, pieceEnd):
                    self._readBack(index)

    def _readBack(self, index):
        start, end = self.bounds(index)
        self.readBack += 1
        d = self._pending[index] = self._runInThread(_readPiece, self.path, start, end)

        def read(digest):
            if self._pending.get(index) is d:
                del self._pending[index]
                self.compare(index, digest, False)

        def unreadable(f):
            if self._pending.get(index) is d:
                del self._pending[index]
            self.log.info("reading back piece {index} failed: {error}", index=index,
                          error=f.getErrorMessage())
            # not verified: checked again by the next sweep
        d.addCallbacks(read, unreadable)
        d.addBoth(self._poke)

    def _poke(self, _=None):
        if not self._pending:
            waiters, self._waiters = self._waiters, []
            for w in waiters:
                w.callback(None)

    def busy(self):
        """
        Whether pieces are being read back.
        """
        return bool(self._pending)

    def idle(self):
        """
        @return: a Deferred firing once no piece is being read back.
        """
        if not self._pending:
            return defer.succeed(None)
        d = defer.Deferred()
        self._waiters.append(d)
        return d

    def settle(self):
        """
        Check every piece held whole that is not verified yet, and wait.

        @return: a Deferred firing once they are checked.
        """
        self.sweep()
        return self.idle()

    def allVerified(self):
        """
        Whether every piece matched its digest.
        """
        return self.verified.count(0) == 0

    def forget(self):
        """
        The image is given up or replaced: pending reads are not adopted.
        """
        self._pending.clear()
        self._poke()
