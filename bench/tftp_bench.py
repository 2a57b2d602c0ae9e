#!/usr/bin/env python3
"""
TFTP throughput and CPU benchmark: provisioner against tftpd-hpa, atftpd and
dnsmasq, in the same run, inside a private network namespace whose only
interface is lo (dnsmasq insists on port 69).

Not a test. Run as root from the repository:

    python3 bench/tftp_bench.py                 # the full table
    python3 bench/tftp_bench.py --quick         # smaller files, one repeat

Clients: atftp (blksize, windowsize) for the single-client and 20-client
rows, curl (blksize 1468) for the 500-client row. Peers without windowsize
ignore the option (no OACK for it) and run at window 1.

For each row and server: MB/s (file bytes / wall time of the client, or of
all clients for the concurrent rows), server CPU seconds per GB (utime +
stime, children included, from /proc/<pid>/stat before and after), and the
ratios provisioner/peer. Each cell is the median of --repeat runs, servers
interleaved so they share the machine's noise. Also: provisioner's peak RSS.

Peers come from Debian. tftpd-hpa and atftpd conflict as packages, so any
that is not installed is fetched with `apt-get download` and unpacked with
`dpkg -x` into bench/.peers/ (gitignored); dnsmasq is dnsmasq-base's binary.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PEERS = os.path.join(HERE, ".peers")
MiB = 1 << 20
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]

PORTS = {"provisioner": 3069, "tftpd-hpa": 1069, "atftpd": 2069, "dnsmasq": 69}


# -- peers

def findPeer(binary, package):
    """
    The path of a peer's binary: from the installed package, or unpacked
    from its .deb into bench/.peers/<package>/ (tftpd-hpa and atftpd both
    ship an in.tftpd, so each gets its own prefix).
    """
    installed = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    if b"install ok installed" in installed.stdout:
        for d in ("/usr/sbin", "/usr/bin"):
            if os.path.exists(os.path.join(d, binary)):
                return os.path.join(d, binary)
    prefix = os.path.join(PEERS, package)
    path = os.path.join(prefix, "usr", "sbin", binary)
    if os.path.exists(path):
        return path
    debs = os.path.join(PEERS, "debs")
    os.makedirs(debs, exist_ok=True)
    subprocess.run(["apt-get", "download", package], cwd=debs, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for name in os.listdir(debs):
        if name.startswith(package + "_"):
            subprocess.run(["dpkg", "-x", os.path.join(debs, name), prefix], check=True)
    if not os.path.exists(path):
        raise SystemExit("cannot find %s (package %s)" % (binary, package))
    return path


def serverArgv(name, root, work):
    if name == "provisioner":
        config = os.path.join(work, "provisioner.yaml")
        with open(config, "w") as f:
            f.write("tftp:\n  address: 127.0.0.1\n  port: %d\n  root: %s\n"
                    "  max_sessions: 4000\n  max_sessions_per_client: 4000\n"
                    "  windowsize_max: 64\n" % (PORTS[name], root))
        return TWISTD + ["-n", "--pidfile=", "provisioner", "--config", config]
    if name == "tftpd-hpa":
        return [findPeer("in.tftpd", "tftpd-hpa"), "-L", "-a", "127.0.0.1:%d" % PORTS[name],
                "-s", root, "-u", "root"]
    if name == "atftpd":
        return [findPeer("atftpd", "atftpd"), "--daemon", "--no-fork", "--port",
                str(PORTS[name]), "--bind-address", "127.0.0.1", "--user", "root",
                "--group", "root", "--maxthread", "1000", "--logfile",
                os.path.join(work, "atftpd.log"), root]
    if name == "dnsmasq":
        return [findPeer("dnsmasq", "dnsmasq-base"), "--no-daemon", "--port=0",
                "--enable-tftp", "--tftp-root=" + root, "--listen-address=127.0.0.1",
                "--bind-interfaces", "--user=root", "--group=root", "--tftp-max=1000",
                "--pid-file=" + os.path.join(work, "dnsmasq.pid"), "--log-facility=-" ,
                "--conf-file=/dev/null"]
    raise ValueError(name)


def udpBound(port):
    out = subprocess.run(["ss", "-ulnH"], stdout=subprocess.PIPE).stdout.decode()
    return any(line.split()[3].endswith(":%d" % (port,)) for line in out.splitlines()
               if len(line.split()) > 3)


class Server:
    def __init__(self, name, root, work):
        self.name = name
        self.port = PORTS[name]
        self.logPath = os.path.join(work, name + ".log")
        self.log = open(self.logPath, "wb")
        env = dict(os.environ, PYTHONPATH=REPO)
        self.proc = subprocess.Popen(serverArgv(name, root, work), cwd=work, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.cgroup = self._cgroup(name)
        deadline = time.time() + 30
        while not udpBound(self.port):
            if self.proc.poll() is not None or time.time() > deadline:
                raise SystemExit("%s did not start:\n%s" % (name, open(self.logPath).read()))
            time.sleep(0.1)

    def _cgroup(self, name):
        """
        Put the server in its own cpuacct cgroup (v1) so that the CPU time of
        children is counted even when they are not waited for (tftpd-hpa
        forks one per transfer and ignores SIGCHLD). L{None} when cgroups
        are not available: then /proc/<pid>/stat.
        """
        base = "/sys/fs/cgroup/cpuacct"
        if not os.path.isdir(base):
            return None
        path = os.path.join(base, "provbench-%d-%s" % (os.getpid(), name))
        try:
            os.mkdir(path)
            with open(os.path.join(path, "cgroup.procs"), "w") as f:
                f.write(str(self.proc.pid))
        except OSError:
            return None
        return path

    def cpu(self):
        """
        CPU seconds used by the server and its children.
        """
        if self.cgroup is not None:
            with open(os.path.join(self.cgroup, "cpuacct.usage")) as f:
                return int(f.read()) / 1e9
        with open("/proc/%d/stat" % (self.proc.pid,)) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return sum(int(x) for x in fields[11:15]) / ticks

    def peakRSS(self):
        with open("/proc/%d/status" % (self.proc.pid,)) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
        return None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if self.cgroup is not None:
            for _ in range(50):
                with open(os.path.join(self.cgroup, "cgroup.procs")) as f:
                    left = [int(x) for x in f.read().split()]
                for pid in left:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                try:
                    os.rmdir(self.cgroup)
                    break
                except OSError:
                    time.sleep(0.1)


# -- clients

def atftp(port, name, blksize, window, out=os.devnull):
    argv = ["atftp", "--option", "blksize %d" % (blksize,)]
    if window > 1:
        argv += ["--option", "windowsize %d" % (window,)]
    return argv + ["-g", "-r", name, "-l", out, "127.0.0.1", str(port)]


def curl(port, name, blksize=1468, out=os.devnull):
    return ["curl", "-s", "--tftp-blksize", str(blksize), "-o", out,
            "tftp://127.0.0.1:%d/%s" % (port, name)]


def measure(server, argvs, nbytes, timeout):
    """
    Run clients at once; return (MB/s, CPU s per GB, completed).
    """
    time.sleep(0.2)
    c0 = server.cpu()
    t0 = time.time()
    procs = [subprocess.Popen(a, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for a in argvs]
    ok = 0
    for p in procs:
        try:
            if p.wait(max(1, timeout - (time.time() - t0))) == 0:
                ok += 1
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    elapsed = time.time() - t0
    time.sleep(0.3)  # let tftpd-hpa reap its children
    cpu = server.cpu() - c0
    done = nbytes * ok / len(argvs)
    mbps = done / elapsed / 1e6 if ok else 0.0
    cpuPerGB = cpu / (done / 1e9) if done else float("inf")
    return mbps, cpuPerGB, ok


CLIENTS = {}
ROWS = [
    # (label, kind, blksize, window, clients, file)
    ("blksize 1468, window 1", "atftp", 1468, 1, 1, "big"),
    ("blksize 1468, window 16", "atftp", 1468, 16, 1, "big"),
    ("blksize 1468, window 64", "atftp", 1468, 64, 1, "big"),
    ("blksize 65464", "atftp", 65464, 1, 1, "big"),
    ("20 clients x {mid}, blksize 1468 window 16", "atftp", 1468, 16, 20, "mid"),
    ("500 clients x {small}, curl blksize 1468", "curl", 1468, 1, 500, "small"),
]


def inside(args):
    """
    The benchmark proper, run inside the namespace.
    """
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    # glibc's getaddrinfo(AI_ADDRCONFIG), which tftpd-hpa uses for -a, finds
    # nothing while the namespace has only loopback addresses: give lo one
    # benchmarking-range address (lo stays the only interface).
    subprocess.run(["ip", "addr", "add", "198.18.0.1/32", "dev", "lo"], check=False)
    work = tempfile.mkdtemp(prefix="tftpbench-", dir=args.workdir)
    root = os.path.join(work, "root")
    os.makedirs(root)
    sizes = {"big": args.big * MiB, "mid": args.mid * MiB, "small": args.small * MiB}
    for name, size in sizes.items():
        with open(os.path.join(root, name), "wb") as f:
            left = size
            while left:
                n = min(left, 16 * MiB)
                f.write(os.urandom(n))
                left -= n
    servers = {}
    try:
        for name in args.servers:
            servers[name] = Server(name, root, work)
        results = {}
        for label, kind, blksize, window, clients, fname in ROWS:
            label = label.format(mid="%d MiB" % args.mid, small="%d MiB" % args.small)
            CLIENTS[label] = clients
            if args.rows and not any(r in label for r in args.rows):
                continue
            for rep in range(args.repeat):
                for name, server in servers.items():
                    if kind == "atftp":
                        argvs = [atftp(server.port, fname, blksize, window)
                                 for _ in range(clients)]
                    else:
                        argvs = [curl(server.port, fname, blksize) for _ in range(clients)]
                    r = measure(server, argvs, sizes[fname] * clients, args.timeout)
                    results.setdefault(label, {}).setdefault(name, []).append(r)
                    print("  %-45s %-12s %8.1f MB/s %7.2f CPU s/GB  %d/%d done" % (
                        label, name, r[0], r[1], r[2], clients), flush=True)
        rss = servers["provisioner"].peakRSS() if "provisioner" in servers else None
    finally:
        for server in servers.values():
            server.stop()
    report(results, rss, args)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print("kept %s" % (work,))


def median(values):
    return statistics.median(values)


def report(results, rss, args):
    peers = [s for s in args.servers if s != "provisioner"]
    lines = []
    head = "| row | " + " | ".join("%s MB/s | CPU s/GB" % (s,) for s in args.servers)
    head += " | " + " | ".join("MB/s vs %s | CPU vs %s" % (p, p) for p in peers) + " |"
    lines.append(head)
    lines.append("|" + "---|" * (1 + 2 * len(args.servers) + 2 * len(peers)))
    table = {}
    for label, byServer in results.items():
        cells = [label]
        row = {}
        for s in args.servers:
            runs = byServer.get(s, [])
            mbps = median([r[0] for r in runs]) if runs else 0.0
            cpu = median([r[1] for r in runs]) if runs else float("inf")
            done = min(r[2] for r in runs) if runs else 0
            clients = CLIENTS[label]
            row[s] = {"mbps": mbps, "cpuPerGB": cpu, "completedMin": done,
                      "clients": clients, "runs": runs}
            cells.append("%.1f" % (mbps,) + ("" if done == clients else
                                              " (%d/%d done)" % (done, clients)))
            cells.append("%.2f" % (cpu,))
        mine = row.get("provisioner")
        for p in peers:
            if mine and row[p]["mbps"] > 0:
                cells.append("%.2fx" % (mine["mbps"] / row[p]["mbps"],))
            else:
                cells.append("-")
            if mine and row[p]["cpuPerGB"] not in (0, float("inf")):
                cells.append("%.2fx" % (mine["cpuPerGB"] / row[p]["cpuPerGB"],))
            else:
                cells.append("-")
        lines.append("| " + " | ".join(cells) + " |")
        table[label] = row
    print()
    print("\n".join(lines))
    if rss is not None:
        print("\nprovisioner peak RSS: %.1f MiB" % (rss,))
    print("(median of %d runs; files: %d/%d/%d MiB)" % (args.repeat, args.big, args.mid,
                                                        args.small))
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", "tftp-%s.json" % (time.strftime("%Y%m%dT%H%M%S"),))
    with open(path, "w") as f:
        json.dump({"table": table, "rssMiB": rss, "args": vars(args),
                   "markdown": "\n".join(lines)}, f, indent=1)
    print("saved %s" % (path,))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big", type=int, default=256, help="single-client file, MiB")
    parser.add_argument("--mid", type=int, default=64, help="20-client file, MiB")
    parser.add_argument("--small", type=int, default=1, help="500-client file, MiB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--servers", nargs="+", default=list(PORTS))
    parser.add_argument("--rows", nargs="*", help="only rows whose label contains one of these")
    parser.add_argument("--quick", action="store_true", help="64/16/1 MiB, one run")
    parser.add_argument("--workdir", default=None, help="where files go (default: TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--in-netns", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.big, args.mid, args.repeat = 64, 16, 1
    if "provisioner" in args.servers:
        args.servers.remove("provisioner")
        args.servers.insert(0, "provisioner")
    if args.in_netns:
        return inside(args)
    if os.geteuid() != 0:
        raise SystemExit("run as root (network namespace, port 69)")
    for tool in ("atftp", "curl", "ip", "ss", "nsenter"):
        if shutil.which(tool) is None:
            raise SystemExit("needs %s" % (tool,))
    for name, (binary, package) in {"tftpd-hpa": ("in.tftpd", "tftpd-hpa"),
                                    "atftpd": ("atftpd", "atftpd"),
                                    "dnsmasq": ("dnsmasq", "dnsmasq-base")}.items():
        if name in args.servers:
            findPeer(binary, package)
    ns = "provbench%s" % (uuid.uuid4().hex[:6],)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        # nsenter switches only the network namespace: /sys (and the cpuacct
        # cgroup used to count CPU) stays the host's, unlike `ip netns exec`.
        argv = ["nsenter", "--net=/run/netns/" + ns, sys.executable, os.path.abspath(__file__),
                "--in-netns"] + sys.argv[1:]
        return subprocess.call(argv)
    finally:
        subprocess.run(["ip", "netns", "del", ns])


if __name__ == "__main__":
    sys.exit(main())
