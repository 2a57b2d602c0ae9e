#!/usr/bin/env python3
"""
Benchmark: control-channel multicast (provisioner) against udpcast
(udp-sender/udp-receiver) and UFTP (uftp/uftpd), in one run, on one lab of
network namespaces (a sender and N receivers on a bridge).

For every N and loss rate each tool sends the same image to N receivers;
loss is iptables statistic on every protocol (data and control alike), in
each direction of each receiver's path: what reaches a receiver is dropped
in its INPUT chain, what it sends is dropped in the sender's INPUT chain
(by source address). Measured:

  - time: from starting the sender to every receiver done (receivers are
    started first; provisioner's clock starts once each holds its control
    connection, the peers' after one second);
  - provisioner also reports rx_cpu/rx_sys: CPU seconds per receiver
    process (Python start-up and the send command's share included);
  - wire: the bytes the sender's interface transmitted (/proc/net/dev, all
    protocols, Ethernet headers included) divided by the image size;
  - lost: receivers that did not end with a byte-exact image;
  - ideal: the minimal union, sum over k >= 0 of 1 - (1 - p^k)^N copies of
    each byte (every byte once, plus each re-send that at least one
    receiver still needs); "ideal wire" adds the unavoidable Ethernet, IP
    and UDP headers of full 1500-byte frames (x 1514/1472).

Run as root: python3 bench/imagecast_bench.py [--size-mib 128] [--n 2 8 16]
[--loss 0 1 5] [--tools provisioner udpcast uftp]. Prints a table and
writes JSON with --json FILE.
"""

import argparse
import binascii
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from tests.netlab import NetLab, PYTHON  # noqa: E402

TWISTD = [PYTHON, "-c", "from twisted.scripts.twistd import run; run()"]
# Every tool's sender runs at a higher priority: on a real network it has a
# machine of its own, here it shares two cores with N receivers.
NICE = ["nice", "-n", "-10"]
FRAME = 1514.0 / 1472.0
# udpcast's default rendezvous (the interface broadcast address, 224.0.0.1
# control) does not meet in the lab; a multicast rendezvous does.
RDV = "239.1.2.3"


def idealCopies(p, n):
    total = 0.0
    k = 0
    while True:
        term = 1.0 - (1.0 - p ** k) ** n
        total += term
        k += 1
        if term < 1e-9 or k > 200:
            return total


def txBytes(host):
    out = host.run(["cat", "/proc/net/dev"]).stdout.decode()
    for line in out.splitlines():
        if line.strip().startswith(host.ifname + ":"):
            fields = line.split(":", 1)[1].split()
            return int(fields[8])
    raise RuntimeError("no %s in /proc/net/dev" % (host.ifname,))


def sha256(path):
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while True:
                b = f.read(1 << 20)
                if not b:
                    break
                h.update(b)
    except OSError:
        return None
    return h.hexdigest()


