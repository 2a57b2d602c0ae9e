#!/usr/bin/env python3
"""
Boot to userspace: QEMU (TCG) network-boots Debian's kernel and the test
kit's busybox initramfs (tests/bootkit.py) to its marker, served by
provisioner (DHCP, TFTP, HTTP, menus from the inventory) and by dnsmasq
(DHCP and TFTP) plus nginx (HTTP) serving the same files (the menus
provisioner renders for each machine, written out with `provisioner
render`), in the same bed and run.

Rows: BIOS iPXE over HTTP and over TFTP, BIOS pxelinux over TFTP, UEFI
snponly.efi (iPXE) over HTTP, UEFI GRUB over TFTP. For each boot: seconds
from QEMU start to the marker (TCG: noisy), and the transfer times of the
boot program, the kernel and the initrd taken from a packet capture of the
VM's interface (QEMU's filter-dump: the request to the last data packet),
with the TFTP options the client asked for and was granted.

Needs root, the boot kit (`python -m tests.bootkit`), dnsmasq, nginx. Run
from the repo root:

    sudo .venv/bin/python bench/boot_bench.py [--rounds 3] [--rows bios-ipxe-http,...]

Everything runs in network namespaces on 198.18.175.0/24; all are removed
at the end.
"""

import argparse
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from tests import bootkit  # noqa: E402
from tests.netlab import PYTHON, TWISTD, NetLab  # noqa: E402
from tests.qemu_lab import addTap, bootQEMU, pcapPackets, startRouterAdvertisements, waitFor  # noqa: E402,E501

SUBNET = 175
SERVER = "198.18.%d.1" % (SUBNET,)
MARKER = re.compile(r"PROVBOOT host=(\S+) flavour=(\S+)")

# name: (firmware, MAC, HTTP?, host extra vars)
ROWS = {
    "bios-ipxe-http": ("bios", "52:54:00:af:00:01", True, ""),
    "bios-ipxe-tftp": ("bios", "52:54:00:af:00:02", False, ""),
    "bios-pxelinux-tftp": ("bios", "52:54:00:af:00:03", False, ", ipxe_script: pxelinux.0"),
    "uefi-ipxe-http": ("uefi", "52:54:00:af:00:04", True, ""),
    "uefi-grub-tftp": ("uefi", "52:54:00:af:00:05", False, ", boot_file: grubnetx64.efi"),
}

CONFIG = """\
tftp:
  enabled: true
  address: 0.0.0.0
  port: 69
  interface: eth0
  root: {d}/root
dhcp:
  enabled: true
  mode: full
  uefi: direct
  interfaces: [eth0]
  lease_file: {d}/leases.sqlite
  boot:
    bios: undionly.kpxe
    uefi_x64: snponly.efi
  ipxe_script: boot.ipxe
  subnets:
    - network: 198.18.{s}.0/24
      range: [198.18.{s}.100, 198.18.{s}.150]
      router: 198.18.{s}.1
images:
  enabled: true
  directory: {d}/images
  state_dir: {d}/state
menus:
  enabled: true
  {url}
inventory:
  enabled: true
  file: {d}/inventory.yaml
http:
  enabled: {http}
  address: 198.18.{s}.1
  port: 8080
"""

INVENTORY = """\
profiles:
  tiny:
    description: Debian kernel, busybox initramfs
    timeout: 1
    kernel: tiny/vmlinuz
    initrd: [tiny/initrd.gz]
    cmdline: "console=ttyS0 quiet provhost={{ host.name }} provflavour={{ vars.flavour }}"
hosts:
"""

NGINX = """\
daemon off;
user root;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx.err;
events {{ worker_connections 64; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path {d}/nginx-tmp;
  proxy_temp_path {d}/nginx-tmp;
  fastcgi_temp_path {d}/nginx-tmp;
  uwsgi_temp_path {d}/nginx-tmp;
  scgi_temp_path {d}/nginx-tmp;
  server {{
    listen {server}:8080;
    root {d}/root;
  }}
}}
"""


