# -*- test-case-name: tests.test_progress -*-
"""
The one progress display of the client programs' long work: C{provisioner
fetch}, C{provisioner receive}, C{provisioner imagecast send} and
C{provisioner deployenv build} (L{ProgressDisplay}).

The numbers are this module's: the elapsed time, the rate and the time
left come from an injected clock (L{RateMeter}: the rate over the last
few seconds, and none at all until a first real interval has passed, so
that the first tick never divides by a near-zero time). The drawing is
tqdm's (a C{tqdm} bar given those numbers), imported only when a bar is
drawn: a program run with C{--quiet} or without a terminal never imports
it (the deploy environment, which runs C{provisioner receive --quiet
--json}, has no tqdm), and where tqdm is missing the display says so once
and draws nothing.
"""

import sys
import time

__all__ = ["RateMeter", "ProgressDisplay", "MonotonicClock", "isTerminal"]


class MonotonicClock:
    """
    The clock of a program that runs no reactor (C{provisioner deployenv
    build}): C{seconds()} of the system's monotonic clock.
    """

    def seconds(self):
        return time.monotonic()


def isTerminal(stream):
    """
    Whether C{stream} is a terminal.
    """
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class RateMeter:
    """
    The rate of a growing count (bytes, packages), measured over a sliding
    window of samples taken on a clock.

    No rate is given until C{first} seconds have passed since the first
    sample: what arrived before the first sample (a request's answer, the
    first window) is not counted against a near-zero time. After that, the
    rate is the growth between the oldest sample of the last C{window}
    seconds (or the last one before them) and the newest, divided by the
    time between them.

    @ivar window: seconds the rate is measured over.
    @ivar first: seconds after the first sample before any rate is given.
    """

    def __init__(self, window=3.0, first=0.5):
        self.window = window
        self.first = first
        self._samples = []
        self._origin = None

    def sample(self, when, count):
        """
        The count was C{count} at time C{when} (seconds, not decreasing).
        """
        if self._origin is None:
            self._origin = when
        self._samples.append((when, count))
        # keep one sample at or before the window's start
        horizon = when - self.window
        while len(self._samples) > 2 and self._samples[1][0] <= horizon:
            del self._samples[0]

    def rate(self):
        """
        @return: units per second, or L{None} before the first interval.
        """
        if not self._samples:
            return None
        t1, n1 = self._samples[-1]
        if t1 - self._origin < self.first:
            return None
        t0, n0 = self._samples[0]
        if t1 <= t0:
            return None
        return max(n1 - n0, 0) / (t1 - t0)

    def remaining(self, count, total):
        """
        @return: the seconds left to reach C{total} from C{count} at the
            current rate, or L{None} (no total, or no rate yet, or a rate of
            zero).
        """
        rate = self.rate()
        if not total or not rate:
            return None
        return max(total - count, 0) / rate


