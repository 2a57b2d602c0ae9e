# -*- test-case-name: tests.test_imagecast_auth -*-
"""
Who may register as an imagecast receiver (C{imagecast.authentication}):

  - C{secret} (the default): each receiver id has a secret in
    C{imagecast.receivers_file}; L{commands.Register} carries
    HMAC-SHA256(secret, nonce, id, server name)
    (L{commands.registrationProof}) over a nonce the server gave the same
    connection in L{commands.Challenge}, used once;
  - C{certificate}: the control channel is TLS with client certificates,
    and the id is the common name of the receiver's certificate (or starts
    with it and a colon);
  - C{none}: anyone who can reach the control channel registers any id
    (an explicit setting; a warning at start on a non-loopback address).

The receivers file holds one C{ID SECRET} line per receiver (C{#}
comments and blank lines allowed). A line for C{HOST} also authenticates
the ids C{HOST:anything}, the default ids of C{provisioner receive} on
that host (C{HOSTNAME:OUTPUT}). The file is read again when it changes
(its size, time or inode), so receivers are added without a reload.

Secrets are also registered at runtime (L{Authenticator.addReceiver}):
the host lifecycle gives each host of an imaging profile its own secret
in its orders (docs/imaging.md). A receiver id may then have two secrets,
its line's and the registered one: a proof under either is accepted.

Nothing here imports the reactor.
"""

import hmac
import ipaddress
import os
import socket
import stat

from twisted.logger import Logger

from provisioner.imagecast import commands

__all__ = ["Authenticator", "readSecrets", "MIN_SECRET"]

#: the shortest secret accepted (characters)
MIN_SECRET = 16


def readSecrets(path):
    """
    Read a receivers file.

    @return: C{({id: secret bytes}, [problems])}: lines that are not
        C{ID SECRET} or whose secret is shorter than L{MIN_SECRET} are
        left out and described.
    @raise OSError: if the file cannot be read.
    """
    secrets = {}
    problems = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            line = raw.decode("utf-8", "replace").strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split()
            if len(fields) != 2:
                problems.append("line %d: not 'ID SECRET'" % (number,))
                continue
            clientId, secret = fields
            if len(secret) < MIN_SECRET:
                problems.append("line %d: the secret of %s is shorter than %d characters" % (
                    number, clientId, MIN_SECRET))
                continue
            secrets[clientId] = secret.encode("utf-8")
    return secrets, problems


