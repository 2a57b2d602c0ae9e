"""
Test beds for multi-host behaviour: network namespaces, veth pairs and a
bridge, created by a test and always removed.

Network safety: every namespace is named C{prov...}; addresses come from
198.18.0.0/15 (RFC 2544 benchmarking range); nothing touches the host's own
interfaces. Loss is made with iptables C{-m statistic} inside a namespace.

Also here: L{requireE2E}, the one rule for skipping tests that need root or
a tool: they skip with a reason, except when C{PROVISIONER_REQUIRE_E2E=1}
(CI), where a skip is a failure; and L{Appliance}, the one way the
end-to-end tests run the appliance as a user would (twistd), on this
machine or inside a lab host, and read its log.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid

from twisted.trial.unittest import SkipTest

from provisioner.hashing import sha256File

__all__ = ["requireE2E", "NetLab", "Host", "Appliance", "LoopbackAppliance", "REPO", "PYTHON",
           "TWISTD", "run", "waitFor", "sha256File"]

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


def _readText(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


class Appliance:
    """
    The appliance run as a user runs it: C{twistd -n provisioner --config
    FILE} in a subprocess, on this machine or inside a lab L{Host}, logging
    to a file in its directory. What twistd prints before its log starts (a
    traceback) goes to C{NAME.out} beside it.

    @ivar directory: where the configuration and the log are, and the
        process's working directory.
    @ivar configPath: the configuration file.
    @ivar logPath: the log file.
    @ivar host: the L{Host} it runs in, or L{None} for this machine.
    @ivar process: the L{subprocess.Popen} once started.
    """

    def __init__(self, directory, config=None, host=None, name="provisioner"):
        """
        @param config: the configuration text to write, if any.
        """
        self.directory = directory
        self.host = host
        self.configPath = os.path.join(directory, name + ".yaml")
        self.logPath = os.path.join(directory, name + ".log")
        self._outPath = os.path.join(directory, name + ".out")
        self.process = None
        if config is not None:
            self.writeConfig(config)

    def writeConfig(self, text):
        """
        Write the configuration (read at the next start, or on SIGHUP).
        """
        with open(self.configPath, "w") as f:
            f.write(text)

    def start(self, ready="provisioner started", timeout=30):
        """
        Start it and wait until the log says C{ready} (after what an
        earlier run logged).

        @return: this L{Appliance}.
        @raise AssertionError: it exited or said nothing within C{timeout}
            seconds; the message carries the end of its log.
        """
        offset = len(self.log())
        argv = TWISTD + ["-n", "--pidfile=", "--logfile=" + self.logPath, "provisioner",
                         "--config", self.configPath]
        popen = self.host.popen if self.host is not None else subprocess.Popen
        with open(self._outPath, "ab") as out:
            self.process = popen(argv, cwd=self.directory, env=dict(os.environ, PYTHONPATH=REPO),
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        self.waitLog(re.escape(ready), timeout, after=offset)
        return self

    def log(self):
        """
        The log so far, as text.
        """
        return _readText(self.logPath)

    def _tail(self):
        """
        The end of the log, and what twistd printed outside it.
        """
        out = _readText(self._outPath)
        return self.log()[-4000:] + ("\n(outside the log:)\n" + out[-2000:] if out else "")

    def waitLog(self, pattern, timeout=30, after=0):
        """
        Wait for the regular expression C{pattern} in the log, searched from
        character C{after}.

        @return: the match.
        @raise AssertionError: the process exited or C{timeout} seconds
            passed first; the message carries the end of the log.
        """
        regex = re.compile(pattern)
        found = waitFor(lambda: regex.search(self.log(), after) or self.process.poll() is not None,
                        timeout)
        if not isinstance(found, re.Match):
            found = regex.search(self.log(), after)
        if found is None:
            state = "exited (%s)" % (self.process.returncode,) \
                if self.process.poll() is not None else "running"
            raise AssertionError("no %r in the appliance's log (%s):\n%s" % (
                pattern, state, self._tail()))
        return found

    def listeningPort(self, service, after=0):
        """
        The port the log last said C{service} (C{"TFTP"}, C{"HTTP"})
        listens on, or L{None}.
        """
        ports = re.findall(r"%s listening on \S+ port (\d+)" % (re.escape(service),),
                           self.log()[after:])
        return int(ports[-1]) if ports else None

    def signal(self, signum):
        """
        Send C{signum} (C{SIGHUP}: reload the configuration).
        """
        self.process.send_signal(signum)

    def stop(self, timeout=20):
        """
        Stop it as an operator would (SIGTERM); SIGKILL if it does not exit
        within C{timeout} seconds.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self):
        """
        Kill it at once (SIGKILL), as a power cut would.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(15)


class LoopbackAppliance(Appliance):
    """
    An L{Appliance} on 127.0.0.1 with ports the kernel picks: TFTP (root
    C{tftpboot}), the image catalogue (C{images}, watched with inotify),
    menus and HTTP, everything in its directory.

    @ivar images: the images directory.
    @ivar httpPort: the HTTP port, once started.
    @ivar tftpPort: the TFTP port once started, or L{None}.
    """

    CONFIG = """\
