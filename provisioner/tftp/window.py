# -*- test-case-name: tests.test_tftp_session -*-
"""
Window policies: how many blocks a read session sends before it waits for
an ACK, and how long it pauses between windows.

A session holds one L{IWindowPolicy}. Before every window it asks
L{IWindowPolicy.size} (blocks in the next window, at least 1) and
L{IWindowPolicy.delay} (seconds to wait before sending it; C{0.0} sends at
once, honoured with C{callLater}). It reports what happened:

  - L{IWindowPolicy.onWindowAcked}: the whole window was acknowledged;
  - L{IWindowPolicy.onLoss}: an ACK acknowledged only part of the window
    (the client saw a gap; the session goes back to the block after it);
  - L{IWindowPolicy.onTimeout}: no ACK came in time (the session resends
    from the last acknowledged block, with exponential backoff);
  - L{IWindowPolicy.onAckExtra}: an ACK carried trailing bytes; only called
    when an L{provisioner.tftp.negotiate.IOptionExtension} negotiated an
    extension (the adaptive window, C{msftwindow}).

The session never asks for more blocks than remain in the file and never
more than 65535 per window (RFC 7440). L{FixedWindow} is the RFC 7440
default: the negotiated C{windowsize}, always.

Other policies (server-adaptive, client-driven) live next to their option
extensions and are plugged in through
L{provisioner.tftp.negotiate.IOptionExtension}.
"""

from zope.interface import Interface, implementer

from provisioner.tftp.wire import MAX_WINDOW

__all__ = ["IWindowPolicy", "FixedWindow", "MAX_WINDOW"]



class IWindowPolicy(Interface):
    """
    Decides the size of each window of a read transfer and the pause before
    it. All times are the session clock's C{seconds()}.
    """

    def size():
        """
        @return: the number of blocks in the next window (C{int}, at least 1;
            values above 65535 are clamped by the session).
        """

    def delay():
        """
        @return: seconds to wait before sending the next window (C{float});
            C{0.0} for none.
        """

    def onWindowAcked(now):
        """
        Every block of the last window was acknowledged.
        """

    def onLoss(now):
        """
        An ACK acknowledged only part of the last window.
        """

    def onTimeout(now):
        """
        No ACK arrived before the retransmission timer fired.
        """

    def onAckExtra(extra, now):
        """
        An ACK carried trailing bytes C{extra} (only when an extension was
        negotiated).
        """


@implementer(IWindowPolicy)
class FixedWindow:
    """
    A fixed window of C{n} blocks and no pause: RFC 7440 as written (and
    RFC 1350 when C{n} is 1).
    """

    def __init__(self, n=1):
        self.n = max(1, min(int(n), MAX_WINDOW))

    def size(self):
        return self.n

    def delay(self):
        return 0.0

    def onWindowAcked(self, now):
        pass

    def onLoss(self, now):
        pass

    def onTimeout(self, now):
        pass

    def onAckExtra(self, extra, now):
        pass

    def __repr__(self):
        return "<FixedWindow %d>" % (self.n,)
