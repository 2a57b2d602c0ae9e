# -*- test-case-name: tests.test_check -*-
"""
Tests for L{provisioner.check} (C{provisioner check}, alias
C{check-config}), C{provisioner render}'s exit status on a broken
template, and the command line's broken pipes and help texts.

Network safety: the configurations name 127.0.0.1, C{lo} and addresses of
198.18.0.0/15 only; nothing is bound (the check only reads C{/proc}).
Most cases run through L{provisioner.check.run} with this host's
interfaces and addresses stood in for (C{lo}; 127.0.0.1 and ::1); a few
run the real command in a subprocess, on this host's real tables.
"""

import argparse
import io
import os
import subprocess
import sys
import textwrap

from twisted.trial.unittest import SynchronousTestCase

from provisioner import check, cli
from provisioner.check import Problem, Report, hostAddresses, loadInventoryCollecting

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: this host as the function-run cases see it
INTERFACES = frozenset(["lo"])
ADDRESSES = frozenset(["127.0.0.1", "::1"])

#: a configuration with every check's subject on, and nothing wrong (the
#: boot files DHCP hands out are warnings when no ipxe package is there,
#: so they are blanked, or named in the TFTP root)
BASE = """\
tftp:
  address: 127.0.0.1
  port: 6969
  root: tftpboot
  boot_programs: null
dhcp:
  enabled: true
  mode: full
  interfaces: [lo]
  address: 127.0.0.1
  boot:
    bios: undionly.kpxe
    uefi_x64: snponly.efi
    uefi_ia32: ""
    uefi_arm32: ""
    uefi_arm64: ""
  subnets:
    - network: 198.18.160.0/24
      range: [198.18.160.100, 198.18.160.200]
      router: 198.18.160.1
  reservations:
    "52:54:00:00:00:99": 198.18.160.99
images:
  enabled: true
  directory: images
  state_dir: state
inventory:
  enabled: true
  file: inventory.yaml
menus:
  enabled: true
  templates: templates
http:
  enabled: true
  address: 127.0.0.1
  port: 8080
"""

INVENTORY = """\
defaults:
  profile: debian
profiles:
  debian:
    kernel: debian/vmlinuz
    initrd: [debian/initrd.gz]
    cmdline: "console=ttyS0"
hosts:
  web01:
    mac: 52:54:00:00:00:01
    vars: {ip: 198.18.160.11}
  web02:
    mac: 52:54:00:00:00:02
"""

TEMPLATE = """\
#!ipxe
echo {{ host.name }}
"""


def _replace(text, old, new):
    """
    C{text} with C{old} replaced by C{new}; C{old} must be there.
    """
    if old not in text:
        raise AssertionError("%r not in the text" % (old,))
    return text.replace(old, new, 1)


def makeTree(directory, config=BASE, inventory=INVENTORY, templates=None, files=()):
    """
    Write a configuration, its inventory, templates and images in
    C{directory}.

    @param templates: C{{name: text}} below C{templates/}.
    @param files: more paths to create (empty files), relative.
    @return: the configuration's path.
    """
    for sub in ("tftpboot", "images/debian", "state", "templates/ipxe"):
        os.makedirs(os.path.join(directory, sub), exist_ok=True)
    for name in ("images/debian/vmlinuz", "images/debian/initrd.gz", "tftpboot/undionly.kpxe",
                 "tftpboot/snponly.efi") + tuple(files):
        path = os.path.join(directory, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "w").close()
    for name, text in (templates or {"ipxe/host-web02.j2": TEMPLATE}).items():
        path = os.path.join(directory, "templates", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    if inventory is not None:
        with open(os.path.join(directory, "inventory.yaml"), "w") as f:
            f.write(inventory)
    path = os.path.join(directory, "provisioner.yaml")
    with open(path, "w") as f:
        f.write(config)
    return path


class _InDirectory:
    """
    Run each test in its own directory (the configurations' relative paths
    are relative to it, as to the appliance's working directory).
    """

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        previous = os.getcwd()
        os.chdir(self.directory)
        self.addCleanup(os.chdir, previous)

    def runCheck(self, path="provisioner.yaml"):
        """
        L{check.run} with this host stood in for.

        @return: C{(status, output lines)}.
        """
        out = io.StringIO()
        status = check.run(path, out, interfaces=lambda name: name in INTERFACES,
                           addresses=ADDRESSES)
        return status, out.getvalue().splitlines()


def _python(argv, cwd, **kw):
    """
    Run C{python -m provisioner ARGV} as an operator would (the tree's
    code: PYTHONPATH is the repository).
    """
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "provisioner"] + list(argv), cwd=cwd,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=120, **kw)


