# -*- test-case-name: tests.test_startfailures -*-
"""
Failures to start, as one line an operator can act on.

A service that cannot bind its port, find its interface or make its
directory raises L{StartError}, which names the configuration key, the
value and the reason (and the capability needed, where that is the
cause). L{bindError} and L{directoryError} turn the C{OSError} of a bind or
a C{mkdir} into one.

twistd turns an exception out of C{makeService}, C{privilegedStartService}
or C{startService} into a traceback on its way out;
L{installExceptHook} (called by L{provisioner.tap.makeService}) prints a
L{StartError} (or a L{provisioner.config.ConfigError} met at start) as one
line on standard error instead, and the process exits with status 1. With
C{PROVISIONER_LOG_LEVEL=debug} the traceback follows the line.
"""

import errno
import os
import sys
import traceback

__all__ = ["StartError", "bindError", "directoryError", "installExceptHook",
           "formatFailure", "EXIT_STATUS"]

#: the exit status of a start that failed this way
EXIT_STATUS = 1


class StartError(Exception):
    """
    A service cannot start because of the value of one configuration key.

    @ivar key: the key (C{tftp.interface}).
    @ivar value: its value.
    @ivar reason: why, and what to do (C{no such network interface}).
    """

    def __init__(self, key, value, reason):
        self.key = key
        self.value = value
        self.reason = reason
        Exception.__init__(self, "%s %s: %s" % (key, value, reason))


def _unprivilegedPortStart():
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 1024


def bindError(error, section, address, port, interface=None, portKey="port",
              interfaceKey="interface"):
    """
    The L{StartError} for an C{OSError} (or a Twisted C{CannotListenError})
    met while making, binding or restricting to an interface the listen
    socket of C{section}, naming the key at fault.

    @param portKey: the name of the port's key in the section (C{pxe_port}).
    @param interfaceKey: the name of the interface's key (C{interfaces}).
    """
    error = getattr(error, "socketError", error)
    code = getattr(error, "errno", None)
    where = "%s port %s" % (address, port)
    if code == errno.ENODEV and interface:
        return StartError("%s.%s" % (section, interfaceKey), interface,
                          "no such network interface")
    if code == errno.EPERM and interface:
        return StartError("%s.%s" % (section, interfaceKey), interface, "binding to an interface "
                          "(SO_BINDTODEVICE) needs root or CAP_NET_RAW")
    if code == errno.EADDRNOTAVAIL:
        return StartError(section + ".address", address, "not an address of this host")
    if code == errno.EADDRINUSE:
        return StartError("%s.%s" % (section, portKey), port, "%s is already in use (another "
                          "process listens there)" % (where,))
    if code in (errno.EACCES, errno.EPERM):
        if isinstance(port, int) and 0 < port < _unprivilegedPortStart():
            return StartError("%s.%s" % (section, portKey), port, "port %d is privileged: "
                              "binding it needs root or CAP_NET_BIND_SERVICE" % (port,))
        return StartError(section + ".address", address, "cannot bind %s: permission denied"
                          % (where,))
    reason = getattr(error, "strerror", None) or str(error)
    return StartError(section + ".address", address, "cannot listen on %s: %s" % (
        where, reason))


def directoryError(error, key, path):
    """
    The L{StartError} for an C{OSError} met making or opening the directory
    C{path} of C{key}.
    """
    code = getattr(error, "errno", None)
    if code in (errno.EACCES, errno.EPERM):
        reason = "permission denied (the user provisioner runs as must be able to create " \
                 "and write it)"
    elif code == errno.ENOENT:
        reason = "cannot be created (no such file or directory)"
    elif code == errno.ENOTDIR:
        reason = "cannot be created: a part of the path is a file, not a directory"
    elif code == errno.EROFS:
        reason = "read-only file system"
    else:
        reason = getattr(error, "strerror", None) or str(error)
    return StartError(key, path, reason)


def formatFailure(value):
    """
    The line printed for a start failure C{value}, or L{None} when it is
    not one (a L{StartError} or a C{ConfigError}).
    """
    from provisioner.config import ConfigError
    if isinstance(value, (StartError, ConfigError)):
        return "provisioner: cannot start: %s" % (value,)
    return None


def _debug(environ):
    from provisioner.logfilter import levelFromEnvironment
    from twisted.logger import LogLevel
    return levelFromEnvironment(environ) == LogLevel.debug


def installExceptHook(sys=sys, environ=None, exit=os._exit):
    """
    Make the process print a start failure that nothing caught as one line
    on (the original) standard error and exit with L{EXIT_STATUS}; other
    exceptions go to the hook installed before.

    @return: the hook.
    """
    previous = sys.excepthook
    environ = os.environ if environ is None else environ

    def hook(kind, value, tb):
        line = formatFailure(value)
        if line is None:
            return previous(kind, value, tb)
        stream = sys.__stderr__ or sys.stderr
        try:
            if _debug(environ):
                traceback.print_exception(kind, value, tb, file=stream)
            stream.write(line + "\n")
            stream.flush()
            if sys.stdout is not None:
                sys.stdout.flush()
        finally:
            # threads a service started before the failure (a thread pool,
            # the lease writer) must not keep the process alive
            exit(EXIT_STATUS)

    if getattr(previous, "provisionerStartHook", False):
        return previous
    hook.provisionerStartHook = True
    sys.excepthook = hook
    return hook
