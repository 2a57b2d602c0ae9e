# -*- test-case-name: tests.test_images_cli -*-
"""
C{provisioner images}: the image catalogue, read from the persisted state of
the configuration given (no hashing, nothing started), or from a running
appliance's JSON API (C{--url}).
"""

import json
import os
import sys
import time
import urllib.request

from provisioner.config import ConfigError, loadConfig

__all__ = ["register", "listImages"]


def _fromState(config):
    from provisioner.images.state import STATE_FILE, loadState
    section = config["images"]
    path = os.path.join(section["state_dir"], STATE_FILE)
    if not os.path.exists(path):
        raise LookupError("no persisted catalogue at %s (has the images service run "
                          "with this configuration?)" % (path,))
    records = loadState(path)
    out = []
    for name in sorted(records):
        r = records[name]
        full = os.path.join(section["directory"], name)
        try:
            st = os.stat(full)
            current = (st.st_ino == r.get("inode") and st.st_size == r.get("size") and
                       st.st_mtime_ns == r.get("mtime_ns"))
        except OSError:
            current = False
        out.append({"name": name, "size": r.get("size"), "sha256": r.get("sha256"),
                    "mtime": r.get("mtime"), "kind": r.get("kind"), "current": current})
    return out


def _fromURL(url):
    base = url.rstrip("/")
    with urllib.request.urlopen(base + "/api/v1/images", timeout=10) as response:
        data = json.loads(response.read().decode("utf-8"))
    return data["images"]


def _size(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0


def listImages(args, out=None, err=None):
    """
    Print the catalogue; return the exit status.
    """
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    try:
        if args.url:
            images = _fromURL(args.url)
        else:
            images = _fromState(loadConfig(args.config))
    except ConfigError as e:
        print("provisioner: %s" % (e,), file=err)
        return 2
    except (LookupError, OSError, ValueError, KeyError) as e:
        print("provisioner images: %s" % (e,), file=err)
        return 1
    if args.json:
        json.dump(images, out, indent=1, sort_keys=True)
        out.write("\n")
        return 0
    if not images:
        print("(no images)", file=out)
        return 0
    width = max(len(i["name"]) for i in images)
    for i in images:
        stale = "" if i.get("current", True) else "  (changed since catalogued)"
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(i["mtime"] or 0))
        print("%-*s  %-6s  %10s  %s  %s%s" % (width, i["name"], i["kind"], _size(i["size"]),
                                             when, (i["sha256"] or "")[:16], stale), file=out)
    return 0


def register(subparsers):
    parser = subparsers.add_parser(
        "images", help="list the image catalogue",
        description="List the image catalogue: from the persisted state of the "
                    "configuration (default), or from a running appliance's HTTP API.")
    parser.add_argument("--config", "-c", default=None,
                        help="configuration file (default: the embedded defaults)")
    parser.add_argument("--url", default=None,
                        help="base URL of a running appliance's HTTP service "
                             "(e.g. http://127.0.0.1:8080)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=listImages)
