# -*- test-case-name: tests.test_progress -*-
"""
Tests of the client programs' one progress display
(L{provisioner.client.progress}) and of the commands wired to it:

  - the rate and the time left, on a fake clock: no rate before a first
    real interval (the first tick of a fetch once said 1.4 GiB/s), then the
    rate over a sliding window;
  - what is drawn: tqdm's bar with those numbers on a terminal; nothing
    without one, nor with C{--quiet}; a note and no bar without tqdm;
  - C{provisioner fetch} against a real appliance on loopback, its standard
    error a pseudo-terminal (the bar: percentage, rate, time left) and a
    pipe (no bar); C{receive}, C{imagecast send} and C{deployenv build}
    drawing it;
  - C{provisioner imagecast status --config} finding the appliance's
    control channel in its configuration.
"""

import io
import os
import pty
import re
import select
import socket
import struct
import subprocess
import sys
import time

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from provisioner import cli
from provisioner.client import progress as P
from provisioner.client import receivecli
from provisioner.deployenv import build as B
from provisioner.deployenv import cli as deploycli
from provisioner.imagecast import cli as imagecastCLI
from provisioner.imagecast import commands
from tests.netlab import PYTHON, REPO, Appliance
from tests.test_imagecast_cli import _card

MiB = 1 << 20

#: a bar with a rate and a time left: "[00:02<00:08, 10.0MiB/s]"
RATED = re.compile(r"\[\d\d:\d\d<(\d\d:\d\d), ([\d.]+)([KMG]?)iB/s")


class TTY(io.StringIO):
    """
    A terminal, as far as the display can tell.
    """

    def isatty(self):
        return True


def frames(text):
    """
    The bars drawn on C{text} (a terminal's output), one per carriage return.
    """
    return [f.strip() for f in text.replace("\n", "\r").split("\r") if f.strip()]


def withoutTqdm(case):
    """
    Make C{import tqdm} fail for the rest of C{case}'s test.
    """
    saved = sys.modules.get("tqdm")
    sys.modules["tqdm"] = None

    def restore():
        if saved is None:
            sys.modules.pop("tqdm", None)
        else:
            sys.modules["tqdm"] = saved
    case.addCleanup(restore)


class RateMeterTests(SynchronousTestCase):
    """
    L{P.RateMeter}: the rate and the time left.
    """

    def test_noRateBeforeFirstInterval(self):
        """
        If less than C{first} seconds have passed since the first sample,
        there is no rate (however much the first sample counted), and no
        time left; then the rate counts only the growth since the first
        sample.
        """
        meter = P.RateMeter(window=3.0, first=0.5)
        self.assertIsNone(meter.rate())
        meter.sample(10.0, 4 * MiB)  # a first window, 1 ms after the request
        self.assertIsNone(meter.rate())
        meter.sample(10.001, 4 * MiB + 1468)
        meter.sample(10.4, 5 * MiB)
        self.assertIsNone(meter.rate())
        self.assertIsNone(meter.remaining(5 * MiB, 100 * MiB))
        meter.sample(10.5, 6 * MiB)
        self.assertAlmostEqual(meter.rate(), 2 * MiB / 0.5)
        self.assertAlmostEqual(meter.remaining(6 * MiB, 100 * MiB), 94 * MiB / (4 * MiB))

    def test_slidingWindow(self):
        """
        The rate is measured over the last C{window} seconds: after a change
        of pace, the old pace is forgotten once the window has passed.
        """
        meter = P.RateMeter(window=2.0, first=0.5)
        n = 0
        for i in range(51):  # 5 s at 1 MiB/s
            meter.sample(i * 0.1, n)
            n += MiB // 10
        self.assertTrue(abs(meter.rate() - MiB) < MiB * 0.01, meter.rate())
        for i in range(51, 81):  # 3 s at 4 MiB/s
            meter.sample(i * 0.1, n)
            n += 4 * MiB // 10
        self.assertTrue(abs(meter.rate() - 4 * MiB) < 4 * MiB * 0.01, meter.rate())

    def test_noRemainingWithoutTotalOrRate(self):
        """
        Without a total, or at a rate of zero, there is no time left.
        """
        meter = P.RateMeter(first=0.5)
        meter.sample(0, 0)
        meter.sample(1, MiB)
        self.assertIsNone(meter.remaining(MiB, None))
        meter.sample(4, MiB)
        meter.sample(8, MiB)
        self.assertEqual(meter.rate(), 0)
        self.assertIsNone(meter.remaining(MiB, 10 * MiB))


