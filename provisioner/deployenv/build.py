# -*- test-case-name: tests.test_deployenv -*-
"""
Building the deploy environment from Debian packages, on the appliance
host (docs/deployenv.md):

  1. the packages (L{PACKAGES}, their dependency closure from C{apt-cache
     depends --recurse}, less L{SKIP_PACKAGES}, and Debian's kernel) are
     downloaded with C{apt-get download} into a cache directory and
     unpacked there with C{dpkg-deb -x}, once per package version;
  2. what the receiver needs is chosen from them (L{Selection}): the
     kernel's modules for L{MODULES} and their dependencies in load order
     (L{provisioner.deployenv.kmodules}), busybox, Python, its standard
     library and the Python packages less L{STDLIB_SKIP}/L{DIST_SKIP}, the
     shared libraries every program and extension needs (read from their
     ELF C{DT_NEEDED}), and the provisioner modules C{provisioner receive}
     loads (L{receiverModules}, from the installed provisioner);
  3. they are packed as a gzip'd cpio C{newc} archive (L{cpioArchive}) with
     the C{/init} of C{init.sh} and C{functions.sh}, and written beside
     the kernel.
"""

import gzip
import json
import os
import py_compile
import shutil
import stat
import subprocess
import sys
import tempfile

from provisioner.deployenv import kmodules
from provisioner.deployenv.elf import ELFError, needed, readModule

__all__ = ["DEFAULT_CACHE", "PACKAGES", "MODULES", "BuildError", "build", "Selection",
           "cpioArchive", "readCpio", "closure", "receiverModules", "shellFile"]

#: where the downloaded and unpacked packages are kept between builds
DEFAULT_CACHE = "/var/cache/provisioner/deployenv-debs"
KERNEL_META = "linux-image-amd64"
#: the packages whose files the environment is made of (with their closure)
PACKAGES = ("busybox-static", "python3-minimal", "libpython3-stdlib", "python3-twisted",
            "python3-zope.interface", "python3-openssl", "python3-cryptography",
            "python3-service-identity", "python3-yaml")
#: packages of the closure nothing of the environment uses (dpkg's own
#: dependencies, Perl): not even downloaded
SKIP_PACKAGES = frozenset(["dpkg", "tar", "perl", "perl-base", "perl-modules-5.36",
                           "libperl5.36", "install-info", "readline-common"])
#: the kernel modules loaded, before their dependencies are added: network
#: (virtio, Intel e1000 and e1000e) and disks (virtio, AHCI, PIIX IDE/SATA,
#: NVMe, SCSI disks)
MODULES = ("virtio_pci", "virtio_net", "e1000", "e1000e", "virtio_blk", "virtio_scsi",
           "ahci", "ata_piix", "nvme", "sd_mod")
#: parts of the standard library (below /usr/lib/python3.X) left out
STDLIB_SKIP = frozenset(["test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip",
                         "pydoc_data", "distutils", "venv", "sqlite3", "curses", "dbm",
                         "turtle.py", "pydoc.py", "site-packages", "dist-packages"])
#: extension modules of the standard library left out (and their libraries)
DYNLOAD_SKIP = ("_curses", "readline", "_dbm", "_gdbm", "_sqlite3", "_tkinter", "_test",
                "xx", "_ctypes_test", "_xxtestfuzz", "nis")
#: entries of /usr/lib/python3/dist-packages left out: what only tests,
#: servers and other protocols use
DIST_SKIP = frozenset([
    "hamcrest", "bcrypt", "pkg_resources", "twisted/conch", "twisted/words", "twisted/mail",
    "twisted/names",
    "twisted/news", "twisted/pair", "twisted/runner", "twisted/trial", "twisted/test",
    "twisted/web", "twisted/positioning", "twisted/spread", "twisted/scripts", "twisted/tap",
    "twisted/enterprise", "twisted/plugins", "twisted/lore", "twisted/mail"])
#: directory names left out everywhere
SKIP_DIRS = frozenset(["__pycache__", "tests", "test"])
LIBRARY_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "usr/lib")
FORMAT = 1