tftp:
  enabled: true
  address: 127.0.0.1
  port: 0
  root: {d}/tftpboot
images:
  enabled: true
  directory: {d}/images
  state_dir: {d}/state
  watch: inotify
menus:
  enabled: true
http:
  enabled: true
  address: 127.0.0.1
  port: 0
"""

    def __init__(self, directory, extra=""):
        """
        @param extra: more configuration, appended.
        """
        self.images = os.path.join(directory, "images")
        os.makedirs(self.images, exist_ok=True)
        os.makedirs(os.path.join(directory, "tftpboot"), exist_ok=True)
        Appliance.__init__(self, directory, self.CONFIG.format(d=directory) + extra)
        self.httpPort = None
        self.tftpPort = None

    def start(self, timeout=30):
        """
        Start it, wait for the catalogue (up to a minute) and read the
        ports from the log.
        """
        offset = len(self.log())
        Appliance.start(self, timeout=timeout)
        self.waitLog("image catalogue ready", 60, after=offset)
        self.httpPort = self.listeningPort("HTTP", after=offset)
        self.tftpPort = self.listeningPort("TFTP", after=offset)
        if self.httpPort is None:
            raise AssertionError("HTTP did not start:\n" + self._tail())
        return self

    def url(self, path):
        return "http://127.0.0.1:%d/%s" % (self.httpPort, path)

    def curl(self, path, output, *extra):
        """
        Fetch C{path} over HTTP with curl into C{output}.

        @return: C{(status code, bytes received)}.
        """
        result = subprocess.run(
            ["curl", "-s", "-o", output, "-w", "%{http_code} %{size_download}"] +
            list(extra) + [self.url(path)], stdout=subprocess.PIPE, timeout=120)
        code, size = result.stdout.decode().split()
        return int(code), int(size)

    def catalogued(self, name, sha=None):
        """
        Whether the log says C{name} was catalogued (with C{sha}).
        """
        pattern = "image %s catalogued:" % (name,)
        lines = [line for line in self.log().splitlines() if pattern in line]
        if sha is None:
            return bool(lines)
        return any(sha in line for line in lines)


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


def startTFTPService(case, pairs, linger):
    """
    Start the appliance's TFTP service in this process, on the real reactor
    and 127.0.0.1 (port 0), for tests whose client runs in the same
    process: C{pairs} are config overrides. The fast lane (a blocking wait
    for the next ACK while one transfer is in flight) is off, since it
    would stall a client on the same reactor. Stopped at the end of the
    test, then C{linger} seconds are left for finished sessions' dally.

    @return: the service (C{listeningPort} is its port).
    """
    from twisted.internet import reactor, task

    from provisioner.appliance import Appliance
    from provisioner.config import loadConfig
    from provisioner.tftp.service import makeService
    config = loadConfig(overrides=[("tftp.port", 0), ("tftp.fast_lane", False)] + list(pairs))
    service = makeService(Appliance(config, reactor))
    service.startService()
    case.addCleanup(task.deferLater, reactor, linger, lambda: None)
    case.addCleanup(service.stopService)
    return service