class DisplayTests(SynchronousTestCase):
    """
    L{P.ProgressDisplay} on a fake clock.
    """

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1000)

    def feed(self, display, perTick, ticks, step=0.1, start=0):
        n = start
        for _ in range(ticks):
            display.update(n)
            n += perTick
            self.clock.advance(step)
        return n

    def test_rateAndRemaining(self):
        """
        At 1 MiB every 0.1 s of a 100 MiB transfer, 2 s in, the bar shows
        20%, a rate of 10 MiB/s and 8 s left.
        """
        out = TTY()
        display = P.ProgressDisplay(self.clock, out, total=100 * MiB)
        self.feed(display, MiB, 21)
        self.assertAlmostEqual(display.rate(), 10 * MiB, places=3)
        self.assertAlmostEqual(display.remaining(), 8.0, places=6)
        last = frames(out.getvalue())[-1]
        self.assertTrue(last.startswith("20%|"), last)
        self.assertIn("[00:02<00:08, 10.0MiB/s]", last)

    def test_firstTickSane(self):
        """
        If the first update already counts a lot (a first window within a
        millisecond), the bars drawn within the first interval show no rate
        and no time left, not a rate of gigabytes per second.
        """
        out = TTY()
        display = P.ProgressDisplay(self.clock, out, total=100 * MiB)
        display.update(2 * MiB)
        self.clock.advance(0.001)
        display.update(2 * MiB + 1468)
        self.clock.advance(0.25)
        display.update(3 * MiB)
        drawn = frames(out.getvalue())
        self.assertEqual(len(drawn), 2)
        for bar in drawn:
            self.assertIn("<?, ?iB/s]", bar)
            self.assertNotIn("GiB/s", bar)
        self.clock.advance(0.25)
        display.update(4 * MiB)
        # 2 MiB in the 0.501 s since the first update
        self.assertIn("[00:00<00:24, 3.99MiB/s]", frames(out.getvalue())[-1])

    def test_interval(self):
        """
        Updates come as often as they may (a fetch's per block); the bar is
        drawn at most every C{interval} seconds, and at the end.
        """
        out = TTY()
        display = P.ProgressDisplay(self.clock, out, total=10 * MiB, interval=0.5)
        self.feed(display, 10000, 100, step=0.01)  # 1 s
        self.assertEqual(len(frames(out.getvalue())), 2)
        display.update(10 * MiB)
        self.assertIn("100%|", frames(out.getvalue())[-1])

    def test_finish(self):
        """
        L{P.ProgressDisplay.finish} draws the last state and ends the line;
        nothing is drawn after.
        """
        out = TTY()
        display = P.ProgressDisplay(self.clock, out, total=10 * MiB)
        self.feed(display, MiB, 5)
        display.finish(10 * MiB)
        text = out.getvalue()
        self.assertTrue(text.endswith("\n"))
        self.assertIn("100%|", frames(text)[-1])
        display.update(11 * MiB)
        self.assertEqual(out.getvalue(), text)

    def test_unsized(self):
        """
        Without a total, the bar shows the count, the elapsed time and the
        rate, and neither a percentage nor a time left; the unit of other
        things than bytes is named.
        """
        out = TTY()
        display = P.ProgressDisplay(self.clock, out, unit="packages", description="unpack")
        self.feed(display, 1, 11)
        last = frames(out.getvalue())[-1]
        self.assertNotIn("%", last)
        self.assertIn("unpack: 10 [00:01, 10.00 packages/s]", last)

    def test_notATerminal(self):
        """
        If the stream is not a terminal, nothing is drawn (and tqdm is not
        needed).
        """
        withoutTqdm(self)
        out = io.StringIO()
        display = P.ProgressDisplay(self.clock, out, total=10 * MiB)
        self.assertFalse(display.enabled)
        self.feed(display, MiB, 11)
        display.finish()
        self.assertEqual(out.getvalue(), "")

    def test_forced(self):
        """
        If C{enabled} is true (C{fetch --progress}), the bar is drawn
        without a terminal too.
        """
        out = io.StringIO()
        display = P.ProgressDisplay(self.clock, out, True, total=10 * MiB)
        self.feed(display, MiB, 11)
        self.assertIn("100%|", out.getvalue())

    def test_quiet(self):
        """
        If C{enabled} is false (C{--quiet}), nothing is drawn on a terminal.
        """
        out = TTY()
        display = P.ProgressDisplay(self.clock, out, False, total=10 * MiB)
        self.feed(display, MiB, 11)
        display.write("")
        display.finish()
        self.assertEqual(out.getvalue(), "")

    def test_withoutTqdm(self):
        """
        If tqdm is not installed, the first bar is a note, once, and
        nothing else is drawn.
        """
        withoutTqdm(self)
        out = TTY()
        display = P.ProgressDisplay(self.clock, out, total=10 * MiB)
        self.feed(display, MiB, 11)
        display.finish()
        self.assertEqual(out.getvalue(), "progress: no bar (tqdm, Debian's python3-tqdm, is "
                                         "not installed)\n")

    def test_writeAboveTheBar(self):
        """
        A line written through the display comes out whole, and the bar is
        drawn again after it.
        """
        out = TTY()
        display = P.ProgressDisplay(self.clock, out, total=10 * MiB)
        self.feed(display, MiB, 3)
        display.write("round 1: done\n")
        text = out.getvalue()
        self.assertIn("round 1: done\n", text)
        self.assertIn("%|", text.split("round 1: done\n")[1])