# The table: (name, how to break the tree, the expected line's start, how
# to run it). A break is a function of the directory returning the
# keyword arguments of makeTree; 'where' is FILE:LINE: KEY: and the start
# of the message.

def _config(old, new):
    return lambda d: {"config": _replace(BASE, old, new)}


def _inventory(old, new):
    return lambda d: {"inventory": _replace(INVENTORY, old, new)}


def _templates(text):
    return lambda d: {"templates": {"ipxe/host-web02.j2": text}}


def _both(config, inventory):
    return lambda d: {"config": config(d)["config"], "inventory": inventory(d)["inventory"]}


CASES = [
    ("port out of range", _config("port: 6969", "port: 99999"),
     "provisioner.yaml:3: tftp.port: must be a port number 0..65535", "subprocess"),
    ("unknown key", _config("  port: 6969\n", "  port: 6969\n  blocksize: 512\n"),
     "provisioner.yaml:4: tftp.blocksize: unknown key", "function"),
    ("renamed section", _config("http:\n", "multicast:\n  enabled: false\nhttp:\n"),
     "provisioner.yaml:33: multicast: renamed: use imagecast", "function"),
    ("bad choice", _config("mode: full", "mode: half"),
     "provisioner.yaml:8: dhcp.mode: must be one of 'proxy', 'full'", "function"),
    ("bad YAML", _config("  port: 6969\n", "  port: [6969\n"),
     "provisioner.yaml:4: not valid YAML: did not find expected ',' or ']'", "function"),
    ("not a mapping", lambda d: {"config": "- tftp\n"},
     "provisioner.yaml: must be a mapping", "function"),
    ("root is a file", lambda d: {"config": _replace(BASE, "root: tftpboot", "root: afile"),
                                  "files": ("afile",)},
     "provisioner.yaml:4: tftp.root: %s/afile is not a directory", "function"),
    ("root cannot be made", lambda d: {
        "config": _replace(BASE, "root: tftpboot", "root: afile/tftpboot"),
        "files": ("afile",)},
     "provisioner.yaml:4: tftp.root: %s/afile/tftpboot does not exist and cannot be created",
     "function"),
    ("inventory missing", _config("file: inventory.yaml", "file: nowhere.yaml"),
     "provisioner.yaml:29: inventory.file: %s/nowhere.yaml does not exist", "subprocess"),
    ("templates missing", _config("templates: templates", "templates: tpl"),
     "provisioner.yaml:32: menus.templates: %s/tpl does not exist", "function"),
    ("http root missing", _config("  port: 8080\n", "  port: 8080\n  root: www\n"),
     "provisioner.yaml:37: http.root: %s/www does not exist", "function"),
    ("imagecast root missing", _config("http:\n", "imagecast:\n  enabled: true\n"
                                       "  authentication: none\n  root: casts\nhttp:\n"),
     "provisioner.yaml:36: imagecast.root: %s/casts does not exist", "function"),
    ("TLS without a certificate", _config("http:\n", "imagecast:\n  enabled: true\n"
                                          "  root: images\n  tls:\n    enabled: true\n"
                                          "    key: images/debian/vmlinuz\nhttp:\n"),
     "provisioner.yaml:36: imagecast.tls.certificate: TLS is enabled but no certificate",
     "function"),
    ("no such TFTP interface", _config("  port: 6969\n", "  port: 6969\n"
                                       "  interface: nosuch0\n"),
     "provisioner.yaml:4: tftp.interface: no network interface 'nosuch0' on this host",
     "subprocess"),
    ("no such DHCP interface", _config("interfaces: [lo]", "interfaces: [lo, nosuch1]"),
     "provisioner.yaml:9: dhcp.interfaces[1]: no network interface 'nosuch1'", "function"),
    ("address not on this host", _config("  address: 127.0.0.1\n  port: 8080",
                                         "  address: 198.18.169.254\n  port: 8080"),
     "provisioner.yaml:35: http.address: 198.18.169.254 is not an address of this host",
     "subprocess"),
    ("router outside its subnet", _config("router: 198.18.160.1", "router: 198.18.161.1"),
     "provisioner.yaml:20: dhcp.subnets[0].router: 198.18.161.1 is not inside the subnet "
     "198.18.160.0/24", "function"),
    ("broadcast outside its subnet", _config(
        "router: 198.18.160.1", "router: 198.18.160.1\n      broadcast: 198.18.0.255"),
     "provisioner.yaml:21: dhcp.subnets[0].broadcast: 198.18.0.255 is not inside",
     "function"),
    ("range outside its subnet", _config("198.18.160.200]", "198.18.161.200]"),
     "provisioner.yaml:18: dhcp.subnets[0]: range 198.18.160.100-198.18.161.200 is not "
     "inside", "function"),
    ("reservation outside every subnet", _config(
        "\"52:54:00:00:00:99\": 198.18.160.99", "\"52:54:00:00:00:99\": 198.18.162.99"),
     "provisioner.yaml:22: dhcp.reservations.52:54:00:00:00:99: 198.18.162.99 is outside "
     "every subnet", "function"),
    ("full mode without subnets", _config(
        "  subnets:\n    - network: 198.18.160.0/24\n"
        "      range: [198.18.160.100, 198.18.160.200]\n      router: 198.18.160.1\n",
        "  subnets: []\n"),
     "provisioner.yaml:6: dhcp: mode 'full' needs at least one entry in dhcp.subnets",
     "function"),
    ("uploads inside the root", _config("  boot_programs: null\n", "  boot_programs: null\n"
                                        "  write: {enabled: true, directory: tftpboot/up}\n"),
     "provisioner.yaml:6: tftp.write.directory: must not be inside tftp.root", "function"),
    ("inventory vars.ip outside every subnet", _inventory("ip: 198.18.160.11",
                                                          "ip: 198.18.168.11"),
     "inventory.yaml:11: hosts.web01.vars.ip: 198.18.168.11 is outside every subnet",
     "function"),
    ("inventory bad MAC", _inventory("mac: 52:54:00:00:00:02", "mac: 52:54:00:00:02"),
     "inventory.yaml:13: hosts.web02.mac: not a MAC address", "subprocess"),
    ("inventory unknown group", _inventory("mac: 52:54:00:00:00:02",
                                           "mac: 52:54:00:00:00:02\n    groups: [rack9]"),
     "inventory.yaml:14: hosts.web02.groups: no group called 'rack9'", "function"),
    ("inventory duplicate MAC", _inventory("mac: 52:54:00:00:00:02",
                                           "mac: 52:54:00:00:00:01"),
     "inventory.yaml:13: hosts.web02.mac: MAC 52:54:00:00:00:01 is already host 'web01'",
     "function"),
    ("inventory unknown key", _inventory("    cmdline:", "    kernal: x\n    cmdline:"),
     "inventory.yaml:7: profiles.debian.kernal: unknown key", "function"),
    ("kernel not in the catalogue", _inventory("kernel: debian/vmlinuz",
                                               "kernel: debian/vmlinuz-6.1"),
     "inventory.yaml:5: profiles.debian.kernel: kernel debian/vmlinuz-6.1 is not in the "
     "image catalogue", "subprocess"),
    ("initrd not in the catalogue", _inventory("initrd: [debian/initrd.gz]",
                                               "initrd: [debian/initrd.gz, extra.cpio]"),
     "inventory.yaml:6: profiles.debian.initrd[1]: initrd extra.cpio is not in the image "
     "catalogue", "function"),
    ("imaging image not in the catalogue", _inventory(
        "    cmdline: \"console=ttyS0\"\n", "    cmdline: \"console=ttyS0\"\n"
        "    imaging: {image: disks/web.img, disk: /dev/vda}\n"),
     "inventory.yaml:8: profiles.debian.imaging.image: image disks/web.img is not in the "
     "image catalogue", "function"),
    ("template syntax error", _templates("#!ipxe\n{% if %}\n"),
     "%s/templates/ipxe/host-web02.j2:2: menus.templates: syntax error:", "subprocess"),
    ("template undefined variable", _templates("#!ipxe\necho {{ host.name }}\n"
                                               "echo {{ vars.rack }}\n"),
     "%s/templates/ipxe/host-web02.j2:3: menus.templates: UndefinedError:", "function"),
    ("template renders nothing", _templates("{# nothing #}\n"),
     "%s/templates/ipxe/host-web02.j2: menus.templates: ValueError: the template rendered "
     "nothing", "function"),
]


