# -*- test-case-name: tests.test_cli -*-
"""
The C{provisioner} command line. Each subsystem adds its own subcommands:
a module listed in L{COMMAND_MODULES} defines C{register(subparsers)}, which
adds parsers whose C{func(args)} returns the exit status.
"""

import argparse
import importlib
import sys

from provisioner import __version__
from provisioner.config import ConfigError, describe, loadConfig, sample

__all__ = ["main", "COMMAND_MODULES"]

COMMAND_MODULES = [
    "provisioner.tftp.cli",
    "provisioner.images.cli",
    "provisioner.menus.cli",
    "provisioner.mcast.cli",
]


def _checkConfig(args):
    try:
        loadConfig(args.file)
    except ConfigError as e:
        print("provisioner: %s" % (e,), file=sys.stderr)
        return 2
    print("%s: ok" % (args.file,))
    return 0


def _configKeys(args):
    for key, item in describe():
        print("%-40s %-6s %-14r %s" % (key, item.kind, item.default, item.doc))
    return 0


def _configSample(args):
    sys.stdout.write(sample())
    return 0


def buildParser():
    parser = argparse.ArgumentParser(
        prog="provisioner", description="provisioner: network-provisioning appliance tools.")
    parser.add_argument("--version", action="version", version="provisioner " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file")
    check.set_defaults(func=_checkConfig)
    keys = sub.add_parser("config-keys", help="list every configuration key with its default")
    keys.set_defaults(func=_configKeys)
    example = sub.add_parser("config-sample",
                             help="print a commented YAML file of every key and its default")
    example.set_defaults(func=_configSample)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            if e.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv=None):
    parser = buildParser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
