"""
Adaptive retransmission timeout (tftp.timeout_min) against a plain RFC 7440
client: atftp (Debian) fetching with windowsize 16 through a lossy link.

A plain windowed client that loses a block waits for the server's
retransmission timer; this bench compares the fixed timer
(timeout_min: null, i.e. tftp.timeout = 1 s) with the adaptive one
(timeout_min: 0.2), in one run, in network namespaces (root; loss with
iptables statistic on the client's INPUT).

    sudo PYTHONPATH=. python3 bench/rto_bench.py --loss 0.01,0.02 --size 8
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.netlab import NetLab, TWISTD, REPO, sha256File, waitFor  # noqa: E402


def measure(loss, size, timeoutMin, runs, subnet):
    d = tempfile.mkdtemp(prefix="rto-bench-")
    lab = NetLab(hosts=2, subnet=subnet)
    proc = None
    try:
        server, client = lab.hosts
        root = os.path.join(d, "root")
        os.makedirs(root)
        path = os.path.join(root, "f.bin")
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        digest = sha256File(path)
        config = os.path.join(d, "provisioner.yaml")
        with open(config, "w") as f:
            f.write("tftp:\n  address: %s\n  port: 69\n  root: %s\n  windowsize_max: 16\n"
                    "  timeout_min: %s\n" % (server.ip, root, timeoutMin))
        log = os.path.join(d, "server.log")
        proc = server.popen(TWISTD + ["-n", "--pidfile=", "--logfile=" + log, "provisioner",
                                      "--config", config],
                            env=dict(os.environ, PYTHONPATH=REPO),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        waitFor(lambda: os.path.exists(log) and "provisioner started" in open(log).read(), 30)
        client.loss(loss)
        times = []
        for i in range(runs):
            out = os.path.join(d, "out")
            began = time.time()
            client.run(["atftp", "--option", "windowsize 16", "--option", "blksize 1428",
                        "--get", "-r", "f.bin", "-l", out, server.ip])
            times.append(time.time() - began)
            if sha256File(out) != digest:
                raise RuntimeError("atftp's copy differs")
            os.unlink(out)
        return times
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait()
        lab.close()
        shutil.rmtree(d, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loss", default="0.01,0.02")
    parser.add_argument("--size", type=float, default=8, help="MiB")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    size = int(args.size * (1 << 20))
    print("atftp windowsize 16, blksize 1428, %.0f MiB; median of %d runs" % (args.size,
                                                                            args.runs))
    print("%-6s %14s %14s %8s" % ("loss", "fixed 1 s", "adaptive 0.2", "speed-up"))
    subnet = 60
    for loss in [float(x) for x in args.loss.split(",")]:
        medians = []
        for timeoutMin in ("null", "0.2"):
            subnet += 1
            times = sorted(measure(loss, size, timeoutMin, args.runs, subnet))
            medians.append(times[len(times) // 2])
        print("%-6s %13.2fs %13.2fs %7.1fx" % ("%g%%" % (loss * 100,), medians[0], medians[1],
                                              medians[0] / medians[1]))


if __name__ == "__main__":
    main()
