# -*- test-case-name: tests.test_adaptive -*-
"""
The client-adjustable TFTP window (the adaptive window), server side.

The client's controller is L{provisioner.client.window}; the wire format
both ends speak is L{provisioner.tftp.adaptivewire}.

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
    and halves away after clean windows (the server slows down its sending
    after losses). The window itself never changes: a plain receiver
    acknowledges only at its own window boundaries, so sending fewer blocks
    would stall it until its timeout.

"""


from twisted.logger import Logger
from zope.interface import implementer

from provisioner.config import Key, Section
from provisioner.tftp.adaptivewire import (
    ADAPTIVE_OPTION, ADAPTIVE_VERSION, MSFT_CLIENT_MAGIC, MSFT_OPTION, MSFT_SERVER_MAGIC,
    adaptiveExtraIsLoss, decodeAdaptiveExtra, decodeMsftExtra, formatAdaptiveOption,
    parseAdaptiveOption)
from provisioner.tftp.negotiate import IOptionExtension
from provisioner.tftp.window import MAX_WINDOW, FixedWindow, IWindowPolicy

__all__ = [
    "ClientDrivenWindow", "PacedWindow", "AdaptiveExtension", "MsftWindowExtension",
    "PlainWindowExtension", "extensionsFromConfig", "SCHEMA",
]

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


# --- window policies -------------------------------------------------------

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

    def negotiate(self, request, accepted, limits, negotiated):
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

    def negotiate(self, request, accepted, limits, negotiated):
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

    def negotiate(self, request, accepted, limits, negotiated):
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
