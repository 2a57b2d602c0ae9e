"""
Tests for L{provisioner.tftp.session}: windows, go-back-N, no Sorcerer's
Apprentice, timeouts with backoff, retry limit, block-number rollover,
dally, wrong TID, vanished clients. Deterministic: L{task.Clock} and a fake
UDP transport (L{tests.fakes.FakeDatagramPort}); no sockets, no real time.
"""

import array

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from provisioner.files import BytesSource
from provisioner.tftp import wire
from provisioner.tftp.negotiate import Limits, Negotiated, negotiate
from provisioner.tftp.session import ReadSession
from provisioner.tftp.transfer import NetasciiSource
from provisioner.tftp.udp import WindowSender, gsoAvailable
from provisioner.tftp.window import FixedWindow, IWindowPolicy
from tests.fakes import FakeDatagramPort

PEER = ("127.0.0.1", 40000)


def pattern(n):
    """
    C{n} bytes in which every 4-byte word says its own offset: a block out of
    order is noticed.
    """
    words = (n + 3) // 4
    return array.array("I", range(words)).tobytes()[:n]


def start(data, blksize=512, windowsize=1, oack=False, timeout=1.0, retries=3, policy=None,
          extension=None, netascii=False, dally=1.0, clock=None, source=None, timeoutMin=None,
          clientTimeout=None):
    """
    Start a session on a fake transport.

    @return: C{(session, transport, clock, ended)} where C{ended} collects
        the stats.
    """
    negotiated = Negotiated()
    negotiated.blksize = blksize
    negotiated.windowsize = windowsize
    if oack:
        negotiated.oack = [("blksize", str(blksize))]
    if clientTimeout is not None:
        negotiated.timeout = clientTimeout
    if policy is not None:
        negotiated.policyFactory = lambda accepted: policy
        negotiated.extension = extension
    clock = clock or task.Clock()
    ended = []
    session = ReadSession(source or BytesSource(data), negotiated, PEER, clock,
                          timeout=timeout, retries=retries, onEnd=ended.append, path="f",
                          netascii=netascii, dally=dally, timeoutMin=timeoutMin)
    transport = FakeDatagramPort(session)
    session.makeConnection(transport)
    return session, transport, clock, ended


def ack(session, block, addr=PEER, extra=b""):
    session.datagramReceived(wire.encodeAck(block, extra), addr)


def dataBlocks(transport):
    """
    The 16-bit block numbers of the DATA written since the last call.
    """
    return [p.block for p, a in transport.packets() if isinstance(p, wire.Data)]


