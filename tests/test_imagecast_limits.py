"""
Tests for the limits of the imagecast control channel (issue 14, findings 1
and 2): what one peer can make the appliance hold or compute is bounded and
checked before the work is done, and membership changes do not go over
every member.

The limits are tested on the server's protocol over in-memory transports
(L{StringTransport}, a L{FileDescriptor} whose peer never reads) with a
L{task.Clock}; one test runs the real service on loopback, where only a
real socket shows what the kernel and Twisted buffer for a peer that does
not read. Memory is measured as the growth of the process's peak RSS
(C{VmHWM}, reset through C{/proc/self/clear_refs} where Linux allows it),
time as process time; the bounds are generous, the figures before the
change were gigabytes and minutes.
"""

import os
import random
import re
import socket
import time
import zlib

from twisted.internet import defer, task
from twisted.internet.abstract import FileDescriptor
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from provisioner.appliance import Appliance
from provisioner.config import loadConfig
from provisioner.imagecast import commands
from provisioner.imagecast import ranges as R
from provisioner.imagecast.controller import Controller
from provisioner.imagecast.extents import MIN_HOLE
from provisioner.imagecast.member import Member
from provisioner.imagecast.service import ControlFactory, makeService

#: a peer outside admin_networks
STRANGER = "198.18.0.66"


def _config(root, extra=""):
    # authentication: none: these tests are about what any peer can make
    # the appliance hold, registered or not; that a Register needs its
    # proof is tests.test_imagecast_auth's
    return loadConfig(text="imagecast:\n  enabled: true\n  authentication: none\n  root: %s\n"
                      "  port: 0\n%s" % (root, extra))["imagecast"]


