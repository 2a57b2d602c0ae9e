# -*- test-case-name: tests.test_adaptive -*-
"""
The client's adaptive window controller (the flow control facility): it
proposes an initial window; after a loss-free period (a number of windows
or a time) it asks for one more block; on a loss (a sequence gap or a
timeout) it asks for half (or C{WS/2 + N}) and resets the success period;
it keeps the largest successful window, and on the first loss cuts that
maximum by 20% and freezes it, never growing above it afterwards. Pure:
every method takes C{now}; no reactor, no sockets.
"""

from provisioner.tftp.wire import MAX_WINDOW

__all__ = ["AdaptiveController", "WindowChange"]


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
    The client's controller of the client-adjustable window.

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
            is frozen (20% by default).
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
