# -*- test-case-name: tests.test_tap -*-
"""
twistd wiring: the C{provisioner} plugin's options and L{makeService}.

Each subsystem is one named child service, built by
C{provisioner.<subsystem>.service.makeService(appliance)} when its section is
enabled. A subsystem's service may implement C{reconfigure(config)} to take a
reloaded configuration (SIGHUP) without dropping work in flight.

Under systemd (C{Type=notify}) the appliance says C{READY=1} once every
port of its services is bound, and reports each reload (C{RELOADING=1},
then C{READY=1} with C{STATUS=} applied or refused and why;
L{provisioner.sdnotify}).
"""

import importlib
import os
import signal
import sys

from twisted.application import service
from twisted.logger import Logger
from twisted.python import usage

from provisioner import logfilter
from provisioner.appliance import Appliance
from provisioner.config import ConfigError, loadConfig, parseOverride
from provisioner.events import MenusLogBridge, TransferEvents
from provisioner.sdnotify import Notifier
from provisioner.startup import installExceptHook

__all__ = ["Options", "makeService", "ProvisionerService", "SUBSYSTEMS"]

# (service name, config section, module with makeService(appliance)), in
# start order: producers of shared objects first.
SUBSYSTEMS = [
    ("images", "images", "provisioner.images.service"),
    ("hosts", "hosts", "provisioner.hosts.service"),
    ("menus", "menus", "provisioner.menus.service"),
    ("dhcp", "dhcp", "provisioner.dhcp.service"),
    ("dhcp6", "dhcp6", "provisioner.dhcp6.service"),
    ("tftp", "tftp", "provisioner.tftp.service"),
    ("http", "http", "provisioner.web.service"),
    ("imagecast", "imagecast", "provisioner.imagecast.service"),
]


class _Refused(usage.UsageError):
    """
    An option or a configuration the plugin refuses: reported on one line.
    """


class Options(usage.Options):
    """
    C{twistd provisioner} options. Flags override the configuration file.
    """

    synopsis = "[--config FILE] [--tftp-root DIR] [--tftp-port PORT] [--set KEY=VALUE ...]"

    optParameters = [
        ["config", "c", None, "YAML configuration file (default: the embedded safe defaults)."],
        ["tftp-root", None, None, "Directory served over TFTP (tftp.root)."],
        ["tftp-port", None, None, "TFTP listen port (tftp.port).", int],
        ["tftp-address", None, None, "TFTP listen address (tftp.address)."],
        ["tftp-interface", None, None, "TFTP listen interface (tftp.interface)."],
        ["log-format", None, None, "Log format: text or json (log.format)."],
        ["log-level", None, None,
         "Lowest level logged: debug, info, warn, error or critical (log.level)."],
    ]

    _flagKeys = {
        "tftp-root": "tftp.root",
        "tftp-port": "tftp.port",
        "tftp-address": "tftp.address",
        "tftp-interface": "tftp.interface",
        "log-format": "log.format",
        "log-level": "log.level",
    }

    def __init__(self):
        usage.Options.__init__(self)
        self["overrides"] = []

    def parseOptions(self, options=None):
        """
        Parse the plugin's options. Under twistd (the options have a
        parent), a refused option or configuration is one line on stderr
        and exit status 1, whatever twistd's version does with a usage
        error (before Twisted 26.10 it printed the whole usage text and
        exited 0); parsed alone, it is a L{usage.UsageError}.
        """
        try:
            usage.Options.parseOptions(self, options)
        except _Refused as e:
            if getattr(self, "parent", None) is None:
                raise
            sys.stderr.write("provisioner: %s\n" % (e,))
            sys.stderr.flush()
            raise SystemExit(1)

    def opt_set(self, value):
        """
        Override one configuration key, e.g. --set tftp.windowsize_max=32
        (repeatable; the value is read as YAML).
        """
        try:
            self["overrides"].append(parseOverride(value))
        except ConfigError as e:
            raise _Refused(str(e))

    def postOptions(self):
        self._checkLogOptions()
        flags = []
        for flag, key in self._flagKeys.items():
            if self[flag] is not None:
                flags.append((key, self[flag]))
        self["overrides"] = flags + self["overrides"]
        try:
            self["loaded"] = loadConfig(self["config"], self["overrides"])
        except ConfigError as e:
            raise _Refused("bad configuration: %s" % (e,))
        self._configureLog(self["loaded"]["log"])

    def _checkLogOptions(self):
        """
        Refuse a bad C{--log-format}, C{--log-level} or
        C{PROVISIONER_LOG_LEVEL} in one line naming it.
        """
        if self["log-format"] is not None and self["log-format"] not in logfilter.FORMATS:
            raise _Refused("--log-format: must be one of %s (got %r)" % (
                ", ".join(logfilter.FORMATS), self["log-format"]))
        for name, value in (("--log-level", self["log-level"]),
                            ("PROVISIONER_LOG_LEVEL", os.environ.get("PROVISIONER_LOG_LEVEL"))):
            if value is not None:
                try:
                    logfilter.parseLevel(value, name)
                except ValueError as e:
                    raise _Refused(str(e))
        if self["log-level"] is not None:
            self["log-level"] = self["log-level"].strip().lower()

    def _configureLog(self, section):
        """
        Tell the log observer the format and level (the flag, then
        C{PROVISIONER_LOG_LEVEL}, then C{log.level}), and where twistd
        would write; when a format or level is asked for and twistd was
        given no C{--logger}, install the observer (twistd makes it after
        the service is built).
        """
        level = self["log-level"] or os.environ.get("PROVISIONER_LOG_LEVEL") or \
            section["level"]
        parent = getattr(self, "parent", None)
        twistd = parent if parent is not None else {}
        logfilter.configure(format=section["format"], level=level,
                            logfile=twistd.get("logfile"), nodaemon=twistd.get("nodaemon", True))
        asked = section["format"] != "text" or section["level"] is not None or \
            self["log-level"] is not None
        if parent is not None and asked and not parent.get("logger"):
            parent["logger"] = "provisioner.logfilter.observer"  # twistd imports it


