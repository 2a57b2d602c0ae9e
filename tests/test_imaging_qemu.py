# -*- test-case-name: tests.test_imaging_qemu -*-
"""
Imaging a rack, with real machines: two QEMU VMs (TCG, SeaBIOS + the NIC's
iPXE ROM, a blank virtio disk each) PXE-boot the deploy environment that
C{provisioner deployenv build} made from Debian packages, fetch their
orders (image, disk by serial number, a secret of their own) with the
per-boot token, and receive one image in one imagecast session that the
appliance starts by itself once both asked, with 2% random loss on each
VM's link,
write it to their disks, verify it, call back C{deployed} and reboot; the
next network boot of each is sent to its disk (boot once), whose boot code
(part of the image) prints the image's marker on the serial port.

The image is built here: a boot sector that prints L{IMAGE_MARKER} and
random data after it.
"""

import hashlib
import json
import os
import re
import subprocess

from twisted.trial.unittest import TestCase

from tests import bootkit
from tests.netlab import PYTHON, REPO, requireE2E, waitFor
from tests.qemu_lab import BootBed, addTap, bootQEMU
from tests.test_boot_qemu import requireKit

SUBNET = 176
IMAGE_SIZE = 24 << 20
IMAGE_MARKER = "PROVDISK imaged by provisioner: web-v1"
DEPLOYENV = os.environ.get("PROVISIONER_DEPLOYENV") or "/var/cache/provisioner-tests/deployenv"
MACS = {"vm1": "52:54:00:b0:00:01", "vm2": "52:54:00:b0:00:02"}
DEPLOYED = re.compile(r"DEPLOYENV DEPLOYED|DEPLOYENV FAILED.*")
PROVISIONER = [PYTHON, "-m", "provisioner.cli"]

CONFIG = """\
tftp:
  enabled: true
  address: 0.0.0.0
  port: 69
  interface: eth0
  root: {d}/root
dhcp:
  enabled: true
  mode: full
  interfaces: [eth0]
  lease_file: {d}/leases.sqlite
  ipxe_script: boot.ipxe
  subnets:
    - network: 198.18.{s}.0/24
      range: [198.18.{s}.100, 198.18.{s}.150]
      router: 198.18.{s}.1
images:
  enabled: true
  directory: {d}/images
  state_dir: {d}/state
menus:
  enabled: true
  http_url: http://198.18.{s}.1:8080
inventory:
  enabled: true
  file: {d}/inventory.yaml
http:
  enabled: true
  address: 0.0.0.0
  port: 8080
hosts:
  enabled: true
  state_directory: {d}/state
imagecast:
  enabled: true
  address: 0.0.0.0
  root: {d}/images
  interface: 198.18.{s}.1
  rate: {rate}{rateMin}
  receivers_file: {d}/receivers
"""

INVENTORY = """\
profiles:
  image-web:
    description: Image web-v1 onto the first disk
    timeout: 1
    kernel: deployenv/vmlinuz
    initrd: [deployenv/initrd.gz]
    cmdline: "console=ttyS0 quiet provisioner.onfailure=poweroff"
    imaging:
      image: web.img
      disk: {serial: WEBDISK}
      min_receivers: 2
      max_wait: 300
hosts:
  vm1: {mac: 52:54:00:b0:00:01, profile: image-web}
  vm2: {mac: 52:54:00:b0:00:02, profile: image-web}
"""


