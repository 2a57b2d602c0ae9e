# -*- test-case-name: tests.test_dhcp_e2e -*-
"""
End-to-end: provisioner's DHCP service, run as a user would (twistd in a
network namespace), against busybox udhcpc in another namespace.
"""

import os
import signal
import sqlite3

from twisted.trial.unittest import TestCase

from tests.netlab import Appliance, NetLab, requireE2E, waitFor
from tests.qemu_lab import readEvents, writeUdhcpcScript

FULL = """\
tftp:
  enabled: false
dhcp:
  enabled: true
  mode: full
  interfaces: [eth0]
  lease_file: %(leases)s
  lease_time: 120
  subnets:
    - network: 198.18.%(subnet)d.0/24
      range: [198.18.%(subnet)d.100, 198.18.%(subnet)d.150]
      router: 198.18.%(subnet)d.1
      dns: [198.18.%(subnet)d.1]
"""


def _leaseRows(path):
    connection = sqlite3.connect(path)
    try:
        return connection.execute("SELECT mac, ip FROM leases").fetchall()
    finally:
        connection.close()


class UdhcpcTests(TestCase):
    """
    busybox udhcpc against provisioner in full mode.
    """

    def setUp(self):
        requireE2E(root=True, netns=True, tools=["busybox", "ip"])
        self.lab = NetLab(hosts=1, subnet=31)
        self.addCleanup(self.lab.close)
        self.server = self.lab.hosts[0]
        self.client = self.lab.addHost(addresses=False)
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.leases = os.path.join(os.path.abspath(self.directory), "leases.sqlite")
        self.provisioner = Appliance(
            os.path.abspath(self.directory), FULL % {"leases": self.leases, "subnet": 31},
            host=self.server)
        self.addCleanup(self.provisioner.kill)
        self.provisioner.start()
        self.script, self.events = writeUdhcpcScript(os.path.abspath(self.directory))

    def _udhcpc(self):
        return self.client.popen(
            ["busybox", "udhcpc", "-f", "-i", "eth0", "-t", "5", "-T", "1", "-A", "1",
             "-s", self.script])

    def _event(self, name, count=1):
        found = waitFor(
            lambda: [f for e, f in readEvents(self.events) if e == name][count - 1:], 20)
        self.assertTrue(found, "no udhcpc %r event; events: %r\nlog:\n%s" % (
            name, readEvents(self.events), self.provisioner.log()[-3000:]))
        return found[0]

    def test_leaseRenewRelease(self):
        """
        If udhcpc asks for an address in full mode, it is bound to one from
        the pool with the subnet's options; a renewal keeps it; a release
        removes the lease from the database.
        """
        proc = self._udhcpc()
        bound = self._event("bound")
        ip = bound["ip"]
        self.assertTrue(ip.startswith("198.18.31."), ip)
        self.assertTrue(100 <= int(ip.rsplit(".", 1)[1]) <= 150)
        self.assertEqual(bound["router"], "198.18.31.1")
        self.assertEqual(bound["serverid"], "198.18.31.1")
        self.assertEqual(bound["lease"], "120")
        self.assertIn((self.client.mac, ip), _leaseRows(self.leases))
        proc.send_signal(signal.SIGUSR1)
        renewed = self._event("renew")
        self.assertEqual(renewed["ip"], ip)
        proc.send_signal(signal.SIGUSR2)
        waitFor(lambda: not _leaseRows(self.leases), 10)
        self.assertEqual(_leaseRows(self.leases), [])

    def test_leaseSurvivesRestart(self):
        """
        If provisioner is killed with SIGKILL right after an ACK and started
        again, the lease is still known: the client's renewal is ACKed with
        the same address, and another client does not get it.
        """
        proc = self._udhcpc()
        ip = self._event("bound")["ip"]
        self.provisioner.kill()
        self.assertIn((self.client.mac, ip), _leaseRows(self.leases))
        self.provisioner.start()
        self.assertIn("1 leases loaded", self.provisioner.log())
        proc.send_signal(signal.SIGUSR1)
        self.assertEqual(self._event("renew")["ip"], ip)
        other = self.lab.addHost(addresses=False)
        result = other.run(["busybox", "udhcpc", "-q", "-n", "-f", "-i", "eth0", "-t", "5",
                            "-T", "1", "-r", ip, "-s", self.script])
        events = [f for e, f in readEvents(self.events) if e == "bound"]
        self.assertEqual(len(events), 2, result.stdout)
        self.assertNotEqual(events[1]["ip"], ip)


class InterfaceTests(TestCase):
    """
    The responder answers only on the interfaces it is told.
    """

    def test_otherInterfaceIgnored(self):
        """
        If provisioner is configured for eth1 only, a client on eth0's
        network gets no lease, though the DHCP socket is bound to 0.0.0.0:67.
        """
        requireE2E(root=True, netns=True, tools=["busybox", "ip"])
        lab = NetLab(hosts=1, subnet=33)
        self.addCleanup(lab.close)
        server = lab.hosts[0]
        server.run(["ip", "link", "add", "eth1", "type", "veth", "peer", "name", "eth1p"])
        server.run(["ip", "addr", "add", "198.18.32.1/24", "dev", "eth1"])
        server.run(["ip", "link", "set", "eth1", "up"])
        server.run(["ip", "link", "set", "eth1p", "up"])
        client = lab.addHost(addresses=False)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        config = (FULL % {"leases": os.path.join(directory, "l.sqlite"), "subnet": 33}).replace(
            "interfaces: [eth0]", "interfaces: [eth1]")
        config += ("    - network: 198.18.32.0/24\n"
                   "      range: [198.18.32.100, 198.18.32.150]\n")
        provisioner = Appliance(directory, config, host=server)
        self.addCleanup(provisioner.kill)
        provisioner.start()
        self.assertIn("responder on eth1 (198.18.32.1)", provisioner.log())
        script, events = writeUdhcpcScript(directory)
        result = client.run(["busybox", "udhcpc", "-q", "-n", "-f", "-i", "eth0", "-t", "3",
                             "-T", "1", "-s", script], check=False)
        self.assertNotEqual(result.returncode, 0)
        self.assertNotIn("bound", [e for e, _ in readEvents(events)])
        self.assertNotIn("ACK", provisioner.log())
