#!/usr/bin/env python3
"""
HTTP image download on loopback: provisioner against nginx (Debian's
nginx-light or nginx) serving the same file in the same run, fetched with
curl. Prints MB/s of each, the ratio, and provisioner's peak RSS. Targets:
at least 0.5x nginx's MB/s, RSS under 150 MiB.

    python3 bench/http_bench.py [--size-mib 1024] [--rounds 5] [--parallel 1]

nginx runs on 127.0.0.1 with a private configuration in a temporary
directory (never the system service); both servers are stopped at the end.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
MiB = 1 << 20

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {d}/tmp;
    proxy_temp_path {d}/tmp;
    fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp;
    scgi_temp_path {d}/tmp;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        location /images/ {{ alias {d}/images/; }}
    }}
}}
"""


def freePort():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def waitFor(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return None


def rssKiB(pid, field="VmRSS"):
    try:
        with open("/proc/%d/status" % (pid,)) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def fetch(url, parallel):
    """
    Download C{url} with C{parallel} concurrent curls; return MB/s overall.
    """
    start = time.perf_counter()
    procs = [subprocess.Popen(["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}", url],
                              stdout=subprocess.PIPE) for _ in range(parallel)]
    total = 0
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise RuntimeError("curl failed on %s" % (url,))
        total += int(out)
    elapsed = time.perf_counter() - start
    return total / elapsed / 1e6, total


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=None, help="http.chunk_size")
    args = parser.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        raise SystemExit("nginx is not installed (apt-get install nginx-light)")
    d = tempfile.mkdtemp(prefix="provisioner-http-bench-")
    os.chmod(d, 0o755)  # nginx's workers run as www-data when started as root
    procs = []
    try:
        images = os.path.join(d, "images")
        os.makedirs(images)
        os.makedirs(os.path.join(d, "tmp"))
        path = os.path.join(images, "bench.img")
        block = os.urandom(MiB)
        with open(path, "wb") as f:
            for _ in range(args.size_mib):
                f.write(block)
        size = args.size_mib * MiB

        # provisioner
        config = os.path.join(d, "provisioner.yaml")
        log = os.path.join(d, "provisioner.log")
        with open(config, "w") as f:
            f.write("tftp: {enabled: false}\n"
                    "images: {enabled: true, directory: %s, state_dir: %s/state}\n"
                    "http: {enabled: true, address: 127.0.0.1, port: 0%s}\n" % (
                        images, d, ", chunk_size: %d" % args.chunk if args.chunk else ""))
        prov = subprocess.Popen(TWISTD + ["-n", "--pidfile=", "--logfile=" + log, "provisioner",
                                          "--config", config],
                                cwd=d, env=dict(os.environ, PYTHONPATH=REPO))
        procs.append(prov)

        def provReady():
            try:
                text = open(log).read()
            except OSError:
                return None
            if "image bench.img catalogued" not in text:
                return None
            return re.findall(r"HTTP listening on 127\.0\.0\.1 port (\d+)", text)
        ports = waitFor(provReady, 300)
        if not ports:
            raise SystemExit("provisioner did not start:\n" + open(log).read()[-2000:])
        provURL = "http://127.0.0.1:%s/images/bench.img" % (ports[-1],)

        # nginx, private configuration
        port = freePort()
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(d=d, port=port))
        ngx = subprocess.Popen([nginx, "-c", conf, "-p", d], stderr=subprocess.DEVNULL)
        procs.append(ngx)
        ngxURL = "http://127.0.0.1:%d/images/bench.img" % (port,)
        if not waitFor(lambda: subprocess.run(["curl", "-sfI", ngxURL],
                                              stdout=subprocess.DEVNULL).returncode == 0, 10):
            raise SystemExit("nginx did not start: " +
                             open(os.path.join(d, "nginx-error.log")).read()[-2000:])

        # Warm the page cache, then alternate.
        fetch(ngxURL, 1)
        fetch(provURL, 1)
        rates = {"nginx": [], "provisioner": []}
        rss = []
        for _ in range(args.rounds):
            for name, url in (("nginx", ngxURL), ("provisioner", provURL)):
                rate, total = fetch(url, args.parallel)
                if total != size * args.parallel:
                    raise SystemExit("%s sent %d bytes, expected %d" % (name, total,
                                                                        size * args.parallel))
                rates[name].append(rate)
                rss.append(rssKiB(prov.pid))
        peak = rssKiB(prov.pid, "VmHWM")
        ngxWorkers = subprocess.run(["pgrep", "-P", str(ngx.pid)], stdout=subprocess.PIPE)
        ngxRSS = sum(rssKiB(int(p)) for p in ngxWorkers.stdout.split()) + rssKiB(ngx.pid)
        n = statistics.median(rates["nginx"])
        p = statistics.median(rates["provisioner"])
        print("file: %d MiB, %d rounds, %d parallel curl(s), loopback" % (
            args.size_mib, args.rounds, args.parallel))
        print("%-12s %10s %10s %10s %10s" % ("server", "median", "min", "max", "RSS MiB"))
        print("%-12s %10.0f %10.0f %10.0f %10.1f" % (
            "nginx", n, min(rates["nginx"]), max(rates["nginx"]), ngxRSS / 1024))
        print("%-12s %10.0f %10.0f %10.0f %10.1f" % (
            "provisioner", p, min(rates["provisioner"]), max(rates["provisioner"]),
            max(rss) / 1024))
        print("(MB/s, 1 MB = 10^6 bytes; provisioner peak RSS (VmHWM) %.1f MiB)" % (peak / 1024,))
        ratio = p / n
        ok = ratio >= 0.5 and peak / 1024 < 150
        print("ratio provisioner/nginx: %.2fx (target >= 0.5x); RSS %.1f MiB (target < 150): %s"
              % (ratio, peak / 1024, "OK" if ok else "BELOW TARGET"))
        return 0 if ok else 1
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
