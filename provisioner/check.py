# -*- test-case-name: tests.test_check -*-
"""
C{provisioner check [--config FILE]}: everything that can be known about a
configuration without starting anything, every problem at once.

It reads the configuration (every error collected, not only the first:
L{provisioner.config.loadConfig} with C{errors}), the inventory (every bad
host, group or profile: L{loadInventoryCollecting}) and the templates, and
checks:

  - every path the enabled services use: served roots and directories
    (missing ones that the appliance creates at start are warnings),
    files that are read (the inventory, TLS files, the receivers file);
  - every interface exists on this host, every listening address is one
    of this host's (read from C{/proc}: nothing is bound);
  - every DHCP subnet contains its range, router and broadcast address,
    and every reservation (C{dhcp.reservations}, the inventory's
    C{vars.ip}) is in a subnet;
  - every profile's kernel, initrds and image are in the image catalogue
    (the images directory scanned as the catalogue scans it, nothing
    hashed);
  - every inventory host's menus render, for every loader C{menus}
    enables, for BIOS and UEFI; a template error names the template file,
    its line and the message;
  - every boot file DHCP hands out can be served
    (L{provisioner.tftp.bootprograms.unservedBootFiles}).

Each problem is one line, C{FILE:LINE: KEY: what is wrong; what to do}
(a warning says C{warning:} after the key); L{main} prints them and a
one-line summary, and returns 2 when there is an error.

L{TemplateErrors} is also how C{provisioner render} learns that the menu
it printed was the fallback.
"""

import copy
import fnmatch
import ipaddress
import os
import socket
import sys

__all__ = ["Problem", "Report", "checkConfiguration", "loadInventoryCollecting",
           "TemplateErrors", "hostAddresses", "main", "ERROR", "WARNING"]

ERROR = "error"
WARNING = "warning"

#: the architectures every host's menus are rendered for: BIOS and x64 UEFI
ARCHES = ((0, "bios"), (7, "efi-x64"))

#: where a host's menus are rendered from when it has no vars.ip
_DEFAULT_IP = "198.18.0.2"

#: the MAC an unknown machine is rendered with (locally administered)
_UNKNOWN_MAC = "02:00:00:00:00:01"


class Problem:
    """
    One thing wrong.

    @ivar level: L{ERROR} or L{WARNING}.
    @ivar where: C{FILE:LINE}, C{FILE}, or L{None}.
    @ivar key: the configuration or inventory key (C{tftp.root},
        C{hosts.web01.vars.ip}), or L{None}.
    @ivar message: what is wrong and what to do.
    """

    def __init__(self, level, where, key, message):
        self.level = level
        self.where = where
        self.key = key
        self.message = message

    def __str__(self):
        parts = [p for p in (self.where, self.key) if p]
        if self.level == WARNING:
            parts.append("warning")
        parts.append(self.message)
        return ": ".join(parts)

    def __repr__(self):
        return "<Problem %s %s>" % (self.level, self)


class Report:
    """
    The problems found, in the order found, and what was looked at.

    @ivar problems: a list of L{Problem}.
    @ivar rendered: how many menus were rendered.
    @ivar hosts: how many inventory hosts there were.
    """

    def __init__(self):
        self.problems = []
        self.rendered = 0
        self.hosts = 0

    def error(self, where, key, message):
        self.problems.append(Problem(ERROR, where, key, message))

    def warn(self, where, key, message):
        self.problems.append(Problem(WARNING, where, key, message))

    @property
    def errors(self):
        return [p for p in self.problems if p.level == ERROR]

    @property
    def warnings(self):
        return [p for p in self.problems if p.level == WARNING]

    def sorted(self, first=None):
        """
        The problems by file (the file C{first} first, then in the order
        files were met) and line; the order found within a line.
        """
        files = {first: -1} if first else {}
        for problem in self.problems:
            files.setdefault(_fileLine(problem.where)[0], len(files))
        return sorted(self.problems, key=lambda p: (
            files[_fileLine(p.where)[0]], _fileLine(p.where)[1]))

    def summary(self, name):
        """
        The last line: C{NAME: ok (...)} or C{NAME: N errors, M warnings}.
        """
        counts = "%d error%s, %d warning%s" % (
            len(self.errors), "" if len(self.errors) == 1 else "s",
            len(self.warnings), "" if len(self.warnings) == 1 else "s")
        looked = "%d inventory host%s, %d menu%s rendered" % (
            self.hosts, "" if self.hosts == 1 else "s",
            self.rendered, "" if self.rendered == 1 else "s")
        if self.errors:
            return "%s: %s (%s)" % (name, counts, looked)
        return "%s: ok (%s; %s)" % (name, counts, looked)


