# -*- test-case-name: tests.test_tftp_write -*-
"""
Uploads (WRQ), off by default (C{tftp.write.enabled}).

An upload lands in C{tftp.write.directory}, never in the served root. It is
written to a temporary file next to its final name (C{.NAME.XXXXXXXX.part})
and linked to the final name only when the last block has arrived; an
existing file is never overwritten (C{link} fails on an existing name, so
two concurrent uploads of one name cannot both win). A failed or abandoned
upload leaves nothing behind.

Nothing is created through a path string: the upload directory is held as
a descriptor (L{provisioner.files.RootHandle}), the subdirectory an upload
names is opened below it with the confinement checked by the kernel
(L{provisioner.confine}: a symlink is followed only while it stays inside;
a missing subdirectory is refused, never created), and the temporary file
is created (C{O_CREAT | O_EXCL | O_NOFOLLOW}), linked to its final name and
removed relative to that subdirectory's descriptor (C{openat}, C{linkat},
C{unlinkat}). A subdirectory swapped for a symlink while an upload runs
cannot redirect it: the upload lands in the directory that was opened.

L{UploadTarget} keeps the limits a peer could otherwise push: a quota on the
directory (the bytes of the files in it plus those of uploads in flight,
C{tftp.write.max_total_bytes}: ERROR 3), uploads in flight per address
(C{tftp.write.max_per_client}: ERROR 2), and names the file system could not
take (a component over L{MAX_NAME} bytes: ERROR 2). Nothing a client names
raises anything but a L{provisioner.errors.BackendError}.

L{WriteSession} is the receiving side of RFC 1350 (plus RFC 2347 options
and an RFC 7440 window: it acknowledges every C{windowsize} blocks, and
the last in-order block once per gap), with dally after the final ACK: a
repeated last DATA gets the final ACK again. Until the client has sent its
first DATA it may be an address that never asked (a spoofed WRQ), so, as
for reads (L{provisioner.tftp.session}), the ACK 0 or OACK is resent after
at most C{unansweredTimeout} seconds whatever C{timeout} was negotiated, at
most C{unansweredRetries} times, and only while the bytes sent stay within
L{AMPLIFICATION} times the request's.
"""

import errno
import os
import secrets
import stat
import time

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from provisioner import errors
from provisioner.files import MAX_PATH, RootHandle
from provisioner.tftp import wire
from provisioner.tftp.transfer import AMPLIFICATION, MAX_BACKOFF, SessionEnding, SessionStats
from provisioner.tftp.udp import defaultSender

__all__ = ["UploadTarget", "Upload", "WriteSession", "MAX_NAME"]

# The longest path component accepted (bytes, UTF-8): the temporary name
# (".NAME.XXXXXXXX.part") must still fit the file system's 255.
MAX_NAME = 255 - len("..XXXXXXXX.part")

# Errors of creating the temporary file that mean "this name cannot be
# made here" (the client's doing): ERROR 2, not a server error.
_NAME_ERRNOS = (errno.ENAMETOOLONG, errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR,
                errno.EISDIR, errno.ELOOP, errno.EINVAL, errno.EROFS)

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_PATH = getattr(os, "O_PATH", 0o10000000)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)

# Temporary names tried before giving up (each has 32 random bits).
_TEMP_TRIES = 100


class _MonotonicClock:
    def seconds(self):
        return time.monotonic()