class CheckTableTests(_InDirectory, SynchronousTestCase):
    """
    Each broken configuration or inventory of L{CASES} yields its line
    (file, line, key, message) and exit status 2.
    """

    def test_baseIsClean(self):
        """
        The configuration every case breaks has no error, and warns about
        nothing: each case's error is its own.
        """
        makeTree(self.directory)
        status, lines = self.runCheck()
        self.assertEqual(status, 0, lines)
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].startswith("provisioner.yaml: ok (0 errors, 0 warnings; "
                                            "2 inventory hosts, 18 menus rendered)"), lines)

    def test_atLeastTwenty(self):
        """
        The table has at least 20 cases, a few of them run as the real
        command.
        """
        self.assertGreaterEqual(len(CASES), 20)
        self.assertGreaterEqual(len([c for c in CASES if c[3] == "subprocess"]), 4)

    def _case(self, name, breaking, expected, how):
        directory = os.path.join(self.directory, name.replace(" ", "-"))
        os.makedirs(directory)
        os.chdir(directory)
        makeTree(directory, **breaking(directory))
        if "%s" in expected:
            expected = expected % (directory,)
        if how == "subprocess":
            result = _python(["check", "--config", "provisioner.yaml"], directory)
            status = result.returncode
            lines = result.stdout.decode().splitlines()
            self.assertEqual(result.stderr, b"", name)
        else:
            status, lines = self.runCheck()
        self.assertEqual(status, 2, "%s: %s" % (name, lines))
        found = [line for line in lines if line.startswith(expected)]
        self.assertTrue(found, "%s: no line starts with %r in:\n%s" % (
            name, expected, "\n".join(lines)))
        self.assertNotIn(": ok (", lines[-1])
        self.assertRegex(lines[-1], r"^provisioner\.yaml: [1-9][0-9]* errors?, ")


