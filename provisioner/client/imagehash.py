# -*- test-case-name: tests.test_client_receiver -*-
"""
The SHA-256 of an image that arrives out of order (L{ImageHash}).

SHA-256 only takes data in order, so the receiver's data path hashes the
in-order prefix as it arrives (L{ImageHash.extend} feeds
L{ImageHash.prefix} and moves L{ImageHash.upTo}); between rounds, held
bytes that now follow the prefix are hashed ahead off the reactor thread
(L{ImageHash.hashAhead}); the check at the end reads back only the rest
(L{ImageHash.check}).

With the image's piece digests (L{provisioner.client.pieces.PieceCheck})
the same in-order bytes are hashed per piece too: a piece the prefix went
through from its start is checked when the prefix reaches its end, and
one that does not match takes the prefix back to the piece's start (a
copy of the hash is kept at each piece boundary), so that the prefix only
ever holds bytes that matched or are still to be checked.

On a block device (a disk) the check is a read-back of the whole image
from the device instead (L{readBack}): from offset 0 to the image size,
through a fresh descriptor opened with C{O_DIRECT}, so that neither the
hash of the bytes as they arrived nor the page cache answers for the disk.
"""

import errno
import fcntl
import hashlib
import mmap
import os
import struct

from twisted.internet import defer
from twisted.logger import Logger

from provisioner.client.output import BLKSSZGET, ReceiveError, describeOSError
from provisioner.hashing import hashRange, sha256File

__all__ = ["ImageHash", "readBack"]

def _logicalBlockSize(fd):
    """
    The logical block size of the block device open on C{fd} (what
    C{O_DIRECT} offsets and lengths are multiples of); 4096 if unknown.
    """
    buf = bytearray(4)
    try:
        fcntl.ioctl(fd, BLKSSZGET, buf)
    except OSError:
        return 4096
    return struct.unpack("=i", bytes(buf))[0] or 4096


def readBack(path, size, piece=1 << 20, direct=True):
    """
    Read the first C{size} bytes of the block device at C{path} back from
    the device and return their C{hashlib} SHA-256 (blocking: call it from
    a thread, after C{fdatasync} of the writer's descriptor).

    The device is read through a fresh descriptor opened with C{O_DIRECT}:
    the reads go to the device, never to the page cache, which still holds
    what was just written through the (buffered) output descriptor and
    would answer for the disk. C{O_DIRECT} was chosen over C{fdatasync}
    plus C{posix_fadvise(POSIX_FADV_DONTNEED)} because DONTNEED is only
    advice (pages mapped or in use elsewhere stay cached) while C{O_DIRECT}
    bypasses the cache by definition; its price, aligned buffers and
    lengths, is paid here (an C{mmap} buffer, each read rounded up to the
    logical block size, which a device's size is a multiple of). Where a
    device refuses C{O_DIRECT} (C{EINVAL}), or with C{direct=False}, the
    fallback is that: the written pages are dropped from the cache with
    C{posix_fadvise(DONTNEED)} (they are clean after the C{fdatasync})
    and read back through a plain descriptor.

    @param piece: bytes per read (a multiple of the logical block size).
    @raise EOFError: the device ends before C{size}.
    """
    if direct:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
        else:
            try:
                return _readDirect(fd, path, size, piece)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
            finally:
                os.close(fd)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return hashRange(path, hashlib.sha256(), 0, size, piece)