class LockstepTests(SynchronousTestCase):
    """
    RFC 1350 transfers (window 1).
    """

    def test_short(self):
        """
        If the file is shorter than a block, one short DATA goes out and the
        ACK of it completes the transfer.
        """
        session, transport, clock, ended = start(b"hello")
        [(packet, addr)] = transport.packets()
        self.assertEqual((packet, addr), (wire.Data(1, b"hello"), PEER))
        ack(session, 1)
        self.assertEqual(ended[0].outcome, "complete")
        self.assertEqual(ended[0].bytes, 5)

    def test_exactMultiple(self):
        """
        If the size is a multiple of blksize, the transfer ends with an
        empty DATA.
        """
        data = pattern(1024)
        session, transport, clock, ended = start(data)
        self.assertEqual(transport.packets()[0][0], wire.Data(1, data[:512]))
        ack(session, 1)
        self.assertEqual(transport.packets()[0][0], wire.Data(2, data[512:]))
        ack(session, 2)
        self.assertEqual(transport.packets()[0][0], wire.Data(3, b""))
        self.assertEqual(ended, [])
        ack(session, 3)
        self.assertEqual(ended[0].outcome, "complete")
        self.assertEqual(ended[0].bytes, 1024)

    def test_empty(self):
        """
        If the file is empty, one empty DATA is the whole transfer.
        """
        session, transport, clock, ended = start(b"")
        self.assertEqual(transport.packets()[0][0], wire.Data(1, b""))
        ack(session, 1)
        self.assertEqual(ended[0].outcome, "complete")

    def test_oackThenAck0(self):
        """
        If options were accepted, the OACK goes first and DATA 1 only after
        ACK 0.
        """
        session, transport, clock, ended = start(pattern(100), oack=True)
        [(packet, addr)] = transport.packets()
        self.assertEqual(packet, wire.OptionAck([("blksize", "512")]))
        ack(session, 1)  # not ACK 0: ignored
        self.assertEqual(transport.packets(), [])
        ack(session, 0)
        self.assertEqual(dataBlocks(transport), [1])

    def test_oackRetransmitted(self):
        """
        If ACK 0 does not come, the OACK is sent again on timeout.
        """
        session, transport, clock, ended = start(pattern(100), oack=True, timeout=2)
        transport.packets()
        clock.advance(1.9)
        self.assertEqual(transport.packets(), [])
        clock.advance(0.2)
        self.assertIsInstance(transport.packets()[0][0], wire.OptionAck)

    def test_probe(self):
        """
        If the client answers the OACK with an ERROR (a tsize probe), the
        session ends as a probe and closes its port.
        """
        session, transport, clock, ended = start(pattern(100), oack=True)
        session.datagramReceived(wire.Error(8, "tsize only").to_wire(), PEER)
        self.assertEqual(ended[0].outcome, "probe")
        self.assertFalse(transport.listening)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_clientAbort(self):
        """
        If the client sends an ERROR during the transfer, the session ends as
        aborted without answering it.
        """
        session, transport, clock, ended = start(pattern(5000))
        transport.packets()
        session.datagramReceived(wire.Error(0, "bored").to_wire(), PEER)
        self.assertEqual(ended[0].outcome, "aborted")
        self.assertEqual(transport.packets(), [])
        self.assertFalse(transport.listening)

    def test_netascii(self):
        """
        If the mode is netascii, LF goes out as CR LF and CR as CR NUL, and
        the converted length decides where the transfer ends.
        """
        session, transport, clock, ended = start(b"a\nb\rc", netascii=True)
        self.assertEqual(transport.packets()[0][0], wire.Data(1, b"a\r\nb\r\x00c"))
        ack(session, 1)
        self.assertEqual(ended[0].outcome, "complete")

    def test_netasciiAcrossBlocks(self):
        """
        If the converted text spans blocks, each block is the converted
        stream cut at blksize.
        """
        text = b"line\n" * 300
        converted = text.replace(b"\n", b"\r\n")
        session, transport, clock, ended = start(text, netascii=True)
        got = b""
        block = 1
        while not ended:
            packets = transport.packets()
            got += packets[-1][0].payload
            ack(session, block)
            block += 1
        self.assertEqual(got, converted)

    def test_dally(self):
        """
        After the last ACK, the port stays open for the dally time, absorbs
        late duplicates without answering, and then closes.
        """
        session, transport, clock, ended = start(b"x", timeout=2, dally=1.0)
        transport.packets()
        ack(session, 1)
        self.assertTrue(transport.listening)
        ack(session, 1)
        self.assertEqual(transport.packets(), [])
        clock.advance(1.0)
        self.assertFalse(transport.listening)
        self.assertEqual(clock.getDelayedCalls(), [])


