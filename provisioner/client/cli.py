# -*- test-case-name: tests.test_client_cli -*-
"""
C{provisioner fetch tftp://HOST[:PORT]/PATH}: download a file over TFTP with
the client-adjustable window (the flow control facility), falling back to
plain RFC 7440 and RFC 1350 against servers that ignore options. With
C{--multicast}, by multicast TFTP (RFC 2090) with roles and smart repair
(L{fetchMulticast}); C{python -m provisioner.client.mtftp} runs that alone
(L{mtftpMain}).

Other transfer modes hook in here: add arguments to the parser returned by
L{addFetchParser} (or in L{register}) and a runner to L{FETCH_RUNNERS}: the
first runner whose predicate accepts the parsed arguments runs instead of
the unicast one, e.g. C{("multicast", lambda args: args.multicast, run)}.
A runner is C{run(reactor, args, target, sink, reporter, fallback)}
(C{reporter}: the L{provisioner.client.progress.ProgressDisplay}, to call
with the bytes received and the size) returning a Deferred that fires with a L{provisioner.client.tftp.FetchResult};
C{fallback} is the unicast runner, with the same signature.

C{provisioner receive --server HOST --output PATH}, which receives an
image that the appliance multicasts (imagecast), is in
L{provisioner.client.receivecli}; L{register} adds it too.
"""

import json
import os
import socket
import stat
import sys
from urllib.parse import unquote, urlsplit

from twisted.internet import defer

from provisioner.client import mtftp
from provisioner.client.progress import ProgressDisplay
from provisioner.client.receivecli import addReceiveParser
from provisioner.client.roles import RolePolicy
from provisioner.client.tftp import FetchOptions, FetchResult, TFTPError, fetch
from provisioner.hashing import sha256File

__all__ = ["register", "parseTarget", "FETCH_RUNNERS", "addFetchParser", "runFetch",
           "addMulticastArguments", "fetchMulticast", "runMulticast", "mtftpMain"]

# (name, predicate(args), runner): alternatives to the unicast fetch.
FETCH_RUNNERS = []


class Target:
    """
    A parsed C{tftp://} URL.
    """

    def __init__(self, host, port, path):
        self.host = host
        self.port = port
        self.path = path

    def __repr__(self):
        return "tftp://%s:%d/%s" % (self.host, self.port, self.path)


