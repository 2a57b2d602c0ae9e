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

__all__ = ["register", "outputDirectory", "BuildProgress"]


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


class BuildProgress:
    """
    The build's progress on C{err}: a bar per stage (the packages
    downloaded, then unpacked; L{provisioner.client.progress.ProgressDisplay})
    on a terminal unless C{quiet}, and the build's log lines above it.
    """

    def __init__(self, err, quiet=False, clock=None):
        from provisioner.client.progress import MonotonicClock
        self.err = err
        self.enabled = False if quiet else None
        self.clock = clock or MonotonicClock()
        self.stage = None
        self.display = None

    def __call__(self, stage, done, total):
        """
        C{done} of C{total} packages are through C{stage}.
        """
        from provisioner.client.progress import ProgressDisplay
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.display = ProgressDisplay(self.clock, self.err, self.enabled, total=total,
                                           unit="packages", description=stage)
        self.display.update(done, total)

    def log(self, line):
        text = "deployenv: %s\n" % (line,)
        if self.display is not None:
            self.display.write(text)
        else:
            self.err.write(text)
            self.err.flush()

    def close(self):
        """
        End the bar of the current stage.
        """
        if self.display is not None:
            self.display.finish()
            self.display = None


def _build(args, out=None, err=None):
    from provisioner.deployenv.build import BuildError, build
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    try:
        directory = outputDirectory(args)
    except ConfigError as e:
        print("provisioner: %s" % (e,), file=err)
        return 2
    progress = BuildProgress(err, getattr(args, "quiet", False))
    try:
        manifest = build(directory, cache=args.cache, log=progress.log,
                         bytecode=not args.no_bytecode, progress=progress)
    except (BuildError, OSError) as e:
        progress.close()
        print("provisioner deployenv build: %s" % (e,), file=err)
        return 1
    progress.close()
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
    b.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bar (default: the packages downloaded and unpacked, "
                   "with the rate and the time left, when standard error is a terminal)")
    b.set_defaults(func=_build)
