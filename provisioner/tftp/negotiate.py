# -*- test-case-name: tests.test_tftp_negotiate -*-
"""
Option negotiation (RFC 2347, 2348, 2349, 7440): one validator per option,
and the hook for option extensions.

Each standard option has a validator C{option_<name>(value)} on
L{Negotiation} that returns the accepted value (what goes into the OACK) or
L{None} (the option is ignored: the client falls back to the RFC 1350
default). Values that are not numbers (atftp's C{tsize=enable}, typos) are
ignored, never refused.

Extension hook: L{Negotiation.run} asks every L{IOptionExtension} in order
(the list lives on L{provisioner.tftp.server.TFTPServer.extensions}). The
first that answers with C{(oackOptions, windowPolicyFactory)} adds its
options to the OACK and may supply the window policy of the session::

    @implementer(IOptionExtension)
    class MyExtension:
        def negotiate(self, request, accepted, limits, negotiated):
            if "myopt" not in request.options:
                return None
            return [("myopt", "1")], lambda accepted: MyPolicy(accepted["windowsize"])

Extensions see the standard options already accepted (a C{dict} of name to
value, C{blksize} and C{windowsize} always present), the L{Limits} and the
L{Negotiated} result so far (with C{rangesGranted}: the blocks of the file
the source holds when it is a repair view,
L{provisioner.interfaces.IRangeView}).
"""

from zope.interface import Interface

from provisioner.interfaces import IRangeView
from provisioner.tftp.window import FixedWindow

__all__ = ["IOptionExtension", "Limits", "Negotiation", "Negotiated", "negotiate",
           "BLKSIZE_MIN", "BLKSIZE_MAX", "WINDOWSIZE_MAX", "DEFAULT_BLKSIZE",
           "blksizeForMTU"]

BLKSIZE_MIN = 8
BLKSIZE_MAX = 65464
WINDOWSIZE_MAX = 65535
DEFAULT_BLKSIZE = 512
# IP + UDP + TFTP DATA header: what the blksize clamp leaves out of the MTU.
HEADROOM_IPV4 = 32
HEADROOM_IPV6 = 52


def blksizeForMTU(mtu, ipv6=False):
    """
    The largest blksize whose DATA datagram fits an MTU unfragmented, or
    L{None} when C{mtu} is 0/None (no clamp).
    """
    if not mtu:
        return None
    return max(BLKSIZE_MIN, mtu - (HEADROOM_IPV6 if ipv6 else HEADROOM_IPV4))


class IOptionExtension(Interface):
    """
    A negotiated TFTP extension (the adaptive window, C{msftwindow}, ...).
    """

    def negotiate(request, accepted, limits, negotiated):
        """
        @param request: the L{provisioner.files.FileRequest} (its C{options}
            hold every requested option, names lower-case, values as text).
        @param accepted: the standard options accepted so far (C{dict};
            C{blksize} and C{windowsize} always present, the others when
            accepted).
        @param limits: the L{Limits} for this request.
        @param negotiated: the L{Negotiated} result so far (standard options
            and C{rangesGranted}; its OACK and policy are the extension's
            answer to give, not to change).
        @return: L{None} (not applicable), or C{(oackOptions,
            windowPolicyFactory)}: a list of C{(name, value)} appended to the
            OACK, and a callable taking C{accepted} and returning an
            L{provisioner.tftp.window.IWindowPolicy} (or L{None} for the
            default fixed window; the factory itself may be L{None}).
        """


class Limits:
    """
    What the server grants, from the configuration and the path to the
    client.

    @ivar blksizeMax: the configured C{tftp.blksize_max}.
    @ivar mtuBlksize: the blksize the MTU allows, or L{None} (no clamp).
    @ivar windowsizeMax: the configured C{tftp.windowsize_max}.
    @ivar timeout: the default first retransmission timeout (seconds).
    @ivar retries: retransmissions before giving up.
    """

    def __init__(self, blksizeMax=BLKSIZE_MAX, windowsizeMax=64, mtuBlksize=None,
                 timeout=1.0, retries=6):
        self.blksizeMax = blksizeMax
        self.windowsizeMax = windowsizeMax
        self.mtuBlksize = mtuBlksize
        self.timeout = timeout
        self.retries = retries

    @classmethod
    def fromConfig(cls, tftp, mtuBlksize=None):
        """
        Build from the C{tftp} configuration section.
        """
        return cls(blksizeMax=tftp["blksize_max"], windowsizeMax=tftp["windowsize_max"],
                   mtuBlksize=mtuBlksize, timeout=tftp["timeout"], retries=tftp["retries"])

    @property
    def blksizeLimit(self):
        """
        The largest blksize granted (config and MTU).
        """
        limit = min(self.blksizeMax, BLKSIZE_MAX)
        if self.mtuBlksize is not None:
            limit = min(limit, self.mtuBlksize)
        return max(BLKSIZE_MIN, limit)


