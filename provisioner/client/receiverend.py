# -*- test-case-name: tests.test_client_receiver -*-
"""
The end of the image receiver: the rest fetched over the control channel
once the rounds are over (C{FetchRange}, a window of fetches, again while
pieces fail their digests), the verification (every piece matched, then
the SHA-256 of the whole image), C{Complete}, and giving up (C{Leave}).

L{ReceiverEnd} is that part of L{provisioner.client.receiver.Receiver}.
"""

from twisted.internet import defer

from provisioner.client.output import ReceiveError
from provisioner.imagecast import commands
from provisioner.imagecast import ranges as R

__all__ = ["ReceiverEnd"]


class ReceiverEnd:
    """
    The end of L{provisioner.client.receiver.Receiver} (a mixin; its
    answers to the pushes, its data channel and its rounds are its other
    parts). It keeps the receiver's C{finishing}, C{failed},
    C{verifySeconds}, C{hashedInOrder}, the counters of what was fetched
    (C{bytesReceived}, C{bytesRepaired}, C{bytesFetched}) and fires
    C{result}; it reads the session (C{session}, C{sha256},
    C{connection}), the holdings (C{received}, C{output}, C{state},
    C{checks}, C{imageHash}, C{hasher}) and stops the data channel
    (C{_leave}, C{_closeData}) and the timers (C{_progressCall},
    C{_saveCall}).
    """

    #: fetches over the control connection of pieces that did not match,
    #: before giving up (the server's data does not match its digests)
    REFETCH_ATTEMPTS = 3

    #: FetchRange calls in flight at once while repairing
    FETCH_WINDOW = 8

    @defer.inlineCallbacks
    def _repair(self):
        # the holes of a sparse image are never fetched: wait until zeroed
        yield self._holesDone()
        for attempt in range(self.REFETCH_ATTEMPTS):
            chunks = R.chunks(self.missing(), commands.FETCH_MAX)
            fetchers = [self._fetch(chunks) for _ in range(self.FETCH_WINDOW)]
            try:
                yield defer.gatherResults(fetchers, consumeErrors=True)
            except defer.FirstError as e:
                error = e.subFailure.value
                if isinstance(error, ReceiveError):
                    self.fail(str(error))
                else:
                    self.log.info("repair interrupted: {error}", error=error)
                return
            if self.checks is not None:
                # what was fetched is checked too
                yield self.checks.settle()
            if self.failed or self.connection is None:
                return
            if not self.missing():
                self._finish()
                return
        self.fail("the server's data still does not match its piece digests after %d "
                  "fetches" % (self.REFETCH_ATTEMPTS,))

    @defer.inlineCallbacks
    def _fetch(self, chunks):
        """
        One of the L{FETCH_WINDOW} fetchers of L{_repair}: fetch and write
        the next chunk of C{chunks} until there is none.
        """
        for offset, length in chunks:
            if self.failed or self.connection is None:
                return
            result = yield self.connection.callRemote(
                commands.FetchRange, session=self.session, offset=offset, length=length)
            data = result["data"]
            if len(data) != length:
                raise ReceiveError("server returned %d bytes for %d at %d" % (
                    len(data), length, offset))
            if self.failed:
                return
            self.output.write(offset, data)
            new = self.received.add(offset, offset + length)
            self.bytesReceived += new
            self.bytesRepaired += new
            self.bytesFetched += new
            self._dirty = True

    def _finish(self):
        if self.finishing or self.failed:
            return
        self.finishing = True
        self._leave()
        self._closeData()
        verifyStarted = self.reactor.seconds()
        # hashing ahead may still run: the check starts where it ends (and
        # the holes of a sparse image may still be being zeroed)
        d = self._holesDone().addCallback(lambda _: self.imageHash.idle())
        if self.checks is not None:
            # every piece must have matched its digest
            d.addCallback(lambda _: self.checks.settle())
        again = object()

        def check(_):
            if self.missing():
                # a piece did not match at the last moment: fetch it over
                # the control connection, then finish again
                self.finishing = False
                self.reactor.callLater(0, self._repair)
                return again
            if self.checks is not None and not self.checks.allVerified():
                # held whole, but reading it back failed
                raise ReceiveError("%s: could not read back every piece of the image to "
                                   "check it" % (self.output.path,))
            self.hashedInOrder = self.imageHash.checkStart()
            return self.hasher(self.output.path)
        d = d.addCallback(check)

        def hashed(digest):
            if digest is again:
                return again
            self.verifySeconds = self.reactor.seconds() - verifyStarted
            if digest != self.sha256:
                self.state.remove()
                raise ReceiveError("sha256 mismatch: got %s, the image is %s" % (
                    digest, self.sha256))
            return self.connection.callRemote(commands.Complete, session=self.session,
                                              sha256=digest)

        def completed(result):
            if result is again:
                return
            self.state.remove()
            self._done(0)

        def failed(f):
            if f.check(ReceiveError):
                self.finishing = False
                self.fail(f.getErrorMessage())
            elif f.check(commands.ChecksumMismatch):
                self.finishing = False
                self.fail("server refused the checksum: %s" % (f.getErrorMessage(),))
            else:
                # connection lost while completing: verified locally, report
                # again after reconnecting
                self.log.info("completion not acknowledged ({error}); again after "
                              "reconnecting", error=f.getErrorMessage())
        d.addCallback(hashed).addCallbacks(completed, failed)

    def fail(self, message):
        """
        Give up with C{message}; tell the server, exit with status 1.
        """
        if self.failed:
            return
        self.failed = message
        self._leave()
        self._closeData()
        self._save()
        if self.connection is not None and self.session is not None:
            d = self.connection.callRemote(commands.Leave, session=self.session,
                                           reason=message[:500])
            d.addErrback(lambda f: None)
            d.addBoth(lambda _: self._done(1))
        else:
            self._done(1)

    def _done(self, status):
        if self._progressCall is not None and self._progressCall.active():
            self._progressCall.cancel()
        self._progressCall = None
        if self._saveCall is not None and self._saveCall.active():
            self._saveCall.cancel()
        self._saveCall = None
        if not self.result.called:
            self.result.callback(status)
