# -*- test-case-name: tests.test_imagecast_auth -*-
"""
Tests of who may be an imagecast receiver (issue 14, finding 3): the
challenge and the proof of L{commands.Register}
(L{provisioner.imagecast.auth}), an id that cannot be taken from a live
connection, L{commands.Complete} only from the id's own connection with
the image's digest, the piece digests every receiver is sent
(L{provisioner.imagecast.pieces}), the configuration's checks, and the
receiver's side of the exchange
(L{provisioner.client.receiverclient}). Over L{iosim} with a
L{task.Clock}, no sockets.
"""

import hashlib
import os

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.protocols import amp
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from provisioner.config import ConfigError, loadConfig
from provisioner.imagecast import commands
from provisioner.imagecast import pieces as P
from provisioner.imagecast.auth import Authenticator, readSecrets
from provisioner.imagecast.controller import Controller
from provisioner.imagecast.service import ControlFactory, ServerLocator

SECRET = b"0123456789abcdef0123456789abcdef"
OTHER = b"fedcba9876543210fedcba9876543210"


class _NullWriter:
    def writeBatch(self, datagrams):
        return len(datagrams)

    def close(self):
        pass


class Peer(amp.CommandLocator):
    """
    A receiver's end of a test connection: records what the server
    pushes; answers L{commands.Ping} unless told to hang.
    """

    def __init__(self, hangPing=False):
        self.pushed = []
        self.hangPing = hangPing

    @commands.Pieces.responder
    def pieces(self, session, pieceSize, digests):
        self.pushed.append(("Pieces", dict(session=session, pieceSize=pieceSize,
                                           digests=digests)))
        return {}

    @commands.Announce.responder
    def announce(self, **kw):
        self.pushed.append(("Announce", kw))
        return {}

    @commands.EndRound.responder
    def endRound(self, session, round):
        return {}

    @commands.EndSession.responder
    def endSession(self, session, unrecoverable, reason=None):
        return {}

    @commands.Ping.responder
    def ping(self):
        if self.hangPing:
            return defer.Deferred()
        return {}

    def named(self, name):
        return [kw for n, kw in self.pushed if n == name]


def call(pump, client, command, **kw):
    out = []
    client.callRemote(command, **kw).addBoth(out.append)
    pump.flush()
    return out[0]


class AuthTestCase(SynchronousTestCase):
    """
    A controller with an image and a receivers file, and connections to
    its control channel.
    """

    mode = "secret"

    def setUp(self):
        self.root = self.mktemp()
        os.makedirs(self.root)
        self.data = os.urandom(3 << 20)
        with open(os.path.join(self.root, "img"), "wb") as f:
            f.write(self.data)
        self.sha = hashlib.sha256(self.data).hexdigest()
        self.secrets = os.path.join(self.root, "receivers")
        with open(self.secrets, "w") as f:
            f.write("# id secret\nr1 %s\nnode07 %s\n" % (SECRET.decode(), OTHER.decode()))
        os.chmod(self.secrets, 0o600)
        self.clock = task.Clock()
        config = loadConfig(text=(
            "imagecast:\n  enabled: true\n  root: %s\n  port: 0\n  authentication: %s\n"
            "  receivers_file: %s\n  server_name: appliance-1\n  min_receivers: 2\n"
            "  max_wait: 600\n" % (self.root, self.mode, self.secrets)))["imagecast"]
        self.controller = Controller(self.clock, config,
                                     writerFactory=lambda g, p: _NullWriter(),
                                     hasher=lambda p: defer.succeed(self.sha),
                                     sessionIds=lambda: 42)
        self.factory = ControlFactory(self.controller, ["127.0.0.0/8"])

    def connect(self, peer=None, address="198.18.0.2"):
        locator = peer or Peer()

        def serverTransport(proto):
            return iosim.FakeTransport(proto, isServer=True,
                                       peerAddress=IPv4Address("TCP", address, 40000))
        client, server, pump = iosim.connectedServerAndClient(
            lambda: self.factory.buildProtocol(None), lambda: amp.AMP(locator=locator),
            serverTransportFactory=serverTransport)
        return client, server, pump, locator

    def register(self, pump, client, clientId, secret=SECRET, **kw):
        """
        Challenge, then Register with the proof under C{secret}.

        @return: the answer, or the L{Failure}.
        """
        challenge = call(pump, client, commands.Challenge)
        proof = commands.registrationProof(secret, challenge["nonce"], clientId,
                                           challenge["server"])
        return call(pump, client, commands.Register, clientId=clientId, address="x",
                    proof=proof, **kw)