class _Ranges:
    def __init__(self, n):
        self.n = n

    def total(self):
        return self.n


class _Receiver:
    size = 64 * MiB
    round = 1

    def __init__(self):
        self.received = _Ranges(0)


class ReceiveWiringTests(SynchronousTestCase):
    """
    C{provisioner receive}'s bar is the display's.
    """

    def test_bar(self):
        """
        The receiver's bytes, of its image's size, are drawn with the rate,
        the time left and the round, every 0.25 s, and a last time at the
        end.
        """
        err = TTY()
        self.patch(sys, "stderr", err)
        clock = task.Clock()
        receiver = _Receiver()
        bar = receivecli._startBar(clock, receiver)
        for _ in range(8):
            clock.advance(0.25)
            receiver.received.n += MiB
        receiver.round = 2
        receiver.received.n = 64 * MiB
        receivecli._stopBar(bar, receiver)
        drawn = frames(err.getvalue())
        # 7 MiB in 2 s; 57 MiB left
        self.assertIn("11%|", [b for b in drawn if "round 1]" in b][-1])
        self.assertIn("[00:02<00:16, 3.50MiB/s, round 1]",
                      [b for b in drawn if "round 1]" in b][-1])
        self.assertIn("100%|", drawn[-1])
        self.assertIn("round 2]", drawn[-1])
        self.assertTrue(err.getvalue().endswith("\n"))
        self.assertEqual(clock.getDelayedCalls(), [])


class _Proto:
    """
    The control channel, answering C{imagecast send}'s calls with the
    scorecards given, a second apart.
    """

    def __init__(self, clock, cards):
        self.clock = clock
        self.cards = list(cards)
        self.calls = []

    def callRemote(self, command, **kw):
        self.calls.append((command, kw))
        if command is commands.StartSession:
            return defer.succeed({"session": 42, "name": "disk.img", "size": 1000})
        self.clock.advance(1.0)
        return defer.succeed({"scorecard": self.cards.pop(0)})


