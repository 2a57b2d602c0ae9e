# -*- test-case-name: tests.test_operator_auth -*-
"""
Operators: who may act from the dashboard (and from the JSON API away
from the appliance itself).

  - B{Passwords} are kept as scrypt hashes (L{hashPassword},
    L{verifyPassword}: C{hashlib.scrypt}, a random 16-byte salt per
    operator), one C{NAME HASH} line per operator in C{http.operators_file}
    (L{readOperators}); C{provisioner operator add NAME} writes them
    (L{register}).
  - B{Sessions} (L{OperatorSessions}) are kept in memory, each with its own
    CSRF token, and expire after C{http.session_lifetime} seconds.
  - B{Who may act} (L{Gate}): an address of C{hosts.admin_networks} (or the
    appliance's own), over TLS when C{http.tls_certificate} is set, with a
    live session whose operator is still in the file, and the session's
    CSRF token in the C{X-CSRF-Token} header or the C{csrf} form field.
"""

import base64
import getpass
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import sys
import tempfile

__all__ = ["hashPassword", "verifyPassword", "readOperators", "writeOperator",
           "removeOperator", "OperatorSessions", "OperatorSession", "Gate", "Refused",
           "COOKIE", "CSRF_HEADER", "register"]

#: the session cookie's name
COOKIE = b"provisioner_session"

#: the header carrying the CSRF token (or the form field C{csrf})
CSRF_HEADER = b"x-csrf-token"

#: scrypt's cost: 2**14 blocks of 128*r bytes (16 MiB), about 50 ms
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1

_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


def _b64(data):
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text):
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hashPassword(password, salt=None, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P):
    """
    The stored form of C{password}: C{scrypt$N$R$P$SALT$HASH} (base64).

    @param salt: 16 random bytes unless given (tests).
    """
    if salt is None:
        salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                            maxmem=256 * n * r + (1 << 20), dklen=32)
    return "scrypt$%d$%d$%d$%s$%s" % (n, r, p, _b64(salt), _b64(digest))


def verifyPassword(password, encoded):
    """
    Whether C{password} is the one C{encoded} (L{hashPassword}) was made
    from; anything that is not such a hash is L{False}. The comparison takes
    the same time whatever the bytes.
    """
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        n, r, p = int(n), int(r), int(p)
        if scheme != "scrypt" or not (2 <= n <= 2 ** 20 and 1 <= r <= 32 and 1 <= p <= 16):
            return False
        salt, digest = _unb64(salt), _unb64(digest)
        got = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                             maxmem=256 * n * r + (1 << 20), dklen=len(digest))
    except (ValueError, TypeError, MemoryError):
        return False
    return hmac.compare_digest(got, digest)


def readOperators(path):
    """
    The operators of file C{path}: C{{name: hash}}. Blank lines and lines
    starting with C{#} are skipped.

    @raise ValueError: a line is not C{NAME HASH} (the message names it).
    @raise OSError: the file cannot be read.
    """
    out = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2 or not _NAME.match(parts[0]) or \
                    not parts[1].startswith("scrypt$"):
                raise ValueError("%s:%d: not NAME SCRYPT-HASH (make lines with provisioner "
                                 "operator add NAME)" % (path, number))
            out[parts[0]] = parts[1]
    return out


