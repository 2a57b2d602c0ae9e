# -*- test-case-name: tests.test_files -*-
"""
The zope seams between provisioner's layers.

Data flows one way: a protocol (TFTP, HTTP) builds a L{FileRequest}, asks a
chain of L{IFileResolver}s for an L{IDataSource}, and streams from it. Policy
(boot menus, the injector) lives in resolvers; protocols know no policy.
"""

from zope.interface import Attribute, Interface

__all__ = ["IDataSource", "IFileResolver", "IVirtualFiles", "IClientDirectory"]


class IDataSource(Interface):
    """
    Bytes to send, readable at any offset (so a windowed sender can go back).
    Reads are synchronous and cheap (pread, mmap or memory): they run on the
    reactor thread, on the hot path.
    """

    size = Attribute("Length in bytes (int), or None when unknown (then no tsize is offered).")
    name = Attribute("What to call it in logs (str).")

    def read(offset, length):
        """
        Return C{length} bytes at C{offset}; fewer only at the end of the data,
        C{b""} past it.
        """

    def close():
        """
        Release what the source holds (file descriptor, mapping). Idempotent.
        """


class IFileResolver(Interface):
    """
    Maps a request to data. Resolvers are chained: the first that answers wins.
    """

    def resolve(request):
        """
        @param request: a L{provisioner.files.FileRequest}.
        @return: an L{IDataSource}; or L{None} when this resolver has nothing
            for the request (the next one is asked); or a Deferred firing
            with either.
        @raise provisioner.errors.FileNotFound: the file is known not to exist
            and no later resolver may answer.
        @raise provisioner.errors.AccessViolation: the request is refused.
        """


class IVirtualFiles(IFileResolver):
    """
    A registry of generated files, by exact name or by regular expression.
    Other services (boot menus) register here; TFTP and HTTP serve them.
    """

    def register(pattern, producer, exact=True):
        """
        @param pattern: the file name (normalised: no leading slash) or, with
            C{exact=False}, a regular expression matched against the whole name.
        @param producer: C{producer(request, match)} returning C{bytes}, an
            L{IDataSource}, L{None} (not for this client: fall through), or a
            Deferred firing with one of those. C{match} is the regex match
            object or L{None}.
        @return: a callable that unregisters it.
        """


class IClientDirectory(Interface):
    """
    What the appliance knows of each client: written by DHCP, read by TFTP
    (the injector) and by the menus.
    """

    def update(mac=None, ip=None, **fields):
        """
        Record facts about a client (C{arch}, C{ipxe}, C{vendor_class},
        C{user_class}, C{hostname}, C{uuid}, ...). Returns the record.
        """

    def byMAC(mac):
        """
        Return the L{provisioner.directory.ClientRecord} for a MAC, or L{None}.
        """

    def byIP(ip):
        """
        Return the L{provisioner.directory.ClientRecord} for an IP, or L{None}.
        """