class RegisterTests(AuthTestCase):
    """
    C{imagecast.authentication: secret}.
    """

    def test_challenge(self):
        """
        If a receiver asks for a challenge, it gets a fresh 32-byte nonce
        each time, the server's name and the mode.
        """
        client, server, pump, peer = self.connect()
        first = call(pump, client, commands.Challenge)
        second = call(pump, client, commands.Challenge)
        self.assertEqual(len(first["nonce"]), commands.NONCE_SIZE)
        self.assertNotEqual(first["nonce"], second["nonce"])
        self.assertEqual((first["server"], first["authentication"]),
                         ("appliance-1", "secret"))

    def test_proofAccepted(self):
        """
        If a receiver answers the challenge with HMAC-SHA256 under its
        secret, it is registered and enrolled; a host's line serves the
        ids C{HOST:anything} too.
        """
        session = self.successResultOf(self.controller.startSession("img"))
        client, server, pump, peer = self.connect()
        self.assertEqual(self.register(pump, client, "r1")["server"], "provisioner")
        self.assertIn("r1", session.members)
        client2, server2, pump2, peer2 = self.connect()
        self.register(pump2, client2, "node07:/dev/sda", secret=OTHER)
        self.assertIn("node07:/dev/sda", session.members)

    def test_unauthenticatedRefused(self):
        """
        If a Register comes without a challenge, without a proof, with a
        proof under the wrong secret, for an unknown id, for another id
        than the proof's or with a nonce used already, it is refused with
        C{NOT_AUTHENTICATED}: nothing is enrolled and nothing is pushed (no
        data key, no digests).
        """
        session = self.successResultOf(self.controller.startSession("img"))
        client, server, pump, peer = self.connect()
        call(pump, client, commands.Register, clientId="r1",
             address="x").trap(commands.NotAuthenticated)
        call(pump, client, commands.Challenge)
        call(pump, client, commands.Register, clientId="r1",
             address="x").trap(commands.NotAuthenticated)
        self.register(pump, client, "r1", secret=OTHER).trap(commands.NotAuthenticated)
        self.register(pump, client, "nobody").trap(commands.NotAuthenticated)
        challenge = call(pump, client, commands.Challenge)
        proof = commands.registrationProof(SECRET, challenge["nonce"], "r1",
                                           challenge["server"])
        call(pump, client, commands.Register, clientId="node07", address="x",
             proof=proof).trap(commands.NotAuthenticated)
        # the nonce was spent by that attempt: the right proof is refused too
        call(pump, client, commands.Register, clientId="r1", address="x",
             proof=proof).trap(commands.NotAuthenticated)
        self.assertEqual(session.members, {})
        self.assertEqual(self.controller.clients, {})
        self.assertEqual(peer.pushed, [])
        # the connection stays: the right answer to a new challenge works
        self.register(pump, client, "r1")
        self.assertIn("r1", session.members)

    def test_wrongServerName(self):
        """
        If the proof was computed for another server's name, it is
        refused.
        """
        client, server, pump, peer = self.connect()
        challenge = call(pump, client, commands.Challenge)
        proof = commands.registrationProof(SECRET, challenge["nonce"], "r1", "appliance-2")
        call(pump, client, commands.Register, clientId="r1", address="x",
             proof=proof).trap(commands.NotAuthenticated)

    def test_fileReadAgain(self):
        """
        If a receiver's line is added to the receivers file, it registers
        without a reload; a line whose secret is too short is left out.
        """
        client, server, pump, peer = self.connect()
        self.register(pump, client, "r9").trap(commands.NotAuthenticated)
        with open(self.secrets, "a") as f:
            f.write("r9 %s\nr10 short\n" % (SECRET.decode(),))
        self.assertEqual(self.register(pump, client, "r9")["server"], "provisioner")
        secrets, problems = readSecrets(self.secrets)
        self.assertNotIn("r10", secrets)
        self.assertEqual(len(problems), 1)

    def test_piecesBeforeAnnounce(self):
        """
        If an authenticated receiver is enrolled when the session starts,
        it is sent the digest of every piece of the image before the
        announcement, once per connection (and again on a new one).
        """
        session = self.successResultOf(self.controller.startSession("img", minReceivers=1))
        client, server, pump, peer = self.connect()
        self.register(pump, client, "r1")
        self.clock.advance(0.1)
        pump.flush()
        self.assertEqual([n for n, _ in peer.pushed][:2], ["Pieces", "Announce"])
        pieces = peer.named("Pieces")
        self.assertEqual(len(pieces), 1)
        size = P.pieceSizeFor(len(self.data))
        self.assertEqual(pieces[0]["pieceSize"], size)
        self.assertEqual(P.splitDigests(pieces[0]["digests"], len(self.data), size),
                         [hashlib.sha256(self.data[o:o + size]).digest()
                          for o in range(0, len(self.data), size)])
        session._push(session.members["r1"], commands.Announce, **session._announcement())
        pump.flush()
        self.assertEqual(len(peer.named("Pieces")), 1)


