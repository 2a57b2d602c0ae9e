# -*- test-case-name: tests.test_images,tests.test_images_hardening -*-
"""
When the catalogue's files are hashed: L{HashScheduler} runs one hash per
name at a time (in the catalogue's C{runInThread}), looks again later at a
file still being written, and throws away a hash that ended after its file
changed again.

Every change of a name raises its sequence number (L{HashScheduler.hash},
L{HashScheduler.forget}); a hash started under an older number is stale,
and the current file is hashed instead. What a finished hash means for the
catalogue (an entry installed, a file dropped or refused) is the
catalogue's business (L{provisioner.images.catalog.Catalog}).
"""

import os

from twisted.internet import defer
from twisted.python.failure import Failure

from provisioner.images.digest import FileBusy, hashFile

__all__ = ["HashScheduler"]


class HashScheduler:
    """
    The hashes of one catalogue: running, waiting to be retried, stale.

    It reads the catalogue's C{clock}, C{directory}, C{runInThread} and
    C{retryDelay} when it needs them (tests change C{runInThread} on a
    built catalogue), logs through the catalogue's C{log} (so its lines are
    the catalogue's), and hands the outcome of a hash to the catalogue's
    C{_install} or C{_unreadable}.

    @ivar cancelled: set by L{stop}: no hash starts or is installed after.
    """

    def __init__(self, catalog):
        self.catalog = catalog
        self.cancelled = False
        self._seq = {}
        self._busy = {}
        self._retries = {}
        self._inflight = set()
        self._timers = {}

    def busy(self, name):
        """
        Whether C{name} is being hashed now.
        """
        return name in self._busy

    def pending(self, name):
        """
        Whether C{name} is being hashed now or waits to be hashed again.
        """
        return name in self._busy or name in self._timers

    def hash(self, name):
        """
        C{name} changed: hash it (once the hash running for it, if any,
        has ended).

        @return: a Deferred firing when this is done (with L{None}).
        """
        seq = self._seq.get(name, 0) + 1
        self._seq[name] = seq
        busy = self._busy.get(name)
        if busy is not None:
            # A hash of this name is running: its result is stale now and it
            # starts again when it ends (see _stale).
            waiter = defer.Deferred()
            busy.addBoth(lambda _: waiter.callback(None))
            return waiter
        return self._hashAndInstall(name, seq)

    def forget(self, name):
        """
        C{name} is gone: a hash of it running now is stale.
        """
        self._seq[name] = self._seq.get(name, 0) + 1

    def forgetBelow(self, name):
        """
        The directory C{name} (C{""}: everything) is gone: the hashes
        running below it are stale.
        """
        prefix = name + "/"
        for n in list(self._seq):
            if not name or n.startswith(prefix):
                self._seq[n] += 1

    def _stale(self, name):
        """
        A hash ended after the file changed again: hash the current file
        (a removed one ends in
        L{provisioner.images.catalog.Catalog.removed} again, harmlessly).
        """
        if self.cancelled or name not in self._seq:
            return None
        full = os.path.join(self.catalog.directory, name)
        if not os.path.lexists(full):
            return None
        return self._hashAndInstall(name, self._seq[name])

    def _hashAndInstall(self, name, seq):
        if self._seq.get(name) != seq or self.cancelled:
            return defer.succeed(None)
        try:
            root = self.catalog.confined()
        except OSError as e:
            return self._hashFailed(Failure(e), name, seq) or defer.succeed(None)
        d = self.catalog.runInThread(hashFile, root, name, lambda: self.cancelled)
        self._busy[name] = d
        self._inflight.add(d)

        def done(result):
            self._inflight.discard(d)
            if self._busy.get(name) is d:
                del self._busy[name]
            return result

        d.addBoth(done)
        d.addCallbacks(self._hashed, self._hashFailed, callbackArgs=(name, seq),
                       errbackArgs=(name, seq))
        return d

    def _hashed(self, result, name, seq):
        st, digest = result
        if self._seq.get(name) != seq or self.cancelled:
            return self._stale(name)  # removed or changed again meanwhile
        self._retries.pop(name, None)
        self.catalog._install(name, st, digest)
        return None

    def _hashFailed(self, failure, name, seq):
        if failure.check(defer.CancelledError):
            return None
        if self._seq.get(name) != seq:
            return self._stale(name)
        if failure.check(FileBusy):
            # Still being written (or changed while hashed): look again
            # later; the close event normally comes first.
            self.catalog.log.debug("image {name} not ready: {why}", name=name,
                                   why=failure.getErrorMessage())
            tries = self._retries.get(name, 0) + 1
            self._retries[name] = tries
            delay = min(self.catalog.retryDelay * tries, 60.0)
            old = self._timers.pop(name, None)
            if old is not None and old.active():
                old.cancel()
            self._timers[name] = self.catalog.clock.callLater(delay, self._retry, name, seq)
            return None
        return self.catalog._unreadable(failure, name)

    def _retry(self, name, seq):
        self._timers.pop(name, None)
        if self._seq.get(name) == seq and not self.cancelled:
            self._hashAndInstall(name, seq)

    def stop(self):
        """
        Cancel hashing: no hash starts after this, retries are dropped.

        @return: a Deferred firing when the running hashes have ended.
        """
        self.cancelled = True
        for call in self._timers.values():
            if call.active():
                call.cancel()
        self._timers.clear()
        pending = list(self._inflight)
        return defer.DeferredList(pending, consumeErrors=True)
