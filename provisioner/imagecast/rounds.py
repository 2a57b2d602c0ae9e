# -*- test-case-name: tests.test_imagecast_sender,tests.test_imagecast_limits -*-
"""
The rounds of an imagecast session: each announced to the active
receivers, its data sent behind the flow gate, its reports collected, until
every receiver has finished, the round limit is reached or the tail rule
says the rest goes over the control channel.

L{Rounds} is the rounds part of L{provisioner.imagecast.session.Session}
(a mixin); the flow window of a round is
L{provisioner.imagecast.flow.FlowWindow}, its datagrams go through
L{provisioner.imagecast.sending.RoundSender}.
"""

from twisted.internet import defer

from provisioner.imagecast import commands
from provisioner.imagecast import ranges as R
from provisioner.imagecast.flow import FlowWindow
from provisioner.imagecast.roster import ACTIVE_, AWAITED, FRESH
from provisioner.imagecast.scorecard import mbps
from provisioner.imagecast.sending import RoundSender

__all__ = ["Rounds"]


class Rounds:
    """
    The rounds part of L{provisioner.imagecast.session.Session} (a mixin;
    the permanent group and the reports are its other parts). It
    keeps the session's C{round}, C{roundRanges}, C{phase}, C{rate},
    C{rounds} (a record per round, for the scorecard), C{_sender} (the
    round being sent) and C{_flow} (its flow window), and each member's
    C{cleanFrom} and C{progress}; it reads the session's C{config},
    C{clock}, C{started}, C{_counts} and C{members}, and uses its
    C{_push}, C{_announcement}, C{waitFor}, C{readAt} and the reports'
    C{_aggregate}, C{_cleanReports} and C{_smallTail}.
    """

    @defer.inlineCallbacks
    def _rounds(self, writer, policy):
        """
        Rounds until every receiver has finished or the rounds are over.

        @return: a Deferred firing with C{(ranges left, reason)}: the reason
            is C{"round limit reached"} or C{"small tail"}, or L{None} when
            every receiver has finished.
        """
        # a sparse image's holes are never sent: each receiver zeroes them
        nextRanges = list(self.dataRanges)
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
        self.controller.events.publish("imagecast.round", session=self.id, name=self.name,
                                       round=self.round, ranges=len(ranges),
                                       bytes=record["bytes"], rate=self.rate,
                                       receivers=self._counts[1])
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
