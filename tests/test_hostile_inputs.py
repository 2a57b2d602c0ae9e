# -*- test-case-name: tests.test_hostile_inputs -*-
"""
Regression tests for issue 14, finding 9 (uploads and the API): what one
unauthenticated peer on the provisioning network could do, each test
failing on the code before the fix.

  - TFTP uploads: a total quota on the upload directory, a per-client
    limit of uploads in flight, and over-long names answered with an ERROR
    and one info line (no critical traceback);
  - the configuration: an upload directory equal to, inside or above a
    served root is an error at load time;
  - the JSON API: no inventory variable that C{http.api_vars} does not
    name, no absolute host path;
  - DHCP: a relay address (giaddr) that is a subnet's network or broadcast
    address is ignored.
"""

import json
import os

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from provisioner.appliance import Appliance
from provisioner.config import ConfigError, loadConfig
from provisioner.directory import ClientDirectory
from provisioner.dhcp import wire as dhcpwire
from provisioner.dhcp.leases import LeaseStore
from provisioner.dhcp.server import DHCPResponder, InterfaceInfo
from provisioner.dhcp.wire import OPT, DHCPPacket
from provisioner.files import DirectoryResolver, ResolverChain
from provisioner.menus.service import MenuService
from provisioner.tftp import wire
from provisioner.tftp.server import TFTPServer
from provisioner.tftp.service import _uploads
from provisioner.web.api import APIResource
from tests.fakes import FakeDatagramPort, FakeReactor

MiB = 1 << 20


class _LogLevels:
    """
    Records the level and format of every event logged while a test runs.
    """

    def __init__(self, case):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        case.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def at(self, *levels):
        return [e.get("log_format") for e in self.events if e.get("log_level") in levels]


class _UploadServer:
    """
    A TFTP dispatcher with uploads on, over fake ports, configured like the
    tftp service does it (L{provisioner.tftp.service._uploads}).
    """

    def __init__(self, case, **write):
        self.root = case.mktemp()
        os.makedirs(self.root)
        self.updir = os.path.abspath(case.mktemp())
        overrides = [("tftp.mtu", 0), ("tftp.root", self.root),
                     ("tftp.write.enabled", True), ("tftp.write.directory", self.updir)]
        overrides += [("tftp.write." + k, v) for k, v in write.items()]
        self.config = loadConfig(None, overrides)["tftp"]
        self.reactor = FakeReactor()
        self.server = TFTPServer(ResolverChain([DirectoryResolver(self.root, True)]),
                                 self.config, self.reactor, uploads=_uploads(self.config))
        self.listen = FakeDatagramPort(self.server)
        self.server.makeConnection(self.listen)

    def wrq(self, name, peer, options=(), datagram=None):
        """
        Send a WRQ (or C{datagram}); return the session's port, or the
        ERROR sent from the listen port.
        """
        before = len(self.reactor.ports)
        if datagram is None:
            datagram = wire.WriteRequest(name, "octet", list(options)).to_wire()
        self.server.datagramReceived(datagram, peer)
        if len(self.reactor.ports) > before:
            return self.reactor.ports[-1]
        [(error, address)] = self.listen.packets()
        self.assertAddress(address, peer)
        return error

    def assertAddress(self, address, peer):
        if tuple(address) != tuple(peer):
            raise AssertionError("ERROR went to %r, not %r" % (address, peer))

    def upload(self, name, size, peer, blksize=32768):
        """
        Upload C{size} bytes; return the last packet the client got.
        """
        port = self.wrq(name, peer, [("blksize", str(blksize))])
        if isinstance(port, wire.Error):
            return port
        block, sent = 1, 0
        while True:
            chunk = min(blksize, size - sent)
            port.protocol.datagramReceived(wire.encodeData(block, b"u" * chunk), peer)
            sent += chunk
            block += 1
            if chunk < blksize:
                break
        return port.packets()[-1][0]


