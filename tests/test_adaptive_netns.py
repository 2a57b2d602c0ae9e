# -*- test-case-name: tests.test_adaptive_netns -*-
"""
End-to-end: the appliance (twistd) in one namespace, C{provisioner fetch}
in another, random loss on the client's side (iptables statistic on its
INPUT chain) at 0.5%, 2% and 10%. Each transfer must be byte-exact, and its
window trace must show the client-adjustable window's behaviour: growth by
one, halving on a loss, and a maximum frozen 20% below the best window,
never exceeded after.
"""

import hashlib
import os

from twisted.trial.unittest import TestCase

from tests.netlab import PYTHON, REPO, Appliance, NetLab, requireE2E

PORT = 6969


def parseTrace(text):
    """
    The window trace printed by C{provisioner fetch --trace}:
    C{[(time, old, new, reason, maximum or None, frozen)]}.
    """
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 6 or line.startswith("#"):
            continue
        try:
            t, old, new = float(parts[0]), int(parts[1]), int(parts[2])
        except ValueError:
            continue
        maximum = None if parts[4] == "None" else int(parts[4])
        out.append((t, old, new, parts[3], maximum, parts[5] == "True"))
    return out


def startAppliance(lab, host, root, extra=""):
    """
    Run the appliance as a user would (twistd) on C{host}; return the
    L{Appliance} once the TFTP port is bound.
    """
    appliance = Appliance(
        os.path.dirname(root), "tftp:\n  address: %s\n  port: %d\n  root: %s\n%s" % (
            host.ip, PORT, root, extra), host=host, name="provisioner-%s" % (host.name,))
    return appliance.start(ready="TFTP listening on %s port %d" % (host.ip, PORT))


def fetchIn(host, server, path, output, *flags):
    """
    Run C{provisioner fetch} on C{host}; return its stdout.
    """
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = host.run([PYTHON, "-m", "provisioner", "fetch",
                     "tftp://%s:%d/%s" % (server.ip, PORT, path), "-o", output,
                     "--sha256", "--trace", "--stats"] + list(flags), env=env, cwd=REPO,
                    timeout=600)
    return proc.stdout.decode()


class LossTests(TestCase):
    """
    Adaptive fetches through random loss.
    """

    timeout = 900

    def setUp(self):
        requireE2E(root=True, netns=True, tools=["iptables", "ss"])
        self.lab = NetLab(hosts=2, subnet=41)
        self.addCleanup(self.lab.close)
        self.server, self.client = self.lab.hosts
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)
        # The server sends with UDP GSO: iptables would see (and drop) whole
        # 64-block super-packets. One segment per skb makes the loss per
        # datagram, as on a real link.
        self.server.run(["ip", "link", "set", "dev", "eth0", "gso_max_segs", "1"])
        startAppliance(self.lab, self.server, self.root)

    def transfer(self, loss, size):
        data = os.urandom(size)
        name = "image-%s.bin" % (loss,)
        with open(os.path.join(self.root, name), "wb") as f:
            f.write(data)
        self.client.loss(loss)
        output = os.path.abspath(self.mktemp())
        text = fetchIn(self.client, self.server, name, output, "--windowsize", "4",
                       "--decrease", "0")
        with open(output, "rb") as f:
            got = f.read()
        self.assertEqual(hashlib.sha256(got).hexdigest(), hashlib.sha256(data).hexdigest())
        self.assertIn(hashlib.sha256(data).hexdigest(), text)
        self.assertIn("mode adaptive", text)
        return parseTrace(text)

    def checkAdaptiveTrace(self, trace, loss):
        grows = [c for c in trace if c[3] == "grow"]
        drops = [c for c in trace if c[3] in ("loss", "timeout")]
        self.assertTrue(grows, "no growth at %s loss" % (loss,))
        self.assertTrue(all(new == old + 1 for _, old, new, _, _, _ in grows))
        self.assertTrue(drops, "no loss seen at %s loss" % (loss,))
        first = drops[0]
        # The largest successful window: the one before the last growth (or,
        # if the very first window failed, that window).
        before = [c[1] for c in grows if c[0] <= first[0]]
        best = max(before) if before else first[1]
        self.assertTrue(first[5], "maximum not frozen after the first loss")
        self.assertEqual(first[4], max(1, int(best * 0.8)))
        frozen = first[4]
        for t, old, new, reason, maximum, isFrozen in drops:
            self.assertEqual(new, max(1, min(old // 2, frozen)))
            self.assertEqual(maximum, frozen)
        self.assertTrue(all(c[2] <= frozen for c in trace if c[0] >= first[0]))

    def test_halfPercent(self):
        """
        If 0.5% of the packets reaching the client are dropped, the fetch is
        byte-exact and the trace shows growth by one, halving and the frozen
        maximum.
        """
        self.checkAdaptiveTrace(self.transfer(0.005, 16 * 1024 * 1024), 0.005)

    def test_twoPercent(self):
        """
        If 2% are dropped, likewise.
        """
        self.checkAdaptiveTrace(self.transfer(0.02, 8 * 1024 * 1024), 0.02)

    def test_tenPercent(self):
        """
        If 10% are dropped, likewise (the window mostly stays small).
        """
        self.checkAdaptiveTrace(self.transfer(0.10, 4 * 1024 * 1024), 0.10)