def _fileLine(where):
    """
    C{(file, line)} of a C{FILE:LINE} (line 0 when there is none).
    """
    if not where:
        return ("", 0)
    name, _, line = where.rpartition(":")
    if name and line.isdigit():
        return (name, int(line))
    return (where, 0)


# This host: interfaces and addresses, read, never bound.

def hostInterfaces():
    """
    The names of this host's network interfaces (of this namespace).
    """
    try:
        return sorted(name for _, name in socket.if_nameindex())
    except OSError:
        try:
            return sorted(os.listdir("/sys/class/net"))
        except OSError:
            return []


def interfaceExists(name):
    try:
        socket.if_nametoindex(name)
        return True
    except OSError:
        return os.path.exists(os.path.join("/sys/class/net", os.path.basename(name)))


def hostAddresses(fibTrie="/proc/net/fib_trie", ifInet6="/proc/net/if_inet6"):
    """
    This host's own IPv4 and IPv6 addresses, from the kernel's tables
    (the LOCAL routes of C{fib_trie}, and C{if_inet6}); nothing is bound.

    @return: a C{set} of address texts, or L{None} when neither table can
        be read (then addresses are not checked).
    """
    found = set()
    readable = False
    try:
        with open(fibTrie) as f:
            previous = None
            for line in f:
                text = line.strip()
                if text.startswith(("|--", "+--")):
                    previous = text[3:].strip()
                elif text.endswith("host LOCAL") and previous:
                    found.add(previous)
        readable = True
    except OSError:
        pass
    try:
        with open(ifInet6) as f:
            for line in f:
                raw = line.split()[0] if line.split() else ""
                if len(raw) == 32:
                    found.add(str(ipaddress.IPv6Address(int(raw, 16))))
        readable = True
    except (OSError, ValueError):
        pass
    return found if readable else None


# Reading the configuration.

def _get(config, dotted):
    value = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


class _Where:
    """
    Where a key of the configuration file is (C{FILE:LINE}, else the file).
    """

    def __init__(self, located):
        self.located = located

    def __call__(self, key):
        if self.located is None:
            return None
        return self.located.where(key)


def _abs(path):
    return os.path.abspath(path)


def _creatable(path):
    """
    Why the directory C{path} (missing) cannot be made, or L{None}.
    """
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent) if os.path.dirname(parent) != parent else None
    if parent is None:
        return "no part of it exists"
    if not os.path.isdir(parent):
        return "%s is a file, not a directory" % (parent,)
    if not os.access(parent, os.W_OK | os.X_OK):
        return "%s is not writable by this user" % (parent,)
    return None


def _checkDirectory(report, where, key, path, created, what):
    """
    A directory a service uses: an error when it is not one; when missing,
    a warning if the service makes it at start (C{created}) and can, else
    an error.
    """
    if not path:
        return
    full = _abs(path)
    if os.path.isdir(full):
        return
    if os.path.exists(full):
        report.error(where(key), key, "%s is not a directory; point %s at the %s" % (
            full, key, what))
        return
    if created:
        why = _creatable(full)
        if why is None:
            report.warn(where(key), key, "%s does not exist; it is created at start (create "
                        "it now, or fix the path, if that is not what you meant)" % (full,))
        else:
            report.error(where(key), key, "%s does not exist and cannot be created (%s); "
                         "create it or fix the path" % (full, why))
        return
    report.error(where(key), key, "%s does not exist; create the %s or fix the path" % (
        full, what))