class BuildError(Exception):
    """
    The deploy environment cannot be built (the message says why).
    """


def _run(argv, cwd=None):
    try:
        out = subprocess.run(argv, cwd=cwd, check=False, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    except OSError as e:
        raise BuildError("cannot run %s: %s" % (argv[0], e.strerror or e))
    if out.returncode != 0:
        raise BuildError("%s failed (status %d): %s" % (
            " ".join(argv[:3]), out.returncode, out.stderr.strip()[-2000:]))
    return out.stdout


def shellFile(name):
    """
    The text of one of the package's shell files (C{init.sh},
    C{functions.sh}, C{udhcpc.sh}).
    """
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), name)) as f:
        return f.read()


def parseClosure(text, skip=SKIP_PACKAGES):
    """
    The package names of C{apt-cache depends --recurse} output: its
    unindented lines, less virtual packages (C{<name>}), other
    architectures' (C{name:arch}) and C{skip}.
    """
    out = []
    for line in text.splitlines():
        name = line.strip()
        if not name or line[0].isspace() or name.startswith("<") or ":" in name:
            continue
        if name not in skip and name not in out:
            out.append(name)
    return out


def closure(packages):
    """
    C{packages} and everything they depend on (no recommends, suggests...),
    by C{apt-cache depends --recurse}, less L{SKIP_PACKAGES}.
    """
    return parseClosure(_run(
        ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
         "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances"] + list(packages)))


def kernelPackage():
    """
    The real package behind C{linux-image-amd64}.
    """
    for line in _run(["apt-cache", "depends", KERNEL_META]).splitlines():
        line = line.strip()
        if line.startswith("Depends:") and "linux-image-" in line:
            return line.split()[-1]
    raise BuildError("apt-cache names no kernel package for " + KERNEL_META)


def _candidates(packages):
    """
    C{{package: file name apt-get download gives it}} of each package's
    candidate version.
    """
    out, fields = {}, {}
    for line in _run(["apt-cache", "show", "--no-all-versions"] + list(packages)).splitlines():
        if not line.strip():
            if "Package" in fields:
                out[fields["Package"]] = "%s_%s_%s.deb" % (
                    fields["Package"], fields["Version"].replace(":", "%3a"),
                    fields["Architecture"])
            fields = {}
        elif not line[0].isspace() and ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    if "Package" in fields:
        out[fields["Package"]] = "%s_%s_%s.deb" % (
            fields["Package"], fields["Version"].replace(":", "%3a"), fields["Architecture"])
    missing = [p for p in packages if p not in out]
    if missing:
        raise BuildError("apt knows no candidate for: %s (apt-get update?)" % (
            " ".join(missing),))
    return out


#: packages per C{apt-get download}: the progress shown moves by this many
DOWNLOAD_BATCH = 8


def fetch(packages, cache, log, progress=lambda stage, done, total: None):
    """
    Download what the cache lacks of C{packages}' candidate versions, and
    unpack each once.

    @param progress: called with C{("download", done, total)} as the
        missing packages are downloaded (L{DOWNLOAD_BATCH} at a time), then
        C{("unpack", done, total)} as the packages are unpacked.
    @return: C{{package: unpacked directory}}.
    """
    debs = os.path.join(cache, "debs")
    unpacked = os.path.join(cache, "unpacked")
    os.makedirs(debs, exist_ok=True)
    os.makedirs(unpacked, exist_ok=True)
    names = _candidates(packages)
    missing = [p for p in packages if not os.path.exists(os.path.join(debs, names[p]))]
    if missing:
        log("downloading %d packages into %s" % (len(missing), debs))
        progress("download", 0, len(missing))
        for start in range(0, len(missing), DOWNLOAD_BATCH):
            batch = missing[start:start + DOWNLOAD_BATCH]
            _run(["apt-get", "download", "-q"] + batch, cwd=debs)
            progress("download", start + len(batch), len(missing))
    out = {}
    progress("unpack", 0, len(packages))
    for done, p in enumerate(packages, 1):
        deb = os.path.join(debs, names[p])
        if not os.path.exists(deb):
            raise BuildError("apt-get download did not write %s" % (names[p],))
        target = os.path.join(unpacked, names[p][:-len(".deb")])
        if not os.path.exists(os.path.join(target, ".unpacked")):
            shutil.rmtree(target, ignore_errors=True)
            _run(["dpkg-deb", "-x", deb, target])
            open(os.path.join(target, ".unpacked"), "w").close()
        out[p] = target
        progress("unpack", done, len(packages))
    return out, names


