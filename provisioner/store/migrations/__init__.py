# -*- test-case-name: tests.test_pg_store -*-
"""
The PostgreSQL schema, as numbered migrations applied in order by
L{provisioner.store.postgres.upgrade} (C{provisioner db upgrade}, and at
start unless C{store.migrate} is false). A migration, once released, is
never edited: a change of schema is a new module here, added to
L{MIGRATIONS}.
"""

from provisioner.store.migrations import m0001_initial

__all__ = ["MIGRATIONS"]

#: C{[(version, description, [SQL statement])]}, oldest first
MIGRATIONS = [
    (1, m0001_initial.DESCRIPTION, m0001_initial.STATEMENTS),
]
