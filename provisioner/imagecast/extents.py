# -*- test-case-name: tests.test_imagecast_sparse -*-
"""
The data extents and the holes of a sparse image (C{SEEK_DATA} and
C{SEEK_HOLE}): what of an image crosses the wire (docs/imagecast.md,
I{Sparse images}).

A hole reads as zeros by definition, so the sender announces the holes
once per connection (C{Pieces.holes}), schedules only the data extents in
its rounds, and each receiver zeroes the holes on its output itself. A
file system without C{SEEK_DATA} (or one that answers that the whole
file is data, as Linux's generic implementation does) gives no holes: the
image is sent whole, as before.

Pure functions of a descriptor (a few C{lseek} calls per extent); the
sender's side only (the receiver is told the holes, it never looks for
them).
"""

import errno
import os

from provisioner.imagecast import ranges as R

__all__ = ["MAX_HOLES", "MIN_HOLE", "dataExtents", "findHoles", "largestHoles"]

#: the most holes announced for one image; beyond it the smallest holes
#: are sent as data (zeros), so that the list stays small (a few bytes a
#: hole, once per connection)
MAX_HOLES = 1 << 16

#: holes shorter than this are sent as data: a hole costs a range in the
#: announcement and splits the rounds' ranges, and a few KiB of zeros cost
#: less than that
MIN_HOLE = 64 << 10


def dataExtents(fd, size):
    """
    The data extents of the first C{size} bytes of the file open on C{fd}
    (C{SEEK_DATA}/C{SEEK_HOLE}; the descriptor's offset is moved).

    @return: normalised C{(start, end)} ranges; C{[(0, size)]} when the
        file system cannot tell (no C{SEEK_DATA}), C{[]} for an image of
        holes only.
    """
    if size <= 0:
        return []
    whole = [(0, size)]
    seekData = getattr(os, "SEEK_DATA", None)
    seekHole = getattr(os, "SEEK_HOLE", None)
    if seekData is None or seekHole is None:
        return whole
    out = []
    at = 0
    try:
        while at < size:
            try:
                start = os.lseek(fd, at, seekData)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    break  # no data from here to the end of the file
                raise
            if start >= size:
                break
            end = min(size, os.lseek(fd, start, seekHole))
            if end <= start:
                # a file system that contradicts itself: take the rest as data
                end = size
            out.append((start, end))
            at = end
    except OSError:
        return whole
    return R.normalise(out)


def largestHoles(holes, most=MAX_HOLES, minimum=MIN_HOLE):
    """
    The holes worth announcing: at least C{minimum} bytes, the C{most}
    largest (the others are sent as data: they read as zeros).

    @return: normalised ranges.
    """
    kept = [h for h in holes if h[1] - h[0] >= minimum]
    if len(kept) > most:
        kept = sorted(kept, key=lambda h: (h[0] - h[1], h[0]))[:most]
    return R.normalise(kept)


def findHoles(fd, size, most=MAX_HOLES, minimum=MIN_HOLE):
    """
    The holes of the first C{size} bytes of the file open on C{fd} that
    the sender announces (L{largestHoles} of the complement of
    L{dataExtents}).

    @return: normalised C{(start, end)} ranges; C{[]} for a file without
        holes or on a file system that cannot tell.
    """
    if size <= 0:
        return []
    holes = R.subtract([(0, size)], dataExtents(fd, size))
    return largestHoles(holes, most, minimum)