def _addCase(case):
    name, breaking, expected, how = case

    def test(self):
        self._case(name, breaking, expected, how)
    test.__doc__ = "If %s, the check says so (%s) and exits 2 (%s)." % (name, expected, how)
    setattr(CheckTableTests, "test_case_" + name.replace(" ", "_").replace(".", "_"), test)


for _case in CASES:
    _addCase(_case)


class AllAtOnceTests(_InDirectory, SynchronousTestCase):
    """
    Every problem is reported in one run.
    """

    def test_fiveIndependentErrors(self):
        """
        If a configuration has five independent errors (two keys of the
        file, an inventory host, a profile's kernel and a template), one
        run reports all five, each once, and counts them.
        """
        config = _replace(BASE, "port: 6969", "port: 99999")
        config = _replace(config, "router: 198.18.160.1", "router: 198.18.161.1")
        inventory = _replace(INVENTORY, "mac: 52:54:00:00:00:02",
                             "mac: 52:54:00:00:00:02\n  web03:\n    mac: nonsense")
        inventory = _replace(inventory, "kernel: debian/vmlinuz", "kernel: debian/gone")
        makeTree(self.directory, config, inventory,
                 templates={"ipxe/host-web02.j2": "#!ipxe\necho {{ nope }}\n"})
        status, lines = self.runCheck()
        self.assertEqual(status, 2)
        expected = [
            "provisioner.yaml:3: tftp.port: must be a port number",
            "provisioner.yaml:20: dhcp.subnets[0].router: 198.18.161.1 is not inside",
            "inventory.yaml:5: profiles.debian.kernel: kernel debian/gone is not in the image "
            "catalogue",
            "inventory.yaml:15: hosts.web03.mac: not a MAC address",
            "%s/templates/ipxe/host-web02.j2:2: menus.templates: UndefinedError: 'nope' is "
            "undefined; for hosts.web02 (ipxe, bios), hosts.web02 (ipxe, efi-x64)" % (
                self.directory,),
        ]
        self.assertEqual([[line for line in lines if line.startswith(e)] != [] for e in expected],
                         [True] * 5, "\n".join(lines))
        self.assertEqual(len(lines), 6, "\n".join(lines))
        self.assertTrue(lines[-1].startswith("provisioner.yaml: 5 errors, 0 warnings"),
                        lines[-1])

    def test_configErrorsCollected(self):
        """
        Several errors of the configuration file are all reported, in line
        order, where loading it for a start stops at the first.
        """
        config = _replace(BASE, "port: 6969", "port: -1")
        config = _replace(config, "mode: full", "mode: half")
        config = _replace(config, "  port: 8080\n", "  port: 8080\n  colour: blue\n")
        makeTree(self.directory, config)
        status, lines = self.runCheck()
        self.assertEqual(status, 2)
        self.assertEqual([line.split(":")[1] for line in lines[:3]], ["3", "8", "37"], lines)

    def test_inventoryErrorsCollected(self):
        """
        Every bad entry of the inventory is reported; the good hosts' menus
        are still rendered.
        """
        inventory = INVENTORY + textwrap.dedent("""\
              web03:
                mac: bad
              web04:
                mac: 52:54:00:00:00:04
                profile: nope
            groups:
              rack1: {profile: gone}
            """)
        makeTree(self.directory, inventory=inventory)
        inventoryObject, errors, where = loadInventoryCollecting("inventory.yaml")
        self.assertEqual(sorted(e.key for e in errors),
                         ["groups.rack1.profile", "hosts.web03.mac", "hosts.web04.profile"])
        self.assertEqual(sorted(inventoryObject.hosts), ["web01", "web02"])
        status, lines = self.runCheck()
        self.assertIn("2 inventory hosts, 18 menus rendered", lines[-1])

    def test_unreadable(self):
        """
        If the file cannot be read, that is the one line reported (the
        defaults are not checked in its place).
        """
        status, lines = self.runCheck("nowhere.yaml")
        self.assertEqual(status, 2)
        self.assertEqual(lines, ["cannot read nowhere.yaml: No such file or directory",
                                 "nowhere.yaml: 1 error, 0 warnings (0 inventory hosts, "
                                 "0 menus rendered)"])

    def test_warningsAreNotErrors(self):
        """
        A warning (a directory the appliance creates at start) says so and leaves
        the exit status 0.
        """
        makeTree(self.directory, _replace(BASE, "state_dir: state", "state_dir: newstate"))
        status, lines = self.runCheck()
        self.assertEqual(status, 0, lines)
        self.assertTrue(lines[0].startswith("provisioner.yaml:26: images.state_dir: warning: "),
                        lines)
        self.assertIn("ok (0 errors, 1 warning", lines[-1])

    def test_unservedBootFile(self):
        """
        A boot file DHCP hands out that nothing serves is a warning naming
        the key.
        """
        makeTree(self.directory, _replace(BASE, "bios: undionly.kpxe", "bios: gone.kpxe"))
        status, lines = self.runCheck()
        self.assertTrue([line for line in lines if line.startswith(
            "provisioner.yaml:12: dhcp.boot.bios: warning: DHCP hands out gone.kpxe")], lines)


