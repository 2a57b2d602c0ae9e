# -*- test-case-name: tests.test_dhcp_wire -*-
"""
Tests for L{provisioner.dhcp.wire}: golden packets captured from real
clients (see C{tests/data/dhcp/README.md}), round trips, malformed input.
"""

import os
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from twisted.trial.unittest import SynchronousTestCase

from provisioner.dhcp import wire
from provisioner.dhcp.wire import OPT, DHCPPacket, MalformedPacket

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "dhcp")


def golden(name):
    with open(os.path.join(DATA, name), "rb") as f:
        return f.read()


def minimal(options=b"\x35\x01\x01\xff", **fields):
    """
    A syntactically valid request with the given raw option bytes.
    """
    packet = DHCPPacket(chaddr=b"\x02\x00\x00\x00\x00\x01", xid=7, **fields)
    head = packet.to_wire()[:240]
    return head + options


class GoldenPacketTests(SynchronousTestCase):
    """
    Requests captured from real clients decode to what they sent.
    """

    def test_udhcpcDiscover(self):
        """
        If busybox udhcpc's DISCOVER is parsed, its MAC, type, hostname,
        vendor class and client identifier come out.
        """
        p = DHCPPacket.from_wire(golden("udhcpc-discover.bin"))
        self.assertEqual(p.messageType, wire.DHCPDISCOVER)
        self.assertEqual(p.mac, "02:18:1e:00:00:01")
        self.assertEqual(p.textOption(OPT.HOSTNAME), "goldenhost")
        self.assertEqual(p.textOption(OPT.VENDOR_CLASS), "udhcp-golden")
        self.assertEqual(p.option(OPT.CLIENT_ID), b"\x01\x02\x18\x1e\x00\x00\x01")
        self.assertEqual(struct.unpack("!H", p.option(OPT.MAX_SIZE))[0], 576)
        self.assertEqual(list(p.option(OPT.PARAMETER_LIST)), [1, 3, 6, 12, 15, 28, 42])

    def test_udhcpcRequestRenewRelease(self):
        """
        If udhcpc's SELECTING REQUEST, RENEW and RELEASE are parsed, the
        requested address, server identifier and ciaddr are as sent.
        """
        p = DHCPPacket.from_wire(golden("udhcpc-request.bin"))
        self.assertEqual(p.messageType, wire.DHCPREQUEST)
        self.assertEqual(p.ipOption(OPT.REQUESTED_IP), "198.18.30.100")
        self.assertEqual(p.ipOption(OPT.SERVER_ID), "198.18.30.1")
        renew = DHCPPacket.from_wire(golden("udhcpc-renew.bin"))
        self.assertEqual(renew.ciaddr, "198.18.30.100")
        self.assertIsNone(renew.option(OPT.REQUESTED_IP))
        release = DHCPPacket.from_wire(golden("udhcpc-release.bin"))
        self.assertEqual(release.messageType, wire.DHCPRELEASE)
        self.assertEqual(release.ciaddr, "198.18.30.100")

    def test_iPXEBIOS(self):
        """
        If iPXE's BIOS DISCOVER is parsed: arch 0, UNDI 2.1, vendor class
        PXEClient, user class raw C{iPXE} (no length prefix), option 175
        with its feature sub-options.
        """
        p = DHCPPacket.from_wire(golden("ipxe-bios-discover.bin"))
        self.assertEqual(p.mac, "52:54:00:12:34:01")
        self.assertEqual(wire.parseArchitectures(p.option(OPT.CLIENT_ARCH)), [0])
        self.assertEqual(wire.parseUNDI(p.option(OPT.CLIENT_NDI)), (1, 2, 1))
        self.assertEqual(p.textOption(OPT.VENDOR_CLASS), "PXEClient:Arch:00000:UNDI:002001")
        self.assertEqual(wire.parseUserClass(p.option(OPT.USER_CLASS)), [b"iPXE"])
        sub = wire.parseSubOptions(p.option(OPT.IPXE))
        self.assertEqual(sub[19], b"\x01")  # 175.19: HTTP
        self.assertEqual(sub[235], b"\x01\x00\x00")  # 175.235: version 1.0.0
        self.assertEqual(wire.parseClientUUID(p.option(OPT.CLIENT_UUID)),
                         "00000000-0000-0000-0000-000000000000")

    def test_iPXEUEFI(self):
        """
        If iPXE's x64 UEFI DISCOVER is parsed: arch 7, UNDI 3.10, 175.36
        (EFI) present.
        """
        p = DHCPPacket.from_wire(golden("ipxe-efi-x64-discover.bin"))
        self.assertEqual(wire.parseArchitectures(p.option(OPT.CLIENT_ARCH)), [7])
        self.assertEqual(wire.parseUNDI(p.option(OPT.CLIENT_NDI)), (1, 3, 10))
        self.assertIn(36, wire.parseSubOptions(p.option(OPT.IPXE)))

    def test_EDK2(self):
        """
        If OVMF's own PXE client (EDK2) DISCOVER is parsed: broadcast flag
        set, arch 7, UNDI 3.0, no user class and no option 175.
        """
        p = DHCPPacket.from_wire(golden("edk2-x64-discover.bin"))
        self.assertTrue(p.broadcast)
        self.assertEqual(wire.parseArchitectures(p.option(OPT.CLIENT_ARCH)), [7])
        self.assertEqual(p.textOption(OPT.VENDOR_CLASS), "PXEClient:Arch:00007:UNDI:003000")
        self.assertNotIn(OPT.USER_CLASS, p.options)
        self.assertNotIn(OPT.IPXE, p.options)

    def test_EDK2UUIDByteOrder(self):
        """
        If OVMF runs with C{-uuid 12345678-9abc-def0-1122-334455667788}, its
        option 97 carries the first three fields little-endian, and
        L{wire.parseClientUUID} gives back the canonical text.
        """
        for name in ("edk2-x64-uuid-discover.bin", "ipxe-bios-uuid-discover.bin"):
            p = DHCPPacket.from_wire(golden(name))
            raw = p.option(OPT.CLIENT_UUID)
            self.assertEqual(raw[1:5], b"\x78\x56\x34\x12", name)
            self.assertEqual(wire.parseClientUUID(raw),
                             "12345678-9abc-def0-1122-334455667788", name)

    def test_goldenRoundTrip(self):
        """
        If any golden packet is parsed and serialised again, the header and
        every option come back the same.
        """
        for name in sorted(os.listdir(DATA)):
            if not name.endswith(".bin"):
                continue
            original = DHCPPacket.from_wire(golden(name))
            again = DHCPPacket.from_wire(original.to_wire())
            for field in ("op", "htype", "hlen", "xid", "secs", "flags", "ciaddr",
                          "yiaddr", "siaddr", "giaddr", "chaddr", "sname", "file"):
                self.assertEqual(getattr(again, field), getattr(original, field),
                                 (name, field))
            self.assertEqual(again.options, original.options, name)