class UploadLimitTests(SynchronousTestCase):
    """
    A client cannot fill the disk or hold every upload slot.
    """

    def test_totalQuota(self):
        """
        If 40 uploads of 1 MiB each come one after the other with
        C{max_bytes} 1 MiB and C{max_total_bytes} 8 MiB, the first eight are
        stored and the ninth and later get ERROR 3 (disk full), each with
        one info line; no ninth file appears.
        """
        levels = _LogLevels(self)
        lab = _UploadServer(self, max_bytes=MiB, max_total_bytes=8 * MiB)
        answers = [lab.upload(("file%02d" % (i,)).encode(), MiB, ("198.18.0.%d" % (i + 1,), 2000))
                   for i in range(40)]
        self.assertEqual(answers[:8], [wire.Ack(33)] * 8)
        for answer in answers[8:]:
            self.assertIsInstance(answer, wire.Error)
            self.assertEqual(answer.code, wire.ERR_DISK_FULL)
        self.assertEqual(sorted(os.listdir(lab.updir)), ["file%02d" % (i,) for i in range(8)])
        self.assertEqual(len([f for f in levels.at(LogLevel.info)
                              if f.startswith("refused upload")]), 32)
        self.assertEqual(levels.at(LogLevel.warn, LogLevel.error, LogLevel.critical), [])

    def test_quotaCountsUploadsInFlight(self):
        """
        If two uploads run at once, the bytes of both count: the one whose
        block would pass the quota gets ERROR 3 and leaves nothing behind.
        """
        lab = _UploadServer(self, max_total_bytes=MiB + 1000)
        a, b = ("198.18.0.1", 2000), ("198.18.0.2", 2000)
        portA = lab.wrq(b"a", a, [("blksize", "32768")])
        portB = lab.wrq(b"b", b, [("blksize", "32768")])
        for block in range(1, 17):
            portA.protocol.datagramReceived(wire.encodeData(block, b"a" * 32768), a)
        portB.protocol.datagramReceived(wire.encodeData(1, b"b" * 32768), b)
        for block in range(17, 33):
            portA.protocol.datagramReceived(wire.encodeData(block, b"a" * 32768), a)
        self.assertEqual(portB.packets()[-1][0], wire.Ack(1))
        error = portA.packets()[-1][0]
        self.assertEqual(error.code, wire.ERR_DISK_FULL)
        self.assertEqual([n for n in os.listdir(lab.updir) if "a" in n.split(".")], [])

    def test_perClientConcurrency(self):
        """
        If one address starts a third upload while two are in flight, it
        gets ERROR 2 (access violation) from the listen port; another
        address is still served, and once one of the two ends the first
        address may upload again.
        """
        lab = _UploadServer(self)
        host = "198.18.0.66"
        first = lab.wrq(b"one", (host, 1001))
        second = lab.wrq(b"two", (host, 1002))
        self.assertEqual(first.packets()[0][0], wire.Ack(0))
        self.assertEqual(second.packets()[0][0], wire.Ack(0))
        third = lab.wrq(b"three", (host, 1003))
        self.assertIsInstance(third, wire.Error)
        self.assertEqual(third.code, wire.ERR_ACCESS_VIOLATION)
        other = lab.wrq(b"other", ("198.18.0.67", 1001))
        self.assertNotIsInstance(other, wire.Error)
        first.protocol.datagramReceived(wire.encodeData(1, b"done"), (host, 1001))
        again = lab.wrq(b"again", (host, 1004))
        self.assertNotIsInstance(again, wire.Error)

    def test_stalledUploadsBounded(self):
        """
        If one address opens 64 uploads and sends nothing, only
        C{max_per_client} of them hold a session.
        """
        lab = _UploadServer(self)
        answers = [lab.wrq(("stall%d" % (i,)).encode(), ("198.18.0.9", 3000 + i))
                   for i in range(64)]
        held = [a for a in answers if not isinstance(a, wire.Error)]
        self.assertEqual(len(held), 2)
        self.assertEqual(len(lab.server.sessions), 2)


