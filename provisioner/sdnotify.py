# -*- test-case-name: tests.test_sdnotify -*-
"""
systemd's notification protocol (C{sd_notify(3)}), in a few lines and no
dependency: one datagram of C{KEY=VALUE} lines to the unix socket named
by C{$NOTIFY_SOCKET} (a path, or C{@name} in the abstract namespace).

The appliance (L{provisioner.tap.ProvisionerService}) sends C{READY=1}
once every port of its services is bound (C{Type=notify}), and around a
SIGHUP reload C{RELOADING=1} (with C{MONOTONIC_USEC}), then C{READY=1}
and a C{STATUS=} line saying whether the configuration was applied or
refused and why. Without C{$NOTIFY_SOCKET} (not run by systemd) nothing
is sent.
"""

import os
import socket
import time

__all__ = ["Notifier", "notify"]


def notify(fields, environ=None):
    """
    Send C{fields} (C{[(key, value)]}) to C{$NOTIFY_SOCKET}.

    @return: whether a datagram was sent (L{False} when the variable is not
        set or the socket cannot be reached).
    """
    environ = os.environ if environ is None else environ
    path = environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]
    # one line per field; a value never spans lines
    message = "".join("%s=%s\n" % (key, " ".join(str(value).split()))
                      for key, value in fields).encode("utf-8")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
        sock.sendall(message)
    except OSError:
        return False
    finally:
        sock.close()
    return True


class Notifier:
    """
    What the appliance tells systemd.

    @ivar environ: where C{NOTIFY_SOCKET} is read (C{os.environ}).
    @ivar sent: every message sent, as field lists (the log and tests).
    """

    def __init__(self, environ=None):
        self.environ = os.environ if environ is None else environ
        self.sent = []

    @property
    def enabled(self):
        return bool(self.environ.get("NOTIFY_SOCKET"))

    def _send(self, fields):
        if notify(fields, self.environ):
            self.sent.append(fields)
            return True
        return False

    def ready(self, status):
        """
        The appliance is ready: every port bound (or a reload is over).
        """
        return self._send([("READY", 1), ("STATUS", status)])

    def reloading(self):
        """
        A reload starts.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self._send([("RELOADING", 1), ("MONOTONIC_USEC", usec),
                           ("STATUS", "reloading the configuration")])

    def status(self, status):
        return self._send([("STATUS", status)])

    def stopping(self):
        return self._send([("STOPPING", 1), ("STATUS", "stopping")])
