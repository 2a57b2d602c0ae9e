# -*- test-case-name: tests.test_menus_inventory -*-
"""
The C{inventory} section of the configuration: where the YAML inventory of
hosts is. The inventory itself has its own format and validation
(L{provisioner.menus.inventory}); the C{menus} service loads it.
"""

from provisioner.config import Key, Section

__all__ = ["SCHEMA"]

SCHEMA = Section("the YAML inventory of hosts, groups and profiles (loaded by the menus "
                 "service)", {
    "enabled": Key(False, "bool", "load the inventory (needs menus.enabled); without it every "
                   "client gets the default menus"),
    "file": Key("etc/inventory.yaml", "path", "the inventory file; reloaded when it changes "
                "and on SIGHUP. An invalid edit is logged and the last good inventory kept"),
    "poll_interval": Key(2.0, "float", "seconds between checks of the file when inotify is "
                         "not available", minimum=0.05, maximum=3600),
})