def parseTarget(url, defaultPort=69):
    """
    Parse C{tftp://HOST[:PORT]/PATH} (HOST may be a name, an IPv4 address or
    a bracketed IPv6 one).

    @raise ValueError: not such a URL.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != "tftp" or not parts.hostname:
        raise ValueError("not a tftp://HOST[:PORT]/PATH URL: %r" % (url,))
    path = unquote(parts.path.lstrip("/"))
    if not path:
        raise ValueError("no file in %r" % (url,))
    try:
        port = parts.port or defaultPort
    except ValueError:
        raise ValueError("bad port in %r" % (url,))
    return Target(parts.hostname, port, path)


def _resolve(host):
    info = socket.getaddrinfo(host, None, 0, socket.SOCK_DGRAM)
    for family, _, _, _, addr in info:
        if family == socket.AF_INET:
            return addr[0]
    return info[0][4][0]


def _window(text):
    n = int(text)
    if not 1 <= n <= 65535:
        raise ValueError(text)
    return n


def _growth(text):
    """
    C{4} (clean windows) or C{0.1s} (seconds).
    """
    text = text.strip()
    if text.endswith("s"):
        value = float(text[:-1])
        if value <= 0:
            raise ValueError(text)
        return ("seconds", value)
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return ("windows", value)


def _size(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return "%.1f %s" % (n, unit) if unit != "B" else "%d B" % (n,)
        n /= 1024.0


def addFetchParser(subparsers):
    """
    Add the C{fetch} parser and return it (so other modes can add flags).
    """
    p = subparsers.add_parser(
        "fetch", help="download a file over TFTP (adaptive window, falls back to RFC 7440/1350)",
        description="Download tftp://HOST[:PORT]/PATH. With the client-adjustable window "
        "against provisioner; plain RFC 7440, then RFC 1350, against servers that ignore "
        "the options.")
    p.add_argument("url", help="tftp://HOST[:PORT]/PATH")
    p.add_argument("-o", "--output", help="write here (default: the file's base name; "
                   "'-' for stdout)")
    p.add_argument("--blksize", type=int, default=1468,
                   help="block size to propose (RFC 2348; default 1468, 0 for none)")
    p.add_argument("--windowsize", type=_window, default=32,
                   help="initial window to propose (RFC 7440; default 32; the server may "
                   "counter)")
    p.add_argument("--adaptive", dest="adaptive", action="store_true", default=True,
                   help="ask for the adaptive window (default)")
    p.add_argument("--no-adaptive", dest="adaptive", action="store_false",
                   help="a fixed RFC 7440 window")
    p.add_argument("--msftwindow", action="store_true",
                   help="speak Windows bootmgr's variable window (msftwindow) instead")
    p.add_argument("--pin-window", action="store_true",
                   help="negotiate the adaptive option but never change the window "
                   "(benchmarks: a fixed window with the adaptive loss signalling)")
    p.add_argument("--max-window", type=_window, default=64,
                   help="never ask for a window above this (default 64)")
    p.add_argument("--grow-after", type=_growth, default=("windows", 1), metavar="N|Ts",
                   help="loss-free period before asking one more block: N clean windows "
                   "or T seconds (e.g. 0.1s); default 1")
    p.add_argument("--decrease", type=int, default=8, metavar="N",
                   help="after a loss ask for WS/2+N (default 8; 0: half)")
    p.add_argument("--timeout", type=float, default=1.0,
                   help="first request timeout, and the ceiling of the data timeout (s)")
    p.add_argument("--retries", type=int, default=6, help="timeouts in a row before giving up")
    p.add_argument("--no-fallback", dest="fallback", action="store_false", default=True,
                   help="fail instead of retrying with fewer options")
    p.add_argument("--no-tsize", dest="tsize", action="store_false", default=True,
                   help="do not ask for the transfer size")
    p.add_argument("--trace", action="store_true", help="print the window trace")
    p.add_argument("--sha256", action="store_true", help="print the SHA-256 of the file")
    p.add_argument("--stats", action="store_true",
                   help="print mode, size, time, rate and losses")
    p.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="draw the progress bar (rate, time left) even when stderr is not a "
                   "terminal (default: only on a terminal)")
    p.add_argument("-q", "--quiet", dest="progress", action="store_false",
                   help="no progress bar")
    p.set_defaults(func=_main)
    return p


def register(subparsers):
    """
    Add C{fetch} and C{receive} (L{provisioner.client.receivecli}) to the
    C{provisioner} command.
    """
    parser = addFetchParser(subparsers)
    addMulticastArguments(parser)
    if not any(name == "multicast" for name, _, _ in FETCH_RUNNERS):
        FETCH_RUNNERS.append(("multicast", lambda args: args.multicast, fetchMulticast))
    addReceiveParser(subparsers)


def optionsFromArgs(args):
    """
    The L{FetchOptions} for parsed arguments.
    """
    kind, value = args.grow_after
    return FetchOptions(
        blksize=args.blksize or None, windowsize=args.windowsize, adaptive=args.adaptive,
        msftwindow=args.msftwindow, tsize=args.tsize, timeout=args.timeout,
        retries=args.retries, growWindows=value if kind == "windows" else 1,
        growSeconds=value if kind == "seconds" else None, decrease=args.decrease,
        fallback=args.fallback, maxWindow=args.max_window, pin=args.pin_window)


def fetchUnicast(reactor, args, target, sink, reporter, fallback=None):
    """
    The unicast runner (the default, and the fallback the others are given).
    """
    return fetch(reactor, target.address, target.port, target.path, sink,
                 optionsFromArgs(args), progress=reporter)


def runFetch(reactor, args, out=None, err=None):
    """
    Run one fetch on C{reactor}; return a Deferred firing with the exit
    status. Output goes to C{out} (results) and C{err} (progress, errors).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        target = parseTarget(args.url)
    except ValueError as e:
        err.write("provisioner fetch: %s\n" % (e,))
        return defer.succeed(2)
    try:
        target.address = _resolve(target.host)
    except OSError as e:
        err.write("provisioner fetch: cannot resolve %s: %s\n" % (
            target.host, getattr(e, "strerror", None) or e))
        return defer.succeed(2)
    output = args.output or os.path.basename(target.path) or "fetched"
    toStdout = output == "-"
    try:
        sink = (getattr(out, "buffer", out) if toStdout else open(output + ".part", "wb"))
    except OSError as e:
        err.write("provisioner fetch: %s: %s\n" % (output, e.strerror))
        return defer.succeed(1)
    reporter = ProgressDisplay(reactor, err, args.progress,
                               description=os.path.basename(target.path))
    runner = fetchUnicast
    for name, predicate, alternative in FETCH_RUNNERS:
        if predicate(args):
            runner = alternative
            break
    d = defer.maybeDeferred(runner, reactor, args, target, sink, reporter, fetchUnicast)

    def done(result):
        reporter.finish()
        if not toStdout:
            sink.close()
            os.replace(output + ".part", output)
        _report(err if toStdout else out, args, result, "-" if toStdout else output)
        return 0

    def failed(f):
        reporter.finish()
        if not toStdout:
            sink.close()
            try:
                os.unlink(output + ".part")
            except OSError:
                pass
        err.write("provisioner fetch: %s\n" % (f.value if f.check(TFTPError) else
                                                f.getErrorMessage(),))
        return 1
    return d.addCallbacks(done, failed)


