"""
Tests for L{provisioner.store.committer}: group commit in one thread.
"""

import sqlite3

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from provisioner.store.committer import GroupCommitter


def _connect(path):
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER)")
    return connection


def _apply(connection, items):
    """
    Insert each C{(key, value)}; a value of C{None} is refused on its own,
    the key C{"boom"} fails the whole batch.
    """
    connection.execute("BEGIN")
    results = []
    try:
        for key, value in items:
            if key == "boom":
                raise OSError("disk full")
            if value is None:
                results.append((False, ValueError(key)))
                continue
            connection.execute("INSERT OR REPLACE INTO t VALUES (?, ?)", (key, value))
            results.append((True, key))
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return results


class GroupCommitterTests(TestCase):
    """
    L{GroupCommitter} on the real reactor and a file in the test's directory.
    """

    def setUp(self):
        self.path = self.mktemp()
        self.committer = GroupCommitter(lambda: _connect(self.path), _apply, reactor, "test")

    def rows(self):
        connection = sqlite3.connect(self.path)
        try:
            return dict(connection.execute("SELECT k, v FROM t"))
        finally:
            connection.close()

    @defer.inlineCallbacks
    def test_groups(self):
        """
        If many items are submitted at once, they are committed in fewer
        transactions than items, each Deferred fires with its own result,
        and everything is on disk.
        """
        ds = [self.committer.submit(("k%d" % i, i)) for i in range(200)]
        results = yield defer.gatherResults(ds)
        yield self.committer.close()
        self.assertEqual(results, ["k%d" % i for i in range(200)])
        self.assertLess(self.committer.batches, 200)
        self.assertEqual(len(self.rows()), 200)

    @defer.inlineCallbacks
    def test_itemRefused(self):
        """
        If C{apply} refuses one item, only its Deferred fails.
        """
        good = self.committer.submit(("a", 1))
        bad = self.committer.submit(("b", None))
        self.assertEqual((yield good), "a")
        yield self.assertFailure(bad, ValueError)
        yield self.committer.close()
        self.assertEqual(self.rows(), {"a": 1})

    @defer.inlineCallbacks
    def test_batchFails(self):
        """
        If C{apply} raises, every item of the batch fails with that error
        and nothing of it is on disk; the thread goes on with later work.
        """
        yield self.committer.submit(("before", 1))
        d = self.committer.submit(("boom", 2))
        yield self.assertFailure(d, OSError)
        self.assertEqual((yield self.committer.submit(("after", 3))), "after")
        yield self.committer.close()
        self.assertEqual(self.rows(), {"before": 1, "after": 3})

    @defer.inlineCallbacks
    def test_closeFinishesQueued(self):
        """
        If C{close} is called with work queued, that work is committed
        first, and a second C{close} gives the same Deferred.
        """
        d = self.committer.submit(("last", 9))
        closed = self.committer.close()
        self.assertIs(self.committer.close(), closed)
        self.assertEqual((yield d), "last")
        yield closed
        self.assertEqual(self.rows(), {"last": 9})

    def test_connectError(self):
        """
        If the connection cannot be made, the constructor raises its error.
        """
        def fail():
            raise sqlite3.OperationalError("unable to open database file")
        self.assertRaises(sqlite3.OperationalError, GroupCommitter, fail, _apply, reactor, "t")