class Upload:
    """
    One upload in progress: a temporary file and its final name, both in
    one directory held as a descriptor.

    @ivar fd: the temporary file, open for writing (L{None} once ended).
    @ivar dirFd: the descriptor of the directory both names are in
        (C{O_PATH}; closed when the upload ends).
    @ivar tempName: the temporary file's name in that directory.
    @ivar finalName: the final name in that directory.
    @ivar temp: the temporary file's path, for messages.
    @ivar final: the final path, for messages.
    @ivar identity: C{(st_dev, st_ino)} of the temporary file.
    """

    def __init__(self, fd, dirFd, tempName, finalName, target=None, host=None,
                 directory=""):
        """
        @param target: the L{UploadTarget} that counts this upload against
            its quota and per-client limit, or L{None}.
        @param host: the client's address (for the per-client count).
        @param directory: the directory's path, for messages.
        """
        self.fd = fd
        self.dirFd = dirFd
        self.tempName = tempName
        self.finalName = finalName
        self.temp = os.path.join(directory, tempName)
        self.final = os.path.join(directory, finalName)
        st = os.fstat(fd)
        self.identity = (st.st_dev, st.st_ino)
        self.size = 0
        self.target = target
        self.host = host
        self.ended = False

    def room(self):
        """
        How many more bytes the quota lets this upload write, or L{None}
        (no quota).
        """
        if self.target is None:
            return None
        return self.target.room()

    def write(self, data):
        """
        Append bytes.

        @raise errors.DiskFull: no space left, or the directory's quota
            reached.
        """
        if self.target is not None:
            self.target.reserve(self, len(data))
        try:
            view = memoryview(data)
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise errors.DiskFull("disk full")
            raise
        self.size += len(data)

    def commit(self):
        """
        Give the file its final name (C{linkat} in its directory: an
        existing name, even a symlink, is never replaced or followed).

        @raise errors.FileExists: the name was taken meanwhile.
        """
        fd, self.fd = self.fd, None
        kept = False
        try:
            if fd is not None:
                os.close(fd)
            os.link(self.tempName, self.finalName, src_dir_fd=self.dirFd,
                    dst_dir_fd=self.dirFd, follow_symlinks=False)
            kept = True
        except FileExistsError:
            raise errors.FileExists("file already exists")
        finally:
            self._unlink()
            self._end(kept)

    def abort(self):
        """
        Drop the temporary file.
        """
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)
        self._unlink()
        self._end(False)

    def _end(self, kept):
        if self.ended:
            return
        self.ended = True
        dirFd, self.dirFd = self.dirFd, None
        if dirFd is not None:
            os.close(dirFd)
        if self.target is not None:
            self.target.ended(self, kept)

    def _unlink(self):
        if self.dirFd is None:
            return
        try:
            os.unlink(self.tempName, dir_fd=self.dirFd)
        except OSError:
            pass


