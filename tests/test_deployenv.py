# -*- test-case-name: tests.test_deployenv -*-
"""
Tests of the deploy environment (L{provisioner.deployenv}), without QEMU:

  - the pure parts: the load order's topological sort, the cpio writer and
    reader, the command's output directory;
  - the real build, made once per test run (SLOW the first time on a host:
    it downloads about 60 Debian packages, 100 MB with the kernel, into
    L{CACHE}, reused by later runs; then about 20 s, mostly the bytecode),
    as root with apt: the C{.modinfo} parser on the kernel package's own
    modules, the initramfs's contents and their order, then the initramfs
    unpacked and entered with C{chroot} (root): the Python runtime runs
    C{provisioner receive}, the C{/init}'s shell functions run in busybox
    sh, and (in network namespaces) the receiver of the initramfs receives
    an image that the appliance multicasts.

Without root (or apt-get, or namespaces) they skip, or fail under
C{PROVISIONER_REQUIRE_E2E=1} (L{tests.netlab.requireE2E}).
"""

import gzip
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from provisioner.deployenv import build as B
from provisioner.deployenv import cli as deploycli
from provisioner.deployenv import elf, kmodules
from tests.netlab import REPO, requireE2E

#: the packages downloaded by the build (shared with C{provisioner deployenv
#: build}'s default, so that an appliance host downloads them once)
CACHE = os.environ.get("PROVISIONER_DEPLOYENV_CACHE") or B.DEFAULT_CACHE
#: where the test run's build is written (made again by every test run:
#: a stale one would test old code)
OUTPUT = os.environ.get("PROVISIONER_DEPLOYENV_OUTPUT") or \
    "/var/cache/provisioner-tests/deployenv"

_built = {}


def built():
    """
    The test run's build: C{(manifest, output directory)}, made at the
    first call (SLOW: see the module's docstring).
    """
    requireE2E(root=True, tools=("apt-get", "apt-cache", "dpkg-deb", "chroot"))
    if "manifest" not in _built:
        if "error" in _built:
            raise AssertionError("the build failed: %s" % (_built["error"],))
        try:
            _built["manifest"] = B.build(OUTPUT, cache=CACHE)
        except B.BuildError as e:
            _built["error"] = str(e)
            raise
    return _built["manifest"], OUTPUT


def archive():
    """
    The entries of the built initramfs: C{{path: (mode, bytes)}}, and their
    order.
    """
    if "entries" not in _built:
        manifest, output = built()
        with open(os.path.join(output, "initrd.gz"), "rb") as f:
            entries = B.readCpio(gzip.decompress(f.read()))
        _built["entries"] = entries
    entries = _built["entries"]
    return {p: (m, d) for p, m, d in entries}, [p for p, _, _ in entries]


