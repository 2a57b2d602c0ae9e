"""
Tests for L{provisioner.imagecast.service} and L{provisioner.imagecast.commands}:
the AMP control channel over an in-memory connection, then the service on
real sockets on 127.0.0.1 (port 0), with and without TLS.
"""

import datetime
import os

from OpenSSL import SSL
from service_identity.exceptions import DNSMismatch, VerificationError
from twisted.internet import defer, endpoints, protocol, ssl, task
from twisted.internet.address import IPv4Address
from twisted.protocols import amp
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase, TestCase

from provisioner.appliance import Appliance
from provisioner.config import ConfigError, loadConfig
from provisioner.imagecast import commands
from provisioner.imagecast.controller import Controller
from provisioner.imagecast.service import (
    ControlFactory, ImagecastService, makeService)


class Recorder(amp.CommandLocator):
    """
    The receiver side of the test connection: records pushes.
    """

    def __init__(self):
        self.announces = []

    @commands.Announce.responder
    def announce(self, **kw):
        self.announces.append(kw)
        return {}

    @commands.EndRound.responder
    def endRound(self, session, round):
        return {}


def _config(root, extra="", auth="  authentication: none\n"):
    # authentication: none unless a test says otherwise: these tests are
    # about the commands and the service; the exchange that authenticates
    # a receiver is tests.test_imagecast_auth's
    return loadConfig(text="imagecast:\n  enabled: true\n  root: %s\n  port: 0\n%s%s" % (
        root, auth, extra))


#: the answer to Register (maxReportRanges, maxBoxBytes: the default limits)
REGISTERED = {"server": "provisioner", "maxReportRanges": 65536, "maxBoxBytes": 16 << 20}


def call(pump, client, command, **kw):
    """
    Call C{command} and pump; AMP wants the errback attached before the
    answer arrives. Return the result or the L{Failure}.
    """
    out = []
    client.callRemote(command, **kw).addBoth(out.append)
    pump.flush()
    return out[0]


