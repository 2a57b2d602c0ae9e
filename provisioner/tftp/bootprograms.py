# -*- test-case-name: tests.test_bootprograms -*-
"""
Boot programs out of the box: the iPXE network bootstrap programs of a
directory (C{tftp.boot_programs}, by default C{/usr/lib/ipxe}, where
Debian's C{ipxe} package puts them) served by their names, nothing copied.

L{BootProgramsResolver} is an L{IFileResolver} the TFTP service puts at the
end of its chain, right before the root directory (after the bootstrap
injector, which may hand the same names out to clients without a windowed
client). It answers only the names in L{BOOT_PROGRAMS}, and only at the top
of the tree (C{undionly.kpxe}, never C{a/undionly.kpxe}); nothing else of
the directory is ever opened. The operator's own files win: a file of that
name in the TFTP root is served instead (the resolver asks the root first).

The HTTP service serves them too when C{http.root} is the TFTP root.

L{unservedBootFiles} lists the boot files DHCP hands out (C{dhcp.boot.*},
C{dhcp.ipxe_script}, C{dhcp.overrides}) that nothing here serves;
L{warnUnserved} logs one warning per file, at start and at every reload.
"""

import os

from twisted.logger import Logger
from zope.interface import implementer

from provisioner.dhcp.policy import ARCH_NAMES
from provisioner.errors import AccessViolation, FileNotFound
from provisioner.files import FileSource, normalisePath
from provisioner.interfaces import IFileResolver

__all__ = ["BOOT_PROGRAMS", "BootProgramsResolver", "fromConfig", "bootFiles",
           "unservedBootFiles", "warnUnserved"]

#: the names served from C{tftp.boot_programs}: iPXE's BIOS (PXE, UNDI-only,
#: and their "keep PXE/UNDI" variants), Linux-kernel and UEFI builds, and the
#: names C{dhcp.boot} hands out by default for other architectures
BOOT_PROGRAMS = (
    "undionly.kpxe", "undionly.kkpxe", "undionly.kkkpxe",
    "ipxe.pxe", "ipxe.kpxe", "ipxe.kkpxe", "ipxe.lkrn",
    "ipxe.efi", "snponly.efi", "snp.efi",
    "ipxe-ia32.efi", "ipxe-arm32.efi", "ipxe-arm64.efi",
)


@implementer(IFileResolver)
class BootProgramsResolver:
    """
    The files of L{BOOT_PROGRAMS} found in one directory, by name only.

    @ivar directory: the directory, as configured (symlinks in it are
        followed: Debian links C{ipxe.efi} to C{/boot/ipxe.efi}).
    @ivar names: the names answered (a C{frozenset}).
    @ivar shadow: a callable returning the resolver of the TFTP root, asked
        first (a file there wins), or L{None}.
    """

    def __init__(self, directory, names=BOOT_PROGRAMS, shadow=None):
        self.directory = directory
        self.names = frozenset(names)
        self.shadow = shadow

    def __repr__(self):
        return "<BootProgramsResolver %s>" % (self.directory,)

    def path(self, name):
        """
        The file that serves C{name} (normalised), or L{None} when the name
        is not one of L{names}.
        """
        if name not in self.names:
            return None
        return os.path.join(self.directory, name)

    def has(self, name):
        """
        Whether the directory has a regular file for C{name}.
        """
        path = self.path(name)
        return path is not None and os.path.isfile(path)

    def resolve(self, request):
        path = self.path(request.path)
        if path is None:
            return None
        shadow = self.shadow() if self.shadow is not None else None
        if shadow is not None:
            try:
                source = shadow.resolve(request)
            except FileNotFound:
                source = None
            if source is not None:
                return source
        try:
            return FileSource.open(path, request.path)
        except (FileNotFound, AccessViolation):
            return None


def fromConfig(config, shadow=None):
    """
    The resolver a C{tftp} section configures (C{boot_programs}), or L{None}
    when it is null or empty.
    """
    directory = config.get("boot_programs")
    if not directory:
        return None
    return BootProgramsResolver(directory, shadow=shadow)


def _archText(key):
    numbers = sorted(n for n, name in ARCH_NAMES.items() if name == key)
    return "%s (arch %s)" % (key, ", ".join(str(n) for n in numbers)) if numbers else key


def bootFiles(dhcp):
    """
    The boot files a C{dhcp} section hands out that a TFTP server must serve
    (URLs left out).

    @return: a list of C{(key, architecture, name)}.
    """
    out = []
    for arch, name in sorted(dhcp.get("boot", {}).items()):
        out.append(("dhcp.boot." + arch, _archText(arch), name))
    out.append(("dhcp.ipxe_script", "clients running iPXE", dhcp.get("ipxe_script")))
    for mac, entry in sorted((dhcp.get("overrides") or {}).items()):
        if isinstance(entry, str):
            entry = {"boot_file": entry}
        for what in ("boot_file", "ipxe_script"):
            if entry.get(what):
                out.append(("dhcp.overrides.%s.%s" % (mac, what), "host " + mac, entry[what]))
    return [(key, arch, name) for key, arch, name in out
            if name and "://" not in name]


def _servable(tftp, name):
    """
    Whether the TFTP service C{tftp} has a resolver that serves C{name}
    (a menu, an image, a boot program, or a file of the root); the
    bootstrap injector does not count (it serves only first requests).
    """
    try:
        name = normalisePath(name)
    except Exception:
        return False
    appliance = tftp.appliance
    names = getattr(appliance.virtualFiles, "names", None)
    if names is not None and name in names():
        return True
    catalog = getattr(appliance, "catalog", None)
    if catalog is not None:
        inCatalog = catalog.resolver.nameFor(name)
        if inCatalog is not None and (catalog.get(inCatalog) is not None or os.path.isfile(
                os.path.join(catalog.directory, inCatalog))):
            return True
    programs = getattr(tftp, "bootPrograms", None)
    if programs is not None and programs.has(name):
        return True
    return os.path.isfile(os.path.join(tftp.directory.root, name))


def unservedBootFiles(tftp, config):
    """
    The boot files DHCP (enabled in C{config}) hands out that the TFTP
    service C{tftp} cannot serve. Nothing when DHCP is off, or sends its
    clients to another TFTP server (C{dhcp.next_server}).

    @return: a list of C{(key, architecture, name)}.
    """
    dhcp = config.get("dhcp", {})
    if not dhcp.get("enabled"):
        return []
    nextServer = dhcp.get("next_server")
    if nextServer and config["tftp"]["address"] not in (nextServer, "0.0.0.0", "::"):
        return []
    return [(key, arch, name) for key, arch, name in bootFiles(dhcp)
            if not _servable(tftp, name)]


_log = Logger()


def warnUnserved(tftp, config, log=_log):
    """
    Log one warning per boot file DHCP hands out that nothing serves.

    @return: what L{unservedBootFiles} found.
    """
    missing = unservedBootFiles(tftp, config)
    programs = config["tftp"].get("boot_programs")
    for key, arch, name in missing:
        log.warn("DHCP hands out {name} ({key}, architecture {arch}) but TFTP cannot serve "
                 "it: not in {root}{programs}", name=name, key=key, arch=arch,
                 root=tftp.directory.root,
                 programs=(" nor %s (tftp.boot_programs)" % (programs,)) if programs
                 else " (tftp.boot_programs is off)")
    return missing
