# -*- test-case-name: tests.test_deployenv -*-
"""
What the deploy environment's build reads of ELF files (64-bit,
little-endian: x86_64), with no tool but Python: the sections by name, a
kernel module's C{.modinfo} (L{modinfo}) and the shared libraries a
program or library needs (L{needed}).
"""

import lzma
import struct

__all__ = ["ELFError", "sections", "modinfo", "parseModinfo", "needed", "readModule"]

_DT_NEEDED = 1
_DT_SONAME = 14


class ELFError(ValueError):
    """
    The bytes are not an ELF file this module reads, or are truncated.
    """


def _header(data):
    if len(data) < 64 or data[:4] != b"\x7fELF":
        raise ELFError("not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise ELFError("not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    if shoff == 0 or shnum == 0:
        return []
    if shentsize < 64 or shoff + shnum * shentsize > len(data) or shstrndx >= shnum:
        raise ELFError("truncated section header table")
    headers = []
    for i in range(shnum):
        (name, kind, _flags, _addr, offset, size, link, _info, _align,
         entsize) = struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
        if kind != 8 and offset + size > len(data):  # SHT_NOBITS has no bytes
            raise ELFError("section %d runs past the end of the file" % (i,))
        headers.append((name, kind, offset, size, link, entsize))
    return headers, shstrndx


def _string(table, offset):
    end = table.find(b"\0", offset)
    return table[offset:end if end >= 0 else len(table)].decode("utf-8", "replace")


def sections(data):
    """
    The sections of an ELF file.

    @param data: the file's bytes.
    @return: C{{name: (type, bytes, link index, entry size)}}, and the list
        of the same in index order under the key L{None}.
    @raise ELFError: not a 64-bit little-endian ELF file, or truncated.
    """
    parsed = _header(data)
    if not parsed:
        return {None: []}
    headers, shstrndx = parsed
    _, _, stroff, strsize, _, _ = headers[shstrndx]
    names = data[stroff:stroff + strsize]
    out = {None: []}
    for name, kind, offset, size, link, entsize in headers:
        body = b"" if kind == 8 else data[offset:offset + size]
        entry = (kind, body, link, entsize)
        out[None].append(entry)
        out.setdefault(_string(names, name), entry)
    return out


def parseModinfo(body):
    """
    The C{key=value} strings of a C{.modinfo} section.

    @return: C{{key: [values, in order]}} (C{alias} and C{softdep} repeat).
    """
    out = {}
    for item in body.split(b"\0"):
        if not item or b"=" not in item:
            continue
        key, _, value = item.decode("utf-8", "replace").partition("=")
        out.setdefault(key, []).append(value)
    return out


def modinfo(data):
    """
    A kernel module's C{.modinfo}: its C{name}, C{depends} (the modules it
    needs symbols of, comma-separated), C{softdep}, C{vermagic}...

    @raise ELFError: not an ELF file, or one without C{.modinfo}.
    """
    found = sections(data).get(".modinfo")
    if found is None:
        raise ELFError("no .modinfo section: not a kernel module")
    return parseModinfo(found[1])


def readModule(path):
    """
    The bytes of the kernel module at C{path} (C{.ko}, or C{.ko.xz}
    uncompressed here).
    """
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".xz"):
        data = lzma.decompress(data)
    return data


def needed(data):
    """
    The shared libraries an ELF program or library needs (its C{DT_NEEDED}
    entries, in order) and its own C{DT_SONAME}.

    @return: C{(needed names, soname or None)}; C{([], None)} for a file
        without a C{.dynamic} section (static).
    """
    found = sections(data)
    dynamic = found.get(".dynamic")
    if dynamic is None:
        return [], None
    _, body, link, _ = dynamic
    strings = found[None][link][1]
    out, soname = [], None
    for offset in range(0, len(body) - 15, 16):
        tag, value = struct.unpack_from("<qQ", body, offset)
        if tag == 0:
            break
        if tag == _DT_NEEDED:
            out.append(_string(strings, value))
        elif tag == _DT_SONAME:
            soname = _string(strings, value)
    return out, soname