def _loopback(address):
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class Authenticator:
    """
    The C{imagecast.authentication} policy of the control channel: nonces
    per connection, the secrets file, certificate names.

    @ivar mode: C{secret}, C{certificate} or C{none}.
    @ivar serverName: the name proofs are bound to (C{imagecast.server_name},
        else the host name).
    """

    log = Logger()

    def __init__(self, config):
        self._nonces = {}
        self._secrets = {}
        self._registered = {}  # id -> [secret bytes], newest last
        self._stamp = None
        self._complained = None
        self.reconfigure(config)

    def reconfigure(self, config):
        """
        Take the C{imagecast} section (start and reload).
        """
        self.mode = config.get("authentication", "secret")
        self.path = config.get("receivers_file")
        self.serverName = config.get("server_name") or socket.gethostname()
        self._stamp = None
        if self.mode == "none" and not _loopback(config.get("address", "127.0.0.1")):
            self.log.warn("imagecast.authentication is none on {address}: anyone who can "
                          "reach the control channel may register as any receiver",
                          address=config.get("address"))
        if self.mode == "secret":
            self._load()

    # -- the secrets file -------------------------------------------------------

    def _load(self):
        """
        Read the receivers file again if it changed since it was last read.
        """
        path = self.path
        if not path:
            self._secrets = {}
            return
        try:
            st = os.stat(path)
        except OSError as e:
            self._complain("cannot read imagecast.receivers_file {path}: {error}", e)
            self._secrets = {}
            self._stamp = None
            return
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stamp:
            return
        try:
            secrets, problems = readSecrets(path)
        except OSError as e:
            self._complain("cannot read imagecast.receivers_file {path}: {error}", e)
            self._secrets = {}
            self._stamp = None
            return
        self._stamp = stamp
        self._secrets = secrets
        self._complained = None
        for problem in problems:
            self.log.warn("imagecast.receivers_file {path}: {problem}", path=path,
                          problem=problem)
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            self.log.warn("imagecast.receivers_file {path} may be read by others than its "
                          "owner (mode {mode:o}): chmod 600 it", path=path,
                          mode=stat.S_IMODE(st.st_mode))
        self.log.info("imagecast: {count} receiver secrets from {path}", count=len(secrets),
                      path=path)

    def _complain(self, message, error):
        text = str(error)
        if self._complained != text:
            self._complained = text
            self.log.error(message, path=self.path, error=error)

    def secretFor(self, clientId):
        """
        @return: the secret of C{clientId} in the receivers file (its own
            line, else its host's: the part before the first colon), or
            L{None}.
        """
        secret = self._secrets.get(clientId)
        if secret is None and ":" in clientId:
            secret = self._secrets.get(clientId.split(":", 1)[0])
        return secret

    def secretsFor(self, clientId):
        """
        @return: every secret that authenticates C{clientId}: the
            registered ones (L{addReceiver}) of the id, else of its host,
            then the receivers file's.
        """
        found = list(self._registered.get(clientId, ()))
        if not found and ":" in clientId:
            found = list(self._registered.get(clientId.split(":", 1)[0], ()))
        secret = self.secretFor(clientId)
        if secret is not None:
            found.append(secret)
        return found

    # -- secrets registered at runtime ------------------------------------

    def addReceiver(self, receiverId, secret):
        """
        Accept C{secret} for C{receiverId} (and, as a line of the receivers
        file, for the ids C{receiverId:anything}), besides the receivers
        file, until the returned callable is called. Nothing is written to
        disk; an appliance restarted forgets it.

        @param secret: text or bytes, at least L{MIN_SECRET} characters.
        @return: a callable that removes this registration (idempotent).
        @raise ValueError: if the id is empty or has spaces, or the secret
            is too short.
        """
        if not receiverId or any(c.isspace() for c in receiverId) or len(receiverId) > 200:
            raise ValueError("a receiver id is 1..200 characters without spaces")
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        if len(secret) < MIN_SECRET:
            raise ValueError("a receiver secret has at least %d characters" % (MIN_SECRET,))
        held = self._registered.setdefault(receiverId, [])
        held.append(secret)

        def remove():
            same = self._registered.get(receiverId)
            if same is not None and secret in same:
                same.remove(secret)
                if not same:
                    del self._registered[receiverId]
        return remove

    def registered(self):
        """
        @return: the ids with secrets registered at runtime, sorted.
        """
        return sorted(self._registered)

    # -- the exchange -------------------------------------------------------

    def challenge(self, connection):
        """
        A L{commands.Challenge}: a fresh nonce for C{connection}'s next
        L{commands.Register} (it replaces an unused one).

        @return: the answer's arguments.
        """
        nonce = os.urandom(commands.NONCE_SIZE)
        self._nonces[connection] = nonce
        return {"nonce": nonce, "server": self.serverName, "authentication": self.mode}

    def check(self, connection, clientId, proof, certificateName=None):
        """
        Whether C{connection} may register C{clientId}.

        @param proof: the L{commands.Register}'s proof, or L{None}.
        @param certificateName: the common name of the peer's TLS client
            certificate, or L{None}.
        @raise commands.NotAuthenticated: if it may not.
        """
        nonce = self._nonces.pop(connection, None)
        if self.mode == "none":
            return
        if self.mode == "certificate":
            if certificateName is None:
                raise commands.NotAuthenticated("a client certificate is required")
            if clientId != certificateName and not clientId.startswith(certificateName + ":"):
                raise commands.NotAuthenticated(
                    "the client certificate (%s) does not name %s" % (certificateName,
                                                                     clientId))
            return
        if nonce is None:
            raise commands.NotAuthenticated("no challenge: call Challenge before Register")
        if proof is None:
            raise commands.NotAuthenticated("this appliance authenticates receivers: a "
                                            "secret is needed (receive --secret-file)")
        self._load()
        candidates = self.secretsFor(clientId)
        # the comparison runs for unknown ids too (against a random key)
        good = False
        for secret in candidates or [os.urandom(32)]:
            expected = commands.registrationProof(secret, nonce, clientId, self.serverName)
            good = hmac.compare_digest(expected, bytes(proof)) or good
        if not good or not candidates:
            raise commands.NotAuthenticated("%s: wrong or unknown receiver secret" % (
                _clip(clientId),))

    def forget(self, connection):
        """
        C{connection} is gone: drop its nonce.
        """
        self._nonces.pop(connection, None)


def _clip(text, most=200):
    """
    Peer data quoted in an error the peer is sent back: at most C{most}
    characters (an AMP value holds at most 65,535 bytes).
    """
    text = str(text)
    return text if len(text) <= most else text[:most] + "..."