class Bench:

    def __init__(self, args):
        self.args = args
        # image and outputs in memory when possible: the comparison is about
        # the network protocols, not about the disk this machine shares
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and not args.on_disk else None
        self.dir = tempfile.mkdtemp(prefix="mcastbench", dir=shm)
        self.image = os.path.join(self.dir, "images", "disk.img")
        os.makedirs(os.path.dirname(self.image))
        size = args.size_mib << 20
        with open(self.image, "wb") as f:
            left = size
            while left:
                n = min(left, 1 << 22)
                f.write(os.urandom(n))
                left -= n
        self.size = size
        self.sha = sha256(self.image)
        self.env = dict(os.environ, PYTHONPATH=REPO)
        # byte-compiled as an installed package is (where the environment
        # says PYTHONDONTWRITEBYTECODE, every start would compile the
        # package again, inside send's time)
        subprocess.run([PYTHON, "-m", "compileall", "-q", os.path.join(REPO, "provisioner")],
                       stdout=subprocess.DEVNULL, check=False)

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def lab(self, n, loss):
        lab = NetLab(hosts=n + 1, subnet=60)
        sender = lab.hosts[0]
        # a real NIC puts single frames on the wire: have the kernel cut UDP
        # GSO batches before the veth, so that loss applies per datagram
        sender.run(["ip", "link", "set", "dev", "eth0", "gso_max_segs", "1"])
        for h in lab.hosts[1:]:
            h.run(["sysctl", "-qw", "net.core.rmem_max=67108864"], check=False)
            # each receiver's two directions lose packets independently, as
            # on a wire: what it sends is dropped where it arrives (the
            # sender's INPUT), not in its own OUTPUT chain, where the drop
            # is reported to the socket (EPERM) and TCP waits out its
            # 200 ms probe timer, which no wire loss does
            h.loss(loss, chain="INPUT", protocol="all")
            sender.loss(loss, chain="INPUT", protocol="all", extra=("-s", h.ip))
        return lab

    def outputs(self, n, tool):
        d = os.path.join(self.dir, "out-" + tool)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        return d

    def verify(self, paths):
        return sum(1 for p in paths if sha256(p) != self.sha)

    # -- provisioner -------------------------------------------------------

    def runProvisioner(self, lab, n, loss):
        sender = lab.hosts[0]
        out = self.outputs(n, "provisioner")
        rate = self.args.rate.get(n, self.args.rate.get(0, 300))
        config = os.path.join(self.dir, "p.yaml")
        # receivers authenticate as in production: one secret each
        receivers = os.path.join(self.dir, "receivers")
        secrets = []
        with open(receivers, "w") as f:
            for i in range(n):
                secret = binascii.hexlify(os.urandom(32)).decode()
                path = os.path.join(self.dir, "r%d.secret" % (i,))
                with open(path, "w") as g:
                    g.write(secret + "\n")
                secrets.append(path)
                f.write("r%d %s\n" % (i, secret))
        os.chmod(receivers, 0o600)
        with open(config, "w") as f:
            f.write("tftp: {enabled: false}\nimagecast:\n  enabled: true\n  address: 0.0.0.0\n"
                    "  root: %s\n  interface: %s\n  rate: %s\n  rate_max: 2000\n"
                    "  report_timeout: 10\n  receivers_file: %s\n" % (
                        os.path.dirname(self.image), sender.ip, rate, receivers))
            for kv in self.args.set:
                key, _, value = kv.partition("=")
                f.write("  %s: %s\n" % (key, value))
            shutil.rmtree(os.path.join(self.dir, "state"), ignore_errors=True)
            if self.args.catalog:
                # the production path: the catalogue hashes images when they
                # appear, before any session; send takes its digest
                f.write("images:\n  enabled: true\n  directory: %s\n  state_dir: %s\n" % (
                    os.path.dirname(self.image), os.path.join(self.dir, "state")))
        log = open(os.path.join(self.dir, "server.log"), "wb")
        server = sender.popen(NICE + TWISTD + ["-n", "--pidfile=", "provisioner", "--config",
                                               config],
                              env=self.env, stdout=log)
        deadline = time.time() + 30
        while b"7010" not in sender.run(["ss", "-Hltn", "sport = :7010"]).stdout:
            if time.time() > deadline:
                raise RuntimeError("appliance did not start")
            time.sleep(0.1)
        if self.args.catalog:
            deadline = time.time() + 120
            logPath = os.path.join(self.dir, "server.log")
            while b"disk.img catalogued" not in open(logPath, "rb").read():
                if time.time() > deadline:
                    raise RuntimeError("the catalogue did not hash the image")
                time.sleep(0.2)
        paths = []
        procs = []
        for i, h in enumerate(lab.hosts[1:]):
            p = os.path.join(out, "r%d" % i)
            paths.append(p)
            # made first: receive refuses a name below /dev (here the tmpfs
            # /dev/shm) that does not exist, as a missing device
            open(p, "ab").close()
            procs.append(h.popen([PYTHON, "-m", "provisioner", "receive", "--server", sender.ip,
                                  "--output", p, "--id", "r%d" % (i,),
                                  "--secret-file", secrets[i], "-q", "--json"], env=self.env,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
        time.sleep(1.0)
        # the peers' receivers (C) are ready well within that second; a
        # Python receiver on a loaded machine may not be: the clock starts
        # once every receiver holds its control connection, as it would
        # have for a long while on a real rack
        deadline = time.time() + 60
        while time.time() < deadline:
            out = sender.run(["ss", "-Htn", "state", "established", "sport = :7010"]).stdout
            if len(out.splitlines()) >= n:
                break
            time.sleep(0.1)
        # ... and has registered over it (a Register lost on a new
        # connection waits out TCP's first retransmission timeout)
        while time.time() < deadline:
            status = sender.run([PYTHON, "-m", "provisioner", "imagecast", "status", "--json"],
                                check=False, env=self.env)
            try:
                if len(json.loads(status.stdout.decode()).get("receivers", [])) >= n:
                    break
            except ValueError:
                pass
            time.sleep(0.1)
        before = txBytes(sender)
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.time()
        send = subprocess.run(sender.argv([
            PYTHON, "-m", "provisioner", "imagecast", "send", "disk.img",
            "--min-receivers", str(n), "--max-wait", "60", "--json"]),
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            timeout=self.args.timeout)
        summaries = []
        for p in procs:
            try:
                text = p.communicate(timeout=self.args.timeout)[0]
                summaries.append(json.loads(text.decode().strip().splitlines()[-1]))
            except (ValueError, IndexError, subprocess.TimeoutExpired):
                summaries.append({})
        elapsed = time.time() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        # the receivers' CPU (and the send command's, a fraction of a second)
        rxCPU = (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / n
        rxSys = (cpu1.ru_stime - cpu0.ru_stime) / n
        wire = txBytes(sender) - before
        try:
            card = json.loads(send.stdout.decode())
        except ValueError:
            card = {}
        server.terminate()
        server.wait(10)
        log.close()
        rounds = len(card.get("rounds", []))
        payload = sum(r["bytes"] for r in card.get("rounds", []))
        detail = [dict(round=r.get("round"), bytes=r.get("bytes"), rate=r.get("rate_mbps"),
                       started=round(r.get("started", 0), 2),
                       seconds=round(r.get("seconds", 0), 2),
                       announce=r.get("announce_seconds"), collect=r.get("collect_seconds"),
                       paused=r.get("paused")) for r in card.get("rounds", [])]
        # the tail: from the last round's reports to the last receiver's
        # Complete (its sha256 check), and each receiver's check
        rs = card.get("rounds", [])
        lastEnd = (rs[-1].get("started", 0) + rs[-1].get("seconds", 0)
                   + (rs[-1].get("collect_seconds") or 0)) if rs else 0
        done = sorted(m.get("completed_at") or 0 for m in card.get("members", {}).values())
        verify = sorted(x.get("verify_seconds") or 0 for x in summaries)
        inOrder = [x.get("hashed_in_order", 0) for x in summaries]
        tail = dict(last_round_end=round(lastEnd, 2),
                    completed_at=[round(x, 2) for x in done],
                    verify_s=[round(x, 2) for x in verify],
                    hashed_in_order_mib=round(sum(inOrder) / max(1, len(inOrder)) / 2 ** 20, 1))
        return dict(time=elapsed, wire=wire, lost=self.verify(paths), rounds=rounds,
                    payload=payload, unrecoverable=card.get("unrecoverable_bytes", 0),
                    session_s=card.get("elapsed"), rx_cpu=round(rxCPU, 2), rx_sys=round(rxSys, 2), round_detail=detail,
                    tail=tail)

    # -- udpcast --------------------------------------------------------------

    def runUdpcast(self, lab, n, loss):
        sender = lab.hosts[0]
        out = self.outputs(n, "udpcast")
        paths = []
        procs = []
        for i, h in enumerate(lab.hosts[1:]):
            p = os.path.join(out, "r%d" % i)
            paths.append(p)
            procs.append(h.popen(["udp-receiver", "--file", p, "--nokbd", "--interface", "eth0",
                                  "--portbase", "9000", "--mcast-rdv-address", RDV], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL))
        time.sleep(1.0)
        before = txBytes(sender)
        t0 = time.time()
        argv = NICE + ["udp-sender", "--file", self.image, "--nokbd", "--interface", "eth0",
                "--portbase", "9000", "--min-receivers", str(n), "--max-wait", "60",
                "--mcast-rdv-address", RDV]
        s = sender.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         stdin=subprocess.DEVNULL)
        deadline = t0 + self.args.timeout
        for p in procs + [s]:
            try:
                p.wait(max(1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
        elapsed = time.time() - t0
        return dict(time=elapsed, wire=txBytes(sender) - before, lost=self.verify(paths),
                    exit=s.returncode)

    # -- uftp -----------------------------------------------------------------

    def runUftp(self, lab, n, loss):
        sender = lab.hosts[0]
        out = self.outputs(n, "uftp")
        rate = self.args.rate.get(n, self.args.rate.get(0, 300))
        procs = []
        dirs = []
        for i, h in enumerate(lab.hosts[1:]):
            d = os.path.join(out, "r%d" % i)
            os.makedirs(d)
            dirs.append(d)
            procs.append(h.popen(["uftpd", "-d", "-D", d, "-I", "eth0", "-B", "33554432",
                                  "-L", os.path.join(out, "uftpd%d.log" % i),
                                  "-P", os.path.join(out, "uftpd%d.pid" % i)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.0)
        before = txBytes(sender)
        t0 = time.time()
        argv = NICE + ["uftp", "-I", "eth0", "-R", str(int(rate * 1000)), "-B", "33554432",
                "-L", os.path.join(out, "uftp.log"), "-x", "1", self.image]
        s = sender.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        name = os.path.basename(self.image)
        paths = [os.path.join(d, name) for d in dirs]
        try:
            s.wait(self.args.timeout)
        except subprocess.TimeoutExpired:
            s.kill()
        elapsed = time.time() - t0
        wire = txBytes(sender) - before
        for p in procs:
            p.kill()
        return dict(time=elapsed, wire=wire, lost=self.verify(paths), exit=s.returncode)

    def run(self):
        results = []
        tools = {"provisioner": self.runProvisioner, "udpcast": self.runUdpcast,
                 "uftp": self.runUftp}
        for n in self.args.n:
            for loss in self.args.loss:
                p = loss / 100.0
                ideal = idealCopies(p, n)
                row = {"n": n, "loss": loss, "ideal": ideal, "ideal_wire": ideal * FRAME}
                for tool in self.args.tools:
                    lab = self.lab(n, p)
                    try:
                        r = tools[tool](lab, n, p)
                    except Exception as e:
                        r = {"error": str(e)}
                    finally:
                        lab.close()
                    if "wire" in r:
                        r["ratio"] = r["wire"] / float(self.size)
                    row[tool] = r
                    print(json.dumps({"n": n, "loss": loss, "tool": tool, **r}), flush=True)
                results.append(row)
        return results


def table(results, tools, size):
    lines = []
    head = "| N | loss | ideal (payload / wire) | " + " | ".join(
        "%s time s, wire x, lost" % t for t in tools) + " |"
    lines.append(head)
    lines.append("|" + "---|" * (3 + len(tools)))
    for row in results:
        cells = ["%d" % row["n"], "%g%%" % row["loss"],
                 "%.3f / %.3f" % (row["ideal"], row["ideal_wire"])]
        for t in tools:
            r = row.get(t, {})
            if "error" in r or "ratio" not in r:
                cells.append("error: %s" % (r.get("error", "?")[:60],))
            else:
                extra = ""
                if t == "provisioner":
                    extra = ", %d rounds" % (r.get("rounds", 0),)
                cells.append("%.1f, %.3f, %d%s" % (r["time"], r["ratio"], r["lost"], extra))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--n", type=int, nargs="+", default=[2, 8, 16])
    parser.add_argument("--loss", type=float, nargs="+", default=[0, 1, 5])
    parser.add_argument("--tools", nargs="+", default=["provisioner", "udpcast", "uftp"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a multicast config key for provisioner's appliance "
                        "(e.g. flow_window=8388608); repeatable")
    parser.add_argument("--rate", default="2:800,8:500,16:350",
                        help="N:Mbit/s pairs for provisioner's initial rate and uftp's -R "
                        "(0:X for every N)")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--json", default=None)
    parser.add_argument("--catalog", action="store_true",
                        help="run the image catalogue too, so that send takes the image's "
                        "digest from it instead of hashing it")
    parser.add_argument("--on-disk", action="store_true",
                        help="write image and outputs below $TMPDIR instead of /dev/shm")
    args = parser.parse_args()
    args.rate = {int(k): float(v) for k, v in (p.split(":") for p in args.rate.split(","))}
    if os.geteuid() != 0:
        print("imagecast_bench: needs root (network namespaces)", file=sys.stderr)
        return 2
    for tool in ("udp-sender", "udp-receiver", "uftp", "uftpd"):
        if shutil.which(tool) is None:
            print("imagecast_bench: %s missing (apt-get install udpcast uftp)" % (tool,),
                  file=sys.stderr)
            return 2
    import signal
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    bench = Bench(args)
    try:
        results = bench.run()
    finally:
        bench.close()
    print()
    print("image %d MiB; time in seconds; wire = sender interface bytes / image size" % (
        args.size_mib,))
    print(table(results, args.tools, args.size_mib << 20))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