class ProblemTests(SynchronousTestCase):
    """
    How problems are written and ordered.
    """

    def test_format(self):
        """
        An error is FILE:LINE: KEY: message; a warning says warning after
        the key.
        """
        self.assertEqual(str(Problem("error", "a.yaml:3", "tftp.port", "bad; fix it")),
                         "a.yaml:3: tftp.port: bad; fix it")
        self.assertEqual(str(Problem("warning", "a.yaml:3", "tftp.root", "missing")),
                         "a.yaml:3: tftp.root: warning: missing")

    def test_sorted(self):
        """
        Problems are sorted by file (the configuration first) and line.
        """
        report = Report()
        report.error("inv.yaml:2", "hosts.a", "x")
        report.error("p.yaml:9", "tftp.port", "y")
        report.warn("p.yaml:2", "tftp.root", "z")
        self.assertEqual([p.where for p in report.sorted("p.yaml")],
                         ["p.yaml:2", "p.yaml:9", "inv.yaml:2"])

    def test_hostAddresses(self):
        """
        This host's addresses are read from the kernel's tables: a LOCAL
        route of fib_trie, an address of if_inet6.
        """
        trie = self.mktemp()
        with open(trie, "w") as f:
            f.write("Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 127.0.0.1\n"
                    "        /32 host LOCAL\n     |-- 127.255.255.255\n"
                    "        /32 link BROADCAST\n")
        inet6 = self.mktemp()
        with open(inet6, "w") as f:
            f.write("00000000000000000000000000000001 01 80 10 80       lo\n")
        self.assertEqual(hostAddresses(trie, inet6), {"127.0.0.1", "::1"})
        self.assertIsNone(hostAddresses(trie + ".no", inet6 + ".no"))

    def test_realHostHasLoopback(self):
        """
        On this host, 127.0.0.1 is found (the subprocess cases rely on it).
        """
        self.assertIn("127.0.0.1", hostAddresses())


