# -*- test-case-name: tests.test_pg_config -*-
"""
The C{store} section of the configuration: where what must outlive the
process (the DHCP leases of full mode, the host lifecycle) is kept, and,
with PostgreSQL, how several appliances share it. See
C{docs/multi-appliance.md}.
"""

from provisioner.config import Key, Section

__all__ = ["SCHEMA", "CROSS_CHECKS", "checkDSN"]

SCHEMA = Section("where leases and host lifecycles are kept: the embedded SQLite files (one "
                 "appliance), or one PostgreSQL database that several appliances share", {
    "backend": Key("sqlite", "str", "sqlite: dhcp.lease_file and hosts.state_directory, one "
                   "appliance; postgresql: the database of store.dsn, shared by every "
                   "appliance that names it (full DHCP served together)",
                   choices=["sqlite", "postgresql"]),
    "dsn": Key(None, "str", "postgresql: the libpq connection string or URL "
               "(host=/run/postgresql dbname=provisioner user=provisioner, or "
               "postgresql://user@host/db); a password is better kept in ~/.pgpass or "
               "PGPASSWORD than here", nullable=True),
    "appliance_id": Key(None, "str", "postgresql: this appliance's name in the heartbeat "
                        "table, unique among the appliances sharing the database; null: the "
                        "host name", nullable=True),
    "failover_after": Key(3.0, "float", "postgresql: seconds without a heartbeat after which "
                          "an appliance counts as gone and the others answer its clients",
                          minimum=1.0, maximum=300.0),
    "heartbeat_interval": Key(1.0, "float", "postgresql: seconds between two heartbeats "
                              "(each also reads which appliances are live); keep it well "
                              "under failover_after", minimum=0.1, maximum=60.0),
    "connect_timeout": Key(2, "int", "postgresql: seconds a connection attempt may take "
                           "before the database counts as unreachable", minimum=1,
                           maximum=60),
    "migrate": Key(True, "bool", "postgresql: bring the database schema up to date at "
                   "start (false: refuse to start on an old schema; run provisioner db "
                   "upgrade)"),
})


def checkDSN(config):
    """
    A whole-configuration check (L{CROSS_CHECKS}): the PostgreSQL backend
    needs C{store.dsn}, and the appliance id cannot be empty.
    """
    store = config["store"]
    if store["backend"] == "postgresql" and not store["dsn"]:
        return ("store.dsn", "the postgresql backend needs a connection string "
                "(e.g. 'host=/run/postgresql dbname=provisioner')")
    if store["appliance_id"] is not None and not store["appliance_id"].strip():
        return ("store.appliance_id", "must not be empty (null: the host name)")
    return None


CROSS_CHECKS = (checkDSN,)
