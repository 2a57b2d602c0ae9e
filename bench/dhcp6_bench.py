#!/usr/bin/env python3
"""
DHCPv6 handshake benchmark: Kea's C{perfdhcp -6} runs Solicit -> Advertise
-> Request -> Reply exchanges from many simulated clients against
provisioner (C{dhcp6.mode: full}, run as a user would with twistd) and then
against Kea's C{kea-dhcp6} (memfile backend, not persisted), in the same
network-namespace test bed and the same run. Prints, for each offered rate,
the exchanges per second each server sustained, the drops of each phase
and the ratio provisioner / Kea (issue 21's target: at least 0.5x Kea with
under 1% drops).

Needs root, iproute2, perfdhcp (Debian kea-admin) and kea-dhcp6 (Debian
kea-dhcp6-server). Run from the repo root:

    sudo .venv/bin/python bench/dhcp6_bench.py [--rates 1000,3000] [--seconds 10]
        [--lease-sync normal|full]

The lab: namespace C{provNNNNh0} is the server (2001:db8:6::1/64), C{...h1}
the client (link-local only: perfdhcp multicasts to ff02::1:2), both on a
bridge; the pools hold 2^16 addresses so that every simulated client gets its
own lease. All namespaces are removed at the end.
"""

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from tests.netlab import Appliance, NetLab  # noqa: E402
from tests.test_dhcp6_e2e import enableIPv6, parsePerfdhcp  # noqa: E402

PREFIX = "2001:db8:6::"
SERVER = PREFIX + "1"

CONFIG = """\
dhcp6:
  enabled: true
  mode: full
  interfaces: [eth0]
  lease_file: {d}/leases6.sqlite
  lease_sync: {sync}
  subnets:
    - prefix: "{p}/64"
      range: ["{p}1:0", "{p}1:ffff"]
log:
  level: info
"""

KEA = """\
{{"Dhcp6": {{
  "interfaces-config": {{"interfaces": ["eth0"]}},
  "lease-database": {{"type": "memfile", "persist": false}},
  "server-id": {{"type": "LL", "persist": false}},
  "data-directory": "{d}",
  "preferred-lifetime": 3000, "valid-lifetime": 3600,
  "renew-timer": 1500, "rebind-timer": 2400,
  "subnet6": [{{"id": 1, "subnet": "{p}/64", "interface": "eth0",
               "pools": [{{"pool": "{p}1:0-{p}1:ffff"}}]}}],
  "loggers": [{{"name": "kea-dhcp6", "severity": "WARN",
               "output_options": [{{"output": "{d}/kea.log"}}]}}]
}}}}
"""


def run(client, rate, seconds, clients):
    """
    One perfdhcp run at an offered C{rate} for C{seconds}.
    """
    out = client.run(["perfdhcp", "-6", "-l", "eth0", "-r", str(rate), "-p", str(seconds),
                      "-R", str(clients), "-u"], check=False,
                     timeout=seconds + 60).stdout.decode(errors="replace")
    report = parsePerfdhcp(out)
    phases = dict(report["phases"])
    sent = sum(p.get("sent packets", 0) for p in phases.values())
    drops = sum(p.get("drops", 0) for p in phases.values())
    unique = sum(p.get("non unique addresses", 0) for p in phases.values())
    return {"rate": report["rate"], "sent": sent, "drops": drops,
            "dropShare": drops / sent if sent else 1.0, "nonUnique": unique,
            "phases": phases, "output": out}


def line(name, r):
    phases = ", ".join("%s %d/%d dropped" % (n, p.get("drops", 0), p.get("sent packets", 0))
                       for n, p in r["phases"].items())
    return "  %-12s %8.1f exchanges/s  drops %5.2f%%  non-unique %d  (%s)" % (
        name, r["rate"], 100 * r["dropShare"], r["nonUnique"], phases)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="1000,3000",
                        help="offered exchange rates per second, comma-separated")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--lease-sync", default="normal", choices=["normal", "full"])
    args = parser.parse_args()
    for tool in ("perfdhcp", "kea-dhcp6", "ip"):
        if shutil.which(tool) is None:
            sys.exit("needs %s" % (tool,))
    rates = [int(r) for r in args.rates.split(",")]
    print("machine: %s, %d cores, kernel %s" % (platform.processor() or platform.machine(),
                                               os.cpu_count(), platform.release()))
    results = []
    lab = NetLab(hosts=2, subnet=60)
    directory = tempfile.mkdtemp(prefix="dhcp6bench")
    try:
        server, client = lab.hosts
        enableIPv6(server, SERVER)
        enableIPv6(client)
        for rate in rates:
            clients = rate * args.seconds * 2
            appliance = Appliance(directory, CONFIG.format(d=directory, p=PREFIX,
                                                           sync=args.lease_sync), host=server)
            for name in ("leases6.sqlite", "leases6.sqlite-wal", "leases6.sqlite-shm"):
                if os.path.exists(os.path.join(directory, name)):
                    os.unlink(os.path.join(directory, name))
            appliance.start()
            time.sleep(1)
            ours = run(client, rate, args.seconds, clients)
            appliance.stop()
            path = os.path.join(directory, "kea.json")
            with open(path, "w") as f:
                f.write(KEA.format(d=directory, p=PREFIX))
            kea = server.popen(["kea-dhcp6", "-c", path],
                               env=dict(os.environ, KEA_PIDFILE_DIR=directory,
                                        KEA_LOCKFILE_DIR="none"))
            time.sleep(2)
            theirs = run(client, rate, args.seconds, clients)
            kea.terminate()
            kea.wait(10)
            results.append((rate, ours, theirs))
            print("offered %d exchanges/s for %d s (lease_sync %s):" % (
                rate, args.seconds, args.lease_sync))
            print(line("provisioner", ours))
            print(line("kea-dhcp6", theirs))
            ratio = ours["rate"] / theirs["rate"] if theirs["rate"] else float("nan")
            verdict = "meets" if ratio >= 0.5 and ours["dropShare"] < 0.01 else "misses"
            print("  ratio provisioner/kea: %.2f (%s the target: >= 0.5x with < 1%% drops)" % (
                ratio, verdict))
            sys.stdout.flush()
    finally:
        lab.close()
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
