# -*- test-case-name: tests.test_config -*-
"""
The C{tftp} section of the configuration.
"""

import os

from provisioner.config import Key, Section
from provisioner.tftp.adaptive import SCHEMA as ADAPTIVE_SCHEMA
from provisioner.tftp.bootprograms import BOOT_PROGRAMS
from provisioner.tftp.inject import SCHEMA as INJECTOR_SCHEMA

# Directories some service serves (or renders from): the upload directory
# must be none of them, inside none of them and contain none of them, or a
# client could upload what other machines are then served. Checked whatever
# each service's 'enabled' says: a root is served once its service is on.
SERVED_DIRECTORIES = ("tftp.root", "http.root", "images.directory", "imagecast.root",
                      "menus.templates")


def _lookup(config, dotted):
    value = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def checkUploadDirectory(config):
    """
    A whole-configuration check (L{CROSS_CHECKS}): with uploads enabled,
    C{tftp.write.directory} is not equal to, inside, or above any of
    L{SERVED_DIRECTORIES}.

    @return: L{None}, or C{(key, message)} naming both keys.
    """
    write = config["tftp"]["write"]
    if not write["enabled"]:
        return None
    upload = os.path.realpath(write["directory"])
    for key in SERVED_DIRECTORIES:
        served = _lookup(config, key)
        if not served:
            continue
        served = os.path.realpath(served)
        if upload == served:
            how = "must not be %s (both are %s)" % (key, upload)
        elif upload.startswith(served.rstrip(os.sep) + os.sep):
            how = "must not be inside %s (%s is below %s)" % (key, upload, served)
        elif served.startswith(upload.rstrip(os.sep) + os.sep):
            how = "must not contain %s (%s is below %s)" % (key, served, upload)
        else:
            continue
        return ("tftp.write.directory", how + ": clients could upload files that are "
                "served to other machines")
    return None


