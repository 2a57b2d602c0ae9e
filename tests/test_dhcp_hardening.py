# -*- test-case-name: tests.test_dhcp_hardening -*-
"""
Hostile clients against the full-mode responder (issue 14, finding 4):
DECLINE and RELEASE from clients that do not hold the address, DECLINEs
outside the pools, the cap on declined addresses, and a DISCOVER flood from
random MACs. Everything runs on a L{task.Clock} with the synchronous lease
writer.
"""

import os
import random
import sqlite3

from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel
from twisted.trial.unittest import SynchronousTestCase

from provisioner.directory import ClientDirectory
from provisioner.dhcp import wire
from provisioner.dhcp.leases import LeaseStore
from provisioner.dhcp.server import DHCPResponder
from provisioner.dhcp.wire import OPT

from tests.test_dhcp_server import FULL, IFACE, SERVER, Sent, config, request

OWNER = b"\x52\x54\x00\x00\x00\x01"
OTHER = b"\x52\x54\x00\x00\x00\x02"

# Fifty addresses: 198.18.0.100 to 198.18.0.149.
POOL50 = """\
dhcp:
  mode: full
  lease_time: 600
  subnets:
    - network: 198.18.0.0/24
      range: [198.18.0.100, 198.18.0.149]
"""

# Eight addresses, at most two of them declined at once.
POOL8 = """\
dhcp:
  mode: full
  lease_time: 600
  decline_share: 0.25
  subnets:
    - network: 198.18.0.0/24
      range: [198.18.0.100, 198.18.0.107]
"""


def macOf(number):
    """
    A locally administered MAC made from a number, as chaddr bytes.
    """
    return bytes([0x02, 0x00]) + number.to_bytes(4, "big")


def text(mac):
    return ":".join("%02x" % (b,) for b in mac)


class _Hostile(SynchronousTestCase):
    """
    A full-mode responder, its lease store and a record of its log events.
    """

    configText = FULL

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(10000)
        self.path = os.path.join(self.mktemp(), "leases.sqlite")
        self.leases = LeaseStore(self.path, self.clock)
        self.addCleanup(self.leases.close)
        self.events = []
        # The responder hands its logger to its parts when it is made.
        self.patch(DHCPResponder, "log", Logger(observer=self.events.append))
        self.responder = DHCPResponder(config(self.configText), self.clock,
                                       ClientDirectory(clock=self.clock.seconds), self.leases)
        self.sent = Sent()

    def send(self, kind, mac=OWNER, options=(), **fields):
        before = len(self.sent)
        self.responder.handleDHCP(request(kind, mac, options, **fields), IFACE, self.sent)
        return [packet for packet, _ in self.sent[before:]]

    def dora(self, mac=OWNER, clientId=None):
        """
        DISCOVER, OFFER, REQUEST, and the answer to the REQUEST (or L{None}).
        """
        extra = [(OPT.CLIENT_ID, clientId)] if clientId is not None else []
        [offer] = self.send(wire.DHCPDISCOVER, mac, extra)
        return self.select(mac, offer.yiaddr, extra)

    def select(self, mac, ip, extra=()):
        answers = self.send(wire.DHCPREQUEST, mac, list(extra) + [
            (OPT.SERVER_ID, wire.ip2bytes(SERVER)),
            (OPT.REQUESTED_IP, wire.ip2bytes(ip))])
        return answers[-1] if answers else None

    def renew(self, mac, ip):
        [answer] = self.send(wire.DHCPREQUEST, mac, ciaddr=ip)
        return answer

    def decline(self, mac, ip, extra=()):
        return self.send(wire.DHCPDECLINE, mac, list(extra) + [
            (OPT.SERVER_ID, wire.ip2bytes(SERVER)), (OPT.REQUESTED_IP, wire.ip2bytes(ip))])

    def release(self, mac, ip, extra=()):
        return self.send(wire.DHCPRELEASE, mac, list(extra) + [
            (OPT.SERVER_ID, wire.ip2bytes(SERVER))], ciaddr=ip)

    def rows(self):
        connection = sqlite3.connect(self.path)
        try:
            return sorted(connection.execute("SELECT mac, ip FROM leases").fetchall())
        finally:
            connection.close()

    def declined(self):
        return sorted(lease.ip for lease in self.leases if lease.state == "declined")

    def assertQuietlyIgnored(self, kind, count=1):
        """
        C{count} events say a C{kind} was ignored, each one line at debug
        with named fields; nothing was logged above info.
        """
        ignored = [e for e in self.events if e.get("kind") == kind and "why" in e]
        self.assertEqual(len(ignored), count)
        for event in ignored:
            self.assertEqual(event["log_level"], LogLevel.debug)
            self.assertNotIn("!r", event["log_format"])
            for name in ("ip", "mac", "why"):
                self.assertIsInstance(event[name], str)
        self.assertEqual([e for e in self.events if e["log_level"] > LogLevel.info], [])


