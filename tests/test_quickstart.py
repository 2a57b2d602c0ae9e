# -*- test-case-name: tests.test_quickstart -*-
"""
C{docs/quickstart.md}, run as it is written.

The page marks what the test takes from it, each marker an HTML comment
before a fenced block::

    <!-- quickstart: file NAME [MODE] -->   a file, written under NAME
    <!-- quickstart: download [MODE] -->    commands that download: not run
                                            (no network here); each
                                            C{curl -o PATH} target is made,
                                            the other commands run
    <!-- quickstart: run [MODE] -->         commands run in the directory
    <!-- quickstart: start [MODE] -->       the command starting the
                                            appliance, run in the background
    <!-- quickstart: log [MODE] -->         lines its log must show
    <!-- quickstart: client [MODE] -->      commands run on another machine
                                            of the network

MODE is C{proxy} or C{full}; a block without one is for both. L{steps}
reads them at test time, so the page cannot drift from what is tested.

The end-to-end tests run each mode in network namespaces
(L{tests.netlab.NetLab}) on 198.18.160.0/24: the appliance's host has
C{eth0} with 198.18.160.1 (as the page says), the client host the MAC of
the page's inventory host; in proxy mode the client has a static address
(the site's DHCP server would give it one), in full mode it asks
provisioner (busybox udhcpc, the page's command). The commands run with
the tree's code (C{PYTHONPATH}) and this interpreter's C{bin} first on
C{PATH} (C{provisioner}, C{twistd}). No QEMU: C{tests/test_boot_qemu.py}
boots the VMs.
"""

import os
import re
import shlex
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase, TestCase

from provisioner.config import loadConfig
from provisioner.menus.inventory import parseInventory
from tests.netlab import REPO, NetLab, requireE2E, waitFor

QUICKSTART = os.path.join(REPO, "docs", "quickstart.md")
MODES = ("proxy", "full")
KINDS = ("file", "download", "run", "start", "log", "client")

_STEP = re.compile(
    r"<!--\s*quickstart:\s*(?P<kind>\w+)(?P<args>[^>]*?)\s*-->[ \t]*\n"
    r"```[^\n]*\n(?P<text>.*?)^```[ \t]*$", re.S | re.M)
_MARKER = re.compile(r"<!--\s*quickstart:")


class Step:
    """
    One marked block.

    @ivar kind: one of L{KINDS}.
    @ivar name: the file name (C{file}), else L{None}.
    @ivar mode: C{proxy}, C{full}, or L{None} (both).
    @ivar text: the block.
    """

    def __init__(self, kind, name, mode, text):
        self.kind = kind
        self.name = name
        self.mode = mode
        self.text = text

    def __repr__(self):
        return "<Step %s %s %s>" % (self.kind, self.name or "", self.mode or "both")


def steps(text=None, mode=None):
    """
    The marked blocks of the page, in order.

    @param text: the markdown (default: C{docs/quickstart.md}).
    @param mode: only the steps of this mode (and of both), or L{None}.
    @raise ValueError: a marker with no block after it, an unknown kind or
        mode.
    """
    if text is None:
        with open(QUICKSTART) as f:
            text = f.read()
    out = []
    for match in _STEP.finditer(text):
        kind = match.group("kind")
        args = match.group("args").split()
        if kind not in KINDS:
            raise ValueError("unknown quickstart block kind %r" % (kind,))
        name = args.pop(0) if kind == "file" and args else None
        stepMode = args.pop(0) if args else None
        if stepMode not in (None,) + MODES or args:
            raise ValueError("bad quickstart marker %r" % (match.group(0).splitlines()[0],))
        out.append(Step(kind, name, stepMode, match.group("text")))
    if len(_MARKER.findall(text)) != len(out):
        raise ValueError("a quickstart marker without a fenced block after it")
    if mode is not None:
        out = [s for s in out if s.mode in (None, mode)]
    return out


def downloads(text):
    """
    The files a download block's C{curl -o PATH} commands make.
    """
    out = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if not words or words[0] != "curl":
            continue
        for i, word in enumerate(words):
            if word.startswith("-") and not word.startswith("--") and word.endswith("o"):
                out.append(words[i + 1])
    return out


