# -*- test-case-name: tests.test_store_committer -*-
"""
Group commit in one thread, for SQLite stores that must not block the
reactor (the DHCP leases, the host store).

One thread owns one connection. Callers C{submit} work from the reactor
thread and get a Deferred; the thread takes everything queued at that
moment, applies it in one transaction (one fsync for the whole group), and
fires each caller's Deferred back on the reactor thread. A store says how a
batch is applied by the C{apply} callable it passes: it gets the connection
and the queued items and returns one C{(ok, result)} per item, or raises,
which fails the whole batch.
"""

import queue
import sqlite3
import threading

from twisted.internet import defer

__all__ = ["GroupCommitter"]


class GroupCommitter:
    """
    @ivar batches: how many transactions were committed (tests, benchmarks).
    """

    _STOP = object()

    def __init__(self, connect, apply, reactor, name):
        """
        @param connect: a callable returning the thread's connection; it
            runs in the thread, and what it raises is raised here.
        @param apply: C{apply(connection, items)} returning one
            C{(ok, result)} per item (in the thread).
        @param reactor: where the Deferreds fire (C{callFromThread}).
        @param name: the thread's name.
        """
        self._connect = connect
        self._apply = apply
        self._reactor = reactor
        self._queue = queue.Queue()
        self._closed = None
        self._ready = threading.Event()
        self._error = None
        self.batches = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def submit(self, item):
        """
        Queue C{item} for the next batch.

        @return: a Deferred firing with its result, or failing with its error.
        """
        d = defer.Deferred()
        self._queue.put((item, d))
        return d

    def close(self):
        """
        Finish everything queued, then stop the thread.

        @return: a Deferred that fires once the thread is done.
        """
        if self._closed is None:
            self._closed = defer.Deferred()
            self._queue.put(self._STOP)
        return self._closed

    def _take(self):
        """
        Block for the next item, then take whatever else is queued.

        @return: C{(work, stop)}.
        """
        items = [self._queue.get()]
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        work = [item for item in items if item is not self._STOP]
        return work, len(work) != len(items)

    def _run(self):
        try:
            connection = self._connect()
        except Exception as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        stop = False
        while not stop:
            work, stop = self._take()
            if not work:
                continue
            try:
                results = self._apply(connection, [item for item, _ in work])
            except Exception as e:  # disk full and the like: the whole batch fails
                results = [(False, e)] * len(work)
            self.batches += 1
            self._reactor.callFromThread(_fire, [d for _, d in work], results)
        try:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        connection.close()
        self._reactor.callFromThread(self._closed.callback, None)


def _fire(deferreds, results):
    for d, (ok, result) in zip(deferreds, results):
        if ok:
            d.callback(result)
        else:
            d.errback(result)