class TakeoverTests(AuthTestCase):
    """
    An id belongs to its connection while that connection lives.
    """

    mode = "none"

    def test_secondRegisterRefused(self):
        """
        If another connection registers an id whose connection is alive
        (it answers the probe), it is refused with C{BAD_REQUEST}; the id
        stays with its owner, and a C{Complete} from the other connection
        is refused (it is not enrolled) and leaves the scorecard as it was.
        """
        session = self.successResultOf(self.controller.startSession("img", minReceivers=1))
        owner, ownerServer, ownerPump, ownerPeer = self.connect()
        self.register(ownerPump, owner, "r1")
        thief, thiefServer, thiefPump, thiefPeer = self.connect(address="198.18.0.66")
        f = self.register(thiefPump, thief, "r1")
        f.trap(commands.BadRequest)
        self.assertIn("another connection", f.getErrorMessage())
        ownerPump.flush()
        self.clock.advance(10)
        ownerPump.flush()
        thiefPump.flush()
        self.assertIs(session.members["r1"].connection, ownerServer)
        self.assertIsNone(ownerServer.dropped)
        call(thiefPump, thief, commands.Complete, session=42,
             sha256=self.sha).trap(commands.NotRegistered)
        self.assertEqual(session.scorecard()["complete"], [])
        self.assertEqual(session.members["r1"].state, "active")

    def test_silentOwnerClosed(self):
        """
        If the connection holding an id does not answer the probe within
        C{PROBE_TIMEOUT} (it died unnoticed), it is closed, and the
        receiver's next Register from its new connection takes its place.
        """
        session = self.successResultOf(self.controller.startSession("img", minReceivers=1))
        owner, ownerServer, ownerPump, ownerPeer = self.connect(Peer(hangPing=True))
        self.register(ownerPump, owner, "r1")
        again, againServer, againPump, againPeer = self.connect()
        self.register(againPump, again, "r1").trap(commands.BadRequest)
        ownerPump.flush()
        self.clock.advance(Controller.PROBE_TIMEOUT + 0.1)
        ownerPump.flush()
        self.assertIsNotNone(ownerServer.dropped)
        self.assertFalse(session.members["r1"].connected)
        self.assertEqual(self.register(againPump, again, "r1")["server"], "provisioner")
        self.assertIs(session.members["r1"].connection, againServer)

    def test_resumeAfterDisconnect(self):
        """
        If the owner's connection drops, the same receiver registers again
        on a new connection and keeps its place.
        """
        session = self.successResultOf(self.controller.startSession("img", minReceivers=1))
        owner, ownerServer, ownerPump, ownerPeer = self.connect()
        self.register(ownerPump, owner, "r1")
        owner.transport.loseConnection()
        ownerPump.flush()
        self.assertFalse(session.members["r1"].connected)
        again, againServer, againPump, againPeer = self.connect()
        self.register(againPump, again, "r1")
        self.assertIs(session.members["r1"].connection, againServer)
        self.assertEqual(session.members["r1"].reconnects, 1)


