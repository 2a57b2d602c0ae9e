# -*- test-case-name: tests.test_confinement_race -*-
"""
The check-then-open race against the real TFTP and HTTP services on
127.0.0.1 (issue 14, finding 7).

A subprocess swaps a subdirectory of the served root with a symlink to a
directory outside it (C{renameat2(RENAME_EXCHANGE)}, atomically, as fast as
it can) while the test asks for a file of that subdirectory 10,000 times;
the directory outside holds a file of the same name with other content. A
server that checks the path and then opens it again by name serves the
outside file whenever the swap lands between the two; one that lets the
kernel resolve the path below the root at open time never does. Each test
counts the answers that carry the outside content (must be 0), the ones
that carry the inside content, the refusals and the losses.

The same swap runs against TFTP uploads (L{UploadTarget}, driven
directly): 10,000 uploads into the swapped subdirectory, none of which may
create anything outside. Each test runs twice: through the kernel's
C{openat2}, and through the C{O_NOFOLLOW} walk used where it is missing.
"""

import ctypes
import errno
import os
import platform
import subprocess
import sys

from twisted.internet import defer, reactor
from twisted.internet.protocol import ClientFactory, DatagramProtocol, Protocol
from twisted.logger import Logger
from twisted.trial.unittest import SkipTest, TestCase

from provisioner import confine, errors
from provisioner.appliance import Appliance
from provisioner.config import loadConfig
from provisioner.tftp import wire

INSIDE = b"inside: the file the root serves\n"
OUTSIDE = b"OUTSIDE: must never be served\n"
TRIES = 10000

RENAME_EXCHANGE = 2
AT_FDCWD = -100

# The swapper: exchanges two names in a loop until SIGTERM, then prints how
# many exchanges it made.
SWAPPER = r"""
import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
a, b = os.fsencode(sys.argv[1]), os.fsencode(sys.argv[2])
try:
    swap = libc.renameat2
    args = (-100, a, -100, b, 2)
except AttributeError:
    swap = libc.syscall
    args = (316, -100, a, -100, b, 2)
count = [0]
def stop(*_):
    sys.stdout.write("%d\n" % count[0])
    sys.stdout.flush()
    os._exit(0)
signal.signal(signal.SIGTERM, stop)
sys.stdout.write("ready\n")
sys.stdout.flush()
while True:
    if swap(*args) == 0:
        count[0] += 1
"""


