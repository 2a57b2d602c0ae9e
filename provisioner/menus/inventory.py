# -*- test-case-name: tests.test_menus_inventory -*-
"""
The inventory: hosts (by MAC, UUID and hostname), groups, profiles and
defaults, from a YAML file an operator keeps in git.

    defaults:
      profile: local
      vars: {console: ttyS0}
    profiles:
      ubuntu:
        kernel: ubuntu/vmlinuz
        initrd: [ubuntu/initrd]
        cmdline: "ip=dhcp"
    groups:
      rack1: {profile: ubuntu, vars: {rack: 1}}
    hosts:
      web01:
        mac: 52:54:00:12:34:56
        groups: [rack1]

Every error names the key and the line (C{inventory.yaml:12:
hosts.web01.mac: not a MAC address ...}). The format is documented in
C{docs/menus.md} and C{etc/inventory.yaml}.
"""

import uuid as uuidlib

from provisioner.directory import normaliseMAC
from provisioner.config import ConfigError
from provisioner.yamlfile import keyText, parseWithLines, readText

__all__ = ["Inventory", "InventoryError", "Host", "Group", "Profile", "Imaging",
           "Resolution", "parseInventory", "loadInventory", "EMPTY"]


class InventoryError(ConfigError):
    """
    The inventory is invalid; C{str()} names the file, line and key.
    """


class _Lines:
    """
    Line numbers of every mapping key and sequence item, by path tuple.
    """

    def __init__(self, filename, lines):
        self.filename = filename
        self.lines = lines

    def error(self, path, message):
        path = tuple(path)
        probe = path
        line = None
        while line is None and probe:
            line = self.lines.get(probe)
            probe = probe[:-1]
        where = self.filename
        if line is not None:
            where = "%s:%d" % (self.filename, line)
        return InventoryError(keyText(path) or None, message, where)


def _parse(text, filename):
    """
    Parse YAML into plain data and a L{_Lines} map (L{parseWithLines}:
    lines of every key and item, duplicate keys refused, MACs as text).
    """
    data, lines = parseWithLines(text, filename, InventoryError)
    return ({} if data is None else data), _Lines(filename, lines)


# Validation helpers: each takes the value, its path and the line map.

def _mapping(value, path, lines, allowNone=True):
    if value is None and allowNone:
        return {}
    if not isinstance(value, dict):
        raise lines.error(path, "must be a mapping (got %s)" % (type(value).__name__,))
    return value


def _keys(value, path, lines, known):
    for name in value:
        if name not in known:
            raise lines.error(tuple(path) + (name,), "unknown key (known here: %s)" % (
                ", ".join(sorted(known)),))


def _str(value, path, lines, nullable=True):
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise lines.error(path, "must be a string (got %r)" % (value,))
    return str(value)


def _name(value, path, lines):
    text = _str(value, path, lines, nullable=False)
    if not text or "/" in text or text.startswith(".") or any(c.isspace() for c in text):
        raise lines.error(path, "must be a name without spaces, '/' or a leading '.' "
                          "(got %r)" % (text,))
    return text


def _strList(value, path, lines):
    if value is None:
        return []
    if not isinstance(value, list):
        value = [value]
        return [_str(value[0], path, lines, nullable=False)]
    return [_str(v, tuple(path) + (i,), lines, nullable=False) for i, v in enumerate(value)]


def _int(value, path, lines, minimum=0, maximum=None, nullable=True):
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise lines.error(path, "must be a whole number (got %r)" % (value,))
    if value < minimum or (maximum is not None and value > maximum):
        raise lines.error(path, "must be between %s and %s (got %r)" % (
            minimum, maximum, value))
    return value


def _number(value, path, lines, minimum=0, maximum=None):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise lines.error(path, "must be a number (got %r)" % (value,))
    if value < minimum or (maximum is not None and value > maximum):
        raise lines.error(path, "must be between %s and %s (got %r)" % (
            minimum, maximum, value))
    return value


def _mac(value, path, lines):
    try:
        return normaliseMAC(value)
    except (ValueError, TypeError):
        raise lines.error(path, "not a MAC address (got %r; write aa:bb:cc:dd:ee:ff)" % (
            value,))