class DeclineReleaseTests(_Hostile):
    """
    DECLINE and RELEASE act only for the holder of the address.
    """

    def test_declineFromAnotherMAC(self):
        """
        If another MAC declines a client's leased address, the lease is
        kept (in memory and on disk), nothing is declined, the event is one
        debug line, and the holder's renewal is still ACKed.
        """
        ack = self.dora()
        self.assertEqual((ack.messageType, ack.yiaddr), (wire.DHCPACK, "198.18.0.100"))
        self.decline(OTHER, "198.18.0.100")
        self.assertEqual(self.leases.byMAC(text(OWNER)).state, "bound")
        self.assertEqual(self.leases.byIP("198.18.0.100").mac, text(OWNER))
        self.assertEqual(self.declined(), [])
        self.assertEqual(self.rows(), [(text(OWNER), "198.18.0.100")])
        self.assertQuietlyIgnored("DECLINE")
        renewal = self.renew(OWNER, "198.18.0.100")
        self.assertEqual((renewal.messageType, renewal.yiaddr),
                         (wire.DHCPACK, "198.18.0.100"))

    def test_declineOfAnOffer(self):
        """
        If another MAC declines an address offered to a client, the offer
        stands and the client's REQUEST is ACKed.
        """
        [offer] = self.send(wire.DHCPDISCOVER, OWNER)
        self.decline(OTHER, offer.yiaddr)
        self.assertEqual(self.declined(), [])
        ack = self.select(OWNER, offer.yiaddr)
        self.assertEqual((ack.messageType, ack.yiaddr), (wire.DHCPACK, offer.yiaddr))

    def test_releaseFromAnotherMAC(self):
        """
        If another MAC releases a client's lease, the lease is kept.
        """
        self.dora()
        self.release(OTHER, "198.18.0.100")
        self.assertEqual(self.leases.byMAC(text(OWNER)).ip, "198.18.0.100")
        self.assertEqual(self.rows(), [(text(OWNER), "198.18.0.100")])
        self.assertQuietlyIgnored("RELEASE")

    def test_wrongClientIdentifier(self):
        """
        If a DECLINE or RELEASE has the holder's MAC but another client
        identifier (option 61), or none while the lease recorded one, the
        lease is kept; with the lease's identifier, a RELEASE works.
        """
        mine = b"\x01" + OWNER
        theirs = b"\x00attacker"
        self.dora(clientId=mine)
        self.assertEqual(self.leases.byMAC(text(OWNER)).clientId, mine.hex())
        self.decline(OWNER, "198.18.0.100", [(OPT.CLIENT_ID, theirs)])
        self.release(OWNER, "198.18.0.100", [(OPT.CLIENT_ID, theirs)])
        self.decline(OWNER, "198.18.0.100")
        self.release(OWNER, "198.18.0.100")
        self.assertEqual(self.leases.byMAC(text(OWNER)).state, "bound")
        self.assertEqual(self.declined(), [])
        self.assertEqual(self.rows(), [(text(OWNER), "198.18.0.100")])
        self.assertQuietlyIgnored("DECLINE", 2)
        self.assertQuietlyIgnored("RELEASE", 2)
        self.release(OWNER, "198.18.0.100", [(OPT.CLIENT_ID, mine)])
        self.assertIsNone(self.leases.byMAC(text(OWNER)))
        self.assertEqual(self.rows(), [])

    def test_declineByHolder(self):
        """
        If the holder declines its address (with its client identifier),
        the lease goes and the address is held away from the next client.
        """
        mine = b"\x01" + OWNER
        self.dora(clientId=mine)
        self.decline(OWNER, "198.18.0.100", [(OPT.CLIENT_ID, mine)])
        self.assertIsNone(self.leases.byMAC(text(OWNER)))
        self.assertEqual(self.declined(), ["198.18.0.100"])
        self.assertFalse(self.leases.isFree("198.18.0.100", text(OTHER)))

    def test_declineOutsideEveryPool(self):
        """
        If DECLINEs name addresses of no subnet, of the subnet but outside
        its range, or of another subnet than the one the packet arrived
        for, nothing is stored, in memory or on disk.
        """
        self.dora()
        before = (len(self.leases), self.rows())
        for number, ip in enumerate(["10.0.0.5", "198.18.0.5", "198.18.0.255",
                                     "198.18.7.10", "255.255.255.255", "0.0.0.0"]):
            self.decline(macOf(number), ip)
        self.assertEqual((len(self.leases), self.rows()), before)
        self.assertEqual(self.declined(), [])
        self.assertQuietlyIgnored("DECLINE", 6)

    def test_fiftyThousandDeclines(self):
        """
        If 50,000 DECLINEs from distinct MACs name pool addresses those MACs
        do not hold, the store keeps its size (2 leases before and after),
        both leases stay, and the free address is still offered.
        """
        self.dora(OWNER)
        self.dora(OTHER)
        size = len(self.leases)
        self.assertEqual(size, 2)
        rows = self.rows()
        pool = ["198.18.0.100", "198.18.0.101", "198.18.0.102"]
        for number in range(50000):
            self.decline(macOf(number), pool[number % 3])
        self.assertEqual(len(self.leases), size)
        self.assertEqual(self.rows(), rows)
        self.assertEqual(self.declined(), [])
        self.assertEqual(self.responder.stats["DECLINE-ignored"], 50000)
        self.assertEqual(self.dora(b"\x52\x54\x00\x00\x00\x03").yiaddr, "198.18.0.102")


