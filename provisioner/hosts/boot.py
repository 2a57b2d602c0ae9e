# -*- test-case-name: tests.test_hosts -*-
"""
The boot decisions: what the lifecycle tells the menus renderer about one
boot of a client (L{BootDecisions}, answered as a L{BootDecision}). A host
with a profile boots its local disk once C{deployed}, else its deploy
entry with a fresh per-boot token and the URL its booted system calls
back; a machine no inventory names is recorded as discovered.
"""

from urllib.parse import quote

from provisioner.hosts.deploy import deployPaths
from provisioner.hosts.lifecycle import DEPLOYED, READY
from provisioner.hosts.tokens import PREVIEW_TOKEN

__all__ = ["BootDecision", "BootDecisions"]


def _callbackURL(server, name):
    base = (server or {}).get("http_url")
    if not base:
        return None
    return "%s/api/v1/hosts/%s/callback" % (base.rstrip("/"), quote(name, safe=""))


class BootDecision:
    """
    What the lifecycle says about one boot of a host, for the menus
    renderer.

    @ivar name: the host.
    @ivar state: its lifecycle state.
    @ivar bootLocal: serve the local-disk entry (it is C{deployed}).
    @ivar token: the per-boot token to put on the kernel command line, or
        L{None}.
    @ivar callbackURL: where the booted system calls back, or L{None} when
        the HTTP address is not known.
    """

    def __init__(self, name, state, bootLocal=False, token=None, callbackURL=None):
        self.name = name
        self.state = state
        self.bootLocal = bootLocal
        self.token = token
        self.callbackURL = callbackURL

    def key(self):
        """
        What the rendered menu depends on (a part of the renderer's cache
        key).
        """
        return (self.name, self.state, self.bootLocal, self.token, self.callbackURL)

    def __repr__(self):
        return "<BootDecision %s %s local=%s token=%s>" % (
            self.name, self.state, self.bootLocal, "yes" if self.token else "no")


class BootDecisions:
    """
    The renderer's questions to one L{provisioner.hosts.book.HostBook}. New
    hosts are made by the book's C{_newHost} (its log line), tokens minted
    by its L{provisioner.hosts.tokens.TokenLedger}, machines recorded by its
    L{provisioner.hosts.discovery.Discovery}.
    """

    def __init__(self, book):
        self.book = book

    def adoption(self, mac):
        """
        See L{provisioner.hosts.book.HostBook.adoption}.
        """
        book = self.book
        if not book.loaded or not mac:
            return None
        name = book._adoptedByMAC.get(mac)
        if name is None:
            return None
        record = book.hosts[name]
        return record.name, record.profile

    def decide(self, facts, resolution, server=None, peer=None, preview=False):
        """
        See L{provisioner.hosts.book.HostBook.boot}.
        """
        book = self.book
        if not book.loaded:
            return None
        book.sync()
        now = book.clock.seconds()
        ip = peer or facts.ip
        host = resolution.host
        if host is None:
            if not preview and facts.mac:
                book._discovery.learn(ip, facts.mac)
                book._discovery.seen(facts.mac, ip, None, facts, now)
            return None
        if resolution.profile is None:
            return None
        if not preview and ip and facts.mac:
            book._discovery.learn(ip, facts.mac)
        record = book.hosts.get(host.name)
        if record is None:
            if preview:
                return BootDecision(host.name, READY, False, PREVIEW_TOKEN,
                                    _callbackURL(server, host.name))
            record, _ = book._newHost(host.name, host.macs, "the inventory names it with "
                                      "profile %s" % (resolution.profile.name,), now=now)
        if record.state == DEPLOYED:
            return BootDecision(record.name, record.state, bootLocal=True)
        if preview:
            token = PREVIEW_TOKEN
        else:
            paths = deployPaths(resolution.profile, (server or {}).get("images_prefix"))
            token = book._ledger.mint(record.name, ip, paths, now)
        return BootDecision(record.name, record.state, False, token,
                            _callbackURL(server, record.name))
