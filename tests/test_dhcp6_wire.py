# -*- test-case-name: tests.test_dhcp6_wire -*-
"""
Tests for L{provisioner.dhcp6.wire}: golden messages, round trips, a table
of malformed messages, and fuzzing with hypothesis.

The golden messages are written out by hand from the layouts of RFC 8415
(sections 8, 21) and RFC 5970 (options 59-62), with the options and values
the real clients put in them, read from their sources: EDK2's PXE driver
(C{NetworkPkg/UefiPxeBcDxe/PxeBcDhcp6.c}, C{PxeBcBuildDhcp6Options}: ORO
for 59 and 60, NII 62, architecture 61, vendor class 16 with enterprise
343 and the 32-byte C{PXEClient:Arch:00007:UNDI:003000}; its DHCPv6 driver
adds the client id, elapsed time and the IA_NA), EDK2's HTTP boot driver
(C{HTTPClient:Arch:00016...}, architecture 16) and iPXE
(C{src/net/udp/dhcpv6.c}: DUID-UUID, IA_NA, ORO for 23, 24, 59, 60, the
vendor class, 61, 62, user class C{iPXE}, elapsed time). They are not
captures: QEMU runs belong to another part of the work, so real captures of
OVMF's and iPXE's Solicits are still to be added beside these.
"""

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from twisted.trial.unittest import SynchronousTestCase

from provisioner.dhcp6 import wire
from provisioner.dhcp6.wire import OPT, STATUS, DHCP6Message, DHCP6Relay, MalformedPacket


def hexBytes(text):
    """
    Bytes from hex written with spaces, newlines and C{|} between fields.
    """
    return bytes.fromhex("".join(text.replace("|", " ").split()))


#: EDK2 PXEv6 (x64 UEFI) Solicit
EDK2_SOLICIT = hexBytes("""
    01 | a1b2c3
    0001 000e | 0001 0001 2a2b3c4d 525400123456
    0008 0002 | 0000
    0003 000c | 00123456 00000000 00000000
    0006 0006 | 003b 003c 0017
    003e 0003 | 01 03 00
    003d 0002 | 0007
    0010 0026 | 00000157 0020
""") + b"PXEClient:Arch:00007:UNDI:003000"

#: iPXE (x64 UEFI build) Solicit
IPXE_SOLICIT = hexBytes("""
    01 | 5e11a0
    0001 0012 | 0004 00112233445566778899aabbccddeeff
    0003 000c | 6b0d4c52 00000000 00000000
    0006 0008 | 0017 0018 003b 003c
    0010 0026 | 00000157 0020
""") + b"PXEClient:Arch:00007:UNDI:003010" + hexBytes("""
    003d 0002 | 0007
    003e 0003 | 01 03 0a
    000f 0006 | 0004
""") + b"iPXE" + hexBytes("0008 0002 | 0000")

#: EDK2 HTTP boot (x64) Solicit over IPv6
EDK2_HTTP_SOLICIT = hexBytes("""
    01 | 0c0ffe
    0001 000a | 0003 0001 525400abcdef
    0008 0002 | 0064
    0003 000c | 00abcdef 00000000 00000000
    0006 0006 | 003b 003c 0017
    003e 0003 | 01 03 00
    003d 0002 | 0010
    0010 0027 | 00000157 0021
""") + b"HTTPClient:Arch:00016:UNDI:003000"

#: the boot-only Advertise the EDK2 Solicit gets from a server at
#: 2001:db8:1::1 whose DUID is a DUID-LL of 02:aa:bb:cc:dd:ee
BOOT_ADVERTISE = hexBytes("""
    02 | a1b2c3
    0002 000a | 0003 0001 02aabbccddee
    0001 000e | 0001 0001 2a2b3c4d 525400123456
    0010 000f | 00000157 0009
""") + b"PXEClient" + hexBytes("003b 0022") + b"tftp://[2001:db8:1::1]/snponly.efi"

#: a full-mode Reply to a Request: IA_NA with one address, DNS
FULL_REPLY = hexBytes("""
    07 | 000001
    0002 000a | 0003 0001 02aabbccddee
    0001 000a | 0003 0001 525400000001
    0003 0028 | 00000001 000005dc 00000960
        0005 0018 | 20010db8000100000000000000001000 00000bb8 00000e10
    0017 0010 | 20010db8000000000000000000000053
""")


