# -*- test-case-name: tests.test_client -*-
"""
What a unicast read asks for and how it adapts (L{FetchOptions}), and what
it got (L{FetchResult}).
"""

from provisioner.tftp.adaptivewire import (
    ADAPTIVE_OPTION, ADAPTIVE_VERSION, MSFT_CLIENT_MAGIC, MSFT_OPTION, formatAdaptiveOption)

__all__ = ["FetchOptions", "FetchResult"]


class FetchOptions:
    """
    What the client asks for and how it adapts.

    @ivar blksize: the block size proposed (L{None}: none proposed).
    @ivar windowsize: the initial window proposed (RFC 7440; 1: no option).
    @ivar adaptive: ask for the adaptive extension.
    @ivar msftwindow: ask for Windows bootmgr's variable window instead.
    @ivar tsize: ask for the transfer size.
    @ivar timeout: first retransmission timeout of the request (seconds);
        also the ceiling of the data timeout.
    @ivar minTimeout: the floor of the adaptive data timeout.
    @ivar retries: timeouts in a row before giving up (during the transfer,
        only once nothing arrived for C{idleLimit} seconds too: a server
        may be in a long retransmission backoff).
    @ivar idleLimit: seconds without progress before a transfer is given
        up (default C{timeout * 2 ** min(retries, 5)}).
    @ivar pin: negotiate the adaptive option but keep the window fixed (to
        compare window policies with the same loss signalling).
    @ivar growWindows, growSeconds: the loss-free period (windows, or time).
    @ivar decrease: the C{N} of C{WS/2 + N} after a loss.
    @ivar fallback: try the lower levels when a level fails.
    @ivar rcvbuf: the socket receive buffer wanted (bytes).
    @ivar maxWindow: the client's own ceiling for the adaptive window (the
        server's, from the OACK, applies too; C{msftwindow} servers do not
        announce one, so this is the only one there).
    """

    def __init__(self, blksize=1468, windowsize=32, adaptive=True, msftwindow=False,
                 tsize=True, timeout=1.0, minTimeout=0.004, retries=6, growWindows=1,
                 growSeconds=None, decrease=8, fallback=True, rcvbuf=4 << 20, maxWindow=64,
                 idleLimit=None, pin=False):
        self.blksize = blksize
        self.windowsize = windowsize
        self.adaptive = adaptive
        self.msftwindow = msftwindow
        self.tsize = tsize
        self.timeout = timeout
        self.minTimeout = minTimeout
        self.retries = retries
        self.growWindows = growWindows
        self.growSeconds = growSeconds
        self.decrease = decrease
        self.fallback = fallback
        self.rcvbuf = rcvbuf
        self.maxWindow = maxWindow
        self.idleLimit = idleLimit if idleLimit is not None else \
            timeout * 2 ** min(retries, 5)
        self.pin = pin

    def levels(self):
        """
        The option sets to try, best first: C{[(mode, [(name, value)])]}.
        """
        base = []
        if self.blksize:
            base.append(("blksize", str(self.blksize)))
        if self.tsize:
            base.append(("tsize", "0"))
        window = [("windowsize", str(self.windowsize))] if self.windowsize > 1 else []
        levels = []
        if self.msftwindow:
            levels.append(("msftwindow", base + [("windowsize", str(self.windowsize)),
                                                 (MSFT_OPTION, MSFT_CLIENT_MAGIC)]))
        elif self.adaptive:
            levels.append(("adaptive", base + window +
                           [(ADAPTIVE_OPTION, formatAdaptiveOption(ADAPTIVE_VERSION))]))
        if window:
            levels.append(("rfc7440", base + window))
        if base:
            levels.append(("rfc2347", base))
        levels.append(("rfc1350", []))
        if not self.fallback:
            levels = levels[:1]
        return levels


class FetchResult:
    """
    The outcome of a download.

    @ivar size: bytes received.
    @ivar sha256: hex digest of them.
    @ivar mode: the level that worked (one of L{MODES}).
    @ivar blksize, windowsize: what was negotiated (initial window).
    @ivar tsize: the size the server announced, or L{None}.
    @ivar elapsed: seconds from the first request to the last block.
    @ivar losses: losses detected (gaps and timeouts).
    @ivar timeouts: data timeouts.
    @ivar trace: the controller's L{provisioner.client.window.WindowChange}s
        (for a fixed window, just the initial one).
    @ivar attempts: the levels tried, C{[(mode, outcome)]}.
    """

    def __init__(self):
        self.size = 0
        self.sha256 = None
        self.mode = None
        self.blksize = None
        self.windowsize = None
        self.tsize = None
        self.elapsed = 0.0
        self.losses = 0
        self.timeouts = 0
        self.duplicates = 0
        self.trace = []
        self.attempts = []

    @property
    def maxWindow(self):
        return max([c.new for c in self.trace] or [self.windowsize or 1])

    def __repr__(self):
        return "<FetchResult %s %d bytes in %.3fs, %d losses>" % (
            self.mode, self.size, self.elapsed, self.losses)
