# -*- test-case-name: tests.test_menus -*-
"""
Rendering boot menus: a sandboxed Jinja2 environment with
C{StrictUndefined} over the operator's templates directory and the shipped
one, templates looked up from specific to generic, rendered menus cached
until templates, the inventory or the images change.

A template that fails (syntax, an undefined variable, a sandbox violation,
an empty result) never reaches a client: the failure is logged on one line
naming the template, its line and the client, and the built-in fallback
menu for that boot loader (boot the local disk) is served instead.
"""

import os
import sys
from collections import OrderedDict

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from twisted.logger import Logger

from provisioner.directory import normaliseMAC
from provisioner.menus.inventory import Host, Resolution

__all__ = ["Renderer", "ClientFacts", "LOADERS", "FALLBACK", "archName",
           "shippedTemplatesDir", "templateDirs", "ARCH_NAMES", "adoptedResolution"]

LOADERS = ("ipxe", "pxelinux", "grub")

# DHCP option 93 (client system architecture) to names used in template
# file names. 7 is x64 UEFI in practice; some x64 ROMs send 9 (see PEERS.md).
ARCH_NAMES = {
    0: "bios", 6: "efi-ia32", 7: "efi-x64", 9: "efi-x64", 10: "efi-arm32",
    11: "efi-arm64", 15: "efi-ia32", 16: "efi-x64", 18: "efi-arm32", 19: "efi-arm64",
}
_HTTP_ARCHES = frozenset((15, 16, 18, 19))

FALLBACK = {
    "ipxe": (
        "#!ipxe\n"
        "# provisioner fallback menu: the boot menu for this machine could not be rendered\n"
        "echo provisioner: no boot menu for ${mac} (see the server log); booting the local disk\n"
        "sleep 5\n"
        "exit\n"),
    "pxelinux": (
        "# provisioner fallback menu: the boot menu for this machine could not be rendered\n"
        "DEFAULT local\n"
        "PROMPT 0\n"
        "TIMEOUT 50\n"
        "LABEL local\n"
        "  MENU LABEL Boot from local disk (no boot menu: see the server log)\n"
        "  LOCALBOOT 0\n"),
    "grub": (
        "# provisioner fallback menu: the boot menu for this machine could not be rendered\n"
        "set timeout=5\n"
        "menuentry \"Boot from local disk (no boot menu: see the server log)\" {\n"
        "  exit\n"
        "}\n"),
}


def archName(arch):
    """
    Return the template name of an architecture: C{bios}, C{efi-x64}, ...;
    C{None} when unknown.

    @param arch: the DHCP option 93 number, a name, or L{None}.
    """
    if arch is None:
        return None
    if isinstance(arch, str):
        text = arch.strip().lower()
        if text.isdigit():
            return ARCH_NAMES.get(int(text))
        aliases = {"x64": "efi-x64", "uefi": "efi-x64", "efi": "efi-x64", "x86_64": "efi-x64",
                   "arm64": "efi-arm64", "aarch64": "efi-arm64", "ia32": "efi-ia32",
                   "legacy": "bios", "pcbios": "bios"}
        text = aliases.get(text, text)
        return text if text in set(ARCH_NAMES.values()) else None
    return ARCH_NAMES.get(arch)


def archNumber(arch):
    """
    Return option 93 for a name or number (the canonical number of a name).
    """
    if arch is None:
        return None
    if isinstance(arch, int):
        return arch
    text = str(arch).strip()
    if text.isdigit():
        return int(text)
    name = archName(text)
    for number in (0, 6, 7, 10, 11):
        if ARCH_NAMES[number] == name:
            return number
    return None


