"""
Tests for L{provisioner.tftp.bootprograms}: the boot programs of
C{tftp.boot_programs} served by name, the root's files first, and the
warning for boot files DHCP hands out that nothing serves.

The unit tests build the TFTP service without binding anything; the
end-to-end ones run C{twistd -n provisioner} (L{tests.netlab.Appliance})
and fetch with tftp-hpa's C{tftp} and with curl on loopback.
"""

import os
import signal
import subprocess

from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from provisioner.appliance import Appliance as ApplianceState
from provisioner.config import loadConfig
from provisioner.errors import FileNotFound
from provisioner.files import DirectoryResolver, FileRequest
from provisioner.interfaces import IFileResolver
from provisioner.tftp import bootprograms
from provisioner.tftp.bootprograms import BOOT_PROGRAMS, BootProgramsResolver
from provisioner.tftp.service import makeService
from tests.fakes import FakeReactor
from tests.netlab import Appliance, requireE2E, waitFor

DEBIAN = "/usr/lib/ipxe"


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _read(source):
    try:
        return source.read(0, source.size + 1)
    finally:
        source.close()


class ResolverTests(SynchronousTestCase):
    """
    L{BootProgramsResolver} on a directory made for the test.
    """

    def setUp(self):
        base = os.path.abspath(self.mktemp())
        self.programs = os.path.join(base, "programs")
        self.root = os.path.join(base, "root")
        os.makedirs(self.root)
        _write(os.path.join(self.programs, "undionly.kpxe"), b"UNDI")
        _write(os.path.join(self.programs, "snponly.efi"), b"SNP")
        _write(os.path.join(self.programs, "ipxe.iso"), b"ISO")
        _write(os.path.join(self.programs, "sub", "undionly.kpxe"), b"SUB")
        _write(os.path.join(base, "secret"), b"SECRET")
        self.directory = DirectoryResolver(self.root, notFoundIsFinal=True)
        self.resolver = BootProgramsResolver(self.programs, shadow=lambda: self.directory)

    def resolve(self, path):
        return self.resolver.resolve(FileRequest(path, ("127.0.0.1", 1000)))

    def test_interface(self):
        """
        If checked, the resolver provides L{IFileResolver}.
        """
        self.assertTrue(verifyObject(IFileResolver, self.resolver))

    def test_named(self):
        """
        If a client asks for a boot program the directory has, it gets the
        file's bytes.
        """
        self.assertEqual(_read(self.resolve("undionly.kpxe")), b"UNDI")
        self.assertEqual(_read(self.resolve("snponly.efi")), b"SNP")

    def test_otherFilesOfTheDirectory(self):
        """
        If a client asks for another file of the directory, a boot program's
        name below a subdirectory, or a path out of it, the resolver has
        nothing (the root, last in the chain, then says not found).
        """
        for path in ("ipxe.iso", "sub/undionly.kpxe", "sub", "secret", "programs/snponly.efi"):
            self.assertIsNone(self.resolve(path), path)

    def test_missingProgram(self):
        """
        If a named program is not in the directory, the resolver has
        nothing.
        """
        self.assertIn("ipxe.efi", BOOT_PROGRAMS)
        self.assertIsNone(self.resolve("ipxe.efi"))

    def test_rootWins(self):
        """
        If the root has a file of the same name, that file is served.
        """
        _write(os.path.join(self.root, "undionly.kpxe"), b"MINE")
        self.assertEqual(_read(self.resolve("undionly.kpxe")), b"MINE")
        self.assertEqual(_read(self.resolve("snponly.efi")), b"SNP")

    def test_has(self):
        """
        L{BootProgramsResolver.has} is true for a named program present in
        the directory only.
        """
        self.assertTrue(self.resolver.has("undionly.kpxe"))
        self.assertFalse(self.resolver.has("ipxe.efi"))
        self.assertFalse(self.resolver.has("ipxe.iso"))

    def test_fromConfig(self):
        """
        If C{boot_programs} is null or empty, there is no resolver;
        otherwise one on that directory.
        """
        self.assertIsNone(bootprograms.fromConfig({"boot_programs": None}))
        self.assertIsNone(bootprograms.fromConfig({"boot_programs": ""}))
        self.assertEqual(bootprograms.fromConfig({"boot_programs": "/x"}).directory, "/x")

    def test_default(self):
        """
        If the configuration does not say, the programs come from Debian's
        C{/usr/lib/ipxe}.
        """
        self.assertEqual(loadConfig(None)["tftp"]["boot_programs"], DEBIAN)