class DeclineCapTests(_Hostile):
    """
    C{dhcp.decline_share}: declined addresses are bounded per pool.
    """

    configText = POOL8

    def test_cap(self):
        """
        If clients keep taking addresses and declining them, at most
        C{decline_share} of the pool (2 of 8) is held as declined at once,
        the oldest freed first, in memory and on disk.
        """
        held = []
        for number in range(6):
            ack = self.dora(macOf(number))
            self.assertEqual(ack.messageType, wire.DHCPACK)
            self.decline(macOf(number), ack.yiaddr)
            held.append(ack.yiaddr)
            self.assertEqual(self.declined(), sorted(held[-2:]))
        self.assertEqual(self.rows(), sorted(("declined:" + ip, ip) for ip in held[-2:]))
        for ip in held[:-2]:
            self.assertTrue(self.leases.isFree(ip, "02:00:00:00:01:00"))

    def test_capAfterRestart(self):
        """
        If the store is reopened, the declined addresses it loads count
        towards the cap, oldest first.
        """
        for number in range(2):
            self.decline(macOf(number), self.dora(macOf(number)).yiaddr)
            self.clock.advance(1)
        first, second = self.declined()
        self.leases = LeaseStore(self.path, self.clock)
        self.addCleanup(self.leases.close)
        self.responder.leases = self.leases
        ack = self.dora(macOf(9))
        self.decline(macOf(9), ack.yiaddr)
        self.assertEqual(self.declined(), sorted([second, ack.yiaddr]))