def _sourcesDigest():
    """
    A digest of the deploy environment's sources (the build, /init and its
    functions), so a cached build made from other sources is rebuilt.
    """
    digest = hashlib.sha256()
    directory = os.path.join(REPO, "provisioner", "deployenv")
    for name in sorted(os.listdir(directory)):
        if name.endswith((".py", ".sh")):
            with open(os.path.join(directory, name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
    return digest.hexdigest()


def deployEnvironment():
    """
    The deploy environment built by C{provisioner deployenv build} (cached
    between runs while its sources do not change), or a skip/failure.
    """
    stamp = os.path.join(DEPLOYENV, "sources.sha256")
    wanted = _sourcesDigest()
    try:
        with open(stamp) as f:
            fresh = f.read().strip() == wanted
    except OSError:
        fresh = False
    if not fresh or not os.path.exists(os.path.join(DEPLOYENV, "manifest.json")):
        result = subprocess.run(PROVISIONER + ["deployenv", "build", "--output", DEPLOYENV],
                                cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            requireE2E(tools=["a deploy environment (%s)" % (
                result.stdout.decode(errors="replace")[-300:],)])
        with open(stamp, "w") as f:
            f.write(wanted + "\n")
    return DEPLOYENV


def makeImage(path, size):
    """
    A bootable raw image: a boot sector printing L{IMAGE_MARKER} on COM1,
    then random data. Return its sha256.
    """
    with open(path, "wb") as f:
        f.write(bootkit.bootSector(IMAGE_MARKER))
        f.write(os.urandom(size - 512))
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class ImagingBed:
    """
    The appliance with the deploy environment and the image catalogued, a
    tap and a blank disk per machine.
    """

    inventory = INVENTORY
    machines = MACS
    rate = 100
    diskSizes = {}
    imageSize = IMAGE_SIZE

    def setUp(self):
        requireKit()
        requireE2E(tools=["iptables"])
        source = deployEnvironment()
        self.d = os.path.abspath(self.mktemp())
        for sub in ("root", "images/deployenv", "state"):
            os.makedirs(os.path.join(self.d, sub))
        for name in ("vmlinuz", "initrd.gz"):
            os.link(os.path.join(source, name), os.path.join(self.d, "images/deployenv", name))
        self.sha256 = makeImage(os.path.join(self.d, "images", "web.img"), self.imageSize)
        # The orders give each host a secret of its own: nothing to list.
        with open(os.path.join(self.d, "receivers"), "w") as f:
            f.write("# the appliance registers each imaging host's secret itself\n")
        os.chmod(os.path.join(self.d, "receivers"), 0o600)
        with open(os.path.join(self.d, "inventory.yaml"), "w") as f:
            f.write(self.inventory)
        self.bed = BootBed(self, SUBNET, self.d)
        self.appliance = self.bed.start(CONFIG.format(
            d=self.d, s=SUBNET, rate=self.rate,
            rateMin="\n  rate_min: %s" % (self.rate,) if self.rate < 100 else ""))
        self.appliance.waitLog("image catalogue ready", 120)
        self.disks = {}
        self.taps = {}
        for i, name in enumerate(sorted(self.machines)):
            self.disks[name] = os.path.join(self.d, name + ".disk")
            with open(self.disks[name], "wb") as f:
                f.truncate(self.diskSizes.get(name, 64 << 20))
            tap = "provt%dv%d" % (SUBNET, i)
            addTap(self.bed.lab, tap)
            self.taps[name] = tap

    def loss(self, tap, percent):
        """
        Drop C{percent}% of the frames the bridge forwards to the VM on
        C{tap}, at random (bridged frames through iptables: br_netfilter;
        tc's netem, matchall and gact are not available here).
        """
        br = ["ip", "netns", "exec", self.bed.lab.bridgeNS]
        subprocess.run(br + ["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"],
                       check=True)
        subprocess.run(br + ["iptables", "-A", "FORWARD", "-m", "physdev", "--physdev-out", tap,
                             "-m", "statistic", "--mode", "random", "--probability",
                             str(percent / 100.0), "-j", "DROP"], check=True)

    def dropped(self, tap):
        """
        How many frames the loss rule for C{tap} dropped.
        """
        out = subprocess.run(["ip", "netns", "exec", self.bed.lab.bridgeNS, "iptables", "-L",
                              "FORWARD", "-v", "-n", "-x"], check=True,
                             stdout=subprocess.PIPE).stdout.decode()
        for line in out.splitlines():
            if tap in line:
                return int(line.split()[0])
        return 0

    def start(self, name, label):
        serial = os.path.join(self.d, "serial-%s-%s.txt" % (name, label))
        proc = bootQEMU(self.bed.lab, self.taps[name], self.machines[name], serial, memory=768,
                        extra=["-drive", "file=%s,format=raw,if=none,id=d0" % (self.disks[name],),
                               "-device", "virtio-blk-pci,drive=d0,serial=WEBDISK"])
        return proc, serial

    def console(self, serial):
        try:
            with open(serial, errors="replace") as f:
                return f.read()
        except OSError:
            return ""



class ImagingTests(ImagingBed, TestCase):
    """
    Two machines imaged in one session, verified, booted from their disks.
    """

    def test_twoMachinesOneSession(self):
        """
        Both VMs boot the deploy environment, are imaged in one session
        under 2% loss, end deployed with a verified disk, and boot it.
        """
        for tap in self.taps.values():
            self.loss(tap, 2)
        machines = {name: self.start(name, "deploy") for name in MACS}
        done = waitFor(lambda: all(DEPLOYED.search(self.console(s))
                                   for _, s in machines.values()), 600, interval=1)
        for proc, _ in machines.values():
            proc.kill()
            proc.wait(10)
        consoles = {name: self.console(s) for name, (_, s) in machines.items()}
        self.assertTrue(done, "\n\n".join("%s:\n%s" % (n, c[-3000:])
                                          for n, c in consoles.items()) +
                        "\nappliance:\n" + self.appliance.log()[-3000:])
        for name, text in consoles.items():
            self.assertIn("DEPLOYENV DEPLOYED", text, text[-3000:])
        for name, text in consoles.items():
            self.assertIn("DEPLOYENV orders from http://198.18.%d.1:8080/api/v1/hosts/%s/orders"
                          % (SUBNET, name), text)
        # One session, started by the appliance itself; both hosts complete.
        self.assertEqual(self.appliance.log().count("started automatically for web.img"), 1)
        listing = json.loads(self.bed.server.run(
            ["env", "PYTHONPATH=" + REPO] + PROVISIONER +
            ["hosts", "--json", "--url", "http://127.0.0.1:8080"], timeout=60).stdout)
        imaging = {h["name"]: h["imaging"] for h in listing["hosts"]}
        self.assertEqual({n: i["verdict"] for n, i in imaging.items()},
                         {"vm1": "complete", "vm2": "complete"}, imaging)
        self.assertEqual(imaging["vm1"]["session"], imaging["vm2"]["session"])
        self.assertEqual(json.loads(self.bed.server.run(
            ["env", "PYTHONPATH=" + REPO] + PROVISIONER +
            ["hosts", "--json", "--url", "http://127.0.0.1:8080", "show", "vm1"],
            timeout=60).stdout)["lifecycle"]["state"], "deployed")
        for name, tap in self.taps.items():
            self.assertGreater(self.dropped(tap), 0, name)
        # The disks hold the image, byte for byte.
        for name, path in self.disks.items():
            with open(path, "rb") as f:
                self.assertEqual(hashlib.sha256(f.read(IMAGE_SIZE)).hexdigest(), self.sha256,
                                 name)
        # Boot once: the next network boot goes to the disk, which boots.
        for name in sorted(MACS):
            proc, serial = self.start(name, "local")
            found = waitFor(lambda: IMAGE_MARKER in self.console(serial), 120, interval=0.5)
            proc.kill()
            proc.wait(10)
            self.assertTrue(found, self.console(serial)[-2000:])


FAILURE_INVENTORY = """\
profiles:
  image-one:
    description: Image web-v1 onto the first disk, alone
    timeout: 1
    kernel: deployenv/vmlinuz
    initrd: [deployenv/initrd.gz]
    cmdline: "console=ttyS0 quiet provisioner.onfailure=poweroff provisioner.receive=--timeout,8"
    imaging: {image: web.img, disk: /dev/vda, min_receivers: 1, max_wait: 2}
hosts:
  vm3: {mac: 52:54:00:b0:00:03, profile: image-one}
  vm4: {mac: 52:54:00:b0:00:04, profile: image-one}
"""


class ImagingFailureTests(ImagingBed, TestCase):
    """
    What goes wrong ends C{failed} with its reason, never C{deployed}: a
    disk smaller than the image; the appliance's control channel cut in
    the middle of the image.
    """

    inventory = FAILURE_INVENTORY
    machines = {"vm3": "52:54:00:b0:00:03", "vm4": "52:54:00:b0:00:04"}
    rate = 8
    diskSizes = {"vm3": 8 << 20, "vm4": 64 << 20}

    def hostState(self, name):
        out = self.bed.server.run(["env", "PYTHONPATH=" + REPO] + PROVISIONER + [
            "hosts", "--json", "--url", "http://127.0.0.1:8080", "show", name], timeout=60)
        return json.loads(out.stdout)["lifecycle"]

    def test_diskTooSmall(self):
        """
        An 8 MiB disk for a 24 MiB image: the receiver refuses it, the host
        is failed with that reason, and nothing was claimed.
        """
        proc, serial = self.start("vm3", "small")
        found = waitFor(lambda: DEPLOYED.search(self.console(serial)), 300, interval=1)
        proc.kill()
        proc.wait(10)
        text = self.console(serial)
        self.assertTrue(found, text[-3000:])
        failed = re.search(r"DEPLOYENV FAILED (.*)", text)
        self.assertTrue(failed, text[-3000:])
        self.assertIn("/dev/vda: device too small for the image", failed.group(1))
        life = self.hostState("vm3")
        self.assertEqual(life["state"], "failed")
        self.assertIn("device too small for the image", life["reason"])

    def test_controlChannelCut(self):
        """
        The VM's control connection to the appliance is cut while the
        image is on its way: the receiver gives up after its timeout, the
        host ends failed with the reason, never deployed.
        """
        proc, serial = self.start("vm4", "cut")
        started = waitFor(lambda: "DEPLOYENV receive python3" in self.console(serial), 300,
                          interval=0.5)
        self.assertTrue(started, self.console(serial)[-3000:])
        waitFor(lambda: "started automatically for web.img" in self.appliance.log(), 60)
        subprocess.run(["ip", "netns", "exec", self.bed.lab.bridgeNS, "iptables", "-I",
                        "FORWARD", "-m", "physdev", "--physdev-in", self.taps["vm4"], "-p", "tcp",
                        "--dport", "7010", "-j", "DROP"], check=True)
        found = waitFor(lambda: DEPLOYED.search(self.console(serial)), 300, interval=1)
        proc.kill()
        proc.wait(10)
        text = self.console(serial)
        self.assertTrue(found, text[-3000:])
        self.assertNotIn("DEPLOYENV DEPLOYED", text)
        self.assertIn("DEPLOYENV FAILED provisioner receive ended", text)
        life = self.hostState("vm4")
        self.assertEqual(life["state"], "failed", life)
        self.assertTrue(life["reason"], life)


LATE_INVENTORY = INVENTORY.replace(
    "  vm2: {mac: 52:54:00:b0:00:02, profile: image-web}\n",
    "  vm2: {mac: 52:54:00:b0:00:02, profile: image-web}\n"
    "  vm5: {mac: 52:54:00:b0:00:05, profile: image-web}\n")


class LateJoinerTests(ImagingBed, TestCase):
    """
    A third machine boots after the session started: it joins the running
    session (imagecast takes receivers at any round) and ends imaged and
    deployed like the others.
    """

    inventory = LATE_INVENTORY
    machines = {"vm1": MACS["vm1"], "vm2": MACS["vm2"], "vm5": "52:54:00:b0:00:05"}
    rate = 16
    imageSize = 48 << 20

    def test_lateJoiner(self):
        """
        vm1 and vm2 start the session; vm5 boots once they receive, joins
        that session, and all three end deployed with the image.
        """
        first = {name: self.start(name, "deploy") for name in ("vm1", "vm2")}
        started = waitFor(lambda: "started automatically for web.img" in self.appliance.log(),
                          300, interval=0.5)
        self.assertTrue(started, self.appliance.log()[-3000:])
        # Both are receiving: the session runs (48 MiB at 16 Mbit/s: about
        # 25 s for the first round, while the third boots in about 10 s).
        waitFor(lambda: all("DEPLOYENV receive python3" in self.console(s)
                            for _, s in first.values()), 120, interval=0.5)
        late = self.start("vm5", "late")
        machines = dict(first, vm5=late)
        done = waitFor(lambda: all(DEPLOYED.search(self.console(s))
                                   for _, s in machines.values()), 600, interval=1)
        for proc, _ in machines.values():
            proc.kill()
            proc.wait(10)
        consoles = {name: self.console(s) for name, (_, s) in machines.items()}
        self.assertTrue(done, "\n\n".join("%s:\n%s" % (n, c[-2000:])
                                          for n, c in consoles.items()))
        for name, text in consoles.items():
            self.assertIn("DEPLOYENV DEPLOYED", text, (name, text[-3000:]))
        listing = json.loads(self.bed.server.run(
            ["env", "PYTHONPATH=" + REPO] + PROVISIONER +
            ["hosts", "--json", "--url", "http://127.0.0.1:8080"], timeout=60).stdout)
        imaging = {h["name"]: h["imaging"] for h in listing["hosts"]}
        self.assertEqual({n: i["verdict"] for n, i in imaging.items()},
                         {"vm1": "complete", "vm2": "complete", "vm5": "complete"}, imaging)
        # One session for all three: the late one joined it.
        self.assertEqual(len({i["session"] for i in imaging.values()}), 1, imaging)
        self.assertEqual(self.appliance.log().count("started automatically for web.img"), 1)
        for name, path in self.disks.items():
            with open(path, "rb") as f:
                self.assertEqual(hashlib.sha256(f.read(self.imageSize)).hexdigest(),
                                 self.sha256, name)
