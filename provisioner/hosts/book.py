# -*- test-case-name: tests.test_hosts -*-
"""
The host book: every host's lifecycle, discovered machines and per-boot
tokens, in memory, written through to an
L{provisioner.store.interfaces.IHostStore}. It is the public object of the
C{hosts} service (C{appliance.hosts}); the others use it:

  - the menus renderer asks L{HostBook.adoption} (is this MAC an adopted
    host?) and L{HostBook.boot} (what does this host boot now: its local
    disk, or its deploy entry with a fresh token?);
  - the TFTP and HTTP services report every transfer
    (L{HostBook.fetched}): a host that fetches its deploy entry's kernel
    (or image) becomes C{deploying}; a machine no inventory names is
    discovered, with the files it fetched;
  - the JSON API runs callbacks, redeploy, adopt and the queries, and
    serves the orders of hosts whose profile images them
    (L{HostBook.orders}).

Changes are applied in memory at once (so the next boot sees them) and the
store's Deferred is returned: an API answer waits for it, so what was
acknowledged is on disk.

The book keeps the hosts, their histories and the adopted MACs, follows the
inventory (L{HostBook.sync}), makes every change of state, and answers the
queries. It owns one object per role, each given the book:

  - L{provisioner.hosts.tokens.TokenLedger}: the per-boot tokens;
  - L{provisioner.hosts.discovery.Discovery}: machines no inventory names;
  - L{provisioner.hosts.deploy.DeploySignal}: what a transfer means;
  - L{provisioner.hosts.boot.BootDecisions}: the renderer's questions;
  - L{provisioner.hosts.callbacks.Callbacks}: booted systems' reports;
  - L{provisioner.hosts.admin.AdminActions}: who is an admin, redeploy,
    adopt;
  - L{provisioner.hosts.orders.Orders}: the orders of imaging profiles'
    hosts, and their receiver secrets.

They save and log through the book (C{_write}, C{log}), so every line is
the book's: namespace C{provisioner.hosts.book.HostBook}.
"""

import collections
import ipaddress
import secrets

from twisted.logger import Logger

from provisioner.directory import normaliseMAC
from provisioner.events import NULL_SINK
from provisioner.hosts import lifecycle
from provisioner.hosts.admin import AdminActions
from provisioner.hosts.boot import BootDecisions
from provisioner.hosts.callbacks import Callbacks
from provisioner.hosts.deploy import DeploySignal
from provisioner.hosts.discovery import Discovery
from provisioner.hosts.errors import BadRequest, NotFound, NotReady
from provisioner.hosts.lifecycle import DISCOVERED, READY
from provisioner.hosts.orders import Orders
from provisioner.hosts.tokens import TokenLedger
from provisioner.store.records import HostRecord

__all__ = ["HostBook"]


