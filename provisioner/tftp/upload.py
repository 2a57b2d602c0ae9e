# -*- test-case-name: tests.test_tftp_write -*-
"""
The upload directory (C{tftp.write.directory}) and the files being
uploaded into it: where a WRQ's data lands (the write session, which
receives it, is L{provisioner.tftp.write}).

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
"""

import errno
import os
import secrets
import stat
import time

from provisioner import errors
from provisioner.files import MAX_PATH, RootHandle

__all__ = ["UploadTarget", "Upload", "MAX_NAME"]

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
