# -*- test-case-name: tests.test_client_receiver -*-
"""
The image receiver of imagecast (C{provisioner receive}), resumable:
L{Receiver} answers the appliance's pushes on the control channel (the
piece digests, announcements, end of round, end of session), takes the
data channel's datagrams (L{DataProtocol}), keeps a piece only once its
bytes match the digest the server sent over the control connection
(L{provisioner.client.pieces}: the multicast data's key is shared by every
receiver and proves nothing about who sent a datagram), reports what is
missing after each round (merged to the server's limits), fetches the rest
over the control channel when the rounds are over, and verifies the
SHA-256.

Its answers to the pushes are in L{provisioner.client.receiverpushes}, its
rounds (flow control, settling, the reports) in
L{provisioner.client.receiverrounds}, its data channel in L{provisioner.client.datapath}, its output and state file
in L{provisioner.client.output}, the hashing of the image in
L{provisioner.client.imagehash}, the control connection in
L{provisioner.client.receiverclient}.
"""

from twisted.internet import defer
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger

from provisioner.client.datapath import DataPath, DataProtocol
from provisioner.client.imagehash import ImageHash
from provisioner.client.output import OutputFile, ReceiveError, StateFile, defaultStatePath
from provisioner.client.receiverpushes import ServerPushes
from provisioner.client.receiverrounds import RoundReports
from provisioner.imagecast import commands
from provisioner.imagecast import ranges as R

__all__ = ["ReceiveError", "OutputFile", "StateFile", "Receiver", "DataProtocol",
           "threadRunner"]


def threadRunner(reactor):
    """
    How a L{Receiver} on C{reactor} runs blocking work (C{fdatasync},
    hashing) by default: in the reactor's thread pool when it has threads
    (C{IReactorThreads}), else in the calling thread (a reactor without
    threads, such as a C{task.Clock}).

    @return: C{runInThread(f, *args)} returning a Deferred of the result.
    """
    if IReactorThreads.providedBy(reactor):
        from twisted.internet import threads

        def runInThread(f, *args):
            return threads.deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)
        return runInThread
    return lambda f, *args: defer.maybeDeferred(f, *args)


