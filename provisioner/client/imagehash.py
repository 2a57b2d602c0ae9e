# -*- test-case-name: tests.test_client_receiver -*-
"""
The SHA-256 of an image that arrives out of order (L{ImageHash}).

SHA-256 only takes data in order, so the receiver's data path hashes the
in-order prefix as it arrives (it feeds L{ImageHash.prefix} and moves
L{ImageHash.upTo}); between rounds, held bytes that now follow the prefix
are hashed ahead off the reactor thread (L{ImageHash.hashAhead}); the check
at the end reads back only the rest (L{ImageHash.check}).
"""

import hashlib

from twisted.internet import defer
from twisted.logger import Logger

from provisioner.hashing import hashRange, sha256File

__all__ = ["ImageHash"]


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
        self._catchingUp = None
        self._generation = 0
        self.reset()

    def reset(self):
        """
        A new image: nothing is hashed yet (hashing ahead that still runs
        is not adopted).
        """
        self.prefix = hashlib.sha256()
        self.upTo = 0
        self._generation += 1

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
        if self._catchingUp is not None or end - start < self.HASH_AHEAD_MIN:
            return
        generation = self._generation
        done = self._catchingUp = defer.Deferred()
        d = self._runInThread(hashRange, self.output.path, self.prefix.copy(), start, end)

        def hashed(digest):
            if self._generation == generation and self.upTo == start:
                self.prefix = digest
                self.upTo = end
                self.ahead += end - start

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

    def check(self, path):
        """
        Make the data durable and hash it whole, reading back only what
        follows the hashed prefix, off the reactor thread.

        @return: a Deferred firing with the hex digest.
        """
        output = self.output
        prefix, upTo = self.prefix.copy(), self.upTo

        def syncAndHash():
            output.datasync()
            return sha256File(path, prefix, upTo)
        return self._runInThread(syncAndHash)
