# -*- test-case-name: tests.test_images,tests.test_images_hardening -*-
"""
What the image catalogue holds: one L{ImageEntry} per catalogued file, and
its kind (L{classify}) from the file name.

An entry records which file was hashed (device, inode, size, mtime) and its
digest; it holds no descriptor. It opens its file through the catalogue it
belongs to (L{provisioner.images.catalog.Catalog}), which serves it only
while it is still that very file.
"""

import fnmatch
import stat

__all__ = ["ImageEntry", "classify", "KINDS"]

KINDS = ("kernel", "initrd", "nbp", "iso", "disk", "other")

_RULES = [
    ("kernel", ("vmlinuz*", "vmlinux*", "bzimage*", "*.krn", "linux", "linux64", "kernel*",
                "wimboot", "memdisk", "*.lkrn")),
    ("initrd", ("initrd*", "initramfs*", "*.cpio", "*.cpio.*", "*.initrd", "core.gz",
                "rootfs.gz")),
    ("nbp", ("*.efi", "*.kpxe", "*.kkpxe", "*.kkkpxe", "*.pxe", "*.0", "*.com", "*.c32",
             "*.n12", "bootmgr*", "*.ipxe", "*.bin")),
    ("iso", ("*.iso",)),
    ("disk", ("*.img", "*.raw", "*.qcow2", "*.vmdk", "*.vhd", "*.vhdx", "*.wim",
              "*.squashfs", "*.sqfs", "*.tar", "*.tar.*", "*.tgz", "*.zst", "*.xz", "*.gz")),
]


def classify(name, extra=None):
    """
    Return the kind of an image from its file name.

    @param extra: C{{glob: kind}} rules tried first (operator configuration).
    """
    base = name.rsplit("/", 1)[-1].lower()
    for pattern, kind in (extra or {}).items():
        if fnmatch.fnmatchcase(base, pattern.lower()):
            return kind
    for kind, patterns in _RULES:
        for pattern in patterns:
            if fnmatch.fnmatchcase(base, pattern):
                return kind
    return "other"


class ImageEntry:
    """
    One catalogued image: which file was hashed, and its digest. It holds
    no descriptor; L{open} opens the file for one transfer.

    @ivar name: the path below the images directory (POSIX separators).
    @ivar size: bytes.
    @ivar sha256: hex digest.
    @ivar mtimeNs: modification time in nanoseconds.
    @ivar inode, device: which file this is.
    @ivar kind: one of L{KINDS} (or an operator's kind).
    """

    def __init__(self, name, size, sha256, mtimeNs, inode, device, kind, catalog=None):
        self.name = name
        self.size = size
        self.sha256 = sha256
        self.mtimeNs = mtimeNs
        self.inode = inode
        self.device = device
        self.kind = kind
        self._catalog = catalog

    @property
    def mtime(self):
        return self.mtimeNs / 1e9

    def signature(self):
        return (self.inode, self.size, self.mtimeNs)

    def matches(self, st):
        """
        Whether C{st} (an C{os.stat_result}) is the file that was hashed,
        unchanged.
        """
        return (st.st_ino == self.inode and st.st_dev == self.device and
                st.st_size == self.size and st.st_mtime_ns == self.mtimeNs)

    def asDict(self):
        """
        What templates, the JSON API and the CLI see.
        """
        return {"name": self.name, "size": self.size, "sha256": self.sha256,
                "mtime": self.mtime, "kind": self.kind}

    def stateDict(self):
        d = self.asDict()
        d.update(mtime_ns=self.mtimeNs, inode=self.inode, device=self.device)
        return d

    def intact(self):
        """
        Whether the file below the directory still has the content that was
        hashed (same inode, not truncated or rewritten in place). It is
        looked at, not opened.
        """
        if self._catalog is None:
            return False
        try:
            st = self._catalog.confined().stat(self.name)
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and self.matches(st)

    def open(self):
        """
        Return an L{IDataSource} for exactly the catalogued content (a
        L{FileSource} on a descriptor opened now, closed with the source),
        or L{None} when the file no longer has it.
        """
        if self._catalog is None:
            return None
        return self._catalog.openSource(self.name)

    def openDescriptor(self):
        """
        A descriptor of exactly the catalogued content, opened now, which
        the caller closes; L{None} when the file no longer has it (the
        catalogue then reacts: hashes a replaced file again, withdraws one
        modified in place).
        """
        if self._catalog is None:
            return None
        return self._catalog.openVerified(self)

    def __repr__(self):
        return "<ImageEntry %s %d bytes %s %s>" % (self.name, self.size, self.kind,
                                                  self.sha256[:12])
