"""
Tests for L{provisioner.tftp.wire}: round trips, golden packets, and
malformed datagrams (which raise L{wire.WireError} and nothing else).
"""

from twisted.trial.unittest import SynchronousTestCase

from provisioner import errors
from provisioner.tftp import wire


class GoldenTests(SynchronousTestCase):
    """
    Packets as captured from real clients and servers.
    """

    def test_pxeRRQ(self):
        """
        If a PXE ROM asks for pxelinux.0 with tsize and blksize (bytes as a
        ROM sends them), the request decodes with its options in order.
        """
        raw = (b"\x00\x01pxelinux.0\x00octet\x00tsize\x000\x00blksize\x001456\x00")
        packet = wire.decode(raw)
        self.assertEqual(packet, wire.ReadRequest(b"pxelinux.0", "octet",
                                                  [("tsize", "0"), ("blksize", "1456")]))
        self.assertEqual(packet.to_wire(), raw)

    def test_upperCase(self):
        """
        If option names and the mode are upper case (RFC 2347: case does not
        matter), they decode lower case.
        """
        packet = wire.decode(b"\x00\x01F\x00OCTET\x00BLKSIZE\x001024\x00WindowSize\x004\x00")
        self.assertEqual(packet.mode, "octet")
        self.assertEqual(packet.options, [("blksize", "1024"), ("windowsize", "4")])

    def test_data(self):
        """
        DATA is opcode 3, a 16-bit block, the payload.
        """
        self.assertEqual(wire.encodeData(1, b"ab"), b"\x00\x03\x00\x01ab")
        self.assertEqual(wire.encodeData(65536, b""), b"\x00\x03\x00\x00")
        self.assertEqual(wire.decode(b"\x00\x03\xff\xffxyz"), wire.Data(65535, b"xyz"))

    def test_ack(self):
        """
        ACK is opcode 4 and a 16-bit block; trailing bytes are kept apart.
        """
        self.assertEqual(wire.encodeAck(65537), b"\x00\x04\x00\x01")
        self.assertEqual(wire.decode(b"\x00\x04\x00\x07"), wire.Ack(7))
        self.assertEqual(wire.decode(b"\x00\x04\x00\x07\x10"), wire.Ack(7, b"\x10"))

    def test_error(self):
        """
        ERROR is opcode 5, a code, a NUL-terminated message.
        """
        self.assertEqual(wire.Error(1, "File not found").to_wire(),
                         b"\x00\x05\x00\x01File not found\x00")
        self.assertEqual(wire.decode(b"\x00\x05\x00\x08no\x00"), wire.Error(8, "no"))
        self.assertEqual(wire.decode(b"\x00\x05\x00\x00unterminated"),
                         wire.Error(0, "unterminated"))

    def test_oack(self):
        """
        OACK is opcode 6 and name/value pairs.
        """
        packet = wire.OptionAck([("blksize", "1468"), ("windowsize", "16")])
        self.assertEqual(packet.to_wire(), b"\x00\x06blksize\x001468\x00windowsize\x0016\x00")
        self.assertEqual(wire.decode(packet.to_wire()), packet)


class RoundTripTests(SynchronousTestCase):
    """
    C{decode(p.to_wire()) == p} for every packet type.
    """

    def test_roundTrips(self):
        """
        If a packet is encoded and decoded, it is unchanged.
        """
        for packet in [
            wire.ReadRequest(b"a/b.bin", "octet", [("blksize", "8")]),
            wire.ReadRequest(b"x", "netascii"),
            wire.WriteRequest(b"up", "octet", [("tsize", "12")]),
            wire.Data(0, b""), wire.Data(65535, b"\x00" * 65464),
            wire.Ack(0), wire.Ack(65535, b"\x01\x02"),
            wire.Error(5, "unknown transfer ID"),
            wire.OptionAck([("tsize", "123456789")]),
        ]:
            self.assertEqual(wire.decode(packet.to_wire()), packet)

    def test_wireBlock(self):
        """
        32-bit block numbers wrap to 16 bits on the wire.
        """
        self.assertEqual(wire.wireBlock(65535), 65535)
        self.assertEqual(wire.wireBlock(65536), 0)
        self.assertEqual(wire.wireBlock(65536 * 3 + 9), 9)


# (description, datagram): none of these is a valid TFTP packet.
MALFORMED = [
    ("empty", b""),
    ("one byte", b"\x00"),
    ("opcode 0", b"\x00\x00"),
    ("opcode 7", b"\x00\x07abc"),
    ("opcode 0xffff", b"\xff\xff"),
    ("RRQ without anything", b"\x00\x01"),
    ("RRQ unterminated name", b"\x00\x01file"),
    ("RRQ without mode", b"\x00\x01file\x00"),
    ("RRQ unterminated mode", b"\x00\x01file\x00octet"),
    ("RRQ empty name", b"\x00\x01\x00octet\x00"),
    ("RRQ unterminated option", b"\x00\x01f\x00octet\x00blksize\x001024"),
    ("RRQ huge", b"\x00\x01" + b"a" * 5000 + b"\x00octet\x00"),
    ("WRQ unterminated", b"\x00\x02f"),
    ("DATA too short", b"\x00\x03\x00"),
    ("ACK too short", b"\x00\x04\x01"),
    ("ERROR too short", b"\x00\x05\x00"),
    ("OACK unterminated", b"\x00\x06blksize\x00512"),
]


class MalformedTests(SynchronousTestCase):
    """
    Datagrams that are not TFTP.
    """

    def test_malformed(self):
        """
        If a datagram is malformed, L{wire.decode} raises L{wire.WireError}
        and nothing else.
        """
        for name, datagram in MALFORMED:
            try:
                wire.decode(datagram)
            except wire.WireError:
                pass
            else:
                self.fail("%s decoded" % (name,))

    def test_lenientOptions(self):
        """
        If options are duplicated, lack a value, or are too many, the first
        of each name wins, the dangling name is dropped, and at most 32 are
        kept.
        """
        packet = wire.decode(b"\x00\x01f\x00octet\x00blksize\x00512\x00BLKSIZE\x009000\x00"
                             b"tsize\x00")
        self.assertEqual(packet.options, [("blksize", "512")])
        many = b"".join(b"o%d\x001\x00" % (i,) for i in range(100))
        packet = wire.decode(b"\x00\x01f\x00octet\x00" + many)
        self.assertEqual(len(packet.options), wire.MAX_OPTIONS)

    def test_over512(self):
        """
        If a request is over 512 bytes but within L{wire.MAX_REQUEST}, it
        decodes (some clients send long paths).
        """
        name = b"d/" * 300
        packet = wire.decode(b"\x00\x01" + name + b"\x00octet\x00")
        self.assertEqual(packet.filename, name)


class ErrorForTests(SynchronousTestCase):
    """
    Tests for L{wire.errorFor}, where backend errors become codes.
    """

    def test_codes(self):
        """
        Each backend error maps to its TFTP code; anything else is code 0.
        """
        self.assertEqual(wire.errorFor(errors.FileNotFound("x")).code, 1)
        self.assertEqual(wire.errorFor(errors.AccessViolation("x")).code, 2)
        self.assertEqual(wire.errorFor(errors.DiskFull("x")).code, 3)
        self.assertEqual(wire.errorFor(errors.FileExists("x")).code, 6)
        self.assertEqual(wire.errorFor(errors.TooManySessions("x")).code, 0)
        self.assertEqual(wire.errorFor(RuntimeError("secret")), wire.Error(0, "server error"))
