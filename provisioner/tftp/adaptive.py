# -*- test-case-name: tests.test_adaptive -*-
"""
The adaptive TFTP window (seed 004), both ends.

Client side:

  - L{AdaptiveController}: the window controller of the flow control
    facility. It proposes an initial window; after a loss-free period (a
    number of windows or a time) it asks for one more block; on a loss (a
    sequence gap or a timeout) it asks for half (or C{WS/2 + N}) and resets
    the success period; it keeps the largest successful window, and on the
    first loss cuts that maximum by 20% and freezes it, never growing above
    it afterwards. Pure: every method takes C{now}; no reactor, no sockets.

Server side (plugged into the TFTP server through
L{provisioner.tftp.negotiate.IOptionExtension} and
L{provisioner.tftp.window.IWindowPolicy}):

  - L{AdaptiveExtension}: negotiates the C{adaptive} option (a version
    number, see C{docs/wire/adaptive.md}); once negotiated the client puts a
    requested window (16 bits, big-endian) after the block number of any
    ACK.
  - L{MsftWindowExtension}: Windows bootmgr's variable window: C{windowsize}
    plus C{msftwindow 31416}, answered with C{msftwindow 27182}; every ACK
    then carries one byte, the next window.
  - L{ClientDrivenWindow}: the window policy of both: the window the client
    asked for last, clamped to the configured maximum, applied from the next
    window.
  - L{PacedWindow}: for plain RFC 7440 clients: the negotiated window, with
    a pause between windows that doubles after a timeout or a partial ACK
    and halves away after clean windows (seed 000's "reduce the packet
    transmission rate"). The window itself never changes: a plain receiver
    acknowledges only at its own window boundaries, so sending fewer blocks
    would stall it until its timeout.

Wire helpers: L{encodeAdaptiveExtra}, L{decodeAdaptiveExtra},
L{encodeMsftExtra}, L{decodeMsftExtra}, L{parseAdaptiveOption},
L{formatAdaptiveOption}.
"""

import struct

from twisted.logger import Logger
from zope.interface import implementer

from provisioner.config import Key, Section
from provisioner.tftp.negotiate import IOptionExtension
from provisioner.tftp.window import MAX_WINDOW, FixedWindow, IWindowPolicy

__all__ = [
    "ADAPTIVE_OPTION", "ADAPTIVE_VERSION", "MSFT_OPTION", "MSFT_CLIENT_MAGIC",
    "MSFT_SERVER_MAGIC", "AdaptiveController", "WindowChange",
    "encodeAdaptiveExtra", "decodeAdaptiveExtra", "adaptiveExtraIsLoss", "FLAG_LOSS", "encodeMsftExtra", "decodeMsftExtra",
    "parseAdaptiveOption", "formatAdaptiveOption",
    "ClientDrivenWindow", "PacedWindow", "AdaptiveExtension", "MsftWindowExtension",
    "PlainWindowExtension", "extensionsFromConfig", "SCHEMA",
]

# The RFC 2347 option that negotiates the adaptive window, and the version
# of the extension this module speaks (docs/wire/adaptive.md).
ADAPTIVE_OPTION = "adaptive"
ADAPTIVE_VERSION = 1

# Windows bootmgr's variable window extension (PEERS.md section 1b).
MSFT_OPTION = "msftwindow"
MSFT_CLIENT_MAGIC = "31416"
MSFT_SERVER_MAGIC = "27182"

_H = struct.Struct("!H")

SCHEMA = Section("adaptive window: the adaptive option, msftwindow, pacing of plain "
                 "RFC 7440 clients", {
    "enabled": Key(True, "bool", "offer the adaptive-window extensions (off: every client "
                   "gets the fixed RFC 7440 window it negotiated)"),
    "windowsize_max": Key(None, "int", "largest window a client may ask for in its ACKs; "
                          "null: tftp.windowsize_max", nullable=True, minimum=1,
                          maximum=65535),
    "msftwindow": Key(True, "bool", "answer Windows bootmgr's msftwindow 31416 with 27182 "
                      "and follow the one-byte window in its ACKs (capped at 255)"),
    "pace_plain": Key(True, "bool", "pace plain RFC 7440 clients: pause between windows "
                      "after timeouts and partial ACKs, recover after clean windows"),
    "pace_step": Key(0.0005, "float", "first pause (seconds) after a loss; doubles per "
                     "further loss", minimum=0.00001, maximum=1.0),
    "pace_max": Key(0.05, "float", "longest pause between windows (seconds)",
                    minimum=0.0, maximum=5.0),
    "pace_recover_windows": Key(4, "int", "clean windows that halve the pause",
                                minimum=1, maximum=10000),
})


# --- wire helpers ----------------------------------------------------------

# The flags byte after the window (optional): this ACK reports a loss.
FLAG_LOSS = 0x01