def shippedTemplatesDir():
    """
    The shipped templates: the repository's C{templates/} when running from
    a source tree, else C{<prefix>/share/provisioner/templates} as
    installed by setup.cfg's data_files.
    """
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    source = os.path.join(here, "templates")
    if os.path.isdir(os.path.join(source, "ipxe")):
        return source
    import site
    prefixes = [sys.prefix, getattr(sys, "base_prefix", sys.prefix),
                getattr(site, "USER_BASE", None) or sys.prefix, "/usr/local", "/usr"]
    for prefix in prefixes:
        installed = os.path.join(prefix, "share", "provisioner", "templates")
        if os.path.isdir(installed):
            return installed
    return source


def templateDirs(operatorDir=None):
    """
    The directories searched, first match wins: the operator's, then the
    shipped ones.
    """
    dirs = []
    if operatorDir:
        dirs.append(os.path.abspath(operatorDir))
    dirs.append(shippedTemplatesDir())
    return dirs


class ClientFacts:
    """
    What a menu is rendered for: an immutable snapshot of one client.
    """

    __slots__ = ("mac", "ip", "arch", "ipxe", "hostname", "uuid")

    def __init__(self, mac=None, ip=None, arch=None, ipxe=False, hostname=None, uuid=None):
        if mac is not None:
            mac = normaliseMAC(mac)
        self.mac = mac
        self.ip = ip
        self.arch = archNumber(arch) if not isinstance(arch, int) else arch
        self.ipxe = bool(ipxe)
        self.hostname = hostname
        self.uuid = uuid

    @classmethod
    def fromRecord(cls, record, **overrides):
        """
        Facts from a L{provisioner.directory.ClientRecord} (or L{None}), with
        overrides.
        """
        fields = {}
        if record is not None:
            for name in cls.__slots__:
                fields[name] = getattr(record, name, None)
        for name, value in overrides.items():
            if value is not None:
                fields[name] = value
        return cls(**fields)

    def key(self):
        return (self.mac, self.ip, self.arch, self.ipxe, self.hostname, self.uuid)

    def asDict(self):
        name = archName(self.arch)
        firmware = None
        if name == "bios":
            firmware = "bios"
        elif name is not None:
            firmware = "efi"
        mac = self.mac
        return {
            "mac": mac,
            "mac_hyphen": mac.replace(":", "-") if mac else None,
            "mac_hex": mac.replace(":", "") if mac else None,
            "ip": self.ip,
            "arch": self.arch,
            "arch_name": name,
            "firmware": firmware,
            "http_boot": self.arch in _HTTP_ARCHES,
            "ipxe": self.ipxe,
            "hostname": self.hostname,
            "uuid": self.uuid,
        }


def _templateLine(tb, filename):
    """
    The line in the template C{filename} where a render error happened.
    """
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


