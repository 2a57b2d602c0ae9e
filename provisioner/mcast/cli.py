# -*- test-case-name: tests.test_mcast_cli -*-
"""
Command line of the multicast subsystem:

  - C{provisioner multicast send IMAGE [--min-receivers N] [--max-wait T]}:
    start a session on the running appliance (over the control channel) and,
    unless C{--no-wait}, follow it to the end;
  - C{provisioner multicast status}: the scorecard;
  - C{provisioner receive --server HOST --output PATH}: receive an image.

Exit status 0 means success (for C{receive}: the sha256 matched), 1 a
failure with a message on standard error, 2 a usage error.
"""

import json
import os
import socket
import sys
import time

from provisioner.mcast import commands

__all__ = ["register", "connectEndpoint"]

DEFAULT_PORT = 7010


def _addConnection(parser, serverRequired):
    parser.add_argument("--server", required=serverRequired, default="127.0.0.1",
                        help="appliance host (control channel)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help="control channel TCP port (default %d)" % (DEFAULT_PORT,))
    parser.add_argument("--tls", action="store_true", help="use TLS on the control channel")
    parser.add_argument("--ca", metavar="FILE",
                        help="PEM CA certificate the server's certificate must chain to "
                        "(default: the system's trust store)")
    parser.add_argument("--cert", metavar="FILE", help="PEM client certificate")
    parser.add_argument("--key", metavar="FILE",
                        help="PEM private key of --cert (default: in the --cert file)")
    parser.add_argument("--server-name", metavar="NAME",
                        help="name the server's certificate must carry (default: --server)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="give up after this many seconds without a control connection "
                        "(default 60)")


def register(subparsers):
    """
    Add C{multicast} and C{receive} to the C{provisioner} command.
    """
    mc = subparsers.add_parser("multicast", help="control-channel multicast of images")
    msub = mc.add_subparsers(dest="mcommand", metavar="SUBCOMMAND")
    send = msub.add_parser("send", help="multicast an image from the appliance's "
                           "multicast.root to every receiver")
    send.add_argument("image", metavar="IMAGE", help="image name below multicast.root")
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
    _addConnection(send, False)
    send.set_defaults(func=_send)
    status = msub.add_parser("status", help="print the scorecard of the sessions")
    status.add_argument("--session", type=int, default=None)
    status.add_argument("--json", action="store_true")
    status.add_argument("--detail", action="store_true",
                        help="include every reported range (JSON)")
    _addConnection(status, False)
    status.set_defaults(func=_status)
    mc.set_defaults(func=lambda args: (mc.print_help(sys.stderr), 2)[1])

    recv = subparsers.add_parser("receive", help="receive a multicast image")
    _addConnection(recv, True)
    recv.add_argument("--output", "-o", required=True, metavar="PATH",
                      help="where the image is written (PATH.mcast-state keeps the progress)")
    recv.add_argument("--image", default=None, help="only this image (default: the first "
                      "session announced)")
    recv.add_argument("--id", dest="clientId", default=None,
                      help="client id (default: HOSTNAME:PATH; a restarted receiver with "
                      "the same id resumes)")
    recv.add_argument("--interface", default=None, metavar="ADDR",
                      help="local address of the interface to join the group on")
    recv.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    recv.add_argument("--json", action="store_true", help="print the summary as JSON")
    recv.set_defaults(func=_receive)


def connectEndpoint(reactor, args):
    """
    Return the client endpoint for the control channel from C{args}.
    """
    from twisted.internet import endpoints, ssl
    endpoint = endpoints.HostnameEndpoint(reactor, args.server, args.port, timeout=10)
    if not args.tls:
        return endpoint
    name = args.server_name or args.server
    kw = {}
    if args.ca:
        with open(args.ca, "rb") as f:
            kw["trustRoot"] = ssl.Certificate.loadPEM(f.read())
    if args.cert:
        with open(args.cert, "rb") as f:
            pem = f.read()
        if args.key:
            with open(args.key, "rb") as f:
                pem += b"\n" + f.read()
        kw["clientCertificate"] = ssl.PrivateCertificate.loadPEM(pem)
    options = ssl.optionsForClientTLS(name, **kw)
    return endpoints.wrapClientTLS(options, endpoint)


def _quietCollector():
    """
    The data path allocates short-lived objects by the million and keeps
    few: move what start-up built out of the collector's sight and run it
    less often (a receiver spent several percent of its time in it).
    """
    import gc
    gc.collect()
    gc.freeze()
    gc.set_threshold(50000, 20, 20)


def _runReactor(start):
    """
    Run the reactor around C{start(reactor)} (a Deferred of the exit
    status) and return that status.
    """
    from twisted.internet import reactor
    out = []

    def go():
        from twisted.internet import defer
        d = defer.maybeDeferred(start, reactor)

        def failed(f):
            print("provisioner: error: %s" % (_message(f),), file=sys.stderr)
            return 1
        d.addErrback(failed)
        d.addCallback(out.append)
        d.addBoth(lambda _: reactor.stop())
    reactor.callWhenRunning(go)
    _quietCollector()
    reactor.run(installSignalHandlers=True)
    return out[0] if out else 1


def _message(f):
    from twisted.internet import error
    if f.check(error.ConnectError, error.DNSLookupError, error.TimeoutError):
        return "cannot reach the appliance's control channel: %s" % (f.getErrorMessage(),)
    if f.check(commands.MulticastError):
        return f.getErrorMessage()
    if f.check(OSError):
        return f.getErrorMessage()
    return "%s: %s" % (f.type.__name__, f.getErrorMessage())


def _connect(reactor, args):
    from twisted.protocols import amp
    from twisted.internet import protocol
    factory = protocol.Factory.forProtocol(amp.AMP)
    return connectEndpoint(reactor, args).connect(factory)


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
        d = _connect(reactor, args)

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
    return _runReactor(start)


def _send(args):
    def start(reactor):
        from twisted.internet import defer
        d = _connect(reactor, args)
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
    return _runReactor(start)


def _bar(receiver, out):
    size = receiver.size or 0
    have = receiver.received.total() if size else 0
    frac = have / size if size else 0.0
    width = 30
    filled = int(frac * width)
    out.write("\r[%s%s] %5.1f%% %s/%s MiB round %d " % (
        "#" * filled, "." * (width - filled), frac * 100, "%.1f" % (have / 2**20),
        "%.1f" % (size / 2**20), receiver.round))
    out.flush()


def _receive(args):
    from provisioner.mcast.receiver import OutputFile, ReceiveError, Receiver, ReceiverClient
    try:
        output = OutputFile(args.output)
    except ReceiveError as e:
        print("provisioner receive: error: %s" % (e,), file=sys.stderr)
        return 1
    clientId = args.clientId or "%s:%s" % (socket.gethostname(), os.path.abspath(args.output))
    tty = sys.stderr.isatty() and not args.quiet

    def start(reactor):
        from twisted.internet import task
        receiver = Receiver(reactor, output, clientId, image=args.image,
                            interface=args.interface)
        client = ReceiverClient(reactor, connectEndpoint(reactor, args), receiver,
                                address=args.interface or "",
                                timeout=args.timeout,
                                serverName="%s:%d" % (args.server, args.port))
        bar = None
        if tty:
            bar = task.LoopingCall(_bar, receiver, sys.stderr)
            bar.clock = reactor
            bar.start(0.25)
        d = client.run()

        def finished(status):
            if bar is not None and bar.running:
                bar.stop()
                _bar(receiver, sys.stderr)
                sys.stderr.write("\n")
            summary = receiver.summary()
            summary["status"] = "ok" if status == 0 else "failed"
            if receiver.failed:
                summary["error"] = receiver.failed
                print("provisioner receive: error: %s" % (receiver.failed,), file=sys.stderr)
            if args.json:
                print(json.dumps(summary, sort_keys=True))
            else:
                print("%s: %s, %d rounds, %d bytes received (%d repaired, %d over the control "
                      "channel, %d resumed from a previous run), %.2f s" % (
                          args.output, "sha256 ok" if status == 0 else "FAILED",
                          summary["rounds"], summary["bytes_received"],
                          summary["bytes_repaired"], summary["bytes_fetched"],
                          summary["bytes_resumed"], summary["seconds"]))
            output.close()
            return status
        return d.addCallback(finished)
    return _runReactor(start)