def _uuid(value, path, lines):
    try:
        return str(uuidlib.UUID(str(value))).lower()
    except ValueError:
        raise lines.error(path, "not a UUID (got %r)" % (value,))


class Imaging:
    """
    A profile's C{imaging}: the deploy environment its hosts boot writes
    C{image} (a catalogued image) onto a disk, received by imagecast in
    one session with the profile's other hosts (docs/imaging.md).

    @ivar image: the image's catalogue name.
    @ivar disk: the disk: a path (C{/dev/vda}), or a rule the deploy
        environment applies, C{{"min_size_gib": N}} (the first disk of at
        least N GiB) or C{{"serial": S}} (the disk whose serial is S).
    @ivar min_receivers: start the session once this many hosts are
        registered with imagecast.
    @ivar max_wait: or this many seconds after the first host asked.
    """

    KEYS = ("image", "disk", "min_receivers", "max_wait")
    DISK_RULES = ("min_size_gib", "serial")

    #: the longest C{max_wait}: a week, as C{imagecast send --max-wait}
    MAX_WAIT = 7 * 24 * 3600

    def __init__(self, data, path, lines):
        p = tuple(path)
        _keys(data, p, lines, self.KEYS)
        if data.get("image") is None:
            raise lines.error(p + ("image",), "the image to write is missing (a catalogued "
                              "image's name)")
        self.image = _str(data.get("image"), p + ("image",), lines, nullable=False)
        if not self.image or any(c.isspace() for c in self.image) or \
                self.image.startswith("/") or ".." in self.image.split("/"):
            raise lines.error(p + ("image",), "must be a catalogued image's name, relative, "
                              "without spaces or '..' (got %r)" % (self.image,))
        self.disk = self._disk(data.get("disk"), p + ("disk",), lines)
        self.min_receivers = _int(data.get("min_receivers", 1), p + ("min_receivers",),
                                  lines, 1, 100000, nullable=False)
        self.max_wait = _number(data.get("max_wait", 30), p + ("max_wait",), lines, 0,
                                self.MAX_WAIT)

    def _disk(self, value, path, lines):
        if value is None:
            raise lines.error(path, "the disk to write is missing: a path (/dev/vda) or a "
                              "rule ({min_size_gib: 8} or {serial: ABC123})")
        if isinstance(value, dict):
            _keys(value, path, lines, self.DISK_RULES)
            if len(value) != 1:
                raise lines.error(path, "give one rule: min_size_gib or serial")
            (rule, given), = value.items()
            if rule == "min_size_gib":
                return {rule: _number(given, path + (rule,), lines, 0, 1 << 20)}
            serial = _str(given, path + (rule,), lines, nullable=False)
            if not serial or any(c.isspace() for c in serial):
                raise lines.error(path + (rule,), "must be a serial number without spaces "
                                  "(got %r)" % (serial,))
            return {rule: serial}
        disk = _str(value, path, lines, nullable=False)
        if not disk.startswith("/dev/") or any(c.isspace() for c in disk) or \
                ".." in disk.split("/"):
            raise lines.error(path, "must be a device path (/dev/vda, /dev/disk/by-id/...) "
                              "or a rule ({min_size_gib: 8} or {serial: ABC123}); got %r"
                              % (disk,))
        return disk

    def asDict(self):
        return {"image": self.image,
                "disk": dict(self.disk) if isinstance(self.disk, dict) else self.disk,
                "min_receivers": self.min_receivers, "max_wait": self.max_wait}


