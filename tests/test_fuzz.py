# -*- test-case-name: tests.test_fuzz -*-
"""
Fuzzing the running appliance (issue 14, "Fuzzing stays"): the appliance
runs as a user runs it (twistd, through L{tests.netlab.Appliance}) and is
sent, in one CI-sized run per protocol:

  - TFTP (on 127.0.0.1, port 0): 10^5 datagrams, mutations of valid RRQ,
    WRQ, ACK, ERROR, DATA and OACK packets, to the listen port and to the
    ports of live read and write transfers;
  - DHCP (full mode on port 67 and the PXE boot server on 4011, inside a
    L{tests.netlab.NetLab}): 10^5 mutated DISCOVER, REQUEST, DECLINE,
    RELEASE, INFORM and PXE requests;
  - imagecast's control channel (127.0.0.1 inside a lab namespace, so that
    a session's multicast stays on the lab bridge): 10^4 AMP boxes over a
    few TCP connections, valid commands with mutated arguments, unknown
    commands, then truncated, oversize and malformed boxes before each
    connection closes.

Datagrams go in bursts of a few hundred, each followed by a probe that
the server must answer (it reads its socket in order: its answer means
the burst was read, not dropped by the kernel). After each run the
process must be alive, serve a legitimate request (curl over TFTP,
byte-exact; busybox udhcpc; C{provisioner imagecast status}), have grown
by less than L{RSS_BOUND}, be back within L{FD_SLACK} descriptors of
its baseline once it settles, and have logged no traceback and no line
at critical level.

The random seed is fixed (L{DEFAULT_SEED}); C{PROVISIONER_FUZZ_SEED=N}
runs another one (C{random}: a fresh one). Each run prints its seed, and
a failure names it with the last datagrams or boxes sent.

Where a problem the fuzzing found would fail every run, the run steps
around it (the DHCP server gets neighbour entries for the lab subnet; the
control channel's long values stay below what an error box can echo; no
NUL in an image name) and the problem is kept as the smallest
reproducer, a test marked C{todo} with the reason and the code at fault.
"""

import collections
import contextlib
import ctypes
import hashlib
import json
import os
import random
import re
import select
import socket
import sqlite3
import struct
import subprocess
import threading
import time
import zlib

from twisted.trial.unittest import SynchronousTestCase

from provisioner.imagecast import commands as imagecastCommands
from provisioner.imagecast import ranges as R
from tests.netlab import PYTHON, REPO, Appliance, NetLab, requireE2E, waitFor
from tests.qemu_lab import readEvents, writeUdhcpcScript

#: the seed of a run unless C{PROVISIONER_FUZZ_SEED} names another
DEFAULT_SEED = 14
#: how much the appliance's resident set may grow over one protocol's run
RSS_BOUND = 30 << 20
#: how many descriptors above its baseline the appliance may hold once it
#: has settled
FD_SLACK = 3
#: seconds the appliance gets to settle (sessions time out, connections
#: close) before its descriptors are counted
SETTLE = 30
#: datagrams per UDP protocol, AMP boxes on the control channel
DATAGRAMS = 100000
BOXES = 10000
#: datagrams sent between two probes, at most
BURST = 250
#: what the datagrams of one burst may take of a socket's receive buffer
#: (Linux's default is 212,992 bytes; see L{bufferCost})
BURST_BYTES = 150000

PROVISIONER = [PYTHON, "-m", "provisioner"]
CLONE_NEWNET = 0x40000000


def bufferCost(data):
    """
    An upper bound of what C{data} takes of the receive buffer of the
    socket it is sent to (the kernel counts each datagram's whole buffer,
    not its payload).
    """
    return 2 * len(data) + 1024


def fuzzSeed():
    """
    The seed of this run: C{PROVISIONER_FUZZ_SEED} (a number, or C{random}
    for a fresh one), else L{DEFAULT_SEED}.
    """
    raw = os.environ.get("PROVISIONER_FUZZ_SEED", "").strip()
    if raw == "random":
        return random.SystemRandom().randrange(1, 1 << 32)
    if raw:
        return int(raw, 0)
    return DEFAULT_SEED


def socketIn(namespace, family=socket.AF_INET, kind=socket.SOCK_DGRAM):
    """
    A socket of the network namespace C{namespace} (a L{NetLab} host's
    name), or of this one for L{None}. A thread joins the namespace to make
    it and ends; the socket stays in the namespace it was made in.
    """
    if namespace is None:
        return socket.socket(family, kind)
    out = {}

    def make():
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open("/var/run/netns/" + namespace, os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns(%s)" % (namespace,))
            finally:
                os.close(fd)
            out["socket"] = socket.socket(family, kind)
        except BaseException as e:
            out["error"] = e
    thread = threading.Thread(target=make)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["socket"]


def drain(sock):
    """
    Read and return every datagram waiting on C{sock} (non-blocking), as
    C{(data, address)}.
    """
    out = []
    while True:
        try:
            out.append(sock.recvfrom(70000, socket.MSG_DONTWAIT))
        except (BlockingIOError, InterruptedError):
            return out
        except OSError:
            # an ICMP error queued for an earlier send
            continue


class Trail:
    """
    The last datagrams (or boxes) sent, for a failure message.
    """

    def __init__(self, size=10):
        self.items = collections.deque(maxlen=size)

    def add(self, where, data):
        self.items.append((where, data))

    def describe(self):
        lines = []
        for where, data in self.items:
            shown = repr(data[:200]) + (" ... (%d bytes)" % (len(data),)
                                        if len(data) > 200 else "")
            lines.append("  to %s: %s" % (where, shown))
        return "\n".join(lines) or "  (none)"


class Watch:
    """
    The appliance's process as C{/proc} shows it.
    """

    def __init__(self, appliance):
        self.appliance = appliance
        self.pid = appliance.process.pid

    def alive(self):
        return self.appliance.process.poll() is None

    def rss(self):
        """
        Its resident set (C{VmRSS}), in bytes.
        """
        with open("/proc/%d/status" % (self.pid,)) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS for %d" % (self.pid,))

    def fds(self):
        return len(os.listdir("/proc/%d/fd" % (self.pid,)))

    def drops(self, port):
        """
        Datagrams the kernel dropped on the process's UDP socket bound to
        C{port} (the C{drops} column of C{/proc/PID/net/udp}), or L{None}.
        """
        try:
            with open("/proc/%d/net/udp" % (self.pid,)) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            return None
        total = None
        for line in lines:
            fields = line.split()
            if len(fields) >= 13 and int(fields[1].split(":")[1], 16) == port:
                total = (total or 0) + int(fields[-1])
        return total

    def logLines(self):
        """
        The lines of the log, with those of the files twistd rotated it to
        (C{NAME.log.1}, ...: it does at each megabyte).
        """
        path = self.appliance.logPath
        rotated = [name for name in os.listdir(os.path.dirname(path))
                   if re.match(re.escape(os.path.basename(path)) + r"\.\d+$", name)]
        lines = []
        for name in sorted(rotated, key=lambda n: -int(n.rsplit(".", 1)[1])):
            with open(os.path.join(os.path.dirname(path), name), errors="replace") as f:
                lines.extend(f.read().splitlines())
        return lines + self.appliance.log().splitlines()

    def logProblems(self):
        """
        The log's lines that start a traceback or are at critical level
        (twistd writes the level after the namespace: C{[name#critical]}),
        and how many lines it has. (A one-line message that only quotes an
        AMP error's text, C{"...\\nTraceback (failure with no frames)..."},
        is not a traceback.)
        """
        lines = self.logLines()
        return [line for line in lines
                if "Traceback (most recent call last)" in line or "#critical]" in line or
                "Unhandled Error" in line], len(lines)


def mib(n):
    return "%.1f MiB" % (n / float(1 << 20),)


class FuzzCase(SynchronousTestCase):
    """
    What every protocol's run shares: the seed, the baseline, the verdict.
    """

    part = None

    def startRun(self, appliance, legit):
        """
        Warm the appliance up with one legitimate request (C{legit()},
        which raises L{AssertionError} when it is not served), then take
        the baseline.
        """
        self.seed = fuzzSeed()
        self.rnd = random.Random("%s/%d" % (self.part, self.seed))
        self.trail = Trail()
        self.watch = Watch(appliance)
        self.legit = legit
        with open("/proc/%d/cmdline" % (self.watch.pid,), "rb") as f:
            self.assertIn(b"twistd", f.read())
        legit()
        self.before = {"rss": self.watch.rss(), "fds": self.watch.fds()}
        self.started = time.monotonic()
        print("\n%s fuzz: seed %d (PROVISIONER_FUZZ_SEED=%d repeats this run); baseline "
              "RSS %s, %d descriptors" % (self.part, self.seed, self.seed,
                                          mib(self.before["rss"]), self.before["fds"]))

    @contextlib.contextmanager
    def guard(self):
        """
        Whatever goes wrong during the run fails it with the seed and the
        last datagrams sent.
        """
        try:
            yield
        except self.failureException:
            raise
        except Exception as e:
            self.failRun("%s: %s" % (type(e).__name__, e))

    def failRun(self, what):
        """
        Fail, naming the seed and the last datagrams sent.
        """
        self.fail("%s fuzz (seed %d; PROVISIONER_FUZZ_SEED=%d repeats it): %s\n"
                  "last sent:\n%s\nend of the appliance's log:\n%s" % (
                      self.part, self.seed, self.seed, what, self.trail.describe(),
                      self.watch.appliance.log()[-3000:]))

    def verdict(self, counts, extra="", problems=()):
        """
        After the run: alive, serving, RSS and descriptors bounded, a clean
        log. Prints the figures.

        @param counts: what was sent, as text.
        @param extra: more figures, as text.
        @param problems: what the run itself found wrong.
        """
        elapsed = time.monotonic() - self.started
        if not self.watch.alive():
            self.failRun("the appliance exited (%s) after %s" % (
                self.watch.appliance.process.returncode, counts))
        problems = list(problems)
        # back to the baseline, or at most SETTLE seconds: then within FD_SLACK
        waitFor(lambda: self.watch.fds() <= self.before["fds"], SETTLE, interval=0.25)
        fds = self.watch.fds()
        if fds > self.before["fds"] + FD_SLACK:
            problems.append("%d descriptors %d s after the run (baseline %d): %s" % (
                fds, SETTLE, self.before["fds"], self._fdList()))
        try:
            self.legit()
        except AssertionError as e:
            problems.append("a legitimate request was not served: %s" % (e,))
        rss = self.watch.rss()
        if rss - self.before["rss"] >= RSS_BOUND:
            problems.append("RSS grew from %s to %s (bound: %s)" % (
                mib(self.before["rss"]), mib(rss), mib(RSS_BOUND)))
        logged, lineCount = self.watch.logProblems()
        if logged:
            problems.append("the log has %d lines with a traceback or at critical level, "
                            "first:\n    %s" % (len(logged), "\n    ".join(logged[:10])))
        if not self.watch.alive():
            problems.append("the appliance exited after the run")
        print("%s fuzz: %s in %.1f s; RSS %s -> %s, descriptors %d -> %d; %d log lines%s" % (
            self.part, counts, elapsed, mib(self.before["rss"]), mib(rss),
            self.before["fds"], fds, lineCount, extra))
        if problems:
            self.failRun("after %s:\n  - %s" % (counts, "\n  - ".join(problems)))

    def _fdList(self):
        out = []
        base = "/proc/%d/fd" % (self.watch.pid,)
        for name in sorted(os.listdir(base), key=int):
            try:
                out.append("%s->%s" % (name, os.readlink(os.path.join(base, name))))
            except OSError:
                pass
        return ", ".join(out)


class Mutator:
    """
    Generic byte mutations, from one random generator.
    """

    def __init__(self, rnd):
        self.rnd = rnd

    def garbage(self, most=600):
        rnd = self.rnd
        return bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(most + 1)))

    def flip(self, data):
        if not data:
            return data
        out = bytearray(data)
        for _ in range(self.rnd.choice((1, 1, 1, 2, 3, 8))):
            i = self.rnd.randrange(len(out))
            out[i] ^= 1 << self.rnd.randrange(8)
        return bytes(out)

    def truncate(self, data):
        return data[:self.rnd.randrange(len(data) + 1)]

    def insert(self, data):
        rnd = self.rnd
        i = rnd.randrange(len(data) + 1)
        piece = rnd.choice((b"\x00", b"\xff", b"\x00\x00", b"\x80", b"%s%n",
                            bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 9))),
                            b"A" * rnd.randrange(1, 3000)))
        return data[:i] + piece + data[i:]

    def delete(self, data):
        if not data:
            return data
        i = self.rnd.randrange(len(data))
        return data[:i] + data[i + self.rnd.randrange(1, 9):]

    def repeat(self, data):
        if not data:
            return data
        i = self.rnd.randrange(len(data))
        j = min(len(data), i + self.rnd.randrange(1, 40))
        return data[:j] + data[i:j] * self.rnd.randrange(1, 30) + data[j:]

    def setByte(self, data):
        if not data:
            return data
        i = self.rnd.randrange(len(data))
        return data[:i] + bytes((self.rnd.choice((0, 1, 0x7f, 0x80, 0xfe, 0xff)),)) + \
            data[i + 1:]

    def splice(self, data, other):
        return data[:self.rnd.randrange(len(data) + 1)] + \
            other[self.rnd.randrange(len(other) + 1):]

    def mutate(self, data, times=None):
        ops = (self.flip, self.flip, self.truncate, self.insert, self.delete, self.repeat,
               self.setByte)
        for _ in range(times or self.rnd.choice((1, 1, 2, 3))):
            data = self.rnd.choice(ops)(data)
        return data