CROSS_CHECKS = (checkUploadDirectory,)

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
    "boot_programs": Key("/usr/lib/ipxe", "path", "directory whose iPXE boot programs "
                         "(%s; Debian's ipxe package puts them in /usr/lib/ipxe) are served "
                         "over TFTP by those names, nothing else of it; a file of the same "
                         "name in root wins. null or empty: none" % (", ".join(BOOT_PROGRAMS),),
                         nullable=True),
    "blksize_max": Key(65464, "int", "largest blksize granted (RFC 2348)", minimum=8, maximum=65464),
    "mtu": Key(None, "int", "MTU used to clamp blksize (minus 32 for IPv4, 52 for IPv6); null "
               "reads it from the interface; 0 disables the clamp", nullable=True,
               minimum=0, maximum=65535),
    "windowsize_max": Key(64, "int", "largest windowsize granted (RFC 7440)", minimum=1, maximum=65535),
    "timeout": Key(1.0, "float", "first retransmission timeout in seconds when the client "
                   "did not negotiate one", minimum=0.05, maximum=255),
    "timeout_min": Key(0.2, "float", "lowest retransmission timeout of a read: for a client "
                       "that did not negotiate 'timeout', the server's timeout follows the "
                       "measured round trip (mean + 4 x variation, RFC 6298) between this "
                       "and 'timeout', so a plain windowed client that lost a block waits "
                       "less; null: always 'timeout'", minimum=0.01, maximum=255,
                       nullable=True),
    "retries": Key(6, "int", "retransmissions (with exponential backoff) before a "
                   "transfer is given up", minimum=1, maximum=50),
    "max_sessions": Key(2000, "int", "transfers in flight at once, all clients", minimum=1),
    "max_transfer_time": Key(3600.0, "float", "seconds a unicast transfer may take, however "
                             "slow the client; then it is ended with an ERROR (0: no limit, "
                             "so a client that ACKs just before each timeout holds its "
                             "session for ever)", minimum=0),
    "max_sessions_per_client": Key(64, "int", "transfers in flight at once from one address",
                                   minimum=1),
    "unanswered_timeout": Key(2.0, "float", "until a client has answered once (ACK of the "
                              "OACK or of DATA 1; for multicast, any ACK of a master), the "
                              "retransmission timeout is at most this (seconds), whatever "
                              "'timeout' it negotiated (the OACK still echoes it): a request "
                              "from an address that never asked holds its slot for seconds, "
                              "not for hours", minimum=0.05, maximum=255),
    "unanswered_retries": Key(1, "int", "retransmissions of the first datagram (OACK or DATA 1) "
                              "to a client that has not answered yet, only while the bytes "
                              "sent stay within 3 times its request's; a session never "
                              "answered frees its slot after 3 x the capped timeout with one "
                              "retry (6 s at most by default; each further retry doubles the "
                              "wait)", minimum=0, maximum=50),
    "gso": Key(True, "bool", "send a window of DATA with UDP generic segmentation offload "
               "where the kernel has it (one system call for up to 64 datagrams); false: "
               "one system call per datagram (to compare)"),
    "fast_lane": Key(True, "bool", "while a single transfer is in flight, wait for its next "
                     "ACK in a short blocking read on its own socket instead of going back "
                     "to the event loop (lockstep clients go faster); false: always through "
                     "the event loop (to compare)"),
    "write": Section("uploads (WRQ)", {
        "enabled": Key(False, "bool", "accept WRQ uploads"),
        "directory": Key("tftpupload", "path", "where uploads land (never the served root); "
                         "existing files are never overwritten"),
        "max_bytes": Key(1 << 32, "int", "largest upload accepted (bytes); larger ones get "
                         "ERROR 3", minimum=0),
        "max_total_bytes": Key(1 << 33, "int", "quota of the upload directory: the bytes of "
                               "every file in it plus those of uploads in flight; an upload "
                               "that would pass it gets ERROR 3 (disk full)", minimum=0),
        "max_per_client": Key(2, "int", "uploads in flight at once from one address; more "
                              "get ERROR 2 (access violation)", minimum=1),
    }),
    "adaptive": ADAPTIVE_SCHEMA,
    "injector": INJECTOR_SCHEMA,
    "multicast": Section("RFC 2090 multicast TFTP (docs/multicast-tftp.md)", {
        "enabled": Key(False, "bool", "answer RRQs carrying the 'multicast' option with a "
                       "multicast session (off: they are served by unicast)"),
        "group_pool": Key("239.255.0.0/16", "ipnet", "multicast groups handed to sessions, "
                          "one per running session (RFC 2365 local scope)"),
        "port": Key(1758, "port", "UDP port of every group (the OACK tells clients)"),
        "ttl": Key(1, "int", "IP TTL of multicast DATA (1: never leaves the link)",
                   minimum=1, maximum=255),
        "interface": Key(None, "ip", "address of the interface DATA leaves by "
                         "(IP_MULTICAST_IF); null: tftp.address when it is one address, "
                         "else the routing table", nullable=True),
        "max_sessions": Key(64, "int", "multicast sessions at once", minimum=1),
        "max_clients": Key(256, "int", "clients in one session; more start another",
                           minimum=1),
        "master_retries": Key(3, "int", "timeouts of the master before the next client "
                              "is made master", minimum=1, maximum=50),
        "epoch": Key(True, "bool", "grant the 'mcepoch' extension (32-bit block numbers "
                     "in DATA and ACK, for files past 65535 blocks)"),
        "repair": Key(True, "bool", "grant the 'ranges' option on unicast RRQs (smart "
                      "clients fetch only their missing blocks)"),
        "start_min_clients": Key(0, "int", "delayed start: wait for this many clients... "
                                 "(0: no count, always start_max_wait; 1: start at once)",
                                 minimum=0),
        "start_max_wait": Key(2.0, "float", "...or this many seconds, whichever comes "
                              "first, so that machines booting together share the first "
                              "pass (0: start at once)", minimum=0, maximum=600),
        "qos_max_sessions": Key(0, "int", "QoS: degrade new sessions at this many running "
                                "sessions (0: ignore)", minimum=0),
        "qos_max_bandwidth": Key(0, "int", "QoS: degrade at this many bytes/s of multicast "
                                 "DATA (0: ignore)", minimum=0),
        "qos_max_load": Key(0.0, "float", "QoS: degrade at this 1-minute load per CPU "
                            "(0: ignore)", minimum=0),
        "qos_blksize": Key(512, "int", "QoS: largest blksize while degraded",
                           minimum=8, maximum=65464),
        "qos_timeout_factor": Key(2.0, "float", "QoS: timeout multiplier while degraded",
                                  minimum=1, maximum=20),
        "rate_max": Key(0, "int", "rate control: highest send rate in bytes/s "
                        "(0: unlimited until a master timeout)", minimum=0),
        "rate_min": Key(1048576, "int", "rate control: the rate is never lowered below "
                        "this (bytes/s)", minimum=1024),
        "rate_decrease": Key(0.5, "float", "rate control: multiplier on a master timeout",
                             minimum=0.05, maximum=1),
        "rate_increase": Key(1.25, "float", "rate control: multiplier after a clean period",
                             minimum=1, maximum=10),
        "rate_clean_period": Key(2.0, "float", "rate control: seconds without a master "
                                 "timeout before the rate is raised", minimum=0.01),
        "rate_burst": Key(262144, "int", "rate control: token bucket depth in bytes",
                          minimum=1500),
        "retransmit_last": Key(True, "bool", "on an unexpected packet (stale ACK, ACK from "
                               "a non-master) resend the most recent DATA"),
        "retransmit_holdoff": Key(0.05, "float", "...at most once per this many seconds",
                                  minimum=0),
    }),
})
