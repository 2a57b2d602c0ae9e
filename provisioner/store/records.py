# -*- test-case-name: tests.test_hosts_store -*-
"""
The records an L{provisioner.store.interfaces.IHostStore} keeps: plain
values, no behaviour, no database types, so that any store (SQLite now,
PostgreSQL later) takes and gives back the same objects.

Times are seconds since the epoch (C{float}); MACs are
C{aa:bb:cc:dd:ee:ff}; lists are lists of plain values.
"""

__all__ = ["HostRecord", "Event", "Machine", "Token", "Snapshot"]


class _Record:
    """
    Fields named by C{FIELDS}, compared by value.
    """

    FIELDS = ()

    def __init__(self, **fields):
        unknown = set(fields) - set(self.FIELDS)
        if unknown:
            raise TypeError("unknown fields %s" % (", ".join(sorted(unknown)),))
        for name in self.FIELDS:
            setattr(self, name, fields.get(name))

    def asDict(self):
        out = {}
        for name in self.FIELDS:
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, (list, tuple)) else value
        return out

    def copy(self):
        return self.__class__(**self.asDict())

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self.asDict() == other.asDict()

    def __ne__(self, other):
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __repr__(self):
        return "<%s %s>" % (self.__class__.__name__, " ".join(
            "%s=%r" % (name, getattr(self, name)) for name in self.FIELDS))


class HostRecord(_Record):
    """
    One host's place in its lifecycle.

    @ivar name: the host's name (the inventory's key, or the name it was
        adopted under).
    @ivar state: C{ready}, C{deploying}, C{deployed} or C{failed}.
    @ivar since: when it entered C{state}.
    @ivar reason: why it is in C{state} (the last event's C{why}).
    @ivar macs: the MACs it was known by when last recorded.
    @ivar profile: for an adopted host, the profile it was adopted with;
        L{None} for a host of the inventory (the inventory says).
    @ivar adopted: L{True} when it became a host through adoption, not the
        inventory file.
    @ivar created: when the record was first made.
    """

    FIELDS = ("name", "state", "since", "reason", "macs", "profile", "adopted", "created")


class Event(_Record):
    """
    One entry of a host's (or a discovered machine's) history.

    @ivar key: the host's name, or the MAC of a discovered machine.
    @ivar time: when.
    @ivar source: the state before (L{None} for the first event).
    @ivar target: the state after (the same as C{source} for a progress
        report).
    @ivar why: a sentence saying what happened.
    """

    FIELDS = ("key", "time", "source", "target", "why")


class Machine(_Record):
    """
    A discovered machine: a MAC no inventory names that booted.

    @ivar mac: its MAC.
    @ivar arch: DHCP option 93 number, or L{None}.
    @ivar vendor_class: option 60 text, or L{None}.
    @ivar uuid: option 97 GUID text, or L{None}.
    @ivar ip: the address it was last seen at.
    @ivar first_seen, last_seen: times.
    @ivar files: what it fetched, oldest first: C{[{"path", "protocol",
        "time"}]} (bounded by the caller).
    """

    FIELDS = ("mac", "arch", "vendor_class", "uuid", "ip", "first_seen", "last_seen", "files")


class Token(_Record):
    """
    A per-boot callback token. The token itself is never stored: only its
    SHA-256 (C{digest}).

    @ivar digest: hex SHA-256 of the token.
    @ivar host: the host it was minted for.
    @ivar minted, expires: times.
    @ivar used: when it was used up (a final callback, a redeploy), else
        L{None}.
    @ivar ip: the address the menu carrying it was served to.
    @ivar paths: the paths of the deploy entry's kernel (or image) in that
        menu, as the client will ask for them.
    """

    FIELDS = ("digest", "host", "minted", "expires", "used", "ip", "paths")


class Snapshot:
    """
    Everything a store holds, as loaded when the appliance starts.

    @ivar hosts: C{[HostRecord]}.
    @ivar events: C{{key: [Event]}}, oldest first.
    @ivar machines: C{[Machine]}, least recently seen first.
    @ivar tokens: C{[Token]}, oldest first.
    """

    def __init__(self, hosts=(), events=None, machines=(), tokens=()):
        self.hosts = list(hosts)
        self.events = dict(events or {})
        self.machines = list(machines)
        self.tokens = list(tokens)