def unpacked():
    """
    The built initramfs unpacked into a directory (once per run), with
    busybox's applets installed as C{/init} installs them.
    """
    if "root" not in _built:
        files, order = archive()
        root = tempfile.mkdtemp(prefix="deployenv-root-")
        for path in order:
            mode, data = files[path]
            target = os.path.join(root, path)
            if stat.S_ISDIR(mode):
                os.makedirs(target, exist_ok=True)
            elif stat.S_ISLNK(mode):
                os.symlink(data.decode(), target)
            else:
                with open(target, "wb") as f:
                    f.write(data)
                os.chmod(target, mode & 0o7777)
        for d in ("usr/sbin", "sbin"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        subprocess.run(["chroot", root, "/bin/busybox", "--install", "-s"], check=True)
        _built["root"] = root
    return _built["root"]


def inChroot(argv, **kw):
    """
    Run C{argv} in the unpacked initramfs.

    @return: the L{subprocess.CompletedProcess} (text).
    """
    return subprocess.run(["chroot", unpacked()] + list(argv), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=120, **kw)


def shell(script, env=None):
    """
    Run C{script} in busybox sh in the unpacked initramfs, after sourcing
    the C{/init}'s functions.

    @return: its standard output.
    """
    out = inChroot(["/bin/busybox", "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"] +
                   ["%s=%s" % kv for kv in sorted((env or {}).items())] +
                   ["/bin/busybox", "sh", "-c", ". /lib/deployenv/functions.sh\n" + script])
    if out.returncode != 0:
        raise AssertionError("busybox sh failed (%d): %s%s" % (out.returncode, out.stdout,
                                                               out.stderr))
    return out.stdout


def kernelModules():
    """
    The unpacked kernel package's C{lib/modules/RELEASE} of the build.
    """
    manifest, _ = built()
    path = os.path.join(CACHE, "unpacked", manifest["kernel"]["package"], "lib", "modules",
                        manifest["kernel"]["release"])
    if not os.path.isdir(path):
        raise AssertionError("the kernel package is not unpacked in %s" % (path,))
    return path


class LoadOrderTests(SynchronousTestCase):
    """
    L{kmodules.loadOrder}: dependencies first.
    """

    def depsOf(self, table):
        return lambda name: table.get(name)

    def test_dependenciesFirst(self):
        """
        If modules depend on others (a diamond, shared dependencies), each
        comes after every module it depends on, once, in the order of the
        wanted list and then of names.
        """
        table = {"virtio_net": (["virtio", "virtio_ring", "net_failover"], []),
                 "virtio": (["virtio_ring"], []), "virtio_ring": ([], []),
                 "net_failover": (["failover"], []), "failover": ([], []),
                 "virtio_blk": (["virtio", "virtio_ring"], [])}
        self.assertEqual(kmodules.loadOrder(["virtio_net", "virtio_blk"], self.depsOf(table)),
                         ["failover", "net_failover", "virtio_ring", "virtio", "virtio_net",
                          "virtio_blk"])

    def test_dashesAreUnderscores(self):
        """
        If a module is named with dashes (C{nvme-core}, as in C{depends=}),
        it is the module with underscores.
        """
        table = {"nvme": (["nvme_core"], []), "nvme_core": (["t10_pi"], []),
                 "t10_pi": ([], [])}
        self.assertEqual(kmodules.loadOrder(["nvme"], self.depsOf(table)),
                         ["t10_pi", "nvme_core", "nvme"])
        self.assertEqual(kmodules.moduleName("kernel/drivers/nvme/host/nvme-core.ko.xz"),
                         "nvme_core")
        self.assertEqual(kmodules.dependencies({"depends": ["scsi_mod,t10-pi"]}),
                         (["scsi_mod", "t10_pi"], []))

    def test_builtinAndMissing(self):
        """
        If a dependency is built into the kernel it is left out; if it is
        neither a file nor built in, the error names it and who needs it.
        """
        table = {"sd_mod": (["scsi_mod", "crc_t10dif"], [])}
        self.assertEqual(kmodules.loadOrder(["sd_mod"], self.depsOf(table),
                                            builtin={"scsi_mod", "crc_t10dif"}), ["sd_mod"])
        e = self.assertRaises(kmodules.ModuleError, kmodules.loadOrder, ["sd_mod"],
                              self.depsOf(table), {"scsi_mod"})
        self.assertIn("crc_t10dif (needed by sd_mod)", str(e))

    def test_softDependencies(self):
        """
        If a module has a C{softdep=} C{pre:} module, it is loaded first when
        the kernel package has it, and skipped when it has not.
        """
        info = {"softdep": ["pre: crc32c post: other"]}
        self.assertEqual(kmodules.dependencies(info), ([], ["crc32c"]))
        table = {"libcrc32c": ([], ["crc32c", "absent"]), "crc32c": ([], [])}
        self.assertEqual(kmodules.loadOrder(["libcrc32c"], self.depsOf(table)),
                         ["crc32c", "libcrc32c"])

    def test_cycle(self):
        """
        If dependencies form a cycle, the error names it.
        """
        table = {"a": (["b"], []), "b": (["c"], []), "c": (["a"], [])}
        e = self.assertRaises(kmodules.ModuleError, kmodules.loadOrder, ["a"],
                              self.depsOf(table))
        self.assertIn("a -> b -> c -> a", str(e))


class ParserTests(SynchronousTestCase):
    """
    The pure readers: C{.modinfo} strings, cpio, C{apt-cache} output.
    """

    def test_modinfoStrings(self):
        """
        If a C{.modinfo} section holds NUL-separated C{key=value} strings
        (with padding), they are read in order, repeated keys kept.
        """
        body = b"alias=pci:v1\0alias=pci:v2\0\0\0depends=virtio,virtio_ring\0name=x\0"
        self.assertEqual(elf.parseModinfo(body), {
            "alias": ["pci:v1", "pci:v2"], "depends": ["virtio,virtio_ring"], "name": ["x"]})

    def test_notELF(self):
        """
        If the bytes are not a 64-bit ELF file, or are cut short, ELFError.
        """
        self.assertRaises(elf.ELFError, elf.sections, b"#!/bin/sh\n" + b"\0" * 100)
        self.assertRaises(elf.ELFError, elf.sections, b"\x7fELF\x01\x01" + b"\0" * 100)
        with open("/bin/sh", "rb") as f:
            data = f.read()
        self.assertIn(".dynamic", elf.sections(data))
        self.assertRaises(elf.ELFError, elf.sections, data[:len(data) // 2])
        self.assertRaises(elf.ELFError, elf.modinfo, data)

    def test_neededOfAProgram(self):
        """
        If a dynamic program is read, its C{DT_NEEDED} names the C library.
        """
        with open(os.path.realpath("/bin/sh"), "rb") as f:
            names, soname = elf.needed(f.read())
        self.assertIn("libc.so.6", names)
        self.assertIsNone(soname)

    def test_cpioRoundTrip(self):
        """
        If files are packed, the archive is C{newc} with directories before
        their contents (parents added by the selection), and reads back.
        """
        sel = B.Selection(B.Tree([]))
        sel.addBytes("usr/bin/python3", stat.S_IFLNK | 0o777, b"python3.11")
        sel.addBytes("init", stat.S_IFREG | 0o755, b"#!/bin/sh\n")
        sel.addBytes("lib/modules/a.ko", stat.S_IFREG | 0o644, b"x" * 5)
        data = B.cpioArchive(sel.files)
        self.assertEqual(data[:6], b"070701")
        self.assertEqual(len(data) % 4, 0)
        entries = B.readCpio(data)
        self.assertEqual([p for p, _, _ in entries],
                         ["init", "lib", "lib/modules", "lib/modules/a.ko", "usr", "usr/bin",
                          "usr/bin/python3"])
        self.assertEqual(entries[0][1:], (stat.S_IFREG | 0o755, b"#!/bin/sh\n"))
        self.assertEqual(entries[6][1:], (stat.S_IFLNK | 0o777, b"python3.11"))
        self.assertTrue(stat.S_ISDIR(entries[1][1]))
        self.assertRaises(ValueError, B.readCpio, data[:-120])

    def test_closureOutput(self):
        """
        If C{apt-cache depends --recurse} lists virtual packages, other
        architectures' and skipped ones, only real packages are kept, once.
        """
        text = ("python3-twisted\n  Depends: python3-attr\n  Depends: <python3:any>\n"
                "python3-attr\n<python3:any>\nlibc6:i386\nperl-base\npython3-attr\n")
        self.assertEqual(B.parseClosure(text), ["python3-twisted", "python3-attr"])


class OutputDirectoryTests(SynchronousTestCase):
    """
    Where C{provisioner deployenv build} writes.
    """

    def parse(self, argv):
        from provisioner.cli import buildParser
        return buildParser().parse_args(["deployenv", "build"] + argv)

    def test_config(self):
        """
        If C{--config} names a configuration, the environment goes to
        C{deployenv/} of its C{images.directory}; C{--images-dir} and
        C{--output} take precedence.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("images:\n  directory: /srv/images\n")
        self.assertEqual(deploycli.outputDirectory(self.parse(["--config", path])),
                         "/srv/images/deployenv")
        self.assertEqual(deploycli.outputDirectory(self.parse(
            ["--config", path, "--images-dir", "/x"])), "/x/deployenv")
        self.assertEqual(deploycli.outputDirectory(self.parse(
            ["--config", path, "--output", "/y"])), "/y")
        self.assertEqual(self.parse([]).cache, B.DEFAULT_CACHE)

    def test_badConfig(self):
        """
        If the configuration is wrong, the command says so on one line and
        exits 2 without building.
        """
        import io
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("images:\n  directroy: /srv/images\n")
        err = io.StringIO()
        self.assertEqual(deploycli._build(self.parse(["--config", path]), io.StringIO(), err),
                         2)
        self.assertIn("directroy", err.getvalue())


class BuiltModulesTests(SynchronousTestCase):
    """
    The kernel modules of the build, read from the kernel package's own
    files (root and apt; SLOW at the first build).
    """

    def test_modinfoOfRealModules(self):
        """
        If the C{.modinfo} of Debian's modules is read, C{virtio} depends on
        C{virtio_ring}, C{virtio_net} on both and on C{net_failover}, and
        C{nvme} on C{nvme-core}.
        """
        index = kmodules.moduleIndex(kernelModules())

        def deps(name):
            return kmodules.dependencies(elf.modinfo(elf.readModule(index[name])))[0]
        self.assertEqual(deps("virtio"), ["virtio_ring"])
        self.assertEqual(sorted(deps("virtio_net")), ["net_failover", "virtio", "virtio_ring"])
        self.assertEqual(deps("nvme"), ["nvme_core"])
        info = elf.modinfo(elf.readModule(index["virtio_net"]))
        self.assertEqual(info["name"], ["virtio_net"])
        self.assertTrue(info["vermagic"][0].startswith(
            built()[0]["kernel"]["release"] + " "))

    def test_orderInTheArchive(self):
        """
        If the initramfs's C{deployenv.order} is read, it holds every module
        the build asked for and each after all it depends on (as their
        C{.modinfo} says, read again from the archive's own files), and
        every one is in the archive.
        """
        files, _ = archive()
        order = files["lib/modules/deployenv.order"][1].decode().split()
        self.assertEqual(order, built()[0]["modules"])
        names = [kmodules.moduleName(f) for f in order]
        for wanted in B.MODULES:
            self.assertIn(wanted, names)
        self.assertLess(names.index("virtio_ring"), names.index("virtio"))
        for position, f in enumerate(order):
            info = elf.modinfo(files["lib/modules/" + f][1])
            for dep in kmodules.dependencies(info)[0]:
                self.assertIn(dep, names[:position], "%s before %s" % (dep, f))


class ArchiveTests(SynchronousTestCase):
    """
    What the built initramfs holds (root and apt; SLOW at the first build).
    """

    def test_written(self):
        """
        If the environment is built, the output has Debian's kernel, a
        gzip'd initramfs and the manifest, whose sizes are the files'.
        """
        manifest, output = built()
        with open(os.path.join(output, "vmlinuz"), "rb") as f:
            kernel = f.read()
        self.assertEqual(kernel[0x202:0x206], b"HdrS")  # a bzImage
        self.assertEqual(len(kernel), manifest["kernel"]["size"])
        with open(os.path.join(output, "initrd.gz"), "rb") as f:
            compressed = f.read()
        self.assertEqual(compressed[:2], b"\x1f\x8b")
        self.assertEqual(len(compressed), manifest["initrd"]["compressed"])
        self.assertEqual(len(gzip.decompress(compressed)), manifest["initrd"]["size"])
        with open(os.path.join(output, "manifest.json")) as f:
            self.assertEqual(json.load(f), manifest)

    def test_contents(self):
        """
        If the initramfs is read, it has an executable C{/init} (busybox sh,
        the package's C{init.sh}), busybox, Python and the dynamic loader,
        and no tests, docs or bytecode caches of the sources' own.
        """
        files, order = archive()
        mode, data = files["init"]
        self.assertTrue(mode & 0o100)
        self.assertEqual(data.decode(), B.shellFile("init.sh"))
        self.assertTrue(data.startswith(b"#!/bin/busybox sh\n"))
        self.assertEqual(files["lib/deployenv/functions.sh"][1].decode(),
                         B.shellFile("functions.sh"))
        self.assertEqual(files["bin/busybox"][1][:4], b"\x7fELF")
        self.assertEqual(files["usr/bin/python3"], (stat.S_IFLNK | 0o777, b"python3.11"))
        self.assertIn("lib64/ld-linux-x86-64.so.2", files)
        self.assertIn("usr/lib/python3/dist-packages/twisted/protocols/amp.py", files)
        for path in files:
            parts = path.split("/")
            self.assertFalse(set(parts) & {"test", "tests", "idlelib", "conch", "share"}, path)
        for path in order:
            parent = os.path.dirname(path)
            if parent:
                self.assertLess(order.index(parent), order.index(path))

    def test_receiverOfThisTree(self):
        """
        If the initramfs is read, its provisioner modules are those of this
        tree that C{provisioner receive} loads, byte for byte: the client
        package, the codecs it imports, the command line; not the appliance.
        """
        files, _ = archive()
        base = "usr/lib/python3/dist-packages/"
        shipped = sorted(p[len(base):] for p in files
                         if p.startswith(base + "provisioner/") and p.endswith(".py"))
        self.assertIn("provisioner/client/receivecli.py", shipped)
        self.assertIn("provisioner/imagecast/datagram.py", shipped)
        self.assertIn("provisioner/cli.py", shipped)
        for rel in shipped:
            with open(os.path.join(REPO, rel), "rb") as f:
                self.assertEqual(files[base + rel][1], f.read(), rel)
        for absent in ("provisioner/tap.py", "provisioner/imagecast/service.py",
                       "provisioner/deployenv/build.py", "provisioner/images/cli.py",
                       "provisioner/web/__init__.py", "provisioner/dhcp/wire.py"):
            self.assertNotIn(absent, shipped)


class ChrootTests(SynchronousTestCase):
    """
    The initramfs's Python runtime, run with C{chroot} (root; SLOW at the
    first build).
    """

    def test_receiveHelp(self):
        """
        If C{python3 -m provisioner.cli receive --help} runs in the
        initramfs, it prints the receiver's usage, and the appliance's
        commands are not there.
        """
        out = inChroot(["/usr/bin/python3", "-m", "provisioner.cli", "receive", "--help"])
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("usage: provisioner receive", out.stdout)
        self.assertIn("--secret-file", out.stdout)
        out = inChroot(["/usr/bin/python3", "-m", "provisioner.cli", "--help"])
        self.assertIn("receive", out.stdout)
        self.assertNotIn("imagecast", out.stdout)
        self.assertNotIn("deployenv", out.stdout)

    def test_importReceiver(self):
        """
        If every provisioner module of the initramfs, the receiver's TLS and
        the reactor are imported there, they load (the runtime is
        complete: libraries, OpenSSL's providers, the standard library),
        with the Debian Python of the initramfs.
        """
        script = (
            "import importlib, os, sys\n"
            "import provisioner.client.receivecli\n"
            "base = '/usr/lib/python3/dist-packages'\n"
            "for d, _, fs in os.walk(base + '/provisioner'):\n"
            "    for f in fs:\n"
            "        if f.endswith('.py') and f != '__main__.py':\n"
            "            rel = os.path.relpath(os.path.join(d, f), base)[:-3]\n"
            "            importlib.import_module(rel.replace('/', '.').replace('.__init__', ''))\n"
            "from twisted.internet import ssl, epollreactor\n"
            "from OpenSSL import SSL\n"
            "import service_identity, hashlib, ssl as stdssl\n"
            "ssl.CertificateOptions().getContext()\n"
            "print(sys.executable, sys.version_info[:2], len(sys.modules))\n")
        out = inChroot(["/usr/bin/python3", "-c", script])
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("/usr/bin/python3 (3, 11)", out.stdout)


class ShellTests(SynchronousTestCase):
    """
    The C{/init}'s functions (C{functions.sh}) in busybox sh in the
    initramfs (root; SLOW at the first build).
    """

    def test_cmdline(self):
        """
        If the kernel command line has C{provisioner.*} words among others,
        C{readCmdline} sets the orders, with defaults for what it lacks.
        """
        out = shell(
            "echo 'BOOT_IMAGE=vmlinuz console=ttyS0 provisioner.token=T0k provisioner.callback="
            "http://198.18.0.1:8080/api/v1/hosts/web01/callback provisioner.image=debian.img "
            "provisioner.disk=/dev/vda provisioner.imagecast=198.18.0.2:7100 "
            "provisioner.receive=--timeout,30' > /tmp/cmdline\n"
            "readCmdline /tmp/cmdline\n"
            "echo \"$token|$callback|$image|$disk|$(imagecastServer)|$(imagecastPort)|"
            "$onfailure|$progress|$(hostName \"$callback\")\"\n"
            "receiveCommand\n"
            "echo 'provisioner.callback=http://198.18.0.1:8080/api/v1/hosts/db2/callback "
            "provisioner.disk=/dev/sda' > /tmp/cmdline\n"
            "readCmdline /tmp/cmdline\n"
            "echo \"[$token|$image|$(imagecastServer)|$(imagecastPort)]\"\n"
            "receiveCommand\n")
        lines = out.splitlines()
        self.assertEqual(lines[0], "T0k|http://198.18.0.1:8080/api/v1/hosts/web01/callback|"
                                   "debian.img|/dev/vda|198.18.0.2|7100|shell|30|web01")
        self.assertEqual(lines[1].split(), [
            "python3", "-m", "provisioner.cli", "receive", "--server", "198.18.0.2",
            "--port", "7100", "--output", "/dev/vda", "--image", "debian.img",
            "--id", "web01:/dev/vda", "--state", "/tmp/receive.state", "--quiet", "--json",
            "--timeout", "30"])
        self.assertEqual(lines[2], "[||198.18.0.1|]")
        self.assertEqual(lines[3].split(), [
            "python3", "-m", "provisioner.cli", "receive", "--server", "198.18.0.1",
            "--output", "/dev/sda", "--id", "db2:/dev/sda", "--state", "/tmp/receive.state",
            "--quiet", "--json"])

    def test_loadModules(self):
        """
        If C{loadModules} runs, it loads every module of C{deployenv.order},
        in that order, from C{/lib/modules}.
        """
        out = shell("loadModules", {"INSMOD": "echo"})
        files, _ = archive()
        order = files["lib/modules/deployenv.order"][1].decode().split()
        self.assertEqual(out.split(), ["/lib/modules/" + m for m in order])
        out = shell("loadModules", {"INSMOD": "false"})
        self.assertIn("DEPLOYENV module virtio_ring.ko not loaded", out)

    def test_interfaceAndDisk(self):
        """
        If sysfs shows interfaces (lo, one without carrier, one with) and
        block devices (a CD-ROM, an empty disk, a disk), the first interface
        with a link and the first disk with a size are chosen; none with a
        link is a failure.
        """
        sysfs = os.path.join(unpacked(), "tmp", "fakesys")
        shutil.rmtree(sysfs, ignore_errors=True)
        self.addCleanup(shutil.rmtree, sysfs, True)
        for name, carrier in (("lo", "1"), ("eth0", "0"), ("eth1", "1")):
            os.makedirs(os.path.join(sysfs, "class/net", name))
            with open(os.path.join(sysfs, "class/net", name, "carrier"), "w") as f:
                f.write(carrier + "\n")
        for name, size in (("sr0", "2048"), ("vda", "0"), ("vdb", "409600")):
            os.makedirs(os.path.join(sysfs, "block", name))
            with open(os.path.join(sysfs, "block", name, "size"), "w") as f:
                f.write(size + "\n")
        env = {"DE_SYS": "/tmp/fakesys"}
        self.assertEqual(shell("interfaces", env).split(), ["eth0", "eth1"])
        self.assertEqual(shell("firstLinkInterface 1", env), "eth1\n")
        self.assertEqual(shell("firstDisk", env), "/dev/vdb\n")
        with open(os.path.join(sysfs, "class/net/eth1/carrier"), "w") as f:
            f.write("0\n")
        self.assertEqual(shell("firstLinkInterface 1 || echo none", env), "none\n")

    def test_report(self):
        """
        If C{report} runs, it POSTs token, state and the message (form
        encoded) to the callback URL with wget and says whether it was
        accepted; without a token it posts nothing.
        """
        wget = os.path.join(unpacked(), "tmp", "fakewget")
        with open(wget, "w") as f:
            f.write("#!/bin/sh\necho \"$@\" >> /tmp/wget.args\n[ ! -e /tmp/wget.fail ]\n")
        os.chmod(wget, 0o755)
        args = os.path.join(unpacked(), "tmp", "wget.args")
        for path in (args, os.path.join(unpacked(), "tmp", "wget.fail")):
            if os.path.exists(path):
                os.remove(path)
        out = shell("token=T callback=http://h:8080/api/v1/hosts/a/callback\n"
                    "report deploying 'receiving a&b=c 100% done?'\n"
                    "touch /tmp/wget.fail\nreport failed 'disk gone' || echo status=$?\n"
                    "token=\nreport deployed || echo status=$?\n",
                    {"DE_WGET": "/tmp/fakewget"})
        self.assertEqual(out.splitlines(), [
            "DEPLOYENV callback state=deploying ok", "DEPLOYENV callback state=failed refused",
            "status=1",
            "DEPLOYENV callback state=deployed skipped (no provisioner.callback or "
            "provisioner.token)", "status=1"])
        with open(args) as f:
            calls = f.read().splitlines()
        self.assertEqual(calls, [
            "-q -O /tmp/callback.answer --post-data token=T&state=deploying&message="
            "receiving+a%26b%3Dc+100%25+done%3F http://h:8080/api/v1/hosts/a/callback",
            "-q -O /tmp/callback.answer --post-data token=T&state=failed&message="
            "disk+gone http://h:8080/api/v1/hosts/a/callback"])


class ReceiveTests(SynchronousTestCase):
    """
    The initramfs's receiver against the appliance, in network namespaces
    (root; SLOW at the first build).
    """

    def test_receiveInTheEnvironment(self):
        """
        If the appliance multicasts an image and the initramfs (in its own
        namespace, by C{chroot}) runs the receiver its C{/init} would run
        (C{receiveCommand} from a kernel command line, C{writeSecret}), the
        image arrives byte for byte and the receiver exits 0.
        """
        built()
        from tests.test_imagecast_e2e import MulticastLab
        lab = MulticastLab(self, receivers=1, size=3 << 20)
        host = lab.lab.hosts[1]
        root = unpacked()
        secretArgs = lab.secretArgs("rx1")
        with open(secretArgs[1]) as f:
            secret = f.read().strip()
        disk = os.path.join(root, "tmp", "disk.img")
        if os.path.exists(disk):
            os.remove(disk)
        with open(os.path.join(root, "tmp", "cmdline"), "w") as f:
            f.write("console=ttyS0 provisioner.imagecast=%s provisioner.disk=/tmp/disk.img "
                    "provisioner.id=rx1 provisioner.secret=%s provisioner.image=disk.img "
                    "provisioner.receive=--timeout,30\n" % (lab.sender.ip, secret))
        script = (". /lib/deployenv/functions.sh\nreadCmdline /tmp/cmdline\nwriteSecret\n"
                  "receiveCommand >&2\nexec $(receiveCommand)\n")
        receiver = host.popen(["chroot", root, "/bin/busybox", "env", "-i",
                               "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "/bin/sh", "-c", script],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        sender, session = lab.send(1)
        status, card, err = lab.finish(sender)
        out, rerr = receiver.communicate(timeout=120)
        self.assertEqual(receiver.returncode, 0, rerr.decode()[-3000:])
        self.assertIn("--secret-file /tmp/imagecast.secret", rerr.decode())
        summary = json.loads(out.decode().strip().splitlines()[-1])
        self.assertEqual((summary["status"], summary["size"]), ("ok", 3 << 20), summary)
        with open(disk, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), lab.sha256)
        self.assertEqual(status, 0, err[-2000:])