class UploadTarget:
    """
    The upload directory and its limits.

    @ivar directory: the real path of the upload directory (created if
        missing when the target is made; one removed and made again later
        is opened again at the next upload, one that is missing refuses
        uploads).
    @ivar handle: the L{RootHandle} of the directory (uploads are created
        below its descriptor, never through a path).
    @ivar maxBytes: the largest upload accepted.
    @ivar maxTotalBytes: the quota: the files in the directory plus the
        uploads in flight (bytes), or L{None} (none).
    @ivar maxPerClient: uploads in flight at once from one address, or
        L{None} (no limit).
    @ivar stored: bytes of the files in the directory, as of the last scan
        (when the target was made, and again, at most every
        C{rescanInterval} seconds, when the quota would refuse an upload:
        files an operator deleted give their room back) plus the uploads
        kept since.
    @ivar inFlight: the L{Upload}s not ended yet.
    """

    def __init__(self, directory, maxBytes=1 << 32, maxTotalBytes=None, maxPerClient=None,
                 clock=None, rescanInterval=10.0):
        os.makedirs(directory, exist_ok=True)
        self.handle = RootHandle(directory, "inside")
        self.directory = self.handle.path
        self.maxBytes = maxBytes
        self.maxTotalBytes = maxTotalBytes
        self.maxPerClient = maxPerClient
        self.clock = clock if clock is not None else _MonotonicClock()
        self.rescanInterval = rescanInterval
        self.inFlight = set()
        self._inFlightBytes = 0
        self._perClient = {}
        self.stored = 0
        self._scanned = None
        self.rescan()

    def configure(self, maxBytes, maxTotalBytes=None, maxPerClient=None):
        """
        New limits (a reload); uploads in flight stay counted.
        """
        self.maxBytes = maxBytes
        self.maxTotalBytes = maxTotalBytes
        self.maxPerClient = maxPerClient

    def rescan(self):
        """
        Count the bytes of the regular files in the directory (walked by
        descriptor: symbolic links are not followed, not even one swapped
        in meanwhile; the temporary files of uploads in flight are counted
        with those).
        """
        temps = {u.identity for u in self.inFlight}
        total = 0
        try:
            root = self.handle.current()
        except OSError:
            root = None
        if root is not None:
            for _, _, files, dirFd in os.fwalk(".", dir_fd=root.fileno()):
                for name in files:
                    try:
                        st = os.stat(name, dir_fd=dirFd, follow_symlinks=False)
                    except OSError:
                        continue
                    if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in temps:
                        total += st.st_size
        self.stored = total
        self._scanned = self.clock.seconds()

    def used(self):
        """
        Bytes counted against the quota: stored plus in flight.
        """
        return self.stored + self._inFlightBytes

    def room(self):
        """
        Bytes left under the quota, or L{None} (no quota).
        """
        if self.maxTotalBytes is None:
            return None
        return max(0, self.maxTotalBytes - self.used())

    def _full(self, more):
        """
        Whether C{more} bytes would pass the quota (rescanning first, at
        most every C{rescanInterval} seconds, if they would).
        """
        if self.maxTotalBytes is None:
            return False
        if self.used() + more <= self.maxTotalBytes:
            return False
        now = self.clock.seconds()
        if self._scanned is None or now - self._scanned >= self.rescanInterval:
            self.rescan()
        return self.used() + more > self.maxTotalBytes

    def reserve(self, upload, n):
        """
        Count C{n} more bytes of an upload in flight.

        @raise errors.DiskFull: the quota would be passed.
        """
        if n and self._full(n):
            raise errors.DiskFull("upload quota reached")
        self._inFlightBytes += n

    def ended(self, upload, kept):
        """
        An upload ended: its bytes leave the in-flight count (and join the
        stored ones if it was kept); its client has one upload less.
        """
        if upload not in self.inFlight:
            return
        self.inFlight.discard(upload)
        self._inFlightBytes -= upload.size
        if kept:
            self.stored += upload.size
        n = self._perClient.get(upload.host, 0) - 1
        if n > 0:
            self._perClient[upload.host] = n
        else:
            self._perClient.pop(upload.host, None)

    def _checkName(self, path):
        if len(path) > MAX_PATH:
            raise errors.AccessViolation("name too long")
        try:
            parts = [part.encode("utf-8") for part in path.split("/")]
        except UnicodeEncodeError:
            raise errors.AccessViolation("name not allowed")
        for part in parts:
            if not part or part.startswith(b"."):
                raise errors.AccessViolation("name not allowed")
            if len(part) > MAX_NAME:
                raise errors.AccessViolation("name too long")

    def open(self, path, peer=None):
        """
        Start an upload of a normalised C{path} for the client at C{peer}
        (C{(host, port)}, or L{None}).

        @raise errors.AccessViolation: outside the directory, a missing
            subdirectory, a hidden or too long name, too many uploads from
            this address.
        @raise errors.FileExists: the name exists.
        @raise errors.DiskFull: the directory's quota is reached.
        """
        self._checkName(path)
        host = peer[0] if peer is not None else None
        if self.maxPerClient is not None and \
                self._perClient.get(host, 0) >= self.maxPerClient:
            raise errors.AccessViolation("too many uploads from this address")
        if self._full(1):
            raise errors.DiskFull("upload quota reached")
        parent, _, name = path.rpartition("/")
        dirFd = self._openDirectory(parent)
        try:
            try:
                os.stat(name, dir_fd=dirFd, follow_symlinks=False)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise errors.AccessViolation("cannot create %s: %s" % (name[:64], e.strerror))
            else:
                raise errors.FileExists("file already exists")
            fd, temp = self._createTemp(dirFd, name)
        except BaseException:
            os.close(dirFd)
            raise
        try:
            upload = Upload(fd, dirFd, temp, name, self, host,
                            os.path.join(self.directory, parent))
        except BaseException:
            os.close(fd)
            _unlinkQuietly(temp, dirFd)
            os.close(dirFd)
            raise
        self.inFlight.add(upload)
        self._perClient[host] = self._perClient.get(host, 0) + 1
        return upload

    def _openDirectory(self, parent):
        """
        Open the subdirectory C{parent} (relative, C{""} for the directory
        itself) below the upload directory, confined by the kernel.

        @return: an C{O_PATH} descriptor the caller closes.
        @raise errors.AccessViolation: outside the directory (a symlink
            leading out), missing, or not a directory.
        """
        try:
            root = self.handle.current()
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.EXDEV):
                raise errors.AccessViolation("the upload directory is now a symlink")
            raise errors.AccessViolation("no upload directory")
        try:
            return root.open(parent or ".", _O_PATH | _O_DIRECTORY)
        except OSError as e:
            if e.errno in (errno.EXDEV, errno.ELOOP):
                raise errors.AccessViolation("outside the upload directory")
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                raise errors.AccessViolation("no such directory")
            raise errors.AccessViolation(e.strerror or "cannot open the directory")

    @staticmethod
    def _createTemp(dirFd, name):
        """
        Create C{.NAME.XXXXXXXX.part} in the directory C{dirFd} (never
        through a symlink, never over an existing name).

        @return: C{(fd, temporary name)}.
        """
        for _ in range(_TEMP_TRIES):
            temp = ".%s.%s.part" % (name, secrets.token_hex(4))
            try:
                fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC,
                             0o600, dir_fd=dirFd)
            except FileExistsError:
                continue
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise errors.DiskFull("disk full")
                if e.errno in _NAME_ERRNOS:
                    raise errors.AccessViolation("cannot create %s: %s" % (
                        name[:64], e.strerror))
                raise
            return fd, temp
        raise errors.AccessViolation("cannot create %s: no free temporary name" % (name[:64],))


