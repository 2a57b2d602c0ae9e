# -*- test-case-name: tests.test_imagecast_service -*-
"""
The C{imagecast} section of the configuration: image multicast over a
control channel (sessions of minimum-retransmission rounds: each round after
the first carries only the union of what the receivers report missing; the
scorecard records every round and receiver). Every key is described for
operators in C{docs/imagecast.md}; the C{max_*} keys bound what a peer of
the control channel can make the appliance hold or do (its section
"Limits"); C{authentication}, C{receivers_file} and C{server_name} say who
may register as a receiver (its section "Authentication").
"""

import ipaddress

from provisioner.config import Key, Section
from provisioner.imagecast.commands import AUTHENTICATION_MODES
from provisioner.net.sockopt import CONTROL_RTO_MIN

__all__ = ["SCHEMA"]


def _multicastGroup(value):
    if not ipaddress.ip_address(value).is_multicast:
        return "must be an IPv4 multicast address such as 239.255.42.1 (got %r)" % (value,)
    return None


def _checkSection(section):
    if section["rate_min"] > section["rate_max"]:
        return "rate_min (%s) must not exceed rate_max (%s)" % (
            section["rate_min"], section["rate_max"])
    if not section["rate_min"] <= section["rate"] <= section["rate_max"]:
        return "rate (%s) must lie between rate_min and rate_max" % (section["rate"],)
    if section["min_receivers"] > section["max_members"]:
        return "min_receivers (%s) must not exceed max_members (%s)" % (
            section["min_receivers"], section["max_members"])
    if section["max_report_ranges"] > section["max_session_ranges"]:
        return "max_report_ranges (%s) must not exceed max_session_ranges (%s)" % (
            section["max_report_ranges"], section["max_session_ranges"])
    tls = section["tls"]
    mode = section["authentication"]
    if section["enabled"] and mode == "secret" and not section["receivers_file"]:
        return ("authentication is 'secret' (the default) but receivers_file is not set: "
                "give each receiver a secret there (docs/imagecast.md, Authentication), or "
                "set authentication: none for an open control channel")
    if mode == "certificate" and not (tls["enabled"] and tls["client_ca"]):
        return ("authentication: certificate needs tls.enabled and tls.client_ca (the "
                "receivers' certificates name their ids)")
    if tls["enabled"] and not (tls["certificate"] and tls["key"]):
        return "tls.enabled needs tls.certificate and tls.key"
    if tls["require_client_certificate"] and not tls["client_ca"]:
        return "tls.require_client_certificate needs tls.client_ca"
    return None


