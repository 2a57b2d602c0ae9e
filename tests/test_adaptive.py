# -*- test-case-name: tests.test_adaptive -*-
"""
Tests for L{provisioner.tftp.adaptive}: the client's controller of the
client-adjustable window, the server's window policies and the option
extensions.
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from provisioner.files import FileRequest
from provisioner.client import window
from provisioner.tftp import adaptive, adaptivewire
from provisioner.tftp.negotiate import IOptionExtension, Limits, negotiate
from provisioner.tftp.window import IWindowPolicy


class ControllerTests(SynchronousTestCase):
    """
    L{window.AdaptiveController}.
    """

    def test_initial(self):
        """
        If nothing happened yet, the window is the initial one and the trace
        holds it.
        """
        c = window.AdaptiveController(initial=4)
        self.assertEqual(c.window, 4)
        self.assertEqual([x.reason for x in c.trace], ["initial"])
        self.assertIsNone(c.maxSuccessful)

    def test_growByOnePerWindow(self):
        """
        If every window is clean and the period is one window, the window
        grows by exactly one per window, and the maximum successful window
        follows the window just proven.
        """
        c = window.AdaptiveController(initial=4, growWindows=1)
        seen = [c.windowCompleted(now=i) for i in range(1, 6)]
        self.assertEqual(seen, [5, 6, 7, 8, 9])
        self.assertEqual(c.maxSuccessful, 8)
        self.assertEqual([x.reason for x in c.trace[1:]], ["grow"] * 5)

    def test_growAfterNWindows(self):
        """
        If the period is three windows, the window grows only every third
        clean window.
        """
        c = window.AdaptiveController(initial=2, growWindows=3)
        seen = [c.windowCompleted(now=i) for i in range(1, 7)]
        self.assertEqual(seen, [2, 2, 3, 3, 3, 4])

    def test_growAfterTime(self):
        """
        If the period is a time, the window grows once that much time has
        passed without a loss, however many windows went by.
        """
        c = window.AdaptiveController(initial=2, growSeconds=0.1, now=0.0)
        self.assertEqual(c.windowCompleted(0.05), 2)
        self.assertEqual(c.windowCompleted(0.09), 2)
        self.assertEqual(c.windowCompleted(0.10), 3)
        self.assertEqual(c.windowCompleted(0.15), 3)
        self.assertEqual(c.windowCompleted(0.21), 4)

    def test_lossHalves(self):
        """
        If a loss is detected, the window is halved.
        """
        c = window.AdaptiveController(initial=40)
        self.assertEqual(c.lossDetected(1.0), 20)
        self.assertEqual(c.trace[-1].reason, "loss")

    def test_lossHalfPlusN(self):
        """
        If the decrease is configured as WS/2+N, a loss leaves half the
        window plus N.
        """
        c = window.AdaptiveController(initial=40, decrease=3)
        self.assertEqual(c.lossDetected(1.0), 23)

    def test_lossNeverBelowOne(self):
        """
        If the window is 1 and a loss happens, it stays 1.
        """
        c = window.AdaptiveController(initial=1)
        self.assertEqual(c.lossDetected(1.0), 1)
        self.assertEqual(c.lossDetected(2.0), 1)

    def test_lossResetsPeriod(self):
        """
        If a loss happens in the middle of a success period, the period
        starts again: clean windows before the loss do not count.
        """
        c = window.AdaptiveController(initial=8, growWindows=3)
        c.windowCompleted(1)
        c.windowCompleted(2)
        c.lossDetected(3)
        self.assertEqual(c.window, 4)
        self.assertEqual(c.windowCompleted(4), 4)
        self.assertEqual(c.windowCompleted(5), 4)
        self.assertEqual(c.windowCompleted(6), 5)

    def test_lossResetsTimer(self):
        """
        If the period is a time, a loss restarts it.
        """
        c = window.AdaptiveController(initial=8, growSeconds=1.0, now=0.0)
        c.lossDetected(0.9)
        self.assertEqual(c.windowCompleted(1.5), 4)
        self.assertEqual(c.windowCompleted(2.0), 5)

    def test_frozenMaximum(self):
        """
        If a loss follows growth, the maximum successful window is cut by
        20% and frozen: the window grows back to it, never above, and later
        losses and growth do not move it.
        """
        c = window.AdaptiveController(initial=10, growWindows=1)
        for i in range(10):
            c.windowCompleted(i)
        self.assertEqual(c.window, 20)
        self.assertEqual(c.maxSuccessful, 19)
        c.lossDetected(11)
        self.assertTrue(c.frozen)
        self.assertEqual(c.maxSuccessful, 15)  # int(19 * 0.8)
        self.assertEqual(c.window, 10)
        for i in range(12, 40):
            c.windowCompleted(i)
        self.assertEqual(c.window, 15)
        c.lossDetected(41)
        self.assertEqual(c.window, 7)
        self.assertEqual(c.maxSuccessful, 15)
        for i in range(42, 80):
            c.windowCompleted(i)
        self.assertEqual(c.window, 15)
        self.assertEqual(c.trace[-1].maximum, 15)
        self.assertTrue(c.trace[-1].frozen)

    def test_firstLossWithoutGrowth(self):
        """
        If the very first window fails, the maximum is frozen 20% below that
        window.
        """
        c = window.AdaptiveController(initial=20)
        c.lossDetected(0.1)
        self.assertEqual(c.maxSuccessful, 16)
        self.assertEqual(c.window, 10)

    def test_halfPlusNClampedToMaximum(self):
        """
        If WS/2+N would exceed the frozen maximum, the window is the maximum.
        """
        c = window.AdaptiveController(initial=10, decrease=9)
        c.lossDetected(0.1)
        self.assertEqual(c.maxSuccessful, 8)
        self.assertEqual(c.window, 8)

    def test_limit(self):
        """
        If the server announced a maximum, the window never grows above it.
        """
        c = window.AdaptiveController(initial=3, limit=5)
        for i in range(10):
            c.windowCompleted(i)
        self.assertEqual(c.window, 5)

    def test_countered(self):
        """
        If the server countered the initial window, the controller starts
        from the counter-offer and records it.
        """
        c = window.AdaptiveController(initial=32)
        c.accept(16, 0.0)
        self.assertEqual(c.window, 16)
        self.assertEqual(c.trace[-1].reason, "countered")


class WireTests(SynchronousTestCase):
    """
    The trailing ACK bytes and the option value.
    """

    def test_adaptiveExtraRoundTrip(self):
        """
        If a window is encoded as ACK extra bytes, decoding gives it back;
        it is two bytes, big-endian.
        """
        self.assertEqual(adaptivewire.encodeAdaptiveExtra(300), b"\x01\x2c")
        self.assertEqual(adaptivewire.decodeAdaptiveExtra(b"\x01\x2c"), 300)

    def test_adaptiveExtraShortOrZero(self):
        """
        If the extra bytes are fewer than two, or zero, they request nothing;
        bytes after the first two are ignored.
        """
        self.assertIsNone(adaptivewire.decodeAdaptiveExtra(b""))
        self.assertIsNone(adaptivewire.decodeAdaptiveExtra(b"\x05"))
        self.assertIsNone(adaptivewire.decodeAdaptiveExtra(b"\x00\x00"))
        self.assertEqual(adaptivewire.decodeAdaptiveExtra(b"\x00\x07junk"), 7)

    def test_msftExtra(self):
        """
        If a msftwindow window is encoded, it is one byte, capped at 255.
        """
        self.assertEqual(adaptivewire.encodeMsftExtra(16), b"\x10")
        self.assertEqual(adaptivewire.encodeMsftExtra(1000), b"\xff")
        self.assertEqual(adaptivewire.decodeMsftExtra(b"\x10"), 16)
        self.assertIsNone(adaptivewire.decodeMsftExtra(b""))

    def test_optionValue(self):
        """
        If the adaptive option is parsed, C{V} and C{V,MAX} are accepted and
        anything else is L{None}.
        """
        self.assertEqual(adaptivewire.parseAdaptiveOption("1"), (1, None))
        self.assertEqual(adaptivewire.parseAdaptiveOption("1,64"), (1, 64))
        self.assertEqual(adaptivewire.formatAdaptiveOption(1, 64), "1,64")
        for bad in ("", "x", "0", "1,0", "1,70000", "-1"):
            self.assertIsNone(adaptivewire.parseAdaptiveOption(bad), bad)


def _request(**options):
    return FileRequest("boot.img", ("198.18.0.2", 2000), options=options)


class PolicyTests(SynchronousTestCase):
    """
    The server's window policies.
    """

    def test_interfaces(self):
        """
        If the policies are checked against L{IWindowPolicy}, they provide it.
        """
        verifyObject(IWindowPolicy, adaptive.ClientDrivenWindow(4, 64))
        verifyObject(IWindowPolicy, adaptive.PacedWindow(4))

    def test_clientDrivenApplies(self):
        """
        If an ACK carries a requested window, the next window has that size.
        """
        p = adaptive.ClientDrivenWindow(4, 64)
        self.assertEqual(p.size(), 4)
        p.onAckExtra(b"\x00\x09", 1.0)
        self.assertEqual(p.size(), 9)
        self.assertEqual(p.delay(), 0.0)

    def test_clientDrivenClamped(self):
        """
        If the client asks above the maximum, it gets the maximum.
        """
        p = adaptive.ClientDrivenWindow(4, 64)
        p.onAckExtra(b"\x01\x00", 1.0)
        self.assertEqual(p.size(), 64)

    def test_clientDrivenIgnoresGarbage(self):
        """
        If the extra bytes request nothing, the window stays.
        """
        p = adaptive.ClientDrivenWindow(4, 64)
        for extra in (b"", b"\x01", b"\x00\x00"):
            p.onAckExtra(extra, 1.0)
        self.assertEqual(p.size(), 4)

    def test_msftDriven(self):
        """
        If the policy decodes msftwindow bytes, one byte sets the window.
        """
        p = adaptive.ClientDrivenWindow(4, 64, adaptivewire.decodeMsftExtra)
        p.onAckExtra(b"\x20", 1.0)
        self.assertEqual(p.size(), 32)

    def test_pacedSlowsAndRecovers(self):
        """
        If a plain client times out, the pause before windows doubles (up to
        the cap); after clean windows it halves away to none; the window
        itself never changes.
        """
        p = adaptive.PacedWindow(16, step=0.001, maxDelay=0.004, growAfter=2)
        self.assertEqual(p.delay(), 0.0)
        p.onTimeout(1)
        self.assertEqual(p.delay(), 0.001)
        p.onLoss(2)
        self.assertEqual(p.delay(), 0.002)
        p.onTimeout(3)
        p.onTimeout(4)
        self.assertEqual(p.delay(), 0.004)
        self.assertEqual(p.size(), 16)
        for i in range(2):
            p.onWindowAcked(5 + i)
        self.assertEqual(p.delay(), 0.002)
        for i in range(4):
            p.onWindowAcked(7 + i)
        self.assertEqual(p.delay(), 0.0)
        self.assertEqual(p.size(), 16)


class ExtensionTests(SynchronousTestCase):
    """
    The option extensions, through the server's negotiation.
    """

    def test_interfaces(self):
        """
        If the extensions are checked against L{IOptionExtension}, they
        provide it.
        """
        for ext in adaptive.extensionsFromConfig({}):
            verifyObject(IOptionExtension, ext)

    def test_adaptiveNegotiated(self):
        """
        If a request carries C{adaptive 1} and C{windowsize 8}, the OACK
        carries C{windowsize 8} and C{adaptive 1,MAX}, and the policy follows
        the client's ACKs.
        """
        req = _request(adaptive="1", windowsize="8", blksize="1468")
        result = negotiate(req.options, Limits(windowsizeMax=32), request=req,
                           extensions=adaptive.extensionsFromConfig({}))
        oack = dict(result.oack)
        self.assertEqual(oack["adaptive"], "1,32")
        self.assertEqual(oack["windowsize"], "8")
        policy = result.windowPolicy()
        self.assertEqual(policy.size(), 8)
        policy.onAckExtra(adaptivewire.encodeAdaptiveExtra(50), 0)
        self.assertEqual(policy.size(), 32)

    def test_adaptiveConfiguredMaximum(self):
        """
        If C{tftp.adaptive.windowsize_max} is set, it is the maximum
        announced and enforced.
        """
        req = _request(adaptive="1", windowsize="8")
        result = negotiate(req.options, Limits(windowsizeMax=64), request=req,
                           extensions=adaptive.extensionsFromConfig({"windowsize_max": 16}))
        self.assertEqual(dict(result.oack)["adaptive"], "1,16")

    def test_adaptiveMalformed(self):
        """
        If the adaptive option is malformed, it is ignored (a plain RFC 7440
        transfer with the paced policy).
        """
        req = _request(adaptive="banana", windowsize="8")
        result = negotiate(req.options, Limits(), request=req,
                           extensions=adaptive.extensionsFromConfig({}))
        self.assertNotIn("adaptive", dict(result.oack))
        self.assertIsInstance(result.windowPolicy(), adaptive.PacedWindow)

    def test_msftwindow(self):
        """
        If a request carries C{windowsize} and C{msftwindow 31416}, the OACK
        carries C{msftwindow 27182} and one ACK byte sets the next window.
        """
        req = _request(windowsize="4", msftwindow="31416")
        result = negotiate(req.options, Limits(), request=req,
                           extensions=adaptive.extensionsFromConfig({}))
        self.assertEqual(dict(result.oack)["msftwindow"], "27182")
        policy = result.windowPolicy()
        policy.onAckExtra(b"\x10", 0)
        self.assertEqual(policy.size(), 16)

    def test_msftwindowWrongMagic(self):
        """
        If msftwindow carries another value, it is not negotiated.
        """
        req = _request(windowsize="4", msftwindow="1")
        result = negotiate(req.options, Limits(), request=req,
                           extensions=adaptive.extensionsFromConfig({}))
        self.assertNotIn("msftwindow", dict(result.oack))

    def test_plainClientPaced(self):
        """
        If a plain RFC 7440 client asks windowsize 4 (EDK2), it gets the
        paced policy with the negotiated window and nothing extra in the
        OACK.
        """
        req = _request(windowsize="4", blksize="1468")
        result = negotiate(req.options, Limits(), request=req,
                           extensions=adaptive.extensionsFromConfig({}))
        self.assertEqual(sorted(dict(result.oack)), ["blksize", "windowsize"])
        policy = result.windowPolicy()
        self.assertIsInstance(policy, adaptive.PacedWindow)
        self.assertEqual(policy.size(), 4)

    def test_noWindowNoPolicy(self):
        """
        If a client asks no windowsize (iPXE), the fixed window of 1 is used.
        """
        req = _request(blksize="1432", tsize="0")
        result = negotiate(req.options, Limits(), request=req,
                           extensions=adaptive.extensionsFromConfig({}))
        self.assertEqual(result.windowPolicy().size(), 1)
        self.assertNotIsInstance(result.windowPolicy(), adaptive.PacedWindow)

    def test_disabled(self):
        """
        If the section is disabled, no extension is offered.
        """
        self.assertEqual(adaptive.extensionsFromConfig({"enabled": False}), [])


class LossFlagTests(SynchronousTestCase):
    """
    The loss flag of adaptive ACKs, and which repeated ACKs make the server
    go back.
    """

    def test_flag(self):
        """
        If an ACK reports a loss, a flags byte with bit 0 follows the window;
        otherwise there is none.
        """
        self.assertEqual(adaptivewire.encodeAdaptiveExtra(8, loss=True), b"\x00\x08\x01")
        self.assertEqual(adaptivewire.encodeAdaptiveExtra(8), b"\x00\x08")
        self.assertTrue(adaptivewire.adaptiveExtraIsLoss(b"\x00\x08\x01"))
        self.assertFalse(adaptivewire.adaptiveExtraIsLoss(b"\x00\x08"))
        self.assertEqual(adaptivewire.decodeAdaptiveExtra(b"\x00\x08\x01"), 8)

    def test_repeatIsLoss(self):
        """
        If a repeated adaptive ACK is marked, it is a loss; unmarked repeats
        (re-acknowledged duplicates) and msftwindow repeats are not.
        """
        policy = adaptive.ClientDrivenWindow(8, 64)
        self.assertTrue(policy.repeatIsLoss(b"\x00\x08\x01"))
        self.assertFalse(policy.repeatIsLoss(b"\x00\x08"))
        req = _request(windowsize="4", msftwindow="31416")
        msft = negotiate(req.options, Limits(), request=req,
                         extensions=adaptive.extensionsFromConfig({})).windowPolicy()
        self.assertFalse(msft.repeatIsLoss(b"\x08"))