class GoldenMessageTests(SynchronousTestCase):
    """
    The messages real clients send decode to what they carry.
    """

    def test_edk2Solicit(self):
        """
        If EDK2's PXE Solicit is parsed: type, transaction id, a DUID-LLT
        client id with its MAC, one empty IA_NA, the ORO, NII 3.0,
        architecture 7 and the PXEClient vendor class of enterprise 343.
        """
        m = wire.parse(EDK2_SOLICIT)
        self.assertIsInstance(m, DHCP6Message)
        self.assertEqual((m.msgType, m.transactionId), (wire.SOLICIT, 0xa1b2c3))
        self.assertEqual(wire.duidMAC(m.clientId), "52:54:00:12:34:56")
        kind, fields = wire.parseDUID(m.clientId)
        self.assertEqual((kind, fields["time"]), (1, 0x2a2b3c4d))
        self.assertEqual(m.elapsed(), 0)
        [ia] = m.iaNAs()
        self.assertEqual((ia.iaid, ia.t1, ia.t2, ia.addresses), (0x123456, 0, 0, []))
        self.assertEqual(m.requested(), [OPT.BOOTFILE_URL, OPT.BOOTFILE_PARAM, OPT.DNS_SERVERS])
        self.assertEqual(wire.parseNII(m.option(OPT.NII)), (1, 3, 0))
        self.assertEqual(m.architectures(), [7])
        [vc] = m.vendorClasses()
        self.assertEqual(vc.enterprise, wire.PXE_ENTERPRISE)
        self.assertEqual(vc.text(), "PXEClient:Arch:00007:UNDI:003000")
        self.assertIsNone(m.serverId)
        self.assertFalse(m.rapidCommit)

    def test_ipxeSolicit(self):
        """
        If iPXE's Solicit is parsed: a DUID-UUID (no MAC in it), the ORO
        with DNS and domain list, NII 3.10 and the user class C{iPXE}.
        """
        m = wire.parse(IPXE_SOLICIT)
        kind, fields = wire.parseDUID(m.clientId)
        self.assertEqual(kind, 4)
        self.assertEqual(fields["uuid"], bytes.fromhex("00112233445566778899aabbccddeeff"))
        self.assertIsNone(wire.duidMAC(m.clientId))
        self.assertEqual(m.requested(), [23, 24, 59, 60])
        self.assertEqual(m.userClasses(), [b"iPXE"])
        self.assertEqual(wire.parseNII(m.option(OPT.NII)), (1, 3, 10))
        self.assertEqual(m.iaNAs()[0].iaid, 0x6b0d4c52)

    def test_edk2HTTPSolicit(self):
        """
        If EDK2's HTTP boot Solicit is parsed: a DUID-LL, architecture 16,
        the HTTPClient vendor class, elapsed time 100 (one second).
        """
        m = wire.parse(EDK2_HTTP_SOLICIT)
        self.assertEqual(wire.duidMAC(m.clientId), "52:54:00:ab:cd:ef")
        self.assertEqual(m.architectures(), [16])
        self.assertEqual(m.vendorClasses()[0].text(), "HTTPClient:Arch:00016:UNDI:003000")
        self.assertEqual(m.elapsed(), 100)

    def test_bootAdvertise(self):
        """
        If the boot-only Advertise is parsed: server and client id, the
        PXEClient vendor class and the boot file URL, no IA_NA.
        """
        m = wire.parse(BOOT_ADVERTISE)
        self.assertEqual(m.msgType, wire.ADVERTISE)
        self.assertEqual(m.serverId, wire.encodeDUIDLL("02:aa:bb:cc:dd:ee"))
        self.assertEqual(m.bootfileURL(), "tftp://[2001:db8:1::1]/snponly.efi")
        self.assertEqual(m.vendorClasses(), [wire.VendorClass(343, [b"PXEClient"])])
        self.assertEqual(m.iaNAs(), [])

    def test_fullReply(self):
        """
        If a full-mode Reply is parsed: the IA_NA's T1, T2 and its address
        with lifetimes; the DNS server list.
        """
        m = wire.parse(FULL_REPLY)
        [ia] = m.iaNAs()
        self.assertEqual((ia.iaid, ia.t1, ia.t2), (1, 1500, 2400))
        self.assertEqual(ia.addresses, [wire.IAAddress("2001:db8:1::1000", 3000, 3600)])
        self.assertIsNone(ia.status)
        self.assertEqual(wire.parseAddresses(m.option(OPT.DNS_SERVERS)), ["2001:db8::53"])