def _checkFile(report, where, key, path, what):
    if not path:
        return
    full = _abs(path)
    if os.path.isfile(full):
        if not os.access(full, os.R_OK):
            report.error(where(key), key, "%s is not readable by this user; fix its "
                         "permissions" % (full,))
        return
    if os.path.exists(full):
        report.error(where(key), key, "%s is not a file; point %s at the %s" % (full, key, what))
        return
    report.error(where(key), key, "%s does not exist; create the %s or fix the path" % (
        full, what))


def checkPaths(config, report, where):
    """
    Every path of an enabled service.
    """
    tftp = config["tftp"]
    if tftp["enabled"]:
        _checkDirectory(report, where, "tftp.root", tftp["root"], True, "TFTP root")
        programs = tftp.get("boot_programs")
        if programs and not os.path.isdir(programs):
            report.warn(where("tftp.boot_programs"), "tftp.boot_programs",
                        "%s does not exist, so no iPXE boot program is served from it; "
                        "apt install ipxe, or set it to null" % (programs,))
        if tftp["write"]["enabled"]:
            _checkDirectory(report, where, "tftp.write.directory", tftp["write"]["directory"],
                            True, "upload directory")
    images = config["images"]
    if images["enabled"]:
        _checkDirectory(report, where, "images.directory", images["directory"], True,
                        "images directory")
        _checkDirectory(report, where, "images.state_dir", images["state_dir"], True,
                        "state directory")
    inventory = config["inventory"]
    if inventory["enabled"]:
        _checkFile(report, where, "inventory.file", inventory["file"], "inventory")
        if not config["menus"]["enabled"]:
            report.warn(where("inventory.enabled"), "inventory.enabled",
                        "the inventory is only read by the menus service; set menus.enabled: "
                        "true")
    menus = config["menus"]
    if menus["enabled"] and menus["templates"]:
        _checkDirectory(report, where, "menus.templates", menus["templates"], False,
                        "templates directory")
    http = config["http"]
    if http["enabled"] and http["root"]:
        _checkDirectory(report, where, "http.root", http["root"], False, "directory to serve")
    hosts = config["hosts"]
    if hosts["enabled"] and _get(config, "store.backend") in (None, "sqlite"):
        _checkDirectory(report, where, "hosts.state_directory", hosts["state_directory"],
                        True, "state directory")
    dhcp = config["dhcp"]
    if dhcp["enabled"] and dhcp["mode"] == "full" and \
            _get(config, "store.backend") in (None, "sqlite"):
        parent = os.path.dirname(_abs(dhcp["lease_file"]))
        if not os.path.isdir(parent):
            _checkDirectory(report, where, "dhcp.lease_file", parent, True,
                            "directory of the lease database")
    cast = config["imagecast"]
    if cast["enabled"]:
        _checkDirectory(report, where, "imagecast.root", cast["root"], False,
                        "directory of the images to send")
        if cast.get("receivers_file"):
            _checkFile(report, where, "imagecast.receivers_file", cast["receivers_file"],
                       "receivers file")
        tls = cast.get("tls") or {}
        if tls.get("enabled"):
            for name in ("certificate", "key", "client_ca"):
                key = "imagecast.tls." + name
                if tls.get(name):
                    _checkFile(report, where, key, tls[name], "PEM file")
                elif name != "client_ca":
                    report.error(where(key), key, "TLS is enabled but no %s is given; set "
                                 "it to a PEM file" % (name,))


# Interfaces and addresses.

#: (section, key) of every listening address, checked when the section is on
_ADDRESSES = (
    ("tftp", "tftp.address"), ("tftp", "tftp.multicast.interface"),
    ("dhcp", "dhcp.address"), ("dhcp", "dhcp.server_address"),
    ("dhcp6", "dhcp6.address"), ("dhcp6", "dhcp6.server_address"),
    ("http", "http.address"),
    ("imagecast", "imagecast.address"), ("imagecast", "imagecast.interface"),
)

_WILDCARDS = ("0.0.0.0", "::")


