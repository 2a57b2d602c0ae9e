#!/usr/bin/env python3
"""
Micro-benchmark: the image-multicast receiver's CPU cost per datagram.

Deterministic: the datagrams of a random image are encoded once, then fed
to a L{provisioner.client.receiver.Receiver} driven by a L{task.Clock} (no
sockets, no reactor), and the process CPU time is divided by the datagrams
fed. Two scenarios:

  - C{round1}: the whole image in order, with C{--loss} percent of the
    datagrams dropped (a fixed seed);
  - C{round2}: a repair round carrying the union of what 16 receivers at
    that loss missed, fed to a receiver that already has most of it (the
    duplicates are the point).

C{--sender} adds the sender's side: a whole round of the image encoded and
signed by L{provisioner.imagecast.sending.RoundSender} into a writer that only
joins each batch (what the GSO send does), CPU per datagram.

C{--socket} adds a third figure: the same receiver behind Twisted's real UDP
read loop (a loopback port, datagrams blasted from a child process), as
CPU seconds of this process per datagram taken off the socket.

Batches: when the receiver has C{datagramsReceived} the datagrams are fed
in batches of C{--batch} (what a C{recvmmsg} port hands over), else one by
one; C{--single} forces one by one.

    python3 bench/imagecast_receiver_bench.py [--size-mib 32] [--loss 1]
        [--profile] [--socket] [--single]
"""

import argparse
import cProfile
import hashlib
import os
import pstats
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from twisted.internet import defer, task  # noqa: E402

from provisioner.imagecast import commands  # noqa: E402
from provisioner.imagecast import pieces as P  # noqa: E402
from provisioner.imagecast.datagram import encode, payloadSize  # noqa: E402
from provisioner.client.receiver import OutputFile, Receiver  # noqa: E402

KEY = b"k" * 32
SESSION = 7
CHUNK = payloadSize(1472)


class _Server:
    def callRemote(self, command, **kw):
        return defer.succeed({})


class _Port:
    def __init__(self, real=None):
        self.real = real

    def joinGroup(self, *a):
        pass

    def leaveGroup(self, *a):
        pass

    def stopListening(self):
        if self.real is not None:
            return self.real.stopListening()


class _Reactor(task.Clock):
    port = None

    def listenMulticast(self, port, proto, *args, **kw):
        return _Port()


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _output(path):
    """
    The receiver's output at C{path}, made first: a name below /dev (the
    tmpfs /dev/shm) that does not exist is refused as a missing device.
    """
    open(path, "ab").close()
    return OutputFile(path)


def makeReceiver(reactor, directory, size, sha):
    r = Receiver(reactor, _output(os.path.join(directory, "out")), "bench",
                 hasher=lambda p: defer.succeed(sha))
    r.connected(_Server())
    return r


def pushPieces(r, image):
    """
    The piece digests the server sends before its first announcement (the
    receiver checks every piece against them: part of its cost).
    """
    size = P.pieceSizeFor(len(image))
    digests = b"".join(hashlib.sha256(image[o:o + size]).digest()
                       for o in range(0, len(image), size))
    r.pieces(session=SESSION, pieceSize=size, digests=digests)


def announce(r, size, sha, roundNumber, ranges):
    r.announce(session=SESSION, name="img", size=size, sha256=sha, chunkSize=CHUNK,
               ranges=ranges, group="239.255.42.1", port=7011, key=KEY, round=roundNumber)


def feed(r, datagrams, batch, single):
    many = getattr(r, "datagramsReceived", None)
    addr = ("198.18.0.1", 7011)
    if many is None or single:
        one = r.datagramReceived
        for d in datagrams:
            one(d, addr)
    else:
        for i in range(0, len(datagrams), batch):
            many(datagrams[i:i + batch], addr)


def lossPattern(count, loss, seed):
    rnd = random.Random(seed)
    return [rnd.random() < loss for _ in range(count)]


def scenario(args, image, sha, directory, name, profile=None):
    size = len(image)
    offsets = list(range(0, size, CHUNK))
    loss = args.loss / 100.0
    reactor = _Reactor()
    r = makeReceiver(reactor, directory, size, sha)
    pushPieces(r, image)
    announce(r, size, sha, 1, [(0, size)])
    lost1 = lossPattern(len(offsets), loss, 1)
    dg1 = [encode(SESSION, 1, o, image[o:o + CHUNK], KEY)
           for o, lost in zip(offsets, lost1) if not lost]
    if name == "round1":
        return run(r, dg1, args, profile)
    feed(r, dg1, args.batch, args.single)
    # round 2: the union of 16 receivers' losses (this one is receiver 0)
    union = set(i for i, lost in enumerate(lost1) if lost)
    for seed in range(2, 17):
        union.update(i for i, lost in enumerate(lossPattern(len(offsets), loss, seed)) if lost)
    idx = sorted(union)
    ranges = []
    for i in idx:
        s, e = offsets[i], min(size, offsets[i] + CHUNK)
        if ranges and ranges[-1][1] == s:
            ranges[-1] = (ranges[-1][0], e)
        else:
            ranges.append((s, e))
    announce(r, size, sha, 2, ranges)
    lost2 = lossPattern(len(idx), loss, 99)
    dg2 = [encode(SESSION, 2, offsets[i], image[offsets[i]:offsets[i] + CHUNK], KEY)
           for i, lost in zip(idx, lost2) if not lost]
    return run(r, dg2, args, profile)


