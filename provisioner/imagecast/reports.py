# -*- test-case-name: tests.test_imagecast_sender,tests.test_imagecast_limits -*-
"""
The reports of an imagecast session's receivers, and what the next round
sends.

L{Reports} is the report part of L{provisioner.imagecast.session.Session}
(a mixin): a receiver's C{ReportMissing} checked against the round and
decoded within the image and the session's limits on ranges; the minimum
retransmission set of the next round (the union of the reports, coalesced
by the gap rule); the tail rule; and the clean reports the rate policy
judges a round by.
"""

from provisioner.imagecast import commands
from provisioner.imagecast import ranges as R

__all__ = ["Reports"]


class Reports:
    """
    The report part of L{provisioner.imagecast.session.Session} (a mixin).
    It sets a member's report (C{missing}, C{missingBytes}, C{capped},
    C{reportedRound}, its history) and the session's C{_keptRanges}, and
    fills the round's record (C{assumed}, C{reports}, C{union_bytes},
    C{reported_bytes}, C{next_bytes}); it reads the session's C{round},
    C{state}, C{size} and C{config}, and tells the counters
    (C{_changing}/C{_changed}) and the waiters (C{_poke}) of a report.
    """

    def _reportLimit(self, member):
        """
        The most ranges C{member}'s next report may keep:
        C{max_report_ranges}, and what the session's C{max_session_ranges}
        leaves once the other members' reports are counted.
        """
        cfg = self.config
        cap = cfg.get("max_report_ranges", 1 << 62)
        left = cfg.get("max_session_ranges", 1 << 62) - (
            self._keptRanges - len(member.missing or ()))
        return max(1, min(cap, left))

    def report(self, member, roundNumber, missing):
        """
        A receiver's C{ReportMissing}: checked against the round, then
        decoded (an L{R.EncodedRanges} off the wire) within the image and
        at most L{_reportLimit} ranges; a longer report keeps that many,
        the last running to the end of the image.

        @raise commands.StaleRound: if C{roundNumber} is not the current
            round.
        @raise commands.BadRanges: if the ranges are malformed or leave the
            image.
        """
        if roundNumber != self.round or self.state != "running":
            raise commands.StaleRound("round %d is over (current: %d)" % (
                roundNumber, self.round))
        limit = self._reportLimit(member)
        try:
            if isinstance(missing, commands.MalformedRanges):
                raise R.RangeError(str(missing))
            if isinstance(missing, R.EncodedRanges):
                missing, capped = missing.capped(self.size, limit)
            else:
                if missing and missing[-1][1] > self.size:
                    raise R.RangeError("ranges beyond the image size %d" % (self.size,))
                missing, capped = R.capRanges(missing, self.size, limit)
        except R.RangeError as e:
            raise commands.BadRanges(str(e))
        if capped:
            self.log.info("imagecast session {session}: the report of {client} for round "
                          "{round} holds more than {limit} ranges: kept the first ones, the "
                          "rest of the image counts as missing", session=self.id,
                          client=member.clientId, round=roundNumber, limit=limit)
        self._changing(member)
        self._keptRanges += len(missing) - len(member.missing or ())
        member.missing = missing
        member.missingBytes = R.total(missing)
        member.capped = capped
        member.reportedRound = roundNumber
        member.remember(roundNumber)
        self._changed(member)
        self._poke()

    def _cleanReports(self):
        """
        @return: C{{clientId: missing ranges}} of the receivers enrolled and
            connected for the whole round that reported for it (the rate
            policy judges the round by these).
        """
        r = self.round
        return {m.clientId: m.missing for m in self._active()
                if m.connected and m.cleanFrom is not None
                and m.cleanFrom <= r and m.missing is not None
                and m.reportedRound == r}

    def _smallTail(self, record):
        """
        The tail rule: whether what the receivers still lack is better sent
        over their control connections than in another round. Each
        receiver would then be sent its own missing bytes: that sum must be
        at most C{tail_bytes}, and at most a quarter above the union (bytes
        several receivers lack stay multicast, as after a burst lost by
        all).
        """
        wanted = record["reported_bytes"]
        return (wanted <= self.config["tail_bytes"]
                and wanted * 4 <= record["union_bytes"] * 5)

    def _aggregate(self, record):
        """
        The minimum retransmission set: the union of the current group's
        missing ranges, coalesced by the gap rule. Receivers that did not
        report keep their last report (marked as assumed).
        """
        reports = []
        reportedBytes = 0
        for m in self._active():
            if not m.connected or m.missing is None:
                continue
            if m.reportedRound < self.round:
                record["assumed"].append(m.clientId)
                m.remember(self.round, assumed=True)
            record["reports"][m.clientId] = m.missingBytes
            reportedBytes += m.missingBytes
            reports.append(m.missing)
        union = R.union(*reports)
        coalesced = R.coalesce(union, self.config["coalesce_gap"], self.config["max_ranges"])
        record["union_bytes"] = R.total(union)
        record["reported_bytes"] = reportedBytes
        record["next_bytes"] = R.total(coalesced)
        return coalesced
