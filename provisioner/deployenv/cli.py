# -*- test-case-name: tests.test_deployenv -*-
"""
C{provisioner deployenv build}: build the deploy environment (a kernel and
an initramfs that run C{provisioner receive} onto a disk) from Debian
packages, into the image catalogue's directory (C{images.directory} of
C{--config}, or C{--images-dir}) as C{deployenv/vmlinuz} and
C{deployenv/initrd.gz}, or into C{--output}.
"""

import os
import sys

from provisioner.config import ConfigError, loadConfig

__all__ = ["register", "outputDirectory"]


def outputDirectory(args):
    """
    Where the environment goes: C{--output}, else C{deployenv/} of
    C{--images-dir}, else of the configuration's C{images.directory}.

    @raise ConfigError: the configuration is wrong.
    """
    if args.output:
        return args.output
    images = args.images_dir or loadConfig(args.config)["images"]["directory"]
    return os.path.join(images, "deployenv")


def _build(args, out=None, err=None):
    from provisioner.deployenv.build import BuildError, build
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    try:
        directory = outputDirectory(args)
    except ConfigError as e:
        print("provisioner: %s" % (e,), file=err)
        return 2
    try:
        manifest = build(directory, cache=args.cache,
                         log=lambda line: print("deployenv: %s" % (line,), file=err),
                         bytecode=not args.no_bytecode)
    except (BuildError, OSError) as e:
        print("provisioner deployenv build: %s" % (e,), file=err)
        return 1
    initrd = manifest["initrd"]
    print("%s: vmlinuz (%s, %.1f MiB), initrd.gz (%.1f MiB; %.1f MiB unpacked, %d files), "
          "%d modules, Python %s%s" % (
              directory, manifest["kernel"]["release"], manifest["kernel"]["size"] / 2**20,
              initrd["compressed"] / 2**20, initrd["size"] / 2**20, initrd["files"],
              len(manifest["modules"]), manifest["python"],
              " with bytecode" if manifest["bytecode"] else ""), file=out)
    return 0


def register(subparsers):
    from provisioner.deployenv.build import DEFAULT_CACHE
    parser = subparsers.add_parser(
        "deployenv", help="the deploy environment that images machines",
        description="The deploy environment: a Debian kernel and an initramfs that get an "
                    "address by DHCP and write an image to the disk with provisioner "
                    "receive (docs/deployenv.md).")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    parser.set_defaults(func=lambda args: (parser.print_help(sys.stderr), 2)[1])
    b = actions.add_parser("build", help="build it from Debian packages")
    b.add_argument("--config", "-c", default=None,
                   help="configuration file whose images.directory receives deployenv/")
    b.add_argument("--images-dir", default=None, metavar="DIR",
                   help="the image directory (instead of --config's images.directory)")
    b.add_argument("--output", "-o", default=None, metavar="DIR",
                   help="write vmlinuz, initrd.gz and manifest.json here instead")
    b.add_argument("--cache", default=DEFAULT_CACHE, metavar="DIR",
                   help="downloaded and unpacked packages, kept for the next build "
                        "(default %s)" % (DEFAULT_CACHE,))
    b.add_argument("--no-bytecode", action="store_true",
                   help="leave out the precompiled .pyc files (smaller, slower to start)")
    b.set_defaults(func=_build)