class UploadNameTests(SynchronousTestCase):
    """
    Names and options a client controls get an ERROR and one quiet line,
    never a traceback.
    """

    def assertQuiet(self, levels):
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(levels.at(LogLevel.warn, LogLevel.error, LogLevel.critical), [])

    def test_longName(self):
        """
        If a WRQ names a 1,024-byte file, the client gets ERROR 2, one line
        is logged at info and nothing at a higher level; nothing is created.
        """
        levels = _LogLevels(self)
        lab = _UploadServer(self)
        error = lab.wrq(b"a" * 1024, ("198.18.0.5", 4000))
        self.assertEqual(error.code, wire.ERR_ACCESS_VIOLATION)
        self.assertQuiet(levels)
        self.assertEqual(len(levels.at(LogLevel.info)), 1)
        self.assertEqual(os.listdir(lab.updir), [])

    def test_otherLongNames(self):
        """
        If a name has a component too long for the file system (in bytes,
        also with multi-byte characters), or the whole name is over the
        limit, the client gets ERROR 2 and nothing is logged above info.
        """
        levels = _LogLevels(self)
        lab = _UploadServer(self)
        names = [b"b" * 300, "\u00e9".encode("utf-8") * 200, b"c/" * 600,
                 b"d" * 2000, b"x" * 241]
        for i, name in enumerate(names):
            error = lab.wrq(name, ("198.18.0.5", 4100 + i))
            self.assertEqual(error.code, wire.ERR_ACCESS_VIOLATION, name[:20])
        self.assertQuiet(levels)
        self.assertEqual(len(levels.at(LogLevel.info)), len(names))

    def test_nonASCIIDigitOption(self):
        """
        If an option value is a latin-1 superscript digit (C{str.isdigit}
        but not C{int}), the option is ignored and the upload starts, with
        no traceback.
        """
        levels = _LogLevels(self)
        lab = _UploadServer(self)
        port = lab.wrq(None, ("198.18.0.5", 4200),
                       datagram=b"\x00\x02sup.txt\x00octet\x00blksize\x00\xb2\x00")
        self.assertEqual(port.packets()[0][0], wire.Ack(0))
        self.assertQuiet(levels)

    def test_nonASCIIDigitOptionRead(self):
        """
        The same option on an RRQ is ignored too: the file is served.
        """
        levels = _LogLevels(self)
        lab = _UploadServer(self)
        with open(os.path.join(lab.root, "f"), "wb") as f:
            f.write(b"data")
        lab.server.fastLane = False
        lab.server.datagramReceived(b"\x00\x01f\x00octet\x00blksize\x00\xb3\x00",
                                    ("198.18.0.5", 4300))
        self.assertEqual(lab.listen.packets(), [])
        self.assertEqual(lab.reactor.ports[-1].packets()[0][0], wire.Data(1, b"data"))
        self.assertQuiet(levels)


class ServedRootTests(SynchronousTestCase):
    """
    The upload directory can never be a served directory.
    """

    def assertRefused(self, text):
        error = self.assertRaises(ConfigError, loadConfig, "provisioner.yaml", text=text)
        self.assertEqual(error.key, "tftp.write.directory")
        self.assertIn("tftp.write.directory", str(error))
        self.assertEqual(len(str(error).splitlines()), 1)
        return str(error)

    def test_equalToTFTPRoot(self):
        """
        If C{tftp.write.directory} is C{tftp.root}, loading fails with one
        line naming both keys (and the file and line of the key).
        """
        message = self.assertRefused(
            "tftp:\n  root: /srv/tftp\n  write:\n    enabled: true\n"
            "    directory: /srv/tftp\n")
        self.assertIn("tftp.root", message)
        self.assertTrue(message.startswith("provisioner.yaml:5: "), message)

    def test_insideTFTPRoot(self):
        """
        If C{tftp.write.directory} is below C{tftp.root} (where
        C{pxelinux.cfg/} lives), loading fails naming both keys; so does a
        directory that contains the root.
        """
        self.assertIn("tftp.root", self.assertRefused(
            "tftp:\n  root: /srv/tftp\n  write:\n    enabled: true\n"
            "    directory: /srv/tftp/pxelinux.cfg\n"))
        self.assertIn("tftp.root", self.assertRefused(
            "tftp:\n  root: /srv/tftp\n  write:\n    enabled: true\n    directory: /srv\n"))

    def test_otherServedRoots(self):
        """
        The HTTP root, the images directory, the imagecast root and the
        menus templates are served roots too.
        """
        for key, text in [
                ("http.root", "http:\n  root: /srv/www\n"),
                ("images.directory", "images:\n  directory: /srv/www\n"),
                ("imagecast.root", "imagecast:\n  root: /srv/www\n"),
                ("menus.templates", "menus:\n  templates: /srv/www\n")]:
            message = self.assertRefused(
                text + "tftp:\n  write:\n    enabled: true\n    directory: /srv/www/up\n")
            self.assertIn(key, message)

    def test_commandLine(self):
        """
        If the overlap comes from a command-line override, the error says so.
        """
        error = self.assertRaises(ConfigError, loadConfig, None, [
            ("tftp.root", "/srv/tftp"), ("tftp.write.enabled", True),
            ("tftp.write.directory", "/srv/tftp/")])
        self.assertTrue(str(error).startswith("command line: tftp.write.directory: "))

    def test_separateOrDisabled(self):
        """
        A separate upload directory loads; so does an overlapping one while
        uploads are off.
        """
        loadConfig(None, [("tftp.root", "/srv/tftp"), ("tftp.write.enabled", True),
                          ("tftp.write.directory", "/srv/tftp-upload")])
        loadConfig(None, [("tftp.root", "/srv/tftp"), ("tftp.write.directory", "/srv/tftp")])


