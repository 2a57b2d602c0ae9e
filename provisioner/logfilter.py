# -*- test-case-name: tests.test_logfilter,tests.test_logformat -*-
"""
The appliance's log observer: a level below which events are dropped
before they are formatted (debug events, one per handshake or transfer
step, then cost nothing), and two formats: the human one (Twisted's text
lines) and JSON, one object per line:

    {"time": "2026-12-07T23:39:22.123456Z", "level": "info",
     "subsystem": "provisioner.tftp.server.TFTPServer",
     "message": "read boot.ipxe 10.0.0.5:2070 complete: ...", "path": "boot.ipxe", ...}

with the event's named fields beside C{time}, C{level}, C{subsystem} (the
logger's namespace) and C{message} (formatted), each made JSON-safe (text,
numbers, booleans, null, lists and objects of those; bytes decoded; the
text of anything else); a field named like one of those four gets a
trailing C{_}; a failure adds C{traceback}.

The C{log} section of the configuration (L{SCHEMA}: C{log.format},
C{log.level}) and the plugin's C{--log-format} and C{--log-level} choose
them (L{provisioner.tap.Options} calls L{configure}). The level is, first
found: C{--log-level}, C{PROVISIONER_LOG_LEVEL}, C{log.level}, C{info}.

twistd installs this observer with C{--logger=provisioner.logfilter.observer}
(C{scripts/run}, the systemd unit); the plugin installs it itself when a
format or level is asked for and no C{--logger} is given. Output goes to
the file named by C{PROVISIONER_LOG_FILE}, else where twistd would write
(C{--logfile}, standard output with C{-n}, else C{twistd.log}).
"""

import json
import math
import os
import sys

from twisted.logger import (
    FileLogObserver, FilteringLogObserver, LogLevel, LogLevelFilterPredicate, formatEvent,
    textFileLogObserver)

from provisioner.config import Key, Section

__all__ = ["observer", "levelFromEnvironment", "parseLevel", "jsonLine", "jsonSafe",
           "configure", "settings", "LEVELS", "FORMATS", "SCHEMA"]

#: the level names, lowest first
LEVELS = ("debug", "info", "warn", "error", "critical")

#: the formats
FORMATS = ("text", "json")

SCHEMA = Section("the log: format and level (read at start; --log-format and --log-level "
                 "override them)", {
                     "format": Key("text", "str", "text (Twisted's lines) or json (one object "
                                   "per line: time, level, subsystem, message and the event's "
                                   "fields)", choices=list(FORMATS)),
                     "level": Key(None, "str", "events below this level are dropped: debug, "
                                  "info, warn, error or critical; null: info (plain twistd "
                                  "with no log setting logs everything); PROVISIONER_LOG_LEVEL "
                                  "and --log-level override it", choices=list(LEVELS),
                                  nullable=True),
                 })

# What tap's Options chose (L{configure}); read by L{observer}.
_settings = {}


def parseLevel(name, where):
    """
    The L{LogLevel} named C{name}.

    @param where: what named it (C{--log-level}, C{log.level}), for the
        error.
    @raise ValueError: it is not a level: a one-line message naming
        C{where}.
    """
    text = str(name).strip().lower()
    if text not in LEVELS:
        raise ValueError("%s: must be one of %s (got %r)" % (where, ", ".join(LEVELS), name))
    return LogLevel.levelWithName(text)


def levelFromEnvironment(environ=None):
    """
    The L{LogLevel} named by C{PROVISIONER_LOG_LEVEL}; C{info} when unset or
    not a level name (tap's Options refuse a bad one before the observer
    is made).
    """
    environ = os.environ if environ is None else environ
    try:
        return parseLevel(environ.get("PROVISIONER_LOG_LEVEL", "info"), "PROVISIONER_LOG_LEVEL")
    except ValueError:
        return LogLevel.info


def configure(format=None, level=None, logfile=None, nodaemon=True):
    """
    Record what the observer is to do (tap's Options, once the flags and
    the configuration are read).

    @param format: C{text} or C{json}, or L{None} (text).
    @param level: a level name, or L{None} (the environment, else info).
    @param logfile: twistd's C{--logfile}, or L{None}.
    @param nodaemon: twistd's C{-n}.
    """
    _settings.clear()
    _settings.update(format=format, level=level, logfile=logfile, nodaemon=nodaemon)


def settings():
    """
    What L{configure} recorded (a copy).
    """
    return dict(_settings)


def _stream(environ):
    path = environ.get("PROVISIONER_LOG_FILE")
    if path:
        return open(path, "a", encoding="utf-8")
    logfile = _settings.get("logfile")
    if logfile == "-" or (not logfile and _settings.get("nodaemon", True)):
        return sys.stdout
    from twisted.python.logfile import LogFile
    return LogFile.fromFullPath(logfile or "twistd.log")


def observer(environ=None, stream=None):
    """
    Return the filtering observer twistd installs (C{--logger}), in the
    format and at the level L{configure} recorded.
    """
    environ = os.environ if environ is None else environ
    if stream is None:
        stream = _stream(environ)
    level = _settings.get("level")
    level = parseLevel(level, "log.level") if level else levelFromEnvironment(environ)
    if _settings.get("format") == "json":
        inner = FileLogObserver(stream, jsonLine)
    else:
        inner = textFileLogObserver(stream)
    return FilteringLogObserver(inner, [LogLevelFilterPredicate(defaultLogLevel=level)])


# -- JSON

#: event keys that are Twisted's bookkeeping or the legacy log's, not fields
_LEGACY = frozenset(["message", "format", "isError", "printed", "system", "time", "why",
                     "failure", "log_legacy"])

#: the keys every line has
_CORE = ("time", "level", "subsystem", "message")


def jsonSafe(value, depth=0):
    """
    C{value} as JSON can carry it: text, numbers, booleans and null as they
    are (a float that is not finite as text), lists and objects of those
    (tuples and sets as lists, keys as text), bytes decoded (UTF-8, bad
    bytes escaped), the text of anything else.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    if depth < 8:
        if isinstance(value, dict):
            return {str(k): jsonSafe(v, depth + 1) for k, v in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [jsonSafe(v, depth + 1) for v in value]
    try:
        return str(value)
    except Exception:
        return "<%s>" % (type(value).__name__,)


def _time(seconds):
    import datetime
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def jsonLine(event):
    """
    One event as one line of JSON (with its newline): C{time}, C{level},
    C{subsystem}, C{message} and the event's named fields.
    """
    level = event.get("log_level")
    subsystem = event.get("log_namespace") or "-"
    if subsystem == "log_legacy" and event.get("system") not in (None, "-"):
        subsystem = str(event["system"])  # a legacy event's system: its protocol
    out = {
        "time": _time(event.get("log_time") or 0.0),
        "level": level.name if isinstance(level, type(LogLevel.info)) else "info",
        "subsystem": subsystem,
        "message": _message(event),
    }
    for key, value in event.items():
        if key.startswith("log_") or key in _LEGACY:
            continue
        name = key + "_" if key in _CORE else key
        out[name] = jsonSafe(value)
    failure = event.get("log_failure")
    if failure is not None:
        try:
            out["traceback"] = failure.getTraceback()
        except Exception:
            out["traceback"] = str(failure)
    return json.dumps(out, ensure_ascii=False, separators=(",", ":")) + "\n"


def _message(event):
    try:
        text = formatEvent(event)
    except Exception:
        text = None
    if text is None:
        text = ""
    return text
