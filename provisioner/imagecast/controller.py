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

An id belongs to the connection that registered it while that connection
lives: a L{commands.Register} of the same id from another connection is
refused, and the owner is sent a L{commands.Ping}; if it does not answer
within L{Controller.PROBE_TIMEOUT} it is closed, so that a receiver whose
old connection died unnoticed gets its id back on its next try. (Who may
register an id at all is the service's L{provisioner.imagecast.auth}.)

Each session's image is cut into pieces whose digests
(L{provisioner.imagecast.pieces}) go to every receiver over its control
connection: they, not the session's data key, authenticate the multicast
data.

Nothing here imports the reactor: L{Controller} takes it.
"""

import ipaddress
import os
import random

from twisted.internet import defer
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger

from provisioner.events import NULL_SINK
from provisioner.hashing import sha256File
from provisioner.imagecast import commands
from provisioner.imagecast import pieces as P
from provisioner.imagecast.datagram import newKey, payloadSize
from provisioner.imagecast.extents import findHoles
from provisioner.imagecast.rate import BurstLossRate
from provisioner.imagecast.sending import UDPWriter
from provisioner.imagecast.session import Session
from provisioner.imagecast.source import catalogEntry, resolveImage

__all__ = ["Controller"]

# The longest a session may wait for receivers before it starts (a week).
MAX_WAIT = 7 * 24 * 3600


def _tooOld(session):
    """
    Why a receiver without L{commands.FEATURE_HOLES} may not join
    C{session}.
    """
    return ("image %s is sparse (its holes are not sent): this receiver does not take "
            "hole maps (Register feature '%s'); upgrade provisioner receive" % (
                session.name, commands.FEATURE_HOLES))


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
        from the catalogue's descriptor with its digest, without hashing
        them whole again.
    @ivar pieceHasher: C{(fd, size, pieceSize, holes=()) -> Deferred(digests)}:
        the piece digests of an image (L{P.pieceDigests} in a thread when
        the reactor has threads; the pieces in the holes of a sparse image
        are not read).
    @ivar totals: what the sessions that ended did, summed since start:
        C{sessions}, C{rounds}, C{wire_bytes} (the metrics add the running
        sessions' figures).
    @ivar events: the L{provisioner.events.IEventSink} sessions, rounds and
        receivers' verdicts are published to.
    @ivar sessionLocks: with several appliances on one PostgreSQL
        database, their L{provisioner.store.postgres_imagecast.SessionLocks}:
        a session starts only once its image's lock is taken here, and is
        refused (L{commands.BadRequest} naming the holder, kept in
        C{elsewhere}) while another appliance holds it; L{None}: one
        appliance, no lock.
    @ivar startConditions: C{image -> (minReceivers, maxWait)} or L{None}:
        a receiver asking for an image with start conditions starts its
        session when none sends it, whatever C{auto_start} says (the
        imaging profiles' sessions, L{provisioner.imagecast.autosession}).
    """

    log = Logger()

    #: seconds the connection holding an id has to answer a L{commands.Ping}
    #: when another connection registers that id
    PROBE_TIMEOUT = 5.0

    #: piece lists kept for further sessions of the same image
    PIECE_CACHE = 8

    def __init__(self, reactor, config, writerFactory=None, hasher=None, sessionIds=None,
                 catalog=None, pieceHasher=None, events=None):
        self.reactor = reactor
        self.clock = reactor
        self.config = config
        self.writerFactory = writerFactory or self._udpWriter
        self.hasher = hasher or self._threadHash
        self.pieceHasher = pieceHasher or self._pieceHash
        self._pieceCache = {}
        self._features = {}  # connection -> what its receiver registered with
        self._probing = {}  # connection -> the probe's timer
        self._sessionIds = sessionIds or (
            lambda: random.SystemRandom().randrange(1, 1 << 31))
        self.catalog = catalog
        self.sessions = {}
        self.finished = []
        self.totals = {"sessions": 0, "rounds": 0, "wire_bytes": 0}
        self.clients = {}  # clientId -> (connection, address, image)
        self._ids = {}  # connection -> [clientIds registered over it]
        self._refused = set()  # connections told about a limit already
        self._starting = set()
        self.events = events if events is not None else NULL_SINK
        self.startConditions = lambda image: None
        self.sessionLocks = None
        self.elsewhere = {}  # image -> HOST:PORT of the appliance sending it
        self._locked = {}  # session id -> the image name its lock was taken for

    def _udpWriter(self, group, port):
        return UDPWriter(group, port, interface=self.config["interface"],
                         ttl=self.config["ttl"], gso=self.config["gso"])

    def _threadHash(self, path):
        from twisted.internet import threads
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                         sha256File, path)

    def _pieceHash(self, fd, size, pieceSize, holes=()):
        if IReactorThreads.providedBy(self.reactor):
            from twisted.internet import threads
            return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                             P.pieceDigests, fd, size, pieceSize,
                                             holes=holes)
        return defer.maybeDeferred(P.pieceDigests, fd, size, pieceSize, holes=holes)

    def _pieces(self, fd, size, sha256, holes=()):
        """
        @return: a Deferred firing with C{(pieceSize, digests)} of the image
            open on C{fd}, kept for further sessions of the same image
            (same sha256 and size).
        """
        pieceSize = P.pieceSizeFor(size)
        key = (sha256, size, pieceSize)
        cached = self._pieceCache.get(key)
        if cached is not None:
            return defer.succeed((pieceSize, cached))

        def hashed(digests):
            self._pieceCache[key] = digests
            while len(self._pieceCache) > self.PIECE_CACHE:
                del self._pieceCache[next(iter(self._pieceCache))]
            return (pieceSize, digests)
        return self.pieceHasher(fd, size, pieceSize, holes=holes).addCallback(hashed)

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

    def register(self, connection, clientId, address, image=None, features=()):
        """
        A receiver's C{Register}: enroll C{clientId} in the sessions that
        send what it wants (now, or when one starts).

        @param features: what the receiver understands
            (L{commands.FEATURES}); one without L{commands.FEATURE_HOLES}
            is refused a session of a sparse image.
        @raise commands.BadRequest: if an argument is out of its range, or
            the connection has C{max_ids_per_connection} other ids, the
            registry C{max_receivers}, or a session it would join
            C{max_members}.
        @raise commands.NotAuthenticated: if a session it would join sends
            a sparse image and it does not take holes (the refusal an
            older receiver takes as final).
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
        features = frozenset(features or ())
        for session in joining:
            if session.holes and commands.FEATURE_HOLES not in features:
                raise commands.NotAuthenticated(_tooOld(session))
            if clientId not in session.members and session.full():
                self._refuse(connection, "session %d has %d receivers already" % (
                    session.id, len(session.members)))
        if old is not None and old[0] is not connection:
            # never taken from a live connection; a dead one that was not
            # noticed yet is closed by the probe, and the receiver's next
            # try succeeds
            self._probe(old[0], clientId)
            self._refuse(connection, "%s is registered on another connection, which is "
                         "still open" % (clientId,))
        self.clients[clientId] = (connection, address, image)
        self._features[connection] = features
        if clientId not in ids:
            self._ids.setdefault(connection, []).append(clientId)
        for session in joining:
            session.enroll(clientId, address, connection)
        if image:
            conditions = self.startConditions(image)
            if conditions is not None:
                self.autoStart(image, *conditions)
            elif cfg["auto_start"]:
                self.autoStart(image)

    def _probe(self, connection, clientId):
        """
        Another connection wants C{clientId}: send its owner a
        L{commands.Ping}; if no answer comes within L{PROBE_TIMEOUT}, close
        it (its ids are then free). Any answer, an error included (a
        receiver that does not know C{Ping}), means it is alive.
        """
        if connection in self._probing:
            return

        def timedOut():
            del self._probing[connection]
            self._drop(connection, "it did not answer a probe within %.0f s while another "
                       "connection registered %s" % (self.PROBE_TIMEOUT, clientId))
        timer = self._probing[connection] = self.clock.callLater(self.PROBE_TIMEOUT, timedOut)

        def over(result):
            if self._probing.get(connection) is timer:
                del self._probing[connection]
                timer.cancel()
            return None
        try:
            d = connection.callRemote(commands.Ping)
        except Exception:
            return  # the connection is going away: connectionLost frees the id
        d.addBoth(over)

    def _drop(self, connection, why):
        """
        Close C{connection} (a dead one: see L{_probe}) and forget its ids.
        """
        self.log.info("imagecast: closing a control connection: {why}", why=why)
        drop = getattr(connection, "drop", None)
        if drop is not None:
            drop(why)
        else:
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abortConnection()
        self.connectionLost(connection)

    def _wants(self, session, image):
        return not image or image == session.name or image == os.path.basename(session.path)

    def connectionLost(self, connection):
        """
        A control connection went away: its ids (at most
        C{max_ids_per_connection}) leave the registry and their members are
        disconnected; nobody else is looked at.
        """
        self._refused.discard(connection)
        self._features.pop(connection, None)
        timer = self._probing.pop(connection, None)
        if timer is not None and timer.active():
            timer.cancel()
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
        else from below C{imagecast.root}; with L{sessionLocks}, once this
        appliance holds C{image}'s lock.

        @return: a Deferred firing with the L{Session} once it is hashed and
            waiting for receivers.
        @raise commands.NoSuchImage: if there is no such image.
        @raise commands.BadRequest: if an option is out of its range, or
            (in the Deferred) another appliance sends C{image}.
        """
        if self.sessionLocks is None:
            return self._startSession(image, minReceivers, maxWait, rate, maxRounds)
        self._checkOptions(minReceivers, maxWait, rate, maxRounds)

        def locked(holder):
            if holder is not None:
                self.elsewhere[image] = holder
                raise commands.BadRequest("a session of %s runs on the appliance at %s" % (
                    image, holder or "(an address it did not publish)"))
            self.elsewhere.pop(image, None)
            try:
                d = self._startSession(image, minReceivers, maxWait, rate, maxRounds)
            except Exception:
                self.sessionLocks.release(image).addErrback(lambda f: None)
                raise

            def started(session):
                self._locked[session.id] = image
                return session

            def failed(f):
                self.sessionLocks.release(image).addErrback(lambda f: None)
                return f
            return d.addCallbacks(started, failed)
        return self.sessionLocks.acquire(image).addCallback(locked)

    def _startSession(self, image, minReceivers=None, maxWait=None, rate=None,
                      maxRounds=None):
        cfg = self.config
        self._checkOptions(minReceivers, maxWait, rate, maxRounds)
        entry = catalogEntry(self.catalog() if self.catalog is not None else None, image)
        fd = entry.openDescriptor() if entry is not None else None
        if fd is None:
            entry = None  # changed since it was hashed: look for it below the root
        if entry is not None:
            path = os.path.join(self.catalog().directory, entry.name)
            name = entry.name
        else:
            path = resolveImage(cfg["root"], image)
            name = os.path.basename(path)
        if entry is not None:
            # the catalogue hashed it already: send from a descriptor of the
            # very content that was hashed
            size, d = entry.size, defer.succeed(entry.sha256)
        else:
            # the pieces are hashed from the descriptor the data is read from
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise commands.NoSuchImage("image %s cannot be opened: %s" % (
                    image, e.strerror))
            size, d = os.fstat(fd).st_size, self.hasher(path)

        # a sparse image's holes are neither read nor sent
        holes = findHoles(fd, size)

        def pieces(sha256):
            return self._pieces(fd, size, sha256, holes).addCallback(
                lambda p: (sha256, p[0], p[1]))

        def failed(f):
            os.close(fd)
            return f
        d.addCallback(pieces).addErrback(failed)
        return d.addCallback(self._newSession, name, path, size, fd, dict(
            rate=(rate or cfg["rate"]) * 1e6 / 8, maxRounds=maxRounds or cfg["max_rounds"],
            minReceivers=minReceivers or cfg["min_receivers"],
            maxWait=cfg["max_wait"] if maxWait is None else maxWait, holes=holes))

    def _checkOptions(self, minReceivers, maxWait, rate, maxRounds):
        """
        @raise commands.BadRequest: if an option of L{startSession} is out
            of its range.
        """
        cfg = self.config
        if minReceivers is not None and minReceivers < 1:
            raise commands.BadRequest("min receivers must be at least 1")
        if maxWait is not None and not 0 <= maxWait <= MAX_WAIT:
            raise commands.BadRequest("max wait must be 0..%d seconds" % (MAX_WAIT,))
        if rate is not None and not cfg["rate_min"] <= rate <= cfg["rate_max"]:
            raise commands.BadRequest("rate must be within %s..%s Mbit/s" % (
                cfg["rate_min"], cfg["rate_max"]))
        if maxRounds is not None and not 1 <= maxRounds <= 65535:
            raise commands.BadRequest("max rounds must be 1..65535")

    def _newSession(self, digests, name, path, size, fd, options):
        """
        The image is hashed: create its session, enroll the receivers that
        want it and run it.

        @param digests: C{(sha256 hex, piece size, piece digests)}.
        @param options: C{rate} (bytes/s), C{maxRounds}, C{minReceivers},
            C{maxWait}, C{holes} (of a sparse image).
        @return: the L{Session}.
        """
        sha256, pieceSize, pieceDigests = digests
        cfg = self.config
        sessionId = self._sessionIds()
        while sessionId in self.sessions:
            sessionId = self._sessionIds()
        session = Session(
            self, sessionId, name, path, size, sha256, self._groupFor(), cfg["data_port"],
            newKey(), payloadSize(cfg["datagram_size"]), options["rate"],
            options["maxRounds"], options["minReceivers"], options["maxWait"], fd=fd,
            pieces=(pieceSize, pieceDigests), holes=options.get("holes", ()))
        self.sessions[sessionId] = session
        self.log.info("imagecast session {session}: {name} ({size} bytes) to {group}:{port}, "
                      "waiting for {min} receivers or {wait} s",
                      session=sessionId, name=session.name, size=size,
                      group=session.group, port=session.port,
                      min=session.minReceivers, wait=session.maxWait)
        self.events.publish("imagecast.session", session=sessionId, name=session.name,
                            size=size, group=session.group, port=session.port,
                            min_receivers=session.minReceivers, max_wait=session.maxWait)
        for clientId, (conn, address, want) in list(self.clients.items()):
            if not self._wants(session, want):
                continue
            if session.holes and commands.FEATURE_HOLES not in self._features.get(conn, ()):
                # an older receiver: closed, it is refused when it registers again
                self._drop(conn, "%s: %s" % (clientId, _tooOld(session)))
                continue
            if session.enroll(clientId, address, conn) is None:
                break  # max_members: the others wait for the next session
        session.run(self.writerFactory).addBoth(self._sessionDone, session)
        return session

    def autoStart(self, image, minReceivers=None, maxWait=None):
        """
        A receiver asked for C{image} by name (C{auto_start}), or a host of
        an imaging profile asked for its orders, and no session sends it:
        start one the way C{imagecast send} does (L{startSession}), with
        these start conditions (default: the configured ones).

        @return: whether a session for C{image} is starting or running.
        """
        if image in self._starting:
            return True
        for session in self.sessions.values():
            if self._wants(session, image):
                return True
        try:
            d = self.startSession(image, minReceivers, maxWait)
        except commands.ImagecastError as e:
            self.log.info("no automatic imagecast session for {image}: {error}",
                          image=image, error=e)
            return False
        self._starting.add(image)

        def started(session):
            self._starting.discard(image)
            self.log.info("imagecast session {session} started automatically for {image}",
                          session=session.id, image=image)

        def failed(f):
            self._starting.discard(image)
            if f.check(commands.ImagecastError):
                self.log.info("no automatic imagecast session for {image}: {error}",
                              image=image, error=f.value)
                return
            self.log.failure("automatic imagecast session for {image} failed", f, image=image)
        d.addCallbacks(started, failed)
        return True

    def _sessionDone(self, result, session):
        self.sessions.pop(session.id, None)
        image = self._locked.pop(session.id, None)
        if image is not None and self.sessionLocks is not None:
            self.sessionLocks.release(image).addErrback(
                lambda f: self.log.warn("imagecast: the lock of {image} was not released: "
                                        "{error}", image=image, error=f.value))
        self.finished.append(session)
        totals = self.totals
        totals["sessions"] += 1
        totals["rounds"] += len(session.rounds)
        totals["wire_bytes"] += sum(r.get("wire_bytes", 0) for r in session.rounds)
        keep = self.config["keep_sessions"]
        self.finished = self.finished[-keep:] if keep else []
        card = session.scorecard()
        self.log.info("imagecast session {session}: done after {rounds} rounds, {complete} of "
                      "{members} receivers complete", session=session.id, rounds=session.round,
                      complete=len(card["complete"]), members=len(card["permanent_group"]))
        self.events.publish("imagecast.done", level="warn" if session.error else "info",
                            session=session.id, name=session.name, rounds=session.round,
                            complete=len(card["complete"]),
                            receivers=len(card["permanent_group"]), error=session.error)
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