class ControlChannelTests(SynchronousTestCase):
    """
    The control channel over L{iosim}, with a L{task.Clock}.
    """

    def setUp(self):
        root = self.mktemp()
        os.makedirs(root)
        with open(os.path.join(root, "img"), "wb") as f:
            f.write(os.urandom(1 << 20))
        self.clock = task.Clock()
        self.controller = Controller(self.clock, _config(root)["imagecast"],
                                     writerFactory=lambda g, p: _NullWriter(),
                                     hasher=lambda p: defer.succeed("SHA"),
                                     sessionIds=lambda: 42)

    def connect(self, peer="127.0.0.1"):
        factory = ControlFactory(self.controller, ["127.0.0.0/8"])
        recorder = Recorder()

        def serverTransport(proto):
            return iosim.FakeTransport(proto, isServer=True,
                                       peerAddress=IPv4Address("TCP", peer, 40000))
        client, server, pump = iosim.connectedServerAndClient(
            lambda: factory.buildProtocol(None), lambda: amp.AMP(locator=recorder),
            serverTransportFactory=serverTransport)
        return client, server, pump, recorder

    def test_registerAndBigAnnounce(self):
        """
        If a receiver registers while a session runs, the Announce pushed to
        it carries a range list far above AMP's 64 KiB value limit intact.
        """
        client, server, pump, recorder = self.connect()
        session = self.successResultOf(self.controller.startSession("img", minReceivers=1))
        self.assertEqual(call(pump, client, commands.Register, clientId="r1",
                              address="198.18.0.2"), REGISTERED)
        pump.flush()
        self.assertEqual(recorder.announces[0]["ranges"], [(0, 1 << 20)])
        many = [(i * 100, i * 100 + 50) for i in range(10000)]
        session.roundRanges = many
        session._push(session.members["r1"], commands.Announce, **session._announcement())
        pump.flush()
        self.assertEqual(recorder.announces[-1]["ranges"], many)
        self.assertEqual(recorder.announces[-1]["key"], session.key)

    def test_declaredErrorKeepsConnection(self):
        """
        If a receiver names an unknown session, it gets
        L{commands.UnknownSession} and the connection stays up.
        """
        client, server, pump, recorder = self.connect()
        f = call(pump, client, commands.ReportMissing, session=9, round=1, ranges=[])
        f.trap(commands.UnknownSession)
        self.assertEqual(call(pump, client, commands.Register, clientId="r1", address="x"),
                         REGISTERED)

    def test_badRangesDeclared(self):
        """
        If a report carries a malformed range list, the caller gets the
        declared C{BAD_RANGES} error and the connection stays up.
        """
        client, server, pump, recorder = self.connect()
        self.successResultOf(self.controller.startSession("img", minReceivers=1))
        self.assertEqual(call(pump, client, commands.Register, clientId="r1", address="x"),
                         REGISTERED)
        box = amp.AmpBox(session=b"42", round=b"1", ranges=b"\x00" * 15)
        out = []
        client._sendBoxCommand(b"ReportMissing", box).addBoth(out.append)
        pump.flush()
        self.assertEqual(out[0].value.errorCode, b"BAD_RANGES")
        self.assertEqual(call(pump, client, commands.Complete, session=42, sha256="SHA"), {})

    def test_operatorCommandsOnlyFromAdminNetworks(self):
        """
        If StartSession comes from outside C{admin_networks}, it is refused
        with L{commands.NotAllowed}; from loopback it starts a session and
        Status returns the scorecard.
        """
        client, server, pump, recorder = self.connect(peer="198.18.0.9")
        call(pump, client, commands.StartSession, image="img").trap(commands.NotAllowed)
        call(pump, client, commands.Status).trap(commands.NotAllowed)
        client, server, pump, recorder = self.connect()
        self.assertEqual(call(pump, client, commands.StartSession, image="img",
                              minReceivers=3)["session"], 42)
        call(pump, client, commands.StartSession, image="../x").trap(commands.NoSuchImage)
        card = call(pump, client, commands.Status)["scorecard"]
        self.assertEqual(card["sessions"][0]["state"], "waiting")


class _NullWriter:
    def writeBatch(self, datagrams):
        return len(datagrams)

    def close(self):
        pass


class ConfigTests(SynchronousTestCase):
    """
    Tests for the C{multicast} section.
    """

    def test_defaultsDisabled(self):
        """
        If nothing is configured, the service is off and listens on
        loopback only.
        """
        c = loadConfig()["imagecast"]
        self.assertFalse(c["enabled"])
        self.assertEqual(c["address"], "127.0.0.1")

    def test_groupMustBeMulticast(self):
        """
        If the group is not a multicast address, the error names the key and
        the line.
        """
        e = self.assertRaises(ConfigError, loadConfig, "p.yaml",
                              text="imagecast:\n  group: 10.0.0.1\n")
        self.assertIn("p.yaml:2", str(e))
        self.assertIn("imagecast.group", str(e))

    def test_tlsNeedsCertificate(self):
        """
        If TLS is enabled without a certificate, the configuration is
        refused.
        """
        e = self.assertRaises(ConfigError, loadConfig, "p.yaml",
                              text="imagecast:\n  tls:\n    enabled: true\n")
        self.assertIn("tls.certificate", str(e))