class CodecTests(SynchronousTestCase):
    """
    Encoding and decoding details.
    """

    def test_roundTrip(self):
        """
        If a reply is built and parsed, every field and option survives, and
        the message type is written first.
        """
        p = DHCPPacket(op=wire.BOOTREPLY, xid=0xDEADBEEF, flags=0x8000, yiaddr="198.18.0.9",
                       siaddr="198.18.0.1", chaddr=bytes(range(6)), sname=b"srv",
                       file=b"undionly.kpxe")
        p.setOption(OPT.SERVER_ID, wire.ip2bytes("198.18.0.1"))
        p.setOption(OPT.MESSAGE_TYPE, b"\x02")
        data = p.to_wire()
        self.assertEqual(data[240:243], b"\x35\x01\x02")
        self.assertGreaterEqual(len(data), 300)
        q = DHCPPacket.from_wire(data)
        self.assertEqual((q.op, q.xid, q.flags, q.yiaddr, q.siaddr, q.sname, q.file),
                         (2, 0xDEADBEEF, 0x8000, "198.18.0.9", "198.18.0.1", b"srv",
                          b"undionly.kpxe"))
        self.assertEqual(q.messageType, wire.DHCPOFFER)
        self.assertEqual(q.mac, "00:01:02:03:04:05")

    def test_longOptionSplit(self):
        """
        If an option is longer than 255 bytes it is written as several
        instances and read back concatenated (RFC 3396).
        """
        p = DHCPPacket(chaddr=b"\x00" * 6)
        p.setOption(OPT.VENDOR, b"x" * 600)
        q = DHCPPacket.from_wire(p.to_wire())
        self.assertEqual(q.option(OPT.VENDOR), b"x" * 600)

    def test_overload(self):
        """
        If option 52 says the file and sname fields carry options, those
        options are read (file first), and the fields read as empty.
        """
        head = bytearray(minimal()[:240])
        fileOptions = b"\x43\x04boot\xff"
        snameOptions = b"\x42\x03srv\xff"
        head[44:44 + len(snameOptions)] = snameOptions
        head[108:108 + len(fileOptions)] = fileOptions
        data = bytes(head) + b"\x35\x01\x01\x34\x01\x03\xff"
        p = DHCPPacket.from_wire(data)
        self.assertEqual(p.overload, 3)
        self.assertEqual(p.option(OPT.BOOTFILE), b"boot")
        self.assertEqual(p.option(OPT.TFTP_SERVER), b"srv")
        self.assertEqual((p.file, p.sname), (b"", b""))

    def test_padAndNoEnd(self):
        """
        If options are padded with 0 and the END option is missing, the
        options are still read.
        """
        p = DHCPPacket.from_wire(minimal(b"\x00\x00\x35\x01\x03\x00"))
        self.assertEqual(p.messageType, wire.DHCPREQUEST)

    def test_userClassForms(self):
        """
        If option 77 is RFC 3004 length-prefixed it is split into its
        classes; if the prefixes do not add up (iPXE's raw C{iPXE}) it is
        one class.
        """
        self.assertEqual(wire.parseUserClass(b"\x04iPXE\x03foo"), [b"iPXE", b"foo"])
        self.assertEqual(wire.parseUserClass(b"iPXE"), [b"iPXE"])
        self.assertEqual(wire.parseUserClass(b"\x04iPXE"), [b"iPXE"])
        self.assertEqual(wire.parseUserClass(b"\x09iPXE"), [b"\x09iPXE"])
        self.assertEqual(wire.parseUserClass(b""), [])
        self.assertEqual(wire.encodeUserClass([b"a", b"bc"]), b"\x01a\x02bc")

    def test_architectures(self):
        """
        If option 93 lists several architectures, all are returned; an odd
        length is malformed.
        """
        self.assertEqual(wire.parseArchitectures(b"\x00\x07\x00\x09"), [7, 9])
        self.assertRaises(MalformedPacket, wire.parseArchitectures, b"\x00")

    def test_uuid(self):
        """
        If a GUID is encoded, its first three fields are byte-swapped, and
        decoding gives the text back.
        """
        text = "12345678-9abc-def0-1122-334455667788"
        raw = wire.encodeClientUUID(text)
        self.assertEqual(raw, bytes.fromhex("00" "78563412" "bc9a" "f0de" "1122"
                                            "334455667788"))
        self.assertEqual(wire.parseClientUUID(raw), text)
        self.assertRaises(MalformedPacket, wire.parseClientUUID, b"\x01" + b"\x00" * 16)
        self.assertRaises(MalformedPacket, wire.parseClientUUID, b"\x00" * 5)

    def test_pxeVendor(self):
        """
        If option 43 is built with discovery control, boot servers, menu,
        prompt and boot item, it parses back to the same.
        """
        data = wire.encodePXEVendor(discoveryControl=8, bootItem=(0x8000, 0),
                                    bootServers=[(0x8000, ["198.18.0.1"])],
                                    menu=[(0x8000, "provisioner")], prompt=(0, "boot"))
        parsed = wire.parsePXEVendor(data)
        self.assertEqual(parsed["discovery_control"], 8)
        self.assertEqual(parsed["boot_item"], (0x8000, 0))
        self.assertEqual(parsed["boot_servers"], [(0x8000, ["198.18.0.1"])])
        self.assertEqual(parsed["menu"], [(0x8000, "provisioner")])
        self.assertEqual(parsed["prompt"], (0, "boot"))
        self.assertEqual(data[-1:], b"\xff")
        self.assertEqual(wire.encodePXEVendor(discoveryControl=8), b"\x06\x01\x08\xff")

    def test_pxeVendorTruncated(self):
        """
        If a PXE sub-option's inner structure is truncated, the parse fails
        with L{MalformedPacket}.
        """
        for data in (b"\x08\x02\x80\x00", b"\x08\x03\x80\x00\x02", b"\x09\x04\x80\x00\x09a",
                     b"\x47\x02\x00\x00", b"\x0a\x00", b"\x06"):
            self.assertRaises(MalformedPacket, wire.parsePXEVendor, data)

    def test_relayAgentEcho(self):
        """
        If option 82 arrives with sub-options, its bytes are kept exactly
        (so they can be echoed).
        """
        agent = b"\x01\x04eth1\x02\x06\x00\x11\x22\x33\x44\x55"
        p = DHCPPacket.from_wire(minimal(b"\x35\x01\x01\x52" + bytes((len(agent),)) + agent +
                                         b"\xff"))
        self.assertEqual(p.option(OPT.RELAY_AGENT), agent)
        self.assertEqual(wire.parseSubOptions(agent), {1: b"eth1",
                                                       2: b"\x00\x11\x22\x33\x44\x55"})


