"""
The deploy environment: a kernel and an initramfs, built on the appliance
host from Debian packages, that a machine being imaged boots from the
network to write its disk with C{provisioner receive} (docs/deployenv.md).

  - L{provisioner.deployenv.elf}: what is read of ELF files: sections, the
    C{.modinfo} of kernel modules, the shared libraries a program needs;
  - L{provisioner.deployenv.kmodules}: kernel modules in load order;
  - L{provisioner.deployenv.build}: fetching, choosing and packing;
  - L{provisioner.deployenv.cli}: C{provisioner deployenv build}.
"""

__all__ = []
