# -*- test-case-name: tests.test_hosts -*-
"""
What an operator may change, and who is one: L{AdminActions.isAdmin}
(C{hosts.admin_networks}, or the appliance's own address), redeploy (the
host's next boot deploys again) and adopt (a discovered machine becomes a
host at once; the answer carries the inventory stanza to paste,
L{inventoryStanza}: the inventory file stays the operator's).
"""

import ipaddress
import re

from twisted.internet import defer

from provisioner.directory import normaliseMAC
from provisioner.hosts.errors import BadRequest, Conflict, NotFound
from provisioner.hosts.lifecycle import READY, TransitionRefused

__all__ = ["AdminActions", "inventoryStanza"]

_NAME = re.compile(r"^[^\s/.][^\s/]{0,62}$")


def inventoryStanza(name, mac, profile):
    """
    The YAML an operator pastes under C{hosts:} in the inventory to keep an
    adopted host.
    """
    return ("# provisioner hosts adopt: paste under hosts: in your inventory file\n"
            "  %s:\n"
            "    mac: %s\n"
            "    profile: %s\n" % (name, mac, profile))


def _plain(address):
    """
    An address as an C{ipaddress} object, IPv4-mapped IPv6 as IPv4.

    @raise ValueError: not an address.
    """
    ip = ipaddress.ip_address(address)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip


class AdminActions:
    """
    The operator's requests to one L{provisioner.hosts.book.HostBook}. It
    reads the book's C{adminNetworks} when asked (L{HostBook.configure} may
    change them); states change through the book's C{_transition} and
    adoptions through its C{_adopt} (their lines are the book's).
    """

    def __init__(self, book):
        self.book = book

    def isAdmin(self, address, local=None):
        """
        See L{provisioner.hosts.book.HostBook.isAdmin}.
        """
        try:
            ip = _plain(address)
        except ValueError:
            return False
        if local:
            try:
                if ip == _plain(local):
                    return True
            except ValueError:
                pass
        return any(ip in network for network in self.book.adminNetworks)

    def redeploy(self, name, peer=None):
        """
        See L{provisioner.hosts.book.HostBook.redeploy}.
        """
        book = self.book
        book._require()
        book.sync()
        record = book.hosts.get(name)
        if record is None:
            raise NotFound("no host %r" % (name,))
        if record.state == READY:
            raise Conflict("%s is ready already: its next boot deploys" % (name,))
        now = book.clock.seconds()
        try:
            d = book._transition(record, READY, "redeploy requested from %s" % (
                peer or "the command line",), now)
        except TransitionRefused as e:
            raise Conflict(str(e))
        writes = [d] + book._ledger.useUp(name, now)
        return defer.gatherResults(writes, consumeErrors=True).addCallback(
            lambda _: book.hostInfo(name))

    def adopt(self, mac, name, profile, peer=None):
        """
        See L{provisioner.hosts.book.HostBook.adopt}.
        """
        book = self.book
        book._require()
        book.sync()
        try:
            mac = normaliseMAC(mac)
        except (ValueError, TypeError):
            raise BadRequest("not a MAC address: %r" % (mac,))
        if not isinstance(name, str) or not _NAME.match(name):
            raise BadRequest("a host name has 1 to 63 characters, no spaces, no '/', no "
                             "leading '.' (got %r)" % (name,))
        inventory = book.inventory()
        if inventory is None:
            raise Conflict("no inventory (the menus service is not running): no profile to "
                           "adopt with")
        if profile not in inventory.profiles:
            raise BadRequest("no profile %r in the inventory (profiles: %s)" % (
                profile, ", ".join(sorted(inventory.profiles)) or "none"))
        if name in inventory.hosts or name in book.hosts:
            raise Conflict("%s is a host already" % (name,))
        owner = inventory.lookup(mac=mac)
        if owner is not None or mac in book._adoptedByMAC:
            raise Conflict("%s is host %s's already" % (
                mac, owner.name if owner is not None else book._adoptedByMAC[mac]))
        why = "adopted by %s with profile %s" % (peer or "the command line", profile)
        d = book._adopt(mac, name, [mac], profile, why, book.clock.seconds())
        return d.addCallback(lambda _: {"host": book.hostInfo(name),
                                        "yaml": inventoryStanza(name, mac, profile)})