class EncodeTests(SynchronousTestCase):
    """
    Messages built with the codec are byte for byte what the RFC layouts
    say, and everything read is written back the same.
    """

    def test_buildBootAdvertise(self):
        """
        If the boot-only Advertise is built from its parts, its bytes are
        the golden ones.
        """
        m = DHCP6Message(wire.ADVERTISE, 0xa1b2c3)
        m.addOption(OPT.SERVERID, wire.encodeDUIDLL("02:aa:bb:cc:dd:ee"))
        m.addOption(OPT.CLIENTID, wire.encodeDUIDLLT("52:54:00:12:34:56", 0x2a2b3c4d))
        m.addOption(OPT.VENDOR_CLASS, wire.VendorClass(343, [b"PXEClient"]))
        m.addOption(OPT.BOOTFILE_URL, b"tftp://[2001:db8:1::1]/snponly.efi")
        self.assertEqual(m.to_wire(), BOOT_ADVERTISE)

    def test_buildFullReply(self):
        """
        If the full-mode Reply is built with L{wire.IANA} and
        L{wire.IAAddress}, its bytes are the golden ones.
        """
        m = DHCP6Message(wire.REPLY, 1)
        m.addOption(OPT.SERVERID, wire.encodeDUIDLL("02:aa:bb:cc:dd:ee"))
        m.addOption(OPT.CLIENTID, wire.encodeDUIDLL("52:54:00:00:00:01"))
        ia = wire.IANA(1, 1500, 2400)
        ia.addAddress(wire.IAAddress("2001:db8:1::1000", 3000, 3600))
        m.addOption(OPT.IA_NA, ia)
        m.addOption(OPT.DNS_SERVERS, wire.encodeAddresses(["2001:db8::53"]))
        self.assertEqual(m.to_wire(), FULL_REPLY)

    def test_roundTripGolden(self):
        """
        If each golden message is parsed and written again, the bytes are
        unchanged.
        """
        for data in (EDK2_SOLICIT, IPXE_SOLICIT, EDK2_HTTP_SOLICIT, BOOT_ADVERTISE,
                     FULL_REPLY):
            self.assertEqual(wire.parse(data).to_wire(), data)

    def test_roundTripEveryType(self):
        """
        If a message of each type from Solicit to Information-request is
        written and read, type, transaction id and options come back.
        """
        for kind in range(1, 12):
            m = DHCP6Message(kind, 0xfffffe, [(OPT.CLIENTID, wire.encodeDUIDLL(b"\x02" * 6)),
                                             (OPT.RAPID_COMMIT, b""),
                                             (OPT.PREFERENCE, b"\xff"),
                                             (OPT.STATUS_CODE, wire.StatusCode(
                                                 STATUS.NO_ADDRS_AVAIL, "none").to_wire()),
                                             (999, b"unknown")])
            back = wire.parse(m.to_wire())
            self.assertEqual((back.msgType, back.transactionId, back.options),
                             (kind, 0xfffffe, m.options))
            self.assertEqual(back.status(), wire.StatusCode(2, "none"))

    def test_roundTripHelpers(self):
        """
        If each simple option is encoded and parsed again, the value comes
        back.
        """
        self.assertEqual(wire.parseORO(wire.encodeORO([59, 60, 23])), [59, 60, 23])
        self.assertEqual(wire.parseUserClass(wire.encodeUserClass([b"iPXE", b""])),
                         [b"iPXE", b""])
        self.assertEqual(wire.parseBootfileParams(wire.encodeBootfileParams(["a b", "c"])),
                         ["a b", "c"])
        self.assertEqual(wire.parseArchitectures(wire.encodeArchitectures([16, 7])), [16, 7])
        self.assertEqual(wire.parseNII(wire.encodeNII(1, 3, 16)), (1, 3, 16))
        vo = wire.VendorOptions(343, [(1, b"x"), (2, b"")])
        self.assertEqual(wire.VendorOptions.from_wire(vo.to_wire()), vo)
        self.assertEqual(wire.parseDUID(wire.encodeDUIDUUID(bytes(range(16))))[1]["uuid"],
                         bytes(range(16)))

    def test_relayRoundTrip(self):
        """
        If a Relay-forward carrying a Solicit is written and read, hop
        count, link and peer address and the relayed message come back.
        """
        relay = DHCP6Relay(wire.RELAY_FORW, 1, "2001:db8:1::1", "fe80::1",
                           [(OPT.RELAY_MSG, EDK2_SOLICIT)])
        back = wire.parse(relay.to_wire())
        self.assertIsInstance(back, DHCP6Relay)
        self.assertEqual((back.hopCount, back.linkAddress, back.peerAddress),
                         (1, "2001:db8:1::1", "fe80::1"))
        self.assertEqual(back.option(OPT.RELAY_MSG), EDK2_SOLICIT)

    def test_setOptionReplaces(self):
        """
        If an option is set twice, one instance is left with the last value.
        """
        m = DHCP6Message(wire.REPLY, 1)
        m.setOption(OPT.PREFERENCE, b"\x01")
        m.setOption(OPT.PREFERENCE, b"\x02")
        self.assertEqual(m.all(OPT.PREFERENCE), [b"\x02"])

    def test_badTransactionId(self):
        """
        If a transaction id does not fit 24 bits, writing refuses it.
        """
        self.assertRaises(ValueError, DHCP6Message(1, 1 << 24).to_wire)