SECRET_INVENTORY = """\
defaults:
  vars: {console: ttyS0, root_password: default-secret}
groups:
  racks:
    vars: {rack: 7, bmc_password: group-secret}
profiles:
  rescue:
    kernel: rescue/vmlinuz
    vars: {role: rescue, api_token: profile-secret}
hosts:
  alpha:
    mac: 52:54:00:00:00:01
    groups: [racks]
    profile: rescue
    vars: {root_password: host-secret, role: web}
"""

SECRETS = ("default-secret", "group-secret", "profile-secret", "host-secret", "menus-secret")


class _Catalog:
    """
    The part of the image catalogue the API reads.
    """

    directory = "/srv/provisioner/private-images"
    prefix = "images"
    generation = 3

    def asList(self):
        return [{"name": "debian/linux", "size": 3, "sha256": "ab" * 32, "mtime": 1.0,
                 "kind": "kernel"}]

    def get(self, name):
        return None


class APITests(SynchronousTestCase):
    """
    The JSON API shows no inventory secret and no host path.
    """

    def setUp(self):
        path = os.path.join(self.mktemp())
        os.makedirs(path)
        inventory = os.path.join(path, "inventory.yaml")
        with open(inventory, "w") as f:
            f.write(SECRET_INVENTORY)
        config = loadConfig(overrides=[
            ("menus.enabled", True), ("inventory.enabled", True),
            ("inventory.file", inventory), ("menus.http_url", "http://198.18.0.1:8080"),
            ("menus.vars", {"ipxe_password": "menus-secret"}),
            ("http.api_vars", ["console", "role"])])
        self.appliance = Appliance(config, task.Clock())
        self.menus = MenuService(self.appliance, watch=False)
        self.menus.startService()
        self.addCleanup(self.menus.stopService)
        self.api = APIResource(self.appliance, config["http"]["api_vars"])

    def get(self, *parts):
        request = DummyRequest([p.encode() for p in parts])
        body = self.api.render_GET(request)
        self.assertEqual(request.responseCode or 200, 200, body)
        return body.decode("utf-8"), json.loads(body)

    def test_inventoryVars(self):
        """
        If a variable is not in C{http.api_vars}, it is absent from
        C{/api/v1/inventory}, C{/api/v1/hosts} and C{/api/v1/hosts/NAME}
        (by name and by MAC); the variables it names are shown.
        """
        for parts in (("inventory",), ("hosts",), ("hosts", "alpha"),
                      ("hosts", "52-54-00-00-00-01")):
            body, data = self.get(*parts)
            for secret in SECRETS:
                self.assertNotIn(secret, body, parts)
            for name in ("root_password", "bmc_password", "api_token", "ipxe_password"):
                self.assertNotIn(name, body, parts)
        body, data = self.get("inventory")
        self.assertEqual(data["hosts"]["alpha"]["vars"], {"role": "web"})
        self.assertEqual(data["defaults"]["vars"], {"console": "ttyS0"})
        body, data = self.get("hosts", "alpha")
        self.assertEqual(data["inventory"]["vars"], {"console": "ttyS0", "role": "web"})

    def test_nothingByDefault(self):
        """
        With C{http.api_vars} at its default (empty), no variable is shown.
        """
        self.api.apiVars = frozenset(loadConfig()["http"]["api_vars"])
        body, data = self.get("inventory")
        self.assertEqual(data["hosts"]["alpha"]["vars"], {})
        self.assertNotIn("ttyS0", body)

    def test_imagesWithoutPaths(self):
        """
        C{/api/v1/images} gives names, sizes and hashes but never the
        absolute path of the images directory.
        """
        self.appliance.catalog = _Catalog()
        body, data = self.get("images")
        self.assertNotIn(_Catalog.directory, body)
        self.assertEqual(data["images"][0]["name"], "debian/linux")
        self.assertEqual(data["images"][0]["sha256"], "ab" * 32)

        def strings(value):
            if isinstance(value, dict):
                for v in value.values():
                    yield from strings(v)
            elif isinstance(value, list):
                for v in value:
                    yield from strings(v)
            elif isinstance(value, str):
                yield value
        self.assertEqual([s for s in strings(data) if s.startswith("/")], [])