class Renderer:
    """
    Renders menus for clients.

    @ivar inventory: a callable returning the current
        L{provisioner.menus.inventory.Inventory}.
    @ivar catalog: a callable returning the image catalogue (or L{None}).
    @ivar server: a callable returning the C{dict} templates see as
        C{server} for a base URL (see L{render}).
    @ivar lifecycle: a callable returning the host lifecycle
        (C{appliance.hosts}: C{adoption(mac)} and C{boot(...)}, see
        L{provisioner.hosts.book.HostBook}) or L{None}.
    @ivar generation: incremented by L{invalidate}.
    @ivar renders: how many templates were actually rendered (cache misses).
    """

    log = Logger()

    def __init__(self, dirs, inventory, catalog=lambda: None, server=None, baseVars=None,
                 cacheSize=4096, lifecycle=lambda: None):
        self.dirs = list(dirs)
        self.inventory = inventory
        self.catalog = catalog
        self.lifecycle = lifecycle
        self.server = server or (lambda baseURL: {"http_url": baseURL})
        self.baseVars = dict(baseVars or {})
        self.cacheSize = cacheSize
        self.generation = 0
        self.renders = 0
        self._cache = OrderedDict()
        self._selected = {}
        self._imagesGeneration = None
        self._images = ([], {})
        self.env = self._makeEnvironment()

    def _makeEnvironment(self):
        env = SandboxedEnvironment(
            loader=jinja2.FileSystemLoader(self.dirs),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
            cache_size=-1,
        )
        env.filters["hyphen"] = lambda mac: str(mac).replace(":", "-")
        env.filters["basename"] = lambda path: str(path).rstrip("/").rsplit("/", 1)[-1]
        env.filters["human_size"] = _humanSize
        return env

    def invalidate(self, why="changed"):
        """
        Forget rendered menus and compiled templates (templates, the
        inventory or the images changed).
        """
        self.generation += 1
        self._cache.clear()
        self._selected.clear()
        self.env = self._makeEnvironment()
        self.log.debug("menu caches dropped: {why}", why=why)

    def setDirs(self, dirs):
        self.dirs = list(dirs)
        self.invalidate("template directories changed")

    # Lookup.

    def candidates(self, loader, facts, resolution):
        """
        The template names tried for a client, most specific first: the
        template the inventory names, the host, the MAC, each group, the
        profile, the architecture, the firmware family, C{unknown} (no MAC
        known) and C{default}.
        """
        names = []
        if resolution.template:
            names.append(resolution.template)
        if resolution.host is not None:
            names.append("host-" + resolution.host.name)
        if facts.mac:
            names.append("mac-" + facts.mac.replace(":", "-"))
        for group in resolution.groups:
            names.append("group-" + group.name)
        if resolution.profile is not None:
            names.append("profile-" + resolution.profile.name)
        name = archName(facts.arch)
        if name is not None:
            names.append("arch-" + name)
            family = "bios" if name == "bios" else "efi"
            if family != name:
                names.append("arch-" + family)
        if not facts.mac:
            names.append("unknown")
        names.append("default")
        return ["%s/%s.j2" % (loader, n) for n in names]

    def select(self, names):
        """
        Return the first template of C{names} that exists (cached until
        L{invalidate}).

        @raise jinja2.TemplateNotFound: none does.
        @raise jinja2.TemplateSyntaxError: the one found does not compile.
        """
        key = tuple(names)
        found = self._selected.get(key)
        if found is None:
            found = self.env.select_template(names)
            self._selected[key] = found
        return found

    # Context.

    def _imagesContext(self):
        catalog = self.catalog()
        if catalog is None:
            return [], {}
        generation = (id(catalog), catalog.generation)
        if generation != self._imagesGeneration:
            images = catalog.asList()
            self._images = (images, {i["name"]: i for i in images})
            self._imagesGeneration = generation
        return self._images

    def context(self, loader, facts, resolution, baseURL=None, path=None, protocol=None,
                boot=None):
        """
        The variables a template sees (documented in docs/menus.md).

        @param boot: the host lifecycle's
            L{provisioner.hosts.boot.BootDecision} for this boot, or L{None}.
        """
        images, byName = self._imagesContext()
        host = resolution.host
        server = self.server(baseURL)
        profile = resolution.profile
        entries, default, timeout, title = _entries(profile, images)
        hostVars = None
        if host is not None:
            hostVars = host.asDict()
            hostVars["state"] = boot.state if boot is not None else None
            hostVars["token"] = boot.token if boot is not None else None
            hostVars["callback_url"] = boot.callbackURL if boot is not None else None
        context = {
            "loader": loader,
            "client": facts.asDict(),
            "host": hostVars,
            "boot_local": bool(boot is not None and boot.bootLocal),
            "groups": [g.name for g in resolution.groups],
            "profile": resolution.profile.asDict() if resolution.profile else None,
            "vars": resolution.vars,
            "images": images,
            "catalog": byName,
            "server": server,
            "request": {"path": path, "protocol": protocol},
            "entries": entries,
            "default_entry": default,
            "timeout": timeout,
            "title": title,
            "image_url": _imageURL(server),
            "tftp_path": _tftpPath(server),
        }
        for entry in entries:
            entry["cmdline"] = self._expandCommandLine(entry, profile, context)
        return context

    def _expandCommandLine(self, entry, profile, context):
        """
        An entry's kernel command line with its template variables
        (C{{{ host.name }}}, C{{{ vars.NAME }}}, ...) rendered in the
        menu's context, so that one profile serves per-host values.

        @raise ValueError: naming the profile and entry, when it fails.
        """
        text = entry.get("cmdline") or ""
        if "{{" not in text and "{%" not in text:
            return text
        try:
            return " ".join(self.env.from_string(text).render(context).split())
        except Exception as e:
            raise ValueError("profile %s entry %s: cmdline: %s" % (
                profile.name if profile is not None else "?", entry.get("label"), e))

    # Rendering.

    def render(self, loader, facts, baseURL=None, path=None, protocol=None, preview=False,
               peer=None):
        """
        Return C{(text, template name)} of the menu C{loader} for a client;
        never raises, never returns an empty text (the fallback menu's name
        is C{"fallback"}).

        With a host lifecycle, it is asked first what this boot gets (the
        local disk, or the deploy entry with a fresh per-boot token); a menu
        carrying a token is never cached.

        @param facts: a L{ClientFacts}.
        @param baseURL: the HTTP base URL the client reached us at, if any.
        @param preview: not a client's boot (JSON API, tools): the
            lifecycle records nothing and mints no token.
        @param peer: the address the menu is served to.
        """
        lifecycle = self.lifecycle()
        boot = None
        if lifecycle is not None:
            try:
                boot = lifecycle.boot(facts, self.resolution(facts, lifecycle), loader=loader,
                                      server=self.server(baseURL), peer=peer, preview=preview)
            except Exception:
                self.log.failure("menus: the host lifecycle failed for {client}; rendering "
                                 "without it", client=facts.mac or facts.ip)
        key = (loader, facts.key(), baseURL, path, protocol,
               boot.key() if boot is not None else None)
        cacheable = boot is None or boot.token is None or preview
        cached = self._cache.get(key) if cacheable else None
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        result = self._render(loader, facts, baseURL, path, protocol, boot)
        if self.cacheSize and cacheable:
            self._cache[key] = result
            while len(self._cache) > self.cacheSize:
                self._cache.popitem(last=False)
        return result

    def resolution(self, facts, lifecycle=None):
        """
        The inventory's L{Resolution} for a client; a MAC the inventory does
        not name but the host lifecycle has adopted resolves to that host
        and the profile it was adopted with.
        """
        inventory = self.inventory()
        resolution = inventory.resolve(mac=facts.mac, uuid=facts.uuid, hostname=facts.hostname,
                                       baseVars=self.baseVars)
        if resolution.host is None and facts.mac:
            if lifecycle is None:
                lifecycle = self.lifecycle()
            adopted = lifecycle.adoption(facts.mac) if lifecycle is not None else None
            if adopted is not None:
                name, profile = adopted
                resolution = adoptedResolution(inventory, name, facts.mac, profile,
                                               self.baseVars)
        return resolution

    def _render(self, loader, facts, baseURL, path, protocol, boot=None):
        who = facts.mac or facts.ip or "an unidentified client"
        templateName = None
        try:
            resolution = self.resolution(facts)
            names = self.candidates(loader, facts, resolution)
            template = self.select(names)
            templateName = template.name
            context = self.context(loader, facts, resolution, baseURL, path, protocol, boot)
            self.renders += 1
            text = template.render(context)
            if not text.strip():
                raise ValueError("the template rendered nothing")
            return text, templateName
        except jinja2.TemplateNotFound as e:
            self.log.error(
                "menus: no {loader} template for {client} (tried {names}) in {dirs}; "
                "serving the fallback menu", loader=loader, client=who,
                names=", ".join(getattr(e, "templates", None) or [str(e)]),
                dirs=", ".join(self.dirs))
        except jinja2.TemplateSyntaxError as e:
            self.log.error(
                "menus: template {template} line {line}: syntax error: {error}; serving the "
                "fallback {loader} menu to {client}", template=e.name or templateName,
                line=e.lineno, error=e.message, loader=loader, client=who)
        except Exception as e:
            filename = None
            if templateName is not None:
                try:
                    filename = self.env.get_template(templateName).filename
                except Exception:
                    filename = None
            line = _templateLine(e.__traceback__, filename) if filename else None
            self.log.error(
                "menus: template {template} line {line}: {kind}: {error}; serving the "
                "fallback {loader} menu to {client}", template=templateName or "?",
                line=line if line is not None else "?", kind=type(e).__name__,
                error=str(e), loader=loader, client=who)
        return FALLBACK[loader], "fallback"

    def describe(self, facts, baseURL=None):
        """
        What a client would be served: the inventory's resolution, the
        template chosen for each loader and the rendered menus (for the JSON
        API and the command line).
        """
        resolution = self.resolution(facts)
        out = {"client": facts.asDict(), "inventory": resolution.asDict(), "menus": {}}
        for loader in LOADERS:
            text, name = self.render(loader, facts, baseURL, preview=True)
            out["menus"][loader] = {"template": name, "candidates":
                                    self.candidates(loader, facts, resolution),
                                    "text": text}
        return out


