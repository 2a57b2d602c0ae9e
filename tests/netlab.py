"""
Test beds for multi-host behaviour: network namespaces, veth pairs and a
bridge, created by a test and always removed.

Network safety: every namespace is named C{prov...}; addresses come from
198.18.0.0/15 (RFC 2544 benchmarking range); nothing touches the host's own
interfaces. Loss is made with iptables C{-m statistic} inside a namespace.

Also here: L{requireE2E}, the one rule for skipping tests that need root or
a tool: they skip with a reason, except when C{PROVISIONER_REQUIRE_E2E=1}
(CI), where a skip is a failure.
"""

import os
import shutil
import subprocess
import sys
import time
import uuid

from twisted.trial.unittest import SkipTest

from provisioner.hashing import sha256File

__all__ = ["requireE2E", "NetLab", "Host", "REPO", "PYTHON", "TWISTD", "run", "waitFor",
           "sha256File"]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
# The twistd entry point as a command (C{python -m twisted.scripts.twistd}
# does nothing on Twisted >= 24: the module has no C{__main__} guard).
TWISTD = [PYTHON, "-c", "from twisted.scripts.twistd import run; run()"]


def waitFor(predicate, timeout, interval=0.05):
    """
    Poll C{predicate} until it returns something true or C{timeout} seconds
    pass; return its last value.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def run(argv, check=True, **kw):
    """
    Run a command, capture its output; raise with the output on failure.
    """
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)
    if check and proc.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (
            " ".join(argv), proc.returncode, proc.stdout.decode(errors="replace")))
    return proc


def requireE2E(root=False, tools=(), netns=False):
    """
    Skip (or, under C{PROVISIONER_REQUIRE_E2E=1}, fail) unless the test can
    really run: root, network namespaces, and each tool on C{PATH}.

    @raise SkipTest: when something is missing and E2E is not required.
    @raise AssertionError: when something is missing and E2E is required.
    """
    missing = []
    if (root or netns) and os.geteuid() != 0:
        missing.append("root")
    for tool in tools:
        if shutil.which(tool) is None and not os.path.exists(tool):
            missing.append(tool)
    if netns and not missing:
        name = "provchk%s" % (uuid.uuid4().hex[:6],)
        probe = subprocess.run(["ip", "netns", "add", name], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
        if probe.returncode != 0:
            missing.append("network namespaces (%s)" % (probe.stdout.decode().strip(),))
        else:
            subprocess.run(["ip", "netns", "del", name])
    if missing:
        reason = "needs " + ", ".join(missing)
        if os.environ.get("PROVISIONER_REQUIRE_E2E") == "1":
            raise AssertionError("PROVISIONER_REQUIRE_E2E=1 but this test " + reason)
        raise SkipTest(reason)


class Host:
    """
    One namespace: a host on the lab bridge.

    @ivar name: the namespace name.
    @ivar ip: its address on the lab network (198.18.x.y).
    @ivar ifname: its interface name inside the namespace.
    """

    def __init__(self, lab, name, ip, ifname, mac):
        self.lab = lab
        self.name = name
        self.ip = ip
        self.ifname = ifname
        self.mac = mac

    def argv(self, argv):
        """
        Return C{argv} wrapped to run inside this namespace.
        """
        return ["ip", "netns", "exec", self.name] + list(argv)

    def run(self, argv, check=True, **kw):
        return run(self.argv(argv), check=check, **kw)

    def popen(self, argv, **kw):
        """
        Start a process inside this namespace; the lab kills it at teardown.
        """
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.STDOUT)
        proc = subprocess.Popen(self.argv(argv), **kw)
        self.lab.processes.append(proc)
        return proc

    def loss(self, probability, chain="INPUT", protocol="udp", extra=()):
        """
        Drop a random fraction of packets in C{chain} (iptables statistic).
        """
        if probability <= 0:
            return
        self.run(["iptables", "-w", "-A", chain, "-p", protocol] + list(extra) +
                 ["-m", "statistic", "--mode", "random", "--probability",
                  "%.4f" % (probability,), "-j", "DROP"])


class NetLab:
    """
    A bridge namespace and N host namespaces, each with one veth into the
    bridge. C{with NetLab(...) as lab:} or call L{close} (tests use
    C{addCleanup(lab.close)}).

    Hosts get 198.18.<subnet>.<1+i>/24; IPv6 is disabled on the lab links so
    that clients do not wait for router advertisements.
    """

    def __init__(self, hosts=2, subnet=0, tag=None, addresses=True):
        self.tag = tag or uuid.uuid4().hex[:6]
        self.prefix = "prov%s" % (self.tag,)
        self.bridgeNS = self.prefix + "br"
        self.hosts = []
        self.processes = []
        self.namespaces = []
        self.subnet = subnet
        try:
            self._build(hosts, addresses)
        except BaseException:
            self.close()
            raise

    def _ns(self, name):
        run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"])
        for knob in ("net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"):
            run(["ip", "netns", "exec", name, "sysctl", "-qw", knob], check=False)

    def _build(self, count, addresses):
        self._ns(self.bridgeNS)
        br = ["ip", "netns", "exec", self.bridgeNS]
        run(br + ["ip", "link", "add", "br0", "type", "bridge"])
        # No multicast snooping so that groups flood like a dumb switch.
        run(br + ["ip", "link", "set", "br0", "type", "bridge", "mcast_snooping", "0"],
            check=False)
        run(br + ["ip", "link", "set", "br0", "up"])
        for i in range(count):
            self.addHost(addresses=addresses)

    def addHost(self, addresses=True):
        """
        Add one more host to the bridge and return its L{Host}.
        """
        i = len(self.hosts)
        name = "%sh%d" % (self.prefix, i)
        self._ns(name)
        outer = "v%s%d" % (self.tag, i)
        mac = "02:18:%02x:%02x:00:%02x" % (self.subnet & 0xff, (i >> 8) & 0xff, i & 0xff)
        run(["ip", "link", "add", outer, "type", "veth", "peer", "name", "eth0",
             "netns", name])
        run(["ip", "link", "set", outer, "netns", self.bridgeNS])
        br = ["ip", "netns", "exec", self.bridgeNS]
        run(br + ["ip", "link", "set", outer, "master", "br0", "up"])
        inner = ["ip", "netns", "exec", name]
        run(inner + ["ip", "link", "set", "eth0", "address", mac])
        ip = "198.18.%d.%d" % (self.subnet, i + 1)
        if addresses:
            run(inner + ["ip", "addr", "add", ip + "/24", "dev", "eth0"])
        run(inner + ["ip", "link", "set", "eth0", "up"])
        # A route for multicast out of the lab interface.
        run(inner + ["ip", "route", "add", "224.0.0.0/4", "dev", "eth0"], check=False)
        host = Host(self, name, ip if addresses else None, "eth0", mac)
        self.hosts.append(host)
        return host

    def close(self):
        """
        Kill the lab's processes and remove every namespace it made.
        """
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(10)
            except Exception:
                pass
            for stream in (proc.stdout, proc.stderr, proc.stdin):
                if stream is not None:
                    stream.close()
        self.processes = []
        for name in reversed(self.namespaces):
            # Kill anything left inside (e.g. a daemon that forked).
            pids = subprocess.run(["ip", "netns", "pids", name], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (OSError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", name], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        self.namespaces = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
