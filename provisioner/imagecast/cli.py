# -*- test-case-name: tests.test_imagecast_cli -*-
"""
The operator's imagecast commands (they talk to the running appliance over
its control channel):

  - C{provisioner imagecast send IMAGE [--min-receivers N] [--max-wait T]}:
    start a session and, unless C{--no-wait}, follow it to the end;
  - C{provisioner imagecast status}: the scorecard.

Both find the control channel with C{--server} and C{--port}, else in the
configuration of C{--config} (L{locate}: C{imagecast.address},
C{imagecast.port}, C{imagecast.tls.enabled}; a wildcard address is
reached on loopback), else on 127.0.0.1 port 7010. C{send} follows the
session with a progress bar on a terminal (the receivers that have the
whole image, the round, the rate and the time left;
L{provisioner.client.progress.ProgressDisplay}).

The receiving end, C{provisioner receive}, is a client program
(L{provisioner.client.receivecli}). Exit status 0 means success, 1 a
failure with a message on standard error, 2 a usage error.
"""

import json
import sys

from provisioner.client.control import addConnectionArguments, connect, runReactor
from provisioner.imagecast import commands

__all__ = ["register", "locate"]


class _NotFound(Exception):
    """
    The control channel cannot be found in the configuration (the message
    says why).
    """


def _addConfig(parser):
    """
    C{--config}, and C{--server} and C{--port} left unset unless given (so
    that L{locate} knows whether to read the configuration).
    """
    parser.add_argument("--config", "-c", default=None, metavar="FILE",
                        help="the appliance's configuration file, to find the control "
                        "channel in (imagecast.address, imagecast.port, "
                        "imagecast.tls.enabled); --server and --port win over it")
    parser.set_defaults(server=None, port=None)


def locate(args):
    """
    Fill in C{args.server} and C{args.port} where they were not given:
    from the configuration of C{args.config} (the control channel's
    C{imagecast.address}, 0.0.0.0 or :: reached on loopback, and
    C{imagecast.port}; C{imagecast.tls.enabled} implies C{--tls}), else
    127.0.0.1 and the default port.

    @raise _NotFound: the configuration cannot be read, or does not say
        where the control channel is.
    """
    from provisioner.client.control import DEFAULT_PORT
    if args.config is None or (args.server is not None and args.port is not None):
        args.server = args.server or "127.0.0.1"
        args.port = args.port or DEFAULT_PORT
        return args
    from provisioner.config import ConfigError, loadConfig
    try:
        section = loadConfig(args.config)["imagecast"]
    except ConfigError as e:
        raise _NotFound(str(e))
    if not section["enabled"]:
        raise _NotFound("imagecast is not enabled in %s: the appliance has no control "
                        "channel to talk to" % (args.config,))
    if args.port is None:
        if not section["port"]:
            raise _NotFound("imagecast.port is 0 in %s (a free port picked at start): give "
                            "--port" % (args.config,))
        args.port = section["port"]
    if args.server is None:
        address = section["address"]
        args.server = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address, address)
    if section["tls"]["enabled"]:
        args.tls = True
    return args


def _locateOrSay(args):
    """
    L{locate}; if it cannot, say why.

    @return: L{None}, or the exit status (2) when the control channel
        cannot be found.
    """
    try:
        locate(args)
    except _NotFound as e:
        print("provisioner imagecast: %s" % (e,), file=sys.stderr)
        return 2
    return None


def register(subparsers):
    """
    Add C{imagecast} to the C{provisioner} command.
    """
    mc = subparsers.add_parser("imagecast", help="image multicast over the control channel")
    msub = mc.add_subparsers(dest="mcommand", metavar="SUBCOMMAND")
    send = msub.add_parser("send", help="multicast an image from the appliance's "
                           "imagecast.root to every receiver")
    send.add_argument("image", metavar="IMAGE", help="image name below imagecast.root")
    send.add_argument("--min-receivers", type=int, default=None, metavar="N",
                      help="start once N receivers are enrolled")
    send.add_argument("--max-wait", type=float, default=None, metavar="T",
                      help="start after T seconds with whoever is enrolled")
    send.add_argument("--rate", type=float, default=None, metavar="MBPS",
                      help="initial rate in Mbit/s")
    send.add_argument("--max-rounds", type=int, default=None, metavar="N",
                      help="multicast rounds before the rest goes over the control channel")
    send.add_argument("--no-wait", action="store_true",
                      help="return once the session is created instead of following it")
    send.add_argument("--json", action="store_true", help="print the final scorecard as JSON")
    send.add_argument("--quiet", "-q", action="store_true",
                      help="no progress bar (default: a bar of the receivers that have the "
                      "whole image, with the round, the rate and the time left, when standard "
                      "error is a terminal; else a line per round)")
    addConnectionArguments(send, False)
    _addConfig(send)
    send.set_defaults(func=_send)
    status = msub.add_parser("status", help="print the scorecard of the sessions")
    status.add_argument("--session", type=int, default=None,
                        help="only this session's scorecard (default: every session kept)")
    status.add_argument("--json", action="store_true",
                        help="print the scorecards as JSON instead of text")
    status.add_argument("--detail", action="store_true",
                        help="include every reported range (JSON)")
    addConnectionArguments(status, False)
    _addConfig(status)
    status.set_defaults(func=_status)
    mc.set_defaults(func=lambda args: (mc.print_help(sys.stderr), 2)[1])


