#!/usr/bin/env python3
"""
DHCP burst benchmark: N simulated clients each do DISCOVER -> OFFER ->
REQUEST -> ACK against provisioner (full mode, run as a user would with
twistd) and then against dnsmasq, in the same network-namespace test bed and
the same run. Prints handshakes per second, latency percentiles and the
ratio provisioner / dnsmasq.

Needs root, iproute2, dnsmasq (Debian dnsmasq-base). Run from the repo root:

    sudo python3 bench/dhcp_bench.py [--clients 5000] [--concurrency 64] [--rounds 3]
        [--boot-rounds 3] [--lease-sync full|normal]

C{--boot-rounds N} also times N QEMU boots (BIOS: SeaBIOS + iPXE ROM; UEFI: OVMF's
own PXE chainloading snponly.efi) from QEMU start to the served script's marker,
with provisioner (DHCP + TFTP) and with dnsmasq (DHCP + TFTP, tagging iPXE by
user class) in the same bed.

The lab: namespace C{provNNNNh0} is the server (198.19.0.1/16), C{...h1} the
client (198.19.0.2/16), both on a bridge; the pool is 198.19.1.0 -
198.19.250.255, so every simulated client gets its own address and lease.
All namespaces are removed at the end.
"""

import argparse
import os
import random
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from provisioner.dhcp import wire  # noqa: E402
from provisioner.dhcp.wire import OPT, DHCPPacket  # noqa: E402
from tests.netlab import NetLab  # noqa: E402
from tests.qemu_lab import (  # noqa: E402
    TWISTD,
    addTap,
    bootQEMU,
    startRouterAdvertisements,
    waitFor,
)

SERVER = "198.19.0.1"
CLIENT = "198.19.0.2"

CONFIG = """\
tftp:
  enabled: false
dhcp:
  enabled: true
  mode: full
  interfaces: [eth0]
  lease_file: %(leases)s
  lease_sync: %(sync)s
  lease_time: 3600
  subnets:
    - network: 198.19.0.0/16
      range: [198.19.1.0, 198.19.250.255]
"""

# The client side runs inside the client namespace as this script with
# --client; it prints one result line.


def discover(mac, xid):
    p = DHCPPacket(xid=xid, flags=0x8000, chaddr=mac)
    p.setOption(OPT.MESSAGE_TYPE, bytes((wire.DHCPDISCOVER,)))
    p.setOption(OPT.PARAMETER_LIST, bytes((1, 3, 6, 15, 51, 54)))
    return p.to_wire()


def requestFor(mac, xid, offer):
    p = DHCPPacket(xid=xid, flags=0x8000, chaddr=mac)
    p.setOption(OPT.MESSAGE_TYPE, bytes((wire.DHCPREQUEST,)))
    p.setOption(OPT.REQUESTED_IP, wire.ip2bytes(offer.yiaddr))
    p.setOption(OPT.SERVER_ID, offer.option(OPT.SERVER_ID))
    p.setOption(OPT.PARAMETER_LIST, bytes((1, 3, 6, 15, 51, 54)))
    return p.to_wire()


