# -*- test-case-name: tests.test_imagecast_sender -*-
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
    @ivar missing: what it last reported missing (L{None}: no report yet).
    @ivar reportedRound: the round of that report.
    @ivar history: C{{round: (bytes missing, ranges, assumed)}}.
    @ivar cleanFrom: the first round it was enrolled and connected for from
        the announcement on (rate policy).
    """

    def __init__(self, clientId, address, connection, now):
        self.clientId = clientId
        self.address = address
        self.connection = connection
        self.state = ACTIVE
        self.reason = None
        self.missing = None
        self.reportedRound = 0
        self.history = {}
        self.enrolledAt = now
        self.disconnectedAt = None
        self.cleanFrom = None
        self.reconnects = 0
        self.sha256 = None
        self.progress = None
        self.completedAt = None

    @property
    def connected(self):
        return self.connection is not None

    @property
    def finished(self):
        return self.state in (COMPLETE, FAILED, LOST)

    def inCurrentGroup(self):
        return self.state == ACTIVE and (self.missing is None or bool(self.missing))
