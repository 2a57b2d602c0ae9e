# -*- test-case-name: tests.test_images -*-
"""
The C{images} section of the configuration: the watched image directory.
"""

from provisioner.config import Key, Section

__all__ = ["SCHEMA"]


def _checkPrefix(value):
    if value.startswith("/") or value.endswith("/") or ".." in value.split("/"):
        return "must be a relative path without leading or trailing '/' and no '..' (got %r)" % (
            value,)
    return None


SCHEMA = Section("the watched image directory and its catalogue", {
    "enabled": Key(False, "bool", "run the image catalogue (off by default: nothing is "
                   "watched or served until you point it at a directory)"),
    "directory": Key("images", "path", "the watched directory of boot images (kernels, "
                     "initrds, NBPs, ISOs, disk images); created if missing. Subdirectories "
                     "are catalogued too (names are relative paths)"),
    "state_dir": Key("state", "path", "where the catalogue is persisted "
                     "(images-catalog.json), so unchanged files are not hashed again after a "
                     "restart; created if missing"),
    "prefix": Key("images", "str", "the path images are served under by TFTP and HTTP "
                  "(images/NAME); empty serves them at the top level", check=_checkPrefix),
    "watch": Key("auto", "str", "how changes are noticed: inotify, poll, or auto (inotify "
                 "when the platform has it, else polling)", choices=("auto", "inotify", "poll")),
    "poll_interval": Key(2.0, "float", "seconds between scans when polling (also the "
                         "time a file's size and mtime must stay unchanged before it is "
                         "catalogued)", minimum=0.05, maximum=3600),
    "rescan_interval": Key(300.0, "float", "seconds between full rescans when inotify is "
                           "used (repairs missed events, e.g. after a queue overflow); 0 "
                           "disables", minimum=0, maximum=86400),
    "follow_symlinks": Key("inside", "str", "which symlinks in the directory are "
                           "catalogued and served: inside (only those that resolve inside "
                           "the directory, checked by the kernel when the file is opened), "
                           "never (no symlink at all), always (wherever they lead: only for "
                           "links to other file systems you trust)",
                           choices=("inside", "never", "always")),
    "hash_threads": Key(2, "int", "threads hashing new files (sha256 is computed off the "
                        "reactor thread)", minimum=1, maximum=64),
    "ignore": Key([".*", "*.part", "*.tmp", "*.swp", "*~"], "list",
                  "glob patterns (matched against each path component) of files never "
                  "catalogued: temporary and hidden files",
                  items=Key("", "str", "a glob pattern")),
    "kinds": Key({}, "map", "extra glob pattern -> kind rules, tried before the built-in "
                 "ones (kernel, initrd, nbp, iso, disk, other), e.g. {'*.lz': kernel}"),
})