def encodeAdaptiveExtra(window, loss=False):
    """
    The bytes an adaptive client appends to an ACK to ask for C{window}
    blocks from the next window on (1..65535); with C{loss}, a flags byte
    marking the ACK as a loss report (a gap or a timeout).
    """
    packed = _H.pack(max(1, min(int(window), MAX_WINDOW)))
    return packed + b"\x01" if loss else packed


def adaptiveExtraIsLoss(extra):
    """
    Whether the trailing bytes of an ACK mark it as a loss report.
    """
    return len(extra) >= 3 and bool(extra[2] & FLAG_LOSS)


def decodeAdaptiveExtra(extra):
    """
    The window requested by the trailing bytes of an ACK, or L{None} when
    they request nothing (fewer than 2 bytes, or 0). Bytes after the first
    two are reserved and ignored.
    """
    if len(extra) < 2:
        return None
    value = _H.unpack_from(extra)[0]
    return value or None


def encodeMsftExtra(window, loss=False):
    """
    The one byte a bootmgr-style client appends to every ACK (1..255).
    There is no loss flag in this dialect: C{loss} is ignored.
    """
    return bytes([max(1, min(int(window), 255))])


def decodeMsftExtra(extra):
    """
    The next window carried by a C{msftwindow} ACK, or L{None}.
    """
    if not extra:
        return None
    return extra[0] or None


def parseAdaptiveOption(value):
    """
    Parse the value of the C{adaptive} option: C{"V"} in a request, C{"V,MAX"}
    in an OACK (version, then the largest window the server grants).

    @return: C{(version, maximum or None)}, or L{None} if it is malformed.
    """
    parts = str(value).strip().split(",")
    try:
        version = int(parts[0])
        maximum = int(parts[1]) if len(parts) > 1 and parts[1].strip() else None
    except ValueError:
        return None
    if version < 1 or (maximum is not None and not 1 <= maximum <= MAX_WINDOW):
        return None
    return version, maximum


def formatAdaptiveOption(version, maximum=None):
    """
    The value of the C{adaptive} option (see L{parseAdaptiveOption}).
    """
    if maximum is None:
        return "%d" % (version,)
    return "%d,%d" % (version, maximum)


# --- the client's controller (seed 004) -------------------------------------

class WindowChange:
    """
    One entry of a window trace.

    @ivar time: the controller's C{now} when it changed.
    @ivar old, new: the window before and after.
    @ivar reason: C{"initial"}, C{"grow"}, C{"loss"}, C{"timeout"}.
    @ivar maximum: the maximum successful window after the change (or None).
    @ivar frozen: whether that maximum is frozen.
    """

    __slots__ = ("time", "old", "new", "reason", "maximum", "frozen")

    def __init__(self, time, old, new, reason, maximum, frozen):
        self.time = time
        self.old = old
        self.new = new
        self.reason = reason
        self.maximum = maximum
        self.frozen = frozen

    def asTuple(self):
        return (self.time, self.old, self.new, self.reason, self.maximum, self.frozen)

    def __repr__(self):
        return "<WindowChange %.3f %d->%d %s max=%s%s>" % (
            self.time, self.old, self.new, self.reason, self.maximum,
            " frozen" if self.frozen else "")