class RenderTests(_InDirectory, SynchronousTestCase):
    """
    C{provisioner render} with a template that fails.
    """

    def test_brokenTemplate(self):
        """
        If the template of the menu asked for fails, render prints the
        template's file, line and error (not the fallback menu) and exits
        1.
        """
        makeTree(self.directory, templates={"ipxe/host-web02.j2": "#!ipxe\n\n{% for %}\n"})
        result = _python(["render", "--config", "provisioner.yaml", "--mac",
                          "52:54:00:00:00:02", "--ipxe", "boot.ipxe"], self.directory)
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertEqual(result.stdout, b"")
        self.assertIn("provisioner render: %s/templates/ipxe/host-web02.j2:3: syntax error: "
                      % (self.directory,), result.stderr.decode())

    def test_goodTemplate(self):
        """
        The same with a good template prints the menu and exits 0.
        """
        makeTree(self.directory)
        result = _python(["render", "--config", "provisioner.yaml", "--mac",
                          "52:54:00:00:00:02", "--ipxe", "boot.ipxe"], self.directory)
        self.assertEqual((result.returncode, result.stdout), (0, b"#!ipxe\necho web02\n"),
                         result.stderr)


class CommandLineTests(SynchronousTestCase):
    """
    The command line: broken pipes, help texts.
    """

    def _pipe(self, reader):
        env = dict(os.environ, PYTHONPATH=REPO)
        return subprocess.run(["sh", "-c", "%s -m provisioner config-keys | %s" % (
            sys.executable, reader)], env=env, cwd=self.mktemp() and REPO,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)

    def test_headQuiet(self):
        """
        C{provisioner config-keys | head -1} prints one line and nothing on
        standard error.
        """
        result = self._pipe("head -1")
        self.assertEqual(result.stderr, b"")
        self.assertEqual(len(result.stdout.splitlines()), 1)

    def test_readerGoneFirst(self):
        """
        If the reader is gone before anything is written (C{| true}), the
        command still ends quietly.
        """
        result = self._pipe("true")
        self.assertEqual(result.stderr, b"")

    def test_everyOptionHasHelp(self):
        """
        Every subcommand has help and a description, and every option help
        text.
        """
        missing = []

        def walk(parser, name):
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    helps = {c.dest: c.help for c in action._choices_actions}
                    for sub, subparser in action.choices.items():
                        if sub not in helps and sub != "check-config":
                            missing.append("%s %s: help" % (name, sub))
                        if not subparser.description:
                            missing.append("%s %s: description" % (name, sub))
                        walk(subparser, "%s %s" % (name, sub))
                elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                    if not action.help:
                        missing.append("%s %s" % (name, action.option_strings or action.dest))
        walk(cli.buildParser(), "provisioner")
        self.assertEqual(missing, [])

    def test_helpShowsDefaults(self):
        """
        An option's help shows its default.
        """
        parser = cli.buildParser()
        text = io.StringIO()
        sub = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)][0]
        sub.choices["fetch"].print_help(text)
        self.assertIn("(default: 6)", " ".join(text.getvalue().split()))

    def test_descriptions(self):
        """
        check (and its alias check-config), config-sample and receive have
        their own descriptions.
        """
        parser = cli.buildParser()
        sub = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)][0]
        self.assertIn("every problem is one line", sub.choices["check"].description.lower())
        self.assertIs(sub.choices["check-config"], sub.choices["check"])
        self.assertIn("comment", sub.choices["config-sample"].description)
        self.assertIn("state file", sub.choices["receive"].description)
