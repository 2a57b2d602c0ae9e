# -*- test-case-name: tests.test_images,tests.test_images_hardening,tests.test_images_cli -*-
"""
The saved catalogue: C{images-catalog.json} in the state directory (the
hash cache). After a restart, a file whose inode, size and mtime are those
of its record (L{isCurrent}) is not hashed again.
"""

import json
import os
import stat

__all__ = ["STATE_FILE", "loadState", "writeState", "statePath", "isCurrent",
           "currentRecords"]

STATE_FILE = "images-catalog.json"
_STATE_VERSION = 1


def statePath(stateDir):
    """
    The state file in C{stateDir}, or L{None} when there is no state
    directory (nothing is persisted).
    """
    if stateDir is None:
        return None
    return os.path.join(stateDir, STATE_FILE)


def loadState(path):
    """
    Read a persisted catalogue: C{{name: record dict}}; empty when missing
    or unreadable.
    """
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != _STATE_VERSION:
        return {}
    images = data.get("images")
    if not isinstance(images, list):
        return {}
    out = {}
    for record in images:
        if isinstance(record, dict) and isinstance(record.get("name"), str):
            out[record["name"]] = record
    return out


def isCurrent(record, st):
    """
    Whether a persisted C{record} still describes the file C{st} (an
    C{os.stat_result}): a regular file with the same inode, size and mtime,
    and the record has a digest.
    """
    return (stat.S_ISREG(st.st_mode) and st.st_ino == record.get("inode") and
            st.st_size == record.get("size") and
            st.st_mtime_ns == record.get("mtime_ns") and
            isinstance(record.get("sha256"), str))


def currentRecords(records, root, accept, known):
    """
    The persisted records whose file is unchanged, by name: those that
    C{accept} takes and that are not in C{known}, whose file below C{root}
    (looked at, not opened) is still the one that was hashed (L{isCurrent}).

    @param records: C{{name: record}} (L{loadState}).
    @param root: the images directory, a L{provisioner.confine.ConfinedRoot}.
    @param known: the names already catalogued (looked at as it goes).
    @return: an iterator of C{(name, record, stat result)}.
    """
    for name, record in sorted(records.items()):
        if not accept(name) or name in known:
            continue
        try:
            st = root.stat(name)  # looked at, not opened
        except (OSError, ValueError):
            continue
        if not isCurrent(record, st):
            continue
        yield name, record, st


def writeState(stateDir, directory, entries):
    """
    Write the catalogue of C{directory} to C{stateDir} (made if missing),
    atomically: a temporary file renamed over the state file.

    @param entries: the entries (L{provisioner.images.entry.ImageEntry}), in
        the order they are saved.
    @raise OSError: it cannot be written.
    """
    path = statePath(stateDir)
    data = {"version": _STATE_VERSION, "directory": directory,
            "images": [e.stateDict() for e in entries]}
    tmp = path + ".tmp"
    os.makedirs(stateDir, exist_ok=True)
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