def _rewrite(path, change):
    """
    Rewrite C{path} with C{change(lines)} (its lines, kept as they are but
    the one of the operator changed), atomically, mode 0640.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        lines = ["# provisioner operators: NAME SCRYPT-HASH (provisioner operator add NAME)"]
    lines = change(lines)
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".operators-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(temporary, 0o640)
        try:
            st = os.stat(path)
            os.chown(temporary, st.st_uid, st.st_gid)
        except OSError:
            pass
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _checkName(name):
    if not _NAME.match(name or ""):
        raise ValueError("an operator's name is 1 to 64 letters, digits, '_', '.', '@' or "
                         "'-' (got %r)" % (name,))


def writeOperator(path, name, encoded):
    """
    Add operator C{name} with hash C{encoded} to file C{path}, or replace
    its hash.

    @return: whether it was there already.
    """
    _checkName(name)
    found = []

    def change(lines):
        out = []
        for line in lines:
            parts = line.split()
            if parts and parts[0] == name and not line.lstrip().startswith("#"):
                found.append(line)
                out.append("%s %s" % (name, encoded))
            else:
                out.append(line)
        if not found:
            out.append("%s %s" % (name, encoded))
        return out
    _rewrite(path, change)
    return bool(found)


def removeOperator(path, name):
    """
    Remove operator C{name} from file C{path}.

    @return: whether it was there.
    """
    found = []

    def change(lines):
        out = []
        for line in lines:
            parts = line.split()
            if parts and parts[0] == name and not line.lstrip().startswith("#"):
                found.append(line)
            else:
                out.append(line)
        return out
    _rewrite(path, change)
    return bool(found)


class OperatorSession:
    """
    One operator's login.

    @ivar id: the cookie's value (32 random bytes, URL-safe base64).
    @ivar operator: the operator's name.
    @ivar csrf: the token every action must carry.
    @ivar expires: when it ends (the clock's seconds).
    @ivar address: where the login came from.
    """

    def __init__(self, operator, expires, address):
        self.id = secrets.token_urlsafe(32)
        self.csrf = secrets.token_urlsafe(32)
        self.operator = operator
        self.expires = expires
        self.address = address

    def checkCSRF(self, token):
        """
        Whether C{token} is this session's CSRF token.
        """
        if isinstance(token, str):
            token = token.encode("utf-8", "replace")
        if not isinstance(token, bytes) or not token:
            return False
        return hmac.compare_digest(token, self.csrf.encode("ascii"))


class OperatorSessions:
    """
    The sessions, in memory, by cookie value: at most L{MAX} (the oldest is
    dropped for a new one), each expiring C{lifetime} seconds after login.

    @ivar clock: C{IReactorTime}.
    @ivar lifetime: a session's life in seconds.
    """

    MAX = 1000

    def __init__(self, clock, lifetime):
        self.clock = clock
        self.lifetime = lifetime
        self._sessions = {}

    def __len__(self):
        return len(self._sessions)

    def create(self, operator, address=None):
        """
        @return: a new L{OperatorSession} for C{operator}.
        """
        self.prune()
        while len(self._sessions) >= self.MAX:
            del self._sessions[next(iter(self._sessions))]
        session = OperatorSession(operator, self.clock.seconds() + self.lifetime, address)
        self._sessions[session.id] = session
        return session

    def get(self, sessionId):
        """
        @return: the live L{OperatorSession} of cookie value C{sessionId},
            or L{None} (unknown or expired: an expired one is forgotten).
        """
        if not sessionId:
            return None
        if isinstance(sessionId, bytes):
            sessionId = sessionId.decode("ascii", "replace")
        session = self._sessions.get(sessionId)
        if session is None:
            return None
        if session.expires <= self.clock.seconds():
            del self._sessions[sessionId]
            return None
        return session

    def end(self, sessionId):
        """
        Forget the session C{sessionId} (logout).
        """
        if isinstance(sessionId, bytes):
            sessionId = sessionId.decode("ascii", "replace")
        return self._sessions.pop(sessionId, None) is not None

    def endOperator(self, operator):
        """
        Forget every session of C{operator}.
        """
        for key in [k for k, s in self._sessions.items() if s.operator == operator]:
            del self._sessions[key]

    def prune(self):
        """
        Forget the expired sessions.
        """
        now = self.clock.seconds()
        for key in [k for k, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[key]


class Refused(Exception):
    """
    An action or a login refused: C{code} (401 or 403) and why.
    """

    def __init__(self, code, message):
        Exception.__init__(self, message)
        self.code = code


def _plain(address):
    ip = ipaddress.ip_address(address)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip


def isAdminAddress(networks, address, local=None):
    """
    Whether C{address} is in C{networks} (strings or networks) or is
    C{local} (the appliance's own address the connection reached).
    """
    try:
        ip = _plain(address)
    except (ValueError, TypeError):
        return False
    if local:
        try:
            if ip == _plain(local):
                return True
        except ValueError:
            pass
    for network in networks or ():
        try:
            if ip in ipaddress.ip_network(network, strict=False):
                return True
        except (ValueError, TypeError):
            continue
    return False


def isLocalAddress(address, local=None):
    """
    Whether C{address} is loopback or the appliance's own address
    C{local}: the connection comes from the appliance itself.
    """
    try:
        ip = _plain(address)
    except (ValueError, TypeError):
        return False
    if ip.is_loopback:
        return True
    try:
        return bool(local) and ip == _plain(local)
    except ValueError:
        return False


class Gate:
    """
    Who may log in and act: L{checkAddress}, L{login}, L{authorize}.

    @ivar config: a callable returning the running configuration (the
        C{http} and C{hosts} sections are read at each request: SIGHUP
        changes them).
    @ivar sessions: the L{OperatorSessions}.
    """

    def __init__(self, config, clock):
        self.config = config
        self.sessions = OperatorSessions(clock, config()["http"]["session_lifetime"])

    def reconfigure(self):
        """
        Take a reloaded C{http.session_lifetime} (sessions made after it).
        """
        self.sessions.lifetime = self.config()["http"]["session_lifetime"]

    @property
    def tls(self):
        """
        Whether the http service runs TLS (C{http.tls_certificate}).
        """
        return bool(self.config()["http"].get("tls_certificate"))

    def operators(self):
        """
        The operators of C{http.operators_file} (read at each call: C{operator
        add} takes effect at once), or C{{}} when none is set or it cannot be
        read.
        """
        path = self.config()["http"].get("operators_file")
        if not path:
            return {}
        try:
            return readOperators(path)
        except (OSError, ValueError):
            return {}

    def checkAddress(self, peer, local, secure):
        """
        @raise Refused: 403 if C{peer} is outside C{hosts.admin_networks}
            (and not the appliance's own address C{local}), or the request
            is not over TLS though TLS is configured.
        """
        if self.tls and not secure:
            raise Refused(403, "operators log in and act over TLS only (https, "
                               "http.tls_port)")
        if not isAdminAddress(self.config()["hosts"]["admin_networks"], peer, local):
            raise Refused(403, "not allowed from %s (see hosts.admin_networks)" % (peer,))

    def checkPassword(self, name, password):
        """
        @return: whether C{name} is an operator whose password is
            C{password} (an unknown name costs the same scrypt).
        """
        encoded = self.operators().get(name) if isinstance(name, str) else None
        if not isinstance(password, str):
            password = ""
        if encoded is None:
            verifyPassword(password, _DUMMY)
            return False
        return verifyPassword(password, encoded)

    def session(self, request):
        """
        The live session of C{request}'s cookie whose operator is still in
        the operators file, or L{None}.
        """
        session = self.sessions.get(request.getCookie(COOKIE))
        if session is not None and session.operator not in self.operators():
            self.sessions.endOperator(session.operator)
            return None
        return session

    def authorize(self, request, csrf, peer, local):
        """
        Check an action: its address (L{checkAddress}), its session and its
        CSRF token.

        @return: the L{OperatorSession}.
        @raise Refused: 403 (address, TLS, CSRF token) or 401 (no session).
        """
        self.checkAddress(peer, local, request.isSecure())
        session = self.session(request)
        if session is None:
            raise Refused(401, "log in as an operator first (/login)")
        if not session.checkCSRF(csrf):
            raise Refused(403, "missing or wrong CSRF token")
        return session

    def cookie(self, request, session):
        """
        Set C{session}'s cookie on C{request}'s answer (HttpOnly,
        SameSite=Strict, Secure over TLS); L{None} clears it.
        """
        secure = request.isSecure()
        if session is None:
            request.addCookie(COOKIE, b"", path=b"/", max_age=b"0", httpOnly=True,
                              secure=secure, sameSite="strict")
            return
        request.addCookie(COOKIE, session.id.encode("ascii"), path=b"/", httpOnly=True,
                          secure=secure, sameSite="strict",
                          max_age=str(int(self.sessions.lifetime)).encode("ascii"))


# a hash checked for unknown names, so that they take as long as known ones
_DUMMY = hashPassword("", salt=b"\0" * 16)


# -- the command: provisioner operator add|remove|list

def register(subparsers):
    """
    Add C{operator} to the C{provisioner} command.
    """
    op = subparsers.add_parser("operator", help="the dashboard's operators: add, remove, list")
    sub = op.add_subparsers(dest="ocommand", metavar="SUBCOMMAND")
    add = sub.add_parser("add", help="add an operator, or set its password (prompted, or the "
                         "first line of standard input when it is not a terminal)")
    add.add_argument("name", metavar="NAME", help="the operator's name")
    remove = sub.add_parser("remove", help="remove an operator (its sessions end at its next "
                            "request)")
    remove.add_argument("name", metavar="NAME", help="the operator's name")
    listing = sub.add_parser("list", help="list the operators' names")
    for parser in (add, remove, listing):
        parser.add_argument("--file", "-f", default=None, metavar="FILE",
                            help="the operators file (default: http.operators_file of "
                                 "--config)")
        parser.add_argument("--config", "-c", default=None, metavar="FILE",
                            help="the configuration naming http.operators_file")
    add.set_defaults(func=_add)
    remove.set_defaults(func=_remove)
    listing.set_defaults(func=_list)
    op.set_defaults(func=lambda args: (op.print_help(sys.stderr), 2)[1])


def _path(args):
    if args.file:
        return args.file
    if args.config:
        from provisioner.config import ConfigError, loadConfig
        try:
            path = loadConfig(args.config)["http"]["operators_file"]
        except ConfigError as e:
            raise SystemExit("provisioner operator: %s" % (e,))
        if path:
            return path
        raise SystemExit("provisioner operator: %s sets no http.operators_file" % (args.config,))
    raise SystemExit("provisioner operator: give --file FILE or --config FILE")


def _password(stdin=None):
    stdin = stdin or sys.stdin
    if stdin.isatty():
        first = getpass.getpass("password: ")
        if first != getpass.getpass("again: "):
            raise SystemExit("provisioner operator: the passwords differ")
        password = first
    else:
        password = stdin.readline().rstrip("\r\n")
    if len(password) < 8:
        raise SystemExit("provisioner operator: a password has at least 8 characters")
    return password


def _add(args):
    path = _path(args)
    try:
        _checkName(args.name)
    except ValueError as e:
        raise SystemExit("provisioner operator: %s" % (e,))
    replaced = writeOperator(path, args.name, hashPassword(_password()))
    print("%s: operator %s %s" % (path, args.name, "password changed" if replaced else "added"))
    return 0


def _remove(args):
    path = _path(args)
    if not removeOperator(path, args.name):
        print("%s: no operator %s" % (path, args.name), file=sys.stderr)
        return 1
    print("%s: operator %s removed" % (path, args.name))
    return 0


def _list(args):
    path = _path(args)
    try:
        names = readOperators(path)
    except (OSError, ValueError) as e:
        print("provisioner operator: %s" % (e,), file=sys.stderr)
        return 1
    for name in sorted(names):
        print(name)
    return 0