def prepare(workdir, kit, http):
    """
    The provisioner directory for one phase (HTTP rows or TFTP rows):
    root with the boot programs, images with the kernel and initrd, the
    inventory and the configuration.
    """
    d = os.path.join(workdir, "http" if http else "tftp")
    for sub in ("root", "images/tiny", "state"):
        os.makedirs(os.path.join(d, sub))
    kit.install(os.path.join(d, "images"), {"kernel": "tiny/vmlinuz", "initrd": "tiny/initrd.gz"})
    kit.install(os.path.join(d, "root"), {"pxelinux": "pxelinux.0", "ldlinux": "ldlinux.c32",
                                          "grub": "grubnetx64.efi"})
    for name in ("undionly.kpxe", "snponly.efi"):
        shutil.copy(os.path.join("/usr/lib/ipxe", name), os.path.join(d, "root"))
    hosts = "".join("  %s:\n    mac: %s\n    profile: tiny\n    vars: {flavour: %s%s}\n" % (
        name.replace("-", ""), mac, name, extra) for name, (_, mac, _, extra) in ROWS.items())
    with open(os.path.join(d, "inventory.yaml"), "w") as f:
        f.write(INVENTORY + hosts)
    url = "http_url: http://%s:8080" % (SERVER,) if http else ""
    with open(os.path.join(d, "provisioner.yaml"), "w") as f:
        f.write(CONFIG.format(d=d, s=SUBNET, url=url, http="true" if http else "false"))
    return d


def render(d, mac, arch, name, ipxe=False):
    argv = [PYTHON, "-m", "provisioner.cli", "render", "--config",
            os.path.join(d, "provisioner.yaml"), "--mac", mac, "--arch", arch,
            "--ip", "198.18.%d.100" % (SUBNET,), name]
    if ipxe:
        argv.append("--ipxe")
    out = subprocess.run(argv, check=True, stdout=subprocess.PIPE, cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=REPO)).stdout
    return out


def peerRoot(d):
    """
    dnsmasq's TFTP root and nginx's document root: the same boot programs,
    the kernel and initrd under images/, and the menus provisioner renders
    for each machine, as files (dnsmasq hands each iPXE machine its own
    script by MAC tag).
    """
    root = os.path.join(d, "peer")
    shutil.copytree(os.path.join(d, "root"), root)
    shutil.copytree(os.path.join(d, "images"), os.path.join(root, "images"))
    os.makedirs(os.path.join(root, "pxelinux.cfg"))
    os.makedirs(os.path.join(root, "grub"))
    for name, (firmware, mac, _, _) in ROWS.items():
        arch = "bios" if firmware == "bios" else "efi-x64"
        hyphen = mac.replace(":", "-")
        with open(os.path.join(root, hyphen + ".ipxe"), "wb") as f:
            f.write(render(d, mac, arch, "boot.ipxe", ipxe=True))
        with open(os.path.join(root, "pxelinux.cfg", "01-" + hyphen), "wb") as f:
            f.write(render(d, mac, arch, "pxelinux.cfg/01-" + hyphen))
        if "grub" in name:
            with open(os.path.join(root, "grub", "grub.cfg"), "wb") as f:
                f.write(render(d, mac, arch, "grub/grub.cfg"))
    return root


