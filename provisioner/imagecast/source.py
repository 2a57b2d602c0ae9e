# -*- test-case-name: tests.test_imagecast_sender -*-
"""
Where an imagecast session's image comes from: the image catalogue (sent
from its descriptor with its digest) or a file below C{imagecast.root}.
"""

import os

from provisioner.imagecast import commands

__all__ = ["resolveImage", "catalogEntry"]


def resolveImage(root, name):
    """
    Return the real path of image C{name} below C{root}.

    @raise commands.NoSuchImage: if it leaves C{root}, is missing or is not a
        regular readable file.
    """
    if "\x00" in name:
        raise commands.NoSuchImage("no image %r: a name has no NUL byte" % (name[:200],))
    rootReal = os.path.realpath(root)
    candidate = name if os.path.isabs(name) else os.path.join(rootReal, name)
    real = os.path.realpath(candidate)
    if real != rootReal and not real.startswith(rootReal + os.sep):
        raise commands.NoSuchImage("%s is not below the image root %s" % (name, root))
    if not os.path.isfile(real):
        raise commands.NoSuchImage("no image %s below %s" % (name, root))
    if not os.access(real, os.R_OK):
        raise commands.NoSuchImage("image %s is not readable" % (name,))
    return real


def catalogEntry(catalog, image):
    """
    Return the catalogue's entry for C{image} if it can be sent from it: it
    is intact (the file is still the one that was hashed).

    @param catalog: the image catalogue (C{appliance.catalog}) or L{None}.
    @return: the entry, or L{None} (the image is then looked for below the
        root).
    """
    if catalog is None:
        return None
    try:
        entry = catalog.get(image)
    except Exception:
        return None
    if entry is None or not entry.intact():
        return None
    return entry
