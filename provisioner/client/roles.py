# -*- test-case-name: tests.test_mtftp_client -*-
"""
The roles of a multicast TFTP client and the promotion rules.

A client starts I{passive} (listens to the group) or I{active} (the
server made it master: it ACKs, and the server multicasts what it asks
for). After the first pass (the stream reached the end of the file), a
passive client with gaps becomes I{smart} (leaves the group and repairs
its own gaps by unicast: smart repair) when they are few and small, or is
I{promoted} (stays in the group and takes its turn as master, so the
server multicasts again what it misses) when they are many or large.
L{RolePolicy} decides between the two.
"""

__all__ = ["ACTIVE", "PASSIVE", "SMART", "PROMOTED", "RolePolicy"]

ACTIVE, PASSIVE, SMART, PROMOTED = "active", "passive", "smart", "promoted"


class RolePolicy:
    """
    What a passive client does once the first pass is over.

    It becomes I{smart} (unicast repair of its own gaps) when every
    threshold holds: missing bytes at most C{smartMaxBytes}, at most
    C{smartMaxGaps} gaps, none longer than C{smartMaxGap} blocks, and at most
    C{smartMaxFraction} of the file missing. Otherwise it is promoted to
    I{active}: it stays in the group and takes its turn as master.

    With a server that granted C{mcepoch} (so a master's ACK names all its
    holes and its turn fetches them in about one round trip, each
    multicast once for every member that misses it), a client with more
    than C{promoteGaps} gaps is promoted whatever the smart thresholds:
    master turns put the union of the group's losses on the wire, smart
    repair the sum. A negative C{promoteGaps} turns this off.
    """

    def __init__(self, smartMaxBytes=8 << 20, smartMaxGaps=4096, smartMaxGap=1024,
                 smartMaxFraction=0.25, repair=True, promoteGaps=32):
        self.smartMaxBytes = smartMaxBytes
        self.smartMaxGaps = smartMaxGaps
        self.smartMaxGap = smartMaxGap
        self.smartMaxFraction = smartMaxFraction
        self.repair = repair
        self.promoteGaps = promoteGaps

    def decide(self, stats, nblocks, groupRepair=False):
        """
        @param groupRepair: whether master turns fetch every hole at once
            (the server granted C{mcepoch}).
        @return: C{(role, reason)}, role L{SMART} or L{ACTIVE}.
        """
        if not self.repair:
            return ACTIVE, "unicast repair disabled"
        why = []
        if groupRepair and 0 <= self.promoteGaps < stats["gaps"]:
            why.append("%d gaps > %d: a master turn multicasts them for the group" % (
                stats["gaps"], self.promoteGaps))
        if stats["bytes"] > self.smartMaxBytes:
            why.append("%d bytes missing > %d" % (stats["bytes"], self.smartMaxBytes))
        if stats["gaps"] > self.smartMaxGaps:
            why.append("%d gaps > %d" % (stats["gaps"], self.smartMaxGaps))
        if stats["largest"] > self.smartMaxGap:
            why.append("largest gap %d blocks > %d" % (stats["largest"], self.smartMaxGap))
        if stats["blocks"] > self.smartMaxFraction * nblocks:
            why.append("%.1f%% missing > %.1f%%" % (100.0 * stats["blocks"] / nblocks,
                                                  100.0 * self.smartMaxFraction))
        if why:
            return ACTIVE, "; ".join(why)
        return SMART, "%d gaps, %d bytes missing" % (stats["gaps"], stats["bytes"])