def _opt(code, value):
    return struct.pack("!HH", code, len(value)) + value


_HEAD = b"\x01\x00\x00\x01"
_CID = _opt(1, wire.encodeDUIDLL(b"\x02" * 6))

#: (name, datagram): each must raise L{MalformedPacket}
MALFORMED = [
    ("empty", b""),
    ("one byte", b"\x01"),
    ("three bytes", b"\x01\x00\x00"),
    ("reserved type 0", b"\x00\x00\x00\x01"),
    ("stray option byte", _HEAD + b"\x00"),
    ("three stray bytes", _HEAD + b"\x00\x01\x00"),
    ("option past the end", _HEAD + b"\x00\x01\x00\x10" + b"\x00" * 4),
    ("option length 65535", _HEAD + b"\x00\x10\xff\xff"),
    ("client id of one byte", _HEAD + _opt(1, b"\x00")),
    ("client id of 131 bytes", _HEAD + _opt(1, b"\x00\x02" + b"a" * 129)),
    ("server id empty", _HEAD + _CID + _opt(2, b"")),
    ("DUID-LLT too short", _HEAD + _opt(1, b"\x00\x01\x00\x01\x00")),
    ("DUID-UUID of 15 bytes", _HEAD + _opt(1, b"\x00\x04" + b"u" * 15)),
    ("IA_NA of 11 bytes", _HEAD + _CID + _opt(3, b"\x00" * 11)),
    ("IA_NA inner option past the end", _HEAD + _CID + _opt(3, b"\x00" * 12 +
                                                          b"\x00\x05\x00\x30")),
    ("IA address of 23 bytes", _HEAD + _CID + _opt(3, b"\x00" * 12 + _opt(5, b"\x00" * 23))),
    ("IA address with a broken status", _HEAD + _CID + _opt(
        3, b"\x00" * 12 + _opt(5, b"\x00" * 24 + _opt(13, b"\x00")))),
    ("IA address at the top", _HEAD + _CID + _opt(5, b"\x00" * 10)),
    ("ORO of odd length", _HEAD + _CID + _opt(6, b"\x00\x3b\x00")),
    ("preference of 2 bytes", _HEAD + _CID + _opt(7, b"\x00\x01")),
    ("elapsed time of 1 byte", _HEAD + _CID + _opt(8, b"\x00")),
    ("status of 1 byte", _HEAD + _CID + _opt(13, b"\x00")),
    ("rapid commit with a value", _HEAD + _CID + _opt(14, b"\x01")),
    ("user class item past the end", _HEAD + _CID + _opt(15, b"\x00\x05iPXE")),
    ("user class stray byte", _HEAD + _CID + _opt(15, b"\x00\x04iPXE\x00")),
    ("vendor class of 3 bytes", _HEAD + _CID + _opt(16, b"\x00\x00\x01")),
    ("vendor class item past the end", _HEAD + _CID + _opt(16, b"\x00\x00\x01\x57\x00\x20"
                                                            b"PXEClient")),
    ("vendor opts inner past the end", _HEAD + _CID + _opt(17, b"\x00\x00\x01\x57\x00\x01"
                                                           b"\x00\x09x")),
    ("DNS servers of 15 bytes", _HEAD + _CID + _opt(23, b"\x00" * 15)),
    ("boot file URL not ASCII", _HEAD + _CID + _opt(59, b"tftp://\xff")),
    ("boot file params past the end", _HEAD + _CID + _opt(60, b"\x00\x09abc")),
    ("architecture empty", _HEAD + _CID + _opt(61, b"")),
    ("architecture of odd length", _HEAD + _CID + _opt(61, b"\x00\x07\x00")),
    ("NII of 2 bytes", _HEAD + _CID + _opt(62, b"\x01\x03")),
    ("NII of 4 bytes", _HEAD + _CID + _opt(62, b"\x01\x03\x00\x00")),
    ("relay of 33 bytes", b"\x0c" + b"\x00" * 32),
    ("relay with an option past the end", b"\x0c\x00" + b"\x00" * 32 + b"\x00\x09\x00\x05"),
    ("relay-reply with a broken interface", b"\x0d\x00" + b"\x00" * 32 +
     _opt(62, b"\x01")),
]


