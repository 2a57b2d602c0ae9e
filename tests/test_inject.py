# -*- test-case-name: tests.test_inject -*-
"""
Tests for L{provisioner.tftp.inject}: the bootstrap-program injector.
"""

import os

from twisted.internet import task
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from provisioner.directory import ClientDirectory
from provisioner.config import ConfigError
from provisioner.files import DirectoryResolver, FileRequest, ResolverChain
from provisioner.interfaces import IDataSource, IFileResolver
from provisioner.tftp.inject import BootstrapInjector, injectorFromConfig

PROGRAM = b"FACILITY" * 1000
REAL = b"REAL BOOT FILE" * 500
IP = "198.18.0.5"


def _request(path="pxelinux.0", client=None, ip=IP, **options):
    return FileRequest(path, (ip, 2070), options=options, client=client)


def _readAll(source, blksize=512):
    out = []
    offset = 0
    while True:
        chunk = source.read(offset, blksize)
        out.append(chunk)
        offset += len(chunk)
        if len(chunk) < blksize:
            break
    return b"".join(out)


class InjectorTests(SynchronousTestCase):
    """
    L{BootstrapInjector}.
    """

    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.program = os.path.join(self.dir, "undionly.kpxe")
        with open(self.program, "wb") as f:
            f.write(PROGRAM)
        root = os.path.join(self.dir, "root")
        os.makedirs(root)
        with open(os.path.join(root, "pxelinux.0"), "wb") as f:
            f.write(REAL)
        self.clock = task.Clock()
        self.clock.advance(1000)
        self.clients = ClientDirectory(clock=self.clock.seconds)
        self.injector = BootstrapInjector({"/pxelinux.0": self.program}, self.clients,
                                          self.clock, holdoff=300)
        self.chain = ResolverChain([self.injector, DirectoryResolver(root, True)])
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def fetch(self, request):
        source = self.successResultOf(self.chain.resolve(request))
        data = _readAll(source)
        source.close()
        return data

    def reasons(self):
        return [e.get("reason") for e in self.events if "reason" in e]

    def test_interface(self):
        """
        If the injector is checked against L{IFileResolver}, it provides it,
        and what it serves provides L{IDataSource}.
        """
        verifyObject(IFileResolver, self.injector)
        verifyObject(IDataSource, self.injector.resolve(_request()))

    def test_plainRequestInjected(self):
        """
        If a client asks for a configured boot file without windowsize (a
        PXE ROM, curl, atftp), it gets the bootstrap program, and the
        decision is logged with its reason.
        """
        self.assertEqual(self.fetch(_request(blksize="1432", tsize="0")), PROGRAM)
        self.assertEqual(self.injector.decisions[-1][2], True)
        self.assertIn("no windowed client and not iPXE", self.reasons())

    def test_otherFilesUntouched(self):
        """
        If the file is not a configured boot file, the injector passes.
        """
        self.assertIsNone(self.injector.resolve(_request("other.bin")))
        self.assertEqual(self.injector.decisions, [])

    def test_windowsizeGetsFile(self):
        """
        If the request carries windowsize (EDK2 asks 4), the real file is
        served.
        """
        self.assertEqual(self.fetch(_request(windowsize="4", blksize="1468")), REAL)
        self.assertIn("the request carries windowsize (a windowed client)", self.reasons())

    def test_adaptiveGetsFile(self):
        """
        If the request carries the adaptive option (the facility itself), the
        real file is served.
        """
        self.assertEqual(self.fetch(_request(adaptive="1")), REAL)

    def test_msftwindowGetsFile(self):
        """
        If the request carries msftwindow (bootmgr), the real file is served.
        """
        self.assertEqual(self.fetch(_request(windowsize="4", msftwindow="31416")), REAL)

    def test_iPXEByIP(self):
        """
        If DHCP recorded the client as iPXE (found by IP), it gets the real
        file even without windowsize (iPXE asks blksize 1432 and tsize only).
        """
        self.clients.update(mac="02:18:00:00:00:05", ip=IP, ipxe=True)
        self.assertEqual(self.fetch(_request(blksize="1432", tsize="0")), REAL)
        self.assertIn("DHCP saw this client as iPXE", self.reasons())

    def test_iPXEByRecord(self):
        """
        If the server attached the client's record and it is iPXE, the real
        file is served.
        """
        record = self.clients.update(mac="02:18:00:00:00:06", ipxe=True)
        self.assertEqual(self.fetch(_request(client=record, ip="198.18.0.6")), REAL)

    def test_notTwiceWithinHoldoff(self):
        """
        If the program was delivered to a client, a second plain request
        within the holdoff gets the real file; after the holdoff it is
        injected again.
        """
        self.assertEqual(self.fetch(_request()), PROGRAM)
        self.clock.advance(10)
        self.assertEqual(self.fetch(_request()), REAL)
        self.assertTrue(any("delivered 10s ago" in r for r in self.reasons()))
        self.assertEqual(self.clients.byIP(IP).injected, 1000)
        self.clock.advance(300)
        self.assertEqual(self.fetch(_request()), PROGRAM)

    def test_otherClientStillInjected(self):
        """
        If the program was delivered to one client, another client is still
        injected.
        """
        self.fetch(_request())
        self.assertEqual(self.fetch(_request(ip="198.18.0.99")), PROGRAM)

    def test_tsizeProbeNotCounted(self):
        """
        If a ROM's tsize probe resolves the file but reads nothing, its
        following real request is injected too.
        """
        probe = self.successResultOf(self.chain.resolve(_request(tsize="0")))
        self.assertEqual(probe.size, len(PROGRAM))
        probe.close()
        self.assertEqual(self.fetch(_request(blksize="1432")), PROGRAM)

    def test_missingProgram(self):
        """
        If the program cannot be opened, the real file is served and the
        reason logged.
        """
        os.unlink(self.program)
        self.assertEqual(self.fetch(_request()), REAL)
        self.assertTrue(any(r.startswith("cannot open") for r in self.reasons()))


class ConfigTests(SynchronousTestCase):
    """
    L{injectorFromConfig}.
    """

    class Appliance:
        clients = None
        reactor = task.Clock()

    def test_disabled(self):
        """
        If the section is disabled, there is no injector.
        """
        self.assertIsNone(injectorFromConfig({"enabled": False}, self.Appliance()))

    def test_missingProgram(self):
        """
        If a configured program does not exist, L{ConfigError} names the key.
        """
        section = {"enabled": True, "programs": {"pxelinux.0": "/nonexistent/x.kpxe"},
                   "holdoff": 1.0, "facility_options": ["windowsize"]}
        e = self.assertRaises(ConfigError, injectorFromConfig, section, self.Appliance())
        self.assertIn("tftp.injector.programs.pxelinux.0", str(e))

    def test_built(self):
        """
        If the section is enabled with a readable program, an injector is
        built with its settings.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"x")
        section = {"enabled": True, "programs": {"pxelinux.0": path},
                   "holdoff": 5.0, "facility_options": ["windowsize"]}
        injector = injectorFromConfig(section, self.Appliance())
        self.assertEqual(injector.programs, {"pxelinux.0": path})
        self.assertEqual(injector.holdoff, 5.0)