class PageTests(SynchronousTestCase):
    """
    The page itself: its markers, files and links.
    """

    def test_parse(self):
        """
        Markers are read with their kind, name and mode; a marker without a
        block is an error.
        """
        page = ("<!-- quickstart: file a.yaml full -->\n```yaml\nx: 1\n```\n"
                "<!-- quickstart: run -->\n```sh\necho hi\n```\n")
        self.assertEqual([(s.kind, s.name, s.mode, s.text) for s in steps(page)],
                         [("file", "a.yaml", "full", "x: 1\n"), ("run", None, None, "echo hi\n")])
        self.assertEqual([s.kind for s in steps(page, "proxy")], ["run"])
        self.assertRaises(ValueError, steps, "<!-- quickstart: run -->\ntext\n")
        self.assertRaises(ValueError, steps, "<!-- quickstart: dance -->\n```\nx\n```\n")

    def test_downloads(self):
        """
        The targets of a download block's curl commands are found.
        """
        self.assertEqual(downloads("mkdir -p a\ncurl -fLo a/b $u/b\ncurl -s -o c http://x\n"),
                         ["a/b", "c"])

    def test_everyModeComplete(self):
        """
        Each mode has a configuration, the inventory, a check, a render, a
        start, log lines and a client.
        """
        for mode in MODES:
            found = steps(mode=mode)
            files = [s.name for s in found if s.kind == "file"]
            self.assertEqual(sorted(files), ["inventory.yaml", "provisioner.yaml"], mode)
            runs = "\n".join(s.text for s in found if s.kind == "run")
            self.assertIn("provisioner check provisioner.yaml", runs)
            self.assertIn("provisioner render", runs)
            for kind in ("download", "start", "log", "client"):
                self.assertTrue([s for s in found if s.kind == kind], (mode, kind))

    def test_filesValid(self):
        """
        Each mode's configuration and the inventory load; the network is
        198.18.160.0/24 on eth0.
        """
        for mode in MODES:
            files = {s.name: s.text for s in steps(mode=mode) if s.kind == "file"}
            config = loadConfig("provisioner.yaml", text=files["provisioner.yaml"])
            self.assertEqual((config["dhcp"]["mode"], config["dhcp"]["interfaces"]),
                             (mode, ["eth0"]))
            self.assertEqual(config["http"]["address"], "198.18.160.1")
            inventory = parseInventory(files["inventory.yaml"])
            self.assertEqual(inventory.hosts["vm1"].macs, ["52:54:00:12:34:56"])

    def test_linked(self):
        """
        README's "Two commands" section and the operator's guide link the
        page; the page names the test that boots a real VM.
        """
        with open(os.path.join(REPO, "README.md")) as f:
            readme = f.read()
        section = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
        self.assertIn("docs/quickstart.md", section)
        with open(os.path.join(REPO, "docs", "operator-guide.md")) as f:
            self.assertIn("(quickstart.md)", f.read())
        with open(QUICKSTART) as f:
            self.assertIn("tests/test_boot_qemu.py", f.read())


