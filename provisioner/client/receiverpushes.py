# -*- test-case-name: tests.test_client_receiver -*-
"""
The image receiver's answers to what the appliance pushes on the control
channel: the piece digests and the holes of a sparse image (C{Pieces}:
the holes are zeroed on the output, L{provisioner.client.holes}, and
counted as received), the announcement of a round
(C{Announce}: the session adopted, its pieces checked, the group joined,
the kernel filter armed, flow control started), the end of a round
(C{EndRound}: settle, then report) and the end of the rounds
(C{EndSession}: the rest is fetched over the control channel).

L{ServerPushes} is that part of L{provisioner.client.receiver.Receiver}.
"""

from twisted.protocols import amp

from twisted.internet import defer

from provisioner.client.holes import zeroHoles
from provisioner.client.output import ReceiveError, describeOSError
from provisioner.client.pieces import PieceCheck
from provisioner.imagecast import commands
from provisioner.imagecast import pieces as P
from provisioner.imagecast import ranges as R
from provisioner.imagecast.datagram import SessionKey

__all__ = ["ServerPushes"]


class ServerPushes(amp.CommandLocator):
    """
    The responders of L{provisioner.client.receiver.Receiver} (a mixin;
    its data channel, its rounds and its end are its other parts). They
    keep the receiver's session (C{session}, C{name}, C{size},
    C{sha256}, C{key}, C{_verifier}, C{chunkSize}, C{group}, C{port}),
    the piece lists not announced yet (C{_pieceLists}) and the piece
    check (C{checks}), and start a round (C{round}, C{rounds},
    C{roundRanges}, C{_position}, C{_roundEnd}, C{_progressCall}) and its
    end (C{_roundOver}, C{_settleCall}, C{_settleUntil}).
    """

    #: piece lists kept for sessions not announced yet
    PIECE_LISTS = 2

    @commands.Ping.responder
    def ping(self):
        return {}

    @commands.Pieces.responder
    def pieces(self, session, pieceSize, digests, holes=()):
        """
        The digests of C{session}'s pieces, and the holes of a sparse
        image, before its first announcement on this connection.
        """
        if digests is None:
            raise commands.BadRequest("piece list too long")
        holes = commands.checkRanges(holes or [], maxRanges=commands.MAX_HOLE_RANGES)
        lists = self._pieceLists
        lists.pop(session, None)
        lists[session] = (pieceSize, bytes(digests), holes)
        while len(lists) > self.PIECE_LISTS:
            del lists[next(iter(lists))]
        return {}

    @commands.Announce.responder
    def announce(self, session, name, size, sha256, chunkSize, ranges, group, port, key, round):
        ranges = commands.checkRanges(ranges, size)
        if self.finishing or self.failed:
            return {}
        if self.session is not None and session != self.session:
            if sha256 != self.sha256 or size != self.size:
                self.log.info("ignoring session {session} ({name}): already receiving {mine}",
                              session=session, name=name, mine=self.name)
                return {}
        if self.session != session:
            pieces = self._pieceLists.get(session)
            if pieces is None:
                raise commands.BadRequest("no piece digests for session %d: the data "
                                          "cannot be authenticated" % (session,))
            try:
                P.splitDigests(pieces[1], size, pieces[0])
            except P.PieceError as e:
                raise commands.BadRequest("piece digests of session %d: %s" % (session, e))
            commands.checkRanges(pieces[2], size)
            self._adopt(session, name, size, sha256, chunkSize, group, port, key)
        self.round = round
        self.rounds.add(round)
        self.roundRanges = ranges
        need = R.intersect(ranges, self.missing())
        if need:
            self._join()
            self._armFilter(ranges, need)
        else:
            self._leave()
            if self._filter is not None:
                self._filter.disarm()
        if self._reportedRound != round - 1:
            # (after its report of the previous round the position restarted
            # at 0: whatever moved it since is this round's data, taken
            # before this announcement)
            self._position = 0
        # where the round's data ends: once a datagram reaching it is read
        # and the socket is empty, nothing more of the round can come
        self._roundEnd = ranges[-1][1] if ranges else None
        if self._progressCall is not None and self._progressCall.active():
            self._progressCall.cancel()
        self._progressCall = None
        if need:
            # flow control in every round this receiver takes data in
            self._progressCall = self.reactor.callLater(self.progressInterval,
                                                        self._sendProgress, round)
        return {}

    def _adopt(self, session, name, size, sha256, chunkSize, group, port, key):
        first = self.session is None
        self.session = session
        self.name = name
        self.sha256 = sha256
        self.key = key
        self._verifier = SessionKey(key, session)
        self.chunkSize = chunkSize
        if self.group is not None and (group, port) != (self.group, self.port):
            self._leave()
            self._closeData()
        self.group = group
        self.port = port
        holes = self._pieceLists[session][2]
        if first or size != self.size:
            self.size = size
            try:
                if holes:
                    self.output.prepare(size, holes)
                else:
                    self.output.prepare(size)
            except ReceiveError as e:
                self.fail(str(e))
                raise commands.BadRequest(str(e))
            resume = self.state.load(sha256, size)
            self.received = R.RangeSet(resume)
            self.resumed = self.received.total()
            if self.resumed:
                self.log.info("resuming {name}: {bytes} of {size} bytes already here",
                              name=name, bytes=self.resumed, size=size)
        self._checkPieces(session)
        self._zeroHoles(holes)
        if self.started is None:
            self.started = self.reactor.seconds()
        if self._saveCall is None:
            self._saveCall = self.reactor.callLater(self.saveInterval, self._periodicSave)

    def _checkPieces(self, session):
        """
        A new session: check pieces against its digests from now on, and
        those already held (resumed, or kept from another session of the
        same image) by reading them back.
        """
        pieceSize, digests = self._pieceLists[session][:2]
        if self.checks is not None:
            self.checks.forget()
        self.checks = PieceCheck(self.size, pieceSize, digests, self.output.path,
                                 self._covers, self.runInThread, self._pieceRejected)
        self.imageHash.attach(self.checks)
        self.checks.sweep()

    def _zeroHoles(self, holes):
        """
        A sparse image: make its holes that are not held yet read as zeros
        on the output (L{zeroHoles}, in a thread), then count them as
        received and verify the pieces that lie in them. Reports, fetching
        and the check at the end wait for it (L{_holesDone}): until then
        the holes are missing.
        """
        todo = R.subtract(holes, self.received.ranges())
        if not todo:
            return
        size = self.size
        self.holesHow = None
        d = self._zeroing = self.runInThread(zeroHoles, self.output, todo)

        def zeroed(how):
            if self._zeroing is not d:
                return
            if size != self.size:
                return  # another image since
            self.holesHow = how
            for start, end in todo:
                self.holesZeroed += self.received.add(start, end)
            self._dirty = True
            if self.checks is not None:
                self.checks.zeroed(todo)
                for start, end in todo:
                    # pieces partly in a hole whose data is held
                    self.checks.added(start, end)
            self.log.info("{bytes} bytes of holes zeroed ({how}); they are not sent",
                          bytes=R.total(todo), how=how)

        def failed(f):
            error = f.value
            if isinstance(error, OSError):
                error = describeOSError(error, self.output.path, "zeroing the holes")
            self.fail(str(error))

        def over(_):
            if self._zeroing is d:
                self._zeroing = None
            waiters, self._holeWaiters = self._holeWaiters, []
            for w in waiters:
                w.callback(None)
        d.addCallbacks(zeroed, failed).addBoth(over)

    def _holesDone(self):
        """
        @return: a Deferred firing once no hole is being zeroed.
        """
        if self._zeroing is None:
            return defer.succeed(None)
        d = defer.Deferred()
        self._holeWaiters.append(d)
        return d

    def _covers(self, start, end):
        return self.received.covers(start, end)

    def _pieceRejected(self, index, start, end, inOrder):
        """
        Piece C{index} did not match its digest: what is held of it is
        dropped (written again when it comes again), and the in-order hash
        goes back before it (L{ImageHash.extend} did that itself for a
        piece it checked).
        """
        self.received.remove(start, end)
        self._dirty = True
        if not inOrder:
            self.imageHash.rejected(start)

    @commands.EndRound.responder
    def endRound(self, session, round):
        if session != self.session or self.finishing or self.failed:
            return {}
        if self._reportedRound >= round or (self._roundOver == round
                                             and self._settleCall is not None):
            # reported (or settling) already: the round's last datagram
            # came before this
            return {}
        self._roundOver = round
        if self._settleCall is not None and self._settleCall.active():
            self._settleCall.cancel()
        self._settleUntil = self.reactor.seconds() + self.settleMax
        self._settleCall = self.reactor.callLater(self.settle, self._settled, round)
        return {}

    @commands.EndSession.responder
    def endSession(self, session, unrecoverable, reason=None):
        commands.checkRanges(unrecoverable)
        if session != self.session or self.finishing or self.failed:
            if self.session is None:
                # never got an announcement: nothing to repair from
                return {}
            return {}
        self._leave()
        self.log.info("no more rounds ({reason}); fetching {bytes} bytes over the control "
                      "channel", reason=reason, bytes=R.total(self.missing()))
        self.reactor.callLater(0, self._repair)
        return {}
