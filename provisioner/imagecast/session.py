# -*- test-case-name: tests.test_imagecast_sender,tests.test_imagecast_limits -*-
"""
One imagecast session: an image sent to a permanent group of receivers,
round after round, until the current group is empty or the round limit is
reached; then what is left goes over the control channel.

L{Session} runs the rounds (announce, data, collect); the receivers'
reports, the minimum retransmission set of the next round and the tail
rule are L{provisioner.imagecast.reports.Reports}; its receivers are
L{provisioner.imagecast.member.Member}s, its flow window is
L{provisioner.imagecast.flow.FlowWindow}, its rate policy comes from the
controller and its scorecard from L{provisioner.imagecast.scorecard}.

Its permanent group (enrollment, disconnection, loss, completion) and the
counters kept as members change are L{provisioner.imagecast.roster.Roster}:
membership changes cost O(1) (O(log n) with the flow window); only the
rounds themselves go over every member.

Nothing here imports the reactor: the session takes its controller's clock.
"""

import os

from twisted.internet import defer
from twisted.logger import Logger

from provisioner.imagecast import commands
from provisioner.imagecast import ranges as R
from provisioner.imagecast.flow import FlowWindow
from provisioner.imagecast.member import ACTIVE
from provisioner.imagecast.reports import Reports
from provisioner.imagecast.roster import ACTIVE_, AWAITED, CONNECTED, FRESH, Roster
from provisioner.imagecast.scorecard import mbps, scorecard
from provisioner.imagecast.sending import RoundSender

__all__ = ["Session"]