class DiscoverFloodTests(_Hostile):
    """
    A DISCOVER flood from random MACs cannot hold the pool.
    """

    configText = POOL50

    def flood(self, count, seed):
        """
        C{count} DISCOVERs from random MACs; returns how many were offered.
        """
        rng = random.Random(seed)
        offered = 0
        for _ in range(count):
            mac = bytes([0x02]) + bytes(rng.randrange(256) for _ in range(5))
            offered += len(self.send(wire.DHCPDISCOVER, mac))
        return offered

    def bound(self):
        return sorted(lease.mac for lease in self.leases if lease.state == "bound")

    def test_flood(self):
        """
        If 500 DISCOVERs (10x the pool of 50) from random MACs arrive, then
        more of them between a new client's DISCOVER and its REQUEST, the
        new client completes DORA; a client that already had a lease is
        offered its own address and its renewal is ACKed. Bound leases:
        1 before, 2 after; nothing the flood did is on disk.
        """
        known = b"\x52\x54\x00\x00\x00\x0a"
        newcomer = b"\x52\x54\x00\x00\x00\x0b"
        ip = self.dora(known).yiaddr
        self.assertEqual(self.bound(), [text(known)])
        self.flood(500, 1)
        [offer] = self.send(wire.DHCPDISCOVER, newcomer)
        self.flood(500, 2)
        ack = self.select(newcomer, offer.yiaddr)
        self.assertEqual((ack.messageType, ack.yiaddr), (wire.DHCPACK, offer.yiaddr))
        [again] = self.send(wire.DHCPDISCOVER, known)
        self.assertEqual(again.yiaddr, ip)
        renewal = self.renew(known, ip)
        self.assertEqual((renewal.messageType, renewal.yiaddr), (wire.DHCPACK, ip))
        self.assertEqual(self.bound(), sorted([text(known), text(newcomer)]))
        self.assertEqual(sorted(mac for mac, _ in self.rows()),
                         sorted([text(known), text(newcomer)]))
        self.assertLessEqual(len(self.leases), 50)

    def test_floodHoldsLittle(self):
        """
        If a flood has put the pool under pressure, the offers it gets
        beyond half the pool are held only C{offer_hold_pressure} seconds:
        4 s later only the first 25 are still held.
        """
        self.assertEqual(self.flood(500, 3), 500)
        self.assertEqual(self.leases.outstandingOffers("198.18.0.0/24"), 50)
        self.clock.advance(4)
        self.assertEqual(self.leases.outstandingOffers("198.18.0.0/24"), 25)
        self.clock.advance(27)
        self.assertEqual(self.leases.outstandingOffers("198.18.0.0/24"), 0)

    def test_floodCostBounded(self):
        """
        If a flood has filled a pool of 1,024 addresses with offers, a
        further DISCOVER from a new MAC is still offered an address and
        looks at no more than 64 addresses for it, not the whole pool.
        """
        self.responder.reconfigure(config(
            "dhcp:\n  mode: full\n  subnets:\n    - network: 198.18.0.0/21\n"
            "      range: [198.18.1.0, 198.18.4.255]\n"))
        self.flood(3000, 5)
        self.assertEqual(self.leases.outstandingOffers("198.18.0.0/21"), 1024)
        looked = []
        isFree = self.leases.isFree
        self.patch(self.leases, "isFree", lambda *a: looked.append(a) or isFree(*a))
        self.assertEqual(len(self.send(wire.DHCPDISCOVER, OWNER)), 1)
        self.assertLessEqual(len(looked), 66)

    def test_crowd(self):
        """
        If 50 machines boot at once (every DISCOVER before any REQUEST),
        each is offered a different address and all 50 are ACKed.
        """
        offers = []
        for number in range(50):
            [offer] = self.send(wire.DHCPDISCOVER, macOf(number))
            offers.append(offer.yiaddr)
        self.assertEqual(len(set(offers)), 50)
        acks = [self.select(macOf(number), ip) for number, ip in enumerate(offers)]
        self.assertEqual({ack.messageType for ack in acks}, {wire.DHCPACK})
        self.assertEqual(len(self.bound()), 50)

    def test_floodThenRequestsForOffers(self):
        """
        If flood MACs REQUEST the addresses they were weakly offered after a
        real client did, the real client keeps its lease (they are NAKed or
        get another address, never its own).
        """
        newcomer = b"\x52\x54\x00\x00\x00\x0b"
        self.flood(500, 4)
        [offer] = self.send(wire.DHCPDISCOVER, newcomer)
        self.assertEqual(self.select(newcomer, offer.yiaddr).messageType, wire.DHCPACK)
        answer = self.select(macOf(7), offer.yiaddr)
        self.assertEqual(answer.messageType, wire.DHCPNAK)
        self.assertEqual(self.leases.byIP(offer.yiaddr).mac, text(newcomer))
