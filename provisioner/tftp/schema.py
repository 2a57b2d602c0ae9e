# -*- test-case-name: tests.test_config -*-
"""
The C{tftp} section of the configuration.
"""

from provisioner.config import Key, Section, reserved

SCHEMA = Section("the TFTP server (UDP)", {
    "enabled": Key(True, "bool", "run the TFTP server"),
    "address": Key("127.0.0.1", "ip", "address to listen on; 0.0.0.0 or :: for all "
                   "(the embedded default is loopback only)"),
    "port": Key(6969, "port", "UDP port to listen on (69 is the standard one and needs root "
                "or CAP_NET_BIND_SERVICE)"),
    "interface": Key(None, "str", "bind to this network interface only (SO_BINDTODEVICE); "
                     "also where the MTU for the blksize clamp is read", nullable=True),
    "root": Key("tftpboot", "path", "directory served; created if missing. Requests can never "
                "leave it"),
    "blksize_max": Key(65464, "int", "largest blksize granted (RFC 2348)", minimum=8, maximum=65464),
    "mtu": Key(None, "int", "MTU used to clamp blksize (minus 32 for IPv4, 52 for IPv6); null "
               "reads it from the interface; 0 disables the clamp", nullable=True,
               minimum=0, maximum=65535),
    "windowsize_max": Key(64, "int", "largest windowsize granted (RFC 7440)", minimum=1, maximum=65535),
    "timeout": Key(1.0, "float", "first retransmission timeout in seconds when the client "
                   "did not negotiate one", minimum=0.05, maximum=255),
    "retries": Key(6, "int", "retransmissions (with exponential backoff) before a "
                   "transfer is given up", minimum=1, maximum=50),
    "max_sessions": Key(2000, "int", "transfers in flight at once, all clients", minimum=1),
    "max_sessions_per_client": Key(64, "int", "transfers in flight at once from one address",
                                   minimum=1),
    "write": Section("uploads (WRQ)", {
        "enabled": Key(False, "bool", "accept WRQ uploads"),
        "directory": Key("tftpupload", "path", "where uploads land (never the served root); "
                         "existing files are never overwritten"),
    }),
    "adaptive": reserved("adaptive window extension and msftwindow"),
    "injector": reserved("bootstrap-program injector"),
    "multicast": reserved("RFC 2090 multicast TFTP"),
})
