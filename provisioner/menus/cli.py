# -*- test-case-name: tests.test_menus_cli -*-
"""
C{provisioner render --mac MAC [--arch ARCH] FILE}: exactly what that client
would be served as C{FILE} by the appliance the configuration describes:
the menus (from the inventory and templates), else a catalogued image, else
a file of the TFTP root. Nothing is started and nothing is hashed (the
catalogue is the persisted one). A menu whose template fails is not
printed: the template's file, line and error are, and the status is 1.
"""

import sys

from provisioner.config import ConfigError, loadConfig

__all__ = ["register", "render"]


class _NoReactor:
    """
    Stands in for the reactor: the command line starts nothing.
    """

    def callLater(self, *args, **kwargs):
        raise RuntimeError("the command line schedules nothing")


def _buildAppliance(config):
    from provisioner.appliance import Appliance
    from provisioner.images.catalog import Catalog
    from provisioner.menus.service import MenuService
    appliance = Appliance(config, _NoReactor())
    images = config["images"]
    catalog = Catalog(appliance.reactor, images["directory"], stateDir=images["state_dir"],
                      prefix=images["prefix"], ignore=images["ignore"], kinds=images["kinds"])
    if images["enabled"]:
        catalog.restore()
    appliance.catalog = catalog
    menus = MenuService(appliance, watch=False)
    if config["menus"]["enabled"]:
        menus.registerFiles(appliance.virtualFiles)
    return appliance, menus


class _Refused(Exception):
    """
    C{render} cannot go on: C{status} is the exit status, the message is
    printed as is.
    """

    def __init__(self, status, message):
        Exception.__init__(self, message)
        self.status = status


def render(args, out=None, err=None):
    """
    Print what the client would get; return the exit status: 0, or 1 when
    the file is not found or its menu's template fails (the template's
    file, line and error are printed instead of the fallback menu), or 2
    for bad arguments or configuration.
    """
    from provisioner.check import TemplateErrors
    out = out if out is not None else sys.stdout.buffer
    err = err if err is not None else sys.stderr
    try:
        overrides = [("menus.enabled", True)] if args.force_menus else []
        config = loadConfig(args.config, overrides)
    except ConfigError as e:
        print("provisioner: %s" % (e,), file=err)
        return 2
    try:
        mac, arch = _client(args)
        appliance, menus = _buildAppliance(config)
        if menus.inventoryError:
            print("provisioner render: warning: %s (rendering with the empty inventory)"
                  % (menus.inventoryError,), file=err)
        failures = TemplateErrors(menus.renderer.dirs).attach(menus.renderer)
        source = _resolve(args, config, appliance, _request(args, appliance, mac, arch))
    except _Refused as e:
        print("provisioner render: %s" % (e,), file=err)
        return e.status
    if failures.failures:
        # the menu rendered is the fallback a client would get: not what
        # the operator asked to see
        source.close()
        for failure in failures.failures:
            print("provisioner render: %s (a client gets the fallback menu)"
                  % (TemplateErrors.text(failure),), file=err)
        return 1
    _copy(source, out)
    return 0


def _client(args):
    """
    The MAC and architecture number the arguments name.
    """
    from provisioner.directory import normaliseMAC
    from provisioner.menus.render import archName, archNumber
    try:
        mac = normaliseMAC(args.mac)
    except ValueError as e:
        raise _Refused(2, str(e))
    arch = None
    if args.arch is not None:
        arch = archNumber(args.arch)
        if arch is None or archName(arch) is None:
            raise _Refused(2, "unknown architecture %r (use bios, efi-x64, efi-ia32, "
                           "efi-arm64 or a DHCP option 93 number)" % (args.arch,))
    return mac, arch


def _request(args, appliance, mac, arch):
    """
    The L{FileRequest} the client would make, after telling the client
    directory what DHCP would have learnt of it.
    """
    from provisioner.errors import AccessViolation, FileNotFound
    from provisioner.files import FileRequest, normalisePath
    ip = args.ip or "198.18.0.2"
    record = appliance.clients.update(mac=mac, ip=ip, arch=arch,
                                      ipxe=True if args.ipxe else None)
    try:
        path = normalisePath(args.file)
    except (AccessViolation, FileNotFound) as e:
        raise _Refused(2, str(e))
    options = {}
    if args.protocol == "http" and args.base_url:
        options["base_url"] = args.base_url
    return FileRequest(path, (ip, 0), protocol=args.protocol, client=record,
                       options=options, rawPath=args.file)


def _resolve(args, config, appliance, request):
    """
    The data source the service would serve: the menus, the catalogue, then
    the protocol's root directory.
    """
    from provisioner.errors import AccessViolation, FileNotFound
    from provisioner.files import DirectoryResolver
    resolvers = [appliance.virtualFiles]
    if config["images"]["enabled"]:
        resolvers.append(appliance.catalog.resolver)
    if args.protocol == "tftp" and config["tftp"]["enabled"]:
        resolvers.append(DirectoryResolver(config["tftp"]["root"]))
    elif args.protocol == "http" and config["http"]["root"]:
        resolvers.append(DirectoryResolver(config["http"]["root"]))
    source = None
    for resolver in resolvers:
        try:
            source = resolver.resolve(request)
        except (AccessViolation, FileNotFound) as e:
            raise _Refused(1, "%s: %s" % (args.file, e))
        if source is not None:
            break
    if source is None or hasattr(source, "addCallback"):
        raise _Refused(1, "%s: not found (not a menu, a catalogued image or a file of the %s "
                       "root)" % (args.file, args.protocol))
    return source


def _copy(source, out):
    """
    Write the whole source to C{out}, then close it.
    """
    try:
        offset = 0
        while True:
            data = source.read(offset, 1 << 20)
            if not data:
                break
            out.write(data)
            offset += len(data)
        out.flush()
    finally:
        source.close()


def register(subparsers):
    parser = subparsers.add_parser(
        "render", help="print exactly what a client would be served as FILE",
        description="Print exactly what the client with MAC would be served as FILE "
                    "(boot.ipxe, pxelinux.cfg/01-..., grub/grub.cfg, an image) by the "
                    "appliance the configuration describes. Nothing is started.")
    parser.add_argument("file", metavar="FILE",
                        help="the file the client asks for: boot.ipxe, pxelinux.cfg/default, "
                             "grub/grub.cfg, images/NAME, a file of the TFTP root")
    parser.add_argument("--mac", required=True, help="the client's MAC address")
    parser.add_argument("--arch", default=None,
                        help="its architecture: bios, efi-x64, efi-ia32, efi-arm64, or a "
                             "DHCP option 93 number (default: unknown)")
    parser.add_argument("--ip", default=None, help="its IP address (default 198.18.0.2)")
    parser.add_argument("--ipxe", action="store_true",
                        help="it is an iPXE client (DHCP saw option 77/175)")
    parser.add_argument("--protocol", choices=("tftp", "http"), default="tftp",
                        help="the protocol it asks with (default tftp)")
    parser.add_argument("--base-url", default=None,
                        help="with --protocol http: the URL it reached the appliance at")
    parser.add_argument("--config", "-c", default=None,
                        help="configuration file (default: the embedded defaults)")
    parser.add_argument("--force-menus", action="store_true",
                        help="render menus even if menus.enabled is false")
    parser.set_defaults(func=render)