def checkInterfaces(config, report, where, interfaces=None, addresses=None):
    """
    Every interface named exists, every address is this host's.

    @param interfaces: a predicate for names (tests), default
        L{interfaceExists}.
    @param addresses: this host's addresses (tests), default
        L{hostAddresses}.
    """
    exists = interfaces or interfaceExists
    names = []
    if config["tftp"]["enabled"] and config["tftp"]["interface"]:
        names.append(("tftp.interface", config["tftp"]["interface"]))
    for section in ("dhcp", "dhcp6"):
        part = config.get(section) or {}
        if part.get("enabled"):
            for i, name in enumerate(part.get("interfaces") or []):
                names.append(("%s.interfaces[%d]" % (section, i), name))
    for key, name in names:
        if not exists(name):
            have = hostInterfaces()
            report.error(where(key), key, "no network interface %r on this host%s; use one "
                         "of its interfaces" % (
                             name, " (it has %s)" % (", ".join(have),) if have else ""))
    own = hostAddresses() if addresses is None else addresses
    if own is None:
        return
    for section, key in _ADDRESSES:
        if not (config.get(section) or {}).get("enabled"):
            continue
        value = _get(config, key)
        if not value or value in _WILDCARDS:
            continue
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            continue
        if address.is_multicast:
            continue
        if str(address) not in own:
            report.error(where(key), key, "%s is not an address of this host; use one of its "
                         "addresses (ip -br addr), or %s to listen on all" % (
                             value, "::" if address.version == 6 else "0.0.0.0"))


# Subnets and reservations.

def _subnets(config):
    out = []
    for i, entry in enumerate(config["dhcp"]["subnets"] or []):
        try:
            out.append((i, ipaddress.IPv4Network(str(entry["network"]), strict=False), entry))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def checkSubnets(config, report, where, inventory=None, inventoryWhere=None):
    """
    Each subnet holds its range, router and broadcast address; each
    reservation (C{dhcp.reservations} and the inventory hosts'
    C{vars.ip}) is in a subnet (full mode).
    """
    dhcp = config["dhcp"]
    subnets = _subnets(config)
    for i, network, entry in subnets:
        base = "dhcp.subnets[%d]" % (i,)
        for name in ("router", "broadcast"):
            value = entry.get(name)
            if value is None:
                continue
            try:
                inside = ipaddress.IPv4Address(str(value)) in network
            except ValueError:
                continue
            if not inside:
                key = "%s.%s" % (base, name)
                report.error(where(key), key, "%s is not inside the subnet %s; give an "
                             "address of %s" % (value, network, network))
    if not (dhcp["enabled"] and dhcp["mode"] == "full") or not subnets:
        return

    def within(value):
        try:
            address = ipaddress.IPv4Address(str(value))
        except ValueError:
            return True
        return any(address in network for _, network, _ in subnets)

    known = ", ".join(str(n) for _, n, _ in subnets)
    for mac, entry in (dhcp["reservations"] or {}).items():
        value = entry.get("ip") if isinstance(entry, dict) else entry
        if not within(value):
            key = "dhcp.reservations.%s" % (mac,)
            report.error(where(key), key, "%s is outside every subnet of dhcp.subnets (%s); "
                         "reserve an address of a subnet, or add its subnet" % (value, known))
    if inventory is None:
        return
    for name, host in sorted(inventory.hosts.items()):
        value = host.vars.get("ip")
        if value is None:
            continue
        key = "hosts.%s.vars.ip" % (name,)
        try:
            ipaddress.IPv4Address(str(value))
        except ValueError:
            report.error(inventoryWhere(("hosts", name, "vars", "ip")), key,
                         "%r is not an IPv4 address; write the address DHCP reserves for "
                         "this host" % (value,))
            continue
        if not within(value):
            report.error(inventoryWhere(("hosts", name, "vars", "ip")), key,
                         "%s is outside every subnet of dhcp.subnets (%s); give an address "
                         "of a subnet, or add its subnet" % (value, known))


# The inventory, every error.

class _InventoryLines:
    """
    The line map L{provisioner.menus.inventory.Inventory} reports errors
    with, which also remembers the path of the last one (so that the bad
    entry can be set aside and the rest checked).
    """

    def __init__(self, filename, lines):
        self.filename = filename
        self.lines = lines
        self.path = None

    def where(self, path):
        probe = tuple(path)
        line = None
        while line is None and probe:
            line = self.lines.get(probe)
            probe = probe[:-1]
        if line is None:
            return self.filename
        return "%s:%d" % (self.filename, line)

    def error(self, path, message):
        from provisioner.menus.inventory import InventoryError
        from provisioner.yamlfile import keyText
        self.path = tuple(path)
        return InventoryError(keyText(self.path) or None, message, self.where(path))


