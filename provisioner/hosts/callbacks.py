# -*- test-case-name: tests.test_hosts -*-
"""
The callbacks: a booted system reports its deploy (C{deploying} for
progress, C{deployed} or C{failed}) with the per-boot token its menu put on
its kernel command line. A wrong, reused or expired token is refused,
logged, and changes nothing; a final report uses up the host's tokens.
"""

from twisted.internet import defer

from provisioner.hosts import lifecycle
from provisioner.hosts.errors import BadRequest, Refused
from provisioner.hosts.lifecycle import DEPLOYED, DEPLOYING, FAILED, READY

__all__ = ["Callbacks"]


class Callbacks:
    """
    The callbacks of one L{provisioner.hosts.book.HostBook}. Tokens are
    checked and used up by the book's
    L{provisioner.hosts.tokens.TokenLedger}; states change through the
    book's C{_transition}; every line is logged through the book's logger
    (namespace C{provisioner.hosts.book.HostBook}).
    """

    def __init__(self, book):
        self.book = book

    def callback(self, name, token, state, message=None, peer=None):
        """
        See L{provisioner.hosts.book.HostBook.callback}.
        """
        book = self.book
        book._require()
        if state not in (DEPLOYING, DEPLOYED, FAILED):
            raise BadRequest("state must be deploying, deployed or failed (got %r)" % (state,))
        now = book.clock.seconds()
        record = book.hosts.get(name)
        problem = self._refusal(name, token, record, now)
        if problem is not None:
            book.log.warn("hosts: callback {state} for {host} from {peer} refused: {why}; "
                          "nothing changed", state=state, host=name, peer=peer or "?",
                          why=problem)
            raise Refused(problem)
        writes = self._report(record, state, message, peer, now)
        return defer.gatherResults(writes, consumeErrors=True).addCallback(
            lambda _: book.hostInfo(name))

    def _refusal(self, name, token, record, now):
        """
        Why a callback for host C{name} (its C{record}, or L{None}) with
        C{token} is refused, or L{None}: the token's problems first, then
        the host's.
        """
        problem = self.book._ledger.refusal(name, token, now)
        if problem is None and record is None:
            problem = "no such host"
        elif problem is None and record.state == DEPLOYED:
            problem = "the host is deployed already"
        return problem

    def _report(self, record, state, message, peer, now):
        """
        Apply an accepted callback: a host still C{ready} or C{failed} is
        C{deploying} first; then progress is an event, C{deployed} and
        C{failed} transitions that use up the host's tokens.

        @return: the store's Deferreds.
        """
        book = self.book
        name = record.name
        text = (": " + message) if message else ""
        writes = []
        if record.state in (READY, FAILED):
            writes.append(book._transition(
                record, DEPLOYING, "called back from its deploy entry at %s" % (peer,), now))
        if state == DEPLOYING:
            event = lifecycle.progress(name, DEPLOYING, "progress from %s%s" % (peer, text),
                                       now)
            book._record(name, event)
            book.log.info("hosts: {host} progress: {why}", host=name, why=event.why)
            writes.append(book._write(book.store.addEvent(event, book.eventsPerHost),
                                      "an event of %s" % (name,)))
        elif state == DEPLOYED:
            writes.append(book._transition(
                record, DEPLOYED, "the installed system called back from %s%s" % (peer, text),
                now))
            writes.extend(book._ledger.useUp(name, now))
        else:
            writes.append(book._transition(
                record, FAILED, "the deploy environment reported failure from %s%s" % (
                    peer, text or ": no reason given"), now))
            writes.extend(book._ledger.useUp(name, now))
        return writes
