# -*- test-case-name: tests.test_dhcp_e2e,tests.test_dhcp_qemu -*-
"""
Helpers for the DHCP end-to-end tests: run provisioner as a user would
inside a namespace, run busybox udhcpc, boot QEMU (TCG) from the network
over a tap device on the lab bridge, read pcap files.

Everything started here is registered with the L{tests.netlab.NetLab} (or
killed by the caller's cleanup), and every tap device lives inside the
lab's bridge namespace, so C{lab.close()} removes it. L{BootBed} is the
whole bed the QEMU tests boot on.
"""

import os
import struct
import subprocess
import time

from tests.netlab import PYTHON, TWISTD, Appliance, NetLab, waitFor

__all__ = [
    "TWISTD",  # with waitFor: bench/dhcp_bench.py takes them from here
    "waitFor",
    "UDHCPC_SCRIPT",
    "writeUdhcpcScript",
    "readEvents",
    "QEMU",
    "OVMF_CODE",
    "OVMF_VARS",
    "BootBed",
    "addTap",
    "bootQEMU",
    "pcapPackets",
    "udpPayloads",
    "startRouterAdvertisements",
]

QEMU = "qemu-system-x86_64"
OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"


UDHCPC_SCRIPT = """#!/bin/sh
echo "$1 ip=$ip mask=$mask router=$router siaddr=$siaddr boot_file=$boot_file \
lease=$lease serverid=$serverid" >> "%(events)s"
case "$1" in
  bound|renew) ip addr flush dev "$interface"; ip addr add "$ip/${mask:-24}" dev "$interface" ;;
  deconfig) ip addr flush dev "$interface" ;;
esac
exit 0
"""


def writeUdhcpcScript(directory):
    """
    Write a udhcpc event script that appends each event to a file.

    @return: C{(script path, events path)}.
    """
    events = os.path.join(directory, "udhcpc.events")
    script = os.path.join(directory, "udhcpc.sh")
    with open(script, "w") as f:
        f.write(UDHCPC_SCRIPT % {"events": events})
    os.chmod(script, 0o755)
    return script, events


def readEvents(path):
    """
    The udhcpc events so far: a list of C{(event, {field: value})}.
    """
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split()
        if not parts:
            continue
        fields = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        out.append((parts[0], fields))
    return out


def addTap(lab, name):
    """
    Create tap device C{name} in the lab's bridge namespace, enslave it to
    the bridge, IPv6 off; it goes away with the namespace.
    """
    br = ["ip", "netns", "exec", lab.bridgeNS]
    subprocess.run(br + ["ip", "tuntap", "add", "dev", name, "mode", "tap"], check=True)
    subprocess.run(br + ["sysctl", "-qw", "net.ipv6.conf.%s.disable_ipv6=1" % (name,)],
                   check=False)
    subprocess.run(br + ["ip", "link", "set", name, "master", "br0", "up"], check=True)


def bootQEMU(lab, tap, mac, serial, firmware="bios", romfile=None, extra=(),
             memory=256, nic="virtio-net-pci", code=OVMF_CODE, variables=OVMF_VARS):
    """
    Start QEMU (TCG) in the bridge namespace, network-booting from C{tap},
    serial console to the file C{serial}.

    @param firmware: C{bios} (SeaBIOS + the NIC's iPXE ROM) or C{uefi}
        (OVMF; variables from a throwaway copy).
    @param romfile: the NIC option ROM; C{""} for none (EDK2's own PXE).
    @param code: OVMF's code (C{uefi}); C{variables}: the variables file it
        starts from (copied).
    @return: the L{subprocess.Popen}, registered with the lab.
    """
    argv = [QEMU, "-accel", "tcg", "-m", str(memory), "-nographic", "-no-reboot",
            "-nodefaults", "-serial", "file:" + serial, "-monitor", "none",
            "-netdev", "tap,id=n0,ifname=%s,script=no,downscript=no" % (tap,)]
    device = "%s,netdev=n0,mac=%s" % (nic, mac)
    if romfile is not None:
        device += ",romfile=" + romfile
    argv += ["-device", device, "-boot", "n"]
    if firmware == "uefi":
        copy = serial + ".vars.fd"
        with open(variables, "rb") as src, open(copy, "wb") as dst:
            dst.write(src.read())
        argv += ["-drive", "if=pflash,format=raw,readonly=on,file=" + code,
                 "-drive", "if=pflash,format=raw,file=" + copy]
    argv += list(extra)
    proc = subprocess.Popen(["ip", "netns", "exec", lab.bridgeNS] + argv,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    lab.processes.append(proc)
    return proc


def pcapPackets(path):
    """
    Yield C{(timestamp, ethernet frame)} from a classic pcap file.
    """
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return
    magic = data[:4]
    if magic == b"\xd4\xc3\xb2\xa1":
        endian = "<"
    elif magic == b"\xa1\xb2\xc3\xd4":
        endian = ">"
    else:
        raise ValueError("not a pcap file")
    offset = 24
    record = struct.Struct(endian + "IIII")
    while offset + record.size <= len(data):
        seconds, micros, captured, _ = record.unpack_from(data, offset)
        offset += record.size
        frame = data[offset:offset + captured]
        offset += captured
        yield seconds + micros / 1e6, frame


def udpPayloads(path, port=None):
    """
    Yield C{(source ip, source port, destination port, payload)} of the
    IPv4/UDP frames in a pcap (Ethernet link type).
    """
    for _, frame in pcapPackets(path):
        if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:]
        headerLength = (ip[0] & 0x0F) * 4
        if ip[9] != 17 or len(ip) < headerLength + 8:
            continue
        udp = ip[headerLength:]
        sport, dport, length = struct.unpack("!HHH", udp[:6])
        if port is not None and port not in (sport, dport):
            continue
        source = ".".join(str(b) for b in ip[12:16])
        yield source, sport, dport, udp[8:length]