def _unlinkQuietly(name, dirFd):
    try:
        os.unlink(name, dir_fd=dirFd)
    except OSError:
        pass


class _NetasciiDecoder:
    """
    Netascii to local text, streamed: CR LF to LF, CR NUL to CR.
    """

    def __init__(self):
        self._cr = False

    def feed(self, data, final=False):
        if self._cr:
            data = b"\r" + data
            self._cr = False
        if data.endswith(b"\r") and not final:
            data = data[:-1]
            self._cr = True
        return data.replace(b"\r\n", b"\n").replace(b"\r\0", b"\r")


class WriteSession(SessionEnding, DatagramProtocol):
    """
    Receives one upload from one peer.
    """

    log = Logger()
    noisy = False
    onClose = None

    def __init__(self, upload, negotiated, peer, clock, timeout=1.0, retries=6, onEnd=None,
                 path="?", netascii=False, maxBytes=1 << 32, senderFactory=None,
                 maxDuration=None, unansweredTimeout=None, unansweredRetries=None,
                 requestBytes=None):
        """
        @param unansweredTimeout: until the client has sent a DATA, the
            retransmission timeout is at most this (seconds), whatever it
            negotiated; L{None}: no cap (C{tftp.unanswered_timeout}).
        @param unansweredRetries: retransmissions of the ACK 0 or OACK
            before the client has sent a DATA (at most C{retries});
            L{None}: C{retries} (C{tftp.unanswered_retries}).
        @param requestBytes: the size of the WRQ: until the client has
            answered, a retransmission goes only while the bytes sent stay
            within L{AMPLIFICATION} times this (L{None}: no byte bound).
        """
        self.upload = upload
        self.maxDuration = maxDuration
        self.negotiated = negotiated
        self.peer = (peer[0], peer[1])
        self.clock = clock
        self.blksize = negotiated.blksize
        self.windowsize = max(1, negotiated.windowsize)
        self.timeout = float(negotiated.timeout) if negotiated.timeout else float(timeout)
        self.maxRetries = retries
        self.retriesLeft = retries
        # Until the client answers (its first DATA): the capped timeout,
        # retries and byte budget.
        self.answered = False
        self.firstTimeout = self.timeout
        if unansweredTimeout is not None:
            self.firstTimeout = min(self.timeout, float(unansweredTimeout))
        if unansweredRetries is not None:
            self.retriesLeft = max(0, min(retries, unansweredRetries))
        self.budget = AMPLIFICATION * requestBytes if requestBytes else None
        self.unansweredBytes = 0
        self.backoff = 1
        self.onEnd = onEnd
        self.maxBytes = maxBytes
        self.decoder = _NetasciiDecoder() if netascii else None
        self.senderFactory = senderFactory or defaultSender
        self.expected = 1       # next block wanted (32-bit)
        self.inWindow = 0
        self.gapAcked = None
        self.done = False
        self.finalBlock = None
        self.lastSent = None
        self.sender = None
        self.stats = SessionStats(self.peer, path, "write", negotiated.tsize)
        self.stats.blksize = self.blksize
        self.stats.windowsize = self.windowsize
        self._timer = None

    def startProtocol(self):
        self.sender = self.senderFactory(self.transport, self.peer)
        self.stats.started = self.clock.seconds()
        self._startLimit()
        tsize = self.negotiated.tsize
        if tsize is not None and tsize > self.maxBytes:
            self._fail(wire.ERR_DISK_FULL, "upload too large", "refused")
            return
        room = self.upload.room()
        if tsize is not None and room is not None and tsize > room:
            self._fail(wire.ERR_DISK_FULL, "upload quota reached", "refused")
            return
        if self.negotiated.oack:
            self._send(wire.OptionAck(self.negotiated.oack).to_wire())
        else:
            self._send(wire.encodeAck(0))
        self._arm()

    def stopProtocol(self):
        self._cancelTimers()

    def _send(self, datagram):
        self.lastSent = datagram
        self._sendCounted(datagram)

    def _sendCounted(self, datagram):
        if not self.answered:
            self.unansweredBytes += len(datagram)
        self.sender.send(datagram)

    def _arm(self, delay=None):
        if delay is None:
            delay = (self.timeout if self.answered else self.firstTimeout) * self.backoff
        if self._timer is not None and self._timer.active():
            self._timer.reset(delay)
        else:
            self._timer = self.clock.callLater(delay, self._timedOut)

    def _cancelTimers(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timedOut(self):
        self._timer = None
        if self.done:
            self._close()
            return
        self.stats.timeouts += 1
        if self.retriesLeft <= 0:
            self._finish("timeout", "no DATA after block %d" % (self.expected - 1,))
            self._close()
            return
        self.retriesLeft -= 1
        self.backoff = min(self.backoff * 2, MAX_BACKOFF)
        self.gapAcked = None
        self.inWindow = 0
        if self.lastSent is not None and self._withinBudget(self.lastSent):
            self._sendCounted(self.lastSent)
        self._arm()

    def _withinBudget(self, datagram):
        """
        Whether C{datagram} may be resent: always once the client has
        answered; before, only while the bytes sent stay within
        L{AMPLIFICATION} times the request's.
        """
        return self.answered or self.budget is None or \
            self.unansweredBytes + len(datagram) <= self.budget

    def datagramReceived(self, data, addr):
        if addr[1] != self.peer[1] or addr[0] != self.peer[0]:
            if not (len(data) >= 2 and data[0] == 0 and data[1] == wire.ERROR):
                try:
                    self.transport.write(wire.Error(wire.ERR_UNKNOWN_TID,
                                                    "unknown transfer ID").to_wire(), addr)
                except Exception:
                    pass
            return
        if len(data) >= 4 and data[0] == 0 and data[1] == wire.DATA:
            if not self.answered:
                self.answered = True
                self.retriesLeft = self.maxRetries
            self._data((data[2] << 8) | data[3], data[4:])
            return
        try:
            packet = wire.decode(data)
        except wire.WireError:
            return
        if isinstance(packet, wire.Error) and not self.done:
            self._finish("aborted", "client sent ERROR %d %s" % (packet.code, packet.message))
            self._close()

    def _data(self, block, payload):
        if self.done:
            # Dally: the client did not get our final ACK.
            if self.finalBlock is not None and block == self.finalBlock & 0xFFFF:
                self.sender.send(wire.encodeAck(self.finalBlock))
            return
        if len(payload) > self.blksize:
            self._fail(wire.ERR_ILLEGAL_OP, "DATA larger than blksize", "error")
            return
        expected = self.expected
        if (block - expected) & 0xFFFF != 0:
            if self.gapAcked != expected:
                self.gapAcked = expected
                self.inWindow = 0
                self.stats.losses += 1
                self._send(wire.encodeAck(expected - 1))
            else:
                self.stats.duplicates += 1
            return
        final = len(payload) < self.blksize
        if self.decoder is not None:
            payload = self.decoder.feed(payload, final)
        if self.upload.size + len(payload) > self.maxBytes:
            self._fail(wire.ERR_DISK_FULL, "upload too large", "error")
            return
        try:
            self.upload.write(payload)
        except errors.DiskFull as e:
            self._fail(wire.ERR_DISK_FULL, str(e) or "disk full", "error")
            return
        except OSError as e:
            self._fail(wire.ERR_NOT_DEFINED, "write error", "error", str(e))
            return
        self.stats.blocks += 1
        self.expected = expected + 1
        self.gapAcked = None
        self.retriesLeft = self.maxRetries
        self.backoff = 1
        self.inWindow += 1
        if final:
            try:
                self.upload.commit()
            except errors.FileExists:
                self._fail(wire.ERR_FILE_EXISTS, "file already exists", "error", abort=False)
                return
            except OSError as e:
                self._fail(wire.ERR_NOT_DEFINED, "write error", "error", str(e), abort=False)
                return
            self.finalBlock = expected
            self.sender.send(wire.encodeAck(expected))
            self.stats.bytes = self.upload.size
            self._finish("complete")
            # Dally: stay to repeat the final ACK if it was lost.
            self._arm(self.timeout * 2)
            return
        if self.inWindow >= self.windowsize:
            self.inWindow = 0
            self._send(wire.encodeAck(expected))
        self._arm()

    def _fail(self, code, message, outcome, detail=None, abort=True):
        try:
            self.sender.send(wire.Error(code, message).to_wire())
        except Exception:
            pass
        if abort:
            self.upload.abort()
        self._finish(outcome, detail or message)
        self._close()

    def cancel(self, reason="cancelled"):
        if not self.done:
            self._finish("cancelled", reason)
        self._close()

    def _finish(self, outcome, detail=""):
        if self.done:
            return
        self.done = True
        if outcome != "complete":
            self.upload.abort()
        stats = self.stats
        stats.ended = self.clock.seconds()
        stats.outcome = outcome
        stats.detail = detail
        if not stats.bytes:
            stats.bytes = self.upload.size
        self._reportEnd(stats)
