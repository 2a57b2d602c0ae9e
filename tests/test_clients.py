"""
Tests for L{provisioner.directory}.
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from provisioner.directory import ClientDirectory, normaliseMAC
from provisioner.interfaces import IClientDirectory


class NormaliseMACTests(SynchronousTestCase):
    """
    Tests for L{normaliseMAC}.
    """

    def test_forms(self):
        """
        Bytes, dashes, colons, upper case and bare hex all normalise alike.
        """
        want = "aa:bb:cc:dd:ee:0f"
        for form in [b"\xaa\xbb\xcc\xdd\xee\x0f", "AA-BB-CC-DD-EE-0F", "aa:bb:cc:dd:ee:0f",
                     "aabbccddee0f"]:
            self.assertEqual(normaliseMAC(form), want)

    def test_bad(self):
        """
        Anything else is a ValueError.
        """
        for bad in ["", "aa:bb", "zz:bb:cc:dd:ee:ff", b"\x01\x02", "aa:bb:cc:dd:ee:ff:00"]:
            self.assertRaises(ValueError, normaliseMAC, bad)


class ClientDirectoryTests(SynchronousTestCase):
    """
    Tests for L{ClientDirectory}.
    """

    def test_updateAndLookup(self):
        """
        Facts recorded by MAC and IP are found by either.
        """
        d = ClientDirectory(clock=lambda: 5.0)
        verifyObject(IClientDirectory, d)
        d.update(mac="AA-BB-CC-DD-EE-FF", ip="198.18.0.5", arch=7, ipxe=False)
        d.update(mac="aa:bb:cc:dd:ee:ff", ipxe=True)
        record = d.byIP("198.18.0.5")
        self.assertEqual((record.mac, record.arch, record.ipxe, record.seen),
                         ("aa:bb:cc:dd:ee:ff", 7, True, 5.0))
        self.assertIs(d.byMAC("aabbccddeeff"), record)
        self.assertIsNone(d.byMAC("garbage"))

    def test_ipMoves(self):
        """
        If a client gets a new IP, the old one no longer finds it; if an IP
        moves to another MAC, the new MAC owns it.
        """
        d = ClientDirectory()
        d.update(mac="02:00:00:00:00:01", ip="198.18.0.5")
        d.update(mac="02:00:00:00:00:01", ip="198.18.0.6")
        self.assertIsNone(d.byIP("198.18.0.5"))
        d.update(mac="02:00:00:00:00:02", ip="198.18.0.6")
        self.assertEqual(d.byIP("198.18.0.6").mac, "02:00:00:00:00:02")
        self.assertEqual(d.byMAC("02:00:00:00:00:01").ip, "198.18.0.6")

    def test_bounded(self):
        """
        The directory forgets the least recently seen clients beyond its
        maximum.
        """
        d = ClientDirectory(maximum=3)
        for i in range(5):
            d.update(mac="02:00:00:00:00:%02x" % i, ip="198.18.0.%d" % i)
        self.assertEqual(len(d), 3)
        self.assertIsNone(d.byMAC("02:00:00:00:00:00"))
        self.assertIsNone(d.byIP("198.18.0.0"))
        self.assertIsNotNone(d.byIP("198.18.0.4"))
