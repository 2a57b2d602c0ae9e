# -*- test-case-name: tests.test_tftp_server -*-
"""
The slots of the TFTP dispatcher: what counts against C{tftp.max_sessions}
and C{tftp.max_sessions_per_client}, and which session gives its slot up
when a limit is reached.

A transfer holds a slot from its request until its session ends: while the
request is resolved (pending), while its session runs, or, for a client a
request handler keeps serving (multicast TFTP), until the handler releases
it (L{SlotAccounting.holdSlot}). When a limit is reached, a new request
takes the slot of the oldest read session whose client never answered (of
the same address, for the per-client limit): that client may be an address
that never asked (UDP is spoofed at no cost). Only when there is none is
the request refused.
"""

from collections import OrderedDict

from provisioner import errors

__all__ = ["SlotAccounting"]


class SlotAccounting:
    """
    The slot accounting, mixed into L{provisioner.tftp.server.TFTPServer}
    (its methods are the server's own): it keeps the state below on the
    server and reads the server's C{config} and C{sessions}.

    @ivar unanswered: the read sessions whose client has not answered yet,
        oldest first (C{OrderedDict} of C{(host, port)} to session): the
        ones a new request may take the slot of when a limit is reached.
    """

    def _initSlots(self):
        """
        No slot taken yet (a step of the server's C{__init__}).
        """
        self._pending = set()
        self._perClient = {}
        self.unanswered = OrderedDict()
        self._unansweredFrom = {}
        # slots held by request handlers: per peer, and in all
        self._held = {}
        self._heldTotal = 0

    def _trackUnanswered(self, addr, session):
        """
        A read session starts for C{addr}: until its client answers, its
        slot may go to a new request (L{_evict}).
        """
        self.unanswered[addr] = session
        self._unansweredFrom.setdefault(addr[0], OrderedDict())[addr] = session
        session.onAnswered = lambda: self._forgetUnanswered(addr)

    def _admit(self, addr):
        """
        Count a request against the limits. When a limit is reached, the
        oldest read session whose client never answered (of this address,
        for the per-client limit) gives its slot up (L{_evict}); only when
        there is none is the request refused. A request from a peer a
        request handler holds a slot for (a multicast client asking again)
        is not refused.

        @raise errors.TooManySessions: a limit is reached.
        """
        config = self.config
        host = addr[0]
        if addr not in self._held:
            if self._perClient.get(host, 0) >= config["max_sessions_per_client"] and \
                    not self._evict(self._unansweredFrom.get(host)):
                raise errors.TooManySessions("too many transfers from this address")
            if self.inFlight() >= config["max_sessions"] and not self._evict(self.unanswered):
                raise errors.TooManySessions("too many transfers in progress")
        self._perClient[host] = self._perClient.get(host, 0) + 1
        self._pending.add(addr)

    def inFlight(self):
        """
        The transfers counted against C{tftp.max_sessions}: sessions,
        requests being resolved, and the slots request handlers hold.
        """
        return len(self.sessions) + len(self._pending) + self._heldTotal

    def _evict(self, table):
        """
        End the oldest session of C{table} (an C{OrderedDict} of sessions
        whose client never answered, or L{None}): its slot goes to a new
        request. Its client, if it was one, never answered its first
        datagram; it gets nothing more (it may ask again).

        @return: whether a slot was freed.
        """
        if not table:
            return False
        addr, session = next(iter(table.items()))
        self._forgetUnanswered(addr)
        session.evict()
        return True

    def _forgetUnanswered(self, addr):
        if self.unanswered.pop(addr, None) is None:
            return
        table = self._unansweredFrom.get(addr[0])
        if table is not None:
            table.pop(addr, None)
            if not table:
                del self._unansweredFrom[addr[0]]

    def holdSlot(self, peer):
        """
        Count C{peer} as a transfer in flight (against both limits) until
        the returned callable is called: for a request handler that took a
        request and keeps serving its client (multicast TFTP, for each
        client that joins a session). A request repeated by a held peer is
        not refused by the limits.

        @return: a callable releasing the slot (once; later calls do
            nothing).
        """
        host = peer[0]
        self._perClient[host] = self._perClient.get(host, 0) + 1
        self._held[peer] = self._held.get(peer, 0) + 1
        self._heldTotal += 1
        held = [True]

        def release():
            if not held:
                return
            del held[:]
            self._heldTotal -= 1
            n = self._held.get(peer, 0) - 1
            if n > 0:
                self._held[peer] = n
            else:
                self._held.pop(peer, None)
            self._uncount(host)
        return release

    def _uncount(self, host):
        n = self._perClient.get(host, 0) - 1
        if n > 0:
            self._perClient[host] = n
        else:
            self._perClient.pop(host, None)

    def _release(self, addr):
        self._pending.discard(addr)
        self.sessions.pop(addr, None)
        self._forgetUnanswered(addr)
        self._uncount(addr[0])
