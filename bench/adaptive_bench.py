#!/usr/bin/env python3
# -*- test-case-name: tests.test_adaptive_netns -*-
"""
Adaptive TFTP window benchmark (issue 5): in a namespace pair with random
loss on the client's side (iptables statistic on its INPUT chain, so DATA
is dropped, ACKs are not), download one file with

  - C{provisioner fetch} (adaptive window, seed 004) from provisioner;
  - C{provisioner fetch --no-adaptive} with fixed windows 1, 8 and 64
    (plain RFC 7440: the server ignores a repeated ACK and resends on its
    timer, so a lost first block of a window costs a server timeout);
  - C{provisioner fetch --pin-window} with fixed windows 8 and 64: the
    adaptive option's loss signalling (a repeated ACK makes the server go
    back at once) with a window that never changes, to compare the window
    controller alone;
  - C{atftp} from C{atftpd} (the Debian peer, which paces by itself), with
    blksize 1468, lock-step and with windowsize 8;

all in the same run, and print a table of median times and the ratios the
issue sets as targets: adaptive within 10% of the best fixed window at every
loss level, and at least 2x atftp-against-atftpd at 1% loss.

Usage (root): C{python3 bench/adaptive_bench.py [--size MiB] [--loss 0,1,5]
[--repeat N]}. atftpd is taken from C{PATH} or unpacked from its Debian
package (see C{tests/test_client_peers.py}).

Every download is checked byte-exact (SHA-256). Times are wall-clock times
of the client process (start-up included, the same for every
C{provisioner fetch} run).
"""

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from tests.netlab import PYTHON, REPO, NetLab  # noqa: E402
from tests.test_client_peers import peerServer, startAtftpd  # noqa: E402

PROV_PORT = 6969
ATFTPD_PORT = 6970


def startAppliance(host, root, workdir):
    config = os.path.join(workdir, "provisioner.yaml")
    with open(config, "w") as f:
        f.write("tftp:\n  address: %s\n  port: %d\n  root: %s\n" % (host.ip, PROV_PORT, root))
    log = open(os.path.join(workdir, "provisioner.log"), "wb")
    proc = host.popen([PYTHON, "-c", "from twisted.scripts.twistd import run; run()", "-n",
                       "--pidfile=", "provisioner", "--config", config],
                      env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO, stdout=log,
                      stderr=subprocess.STDOUT)
    log.close()
    _waitPort(host, PROV_PORT, proc)
    return proc


def _waitPort(host, port, proc):
    deadline = time.time() + 30
    while time.time() < deadline:
        if ":%d " % (port,) in host.run(["ss", "-uln"], check=False).stdout.decode():
            return
        if proc.poll() is not None:
            raise SystemExit("server on port %d exited" % (port,))
        time.sleep(0.2)
    raise SystemExit("server did not bind port %d" % (port,))


