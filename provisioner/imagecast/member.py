# -*- test-case-name: tests.test_imagecast_sender,tests.test_imagecast_limits -*-
"""
One receiver in one imagecast session: L{Member} and its states.
"""

__all__ = ["Member", "ACTIVE", "COMPLETE", "FAILED", "LOST"]

# Member states
ACTIVE = "active"
COMPLETE = "complete"
FAILED = "failed"
LOST = "lost"


class Member:
    """
    One receiver in one session's permanent group.

    @ivar connection: its control connection (an object with C{callRemote}),
        or L{None} while disconnected.
    @ivar missing: what it last reported missing (L{None}: no report yet),
        at most C{imagecast.max_report_ranges} ranges.
    @ivar missingBytes: the bytes in C{missing}.
    @ivar capped: whether C{missing} was cut to that limit (a superset of
        the report).
    @ivar reportedRound: the round of that report.
    @ivar history: C{{round: (bytes missing, ranges or None, assumed,
        number of ranges)}}: a bounded summary. The ranges themselves are
        kept only while the whole history holds at most L{HISTORY_RANGES}
        of them (the scorecard's detail); beyond, only their count.
    @ivar cleanFrom: the first round it was enrolled and connected for from
        the announcement on (rate policy).
    @ivar slow: whether flow control found it below the rate floor (it
        does not hold the sender back until it keeps up again).
    @ivar piecesOn: the connection it was sent the piece digests on.
    """

    #: the most ranges the history of one receiver keeps (in all rounds)
    HISTORY_RANGES = 1024

    def __init__(self, clientId, address, connection, now):
        self.clientId = clientId
        self.address = address
        self.connection = connection
        self.state = ACTIVE
        self.reason = None
        self.missing = None
        self.missingBytes = 0
        self.capped = False
        self.reportedRound = 0
        self.history = {}
        self._historyRanges = 0
        self.enrolledAt = now
        self.disconnectedAt = None
        self.cleanFrom = None
        self.reconnects = 0
        self.sha256 = None
        self.progress = None
        self.completedAt = None
        self.slow = False
        self.piecesOn = None

    @property
    def connected(self):
        return self.connection is not None

    @property
    def finished(self):
        return self.state in (COMPLETE, FAILED, LOST)

    def inCurrentGroup(self):
        return self.state == ACTIVE and (self.missing is None or bool(self.missing))

    def remember(self, roundNumber, assumed=False):
        """
        Record the current report in the history of C{roundNumber} (an
        assumed one only if that round has none yet): its bytes and count
        always, its ranges while the history has room for them.
        """
        if assumed and roundNumber in self.history:
            return
        old = self.history.get(roundNumber)
        if old is not None and old[1] is not None:
            self._historyRanges -= len(old[1])
        missing = self.missing or []
        kept = None
        if self._historyRanges + len(missing) <= self.HISTORY_RANGES:
            kept = missing
            self._historyRanges += len(missing)
        self.history[roundNumber] = (self.missingBytes, kept, assumed, len(missing))
