# -*- test-case-name: tests.test_inject -*-
"""
The bootstrap-program injector: a resolver in the TFTP chain, after the
virtual files and the image catalogue, before the served directory.

When a client asks for one of the configured boot files and shows no sign
of running a windowed client, it is served the configured bootstrap program
(the "flow control facility", e.g. iPXE's C{undionly.kpxe} or
C{snponly.efi}) instead; the facility then asks again, with its options,
and gets the real file.

Loop safety; the injector never serves the program:

  - to a request carrying C{windowsize}, C{adaptive} or C{msftwindow} (it
    already has a windowed client: the facility, EDK2, bootmgr);
  - to a client that DHCP saw as iPXE (options 77 or 175), found in the
    appliance's client directory by the request's record, its IP or MAC;
  - to the same client twice within C{holdoff} seconds of a delivery. A
    delivery is a transfer that read the program to its end, so that a PXE
    ROM's C{tsize} probe (an RRQ abandoned after the OACK) does not count.

Every decision is logged (at info) with its reason.
"""

from twisted.logger import Logger
from zope.interface import implementer

from provisioner.config import ConfigError, Key, Section
from provisioner.files import FileSource, normalisePath
from provisioner.interfaces import IDataSource, IFileResolver

__all__ = ["BootstrapInjector", "DeliveryTracker", "SCHEMA", "FACILITY_OPTIONS",
           "injectorFromConfig", "reloadInjector"]

# Options whose presence means the client already runs a windowed client.
FACILITY_OPTIONS = ("windowsize", "adaptive", "msftwindow")


def _checkPrograms(value):
    for name, path in value.items():
        if not isinstance(name, str) or not isinstance(path, str) or not name or not path:
            return "must map boot file names to program paths (got %r: %r)" % (name, path)
        try:
            normalisePath(name)
        except Exception as e:
            return "bad boot file name %r: %s" % (name, e)
    return None


SCHEMA = Section("the bootstrap-program injector", {
    "enabled": Key(False, "bool", "serve the bootstrap program to clients without a windowed "
                   "client when they ask for a configured boot file"),
    "programs": Key({}, "map", "boot file name (as DHCP hands it out, relative to the TFTP "
                    "root) -> bootstrap program path, e.g. {undionly.kpxe: "
                    "/usr/lib/ipxe/undionly.kpxe, bootx64.efi: /usr/lib/ipxe/snponly.efi}",
                    check=_checkPrograms),
    "holdoff": Key(300.0, "float", "seconds after a delivery during which the same client "
                   "(by IP) is never injected again", minimum=0),
    "facility_options": Key(list(FACILITY_OPTIONS), "list", "TFTP options whose presence in "
                            "a request means the client already has a windowed client",
                            items=Key("", "str", "option name")),
})


@implementer(IDataSource)
class DeliveryTracker:
    """
    Wraps the program's source and reports when a read reaches its end.
    """

    def __init__(self, source, onDelivered):
        self._source = source
        self._onDelivered = onDelivered
        self.size = source.size
        self.name = source.name

    def read(self, offset, length):
        data = self._source.read(offset, length)
        if self._onDelivered is not None and (
                offset + length >= self.size or len(data) < length):
            callback, self._onDelivered = self._onDelivered, None
            callback()
        return data

    def close(self):
        self._source.close()