def _setAside(data, path):
    """
    Take out of the inventory C{data} the entry an error at C{path} is in:
    a bad profile or group becomes an empty one (so that what names it
    stays valid), a bad host or top-level key goes, a bad default goes.

    @return: whether anything was taken out.
    """
    if not path or not isinstance(data, dict) or path[0] not in data:
        return False
    top = path[0]
    if len(path) == 1:
        del data[top]
        return True
    section = data[top]
    name = path[1]
    if not isinstance(section, dict) or name not in section:
        del data[top]
        return True
    if top in ("profiles", "groups") and section[name] != {}:
        section[name] = {}
    else:
        del section[name]
    return True


def loadInventoryCollecting(path):
    """
    Read an inventory and find every error in it: each bad entry is set
    aside (L{_setAside}) and the rest checked again.

    @return: C{(inventory, errors, where)}: the L{Inventory} of the good
        entries (or L{None} when the file cannot be read or parsed), the
        L{InventoryError}s, and C{where(path tuple)} giving C{FILE:LINE}.
    """
    from provisioner.menus.inventory import Inventory, InventoryError
    from provisioner.yamlfile import parseWithLines, readText
    filename = os.path.basename(path)
    errors = []
    try:
        text = readText(path, InventoryError)
        data, lines = parseWithLines(text, filename, InventoryError)
    except InventoryError as e:
        return None, [e], lambda p: filename
    lines = _InventoryLines(filename, lines)
    data = {} if data is None else data
    if not isinstance(data, dict):
        return None, [lines.error((), "must be a mapping of defaults, profiles, groups and "
                                  "hosts")], lines.where
    data = copy.deepcopy(data)
    for _ in range(10000):
        lines.path = None
        try:
            return Inventory(data, lines, filename), errors, lines.where
        except InventoryError as e:
            errors.append(e)
            if not _setAside(data, lines.path or ()):
                return None, errors, lines.where
    return None, errors, lines.where


# The image catalogue, scanned without starting it.

def scanImages(config):
    """
    The names the image catalogue would have (relative paths, C{/}
    separated), or L{None} when the directory cannot be read.
    """
    from provisioner.confine import ConfinedRoot
    from provisioner.images.watch import snapshot
    images = config["images"]
    directory = _abs(images["directory"])
    if not os.path.isdir(directory):
        return None
    ignore = list(images["ignore"])

    def accept(rel):
        return not any(fnmatch.fnmatchcase(part, pattern)
                       for part in rel.split(os.sep) for pattern in ignore)
    try:
        root = ConfinedRoot(directory, images["follow_symlinks"])
    except OSError:
        return None
    found = snapshot(directory, True, accept, root.stat)
    return set(name.replace(os.sep, "/") for name in found)


def _references(profile):
    """
    C{(path below the profile, what, catalogue name)} of every file a
    profile names.
    """
    out = []
    if profile.kernel:
        out.append((("kernel",), "kernel", profile.kernel))
    for i, name in enumerate(profile.initrd):
        out.append((("initrd", i), "initrd", name))
    if profile.image:
        out.append((("image",), "image", profile.image))
    for i, entry in enumerate(profile.entries):
        if entry["kernel"]:
            out.append((("entries", i, "kernel"), "kernel", entry["kernel"]))
        for j, name in enumerate(entry["initrd"]):
            out.append((("entries", i, "initrd", j), "initrd", name))
        if entry["image"]:
            out.append((("entries", i, "image"), "image", entry["image"]))
    if profile.imaging is not None:
        out.append((("imaging", "image"), "image", profile.imaging.image))
    return out


