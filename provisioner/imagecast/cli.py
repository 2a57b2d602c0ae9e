# -*- test-case-name: tests.test_imagecast_cli -*-
"""
The operator's imagecast commands (they talk to the running appliance over
its control channel):

  - C{provisioner imagecast send IMAGE [--min-receivers N] [--max-wait T]}:
    start a session and, unless C{--no-wait}, follow it to the end;
  - C{provisioner imagecast status}: the scorecard.

The receiving end, C{provisioner receive}, is a client program
(L{provisioner.client.receivecli}). Exit status 0 means success, 1 a
failure with a message on standard error, 2 a usage error.
"""

import json
import sys

from provisioner.client.control import addConnectionArguments, connect, runReactor
from provisioner.imagecast import commands

__all__ = ["register"]


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
    addConnectionArguments(send, False)
    send.set_defaults(func=_send)
    status = msub.add_parser("status", help="print the scorecard of the sessions")
    status.add_argument("--session", type=int, default=None,
                        help="only this session's scorecard (default: every session kept)")
    status.add_argument("--json", action="store_true",
                        help="print the scorecards as JSON instead of text")
    status.add_argument("--detail", action="store_true",
                        help="include every reported range (JSON)")
    addConnectionArguments(status, False)
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


def _send(args):
    def start(reactor):
        from twisted.internet import defer
        d = connect(reactor, args)
        state = {}

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
                res = yield state["proto"].callRemote(commands.Status, session=sid,
                                                      wait=30.0, rounds=seen)
                s = res["scorecard"]["sessions"][0]
                if len(s["rounds"]) > seen:
                    seen = len(s["rounds"])
                    r = s["rounds"][-1]
                    print("round %d: %d bytes in %d ranges at %.1f Mbit/s, %d receivers" % (
                        r["round"], r["bytes"], r["ranges"], r["rate_mbps"],
                        len(s["permanent_group"])), file=sys.stderr)
                if s["state"] == "done":
                    break
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
        return d.addCallback(connected).addCallback(follow)
    return runReactor(start)