# -- TFTP ---------------------------------------------------------------------

TFTP_CONFIG = """\
tftp:
  enabled: true
  address: 127.0.0.1
  port: 0
  root: {d}/tftpboot
  write:
    enabled: true
    directory: {d}/uploads
    max_bytes: 1048576
    max_total_bytes: 33554432
"""

#: option names a request may carry (ours, RFC 2090/2347-2349/7440, others)
TFTP_OPTION_NAMES = [
    b"blksize", b"windowsize", b"timeout", b"tsize", b"multicast", b"adaptive",
    b"msftwindow", b"ranges", b"mcepoch", b"utimeout", b"rollover", b"BLKSIZE",
    b"WindowSize", b"TIMEOUT", b"x" * 300, b"", b"\xffopt\xfe", b"blksize\xff"]

#: values at the edges, for every option
TFTP_EDGE_VALUES = [
    b"0", b"1", b"7", b"8", b"-1", b"255", b"256", b"511", b"512", b"513", b"1428", b"1468",
    b"65464", b"65465", b"65535", b"65536", b"4294967295", b"4294967296",
    b"9" * 40, b"", b" 512", b"512 ", b"+512", b"0x200", b"1e3", b"1.5", b"nan", b"inf",
    b"-0", b"\xff\xfe", b"\xc3\x28", b"1" * 1500, b"31416", b"27182", b"1,64", b"1,0",
    b"1,99999", b"0-", b"0-99999999999999", b"239.255.0.1,1758,1", b",,", b"2"]

TFTP_VALUES = {
    b"blksize": [b"8", b"512", b"1024", b"1428", b"65464", b"65465", b"99999999999999999999"],
    b"windowsize": [b"1", b"4", b"64", b"65535", b"65536", b"0"],
    b"timeout": [b"1", b"255", b"256", b"0", b"99999999"],
    b"tsize": [b"0", b"1", b"99999999999999999999"],
    b"adaptive": [b"1", b"2", b"1,64"],
    b"msftwindow": [b"31416", b"27182"],
    b"ranges": [b"0-511", b"0-", b"512-1023,4096-8191"],
}

TFTP_MODES = [b"octet", b"octet", b"netascii", b"mail", b"OCTET", b"octets", b"", b"\xff",
              b"binary", b"NetAscii", b"octet\x01"]

TFTP_NAMES = [
    b"fuzz.bin", b"fuzz.bin", b"small.txt", b"/fuzz.bin", b"./fuzz.bin", b"sub/../fuzz.bin",
    b"../fuzz.bin", b"../../../../etc/passwd", b"/etc/passwd", b"C:\\fuzz.bin",
    b"fuzz.bin\xff", b"\xff\xfe\xfd", b"\xc3\x28.bin", b"missing", b"a" * 300,
    b"d/" * 600, b"pxelinux.cfg/01-02-00-00-00-00-01", b".", b"..", b"/", b"fuzz.bin/x"]


def tftpOptions(rnd):
    """
    Some options: known names with fitting or edge values, repeated,
    oversize, non-UTF-8.
    """
    out = []
    for _ in range(rnd.choice((0, 1, 2, 3, 4, 6))):
        name = rnd.choice(TFTP_OPTION_NAMES)
        values = TFTP_VALUES.get(name.lower(), [])
        if values and rnd.random() < 0.5:
            value = rnd.choice(values)
        else:
            value = rnd.choice(TFTP_EDGE_VALUES)
        out.append((name, value))
    if rnd.random() < 0.05:
        name, value = rnd.choice(out or [(b"blksize", b"512")])
        out.extend([(name, value)] * rnd.randrange(2, 40))
    if rnd.random() < 0.03:
        out.append((rnd.choice(TFTP_OPTION_NAMES), b"9" * rnd.randrange(600, 4000)))
    return out


def tftpRequest(opcode, name, mode=b"octet", options=()):
    return struct.pack("!H", opcode) + name + b"\x00" + mode + b"\x00" + b"".join(
        k + b"\x00" + v + b"\x00" for k, v in options)


def tftpBlock(rnd):
    return rnd.choice((0, 1, 2, 3, 4, 5, 8, 65534, 65535, rnd.randrange(65536)))


