"""
Tests for L{provisioner.mcast.datagram}.
"""

from twisted.trial.unittest import SynchronousTestCase

from provisioner.mcast.datagram import (
    HEADER_SIZE, OVERHEAD, TAG_SIZE, DataDatagram, DatagramError, payloadSize)

KEY = b"k" * 32


class DatagramTests(SynchronousTestCase):
    """
    Tests for L{DataDatagram}.
    """

    def test_roundTrip(self):
        """
        A datagram survives C{to_wire}/C{from_wire} under the same key; the
        overhead is the header plus the tag.
        """
        dg = DataDatagram(7, 3, (1 << 40) + 5, b"payload")
        wire = dg.to_wire(KEY)
        self.assertEqual(len(wire), OVERHEAD + 7)
        self.assertEqual(DataDatagram.from_wire(wire, KEY, 7), dg)
        self.assertEqual(HEADER_SIZE + TAG_SIZE, 27)
        self.assertEqual(payloadSize(1472), 1445)

    def test_golden(self):
        """
        The header layout is fixed: version, session, round, 48-bit offset,
        length, big-endian.
        """
        wire = DataDatagram(0x01020304, 5, 0x060708090A0B, b"ab").to_wire(KEY)
        self.assertEqual(wire[:HEADER_SIZE + 2],
                         b"\x01\x01\x02\x03\x04\x00\x05\x06\x07\x08\x09\x0a\x0b\x00\x02ab")

    def test_spoofed(self):
        """
        If a datagram was signed under another key (a spoofer without the
        session key) or altered on the way, it is refused.
        """
        wire = DataDatagram(7, 1, 0, b"data").to_wire(b"x" * 32)
        self.assertRaises(DatagramError, DataDatagram.from_wire, wire, KEY, 7)
        good = bytearray(DataDatagram(7, 1, 0, b"data").to_wire(KEY))
        good[HEADER_SIZE] ^= 1
        self.assertRaises(DatagramError, DataDatagram.from_wire, bytes(good), KEY, 7)
        good = bytearray(DataDatagram(7, 1, 0, b"data").to_wire(KEY))
        good[8] ^= 1  # the offset
        self.assertRaises(DatagramError, DataDatagram.from_wire, bytes(good), KEY, 7)

    def test_otherSession(self):
        """
        If a datagram belongs to another (stale) session, it is refused.
        """
        wire = DataDatagram(8, 1, 0, b"data").to_wire(KEY)
        e = self.assertRaises(DatagramError, DataDatagram.from_wire, wire, KEY, 7)
        self.assertIn("session 8", str(e))

    def test_malformed(self):
        """
        If a datagram is short (0, 1 bytes, header only), of another version,
        or its length field disagrees with its size, it is refused with
        L{DatagramError} and nothing else.
        """
        wire = DataDatagram(7, 1, 0, b"data").to_wire(KEY)
        for bad in [b"", b"\x01", wire[:HEADER_SIZE], wire[:-1], wire + b"x",
                    b"\x02" + wire[1:], b"\x00" * 100]:
            self.assertRaises(DatagramError, DataDatagram.from_wire, bad, KEY, 7)

    def test_offsetRange(self):
        """
        If an offset does not fit 48 bits, encoding refuses it.
        """
        self.assertRaises(DatagramError, DataDatagram(1, 1, 1 << 48, b"").to_wire, KEY)