def _image(case, size):
    """
    A directory holding an image C{img} of C{size} bytes that is sent
    whole: a block of data every half L{MIN_HOLE}, so that it has no hole
    the sender announces (the fake receivers here register without the
    feature C{holes}, as receivers did before sparse images).
    """
    root = case.mktemp()
    os.makedirs(root)
    with open(os.path.join(root, "img"), "wb") as f:
        f.truncate(size)
        for offset in range(0, size, MIN_HOLE // 2):
            f.seek(offset)
            f.write(b"\xa5" * min(4096, size - offset))
    return root


class _NullWriter:
    def writeBatch(self, datagrams):
        return len(datagrams)

    def close(self):
        pass


def _controller(root, extra=""):
    return Controller(task.Clock(), _config(root, extra),
                      writerFactory=lambda g, p: _NullWriter(),
                      hasher=lambda p: defer.succeed("SHA"), sessionIds=lambda: 42)


def _serve(controller, transport):
    """
    A server-side control protocol of C{controller} on C{transport}.
    """
    proto = ControlFactory(controller, ["127.0.0.0/8"]).buildProtocol(None)
    proto.makeConnection(transport)
    return proto


def _stranger():
    return StringTransport(peerAddress=IPv4Address("TCP", STRANGER, 40000))


def _box(command, tag=None, **kw):
    """
    The wire form of an AMP command box (values as bytes).
    """
    box = amp.AmpBox(_command=command, **kw)
    if tag is not None:
        box[b"_ask"] = tag
    return box.serialize()


def _answers(transport):
    return amp.parseString(transport.value())


def _pending(transport):
    """
    The bytes a TCP transport (L{FileDescriptor}) holds that the kernel
    has not taken.
    """
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def _bomb():
    """
    65 KB of zlib that inflate to 33 million one-byte ranges (the range
    bomb of issue 14).
    """
    return b"\x01" + zlib.compress(b"\x01\x01" * 33000000, 9)


_HWM = re.compile(r"VmHWM:\s+(\d+) kB")
_RSS = re.compile(r"VmRSS:\s+(\d+) kB")


class PeakMemory:
    """
    The growth of the process's peak RSS over a block of code, in MB.
    """

    def __init__(self, case):
        try:
            with open("/proc/self/status") as f:
                f.read()
        except OSError:
            raise case.skipTest("no /proc/self/status")
        self.case = case

    def _read(self, pattern):
        with open("/proc/self/status") as f:
            return int(pattern.search(f.read()).group(1)) / 1024.0

    def __enter__(self):
        try:
            # reset the peak to the current RSS (Linux 4.0 and later)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.reset = True
        except OSError:
            self.reset = False
        self.before = self._read(_RSS) if self.reset else self._read(_HWM)
        self.cpu = time.process_time()
        return self

    def __exit__(self, *exc):
        self.seconds = time.process_time() - self.cpu
        self.grown = self._read(_HWM) - self.before
        return False


class LogCapture:
    """
    Every event logged while it is on.
    """

    def __init__(self, case):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        case.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def critical(self):
        return [e for e in self.events
                if e.get("log_level") == LogLevel.critical or "log_failure" in e]

    def lines(self, text):
        return [e for e in self.events if text in (e.get("log_format") or "")]


class RangeBombTests(SynchronousTestCase):
    """
    A range list is not expanded beyond the limits of its command.
    """

    def setUp(self):
        self.controller = _controller(_image(self, 4 << 20))
        self.session = self.successResultOf(self.controller.startSession("img",
                                                                          minReceivers=1))

    def test_bombFromStranger(self):
        """
        If a peer that never registered sends a 65 KB ReportMissing whose
        ranges inflate to 33 million, it is refused (C{NOT_REGISTERED})
        before anything is decoded: the peak RSS grows by less than 50 MB
        and it takes well under a second (before: 4.5 GB and 15 s).
        """
        bomb = _bomb()
        self.assertLess(len(bomb), 65535)
        transport = _stranger()
        proto = _serve(self.controller, transport)
        data = _box(b"ReportMissing", b"1", session=b"42", round=b"1", ranges=bomb)
        with PeakMemory(self) as used:
            proto.dataReceived(data)
        [answer] = _answers(transport)
        self.assertEqual(answer[b"_error_code"], b"NOT_REGISTERED")
        self.assertLess(used.grown, 50, "peak RSS grew by %.0f MB" % (used.grown,))
        self.assertLess(used.seconds, 0.5, "took %.2f s" % (used.seconds,))
        self.assertIsNone(proto.dropped)

    def test_bombFromReceiver(self):
        """
        If a registered receiver sends the same report for the current
        round, at most C{max_report_ranges} ranges are decoded and kept (the
        last running to the end of the image): the peak RSS grows by less
        than 50 MB, well under a second.
        """
        transport = _stranger()
        proto = _serve(self.controller, transport)
        proto.dataReceived(_box(b"Register", b"1", clientId=b"r1", address=b"x"))
        self.assertEqual(self.session.round, 1)
        member = self.session.members["r1"]
        data = _box(b"ReportMissing", b"2", session=b"42", round=b"1", ranges=_bomb())
        with PeakMemory(self) as used:
            proto.dataReceived(data)
        answers = _answers(transport)
        self.assertNotIn(b"_error_code", answers[-1])
        self.assertLess(used.grown, 50, "peak RSS grew by %.0f MB" % (used.grown,))
        self.assertLess(used.seconds, 0.5, "took %.2f s" % (used.seconds,))
        cap = self.controller.config["max_report_ranges"]
        self.assertEqual(len(member.missing), cap)
        self.assertTrue(member.capped)
        self.assertEqual(member.missing[-1][1], 4 << 20)
        self.assertEqual(member.missing[:2], [(1, 2), (3, 4)])

    def test_millionRangeReport(self):
        """
        If a registered receiver reports 1,000,000 ranges, the report is
        cut to C{max_report_ranges} and not kept in its history (the
        scorecard keeps the count): the peak RSS grows by less than 50 MB.
        """
        transport = _stranger()
        proto = _serve(self.controller, transport)
        proto.dataReceived(_box(b"Register", b"1", clientId=b"r1", address=b"x"))
        member = self.session.members["r1"]
        # [(1, 2), (3, 4), ... (1999999, 2000000)]
        wire = b"\x01" + zlib.compress(b"\x01\x01" * 1000000)
        data = _box(b"ReportMissing", b"2", session=b"42", round=b"1", ranges=wire)
        with PeakMemory(self) as used:
            proto.dataReceived(data)
            card = self.controller.status(42, detail=True)["sessions"][0]["members"]["r1"]
        self.assertNotIn(b"_error_code", _answers(transport)[-1])
        self.assertLess(used.grown, 50, "peak RSS grew by %.0f MB" % (used.grown,))
        self.assertLess(used.seconds, 1.0, "took %.2f s" % (used.seconds,))
        self.assertLessEqual(len(member.missing), self.controller.config["max_report_ranges"])
        self.assertEqual(card["ranges_by_round"], {"1": len(member.missing)})
        self.assertTrue(card["report_capped"])
        self.assertEqual(card["reported_ranges"], {})

    def test_announceCounted(self):
        """
        If a receiver is sent a range list of more ranges than its command
        allows, it is refused while it inflates (L{commands.BadRanges}
        through L{commands.checkRanges}), not expanded.
        """
        value = commands.Announce.arguments[5][1].fromString(_bomb())
        self.assertTrue(isinstance(value, commands.MalformedRanges),
                        "decoded %d ranges" % (len(value),))
        self.assertIn("more than", value)
        self.assertRaises(commands.BadRanges, commands.checkRanges, value)
        encoded = R.EncodedRanges(_bomb())
        e = self.assertRaises(commands.BadRanges, commands.checkRanges, encoded, 1 << 40, 1000)
        self.assertIn("more than 1000", str(e))
        e = self.assertRaises(commands.BadRanges, commands.checkRanges, encoded, 1000)
        self.assertIn("more than 500", str(e))


class ReportLimitTests(SynchronousTestCase):
    """
    What a session keeps of its receivers' reports is bounded.
    """

    def test_sessionBudget(self):
        """
        If the latest reports of a session's receivers together would pass
        C{max_session_ranges}, the report that would pass it keeps what is
        left (the last range running to the end of the image); what a
        receiver that completes held is given back.
        """
        controller = _controller(_image(self, 1 << 20),
                                 "  max_report_ranges: 10\n  max_session_ranges: 15\n")
        session = self.successResultOf(controller.startSession("img", minReceivers=2))
        a, b, c = _Connection(), _Connection(), _Connection()
        controller.register(a, "a", "x")
        controller.register(b, "b", "x")
        self.assertEqual(session.round, 1)
        ranges = [(i * 10, i * 10 + 1) for i in range(12)]
        controller.reportMissing(a, 42, 1, ranges)
        self.assertEqual(session.members["a"].missing, ranges[:9] + [(90, 1 << 20)])
        controller.reportMissing(b, 42, 1, R.EncodedRanges(R.toWire(ranges[:8])))
        self.assertEqual(session.members["b"].missing, ranges[:4] + [(40, 1 << 20)])
        self.assertTrue(session.members["b"].capped)
        controller.complete(a, 42, "SHA")
        controller.reportMissing(b, 42, 1, ranges[:8])
        self.assertEqual(session.members["b"].missing, ranges[:8])
        self.assertFalse(session.members["b"].capped)
        self.assertRaises(commands.BadRanges, controller.reportMissing, b, 42, 1,
                          R.EncodedRanges(R.toWire([(0, (1 << 20) + 1)])))
        self.assertRaises(commands.BadRanges, controller.reportMissing, b, 42, 1,
                          R.EncodedRanges(b"\x01garbage"))
        self.assertRaises(commands.NotRegistered, controller.reportMissing, c, 42, 1,
                          R.EncodedRanges(_bomb()))


class BoxLimitTests(SynchronousTestCase):
    """
    Boxes are bounded, and nothing a peer sends logs a traceback.
    """

    def setUp(self):
        self.controller = _controller(_image(self, 1 << 20))
        self.log = LogCapture(self)

    def test_unterminatedBox(self):
        """
        If a peer sends key/value pairs that never end a box (500 MB), the
        connection is dropped once C{max_box_bytes} are passed, with one
        line naming the peer, and nothing like 500 MB is held; boxes that
        end within the limit are never dropped, however many.
        """
        transport = _stranger()
        proto = _serve(self.controller, transport)
        most = self.controller.config["max_box_bytes"]
        pad = b"p" * 60000
        for i in range(most // len(pad) + 10):
            proto.dataReceived(_box(b"Progress", session=b"42", round=b"1", position=b"5",
                                    pad=pad))
        self.assertFalse(transport.disconnecting)
        value = b"v" * 65535
        fed = 0
        with PeakMemory(self) as used:
            for i in range(500 * 1024 * 1024 // len(value)):
                key = b"k%05d" % (i,)
                chunk = b"\x00" + bytes([len(key)]) + key + b"\xff\xff" + value
                proto.dataReceived(chunk)
                fed += len(chunk)
                if transport.disconnecting:
                    break
        self.assertTrue(transport.disconnecting)
        self.assertTrue(transport.disconnected, "not aborted")
        self.assertLessEqual(fed, most + 70000)
        self.assertLess(used.grown, 50)
        self.assertIn("max_box_bytes", proto.dropped)
        [line] = self.log.lines("dropping the control connection")
        self.assertEqual(line["peer"], "%s:40000" % (STRANGER,))
        self.assertEqual(line["log_level"], LogLevel.warn)
        self.assertEqual(self.log.critical(), [])

    def test_malformedBoxes(self):
        """
        If a peer sends boxes that are no command, answers for calls never
        made, too long keys or arguments that do not parse, nothing is
        logged at critical level nor with a traceback; arguments that do not
        parse are answered with C{BAD_REQUEST} and the connection stays.
        """
        transport = _stranger()
        proto = _serve(self.controller, transport)
        proto.dataReceived(_box(b"Register", b"1", clientId=b"r1", address=b"\xff\xfe"))
        proto.dataReceived(_box(b"ReportMissing", b"2", session=b"abc", round=b"1",
                                ranges=b""))
        proto.dataReceived(_box(b"Progress", session=b"x", round=b"1", position=b"5"))
        proto.dataReceived(_box(b"Bogus", b"3"))
        proto.dataReceived(_box(b"Bogus"))
        answers = _answers(transport)
        self.assertEqual([a.get(b"_error_code") for a in answers],
                         [b"BAD_REQUEST", b"BAD_REQUEST", b"UNHANDLED"])
        self.assertIsNone(proto.dropped)
        self.assertEqual(self.log.critical(), [])
        self.assertTrue(self.log.lines("malformed"))
        for data in (amp.AmpBox(stray=b"1").serialize(),
                     amp.AmpBox(_answer=b"99").serialize(),
                     amp.AmpBox(_error=b"98").serialize(),
                     b"\x01\x00" + b"k" * 256):
            transport = _stranger()
            proto = _serve(self.controller, transport)
            proto.dataReceived(data)
            self.assertTrue(transport.disconnecting, data[:20])
            self.assertIsNotNone(proto.dropped)
        self.assertEqual(self.log.critical(), [])
        self.assertEqual(len(self.log.lines("dropping the control connection")), 4)


class _StuckTransport(FileDescriptor):
    """
    Twisted's own write buffering (L{FileDescriptor}) over a socket whose
    peer never reads: the kernel takes nothing (or everything, C{reading}).
    """

    def __init__(self, reading=False):
        FileDescriptor.__init__(self, MemoryReactor())
        self.connected = 1
        self.reading = reading
        self.aborted = False

    def writeSomeData(self, data):
        return len(data) if self.reading else 0

    def abortConnection(self):
        self.aborted = True
        self.connected = 0

    def getPeer(self):
        return IPv4Address("TCP", STRANGER, 40001)

    def getHost(self):
        return IPv4Address("TCP", "127.0.0.1", 7010)


class NonReadingPeerTests(SynchronousTestCase):
    """
    A peer that does not read is dropped, not buffered.
    """

    def setUp(self):
        self.controller = _controller(_image(self, 1 << 30),
                                      "  max_write_buffer: 1048576\n")
        self.session = self.successResultOf(self.controller.startSession(
            "img", minReceivers=5, maxWait=600))
        rng = random.Random(7)
        offsets = sorted(rng.sample(range(0, 1 << 29), 50000))
        self.big = [(o * 2, o * 2 + 1) for o in offsets]
        self.log = LogCapture(self)

    def pushes(self, transport, proto, count):
        """
        Register four ids, then push C{count} announcements of 50,000
        ranges to each (as rounds would); return the most bytes the
        connection held.
        """
        for i in range(4):
            proto.dataReceived(_box(b"Register", b"%d" % (i,), clientId=b"r%d" % (i,),
                                    address=b"x"))
        self.session.roundRanges = self.big
        most = 0
        for _ in range(count):
            for i in range(4):
                member = self.session.members["r%d" % (i,)]
                self.session._push(member, commands.Announce, **self.session._announcement())
                most = max(most, _pending(transport))
            transport.doWrite()
        return most

    def test_dropped(self):
        """
        If a peer registers ids and never reads, it is dropped once more
        than C{max_write_buffer} bytes wait for it (at most one box more is
        held), with one line naming it; a peer that reads the same
        announcements is kept.
        """
        reader = _StuckTransport(reading=True)
        readerProto = _serve(self.controller, reader)
        self.pushes(reader, readerProto, 50)
        self.assertFalse(reader.aborted)
        self.assertIsNone(readerProto.dropped)
        # the same ids register again, on a connection that does not read
        self.controller.connectionLost(readerProto)
        transport = _StuckTransport()
        proto = _serve(self.controller, transport)
        box = len(R.toWire(self.big)) + 4096  # with its keys and the other values
        most = self.pushes(transport, proto, 50)
        self.assertTrue(transport.aborted)
        self.assertIn("does not read", proto.dropped)
        self.assertLessEqual(most, (1 << 20) + box + 1000)
        [line] = self.log.lines("dropping the control connection")
        self.assertEqual(line["peer"], "%s:40001" % (STRANGER,))
        # what is pushed after the drop is not buffered
        self.assertLessEqual(_pending(transport), most)


class _CountingMembers(dict):
    """
    A session's member dictionary that counts the passes over it.
    """

    scans = 0

    def values(self):
        self.scans += 1
        return dict.values(self)

    def items(self):
        self.scans += 1
        return dict.items(self)

    def __iter__(self):
        self.scans += 1
        return dict.__iter__(self)


class _Connection:
    def callRemote(self, command, **kw):
        return defer.succeed({})


class RegistrationTests(SynchronousTestCase):
    """
    Registering and losing receivers does not go over every member.
    """

    def setUp(self):
        self.root = _image(self, 1 << 20)

    def test_registerFlood(self):
        """
        If one connection sends 50,000 Register boxes with new ids, the
        ids beyond C{max_ids_per_connection} are refused (C{BAD_REQUEST},
        one log line), and the whole batch plus the disconnection takes a
        few seconds at most (before: minutes, then 14.5 minutes for the
        disconnection).
        """
        controller = _controller(self.root)
        session = self.successResultOf(controller.startSession("img", minReceivers=100,
                                                               maxWait=600))
        log = LogCapture(self)
        transport = _stranger()
        proto = _serve(controller, transport)
        started = time.process_time()
        for batch in range(50):
            proto.dataReceived(b"".join(
                _box(b"Register", b"%d" % (i,), clientId=b"id%d" % (i,), address=b"x")
                for i in range(batch * 1000, batch * 1000 + 1000)))
            spent = time.process_time() - started
            self.assertLess(spent, 30, "%d registrations took %.1f s" % (
                (batch + 1) * 1000, spent))
        proto.connectionLost(Failure(ConnectionDone()))
        spent = time.process_time() - started
        self.assertLess(spent, 30, "took %.1f s" % (spent,))
        self.assertEqual(sorted(session.members), ["id0", "id1", "id2", "id3"])
        answers = _answers(transport)
        self.assertEqual(len(answers), 50000)
        self.assertEqual(sum(1 for a in answers if a.get(b"_error_code") == b"BAD_REQUEST"),
                         50000 - 4)
        self.assertEqual(len(log.lines("registration refused")), 1)
        self.assertEqual(controller.clients, {})
        self.assertFalse(any(m.connected for m in session.members.values()))

    def _enrollAndLeave(self, count):
        """
        Register C{count} receivers, four per connection, in a waiting
        session, then lose every connection; return the passes over the
        members and the process time.
        """
        controller = _controller(self.root, "  max_members: %d\n  max_receivers: %d\n" % (
            count, count))
        session = self.successResultOf(controller.startSession(
            "img", minReceivers=count + 1, maxWait=600))
        session.members = _CountingMembers(session.members)
        connections = [_Connection() for _ in range(count // 4)]
        started = time.process_time()
        for i in range(count):
            controller.register(connections[i // 4], "r%d" % (i,), "x")
        for c in connections:
            controller.connectionLost(c)
        spent = time.process_time() - started
        scans = session.members.scans
        self.assertEqual(len(session.members), count)
        self.assertFalse(any(m.connected for m in dict.values(session.members)))
        return scans, spent

    def test_membershipNotQuadratic(self):
        """
        If 5,000 and then 20,000 receivers enroll and disconnect, no
        enrollment or disconnection goes over the members (a few passes in
        all), and the time grows about linearly (x4 members: well under
        x16).
        """
        scans, small = self._enrollAndLeave(5000)
        self.assertLessEqual(scans, 2)
        scans, large = self._enrollAndLeave(20000)
        self.assertLessEqual(scans, 2)
        self.assertLess(large, max(small, 0.05) * 10,
                        "5,000: %.2f s, 20,000: %.2f s" % (small, large))

    def test_sessionFull(self):
        """
        If a session has C{max_members} receivers, a new one is refused
        (C{BAD_REQUEST}); one that was enrolled comes back.
        """
        controller = _controller(self.root, "  max_members: 2\n")
        self.successResultOf(controller.startSession("img", minReceivers=2, maxWait=600))
        a, b, c = _Connection(), _Connection(), _Connection()
        controller.register(a, "a", "x")
        controller.register(b, "b", "x")
        self.assertRaises(commands.BadRequest, controller.register, c, "c", "x")
        controller.connectionLost(a)
        controller.register(c, "a", "x")
        self.assertIs(controller.sessions[42].members["a"].connection, c)

    def test_receiversBounded(self):
        """
        If C{max_receivers} are registered, a new id is refused.
        """
        controller = _controller(self.root, "  max_receivers: 2\n")
        controller.register(_Connection(), "a", "x")
        controller.register(_Connection(), "b", "x")
        self.assertRaises(commands.BadRequest, controller.register, _Connection(), "c", "x")

    def test_flowGateLooksAtSlowest(self):
        """
        The flow gate of a round with 5,000 receivers looks at a few of
        them per batch, not all.
        """
        from provisioner.imagecast.flow import FlowWindow
        checked = []

        class Counted(Member):
            def inCurrentGroup(self):
                checked.append(self)
                return Member.inCurrentGroup(self)

        clock = task.Clock()
        members = []
        for i in range(5000):
            m = Counted("r%d" % (i,), "x", _Connection(), 0)
            m.progress = (1, 1000 + i, 0)
            members.append(m)
        flow = FlowWindow(clock, members, 1, [(0, 1 << 20)], 100, 2.0)
        for end in range(1000, 1100):
            self.assertTrue(flow.gate(end))
        self.assertFalse(flow.gate(1200))
        self.assertLess(len(checked), 200)
        members[0].progress = (1, 5000, 0)
        flow.touch(members[0])
        self.assertTrue(flow.gate(1101))
        self.assertFalse(flow.gate(1102))


class LoopbackTests(TestCase):
    """
    The service on 127.0.0.1: a peer that registers and never reads, on a
    real socket, is dropped before Twisted holds more than
    C{max_write_buffer} for it (the kernel's buffers fill first; only a
    real connection shows when Twisted's own buffer starts to grow).
    """

    def setUp(self):
        self.root = _image(self, 1 << 20)

    def _quiet(self, session):
        # the waiting session's timers and descriptor (it never starts)
        if session._periodic is not None and session._periodic.active():
            session._periodic.cancel()
        for entry in session._waiters:
            if entry[2] is not None and entry[2].active():
                entry[2].cancel()
        if session._fd is not None:
            os.close(session._fd)
            session._fd = None

    @defer.inlineCallbacks
    def test_nonReaderDropped(self):
        """
        If a peer registers on a real connection and never reads, it is
        dropped once Twisted holds more than C{max_write_buffer} bytes for
        it, after the kernel's buffers filled.
        """
        from twisted.internet import reactor
        config = loadConfig(text=(
            "imagecast:\n  enabled: true\n  authentication: none\n  root: %s\n  port: 0\n"
            "  max_write_buffer: 262144\n  min_receivers: 5\n  max_wait: 600\n" % (
                self.root,)))
        svc = makeService(Appliance(config, reactor))
        svc.privilegedStartService()
        svc.startService()
        self.addCleanup(svc.stopService)
        port = yield svc.server._listening
        session = yield svc.controller.startSession("img")
        self.addCleanup(self._quiet, session)
        log = LogCapture(self)
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(client.close)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", port.getHost().port))
        client.sendall(_box(b"Register", b"1", clientId=b"slow", address=b"x"))
        deadline = time.monotonic() + 10
        while "slow" not in session.members and time.monotonic() < deadline:
            yield task.deferLater(reactor, 0.01, lambda: None)
        member = session.members["slow"]
        proto = member.connection
        rng = random.Random(11)
        session.roundRanges = [(o * 2, o * 2 + 1)
                               for o in sorted(rng.sample(range(1 << 28), 50000))]
        box = len(R.toWire(session.roundRanges)) + 4096
        pushed = most = 0
        while proto.dropped is None and pushed < 64 << 20 and time.monotonic() < deadline:
            session._push(member, commands.Announce, **session._announcement())
            pushed += box
            most = max(most, _pending(proto.transport))
            yield task.deferLater(reactor, 0.001, lambda: None)
        self.assertIsNotNone(proto.dropped, "not dropped after %d bytes" % (pushed,))
        self.assertIn("does not read", proto.dropped)
        self.assertLessEqual(most, 262144 + box + 1000)
        # it took more than the limit: the kernel held the rest
        self.assertGreater(pushed, 262144)
        while member.connected and time.monotonic() < deadline:
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.assertFalse(member.connected)
        self.assertEqual(len(log.lines("dropping the control connection")), 1)