class Session(Roster, Reports):
    """
    One image to a group of receivers.

    States: C{waiting} (for the start conditions), C{running} (rounds),
    C{repair} (rounds over, receivers fetch the rest over the control
    channel), C{done}.

    Every change of a member goes through L{_changing}/L{_changed}, which
    keep C{_counts} (see L{_flags}) up to date (L{Roster}).
    """

    log = Logger()

    def __init__(self, controller, sessionId, name, path, size, sha256, group, port, key,
                 chunkSize, rate, maxRounds, minReceivers, maxWait, wanted=None, fd=None, *,
                 pieces):
        """
        @param pieces: C{(piece size, digests)} of the image
            (L{provisioner.imagecast.pieces}), sent to each receiver before
            its first announcement.
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
                       digests=self.digests)
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

    @defer.inlineCallbacks
    def _rounds(self, writer, policy):
        """
        Rounds until every receiver has finished or the rounds are over.

        @return: a Deferred firing with C{(ranges left, reason)}: the reason
            is C{"round limit reached"} or C{"small tail"}, or L{None} when
            every receiver has finished.
        """
        nextRanges = [(0, self.size)] if self.size else []
        while True:
            record = self._beginRound(nextRanges)
            yield self._announce(record)
            yield self._sendData(record, writer)
            yield self._collect(record)
            nextRanges = yield self._nextRanges(record)
            if nextRanges is None:
                return (None, None)
            if self.config["adapt_rate"]:
                self.rate = policy.roundOver(self.roundRanges, self._cleanReports(),
                                             self.chunkSize)
            if self.round >= self.maxRounds:
                return (nextRanges, "round limit reached")
            if self.round >= 2 and self._smallTail(record):
                return (nextRanges, "small tail")

    def _beginRound(self, ranges):
        """
        Start the next round with C{ranges}.

        @return: its record (for the scorecard).
        """
        self.round += 1
        self.roundRanges = ranges
        self._recount()
        record = {"round": self.round, "ranges": len(ranges),
                  "bytes": R.total(ranges), "rate_mbps": round(mbps(self.rate), 1),
                  "datagrams": 0, "wire_bytes": 0, "reports": {}, "assumed": [],
                  "started": self.clock.seconds() - self.started}
        self.rounds.append(record)
        self._poke()
        return record

    def _announce(self, record):
        """
        Announce the round to every active receiver.

        The data waits only for those that have not reported yet (they may
        not have the image prepared nor the group joined), up to
        C{announce_timeout}: one that reported ranges missing is still on
        the group and keeps datagrams of a later round, and the flow gate
        holds the round at its start until it reports progress.

        @return: a Deferred fired when the data may start.
        """
        self.phase = "announce"
        for m in self._active():
            if m.connected and m.cleanFrom is None:
                m.cleanFrom = self.round
        acks = []
        for m in self._active():
            d = self._push(m, commands.Announce, **self._announcement())
            if m.missing is None:
                acks.append(d)
        if acks:
            d = _withTimeout(defer.DeferredList(acks), self.clock,
                             self.config["announce_timeout"])
        else:
            d = defer.succeed(None)

        def announced(_):
            record["announce_seconds"] = round(
                self.clock.seconds() - self.started - record["started"], 3)
        return d.addCallback(announced)

    def _sendData(self, record, writer):
        """
        Send the round's datagrams through C{writer}, behind the flow gate.

        @return: a Deferred fired when the last one has gone.
        """
        self.phase = "data"
        gate = None
        if self.config["flow_window"]:
            gate = self._flowGate(self.round, self.config["flow_window"])
        sender = self._sender = RoundSender(
            self.clock, writer, self.readAt, self.id, self.round, self.key,
            self.roundRanges, self.chunkSize, self.rate, gate=gate)

        flow = self._flow

        def sent(_):
            self._flow = None
            if flow is not None:
                # receivers too slow to hold the round (the rate floor)
                record["too_slow"] = sorted(m.clientId for m in flow.tooSlow)
            record["datagrams"] = sender.datagrams
            record["wire_bytes"] = sender.wireBytes
            record["seconds"] = self.clock.seconds() - self.started - record["started"]
            record["paused"] = sender.paused
        return sender.start().addCallback(sent)

    def _collect(self, record):
        """
        End the round and wait for the reports of the connected receivers
        of the current group (up to C{report_timeout}).

        @return: a Deferred fired when they are in or the time is up.
        """
        self.phase = "collect"
        for m in self._active():
            self._push(m, commands.EndRound, session=self.id, round=self.round)
        r = self.round

        def allReported():
            # every connected member of the current group reported for r
            return self.round != r or self._counts[AWAITED] == 0
        collecting = self.clock.seconds()

        def collected(_):
            record["collect_seconds"] = round(self.clock.seconds() - collecting, 3)
            self.phase = "idle"
        return self.waitFor(allReported, self.config["report_timeout"]).addCallback(collected)

    @defer.inlineCallbacks
    def _nextRanges(self, record):
        """
        The next round's ranges; while there are none although not every
        receiver has finished (one is verifying, disconnected, or will
        report late), wait for a report of ranges missing.

        @return: a Deferred firing with the ranges, or L{None} once every
            receiver has finished.
        """
        nextRanges = self._aggregate(record)
        while not nextRanges:
            if self._counts[ACTIVE_] == 0:
                return None
            # every member finished, or one reported ranges missing
            yield self.waitFor(
                lambda: self._counts[ACTIVE_] == 0 or self._counts[FRESH] > 0, None)
            nextRanges = self._aggregate(record)
        return nextRanges

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

    def progress(self, member, roundNumber, position):
        """
        A receiver's C{Progress}: remember its position and when it last
        moved forward.
        """
        if roundNumber != self.round:
            return
        old = member.progress
        if old is not None and old[0] == roundNumber and position <= old[1]:
            return
        member.progress = (roundNumber, position, self.clock.seconds())
        if self._flow is not None:
            self._flow.touch(member)

    def _flowGate(self, roundNumber, window):
        """
        The round's flow gate (L{FlowWindow}) over this session's members.
        """
        cfg = self.config
        self._flow = FlowWindow(self.clock, self.members.values(), roundNumber,
                                self.roundRanges, window,
                                floor=cfg.get("min_receiver_rate", 0.05) * self.rate,
                                period=cfg.get("min_rate_seconds", 2.0))
        return self._flow.gate

    # -- scorecard --------------------------------------------------------

    def scorecard(self, detail=False):
        """
        @return: the session's scorecard (L{scorecard}).
        """
        return scorecard(self, detail)


def _withTimeout(d, clock, timeout):
    """
    Fire with C{d}'s result, or with L{None} after C{timeout}, whichever is
    first (C{d} is not cancelled).
    """
    out = defer.Deferred()
    call = clock.callLater(timeout, lambda: out.called or out.callback(None))

    def done(result):
        if call.active():
            call.cancel()
        if not out.called:
            out.callback(result)
    d.addBoth(done)
    return out