def run(r, datagrams, args, profile):
    t0 = cpu()
    if profile is not None:
        profile.enable()
    feed(r, datagrams, args.batch, args.single)
    if profile is not None:
        profile.disable()
    used = cpu() - t0
    if not datagrams:
        return 0.0, 0
    return used / len(datagrams) * 1e6, len(datagrams)


# -- the sender --------------------------------------------------------------

class _JoiningWriter:
    def __init__(self):
        self.datagrams = 0

    def writeBatch(self, datagrams):
        b"".join(datagrams)
        self.datagrams += len(datagrams)
        return len(datagrams)

    def close(self):
        pass


def senderScenario(args, image):
    from provisioner.imagecast.sending import RoundSender
    clock = task.Clock()
    writer = _JoiningWriter()
    s = RoundSender(clock, writer, lambda o, n: image[o:o + n], SESSION, 1, KEY,
                    [(0, len(image))], CHUNK, rate=1e12)
    t0 = cpu()
    d = s.start()
    while not d.called:
        clock.advance(0.001)
    return (cpu() - t0) / writer.datagrams * 1e6, writer.datagrams


# -- Twisted's read loop on a real socket ------------------------------------

_BLASTER = r"""
import socket, sys, time
port, count, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
data = sys.stdin.buffer.read()
dgs = [data[i:i + size] for i in range(0, len(data), size)]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
sent = 0
t0 = time.time()
for i in range(count):
    d = dgs[i % len(dgs)]
    while True:
        try:
            s.sendto(d, ("127.0.0.1", port))
            break
        except BlockingIOError:
            time.sleep(0.0005)
"""


def socketScenario(args, image, sha, directory):
    """
    The receiver behind a real Twisted UDP port on 127.0.0.1 (loopback
    unicast stands in for the group: the receiver is handed the port and
    told it has joined, so no multicast group is ever joined).
    """
    from twisted.internet import reactor as real
    from provisioner.client.receiver import DataProtocol
    from provisioner.net.sockopt import setReceiveBuffer

    size = len(image)
    offsets = list(range(0, size, CHUNK))
    datagrams = [encode(SESSION, 1, o, image[o:o + CHUNK], KEY) for o in offsets[:-1]]
    r = Receiver(real, _output(os.path.join(directory, "sock")), "bench",
                 hasher=lambda p: defer.succeed(sha))
    r.connected(_Server())
    r.progressInterval = 3600
    udpbatch = None
    if not args.single:
        try:
            from provisioner.net import udpbatch
        except ImportError:
            pass
    if udpbatch is not None:
        p = udpbatch.listenUDP(real, 0, DataProtocol(r), interface="127.0.0.1",
                               maxPacketSize=2048)
    else:
        p = real.listenUDP(0, DataProtocol(r), interface="127.0.0.1", maxPacketSize=2048)
    setReceiveBuffer(p.socket, 64 << 20)
    r.dataPort = p
    r.joined = "239.255.42.1"
    pushPieces(r, image)
    announce(r, size, sha, 1, [(0, size)])
    port = p.getHost().port
    count = len(datagrams)
    blaster = subprocess.Popen([sys.executable, "-c", _BLASTER, str(port), str(count),
                                str(len(datagrams[0]))], stdin=subprocess.PIPE)
    blaster.stdin.write(b"".join(datagrams))
    blaster.stdin.close()
    state = {"t0": None, "c0": None, "n0": 0}

    def poll():
        got = r.bytesReceived // CHUNK
        if state["t0"] is None and got:
            state["t0"], state["c0"], state["n0"] = time.time(), cpu(), got
        if blaster.poll() is not None and time.time() - r.lastDatagram > 0.5:
            real.stop()
    loop = task.LoopingCall(poll)
    loop.start(0.05)
    real.run()
    got = r.bytesReceived // CHUNK - state["n0"]
    used = cpu() - state["c0"] - 0.5 * 0  # idle tail costs almost nothing
    return used / max(1, got) * 1e6, got, count


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=32)
    parser.add_argument("--loss", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--single", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--socket", action="store_true")
    parser.add_argument("--sender", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rnd = random.Random(0)
    image = rnd.randbytes(args.size_mib << 20)
    sha = hashlib.sha256(image).hexdigest()
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="mcastrx", dir=shm) as directory:
        for name in ("round1", "round2") if args.loss else ("round1",):
            best = None
            for _ in range(args.repeat):
                us, n = scenario(args, image, sha, directory, name)
                best = us if best is None else min(best, us)
            print("%s: %.2f us/datagram (best of %d, %d datagrams, loss %g%%, %s)" % (
                name, best, args.repeat, n, args.loss,
                "one by one" if args.single else "batches of %d" % args.batch))
        if args.sender:
            best = None
            for _ in range(args.repeat):
                us, n = senderScenario(args, image)
                best = us if best is None else min(best, us)
            print("sender: %.2f us/datagram (best of %d, %d datagrams)" % (best, args.repeat, n))
        if args.profile:
            prof = cProfile.Profile()
            scenario(args, image, sha, directory, "round1", prof)
            pstats.Stats(prof).sort_stats("tottime").print_stats(15)
        if args.socket:
            us, got, count = socketScenario(args, image, sha, directory)
            print("socket: %.2f us/datagram CPU (%d of %d datagrams taken off the socket)"
                  % (us, got, count))
    return 0


if __name__ == "__main__":
    sys.exit(main())