def startProvisioner(host, d):
    proc = host.popen(["env", "PYTHONPATH=" + REPO] + TWISTD +
                      ["-n", "--pidfile=", "--logfile=" + os.path.join(d, "provisioner.log"),
                       "provisioner", "--config", os.path.join(d, "provisioner.yaml")],
                      cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = os.path.join(d, "provisioner.log")
    waitFor(lambda: os.path.exists(log) and "image catalogue ready" in open(log).read(), 60)
    return [proc]


def startPeers(host, d, root):
    args = ["dnsmasq", "--no-daemon", "--port=0", "--interface=eth0", "--bind-interfaces",
            "--dhcp-range=198.18.%d.100,198.18.%d.150,255.255.255.0,1h" % (SUBNET, SUBNET),
            "--dhcp-leasefile=" + os.path.join(d, "dnsmasq.leases"), "--dhcp-authoritative",
            "--no-ping", "--conf-file=/dev/null", "--pid-file=", "--enable-tftp",
            "--tftp-root=" + root, "--dhcp-option=3," + SERVER,
            "--dhcp-userclass=set:ipxe,iPXE",
            "--dhcp-match=set:efi64,option:client-arch,7"]
    for i, (name, (_, mac, _, extra)) in enumerate(ROWS.items()):
        tag = "grub" if "grubnetx64" in extra else "row%d" % (i,)
        args.append("--dhcp-host=%s,set:%s" % (mac, tag))
        if "pxelinux" in extra:
            args.append("--dhcp-boot=tag:ipxe,tag:%s,pxelinux.0" % (tag,))
        elif tag != "grub":
            args.append("--dhcp-boot=tag:ipxe,tag:%s,%s.ipxe" % (tag, mac.replace(":", "-")))
    args += ["--dhcp-boot=tag:!ipxe,tag:efi64,tag:grub,grubnetx64.efi",
             "--dhcp-boot=tag:!ipxe,tag:efi64,tag:!grub,snponly.efi",
             "--dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe"]
    dnsmasq = host.popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.makedirs(os.path.join(d, "nginx-tmp"), exist_ok=True)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX.format(d=d, server=SERVER).replace("root %s/root;" % (d,),
                                                         "root %s;" % (root,)))
    nginx = host.popen(["nginx", "-c", conf, "-p", d], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    return [dnsmasq, nginx]


# Packet capture analysis ----------------------------------------------------

def _frames(path):
    """
    Yield C{(time, src, sport, dst, dport, proto, payload)} for IPv4
    UDP/TCP frames.
    """
    for t, frame in pcapPackets(path):
        # QEMU's dump carries the tap's virtio-net header (10 or 12 bytes)
        # before the Ethernet frame.
        for skip in (10, 12, 0):
            if frame[skip + 12:skip + 14] in (b"\x08\x00", b"\x86\xdd", b"\x08\x06"):
                break
        frame = frame[skip:]
        if len(frame) < 34 or frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack("!H", ip[2:4])[0]
        proto = ip[9]
        src = ".".join(str(b) for b in ip[12:16])
        dst = ".".join(str(b) for b in ip[16:20])
        l4 = ip[ihl:total]
        if proto == 17 and len(l4) >= 8:
            sport, dport = struct.unpack("!HH", l4[:4])
            yield t, src, sport, dst, dport, "udp", l4[8:]
        elif proto == 6 and len(l4) >= 20:
            sport, dport = struct.unpack("!HH", l4[:4])
            off = (l4[12] >> 4) * 4
            yield t, src, sport, dst, dport, "tcp", l4[off:]


def transfers(path):
    """
    The file transfers in a capture: C{{name: (protocol, seconds, bytes,
    options)}} (the first transfer of each name that carried data).
    """
    frames = list(_frames(path))
    out = {}
    # TFTP: an RRQ to port 69, then DATA to the client's port.
    for i, (t, src, sport, dst, dport, proto, data) in enumerate(frames):
        if proto != "udp" or dport != 69 or data[:2] != b"\x00\x01":
            continue
        parts = data[2:].split(b"\0")
        name = parts[0].decode("latin-1").lstrip("/")
        options = dict(zip(parts[2::2], parts[3::2]))
        asked = {k.decode().lower(): v.decode() for k, v in options.items() if k}
        last, size, granted = None, 0, {}
        for t2, src2, sport2, dst2, dport2, proto2, data2 in frames[i + 1:]:
            if proto2 != "udp" or dst2 != src or dport2 != sport:
                continue
            if src2 == src:
                continue
            op = data2[:2]
            if op == b"\x00\x06":
                p = data2[2:].split(b"\0")
                granted = {k.decode().lower(): v.decode() for k, v in zip(p[0::2], p[1::2]) if k}
            elif op == b"\x00\x03":
                last = t2
                size += len(data2) - 4
                if len(data2) - 4 < int(granted.get("blksize", 512)):
                    break
            elif op == b"\x00\x05":
                break
            # A new RRQ from the same port starts another transfer.
        if last is not None and size and name not in out:
            out[name] = ("tftp", last - t, size, "asked %s granted %s" % (
                ",".join("%s=%s" % kv for kv in sorted(asked.items()) if kv[0] != "tsize"),
                ",".join("%s=%s" % kv for kv in sorted(granted.items()) if kv[0] != "tsize")))
    # HTTP: a GET on a connection, then the server's payload on it until
    # the next GET on that connection.
    for i, (t, src, sport, dst, dport, proto, data) in enumerate(frames):
        if proto != "tcp" or dport != 8080 or not data.startswith(b"GET "):
            continue
        name = data.split(b" ", 2)[1].decode("latin-1").lstrip("/")
        last, size = None, 0
        for t2, src2, sport2, dst2, dport2, proto2, data2 in frames[i + 1:]:
            if proto2 != "tcp":
                continue
            if src2 == src and sport2 == sport and data2.startswith(b"GET "):
                break
            if src2 == dst and sport2 == 8080 and dport2 == sport and data2:
                last = t2
                size += len(data2)
        if last is not None and name not in out:
            out[name] = ("http", last - t, size, "")
    return out


def boot(lab, tap, d, row, index):
    firmware, mac, _, _ = ROWS[row]
    serial = os.path.join(d, "serial-%d.txt" % (index,))
    pcap = os.path.join(d, "capture-%d.pcap" % (index,))
    started = time.monotonic()
    proc = bootQEMU(lab, tap, mac, serial, firmware=firmware,
                    romfile="" if firmware == "uefi" else None,
                    memory=512 if firmware == "uefi" else 256,
                    extra=["-object", "filter-dump,id=f0,netdev=n0,file=" + pcap])

    def seen():
        try:
            with open(serial, errors="replace") as f:
                return MARKER.search(f.read())
        except OSError:
            return None
    found = waitFor(seen, 90, 0.05)
    elapsed = time.monotonic() - started
    proc.kill()
    proc.wait(10)
    if not found:
        return float("nan"), {}
    return elapsed, transfers(pcap)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    rows = args.rows.split(",")
    kit = bootkit.kit(build=True)
    if os.geteuid() != 0 or kit is None or not shutil.which("dnsmasq") or not shutil.which("nginx"):
        sys.exit("needs root, the boot kit, dnsmasq and nginx")
    workdir = tempfile.mkdtemp(prefix="boot-bench-")
    lab = NetLab(hosts=1, subnet=SUBNET)
    results = {}
    try:
        server = lab.hosts[0]
        startRouterAdvertisements(server)
        tap = "provbb%d" % (SUBNET,)
        addTap(lab, tap)
        index = 0
        for http in (True, False):
            phase = [r for r in rows if ROWS[r][2] == http]
            if not phase:
                continue
            d = prepare(workdir, kit, http)
            peer = peerRoot(d)
            # Alternate the servers round by round, so that drift of the
            # machine's speed hits both alike.
            for r in range(args.rounds):
                for who in ("provisioner", "dnsmasq+nginx"):
                    procs = startProvisioner(server, d) if who == "provisioner" \
                        else startPeers(server, d, peer)
                    try:
                        for row in phase:
                            index += 1
                            elapsed, moved = boot(lab, tap, d, row, index)
                            results.setdefault((row, who), []).append((elapsed, moved))
                            print("%-19s %-14s round %d: marker after %.2f s; %s" % (
                                row, who, r + 1, elapsed, "; ".join(
                                    "%s %s %.3f s %d B %s" % (n, p, s, b, o)
                                    for n, (p, s, b, o) in sorted(moved.items()))))
                            sys.stdout.flush()
                    finally:
                        for p in procs:
                            p.terminate()
                            p.wait(20)
    finally:
        lab.close()
        if args.keep:
            print("work directory kept: " + workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report(rows, results)


def report(rows, results):
    print()
    print("machine: %s; kernel %s; medians of the rounds" % (_cpu(), os.uname().release))
    print("| row | what | provisioner | dnsmasq+nginx | ratio (peer/provisioner time) |")
    print("|---|---|---|---|---|")
    for row in rows:
        mine = results.get((row, "provisioner"), [])
        theirs = results.get((row, "dnsmasq+nginx"), [])
        if not mine or not theirs:
            continue
        a = statistics.median(e for e, _ in mine)
        b = statistics.median(e for e, _ in theirs)
        print("| %s | QEMU start to marker | %.2f s | %.2f s | %.2f |" % (row, a, b, b / a))
        names = sorted(set().union(*(m.keys() for _, m in mine)))
        for name in names:
            xs = [m[name] for _, m in mine if name in m]
            ys = [m[name] for _, m in theirs if name in m]
            if not xs or not ys:
                continue
            a = statistics.median(x[1] for x in xs)
            b = statistics.median(y[1] for y in ys)
            print("| %s | %s over %s (%s / %s) | %.3f s | %.3f s | %.2f |" % (
                row, name, xs[0][0], xs[0][3] or "-", ys[0][3] or "-", a, b,
                b / a if a else float("nan")))


def _cpu():
    try:
        with open("/proc/cpuinfo") as f:
            model = re.search(r"model name\s*:\s*(.*)", f.read()).group(1)
    except (OSError, AttributeError):
        model = "?"
    return "%d x %s" % (os.cpu_count(), model)


if __name__ == "__main__":
    main()
