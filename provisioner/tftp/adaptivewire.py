# -*- test-case-name: tests.test_adaptive -*-
"""
The wire format of the adaptive TFTP window and of Windows bootmgr's
msftwindow, shared by the server (L{provisioner.tftp.adaptive}) and the
client (L{provisioner.client.tftp}); see C{docs/wire/adaptive.md}. Pure:
no reactor, no sockets.
"""

import struct

from provisioner.tftp.wire import MAX_WINDOW

__all__ = [
    "ADAPTIVE_OPTION", "ADAPTIVE_VERSION", "MSFT_OPTION", "MSFT_CLIENT_MAGIC",
    "MSFT_SERVER_MAGIC", "FLAG_LOSS", "encodeAdaptiveExtra", "decodeAdaptiveExtra",
    "adaptiveExtraIsLoss", "encodeMsftExtra", "decodeMsftExtra", "parseAdaptiveOption",
    "formatAdaptiveOption",
]

# The RFC 2347 option that negotiates the adaptive window, and the version
# of the extension this module speaks (docs/wire/adaptive.md).
ADAPTIVE_OPTION = "adaptive"
ADAPTIVE_VERSION = 1

# Windows bootmgr's variable window extension (PEERS.md section 1b).
MSFT_OPTION = "msftwindow"
MSFT_CLIENT_MAGIC = "31416"
MSFT_SERVER_MAGIC = "27182"

_H = struct.Struct("!H")

# The flags byte after the window (optional): this ACK reports a loss.
FLAG_LOSS = 0x01


def encodeAdaptiveExtra(window, loss=False):
    """
    The bytes an adaptive client appends to an ACK to ask for C{window}
    blocks from the next window on (1..65535); with C{loss}, a flags byte
    marking the ACK as a loss report (a gap or a timeout).
    """
    packed = _H.pack(max(1, min(int(window), MAX_WINDOW)))
    return packed + b"\x01" if loss else packed


def adaptiveExtraIsLoss(extra):
    """
    Whether the trailing bytes of an ACK mark it as a loss report.
    """
    return len(extra) >= 3 and bool(extra[2] & FLAG_LOSS)


def decodeAdaptiveExtra(extra):
    """
    The window requested by the trailing bytes of an ACK, or L{None} when
    they request nothing (fewer than 2 bytes, or 0). Bytes after the first
    two are reserved and ignored.
    """
    if len(extra) < 2:
        return None
    value = _H.unpack_from(extra)[0]
    return value or None


def encodeMsftExtra(window, loss=False):
    """
    The one byte a bootmgr-style client appends to every ACK (1..255).
    There is no loss flag in this dialect: C{loss} is ignored.
    """
    return bytes([max(1, min(int(window), 255))])


def decodeMsftExtra(extra):
    """
    The next window carried by a C{msftwindow} ACK, or L{None}.
    """
    if not extra:
        return None
    return extra[0] or None


def parseAdaptiveOption(value):
    """
    Parse the value of the C{adaptive} option: C{"V"} in a request, C{"V,MAX"}
    in an OACK (version, then the largest window the server grants).

    @return: C{(version, maximum or None)}, or L{None} if it is malformed.
    """
    parts = str(value).strip().split(",")
    try:
        version = int(parts[0])
        maximum = int(parts[1]) if len(parts) > 1 and parts[1].strip() else None
    except ValueError:
        return None
    if version < 1 or (maximum is not None and not 1 <= maximum <= MAX_WINDOW):
        return None
    return version, maximum


def formatAdaptiveOption(version, maximum=None):
    """
    The value of the C{adaptive} option (see L{parseAdaptiveOption}).
    """
    if maximum is None:
        return "%d" % (version,)
    return "%d,%d" % (version, maximum)

