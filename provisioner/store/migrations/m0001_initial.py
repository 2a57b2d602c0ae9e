# -*- test-case-name: tests.test_pg_store -*-
"""
Migration 1: the host lifecycle (hosts, events, machines, tokens, as the
SQLite store keeps them), the DHCP leases keyed by address, and one
heartbeat row per appliance.
"""

__all__ = ["DESCRIPTION", "STATEMENTS"]

DESCRIPTION = "host lifecycle, DHCP leases by address, appliance heartbeats"

STATEMENTS = [
    """CREATE TABLE hosts (
        name TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        since DOUBLE PRECISION NOT NULL,
        reason TEXT,
        macs TEXT NOT NULL,
        profile TEXT,
        adopted BOOLEAN NOT NULL,
        created DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE events (
        id BIGSERIAL PRIMARY KEY,
        key TEXT NOT NULL,
        time DOUBLE PRECISION NOT NULL,
        source TEXT,
        target TEXT NOT NULL,
        why TEXT NOT NULL)""",
    "CREATE INDEX events_by_key ON events (key, id)",
    """CREATE TABLE machines (
        mac TEXT PRIMARY KEY,
        arch INTEGER,
        vendor_class TEXT,
        uuid TEXT,
        ip TEXT,
        first_seen DOUBLE PRECISION NOT NULL,
        last_seen DOUBLE PRECISION NOT NULL,
        files TEXT NOT NULL)""",
    """CREATE TABLE tokens (
        digest TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        minted DOUBLE PRECISION NOT NULL,
        expires DOUBLE PRECISION NOT NULL,
        used DOUBLE PRECISION,
        ip TEXT,
        paths TEXT NOT NULL)""",
    # One row per address: the primary key is what keeps an address from
    # two clients, whichever appliance writes. An offer is a row too (state
    # offered, a short expiry), written before the OFFER is sent.
    "CREATE SEQUENCE lease_changes",
    """CREATE TABLE leases (
        ip INET PRIMARY KEY,
        mac TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('offered', 'bound', 'declined')),
        expires DOUBLE PRECISION NOT NULL,
        weak BOOLEAN NOT NULL DEFAULT FALSE,
        hostname TEXT,
        client_id TEXT,
        appliance TEXT NOT NULL,
        change BIGINT NOT NULL DEFAULT nextval('lease_changes'))""",
    "CREATE INDEX leases_by_mac ON leases (mac)",
    "CREATE INDEX leases_by_change ON leases (change)",
    """CREATE TABLE appliances (
        id TEXT PRIMARY KEY,
        addresses TEXT NOT NULL DEFAULT '',
        started DOUBLE PRECISION NOT NULL,
        last_seen DOUBLE PRECISION NOT NULL)""",
]