class Receiver(DataPath, ServerPushes, RoundReports):
    """
    One image being received.

    @ivar received: a L{R.RangeSet} of what is on disk.
    @ivar result: a Deferred fired with the exit status.
    @ivar hasher: C{hasher(path)} returns a Deferred of the image's hex
        SHA-256 (default: L{ImageHash.check}).
    @ivar runInThread: C{runInThread(f, *args)} runs blocking work
        (C{fdatasync}, hashing) off the reactor thread and returns a
        Deferred of its result (default: L{threadRunner}).
    @ivar state: the L{StateFile} (default: C{PATH.imagecast-state} beside
        a file; for a block device see
        L{provisioner.client.output.defaultStatePath}).
    @ivar checks: the L{PieceCheck} of the image, once announced.
    @ivar maxReportRanges: the most ranges a report may hold (from the
        server's answer to L{commands.Register}), or L{None}.
    @ivar maxBoxBytes: the largest box the server reads.
    """

    log = Logger()

    #: the largest box a server reads when it does not say
    #: (C{imagecast.max_box_bytes}'s default)
    MAX_BOX_BYTES = 16 << 20

    #: fetches over the control connection of pieces that did not match,
    #: before giving up (the server's data does not match its digests)
    REFETCH_ATTEMPTS = 3

    def __init__(self, reactor, output, clientId, image=None, interface=None, hasher=None,
                 settle=0.03, settleMax=2.0, saveInterval=1.0, progress=None,
                 runInThread=None, statePath=None):
        self.reactor = reactor
        self.output = output
        if statePath is None:
            statePath = defaultStatePath(output)[0]
        self.state = StateFile(statePath)
        self.clientId = clientId
        self.image = image
        self.interface = interface
        self.runInThread = runInThread or threadRunner(reactor)
        self.imageHash = ImageHash(output, self.runInThread)
        self.hasher = hasher or self.imageHash.check
        self.settle = settle
        self.settleMax = settleMax
        self.saveInterval = saveInterval
        self.progress = progress
        self.connection = None
        self.session = None
        self.name = None
        self.size = None
        self.sha256 = None
        self.key = None
        self.round = 0
        self.rounds = set()
        self.roundRanges = []
        self.group = None
        self.port = None
        self.received = R.RangeSet()
        self.resumed = 0
        self.bytesReceived = 0
        self.bytesRepaired = 0
        self.bytesFetched = 0
        self.rejected = 0
        self.stale = 0
        self.started = None
        self.joined = None
        self.dataPort = None
        self.finishing = False
        self.failed = None
        self.lastDatagram = 0.0
        self._verifier = None
        self.chunkSize = None
        self.result = defer.Deferred()
        self._dirty = False
        self._saving = False
        self._saveCall = None
        self._position = 0
        self._roundOver = 0
        self._roundEnd = None
        self._reportedRound = 0
        self._progressCall = None
        self.progressInterval = 0.05
        self._settleCall = None
        self.verifySeconds = None
        self.hashedInOrder = 0
        self._filter = None
        self.checks = None
        self._pieceLists = {}
        self.maxReportRanges = None
        self.maxBoxBytes = self.MAX_BOX_BYTES
        self.reportsMerged = 0

    def limits(self, answer):
        """
        The server's answer to L{commands.Register}: the most ranges it
        keeps of a report and the largest box it reads.
        """
        self.maxReportRanges = answer.get("maxReportRanges") or None
        self.maxBoxBytes = answer.get("maxBoxBytes") or self.MAX_BOX_BYTES

    # -- the end ----------------------------------------------------------

    #: FetchRange calls in flight at once while repairing
    FETCH_WINDOW = 8

    @defer.inlineCallbacks
    def _repair(self):
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

    # -- bookkeeping ------------------------------------------------------

    def missing(self):
        """
        Return what the image still lacks here.
        """
        if self.size is None:
            return []
        return R.subtract([(0, self.size)] if self.size else [], self.received.ranges())

    def _save(self):
        """
        Save the received ranges: off the reactor thread (C{fdatasync} can
        take long and the data socket must be read meanwhile), make the data
        durable and write the state file with the ranges as they were when
        this was called. A state file never names bytes that are not on
        disk.
        """
        if self.session is None or not self._dirty or self._saving:
            return
        self._dirty = False
        snapshot = self.received.ranges()
        sha256, size, output, state = self.sha256, self.size, self.output, self.state

        def durable():
            output.datasync()
            state.save(sha256, size, snapshot)
        self._saving = True
        d = self.runInThread(durable)

        def done(result):
            self._saving = False
        d.addBoth(done)

    def _periodicSave(self):
        self._saveCall = None
        if self.finishing or self.failed:
            return
        self._save()
        if self.progress is not None:
            self.progress(self)
        self._saveCall = self.reactor.callLater(self.saveInterval, self._periodicSave)

    def _finish(self):
        if self.finishing or self.failed:
            return
        self.finishing = True
        self._leave()
        self._closeData()
        verifyStarted = self.reactor.seconds()
        # hashing ahead may still run: the check starts where it ends
        d = self.imageHash.idle()
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

    def _lostCall(self, f):
        self.log.debug("control call failed: {error}", error=f.getErrorMessage())

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

    def connected(self, connection):
        """
        A (new) control connection is up and registered.
        """
        self.connection = connection
        # a report sent on the old connection may have been lost with it:
        # the server's EndRound after re-registering asks for it again
        self._reportedRound = 0
        if self.finishing and not self.failed and not self.result.called:
            # completion was lost with the old connection: verify again
            self.finishing = False
            self._finish()

    def summary(self):
        elapsed = (self.reactor.seconds() - self.started) if self.started else 0.0
        return {"image": self.name, "size": self.size, "rounds": len(self.rounds),
                "bytes_received": self.bytesReceived, "bytes_repaired": self.bytesRepaired,
                "bytes_fetched": self.bytesFetched, "bytes_resumed": self.resumed,
                "rejected_datagrams": self.rejected, "stale_datagrams": self.stale,
                "pieces_rejected": self.checks.rejected if self.checks is not None else 0,
                "reports_merged": self.reportsMerged,
                "seconds": round(elapsed, 3),
                "verify_seconds": (None if self.verifySeconds is None
                                   else round(self.verifySeconds, 3)),
                "hashed_in_order": self.hashedInOrder}
