"""
The boot kit the QEMU tests boot to userspace: Debian's own kernel
(C{linux-image-amd64}), an initramfs built here from Debian's
C{busybox-static}, Debian's pxelinux (C{pxelinux}, C{syslinux-common}) and
Debian's signed GRUB network image (C{grub-efi-amd64-signed}) and shim
(C{shim-signed}), and a
one-sector disk whose boot code says so on the serial port.

The packages are fetched with C{apt-get download} and unpacked with
C{dpkg-deb -x} into a cache directory (C{$PROVISIONER_BOOTKIT}, default
C{/var/cache/provisioner-tests/bootkit}): nothing is installed on the host.
C{scripts/setup-tests} runs C{python -m tests.bootkit} so that CI has it;
L{kit} returns L{None} when it cannot be made (not root, no apt), and the
tests skip through L{tests.netlab.requireE2E} semantics.

The initramfs's C{/init} (L{INIT}) reads the kernel command line:
  - prints C{PROVBOOT host=H flavour=F token=yes|none end} on the console,
    where H and F are the command line's C{provhost=} and C{provflavour=}
    (values the menus took from the inventory);
  - with C{provisioner.callback=URL} and C{provisioner.token=T} (the host
    lifecycle's per-boot token), loads the virtio network driver, gets an
    address with udhcpc, POSTs C{state=deployed} (or C{provstate=}'s value)
    to the URL, prints C{PROVCALLBACK http=CODE} and reboots;
  - else powers off.
"""

import gzip
import io
import os
import shutil
import stat
import subprocess
import sys
import tempfile

__all__ = ["kit", "BootKit", "buildKit", "cpioArchive", "DISK_MARKER", "INIT"]

FORMAT = "6"
CACHE = os.environ.get("PROVISIONER_BOOTKIT") or "/var/cache/provisioner-tests/bootkit"
PACKAGES = ("busybox-static", "pxelinux", "syslinux-common", "grub-efi-amd64-signed",
            "shim-signed")
KERNEL_META = "linux-image-amd64"
# The virtio network driver and what it needs, in load order (Debian builds
# them as modules; the kernel has no modprobe data here, so insmod each).
MODULES = (
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
    "kernel/drivers/virtio/virtio_pci.ko",
    "kernel/net/core/failover.ko",
    "kernel/drivers/net/net_failover.ko",
    "kernel/drivers/net/virtio_net.ko",
)
DISK_MARKER = "PROVDISK the local disk's boot code runs"

INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
host=unset; flavour=unset; token=; callback=; state=deployed
for w in $(cat /proc/cmdline); do
  case "$w" in
    provhost=*) host=${w#*=} ;;
    provflavour=*) flavour=${w#*=} ;;
    provstate=*) state=${w#*=} ;;
    provisioner.token=*) token=${w#*=} ;;
    provisioner.callback=*) callback=${w#*=} ;;
  esac
done
tokenSeen=none
[ -n "$token" ] && tokenSeen=yes
echo "PROVBOOT host=$host flavour=$flavour token=$tokenSeen end"
if [ -n "$callback" ] && [ -n "$token" ]; then
  for m in MODULES; do insmod /lib/modules/$m; done
  ip link set lo up
  ip link set eth0 up
  udhcpc -i eth0 -q -n -t 10 -T 1 -s /etc/udhcpc.sh >/dev/null 2>&1 || echo "PROVDHCP failed"
  if wget -q -O /tmp/answer --post-data "token=$token&state=$state" "$callback"; then
    echo "PROVCALLBACK http=200"
  else
    echo "PROVCALLBACK http=refused"
  fi
  sync
  reboot -f
fi
poweroff -f
"""

UDHCPC = """#!/bin/sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface"
    ;;
esac
exit 0
"""


class BootKit:
    """
    Paths of the kit's files.

    @ivar kernel: Debian's vmlinuz.
    @ivar initrd: the gzip'd initramfs (busybox, L{INIT}, virtio modules).
    @ivar pxelinux: C{pxelinux.0}; C{ldlinux}: its C{ldlinux.c32}.
    @ivar grub: Debian's signed C{grubnetx64.efi}.
    @ivar shim: Debian's C{shimx64.efi}, signed by Microsoft's UEFI CA.
    @ivar disk: a 1 MiB disk whose boot sector prints L{DISK_MARKER} on COM1.
    @ivar version: the kernel package's version.
    """

    def __init__(self, directory, version):
        self.directory = directory
        self.version = version
        for name in ("kernel", "initrd", "pxelinux", "ldlinux", "grub", "disk", "shim"):
            setattr(self, name, os.path.join(directory, _FILES[name]))

    def install(self, directory, names=None):
        """
        Copy kit files into C{directory} (an images or TFTP root), as
        C{names} (C{{attribute: file name}}, default the kit's own names).

        @return: C{{attribute: path}} of the copies.
        """
        out = {}
        names = names or {k: _FILES[k] for k in ("kernel", "initrd")}
        for attribute, name in names.items():
            target = os.path.join(directory, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(getattr(self, attribute), target)
            out[attribute] = target
        return out


_FILES = {"kernel": "vmlinuz", "initrd": "initrd.gz", "pxelinux": "pxelinux.0",
          "ldlinux": "ldlinux.c32", "grub": "grubnetx64.efi", "disk": "disk.img",
          "shim": "shimx64.efi"}


def cpioArchive(entries):
    """
    A cpio archive in the C{newc} format the kernel unpacks.

    @param entries: C{(path, mode, data)}; C{data} is the file's bytes, a
        symlink's target, or C{b""} for a directory.
    """
    out = io.BytesIO()
    ino = 1

    def pad(n):
        out.write(b"\0" * ((4 - n % 4) % 4))

    for path, mode, data in list(entries) + [("TRAILER!!!", 0, b"")]:
        name = path.encode() + b"\0"
        header = b"070701" + b"".join(b"%08X" % v for v in (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name), 0))
        out.write(header + name)
        pad(110 + len(name))
        out.write(data)
        pad(len(data))
        ino += 1
    return out.getvalue()


def bootSector(message):
    """
    A 512-byte MBR whose code writes C{message} to COM1 and halts.
    """
    code = bytes([
        0x31, 0xC0,  # xor ax, ax
        0x8E, 0xD8,  # mov ds, ax
        0xFC,  # cld
        0xBE, 0x17, 0x7C,  # mov si, 0x7c17 (the message)
        0xAC,  # lodsb
        0x84, 0xC0,  # test al, al
        0x74, 0x06,  # jz halt
        0xBA, 0xF8, 0x03,  # mov dx, 0x3f8
        0xEE,  # out dx, al
        0xEB, 0xF5,  # jmp lodsb
        0xFA,  # halt: cli
        0xF4,  # hlt
        0xEB, 0xFD,  # jmp hlt
    ])
    assert len(code) == 0x17
    body = code + message.encode() + b"\r\n\0"
    return body + b"\0" * (510 - len(body)) + b"\x55\xAA"


def _run(argv, cwd=None):
    return subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True).stdout


def _kernelPackage():
    out = _run(["apt-cache", "depends", KERNEL_META])
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends:") and "linux-image-" in line:
            return line.split()[-1]
    raise RuntimeError("apt-cache names no kernel package for " + KERNEL_META)


def buildKit(directory):
    """
    Download, unpack and build the kit into C{directory}.

    @return: a L{BootKit}.
    """
    kernelPackage = _kernelPackage()
    work = tempfile.mkdtemp(prefix="bootkit-")
    try:
        _run(["apt-get", "download", "-q", kernelPackage] + list(PACKAGES), cwd=work)
        root = os.path.join(work, "root")
        for deb in sorted(os.listdir(work)):
            if deb.endswith(".deb"):
                _run(["dpkg-deb", "-x", os.path.join(work, deb), root])
        version = _run(["dpkg-deb", "-f", next(os.path.join(work, d) for d in os.listdir(work)
                                               if d.startswith(kernelPackage + "_")),
                        "Version"]).strip()
        staging = directory + ".new"
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
        kernels = [n for n in os.listdir(os.path.join(root, "boot")) if n.startswith("vmlinuz-")]
        release = kernels[0][len("vmlinuz-"):]
        shutil.copyfile(os.path.join(root, "boot", kernels[0]),
                        os.path.join(staging, _FILES["kernel"]))
        shutil.copyfile(os.path.join(root, "usr/lib/PXELINUX/pxelinux.0"),
                        os.path.join(staging, _FILES["pxelinux"]))
        shutil.copyfile(os.path.join(root, "usr/lib/syslinux/modules/bios/ldlinux.c32"),
                        os.path.join(staging, _FILES["ldlinux"]))
        shutil.copyfile(os.path.join(root, "usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"),
                        os.path.join(staging, _FILES["grub"]))
        shutil.copyfile(os.path.join(root, "usr/lib/shim/shimx64.efi.signed"),
                        os.path.join(staging, _FILES["shim"]))
        with open(os.path.join(staging, _FILES["disk"]), "wb") as f:
            f.write(bootSector(DISK_MARKER))
            f.truncate(1 << 20)
        with open(os.path.join(staging, _FILES["initrd"]), "wb") as f:
            f.write(gzip.compress(_initramfs(root, release), 6))
        with open(os.path.join(staging, "VERSION"), "w") as f:
            f.write("%s %s\n" % (FORMAT, version))
        shutil.rmtree(directory, ignore_errors=True)
        os.rename(staging, directory)
        return BootKit(directory, version)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _initramfs(root, release):
    with open(os.path.join(root, "bin", "busybox"), "rb") as f:
        busybox = f.read()
    modules = [os.path.basename(m) for m in MODULES]
    entries = [(d, stat.S_IFDIR | 0o755, b"") for d in (
        "bin", "etc", "lib", "lib/modules", "proc", "sys", "dev", "tmp")]
    entries.append(("bin/busybox", stat.S_IFREG | 0o755, busybox))
    entries.append(("bin/sh", stat.S_IFLNK | 0o777, b"busybox"))
    for m in MODULES:
        with open(os.path.join(root, "lib/modules", release, m), "rb") as f:
            entries.append(("lib/modules/" + os.path.basename(m), stat.S_IFREG | 0o644,
                            f.read()))
    init = INIT.replace("MODULES", " ".join(modules))
    entries.append(("init", stat.S_IFREG | 0o755, init.encode()))
    entries.append(("etc/udhcpc.sh", stat.S_IFREG | 0o755, UDHCPC.encode()))
    return cpioArchive(entries)


def kit(build=False):
    """
    The cached kit, or L{None} when there is none (with C{build}, make it
    first when possible: as root with apt).
    """
    try:
        with open(os.path.join(CACHE, "VERSION")) as f:
            fmt, version = f.read().split()
        if fmt == FORMAT:
            return BootKit(CACHE, version)
    except (OSError, ValueError):
        pass
    if not build or os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    return buildKit(CACHE)


if __name__ == "__main__":
    made = kit(build=True)
    if made is None:
        sys.exit("bootkit: not made (needs root and apt-get)")
    print("bootkit: Debian kernel %s and its initramfs in %s" % (made.version, made.directory))
