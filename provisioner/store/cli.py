# -*- test-case-name: tests.test_pg_store -*-
"""
C{provisioner db}: the shared PostgreSQL store's schema.

    provisioner db upgrade --config FILE   apply the migrations it lacks
    provisioner db status --config FILE    its version and this provisioner's

The appliance also migrates at start (unless C{store.migrate} is false);
the schema is never made by hand. With C{store.backend: sqlite} there is
nothing to do here: the SQLite files are made and kept by the appliance.
"""

import sys

from provisioner.config import ConfigError, loadConfig
from provisioner.store import postgres
from provisioner.store.interfaces import StoreUnavailable

__all__ = ["register"]


def _section(args):
    config = loadConfig(args.config)
    store = config["store"]
    if store["backend"] != "postgresql":
        raise ConfigError("store.backend", "is %s: only the postgresql backend has a schema "
                          "to migrate" % (store["backend"],))
    return store


def _run(args, action):
    try:
        return action(_section(args))
    except ConfigError as e:
        print("provisioner db: %s" % (e,), file=sys.stderr)
        return 2
    except (StoreUnavailable, postgres.SchemaError) as e:
        print("provisioner db: %s" % (e,), file=sys.stderr)
        return 1


def _upgrade(args):
    def action(store):
        applied = postgres.upgrade(store["dsn"], store["connect_timeout"])
        where = postgres.redact(store["dsn"])
        if applied:
            print("%s: migrated to version %d (applied %s)" % (
                where, applied[-1], ", ".join(str(v) for v in applied)))
        else:
            print("%s: up to date (version %d)" % (where, postgres.SCHEMA_VERSION))
        return 0
    return _run(args, action)


def _status(args):
    def action(store):
        current = postgres.schemaVersion(store["dsn"], store["connect_timeout"])
        where = postgres.redact(store["dsn"])
        if current == postgres.SCHEMA_VERSION:
            print("%s: up to date (version %d)" % (where, current))
            return 0
        print("%s: schema version %d, this provisioner's is %d%s" % (
            where, current, postgres.SCHEMA_VERSION,
            ": run provisioner db upgrade" if current < postgres.SCHEMA_VERSION else ""))
        return 1
    return _run(args, action)


def register(subparsers):
    """
    Add C{db upgrade} and C{db status}.
    """
    db = subparsers.add_parser("db", help="the shared PostgreSQL store's schema "
                               "(store.backend: postgresql)")
    sub = db.add_subparsers(dest="dbCommand", metavar="ACTION")
    sub.required = True
    for name, func, text in (("upgrade", _upgrade, "apply the schema migrations the "
                              "database lacks"),
                             ("status", _status, "the database's schema version and this "
                              "provisioner's (status 1 when they differ)")):
        parser = sub.add_parser(name, help=text)
        parser.add_argument("--config", required=True, help="the appliance's configuration "
                            "(its store section)")
        parser.set_defaults(func=func)