def _printCard(card, out):
    for s in card["sessions"]:
        print("session %d: %s (%d bytes, sha256 %s) %s, round %d, %s Mbit/s, group %s:%d" % (
            s["session"], s["name"], s["size"], s["sha256"][:16], s["state"], s["round"],
            s["rate_mbps"], s["group"], s["port"]), file=out)
        print("  permanent group: %s" % (", ".join(s["permanent_group"]) or "-",), file=out)
        print("  current group:   %s" % (", ".join(s["current_group"]) or "-",), file=out)
        for r in s["rounds"]:
            print("  round %d: %d bytes in %d ranges, %d datagrams, %.1f Mbit/s; missing "
                  "after it: %s" % (
                      r["round"], r["bytes"], r["ranges"], r["datagrams"], r["rate_mbps"],
                      ", ".join("%s=%d" % kv for kv in sorted(r["reports"].items())) or "-"),
                  file=out)
        for cid, m in sorted(s["members"].items()):
            print("  %s (%s): %s%s" % (cid, m["address"], m["state"],
                                       " - " + m["reason"] if m["reason"] else ""), file=out)
        if s.get("tail_bytes"):
            print("  last %d bytes sent over the control channel (fewer than tail_bytes after "
                  "a repair round)" % (s["tail_bytes"],), file=out)
        if s["unrecoverable_bytes"]:
            print("  unrecoverable by multicast: %d bytes (sent over the control channel)"
                  % (s["unrecoverable_bytes"],), file=out)
    if not card["sessions"]:
        print("no sessions", file=out)


def _status(args):
    failed = _locateOrSay(args)
    if failed is not None:
        return failed

    def start(reactor):
        d = connect(reactor, args)

        def connected(proto):
            return proto.callRemote(commands.Status, session=args.session,
                                    detail=args.detail or None)

        def show(result):
            card = result["scorecard"]
            if args.json or args.detail:
                json.dump(card, sys.stdout, indent=1, sort_keys=True)
                print()
            else:
                _printCard(card, sys.stdout)
            return 0
        return d.addCallback(connected).addCallback(show)
    return runReactor(start)


def _sendPostfix(s):
    """
    What the progress bar of C{send} says of session C{s} (a scorecard
    entry) besides the receivers: its state or round, and its rate.
    """
    if s["state"] in ("waiting", "done"):
        return s["state"]
    return "round %d %s, %s Mbit/s" % (s["round"], s["phase"], s["rate_mbps"])


def _send(args):
    failed = _locateOrSay(args)
    if failed is not None:
        return failed

    def start(reactor):
        from twisted.internet import defer

        from provisioner.client.progress import ProgressDisplay
        d = connect(reactor, args)
        state = {}
        display = ProgressDisplay(reactor, sys.stderr, False if args.quiet else None,
                                  unit="receivers", interval=0.5)

        def connected(proto):
            state["proto"] = proto
            return proto.callRemote(commands.StartSession, image=args.image,
                                    minReceivers=args.min_receivers, maxWait=args.max_wait,
                                    rate=args.rate, maxRounds=args.max_rounds)

        @defer.inlineCallbacks
        def follow(result):
            sid = result["session"]
            print("session %d: %s (%d bytes)" % (sid, result["name"], result["size"]),
                  file=sys.stderr)
            if args.no_wait:
                return 0
            seen = 0
            while True:
                # a long poll: the answer comes with the next round or the end
                # (or, with a bar to redraw, within a second)
                res = yield state["proto"].callRemote(
                    commands.Status, session=sid, wait=1.0 if display.enabled else 30.0,
                    rounds=seen)
                s = res["scorecard"]["sessions"][0]
                if len(s["rounds"]) > seen:
                    seen = len(s["rounds"])
                    r = s["rounds"][-1]
                    if not args.quiet:
                        display.write("round %d: %d bytes in %d ranges at %.1f Mbit/s, %d "
                                      "receivers\n" % (r["round"], r["bytes"], r["ranges"],
                                                        r["rate_mbps"],
                                                        len(s["permanent_group"])))
                display.update(len(s["complete"]), len(s["permanent_group"]) or None,
                               postfix=_sendPostfix(s))
                if s["state"] == "done":
                    break
            display.finish()
            if args.json:
                json.dump(s, sys.stdout, indent=1, sort_keys=True)
                print()
            else:
                _printCard({"sessions": [s]}, sys.stdout)
            ok = s["permanent_group"] and len(s["complete"]) == len(s["permanent_group"])
            if not ok:
                print("provisioner: %d of %d receivers did not complete" % (
                    len(s["permanent_group"]) - len(s["complete"]),
                    len(s["permanent_group"])), file=sys.stderr)
            return 0 if ok else 1

        def ended(result):
            display.finish()
            return result
        return d.addCallback(connected).addCallback(follow).addBoth(ended)
    return runReactor(start)