class AdaptiveController:
    """
    Seed 004's client window controller.

    @ivar window: the window currently asked for.
    @ivar maxSuccessful: the largest window seen to work (L{None} before the
        first growth).
    @ivar frozen: whether L{maxSuccessful} is frozen (after the first loss).
    @ivar limit: the largest window the server grants (L{None}: unknown).
    @ivar trace: the L{WindowChange}s, oldest first.
    """

    def __init__(self, initial=8, growWindows=1, growSeconds=None, decrease=0,
                 cut=0.2, limit=None, minimum=1, now=0.0):
        """
        @param initial: the window proposed first.
        @param growWindows: clean windows that make a loss-free period (used
            when C{growSeconds} is L{None}).
        @param growSeconds: a loss-free period as a time instead.
        @param decrease: the C{N} of C{WS/2 + N} after a loss (0: halve).
        @param cut: the fraction the maximum successful window loses when it
            is frozen (seed 004: 20%).
        @param limit: the server's maximum, if known.
        """
        self.growWindows = max(1, int(growWindows))
        self.growSeconds = growSeconds
        self.decrease = max(0, int(decrease))
        self.cut = cut
        self.minimum = max(1, int(minimum))
        self.limit = limit
        self.window = self._clamp(initial)
        self.maxSuccessful = None
        self.frozen = False
        self.losses = 0
        self._periodStart = now
        self._cleanWindows = 0
        self.trace = [WindowChange(now, self.window, self.window, "initial", None, False)]

    def _clamp(self, window):
        window = max(self.minimum, min(int(window), MAX_WINDOW))
        if self.limit is not None:
            window = min(window, self.limit)
        return window

    def setLimit(self, limit, now):
        """
        The server told us its maximum (or countered the initial window):
        never ask above it.
        """
        self.limit = max(1, int(limit))
        if self.window > self.limit:
            self._change(now, self.limit, "limit")

    def accept(self, window, now):
        """
        The server countered the proposed initial window with C{window}.
        """
        window = self._clamp(window)
        if window != self.window:
            self._change(now, window, "countered")

    def _change(self, now, new, reason):
        old, self.window = self.window, new
        self.trace.append(WindowChange(now, old, new, reason, self.maxSuccessful, self.frozen))

    def _periodOver(self, now):
        if self.growSeconds is not None:
            return now - self._periodStart >= self.growSeconds
        return self._cleanWindows >= self.growWindows

    def windowCompleted(self, now):
        """
        A whole window arrived without a loss.

        @return: the window to ask for next.
        """
        self._cleanWindows += 1
        if not self._periodOver(now):
            return self.window
        self._cleanWindows = 0
        self._periodStart = now
        ceiling = self.limit if self.limit is not None else MAX_WINDOW
        if self.frozen:
            ceiling = min(ceiling, self.maxSuccessful)
        else:
            # The window just proven is the largest successful one so far.
            if self.maxSuccessful is None or self.window > self.maxSuccessful:
                self.maxSuccessful = self.window
        if self.window + 1 <= ceiling:
            self._change(now, self.window + 1, "grow")
        return self.window

    def lossDetected(self, now, reason="loss"):
        """
        A block was lost (a gap in the sequence, or a timeout).

        @return: the window to ask for next.
        """
        self.losses += 1
        self._cleanWindows = 0
        self._periodStart = now
        if not self.frozen:
            base = self.maxSuccessful if self.maxSuccessful is not None else self.window
            self.maxSuccessful = max(self.minimum, int(base * (1.0 - self.cut)))
            self.frozen = True
        new = self.window // 2 + self.decrease
        new = max(self.minimum, min(new, self.window, self.maxSuccessful))
        self._change(now, new, reason)
        return self.window

    def __repr__(self):
        return "<AdaptiveController window=%d max=%s%s>" % (
            self.window, self.maxSuccessful, " frozen" if self.frozen else "")


# --- server side: window policies ------------------------------------------

@implementer(IWindowPolicy)
class ClientDrivenWindow(FixedWindow):
    """
    The client sets the window in its ACKs (the adaptive extension or
    C{msftwindow}); the server clamps it to C{maximum} and applies it from
    the next window.

    @ivar current: the window in use.
    @ivar requests: how many window requests were applied.
    """

    log = Logger()

    def __init__(self, initial, maximum, decode=decodeAdaptiveExtra, peer=None,
                 isLoss=adaptiveExtraIsLoss):
        self.maximum = max(1, min(int(maximum), MAX_WINDOW))
        self.current = max(1, min(int(initial), self.maximum))
        self._decode = decode
        self._isLoss = isLoss
        self.peer = peer
        self.requests = 0

    def size(self):
        return self.current

    def repeatIsLoss(self, extra):
        """
        Whether a repeated ACK with these trailing bytes reports a loss (the
        session then goes back at once, once per window sent). Unmarked
        repeats (a client acknowledging duplicates again) never do: that
        would be the Sorcerer's Apprentice.
        """
        return self._isLoss is not None and self._isLoss(extra)

    def onAckExtra(self, extra, now):
        try:
            asked = self._decode(extra)
        except Exception:
            asked = None
        if asked is None:
            return
        self.current = max(1, min(asked, self.maximum))
        self.requests += 1

    def __repr__(self):
        return "<ClientDrivenWindow %d (max %d)>" % (self.current, self.maximum)


@implementer(IWindowPolicy)
class PacedWindow:
    """
    Server-side adaptation for plain RFC 7440 clients: the window stays what
    was negotiated; the pause before each window doubles (from C{step}, up to
    C{maxDelay}) after a timeout or a partial ACK, and halves after each run
    of C{growAfter} clean windows, dropping to none below C{step}. The
    effective window (blocks per round trip) thus shrinks after losses and
    grows back after clean windows, never beyond the negotiated one.
    """

    def __init__(self, window, step=0.0005, maxDelay=0.05, growAfter=4):
        self.window = max(1, min(int(window), MAX_WINDOW))
        self.step = step
        self.maxDelay = maxDelay
        self.growAfter = max(1, int(growAfter))
        self.pause = 0.0
        self._clean = 0

    def size(self):
        return self.window

    def delay(self):
        return self.pause

    def _slower(self):
        self._clean = 0
        self.pause = min(self.maxDelay, max(self.step, self.pause * 2))

    def onWindowAcked(self, now):
        if self.pause <= 0:
            return
        self._clean += 1
        if self._clean >= self.growAfter:
            self._clean = 0
            self.pause = self.pause / 2
            if self.pause < self.step:
                self.pause = 0.0

    def onLoss(self, now):
        self._slower()

    def onTimeout(self, now):
        self._slower()

    def onAckExtra(self, extra, now):
        pass

    def __repr__(self):
        return "<PacedWindow %d pause=%.4f>" % (self.window, self.pause)


