# -*- test-case-name: tests.test_hosts -*-
"""
The C{hosts} section of the configuration: the lifecycle of every host,
boot once, callbacks, discovery. See C{docs/hosts.md}.
"""

from provisioner.config import Key, Section

__all__ = ["SCHEMA"]

SCHEMA = Section("the lifecycle of every host (discovered, ready, deploying, deployed, "
                 "failed), boot once, callbacks from the booted system, discovery", {
    "enabled": Key(False, "bool", "track every host's lifecycle: a deployed host boots its "
                   "local disk, the booted system calls back, unknown MACs are discovered"),
    "store": Key("sqlite", "str", "where the lifecycle is kept: sqlite (a file in "
                 "state_directory)", choices=["sqlite"]),
    "state_directory": Key("state", "path", "directory of the lifecycle database "
                           "(hosts.sqlite); states and events survive restarts"),
    "sync": Key("normal", "str", "SQLite durability: normal (a commit survives a crash of "
                "the process) or full (also a power cut: fsync per group commit)",
                choices=["normal", "full"]),
    "events_per_host": Key(100, "int", "events kept per host (and per discovered machine), "
                           "oldest dropped first", minimum=1, maximum=100000),
    "token_ttl": Key(21600, "int", "seconds a per-boot callback token stays valid after the "
                     "deploy menu carrying it was served", minimum=60, maximum=31 * 86400),
    "max_tokens": Key(10000, "int", "tokens kept at most (live and recently used), oldest "
                      "dropped first", minimum=16, maximum=10000000),
    "max_discovered": Key(10000, "int", "discovered machines kept at most, least recently "
                          "seen dropped first", minimum=1, maximum=10000000),
    "files_per_machine": Key(32, "int", "boot files remembered per discovered machine (the "
                             "newest)", minimum=1, maximum=1000),
    "admin_networks": Key(["127.0.0.0/8", "::1/128"], "list", "networks allowed to change "
                          "lifecycles over the JSON API (redeploy, adopt), besides the "
                          "appliance's own address; callbacks are allowed from anywhere with "
                          "their token",
                          items=Key("127.0.0.0/8", "ipnet", "a network")),
})
