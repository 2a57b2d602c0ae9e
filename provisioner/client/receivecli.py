# -*- test-case-name: tests.test_client_cli,tests.test_client_blockdev -*-
"""
C{provisioner receive --server HOST --output PATH}: receive an image that
the appliance multicasts (imagecast), over its control channel, with a
progress bar on a terminal and a summary at the end (C{--json}: as JSON).
L{provisioner.client.cli.register} adds it to the C{provisioner} command.

The receiver's modules, and the control channel's AMP and TLS, are
imported when it runs: the fetch commands do without them.
"""

import json
import os
import socket
import sys

__all__ = ["addReceiveParser", "receiveStatePath", "readSecret"]


def addReceiveParser(subparsers):
    """
    C{provisioner receive}: the image receiver of imagecast. (The
    receiver's modules, and the control channel's AMP and TLS, are imported
    when it is used: the fetch commands do without them.)
    """
    from provisioner.client.control import addConnectionArguments
    recv = subparsers.add_parser(
        "receive", help="receive an image multicast by the appliance",
        description="Receive an image the appliance multicasts (provisioner imagecast "
                    "send, or a profile's imaging session): register with the appliance's "
                    "control channel with this receiver's secret, write the image to a "
                    "file or a whole disk as it arrives, repair what was lost, verify the "
                    "image's sha256 and report. A restarted receiver resumes from its "
                    "state file.")
    addConnectionArguments(recv, True)
    recv.add_argument("--output", "-o", required=True, metavar="PATH",
                      help="where the image is written: a file, or a whole block device "
                      "such as /dev/sdb (opened exclusively: a mounted device is refused; "
                      "its size must hold the image; read back from the disk at the end)")
    recv.add_argument("--state", default=None, metavar="FILE",
                      help="the state file that keeps the progress (a restarted receiver "
                      "resumes from it); default: PATH.imagecast-state beside a file, and "
                      "for a block device /var/lib/provisioner/receive/"
                      "<device name>.imagecast-state, or <device name>.imagecast-state in "
                      "the current directory when that directory is not writable")
    recv.add_argument("--image", default=None, help="only this image (default: the first "
                      "session announced)")
    recv.add_argument("--id", dest="clientId", default=None,
                      help="client id (default: HOSTNAME:PATH; a restarted receiver with "
                      "the same id resumes)")
    recv.add_argument("--interface", default=None, metavar="ADDR",
                      help="local address of the interface to join the group on")
    recv.add_argument("--secret-file", default=None, metavar="FILE",
                      help="file holding this receiver's secret (its line of the appliance's "
                      "imagecast.receivers_file, 'ID SECRET', or the secret alone): the "
                      "appliance asks for it unless imagecast.authentication says otherwise")
    recv.add_argument("--quiet", "-q", action="store_true",
                      help="no progress bar (default: a bar with the rate and the time left "
                      "when standard error is a terminal)")
    recv.add_argument("--json", action="store_true", help="print the summary as JSON")
    recv.set_defaults(func=_receive)
    return recv


def receiveStatePath(args, output, err):
    """
    The state file of C{provisioner receive}: C{--state FILE}, else the
    default for C{output} (L{provisioner.client.output.defaultStatePath});
    when a block device's state falls back to the current directory, say
    so on C{err}.
    """
    from provisioner.client.output import STATE_DIRECTORY, defaultStatePath
    if args.state:
        return args.state
    path, fellBack = defaultStatePath(output)
    if fellBack:
        err.write("provisioner receive: %s is not writable; the state file is %s\n" % (
            STATE_DIRECTORY, path))
    return path


def readSecret(path):
    """
    The receiver's secret from C{path}: the last word of its first line
    that is neither empty nor a comment (the file may hold the secret
    alone, or the receiver's C{ID SECRET} line of the receivers file).

    @raise ValueError: if the file holds no secret.
    @raise OSError: if it cannot be read.
    """
    with open(path, "rb") as f:
        for raw in f:
            line = raw.decode("utf-8", "replace").strip()
            if line and not line.startswith("#"):
                return line.split()[-1].encode("utf-8")
    raise ValueError("%s holds no secret" % (path,))


class _CannotStart(Exception):
    """
    C{provisioner receive} cannot start (the message says why).
    """


