# -*- test-case-name: tests.test_web -*-
"""
The C{http} section of the configuration: images, menus and a read-only JSON
API over HTTP.
"""

from provisioner.config import Key, Section

__all__ = ["SCHEMA"]

SCHEMA = Section("the HTTP service: images, rendered menus, the JSON API", {
    "enabled": Key(False, "bool", "run the HTTP service (off by default)"),
    "address": Key("127.0.0.1", "ip", "address to listen on; 0.0.0.0 or :: for all (the "
                   "embedded default is loopback only)"),
    "port": Key(8080, "port", "TCP port to listen on (80 needs root or "
                "CAP_NET_BIND_SERVICE); 0 picks a free one"),
    "root": Key(None, "path", "an extra directory served as-is after the images and menus "
                "(e.g. the TFTP root, so iPXE can fetch NBPs over HTTP); null serves none",
                nullable=True),
    "api": Key(True, "bool", "serve the JSON API under /api/v1/ (read-only but for the host lifecycle's callbacks and admin actions)"),
    "api_vars": Key([], "list", "inventory variables the JSON API may show (by name); every "
                    "other variable is left out of /api/v1/inventory and /api/v1/hosts, "
                    "which anyone who reaches the port can read",
                    items=Key("", "str", "a variable name")),
    "chunk_size": Key(262144, "int", "bytes read from a file per write to the socket",
                      minimum=4096, maximum=16777216),
    "access_log": Key(False, "bool", "log every request at info (otherwise debug)"),
    "metrics": Key(True, "bool", "serve Prometheus metrics at /metrics (docs/metrics.md); "
                   "anyone who reaches the port can read them"),
    "operators_file": Key(None, "path", "the operators who may log in to the dashboard and "
                          "act (NAME SCRYPT-HASH lines, made with provisioner operator add "
                          "NAME; docs/console.md); null: nobody can log in",
                          nullable=True),
    "session_lifetime": Key(28800, "int", "seconds an operator's login lasts (kept in "
                            "memory: a restart logs everyone out)", minimum=60,
                            maximum=604800),
    "tls_certificate": Key(None, "path", "PEM certificate (chain) of an HTTPS listener on "
                           "http.tls_port beside the plain one; when set, logins and "
                           "actions are accepted over HTTPS only", nullable=True),
    "tls_key": Key(None, "path", "PEM private key of http.tls_certificate (null: in the "
                   "certificate's file)", nullable=True),
    "tls_port": Key(8443, "port", "TCP port of the HTTPS listener (with "
                    "http.tls_certificate); 0 picks a free one"),
})