SCHEMA = Section("image multicast over a control channel, in minimum-retransmission rounds", {
    "enabled": Key(False, "bool", "run the imagecast service (control channel on TCP, data "
                   "on UDP multicast)"),
    "address": Key("127.0.0.1", "ip", "address the control channel (TCP) listens on; "
                   "0.0.0.0 for all (the embedded default is loopback only)"),
    "port": Key(7010, "port", "TCP port of the control channel (0 picks a free one)"),
    "root": Key("images", "path", "directory the images sent with 'provisioner imagecast "
                "send' are taken from; names can never leave it"),
    "admin_networks": Key(["127.0.0.0/8", "::1/128"], "list", "networks allowed to start "
                          "sessions and read the scorecard over the control channel",
                          items=Key("127.0.0.0/8", "ipnet", "a network")),
    "group": Key("239.255.42.1", "ip", "multicast group of the first session; each further "
                 "session running at the same time takes the next address",
                 check=_multicastGroup),
    "data_port": Key(7011, "port", "UDP port of the data channel", minimum=1),
    "interface": Key(None, "ip", "local address whose interface sends the multicast data "
                     "(IP_MULTICAST_IF); null lets the routing table choose", nullable=True),
    "ttl": Key(1, "int", "multicast TTL (1 keeps data on the local link)", minimum=1,
               maximum=255),
    "datagram_size": Key(1472, "int", "UDP payload size of a data datagram, header included "
                         "(1472 fits a 1500-byte MTU)", minimum=128, maximum=65000),
    "rate": Key(400.0, "float", "initial sending rate in Mbit/s (UDP payload)",
                minimum=0.1),
    "rate_min": Key(10.0, "float", "the adaptation never goes below this (Mbit/s)",
                    minimum=0.1),
    "rate_max": Key(900.0, "float", "the adaptation never goes above this (Mbit/s)",
                    minimum=0.1),
    "adapt_rate": Key(True, "bool", "adapt the rate between rounds from burst loss "
                      "(random, isolated loss is not taken as congestion)"),
    "flow_window": Key(32 << 20, "int", "flow control in every round: the sender stays at "
                        "most this many bytes of the round's data ahead of the slowest "
                        "receiver of the current group (0: off)", minimum=0),
    "min_receiver_rate": Key(0.05, "float", "flow control: a receiver whose progress over "
                             "the last min_rate_seconds is below this fraction of the "
                             "session's rate stops holding the sender back (it gets what "
                             "it misses in repair rounds or over the control channel); 0: "
                             "every receiver holds it however slow", minimum=0,
                             maximum=1),
    "min_rate_seconds": Key(2.0, "float", "flow control: the period over which a "
                            "receiver's progress is measured against min_receiver_rate",
                            minimum=0.1),
    "control_rto_min": Key(CONTROL_RTO_MIN, "float", "control connections recover a lost TCP segment "
                           "after about this many seconds instead of the kernel's 200 ms "
                           "floor (TCP_RTO_MIN_US and TCP_DELACK_MAX_US, Linux 6.15 and "
                           "later; 0: the kernel's defaults)", minimum=0, maximum=1),
    "gso": Key(True, "bool", "use UDP GSO (UDP_SEGMENT) for batches of equal-size datagrams "
               "where the kernel has it"),
    "max_rounds": Key(20, "int", "multicast rounds per session; what is still missing then "
                      "is delivered over the control channel", minimum=1, maximum=65535),
    "tail_bytes": Key(1 << 20, "int", "after the first repair round, when the receivers "
                      "lack at most this many bytes in all (and at most a quarter more than "
                      "their union: few are lacked by several), no further round is "
                      "multicast: each receiver fetches its part over its control connection "
                      "(a round costs an announcement and every report); 0 multicasts every "
                      "round", minimum=0),
    "coalesce_gap": Key(0, "int", "merge two missing ranges when the gap between them is "
                        "smaller than this many bytes (0: merge only touching ranges)",
                        minimum=0),
    "max_ranges": Key(100000, "int", "most ranges announced for one round; beyond it the "
                      "smallest gaps are merged first", minimum=1, maximum=1 << 22),
    "min_receivers": Key(1, "int", "default for 'send --min-receivers': start once this "
                         "many receivers are enrolled", minimum=1),
    "max_wait": Key(30.0, "float", "default for 'send --max-wait': start after this many "
                    "seconds with whoever is enrolled (at least one)", minimum=0),
    "auto_start": Key(False, "bool", "start a session by itself when a receiver asks for an "
                      "image by name (receive --image NAME) and none sends it; the image "
                      "comes from the catalogue or imagecast.root, the start conditions "
                      "from min_receivers and max_wait"),
    "announce_timeout": Key(2.0, "float", "seconds to wait for receivers to acknowledge an "
                            "announcement before data flows", minimum=0.01),
    "report_timeout": Key(10.0, "float", "seconds to wait for missing-range reports after a "
                          "round; a silent receiver keeps its last report", minimum=0.1),
    "client_timeout": Key(30.0, "float", "a receiver disconnected this long is dropped from "
                          "the session (recorded as lost on the scorecard)", minimum=0.1),
    "keep_sessions": Key(20, "int", "finished sessions whose scorecard 'provisioner "
                         "imagecast status' still shows", minimum=0),
    "max_box_bytes": Key(16 << 20, "int", "limit: the largest AMP box a peer may send on the "
                         "control channel (keys, values and their length prefixes); a "
                         "larger one, or a box whose terminator does not come within it, "
                         "drops the connection", minimum=1 << 17),
    "max_write_buffer": Key(4 << 20, "int", "limit: bytes the appliance holds for one control "
                            "connection that the peer has not read; a peer that lets more "
                            "pile up is dropped, not buffered", minimum=1 << 16),
    "max_report_ranges": Key(65536, "int", "limit: ranges kept of one missing-range report "
                             "(decoding stops there: a longer report keeps its first ones "
                             "and counts the rest of the image as missing)", minimum=1),
    "max_session_ranges": Key(1 << 22, "int", "limit: ranges kept of the latest reports of "
                              "all receivers of one session together (a report that would "
                              "exceed it is cut like one beyond max_report_ranges)",
                              minimum=1),
    "max_ids_per_connection": Key(4, "int", "limit: receiver ids one control connection may "
                                  "register (further Register calls are refused)",
                                  minimum=1),
    "max_members": Key(1024, "int", "limit: receivers one session enrolls (its permanent "
                       "group); later ones are refused", minimum=1),
    "max_receivers": Key(4096, "int", "limit: receivers registered at once, over every "
                         "control connection", minimum=1),
    "authentication": Key("secret", "str", "who may register as a receiver: 'secret' (a "
                          "challenge answered with the receiver's secret from receivers_file), "
                          "'certificate' (the TLS client certificate's common name is the "
                          "receiver id, or its host part), 'none' (anyone: only for a "
                          "trusted network)", choices=list(AUTHENTICATION_MODES)),
    "receivers_file": Key(None, "path", "file of 'ID SECRET' lines, one per receiver (a "
                          "line for HOST also serves the ids HOST:anything); read again when "
                          "it changes; keep it mode 600", nullable=True),
    "server_name": Key(None, "str", "the name receivers' answers to the challenge are bound "
                       "to (null: the host name)", nullable=True),
    "tls": Section("TLS on the control channel", {
        "enabled": Key(False, "bool", "serve the control channel over TLS"),
        "certificate": Key(None, "path", "PEM server certificate", nullable=True),
        "key": Key(None, "path", "PEM private key of the certificate", nullable=True),
        "client_ca": Key(None, "path", "PEM CA certificate(s) that client certificates "
                         "must chain to", nullable=True),
        "require_client_certificate": Key(False, "bool", "refuse receivers without a "
                                          "client certificate signed by client_ca"),
    }),
}, check=_checkSection)
