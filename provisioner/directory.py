# -*- test-case-name: tests.test_clients -*-
"""
What the appliance knows of each client: written by DHCP, read by TFTP (the
injector) and the boot menus. In memory, bounded (least recently seen go
first).
"""

import time
from collections import OrderedDict

from zope.interface import implementer

from provisioner.interfaces import IClientDirectory

__all__ = ["ClientRecord", "ClientDirectory", "normaliseMAC"]


def normaliseMAC(mac):
    """
    Return a MAC as C{aa:bb:cc:dd:ee:ff}, from bytes, or text with C{:}, C{-}
    or no separators. Raises L{ValueError} for anything else.
    """
    if isinstance(mac, (bytes, bytearray)):
        if len(mac) != 6:
            raise ValueError("a MAC is 6 bytes")
        return ":".join("%02x" % b for b in mac)
    text = str(mac).strip().lower().replace("-", ":").replace(".", "")
    if ":" not in text and len(text) == 12:
        text = ":".join(text[i:i + 2] for i in range(0, 12, 2))
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError("not a MAC address: %r" % (mac,))
    int("".join(parts), 16)
    return text


class ClientRecord:
    """
    Facts about one client. Attributes are set by whoever learns them;
    unknown ones are L{None}.

    @ivar mac: C{aa:bb:cc:dd:ee:ff} or L{None}.
    @ivar ip: the client's IPv4/IPv6 address as text, or L{None}.
    @ivar arch: the DHCP option 93 architecture number, or L{None}.
    @ivar ipxe: L{True} when DHCP saw options 77 C{iPXE} or 175.
    @ivar seen: when it was last updated (seconds since the epoch).
    @ivar injected: when the bootstrap program was last injected to it.
    """

    FIELDS = ("mac", "ip", "arch", "ipxe", "vendor_class", "user_class", "hostname",
              "uuid", "boot_file", "injected", "seen")

    def __init__(self, **fields):
        for name in self.FIELDS:
            setattr(self, name, None)
        for name, value in fields.items():
            setattr(self, name, value)

    def asDict(self):
        return {name: getattr(self, name) for name in self.FIELDS}

    def __repr__(self):
        return "<ClientRecord mac=%s ip=%s arch=%s ipxe=%s>" % (
            self.mac, self.ip, self.arch, self.ipxe)


@implementer(IClientDirectory)
class ClientDirectory:
    """
    Records by MAC and by IP. A record learnt by IP only (a TFTP client DHCP
    never saw) is kept too.
    """

    def __init__(self, maximum=100000, clock=time.time):
        self._byMAC = OrderedDict()
        self._byIP = {}
        self._maximum = maximum
        self._clock = clock

    def update(self, mac=None, ip=None, **fields):
        if mac is not None:
            mac = normaliseMAC(mac)
        record = None
        if mac is not None:
            record = self._byMAC.get(mac)
        if record is None and ip is not None:
            record = self._byIP.get(ip)
            if record is not None and mac is not None and record.mac not in (None, mac):
                record = None  # the address moved to another machine
        if record is None:
            record = ClientRecord(mac=mac, ip=ip)
        if mac is not None:
            record.mac = mac
            self._byMAC[mac] = record
            self._byMAC.move_to_end(mac)
        if ip is not None:
            if record.ip is not None and record.ip != ip and self._byIP.get(record.ip) is record:
                del self._byIP[record.ip]
            record.ip = ip
            self._byIP[ip] = record
        for name, value in fields.items():
            setattr(record, name, value)
        record.seen = self._clock()
        self._evict()
        return record

    def _evict(self):
        while len(self._byMAC) > self._maximum:
            _, old = self._byMAC.popitem(last=False)
            if old.ip is not None and self._byIP.get(old.ip) is old:
                del self._byIP[old.ip]
        while len(self._byIP) > 2 * self._maximum:
            self._byIP.pop(next(iter(self._byIP)))

    def byMAC(self, mac):
        try:
            return self._byMAC.get(normaliseMAC(mac))
        except ValueError:
            return None

    def byIP(self, ip):
        return self._byIP.get(ip)

    def __iter__(self):
        return iter(list(self._byMAC.values()))

    def __len__(self):
        return len(self._byMAC)