def _readDirect(fd, path, size, piece):
    """
    L{readBack} through C{fd}, open with C{O_DIRECT}.
    """
    block = _logicalBlockSize(fd)
    piece = max(block, piece // block * block)
    digest = hashlib.sha256()
    buf = mmap.mmap(-1, piece)  # page-aligned, as O_DIRECT wants
    view = memoryview(buf)
    try:
        offset = 0
        while offset < size:
            want = min(piece, size - offset)
            aligned = (want + block - 1) // block * block
            got = os.preadv(fd, [view[:aligned]], offset)
            if got < want:
                raise EOFError("%s: short read at %d while reading back" % (
                    path, offset + max(got, 0)))
            digest.update(view[:want])
            offset += want
    finally:
        view.release()
        buf.close()
    return digest


class ImageHash:
    """
    The hash of an image's in-order prefix, and the check at the end.

    @ivar prefix: the C{hashlib} SHA-256 of the bytes C{[0, upTo)}.
    @ivar upTo: where the hashed prefix ends.
    @ivar ahead: bytes hashed ahead between rounds (not as they arrived).
    """

    log = Logger()

    #: between rounds, hash ahead only when at least this much held data
    #: follows the hashed prefix
    HASH_AHEAD_MIN = 1 << 20

    def __init__(self, output, runInThread):
        """
        @param output: the L{provisioner.client.output.OutputFile} hashed.
        @param runInThread: C{runInThread(f, *args)} runs blocking work off
            the reactor thread and returns a Deferred of its result.
        """
        self.output = output
        self._runInThread = runInThread
        self.ahead = 0
        self.pieces = None
        self._catchingUp = None
        self._generation = 0
        self.reset()

    def reset(self):
        """
        A new image, or a piece that was in the prefix did not match:
        nothing is hashed yet (hashing ahead that still runs is not
        adopted).
        """
        self.prefix = hashlib.sha256()
        self.upTo = 0
        self._generation += 1
        self._atBoundary()

    def attach(self, pieces):
        """
        Check pieces with C{pieces} (a L{provisioner.client.pieces.PieceCheck})
        as the prefix goes through them; hash from the start again.
        """
        self.pieces = pieces
        self.reset()

    def _atBoundary(self):
        """
        The prefix ends at C{upTo}: if that is a piece boundary, the next
        piece is hashed in order from its start (with a copy of the prefix
        to go back to); else the piece it ends in is checked by reading it
        back once it is whole.
        """
        pieces = self.pieces
        if pieces is not None and (self.upTo % pieces.pieceSize == 0
                                   or self.upTo == pieces.size):
            self._piece = hashlib.sha256()
            self._base = self.prefix.copy()
            self._baseAt = self.upTo
        else:
            self._piece = None
            self._base = None
            self._baseAt = None

    def extend(self, buffers, end):
        """
        The bytes C{buffers} (back to back) were written from C{upTo} to
        C{end}: add them to the prefix, and check each piece they complete
        that the prefix went through from its start.

        @return: whether every piece checked matched (when one does not,
            the prefix goes back to its start, and the receiver has been
            told through the piece check: it drops the piece).
        """
        pieces = self.pieces
        # on a block device the check at the end reads the whole image back
        # from the disk: the running hash of the prefix would be thrown away
        prefix = None if self._readsBackAll() else self.prefix
        if pieces is None:
            if prefix is not None:
                for b in buffers:
                    prefix.update(b)
            self.upTo = end
            return True
        size = pieces.pieceSize
        at = self.upTo
        for b in buffers:
            n = len(b)
            off = 0
            while off < n:
                boundary = min(pieces.size, (at // size + 1) * size)
                take = min(n - off, boundary - at)
                chunk = b if (off == 0 and take == n) else b[off:off + take]
                if prefix is not None:
                    prefix.update(chunk)
                if self._piece is not None:
                    self._piece.update(chunk)
                at += take
                off += take
                if at == boundary and not self._pieceEnds(at):
                    return False
        self.upTo = at
        return True

    def _pieceEnds(self, at):
        """
        The prefix reached the end of a piece at C{at}: check it if it was
        hashed from its start, then start the next.

        @return: whether it matched (or was not checked here).
        """
        pieces = self.pieces
        index = (at - 1) // pieces.pieceSize
        if self._piece is not None and not pieces.verified[index]:
            start = self._baseAt
            if not pieces.compare(index, self._piece.digest(), True):
                # back to the start of the piece: its bytes are dropped
                self.prefix = self._base
                self.upTo = start
                self._generation += 1
                self._atBoundary()
                return False
        self.upTo = at
        self._atBoundary()
        return True

    def rejected(self, start):
        """
        A piece from C{start} that was checked by reading it back did not
        match: if the prefix holds any of it, go back to that piece's start
        when a copy of the hash is kept there, else to the image's start.
        """
        if start >= self.upTo:
            return
        if self._baseAt == start and self._base is not None:
            self.prefix = self._base.copy()
            self.upTo = start
            self._generation += 1
            self._atBoundary()
        else:
            self.reset()

    def hashAhead(self, end):
        """
        Between rounds (after a report): the holes a repair round filled
        may have joined held data to the in-order prefix; hash the held
        bytes from the end of the prefix up to C{end}, the first byte still
        missing, off the reactor thread, while the next rounds run, so that
        the check at the end reads less back.

        The bytes hashed are held, so no datagram writes them meanwhile
        nor extends the prefix at its old end; the result is adopted only
        if the prefix has not changed (a new image resets it).
        """
        start = self.upTo
        if (self._catchingUp is not None or end - start < self.HASH_AHEAD_MIN
                or self._readsBackAll()):
            return
        generation = self._generation
        done = self._catchingUp = defer.Deferred()
        d = self._runInThread(hashRange, self.output.path, self.prefix.copy(), start, end)

        def hashed(digest):
            if self._generation == generation and self.upTo == start:
                self.prefix = digest
                self.upTo = end
                self.ahead += end - start
                self._atBoundary()

        def failed(f):
            # the check at the end reads these bytes back instead
            self.log.info("hashing ahead failed: {error}", error=f.getErrorMessage())

        def over(_):
            self._catchingUp = None
            done.callback(None)
        d.addCallbacks(hashed, failed).addBoth(over)

    def idle(self):
        """
        @return: a Deferred firing once no hashing ahead runs (the check
            starts where it ends).
        """
        pending = self._catchingUp
        return defer.succeed(None) if pending is None else pending

    def _readsBackAll(self):
        """
        Whether the check reads the whole image back (a block device).
        """
        return bool(getattr(self.output, "isDevice", False))

    def checkStart(self):
        """
        Where the check at the end starts reading back: the end of the
        hashed prefix, or 0 on a block device.
        """
        return 0 if self._readsBackAll() else self.upTo

    def check(self, path):
        """
        Make the data durable and hash it whole, reading back only what
        follows the hashed prefix, off the reactor thread. On a block
        device, read the whole image back from the device instead
        (L{readBack}: from offset 0 to the image size, C{O_DIRECT}): what
        is checked is what the disk holds, not what arrived.

        @return: a Deferred firing with the hex digest.
        """
        output = self.output
        if self._readsBackAll():
            size = output.size

            def syncAndHash():
                output.datasync()
                return readBack(path, size).hexdigest()
        else:
            prefix, upTo = self.prefix.copy(), self.upTo

            def syncAndHash():
                output.datasync()
                return sha256File(path, prefix, upTo)

        def unreadable(f):
            # (a disk that cannot be read back fails the receiver, which
            # tells the server, instead of waiting for a digest)
            f.trap(OSError, EOFError)
            error = f.value
            if isinstance(error, OSError):
                raise ReceiveError(describeOSError(error, path, "reading back"))
            raise ReceiveError(str(error))
        return self._runInThread(syncAndHash).addErrback(unreadable)
