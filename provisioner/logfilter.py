# -*- test-case-name: tests.test_logfilter -*-
"""
A log observer for twistd that drops events below a level, so that debug
events (one per handshake or per transfer step) cost nothing to format in
production:

    twistd -n --logger=provisioner.logfilter.observer provisioner ...

The level comes from C{PROVISIONER_LOG_LEVEL} (C{debug}, C{info}, C{warn},
C{error}, C{critical}; default C{info}). Output goes to standard output, or
to the file named by C{PROVISIONER_LOG_FILE}.
"""

import os
import sys

from twisted.logger import (
    FilteringLogObserver, LogLevel, LogLevelFilterPredicate, textFileLogObserver)

__all__ = ["observer", "levelFromEnvironment"]


def levelFromEnvironment(environ=None):
    """
    The L{LogLevel} named by C{PROVISIONER_LOG_LEVEL}; C{info} when unset or
    not a level name.
    """
    environ = os.environ if environ is None else environ
    name = environ.get("PROVISIONER_LOG_LEVEL", "info").strip().lower()
    try:
        return LogLevel.levelWithName(name)
    except Exception:
        return LogLevel.info


def observer(environ=None, stream=None):
    """
    Return the filtering observer twistd installs with C{--logger}.
    """
    environ = os.environ if environ is None else environ
    if stream is None:
        path = environ.get("PROVISIONER_LOG_FILE")
        stream = open(path, "a", encoding="utf-8") if path else sys.stdout
    predicate = LogLevelFilterPredicate(defaultLogLevel=levelFromEnvironment(environ))
    return FilteringLogObserver(textFileLogObserver(stream), [predicate])