class Profile:
    """
    What to boot: kernel, initrds, command line, an image, menu entries.

    @ivar entries: a list of C{dict}s with C{label}, C{title}, C{kernel},
        C{initrd} (list), C{cmdline}, C{image}, C{local} (bool).
    @ivar imaging: an L{Imaging} when the profile's hosts are imaged by the
        deploy environment, else L{None}.
    """

    KEYS = ("description", "kernel", "initrd", "cmdline", "image", "entries",
            "default_entry", "timeout", "template", "vars", "imaging")
    ENTRY_KEYS = ("label", "title", "kernel", "initrd", "cmdline", "image", "local")

    def __init__(self, name, data, path, lines):
        self.name = name
        _keys(data, path, lines, self.KEYS)
        p = tuple(path)
        self.description = _str(data.get("description"), p + ("description",), lines)
        self.kernel = _str(data.get("kernel"), p + ("kernel",), lines)
        self.initrd = _strList(data.get("initrd"), p + ("initrd",), lines)
        self.cmdline = _str(data.get("cmdline"), p + ("cmdline",), lines) or ""
        self.image = _str(data.get("image"), p + ("image",), lines)
        self.template = _str(data.get("template"), p + ("template",), lines)
        self.timeout = _int(data.get("timeout"), p + ("timeout",), lines, 0, 3600)
        self.vars = dict(_mapping(data.get("vars"), p + ("vars",), lines))
        imaging = data.get("imaging")
        self.imaging = None if imaging is None else Imaging(
            _mapping(imaging, p + ("imaging",), lines, allowNone=False), p + ("imaging",), lines)
        entries = data.get("entries")
        if entries is None:
            entries = []
        if not isinstance(entries, list):
            raise lines.error(p + ("entries",), "must be a list of menu entries")
        self.entries = []
        labels = set()
        for i, entry in enumerate(entries):
            ep = p + ("entries", i)
            entry = _mapping(entry, ep, lines, allowNone=False)
            _keys(entry, ep, lines, self.ENTRY_KEYS)
            label = _name(entry.get("label", "entry%d" % (i + 1,)), ep + ("label",), lines)
            if label in labels:
                raise lines.error(ep + ("label",), "duplicate label %r" % (label,))
            labels.add(label)
            local = entry.get("local", False)
            if not isinstance(local, bool):
                raise lines.error(ep + ("local",), "must be true or false")
            self.entries.append({
                "label": label,
                "title": _str(entry.get("title"), ep + ("title",), lines) or label,
                "kernel": _str(entry.get("kernel"), ep + ("kernel",), lines),
                "initrd": _strList(entry.get("initrd"), ep + ("initrd",), lines),
                "cmdline": _str(entry.get("cmdline"), ep + ("cmdline",), lines) or "",
                "image": _str(entry.get("image"), ep + ("image",), lines),
                "local": local,
            })
        self.default_entry = _str(data.get("default_entry"), p + ("default_entry",), lines)
        if self.default_entry is not None and self.default_entry not in labels:
            raise lines.error(p + ("default_entry",), "no entry labelled %r in this "
                              "profile" % (self.default_entry,))

    def asDict(self):
        return {"name": self.name, "description": self.description, "kernel": self.kernel,
                "initrd": list(self.initrd), "cmdline": self.cmdline, "image": self.image,
                "entries": [dict(e, initrd=list(e["initrd"])) for e in self.entries],
                "default_entry": self.default_entry, "timeout": self.timeout,
                "template": self.template, "vars": dict(self.vars),
                "imaging": self.imaging.asDict() if self.imaging is not None else None}


class Group:
    """
    A set of hosts sharing a profile, a template and variables.
    """

    KEYS = ("description", "profile", "template", "vars")

    def __init__(self, name, data, path, lines):
        self.name = name
        _keys(data, path, lines, self.KEYS)
        p = tuple(path)
        self.description = _str(data.get("description"), p + ("description",), lines)
        self.profile = _str(data.get("profile"), p + ("profile",), lines)
        self.template = _str(data.get("template"), p + ("template",), lines)
        self.vars = dict(_mapping(data.get("vars"), p + ("vars",), lines))

    def asDict(self):
        return {"name": self.name, "description": self.description, "profile": self.profile,
                "template": self.template, "vars": dict(self.vars)}