_RA_SENDER = r"""
import socket, struct, sys, time
ifname = sys.argv[1]
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, socket.if_nametoindex(ifname))
# Router advertisement: no prefix, M=O=0, router lifetime 0 ("not a router").
ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 0, 0, 0)
while True:
    try:
        s.sendto(ra, ("ff02::1", 0, 0, socket.if_nametoindex(ifname)))
    except OSError:
        pass
    time.sleep(0.5)
"""


def startRouterAdvertisements(host, ifname="eth0"):
    """
    Enable IPv6 on C{host}'s C{ifname} and send an empty router
    advertisement (no prefix, not a router) to all nodes twice a second,
    so iPXE's IPv6 autoconfiguration finishes at once instead of waiting
    about 13 s for one. Link-local only: nothing is routed.
    """
    host.run(["sysctl", "-qw", "net.ipv6.conf.%s.disable_ipv6=0" % (ifname,)])
    return host.popen([PYTHON, "-c", _RA_SENDER, ifname], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL)


class BootBed:
    """
    The bed QEMU network-boots on: a L{NetLab} of C{hosts} hosts on subnet
    198.18.C{subnet}.0/24 whose host 0 sends empty router advertisements
    and runs the appliance (L{start}), and a tap device for QEMU on the
    bridge. The test's cleanups remove it all.

    @ivar lab: the L{NetLab}.
    @ivar server: host 0, where the appliance runs.
    @ivar appliance: the L{Appliance}, once started.
    @ivar tap: the tap device's name, once the appliance started.
    @ivar elapsed: how long the last L{boot} took, in seconds.
    """

    def __init__(self, case, subnet, directory, hosts=1):
        self.case = case
        self.subnet = subnet
        self.directory = directory
        self.lab = NetLab(hosts=hosts, subnet=subnet)
        case.addCleanup(self.lab.close)
        self.server = self.lab.hosts[0]
        # Kill it for a test that sends its own (the DHCPv6 service's).
        self.routerAdvertisements = startRouterAdvertisements(self.server)
        self.appliance = None
        self.tap = None
        self.elapsed = None

    def start(self, config):
        """
        Run the appliance with C{config} on host 0, then put the tap device
        on the bridge.

        @return: the L{Appliance}.
        """
        self.appliance = Appliance(self.directory, config, host=self.server)
        self.case.addCleanup(self.appliance.kill)
        self.appliance.start()
        self.tap = "provt%d" % (self.subnet,)
        addTap(self.lab, self.tap)
        return self.appliance

    def boot(self, mac, marker, serial, firmware="bios", romfile=None, timeout=120,
             memory=256, extra=(), **qemu):
        """
        Boot a VM with C{mac} from the network (see L{bootQEMU}) until the
        regular expression C{marker} shows on its serial console (the file
        C{serial}), then kill it.

        @return: the marker's match.
        @raise FailTest: no marker within C{timeout} seconds; the message
            carries the console and the appliance's log.
        """
        started = time.monotonic()
        proc = bootQEMU(self.lab, self.tap, mac, serial, firmware=firmware, romfile=romfile,
                        memory=memory, extra=extra, **qemu)

        def console():
            try:
                with open(serial, errors="replace") as f:
                    return f.read()
            except OSError:
                return ""
        found = waitFor(lambda: marker.search(console()), timeout, interval=0.25)
        self.elapsed = time.monotonic() - started
        proc.kill()
        proc.wait(10)
        if not found:
            self.case.fail("no marker within %ds (%.0fs)\nconsole:\n%s\nprovisioner:\n%s" % (
                timeout, self.elapsed, console()[-3000:], self.appliance.log()[-3000:]))
        return found