def _report(report, args, result, name):
    """
    Write what C{--stats}, C{--trace} and C{--sha256} ask for about a
    fetched file (C{name}) to C{report}.
    """
    if args.stats:
        rate = result.size / result.elapsed if result.elapsed else 0.0
        report.write("mode %s blksize %s window %s size %d time %.3fs rate %s/s "
                     "losses %d timeouts %d\n" % (
                         result.mode, result.blksize, result.windowsize, result.size,
                         result.elapsed, _size(rate), result.losses, result.timeouts))
    if args.trace:
        report.write("# window trace: time(s) old new reason max frozen\n")
        for change in result.trace:
            report.write("%.4f %d %d %s %s %s\n" % change.asTuple())
    if args.sha256:
        report.write("%s  %s\n" % (result.sha256, name))
    report.flush()


def _main(args):
    from twisted.internet import reactor
    status = []

    def go():
        d = runFetch(reactor, args)
        d.addBoth(lambda s: (status.append(s), reactor.stop()))
    reactor.callWhenRunning(go)
    reactor.run()
    return status[0] if status and isinstance(status[0], int) else 1


# The multicast fetch (RFC 2090: roles, smart repair) ------------------------

def fetchMulticast(reactor, args, target, sink, reporter, fallback):
    """
    The C{--multicast} runner of C{provisioner fetch} (in
    L{FETCH_RUNNERS}): multicast into C{sink} (a regular file), then a
    L{provisioner.client.tftp.FetchResult}; the role
    history and gap figures go to standard error. When the server refuses
    multicast (L{provisioner.client.mtftp.MulticastRefused}) the file is fetched by the ordinary
    unicast runner C{fallback} instead, unless C{--no-fallback}.
    """
    err = getattr(reporter, "stream", None) or sys.stderr
    if not hasattr(sink, "fileno") or not _isRegular(sink):
        return defer.fail(mtftp.FetchError("--multicast needs -o FILE (a regular file)"))
    policy = _rolePolicy(args)
    started = reactor.seconds()
    d = mtftp.fetch(reactor, (target.address, target.port), target.path, sink,
                    blksize=args.blksize or 1428, windowsize=args.windowsize,
                    timeout=max(1, int(args.timeout)), policy=policy,
                    epoch=not args.mc_no_epoch, patience=args.mc_patience)

    def done(summary):
        result = FetchResult()
        result.mode = "multicast"
        result.size = summary["size"]
        result.tsize = summary["size"]
        result.blksize = args.blksize
        result.windowsize = args.windowsize
        result.elapsed = reactor.seconds() - started
        result.losses = (summary["gaps"] or {}).get("blocks", 0)
        sink.flush()
        result.sha256 = sha256File("/proc/self/fd/%d" % sink.fileno())
        err.write("multicast: role %s (%s); %d block(s) repaired by unicast in %d "
                  "request(s)\n" % (summary["role"], " -> ".join(
                      r for _, r, _ in summary["roles"]), summary["repaired"],
                      summary["repairRequests"]))
        return result

    def refused(f):
        f.trap(mtftp.MulticastRefused)
        if not getattr(args, "fallback", True):
            return f
        err.write("multicast: refused by the server (%s); fetching by unicast\n" % (
            f.getErrorMessage(),))
        return fallback(reactor, args, target, sink, reporter)
    return d.addCallbacks(done, refused)


