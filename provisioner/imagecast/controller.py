# -*- test-case-name: tests.test_imagecast_sender,tests.test_imagecast_limits -*-
"""
The imagecast controller: the sessions and the receivers' control
connections; what the AMP responders of
L{provisioner.imagecast.service} call.

What a peer can make it hold is bounded (the C{imagecast} keys
C{max_ids_per_connection}, C{max_receivers}, C{max_members},
C{max_report_ranges}, C{max_session_ranges}), and registering or losing a
connection costs O(1) per id and session: a connection's ids are in a
dictionary, not found by going over every receiver.

Nothing here imports the reactor: L{Controller} takes it.
"""

import ipaddress
import os
import random

from twisted.internet import defer
from twisted.logger import Logger

from provisioner.hashing import sha256File
from provisioner.imagecast import commands
from provisioner.imagecast.datagram import newKey, payloadSize
from provisioner.imagecast.rate import BurstLossRate
from provisioner.imagecast.sending import UDPWriter
from provisioner.imagecast.session import Session
from provisioner.imagecast.source import catalogEntry, resolveImage

__all__ = ["Controller"]


class Controller:
    """
    The imagecast sessions and the receivers' control connections.

    @ivar reactor: provides C{IReactorTime} (and C{IReactorThreads} for the
        default hasher).
    @ivar config: the C{imagecast} section.
    @ivar writerFactory: C{(group, port) -> IDatagramWriter}.
    @ivar hasher: C{path -> Deferred(sha256 hex)}.
    @ivar catalog: a callable returning the image catalogue
        (C{appliance.catalog}) or L{None}; catalogue images are sent by name
        from the catalogue's descriptor with its digest, without hashing.
    """

    log = Logger()

    def __init__(self, reactor, config, writerFactory=None, hasher=None, sessionIds=None,
                 catalog=None):
        self.reactor = reactor
        self.clock = reactor
        self.config = config
        self.writerFactory = writerFactory or self._udpWriter
        self.hasher = hasher or self._threadHash
        self._sessionIds = sessionIds or (
            lambda: random.SystemRandom().randrange(1, 1 << 31))
        self.catalog = catalog
        self.sessions = {}
        self.finished = []
        self.clients = {}  # clientId -> (connection, address, image)
        self._ids = {}  # connection -> [clientIds registered over it]
        self._refused = set()  # connections told about a limit already
        self._starting = set()

    def _udpWriter(self, group, port):
        return UDPWriter(group, port, interface=self.config["interface"],
                         ttl=self.config["ttl"], gso=self.config["gso"])

    def _threadHash(self, path):
        from twisted.internet import threads
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                         sha256File, path)

    def ratePolicy(self, session):
        """
        @return: the L{provisioner.net.pacing.IRatePolicy} of C{session}'s
            rounds, starting at its rate.
        """
        return BurstLossRate(session.rate, self.config["rate_min"] * 1e6 / 8,
                             self.config["rate_max"] * 1e6 / 8)

    # -- receivers ------------------------------------------------------------

    #: the longest address and image name a receiver may give
    MAX_NAME = 255

    def _refuse(self, connection, message):
        """
        Raise L{commands.BadRequest} with C{message}; log it once per
        connection (a peer that keeps trying is not logged again).
        """
        if connection not in self._refused:
            self._refused.add(connection)
            self.log.info("imagecast: registration refused: {message} (further refusals on "
                          "this connection are not logged)", message=message)
        raise commands.BadRequest(message)

    def register(self, connection, clientId, address, image=None):
        """
        A receiver's C{Register}: enroll C{clientId} in the sessions that
        send what it wants (now, or when one starts).

        @raise commands.BadRequest: if an argument is out of its range, or
            the connection has C{max_ids_per_connection} other ids, the
            registry C{max_receivers}, or a session it would join
            C{max_members}.
        """
        if not clientId or len(clientId) > 200:
            raise commands.BadRequest("client id must be 1..200 characters")
        if len(address) > self.MAX_NAME or (image and len(image) > self.MAX_NAME):
            raise commands.BadRequest("address and image must be at most %d characters" % (
                self.MAX_NAME,))
        cfg = self.config
        ids = self._ids.get(connection, ())
        old = self.clients.get(clientId)
        if clientId not in ids:
            most = cfg.get("max_ids_per_connection", 1 << 62)
            if len(ids) >= most:
                self._refuse(connection, "at most %d receiver ids per connection" % (most,))
            if old is None and len(self.clients) >= cfg.get("max_receivers", 1 << 62):
                self._refuse(connection, "%d receivers registered already" % (
                    len(self.clients),))
        joining = [session for session in list(self.sessions.values())
                   if session.state != "done"
                   and (clientId in session.members or self._wants(session, image))]
        for session in joining:
            if clientId not in session.members and session.full():
                self._refuse(connection, "session %d has %d receivers already" % (
                    session.id, len(session.members)))
        if old is not None and old[0] is not connection:
            self.log.info("imagecast: {client} registered again from {address}; the old "
                          "connection is replaced", client=clientId, address=address)
            self._forget(old[0], clientId)
            for session in self.sessions.values():
                m = session.members.get(clientId)
                if m is not None and m.connection is old[0]:
                    session.disconnected(m)
        self.clients[clientId] = (connection, address, image)
        if clientId not in ids:
            self._ids.setdefault(connection, []).append(clientId)
        for session in joining:
            session.enroll(clientId, address, connection)
        if image and cfg["auto_start"]:
            self._autoStart(image)

    def _forget(self, connection, clientId):
        """
        C{clientId} is no longer registered over C{connection}.
        """
        ids = self._ids.get(connection)
        if ids is not None and clientId in ids:
            ids.remove(clientId)
            if not ids:
                del self._ids[connection]

    def _wants(self, session, image):
        return not image or image == session.name or image == os.path.basename(session.path)

    def connectionLost(self, connection):
        """
        A control connection went away: its ids (at most
        C{max_ids_per_connection}) leave the registry and their members are
        disconnected; nobody else is looked at.
        """
        self._refused.discard(connection)
        for clientId in self._ids.pop(connection, ()):
            entry = self.clients.get(clientId)
            if entry is not None and entry[0] is connection:
                del self.clients[clientId]
            for session in self.sessions.values():
                m = session.members.get(clientId)
                if m is not None and m.connection is connection:
                    session.disconnected(m)

    def _member(self, connection, sessionId):
        session = self.sessions.get(sessionId)
        if session is None:
            raise commands.UnknownSession("no session %d" % (sessionId,))
        m = session.memberFor(connection)
        if m is None:
            raise commands.NotRegistered("this connection is not enrolled in session %d"
                                         % (sessionId,))
        return session, m

    def reportMissing(self, connection, sessionId, roundNumber, missing):
        session, member = self._member(connection, sessionId)
        session.report(member, roundNumber, missing)

    def complete(self, connection, sessionId, sha256):
        session, member = self._member(connection, sessionId)
        session.complete(member, sha256)

    #: the longest reason for leaving kept (the receiver sends at most 500)
    MAX_REASON = 500

    def leave(self, connection, sessionId, reason):
        session, member = self._member(connection, sessionId)
        session.leave(member, reason[:self.MAX_REASON])

    def progress(self, connection, sessionId, roundNumber, position):
        session, member = self._member(connection, sessionId)
        session.progress(member, roundNumber, position)

    def fetch(self, connection, sessionId, offset, length):
        session, member = self._member(connection, sessionId)
        if length > commands.FETCH_MAX or length < 0:
            raise commands.BadRequest("at most %d bytes a fetch" % (commands.FETCH_MAX,))
        return session.readAt(offset, length)

    # -- operators --------------------------------------------------------------

    def _groupFor(self):
        base = ipaddress.ip_address(self.config["group"])
        used = set(s.group for s in self.sessions.values())
        for i in range(256):
            candidate = str(base + i)
            if candidate not in used:
                return candidate
        raise commands.BadRequest("256 sessions already running")

    def startSession(self, image, minReceivers=None, maxWait=None, rate=None, maxRounds=None):
        """
        Start imagecasting C{image}: from the catalogue if it has it intact,
        else from below C{imagecast.root}.

        @return: a Deferred firing with the L{Session} once it is hashed and
            waiting for receivers.
        @raise commands.NoSuchImage: if there is no such image.
        @raise commands.BadRequest: if an option is out of its range.
        """
        cfg = self.config
        entry = catalogEntry(self.catalog() if self.catalog is not None else None, image)
        if entry is not None:
            path = os.path.join(self.catalog().directory, entry.name)
            name = entry.name
        else:
            path = resolveImage(cfg["root"], image)
            name = os.path.basename(path)
        self._checkOptions(minReceivers, maxWait, rate, maxRounds)
        if entry is not None:
            # the catalogue hashed it already: send from its descriptor, the
            # very content that was hashed
            size, fd, d = entry.size, os.dup(entry.fd), defer.succeed(entry.sha256)
        else:
            size, fd, d = os.path.getsize(path), None, self.hasher(path)
        return d.addCallback(self._newSession, name, path, size, fd, dict(
            rate=(rate or cfg["rate"]) * 1e6 / 8, maxRounds=maxRounds or cfg["max_rounds"],
            minReceivers=minReceivers or cfg["min_receivers"],
            maxWait=cfg["max_wait"] if maxWait is None else maxWait))

    def _checkOptions(self, minReceivers, maxWait, rate, maxRounds):
        """
        @raise commands.BadRequest: if an option of L{startSession} is out
            of its range.
        """
        cfg = self.config
        if minReceivers is not None and minReceivers < 1:
            raise commands.BadRequest("min receivers must be at least 1")
        if maxWait is not None and maxWait < 0:
            raise commands.BadRequest("max wait must not be negative")
        if rate is not None and not cfg["rate_min"] <= rate <= cfg["rate_max"]:
            raise commands.BadRequest("rate must be within %s..%s Mbit/s" % (
                cfg["rate_min"], cfg["rate_max"]))
        if maxRounds is not None and not 1 <= maxRounds <= 65535:
            raise commands.BadRequest("max rounds must be 1..65535")

    def _newSession(self, sha256, name, path, size, fd, options):
        """
        The image is hashed: create its session, enroll the receivers that
        want it and run it.

        @param options: C{rate} (bytes/s), C{maxRounds}, C{minReceivers},
            C{maxWait}.
        @return: the L{Session}.
        """
        cfg = self.config
        sessionId = self._sessionIds()
        while sessionId in self.sessions:
            sessionId = self._sessionIds()
        session = Session(
            self, sessionId, name, path, size, sha256, self._groupFor(), cfg["data_port"],
            newKey(), payloadSize(cfg["datagram_size"]), options["rate"],
            options["maxRounds"], options["minReceivers"], options["maxWait"], fd=fd)
        self.sessions[sessionId] = session
        self.log.info("imagecast session {session}: {name} ({size} bytes) to {group}:{port}, "
                      "waiting for {min} receivers or {wait} s",
                      session=sessionId, name=session.name, size=size,
                      group=session.group, port=session.port,
                      min=session.minReceivers, wait=session.maxWait)
        for clientId, (conn, address, want) in list(self.clients.items()):
            if self._wants(session, want) and session.enroll(clientId, address, conn) is None:
                break  # max_members: the others wait for the next session
        session.run(self.writerFactory).addBoth(self._sessionDone, session)
        return session

    def _autoStart(self, image):
        """
        C{auto_start}: a receiver asked for C{image} by name and no session
        sends it: start one with the configured start conditions.
        """
        if image in self._starting:
            return
        for session in self.sessions.values():
            if self._wants(session, image):
                return
        try:
            d = self.startSession(image)
        except commands.ImagecastError as e:
            self.log.info("no automatic imagecast session for {image}: {error}",
                          image=image, error=e)
            return
        self._starting.add(image)

        def started(session):
            self._starting.discard(image)
            self.log.info("imagecast session {session} started automatically for {image}",
                          session=session.id, image=image)

        def failed(f):
            self._starting.discard(image)
            self.log.failure("automatic imagecast session for {image} failed", f, image=image)
        d.addCallbacks(started, failed)

    def _sessionDone(self, result, session):
        self.sessions.pop(session.id, None)
        self.finished.append(session)
        keep = self.config["keep_sessions"]
        self.finished = self.finished[-keep:] if keep else []
        card = session.scorecard()
        self.log.info("imagecast session {session}: done after {rounds} rounds, {complete} of "
                      "{members} receivers complete", session=session.id, rounds=session.round,
                      complete=len(card["complete"]), members=len(card["permanent_group"]))
        return None

    #: the longest a Status call waits for a change (seconds)
    STATUS_WAIT_MAX = 60.0

    def statusAfter(self, sessionId, rounds, wait, detail=False):
        """
        The scorecard of one session once it has more than C{rounds} rounds
        or is done, or after C{wait} seconds (at most L{STATUS_WAIT_MAX}):
        a long poll, so that C{send} follows a session without polling and
        ends as soon as it does.

        @return: a Deferred firing with what L{status} returns.
        """
        session = self._kept(sessionId)[0]
        d = session.waitFor(lambda: session.state == "done" or len(session.rounds) > rounds,
                             max(0.0, min(wait, self.STATUS_WAIT_MAX)))
        return d.addCallback(lambda _: self.status(sessionId, detail))

    def _kept(self, sessionId=None):
        """
        The sessions kept (finished ones first), or the one C{sessionId}.

        @raise commands.UnknownSession: if there is no such session.
        """
        every = list(self.finished) + list(self.sessions.values())
        if sessionId is not None:
            every = [s for s in every if s.id == sessionId]
            if not every:
                raise commands.UnknownSession("no session %d" % (sessionId,))
        return every

    def status(self, sessionId=None, detail=False):
        return {"sessions": [s.scorecard(detail) for s in self._kept(sessionId)],
                "receivers": sorted(self.clients)}

    def stop(self):
        """
        Stop every session's sender (service shutdown).
        """
        for session in list(self.sessions.values()):
            session.stopSending()