class TFTPFuzzer:
    """
    Makes TFTP datagrams: C{listen()} for the listen port, C{transfer()}
    for a transfer port.
    """

    def __init__(self, rnd):
        self.rnd = rnd
        self.m = Mutator(rnd)
        self.uploads = 0

    def request(self):
        rnd = self.rnd
        if rnd.random() < 0.2:
            self.uploads += 1
            return tftpRequest(2, rnd.choice((b"fz%06d.bin" % (self.uploads,), b"x/y",
                                               b"../escape", b"\xff\xfe")),
                               rnd.choice(TFTP_MODES), tftpOptions(rnd))
        return tftpRequest(1, rnd.choice(TFTP_NAMES), rnd.choice(TFTP_MODES), tftpOptions(rnd))

    def ack(self):
        rnd = self.rnd
        extra = b""
        if rnd.random() < 0.3:
            # the adaptive window's and msftwindow's ACK extensions
            extra = rnd.choice((struct.pack("!H", rnd.choice((0, 1, 64, 65535))),
                                struct.pack("!HB", rnd.randrange(65536), rnd.getrandbits(8)),
                                b"\x01", b"\xff" * rnd.randrange(1, 20)))
        return struct.pack("!HH", 4, tftpBlock(rnd)) + extra

    def error(self):
        rnd = self.rnd
        message = rnd.choice((b"", b"fuzz", b"\xff\xfe", b"x" * 1500, b"%s%s%n"))
        tail = rnd.choice((b"\x00", b"\x00", b"", b"\x00junk\x00"))
        return struct.pack("!HH", 5, rnd.choice((0, 1, 4, 5, 8, 9, 65535))) + message + tail

    def data(self):
        rnd = self.rnd
        size = rnd.choice((0, 1, 511, 512, 513, 1428, 8000, 65464))
        return struct.pack("!HH", 3, tftpBlock(rnd)) + b"\xa5" * size

    def oack(self):
        return b"\x00\x06" + b"".join(k + b"\x00" + v + b"\x00"
                                      for k, v in tftpOptions(self.rnd))

    def valid(self):
        return self.rnd.choice((self.request, self.request, self.ack, self.error, self.data,
                                self.oack))()

    def listen(self):
        """
        One datagram for the listen port.
        """
        rnd = self.rnd
        roll = rnd.random()
        if roll < 0.07:
            return self.m.garbage()
        if roll < 0.10:
            return struct.pack("!H", rnd.choice((0, 7, 8, 255, 256, 65535))) + \
                self.m.garbage(40)
        data = self.valid()
        if rnd.random() < 0.45:
            data = self.m.mutate(data)
        if rnd.random() < 0.03:
            data = self.m.splice(data, self.valid())
        return data

    def transfer(self, write=False):
        """
        One datagram for a transfer port.
        """
        rnd = self.rnd
        roll = rnd.random()
        if roll < 0.45:
            data = self.ack()
        elif roll < 0.60:
            data = self.data() if write or rnd.random() < 0.3 else self.ack()
        elif roll < 0.63:
            data = self.error()
        elif roll < 0.70:
            data = self.request()
        elif roll < 0.73:
            data = self.oack()
        elif roll < 0.78:
            data = self.m.garbage(40)
        else:
            data = self.m.mutate(self.ack() if rnd.random() < 0.7 else self.data())
        return data

    def templates(self):
        """
        Valid datagrams to cut at every length.
        """
        return [
            tftpRequest(1, b"fuzz.bin", b"octet", [(b"blksize", b"1428"), (b"tsize", b"0"),
                                                    (b"windowsize", b"8"),
                                                    (b"timeout", b"1")]),
            tftpRequest(1, b"small.txt", b"netascii"),
            tftpRequest(1, b"fuzz.bin", b"octet", [(b"adaptive", b"1"),
                                                    (b"msftwindow", b"31416")]),
            tftpRequest(2, b"cut.bin", b"octet", [(b"tsize", b"100"), (b"blksize", b"512")]),
            struct.pack("!HH", 4, 0) + b"\x00\x08\x01",
            struct.pack("!HH", 5, 1) + b"not found\x00",
            b"\x00\x06blksize\x001428\x00tsize\x00100000\x00",
        ]


class LiveTransfer:
    """
    A transfer the fuzzer started with a valid request, on its own socket
    (its right TID): the datagrams it sends go to the transfer's port.
    """

    def __init__(self, sock, port, write, budget):
        self.sock = sock
        self.port = port
        self.write = write
        self.budget = budget
        self.ended = False

    def finish(self):
        try:
            self.sock.sendto(struct.pack("!HH", 5, 0) + b"fuzz done\x00",
                             ("127.0.0.1", self.port))
        except OSError:
            pass
        self.sock.close()