class ServiceTests(SynchronousTestCase):
    """
    The resolver in the TFTP service's chain, and the warning for boot
    files DHCP hands out that nothing serves.
    """

    def setUp(self):
        base = os.path.abspath(self.mktemp())
        self.root = os.path.join(base, "root")
        self.programs = os.path.join(base, "programs")
        for name in ("undionly.kpxe", "snponly.efi", "ipxe-ia32.efi", "ipxe-arm32.efi",
                     "ipxe-arm64.efi"):
            _write(os.path.join(self.programs, name), name.encode())
        self.events = []
        self.log = Logger(observer=self.events.append)

    def service(self, **overrides):
        pairs = [("tftp.root", self.root), ("tftp.boot_programs", self.programs),
                 ("dhcp.address", "127.0.0.1"), ("dhcp.enabled", True),
                 ("dhcp.ipxe_script", "http://example.invalid/boot.ipxe")]
        pairs += [(k.replace("__", "."), v) for k, v in overrides.items()]
        config = loadConfig(None, pairs)
        return makeService(ApplianceState(config, FakeReactor())), config

    def warnings(self, tftp, config):
        del self.events[:]
        bootprograms.warnUnserved(tftp, config, log=self.log)
        return [formatEvent(e) for e in self.events]

    def test_inChain(self):
        """
        If C{tftp.boot_programs} is set, its resolver is last before the
        root; if null, there is none; a reload puts it back last.
        """
        tftp, config = self.service()
        self.assertIs(tftp.resolvers.resolvers[-2], tftp.bootPrograms)
        self.assertEqual(tftp.bootPrograms.directory, self.programs)
        off, _ = self.service(tftp__boot_programs=None)
        self.assertIsNone(off.bootPrograms)
        self.assertNotIn(BootProgramsResolver,
                         [type(r) for r in off.resolvers.resolvers])
        sentinel = object()
        tftp.addResolver(sentinel)
        tftp.reconfigure(config)
        self.assertIs(tftp.resolvers.resolvers[-2], tftp.bootPrograms)

    def test_noWarningWhenServed(self):
        """
        If every boot file DHCP hands out is a boot program or a file of the
        root, nothing is logged.
        """
        tftp, config = self.service(dhcp__boot__uefi_x64="mine.efi")
        _write(os.path.join(self.root, "mine.efi"), b"x")
        self.assertEqual(self.warnings(tftp, config), [])

    def test_warningForMissing(self):
        """
        If DHCP hands out a boot file nothing serves, one warning names the
        file, the architecture and the key.
        """
        tftp, config = self.service(dhcp__boot__uefi_x64="missing.efi")
        lines = self.warnings(tftp, config)
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("missing.efi", lines[0])
        self.assertIn("dhcp.boot.uefi_x64", lines[0])
        self.assertIn("arch 7, 9", lines[0])
        self.assertIn("tftp.boot_programs", lines[0])
        self.assertEqual(self.events[0]["log_level"].name, "warn")

    def test_warningWithoutPrograms(self):
        """
        If C{tftp.boot_programs} is off, the programs it would serve are
        missing boot files.
        """
        tftp, config = self.service(tftp__boot_programs=None)
        lines = self.warnings(tftp, config)
        self.assertEqual(len(lines), 5, lines)
        self.assertTrue(any("undionly.kpxe" in line and "dhcp.boot.bios" in line
                            for line in lines), lines)

    def test_ipxeScriptAndOverrides(self):
        """
        If C{dhcp.ipxe_script} or an override names a TFTP file nothing
        serves, it is warned about; a URL is not.
        """
        tftp, config = self.service(dhcp__ipxe_script="script.ipxe",
                                    dhcp__overrides={"52:54:00:00:00:01": "host.efi"})
        lines = self.warnings(tftp, config)
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("dhcp.ipxe_script", lines[0])
        self.assertIn("dhcp.overrides.52:54:00:00:00:01.boot_file", lines[1])

    def test_noDHCP(self):
        """
        If DHCP is off, nothing is warned about.
        """
        tftp, config = self.service(dhcp__enabled=False, dhcp__boot__bios="missing.kpxe")
        self.assertEqual(self.warnings(tftp, config), [])


_CONFIG = """\
tftp:
  address: 127.0.0.1
  port: 0
  root: {d}/root
  boot_programs: {programs}
dhcp:
  enabled: true
  address: 127.0.0.1
  port: 0
  pxe_port: {pxe}
  boot:
    uefi_x64: {uefi}
menus:
  enabled: true
http:
  enabled: true
  address: 127.0.0.1
  port: 0
  root: {d}/root
"""


def _freePort():
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    try:
        return s.getsockname()[1]
    finally:
        s.close()


