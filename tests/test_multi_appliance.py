"""
End-to-end: two appliances (twistd, each in its own network namespace) on
one bridge and one PostgreSQL database (a throwaway cluster of
L{tests.pglab}, reached over its unix socket), serving full DHCP together
to C{perfdhcp} (Debian's kea-admin) and a few busybox udhcpc clients:

  - every client gets an address, no address is held by two clients (the
    database, perfdhcp's own uniqueness check, the udhcpc clients), and
    both appliances answered a share;
  - C{kill -9} of one appliance in the middle of a burst: the other answers
    its clients within the failover bound, and every client still ends up
    with one address; the killed one, restarted, is live again;
  - PostgreSQL stopped mid-run: renewals of known leases are still ACKed,
    new clients get nothing, the outage is logged once per appliance, and
    service resumes by itself when the database is back.

Lab: subnet 195 (198.18.195.0/24 on the lab links), the pool is
198.18.192.10 - 198.18.194.250 of 198.18.192.0/22.
"""

import os
import re
import signal
import time

from twisted.trial.unittest import TestCase

from provisioner.store.postgres_leases import owner
from tests import pglab
from tests.netlab import Appliance, NetLab, requireE2E, waitFor
from tests.qemu_lab import readEvents, writeUdhcpcScript

SUBNET = 195
LEASE_TIME = 600
FAILOVER = 3.0
PERFDHCP_BASE = "02:aa:00:00:00:00"

CONFIG = """\
tftp:
  enabled: false
dhcp:
  enabled: true
  mode: full
  interfaces: [eth0]
  lease_time: %(leaseTime)d
  subnets:
    - network: 198.18.192.0/22
      range: [198.18.192.10, 198.18.194.250]
store:
  backend: postgresql
  dsn: '%(dsn)s'
  appliance_id: %(id)s
  failover_after: %(failover)s
log:
  level: info
"""


def ackNonUnique(out):
    """
    perfdhcp's count of ACKed addresses it had already seen ACKed to
    another client (C{-u}).
    """
    section = out[out.index("Statistics for: REQUEST-ACK"):]
    return int(re.search(r"non unique addresses: (\d+)", section).group(1))