def checkCatalogue(config, inventory, report, where, inventoryWhere):
    """
    Every kernel, initrd and image a profile names is in the catalogue.
    """
    from provisioner.yamlfile import keyText
    if inventory is None:
        return
    references = []
    for name, profile in sorted(inventory.profiles.items()):
        for path, what, value in _references(profile):
            if "://" in value or "{{" in value:
                continue
            references.append((("profiles", name) + path, what, value))
    if not references:
        return
    if not config["images"]["enabled"]:
        for path, what, value in references:
            report.warn(inventoryWhere(path), keyText(path), "%s %s is served from the image "
                        "catalogue, but images.enabled is false; enable the images section"
                        % (what, value))
        return
    names = scanImages(config)
    if names is None:
        return  # the missing directory is reported by checkPaths
    directory = _abs(config["images"]["directory"])
    for path, what, value in references:
        if value not in names:
            report.error(inventoryWhere(path), keyText(path), "%s %s is not in the image "
                         "catalogue (no file %s, or it is ignored); put it there or fix the "
                         "name" % (what, value, os.path.join(directory, value)))


# Rendering every host's menus.

class TemplateErrors:
    """
    A log observer for a L{provisioner.menus.render.Renderer}'s C{log}: it
    keeps the template failures the renderer logs (and answers with the
    fallback menu), as C{(file, line, message)}.

    @ivar dirs: the template directories (to find a template's file).
    @ivar failures: the list of C{(file or None, line or None, message)}.
    """

    def __init__(self, dirs):
        self.dirs = list(dirs)
        self.failures = []

    def __call__(self, event):
        from twisted.logger import LogLevel
        if event.get("log_level") not in (LogLevel.error, LogLevel.critical):
            return
        template = event.get("template")
        if template is None and "names" in event:
            self.failures.append((self.dirs[0] if self.dirs else None, None,
                                  "no %s template (tried %s)" % (event.get("loader"),
                                                                 event["names"])))
            return
        line = event.get("line")
        line = line if isinstance(line, int) else None
        kind = event.get("kind")
        error = event.get("error", "")
        message = "%s: %s" % (kind, error) if kind else "syntax error: %s" % (error,)
        self.failures.append((self.file(template), line, message))

    def file(self, template):
        """
        The file of a template name (the first directory that has it).
        """
        if not template or template == "?":
            return None
        for directory in self.dirs:
            path = os.path.join(directory, template)
            if os.path.isfile(path):
                return path
        return template

    @staticmethod
    def text(failure):
        """
        C{FILE:LINE: message} of one failure.
        """
        path, line, message = failure
        where = path or "template"
        if line is not None:
            where = "%s:%d" % (where, line)
        return "%s: %s" % (where, message)

    def attach(self, renderer):
        """
        Make C{renderer} log to this observer.
        """
        from twisted.logger import Logger
        renderer.log = Logger(namespace="provisioner.menus.render", observer=self)
        return self


def _loaders(config):
    return [name for name in ("ipxe", "pxelinux", "grub") if config["menus"][name]]


def renderAll(config, inventory, report, appliance, menus):
    """
    Render every inventory host's menus (and an unknown machine's) for
    every loader C{menus} enables, BIOS and UEFI; report each template
    failure once, with the hosts it hit.
    """
    from provisioner.menus.render import ClientFacts
    renderer = menus.renderer
    errors = TemplateErrors(renderer.dirs).attach(renderer)
    hits = {}
    order = []
    clients = []
    for name, host in sorted((inventory.hosts if inventory is not None else {}).items()):
        ip = host.vars.get("ip") or _DEFAULT_IP
        clients.append(("hosts." + name, dict(
            mac=host.macs[0] if host.macs else None, ip=str(ip), hostname=host.hostname,
            uuid=host.uuids[0] if host.uuids else None)))
    clients.append(("an unknown machine", dict(mac=_UNKNOWN_MAC, ip=_DEFAULT_IP)))
    for who, fields in clients:
        for loader in _loaders(config):
            for arch, archName in ARCHES:
                before = len(errors.failures)
                facts = ClientFacts(arch=arch, ipxe=(loader == "ipxe"), **fields)
                renderer.render(loader, facts, preview=True)
                report.rendered += 1
                for failure in errors.failures[before:]:
                    if failure not in hits:
                        hits[failure] = []
                        order.append(failure)
                    label = "%s (%s, %s)" % (who, loader, archName)
                    if label not in hits[failure]:
                        hits[failure].append(label)
    for failure in order:
        path, line, message = failure
        where = path or "template"
        if line is not None:
            where = "%s:%d" % (where, line)
        who = hits[failure]
        more = " and %d more" % (len(who) - 3,) if len(who) > 3 else ""
        report.error(where, "menus.templates", "%s; for %s%s: fix the template (check with "
                     "provisioner render)" % (message, ", ".join(who[:3]), more))