class WindowTests(SynchronousTestCase):
    """
    RFC 7440 windows.
    """

    def test_windows(self):
        """
        If the window is 4, four blocks go out before the session waits; the
        ACK of the last one starts the next window.
        """
        data = pattern(512 * 10 + 7)
        session, transport, clock, ended = start(data, windowsize=4, oack=True)
        transport.packets()
        ack(session, 0)
        self.assertEqual(dataBlocks(transport), [1, 2, 3, 4])
        ack(session, 4)
        self.assertEqual(dataBlocks(transport), [5, 6, 7, 8])
        ack(session, 8)
        self.assertEqual(dataBlocks(transport), [9, 10, 11])
        ack(session, 11)
        self.assertEqual(ended[0].outcome, "complete")
        self.assertEqual(ended[0].retransmits, 0)

    def test_goBackN(self):
        """
        If an ACK acknowledges only part of the window, the next window
        starts right after it.
        """
        session, transport, clock, ended = start(pattern(512 * 20), windowsize=4, oack=True)
        transport.packets()
        ack(session, 0)
        dataBlocks(transport)
        ack(session, 2)
        self.assertEqual(dataBlocks(transport), [3, 4, 5, 6])
        self.assertEqual(session.stats.losses, 1)
        self.assertEqual(session.stats.retransmits, 2)

    def test_noSorcerersApprentice(self):
        """
        If an ACK is repeated, nothing is sent: only the timer resends.
        """
        session, transport, clock, ended = start(pattern(512 * 20), windowsize=4, oack=True)
        transport.packets()
        ack(session, 0)
        dataBlocks(transport)
        ack(session, 4)
        self.assertEqual(dataBlocks(transport), [5, 6, 7, 8])
        for i in range(5):
            ack(session, 4)
        self.assertEqual(transport.packets(), [])
        self.assertEqual(session.stats.duplicates, 5)

    def test_noStall(self):
        """
        If a block of the window is lost and the client's ACK for it never
        comes, the timer resends from the block after the last ACK (the
        tftpy stall does not happen).
        """
        session, transport, clock, ended = start(pattern(512 * 20), windowsize=4, oack=True,
                                                 timeout=1)
        transport.packets()
        ack(session, 0)
        dataBlocks(transport)
        ack(session, 4)
        dataBlocks(transport)
        ack(session, 4)  # duplicate: the client saw a gap at 5
        self.assertEqual(transport.packets(), [])
        clock.advance(1.0)
        self.assertEqual(dataBlocks(transport), [5, 6, 7, 8])

    def test_backoff(self):
        """
        If timeouts follow each other, each wait is twice the previous one.
        """
        session, transport, clock, ended = start(pattern(5000), timeout=1, retries=5)
        transport.packets()
        times = []
        for i in range(40):
            clock.advance(0.5)
            if transport.packets():
                times.append(clock.seconds())
        self.assertEqual(times[:4], [1.0, 3.0, 7.0, 15.0])

    def _fastClient(self, **kw):
        """
        A window-4 transfer whose first three windows are each ACKed 10 ms
        after they went out.
        """
        session, transport, clock, ended = start(pattern(512 * 40), windowsize=4, oack=True,
                                                 timeout=1.0, **kw)
        ack(session, 0)
        for block in (4, 8, 12):
            clock.advance(0.01)
            ack(session, block)
        transport.packets()
        return session, transport, clock

    def test_adaptiveTimeout(self):
        """
        If the client did not negotiate a timeout, the retransmission timer
        follows the measured round trip, down to C{timeoutMin}: a window
        whose ACK is lost is resent after 0.2 s, not the configured 1 s.
        """
        session, transport, clock = self._fastClient(timeoutMin=0.2)
        self.assertAlmostEqual(session.srtt, 0.01)
        self.assertEqual(session.rto, 0.2)
        clock.advance(0.19)
        self.assertEqual(dataBlocks(transport), [])
        clock.advance(0.01)
        self.assertEqual(dataBlocks(transport), [13, 14, 15, 16])

    def test_adaptiveBacksOff(self):
        """
        If the adapted timer expires again and again, it doubles up to the
        configured timeout without using retries; from then on the usual
        backoff and retry limit apply, so a peer that went quiet is kept no
        shorter than with the fixed timeout.
        """
        session, transport, clock = self._fastClient(timeoutMin=0.2)
        sent = []
        for i in range(400):
            clock.advance(0.1)
            if dataBlocks(transport):
                sent.append(round(clock.seconds() - 0.03, 2))
        self.assertEqual(sent[:4], [0.2, 0.6, 1.4, 2.4])
        # three early resends (0.2, 0.4, 0.8 s) then the three retries
        self.assertEqual(len(sent), 3 + 3)
        self.assertEqual(session.stats.outcome, "timeout")

    def test_karn(self):
        """
        If an ACK answers a window that was sent more than once, its round
        trip is not measured (Karn's rule).
        """
        session, transport, clock, ended = start(pattern(512 * 40), windowsize=4, oack=True,
                                                 timeout=1.0, timeoutMin=0.2)
        ack(session, 0)
        clock.advance(1.0)
        clock.advance(0.5)
        ack(session, 4)
        self.assertIsNone(session.srtt)
        self.assertEqual(session.rto, 1.0)

    def test_negotiatedTimeoutFixed(self):
        """
        If the client negotiated a timeout, it is kept whatever the round
        trip.
        """
        session, transport, clock = self._fastClient(timeoutMin=0.2, clientTimeout=1)
        self.assertEqual(session.rto, 1.0)
        clock.advance(0.9)
        self.assertEqual(dataBlocks(transport), [])
        clock.advance(0.1)
        self.assertEqual(dataBlocks(transport), [13, 14, 15, 16])

    def test_backoffResets(self):
        """
        If an ACK makes progress, the next timeout is the first one again.
        """
        session, transport, clock, ended = start(pattern(5000), timeout=1, retries=5)
        clock.advance(1)
        clock.advance(2)
        transport.packets()
        ack(session, 1)
        transport.packets()
        clock.advance(1)
        self.assertEqual(dataBlocks(transport), [2])

    def test_retryLimit(self):
        """
        If the client never answers, the session gives up after C{retries}
        retransmissions, closes its port and leaves no timer behind; an
        address that never answered got at most C{retries + 1} datagrams.
        """
        session, transport, clock, ended = start(pattern(512 * 100), windowsize=16,
                                                 retries=3, timeout=1)
        clock.pump([1] * 100)
        self.assertEqual(ended[0].outcome, "timeout")
        self.assertFalse(transport.listening)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(len(transport.written), 4)

    def test_vanishedMidTransfer(self):
        """
        If the client vanishes mid-transfer, the session is gone after its
        retries, port closed, timers cancelled, source closed.
        """
        closed = []

        class Source(BytesSource):
            def close(self):
                closed.append(True)

        session, transport, clock, ended = start(
            None, windowsize=8, oack=True, retries=2, timeout=1,
            source=Source(pattern(512 * 100)))
        ack(session, 0)
        ack(session, 8)
        clock.pump([1] * 100)
        self.assertEqual(ended[0].outcome, "timeout")
        self.assertEqual(ended[0].bytes, 8 * 512)
        self.assertFalse(transport.listening)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(closed, [True])

    def test_wrongTID(self):
        """
        If a datagram comes from another address or port, that peer gets
        ERROR 5 and the transfer goes on.
        """
        session, transport, clock, ended = start(pattern(2000))
        transport.packets()
        stranger = ("127.0.0.1", 40001)
        ack(session, 1, addr=stranger)
        [(packet, addr)] = transport.packets()
        self.assertEqual((packet.code, addr), (wire.ERR_UNKNOWN_TID, stranger))
        ack(session, 1)
        self.assertEqual(dataBlocks(transport), [2])

    def test_wrongTIDError(self):
        """
        If an ERROR comes from a wrong TID, it is not answered and the
        session goes on.
        """
        session, transport, clock, ended = start(pattern(2000))
        transport.packets()
        session.datagramReceived(wire.Error(0, "x").to_wire(), ("127.0.0.1", 1))
        self.assertEqual(transport.packets(), [])
        self.assertEqual(ended, [])

    def test_garbage(self):
        """
        If the peer sends garbage or other opcodes to the session port, the
        session ignores them.
        """
        session, transport, clock, ended = start(pattern(2000))
        transport.packets()
        for junk in [b"", b"\x00", b"\x00\x03\x00\x01abc", b"\x00\x09", b"\xff" * 10,
                     wire.ReadRequest(b"f").to_wire()]:
            session.datagramReceived(junk, PEER)
        self.assertEqual(transport.packets(), [])
        self.assertEqual(ended, [])

    def test_staleAck(self):
        """
        If an ACK is for a block never sent, it is ignored.
        """
        session, transport, clock, ended = start(pattern(512 * 20), windowsize=4, oack=True)
        ack(session, 0)
        transport.packets()
        ack(session, 9)
        self.assertEqual(transport.packets(), [])
        self.assertEqual(session.acked, 0)

    def test_firstWindowOfUnansweredPeer(self):
        """
        If the transfer starts without an OACK, the first DATA is a single
        block whatever the window policy says, until the client answers.
        """
        session, transport, clock, ended = start(pattern(512 * 20), policy=FixedWindow(8))
        self.assertEqual(dataBlocks(transport), [1])
        clock.advance(1)
        self.assertEqual(dataBlocks(transport), [1])
        ack(session, 1)
        self.assertEqual(dataBlocks(transport), [2, 3, 4, 5, 6, 7, 8, 9])