def _receive(args):
    """
    C{provisioner receive}, in steps: the secret (L{_secret}), the output
    (L{_openOutput}), its state file (L{receiveStatePath}) and the client
    id, then the receiver on the reactor (L{_run}) until it ends.

    @return: the exit status.
    """
    from provisioner.client.control import runReactor
    try:
        secret = _secret(args)
        output = _openOutput(args)
    except _CannotStart as e:
        print("provisioner receive: error: %s" % (e,), file=sys.stderr)
        return 1
    statePath = receiveStatePath(args, output, sys.stderr)
    clientId = args.clientId or "%s:%s" % (socket.gethostname(), os.path.abspath(args.output))
    tty = sys.stderr.isatty() and not args.quiet
    return runReactor(lambda reactor: _run(reactor, args, output, statePath, clientId,
                                            secret, tty))


def _secret(args):
    """
    The secret of C{--secret-file} (L{readSecret}), or L{None} without it.

    @raise _CannotStart: if the file cannot be read or holds no secret.
    """
    if not args.secret_file:
        return None
    try:
        return readSecret(args.secret_file)
    except OSError as e:
        raise _CannotStart("cannot read the secret file %s: %s" % (
            args.secret_file, e.strerror or e))
    except ValueError as e:
        raise _CannotStart(str(e))


def _openOutput(args):
    """
    The L{provisioner.client.output.OutputFile} of C{--output}.

    @raise _CannotStart: if it cannot be opened.
    """
    from provisioner.client.output import OutputFile, ReceiveError
    try:
        return OutputFile(args.output)
    except ReceiveError as e:
        raise _CannotStart(str(e))


def _run(reactor, args, output, statePath, clientId, secret, tty):
    """
    Receive into C{output}: a L{provisioner.client.receiver.Receiver}
    behind a L{provisioner.client.receiverclient.ReceiverClient}, with a
    progress bar when C{tty}; at the end, the summary (L{_summarize}).

    @return: a Deferred firing with the exit status.
    """
    from provisioner.client.control import connectEndpoint
    from provisioner.client.receiver import Receiver
    from provisioner.client.receiverclient import ReceiverClient
    receiver = Receiver(reactor, output, clientId, image=args.image,
                        interface=args.interface, statePath=statePath)
    client = ReceiverClient(reactor, connectEndpoint(reactor, args), receiver,
                            address=args.interface or "",
                            timeout=args.timeout,
                            serverName="%s:%d" % (args.server, args.port),
                            secret=secret)
    bar = _startBar(reactor, receiver) if tty else None
    d = client.run()

    def finished(status):
        _stopBar(bar, receiver)
        _summarize(args, receiver, status)
        output.close()
        return status
    return d.addCallback(finished)


# The progress bar and the summary --------------------------------------------

def _tick(display, receiver):
    """
    Show C{receiver}'s progress on C{display}: the bytes it has of the
    image (once it knows the image's size) and its round.
    """
    size = receiver.size or 0
    display.update(receiver.received.total() if size else 0, size or None,
                   postfix="round %d" % (receiver.round,))


def _startBar(reactor, receiver):
    """
    Show the progress of C{receiver} on standard error every 0.25 s (a
    L{provisioner.client.progress.ProgressDisplay}).

    @return: C{(the LoopingCall that feeds it, the display)}.
    """
    from twisted.internet import task

    from provisioner.client.progress import ProgressDisplay
    display = ProgressDisplay(reactor, sys.stderr, True, interval=0.2)
    loop = task.LoopingCall(_tick, display, receiver)
    loop.clock = reactor
    loop.start(0.25)
    return loop, display


def _stopBar(bar, receiver):
    """
    Stop the progress bar C{bar} (if any), drawn a last time.
    """
    if bar is None:
        return
    loop, display = bar
    if loop.running:
        loop.stop()
    _tick(display, receiver)
    display.finish()


def _summarize(args, receiver, status):
    """
    Print what C{receiver} did, and its error if it failed (on standard
    error); C{--json}: the summary as JSON.
    """
    summary = receiver.summary()
    summary["status"] = "ok" if status == 0 else "failed"
    if receiver.failed:
        summary["error"] = receiver.failed
        print("provisioner receive: error: %s" % (receiver.failed,), file=sys.stderr)
    nothing = not any(summary[k] for k in ("rounds", "bytes_received", "bytes_fetched",
                                           "bytes_resumed"))
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    elif receiver.failed and nothing:
        pass  # the error line says it all (no server, refused): one line
    else:
        print("%s: %s, %d rounds, %d bytes received (%d repaired, %d over the control "
              "channel, %d resumed from a previous run), %.2f s" % (
                  args.output, "sha256 ok" if status == 0 else "FAILED",
                  summary["rounds"], summary["bytes_received"],
                  summary["bytes_repaired"], summary["bytes_fetched"],
                  summary["bytes_resumed"], summary["seconds"]))