MALFORMED = [
    ("empty", b""),
    ("one byte", b"\x01"),
    ("header only", b"\x01" * 236),
    ("no cookie", minimal()[:236] + b"\x00\x00\x00\x00\x35\x01\x01"),
    ("bad op", b"\x07" + minimal()[1:]),
    ("hlen 17", minimal()[:2] + b"\x11" + minimal()[3:]),
    ("option without length", minimal(b"\x35")),
    ("option past the end", minimal(b"\x35\x05\x01")),
    ("overload bad value", minimal(b"\x34\x01\x09\xff")),
    ("overload two bytes", minimal(b"\x34\x02\x01\x01\xff")),
]


class MalformedTests(SynchronousTestCase):
    """
    A table of broken datagrams: each raises L{MalformedPacket}, nothing
    else.
    """

    def test_table(self):
        """
        If any datagram of the table is parsed, L{MalformedPacket} is raised.
        """
        for name, data in MALFORMED:
            self.assertRaises(MalformedPacket, DHCPPacket.from_wire, data)

    def test_truncatedGolden(self):
        """
        If a golden packet is cut at any length, parsing either succeeds or
        raises L{MalformedPacket}.
        """
        data = golden("ipxe-bios-discover.bin")
        for n in range(len(data)):
            try:
                DHCPPacket.from_wire(data[:n])
            except MalformedPacket:
                pass

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(st.binary(min_size=0, max_size=700))
    def test_fuzzBytes(self, data):
        """
        If arbitrary bytes are parsed, only L{MalformedPacket} can be
        raised.
        """
        try:
            DHCPPacket.from_wire(data)
        except MalformedPacket:
            pass

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(st.binary(min_size=0, max_size=400))
    def test_fuzzOptions(self, options):
        """
        If a valid header is followed by arbitrary option bytes, parsing
        either succeeds or raises L{MalformedPacket}, and every option
        helper on the result either works or raises L{MalformedPacket}.
        """
        try:
            p = DHCPPacket.from_wire(minimal(options))
        except MalformedPacket:
            return
        helpers = [(OPT.CLIENT_ARCH, wire.parseArchitectures), (OPT.CLIENT_NDI, wire.parseUNDI),
                   (OPT.CLIENT_UUID, wire.parseClientUUID), (OPT.VENDOR, wire.parsePXEVendor),
                   (OPT.IPXE, wire.parseSubOptions), (OPT.USER_CLASS, wire.parseUserClass)]
        for code, helper in helpers:
            value = p.option(code)
            if value is None:
                continue
            try:
                helper(value)
            except MalformedPacket:
                pass
        p.to_wire()