class TwoAppliancesTests(TestCase):
    """
    Two appliances, one database, one bridge.
    """

    def setUp(self):
        requireE2E(root=True, netns=True, tools=["busybox", "ip", "perfdhcp"])
        self.cluster = pglab.cluster(self)
        self.dsn = self.cluster.createDatabase()
        self.lab = NetLab(hosts=2, subnet=SUBNET)
        self.addCleanup(self.lab.close)
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.appliances = {}
        for name, host in zip("ab", self.lab.hosts):
            directory = os.path.join(self.directory, name)
            os.makedirs(directory)
            appliance = Appliance(directory, CONFIG % {
                "leaseTime": LEASE_TIME, "dsn": self.dsn, "id": name, "failover": FAILOVER},
                host=host)
            self.addCleanup(appliance.kill)
            self.appliances[name] = appliance
        self.perf = self.lab.addHost()  # 198.18.195.3: perfdhcp's source
        for appliance in self.appliances.values():
            appliance.start()
        for appliance in self.appliances.values():
            appliance.waitLog(r"appliances live on the shared store: a, b", 15)

    def tail(self):
        return "\n".join("--- %s ---\n%s" % (n, a.log()[-2500:])
                         for n, a in sorted(self.appliances.items()))

    def rows(self, where="", args=()):
        return self.cluster.query(
            self.dsn, "SELECT host(ip), mac, state, appliance, expires FROM leases " + where,
            args)

    def bound(self, prefix="02:aa:"):
        return [r for r in self.rows("WHERE state = 'bound'") if r[1].startswith(prefix)]

    def assertUnique(self):
        """
        No client holds two addresses in the database (an address holds
        one client by its key).
        """
        doubles = self.cluster.query(self.dsn, "SELECT mac, count(*) FROM leases WHERE state = "
                                     "'bound' GROUP BY mac HAVING count(*) > 1")
        self.assertEqual(doubles, [])

    def perfdhcp(self, clients, background=False, extra=(), avalanche=True,
                 base=PERFDHCP_BASE):
        """
        Run perfdhcp in the perf namespace. Its avalanche scenario: each of
        C{clients} MACs does one DORA, retransmitting until it is ACKed,
        checking that no address is given twice (C{-u}); else its basic
        one (C{extra} says the rate and period).
        """
        argv = ["perfdhcp", "-4", "-l", "eth0", "-R", str(clients), "-b", "mac=" + base]
        if avalanche:
            argv += ["--scenario", "avalanche", "-u"]
        argv += list(extra) + ["-B", "all"]
        if background:
            return self.perf.popen(argv)
        return self.perf.run(argv, check=False, timeout=300)

    def udhcpc(self, count):
        """
        C{count} busybox udhcpc clients in namespaces of their own, each
        with its own event file; wait until each is bound.

        @return: C{[(host, process, events path)]}.
        """
        clients = []
        for i in range(count):
            host = self.lab.addHost(addresses=False)
            directory = os.path.join(self.directory, "udhcpc%d" % (i,))
            os.makedirs(directory)
            script, events = writeUdhcpcScript(directory)
            proc = host.popen(["busybox", "udhcpc", "-f", "-i", "eth0", "-t", "20", "-T", "1",
                               "-A", "1", "-s", script])
            clients.append((host, proc, events))
        for host, proc, events in clients:
            found = waitFor(lambda: [f for e, f in readEvents(events) if e == "bound"], 30)
            self.assertTrue(found, "udhcpc %s not bound: %r\n%s" % (
                host.mac, readEvents(events), self.tail()))
        return clients

    def test_shareOnePool(self):
        """
        If 250 perfdhcp clients and 3 udhcpc clients ask two appliances at
        once, every one gets an address, no address goes to two clients
        (the database, perfdhcp C{-u}, the udhcpc clients), and each
        appliance answered a share (the leases' appliance column); each
        udhcpc lease is in the database for its MAC.
        """
        clients = self.udhcpc(3)
        result = self.perfdhcp(250)
        out = result.stdout.decode(errors="replace")
        self.assertEqual(result.returncode, 0, out + self.tail())
        self.assertEqual(ackNonUnique(out), 0, out)
        bound = self.bound()
        self.assertEqual(len({r[1] for r in bound}), 250, out)
        self.assertEqual(len({r[0] for r in bound}), 250)
        self.assertUnique()
        shares = {}
        for ip, mac, state, appliance, expires in bound:
            shares[appliance] = shares.get(appliance, 0) + 1
            self.assertEqual(appliance, owner(mac, ("a", "b")), mac)
        self.assertEqual(set(shares), {"a", "b"})
        self.assertTrue(min(shares.values()) > 60, shares)
        ips = []
        for host, proc, events in clients:
            ip = [f for e, f in readEvents(events) if e == "bound"][-1]["ip"]
            ips.append(ip)
            self.assertEqual(self.rows("WHERE mac = %s AND state = 'bound'", (host.mac,))[0][0],
                             ip)
        self.assertEqual(len(set(ips)), 3)

    def test_killOneMidBurst(self):
        """
        If appliance b is killed (SIGKILL) in the middle of a burst of 600
        clients: a counts b gone within failover_after plus a heartbeat (and
        a second of slack) and answers b's clients from then on, also the
        REQUESTs that selected b (its offers are in the database); every
        client gets one address, none twice (the database and perfdhcp);
        b, restarted, is live again.
        """
        a, b = self.appliances["a"], self.appliances["b"]
        offset = len(a.log())
        perf = self.perfdhcp(600, background=True)
        answered = waitFor(lambda: len(self.rows("WHERE appliance = 'b' AND state = 'bound'"))
                           >= 20, 30, interval=0.01)
        self.assertTrue(answered, "b bound nothing:\n" + self.tail())
        b.kill()
        killed = time.monotonic()
        self.assertIsNone(perf.poll(), "the burst was over before the kill")
        a.waitLog(r"appliances live on the shared store: a \(this", FAILOVER + 4, after=offset)
        self.assertLess(time.monotonic() - killed, FAILOVER + 1.0 + 1.0)
        out, _ = perf.communicate(timeout=180)
        out = out.decode(errors="replace")
        self.assertEqual(perf.returncode, 0, out + self.tail())
        self.assertEqual(ackNonUnique(out), 0, out)
        bound = self.bound()
        self.assertEqual(len({r[1] for r in bound}), 600, out)
        self.assertUnique()
        self.assertIn("b", {r[3] for r in bound}, "b answered nothing before the kill")
        adopted = [r for r in bound if r[3] == "a" and owner(r[1], ("a", "b")) == "b"]
        self.assertTrue(adopted, "a answered none of b's clients:\n" + self.tail())
        offset = len(a.log())
        b.start()
        a.waitLog(r"appliances live on the shared store: a, b", 15, after=offset)

    def test_databaseAway(self):
        """
        If PostgreSQL stops while clients hold leases: each appliance logs
        the outage once; renewals (udhcpc, unicast to the appliance that
        granted the lease) are ACKed with the same address; new clients get
        nothing; when PostgreSQL is back, both log it, the renewals are in
        the database, and new clients get addresses again.
        """
        clients = self.udhcpc(3)
        before = {host.mac: self.rows("WHERE mac = %s", (host.mac,))[0][4]
                  for host, _, _ in clients}
        self.cluster.stop()
        try:
            for appliance in self.appliances.values():
                appliance.waitLog("shared store unreachable", 10)
            time.sleep(1.0)
            for host, proc, events in clients:
                ip = [f for e, f in readEvents(events) if e == "bound"][-1]["ip"]
                proc.send_signal(signal.SIGUSR1)
                found = waitFor(lambda: [f for e, f in readEvents(events) if e == "renew"], 15)
                self.assertTrue(found, "no renewal for %s: %r\n%s" % (
                    host.mac, readEvents(events), self.tail()))
                self.assertEqual(found[-1]["ip"], ip)
            result = self.perfdhcp(20, avalanche=False, base="02:bb:00:00:00:00",
                                   extra=["-r", "10", "-p", "3"])
            out = result.stdout.decode(errors="replace")
            self.assertEqual(re.findall(r"received packets: (\d+)", out)[:1], ["0"], out)
            for appliance in self.appliances.values():
                self.assertEqual(appliance.log().count("shared store unreachable"), 1)
        finally:
            self.cluster.start()
        for appliance in self.appliances.values():
            appliance.waitLog("shared store reachable again", 10)
        for host, _, _ in clients:
            renewed = waitFor(lambda: self.rows("WHERE mac = %s", (host.mac,))[0][4] >
                              before[host.mac], 10)
            self.assertTrue(renewed, "renewal of %s not written" % (host.mac,))
        result = self.perfdhcp(30)
        out = result.stdout.decode(errors="replace")
        self.assertEqual(result.returncode, 0, out + self.tail())
        self.assertEqual(len(self.bound()), 30)
        self.assertUnique()