class Negotiated:
    """
    The outcome of negotiation, what a session needs.

    @ivar blksize: block size (512 unless negotiated).
    @ivar windowsize: RFC 7440 window (1 unless negotiated).
    @ivar timeout: the client's timeout in seconds, or L{None}.
    @ivar tsize: the size announced (RRQ) or received (WRQ), or L{None}.
    @ivar accepted: C{dict} of accepted standard options.
    @ivar oack: C{[(name, value)]} for the OACK; empty means no OACK (the
        transfer starts with DATA 1, or ACK 0 for WRQ).
    @ivar policyFactory: from an extension, or L{None}.
    @ivar extension: the extension that answered, or L{None}.
    @ivar rangesGranted: when the source is a repair view
        (L{provisioner.interfaces.IRangeView}), the C{ranges} value that
        describes the blocks it holds (what smart repair echoes); else
        L{None}.
    """

    def __init__(self):
        self.blksize = DEFAULT_BLKSIZE
        self.windowsize = 1
        self.timeout = None
        self.tsize = None
        self.accepted = {}
        self.oack = []
        self.policyFactory = None
        self.extension = None
        self.rangesGranted = None

    def windowPolicy(self):
        """
        Build the session's window policy.
        """
        if self.policyFactory is not None:
            policy = self.policyFactory(dict(self.accepted, blksize=self.blksize,
                                             windowsize=self.windowsize))
            if policy is not None:
                return policy
        return FixedWindow(self.windowsize)

    def __repr__(self):
        return "<Negotiated blksize=%d windowsize=%d oack=%r>" % (
            self.blksize, self.windowsize, self.oack)


def _number(value):
    """
    Parse an option value as a non-negative decimal integer, or L{None}
    (ASCII digits only: C{str.isdigit} also takes latin-1's superscripts,
    which C{int} refuses).
    """
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 12:
        return None
    return int(value)


class Negotiation:
    """
    Negotiation of one request. Validators are C{option_<name>(value)}
    methods returning the accepted value or L{None}.

    @ivar write: a WRQ (tsize is the client's size, not ours).
    """

    def __init__(self, limits, source=None, mode="octet", write=False):
        self.limits = limits
        self.source = source
        self.mode = mode
        self.write = write

    def option_blksize(self, value):
        n = _number(value)
        if n is None or n < BLKSIZE_MIN:
            return None
        return min(n, self.limits.blksizeLimit)

    def option_windowsize(self, value):
        n = _number(value)
        if n is None or not 1 <= n <= WINDOWSIZE_MAX:
            return None
        if self.mode == "netascii":
            # Netascii is converted as a stream: one block at a time.
            return 1
        return max(1, min(n, self.limits.windowsizeMax))

    def option_timeout(self, value):
        n = _number(value)
        if n is None or not 1 <= n <= 255:
            return None
        return n

    def option_tsize(self, value):
        n = _number(value)
        if n is None:
            return None
        if self.write:
            return n
        if self.mode != "octet" or self.source is None:
            return None
        size = getattr(self.source, "size", None)
        return size if isinstance(size, int) else None

    def run(self, options, request=None, extensions=()):
        """
        Negotiate C{options} (C{[(name, value)]} or a C{dict}, names lower
        case).

        @return: L{Negotiated}.
        """
        result = Negotiated()
        items = options.items() if isinstance(options, dict) else options
        for name, value in items:
            validator = getattr(self, "option_" + name, None) if name.isidentifier() else None
            if validator is None:
                continue
            accepted = validator(value)
            if accepted is None:
                continue
            result.accepted[name] = accepted
            result.oack.append((name, str(accepted)))
        result.blksize = result.accepted.get("blksize", DEFAULT_BLKSIZE)
        result.windowsize = result.accepted.get("windowsize", 1)
        result.timeout = result.accepted.get("timeout")
        result.tsize = result.accepted.get("tsize")
        if IRangeView.providedBy(self.source):
            result.rangesGranted = self.source.granted
        view = dict(result.accepted, blksize=result.blksize, windowsize=result.windowsize)
        for extension in extensions:
            answer = extension.negotiate(request, view, self.limits, result)
            if answer is None:
                continue
            extra, factory = answer
            result.oack.extend((str(n), str(v)) for n, v in extra)
            result.policyFactory = factory
            result.extension = extension
            break
        return result


def negotiate(options, limits, source=None, mode="octet", write=False, request=None,
              extensions=()):
    """
    Shorthand for C{Negotiation(limits, source, mode, write).run(...)}.
    """
    return Negotiation(limits, source, mode, write).run(options, request, extensions)
