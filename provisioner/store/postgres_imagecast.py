# -*- test-case-name: tests.test_pg_shared -*-
"""
Which appliance sends an imagecast session, when several share one
PostgreSQL database (C{store.backend: postgresql}): L{SessionLocks}.

The appliance that starts a session of an image first takes a session
advisory lock on that image's name (C{pg_try_advisory_lock}) on a
connection of its own, held while the session runs and released when it
ends. Another appliance asked to send the same image (an operator's
C{imagecast send}, a receiver's C{auto_start}, an imaging profile's
orders) fails to take the lock and sends nothing; it learns where the
session runs from the lock itself: the holding connection's
C{application_name} is C{provisioner imagecast HOST:PORT}, that
appliance's control channel (C{pg_locks} joined with
C{pg_stat_activity}). No table is written: a lock dies with the
connection that holds it (an appliance that crashed, or lost the
database, holds nothing), so nothing stale is left to clean.
"""

import zlib

from provisioner.store.postgres import Database

__all__ = ["SessionLocks", "lockKey", "LOCK_CLASS"]

#: the first key of every imagecast session lock ("imgc")
LOCK_CLASS = 0x696d6763

_PREFIX = "provisioner imagecast "


def lockKey(image):
    """
    The second key of C{image}'s lock: CRC-32 of its name, as PostgreSQL's
    signed C{int4}.
    """
    value = zlib.crc32(image.encode("utf-8"))
    return value - (1 << 32) if value >= (1 << 31) else value


def _tryLock(c, key):
    c.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, key))
    return bool(c.fetchone()[0])


def _unlock(c, key):
    c.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_CLASS, key))
    return bool(c.fetchone()[0])


def _holder(c, key):
    """
    @return: C{(application_name, held by this connection)} of the lock's
        holder, or L{None} when nobody holds it.
    """
    c.execute("SELECT a.application_name, l.pid = pg_backend_pid() FROM pg_locks l "
              "JOIN pg_stat_activity a ON a.pid = l.pid "
              "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
              "AND l.database = (SELECT oid FROM pg_database WHERE datname = "
              "current_database()) AND l.classid = %s AND l.objid = %s",
              (LOCK_CLASS, key & 0xffffffff))
    row = c.fetchone()
    return None if row is None else (row[0] or "", bool(row[1]))


def _address(applicationName):
    if applicationName.startswith(_PREFIX):
        return applicationName[len(_PREFIX):]
    return ""


class SessionLocks:
    """
    This appliance's imagecast session locks, on one connection of their
    own (a L{Database}: calls in order, off the reactor).

    @ivar address: C{HOST:PORT} of this appliance's control channel, as the
        others are told (empty: not known).
    @ivar held: the images whose lock this appliance holds.
    """

    def __init__(self, dsn, reactor, address, timeout=2, database=None):
        self.address = address or ""
        self.database = database or Database(dsn, reactor, "imagecast-locks", timeout,
                                             application=(_PREFIX + self.address)[:63])
        self.held = set()

    def acquire(self, image):
        """
        Take the lock of C{image}'s session.

        @return: a Deferred firing with L{None} when this appliance holds
            it now, else with C{HOST:PORT} of the appliance that does
            (C{""} when it cannot be told); it fails with
            L{provisioner.store.interfaces.StoreUnavailable} without the
            database.
        """
        key = lockKey(image)

        def take(c):
            if _tryLock(c, key):
                return None
            holder = _holder(c, key)
            if holder is None:
                # released between the two statements: try once more
                return None if _tryLock(c, key) else ""
            return _address(holder[0])

        def taken(holder):
            if holder is None:
                self.held.add(image)
            return holder
        return self.database.run(take).addCallback(taken)

    def release(self, image):
        """
        Release C{image}'s lock (its session ended).

        @return: a Deferred firing with whether it was held.
        """
        self.held.discard(image)
        return self.database.run(_unlock, lockKey(image))

    def holder(self, image):
        """
        Where C{image}'s session runs.

        @return: a Deferred firing with L{None} when no other appliance
            holds its lock (nobody does, or this one), else with C{HOST:PORT}
            of the one that does (C{""} when it cannot be told).
        """
        key = lockKey(image)

        def read(c):
            holder = _holder(c, key)
            if holder is None or holder[1]:
                return None
            return _address(holder[0])
        return self.database.run(read)

    def close(self):
        """
        Close the connection: every lock it held is released.
        """
        self.held.clear()
        return self.database.close()