class CompleteTests(AuthTestCase):
    """
    C{Complete}: the receiver's own digest, from its own connection.
    """

    def test_wrongDigestRefused(self):
        """
        If the owner sends C{Complete} with another digest than the
        image's, it is refused (C{CHECKSUM_MISMATCH}) and the scorecard
        does not count it complete; with the image's digest it does.
        """
        session = self.successResultOf(self.controller.startSession("img", minReceivers=1))
        client, server, pump, peer = self.connect()
        self.register(pump, client, "r1")
        call(pump, client, commands.Complete, session=42,
             sha256="0" * 64).trap(commands.ChecksumMismatch)
        self.assertEqual(session.scorecard()["complete"], [])
        self.assertEqual(call(pump, client, commands.Complete, session=42, sha256=self.sha),
                         {})
        self.assertEqual(session.scorecard()["complete"], ["r1"])

    def test_otherConnectionRefused(self):
        """
        If a registered receiver sends C{Complete} for a session in which
        another id is enrolled, only its own member could complete: an
        attacker registered under its own id completes itself, never
        another receiver.
        """
        session = self.successResultOf(self.controller.startSession("img", minReceivers=2))
        victim, victimServer, victimPump, victimPeer = self.connect()
        self.register(victimPump, victim, "r1")
        attacker, attackerServer, attackerPump, attackerPeer = self.connect()
        self.register(attackerPump, attacker, "node07:x", secret=OTHER)
        call(attackerPump, attacker, commands.Complete, session=42, sha256=self.sha)
        card = session.scorecard()
        self.assertEqual(card["complete"], ["node07:x"])
        self.assertEqual(card["members"]["r1"]["state"], "active")


class CertificateModeTests(SynchronousTestCase):
    """
    C{imagecast.authentication: certificate}.
    """

    def test_idNamedByCertificate(self):
        """
        If the client certificate's common name is the id, or the id's
        host part, the Register is accepted without a proof; otherwise,
        and without a certificate, it is refused.
        """
        auth = Authenticator({"authentication": "certificate", "address": "0.0.0.0"})
        conn = object()
        auth.check(conn, "node07", None, "node07")
        auth.check(conn, "node07:/dev/sda", None, "node07")
        self.assertRaises(commands.NotAuthenticated, auth.check, conn, "node08", None,
                          "node07")
        self.assertRaises(commands.NotAuthenticated, auth.check, conn, "node070", None,
                          "node07")
        self.assertRaises(commands.NotAuthenticated, auth.check, conn, "node07", None, None)

    def test_certificateNameFromTransport(self):
        """
        The locator reads the common name from the TLS transport's peer
        certificate, and finds none on a plain connection.
        """
        class Subject:
            commonName = "node07"

        class Certificate:
            def get_subject(self):
                return Subject()

        class Transport:
            def getPeerCertificate(self):
                return Certificate()

        class Proto:
            transport = Transport()
        controller = Controller(task.Clock(), {"authentication": "none"})
        locator = ServerLocator(controller, [])
        locator.protocol = Proto()
        self.assertEqual(locator._certificateName(), "node07")
        Proto.transport = object()
        self.assertIsNone(locator._certificateName())