class EndToEndTests(TestCase):
    """
    C{twistd -n provisioner} with the boot programs of Debian's C{ipxe}
    package, fetched by tftp-hpa and curl on loopback.
    """

    timeout = 120

    def setUp(self):
        requireE2E(tools=("tftp", "curl", os.path.join(DEBIAN, "undionly.kpxe")))
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.base, "root"))
        self.appliance = Appliance(self.base)
        self.addCleanup(self.appliance.stop)

    def start(self, uefi="snponly.efi", programs=DEBIAN):
        self.appliance.writeConfig(_CONFIG.format(d=self.base, programs=programs,
                                                  pxe=_freePort(), uefi=uefi))
        self.appliance.start()
        self.port = self.appliance.listeningPort("TFTP")
        self.httpPort = self.appliance.listeningPort("HTTP")

    def tftp(self, name):
        """
        Fetch C{name} with tftp-hpa; return its bytes, or L{None} and the
        client's output when it failed.
        """
        out = os.path.join(self.base, "fetched")
        if os.path.exists(out):
            os.remove(out)
        proc = subprocess.run(["tftp", "127.0.0.1", str(self.port), "-m", "binary",
                               "-c", "get", name, out], cwd=self.base, timeout=60,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        text = proc.stdout.decode(errors="replace")
        if "Error" in text or "rror code" in text or not os.path.exists(out):
            return None, text
        with open(out, "rb") as f:
            return f.read(), text

    def expected(self, name):
        with open(os.path.join(DEBIAN, name), "rb") as f:
            return f.read()

    def test_servesDebianPrograms(self):
        """
        If the TFTP root is empty, tftp-hpa gets undionly.kpxe and
        snponly.efi with the bytes of Debian's files, and curl gets
        undionly.kpxe over HTTP (http.root is the TFTP root).
        """
        self.start()
        for name in ("undionly.kpxe", "snponly.efi"):
            data, text = self.tftp(name)
            self.assertEqual(data, self.expected(name), text)
        out = os.path.join(self.base, "http.kpxe")
        code = subprocess.run(["curl", "-s", "-o", out, "-w", "%{http_code}",
                               "http://127.0.0.1:%d/undionly.kpxe" % (self.httpPort,)],
                              stdout=subprocess.PIPE, timeout=60).stdout.decode()
        self.assertEqual(code, "200")
        with open(out, "rb") as f:
            self.assertEqual(f.read(), self.expected("undionly.kpxe"))

    def test_rootWins(self):
        """
        If the TFTP root has its own undionly.kpxe, that one is served.
        """
        _write(os.path.join(self.base, "root", "undionly.kpxe"), b"the operator's own")
        self.start()
        data, text = self.tftp("undionly.kpxe")
        self.assertEqual(data, b"the operator's own", text)

    def test_refused(self):
        """
        If a client asks for a path out of the root towards the directory,
        or for a file of the directory that is not a boot program, it gets
        an error and no file.
        """
        self.start()
        names = ["../undionly.kpxe", "../../../../usr/lib/ipxe/undionly.kpxe", "ipxe.iso",
                 "qemu/pxe-e1000.rom", "/usr/lib/ipxe/undionly.kpxe"]
        names = [n for n in names if not n.endswith("ipxe.iso")
                 or os.path.exists(os.path.join(DEBIAN, "ipxe.iso"))]
        for name in names:
            data, text = self.tftp(name)
            self.assertIsNone(data, name)
            self.assertIn("Error code", text, name)

    def test_warning(self):
        """
        If DHCP hands out a boot file nothing serves, the log has one
        warning naming it, its architecture and its key, at start and again
        after a reload; a boot file that is served is not warned about, nor
        are any once the missing one is served.
        """
        self.start(uefi="missing.efi")
        log = self.appliance.log()
        lines = [line for line in log.splitlines() if "missing.efi" in line]
        self.assertEqual(len(lines), 1, log[-3000:])
        self.assertIn("dhcp.boot.uefi_x64", lines[0])
        self.assertIn("uefi_x64 (arch 7, 9)", lines[0])
        self.assertNotIn("undionly.kpxe (dhcp.boot.bios", log)
        offset = len(log)
        self.appliance.signal(signal.SIGHUP)
        self.appliance.waitLog("configuration reloaded", after=offset)
        again = [line for line in self.appliance.log()[offset:].splitlines()
                 if "missing.efi" in line]
        self.assertEqual(len(again), 1, again)
        _write(os.path.join(self.base, "root", "missing.efi"), b"now here")
        offset = len(self.appliance.log())
        self.appliance.signal(signal.SIGHUP)
        self.appliance.waitLog("configuration reloaded", after=offset)
        self.assertNotIn("missing.efi", self.appliance.log()[offset:])
        self.assertTrue(waitFor(lambda: self.appliance.process.poll() is None, 1))