def _exchange(a, b):
    """
    C{renameat2(a, b, RENAME_EXCHANGE)} in this process (the preflight).

    @raise SkipTest: this system cannot.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        function, args = libc.renameat2, ()
    except AttributeError:
        if platform.machine() != "x86_64":
            raise SkipTest("no renameat2 in libc and no known syscall number")
        function, args = libc.syscall, (316,)
    result = function(*(args + (AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b),
                                 RENAME_EXCHANGE)))
    if result != 0:
        code = ctypes.get_errno()
        if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise SkipTest("renameat2(RENAME_EXCHANGE): %s" % (os.strerror(code),))
        raise OSError(code, os.strerror(code))


class Tally:
    """
    What the answers carried.
    """

    def __init__(self):
        self.counts = {"escaped": 0, "served": 0, "refused": 0, "not found": 0, "lost": 0,
                       "other": 0}

    def body(self, data):
        if data == OUTSIDE:
            self.counts["escaped"] += 1
        elif data == INSIDE:
            self.counts["served"] += 1
        else:
            self.counts["other"] += 1

    def add(self, kind):
        self.counts[kind] += 1

    @property
    def requests(self):
        return sum(self.counts.values())

    def __str__(self):
        return "%d requests: %s" % (self.requests, ", ".join(
            "%s %d" % item for item in self.counts.items()))


class Driver:
    """
    Keeps C{concurrency} requests in flight until C{total} were made.
    """

    def __init__(self, total, concurrency, start):
        self.left = total
        self.running = 0
        self.concurrency = concurrency
        self.start = start
        self.done = defer.Deferred()

    def run(self):
        self._fill()
        return self.done

    def take(self):
        """
        Whether another request may be made (and count it).
        """
        if self.left <= 0:
            return False
        self.left -= 1
        return True

    def _fill(self):
        while self.running < self.concurrency and self.left > 0:
            self.left -= 1
            self.running += 1
            self.start(self.ended)
        if self.running == 0 and not self.done.called:
            self.done.callback(None)

    def ended(self):
        self.running -= 1
        reactor.callLater(0, self._fill)


class TFTPProbe(DatagramProtocol):
    """
    One plain RRQ from a fresh port: DATA 1 (the whole file: it is shorter
    than 512 bytes) is acknowledged and tallied; ERROR 2 is a refusal,
    ERROR 1 "not found", any other ERROR "other"; no answer within
    C{timeout} seconds is a loss.
    """

    noisy = False

    def __init__(self, request, server, tally, ended, timeout=2.0):
        self.request = request
        self.server = server
        self.tally = tally
        self.onEnded = ended
        self.timeout = timeout
        self.timer = None
        self.over = False

    def startProtocol(self):
        self.transport.write(self.request, self.server)
        self.timer = reactor.callLater(self.timeout, self._end, "lost")

    def datagramReceived(self, data, addr):
        if self.over or len(data) < 4:
            return
        if data[:4] == b"\x00\x03\x00\x01":
            self.transport.write(wire.encodeAck(1), addr)
            self.tally.body(data[4:])
            self._end(None)
        elif data[:2] == b"\x00\x05":
            code = (data[2] << 8) | data[3]
            self._end({wire.ERR_FILE_NOT_FOUND: "not found",
                       wire.ERR_ACCESS_VIOLATION: "refused"}.get(code, "other"))

    def _end(self, kind):
        if self.over:
            return
        self.over = True
        if kind is not None:
            self.tally.add(kind)
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.transport.stopListening()
        self.onEnded()


class HTTPKeepAlive(Protocol):
    """
    One keep-alive connection asking for C{path} again and again while the
    driver lets it.
    """

    def __init__(self, path, tally, driver, ended):
        self.request = (b"GET /%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % (path,))
        self.tally = tally
        self.driver = driver
        self.onEnded = ended
        self.buffer = b""
        self.status = None
        self.length = None

    def connectionMade(self):
        self._next()

    def _next(self):
        if self.driver.take():
            self.transport.write(self.request)
        else:
            self.transport.loseConnection()

    def dataReceived(self, data):
        self.buffer += data
        while True:
            if self.status is None:
                head, sep, rest = self.buffer.partition(b"\r\n\r\n")
                if not sep:
                    return
                lines = head.split(b"\r\n")
                self.status = int(lines[0].split()[1])
                self.length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        self.length = int(value.strip())
                self.buffer = rest
            if len(self.buffer) < self.length:
                return
            body, self.buffer = self.buffer[:self.length], self.buffer[self.length:]
            status, self.status = self.status, None
            if status == 200:
                self.tally.body(body)
            elif status == 403:
                self.tally.add("refused")
            elif status == 404:
                self.tally.add("not found")
            else:
                self.tally.add("other")
            self._next()

    def connectionLost(self, reason):
        self.onEnded()


class _RaceTest(TestCase):
    """
    The served tree and the swapper, shared by both tests.
    """

    timeout = 180
    log = Logger()

    def makeTree(self):
        base = os.path.abspath(self.mktemp())
        self.root = os.path.join(base, "root")
        self.outside = os.path.join(base, "outside")
        os.makedirs(os.path.join(self.root, "sub"))
        os.makedirs(self.outside)
        with open(os.path.join(self.root, "sub", "file"), "wb") as f:
            f.write(INSIDE)
        with open(os.path.join(self.outside, "file"), "wb") as f:
            f.write(OUTSIDE)
        self.sub = os.path.join(self.root, "sub")
        self.link = os.path.join(self.root, "swap")
        os.symlink(self.outside, self.link)
        _exchange(self.sub, self.link)
        _exchange(self.sub, self.link)
        self.assertTrue(os.path.isdir(self.sub) and not os.path.islink(self.sub))

    def startSwapper(self):
        """
        Start the subprocess that exchanges C{sub} and the symlink; return
        a callable that stops it and returns the number of exchanges.
        """
        process = subprocess.Popen([sys.executable, "-c", SWAPPER, self.sub, self.link],
                                   stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        stopped = []

        def stop():
            if stopped:
                return stopped[0]
            process.terminate()
            out, _ = process.communicate(timeout=30)
            try:
                stopped.append(int(out.split()[-1]))
            except (IndexError, ValueError):
                stopped.append(0)
            return stopped[0]
        self.addCleanup(stop)
        self.assertEqual(process.stdout.readline(), b"ready\n")
        return stop

    def way(self):
        """
        How paths were resolved: C{"openat2"} or C{"walk"}.
        """
        return "openat2" if confine.openat2Available() else "walk"

    def check(self, protocol, tally, swaps):
        self.log.info("{protocol} symlink race ({way}): {tally}; {swaps} exchanges",
                      protocol=protocol, way=self.way(), tally=str(tally), swaps=swaps)
        figures = "%s (%d exchanges)" % (tally, swaps)
        self.assertEqual(tally.requests, TRIES, figures)
        self.assertGreater(swaps, 1000, figures)
        self.assertEqual(tally.counts["escaped"], 0, figures)
        self.assertEqual(tally.counts["other"], 0, figures)
        # The race was run: the file was served through the directory and
        # refused through the symlink.
        self.assertGreater(tally.counts["served"], 0, figures)
        self.assertGreater(tally.counts["refused"], 0, figures)


class TFTPRaceTests(_RaceTest):
    """
    The race against the TFTP service.
    """

    def setUp(self):
        self.makeTree()
        from provisioner.tftp.service import makeService
        config = loadConfig(None, [("tftp.port", 0), ("tftp.root", self.root)])
        self.service = makeService(Appliance(config, reactor))
        self.service.privilegedStartService()
        self.service.startService()
        self.addCleanup(lambda: self.service.running and self.service.stopService())

    @defer.inlineCallbacks
    def test_symlinkSwap(self):
        """
        If a subdirectory of the root is swapped with a symlink leading
        outside while its file is asked for 10,000 times (32 at a time),
        the outside file is never served.
        """
        server = ("127.0.0.1", self.service.listeningPort)
        request = wire.ReadRequest(b"sub/file", "octet", []).to_wire()
        tally = Tally()

        def start(ended):
            reactor.listenUDP(0, TFTPProbe(request, server, tally, ended),
                              interface="127.0.0.1")
        stop = self.startSwapper()
        yield Driver(TRIES, 32, start).run()
        self.check("TFTP", tally, stop())


class HTTPRaceTests(_RaceTest):
    """
    The race against the HTTP service (C{http.root}).
    """

    def setUp(self):
        self.makeTree()
        from provisioner.web.service import HTTPService
        config = loadConfig(None, [("http.enabled", True), ("http.port", 0),
                                   ("http.root", self.root)])
        self.service = HTTPService(Appliance(config, reactor))
        self.service.privilegedStartService()
        self.service.startService()
        self.addCleanup(self.service.stopService)

    @defer.inlineCallbacks
    def test_symlinkSwap(self):
        """
        If a subdirectory of C{http.root} is swapped with a symlink leading
        outside while its file is asked for 10,000 times (over 8 keep-alive
        connections), the outside file is never served.
        """
        port = self.service.port.getHost().port
        tally = Tally()
        connections = Driver(8, 8, None)
        requests = Driver(TRIES, 0, None)

        def start(ended):
            factory = ClientFactory.forProtocol(
                lambda: HTTPKeepAlive(b"sub/file", tally, requests, ended))
            reactor.connectTCP("127.0.0.1", port, factory)
        connections.start = start
        stop = self.startSwapper()
        yield connections.run()
        self.check("HTTP", tally, stop())


class UploadRaceTests(_RaceTest):
    """
    The race against TFTP uploads.
    """

    def setUp(self):
        self.makeTree()

    def test_symlinkSwap(self):
        """
        If the subdirectory an upload names is swapped with a symlink
        leading outside while 10,000 uploads into it are made, none creates
        anything outside: each is refused or lands inside.
        """
        from provisioner.tftp.upload import UploadTarget
        target = UploadTarget(self.root)
        outcomes = {"inside": 0, "refused": 0, "failed": 0}
        stop = self.startSwapper()
        for i in range(TRIES):
            try:
                upload = target.open("sub/u%d" % (i,), ("127.0.0.1", i))
            except errors.BackendError:
                outcomes["refused"] += 1
                continue
            except Exception:
                outcomes["failed"] += 1
                continue
            try:
                upload.write(INSIDE)
                upload.commit()
            except Exception:
                outcomes["failed"] += 1
                upload.abort()
            else:
                outcomes["inside"] += 1
        swaps = stop()
        escaped = sorted(os.listdir(self.outside))
        escaped.remove("file")
        landed = sum(len([n for n in os.listdir(os.path.join(self.root, d))
                          if n.startswith("u")]) for d in ("sub", "swap")
                     if os.path.isdir(os.path.join(self.root, d)) and
                     not os.path.islink(os.path.join(self.root, d)))
        figures = "%d uploads: %s; %d outside; %d exchanges" % (
            TRIES, ", ".join("%s %d" % item for item in outcomes.items()), len(escaped), swaps)
        self.log.info("upload symlink race ({way}): {figures}", way=self.way(),
                      figures=figures)
        self.assertEqual(len(escaped), 0, "%s (%s...)" % (figures, ", ".join(escaped[:3])))
        self.assertEqual(outcomes["failed"], 0, figures)
        self.assertEqual(landed, outcomes["inside"], figures)
        self.assertGreater(outcomes["inside"], 0, figures)
        self.assertGreater(outcomes["refused"], 0, figures)
        self.assertGreater(swaps, 1000, figures)


class _WithoutOpenat2:
    """
    Run the race as on a kernel without C{openat2} (C{ENOSYS}): paths are
    walked with C{O_NOFOLLOW}.
    """

    def setUp(self):
        def noOpenat2(*args):
            raise OSError(errno.ENOSYS, "no openat2")
        self.patch(confine, "_openat2", noOpenat2)
        self.patch(confine, "_openat2Works", None)
        return super().setUp()


    def way(self):
        self.assertIs(confine._openat2Works, False)
        return "walk"


class TFTPWalkRaceTests(_WithoutOpenat2, TFTPRaceTests):
    """
    The TFTP race without C{openat2}.
    """


class HTTPWalkRaceTests(_WithoutOpenat2, HTTPRaceTests):
    """
    The HTTP race without C{openat2}.
    """


class UploadWalkRaceTests(_WithoutOpenat2, UploadRaceTests):
    """
    The upload race without C{openat2}.
    """