def checkBootFiles(config, report, where, appliance):
    """
    Every boot file DHCP hands out can be served.
    """
    from provisioner.tftp.bootprograms import fromConfig, unservedBootFiles
    if not config["dhcp"]["enabled"]:
        return
    if not config["tftp"]["enabled"]:
        return

    class _Directory:
        root = _abs(config["tftp"]["root"])

    class _TFTP:
        pass
    tftp = _TFTP()
    tftp.appliance = appliance
    tftp.directory = _Directory()
    tftp.bootPrograms = fromConfig(config["tftp"])
    programs = config["tftp"].get("boot_programs")
    for key, arch, name in unservedBootFiles(tftp, config):
        report.warn(where(key), key, "DHCP hands out %s (architecture %s) but TFTP cannot "
                    "serve it: not in %s%s; put it there, apt install ipxe, or change %s" % (
                        name, arch, _Directory.root,
                        " nor %s" % (programs,) if programs else "", key))


def _buildAppliance(config):
    from provisioner.menus.cli import _buildAppliance
    config = copy.deepcopy(config)
    config["menus"]["enabled"] = True
    config["inventory"]["enabled"] = False  # the check loads it, collecting errors
    return _buildAppliance(config)


def checkConfiguration(path=None, overrides=(), text=None, interfaces=None, addresses=None):
    """
    Check a configuration file and everything it names.

    @param path: the configuration file, or L{None} for the embedded
        defaults.
    @param interfaces, addresses: stand-ins for this host's interfaces and
        addresses (tests); see L{checkInterfaces}.
    @return: a L{Report}.
    """
    from provisioner.config import loadConfig
    report = Report()
    configErrors = []
    located = []
    config = loadConfig(path, overrides, text=text, errors=configErrors, located=located)
    where = _Where(located[0] if located else None)
    for e in configErrors:
        report.error(e.where, e.key, e.message)
    if any(e.key is None for e in configErrors):
        # the file could not be read, parsed, or is not a mapping: what
        # follows would check the defaults, not the file
        return report
    checkPaths(config, report, where)
    checkInterfaces(config, report, where, interfaces, addresses)
    inventory = None
    inventoryWhere = lambda p: None  # noqa: E731
    if config["inventory"]["enabled"] and os.path.isfile(config["inventory"]["file"]):
        inventory, inventoryErrors, inventoryWhere = loadInventoryCollecting(
            config["inventory"]["file"])
        for e in inventoryErrors:
            report.error(e.where, e.key, e.message)
        if inventory is not None:
            report.hosts = len(inventory.hosts)
    checkSubnets(config, report, where, inventory, inventoryWhere)
    checkCatalogue(config, inventory, report, where, inventoryWhere)
    if config["menus"]["enabled"] or config["dhcp"]["enabled"]:
        appliance, menus = _buildAppliance(config)
        if config["menus"]["enabled"]:
            if inventory is not None:
                menus.inventory = inventory
                menus.appliance.inventory = inventory
                menus.renderer.invalidate("inventory")
            renderAll(config, inventory, report, appliance, menus)
        else:
            menus.unregisterFiles()
        checkBootFiles(config, report, where, appliance)
    return report


def run(path, out, interfaces=None, addresses=None):
    """
    Check C{path} (or the embedded defaults) and print every problem, then
    the summary, to C{out}.

    @param interfaces, addresses: see L{checkInterfaces} (tests).
    @return: the exit status: 2 when there is an error, else 0.
    """
    report = checkConfiguration(path, interfaces=interfaces, addresses=addresses)
    for problem in report.sorted(os.path.basename(path) if path else None):
        print(problem, file=out)
    print(report.summary(path or "the embedded defaults"), file=out)
    return 2 if report.errors else 0


def main(args, out=None):
    """
    C{provisioner check [--config FILE | FILE]}.
    """
    return run(args.config or args.file, out if out is not None else sys.stdout)
