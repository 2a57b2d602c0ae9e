# -*- test-case-name: tests.test_imagecast_sender -*-
"""
The scorecard of an imagecast session: what C{provisioner imagecast status}
shows and C{send} follows (JSON-ready: lists, strings and numbers).
"""

from provisioner.imagecast import ranges as R
from provisioner.imagecast.member import COMPLETE

__all__ = ["scorecard", "mbps"]


def mbps(bytesPerSecond):
    """
    @return: C{bytesPerSecond} in Mbit/s.
    """
    return bytesPerSecond * 8 / 1e6


def _memberCard(m, detail):
    history = sorted(m.history.items())
    entry = {"address": m.address, "state": m.state, "connected": m.connected,
             "reason": m.reason, "reconnects": m.reconnects,
             "completed_at": (None if m.completedAt is None else round(m.completedAt, 3)),
             "missing_by_round": {str(k): v[0] for k, v in history},
             "ranges_by_round": {str(k): v[3] for k, v in history},
             "assumed_rounds": [k for k, v in history if v[2]],
             "report_capped": m.capped}
    if detail:
        # the history keeps a bounded number of ranges: rounds whose ranges
        # were not kept are left out
        entry["reported_ranges"] = {str(k): [list(x) for x in v[1]]
                                    for k, v in history if v[1] is not None}
    return entry


def scorecard(session, detail=False):
    """
    @param session: a L{provisioner.imagecast.session.Session}.
    @param detail: include every range each receiver reported.
    @return: the session's scorecard, a C{dict}.
    """
    s = session
    members = {cid: _memberCard(m, detail) for cid, m in sorted(s.members.items())}
    now = s.finished if s.finished is not None else s.clock.seconds()
    return {
        "session": s.id, "name": s.name, "size": s.size, "sha256": s.sha256,
        "state": s.state, "phase": s.phase, "round": s.round,
        "group": s.group, "port": s.port, "chunk_size": s.chunkSize,
        "rate_mbps": round(mbps(s.rate), 1),
        "permanent_group": sorted(s.members),
        "current_group": sorted(m.clientId for m in s.members.values() if m.inCurrentGroup()),
        "complete": sorted(m.clientId for m in s.members.values() if m.state == COMPLETE),
        "members": members,
        "rounds": [dict(r, reports=dict(r["reports"])) for r in s.rounds],
        "unrecoverable": [list(x) for x in s.unrecoverable],
        "unrecoverable_bytes": R.total(s.unrecoverable),
        "tail": [list(x) for x in s.tail],
        "tail_bytes": R.total(s.tail),
        # a sparse image: its holes are never sent (docs/imagecast.md)
        "holes": len(s.holes),
        "hole_bytes": R.total(s.holes),
        "elapsed": round(now - (s.started or s.created), 3),
        "error": s.error,
    }