class Tree:
    """
    The unpacked packages seen as one file system (the first package that
    has a path wins).
    """

    def __init__(self, roots):
        self.roots = list(roots)

    def find(self, rel):
        """
        The real path of C{rel} (relative to C{/}), or L{None}.
        """
        for root in self.roots:
            path = os.path.join(root, rel)
            if os.path.lexists(path):
                return path
        return None

    def walk(self, rel):
        """
        C{(relative path, real path)} of every file and symlink below
        C{rel}, in all packages.
        """
        seen = set()
        for root in self.roots:
            top = os.path.join(root, rel)
            for directory, subdirs, files in os.walk(top):
                subdirs.sort()
                for name in sorted(files) + [d for d in subdirs
                                             if os.path.islink(os.path.join(directory, d))]:
                    path = os.path.join(directory, name)
                    relative = os.path.relpath(path, root)
                    if relative not in seen:
                        seen.add(relative)
                        yield relative, path


def _probeSource():
    return r"""
import importlib, importlib.util, json, pkgutil, sys
sys.path.insert(0, sys.argv[1])
import provisioner.cli
import provisioner.client
for m in pkgutil.walk_packages(provisioner.client.__path__, "provisioner.client."):
    importlib.import_module(m.name)
found = {n: getattr(m, "__file__", None) for n, m in sys.modules.items()
         if n == "provisioner" or n.startswith("provisioner.")}
found["provisioner.__main__"] = importlib.util.find_spec("provisioner.__main__").origin
print(json.dumps(found))
"""


