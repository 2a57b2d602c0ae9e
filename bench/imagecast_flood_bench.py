#!/usr/bin/env python3
"""
How long a TFTP client waits while one peer floods imagecast's control
channel with Register boxes. Not a test.

The appliance runs as an operator runs it (twistd) on 127.0.0.1: TFTP on a
free port, imagecast's control channel on another (loopback only). One TCP
connection sends N Register boxes (each a new client id) as fast as the
socket takes them, reads the answers, and then closes; meanwhile a probe
asks TFTP for a small file every 20 ms and times the first DATA. Prints the
probes' latency (median, p99, max) before, during and after the flood.
Only loopback traffic; bounded in count and time.

    .venv/bin/python bench/imagecast_flood_bench.py [--boxes 50000]
"""

import argparse
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def freePort(kind=socket.SOCK_DGRAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ampBox(pairs):
    out = bytearray()
    for key, value in pairs:
        out += struct.pack("!H", len(key)) + key + struct.pack("!H", len(value)) + value
    return bytes(out + b"\x00\x00")


def probe(port, stop, samples, phase):
    """
    RRQ for C{small} every 20 ms; record (phase, seconds to DATA 1).
    """
    rrq = b"\x00\x01small\x00octet\x00"
    while not stop.is_set():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5.0)
        started = time.monotonic()
        try:
            s.sendto(rrq, ("127.0.0.1", port))
            data, peer = s.recvfrom(2048)
            samples.append((phase[0], time.monotonic() - started))
            s.sendto(b"\x00\x04" + data[2:4], peer)
        except socket.timeout:
            samples.append((phase[0], 5.0))
        finally:
            s.close()
        time.sleep(0.02)


def flood(port, boxes):
    c = socket.create_connection(("127.0.0.1", port))
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    received = [0]
    done = threading.Event()

    def reader():
        while True:
            try:
                chunk = c.recv(1 << 16)
            except OSError:
                break
            if not chunk:
                break
            received[0] += len(chunk)
        done.set()
    threading.Thread(target=reader, daemon=True).start()
    batch = []
    for i in range(boxes):
        batch.append(ampBox([(b"_command", b"Register"), (b"_ask", b"%x" % i),
                             (b"clientId", b"flood-%d" % i), (b"address", b"127.0.0.1")]))
        if len(batch) == 500:
            c.sendall(b"".join(batch))
            batch = []
    if batch:
        c.sendall(b"".join(batch))
    time.sleep(1.0)
    c.close()
    done.wait(10)
    return received[0]


def summary(values):
    if not values:
        return "no samples"
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return "%4d probes, median %6.2f ms, p99 %6.2f ms, max %6.2f ms" % (
        len(values), statistics.median(values) * 1000, p99 * 1000, values[-1] * 1000)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--boxes", type=int, default=50000)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="floodbench-")
    root = os.path.join(work, "tftp")
    images = os.path.join(work, "images")
    os.makedirs(root)
    os.makedirs(images)
    with open(os.path.join(root, "small"), "wb") as f:
        f.write(b"x" * 400)
    tftpPort, ctlPort = freePort(), freePort(socket.SOCK_STREAM)
    config = os.path.join(work, "provisioner.yaml")
    with open(config, "w") as f:
        f.write("tftp:\n  address: 127.0.0.1\n  port: %d\n  root: %s\n"
                "imagecast:\n  enabled: true\n  address: 127.0.0.1\n  port: %d\n"
                "  root: %s\n  authentication: none\n" % (tftpPort, root, ctlPort, images))
    env = dict(os.environ, PYTHONPATH=REPO)
    log = open(os.path.join(work, "twistd.log"), "w")
    twistd = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
         "--pidfile=", "provisioner", "--config", config],
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", ctlPort), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        samples, phase, stop = [], ["before"], threading.Event()
        t = threading.Thread(target=probe, args=(tftpPort, stop, samples, phase), daemon=True)
        t.start()
        time.sleep(2.0)
        phase[0] = "during"
        started = time.monotonic()
        answered = flood(ctlPort, args.boxes)
        took = time.monotonic() - started
        phase[0] = "after"
        time.sleep(2.0)
        stop.set()
        t.join(10)
        print("%d Register boxes on one connection, sent, answered (%d bytes back) and "
              "closed in %.2f s" % (args.boxes, answered, took))
        for name in ("before", "during", "after"):
            print("TFTP %-6s %s" % (name, summary([s for p, s in samples if p == name])))
    finally:
        twistd.terminate()
        try:
            twistd.wait(10)
        except subprocess.TimeoutExpired:
            twistd.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
