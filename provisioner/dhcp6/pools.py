# -*- test-case-name: tests.test_dhcp6_server -*-
"""
Full mode's address pools (C{dhcp6.subnets}): which pool serves an
interface, and which address an IA gets.

An IA's first choice is a function of its DUID and IAID (a hash into the
range), so a client that lost its lease gets the same address back while
it is free; from there the range is probed in order for a free address, up
to L{MAX_PROBES} of them.
"""

import hashlib
import ipaddress

__all__ = ["Pool6", "Pools6", "MAX_PROBES"]

#: addresses looked at for one IA before the pool is called exhausted
MAX_PROBES = 65536


class Pool6:
    """
    One C{dhcp6.subnets} entry.

    @ivar prefix: its C{IPv6Network}.
    @ivar first: the range's first address, as an int.
    @ivar last: its last address, as an int.
    @ivar dns: DNS servers (text).
    @ivar preferred: preferred lifetime, seconds.
    @ivar valid: valid lifetime, seconds.
    """

    def __init__(self, entry, config):
        self.prefix = ipaddress.IPv6Network(entry["prefix"], strict=False)
        first, last = entry["range"]
        self.first = int(ipaddress.IPv6Address(first))
        self.last = int(ipaddress.IPv6Address(last))
        self.dns = [str(ipaddress.IPv6Address(a)) for a in entry.get("dns", [])]
        self.valid = entry.get("valid_lifetime") or config["valid_lifetime"]
        self.preferred = min(entry.get("preferred_lifetime") or config["preferred_lifetime"],
                             self.valid)

    @property
    def size(self):
        return self.last - self.first + 1

    def inRange(self, address):
        try:
            value = int(ipaddress.IPv6Address(address))
        except ValueError:
            return False
        return self.first <= value <= self.last

    def onLink(self, address):
        try:
            return ipaddress.IPv6Address(address) in self.prefix
        except ValueError:
            return False

    def choose(self, store, duid, iaid, hint=None):
        """
        A free address of the range for the IA C{(duid, iaid)}: C{hint}
        (an address the client asked for) if it is free and in the range,
        else the first free one from the IA's own starting point.

        @return: the address (text), or L{None} if none is free.
        """
        if hint is not None and self.inRange(hint):
            hint = str(ipaddress.IPv6Address(hint))
            if store.isFree(hint, duid, iaid):
                return hint
        size = self.size
        digest = hashlib.blake2b(("%s/%d" % (duid, iaid)).encode(), digest_size=8).digest()
        start = int.from_bytes(digest, "big") % size
        for step in range(min(size, MAX_PROBES)):
            candidate = str(ipaddress.IPv6Address(self.first + (start + step) % size))
            if store.isFree(candidate, duid, iaid):
                return candidate
        return None

    def __repr__(self):
        return "<Pool6 %s %s-%s>" % (self.prefix, ipaddress.IPv6Address(self.first),
                                     ipaddress.IPv6Address(self.last))


class Pools6:
    """
    The pools of C{dhcp6.subnets}.
    """

    def __init__(self, config):
        self.reconfigure(config)

    def reconfigure(self, config):
        self.pools = [Pool6(entry, config) for entry in config["subnets"]]

    def forInterface(self, iface):
        """
        The pool serving requests that arrived on C{iface}: the first whose
        prefix holds one of the interface's addresses, else the only pool
        there is, else L{None}.
        """
        for pool in self.pools:
            if any(pool.onLink(a) for a in iface.addresses):
                return pool
        if len(self.pools) == 1:
            return self.pools[0]
        return None

    def onLink(self, address):
        """
        Whether C{address} is inside one of the prefixes.
        """
        return any(pool.onLink(address) for pool in self.pools)
