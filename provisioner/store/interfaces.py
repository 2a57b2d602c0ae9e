# -*- test-case-name: tests.test_hosts_store -*-
"""
The seam between the host lifecycle and what keeps it: L{IHostStore}.

Every method returns a Deferred, so that a store that talks to a server
(PostgreSQL, later) implements the same interface as the embedded SQLite
one. A write's Deferred fires once the change is durable; changes submitted
one after the other are applied in that order. Nothing here names a
database: records are the plain classes of L{provisioner.store.records}.

L{ILeaseStore} is the same seam for the DHCP leases of full mode: the
embedded SQLite store (L{provisioner.dhcp.leases.LeaseStore}, one appliance)
and the PostgreSQL one (L{provisioner.store.postgres_leases}, several
appliances on one database) provide it.
"""

from zope.interface import Attribute, Interface

__all__ = ["IHostStore", "ILeaseStore", "StoreUnavailable", "AddressTaken"]


class StoreUnavailable(Exception):
    """
    A store that talks to a database server cannot reach it now (it is
    down, restarting, or the network to it is): the caller refuses what
    needs the database and tries again later.
    """


class AddressTaken(Exception):
    """
    A shared lease store refused an offer or a lease: the database holds
    the address for another client (another appliance gave it first).
    """


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


class ILeaseStore(Interface):
    """
    The DHCP leases of full mode, as the responder
    (L{provisioner.dhcp.leasing.LeaseResponder}) uses them.

    Reads (C{byMAC}, C{byIP}, C{isFree}, ...) are answered from memory and
    never wait; writes return a Deferred that fires once the change is
    durable (the ACK waits for it). A store that other appliances share
    (C{shared}) also records each offer in the database before it is sent
    (L{claimOffer}), and says which clients this appliance answers
    (L{answers}).
    """

    clock = Attribute("The C{IReactorTime} whose C{seconds()} dates leases.")
    location = Attribute("Where the leases are, for log lines (a path, a DSN without "
                         "credentials).")
    shared = Attribute("Whether other appliances write the same leases: then an offer is "
                       "claimed in the database (L{claimOffer}) before it is sent, and "
                       "L{answers} says which clients are this appliance's.")
    available = Attribute("Whether new leases can be given now (L{False} while a shared "
                          "store's database is unreachable).")

    def __len__():
        """
        How many leases, offers and declined markers are held in memory.
        """

    def __iter__():
        """
        The L{provisioner.dhcp.leases.Lease}s held in memory.
        """

    def byMAC(mac):
        """
        The client's lease or offer (any state, maybe expired), or L{None}.
        """

    def byIP(ip):
        """
        The lease, offer or declined marker of C{ip}, or L{None}.
        """

    def isFree(ip, mac=None, takeWeak=False):
        """
        Whether C{ip} may go to C{mac} as far as this store knows.
        """

    def holderMismatch(mac, ip, clientId=None):
        """
        L{None} when C{mac} holds C{ip}, else a few words saying why not.
        """

    def offer(mac, ip, hold, clientId=None, pool=None, weak=False):
        """
        Hold C{ip} for C{mac} for C{hold} seconds, in memory; return the
        L{provisioner.dhcp.leases.Lease}.
        """

    def claimOffer(mac, ip, hold, clientId=None, pool=None, weak=False):
        """
        L{offer}, recorded where every appliance sees it first.

        @return: a Deferred firing with the L{provisioner.dhcp.leases.Lease},
            or with L{None} when the address is held for another client
            (the store now knows that holder: choose another address); it
            fails with L{StoreUnavailable} when the database cannot be
            reached.
        """

    def lookup(mac):
        """
        Make sure memory holds what the store has of C{mac} (a shared store
        reads the database when memory has nothing of it).

        @return: a Deferred firing with the client's lease, or L{None}.
        """

    def answers(mac):
        """
        Whether this appliance answers C{mac}'s DISCOVER (always for a store
        of one appliance; for a shared one, whether the client hashes to
        this appliance among the live ones).
        """

    def adopts(serverID, mac):
        """
        Whether this appliance answers a REQUEST from C{mac} that selected
        the server C{serverID} (option 54), not this one: for a shared
        store, when C{serverID} is an appliance of the store whose heartbeat
        stopped and the client is this appliance's now (the database holds
        the offer it was sent); never for a store of one appliance.
        """

    def outstandingOffers(pool):
        """
        How many offers counted under C{pool} are still held.
        """

    def oldestWeakOffer(pool):
        """
        The oldest weak offer still held under C{pool}, or L{None}.
        """

    def declined():
        """
        The declined markers, oldest first.
        """

    def bind(mac, ip, duration, hostname=None, clientId=None):
        """
        Bind C{ip} to C{mac} for C{duration} seconds.

        @return: a Deferred firing with the lease once it is durable; a
            shared store fails it with L{AddressTaken} when the database
            holds C{ip} for another client, and with L{StoreUnavailable}
            when it cannot be reached and the lease is not a renewal of
            one this appliance knows.
        """

    def release(mac, ip=None):
        """
        Drop the client's lease (RELEASE); a Deferred.
        """

    def decline(mac, ip, hold, limit=None, within=None):
        """
        Keep C{ip} from everyone for C{hold} seconds (DECLINE); a Deferred.
        """

    def reclaim():
        """
        Forget every expired lease and offer; return how many.
        """

    def close():
        """
        Finish what was submitted, then release the store; a Deferred.
        """