class Host:
    """
    One machine, found by any of its MACs, UUIDs or its hostname.
    """

    KEYS = ("mac", "uuid", "hostname", "group", "groups", "profile", "template", "vars",
            "description")

    def __init__(self, name, data, path, lines):
        self.name = name
        _keys(data, path, lines, self.KEYS)
        p = tuple(path)
        self.description = _str(data.get("description"), p + ("description",), lines)
        macs = data.get("mac")
        macs = macs if isinstance(macs, list) else ([] if macs is None else [macs])
        self.macs = [_mac(m, p + ("mac", i) if isinstance(data.get("mac"), list)
                          else p + ("mac",), lines) for i, m in enumerate(macs)]
        uuids = data.get("uuid")
        uuids = uuids if isinstance(uuids, list) else ([] if uuids is None else [uuids])
        self.uuids = [_uuid(u, p + ("uuid",), lines) for u in uuids]
        self.hostname = _str(data.get("hostname"), p + ("hostname",), lines) or name
        if "group" in data and "groups" in data:
            raise lines.error(p + ("groups",), "give either group or groups, not both")
        self.groups = _strList(data.get("groups", data.get("group")),
                               p + ("groups" if "groups" in data else "group",), lines)
        self.profile = _str(data.get("profile"), p + ("profile",), lines)
        self.template = _str(data.get("template"), p + ("template",), lines)
        self.vars = dict(_mapping(data.get("vars"), p + ("vars",), lines))

    def asDict(self):
        return {"name": self.name, "hostname": self.hostname, "mac": list(self.macs),
                "uuid": list(self.uuids), "groups": list(self.groups),
                "profile": self.profile, "template": self.template, "vars": dict(self.vars),
                "description": self.description}


class Resolution:
    """
    What the inventory says about one client: the host (or L{None}), its
    groups, the chosen profile, the merged variables and the explicitly
    named template.
    """

    def __init__(self, host, groups, profile, vars, template):
        self.host = host
        self.groups = groups
        self.profile = profile
        self.vars = vars
        self.template = template

    def asDict(self):
        return {"host": self.host.asDict() if self.host else None,
                "groups": [g.name for g in self.groups],
                "profile": self.profile.asDict() if self.profile else None,
                "vars": dict(self.vars), "template": self.template}


