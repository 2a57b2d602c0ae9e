# -*- test-case-name: tests.test_files -*-
"""
The zope seams between provisioner's layers.

Data flows one way: a protocol (TFTP, HTTP) builds a L{FileRequest}, asks a
chain of L{IFileResolver}s for an L{IDataSource}, and streams from it. Policy
(boot menus, the injector) lives in resolvers; protocols know no policy.
"""

from zope.interface import Attribute, Interface

__all__ = ["IDataSource", "IFileResolver", "IVirtualFiles", "IClientDirectory",
           "IRangeView", "IResolverFilter", "IRequestHandler", "IImaging"]


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


class IRangeView(IDataSource):
    """
    A data source holding only some blocks of a file, back to back (what a
    repair transfer sends for the C{ranges} option). Negotiation records
    C{granted} as C{rangesGranted} in its result, and the option extension
    of smart repair echoes it in the OACK.
    """

    unit = Attribute("The block size the ranges count in (int).")
    ranges = Attribute("The blocks held, C{[(first, last)]} (1-based, inclusive).")
    granted = Attribute("The C{ranges} option value that describes them (str).")


class IResolverFilter(Interface):
    """
    Sees every request before a resolver chain, and may answer it through
    the chain differently (smart repair serves a view of the file the chain
    finds). Filters are registered with
    L{provisioner.tftp.service.TFTPService.addResolverFilter}; the chain's
    own order is untouched.
    """

    def resolve(request, next):
        """
        @param request: a L{provisioner.files.FileRequest}.
        @param next: the L{IFileResolver} behind this filter (the next
            filter, or the chain itself).
        @return: what L{IFileResolver.resolve} returns.
        """


class IRequestHandler(Interface):
    """
    Offered each TFTP read request, once resolved, before a unicast session
    starts (multicast TFTP takes the requests that ask for it). Registered
    with L{provisioner.tftp.service.TFTPService.addRequestHandler}.
    """

    def handleRequest(server, request, source, packet):
        """
        @param server: the L{provisioner.tftp.server.TFTPServer} (its
            C{negotiate} and C{config}).
        @param request: the L{provisioner.files.FileRequest}.
        @param source: the L{IDataSource} the resolvers gave; a handler that
            takes the request owns it (and closes it).
        @param packet: the L{provisioner.tftp.wire.ReadRequest}.
        @return: true when the handler took the request (no unicast session
            starts), false to leave it to the next handler or the server.
        """


class IImaging(Interface):
    """
    What the imagecast service offers the host lifecycle
    (C{appliance.imagecast}) for the hosts of imaging profiles: receivers'
    secrets registered at runtime, the sessions those hosts start, and what
    each host's receiver did (docs/imaging.md).
    """

    authentication = Attribute("C{imagecast.authentication}: C{secret}, C{certificate} or "
                               "C{none} (orders carry a secret only for C{secret}).")

    def addReceiver(receiverId, secret):
        """
        Accept C{secret} for the receiver C{receiverId} (and its ids
        C{receiverId:anything}) besides the receivers file.

        @return: a callable that removes the registration.
        @raise ValueError: a malformed id or a secret too short.
        """

    def controlAddress(local=None):
        """
        @param local: the appliance's address the asking machine reached
            (an HTTP request's host), used when the control channel listens
            on every address.
        @return: C{(host, port)} a receiver connects to, or L{None} when
            the channel is not listening.
        """

    def want(image, minReceivers, maxWait, receiverId):
        """
        A host (C{receiverId}, its name) of an imaging profile asked for
        its orders: the image's session starts (once C{minReceivers} are
        registered, or C{maxWait} seconds from now) unless one is waiting
        or running; its receiver, asking for C{image}, joins it.
        """

    def receivers():
        """
        @return: C{{host name: dict}}: for each receiver id (or its host
            part, before a colon) of a session kept, its newest: C{session},
            C{image}, C{session_state}, C{round}, C{received_bytes},
            C{repaired_bytes}, C{size}, C{verdict} (C{waiting}, C{receiving},
            C{complete}, C{failed}, C{lost}) and C{reason}.
        """

