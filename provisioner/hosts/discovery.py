# -*- test-case-name: tests.test_hosts -*-
"""
Discovery: machines no inventory names, recorded when they are served a
boot menu or fetch a file, with what DHCP learnt of them (architecture,
vendor class, UUID) and the last files they fetched.

A fetch only tells the address of the client: L{Discovery} remembers the
MAC each menu went to at each address (and asks the client directory
first). The least recently seen machines beyond C{hosts.max_discovered}
are forgotten.
"""

import collections

from provisioner.hosts import lifecycle
from provisioner.hosts.lifecycle import DISCOVERED
from provisioner.store.records import Machine

__all__ = ["Discovery"]

#: addresses remembered with the MAC that fetched a menu from them
_IP_MEMORY = 65536


def _uuid(value):
    if not value or not str(value).strip("0-"):
        return None  # all-zero GUIDs identify nobody
    return str(value)


class Discovery:
    """
    The discovered machines of one L{provisioner.hosts.book.HostBook}.

    It reads the book's C{clients}, C{inventory}, C{store},
    C{eventsPerHost}, C{filesPerMachine} and C{maxDiscovered} when it needs
    them (L{HostBook.configure} may change them), keeps the machines'
    histories in the book's C{events}, and logs and saves through the book
    (so its lines are the book's: namespace
    C{provisioner.hosts.book.HostBook}).

    @ivar machines: C{{mac: Machine}}, least recently seen first.
    """

    def __init__(self, book):
        self.book = book
        self.machines = collections.OrderedDict()
        self._macByIP = collections.OrderedDict()

    def restore(self, machines):
        """
        Take the machines the store holds (at start), instead of any in
        memory.
        """
        self.machines = collections.OrderedDict(
            (m.mac, m) for m in sorted(machines, key=lambda m: m.last_seen))

    def trim(self, filesPerMachine):
        """
        Cut every machine's list of files to C{filesPerMachine}.
        """
        for machine in self.machines.values():
            del machine.files[:-filesPerMachine]

    def learn(self, ip, mac):
        """
        Remember that the menu served to C{ip} was C{mac}'s.
        """
        if not ip or not mac:
            return
        self._macByIP[ip] = mac
        self._macByIP.move_to_end(ip)
        while len(self._macByIP) > _IP_MEMORY:
            self._macByIP.popitem(last=False)

    def _macOf(self, ip):
        clients = self.book.clients
        if clients is not None:
            record = clients.byIP(ip)
            if record is not None and record.mac:
                return record.mac, record
        mac = self._macByIP.get(ip)
        if mac is None:
            return None, None
        record = clients.byMAC(mac) if clients is not None else None
        return mac, record

    def _inInventory(self, mac, record=None):
        inventory = self.book.inventory()
        if inventory is None:
            return False
        uuid = _uuid(getattr(record, "uuid", None))
        hostname = getattr(record, "hostname", None)
        return inventory.lookup(mac=mac, uuid=uuid, hostname=hostname) is not None

    def fetched(self, protocol, ip, path, now):
        """
        A complete fetch of C{path} by C{ip} that no token claims: the
        machine at that address is discovered (or seen again) with the file,
        unless it is a host (adopted, or named by the inventory).
        """
        mac, client = self._macOf(ip)
        if mac is None or mac in self.book._adoptedByMAC or self._inInventory(mac, client):
            return
        self.seen(mac, ip, {"path": path, "protocol": protocol, "time": now}, None, now)

    def seen(self, mac, ip, fetched, facts, now):
        """
        A machine no inventory names was served a boot menu (C{facts}, the
        L{provisioner.menus.render.ClientFacts}) or fetched a file
        (C{fetched}: C{path}, C{protocol}, C{time}): record it, discovered
        if new, and save it.
        """
        book = self.book
        client = book.clients.byMAC(mac) if book.clients is not None else None
        machine = self.machines.get(mac)
        event = None
        if machine is None:
            machine = Machine(mac=mac, first_seen=now, files=[])
            event = self._discovered(mac, ip, fetched, now)
        machine.last_seen = now
        machine.ip = ip or machine.ip
        self._describe(machine, facts, client)
        if fetched is not None:
            machine.files.append(fetched)
            del machine.files[:-book.filesPerMachine]
        self.machines[mac] = machine
        self.machines.move_to_end(mac)
        book._write(book.store.saveMachine(machine, event, book.eventsPerHost),
                    "discovered machine %s" % (mac,))
        self.evict()

    def _discovered(self, mac, ip, fetched, now):
        """
        Record and log the discovery of C{mac}.

        @return: the event.
        """
        if fetched is not None:
            why = "a MAC no inventory names fetched %s over %s from %s" % (
                fetched["path"], fetched["protocol"], ip)
        else:
            why = "a MAC no inventory names was served a boot menu at %s" % (ip,)
        event = lifecycle.transition(mac, None, DISCOVERED, why, now)
        self.book._record(mac, event)
        self.book.log.info("hosts: discovered {mac}: {why}", mac=mac, why=why)
        return event

    def _describe(self, machine, facts, client):
        """
        What the menu's facts and the client directory say of a machine:
        architecture, vendor class, UUID.
        """
        arch = getattr(facts, "arch", None)
        if arch is None and client is not None:
            arch = client.arch
        if arch is not None:
            machine.arch = arch
        if client is not None and client.vendor_class:
            machine.vendor_class = client.vendor_class
        uuid = _uuid(getattr(client, "uuid", None)) or _uuid(getattr(facts, "uuid", None))
        if uuid:
            machine.uuid = uuid

    def evict(self):
        """
        Forget the least recently seen machines beyond C{maxDiscovered}.
        """
        while len(self.machines) > self.book.maxDiscovered:
            mac = next(iter(self.machines))
            self.forget(mac)

    def forget(self, mac):
        """
        Forget a machine and its history (evicted, or a host now).
        """
        self.machines.pop(mac, None)
        self.book.events.pop(mac, None)
        self.book._write(self.book.store.forgetMachine(mac), "discovered machine %s" % (mac,))