def _makeCerts(directory):
    """
    Write a CA, a server certificate for C{localhost} and a client
    certificate, all signed by the CA; return their paths.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def build(subject, key, issuer, issuerKey, ca=False, san=None):
        b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(days=1))
             .not_valid_after(now + datetime.timedelta(days=2))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]),
                                critical=False)
        return b.sign(issuerKey, hashes.SHA256())

    def write(path, cert, key=None):
        with open(path, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
            if key is not None:
                f.write(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.TraditionalOpenSSL,
                                          serialization.NoEncryption()))
    caKey = ec.generate_private_key(ec.SECP256R1())
    ca = build("provisioner test CA", caKey, "provisioner test CA", caKey, ca=True)
    srvKey = ec.generate_private_key(ec.SECP256R1())
    srv = build("localhost", srvKey, "provisioner test CA", caKey, san="localhost")
    cliKey = ec.generate_private_key(ec.SECP256R1())
    cli = build("receiver", cliKey, "provisioner test CA", caKey)
    paths = {n: os.path.join(directory, n + ".pem") for n in ("ca", "server", "key", "client")}
    write(paths["ca"], ca)
    write(paths["server"], srv)
    with open(paths["key"], "wb") as f:
        f.write(srvKey.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.TraditionalOpenSSL,
                                     serialization.NoEncryption()))
    write(paths["client"], cli, cliKey)
    return paths


def _abort(proto):
    try:
        proto.transport.abortConnection()
    except Exception:
        pass


class ServiceTests(TestCase):
    """
    The service on real sockets on 127.0.0.1, port 0.
    """

    def setUp(self):
        self.root = self.mktemp()
        os.makedirs(self.root)

    def startService(self, extra=""):
        from twisted.internet import reactor
        appliance = Appliance(_config(self.root, extra), reactor)
        svc = makeService(appliance)
        self.assertIsInstance(svc, ImagecastService)
        svc.privilegedStartService()
        svc.startService()
        self.addCleanup(svc.stopService)
        return svc, svc.server._listening

    @defer.inlineCallbacks
    def _status(self, endpoint):
        proto = yield endpoint.connect(protocol.Factory.forProtocol(amp.AMP))
        self.addCleanup(_abort, proto)
        result = yield proto.callRemote(commands.Status)
        return result["scorecard"]

    @defer.inlineCallbacks
    def test_plain(self):
        """
        If the service runs without TLS, a client on loopback reads the
        scorecard.
        """
        from twisted.internet import reactor
        svc, listening = self.startService()
        port = yield listening
        card = yield self._status(endpoints.TCP4ClientEndpoint(
            reactor, "127.0.0.1", port.getHost().port))
        self.assertEqual(card, {"sessions": [], "receivers": []})

    @defer.inlineCallbacks
    def test_tlsWithClientCertificate(self):
        """
        If TLS with required client certificates is on, a client that
        verifies the server's name and shows a certificate signed by the CA
        gets in; one without a certificate does not.
        """
        from twisted.internet import reactor
        certs = _makeCerts(self._dir())
        svc, listening = self.startService(
            "  tls:\n    enabled: true\n    certificate: %s\n    key: %s\n"
            "    client_ca: %s\n    require_client_certificate: true\n" % (
                certs["server"], certs["key"], certs["ca"]))
        port = yield listening
        portNumber = port.getHost().port
        with open(certs["ca"], "rb") as f:
            ca = ssl.Certificate.loadPEM(f.read())
        with open(certs["client"], "rb") as f:
            client = ssl.PrivateCertificate.loadPEM(f.read())
        good = endpoints.wrapClientTLS(
            ssl.optionsForClientTLS("localhost", trustRoot=ca, clientCertificate=client),
            endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", portNumber))
        card = yield self._status(good)
        self.assertEqual(card["sessions"], [])
        bad = endpoints.wrapClientTLS(
            ssl.optionsForClientTLS("localhost", trustRoot=ca),
            endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", portNumber))
        # the server refuses the handshake: TLS 1.3's certificate_required
        # alert reaches the client's first call
        refused = yield self.assertFailure(self._status(bad), SSL.Error)
        self.assertIn("certificate required", str(refused))
        wrongName = endpoints.wrapClientTLS(
            ssl.optionsForClientTLS("other.example", trustRoot=ca, clientCertificate=client),
            endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", portNumber))
        mismatch = yield self.assertFailure(self._status(wrongName), VerificationError)
        self.assertEqual([type(e) for e in mismatch.errors], [DNSMismatch])
        self.assertEqual(mismatch.errors[0].mismatched_id.hostname, b"other.example")

    def _dir(self):
        d = self.mktemp()
        os.makedirs(d)
        return d
