# -*- test-case-name: tests.test_pg_shared -*-
"""
Host state shared live between the appliances of one PostgreSQL database
(C{store.backend: postgresql}): what one appliance changes (a callback,
C{hosts redeploy}, an adoption, a token minted for a boot) the others see
at once, so that a host's next boot is served right whichever appliance
answers it.

Every write of L{provisioner.store.postgres.PostgresHostStore} about a host
is announced on the channel L{provisioner.store.postgres.CHANNEL} in its
transaction (PostgreSQL delivers it at commit). Each appliance holds a
L{Listener}: one connection of its own, in a thread of its own, that
C{LISTEN}s and hands every notification to the reactor; it reconnects by
itself when the connection breaks. L{SharedHosts} acts on them: on a
notification from another appliance, the host book reloads that host
(record, newest events, tokens) and whoever follows the book (the menus'
cache) is told; on every (re)connection, it reloads everything, since
notifications sent while it was not listening are lost.

The listener's connection is also how the appliance notices the database
going away when nothing else asks it (L{Listener.downSince}, reported by
C{/healthz}).
"""

import json
import threading

from twisted.internet import defer
from twisted.logger import Logger

from provisioner.store.interfaces import StoreUnavailable
from provisioner.store.postgres import CHANNEL, _oneLine, _psycopg, connect, redact

__all__ = ["Listener", "SharedHosts"]


class Listener:
    """
    A dedicated connection C{LISTEN}ing on some channels, in its own
    thread; reconnecting after a pause (doubling from C{retry[0]} up to
    C{retry[1]} seconds) whenever it breaks or cannot connect.

    Callbacks run in the reactor thread: C{onNotify(channel, payload)} for
    each notification, C{onConnected()} each time it listens again (the
    first time included).

    @ivar connected: whether it is listening now.
    @ivar downSince: when (C{reactor.seconds()}) it lost the database, or
        L{None} while it listens (and before its first attempt).
    @ivar connections: how many times it started listening.
    """

    log = Logger()

    #: how long one wait for notifications lasts (how soon C{stop} is seen)
    POLL = 0.5

    def __init__(self, dsn, reactor, channels, onNotify, onConnected=lambda: None,
                 timeout=2, retry=(0.25, 2.0)):
        self.dsn = dsn
        self.reactor = reactor
        self.channels = list(channels)
        self.onNotify = onNotify
        self.onConnected = onConnected
        self.timeout = timeout
        self.retry = retry
        self.connected = False
        self.downSince = None
        self.connections = 0
        self._stopping = threading.Event()
        self._thread = None
        self._stopped = None

    def start(self):
        self._thread = threading.Thread(target=self._run, name="store-listener", daemon=True)
        self._thread.start()

    def stop(self):
        """
        Stop listening and close the connection.

        @return: a Deferred firing once the thread is over.
        """
        if self._stopped is not None:
            return self._stopped
        self._stopping.set()
        self._stopped = defer.Deferred()
        if self._thread is None:
            self._stopped.callback(None)
            return self._stopped
        thread, done = self._thread, self._stopped

        def join():
            thread.join()
            self.reactor.callFromThread(done.callback, None)
        threading.Thread(target=join, daemon=True).start()
        return self._stopped

    def _run(self):
        psycopg = _psycopg()
        delay = self.retry[0]
        while not self._stopping.is_set():
            connection = None
            try:
                connection = connect(self.dsn, self.timeout, "provisioner listener")
                for channel in self.channels:
                    connection.execute("LISTEN %s" % (channel,))
                self.reactor.callFromThread(self._connected)
                delay = self.retry[0]
                while not self._stopping.is_set():
                    for n in connection.notifies(timeout=self.POLL):
                        self.reactor.callFromThread(self._notified, n.channel, n.payload)
            except (StoreUnavailable, psycopg.Error) as e:
                if not self._stopping.is_set():
                    self.reactor.callFromThread(self._lost, _oneLine(e))
            finally:
                if connection is not None:
                    try:
                        connection.close()
                    except Exception:
                        pass
            self._stopping.wait(delay)
            delay = min(delay * 2, self.retry[1])

    def _connected(self):
        if self._stopping.is_set():
            return
        self.connected = True
        self.connections += 1
        if self.downSince is not None:
            self.log.info("store listener: listening on {dsn} again after {seconds:.1f}s",
                          dsn=redact(self.dsn), seconds=self.reactor.seconds() - self.downSince)
        self.downSince = None
        try:
            self.onConnected()
        except Exception:
            self.log.failure("store listener: the connection callback failed")

    def _notified(self, channel, payload):
        if self._stopping.is_set():
            return
        try:
            self.onNotify(channel, payload)
        except Exception:
            self.log.failure("store listener: a notification on {channel} failed",
                             channel=channel)

    def _lost(self, reason):
        self.connected = False
        if self.downSince is None:
            self.downSince = self.reactor.seconds()
            self.log.warn("store listener: lost {dsn} ({reason}); host changes made by the "
                          "other appliances are not seen until it returns",
                          dsn=redact(self.dsn), reason=reason)