def runClients(count, concurrency, timeout, ifname, seed):
    """
    The load generator: one broadcast socket on port 68, C{concurrency}
    handshakes in flight, retransmit after C{timeout} seconds.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("0.0.0.0", 68))
    sock.setblocking(False)
    target = ("255.255.255.255", 67)
    rng = random.Random(seed)
    pending = {}  # xid -> [mac, state, started, sentAt, payload]
    latencies = []
    retransmits = 0
    naks = 0
    failed = 0
    nextClient = 0
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    began = time.monotonic()

    def start():
        nonlocal nextClient
        mac = struct.pack("!HI", 0x0219, (seed << 20) + nextClient)
        nextClient += 1
        xid = rng.getrandbits(32)
        while xid in pending:
            xid = rng.getrandbits(32)
        data = discover(mac, xid)
        now = time.monotonic()
        pending[xid] = [mac, "discover", now, now, data, 0]
        sock.sendto(data, target)

    while nextClient < count or pending:
        while len(pending) < concurrency and nextClient < count:
            start()
        for key, _ in selector.select(0.05):
            while True:
                try:
                    data, _ = sock.recvfrom(2048)
                except BlockingIOError:
                    break
                try:
                    reply = DHCPPacket.from_wire(data)
                except wire.MalformedPacket:
                    continue
                entry = pending.get(reply.xid)
                if entry is None or reply.op != wire.BOOTREPLY:
                    continue
                kind = reply.messageType
                now = time.monotonic()
                if entry[1] == "discover" and kind == wire.DHCPOFFER:
                    entry[1] = "request"
                    entry[4] = requestFor(entry[0], reply.xid, reply)
                    entry[3] = now
                    sock.sendto(entry[4], target)
                elif entry[1] == "request" and kind == wire.DHCPACK:
                    latencies.append(now - entry[2])
                    del pending[reply.xid]
                elif entry[1] == "request" and kind == wire.DHCPNAK:
                    naks += 1
                    del pending[reply.xid]
        now = time.monotonic()
        for xid, entry in list(pending.items()):
            if now - entry[3] > timeout:
                entry[5] += 1
                if entry[5] > 4:
                    failed += 1
                    del pending[xid]
                    continue
                retransmits += 1
                entry[3] = now
                sock.sendto(entry[4], target)
    elapsed = time.monotonic() - began
    latencies.sort()

    def pct(q):
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
    print("RESULT ok=%d failed=%d naks=%d retransmits=%d elapsed=%.3f rate=%.1f "
          "p50=%.2f p99=%.2f max=%.2f" % (
              len(latencies), failed, naks, retransmits, elapsed,
              len(latencies) / elapsed if elapsed else 0, pct(0.5), pct(0.99),
              latencies[-1] * 1000 if latencies else float("nan")))


def parseResult(text):
    for line in text.splitlines():
        if line.startswith("RESULT "):
            return dict((k, float(v)) for k, v in (p.split("=") for p in line.split()[1:]))
    raise RuntimeError("client printed no result:\n" + text)


def readAddresses(lab):
    for host, address in ((lab.hosts[0], SERVER), (lab.hosts[1], CLIENT)):
        host.run(["ip", "addr", "flush", "dev", "eth0"])
        host.run(["ip", "addr", "add", address + "/16", "dev", "eth0"])


def waitPort(host, port, proc, timeout=30):
    def bound():
        out = host.run(["ss", "-uln"], check=False).stdout.decode()
        return (":%d " % (port,)) in out or proc.poll() is not None
    waitFor(bound, timeout, 0.2)
    if proc.poll() is not None:
        raise RuntimeError("server exited")


def loadClients(lab, args, seed):
    proc = lab.hosts[1].run([sys.executable, os.path.abspath(__file__), "--client",
                             "--clients", str(args.clients), "--concurrency",
                             str(args.concurrency), "--seed", str(seed)], check=False)
    return parseResult(proc.stdout.decode())


def benchProvisioner(lab, workdir, args, seed):
    leases = os.path.join(workdir, "leases.sqlite")
    config = os.path.join(workdir, "provisioner.yaml")
    with open(config, "w") as f:
        f.write(CONFIG % {"leases": leases, "sync": args.lease_sync})
    log = os.path.join(workdir, "provisioner.log")
    proc = lab.hosts[0].popen(
        ["env", "PYTHONPATH=" + REPO] + TWISTD +
        ["-n", "--pidfile=", "--logfile=" + log, "provisioner", "--config", config],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        waitPort(lab.hosts[0], 67, proc)
        time.sleep(0.5)
        return loadClients(lab, args, seed)
    finally:
        proc.terminate()
        proc.wait(20)


def benchDnsmasq(lab, workdir, args, seed):
    leases = os.path.join(workdir, "dnsmasq.leases")
    proc = lab.hosts[0].popen(
        ["dnsmasq", "--no-daemon", "--port=0", "--interface=eth0", "--bind-interfaces",
         "--dhcp-range=198.19.1.0,198.19.250.255,255.255.0.0,1h",
         "--dhcp-leasefile=" + leases, "--dhcp-lease-max=100000", "--dhcp-authoritative",
         "--no-ping", "--conf-file=/dev/null", "--pid-file=", "--quiet-dhcp"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        waitPort(lab.hosts[0], 67, proc)
        time.sleep(0.5)
        return loadClients(lab, args, seed)
    finally:
        proc.terminate()
        proc.wait(20)


BOOT_CONFIG = """\
tftp:
  enabled: true
  address: 0.0.0.0
  port: 69
  interface: eth0
  root: %(root)s