def receiverModules(python=None):
    """
    The provisioner modules C{python3 -m provisioner.cli receive} loads:
    in a fresh interpreter (C{python}, default this one), from the
    provisioner this module is part of, C{provisioner.cli} and every
    module of L{provisioner.client} are imported and what of provisioner
    was loaded is listed (and C{provisioner/__main__.py}, for C{python3 -m
    provisioner}).

    @return: C{{module name: its file}}.
    """
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([python or sys.executable, "-c", _probeSource(), here], cwd="/",
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if out.returncode != 0:
        raise BuildError("cannot import the receiver: %s" % (out.stderr.decode()[-2000:],))
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


class Selection:
    """
    The files of the initramfs: C{{path: (mode, bytes)}} (a symlink's bytes
    are its target, a directory's are empty), made from the unpacked
    packages.
    """

    def __init__(self, tree):
        self.tree = tree
        self.files = {}
        self._libraries = set()

    def addBytes(self, path, mode, data):
        path = path.strip("/")
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in self.files:
                self.files[parent] = (stat.S_IFDIR | 0o755, b"")
        self.files[path] = (mode, data)

    def addFile(self, rel, real, target=None):
        """
        Add the file (or symlink) C{real} as C{target} (default C{rel}).
        """
        st = os.lstat(real)
        target = target or rel
        if stat.S_ISLNK(st.st_mode):
            self.addBytes(target, stat.S_IFLNK | 0o777, os.readlink(real).encode())
        else:
            with open(real, "rb") as f:
                self.addBytes(target, stat.S_IFREG | (st.st_mode & 0o7777), f.read())

    def addTree(self, rel, skip=frozenset(), skipFile=None):
        """
        Add everything below C{rel} but the entries whose path relative to
        C{rel} is (or starts with an entry) of C{skip}, directories of
        L{SKIP_DIRS}, and files for which C{skipFile(name)} is true.
        """
        for relative, real in self.tree.walk(rel):
            inner = os.path.relpath(relative, rel)
            parts = inner.split("/")
            if any("/".join(parts[:i]) in skip for i in range(1, len(parts) + 1)):
                continue
            if any(p in SKIP_DIRS for p in parts[:-1]):
                continue
            if skipFile is not None and skipFile(parts[-1]):
                continue
            self.addFile(relative, real)

    def elfFiles(self):
        """
        The paths of the selection's regular files that are dynamic ELF
        programs or libraries.
        """
        for path, (mode, data) in sorted(self.files.items()):
            if stat.S_ISREG(mode) and data[:4] == b"\x7fELF":
                yield path, data

    def addLibraries(self):
        """
        Add the shared libraries the selection's ELF files need, and
        theirs, from the packages' library directories (symlinks kept).

        @raise BuildError: a library is in none of the packages.
        """
        queue = list(self.elfFiles())
        missing = []
        while queue:
            path, data = queue.pop()
            try:
                names, _ = needed(data)
            except ELFError:
                continue
            for name in names:
                if name in self._libraries:
                    continue
                self._libraries.add(name)
                found = None
                for directory in LIBRARY_DIRS:
                    found = self.tree.find(os.path.join(directory, name))
                    if found:
                        rel = os.path.join(directory, name)
                        break
                if not found:
                    missing.append("%s (needed by %s)" % (name, path))
                    continue
                while os.path.islink(found):
                    self.addFile(rel, found)
                    link = os.readlink(found)
                    rel = os.path.normpath(os.path.join(os.path.dirname(rel), link)
                                           if not link.startswith("/") else link[1:])
                    found = self.tree.find(rel)
                    if found is None:
                        raise BuildError("broken library link %s" % (rel,))
                self.addFile(rel, found)
                queue.append((rel, self.files[rel][1]))
        if missing:
            raise BuildError("libraries in no package: " + ", ".join(sorted(missing)))


def cpioArchive(files):
    """
    A cpio archive in the C{newc} format the kernel unpacks: every entry
    of C{files} (C{{path: (mode, bytes)}}), by path (directories before
    what they hold), owned by root, time 0.
    """
    chunks = []
    size = 0
    ino = 1

    def put(b):
        nonlocal size
        chunks.append(b)
        size += len(b)

    for path, (mode, data) in sorted(files.items()) + [("TRAILER!!!", (0, b""))]:
        name = path.encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(mode) else 1
        put(b"070701" + b"".join(b"%08X" % v for v in (
            ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name), 0)) + name)
        put(b"\0" * ((4 - size % 4) % 4))
        put(data)
        put(b"\0" * ((4 - size % 4) % 4))
        ino += 1
    return b"".join(chunks)


