# -*- test-case-name: tests.test_hosts_cli -*-
"""
C{provisioner hosts}: the lifecycle of every host, from the running
appliance's JSON API (never the database under it):

    provisioner hosts [--url URL | --config FILE] [--json]
    provisioner hosts show NAME-OR-MAC
    provisioner hosts redeploy NAME
    provisioner hosts adopt MAC --name NAME --profile PROFILE

C{--url} names the appliance's HTTP service; else C{--config} (or the
embedded defaults) gives C{http.address} and C{http.port}. Redeploy and
adopt are allowed only from C{hosts.admin_networks} (default loopback).
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from provisioner.config import ConfigError, loadConfig

__all__ = ["register", "hostsCommand", "baseURL"]


class _Failed(Exception):
    """
    The command cannot go on: the message is printed, C{status} returned.
    """

    def __init__(self, message, status=1):
        Exception.__init__(self, message)
        self.status = status


def baseURL(args):
    """
    The appliance's HTTP base URL: C{--url}, else from the configuration's
    C{http} section (a wildcard address is reached on loopback).
    """
    if args.url:
        return args.url.rstrip("/")
    try:
        config = loadConfig(args.config)
    except ConfigError as e:
        raise _Failed("provisioner: %s" % (e,), 2)
    http = config["http"]
    if not http["enabled"] and args.config is not None:
        raise _Failed("provisioner hosts: http is not enabled in %s: the hosts command talks "
                      "to the appliance's JSON API (give --url)" % (args.config,), 2)
    address = http["address"]
    if address == "0.0.0.0":
        address = "127.0.0.1"
    elif address == "::":
        address = "::1"
    host = "[%s]" % (address,) if ":" in address else address
    return "http://%s:%d" % (host, http["port"])


def _call(base, path, body=None, timeout=30):
    """
    GET C{path}, or POST C{body} as JSON; return the decoded answer.

    @raise _Failed: the appliance cannot be reached or refused.
    """
    url = base + path
    data = None
    headers = {"Accept": "application/json"}
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers,
                                     method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read().decode("utf-8")).get("error")
        except Exception:
            message = None
        if e.code == 404 and message in (None, "no such endpoint"):
            message = "%s: not found (is the hosts service enabled?)" % (url,)
        raise _Failed("provisioner hosts: %s (HTTP %d)" % (message or e.reason, e.code))
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise _Failed("provisioner hosts: cannot reach the appliance at %s: %s" % (base, reason))
    except ValueError:
        raise _Failed("provisioner hosts: %s did not answer JSON" % (url,))


def _when(t):
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def _arch(number):
    """
    DHCP option 93 as C{7 (efi-x64)}.
    """
    if number is None:
        return "-"
    from provisioner.menus.render import archName
    name = archName(number)
    return "%s (%s)" % (number, name) if name else str(number)


def _event(e):
    if not e:
        return "-"
    if e["source"] == e["target"]:
        change = e["target"]
    else:
        change = "%s -> %s" % (e["source"] or "new", e["target"])
    return "%s: %s" % (change, e["why"])


def _bytes(n):
    """
    A byte count for people: C{512 B}, C{64.0 MiB}.
    """
    if n is None:
        return "-"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return "%.1f %s" % (n / size, unit)
    return "%d B" % (n,)


def _verdict(imaging):
    verdict = imaging.get("verdict") or "-"
    if imaging.get("reason"):
        verdict += ": " + imaging["reason"]
    return verdict


def _imagingLine(imaging):
    """
    One host's imagecast receiver in a sentence (C{hosts show}).
    """
    return ("session %s (%s, %s), round %s: received %s of %s, repaired %s; %s" % (
        imaging["session"], imaging["image"], imaging["session_state"], imaging["round"],
        _bytes(imaging["received_bytes"]), _bytes(imaging["size"]),
        _bytes(imaging["repaired_bytes"]), _verdict(imaging)))


def _imagingTable(hosts, out):
    """
    The hosts an imagecast session sends (or sent) an image to: session,
    round, bytes received and repaired, verdict.
    """
    rows = [("NAME", "SESSION", "IMAGE", "ROUND", "RECEIVED", "REPAIRED", "VERDICT")]
    for h in hosts:
        im = h.get("imaging")
        if not im:
            continue
        size = im.get("size") or 0
        share = " (%d%%)" % (100 * im["received_bytes"] // size,) if size else ""
        rows.append((h["name"], im["session"], im["image"], im["round"],
                     _bytes(im["received_bytes"]) + share, _bytes(im["repaired_bytes"]),
                     _verdict(im)))
    if len(rows) > 1:
        print("", file=out)
        print("imaging (imagecast sessions):", file=out)
        _table(rows, out)


def _table(rows, out):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = ["%-*s" % (widths[i], row[i]) for i in range(len(row) - 1)] + [str(row[-1])]
        print("  ".join(cells).rstrip(), file=out)


def _q(text):
    return urllib.parse.quote(text, safe="")


def _list(args, base, out):
    hosts = _call(base, "/api/v1/hosts")["hosts"]
    try:
        machines = _call(base, "/api/v1/discovered")["discovered"]
    except _Failed:
        machines = []
    if args.json:
        json.dump({"hosts": hosts, "discovered": machines}, out, indent=1, sort_keys=True)
        out.write("\n")
        return 0
    rows = [("NAME", "MAC", "STATE", "SINCE (UTC)", "LAST EVENT")]
    for h in hosts:
        macs = h.get("mac") or []
        name = h["name"] + ("" if h.get("in_inventory", True) else " (not in inventory)")
        rows.append((name, macs[0] if macs else "-", h.get("state") or "-",
                     _when(h.get("since")), _event(h.get("last_event"))))
    if len(rows) > 1:
        _table(rows, out)
    else:
        print("(no hosts)", file=out)
    _imagingTable(hosts, out)
    if machines:
        print("", file=out)
        print("discovered (adopt one: provisioner hosts adopt MAC --name NAME --profile P):",
              file=out)
        rows = [("MAC", "ARCH", "VENDOR CLASS", "UUID", "FIRST SEEN", "LAST SEEN", "FILES")]
        for m in machines:
            rows.append((m["mac"], _arch(m["arch"]),
                         m["vendor_class"] or "-", m["uuid"] or "-", _when(m["first_seen"]),
                         _when(m["last_seen"]), ", ".join(f["path"] for f in m["files"][-3:])
                         or "-"))
        _table(rows, out)
    return 0


def _show(args, base, out):
    key = args.name
    host = machine = events = None
    try:
        host = _call(base, "/api/v1/hosts/%s" % (_q(key),))
    except _Failed:
        host = None  # not a host the menus know (or no menus): ask the lifecycle
    life = (host or {}).get("lifecycle")
    if life:
        events = _call(base, "/api/v1/hosts/%s/events" % (_q(life["name"]),))["events"]
    else:
        try:
            machine = _call(base, "/api/v1/discovered/%s" % (_q(key),))
            events = machine.pop("events", [])
        except _Failed:
            try:
                events = _call(base, "/api/v1/hosts/%s/events" % (_q(key),))["events"]
                life = {"name": key}
                life.update(next(h for h in _call(base, "/api/v1/hosts")["hosts"]
                                 if h["name"] == key))
            except (_Failed, StopIteration):
                raise _Failed("provisioner hosts: %s is neither a host with a lifecycle nor "
                              "a discovered machine" % (key,))
    if args.json:
        json.dump({"host": host, "lifecycle": life, "discovered": machine, "events": events},
                  out, indent=1, sort_keys=True)
        out.write("\n")
        return 0
    if life:
        print("%s: %s since %s UTC" % (life["name"], life["state"], _when(life["since"])),
              file=out)
        macs = life.get("macs") or life.get("mac") or []
        print("  MAC: %s" % (", ".join(macs) or "-",), file=out)
        profile = (((host or {}).get("inventory") or {}).get("profile") or {}).get("name")
        print("  profile: %s%s" % (profile or life.get("profile") or "-",
                                   "" if life.get("in_inventory") else
                                   " (not in the inventory file)"), file=out)
        print("  why: %s" % (life.get("reason"),), file=out)
        imaging = (host or {}).get("imaging") or life.get("imaging")
        if imaging:
            print("  imaging: %s" % (_imagingLine(imaging),), file=out)
    elif machine:
        print("%s: discovered (no inventory names it)" % (machine["mac"],), file=out)
        print("  architecture: %s  vendor class: %s  UUID: %s" % (
            _arch(machine["arch"]), machine["vendor_class"] or "-", machine["uuid"] or "-"),
            file=out)
        print("  first seen %s UTC, last seen %s UTC at %s" % (
            _when(machine["first_seen"]), _when(machine["last_seen"]), machine["ip"] or "-"),
            file=out)
        for f in machine["files"]:
            print("  fetched %s over %s at %s UTC" % (f["path"], f["protocol"],
                                                    _when(f["time"])), file=out)
    if events:
        print("timeline (UTC):", file=out)
        for e in events:
            print("  %s  %s" % (_when(e["time"]), _event(e)), file=out)
    return 0


def _redeploy(args, base, out):
    info = _call(base, "/api/v1/hosts/%s/redeploy" % (_q(args.name),), body={})
    if args.json:
        json.dump(info, out, indent=1, sort_keys=True)
        out.write("\n")
        return 0
    print("%s: %s (its next network boot deploys it again)" % (info["name"], info["state"]),
          file=out)
    return 0


def _adopt(args, base, out):
    answer = _call(base, "/api/v1/discovered/%s/adopt" % (_q(args.mac),),
                   body={"name": args.name, "profile": args.profile})
    if args.json:
        json.dump(answer, out, indent=1, sort_keys=True)
        out.write("\n")
        return 0
    info = answer["host"]
    print("# %s is host %s now (%s, profile %s): recorded by the appliance, its next boot "
          "uses the profile." % (args.mac, info["name"], info["state"], info["profile"]),
          file=out)
    out.write(answer["yaml"])
    return 0


def hostsCommand(args, out=None, err=None):
    """
    Run C{provisioner hosts ...}; return the exit status.
    """
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    action = {None: _list, "list": _list, "show": _show, "redeploy": _redeploy,
              "adopt": _adopt}[getattr(args, "action", None)]
    try:
        return action(args, baseURL(args), out)
    except _Failed as e:
        print(str(e), file=err)
        return e.status


def _common(parser, top=False):
    """
    C{--url}, C{--config}, C{--json}: taken before or after the action (an
    action's parser leaves unset ones to the top parser's defaults).
    """
    unset = {} if top else {"default": argparse.SUPPRESS}
    parser.add_argument("--url", help="base URL of the running appliance's HTTP service "
                        "(e.g. http://127.0.0.1:8080)", **(unset or {"default": None}))
    parser.add_argument("--config", "-c", help="configuration file to find the HTTP service "
                        "in (http.address, http.port)", **(unset or {"default": None}))
    parser.add_argument("--json", action="store_true", help="print JSON", **unset)


def register(subparsers):
    parser = subparsers.add_parser(
        "hosts", help="every host's lifecycle: list, show, redeploy, adopt",
        description="The lifecycle of every host (discovered, ready, deploying, deployed, "
                    "failed), from the running appliance's JSON API.")
    _common(parser, top=True)
    parser.set_defaults(func=hostsCommand, action=None)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    listing = actions.add_parser("list", help="the hosts and discovered machines (default)")
    _common(listing)
    show = actions.add_parser("show", help="a host's (or discovered MAC's) timeline")
    show.add_argument("name", metavar="NAME-OR-MAC",
                      help="the host's inventory name, or a discovered machine's MAC")
    _common(show)
    redeploy = actions.add_parser(
        "redeploy", help="deploy a host again at its next network boot")
    redeploy.add_argument("name", metavar="NAME", help="the host's inventory name")
    _common(redeploy)
    adopt = actions.add_parser(
        "adopt", help="make a discovered machine a host (prints the inventory stanza)")
    adopt.add_argument("mac", metavar="MAC", help="the discovered machine's MAC address")
    adopt.add_argument("--name", required=True, help="the host's name")
    adopt.add_argument("--profile", required=True, help="the inventory profile it deploys")
    _common(adopt)
