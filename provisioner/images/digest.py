# -*- test-case-name: tests.test_images,tests.test_images_hardening -*-
"""
The digest of an image, taken only from a complete file: L{hashFile} opens
it below the directory (L{provisioner.confine}), checks no process holds it
open for writing (a read lease, where the kernel allows it), hashes it and
checks it did not change meanwhile; else L{FileBusy}, and the catalogue
looks again later.
"""

import errno
import hashlib
import os

from twisted.internet import defer

__all__ = ["hashFile", "FileBusy"]

_HASH_CHUNK = 1 << 20


class FileBusy(Exception):
    """
    The file is open for writing somewhere, or changed while it was hashed.
    """


def _tryReadLease(fd):
    """
    Return L{False} if some process has the file open for writing, else
    L{True} (also when leases are not supported: then the caller relies on
    the watcher's events alone).
    """
    try:
        import fcntl
        setlease = fcntl.F_SETLEASE
    except (ImportError, AttributeError):
        return True
    try:
        fcntl.fcntl(fd, setlease, fcntl.F_RDLCK)
    except OSError as e:
        if e.errno == errno.EAGAIN:
            return False
        return True
    try:
        fcntl.fcntl(fd, setlease, fcntl.F_UNLCK)
    except OSError:
        pass
    return True


def hashFile(root, name, cancelled=lambda: False, chunk=_HASH_CHUNK):
    """
    Open C{name} below C{root} (only a regular file, through symlinks the
    root's policy allows), check nobody is writing it, hash it and close
    it. Blocking: run it in a thread.

    @param root: a L{ConfinedRoot}.
    @return: C{(stat result, hex sha256)}.
    @raise FileBusy: it is open for writing, or changed while hashed.
    @raise NotRegularFile: it is a directory, FIFO, socket or device (it
        was not opened).
    @raise OSError: it cannot be opened (C{EXDEV}: it leads outside the
        directory; C{ELOOP}: a symlink the policy refuses) or read.
    """
    try:
        fd, before = root.openRegular(name)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
            raise FileBusy(e.strerror or "busy")
        raise
    try:
        if not _tryReadLease(fd):
            raise FileBusy("open for writing")
        digest = hashlib.sha256()
        offset = 0
        while True:
            if cancelled():
                raise defer.CancelledError()
            data = os.pread(fd, chunk, offset)
            if not data:
                break
            digest.update(data)
            offset += len(data)
        after = os.fstat(fd)
        if (offset != before.st_size or after.st_size != before.st_size or
                after.st_mtime_ns != before.st_mtime_ns):
            raise FileBusy("changed while it was hashed")
        if not _tryReadLease(fd):
            raise FileBusy("open for writing")
    finally:
        os.close(fd)
    return after, digest.hexdigest()