class TFTPFuzzTests(FuzzCase):
    """
    The TFTP server, run as a user runs it, against 10^5 hostile datagrams.
    """

    part = "TFTP"

    def setUp(self):
        requireE2E(tools=["curl"])
        self.directory = os.path.abspath(self.mktemp())
        for sub in ("tftpboot", "uploads"):
            os.makedirs(os.path.join(self.directory, sub))
        self.content = random.Random(DEFAULT_SEED).randbytes(300000)
        with open(os.path.join(self.directory, "tftpboot", "fuzz.bin"), "wb") as f:
            f.write(self.content)
        with open(os.path.join(self.directory, "tftpboot", "small.txt"), "wb") as f:
            f.write(b"line one\nline two\r\n" * 50)
        self.appliance = Appliance(self.directory, TFTP_CONFIG.format(d=self.directory))
        self.addCleanup(self.appliance.kill)
        self.appliance.start()
        self.port = self.appliance.listeningPort("TFTP")
        self.assertIsNotNone(self.port, self.appliance.log()[-3000:])
        self.sockets = []
        self.addCleanup(lambda: [s.close() for s in self.sockets])

    def udp(self, address="127.0.0.1"):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((address, 0))
        self.sockets.append(sock)
        return sock

    def fetch(self):
        """
        curl fetches fuzz.bin over TFTP, byte-exact.
        """
        out = os.path.join(self.directory, "fetched.bin")
        if os.path.exists(out):
            os.remove(out)
        result = subprocess.run(
            ["curl", "-s", "--max-time", "30", "--tftp-blksize", "1428", "-o", out,
             "tftp://127.0.0.1:%d/fuzz.bin" % (self.port,)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        if result.returncode != 0:
            raise AssertionError("curl exited %d: %s" % (result.returncode, result.stdout))
        with open(out, "rb") as f:
            if f.read() != self.content:
                raise AssertionError("curl's copy of fuzz.bin differs")

    def probe(self, sock, n):
        """
        Ask the listen port for a missing file and wait for its ERROR 1
        (only probes are sent from C{sock}): everything sent to the listen
        port before it has been read.
        """
        drain(sock)
        for _ in range(20):
            sock.sendto(tftpRequest(1, b"probe-%d" % (n,)), ("127.0.0.1", self.port))
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                ready = select.select([sock], [], [], max(0, deadline - time.monotonic()))
                if not ready[0]:
                    break
                if sock.recv(70000)[:4] == b"\x00\x05\x00\x01":
                    return
        self.failRun("no answer to probe %d from the listen port within 10 s" % (n,))

    def startTransfer(self, rnd):
        """
        Start a read (or write) transfer with a valid request on a fresh
        socket; return its L{LiveTransfer}, or L{None} if the server
        refused it or said nothing within a second. The socket is bound to
        127.0.0.2: the fuzzed requests from 127.0.0.1 hold that address's
        upload slots (C{tftp.write.max_per_client}).
        """
        sock = self.udp("127.0.0.2")
        write = rnd.random() < 0.2
        if write:
            request = tftpRequest(2, b"live-%08x.bin" % (rnd.getrandbits(32),), b"octet",
                                  rnd.choice(([], [(b"blksize", b"512"), (b"tsize", b"4000")])))
        else:
            request = tftpRequest(1, b"fuzz.bin", b"octet", rnd.choice((
                [], [(b"blksize", b"512")], [(b"blksize", b"1428"), (b"windowsize", b"4")],
                [(b"adaptive", b"1")], [(b"msftwindow", b"31416")],
                [(b"timeout", b"1"), (b"tsize", b"0")])))
        sock.sendto(request, ("127.0.0.1", self.port))
        if select.select([sock], [], [], 1.0)[0]:
            data, (host, port) = sock.recvfrom(70000)
            if port != self.port and data[:2] != b"\x00\x05":
                return LiveTransfer(sock, port, write, rnd.randrange(10, 80))
        self.sockets.remove(sock)
        sock.close()
        return None

    def test_fuzz(self):
        """
        If 10^5 mutated TFTP datagrams reach the listen port and the ports
        of live transfers from a handful of source ports, the appliance
        keeps running and serving, its memory and descriptors stay bounded
        and it logs no traceback.
        """
        self.startRun(self.appliance, self.fetch)
        rnd = self.rnd
        fuzzer = TFTPFuzzer(rnd)
        sources = [self.udp() for _ in range(6)]
        prober = self.udp()
        listen = ("127.0.0.1", self.port)
        sent = {"listen": 0, "transfer": 0, "wrong TID": 0}
        transfers = []
        started = {False: 0, True: 0}
        refused = 0
        probes = 0
        queue = [t[:n] for t in fuzzer.templates() for n in range(len(t) + 1)]
        total = 0

        def send(sock, data, where, kind):
            sent[kind] += 1
            self.trail.add(where, data)
            try:
                sock.sendto(data, where)
            except OSError:
                pass

        with self.guard():
            dropsBefore = self.watch.drops(self.port)
            while total < DATAGRAMS:
                budget = BURST_BYTES
                for _ in range(min(BURST, DATAGRAMS - total)):
                    if budget <= 0:
                        break
                    total += 1
                    if queue:
                        data = queue.pop()
                        budget -= bufferCost(data)
                        send(rnd.choice(sources), data, listen, "listen")
                        continue
                    if rnd.random() < 0.78 or not transfers:
                        data = fuzzer.listen()
                        budget -= bufferCost(data)
                        send(rnd.choice(sources), data, listen, "listen")
                        continue
                    live = rnd.choice(transfers)
                    data = fuzzer.transfer(live.write)
                    if rnd.random() < 0.1:
                        send(rnd.choice(sources), data, ("127.0.0.1", live.port), "wrong TID")
                    else:
                        send(live.sock, data, ("127.0.0.1", live.port), "transfer")
                    live.budget -= 1
                probes += 1
                self.probe(prober, probes)
                for sock in sources:
                    drain(sock)
                for live in transfers:
                    for data, addr in drain(live.sock):
                        if data[:2] == b"\x00\x05":
                            live.ended = True
                for live in [t for t in transfers if t.ended or t.budget <= 0]:
                    transfers.remove(live)
                    self.sockets.remove(live.sock)
                    live.finish()
                while len(transfers) < 4:
                    live = self.startTransfer(rnd)
                    if live is None:
                        refused += 1
                        break
                    started[live.write] += 1
                    transfers.append(live)
            for live in transfers:
                self.sockets.remove(live.sock)
                live.finish()
        drops = self.watch.drops(self.port) - dropsBefore
        self.verdict(
            "%d datagrams (%d to the listen port, %d to transfer ports from their client, "
            "%d from a wrong TID; %d reads and %d uploads started for it, %d refused)" % (
                total, sent["listen"], sent["transfer"], sent["wrong TID"], started[False],
                started[True], refused),
            "; %d datagrams dropped by the listen socket; %d probes answered" % (
                drops, probes),
            ["the listen socket dropped %d datagrams (more than 1%%): the pacing failed" % (
                drops,)] if drops > sent["listen"] // 100 else [])
        self.assertGreaterEqual(total, DATAGRAMS)


# -- DHCP ---------------------------------------------------------------------

DHCP_SUBNET = 61

DHCP_CONFIG = """\
tftp:
  enabled: false
dhcp:
  enabled: true
  mode: full
  interfaces: [eth0]
  lease_file: {d}/leases.sqlite
  lease_sync: normal
  lease_time: 120
  subnets:
    - network: 198.18.{s}.0/24
      range: [198.18.{s}.10, 198.18.{s}.250]
      router: 198.18.{s}.1
      dns: [198.18.{s}.1]
"""

DHCP_COOKIE = b"\x63\x82\x53\x63"
PXE_VENDOR = b"PXEClient:Arch:00000:UNDI:002001"
DISCOVER, REQUEST, DECLINE, RELEASE, INFORM = 1, 3, 4, 7, 8


def ip4(text):
    return socket.inet_aton(text)


def dhcpOptions(options, end=True):
    """
    Encode C{(code, value)} pairs as TLVs (a value of more than 255 bytes
    is cut there; the fuzzer lengthens options on purpose elsewhere).
    """
    out = b"".join(bytes((code, min(len(value), 255))) + value[:255]
                   for code, value in options)
    return out + (b"\xff" if end else b"")


def bootp(op=1, htype=1, hlen=6, hops=0, xid=0, secs=0, flags=0, ciaddr="0.0.0.0",
          yiaddr="0.0.0.0", siaddr="0.0.0.0", giaddr="0.0.0.0", chaddr=b"", sname=b"",
          bootfile=b"", cookie=DHCP_COOKIE, options=b""):
    """
    A BOOTP/DHCP datagram from its fields (C{options} already encoded).
    """
    return struct.pack("!BBBBIHH4s4s4s4s16s64s128s", op, htype, hlen, hops, xid, secs, flags,
                       ip4(ciaddr), ip4(yiaddr), ip4(siaddr), ip4(giaddr), chaddr, sname,
                       bootfile) + cookie + options


class DHCPFuzzer:
    """
    Makes DHCP requests, valid and mutated, for port 67 and the PXE boot
    server's 4011.
    """

    def __init__(self, rnd, subnet):
        self.rnd = rnd
        self.m = Mutator(rnd)
        self.net = "198.18.%d." % (subnet,)
        self.server = self.net + "1"
        self.macs = [bytes((2, 0xf0, 0, 0, 0, i)) for i in range(16)]

    def address(self):
        rnd = self.rnd
        roll = rnd.random()
        if roll < 0.6:
            return self.net + str(rnd.randrange(10, 251))
        if roll < 0.8:
            return self.net + str(rnd.choice((0, 1, 2, 3, 5, 9, 251, 254, 255)))
        return rnd.choice(("0.0.0.0", "255.255.255.255", "127.0.0.1", "224.0.0.1",
                           "169.254.1.1", "10.0.0.1", "0.0.0.1", "240.0.0.1",
                           socket.inet_ntoa(struct.pack("!I", rnd.getrandbits(32)))))

    def mac(self):
        if self.rnd.random() < 0.9:
            return self.rnd.choice(self.macs)
        return bytes(self.rnd.getrandbits(8) for _ in range(6))

    def text(self):
        rnd = self.rnd
        return rnd.choice((b"fuzz", b"", b"\xff\xfe\xfd", b"\xc3\x28", b"a" * 255, b"%s%n",
                           b"host\x00name", b"iPXE", PXE_VENDOR, b"HTTPClient:Arch:00016"))

    def bootOptions(self):
        """
        What network-boot clients send: 60, 93, 94, 97, 77, 175, 43.
        """
        rnd = self.rnd
        out = []
        if rnd.random() < 0.7:
            out.append((60, rnd.choice((PXE_VENDOR, PXE_VENDOR, b"PXEClient",
                                        b"HTTPClient:Arch:00016:UNDI:003001",
                                        b"PXEClient:Arch:00007", b"PXEClient:Arch:99999",
                                        b"PXEClient\xff", self.text()))))
        if rnd.random() < 0.7:
            out.append((93, rnd.choice((b"\x00\x00", b"\x00\x07", b"\x00\x09", b"\x00\x0b",
                                        b"\x00\x10", b"\xff\xff", b"\x00", b"\x00\x00\x00\x07",
                                        b""))))
        if rnd.random() < 0.5:
            out.append((94, rnd.choice((b"\x01\x02\x01", b"\x01\x03\x00", b"\x01", b""))))
        if rnd.random() < 0.5:
            out.append((97, rnd.choice((b"\x00" + bytes(range(16)), b"\x00" * 17,
                                        b"\x01" + bytes(16), bytes(range(16)), b"\x00", b""))))
        if rnd.random() < 0.3:
            out.append((77, rnd.choice((b"iPXE", b"\x04iPXE", b"\x04iPXE\x03abc", b"\x09iPXE",
                                        b"\x00", b""))))
        if rnd.random() < 0.2:
            out.append((175, rnd.choice((b"\x13\x01\x01", b"\x13\x05\x01", b"\x13",
                                         b"\x10\x01\x01\x11\x01\x01"))))
        if rnd.random() < 0.3:
            out.append((43, rnd.choice((
                b"\x06\x01\x08\xff", b"\x47\x04\x80\x00\x00\x00\xff", b"\x47\x04\x00",
                b"\x08\x07\x80\x00\x01\xc6\x12\x00\x01\xff", b"\x09\xff", b"\x0a\x02\x00",
                b"\xff", b"\x00\x00\x00", b"\x47\x02\x80\x00"))))
        return out

    def request(self, kind=None, pxe=False):
        """
        One request: C{kind} (53) or a random one, header and options
        filled as clients fill them, with edge values sometimes.
        """
        rnd = self.rnd
        if kind is None:
            kind = rnd.choice((DISCOVER, DISCOVER, REQUEST, REQUEST, DECLINE, RELEASE,
                               INFORM))
        mac = self.mac()
        options = [(53, bytes((kind,)))]
        if rnd.random() < 0.5:
            options.append((61, b"\x01" + mac))
        if rnd.random() < 0.6:
            options.append((55, bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 40)))))
        if rnd.random() < 0.3:
            options.append((57, struct.pack("!H", rnd.choice((0, 1, 576, 1500, 65535)))))
        if rnd.random() < 0.2:
            options.append((12, self.text()))
        ciaddr = giaddr = "0.0.0.0"
        if kind in (REQUEST, DECLINE) and rnd.random() < 0.8:
            options.append((50, ip4(self.address())))
        if kind in (REQUEST, DECLINE, RELEASE) and rnd.random() < 0.6:
            options.append((54, ip4(rnd.choice((self.server, self.server, self.address())))))
        if kind in (RELEASE, INFORM) or (kind == REQUEST and rnd.random() < 0.3) or pxe:
            ciaddr = self.address()
        if rnd.random() < 0.1:
            giaddr = self.address()
        if rnd.random() < 0.1:
            options.append((82, rnd.choice((b"\x01\x04port\x02\x06remote", b"\x01",
                                            b"\x01\x10abc", b""))))
        options.extend(self.bootOptions())
        if pxe:
            options.append((60, PXE_VENDOR))
        rnd.shuffle(options)
        header = dict(xid=rnd.getrandbits(32), secs=rnd.choice((0, 0, 4, 65535)),
                      flags=rnd.choice((0, 0, 0x8000, 0xffff)), ciaddr=ciaddr, giaddr=giaddr,
                      chaddr=mac, op=1, htype=1, hlen=6)
        if rnd.random() < 0.08:
            header.update(op=rnd.choice((0, 2, 3, 255)), htype=rnd.choice((0, 6, 32, 255)),
                          hlen=rnd.choice((0, 1, 7, 16, 17, 255)),
                          hops=rnd.choice((1, 16, 255)))
        if rnd.random() < 0.03:
            header["chaddr"] = bytes(rnd.getrandbits(8) for _ in range(16))
        return self.encode(header, options)

    def encode(self, header, options):
        """
        Encode, often mutated in a DHCP-aware way: option lengths, option
        overload, repeated and oversize options, cookies, END.
        """
        rnd = self.rnd
        sname = bootfile = b""
        cookie = DHCP_COOKIE
        roll = rnd.random()
        if roll < 0.08:
            # option overload (52): options in file and/or sname
            value = rnd.choice((1, 2, 3, 3, 0, 4, 255))
            options = options + [(52, bytes((value,)) if rnd.random() < 0.9 else b"\x01\x01")]
            inner = dhcpOptions(self.bootOptions() + [(53, bytes((rnd.choice((1, 3, 8)),)))],
                                end=rnd.random() < 0.7)
            if rnd.random() < 0.3:
                inner = self.m.mutate(inner)
            bootfile, sname = inner[:128], inner[:64]
        elif roll < 0.13:
            # a long option split over repeated instances (RFC 3396)
            code = rnd.choice((43, 55, 60, 77, 82, 97, 175, 53, 61))
            piece = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 255)))
            options = options + [(code, piece)] * rnd.randrange(2, 20)
        elif roll < 0.16:
            cookie = rnd.choice((b"", b"\x00\x00\x00\x00", b"DHCP", b"\x63\x82\x53\x64",
                                 bytes(rnd.getrandbits(8) for _ in range(4))))
        data = bootp(sname=sname, bootfile=bootfile, cookie=cookie,
                     options=dhcpOptions(options, end=rnd.random() < 0.95), **header)
        roll = rnd.random()
        if roll < 0.1:
            data = self.badLength(data)
        elif roll < 0.14:
            data = data + b"\x00" * rnd.randrange(1, 1200)
        elif roll < 0.16:
            data = data + bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 400)))
        elif roll < 0.45:
            data = self.m.mutate(data)
        return data

    def badLength(self, data):
        """
        Change the length byte of one option of C{data} (after the
        cookie).
        """
        rnd = self.rnd
        i = 240
        starts = []
        while i + 1 < len(data) and data[i] != 255:
            if data[i] == 0:
                i += 1
                continue
            starts.append(i)
            i += 2 + data[i + 1]
        if not starts:
            return data
        at = rnd.choice(starts) + 1
        length = rnd.choice((0, 1, 255, data[at] + 1, max(0, data[at] - 1),
                             len(data) - at, len(data) - at - 1))
        return data[:at] + bytes((length & 0xff,)) + data[at + 1:]

    def garbage(self):
        return self.m.garbage(self.rnd.choice((0, 1, 4, 100, 236, 240, 300, 600)))

    def templates(self):
        """
        Valid requests to cut at every length.
        """
        mac = self.macs[0]
        boot = [(60, PXE_VENDOR), (93, b"\x00\x00"), (94, b"\x01\x02\x01"),
                (97, b"\x00" + bytes(range(16)))]
        return [
            bootp(xid=1, chaddr=mac, options=dhcpOptions(
                [(53, b"\x01"), (61, b"\x01" + mac), (55, bytes(range(1, 20)))] + boot)),
            bootp(xid=2, chaddr=mac, options=dhcpOptions(
                [(53, b"\x03"), (50, ip4(self.net + "77")), (54, ip4(self.server))])),
            bootp(xid=3, chaddr=mac, options=dhcpOptions(
                [(53, b"\x04"), (50, ip4(self.net + "77")), (54, ip4(self.server))])),
            bootp(xid=4, chaddr=mac, ciaddr=self.net + "77", options=dhcpOptions(
                [(53, b"\x07"), (54, ip4(self.server))])),
            bootp(xid=5, chaddr=mac, ciaddr=self.net + "77", options=dhcpOptions(
                [(53, b"\x08")])),
            bootp(xid=6, chaddr=mac, ciaddr=self.net + "77", options=dhcpOptions(
                [(53, b"\x03"), (43, b"\x47\x04\x80\x00\x00\x00\xff")] + boot)),
        ]