def runToEnd(session, transport, windowsize, drop=()):
    """
    Act as a well-behaved RFC 7440 client: ACK the last block of each
    window (or the last in-order block on a gap), dropping the 32-bit
    blocks in C{drop} once. Returns the bytes received.
    """
    received = []
    expected = 1
    dropped = set()
    got = 0
    for _ in range(10 ** 7):
        if session.done:
            break
        packets = transport.packets()
        if not packets:
            session.clock.advance(session.timeout * session.backoff)
            continue
        gap = False
        for packet, addr in packets:
            if not isinstance(packet, wire.Data):
                continue
            if packet.block != expected & 0xFFFF or gap:
                gap = True
                continue
            if expected in drop and expected not in dropped:
                dropped.add(expected)
                gap = True
                continue
            received.append(packet.payload)
            got += 1
            last = len(packet.payload) < session.blksize
            if got % windowsize == 0 or last:
                ack(session, expected)
            expected += 1
            if last:
                break
        if gap:
            ack(session, expected - 1)
    return b"".join(received)


class RolloverTests(SynchronousTestCase):
    """
    Block numbers past 65535: 32-bit inside, wrapping to 0 on the wire.
    """

    size = 512 * 70000 + 123

    def test_lockstep(self):
        """
        If a file has more than 65535 blocks of 512 bytes, sent one block at a
        time, block 65536 goes out as 0 and the file arrives whole.
        """
        data = pattern(self.size)
        session, transport, clock, ended = start(data)
        self.assertEqual(runToEnd(session, transport, 1), data)
        self.assertEqual(ended[0].outcome, "complete")
        self.assertEqual(session.acked, 70001)

    def test_windowed(self):
        """
        If the file has more than 65535 blocks and the window is 16 (a window
        straddles the wrap), it arrives whole.
        """
        data = pattern(self.size)
        session, transport, clock, ended = start(data, windowsize=16, oack=True)
        transport.packets()
        ack(session, 0)
        self.assertEqual(runToEnd(session, transport, 16), data)
        self.assertEqual(ended[0].outcome, "complete")

    def test_lossAcrossWrap(self):
        """
        If blocks are lost just before and just after the wrap, go-back-N
        from the 16-bit ACK lands on the right 32-bit block.
        """
        data = pattern(self.size)
        session, transport, clock, ended = start(data, windowsize=16, oack=True)
        transport.packets()
        ack(session, 0)
        got = runToEnd(session, transport, 16, drop={65530, 65536, 65537, 65541})
        self.assertEqual(got, data)
        self.assertGreater(session.stats.losses, 0)

    def test_wireNumbers(self):
        """
        If the session passes block 65535, the next DATA on the wire is
        block 0, then 1.
        """
        session, transport, clock, ended = start(pattern(512 * 65540), windowsize=4,
                                                 oack=True)
        transport.packets()
        session.waitingOACK = False
        session.answered = True
        session.acked = session.sent = 65533
        session._sendWindow()
        self.assertEqual(dataBlocks(transport), [65534, 65535, 0, 1])
        ack(session, 0)
        self.assertEqual(session.acked, 65536)
        self.assertEqual(session.stats.losses, 1)
        self.assertEqual(dataBlocks(transport), [1, 2, 3, 4])