class SendWiringTests(SynchronousTestCase):
    """
    C{provisioner imagecast send} follows its session with the display.
    """

    def send(self, *argv):
        clock = task.Clock()
        rounds = _card()["sessions"][0]["rounds"]
        cards = [
            _card(state="waiting", round=0, phase="idle", complete=[], permanent_group=[],
                  rounds=[]),
            _card(state="running", round=1, phase="data", complete=[], rounds=rounds[:1]),
            _card(state="running", round=2, phase="collect", complete=["a"]),
            _card(state="done", round=2, phase="idle", complete=["a", "b"]),
        ]
        proto = _Proto(clock, cards)
        self.patch(imagecastCLI, "connect", lambda reactor, args: defer.succeed(proto))
        status = []
        self.patch(imagecastCLI, "runReactor",
                   lambda start: status.append(self.successResultOf(start(clock))))
        err, out = TTY(), io.StringIO()
        self.patch(sys, "stderr", err)
        self.patch(sys, "stdout", out)
        args = cli.buildParser().parse_args(["imagecast", "send", "disk.img"] + list(argv))
        args.func(args)
        return status[0], err.getvalue(), proto

    def test_bar(self):
        """
        On a terminal, the receivers that have the whole image are drawn
        with the round, the rate and the time left, polled every second;
        each round's line comes above the bar.
        """
        status, err, proto = self.send()
        self.assertEqual(status, 0)
        drawn = frames(err)
        self.assertTrue([b for b in drawn if "round 2 collect" in b][0].startswith("50%|"))
        self.assertIn("| 1/2 [00:03<00:02, 0.50 receivers/s, round 2 collect, 400.0 Mbit/s]",
                      "\n".join(drawn))
        self.assertIn("100%|", drawn[-1])
        self.assertIn("round 1: 1000 bytes in 1 ranges at 400.0 Mbit/s, 2 receivers\n", err)
        self.assertEqual({kw.get("wait") for c, kw in proto.calls if c is commands.Status},
                         {1.0})

    def test_quiet(self):
        """
        With C{--quiet}, only the session's line is written on standard
        error, and the polls wait for the next round.
        """
        status, err, proto = self.send("--quiet")
        self.assertEqual((status, err), (0, "session 42: disk.img (1000 bytes)\n"))
        self.assertEqual({kw.get("wait") for c, kw in proto.calls if c is commands.Status},
                         {30.0})


class DeployenvWiringTests(SynchronousTestCase):
    """
    C{provisioner deployenv build} draws the build's progress.
    """

    def fakeBuild(self, clock):
        def build(output, cache, log, bytecode, progress):
            log("60 packages: linux-image and the rest")
            for i in range(0, 17, 8):
                progress("download", i, 16)
                clock.advance(2.0)
            for i in range(61):
                progress("unpack", i, 60)
                clock.advance(0.1)
            log("left out something")
            raise B.BuildError("stopped here")
        return build

    def test_bar(self):
        """
        Each stage (download, unpack) has its bar of packages, with the
        rate and the time left, and the build's log lines come whole.
        """
        clock = task.Clock()
        self.patch(B, "build", self.fakeBuild(clock))
        self.patch(P, "MonotonicClock", lambda: clock)
        err = TTY()
        args = cli.buildParser().parse_args(["deployenv", "build", "-o", self.mktemp()])
        self.assertEqual(deploycli._build(args, io.StringIO(), err), 1)
        text = err.getvalue()
        self.assertIn("deployenv: 60 packages: linux-image and the rest\n", text)
        self.assertIn("deployenv: left out something\n", text)
        drawn = frames(text)
        self.assertIn("download: 100%|", [b for b in drawn if b.startswith("download")][-1])
        self.assertIn("download: 100%|##########| 16/16 [00:04<00:00, 4.00 packages/s]",
                      drawn)
        unpack = [b for b in drawn if b.startswith("unpack")]
        self.assertTrue(any(re.search(r"^unpack:  [1-8]\d%\|.* \d+/60 \[00:0\d<00:0\d, "
                                      r"10\.00 packages/s\]$", b) for b in unpack), unpack)
        self.assertIn("provisioner deployenv build: stopped here", drawn[-1])

    def test_quiet(self):
        """
        With C{--quiet}, only the log lines are written.
        """
        clock = task.Clock()
        self.patch(B, "build", self.fakeBuild(clock))
        err = TTY()
        args = cli.buildParser().parse_args(["deployenv", "build", "-q", "-o", self.mktemp()])
        self.assertEqual(deploycli._build(args, io.StringIO(), err), 1)
        self.assertEqual(err.getvalue(), "deployenv: 60 packages: linux-image and the rest\n"
                         "deployenv: left out something\n"
                         "provisioner deployenv build: stopped here\n")


