# -*- test-case-name: tests.test_imagecast_sender,tests.test_imagecast_limits -*-
"""
The permanent group of an imagecast session: the receivers that enroll,
come back, disconnect, are lost, complete or leave, and the counters kept
as they change.

L{Roster} is the membership part of
L{provisioner.imagecast.session.Session} (a mixin). Membership changes cost
O(1) (O(log n) with the flow window): the start conditions, the end of a
round's reports and the end of the session are counters kept as members
change (C{_counts}, indexed by L{CONNECTED}, L{ACTIVE_}, L{AWAITED} and
L{FRESH}), a connection finds its members in a dictionary, and the
disconnected members wait in the order they left.
"""

from provisioner.imagecast import commands
from provisioner.imagecast.member import ACTIVE, COMPLETE, FAILED, LOST, Member

__all__ = ["Roster", "CONNECTED", "ACTIVE_", "AWAITED", "FRESH"]

# the counters of Session._counts: members that are connected; active; that
# the current round still waits a report from; that reported ranges missing
# for the current round
CONNECTED, ACTIVE_, AWAITED, FRESH = range(4)


class Roster:
    """
    The membership part of L{provisioner.imagecast.session.Session} (a
    mixin; the rounds and the reports are its other parts). It
    keeps the session's C{members} (C{clientId} to
    L{provisioner.imagecast.member.Member}), C{_counts} (see L{_flags}),
    C{_byConnection} (a connection's members, in enrollment order),
    C{_disconnected} (the disconnected members, in the order they left),
    C{_keptRanges} and C{_full}; it reads the session's C{round}, C{state},
    C{phase}, C{config}, C{clock} and C{_flow}, and brings a member up to
    date through the session's C{_push}, C{_announcement} and C{_poke}.

    Every change of a member goes through L{_changing}/L{_changed}, which
    keep C{_counts} up to date.
    """

    # -- the counters ----------------------------------------------------

    def _flags(self, m):
        """
        What C{m} counts for in C{_counts}: connected; active; awaited (the
        current round waits for its report); fresh (it reported ranges
        missing for the current round).
        """
        active = m.state == ACTIVE
        connected = m.connection is not None
        return (connected, active,
                active and connected and m.inCurrentGroup() and m.reportedRound < self.round,
                active and connected and bool(m.missing) and m.reportedRound >= self.round)

    def _changing(self, m):
        """
        Take C{m} out of the counters before it changes (see L{_changed}).
        """
        counts = self._counts
        for i, flag in enumerate(self._flags(m)):
            counts[i] -= flag

    def _changed(self, m):
        """
        Count C{m} again after it changed; tell the flow window.
        """
        counts = self._counts
        for i, flag in enumerate(self._flags(m)):
            counts[i] += flag
        if self._flow is not None:
            self._flow.touch(m)

    def _recount(self):
        """
        Count every member again (a new round: O(n) once a round).
        """
        self._counts = [0, 0, 0, 0]
        for m in self.members.values():
            for i, flag in enumerate(self._flags(m)):
                self._counts[i] += flag

    def memberFor(self, connection):
        """
        @return: the (first) member enrolled over C{connection}, or L{None}.
        """
        members = self._byConnection.get(connection)
        return members[0] if members else None

    def _attach(self, member, connection):
        self._detach(member)
        member.connection = connection
        if connection is not None:
            self._byConnection.setdefault(connection, []).append(member)

    def _detach(self, member):
        old = member.connection
        if old is not None:
            members = self._byConnection.get(old)
            if members is not None:
                if member in members:
                    members.remove(member)
                if not members:
                    del self._byConnection[old]
        member.connection = None

    # -- membership -----------------------------------------------------

    def full(self):
        """
        Whether the permanent group has C{imagecast.max_members} members.
        """
        return len(self.members) >= self.config.get("max_members", 1 << 62)

    def enroll(self, clientId, address, connection):
        """
        Put a receiver in the permanent group (or give a returning one its
        place back) and bring it up to date.

        @return: the L{Member}, or L{None} if the session is full.
        """
        now = self.clock.seconds()
        member = self.members.get(clientId)
        if member is None:
            if self.full():
                if not self._full:
                    self._full = True
                    self.log.warn("imagecast session {session}: {count} receivers "
                                  "(imagecast.max_members): no more are enrolled",
                                  session=self.id, count=len(self.members))
                return None
            member = self.members[clientId] = Member(clientId, address, None, now)
            self._attach(member, connection)
            self._changed(member)
            self.log.info("imagecast session {session}: {client} ({address}) enrolled",
                          session=self.id, client=clientId, address=address)
        else:
            self._changing(member)
            self._attach(member, connection)
            self._disconnected.pop(clientId, None)
            member.address = address
            member.disconnectedAt = None
            member.reconnects += 1
            member.cleanFrom = None
            if member.state == LOST:
                member.state = ACTIVE
                member.reason = None
            self._changed(member)
            self.log.info("imagecast session {session}: {client} is back", session=self.id,
                          client=clientId)
        if self.state in ("running", "repair"):
            self._catchUp(member)
        self._poke()
        return member

    def _catchUp(self, member):
        if member.finished:
            return
        if self.state == "repair":
            self._push(member, commands.EndSession, session=self.id,
                       unrecoverable=self.unrecoverable or self.tail, reason="rounds over")
            return
        if self.round:
            self._push(member, commands.Announce, **self._announcement())
            if self.phase in ("collect", "idle"):
                self._push(member, commands.EndRound, session=self.id, round=self.round)

    def disconnected(self, member):
        self._changing(member)
        self._detach(member)
        member.disconnectedAt = self.clock.seconds()
        self._disconnected.pop(member.clientId, None)
        self._disconnected[member.clientId] = member
        self._changed(member)
        self._poke()

    def complete(self, member, sha256):
        if sha256 != self.sha256:
            raise commands.ChecksumMismatch("sha256 %s is not the image's %s" % (
                str(sha256)[:80], self.sha256))
        self._changing(member)
        member.state = COMPLETE
        member.sha256 = sha256
        if self.started is not None:
            member.completedAt = self.clock.seconds() - self.started
        self._keptRanges -= len(member.missing or ())
        member.missing = []
        member.missingBytes = 0
        self._changed(member)
        self.log.info("imagecast session {session}: {client} complete", session=self.id,
                      client=member.clientId)
        self._verdict(member)
        self._poke()

    def leave(self, member, reason):
        self._changing(member)
        member.state = FAILED
        member.reason = reason
        self._changed(member)
        self.log.warn("imagecast session {session}: {client} left: {reason}", session=self.id,
                      client=member.clientId, reason=reason)
        self._verdict(member)
        self._poke()

    def _verdict(self, member):
        """
        Publish a receiver's verdict (C{imagecast.receiver}: complete,
        failed, lost).
        """
        self.controller.events.publish(
            "imagecast.receiver", level="info" if member.state == COMPLETE else "warn",
            ip=member.address or None, session=self.id, name=self.name,
            client=member.clientId, verdict=member.state, reason=member.reason,
            round=self.round, completed_at=member.completedAt)

    def _checkLost(self):
        """
        Every second: the members disconnected for C{client_timeout} are
        lost. They wait in the order they left, so this looks at those that
        expire and one more.
        """
        self._periodic = None
        now = self.clock.seconds()
        timeout = self.config["client_timeout"]
        expired = []
        for m in self._disconnected.values():
            if now - m.disconnectedAt < timeout:
                break
            expired.append(m)
        for m in expired:
            del self._disconnected[m.clientId]
            if m.state == ACTIVE and not m.connected:
                self._changing(m)
                m.state = LOST
                m.reason = "disconnected for %.0f s" % (now - m.disconnectedAt,)
                self._changed(m)
                self.log.warn("imagecast session {session}: {client} lost ({reason})",
                              session=self.id, client=m.clientId, reason=m.reason)
                self._verdict(m)
        if expired:
            self._poke()
        if self.state != "done":
            self._periodic = self.clock.callLater(1.0, self._checkLost)