class ProvisionerService(service.MultiService):
    """
    The appliance: one named child service per enabled subsystem, and SIGHUP
    to reload the configuration.
    """

    log = Logger()

    #: seconds between two looks at the ports before READY=1, and the most
    #: waited for them
    READY_POLL, READY_WAIT = 0.1, 300.0

    def __init__(self, config, configPath=None, overrides=(), reactor=None, notifier=None):
        service.MultiService.__init__(self)
        self.notifier = notifier if notifier is not None else Notifier()
        self._readyCall = None
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.configPath = configPath
        self.overrides = list(overrides)
        self.appliance = Appliance(config, reactor)
        # the events of transfers (the services' hooks) and of the menus
        # (their log), published to appliance.events
        self.transferEvents = TransferEvents(self.appliance)
        self.menusLog = MenusLogBridge(self.appliance)
        self._previousHUP = None
        for name, section, module in SUBSYSTEMS:
            if config[section].get("enabled", False):
                self._addSubsystem(name, module)

    def _addSubsystem(self, name, module):
        factory = importlib.import_module(module).makeService
        child = factory(self.appliance)
        child.setName(name)
        child.setServiceParent(self)
        return child

    def startService(self):
        service.MultiService.startService(self)
        self.transferEvents.hook()
        from twisted.logger import globalLogPublisher
        globalLogPublisher.addObserver(self.menusLog)
        if hasattr(signal, "SIGHUP"):
            try:
                self._previousHUP = signal.signal(signal.SIGHUP, self._sighup)
            except ValueError:  # not the main thread (tests)
                self._previousHUP = None
        self.log.info("provisioner started: {services}",
                      services=", ".join(s.name for s in self) or "no services")
        if self.notifier.enabled:
            self._readyCall = self.reactor.callLater(0, self._notifyReady,
                                                     self.reactor.seconds())

    def unbound(self):
        """
        The services not running or with a port not bound yet (what
        C{/healthz} reads), as C{["NAME: problem"]}.
        """
        from provisioner.web.health import health
        _, report = health(self.appliance, self)
        return ["%s: %s" % (name, problem)
                for name, entry in sorted(report["services"].items())
                for problem in entry.get("problems", ())
                if problem in ("not running", "a port is not bound")]

    def _notifyReady(self, since):
        """
        Tell systemd C{READY=1} once every port is bound; look again every
        L{READY_POLL} seconds until then (at most L{READY_WAIT}).
        """
        self._readyCall = None
        missing = self.unbound()
        if not missing:
            self.notifier.ready("running: %s" % (", ".join(s.name for s in self) or
                                                 "no services",))
            self.log.info("told systemd: ready")
            return
        if self.reactor.seconds() - since >= self.READY_WAIT:
            self.notifier.status("not ready: " + "; ".join(missing))
            self.log.error("not ready after {seconds} s: {missing}", seconds=self.READY_WAIT,
                           missing="; ".join(missing))
            return
        self._readyCall = self.reactor.callLater(self.READY_POLL, self._notifyReady, since)

    def stopService(self):
        if self._readyCall is not None and self._readyCall.active():
            self._readyCall.cancel()
        self._readyCall = None
        self.notifier.stopping()
        if self._previousHUP is not None:
            signal.signal(signal.SIGHUP, self._previousHUP)
            self._previousHUP = None
        self.transferEvents.unhook()
        from twisted.logger import globalLogPublisher
        globalLogPublisher.removeObserver(self.menusLog)
        return service.MultiService.stopService(self)

    def _sighup(self, signum, frame):
        self.reactor.callFromThread(self.reload)

    def reload(self):
        """
        Read the configuration again and hand it to every subsystem. A bad
        configuration is logged and the running one kept. Sections switched
        on or off start or stop their service. Each reload is counted in
        C{appliance.reloads} (C{applied}, C{refused}, or C{failed} when a
        service could not take it).

        Under systemd, C{RELOADING=1} first, then C{READY=1} with C{STATUS=}
        saying what became of it.

        @return: L{True} if the new configuration was applied.
        """
        self.notifier.reloading()
        try:
            config = loadConfig(self.configPath, self.overrides)
        except ConfigError as e:
            self.log.error("reload refused, keeping the running configuration: {error}",
                           error=str(e))
            self.appliance.reloads["refused"] += 1
            self._reloaded("refused", str(e))
            self.notifier.ready("reload refused: %s (running the previous configuration)"
                                % (e,))
            return False
        self.appliance.config = config
        failed = False
        for name, section, module in SUBSYSTEMS:
            enabled = config[section].get("enabled", False)
            try:
                child = self.getServiceNamed(name)
            except KeyError:
                child = None
            try:
                if child is None and enabled:
                    self._addSubsystem(name, module)
                    self.log.info("reload: started {service}", service=name)
                elif child is not None and not enabled:
                    child.disownServiceParent()
                    self.log.info("reload: stopped {service}", service=name)
                elif child is not None and hasattr(child, "reconfigure"):
                    child.reconfigure(config)
            except Exception:
                failed = True
                self.log.failure("reload of {service} failed", service=name)
        self.appliance.reloads["failed" if failed else "applied"] += 1
        self._reloaded("failed" if failed else "applied",
                       "a service could not take it (see the log)" if failed else None)
        # a service the reload built is hooked once it exists
        self.reactor.callLater(0, self.transferEvents.hook)
        self.log.info("configuration reloaded from {path}", path=self.configPath or "defaults")
        self.notifier.ready(("reload failed: a service could not take it (see the log)"
                             if failed else "running: configuration reloaded from %s" % (
                                 self.configPath or "defaults",)))
        return True

    def _reloaded(self, result, error):
        """
        Remember the reload's result (C{/healthz}) and publish it.
        """
        now = self.reactor.seconds()
        self.appliance.lastReload = {"time": now, "result": result, "error": error,
                                     "path": self.configPath}
        self.appliance.events.publish("config.reload", level="info" if result == "applied"
                                      else "error", result=result, error=error,
                                      path=self.configPath)


def makeService(options, reactor=None):
    """
    Build the appliance from parsed L{Options}.

    A failure to start that names a key (L{provisioner.startup.StartError},
    or a C{ConfigError} met while building or starting the services) ends
    the process with one line on standard error and status 1, not a
    traceback (L{provisioner.startup.installExceptHook}).
    """
    installExceptHook()
    config = options.get("loaded")
    if config is None:
        config = loadConfig(options.get("config"), options.get("overrides", ()))
    return ProvisionerService(config, options.get("config"), options.get("overrides", ()),
                              reactor=reactor)