class BootServerGoldenTests(SynchronousTestCase):
    """
    The second round of a UEFI chainload, captured from OVMF under QEMU.
    """

    def test_bootServerRequest(self):
        """
        If EDK2's REQUEST to port 4011 is parsed: type REQUEST, ciaddr set
        (the address it got), arch 7, no option 43, the UUID.
        """
        p = DHCPPacket.from_wire(golden("edk2-x64-bootserver-request.bin"))
        self.assertEqual(p.messageType, wire.DHCPREQUEST)
        self.assertEqual(p.ciaddr, "198.18.45.100")
        self.assertNotIn(OPT.VENDOR, p.options)
        self.assertEqual(wire.parseClientUUID(p.option(OPT.CLIENT_UUID)),
                         "12345678-9abc-def0-1122-334455667788")

    def test_snponly(self):
        """
        If snponly.efi (iPXE loaded as the NBP) asks again, it carries
        option 77 C{iPXE} and option 175, and UNDI 3.10.
        """
        p = DHCPPacket.from_wire(golden("snponly-efi-discover.bin"))
        self.assertEqual(wire.parseUserClass(p.option(OPT.USER_CLASS)), [b"iPXE"])
        self.assertIn(OPT.IPXE, p.options)
        self.assertEqual(p.textOption(OPT.VENDOR_CLASS), "PXEClient:Arch:00007:UNDI:003010")