class HostBook:
    """
    See the module docstring.

    @ivar store: the L{IHostStore} (set when the service opens it).
    @ivar loaded: whether the store's content is in memory; before that the
        book takes no part in boots and refuses requests (503).
    @ivar hosts: C{{name: HostRecord}}.
    @ivar events: C{{key: deque of Event}} (bounded).
    @ivar machines: discovered machines, C{{mac: Machine}}, least recently
        seen first (kept by the L{Discovery}).
    @ivar tokens: C{{digest: Token}}, oldest first (kept by the L{TokenLedger}).
    @ivar eventSink: where every event of a history is published as it is
        recorded (C{host.state}), an L{provisioner.events.IEventSink}.
    """

    log = Logger()

    def __init__(self, clock, inventory=lambda: None, clients=None, store=None,
                 eventsPerHost=100, tokenTTL=21600, maxTokens=10000, maxDiscovered=10000,
                 filesPerMachine=32, adminNetworks=("127.0.0.0/8", "::1/128"),
                 newToken=None, eventSink=None, imaging=lambda: None, newSecret=None):
        """
        @param clock: an C{IReactorTime}.
        @param inventory: a callable returning the current inventory (or
            L{None}).
        @param clients: the client directory (MAC, IP, architecture, vendor
            class, UUID learnt by DHCP), or L{None}.
        @param newToken: a callable returning a fresh token (tests);
            default C{secrets.token_urlsafe(24)}.
        @param eventSink: see L{eventSink} (none by default).
        @param imaging: a callable returning the imagecast service's
            L{provisioner.interfaces.IImaging} (C{appliance.imaging}) or
            L{None}: the orders' secrets and sessions.
        @param newSecret: a callable returning a fresh receiver secret
            (tests).
        """
        self.clock = clock
        self.inventory = inventory
        self.imaging = imaging
        self.clients = clients
        self.store = store
        self.loaded = False
        self.hosts = {}
        self.events = {}
        self.eventSink = eventSink if eventSink is not None else NULL_SINK
        self._discovery = Discovery(self)
        self._deploySignal = DeploySignal(self)
        self._bootDecisions = BootDecisions(self)
        self._callbacks = Callbacks(self)
        self._admin = AdminActions(self)
        self._orders = Orders(self, newSecret)
        self._ledger = TokenLedger(self, newToken or (lambda: secrets.token_urlsafe(24)))
        self._adoptedByMAC = {}
        self._inventorySeen = None
        self._changeListeners = []
        self.configure(eventsPerHost, tokenTTL, maxTokens, maxDiscovered, filesPerMachine,
                       adminNetworks)

    def configure(self, eventsPerHost=100, tokenTTL=21600, maxTokens=10000,
                  maxDiscovered=10000, filesPerMachine=32,
                  adminNetworks=("127.0.0.0/8", "::1/128")):
        """
        Take (new) limits; histories are cut to the new length.
        """
        self.eventsPerHost = eventsPerHost
        self.tokenTTL = tokenTTL
        self.maxTokens = maxTokens
        self.maxDiscovered = maxDiscovered
        self.filesPerMachine = filesPerMachine
        self.adminNetworks = [ipaddress.ip_network(n, strict=False) for n in adminNetworks]
        for key, history in list(self.events.items()):
            self.events[key] = collections.deque(history, maxlen=eventsPerHost)
        self._discovery.trim(filesPerMachine)
        if self.loaded:
            self._discovery.evict()
            self._ledger.prune(self.clock.seconds())

    @property
    def tokens(self):
        """
        C{{digest: Token}}, oldest first (read only: the L{TokenLedger}
        keeps them).
        """
        return self._ledger.tokens

    @property
    def machines(self):
        """
        The discovered machines, C{{mac: Machine}}, least recently seen
        first (the L{Discovery} keeps them).
        """
        return self._discovery.machines

    # Loading and writing.

    def restore(self, snapshot):
        """
        Take what the store holds (at start). Expired tokens are dropped.
        """
        self.hosts = {h.name: h for h in snapshot.hosts}
        self.events = {key: collections.deque(events, maxlen=self.eventsPerHost)
                       for key, events in snapshot.events.items()}
        self._discovery.restore(snapshot.machines)
        self._ledger.restore(snapshot.tokens)
        self._adoptedByMAC = {}
        for host in self.hosts.values():
            self._indexAdopted(host)
        self.loaded = True
        self._inventorySeen = None
        self._ledger.prune(self.clock.seconds())
        self._discovery.evict()
        self.sync()
        return self

    # Shared state: another appliance on the same database changed a host
    # (provisioner.store.notify).

    def onChange(self, callback):
        """
        Call C{callback(name, macs)} whenever host C{name} was reloaded
        because another appliance changed it (C{macs}: its MACs before and
        after), e.g. to drop cached menus.

        @return: a callable that removes it.
        """
        self._changeListeners.append(callback)
        return lambda: callback in self._changeListeners and \
            self._changeListeners.remove(callback)

    def refreshHost(self, name, record, events, tokens, origin=None):
        """
        Take host C{name} as the shared store holds it now.

        @param record: its L{HostRecord}, or L{None} (it has none).
        @param events: its newest events, oldest first.
        @param tokens: all its tokens.
        @param origin: the appliance that changed it (log line).
        """
        if not self.loaded:
            return
        old = self.hosts.get(name)
        if record is None and old is None:
            return  # not a host (a discovered machine's event)
        macs = set(old.macs if old is not None else ())
        if record is None:
            del self.hosts[name]
            self.events.pop(name, None)
            for mac, adopted in list(self._adoptedByMAC.items()):
                if adopted == name:
                    del self._adoptedByMAC[mac]
        else:
            self.hosts[name] = record
            self.events[name] = collections.deque(events, maxlen=self.eventsPerHost)
            self._indexAdopted(record)
            macs.update(record.macs)
            for mac in record.macs:
                if self.machines.pop(mac, None) is not None:  # adopted over there
                    self.events.pop(mac, None)
        ledger = self._ledger
        ledger._drop(list(ledger._byHost.get(name, ())))
        for token in tokens:
            ledger._remember(token)
        if record is not None and (old is None or (old.state, old.since) != (
                record.state, record.since)):
            self.log.info("hosts: {host} is {state} (changed on appliance {origin}: {why})",
                          host=name, state=record.state, origin=origin or "?",
                          why=record.reason)
            if events:
                self._publish(events[-1])
        for callback in list(self._changeListeners):
            try:
                callback(name, sorted(macs))
            except Exception:
                self.log.failure("hosts: a change listener failed for {host}", host=name)

    def refreshAll(self, snapshot, keep=()):
        """
        Take every host as the shared store holds it (after missed
        notifications), except those in C{keep} (written here since the
        snapshot was asked for: memory is newer).
        """
        if not self.loaded:
            return
        records = {h.name: h for h in snapshot.hosts}
        tokens = {}
        for token in snapshot.tokens:
            tokens.setdefault(token.host, []).append(token)
        for name in sorted(set(records) | set(self.hosts)):
            if name in keep:
                continue
            self.refreshHost(name, records.get(name), snapshot.events.get(name, []),
                             tokens.get(name, []))

    def _write(self, d, what):
        def failed(failure):
            self.log.failure("hosts: could not save {what} to {store}", failure, what=what,
                             store=getattr(self.store, "location", self.store))
            return failure
        return d.addErrback(failed)

    def _require(self):
        if not self.loaded or self.store is None:
            raise NotReady("the host lifecycle is not loaded yet")

    # History.

    def _history(self, key):
        history = self.events.get(key)
        if history is None:
            history = self.events[key] = collections.deque(maxlen=self.eventsPerHost)
        return history

    def _record(self, key, event):
        """
        Add C{event} to the history of C{key} (a host's name, or a
        discovered machine's MAC) and publish it.
        """
        self._history(key).append(event)
        self._publish(event)

    def _publish(self, event):
        record = self.hosts.get(event.key)
        isHost = record is not None
        mac = event.key if not isHost else (record.macs[0] if record.macs else None)
        self.eventSink.publish("host.state", host=event.key if isHost else None, mac=mac,
                               level="warn" if event.target == "failed" else "info",
                               source=event.source, target=event.target, why=event.why)

    def _transition(self, record, target, why, now=None):
        """
        Move a host to C{target}: check the table, record the event, log it,
        save both.

        @return: the store's Deferred.
        """
        now = self.clock.seconds() if now is None else now
        event = lifecycle.transition(record.name, record.state, target, why, now)
        record.state = target
        record.since = now
        record.reason = why
        self._record(record.name, event)
        self.log.info("hosts: {host} {source} -> {target}: {why}", host=record.name,
                      source=event.source, target=target, why=why)
        return self._write(self.store.saveHost(record, event, self.eventsPerHost),
                           "host %s" % (record.name,))

    def _newHost(self, name, macs, why, profile=None, adopted=False, now=None):
        now = self.clock.seconds() if now is None else now
        event = lifecycle.transition(name, None, READY, why, now)
        record = HostRecord(name=name, state=READY, since=now, reason=why, macs=list(macs),
                            profile=profile, adopted=adopted, created=now)
        self.hosts[name] = record
        self._indexAdopted(record)
        self._record(name, event)
        self.log.info("hosts: {host} is ready: {why}", host=name, why=why)
        return record, self._write(self.store.saveHost(record, event, self.eventsPerHost),
                                   "host %s" % (name,))

    def _indexAdopted(self, record):
        for mac, name in list(self._adoptedByMAC.items()):
            if name == record.name:
                del self._adoptedByMAC[mac]
        if record.adopted:
            for mac in record.macs:
                self._adoptedByMAC[mac] = record.name

    # The inventory.

    def sync(self):
        """
        Follow the inventory: every host of it with a profile has a record
        (new ones are C{ready}; a discovered machine the inventory now names
        becomes its host). Runs whenever the inventory object changed.
        """
        inventory = self.inventory()
        if not self.loaded or inventory is None or inventory is self._inventorySeen:
            return
        self._inventorySeen = inventory
        now = self.clock.seconds()
        for name in sorted(inventory.hosts):
            host = inventory.hosts[name]
            resolution = inventory.resolve(hostname=host.hostname)
            if resolution.host is not host or resolution.profile is None:
                continue
            record = self.hosts.get(name)
            if record is None:
                machine = None
                for mac in host.macs:
                    if mac in self.machines:
                        machine = mac
                        break
                why = "the inventory names it with profile %s" % (resolution.profile.name,)
                if machine is not None:
                    self._adopt(machine, name, host.macs, None, why, now)
                else:
                    self._newHost(name, host.macs, why, now=now)
                continue
            if record.adopted or list(record.macs) != list(host.macs):
                # The inventory now says what this host is (an adopted host
                # whose stanza was pasted, or new MACs).
                record.macs = list(host.macs)
                record.adopted = False
                record.profile = None
                self._indexAdopted(record)
                self._write(self.store.saveHost(record), "host %s" % (name,))
        for mac in list(self.machines):
            if inventory.lookup(mac=mac) is not None:
                self._discovery.forget(mac)

    # The renderer's questions.

    def adoption(self, mac):
        """
        @return: C{(name, profile)} when C{mac} is an adopted host the
            inventory does not name yet, else L{None}.
        """
        return self._bootDecisions.adoption(mac)

    def boot(self, facts, resolution, loader=None, server=None, peer=None, preview=False):
        """
        What this boot of a client gets from its lifecycle. A host
        (inventory or adopted) with a profile: the local disk when
        C{deployed}, else its deploy entry with a fresh token (recorded
        with the address and the deploy entry's paths, so that the fetch of
        that kernel marks it C{deploying}). A machine no inventory names is
        recorded as discovered.

        @param facts: the L{provisioner.menus.render.ClientFacts}.
        @param resolution: the inventory's
            L{provisioner.menus.inventory.Resolution} (adoption included).
        @param server: what templates see as C{server} (C{http_url},
            C{images_prefix}).
        @param peer: the address the menu is served to.
        @param preview: a preview (JSON API, tools): nothing is recorded and
            the token is L{provisioner.hosts.tokens.PREVIEW_TOKEN}.
        @return: a L{provisioner.hosts.boot.BootDecision}, or L{None} when
            the lifecycle has nothing to say (not loaded, no profile, not a
            host).
        """
        return self._bootDecisions.decide(facts, resolution, server, peer, preview)

    # Transfers.

    def fetched(self, protocol, ip, path, outcome="complete"):
        """
        A transfer ended (the TFTP stats callback, the HTTP fetch hook).
        A complete fetch of the deploy entry's kernel (or image) by the
        address its menu went to makes that host C{deploying}; a machine no
        inventory names is discovered (or seen again) with the file.
        """
        self._deploySignal.fetched(protocol, ip, path, outcome)

    # Requests (the JSON API).

    def isAdmin(self, address, local=None):
        """
        Whether C{address} may change lifecycles: it is in
        C{hosts.admin_networks}, or it is C{local}, the appliance's own
        address the connection reached (the command line run on the
        appliance when HTTP listens on a specific address).
        """
        return self._admin.isAdmin(address, local)

    def callback(self, name, token, state, message=None, peer=None):
        """
        The booted system reports: C{state} is C{deploying} (progress),
        C{deployed} or C{failed}. The token must be one minted for this
        host's boot, unused and unexpired; a final report uses up the
        host's tokens.

        @return: a Deferred firing with the host's record (as a C{dict})
            once saved.
        @raise Refused: a wrong, reused or expired token (logged; nothing
            changes).
        @raise BadRequest: an unknown C{state}.
        """
        return self._callbacks.callback(name, token, state, message, peer)

    def orders(self, name, token, peer=None, local=None):
        """
        The orders of host C{name}'s deploy environment, when its profile
        images it: C{provisioner.KEY=VALUE} lines (image, disk or disk
        rule, the imagecast control channel, the receiver id and secret).
        The token is checked as a callback's, and not used up; the host's
        secret is registered and its image's session wanted through
        L{imaging} (L{provisioner.hosts.orders}).

        @param local: the appliance's address the request reached (the
            control channel's address when it listens on every address).
        @return: a Deferred firing with the text once its event is saved.
        @raise Refused: a wrong, used-up or expired token, an unknown or
            deployed host (logged; the answer says no more).
        @raise NotFound: the host's profile does not image it.
        @raise NotReady: imagecast is not running or not listening.
        """
        return self._orders.orders(name, token, peer, local)

    def imagingStatus(self):
        """
        @return: C{{host name: what its imagecast receiver did}}
            (L{provisioner.interfaces.IImaging.receivers}), or C{{}} without
            imagecast.
        """
        service = self.imaging()
        return service.receivers() if service is not None else {}

    def redeploy(self, name, peer=None):
        """
        The host's next boot deploys again: C{deployed} (or C{failed},
        C{deploying}) -> C{ready}; its outstanding tokens are used up.

        @return: a Deferred firing with the host's record once saved.
        """
        return self._admin.redeploy(name, peer)

    def adopt(self, mac, name, profile, peer=None):
        """
        A discovered machine (or any MAC no inventory names) becomes the
        host C{name} with C{profile}, at once: its next boot is its
        profile's deploy entry. The inventory file is not touched: the
        answer carries the YAML stanza to paste into it.

        @return: a Deferred firing with C{{"host": ..., "yaml": ...}} once
            saved.
        """
        return self._admin.adopt(mac, name, profile, peer)

    def _adopt(self, mac, name, macs, profile, why, now):
        machine = self.machines.pop(mac, None)
        source = DISCOVERED if machine is not None else None
        event = lifecycle.transition(name, source, READY, why, now)
        history = self.events.pop(mac, None) or []
        self.events[name] = collections.deque(list(history) + [event], maxlen=self.eventsPerHost)
        for e in self.events[name]:
            e.key = name
        record = HostRecord(name=name, state=READY, since=now, reason=why, macs=list(macs),
                            profile=profile, adopted=profile is not None, created=now)
        self.hosts[name] = record
        self._indexAdopted(record)
        self._publish(event)
        self.log.info("hosts: {mac} is host {host} now, ready: {why}", mac=mac, host=name,
                      why=why)
        return self._write(self.store.adopt(mac, record, event, self.eventsPerHost),
                           "the adoption of %s" % (mac,))

    # Queries.

    def hostInfo(self, name):
        """
        A host's record as a C{dict}, with its last event.
        """
        self.sync()
        record = self.hosts.get(name)
        if record is None:
            raise NotFound("no host %r" % (name,))
        history = self.events.get(name)
        inventory = self.inventory()
        out = record.asDict()
        out["in_inventory"] = inventory is not None and name in inventory.hosts
        out["last_event"] = history[-1].asDict() if history else None
        return out

    def hostsList(self):
        """
        Every host with a lifecycle, by name.
        """
        self.sync()
        return [self.hostInfo(name) for name in sorted(self.hosts)]

    def machineInfo(self, mac):
        try:
            mac = normaliseMAC(mac)
        except (ValueError, TypeError):
            raise BadRequest("not a MAC address: %r" % (mac,))
        machine = self.machines.get(mac)
        if machine is None:
            raise NotFound("no discovered machine %s" % (mac,))
        out = machine.asDict()
        out["files"] = [dict(f) for f in machine.files]
        return out

    def machinesList(self):
        """
        The discovered machines, most recently seen first.
        """
        self.sync()
        return [self.machineInfo(mac) for mac in reversed(self.machines)]

    def eventsOf(self, key):
        """
        The history of a host (by name) or of a discovered machine (by
        MAC), oldest first.
        """
        self.sync()
        if key not in self.hosts:
            try:
                mac = normaliseMAC(key)
            except (ValueError, TypeError):
                mac = None
            if mac is None or (mac not in self.machines and mac not in self.events):
                raise NotFound("no host or discovered machine %r" % (key,))
            key = mac
        return [e.asDict() for e in self.events.get(key, ())]