class MalformedTests(SynchronousTestCase):
    """
    What cannot be read raises L{MalformedPacket}, and nothing else.
    """

    def test_table(self):
        """
        If each datagram of the malformed table is parsed,
        L{MalformedPacket} is raised (the failure names the entry).
        """
        for name, data in MALFORMED:
            try:
                wire.parse(data)
            except MalformedPacket:
                continue
            except Exception as e:
                self.fail("%s: raised %r, not MalformedPacket" % (name, e))
            self.fail("%s: was accepted" % (name,))

    def test_relayIsNotAMessage(self):
        """
        If a relay message is given to L{DHCP6Message.from_wire}, it is
        refused as malformed (L{wire.parse} reads it).
        """
        data = DHCP6Relay(wire.RELAY_FORW, 0, "::", "fe80::1").to_wire()
        self.assertRaises(MalformedPacket, DHCP6Message.from_wire, data)

    def test_truncatedGolden(self):
        """
        If a golden message is cut at any length, parsing either succeeds
        (at an option boundary) or raises L{MalformedPacket}.
        """
        for data in (EDK2_SOLICIT, IPXE_SOLICIT, FULL_REPLY):
            accepted = 0
            for n in range(len(data)):
                try:
                    wire.parse(data[:n])
                    accepted += 1
                except MalformedPacket:
                    pass
            self.assertLess(accepted, len(data) // 4)


def _exercise(m):
    """
    Call every reader of a parsed message: none may raise.
    """
    if isinstance(m, DHCP6Relay):
        m.to_wire()
        return
    m.iaNAs()
    for ia in m.iaNAs():
        ia.addresses
        ia.status
        for a in ia.addresses:
            a.status
    m.requested()
    m.vendorClasses()
    m.userClasses()
    m.architectures()
    m.elapsed()
    m.status()
    m.bootfileURL()
    for raw in m.all(OPT.CLIENTID) + m.all(OPT.SERVERID):
        wire.parseDUID(raw)
        wire.duidMAC(raw)
    m.to_wire()


class FuzzTests(SynchronousTestCase):
    """
    Hypothesis: arbitrary and mutated input raises only
    L{MalformedPacket}, and a message that parses can be read through every
    helper and written again.
    """

    @settings(max_examples=400, deadline=None, derandomize=True)
    @given(st.binary(min_size=0, max_size=600))
    def test_fuzzBytes(self, data):
        """
        If arbitrary bytes are parsed, only L{MalformedPacket} is raised,
        and what parses can be read and written.
        """
        try:
            m = wire.parse(data)
        except MalformedPacket:
            return
        _exercise(m)

    @settings(max_examples=400, deadline=None, derandomize=True)
    @given(st.lists(st.tuples(st.sampled_from([1, 2, 3, 5, 6, 7, 8, 13, 14, 15, 16, 17, 23,
                                                59, 60, 61, 62, 9999]),
                              st.binary(max_size=60)), max_size=8),
           st.integers(min_value=1, max_value=13))
    def test_fuzzOptions(self, options, kind):
        """
        If a header is followed by known options with arbitrary values,
        parsing succeeds or raises L{MalformedPacket}; a success reads
        through every helper and writes back the same bytes.
        """
        if kind in (12, 13):
            data = bytes((kind, 0)) + b"\x00" * 32 + wire.writeOptions(options)
        else:
            data = bytes((kind,)) + b"\x00\x00\x07" + wire.writeOptions(options)
        try:
            m = wire.parse(data)
        except MalformedPacket:
            return
        _exercise(m)
        self.assertEqual(m.to_wire(), data)

    @settings(max_examples=400, deadline=None, derandomize=True)
    @given(st.sampled_from([EDK2_SOLICIT, IPXE_SOLICIT, EDK2_HTTP_SOLICIT, FULL_REPLY]),
           st.lists(st.tuples(st.integers(min_value=0, max_value=400),
                              st.integers(min_value=0, max_value=255)), min_size=1,
                    max_size=6))
    def test_fuzzMutatedGolden(self, data, flips):
        """
        If bytes of a golden message are overwritten, parsing succeeds or
        raises L{MalformedPacket}.
        """
        data = bytearray(data)
        for at, value in flips:
            data[at % len(data)] = value
        try:
            m = wire.parse(bytes(data))
        except MalformedPacket:
            return
        _exercise(m)