class DHCPFuzzTests(FuzzCase):
    """
    The DHCP service in full mode with the PXE boot server, run as a user
    runs it inside a network namespace, against 10^5 hostile requests from
    another.
    """

    part = "DHCP"

    def setUp(self):
        requireE2E(root=True, netns=True, tools=["busybox", "ip"])
        self.lab = NetLab(hosts=2, subnet=DHCP_SUBNET)
        self.addCleanup(self.lab.close)
        self.server, self.fuzzHost = self.lab.hosts
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.appliance = Appliance(
            self.directory, DHCP_CONFIG.format(d=self.directory, s=DHCP_SUBNET),
            host=self.server)
        self.addCleanup(self.appliance.kill)
        self.appliance.start()
        self.script, self.events = writeUdhcpcScript(self.directory)
        self.relayed = None
        self.sockets = []
        self.addCleanup(lambda: [s.close() for s in self.sockets])

    def udp(self, port=0):
        """
        A socket of the fuzzing host, bound to C{port}, able to broadcast.
        """
        sock = socketIn(self.fuzzHost.name)
        self.sockets.append(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.bind(("0.0.0.0", port))
        return sock

    def udhcpc(self):
        """
        busybox udhcpc on a new host (a MAC the server never saw) gets a
        pool address.
        """
        host = self.lab.addHost(addresses=False)
        before = len(readEvents(self.events))
        result = host.run(["busybox", "udhcpc", "-q", "-n", "-f", "-i", "eth0", "-t", "5",
                           "-T", "1", "-s", self.script], check=False, timeout=60)
        bound = [f for e, f in readEvents(self.events)[before:] if e == "bound"]
        if result.returncode != 0 or not bound:
            raise AssertionError("udhcpc on %s got no lease (exit %d): %s" % (
                host.mac, result.returncode, result.stdout.decode(errors="replace")[-1500:]))
        ip = bound[-1]["ip"]
        if not (ip.startswith("198.18.%d." % (DHCP_SUBNET,)) and
                10 <= int(ip.rsplit(".", 1)[1]) <= 250):
            raise AssertionError("udhcpc was bound to %s, not a pool address" % (ip,))

    def leaseCount(self):
        """
        The leases in the lease database.
        """
        connection = sqlite3.connect("file:%s?mode=ro" % (
            os.path.join(self.directory, "leases.sqlite"),), uri=True)
        try:
            return connection.execute("SELECT COUNT(*) FROM leases").fetchone()[0]
        finally:
            connection.close()

    def resolveSubnet(self):
        """
        Give the server a neighbour entry for every address of the lab
        subnet no host has (a MAC nobody has): its unicast replies to
        fuzzed ciaddr and giaddr values leave at once instead of waiting
        for ARP (see L{test_unresolvedRepliesMuteServer} for what that
        wait does).
        """
        taken = {host.ip for host in self.lab.hosts if host.ip}
        commands = ["neigh replace 198.18.%d.%d lladdr 02:99:99:99:99:99 dev eth0 nud "
                    "permanent" % (DHCP_SUBNET, i) for i in range(1, 255)
                    if "198.18.%d.%d" % (DHCP_SUBNET, i) not in taken]
        self.server.run(["ip", "-batch", "-"], input="\n".join(commands).encode())

    def ask(self, sock, destination, request, xid, wait):
        """
        Send C{request} (transaction C{xid}) once; whether its answer
        arrives on C{sock} within C{wait} seconds.
        """
        sock.sendto(request, destination)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not select.select([sock], [], [], max(0, deadline - time.monotonic()))[0]:
                break
            try:
                data = sock.recv(70000)
            except OSError:
                continue
            if len(data) > 8 and data[0] == 2 and struct.unpack("!I", data[4:8])[0] == xid:
                return True
        return False

    def probe(self, sock, destination, request, xid, n):
        """
        Send C{request} (transaction C{xid}) until its answer arrives on
        C{sock}: everything sent to that port before it has been read.
        """
        for _ in range(20):
            if self.ask(sock, destination, request, xid, 0.5):
                return
        self.failRun("no answer to probe %d at %s:%d within 10 s" % (n, destination[0],
                                                                        destination[1]))

    def test_fuzz(self):
        """
        If 10^5 mutated DISCOVER, REQUEST, DECLINE, RELEASE, INFORM and PXE
        boot server requests reach ports 67 and 4011 (unicast and
        broadcast) from a handful of source ports, the appliance keeps
        running and serving (udhcpc gets a lease), its memory and
        descriptors stay bounded and it logs no traceback.
        """
        self.resolveSubnet()
        self.startRun(self.appliance, self.udhcpc)
        rnd = self.rnd
        fuzzer = DHCPFuzzer(rnd, DHCP_SUBNET)
        server = fuzzer.server
        me = self.fuzzHost.ip
        sources = [self.udp() for _ in range(5)]
        # the probes' answers: an INFORM relayed by "us" comes back to our
        # port 67; the boot server answers where its request came from
        relayed = self.udp(67)
        pxeProbe = self.udp()
        probeMAC = bytes((2, 0xfe, 0, 0, 0, 1))
        targets = {(server, 67): 0, ("255.255.255.255", 67): 0, (server, 4011): 0}
        queue = [(t[:n], (server, 67 if i < 5 else 4011))
                 for i, t in enumerate(fuzzer.templates()) for n in range(len(t) + 1)]
        with self.guard():
            dropsBefore = {port: self.watch.drops(port) or 0 for port in (67, 4011)}
            total = probes = 0
            while total < DATAGRAMS:
                budget = BURST_BYTES
                for _ in range(min(BURST, DATAGRAMS - total)):
                    if budget <= 0:
                        break
                    total += 1
                    if queue:
                        data, where = queue.pop()
                    else:
                        roll = rnd.random()
                        if roll < 0.2:
                            where = (server, 4011)
                            data = fuzzer.request(
                                rnd.choice((REQUEST, REQUEST, INFORM, DISCOVER)),
                                pxe=rnd.random() < 0.7)
                        else:
                            where = (server, 67) if roll < 0.85 else ("255.255.255.255", 67)
                            data = fuzzer.request()
                        if rnd.random() < 0.02:
                            data = fuzzer.garbage()
                    budget -= bufferCost(data)
                    targets[where] += 1
                    self.trail.add(where, data)
                    try:
                        rnd.choice(sources).sendto(data, where)
                    except OSError:
                        pass
                probes += 1
                xid = 0xf0000000 + probes
                self.probe(relayed, (server, 67), bootp(
                    xid=xid, chaddr=probeMAC, ciaddr=me, giaddr=me,
                    options=dhcpOptions([(53, bytes((INFORM,)))])), xid, probes)
                self.probe(pxeProbe, (server, 4011), bootp(
                    xid=xid, chaddr=probeMAC, ciaddr=me, options=dhcpOptions(
                        [(53, bytes((REQUEST,))), (60, PXE_VENDOR), (93, b"\x00\x00"),
                         (97, b"\x00" + bytes(range(16)))])), xid, probes)
                for sock in sources:
                    drain(sock)
        drops = sum((self.watch.drops(port) or 0) - dropsBefore[port] for port in (67, 4011))
        self.verdict(
            "%d datagrams (%d to %s:67, %d broadcast to port 67, %d to %s:4011)" % (
                total, targets[(server, 67)], server, targets[("255.255.255.255", 67)],
                targets[(server, 4011)], server),
            "; %d datagrams dropped by the server's sockets; %d probes answered on each "
            "port; %d leases stored (pool: 241)" % (drops, probes, self.leaseCount()),
            ["the server's sockets dropped %d datagrams (more than 1%%): the pacing failed" % (
                drops,)] if drops > total // 100 else [])
        self.assertGreaterEqual(total, DATAGRAMS)

    def test_unresolvedRepliesMuteServer(self):
        """
        If a peer sends 300 INFORMs whose ciaddr are 50 addresses of the
        subnet that no host has (their ACKs wait for ARP), a relayed INFORM
        sent right after is still answered within a second.
        """
        server = "198.18.%d.1" % (DHCP_SUBNET,)
        me = self.fuzzHost.ip
        relayed = self.udp(67)
        source = self.udp()

        def relayedInform(xid):
            return bootp(xid=xid, chaddr=bytes((2, 0xfe, 0, 0, 0, 1)), ciaddr=me, giaddr=me,
                         options=dhcpOptions([(53, bytes((INFORM,)))]))
        self.assertTrue(self.ask(relayed, (server, 67), relayedInform(1), 1, 2))
        for i in range(300):
            source.sendto(bootp(xid=0x1000 + i, chaddr=bytes((2, 0xf0, 0, 0, 0, i % 16)),
                                ciaddr="198.18.%d.%d" % (DHCP_SUBNET, 100 + i % 50),
                                options=dhcpOptions([(53, bytes((INFORM,)))])), (server, 67))
        time.sleep(0.2)
        self.assertTrue(self.ask(relayed, (server, 67), relayedInform(2), 2, 1.0),
                        "no answer; the log says:\n" + "\n".join([
                            line for line in self.appliance.log().splitlines()
                            if "not sent" in line][-5:]))


    def test_requestFloodTakesPool(self):
        """
        If a peer sends one INIT-REBOOT REQUEST (a requested address, no
        server id, no ciaddr) for every address of the pool, each from a
        MAC the server has never seen, a new client still gets a lease.
        """
        server = "198.18.%d.1" % (DHCP_SUBNET,)
        source = self.udp()
        rnd = random.Random(DEFAULT_SEED)
        for i in range(10, 251):
            mac = bytes((2, 0xee)) + bytes(rnd.getrandbits(8) for _ in range(4))
            source.sendto(bootp(xid=0x2000 + i, chaddr=mac, options=dhcpOptions(
                [(53, bytes((REQUEST,))), (50, ip4("198.18.%d.%d" % (DHCP_SUBNET, i)))])),
                (server, 67))
            if i % 50 == 0:
                time.sleep(0.05)
        time.sleep(1)
        try:
            self.udhcpc()
        except AssertionError as e:
            self.fail("%s (%d leases stored)" % (e, self.leaseCount()))



# -- imagecast's control channel ----------------------------------------------

IMAGECAST_SUBNET = 62
#: C{imagecast.max_box_bytes} of the run (the smallest allowed)
MAX_BOX = 1 << 17
#: connections that end with a box that must cost them the connection
#: (after five ordinary ones)
CUT_CONNECTIONS = 60

# The limits on what the appliance keeps of its receivers' reports are
# lowered (max_report_ranges, max_session_ranges): a registered receiver
# may have it keep 65,536 ranges per report by default (some 6 MiB), and
# finished sessions are kept for their scorecard; the RSS bound is about
# what hostile input leaves, not about those limits. Reports of 50,000
# ranges then test the cutting.

IMAGECAST_CONFIG = """\
tftp:
  enabled: false
imagecast:
  enabled: true
  address: 127.0.0.1
  port: 0
  root: {d}/images
  interface: 198.18.{s}.1
  server_name: fuzz-appliance
  receivers_file: {d}/receivers
  rate: 20
  rate_min: 1
  rate_max: 50
  max_wait: 5
  announce_timeout: 0.5
  report_timeout: 1
  client_timeout: 2
  max_rounds: 3
  keep_sessions: 5
  max_box_bytes: {box}
  max_report_ranges: 4096
  max_session_ranges: 12288
"""

#: receivers with a secret (the fuzzer's persistent connections)
RECEIVERS = ["fz%d" % (i,) for i in range(8)]


def secretOf(clientId):
    return hashlib.sha256(b"fuzz secret " + clientId.encode()).hexdigest().encode()


def ampBox(pairs):
    """
    Encode an AMP box from C{(key, value)} pairs (bytes, in order; keys
    may repeat).
    """
    out = bytearray()
    for key, value in pairs:
        out += struct.pack("!H", len(key)) + key + struct.pack("!H", len(value)) + value
    return bytes(out + b"\x00\x00")


def parseBoxes(data):
    """
    The complete boxes at the start of C{data} (as dicts) and what is left.
    """
    boxes = []
    start = 0
    while True:
        box = {}
        i = start
        while True:
            if i + 2 > len(data):
                return boxes, data[start:]
            n = struct.unpack_from("!H", data, i)[0]
            i += 2
            if n == 0:
                break
            if i + n + 2 > len(data):
                return boxes, data[start:]
            key = data[i:i + n]
            i += n
            m = struct.unpack_from("!H", data, i)[0]
            i += 2
            if i + m > len(data):
                return boxes, data[start:]
            box[key] = data[i:i + m]
            i += m
        boxes.append(box)
        start = i


#: the answers the server gave the fuzzer's boxes, by error code
OUTCOMES = collections.Counter()


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7f
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class AMPConnection:
    """
    One control connection of the fuzzer, raw: boxes are bytes. Commands
    the server sends (C{Ping}, C{Pieces}, C{Announce}, C{EndRound},
    C{EndSession}) are answered as a receiver answers them, and the
    session and round they name are kept.
    """

    def __init__(self, namespace, port, trail, name):
        self.sock = socketIn(namespace, socket.AF_INET, socket.SOCK_STREAM)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.trail = trail
        self.name = name
        self.buffer = b""
        self.answers = {}
        self.closed = False
        self.tags = 0
        self.rounds = {}
        self.outcomes = OUTCOMES

    def fileno(self):
        return self.sock.fileno()

    def send(self, data):
        """
        Send C{data}; L{False} if the server has closed the connection.
        """
        self.trail.add(self.name, data)
        view = memoryview(data)
        while view and not self.closed:
            try:
                sent = self.sock.send(view)
                view = view[sent:]
            except BlockingIOError:
                self.pump()
                select.select([self.sock], [self.sock], [], 1)
            except OSError:
                self.closed = True
        return not self.closed

    def pump(self):
        """
        Read and handle what the server sent.
        """
        while not self.closed:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self.closed = True
                break
            boxes, self.buffer = parseBoxes(self.buffer + data)
            for box in boxes:
                self._handle(box)

    def _handle(self, box):
        if b"_answer" in box:
            self.answers[box[b"_answer"]] = box
            self.outcomes["answered"] += 1
        elif b"_error" in box:
            self.answers[box[b"_error"]] = box
            self.outcomes[box.get(b"_error_code", b"?").decode(errors="replace")] += 1
        elif b"_command" in box:
            command = box[b"_command"]
            try:
                session = int(box.get(b"session", b"0"))
                if command in (b"Announce", b"EndRound", b"Pieces"):
                    self.rounds[session] = int(box.get(b"round", b"0"))
                elif command == b"EndSession":
                    self.rounds.pop(session, None)
            except ValueError:
                pass
            if b"_ask" in box:
                self.sock.sendall(ampBox([(b"_answer", box[b"_ask"])]))

    def tag(self):
        self.tags += 1
        return b"%s.%d" % (self.name.encode(), self.tags)

    def close(self):
        self.closed = True
        self.sock.close()


class Connections:
    """
    The fuzzer's open connections, pumped together (a call on one may
    wait for another to answer the server's Ping).
    """

    def __init__(self):
        self.all = []

    def add(self, connection):
        self.all.append(connection)
        return connection

    def pumpAll(self, timeout=0.0):
        live = [c for c in self.all if not c.closed]
        if not live:
            return
        readable = select.select(live, [], [], timeout)[0]
        for c in readable:
            c.pump()

    def call(self, connection, pairs, timeout=10):
        """
        Send a box with an C{_ask} tag and wait for its answer (pumping
        every connection).

        @return: the answer or error box, or L{None} if the connection was
            closed first.
        """
        tag = connection.tag()
        connection.send(ampBox(list(pairs) + [(b"_ask", tag)]))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if tag in connection.answers:
                return connection.answers.pop(tag)
            if connection.closed:
                return None
            self.pumpAll(0.05)
        raise AssertionError("no answer to %r on %s within %d s" % (pairs[:1], connection.name,
                                                                   timeout))

    def closeAll(self):
        for c in self.all:
            c.close()
        self.all = []


class AMPFuzzer:
    """
    Makes AMP boxes for the control channel: valid commands with mutated
    arguments, unknown commands; and the boxes that must cost the sender
    its connection.
    """

    def __init__(self, rnd, imageSize, sha256):
        self.rnd = rnd
        self.m = Mutator(rnd)
        self.size = imageSize
        self.sha256 = sha256
        self._bomb = None

    def integer(self, known=()):
        rnd = self.rnd
        roll = rnd.random()
        if known and roll < 0.5:
            return b"%d" % (rnd.choice(list(known)),)
        if roll < 0.75:
            return b"%d" % (rnd.choice((0, 1, 2, 3, -1, -2, 65535, 65536, 1 << 31, 1 << 63,
                                        -(1 << 63), 1 << 64, self.size, self.size - 1,
                                        self.size + 1, rnd.getrandbits(40))),)
        return rnd.choice((b"", b"-", b"0x10", b"1e3", b" 1", b"1 ", b"+1", b"1_000",
                           b"\xff", b"nan", b"\xd9\xa1", b"9" * 30, b"-" + b"9" * 60,
                           b"9" * 5000, b"1.5", b"\x00"))

    def floating(self):
        return self.rnd.choice((b"0", b"0.5", b"1", b"-1", b"nan", b"inf", b"-inf", b"1e308",
                                b"1e309", b"-1e309", b"", b"abc", b"1e-320", b"0x1p3",
                                b"9" * 400, b"\xff"))

    def text(self):
        rnd = self.rnd
        return rnd.choice((b"fuzz", b"", b"\xff\xfe", b"\xc3\x28", b"a" * 201, b"a" * 300,
                           b"\x00", b"fz0", b"fz1", b"fz7", b"fz0:disk", b"nobody",
                           # (not longer: see test_longIdErrorTooLong)
                           b"\xe2\x80\xae", b"x" * rnd.choice((1000, 60000)),
                           b"198.18.62.9", b"%s%n", b"disk.img", b"../disk.img"))

    def rangeBytes(self):
        """
        A C{ranges} value: valid, or malformed in one of the ways a range
        list can be.
        """
        rnd = self.rnd
        roll = rnd.random()
        if roll < 0.35:
            count = rnd.choice((0, 1, 2, 10, 100, 1000))
            cuts = sorted(rnd.sample(range(self.size + 1), min(2 * count, self.size)))
            ranges = [(cuts[i], cuts[i + 1]) for i in range(0, len(cuts) - 1, 2)
                      if cuts[i] < cuts[i + 1]]
            return R.toWire(ranges)
        body = rnd.choice((
            b"",
            varint(0) + varint(self.size + 1),                   # beyond the image
            varint(5) + varint(0),                               # empty range
            varint(0) + varint(10) + varint(0) + varint(10),     # touching ranges
            varint(1 << 70) + varint(1),                         # huge
            b"\xff" * 12 + b"\x01",                              # overlong varint
            varint(0) + b"\x80",                                 # truncated varint
            varint(0),                                           # odd count
            bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 200))),
            (varint(1) + varint(1)) * 50000,                     # 50,000 ranges
        ))
        kind = rnd.random()
        if kind < 0.7:
            return b"\x01" + zlib.compress(body)
        if kind < 0.8:
            return b"\x01" + zlib.compress(body)[:rnd.randrange(1, 8)]
        if kind < 0.9:
            return bytes((rnd.choice((0, 2, 255)),)) + zlib.compress(body)
        return self.m.mutate(b"\x01" + zlib.compress(body))

    def bomb(self):
        """
        A range list of 48 KB that inflates to 48 MiB: 24 million ranges.
        """
        if self._bomb is None:
            self._bomb = b"\x01" + zlib.compress(b"\x01" * (48 << 20), 9)
        return self._bomb

    def chunked(self, key, value):
        """
        C{value} spread over C{key}, C{key.1}, ... (AMP values are at most
        65,535 bytes), sometimes with a piece missing or out of order.
        """
        pieces = [value[i:i + 0xffff] for i in range(0, len(value), 0xffff)] or [b""]
        pairs = [(key if i == 0 else key + b".%d" % (i,), piece)
                 for i, piece in enumerate(pieces)]
        roll = self.rnd.random()
        if roll < 0.05 and len(pairs) > 1:
            del pairs[1]
        elif roll < 0.1:
            pairs.append((key + b".%d" % (len(pairs) + 3,), b"\x00" * 10))
        elif roll < 0.15:
            self.rnd.shuffle(pairs)
        return pairs

    def command(self, sessions, nonce=None):
        """
        One box of a valid command (or of an unknown one) with mutated
        arguments, without its C{_ask}.

        @param sessions: C{{session id: round}} the connection has heard of.
        @param nonce: the connection's challenge nonce, if it has one.
        """
        rnd = self.rnd
        ids = list(sessions)
        rounds = list(sessions.values()) or [0]
        name = rnd.choices(*zip(*(
            (b"ReportMissing", 25), (b"Register", 12), (b"Progress", 10), (b"FetchRange", 10),
            (b"Status", 8), (b"Complete", 6), (b"StartSession", 6), (b"Challenge", 5),
            (b"Leave", 3), (b"Ping", 2), (b"Announce", 2), (b"Pieces", 2), (b"Frobnicate", 2),
            (b"", 2), (b"\xff\xfe", 1), (b"register", 1), (b"Register\x00", 1),
            (b"_command", 1), (b"x" * 255, 1))))[0]
        pairs = [(b"_command", name)]
        if name == b"Register":
            clientId = rnd.choice([c.encode() for c in RECEIVERS] + [self.text()])
            pairs += [(b"clientId", clientId), (b"address", self.text())]
            if rnd.random() < 0.5:
                pairs.append((b"image", self.text()))
            if rnd.random() < 0.7:
                proof = bytes(rnd.getrandbits(8) for _ in range(rnd.choice((0, 31, 32, 33))))
                if nonce is not None and rnd.random() < 0.5:
                    try:
                        name = clientId.decode()
                    except UnicodeDecodeError:
                        name = None
                    if name is not None:
                        proof = imagecastCommands.registrationProof(
                            secretOf(name), nonce, name, "fuzz-appliance")
                pairs.append((b"proof", proof))
        elif name == b"ReportMissing":
            pairs += [(b"session", b"%d" % (rnd.choice(ids),) if ids and rnd.random() < 0.5
                       else self.integer(ids)),
                      (b"round", b"%d" % (rnd.choice(rounds),) if rnd.random() < 0.5
                       else self.integer(rounds))]
            value = self.bomb() if rnd.random() < 0.005 else self.rangeBytes()
            pairs += self.chunked(b"ranges", value)
        elif name == b"Complete":
            pairs += [(b"session", self.integer(ids)),
                      (b"sha256", rnd.choice((self.sha256.encode(), b"0" * 64, self.text())))]
        elif name == b"Leave":
            pairs += [(b"session", self.integer(ids)), (b"reason", self.text())]
        elif name == b"Progress":
            pairs += [(b"session", self.integer(ids)), (b"round", self.integer(rounds)),
                      (b"position", self.integer())]
        elif name == b"FetchRange":
            pairs += [(b"session", self.integer(ids)), (b"offset", self.integer()),
                      (b"length", rnd.choice((b"1", b"60000", b"60001", b"0", b"-1",
                                              self.integer())))]
        elif name == b"StartSession":
            # (no NUL in the name: see test_startSessionNulImage)
            image = rnd.choice((b"disk.img", b"nosuch.img", b"../disk.img", b"/etc/passwd",
                                b"", b"\xff\xfe", b"a" * 300, b"images/../disk.img",
                                b"./disk.img", b".", b"disk.img/", b"DISK.IMG"))
            pairs.append((b"image", image))
            options = [(b"minReceivers", self.integer()), (b"maxWait", self.floating()),
                       (b"rate", self.floating()), (b"maxRounds", self.integer())]
            pairs += [o for o in options if rnd.random() < 0.6]
        elif name == b"Status":
            for key, value in ((b"session", self.integer(ids)),
                               (b"detail", rnd.choice((b"True", b"False", b"true", b"",
                                                       b"\xff"))),
                               (b"wait", rnd.choice((b"0", b"0.01", b"nan", b"-1", b"inf",
                                                     self.floating()))),
                               (b"rounds", self.integer())):
                if rnd.random() < 0.4:
                    pairs.append((key, value))
        else:
            for _ in range(rnd.randrange(3)):
                pairs.append((rnd.choice((b"session", b"x", b"\xff", b"_answer.x")),
                              self.text()))
        roll = rnd.random()
        if roll < 0.08 and len(pairs) > 1:
            del pairs[rnd.randrange(1, len(pairs))]                 # a missing argument
        elif roll < 0.14:
            pairs.append((rnd.choice((b"extra", b"k" * 255, b"\x00", b"session.1")),
                          self.text()))                             # an unknown one
        elif roll < 0.18 and len(pairs) > 1:
            pairs.append(rnd.choice(pairs[1:]))                     # a repeated key
        elif roll < 0.20:
            pairs += [(b"k%d" % (i,), b"") for i in range(rnd.randrange(100, 3000))]
        pairs = self.fit(pairs)
        if name == b"StartSession":
            # never a session the run did not start itself (it could wait
            # for receivers past the run): one option out of its range, last
            # (the last of a repeated key wins)
            pairs.append(rnd.choice(((b"minReceivers", b"0"), (b"maxWait", b"-1"),
                                     (b"rate", b"1000"), (b"maxRounds", b"0"))))
        return pairs

    def fit(self, pairs):
        """
        Cut the box's values so that it stays within the box limit: what
        the ordinary boxes test is the arguments, not the limit.
        """
        room = MAX_BOX - 4096
        out = []
        for key, value in pairs:
            value = value[:0xffff]
            cost = 4 + len(key) + len(value)
            if cost > room:
                value = value[:max(0, room - 4 - len(key))]
                cost = 4 + len(key) + len(value)
            room -= cost
            out.append((key, value))
        return out

    def killer(self):
        """
        A box (or bytes) that must cost the sender its connection, and
        what it is; C{(name, data, dropped)}: C{dropped} says whether the
        server must close the connection.
        """
        rnd = self.rnd
        kind = rnd.choice(("oversize box", "oversize key", "no command", "unknown answer",
                           "error without code", "truncated box", "truncated value",
                           "garbage", "nothing"))
        valid = ampBox([(b"_command", b"Status"), (b"_ask", b"k")])
        if kind == "oversize box":
            # far beyond max_box_bytes, never terminated: refused, not buffered
            value = b"\xee" * 0xffff
            data = b"".join(struct.pack("!H", 4) + b"k%03d" % (i % 1000,) +
                            struct.pack("!H", len(value)) + value for i in range(128))
            return kind, data, True
        if kind == "oversize key":
            return kind, struct.pack("!H", rnd.choice((256, 1000, 0xffff))) + b"k" * 300, True
        if kind == "no command":
            return kind, ampBox([(b"session", b"1"), (b"round", b"1")]), True
        if kind == "unknown answer":
            return kind, ampBox([(b"_answer", b"no-such-tag")]), True
        if kind == "error without code":
            return kind, ampBox([(b"_error", b"no-such-tag")]), True
        if kind == "truncated box":
            return kind, valid[:rnd.randrange(1, len(valid) - 1)], False
        if kind == "truncated value":
            return kind, struct.pack("!H", 8) + b"_command" + struct.pack("!H", 5000) + \
                b"Status", False
        if kind == "garbage":
            return kind, self.m.garbage(2000), False
        return kind, b"", False