dhcp:
  enabled: true
  mode: full
  interfaces: [eth0]
  lease_file: %(leases)s
  subnets:
    - network: 198.19.0.0/16
      range: [198.19.1.0, 198.19.1.100]
"""

SCRIPT = "#!ipxe\necho PROVMARK mac=${net0/mac} ip=${net0/ip} end\n"


def bootTime(lab, directory, firmware, index):
    """
    Boot one VM (BIOS: SeaBIOS + iPXE ROM; UEFI: OVMF's own PXE, chainloading
    snponly.efi) and return the seconds from QEMU start to the marker.
    """
    serial = os.path.join(directory, "serial-%s-%d.txt" % (firmware, index))
    mac = "52:54:00:77:%02x:%02x" % (index, firmware == "uefi")
    started = time.monotonic()
    proc = bootQEMU(lab, "provbench0", mac, serial, firmware=firmware,
                    romfile="" if firmware == "uefi" else None)

    def marker():
        try:
            with open(serial, errors="replace") as f:
                return "PROVMARK" in f.read()
        except OSError:
            return False
    found = waitFor(marker, 120, 0.05)
    elapsed = time.monotonic() - started
    proc.kill()
    proc.wait(10)
    return elapsed if found else float("nan")


def benchBoot(lab, workdir, rounds):
    """
    Time from QEMU start to the script's marker, provisioner vs dnsmasq.
    """
    root = os.path.join(workdir, "root")
    os.makedirs(root)
    for name in ("undionly.kpxe", "snponly.efi"):
        shutil.copy(os.path.join("/usr/lib/ipxe", name), root)
    with open(os.path.join(root, "boot.ipxe"), "w") as f:
        f.write(SCRIPT)
    addTap(lab, "provbench0")
    startRouterAdvertisements(lab.hosts[0])
    results = {}
    index = 0
    for server in ("provisioner", "dnsmasq"):
        directory = os.path.join(workdir, "boot-" + server)
        os.makedirs(directory)
        if server == "provisioner":
            config = os.path.join(directory, "provisioner.yaml")
            with open(config, "w") as f:
                f.write(BOOT_CONFIG % {"root": root,
                                       "leases": os.path.join(directory, "l.sqlite")})
            proc = lab.hosts[0].popen(
                ["env", "PYTHONPATH=" + REPO] + TWISTD +
                ["-n", "--pidfile=", "--logfile=" + os.path.join(directory, "log"),
                 "provisioner", "--config", config], cwd=directory,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            proc = lab.hosts[0].popen(
                ["dnsmasq", "--no-daemon", "--port=0", "--interface=eth0",
                 "--bind-interfaces", "--dhcp-range=198.19.1.0,198.19.1.100,255.255.0.0,1h",
                 "--dhcp-leasefile=" + os.path.join(directory, "leases"),
                 "--dhcp-authoritative", "--no-ping", "--conf-file=/dev/null",
                 "--pid-file=", "--enable-tftp", "--tftp-root=" + root,
                 "--dhcp-userclass=set:ipxe,iPXE",
                 "--dhcp-match=set:efi64,option:client-arch,7",
                 "--dhcp-boot=tag:ipxe,boot.ipxe",
                 "--dhcp-boot=tag:!ipxe,tag:efi64,snponly.efi",
                 "--dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            waitPort(lab.hosts[0], 69, proc)
            time.sleep(0.5)
            for firmware in ("bios", "uefi"):
                times = []
                for r in range(rounds):
                    index += 1
                    times.append(bootTime(lab, directory, firmware, index))
                results[(server, firmware)] = times
                print("%-11s %-4s QEMU start -> marker: %s s" % (
                    server, firmware, " ".join("%.2f" % t for t in times)))
                sys.stdout.flush()
        finally:
            proc.terminate()
            proc.wait(20)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lease-sync", choices=["full", "normal"], default="full",
                        help="provisioner's dhcp.lease_sync")
    parser.add_argument("--boot-rounds", type=int, default=0,
                        help="also time QEMU boots (BIOS and UEFI) this many times each")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        runClients(args.clients, args.concurrency, 1.0, "eth0", args.seed)
        return 0
    if os.geteuid() != 0 or shutil.which("dnsmasq") is None:
        print("needs root and dnsmasq (Debian dnsmasq-base)", file=sys.stderr)
        return 2
    workdir = tempfile.mkdtemp(prefix="dhcp-bench-")
    lab = NetLab(hosts=2, subnet=250)
    results = {"provisioner": [], "dnsmasq": []}
    try:
        readAddresses(lab)
        if args.boot_rounds:
            bootResults = benchBoot(lab, workdir, args.boot_rounds)
        for r in range(args.rounds):
            for name, bench in (("provisioner", benchProvisioner), ("dnsmasq", benchDnsmasq)):
                directory = os.path.join(workdir, "%s-%d" % (name, r))
                os.makedirs(directory)
                result = bench(lab, directory, args, seed=2 * r + (name == "dnsmasq") + 1)
                results[name].append(result)
                print("%-11s round %d: %5d handshakes in %6.2fs = %7.1f/s  p50 %6.2f ms  "
                      "p99 %7.2f ms  retransmits %d  failed %d  NAKs %d" % (
                          name, r + 1, result["ok"], result["elapsed"], result["rate"],
                          result["p50"], result["p99"], result["retransmits"],
                          result["failed"], result["naks"]))
                sys.stdout.flush()
    finally:
        lab.close()
        shutil.rmtree(workdir, ignore_errors=True)
    if args.boot_rounds:
        for firmware in ("bios", "uefi"):
            mine = sorted(bootResults[("provisioner", firmware)])
            theirs = sorted(bootResults[("dnsmasq", firmware)])
            print("boot %s median: provisioner %.2f s, dnsmasq %.2f s" % (
                firmware, mine[len(mine) // 2], theirs[len(theirs) // 2]))
    median = {name: sorted(r["rate"] for r in rs)[len(rs) // 2] for name, rs in results.items()}
    print("median of %d rounds: provisioner %.1f/s, dnsmasq %.1f/s; ratio %.2f" % (
        args.rounds, median["provisioner"], median["dnsmasq"],
        median["provisioner"] / median["dnsmasq"] if median["dnsmasq"] else float("nan")))
    best = {name: max(r["rate"] for r in rs) for name, rs in results.items()}
    p99 = {name: min(r["p99"] for r in rs) for name, rs in results.items()}
    print("best: provisioner %.1f/s (p99 %.2f ms), dnsmasq %.1f/s (p99 %.2f ms); "
          "ratio provisioner/dnsmasq = %.2f" % (
              best["provisioner"], p99["provisioner"], best["dnsmasq"], p99["dnsmasq"],
              best["provisioner"] / best["dnsmasq"] if best["dnsmasq"] else float("nan")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