class _Unchecked:
    """
    Stands in for the inventory's line map when a host is built from an
    adoption (already checked): errors name no line.
    """

    def error(self, path, message):
        return ValueError("%s: %s" % (".".join(str(p) for p in path), message))


def adoptedResolution(inventory, name, mac, profileName, baseVars=None):
    """
    The L{Resolution} of a host the inventory file does not name yet, adopted
    with a profile (C{provisioner hosts adopt}): no groups; variables and
    template merge as the inventory merges them (C{menus.vars}, defaults,
    the profile); a profile gone from the inventory falls back to the
    default one.
    """
    host = Host(name, {"mac": mac, "profile": profileName}, ("hosts", name), _Unchecked())
    profile = inventory.profiles.get(profileName) if profileName else None
    if profile is None and inventory.defaults["profile"]:
        profile = inventory.profiles.get(inventory.defaults["profile"])
    merged = dict(baseVars or {})
    merged.update(inventory.defaults["vars"])
    if profile is not None:
        merged.update(profile.vars)
    template = profile.template if profile is not None else None
    if template is None:
        template = inventory.defaults["template"]
    return Resolution(host, [], profile, merged, template)


def _entries(profile, images):
    """
    The menu entries a template lists: the profile's entries; else one
    entry made of the profile's kernel or image; else (no profile) one per
    ISO in the catalogue; always ending with a local-disk entry when none is
    there.
    """
    entries = []
    title = "provisioner"
    timeout = 5
    default = None
    local = {"label": "local", "title": "Boot from local disk", "kernel": None, "initrd": [],
             "cmdline": "", "image": None, "local": True}
    if profile is not None:
        title = profile.description or profile.name
        if profile.timeout is not None:
            timeout = profile.timeout
        default = profile.default_entry
        entries = [dict(e, initrd=list(e["initrd"])) for e in profile.entries]
        if not entries and (profile.kernel or profile.image):
            entries = [{"label": profile.name, "title": title, "kernel": profile.kernel,
                        "initrd": list(profile.initrd), "cmdline": profile.cmdline,
                        "image": profile.image if not profile.kernel else None,
                        "local": False}]
    else:
        for i, image in enumerate(images):
            if image["kind"] == "iso":
                entries.append({"label": "iso%d" % (i,), "title": image["name"],
                                "kernel": None, "initrd": [], "cmdline": "",
                                "image": image["name"], "local": False})
    if not any(e["local"] for e in entries):
        entries.append(local)
    if default is None:
        default = entries[0]["label"]
    return entries, default, timeout, title


def _joinURL(base, name):
    if not base:
        return name
    return base.rstrip("/") + "/" + name


def _imageURL(server):
    base = server.get("images_base")
    return lambda name: _joinURL(base, name)


def _tftpPath(server):
    prefix = server.get("images_prefix") or ""
    return lambda name: _joinURL(prefix, name)


def _humanSize(n):
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0
