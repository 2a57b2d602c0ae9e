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

It is made of parts, one module each (mixins): its answers to the pushes
(L{provisioner.client.receiverpushes}), its rounds: flow control, settling,
the reports (L{provisioner.client.receiverrounds}), its end: the rest
fetched over the control channel, the verification, giving up
(L{provisioner.client.receiverend}), and its data channel
(L{provisioner.client.datapath}); they log through the receiver's C{log}
(namespace C{provisioner.client.receiver.Receiver}). Its output and state
file are in L{provisioner.client.output}, the hashing of the image in
L{provisioner.client.imagehash}, the control connection in
L{provisioner.client.receiverclient}.
"""

from twisted.internet import defer
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger

from provisioner.client.datapath import DataPath, DataProtocol
from provisioner.client.imagehash import ImageHash
from provisioner.client.output import OutputFile, ReceiveError, StateFile, defaultStatePath
from provisioner.client.receiverend import ReceiverEnd
from provisioner.client.receiverpushes import ServerPushes
from provisioner.client.receiverrounds import RoundReports
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


class Receiver(DataPath, ServerPushes, RoundReports, ReceiverEnd):
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
        server's answer to L{provisioner.imagecast.commands.Register}), or
        L{None}.
    @ivar maxBoxBytes: the largest box the server reads.
    """

    log = Logger()

    #: the largest box a server reads when it does not say
    #: (C{imagecast.max_box_bytes}'s default)
    MAX_BOX_BYTES = 16 << 20

    def __init__(self, reactor, output, clientId, image=None, interface=None, hasher=None,
                 settle=0.03, settleMax=2.0, saveInterval=1.0, progress=None,
                 runInThread=None, statePath=None):
        """
        Set up in named steps: the settings, then the state of each part
        (the session, the data channel, the rounds, the holdings, the end).
        """
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
        self.progressInterval = 0.05
        self._initSession()
        self._initDataChannel()
        self._initRounds()
        self._initHoldings()
        self._initEnd()

    def _initSession(self):
        """
        No session yet (L{ServerPushes} adopts one), no control
        connection, the server's limits at their defaults.
        """
        self.connection = None
        self.session = None
        self.name = None
        self.size = None
        self.sha256 = None
        self.key = None
        self.group = None
        self.port = None
        self.chunkSize = None
        self._verifier = None
        self.checks = None
        self._pieceLists = {}
        self.maxReportRanges = None
        self.maxBoxBytes = self.MAX_BOX_BYTES

    def _initDataChannel(self):
        """
        The data channel (L{DataPath}): not joined, nothing read.
        """
        self.joined = None
        self.dataPort = None
        self.lastDatagram = 0.0
        self.rejected = 0
        self.stale = 0
        self._filter = None

    def _initRounds(self):
        """
        The rounds (L{RoundReports}): none announced, none reported.
        """
        self.round = 0
        self.rounds = set()
        self.roundRanges = []
        self._position = 0
        self._roundOver = 0
        self._roundEnd = None
        self._reportedRound = 0
        self._progressCall = None
        self._settleCall = None
        self.reportsMerged = 0

    def _initHoldings(self):
        """
        What is on disk (nothing known before a session is adopted) and
        its saving.
        """
        self.received = R.RangeSet()
        self.resumed = 0
        self.holesZeroed = 0
        self.holesHow = None
        self._zeroing = None
        self._holeWaiters = []
        self.bytesReceived = 0
        self.bytesRepaired = 0
        self.bytesFetched = 0
        self.started = None
        self._dirty = False
        self._saving = False
        self._saveCall = None

    def _initEnd(self):
        """
        The end (L{ReceiverEnd}): neither finishing nor failed.
        """
        self.finishing = False
        self.failed = None
        self.result = defer.Deferred()
        self.verifySeconds = None
        self.hashedInOrder = 0

    def limits(self, answer):
        """
        The server's answer to L{provisioner.imagecast.commands.Register}:
        the most ranges it keeps of a report and the largest box it reads.
        """
        self.maxReportRanges = answer.get("maxReportRanges") or None
        self.maxBoxBytes = answer.get("maxBoxBytes") or self.MAX_BOX_BYTES

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

    def _lostCall(self, f):
        self.log.debug("control call failed: {error}", error=f.getErrorMessage())

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
                "holes_zeroed": self.holesZeroed, "holes_how": self.holesHow,
                "seconds": round(elapsed, 3),
                "verify_seconds": (None if self.verifySeconds is None
                                   else round(self.verifySeconds, 3)),
                "hashed_in_order": self.hashedInOrder}
