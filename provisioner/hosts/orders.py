# -*- test-case-name: tests.test_imaging -*-
"""
The orders of a host whose profile images it (C{imaging} in the inventory,
docs/imaging.md): what its deploy environment asks with its per-boot token
(C{GET /api/v1/hosts/NAME/orders?token=T}) and is told as
C{provisioner.KEY=VALUE} words, one a line, which its C{/init} reads like
its kernel command line:

    provisioner.image=web.img
    provisioner.disk=/dev/vda            (or disk_min_gib=8, disk_serial=ABC123)
    provisioner.imagecast=198.18.0.1:7010  (with several appliances: the one
                                           whose session sends the image)
    provisioner.id=web01
    provisioner.secret=...               (with imagecast.authentication: secret)

The token is checked as a callback's is, but not used up (the callbacks
that follow need it). A wrong, used-up or expired token, or a host already
C{deployed}, is refused and nothing is revealed (the reason is logged).

The secret is the host's own imagecast receiver secret: minted here once
per host (kept in memory while the appliance runs, never stored) and
registered with the imagecast service through C{appliance.imaging} (an
L{provisioner.interfaces.IImaging}); so is the wish that starts the
profile's session (L{provisioner.interfaces.IImaging.want}). Nothing here
imports imagecast.
"""

import secrets

from twisted.internet import defer

from provisioner.hosts import lifecycle
from provisioner.hosts.errors import NotFound, NotReady, Refused
from provisioner.hosts.lifecycle import DEPLOYED, DEPLOYING, FAILED, READY

__all__ = ["Orders", "ordersText", "diskWords"]


def diskWords(disk):
    """
    The words that tell the deploy environment which disk to write.

    @param disk: L{provisioner.menus.inventory.Imaging.disk}: a path, or
        C{{"min_size_gib": N}} or C{{"serial": S}}.
    @return: C{[(key, value)]}.
    """
    if isinstance(disk, dict):
        if "min_size_gib" in disk:
            return [("disk_min_gib", "%g" % (disk["min_size_gib"],))]
        return [("disk_serial", disk["serial"])]
    return [("disk", disk)]


def ordersText(words):
    """
    C{[(key, value)]} as the orders document: C{provisioner.KEY=VALUE}, one
    a line.
    """
    return "".join("provisioner.%s=%s\n" % (k, v) for k, v in words)


def _sentFrom(words, holder, name, book):
    """
    C{words} with C{imagecast} pointing at C{holder} (C{(host, port)}),
    the appliance whose session sends the image, when another one does
    (several appliances on one database: docs/multi-appliance.md).
    """
    if holder is None:
        return words
    book.log.info("hosts: {host}'s image is sent by the appliance at {address}: its orders "
                  "point there", host=name, address="%s:%d" % holder)
    return [(k, "%s:%d" % holder if k == "imagecast" else v) for k, v in words]


class Orders:
    """
    The orders of one L{provisioner.hosts.book.HostBook}'s hosts. Tokens
    are checked by the book's L{provisioner.hosts.tokens.TokenLedger}; the
    imagecast side is the book's C{imaging()}.

    @ivar secrets: C{{host: secret}} minted so far.
    """

    def __init__(self, book, newSecret=None):
        """
        @param newSecret: a callable returning a fresh secret (tests);
            default 64 hexadecimal digits.
        """
        self.book = book
        self.newSecret = newSecret or (lambda: secrets.token_hex(32))
        self.secrets = {}
        self._registered = {}  # host -> (the IImaging it is registered with, removal)

    def _refusal(self, name, token, record, now):
        problem = self.book._ledger.refusal(name, token, now)
        if problem is None and record is None:
            problem = "no such host"
        elif problem is None and record.state == DEPLOYED:
            problem = "the host is deployed already"
        return problem

    def profileOf(self, name):
        """
        The profile of host C{name}: the inventory's resolution, else its
        adoption's; or L{None}.
        """
        book = self.book
        inventory = book.inventory()
        if inventory is None:
            return None
        host = inventory.hosts.get(name)
        if host is not None:
            return inventory.resolve(hostname=host.hostname).profile
        record = book.hosts.get(name)
        if record is not None and record.profile:
            return inventory.profiles.get(record.profile)
        return None

    def _secret(self, name, imaging):
        """
        The host's receiver secret, registered with C{imaging} (again, when
        the imagecast service was replaced since).
        """
        secret = self.secrets.get(name)
        if secret is None:
            secret = self.secrets[name] = self.newSecret()
        held = self._registered.get(name)
        if held is None or held[0] is not imaging:
            self._registered[name] = (imaging, imaging.addReceiver(name, secret))
        return secret

    def orders(self, name, token, peer=None, local=None):
        """
        See L{provisioner.hosts.book.HostBook.orders}.
        """
        book = self.book
        book._require()
        book.sync()
        now = book.clock.seconds()
        record = book.hosts.get(name)
        problem = self._refusal(name, token, record, now)
        if problem is not None:
            book.log.warn("hosts: orders for {host} from {peer} refused: {why}",
                          host=name, peer=peer or "?", why=problem)
            raise Refused("refused")
        profile = self.profileOf(name)
        imaging = profile.imaging if profile is not None else None
        if imaging is None:
            raise NotFound("host %s has no orders: its profile %s does not image it" % (
                name, profile.name if profile is not None else "(none)"))
        service = book.imaging()
        if service is None:
            raise NotReady("imagecast is not running: no orders for %s yet" % (name,))
        address = service.controlAddress(local)
        if address is None:
            raise NotReady("the imagecast control channel is not listening yet")
        words = [("image", imaging.image)] + diskWords(imaging.disk) + [
            ("imagecast", "%s:%d" % address), ("id", name)]
        if service.authentication == "secret":
            words.append(("secret", self._secret(name, service)))
        service.want(imaging.image, imaging.min_receivers, imaging.max_wait, name)
        where = getattr(service, "where", None)
        located = where(imaging.image) if where is not None else defer.succeed(None)
        located.addErrback(lambda f: book.log.warn(
            "hosts: where the session of {image} runs is not known ({error}): orders point "
            "at this appliance", image=imaging.image, error=f.value))
        disk = dict(diskWords(imaging.disk))
        what = "image %s onto %s, imagecast %s:%d" % (
            imaging.image, " ".join("%s=%s" % kv for kv in sorted(disk.items())), *address)
        writes = []
        if record.state in (READY, FAILED):
            writes.append(book._transition(
                record, DEPLOYING, "fetched its orders from its deploy environment at %s" % (
                    peer,), now))
        event = lifecycle.progress(name, DEPLOYING, "orders from %s: %s" % (peer, what), now)
        book._record(name, event)
        book.log.info("hosts: {host} fetched its orders from {peer}: {what}", host=name,
                      peer=peer or "?", what=what)
        writes.append(book._write(book.store.addEvent(event, book.eventsPerHost),
                                  "an event of %s" % (name,)))
        return defer.gatherResults(writes + [located], consumeErrors=True).addCallback(
            lambda results: ordersText(_sentFrom(words, results[-1], name, book)))