@implementer(IWindowPolicy)
class RecordingPolicy:
    """
    A window policy that records what the session tells it.
    """

    def __init__(self, sizes=(2,), pause=0.0):
        self.sizes = list(sizes)
        self.pause = pause
        self.events = []

    def size(self):
        n = self.sizes[0]
        if len(self.sizes) > 1:
            self.sizes.pop(0)
        self.events.append(("size", n))
        return n

    def delay(self):
        return self.pause

    def onWindowAcked(self, now):
        self.events.append(("acked", now))

    def onLoss(self, now):
        self.events.append(("loss", now))

    def onTimeout(self, now):
        self.events.append(("timeout", now))

    def onAckExtra(self, extra, now):
        self.events.append(("extra", extra))


class PolicyTests(SynchronousTestCase):
    """
    The session and its L{IWindowPolicy}.
    """

    def test_interface(self):
        """
        L{FixedWindow} provides L{IWindowPolicy}.
        """
        self.assertTrue(verifyObject(IWindowPolicy, FixedWindow(4)))
        self.assertTrue(verifyObject(IWindowPolicy, RecordingPolicy()))
        self.assertEqual(FixedWindow(0).size(), 1)
        self.assertEqual(FixedWindow(10 ** 6).size(), 65535)

    def test_sizeAskedEachWindow(self):
        """
        If the policy changes its size, each window has the size asked right
        before it.
        """
        policy = RecordingPolicy(sizes=[2, 3, 1, 5])
        session, transport, clock, ended = start(pattern(512 * 30), oack=True, policy=policy)
        transport.packets()
        ack(session, 0)
        self.assertEqual(dataBlocks(transport), [1, 2])
        ack(session, 2)
        self.assertEqual(dataBlocks(transport), [3, 4, 5])
        ack(session, 5)
        self.assertEqual(dataBlocks(transport), [6])
        ack(session, 6)
        self.assertEqual(dataBlocks(transport), [7, 8, 9, 10, 11])

    def test_events(self):
        """
        If a window is acknowledged, partly acknowledged, or times out, the
        policy hears of it.
        """
        policy = RecordingPolicy(sizes=[4])
        session, transport, clock, ended = start(pattern(512 * 30), oack=True, policy=policy)
        ack(session, 0)
        ack(session, 4)
        ack(session, 6)
        clock.advance(1)
        kinds = [e[0] for e in policy.events if e[0] != "size"]
        self.assertEqual(kinds, ["acked", "loss", "timeout"])

    def test_delay(self):
        """
        If the policy asks for a delay, the next window waits for it.
        """
        policy = RecordingPolicy(sizes=[2], pause=0.25)
        session, transport, clock, ended = start(pattern(512 * 30), oack=True, policy=policy)
        transport.packets()
        ack(session, 0)
        self.assertEqual(dataBlocks(transport), [])
        clock.advance(0.25)
        self.assertEqual(dataBlocks(transport), [1, 2])

    def test_extraOnlyWithExtension(self):
        """
        If an ACK carries trailing bytes, the policy gets them only when an
        extension was negotiated.
        """
        policy = RecordingPolicy(sizes=[2])
        session, transport, clock, ended = start(pattern(512 * 30), oack=True, policy=policy)
        ack(session, 0, extra=b"\x05")
        self.assertNotIn(("extra", b"\x05"), policy.events)
        policy = RecordingPolicy(sizes=[2])
        session, transport, clock, ended = start(pattern(512 * 30), oack=True, policy=policy,
                                                 extension=object())
        ack(session, 0, extra=b"\x05")
        self.assertIn(("extra", b"\x05"), policy.events)


