# -*- test-case-name: tests.test_imagecast_sender,tests.test_imagecast_limits -*-
"""
One imagecast session: an image sent to a permanent group of receivers,
round after round, until the current group is empty or the round limit is
reached; then what is left goes over the control channel.

L{Session} waits for the start conditions, runs the rounds and hands what
is left to the control channel; it pushes commands to its receivers
(L{provisioner.imagecast.member.Member}s) and reads the image. Its parts,
one module each (mixins):
  - L{provisioner.imagecast.roster.Roster}: the permanent group
    (enrollment, disconnection, loss, completion) and the counters kept as
    members change: membership changes cost O(1) (O(log n) with the flow
    window); only the rounds themselves go over every member;
  - L{provisioner.imagecast.rounds.Rounds}: the rounds (announce, data
    behind the flow window of L{provisioner.imagecast.flow.FlowWindow},
    collect);
  - L{provisioner.imagecast.reports.Reports}: the receivers' reports, the
    minimum retransmission set of the next round and the tail rule.
Its rate policy comes from the controller and its scorecard from
L{provisioner.imagecast.scorecard}.

Nothing here imports the reactor: the session takes its controller's clock.
"""

import os

from twisted.internet import defer
from twisted.logger import Logger

from provisioner.imagecast import commands
from provisioner.imagecast import ranges as R
from provisioner.imagecast.member import ACTIVE
from provisioner.imagecast.reports import Reports
from provisioner.imagecast.rounds import Rounds
from provisioner.imagecast.roster import ACTIVE_, CONNECTED, Roster
from provisioner.imagecast.scorecard import scorecard

__all__ = ["Session"]


