# -*- test-case-name: tests.test_hosts_store -*-
"""
The seam between the host lifecycle and what keeps it: L{IHostStore}.

Every method returns a Deferred, so that a store that talks to a server
(PostgreSQL, later) implements the same interface as the embedded SQLite
one. A write's Deferred fires once the change is durable; changes submitted
one after the other are applied in that order. Nothing here names a
database: records are the plain classes of L{provisioner.store.records}.
"""

from zope.interface import Attribute, Interface

__all__ = ["IHostStore"]


class IHostStore(Interface):
    """
    Hosts and their lifecycle state, their events, discovered machines and
    per-boot tokens.
    """

    location = Attribute("Where the store is, for log lines (a path, a URL without "
                         "credentials).")

    def load():
        """
        Read everything.

        @return: a Deferred firing with a
            L{provisioner.store.records.Snapshot}.
        """

    def saveHost(host, event=None, keep=None):
        """
        Insert or replace a host; with C{event}, also append it to that
        host's history, in the same transaction, keeping the newest C{keep}
        events of C{event.key} (all when L{None}).

        @param host: a L{provisioner.store.records.HostRecord}.
        @param event: a L{provisioner.store.records.Event}, or L{None}.
        """

    def addEvent(event, keep=None):
        """
        Append an event (a progress report: no state changed), keeping the
        newest C{keep} events of its key.
        """

    def saveMachine(machine, event=None, keep=None):
        """
        Insert or replace a discovered machine (by MAC), with an optional
        event as for L{saveHost}.
        """

    def forgetMachine(mac):
        """
        Delete a discovered machine and its events.
        """

    def adopt(mac, host, event, keep=None):
        """
        In one transaction: the discovered machine C{mac} becomes C{host}.
        Its events are kept, under the host's name; the machine is deleted;
        the host is saved and C{event} appended.
        """

    def saveToken(token):
        """
        Insert or replace a token (by digest).
        """

    def forgetTokens(digests):
        """
        Delete the tokens with these digests.
        """

    def events(key, limit=None):
        """
        @return: a Deferred firing with the events of C{key}, oldest first:
            the newest C{limit} of them when C{limit} is given.
        """

    def close():
        """
        Finish what was submitted, then release the store.

        @return: a Deferred firing when done.
        """