@implementer(IFileResolver)
class BootstrapInjector:
    """
    @ivar programs: normalised boot file name -> program path.
    @ivar delivered: IP -> when the program was last delivered to it.
    @ivar decisions: the last decisions, C{(ip, path, injected, reason)}
        (bounded; for tests and the dashboard).
    """

    log = Logger()

    def __init__(self, programs, clients=None, clock=None, holdoff=300.0,
                 facilityOptions=FACILITY_OPTIONS):
        self.programs = {}
        for name, path in programs.items():
            self.programs[normalisePath(name)] = path
        self.clients = clients
        self.clock = clock
        self.holdoff = holdoff
        self.facilityOptions = tuple(o.lower() for o in facilityOptions)
        self.delivered = {}
        self.decisions = []

    def _now(self):
        if self.clock is not None:
            return self.clock.seconds()
        import time
        return time.time()

    def _record(self, request):
        record = getattr(request, "client", None)
        if record is None and self.clients is not None and request.peer:
            record = self.clients.byIP(request.peer[0])
        return record

    def _decide(self, ip, path, injected, reason, program):
        self.decisions.append((ip, path, injected, reason))
        del self.decisions[:-100]
        if injected:
            self.log.info("injector: serving {program} to {ip} for {path}: {reason}",
                          program=program, ip=ip, path=path, reason=reason)
        else:
            self.log.info("injector: not injecting to {ip} for {path}: {reason}",
                          ip=ip, path=path, reason=reason)

    def refusal(self, request):
        """
        Why the program must not be served for this request, or L{None}.
        """
        options = request.options or {}
        for name in self.facilityOptions:
            if name in options:
                return "the request carries %s (a windowed client)" % (name,)
        record = self._record(request)
        if record is not None and record.ipxe:
            return "DHCP saw this client as iPXE"
        if self.clients is not None and record is not None and record.mac is not None:
            byMAC = self.clients.byMAC(record.mac)
            if byMAC is not None and byMAC.ipxe:
                return "DHCP saw this client (by MAC) as iPXE"
        ip = request.peer[0] if request.peer else None
        last = self.delivered.get(ip)
        if last is None and record is not None and record.injected is not None:
            last = record.injected
        if last is not None:
            ago = self._now() - last
            if ago < self.holdoff:
                return "the program was delivered %.0fs ago (holdoff %.0fs)" % (ago, self.holdoff)
        return None

    def resolve(self, request):
        program = self.programs.get(request.path)
        if program is None:
            return None
        ip = request.peer[0] if request.peer else None
        reason = self.refusal(request)
        if reason is not None:
            self._decide(ip, request.path, False, reason, program)
            return None
        try:
            source = FileSource.open(program, name=program)
        except Exception as e:
            self._decide(ip, request.path, False, "cannot open %s: %s" % (program, e), program)
            return None
        self._decide(ip, request.path, True, "no windowed client and not iPXE", program)

        def delivered():
            now = self._now()
            self.delivered[ip] = now
            if self.clients is not None and ip is not None:
                try:
                    self.clients.update(ip=ip, injected=now)
                except Exception:
                    self.log.failure("injector: cannot record the delivery to {ip}", ip=ip)
            self.log.info("injector: {program} delivered to {ip}", program=program, ip=ip)
        return DeliveryTracker(source, delivered)

    def __repr__(self):
        return "<BootstrapInjector %r>" % (self.programs,)


def injectorFromConfig(section, appliance):
    """
    Build the injector from the C{tftp.injector} section, or L{None} when it
    is disabled.

    @raise ConfigError: a program is missing or unreadable.
    """
    if not section.get("enabled"):
        return None
    import os
    for name, path in section["programs"].items():
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise ConfigError("tftp.injector.programs.%s" % (name,),
                              "bootstrap program %s is not a readable file" % (path,))
    if not section["programs"]:
        raise ConfigError("tftp.injector.programs", "the injector is enabled but no program "
                          "is configured")
    return BootstrapInjector(section["programs"], appliance.clients, appliance.reactor,
                             section["holdoff"], section["facility_options"])


def reloadInjector(previous, section, appliance):
    """
    The injector for a (re)loaded C{tftp.injector} section.

    @param previous: the injector running until now, or L{None}; a new one
        takes over its deliveries (the holdoff goes on across reloads).
    @return: the new injector; L{None} when the section disables it; or
        C{previous} when the section is bad and an injector runs (the
        error is logged).
    @raise ConfigError: the section is bad and no injector runs (the first
        configuration).
    """
    try:
        injector = injectorFromConfig(section, appliance)
    except ConfigError as e:
        if previous is None:
            raise
        BootstrapInjector.log.error("injector: keeping the previous settings: {error}",
                                    error=str(e))
        return previous
    if injector is not None and previous is not None:
        injector.delivered.update(previous.delivered)
    return injector