class Session(Roster, Rounds, Reports):
    """
    One image to a group of receivers.

    States: C{waiting} (for the start conditions), C{running} (rounds),
    C{repair} (rounds over, receivers fetch the rest over the control
    channel), C{done}.

    Every change of a member goes through L{_changing}/L{_changed}, which
    keep C{_counts} (see L{_flags}) up to date (L{Roster}).

    Its parts log through its C{log}: their lines keep the namespace
    C{provisioner.imagecast.session.Session}.
    """

    log = Logger()

    def __init__(self, controller, sessionId, name, path, size, sha256, group, port, key,
                 chunkSize, rate, maxRounds, minReceivers, maxWait, wanted=None, fd=None, *,
                 pieces, holes=()):
        """
        @param pieces: C{(piece size, digests)} of the image
            (L{provisioner.imagecast.pieces}), sent to each receiver before
            its first announcement.
        @param holes: the holes of a sparse image
            (L{provisioner.imagecast.extents.findHoles}), sent with the
            pieces; the rounds carry only the rest (L{dataRanges}).
        """
        self.controller = controller
        self.clock = controller.clock
        self.config = controller.config
        self.id = sessionId
        self.name = name
        self.path = path
        self.size = size
        self.sha256 = sha256
        self.group = group
        self.port = port
        self.key = key
        self.pieceSize, self.digests = pieces
        self.holes = R.normalise(holes)
        #: what the first round carries: the image but its holes
        self.dataRanges = R.subtract([(0, size)] if size else [], self.holes)
        self.chunkSize = chunkSize
        self.rate = rate
        self.maxRounds = maxRounds
        self.minReceivers = minReceivers
        self.maxWait = maxWait
        self.wanted = wanted
        self.state = "waiting"
        self.round = 0
        self.roundRanges = []
        self.phase = "idle"  # announce, data, collect, idle
        self.members = {}
        self._counts = [0, 0, 0, 0]
        self._byConnection = {}  # connection -> [members], in enrollment order
        self._disconnected = {}  # clientId -> member, in the order they left
        self._keptRanges = 0  # ranges of every member's last report
        self._flow = None
        self._full = False
        self.rounds = []
        self.unrecoverable = []
        self.tail = []
        self.created = self.clock.seconds()
        self.started = None
        self.finished = None
        self.error = None
        self._waiters = []
        self._fd = fd
        self._sender = None
        self._periodic = None
        self.done = defer.Deferred()

    # -- the image --------------------------------------------------------

    def readAt(self, offset, length):
        if offset < 0 or length < 0 or offset + length > self.size:
            raise commands.BadRanges("%d+%d is outside the image" % (offset, length))
        return os.pread(self._fd, length, offset)

    # -- waiting helpers --------------------------------------------------

    def _poke(self):
        for entry in list(self._waiters):
            predicate, d, call = entry
            # a callback may have poked (and taken waiters off) already
            if entry in self._waiters and predicate():
                self._waiters.remove(entry)
                if call is not None and call.active():
                    call.cancel()
                d.callback(True)

    def waitFor(self, predicate, timeout):
        """
        @return: a Deferred firing with L{True} once C{predicate()} holds
            (it is checked at every change of the session), or with
            L{False} after C{timeout} seconds (L{None}: no limit).
        """
        if predicate():
            return defer.succeed(True)
        d = defer.Deferred()
        entry = [predicate, d, None]

        def expire():
            if entry in self._waiters:
                self._waiters.remove(entry)
                d.callback(False)
        if timeout is not None:
            entry[2] = self.clock.callLater(timeout, expire)
        self._waiters.append(entry)
        return d

    # -- the run ------------------------------------------------------------

    def stopSending(self):
        """
        Stop the round being sent (service shutdown).
        """
        if self._sender is not None:
            self._sender.stop()

    def _push(self, member, command, **kw):
        conn = member.connection
        if conn is None:
            return defer.succeed(None)
        if command in (commands.Announce, commands.EndSession) and member.piecesOn is not conn:
            # the digests that authenticate the data, once per connection,
            # before anything that makes the receiver take data
            member.piecesOn = conn
            self._push(member, commands.Pieces, session=self.id, pieceSize=self.pieceSize,
                       digests=self.digests, holes=self.holes or None)
        d = conn.callRemote(command, **kw)

        def failed(f):
            self.log.debug("imagecast session {session}: {command} to {client} failed: {error}",
                           session=self.id, command=command.__name__,
                           client=member.clientId, error=f.getErrorMessage())
        d.addErrback(failed)
        return d

    def _active(self):
        return [m for m in self.members.values() if m.state == ACTIVE]

    def _announcement(self):
        return dict(session=self.id, name=self.name, size=self.size, sha256=self.sha256,
                    chunkSize=self.chunkSize, ranges=self.roundRanges, group=self.group,
                    port=self.port, key=self.key, round=self.round)

    def run(self, writerFactory):
        """
        Wait for the start conditions, then run rounds.

        @param writerFactory: called with C{(group, port)}, returns an
            L{provisioner.imagecast.sending.IDatagramWriter}.
        @return: L{Session.done}, fired when every receiver has finished.
        """
        d = self._run(writerFactory)

        def finish(result):
            self.state = "done"
            self.finished = self.clock.seconds()
            self._poke()
            if self._periodic is not None and self._periodic.active():
                self._periodic.cancel()
            self._periodic = None
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            return result

        def failed(f):
            self.error = f.getErrorMessage()
            self.log.failure("imagecast session {session} failed", f, session=self.id)
            for m in self._active():
                self._push(m, commands.EndSession, session=self.id,
                           unrecoverable=[(0, self.size)] if self.size else [],
                           reason="sender failed: %s" % (self.error,))
        d.addErrback(failed)
        d.addBoth(finish)
        d.chainDeferred(self.done)
        return self.done

    @defer.inlineCallbacks
    def _run(self, writerFactory):
        """
        Wait for the start conditions, send rounds, then hand what is left
        to the control channel and wait for every receiver to finish.
        """
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        self._checkLost()
        yield self._waitToStart()
        self.state = "running"
        self.started = self.clock.seconds()
        policy = self.controller.ratePolicy(self)
        writer = writerFactory(self.group, self.port)
        try:
            left, reason = yield self._rounds(writer, policy)
            if reason is not None:
                yield self._endRounds(left, reason)
        finally:
            self._sender = None
            writer.close()

    def _waitToStart(self):
        """
        @return: a Deferred fired once C{minReceivers} receivers are
            connected, or C{maxWait} has passed and at least one is
            enrolled.
        """
        def enough():
            return self._counts[CONNECTED] >= self.minReceivers

        def someone(_):
            if not self.members:
                return self.waitFor(lambda: bool(self.members), None)
        return self.waitFor(enough, self.maxWait).addCallback(someone)

    def _endRounds(self, left, reason):
        """
        The rounds are over: C{left} goes over the control channel
        (L{commands.EndSession}).

        @param reason: C{"small tail"} (the tail rule) or C{"round limit
            reached"} (C{left} is recorded as unrecoverable by multicast).
        @return: a Deferred fired once every receiver has finished.
        """
        self.state = "repair"
        if reason == "small tail":
            # after a repair round what is left is a few datagrams, each
            # missed by one receiver: a round for them would cost an
            # announcement, the data and every report, and save nothing
            self.tail = left
            self.log.info("imagecast session {session}: the last {bytes} bytes ({count} "
                          "ranges) go over the control channel after {rounds} rounds",
                          session=self.id, bytes=R.total(left), count=len(left),
                          rounds=self.round)
        else:
            self.unrecoverable = left
            self.log.warn("imagecast session {session}: {bytes} bytes in {count} ranges "
                          "unrecoverable after {rounds} rounds; receivers fetch them over "
                          "the control channel", session=self.id, bytes=R.total(left),
                          count=len(left), rounds=self.round)
        for m in self._active():
            self._push(m, commands.EndSession, session=self.id, unrecoverable=left,
                       reason=reason)
        return self.waitFor(lambda: self._counts[ACTIVE_] == 0, None)

    # -- scorecard --------------------------------------------------------

    def scorecard(self, detail=False):
        """
        @return: the session's scorecard (L{scorecard}).
        """
        return scorecard(self, detail)