class ConfigTests(SynchronousTestCase):
    """
    The configuration of C{imagecast.authentication}.
    """

    def test_secretNeedsFile(self):
        """
        If imagecast is enabled with the default C{authentication: secret}
        and no C{receivers_file}, the configuration is refused with a
        message naming both ways out; C{authentication: none} is taken.
        """
        e = self.assertRaises(ConfigError, loadConfig, "p.yaml",
                              text="imagecast:\n  enabled: true\n")
        self.assertIn("receivers_file", str(e))
        self.assertIn("authentication: none", str(e))
        config = loadConfig(text="imagecast:\n  enabled: true\n  authentication: none\n")
        self.assertEqual(config["imagecast"]["authentication"], "none")

    def test_certificateNeedsTLS(self):
        """
        If C{authentication: certificate} is set without TLS and a client
        CA, the configuration is refused.
        """
        e = self.assertRaises(ConfigError, loadConfig, "p.yaml",
                              text="imagecast:\n  authentication: certificate\n")
        self.assertIn("tls.client_ca", str(e))

    def test_openOnNetworkWarned(self):
        """
        If C{authentication: none} is set on a non-loopback address, a
        warning says that anyone may register; on loopback there is none.
        """
        from twisted.logger import globalLogPublisher
        seen = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        Authenticator({"authentication": "none", "address": "127.0.0.1"})
        self.assertEqual([e for e in seen if "anyone" in e.get("log_format", "")], [])
        Authenticator({"authentication": "none", "address": "0.0.0.0"})
        self.assertEqual(len([e for e in seen if "anyone" in e.get("log_format", "")]), 1)


class ReceiverClientTests(SynchronousTestCase):
    """
    The receiver's side of the exchange
    (L{provisioner.client.receiverclient.ReceiverClient}).
    """

    def _client(self, answers, secret=SECRET):
        from provisioner.client.output import OutputFile
        from provisioner.client.receiver import Receiver
        from provisioner.client.receiverclient import ReceiverClient
        from tests.fakes import FakeReactor
        reactor = FakeReactor()
        receiver = Receiver(reactor, OutputFile(self.mktemp()), "node07:/dev/sda")
        client = ReceiverClient(reactor, None, receiver, "198.18.0.2", secret=secret)
        calls = []

        class Proto:
            transport = None

            def connectionLost(self, reason):
                pass

            def callRemote(self, command, **kw):
                calls.append((command, kw))
                answer = answers[command]
                if isinstance(answer, Exception):
                    return defer.fail(answer)
                return defer.succeed(answer)
        return client, receiver, Proto(), calls

    def test_proofSent(self):
        """
        If the server authenticates by secret, the receiver answers its
        challenge with the proof over the nonce, its id and the server's
        name, and takes the server's limits from the answer.
        """
        nonce = os.urandom(32)
        client, receiver, proto, calls = self._client({
            commands.Challenge: {"nonce": nonce, "server": "appliance-1",
                                 "authentication": "secret"},
            commands.Register: {"server": "provisioner", "maxReportRanges": 10,
                                "maxBoxBytes": 1 << 20}})
        self.successResultOf(client._register(proto))
        register = calls[-1][1]
        self.assertEqual(register["proof"], commands.registrationProof(
            SECRET, nonce, "node07:/dev/sda", "appliance-1"))
        self.assertEqual((receiver.maxReportRanges, receiver.maxBoxBytes), (10, 1 << 20))

    def test_openModeNoProof(self):
        """
        If the server says C{none}, the receiver registers without a proof
        (with or without a secret).
        """
        client, receiver, proto, calls = self._client({
            commands.Challenge: {"nonce": b"n" * 32, "server": "a",
                                 "authentication": "none"},
            commands.Register: {"server": "provisioner"}}, secret=None)
        self.successResultOf(client._register(proto))
        self.assertIsNone(calls[-1][1]["proof"])

    def test_refusedFailsAtOnce(self):
        """
        If the server refuses the receiver's credentials, or asks for a
        secret the receiver was not given, the receiver fails at once with
        the reason (retrying would not help), exit status 1.
        """
        client, receiver, proto, calls = self._client({
            commands.Challenge: {"nonce": b"n" * 32, "server": "a",
                                 "authentication": "secret"},
            commands.Register: commands.NotAuthenticated("wrong or unknown receiver secret")})
        self.failureResultOf(client._register(proto), commands.NotAuthenticated)
        self.assertEqual(self.successResultOf(receiver.result), 1)
        self.assertIn("refused this receiver (node07:/dev/sda): wrong", receiver.failed)
        client, receiver, proto, calls = self._client({
            commands.Challenge: {"nonce": b"n" * 32, "server": "a",
                                 "authentication": "secret"}}, secret=None)
        self.failureResultOf(client._register(proto), commands.NotAuthenticated)
        self.assertIn("--secret-file", receiver.failed)
        self.assertEqual([c for c, kw in calls], [commands.Challenge])