class _QuickstartBed:
    """
    Run the page's steps of one mode in a lab.
    """

    mode = None
    SERVER = "198.18.160.1"
    CLIENT = "198.18.160.2"

    def setUp(self):
        requireE2E(netns=True, tools=["tftp", "curl", "busybox", "/usr/lib/ipxe/undionly.kpxe"])
        self.lab = NetLab(hosts=2, subnet=160, addresses=False)
        self.addCleanup(self.lab.close)
        self.server, self.client = self.lab.hosts
        self.server.run(["ip", "addr", "add", self.SERVER + "/24", "dev", "eth0"])
        inventory = [s for s in steps(mode=self.mode) if s.name == "inventory.yaml"][0]
        mac = parseInventory(inventory.text).hosts["vm1"].macs[0]
        self.client.run(["ip", "link", "set", "eth0", "address", mac])
        if self.mode == "proxy":
            self.client.run(["ip", "addr", "add", self.CLIENT + "/24", "dev", "eth0"])
        self.directory = os.path.abspath(self.mktemp())
        self.clientDirectory = os.path.join(self.directory, "client")
        os.makedirs(self.clientDirectory)
        self.env = dict(os.environ, PYTHONPATH=REPO,
                        PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
        self.logPath = os.path.join(self.directory, "twistd.log")
        self.outputs = []

    def shell(self, host, text, cwd):
        """
        Run a block's commands with bash (stopping at the first failure).
        """
        result = host.run(["bash", "-euo", "pipefail", "-c", text], check=False, cwd=cwd,
                          env=self.env, timeout=120)
        output = result.stdout.decode(errors="replace")
        if result.returncode != 0:
            raise AssertionError("%r failed (%d):\n%s\nlog:\n%s" % (
                text, result.returncode, output, self.log()[-3000:]))
        self.outputs.append((text, output))
        return output

    def log(self):
        try:
            with open(self.logPath, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def start(self, text):
        """
        Start the appliance as the block says, in the background, and wait
        until it says it started.
        """
        out = open(self.logPath, "wb")
        self.addCleanup(out.close)
        self.server.popen(["bash", "-c", "exec " + text.strip()], cwd=self.directory,
                          env=self.env, stdout=out, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL)
        started = waitFor(lambda: "provisioner started" in self.log(), 60)
        self.assertTrue(started, self.log()[-3000:])
        self.assertTrue(waitFor(lambda: "image catalogue ready" in self.log(), 60),
                        self.log()[-3000:])

    def runPage(self):
        """
        Every step of this mode, in the order of the page.

        @return: C{{kind: [output of each block]}}.
        """
        outputs = {}
        logLines = []
        for step in steps(mode=self.mode):
            if step.kind == "file":
                with open(os.path.join(self.directory, step.name), "w") as f:
                    f.write(step.text)
            elif step.kind == "download":
                kept = "\n".join(line for line in step.text.splitlines()
                                 if not line.strip().startswith("curl "))
                self.shell(self.server, kept, self.directory)
                for target in downloads(step.text):
                    with open(os.path.join(self.directory, target), "wb") as f:
                        f.write(os.urandom(1 << 20))
            elif step.kind == "run":
                outputs.setdefault("run", []).append(
                    self.shell(self.server, step.text, self.directory))
            elif step.kind == "start":
                self.start(step.text)
            elif step.kind == "log":
                logLines.extend(line for line in step.text.splitlines() if line.strip())
            elif step.kind == "client":
                outputs.setdefault("client", []).append(
                    self.shell(self.client, step.text, self.clientDirectory))
        log = self.log()
        self.assertEqual([line for line in logLines if line not in log], [], log[-4000:])
        return outputs

    def test_page(self):
        """
        The page's commands, run as written: check says ok, render prints
        vm1's menu with the kernel's URL, the appliance starts and logs
        what the page says, and a client on the network gets vm1's menu
        over HTTP (and over TFTP, in full mode after its DHCP).
        """
        outputs = self.runPage()
        check, render = outputs["run"]
        self.assertRegex(check.splitlines()[-1],
                         r"^provisioner\.yaml: ok \(0 errors, \d+ warnings?; 1 inventory host, "
                         r"\d+ menus rendered\)$")
        kernel = "kernel http://198.18.160.1:8080/images/debian/linux console=ttyS0"
        self.assertIn(kernel, render)
        self.assertIn("# provisioner: vm1 (52:54:00:12:34:56), bios", render)
        client = outputs["client"][-1]
        menu = client.split("#!ipxe")
        self.assertEqual(len(menu), 3, client)
        tftpMenu, httpMenu = menu[1], menu[2]
        self.assertIn(kernel, httpMenu)
        self.checkTFTPMenu(tftpMenu, kernel)

    def checkTFTPMenu(self, menu, kernel):
        raise NotImplementedError()


class ProxyQuickstartTests(_QuickstartBed, TestCase):
    """
    C{docs/quickstart.md} in proxy mode.
    """

    mode = "proxy"

    def checkTFTPMenu(self, menu, kernel):
        # provisioner saw no DHCP of this client: the menu asks again with
        # the MAC in the path
        self.assertIn("chain http://198.18.160.1:8080/menus/${mac:hexhyp}/boot.ipxe", menu)


class FullQuickstartTests(_QuickstartBed, TestCase):
    """
    C{docs/quickstart.md} in full mode: the client's DHCP is answered by
    provisioner, with vm1's reservation.
    """

    mode = "full"

    def checkTFTPMenu(self, menu, kernel):
        self.assertIn(kernel, menu)
        self.assertIn("boot decision: 52:54:00:12:34:56 arch=0", self.log())
        self.assertIn("198.18.160.50", self.log())