def _rolePolicy(args):
    """
    The L{RolePolicy} of the multicast flags.
    """
    return RolePolicy(args.mc_smart_max_bytes, args.mc_smart_max_gaps,
                      args.mc_smart_max_gap, args.mc_smart_max_fraction,
                      repair=not args.mc_no_repair,
                      promoteGaps=getattr(args, "mc_promote_gaps", 32))


def _isRegular(f):
    try:
        return stat.S_ISREG(os.fstat(f.fileno()).st_mode)
    except (OSError, ValueError):
        return False


def addMulticastArguments(parser):
    """
    The multicast flags of C{provisioner fetch} (also used by
    L{mtftpMain}).
    """
    parser.add_argument("--multicast", action="store_true",
                        help="download by RFC 2090 multicast, repairing gaps by unicast")
    parser.add_argument("--mc-smart-max-bytes", type=int, default=8 << 20,
                        help="largest missing total a client repairs by unicast (smart); "
                        "above it the client stays in the group as active")
    parser.add_argument("--mc-smart-max-gaps", type=int, default=4096,
                        help="most gaps a smart client repairs by unicast")
    parser.add_argument("--mc-smart-max-gap", type=int, default=1024,
                        help="longest gap (blocks) a smart client repairs by unicast")
    parser.add_argument("--mc-smart-max-fraction", type=float, default=0.25,
                        help="largest missing fraction of the file for smart repair")
    parser.add_argument("--mc-promote-gaps", type=int, default=32,
                        help="with a server that grants mcepoch, a client with more gaps "
                        "than this after the first pass stays for a master turn (its "
                        "holes are multicast for the group) instead of repairing by "
                        "unicast; -1: only the smart thresholds decide")
    parser.add_argument("--mc-no-repair", action="store_true",
                        help="never repair by unicast (plain RFC 2090 client)")
    parser.add_argument("--mc-no-epoch", action="store_true",
                        help="do not ask for the mcepoch extension")
    parser.add_argument("--mc-patience", type=float, default=10.0,
                        help="seconds without multicast data (passive or master) before "
                        "the client repairs what it misses by unicast")


def runMulticast(args):
    """
    Run a multicast fetch from parsed arguments (C{server}, C{port},
    C{path}, C{output}, C{blksize}, C{windowsize}, C{timeout} and the
    flags of L{addMulticastArguments}); prints a summary; returns the exit
    status.
    """
    from twisted.internet import task

    policy = _rolePolicy(args)
    result = {}

    def go(reactor):
        d = mtftp.fetch(reactor, (args.server, args.port), args.path, args.output,
                        blksize=args.blksize, windowsize=args.windowsize,
                        timeout=args.timeout, policy=policy, epoch=not args.mc_no_epoch,
                        patience=args.mc_patience)

        def ok(summary):
            result.update(summary)
            result["ok"] = True

        def bad(f):
            result["ok"] = False
            result["error"] = f.getErrorMessage()
        return d.addCallbacks(ok, bad)

    try:
        task.react(go)
    except SystemExit:
        pass
    print(json.dumps(result, sort_keys=True))
    sys.stdout.flush()
    return 0 if result.get("ok") else 1


def _mtftpArguments(p):
    p.add_argument("server")
    p.add_argument("path")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("-p", "--port", type=int, default=69)
    p.add_argument("--blksize", type=int, default=1428)
    p.add_argument("--windowsize", type=int, default=64)
    p.add_argument("--timeout", type=int, default=1)
    addMulticastArguments(p)


def mtftpMain(argv=None):
    """
    C{python -m provisioner.client.mtftp SERVER PATH -o FILE [flags]}: a
    multicast fetch on its own, with a JSON summary on standard output
    (for benchmarks and tests).
    """
    import argparse
    from twisted.logger import globalLogBeginner, textFileLogObserver
    parser = argparse.ArgumentParser(prog="python -m provisioner.client.mtftp")
    _mtftpArguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.verbose:
        globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])
    return runMulticast(args)