class Inventory:
    """
    A validated inventory.

    @ivar hosts, groups, profiles: C{{name: object}}.
    @ivar defaults: C{dict} with C{profile}, C{template}, C{vars}.
    """

    TOP = ("defaults", "profiles", "groups", "hosts")
    DEFAULT_KEYS = ("profile", "template", "vars")

    def __init__(self, data=None, lines=None, filename="<inventory>"):
        """
        Validate C{data} (the parsed YAML) in order: the top-level keys, the
        defaults, the profiles, the groups (each naming a known profile),
        the default profile, then each host (its groups and profile known,
        its MACs, UUIDs and hostname no other host's).

        @param lines: where each key is (for errors naming the line), or
            L{None}.
        @raise InventoryError: naming the file, line and key.
        """
        if lines is None:
            lines = _Lines(filename, {})
        self.filename = filename
        data = _mapping(data, (), lines)
        _keys(data, (), lines, self.TOP)
        self.defaults = self._readDefaults(data, lines)
        self.profiles = self._readProfiles(data, lines)
        self.groups = self._readGroups(data, lines)
        if self.defaults["profile"] is not None and \
                self.defaults["profile"] not in self.profiles:
            raise lines.error(("defaults", "profile"), "no profile called %r" % (
                self.defaults["profile"],))
        self.hosts = {}
        self._byMAC = {}
        self._byUUID = {}
        self._byHostname = {}
        for name, value in _mapping(data.get("hosts"), ("hosts",), lines).items():
            self._addHost(name, value, lines)

    def _readDefaults(self, data, lines):
        defaults = _mapping(data.get("defaults"), ("defaults",), lines)
        _keys(defaults, ("defaults",), lines, self.DEFAULT_KEYS)
        return {
            "profile": _str(defaults.get("profile"), ("defaults", "profile"), lines),
            "template": _str(defaults.get("template"), ("defaults", "template"), lines),
            "vars": dict(_mapping(defaults.get("vars"), ("defaults", "vars"), lines)),
        }

    def _readProfiles(self, data, lines):
        profiles = {}
        for name, value in _mapping(data.get("profiles"), ("profiles",), lines).items():
            path = ("profiles", name)
            _name(name, path, lines)
            profiles[name] = Profile(name, _mapping(value, path, lines), path, lines)
        return profiles

    def _readGroups(self, data, lines):
        """
        The groups, each naming a profile of L{profiles} (read first) if
        any.
        """
        groups = {}
        for name, value in _mapping(data.get("groups"), ("groups",), lines).items():
            path = ("groups", name)
            _name(name, path, lines)
            group = Group(name, _mapping(value, path, lines), path, lines)
            if group.profile is not None and group.profile not in self.profiles:
                raise lines.error(path + ("profile",), "no profile called %r" % (
                    group.profile,))
            groups[name] = group
        return groups

    def _addHost(self, name, value, lines):
        """
        Read one host, check that its groups and profile exist, and index
        it by MAC, UUID and hostname.
        """
        path = ("hosts", name)
        _name(name, path, lines)
        host = Host(name, _mapping(value, path, lines), path, lines)
        for g in host.groups:
            if g not in self.groups:
                raise lines.error(path + ("groups" if "groups" in value else "group",),
                                  "no group called %r" % (g,))
        if host.profile is not None and host.profile not in self.profiles:
            raise lines.error(path + ("profile",), "no profile called %r" % (
                host.profile,))
        self._index(host, path, lines)
        self.hosts[name] = host

    def _index(self, host, path, lines):
        """
        Index C{host} by its MACs, UUIDs and hostname (case-insensitive),
        refusing one another host has.
        """
        for mac in host.macs:
            other = self._byMAC.get(mac)
            if other is not None:
                raise lines.error(path + ("mac",), "MAC %s is already host %r's" % (
                    mac, other.name))
            self._byMAC[mac] = host
        for u in host.uuids:
            other = self._byUUID.get(u)
            if other is not None:
                raise lines.error(path + ("uuid",), "UUID %s is already host %r's" % (
                    u, other.name))
            self._byUUID[u] = host
        key = host.hostname.lower()
        other = self._byHostname.get(key)
        if other is not None:
            raise lines.error(path + ("hostname",), "hostname %s is already host %r's"
                              % (host.hostname, other.name))
        self._byHostname[key] = host

    def lookup(self, mac=None, uuid=None, hostname=None):
        """
        Return the L{Host} with this MAC, else this UUID, else this
        hostname; or L{None}.
        """
        if mac:
            try:
                host = self._byMAC.get(normaliseMAC(mac))
            except ValueError:
                host = None
            if host is not None:
                return host
        if uuid:
            try:
                host = self._byUUID.get(str(uuidlib.UUID(str(uuid))).lower())
            except ValueError:
                host = None
            if host is not None:
                return host
        if hostname:
            return self._byHostname.get(str(hostname).lower())
        return None

    def resolve(self, mac=None, uuid=None, hostname=None, baseVars=None):
        """
        Return the L{Resolution} for a client.

        Variables merge, later winning: C{baseVars} (menus.vars), defaults,
        the profile, each group in order, the host. The profile is the
        host's, else the last group's that names one, else the default.
        The template is the host's, else a group's, else the profile's, else
        the default.
        """
        host = self.lookup(mac, uuid, hostname)
        groups = [self.groups[g] for g in host.groups] if host else []
        profileName = host.profile if host else None
        if profileName is None:
            for g in reversed(groups):
                if g.profile is not None:
                    profileName = g.profile
                    break
        if profileName is None:
            profileName = self.defaults["profile"]
        profile = self.profiles.get(profileName) if profileName else None
        merged = dict(baseVars or {})
        merged.update(self.defaults["vars"])
        if profile is not None:
            merged.update(profile.vars)
        for g in groups:
            merged.update(g.vars)
        if host is not None:
            merged.update(host.vars)
        template = host.template if host else None
        if template is None:
            for g in groups:
                if g.template is not None:
                    template = g.template
                    break
        if template is None and profile is not None:
            template = profile.template
        if template is None:
            template = self.defaults["template"]
        return Resolution(host, groups, profile, merged, template)

    def asDict(self):
        return {"defaults": {"profile": self.defaults["profile"],
                             "template": self.defaults["template"],
                             "vars": dict(self.defaults["vars"])},
                "profiles": {n: p.asDict() for n, p in sorted(self.profiles.items())},
                "groups": {n: g.asDict() for n, g in sorted(self.groups.items())},
                "hosts": {n: h.asDict() for n, h in sorted(self.hosts.items())}}


EMPTY = Inventory()


def parseInventory(text, filename="inventory.yaml"):
    """
    Parse and validate inventory text.

    @raise InventoryError: naming the file, line and key.
    """
    data, lines = _parse(text, filename)
    return Inventory(data, lines, filename)


def loadInventory(path):
    """
    Read and validate an inventory file.

    @raise InventoryError: the file cannot be read or is invalid.
    """
    import os
    return parseInventory(readText(path, InventoryError), os.path.basename(path))
