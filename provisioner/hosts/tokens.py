# -*- test-case-name: tests.test_hosts -*-
"""
Per-boot tokens. Each boot of a host's deploy entry gets a fresh token on
its kernel command line; the booted system calls back with it. A token is
kept only as its SHA-256 (L{digest}), with the host, the address the menu
went to and the deploy entry's paths (so that the fetch of that kernel can
be put to the host: L{TokenLedger.deploying}).

L{TokenLedger} keeps a host book's tokens, checks the one a callback
carries (L{TokenLedger.refusal}), uses up a host's tokens when its boot is
over and forgets the oldest.
"""

import collections
import hashlib

from provisioner.store.records import Token

__all__ = ["TokenLedger", "PREVIEW_TOKEN", "TOKENS_PER_HOST", "digest"]

#: what previews (the JSON API, C{provisioner render}) show instead of a token
PREVIEW_TOKEN = "PER-BOOT-TOKEN"

#: live tokens kept per host: a boot may fetch its menu more than once
#: (a probe, then the transfer); the newest few are valid
TOKENS_PER_HOST = 4


def digest(token):
    """
    The SHA-256 (hex) under which a token is kept: the token itself is
    never stored.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenLedger:
    """
    The tokens of one L{provisioner.hosts.book.HostBook}, indexed by digest,
    by host and by address.

    It reads the book's C{store}, C{tokenTTL} and C{maxTokens} when it needs
    them (L{HostBook.configure} may change them), and saves through the
    book's C{_write} (so a failed write is logged as the book's).

    @ivar tokens: C{{digest: Token}}, oldest first.
    """

    def __init__(self, book, newToken):
        """
        @param book: the owning host book.
        @param newToken: a callable returning a fresh token.
        """
        self.book = book
        self.newToken = newToken
        self.tokens = collections.OrderedDict()
        self._byIP = {}
        self._byHost = {}

    def restore(self, tokens):
        """
        Take the tokens the store holds (at start), instead of any in
        memory.
        """
        self.tokens = collections.OrderedDict()
        self._byIP = {}
        self._byHost = {}
        for token in sorted(tokens, key=lambda t: t.minted):
            self._remember(token)

    def _remember(self, token):
        self.tokens[token.digest] = token
        self._byHost.setdefault(token.host, collections.OrderedDict())[token.digest] = token
        if token.ip:
            self._byIP.setdefault(token.ip, set()).add(token.digest)

    def _drop(self, digests):
        for d in digests:
            token = self.tokens.pop(d, None)
            if token is None:
                continue
            same = self._byHost.get(token.host)
            if same is not None:
                same.pop(d, None)
                if not same:
                    del self._byHost[token.host]
            if token.ip:
                same = self._byIP.get(token.ip)
                if same is not None:
                    same.discard(d)
                    if not same:
                        del self._byIP[token.ip]

    def mint(self, name, ip, paths, now):
        """
        A fresh token for a boot of host C{name} at C{ip} whose deploy entry
        is fetched by C{paths}; the host's live tokens beyond
        L{TOKENS_PER_HOST} are forgotten.

        @return: the token (its digest is saved).
        """
        book = self.book
        token = self.newToken()
        record = Token(digest=digest(token), host=name, minted=now, expires=now + book.tokenTTL,
                       used=None, ip=ip, paths=list(paths))
        self._remember(record)
        book._write(book.store.saveToken(record), "a token of %s" % (name,))
        live = [d for d, t in self._byHost[name].items() if t.used is None]
        self.prune(now, live[:-TOKENS_PER_HOST])
        return token

    def prune(self, now, extra=()):
        """
        Forget C{extra}, the oldest tokens expired for more than a TTL
        (until then they are refused as expired, not unknown), and the
        oldest beyond C{maxTokens}. Tokens are kept oldest first, so this
        costs what it forgets.
        """
        book = self.book
        gone = set(extra)
        for d, token in self.tokens.items():
            if token.expires + book.tokenTTL > now:
                break
            gone.add(d)
        excess = len(self.tokens) - len(gone) - book.maxTokens
        for d in self.tokens:
            if excess <= 0:
                break
            if d not in gone:
                gone.add(d)
                excess -= 1
        if gone:
            gone = sorted(gone)
            self._drop(gone)
            book._write(book.store.forgetTokens(gone), "forgotten tokens")

    def useUp(self, name, now):
        """
        Use up every live token of a host (its boot is over).

        @return: the store's Deferreds.
        """
        book = self.book
        used = []
        for token in self._byHost.get(name, {}).values():
            if token.used is None:
                token.used = now
                used.append(book._write(book.store.saveToken(token), "a token of %s" % (name,)))
        return used

    def refusal(self, name, token, now):
        """
        What is wrong with the token a callback for host C{name} carries.

        @return: why it is refused, or L{None} when it is one minted for
            this host, unused and unexpired.
        """
        found = self.tokens.get(digest(token)) if token else None
        if not token:
            return "no token"
        if found is None:
            return "unknown token"
        if found.host != name:
            return "the token is another host's"
        if found.used is not None:
            return "the token was already used"
        if found.expires <= now:
            return "the token expired"
        return None

    def deploying(self, ip, path, now):
        """
        The token of the boot that a complete fetch of C{path} by C{ip}
        belongs to: the newest minted for that address, live, whose deploy
        entry is fetched by C{path}.

        @return: a L{Token}, or L{None}.
        """
        for d in sorted(self._byIP.get(ip, ()), key=lambda d: -self.tokens[d].minted):
            token = self.tokens[d]
            if token.used is not None or token.expires <= now or path not in token.paths:
                continue
            return token
        return None
