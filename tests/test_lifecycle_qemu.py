# -*- test-case-name: tests.test_lifecycle_qemu -*-
"""
The host lifecycle with a real machine: QEMU (TCG, SeaBIOS + the NIC's
iPXE ROM, a disk whose boot code prints L{tests.bootkit.DISK_MARKER} on the
serial port) and the files of C{docs/recipes/boot-once.md} as they stand.

The deploy environment is Debian's kernel and the kit's busybox
initramfs: it prints the inventory's values, then POSTs C{state=deployed}
with the per-boot token and callback URL the menu put on its command line,
and reboots (QEMU runs with C{-no-reboot}, so the reboot ends the VM; the
next boot is a new VM with the same MAC and disk).
"""

import json
import os
import re
import subprocess

from twisted.trial.unittest import TestCase

from tests import bootkit
from tests.netlab import PYTHON, REPO, requireE2E
from tests.qemu_lab import BootBed
from tests.test_boot_qemu import MARKER, requireKit
from tests.test_recipes import recipeFiles, writeFiles

SUBNET = 154
BOOT_TIMEOUT = 240
NODE1 = "52:54:00:9a:00:01"
STRANGER = "52:54:00:9a:00:99"
CALLBACK = re.compile(r"PROVCALLBACK http=(\S+)")
DISK = re.compile(re.escape(bootkit.DISK_MARKER))
API = "http://127.0.0.1:8080"

class BootOnceTests(TestCase):
    """
    Deploy, call back, boot the local disk, survive a restart, redeploy;
    and discovery of an unknown machine, adopted.
    """

    def setUp(self):
        self.kit = requireKit()
        requireE2E(tools=["curl"])
        self.files = recipeFiles("boot-once.md")
        self.d = os.path.abspath(self.mktemp())
        for sub in ("tftp", "images/deploy", "state"):
            os.makedirs(os.path.join(self.d, sub))
        self.kit.install(os.path.join(self.d, "images"),
                         {"kernel": "deploy/vmlinuz", "initrd": "deploy/initrd.gz"})
        writeFiles(self.d, self.files, ["inventory.yaml"])
        self.bed = BootBed(self, SUBNET, self.d, hosts=2)
        self.appliance = self.bed.start(self.files["provisioner.yaml"])
        self.appliance.waitLog("image catalogue ready", 60)
        self.disks = {}

    def boot(self, mac, marker, name):
        """
        Boot a VM with C{mac} and its own disk (kept between its boots)
        until C{marker}; return the serial console's text.
        """
        disk = self.disks.get(mac)
        if disk is None:
            disk = self.disks[mac] = os.path.join(self.d, "disk-%s.img" % (mac[-2:],))
            with open(self.kit.disk, "rb") as src, open(disk, "wb") as dst:
                dst.write(src.read())
        serial = os.path.join(self.d, "serial-%s.txt" % (name,))
        self.bed.boot(mac, marker, serial, firmware="bios", timeout=BOOT_TIMEOUT,
                      extra=["-drive", "file=%s,format=raw,if=ide" % (disk,)])
        with open(serial, errors="replace") as f:
            return f.read()

    def cli(self, *args):
        """
        Run C{provisioner hosts --url API ARGS} on the appliance's host.
        """
        result = self.bed.server.run(
            ["env", "PYTHONPATH=" + REPO, PYTHON, "-m", "provisioner.cli", "hosts", "--url", API]
            + list(args), check=False, timeout=60)
        out = result.stdout.decode(errors="replace")
        self.assertEqual(result.returncode, 0, out)
        return out

    def state(self, name):
        return json.loads(self.cli("--json", "show", name))["lifecycle"]["state"]

    def events(self, name):
        result = self.bed.server.run(["curl", "-sS", "-f", API + "/api/v1/hosts/%s/events"
                                      % (name,)], check=True, timeout=30)
        data = json.loads(result.stdout)
        events = data["events"] if isinstance(data, dict) else data
        return [(e["source"], e["target"]) for e in events if e["source"]]

    def test_deployLocalRestartRedeploy(self):
        """
        node1 boots its deploy entry (with a token), calls back deployed;
        its next boot goes to the local disk, also after a restart of the
        appliance; a callback with a bad token changes nothing; after
        C{hosts redeploy} it deploys again.
        """
        console = self.boot(NODE1, CALLBACK, "1-deploy")
        self.assertEqual(MARKER.search(console).groups(), ("node1", "web", "yes"))
        self.assertEqual(CALLBACK.search(console).group(1), "200", console[-2000:])
        self.assertEqual(self.state("node1"), "deployed")

        # A forged callback from another machine on the network: refused.
        other = self.bed.lab.hosts[1]
        forged = other.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                            "http://198.18.%d.1:8080/api/v1/hosts/node1/callback?token=%s"
                            "&state=failed" % (SUBNET, "f" * 43)], check=False, timeout=30)
        self.assertEqual(forged.stdout.decode(), "403")
        self.assertEqual(self.state("node1"), "deployed")

        # Restart: the state is on disk.
        self.appliance.stop()
        self.appliance.start()
        self.appliance.waitLog("image catalogue ready", 60)
        console = self.boot(NODE1, DISK, "2-local")
        self.assertIsNone(MARKER.search(console), console[-2000:])
        self.assertIn("booting the local disk", console)
        self.assertEqual(self.state("node1"), "deployed")

        self.cli("redeploy", "node1")
        console = self.boot(NODE1, CALLBACK, "3-redeploy")
        self.assertEqual(MARKER.search(console).groups(), ("node1", "web", "yes"))
        self.assertEqual(self.state("node1"), "deployed")
        self.assertEqual(self.events("node1"), [
            ("ready", "deploying"), ("deploying", "deployed"), ("deployed", "ready"),
            ("ready", "deploying"), ("deploying", "deployed")])

    def test_discoverAdopt(self):
        """
        A MAC no inventory names boots the default menu and shows as
        discovered; adopted with the deploy profile, its next boot deploys
        it under its new name.
        """
        self.boot(STRANGER, re.compile(r"booting the local disk|Booting from local disk|"
                                       r"PROVDISK"), "stranger")
        listing = json.loads(self.cli("--json"))
        found = [m for m in listing["discovered"] if m["mac"] == STRANGER]
        self.assertEqual(len(found), 1, listing)
        self.assertEqual(found[0]["arch"], 0)
        stanza = self.cli("adopt", STRANGER, "--name", "node2", "--profile", "deploy")
        self.assertIn("node2:", stanza)
        console = self.boot(STRANGER, CALLBACK, "stranger-adopted")
        self.assertEqual(MARKER.search(console).groups(), ("node2", "generic", "yes"))
        self.assertEqual(self.state("node2"), "deployed")