class SharedHosts:
    """
    Keeps a L{provisioner.hosts.book.HostBook} in step with the other
    appliances through a L{Listener} (see the module docstring).

    @ivar book: the host book.
    @ivar store: its L{provisioner.store.postgres.PostgresHostStore}.
    @ivar listener: the L{Listener}.
    @ivar reloads: how many hosts were reloaded on a notification (tests,
        metrics); C{fullReloads}: how many times everything was.
    """

    log = Logger()

    def __init__(self, book, store, dsn, reactor, timeout=2, listener=None):
        self.book = book
        self.store = store
        self.reactor = reactor
        self.listener = listener or Listener(dsn, reactor, [CHANNEL], self.notified,
                                             self.connected, timeout)
        self.reloads = 0
        self.fullReloads = 0
        self._reloadWhenLoaded = False

    @property
    def downSince(self):
        """
        When the database was lost (L{Listener.downSince}), or L{None}.
        """
        return self.listener.downSince

    def start(self):
        self.listener.start()

    def stop(self):
        return self.listener.stop()

    def notified(self, channel, payload):
        """
        A host changed somewhere: reload it, unless this appliance made the
        change.
        """
        try:
            message = json.loads(payload)
            origin, key = message["o"], message["h"]
        except (ValueError, KeyError, TypeError):
            self.log.warn("store listener: a notification not understood: {payload!r}",
                          payload=payload[:200])
            return
        if origin == self.store.origin or not self.book.loaded:
            return
        d = self.store.reloadHost(key, self.book.eventsPerHost)

        def reloaded(state):
            if state is None:
                return  # written here since: memory is newer
            self.reloads += 1
            self.book.refreshHost(key, *state, origin=origin.split("/", 1)[0])
        d.addCallback(reloaded)
        d.addErrback(self._failed, key)

    def connected(self):
        """
        Listening (again): what was announced meanwhile is lost, so reload
        everything (once the book is loaded).
        """
        if not self.book.loaded:
            self._reloadWhenLoaded = True
            return
        self.reloadAll()

    def loaded(self):
        """
        The book took its first snapshot: if the listener started after
        that snapshot was asked for, read everything again.
        """
        if self._reloadWhenLoaded:
            self._reloadWhenLoaded = False
            self.reloadAll()

    def reloadAll(self):
        d = self.store.reloadAll()

        def reloaded(result):
            snapshot, written = result
            self.fullReloads += 1
            self.book.refreshAll(snapshot, keep=written)
        return d.addCallback(reloaded).addErrback(self._failed, "every host")

    def _failed(self, failure, what):
        if failure.check(StoreUnavailable):
            self.log.warn("hosts: cannot reload {what} from the shared store: {error}",
                          what=what, error=str(failure.value))
        else:
            self.log.failure("hosts: reloading {what} failed", failure, what=what)
