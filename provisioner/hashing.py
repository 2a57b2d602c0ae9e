# -*- test-case-name: tests.test_files -*-
"""
Hashing files by range, off any reactor: shared by the appliance (the
image catalogue, the imagecast sender) and the client programs (the
receivers' verification).
"""

import hashlib
import os

__all__ = ["hashRange", "sha256File"]


def hashRange(path, digest, start, end=None, piece=1 << 20):
    """
    Feed bytes C{start} to C{end} (the end of the file: L{None}) of the file
    at C{path} to C{digest}, read in C{piece} pieces; return C{digest}
    (blocking: call it from a thread in a service).

    @raise EOFError: if the file ends before C{end}.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        offset = start
        while end is None or offset < end:
            data = os.pread(fd, piece if end is None else min(piece, end - offset), offset)
            if not data:
                if end is None:
                    break
                raise EOFError("%s: short read at %d while hashing" % (path, offset))
            digest.update(data)
            offset += len(data)
    finally:
        os.close(fd)
    return digest


def sha256File(path, digest=None, offset=0):
    """
    Return the hex sha256 of a file from C{offset} on, read in 1 MiB pieces
    (blocking: call it from a thread in a service).

    @param digest: a sha256 object that already holds the first C{offset}
        bytes (a receiver that hashed the in-order prefix as it arrived).
    """
    return hashRange(path, digest or hashlib.sha256(), offset).hexdigest()