class NetasciiSourceTests(SynchronousTestCase):
    """
    Tests for L{NetasciiSource}.
    """

    def test_chunks(self):
        """
        If the raw data is converted in chunks, a CR or LF on a chunk border
        converts like any other.
        """
        raw = (b"ab\r\ncd\n\r" * 1000)
        source = NetasciiSource(BytesSource(raw))
        source.chunk = 7
        out = b""
        offset = 0
        while True:
            piece = source.read(offset, 100)
            out += piece
            offset += len(piece)
            if len(piece) < 100:
                break
        self.assertEqual(out, raw.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n"))

    def test_noGoingBack(self):
        """
        If a read goes back before the previous one, it is refused.
        """
        source = NetasciiSource(BytesSource(b"x" * 100))
        source.read(50, 10)
        self.assertRaises(ValueError, source.read, 10, 10)


class NegotiatedSessionTests(SynchronousTestCase):
    """
    Sessions built from a real negotiation.
    """

    def test_timeoutOption(self):
        """
        If the client negotiated a timeout, the session waits that long.
        """
        negotiated = negotiate({"timeout": "3"}, Limits())
        clock = task.Clock()
        session = ReadSession(BytesSource(b"x" * 600), negotiated, PEER, clock)
        transport = FakeDatagramPort(session)
        session.makeConnection(transport)
        transport.packets()
        clock.advance(2.9)
        self.assertEqual(transport.packets(), [])
        clock.advance(0.1)
        self.assertEqual(len(transport.packets()), 1)


class GSOChoiceTests(SynchronousTestCase):
    """
    The C{gso} argument of L{ReadSession} reaches its sender.
    """

    def test_gsoOff(self):
        """
        If a session on a real socket is told not to use GSO, its sender
        does not.
        """
        import socket as _socket
        rx = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))
        self.addCleanup(rx.close)
        tx = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
        tx.bind(("127.0.0.1", 0))
        self.addCleanup(tx.close)

        from twisted.internet.interfaces import ISystemHandle

        @implementer(ISystemHandle)
        class Port(FakeDatagramPort):
            def getHandle(self):
                return tx

        for gso in (False, True):
            session = ReadSession(BytesSource(b"x" * 10), Negotiated(), rx.getsockname(),
                                  task.Clock(), gso=gso)
            session.makeConnection(Port(session))
            self.assertIsInstance(session.sender, WindowSender)
            self.assertEqual(session.sender.gso, gso and gsoAvailable() is not False)
            session.cancel()
