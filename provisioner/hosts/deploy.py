# -*- test-case-name: tests.test_hosts -*-
"""
The deploy signal: a host becomes C{deploying} when the address its menu
(and token) went to fetches its deploy entry's kernel (or image) whole,
over TFTP or HTTP. L{deployPaths} are the paths that count (recorded with
each token); L{DeploySignal} reads every transfer the TFTP stats callback
and the HTTP fetch hook report, and hands a fetch no token claims to
discovery.
"""

from provisioner.hosts.lifecycle import DEPLOYING, FAILED, READY

__all__ = ["DeploySignal", "deployPaths"]


def _deployEntry(profile):
    """
    The entry of a profile that deploys: the default entry when it is not
    the local disk, else the first entry that is not; a profile without
    entries is its kernel (or image).

    @return: C{(kernel, image)}, either L{None}.
    """
    entries = [e for e in profile.entries if not e["local"]]
    if not profile.entries:
        return profile.kernel, (profile.image if not profile.kernel else None)
    for e in entries:
        if e["label"] == profile.default_entry:
            return e["kernel"], e["image"]
    if entries:
        return entries[0]["kernel"], entries[0]["image"]
    return None, None


def deployPaths(profile, prefix=None):
    """
    The paths a client asks for when it boots a profile's deploy entry: its
    kernel (or image) by catalogue name, with and without the images
    prefix (TFTP and HTTP paths, normalised: no leading slash).
    """
    kernel, image = _deployEntry(profile)
    name = kernel or image
    if not name:
        return []
    name = name.lstrip("/")
    paths = [name]
    if prefix:
        paths.append(prefix.strip("/") + "/" + name)
    return paths


class DeploySignal:
    """
    The transfers of one L{provisioner.hosts.book.HostBook}: it asks the
    book's L{provisioner.hosts.tokens.TokenLedger} which boot a fetch
    belongs to, moves that host with the book's C{_transition} (so the line
    is the book's), and gives the book's
    L{provisioner.hosts.discovery.Discovery} the rest.
    """

    def __init__(self, book):
        self.book = book

    def fetched(self, protocol, ip, path, outcome="complete"):
        """
        See L{provisioner.hosts.book.HostBook.fetched}.
        """
        book = self.book
        if not book.loaded or outcome != "complete" or not ip or not path:
            return
        book.sync()
        now = book.clock.seconds()
        path = path.lstrip("/")
        token = book._ledger.deploying(ip, path, now)
        if token is not None:
            record = book.hosts.get(token.host)
            if record is not None and record.state in (READY, FAILED):
                book._transition(record, DEPLOYING, "booted its deploy entry: fetched %s over "
                                 "%s from %s" % (path, protocol, ip), now)
            return
        book._discovery.fetched(protocol, ip, path, now)