def readCpio(data):
    """
    The entries of a C{newc} cpio archive, in order: C{[(path, mode,
    bytes)]}.

    @raise ValueError: not a C{newc} archive, or truncated.
    """
    out = []
    offset = 0
    while True:
        header = data[offset:offset + 110]
        if len(header) < 110 or header[:6] != b"070701":
            raise ValueError("no newc header at offset %d" % (offset,))
        fields = [int(header[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        mode, filesize, namesize = fields[1], fields[6], fields[11]
        nameStart = offset + 110
        name = data[nameStart:nameStart + namesize - 1].decode()
        dataStart = nameStart + namesize
        dataStart += (4 - dataStart % 4) % 4
        body = data[dataStart:dataStart + filesize]
        if len(body) != filesize:
            raise ValueError("truncated entry %s" % (name,))
        offset = dataStart + filesize
        offset += (4 - offset % 4) % 4
        if name == "TRAILER!!!":
            return out
        out.append((name, mode, body))


def _pythonVersion(tree):
    for relative, real in tree.walk("usr/bin"):
        base = os.path.basename(relative)
        if base.startswith("python3.") and base[8:].isdigit() and not os.path.islink(real):
            return base[6:]
    raise BuildError("no python3.X program in the packages")


def _compile(selection, version, log):
    """
    Add the bytecode of every module (C{__pycache__}, unchecked hash: it is
    never compared with the source's time, which the archive does not
    keep) when this interpreter is the environment's Python version.

    @return: whether it was added.
    """
    if "%d.%d" % sys.version_info[:2] != version:
        log("no bytecode: this is Python %d.%d, the environment's is %s" % (
            sys.version_info[:2] + (version,)))
        return False
    tag = sys.implementation.cache_tag
    work = tempfile.mkdtemp(prefix="deployenv-pyc-")
    try:
        for path, (mode, data) in sorted(selection.files.items()):
            if not (stat.S_ISREG(mode) and path.endswith(".py")):
                continue
            source = os.path.join(work, "source.py")
            with open(source, "wb") as f:
                f.write(data)
            directory, name = os.path.split(path)
            target = "%s/__pycache__/%s.%s.pyc" % (directory, name[:-3], tag)
            try:
                py_compile.compile(source, os.path.join(work, "out.pyc"), dfile="/" + path,
                                   doraise=True,
                                   invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
            except py_compile.PyCompileError:
                continue  # a module of another Python (lib2to3 fixtures...): left as source
            with open(os.path.join(work, "out.pyc"), "rb") as f:
                selection.addBytes(target, stat.S_IFREG | 0o644, f.read())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return True


def _skipDynload(name):
    return name.startswith(DYNLOAD_SKIP)


def _skipDist(name):
    return name.endswith((".pyc", ".pyi", ".c", ".h", ".pxd", ".pyx", ".txt", ".rst", ".md"))


def select(tree, kernelRoot, modules, provisionerModules, log, bytecode=True):
    """
    Choose the initramfs's files.

    @return: C{(Selection, release, [(module name, file name)] in load
        order, Python version, whether bytecode was added)}.
    """
    sel = Selection(tree)
    libModules = os.path.join(kernelRoot, "lib", "modules")
    releases = sorted(os.listdir(libModules)) if os.path.isdir(libModules) else []
    if not releases:
        raise BuildError("the kernel package has no /lib/modules")
    release = releases[-1]
    order = kmodules.resolve(os.path.join(libModules, release), modules)
    orderNames = []
    for name, path in order:
        fileName = name + ".ko"
        sel.addBytes("lib/modules/" + fileName, stat.S_IFREG | 0o644, readModule(path))
        orderNames.append((name, fileName))
    sel.addBytes("lib/modules/deployenv.order", stat.S_IFREG | 0o644,
                 "".join(f + "\n" for _, f in orderNames).encode())

    busybox = tree.find("bin/busybox")
    if busybox is None:
        raise BuildError("busybox-static has no /bin/busybox")
    sel.addFile("bin/busybox", busybox)
    sel.addBytes("bin/sh", stat.S_IFLNK | 0o777, b"busybox")

    version = _pythonVersion(tree)
    sel.addFile("usr/bin/python" + version, tree.find("usr/bin/python" + version))
    sel.addBytes("usr/bin/python3", stat.S_IFLNK | 0o777, ("python" + version).encode())
    stdlib = "usr/lib/python" + version
    sel.addTree(stdlib, skip=STDLIB_SKIP | {"lib-dynload"},
                skipFile=lambda n: n.endswith((".pyc", ".exe", ".txt")))
    sel.addTree(stdlib + "/lib-dynload", skipFile=_skipDynload)
    sel.addTree("usr/lib/python3/dist-packages", skip=DIST_SKIP, skipFile=_skipDist)
    # Debian's site.py reads its own _sysconfigdata; nothing else of config-3.X
    for rel, real in tree.walk(stdlib):
        if os.path.basename(rel).startswith("_sysconfigdata"):
            sel.addFile(rel, real)

    base = None
    for name, path in provisionerModules.items():
        if path and name == "provisioner":
            base = os.path.dirname(path)
    if base is None:
        raise BuildError("the receiver's modules were not found")
    for name, path in sorted(provisionerModules.items()):
        if not path:
            continue
        rel = os.path.relpath(path, os.path.dirname(base))
        if rel.startswith(".."):
            raise BuildError("%s is outside the provisioner package (%s)" % (name, path))
        if path.endswith(".so") and "cpython-%s" % (version.replace(".", ""),) not in path:
            log("left out %s: built for another Python than %s" % (name, version))
            continue
        sel.addFile("usr/lib/python3/dist-packages/" + rel, path)

    # OpenSSL's providers are loaded with dlopen (cryptography loads "legacy")
    sel.addTree("usr/lib/x86_64-linux-gnu/ossl-modules")
    ld = tree.find("lib64/ld-linux-x86-64.so.2")
    if ld is None:
        raise BuildError("libc6 has no /lib64/ld-linux-x86-64.so.2")
    sel.addFile("lib64/ld-linux-x86-64.so.2", ld)
    sel.addLibraries()

    for name in ("init.sh", "functions.sh", "udhcpc.sh"):
        text = shellFile(name).encode()
        if name == "init.sh":
            sel.addBytes("init", stat.S_IFREG | 0o755, text)
        else:
            sel.addBytes("lib/deployenv/" + name, stat.S_IFREG | 0o755, text)
    sel.addBytes("etc/passwd", stat.S_IFREG | 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
    sel.addBytes("etc/group", stat.S_IFREG | 0o644, b"root:x:0:\n")
    sel.addBytes("etc/hosts", stat.S_IFREG | 0o644, b"127.0.0.1 localhost\n")
    for d in ("proc", "sys", "dev", "tmp", "run", "root", "etc/ssl/certs"):
        sel.addBytes(d, stat.S_IFDIR | 0o755, b"")
    compiled = _compile(sel, version, log) if bytecode else False
    return sel, release, orderNames, version, compiled


def _writeAtomic(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = os.path.join(os.path.dirname(path), ".%s.new" % (os.path.basename(path),))
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.rename(tmp, path)


def build(output, cache=DEFAULT_CACHE, log=lambda line: None, modules=MODULES,
          bytecode=True, python=None, progress=lambda stage, done, total: None):
    """
    Build the deploy environment into C{output}: C{vmlinuz}, C{initrd.gz}
    and C{manifest.json} (what is inside, from which packages, sizes).

    @param python: the interpreter of the installed provisioner whose
        receiver is copied (default this one).
    @param progress: told of the downloads and the unpacking (L{fetch}).
    @return: the manifest, a C{dict}.
    @raise BuildError: what failed.
    """
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise BuildError("apt-get and dpkg-deb are needed (a Debian host)")
    provisionerModules = receiverModules(python)
    kernel = kernelPackage()
    packages = closure(PACKAGES)
    log("%d packages: %s and %s" % (len(packages) + 1, kernel, " ".join(packages)))
    unpacked, debNames = fetch([kernel] + packages, cache, log, progress)
    tree = Tree(unpacked[p] for p in packages)
    sel, release, order, version, compiled = select(
        tree, unpacked[kernel], modules, provisionerModules, log, bytecode)
    archive = cpioArchive(sel.files)
    compressed = gzip.compress(archive, 9, mtime=0)
    kernels = sorted(n for n in os.listdir(os.path.join(unpacked[kernel], "boot"))
                     if n.startswith("vmlinuz-"))
    if not kernels:
        raise BuildError("the kernel package has no /boot/vmlinuz-*")
    with open(os.path.join(unpacked[kernel], "boot", kernels[-1]), "rb") as f:
        vmlinuz = f.read()
    manifest = {
        "format": FORMAT,
        "kernel": {"package": debNames[kernel][:-4], "release": release, "size": len(vmlinuz)},
        "modules": [f for _, f in order],
        "python": version,
        "bytecode": compiled,
        "packages": sorted(debNames[p][:-4] for p in packages),
        "provisioner": sorted(n for n, p in provisionerModules.items() if p),
        "initrd": {"files": len(sel.files), "size": len(archive),
                   "compressed": len(compressed)},
    }
    _writeAtomic(os.path.join(output, "vmlinuz"), vmlinuz)
    _writeAtomic(os.path.join(output, "initrd.gz"), compressed)
    _writeAtomic(os.path.join(output, "manifest.json"),
                 (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    return manifest