def timed(host, argv, output, digest, timeout, env=None):
    """
    Run a client; return (seconds or None on failure, stdout).
    """
    if os.path.exists(output):
        os.unlink(output)
    start = time.monotonic()
    try:
        proc = host.run(argv, check=False, timeout=timeout, env=env, cwd=REPO)
    except subprocess.TimeoutExpired:
        return None, "timeout"
    elapsed = time.monotonic() - start
    text = proc.stdout.decode(errors="replace")
    if proc.returncode != 0 or not os.path.exists(output):
        return None, text
    h = hashlib.sha256()
    with open(output, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != digest:
        return None, "CORRUPT " + text
    return elapsed, text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64, help="file size in MiB (64)")
    parser.add_argument("--loss", default="0,1,5", help="loss levels in percent (0,1,5)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell (median)")
    parser.add_argument("--timeout", type=float, default=300, help="per-run limit (s)")
    parser.add_argument("--no-atftp", action="store_true", help="skip atftp/atftpd")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces, iptables)")
    atftpd = None if args.no_atftp else peerServer("atftpd")
    if not args.no_atftp and (atftpd is None or shutil.which("atftp") is None):
        raise SystemExit("needs atftp (client) and atftpd (PATH or apt-get download)")
    losses = [float(x) for x in args.loss.split(",")]
    work = tempfile.mkdtemp(prefix="provbench")
    root = os.path.join(work, "root")
    os.makedirs(root)
    data = os.urandom(args.size << 20)
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(root, "image.bin"), "wb") as f:
        f.write(data)
    del data
    lab = NetLab(hosts=2, subnet=77)
    try:
        server, client = lab.hosts
        # The appliance sends with UDP GSO; without this iptables would drop
        # whole 64-datagram super-packets instead of single datagrams.
        server.run(["ip", "link", "set", "dev", "eth0", "gso_max_segs", "1"])
        startAppliance(server, root, work)
        if atftpd:
            lab.processes.append(startAtftpd(atftpd, root, ATFTPD_PORT, server.ip,
                                             argvPrefix=server.argv([])))
            _waitPort(server, ATFTPD_PORT, lab.processes[-1])
        env = dict(os.environ, PYTHONPATH=REPO)
        url = "tftp://%s:%d/image.bin" % (server.ip, PROV_PORT)
        out = os.path.join(work, "out.bin")
        fetch = [PYTHON, "-m", "provisioner", "fetch", url, "-o", out, "-q", "--stats"]
        configs = [
            ("adaptive", fetch + ["--trace"]),
            ("fixed 1", fetch + ["--no-adaptive", "--windowsize", "1"]),
            ("fixed 8", fetch + ["--no-adaptive", "--windowsize", "8"]),
            ("fixed 64", fetch + ["--no-adaptive", "--windowsize", "64"]),
            ("pinned 8", fetch + ["--pin-window", "--windowsize", "8"]),
            ("pinned 64", fetch + ["--pin-window", "--windowsize", "64"]),
        ]
        if atftpd:
            base = ["atftp", "--option", "blksize 1468", "-g", "-r", "image.bin", "-l", out]
            configs += [
                ("atftp/atftpd", base + [server.ip, str(ATFTPD_PORT)]),
                ("atftp/atftpd w8", base[:1] + ["--option", "windowsize 8"] + base[1:] +
                 [server.ip, str(ATFTPD_PORT)]),
            ]
        results = {}
        notes = {}
        for loss in losses:
            client.run(["iptables", "-w", "-F", "INPUT"])
            client.loss(loss / 100.0)
            for name, argv in configs:
                times = []
                for _ in range(args.repeat):
                    t, text = timed(client, argv, out, digest, args.timeout, env)
                    if t is None:
                        notes[(loss, name)] = text.strip().splitlines()[-1:] if text else []
                        break
                    times.append(t)
                    if name == "adaptive":
                        trace = [l for l in text.splitlines() if l[:1].isdigit()]
                        peak = max((int(l.split()[2]) for l in trace), default=0)
                        notes[(loss, name)] = ["peak window %d, %d changes" % (
                            peak, len(trace))]
                results[(loss, name)] = statistics.median(times) if times else None
                shown = "%.2fs" % results[(loss, name)] if times else "FAILED %s" % (
                    notes.get((loss, name)),)
                print("loss %4.1f%%  %-16s %s" % (loss, name, shown), flush=True)
        _report(results, losses, [n for n, _ in configs], args.size, notes)
    finally:
        lab.close()
        shutil.rmtree(work, ignore_errors=True)


def _report(results, losses, names, size, notes):
    print()
    print("| loss | " + " | ".join(names) + " | adaptive / best fixed | adaptive vs atftp |")
    print("|---" * (len(names) + 3) + "|")
    for loss in losses:
        cells = []
        for name in names:
            t = results.get((loss, name))
            cells.append("%.2f s (%.1f MiB/s)" % (t, size / t) if t else "failed")
        fixed = [results.get((loss, n)) for n in names if n.startswith(("fixed", "pinned"))]
        fixed = [t for t in fixed if t]
        adaptive = results.get((loss, "adaptive"))
        ratio = "%.2f" % (adaptive / min(fixed),) if adaptive and fixed else "-"
        peers = [results.get((loss, n)) for n in names if n.startswith("atftp")]
        peers = [t for t in peers if t]
        speedup = "%.1fx" % (min(peers) / adaptive,) if adaptive and peers else "-"
        print("| %.1f%% | %s | %s | %s |" % (loss, " | ".join(cells), ratio, speedup))
    print()
    print("adaptive / best fixed: target <= 1.10 at every loss level; "
          "adaptive vs atftp (best atftp variant): target >= 2x at 1% loss.")
    for (loss, name), note in sorted(notes.items()):
        if note:
            print("note: loss %.1f%% %s: %s" % (loss, name, " ".join(note)))


if __name__ == "__main__":
    main()