class ImagecastFuzzTests(FuzzCase):
    """
    imagecast's control channel, run as a user runs it (the appliance in a
    lab namespace, its control channel on that namespace's 127.0.0.1),
    against 10^4 hostile AMP boxes while a session runs.
    """

    part = "imagecast"

    def setUp(self):
        requireE2E(root=True, netns=True, tools=["ip"])
        self.lab = NetLab(hosts=1, subnet=IMAGECAST_SUBNET)
        self.addCleanup(self.lab.close)
        self.host = self.lab.hosts[0]
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.directory, "images"))
        self.image = random.Random(DEFAULT_SEED).randbytes(512 << 10)
        self.sha256 = hashlib.sha256(self.image).hexdigest()
        with open(os.path.join(self.directory, "images", "disk.img"), "wb") as f:
            f.write(self.image)
        receivers = os.path.join(self.directory, "receivers")
        with open(os.open(receivers, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            for clientId in RECEIVERS:
                f.write(b"%s %s\n" % (clientId.encode(), secretOf(clientId)))
        self.appliance = Appliance(self.directory, IMAGECAST_CONFIG.format(
            d=self.directory, s=IMAGECAST_SUBNET, box=MAX_BOX), host=self.host)
        self.addCleanup(self.appliance.kill)
        self.appliance.start(ready="imagecast control channel on")
        found = re.findall(r"imagecast control channel on 127\.0\.0\.1:(\d+)",
                           self.appliance.log())
        self.assertTrue(found, self.appliance.log()[-3000:])
        self.port = int(found[-1])
        self.connections = Connections()
        self.addCleanup(self.connections.closeAll)

    def status(self):
        """
        C{provisioner imagecast status} over the control channel answers
        with the scorecard.
        """
        result = self.host.run(
            PROVISIONER + ["imagecast", "status", "--json", "--port", str(self.port),
                           "--timeout", "10"],
            check=False, env=dict(os.environ, PYTHONPATH=REPO), timeout=60)
        out = result.stdout.decode(errors="replace")
        if result.returncode != 0:
            raise AssertionError("imagecast status exited %d: %s" % (result.returncode,
                                                                     out[-1500:]))
        try:
            card = json.loads(out[out.index("{"):])
        except ValueError:
            raise AssertionError("imagecast status printed no scorecard: %s" % (out[-1500:],))
        if "sessions" not in card:
            raise AssertionError("a scorecard without sessions: %s" % (out[-1500:],))

    def connect(self, name):
        return self.connections.add(AMPConnection(self.host.name, self.port, self.trail, name))

    def register(self, connection, clientId):
        """
        Register C{clientId} on C{connection} as a receiver does (Challenge,
        then Register with the proof).

        @return: the answer box.
        """
        challenge = self.connections.call(connection, [(b"_command", b"Challenge")])
        if challenge is None or b"nonce" not in challenge:
            raise AssertionError("no challenge on %s: %r" % (connection.name, challenge))
        proof = imagecastCommands.registrationProof(
            secretOf(clientId), challenge[b"nonce"], clientId, challenge[b"server"].decode())
        return self.connections.call(connection, [
            (b"_command", b"Register"), (b"clientId", clientId.encode()),
            (b"address", b"198.18.%d.9" % (IMAGECAST_SUBNET,)), (b"proof", proof)])

    def startSession(self, admin):
        """
        Start a session of disk.img that runs as soon as one receiver is
        enrolled; return its id.
        """
        answer = self.connections.call(admin, [
            (b"_command", b"StartSession"), (b"image", b"disk.img"), (b"minReceivers", b"1"),
            (b"maxWait", b"0.3"), (b"maxRounds", b"2")], timeout=30)
        if answer is None or b"session" not in answer:
            self.failRun("StartSession failed: %r" % (answer,))
        return int(answer[b"session"])

    def running(self, admin):
        answer = self.connections.call(admin, [(b"_command", b"Status")])
        if answer is None or b"scorecard" not in answer:
            self.failRun("Status failed: %r" % (answer,))
        data = b"".join(answer[k] for k in sorted(
            (k for k in answer if k == b"scorecard" or k.startswith(b"scorecard.")),
            key=lambda k: int(k.split(b".")[1]) if b"." in k else 0))
        card = json.loads(data.decode())
        return [s["session"] for s in card["sessions"] if s["state"] != "done"]

    def test_fuzz(self):
        """
        If 10^4 AMP boxes (valid commands with mutated arguments, unknown
        commands, range bombs; then truncated, oversize and malformed
        boxes) reach the control channel over a few connections while a
        session runs, the appliance keeps running and serving
        (C{provisioner imagecast status}), refuses the oversize boxes
        instead of buffering them, its memory and descriptors stay bounded
        and it logs no traceback.
        """
        self.startRun(self.appliance, self.status)
        OUTCOMES.clear()
        rnd = self.rnd
        fuzzer = AMPFuzzer(rnd, len(self.image), self.sha256)
        with self.guard():
            admin = self.connect("admin")
            boxes = 0
            sessions = 0
            main = []
            for i in range(4):
                connection = self.connect("fz%d" % (i,))
                answer = self.register(connection, "fz%d" % (i,))
                boxes += 2
                if answer is None or b"server" not in answer:
                    self.failRun("fz%d could not register: %r" % (i, answer))
                main.append(connection)
            self.startSession(admin)
            boxes += 1
            sessions += 1
            killers = collections.Counter()
            notDropped = []
            while boxes < BOXES - CUT_CONNECTIONS * 6:
                for connection in main:
                    nonce = None
                    if rnd.random() < 0.05:
                        challenge = self.connections.call(connection,
                                                          [(b"_command", b"Challenge")])
                        boxes += 1
                        nonce = challenge.get(b"nonce") if challenge else None
                    for _ in range(25):
                        pairs = fuzzer.command(connection.rounds, nonce)
                        if rnd.random() < 0.9:
                            pairs.append((b"_ask", connection.tag()))
                        connection.send(ampBox(pairs))
                        boxes += 1
                        connection.pump()
                    answer = self.connections.call(connection, [(b"_command", b"Status")])
                    boxes += 1
                    if answer is None:
                        self.failRun("the server closed %s, which sent only well-formed boxes" % (
                            connection.name,))
                boxes += 1
                if not self.running(admin) and sessions < 6:
                    self.startSession(admin)
                    boxes += 1
                    sessions += 1
            # the end of a connection's life: a few boxes, then one that must
            # cost it the connection, or the connection just closes
            for n in range(CUT_CONNECTIONS):
                connection = self.connect("k%d" % (n,))
                for _ in range(5):
                    pairs = fuzzer.command(connection.rounds)
                    pairs.append((b"_ask", connection.tag()))
                    connection.send(ampBox(pairs))
                    boxes += 1
                kind, data, mustDrop = fuzzer.killer()
                killers[kind] += 1
                connection.send(data)
                boxes += 1
                if mustDrop:
                    deadline = time.monotonic() + 5
                    while not connection.closed and time.monotonic() < deadline:
                        connection.pump()
                        select.select([connection], [], [], 0.05)
                    if not connection.closed:
                        notDropped.append(kind)
                connection.close()
        self.connections.closeAll()
        self.verdict(
            "%d AMP boxes (%d sessions started; connections cut: %s)" % (
                boxes, sessions, ", ".join("%s %d" % kv for kv in sorted(killers.items()))),
            "; answers: %s" % (", ".join("%s %d" % kv for kv in OUTCOMES.most_common()),),
            ["the server kept the connection after a box it must refuse by closing it: %s" % (
                ", ".join(notDropped),)] if notDropped else [])
        self.assertGreaterEqual(boxes, BOXES)

    def test_startSessionNulImage(self):
        """
        If an operator's StartSession names an image with a NUL byte, it is
        refused with the declared C{NO_SUCH_IMAGE}, the connection stays
        up and the log has no traceback.
        """
        self.trail = Trail()
        connection = self.connect("admin")
        answer = self.connections.call(connection, [
            (b"_command", b"StartSession"), (b"image", b"disk.img\x00x")])
        self.assertIsNotNone(answer, "the server closed the connection")
        self.assertEqual(answer.get(b"_error_code"), b"NO_SUCH_IMAGE", answer)
        self.assertIsNotNone(self.connections.call(connection, [(b"_command", b"Status")]))
        self.assertNotIn("Traceback", self.appliance.log())


    def test_startSessionNanWait(self):
        """
        If an operator's StartSession asks for C{maxWait} NaN, it is refused
        with C{BAD_REQUEST} and nothing is logged at critical level.
        """
        self.trail = Trail()
        connection = self.connect("admin")
        answer = self.connections.call(connection, [
            (b"_command", b"StartSession"), (b"image", b"disk.img"), (b"minReceivers", b"5"),
            (b"maxWait", b"nan")])
        self.assertIsNotNone(answer, "the server closed the connection")
        time.sleep(0.5)
        self.assertEqual(answer.get(b"_error_code"), b"BAD_REQUEST", answer)
        self.assertEqual([line for line in self.appliance.log().splitlines()
                          if "#critical]" in line], [])


    def test_longIdErrorTooLong(self):
        """
        If any peer answers a Challenge with a Register whose client id is
        65,530 bytes long (and a wrong proof), it gets the declared
        C{NOT_AUTHENTICATED}, keeps its connection, and the log has no
        traceback.
        """
        self.trail = Trail()
        connection = self.connect("peer")
        self.assertIsNotNone(self.connections.call(connection, [(b"_command", b"Challenge")]))
        answer = self.connections.call(connection, [
            (b"_command", b"Register"), (b"clientId", b"x" * 65530), (b"address", b"a"),
            (b"proof", b"p" * 32)])
        self.assertIsNotNone(answer, "the server closed the connection")
        self.assertEqual(answer.get(b"_error_code"), b"NOT_AUTHENTICATED", answer)
        self.assertNotIn("Traceback (most recent call last)", self.appliance.log())


    def test_callWithoutAnswerLogsTraceback(self):
        """
        If a peer sends a command that asks for no answer (no C{_ask})
        and fails, such as an unknown one, the log gets one line without
        the word Traceback (what CI and operators grep for).
        """
        self.trail = Trail()
        connection = self.connect("peer")
        connection.send(ampBox([(b"_command", b"Frobnicate")]))
        self.assertIsNotNone(self.connections.call(connection, [(b"_command", b"Challenge")]))
        lines = [line for line in self.appliance.log().splitlines() if "Frobnicate" in line]
        self.assertEqual(len(lines), 1, lines)
        self.assertNotIn("Traceback", lines[0])