RELAYED = """\
dhcp:
  mode: full
  subnets:
    - network: 198.18.0.0/24
      range: [198.18.0.100, 198.18.0.102]
    - network: 198.18.7.0/24
      range: [198.18.7.10, 198.18.7.20]
"""



class APILogNamespaceTests(SynchronousTestCase):
    """
    The JSON API's lines, and those of its hosts endpoints
    (L{provisioner.web.hostsapi}), keep their namespace.
    """

    def test_logNamespace(self):
        """
        If the API logs (a refused admin action, a read that fails, a
        change that fails), every line carries the namespace it had before
        the API was split out of C{provisioner.web.resources}, with the API
        resource as source.
        """
        class Lifecycle:
            def isAdmin(self, address, local=None):
                return False

            def callback(self, *args):
                raise RuntimeError("broken book")

        class Clients:
            def __iter__(self):
                raise RuntimeError("broken directory")
        appliance = Appliance(loadConfig(), task.Clock())
        appliance.hosts = Lifecycle()
        appliance.clients = Clients()
        api = APIResource(appliance)
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        client = IPv4Address("TCP", "198.18.0.50", 40000)
        request = DummyRequest([b"hosts", b"alpha", b"redeploy"])
        request.client = client
        self.assertEqual(json.loads(api.render_POST(request))["error"],
                         "redeploy is not allowed from 198.18.0.50 (see hosts.admin_networks)")
        request = DummyRequest([b"clients"])
        request.path = b"/api/v1/clients"
        api.render_GET(request)
        self.assertEqual(request.responseCode, 500)
        request = DummyRequest([b"hosts", b"alpha", b"callback"])
        request.client = client
        request.path = b"/api/v1/hosts/alpha/callback"
        request._disconnected = False
        request.args = {b"token": [b"t"], b"state": [b"deployed"]}
        self.assertEqual(api.render_POST(request), NOT_DONE_YET)
        self.assertEqual(request.responseCode, 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        self.assertEqual(
            [(e["log_namespace"], e["log_format"], e["log_source"]) for e in events],
            [("provisioner.web.resources.APIResource", "hosts: {action} of {what} from "
              "{peer} refused: not in hosts.admin_networks", api)] +
            [("provisioner.web.resources.APIResource", "JSON API {path} failed", api)] * 2)

class RelayTests(SynchronousTestCase):
    """
    A relay address must be a host of a configured subnet.
    """

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1000)
        leases = LeaseStore(os.path.join(self.mktemp(), "l.sqlite"), self.clock)
        self.addCleanup(leases.close)
        self.responder = DHCPResponder(loadConfig(text=RELAYED)["dhcp"], self.clock,
                                       ClientDirectory(clock=self.clock.seconds), leases)
        self.iface = InterfaceInfo("eth0", "198.18.0.1", "198.18.0.0/24")

    def discover(self, giaddr):
        packet = DHCPPacket(op=dhcpwire.BOOTREQUEST, xid=0x99, chaddr=b"\x52\x54\x00\x00\x07\x01",
                            giaddr=giaddr)
        packet.setOption(OPT.MESSAGE_TYPE, bytes((dhcpwire.DHCPDISCOVER,)))
        sent = []
        self.responder.handleDHCP(DHCPPacket.from_wire(packet.to_wire()), self.iface,
                                  lambda reply, address: sent.append(address))
        return sent

    def test_broadcastGiaddr(self):
        """
        If giaddr is a subnet's broadcast or network address, nothing is
        sent (a reply would go to the whole remote segment) and one line is
        logged at debug; a host address of that subnet is answered.
        """
        levels = _LogLevels(self)
        self.assertEqual(self.discover("198.18.7.255"), [])
        self.assertEqual(self.discover("198.18.7.0"), [])
        self.assertEqual(levels.at(LogLevel.debug), [
            "{kind} from {mac} via relay {giaddr} ignored: {problem}"] * 2)
        self.assertEqual(levels.at(LogLevel.info, LogLevel.warn, LogLevel.error,
                                   LogLevel.critical), [])
        self.assertEqual(self.responder.stats["bad-giaddr"], 2)
        self.assertEqual(self.discover("198.18.7.1"), [("198.18.7.1", 67)])

    def test_notAHost(self):
        """
        If giaddr is outside every subnet, or not a unicast address at all,
        nothing is sent.
        """
        for giaddr in ("10.9.9.1", "255.255.255.255", "239.1.1.1", "127.0.0.1"):
            self.assertEqual(self.discover(giaddr), [], giaddr)