# --- server side: option extensions ----------------------------------------

def _peer(request):
    return getattr(request, "peer", None)


@implementer(IOptionExtension)
class AdaptiveExtension:
    """
    The C{adaptive} option: a client that sends C{adaptive V} (V >= 1) gets
    C{adaptive 1,MAX} in the OACK, and may then append a 16-bit requested
    window to any ACK. C{windowsize}, if asked for, is negotiated as usual
    and is the initial window.

    @ivar maximum: the largest window granted (L{None}: the server's
        C{windowsize_max}).
    """

    log = Logger()

    def __init__(self, maximum=None):
        self.maximum = maximum

    def negotiate(self, request, accepted, limits):
        options = getattr(request, "options", None) or {}
        value = options.get(ADAPTIVE_OPTION)
        if value is None:
            return None
        parsed = parseAdaptiveOption(value)
        if parsed is None:
            self.log.debug("{peer}: malformed adaptive option {value!r} ignored",
                           peer=_peer(request), value=value)
            return None
        maximum = self.maximum or limits.windowsizeMax
        maximum = max(1, min(maximum, MAX_WINDOW))
        initial = min(accepted.get("windowsize", 1), maximum)
        peer = _peer(request)

        def factory(accepted):
            return ClientDrivenWindow(initial, maximum, decodeAdaptiveExtra, peer)
        return [(ADAPTIVE_OPTION, formatAdaptiveOption(ADAPTIVE_VERSION, maximum))], factory

    def __repr__(self):
        return "<AdaptiveExtension max=%s>" % (self.maximum,)


@implementer(IOptionExtension)
class MsftWindowExtension:
    """
    Windows bootmgr's variable window: C{windowsize W} plus C{msftwindow
    31416} gets C{msftwindow 27182}; every ACK then carries one byte, the
    next window (clamped to C{maximum}, at most 255).
    """

    def __init__(self, maximum=None):
        self.maximum = maximum

    def negotiate(self, request, accepted, limits):
        options = getattr(request, "options", None) or {}
        if options.get(MSFT_OPTION, "").strip() != MSFT_CLIENT_MAGIC:
            return None
        maximum = min(self.maximum or limits.windowsizeMax, 255)
        initial = min(accepted.get("windowsize", 1), maximum)
        peer = _peer(request)

        def factory(accepted):
            return ClientDrivenWindow(initial, maximum, decodeMsftExtra, peer, isLoss=None)
        return [(MSFT_OPTION, MSFT_SERVER_MAGIC)], factory


@implementer(IOptionExtension)
class PlainWindowExtension:
    """
    Not an option of its own: plain RFC 7440 clients (a C{windowsize} above
    1, no adaptive option) get the L{PacedWindow} policy. Nothing is added
    to the OACK.
    """

    def __init__(self, step=0.0005, maxDelay=0.05, growAfter=4):
        self.step = step
        self.maxDelay = maxDelay
        self.growAfter = growAfter

    def negotiate(self, request, accepted, limits):
        if accepted.get("windowsize", 1) <= 1:
            return None

        def factory(accepted):
            return PacedWindow(accepted["windowsize"], self.step, self.maxDelay, self.growAfter)
        return [], factory


def extensionsFromConfig(section):
    """
    The extensions the C{tftp.adaptive} configuration section enables, in
    the order the server must ask them.

    @param section: the C{tftp.adaptive} dict.
    """
    if not section.get("enabled", True):
        return []
    out = [AdaptiveExtension(section.get("windowsize_max"))]
    if section.get("msftwindow", True):
        out.append(MsftWindowExtension(section.get("windowsize_max")))
    if section.get("pace_plain", True):
        out.append(PlainWindowExtension(section.get("pace_step", 0.0005),
                                        section.get("pace_max", 0.05),
                                        section.get("pace_recover_windows", 4)))
    return out



def install(service):
    """
    Put the extensions C{tftp.adaptive} enables on a
    L{provisioner.tftp.service.TFTPService}'s server, after any already
    there. Idempotent: those installed before are replaced (the service
    calls it again on reload).
    """
    extensions = service.server.extensions
    for old in getattr(service, "adaptiveExtensions", ()):
        if old in extensions:
            extensions.remove(old)
    new = extensionsFromConfig(service.config.get("adaptive", {}))
    extensions.extend(new)
    service.adaptiveExtensions = new
    return new
