# -*- test-case-name: tests.test_client_receiver -*-
"""
The image receiver's rounds: flow control while a round's data flows
(C{Progress}: how far the data has been taken off the socket), the end of
a round's data (settling: the socket empty and quiet, or the round's last
datagram read), and the report of what is missing (C{ReportMissing}),
merged to the server's limits on ranges and box size.

L{RoundReports} is that part of L{provisioner.client.receiver.Receiver}.
"""

from provisioner.imagecast import commands
from provisioner.imagecast import ranges as R

__all__ = ["RoundReports"]


class RoundReports:
    """
    The rounds part of L{provisioner.client.receiver.Receiver} (a mixin;
    its answers to the pushes, its data channel and its end are its other
    parts). It keeps the receiver's round state (C{_position},
    C{_roundOver}, C{_reportedRound}, C{_settleCall}, C{_settleUntil},
    C{_progressCall}) and C{reportsMerged}; it reads the session
    (C{session}, C{round}, C{connection}, C{maxReportRanges},
    C{maxBoxBytes}, C{checks}) and the data channel (C{lastDatagram},
    C{joined}, C{_dataPending}, C{_filter}), saves (C{_save}), and ends
    through C{_finish} once a report says nothing is missing.
    """

    def _sendProgress(self, roundNumber):
        """
        Flow control: tell the server how far this round's data has been
        taken off the socket, every C{progressInterval} while the round's
        data flows.
        """
        self._progressCall = None
        if (self.failed or self.finishing or roundNumber != self.round
                or self._roundOver == roundNumber or self.joined is None):
            return
        if self.connection is not None:
            try:
                d = self.connection.callRemote(commands.Progress, session=self.session,
                                               round=roundNumber, position=self._position)
            except Exception:
                d = None
            if d is not None:
                d.addErrback(lambda f: None)
        self._progressCall = self.reactor.callLater(self.progressInterval,
                                                    self._sendProgress, roundNumber)

    def _settled(self, roundNumber, seenLast=False):
        """
        Report once the round's data has stopped: the socket empty and no
        datagram for C{settle} seconds after C{EndRound}, or, when the
        round's last datagram has been read (C{seenLast}), the socket empty
        (datagrams of a round come in order: none can follow it). At most
        C{settleMax} seconds either way.
        """
        self._settleCall = None
        now = self.reactor.seconds()
        if (((not seenLast and now - self.lastDatagram < self.settle)
                or self._dataPending()) and now < self._settleUntil):
            self._settleCall = self.reactor.callLater(self.settle, self._settled, roundNumber,
                                                      seenLast)
            return
        self._report(roundNumber)

    def _lastDatagramRead(self):
        """
        The round's last datagram has been read: settle (and report) now
        rather than after C{EndRound} and C{settle} seconds of quiet.
        """
        roundNumber = self.round
        self._roundOver = roundNumber
        if self._settleCall is not None and self._settleCall.active():
            self._settleCall.cancel()
        self._settleUntil = self.reactor.seconds() + self.settleMax
        self._settleCall = self.reactor.callLater(0, self._settled, roundNumber, True)

    def _report(self, roundNumber):
        if self.failed or self.finishing or roundNumber != self.round:
            return
        if self._reportedRound >= roundNumber:
            return
        if self._zeroing is not None:
            # the holes of a sparse image are being zeroed: they are held
            # once that is done, and must not be reported missing
            self._holesDone().addCallback(lambda _: self._report(roundNumber))
            return
        if self.checks is not None and self.checks.busy():
            # pieces are being read back: a piece that does not match is
            # missing again, and belongs in this report
            self.checks.idle().addCallback(lambda _: self._report(roundNumber))
            return
        missing = self._reportable(self.missing())
        self._reportedRound = roundNumber
        # the round's data is over: whatever moves the position from now on
        # belongs to the next round (flow control)
        self._position = 0
        if self._filter is not None:
            # the next round's datagrams may come before its announcement:
            # a window of this round must not judge them
            self._filter.disarm()
        self._save()
        if not missing:
            self._leave()
        else:
            self.imageHash.hashAhead(missing[0][0])
        d = self.connection.callRemote(commands.ReportMissing, session=self.session,
                                       round=roundNumber, ranges=missing)

        def reported(_):
            if not missing:
                self._finish()

        def refused(f):
            f.trap(commands.StaleRound, commands.UnknownSession, commands.NotRegistered)
            self.log.info("report for round {round} refused: {error}", round=roundNumber,
                          error=f.getErrorMessage())
        d.addCallbacks(reported, refused)
        d.addErrback(self._lostCall)
        return d

    #: bytes of a report's box besides its ranges (keys, the other values)
    BOX_MARGIN = 4096

    def _reportable(self, missing):
        """
        C{missing} merged (smallest gaps first: L{R.coalesce}) to at most
        the server's C{maxReportRanges}, and to fewer while its box would
        not stay below the server's C{maxBoxBytes}: the server would cut a
        longer report at the end of its list, sending bytes this receiver
        holds, and drop a connection whose box is too large.
        """
        most = self.maxReportRanges
        if most is not None and len(missing) > most:
            missing = R.coalesce(missing, 0, most)
            self.reportsMerged += 1
        room = self.maxBoxBytes - self.BOX_MARGIN
        # (at most 20 bytes a range before zlib, which adds little: encode
        # only a list that may not fit)
        while len(missing) > 1 and len(missing) * 20 + 64 > room:
            size = len(R.toWire(missing))
            # (each AMP key of the value costs a few bytes more)
            if size + 8 * (size // 65535 + 1) <= room:
                break
            missing = R.coalesce(missing, 0, len(missing) // 2)
            self.reportsMerged += 1
        return missing