# On loopback, against the appliance run as a user runs it ---------------------

def _freePort():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _provisioner(argv, cwd, **kw):
    return subprocess.run([PYTHON, "-m", "provisioner"] + argv, cwd=cwd,
                          env=dict(os.environ, PYTHONPATH=REPO), stdin=subprocess.DEVNULL,
                          timeout=120, **kw)


def _onTerminal(argv, cwd, timeout=120):
    """
    Run C{provisioner ARGV} with its standard error on a pseudo-terminal
    of 100 columns.

    @return: C{(exit status, what the terminal showed)}.
    """
    import fcntl
    import termios
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("COLUMNS", None)
    proc = subprocess.Popen([PYTHON, "-m", "provisioner"] + argv, cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
        proc.wait(15)
    return proc.returncode, shown.decode("utf-8", "replace")


class FetchOnTerminalTests(SynchronousTestCase):
    """
    C{provisioner fetch} from the appliance's TFTP service on 127.0.0.1.
    """

    #: lock-step 8-byte blocks: tens of thousands of round trips, seconds
    SLOW = ["--blksize", "8", "--windowsize", "1", "--no-adaptive"]
    SIZE = 480 * 1024

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        root = os.path.join(self.directory, "tftpboot")
        os.makedirs(root)
        self.data = os.urandom(self.SIZE)
        with open(os.path.join(root, "image.bin"), "wb") as f:
            f.write(self.data)
        appliance = Appliance(self.directory, "tftp:\n  enabled: true\n  address: 127.0.0.1\n"
                              "  port: 0\n  root: %s\n" % (root,))
        self.addCleanup(appliance.stop)
        appliance.start()
        self.url = "tftp://127.0.0.1:%d/image.bin" % (appliance.listeningPort("TFTP"),)

    def fetched(self):
        with open(os.path.join(self.directory, "image.bin"), "rb") as f:
            self.assertEqual(f.read(), self.data)

    def test_bar(self):
        """
        On a terminal, the bar has the file's name, its percentage, and,
        once a first interval has passed, a sane rate and the time left; it
        ends at 100% on its own line.
        """
        status, shown = _onTerminal(["fetch", self.url] + self.SLOW, self.directory)
        self.assertEqual(status, 0, shown)
        self.fetched()
        drawn = frames(shown)
        self.assertTrue(drawn[0].startswith("image.bin:"), drawn[0])
        self.assertIn("<?, ?iB/s]", drawn[0])
        rated = [RATED.search(b) for b in drawn]
        rated = [m for m in rated if m]
        self.assertTrue(rated, shown)
        unit = {"": 1, "K": 1 << 10, "M": MiB, "G": 1 << 30}
        for m in rated:
            rate = float(m.group(2)) * unit[m.group(3)]
            # no faster than the whole file in a tenth of a second
            self.assertLess(rate, self.SIZE * 10, m.group(0))
        self.assertIn("100%|", drawn[-1])
        self.assertRegex(drawn[-1], r"480k/480k \[\d\d:\d\d<")
        self.assertTrue(shown.endswith("\n"))
        self.assertTrue(any(re.search(r"\b[1-9]\d%\|", b) for b in drawn), shown)

    def test_quiet(self):
        """
        With C{--quiet}, nothing is drawn on the terminal.
        """
        status, shown = _onTerminal(["fetch", "--quiet", self.url], self.directory)
        self.assertEqual((status, shown), (0, ""))
        self.fetched()

    def test_noTerminal(self):
        """
        If standard error is not a terminal, no bar is drawn.
        """
        result = _provisioner(["fetch", self.url], self.directory, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
        self.assertEqual((result.returncode, result.stderr), (0, b""))
        self.fetched()


class ImagecastConfigTests(SynchronousTestCase):
    """
    C{provisioner imagecast status|send --config FILE}.
    """

    CONFIG = ("imagecast:\n  enabled: true\n  address: {address}\n  port: {port}\n"
              "  root: {d}/images\n  authentication: none\n")

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.directory, "images"))

    def config(self, **kw):
        self.configs = getattr(self, "configs", 0) + 1
        path = os.path.join(self.directory, "%d.yaml" % (self.configs,))
        values = dict(address="0.0.0.0", port=7999, d=self.directory)
        values.update(kw)
        with open(path, "w") as f:
            f.write(self.CONFIG.format(**values))
        return path

    def parse(self, *argv):
        return cli.buildParser().parse_args(["imagecast"] + list(argv))

    def test_locate(self):
        """
        The control channel is the configuration's C{imagecast.address}
        (0.0.0.0 and :: are reached on loopback) and C{imagecast.port};
        C{--server} and C{--port} win; without C{--config}, 127.0.0.1 port
        7010.
        """
        path = self.config()
        args = imagecastCLI.locate(self.parse("status", "--config", path))
        self.assertEqual((args.server, args.port, args.tls), ("127.0.0.1", 7999, False))
        args = imagecastCLI.locate(self.parse("send", "x", "--config", self.config(
            address="'::'")))
        self.assertEqual((args.server, args.port), ("::1", 7999))
        args = imagecastCLI.locate(self.parse("status", "--config", self.config(
            address="198.18.0.1")))
        self.assertEqual((args.server, args.port), ("198.18.0.1", 7999))
        args = imagecastCLI.locate(self.parse("status", "-c", path, "--server", "198.18.0.9"))
        self.assertEqual((args.server, args.port), ("198.18.0.9", 7999))
        args = imagecastCLI.locate(self.parse("status", "-c", path, "--port", "7100"))
        self.assertEqual((args.server, args.port), ("127.0.0.1", 7100))
        args = imagecastCLI.locate(self.parse("status"))
        self.assertEqual((args.server, args.port), ("127.0.0.1", 7010))

    def test_notThere(self):
        """
        If the configuration has no control channel to find (imagecast
        disabled, port 0) or cannot be read, the command says so and exits
        with 2.
        """
        path = os.path.join(self.directory, "off.yaml")
        with open(path, "w") as f:
            f.write("imagecast:\n  enabled: false\n")
        for config, message in [(path, "imagecast is not enabled in"),
                                (self.config(port=0), "imagecast.port is 0 in"),
                                (os.path.join(self.directory, "none.yaml"), "none.yaml")]:
            err = io.StringIO()
            self.patch(sys, "stderr", err)
            args = self.parse("status", "--config", config)
            self.assertEqual(args.func(args), 2)
            self.assertIn(message, err.getvalue())
            self.assertEqual(len(err.getvalue().splitlines()), 1, err.getvalue())

    def test_statusFindsTheAppliance(self):
        """
        C{provisioner imagecast status --config FILE} reaches the running
        appliance of that configuration (on 0.0.0.0 and a port other than
        the default) and prints its scorecard.
        """
        port = _freePort()
        appliance = Appliance(self.directory, self.CONFIG.format(
            address="0.0.0.0", port=port, d=self.directory))
        self.addCleanup(appliance.stop)
        appliance.start()
        result = _provisioner(["imagecast", "status", "--config", appliance.configPath],
                              self.directory, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.assertEqual((result.returncode, result.stdout, result.stderr),
                         (0, b"no sessions\n", b""))
