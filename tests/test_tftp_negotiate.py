"""
Tests for L{provisioner.tftp.negotiate}: each option's validator, the MTU
clamp, and the extension hook.
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from provisioner.files import BytesSource
from provisioner.tftp.negotiate import (
    IOptionExtension, Limits, Negotiation, blksizeForMTU, negotiate)
from provisioner.tftp.window import FixedWindow


class ValidatorTests(SynchronousTestCase):
    """
    One validator per option, returning the accepted value or None.
    """

    def setUp(self):
        self.n = Negotiation(Limits(blksizeMax=65464, windowsizeMax=64),
                             source=BytesSource(b"x" * 1000))

    def test_blksize(self):
        """
        blksize 8..65464 is accepted, larger is answered with the limit,
        smaller or not a number is ignored.
        """
        self.assertEqual(self.n.option_blksize("8"), 8)
        self.assertEqual(self.n.option_blksize("1468"), 1468)
        self.assertEqual(self.n.option_blksize("65464"), 65464)
        self.assertEqual(self.n.option_blksize("70000"), 65464)
        self.assertIsNone(self.n.option_blksize("7"))
        self.assertIsNone(self.n.option_blksize("big"))
        self.assertIsNone(self.n.option_blksize("-5"))
        self.assertIsNone(self.n.option_blksize(""))

    def test_blksizeClamps(self):
        """
        If the configuration or the MTU allow less, blksize is clamped.
        """
        n = Negotiation(Limits(blksizeMax=1024))
        self.assertEqual(n.option_blksize("1468"), 1024)
        n = Negotiation(Limits(mtuBlksize=blksizeForMTU(1500)))
        self.assertEqual(n.option_blksize("65464"), 1468)
        n = Negotiation(Limits(mtuBlksize=blksizeForMTU(1500, ipv6=True)))
        self.assertEqual(n.option_blksize("65464"), 1448)
        self.assertIsNone(blksizeForMTU(0))
        self.assertIsNone(blksizeForMTU(None))

    def test_windowsize(self):
        """
        windowsize 1..65535 is accepted up to windowsize_max; 0, too large
        and non-numbers are ignored.
        """
        self.assertEqual(self.n.option_windowsize("16"), 16)
        self.assertEqual(self.n.option_windowsize("1000"), 64)
        self.assertEqual(self.n.option_windowsize("65535"), 64)
        self.assertIsNone(self.n.option_windowsize("0"))
        self.assertIsNone(self.n.option_windowsize("65536"))
        self.assertIsNone(self.n.option_windowsize("x"))

    def test_windowsizeNetascii(self):
        """
        If the mode is netascii, the window is 1.
        """
        n = Negotiation(Limits(), mode="netascii")
        self.assertEqual(n.option_windowsize("16"), 1)

    def test_timeout(self):
        """
        timeout 1..255 is echoed unchanged; anything else is ignored.
        """
        self.assertEqual(self.n.option_timeout("1"), 1)
        self.assertEqual(self.n.option_timeout("255"), 255)
        self.assertIsNone(self.n.option_timeout("0"))
        self.assertIsNone(self.n.option_timeout("256"))
        self.assertIsNone(self.n.option_timeout("1.5"))

    def test_tsize(self):
        """
        tsize on a read is answered with the size; atftp's C{enable} and
        other non-numbers are ignored; netascii gets none; on a write the
        client's value is kept.
        """
        self.assertEqual(self.n.option_tsize("0"), 1000)
        self.assertIsNone(self.n.option_tsize("enable"))
        n = Negotiation(Limits(), source=BytesSource(b"abc"), mode="netascii")
        self.assertIsNone(n.option_tsize("0"))
        n = Negotiation(Limits(), write=True)
        self.assertEqual(n.option_tsize("4096"), 4096)


class NegotiateTests(SynchronousTestCase):
    """
    Tests for L{negotiate}.
    """

    def test_oackInRequestOrder(self):
        """
        If several options are accepted, the OACK lists them in request
        order; unknown ones are left out.
        """
        result = negotiate([("tsize", "0"), ("foo", "1"), ("blksize", "1468"),
                            ("windowsize", "8"), ("timeout", "2")],
                           Limits(), source=BytesSource(b"x" * 5000))
        self.assertEqual(result.oack, [("tsize", "5000"), ("blksize", "1468"),
                                       ("windowsize", "8"), ("timeout", "2")])
        self.assertEqual((result.blksize, result.windowsize, result.timeout, result.tsize),
                         (1468, 8, 2, 5000))
        self.assertIsInstance(result.windowPolicy(), FixedWindow)
        self.assertEqual(result.windowPolicy().size(), 8)

    def test_nothing(self):
        """
        If no option is accepted, there is no OACK and RFC 1350 defaults
        apply.
        """
        result = negotiate({"tsize": "enable", "blksize": "4"}, Limits())
        self.assertEqual(result.oack, [])
        self.assertEqual((result.blksize, result.windowsize), (512, 1))

    def test_strangeNames(self):
        """
        If an option name is not an identifier, it is ignored.
        """
        result = negotiate({"__class__": "1", "a-b": "2", "": "3"}, Limits())
        self.assertEqual(result.oack, [])


@implementer(IOptionExtension)
class Extension:
    def __init__(self, answer):
        self.answer = answer
        self.calls = []

    def negotiate(self, request, accepted, limits, negotiated):
        self.calls.append((request, dict(accepted), limits))
        return self.answer


class ExtensionTests(SynchronousTestCase):
    """
    The L{IOptionExtension} hook.
    """

    def test_interface(self):
        """
        The test extension provides L{IOptionExtension}.
        """
        self.assertTrue(verifyObject(IOptionExtension, Extension(None)))

    def test_notApplicable(self):
        """
        If an extension answers None, the next one is asked.
        """
        first = Extension(None)
        policy = FixedWindow(3)
        second = Extension(([("msftwindow", "27182")], lambda accepted: policy))
        result = negotiate({"windowsize": "4"}, Limits(), request="req",
                           extensions=[first, second])
        self.assertEqual(first.calls[0][1], {"windowsize": 4, "blksize": 512})
        self.assertEqual(result.oack, [("windowsize", "4"), ("msftwindow", "27182")])
        self.assertIs(result.windowPolicy(), policy)
        self.assertIs(result.extension, second)

    def test_firstWins(self):
        """
        If two extensions answer, only the first is used.
        """
        first = Extension(([("a", "1")], None))
        second = Extension(([("b", "2")], None))
        result = negotiate({}, Limits(), extensions=[first, second])
        self.assertEqual(result.oack, [("a", "1")])
        self.assertEqual(second.calls, [])
        self.assertIsInstance(result.windowPolicy(), FixedWindow)

    def test_factoryNone(self):
        """
        If the policy factory returns None, the fixed window is used.
        """
        result = negotiate({"windowsize": "5"}, Limits(),
                           extensions=[Extension(([], lambda accepted: None))])
        self.assertEqual(result.windowPolicy().size(), 5)