class ProgressDisplay:
    """
    A progress bar on C{stream} (standard error), redrawn at most every
    C{interval} seconds of C{clock} and at the end, with the count, the
    total (when known), the elapsed time, the rate and the time left.

    Without a terminal nothing is drawn unless C{enabled} is true; with
    C{enabled} false (C{--quiet}) never. Use L{update} (or call the
    display: C{display(count, total)}, the C{progress} callback of
    L{provisioner.client.tftp.fetch}), then L{finish}.

    @ivar stream: where the bar is drawn.
    @ivar enabled: whether a bar is drawn at all.
    @ivar meter: the L{RateMeter}.
    """

    #: the tqdm bar's layout: the count, the time so far and left, the rate
    #: (C{speed} and C{eta} are this display's, not tqdm's own estimates)
    FORMAT = "{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} " \
        "[{elapsed}<{eta}, {speed}{postfix}]"
    #: without a total: no percentage and no time left
    FORMAT_UNSIZED = "{desc}{n_fmt} [{elapsed}, {speed}{postfix}]"

    def __init__(self, clock, stream=None, enabled=None, total=None, unit="B",
                 description="", interval=0.2, meter=None):
        """
        @param clock: an C{IReactorTime} (C{seconds()}).
        @param enabled: L{None}: draw only on a terminal; true: always;
            false: never.
        @param unit: C{"B"} for bytes (shown in KiB, MiB, GiB), else the
            name of the counted thing (shown as is).
        """
        self.clock = clock
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = isTerminal(self.stream) if enabled is None else bool(enabled)
        self.total = total
        self.unit = unit
        self.description = description
        self.interval = interval
        self.meter = meter if meter is not None else RateMeter()
        self.count = 0
        self.postfix = ""
        self.started = clock.seconds()
        self._next = None
        self._bar = None
        self._finished = False

    def update(self, count, total=None, postfix=None):
        """
        The work done is C{count} (of C{total}, when given); redraw if the
        last drawing is C{interval} old, or the work is complete.
        """
        if not self.enabled or self._finished:
            return
        self.count = count
        if total:
            self.total = total
        if postfix is not None:
            self.postfix = postfix
        now = self.clock.seconds()
        if self._next is not None and now < self._next and count != self.total:
            return
        self._next = now + self.interval
        self.meter.sample(now, count)
        self._draw(now)

    __call__ = update

    def rate(self):
        """
        @return: units per second (L{RateMeter.rate}), or L{None}.
        """
        return self.meter.rate()

    def remaining(self):
        """
        @return: the seconds left (L{RateMeter.remaining}), or L{None}.
        """
        return self.meter.remaining(self.count, self.total)

    def text(self, now=None):
        """
        @return: the bar as it is drawn now (tqdm's layout of this
            display's numbers), without the terminal's control characters.
        """
        from tqdm import tqdm
        return tqdm.format_meter(**self._fields(now))

    def _fields(self, now=None):
        """
        The arguments of C{tqdm.format_meter} for this display at C{now}.
        """
        from tqdm import tqdm
        now = self.clock.seconds() if now is None else now
        rate = self.rate()
        remaining = self.remaining()
        total = self.total or None
        if total and self.count > total:
            total = self.count
        if self.unit == "B":
            speed = "?" if rate is None else tqdm.format_sizeof(rate, "", 1024)
            speed = speed[:-1] + "K" if speed.endswith("k") else speed
            speed += "iB/s" if speed[-1].isalpha() or speed == "?" else " B/s"
        else:
            speed = ("?" if rate is None else "%.2f" % (rate,)) + " %s/s" % (self.unit,)
        return dict(n=self.count, total=total, elapsed=max(now - self.started, 0.0),
                    prefix=self.description + ": " if self.description else "",
                    postfix=self.postfix or None,
                    unit_scale=self.unit == "B", unit_divisor=1024,
                    bar_format=self.FORMAT if total else self.FORMAT_UNSIZED,
                    speed=speed,
                    eta="?" if remaining is None else tqdm.format_interval(remaining))

    def _draw(self, now):
        if self._bar is None:
            try:
                import tqdm  # noqa: F401 (only to know whether it is there)
            except ImportError:
                self.enabled = False
                self.stream.write("progress: no bar (tqdm, Debian's python3-tqdm, is not "
                                  "installed)\n")
                self.stream.flush()
                return
            # drawn first as it is made
            self._bar = self._makeBar(self._fields(now))
            return
        fields = self._fields(now)
        bar = self._bar
        bar.fields = fields
        bar.n = fields["n"]
        bar.total = fields["total"]
        bar.refresh()

    def _makeBar(self, fields):
        """
        The tqdm bar that draws this display, drawn first with C{fields}
        (the arguments of C{tqdm.format_meter}, L{_fields}).
        """
        from tqdm import tqdm

        class Bar(tqdm):
            # the numbers are the display's, not tqdm's own clock's; no
            # monitor thread in a reactor's process
            monitor_interval = 0

            def __init__(bar, **kw):
                bar.fields = fields
                tqdm.__init__(bar, **kw)

            @property
            def format_dict(bar):
                return dict(tqdm.format_dict.fget(bar), **bar.fields)

        return Bar(total=fields["total"], file=self.stream, dynamic_ncols=True, leave=True,
                   mininterval=0, miniters=0, delay=0, disable=False, position=0)

    def write(self, text):
        """
        Write C{text} (whole lines) on the stream, above the bar if one is
        drawn.
        """
        bar = self._bar
        if bar is not None:
            bar.clear()
        self.stream.write(text)
        self.stream.flush()
        if bar is not None:
            bar.refresh()

    def finish(self, count=None):
        """
        Draw the bar a last time (with C{count}, when given) and end its
        line. Nothing more is drawn after.
        """
        if self._finished:
            return
        if count is not None and self.enabled:
            self._next = None
            self.update(count)
        self._finished = True
        if self._bar is not None:
            self.meter.sample(self.clock.seconds(), self.count)
            self._draw(self.clock.seconds())
            self._bar.close()
            self._bar = None
