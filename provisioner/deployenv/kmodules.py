# -*- test-case-name: tests.test_deployenv -*-
"""
Kernel modules in load order, from their own C{.modinfo} (Debian's kernel
package ships no C{modules.dep}: C{depmod} makes it when the package is
installed): each module's C{depends=} names the modules whose symbols it
needs, which must be loaded before it (C{virtio_net} needs C{virtio},
which needs C{virtio_ring}); a C{softdep=} C{pre:} module is loaded before
it too when the kernel package has it.
"""

import os

from provisioner.deployenv.elf import modinfo, readModule

__all__ = ["ModuleError", "moduleName", "moduleIndex", "builtinModules", "dependencies",
           "loadOrder", "resolve"]


class ModuleError(LookupError):
    """
    A module is missing from the kernel package, or the dependencies form
    a cycle.
    """


def moduleName(name):
    """
    The kernel's name for a module: its file name without C{.ko[.xz]},
    dashes as underscores (C{nvme-core.ko} is module C{nvme_core}).
    """
    base = os.path.basename(name)
    for suffix in (".xz", ".zst", ".gz"):
        if base.endswith(suffix):
            base = base[:-len(suffix)]
    if base.endswith(".ko"):
        base = base[:-3]
    return base.replace("-", "_")


def moduleIndex(directory):
    """
    C{{module name: path}} of every module file below C{directory} (a
    kernel's C{/lib/modules/RELEASE}).
    """
    out = {}
    for parent, _, files in os.walk(directory):
        for f in files:
            if f.endswith((".ko", ".ko.xz")):
                out[moduleName(f)] = os.path.join(parent, f)
    return out


def builtinModules(directory):
    """
    The modules built into the kernel (C{modules.builtin} of the kernel
    package), by name: a dependency on one of them needs no file.
    """
    try:
        with open(os.path.join(directory, "modules.builtin")) as f:
            return {moduleName(line.strip()) for line in f if line.strip()}
    except OSError:
        return set()


def dependencies(info):
    """
    The modules a module's C{.modinfo} (parsed, see
    L{provisioner.deployenv.elf.parseModinfo}) says must be loaded first:
    its C{depends=} and its C{softdep=} C{pre:} modules.

    @return: C{(required names, optional names)}: a soft dependency is
        loaded only when present.
    """
    required = []
    for value in info.get("depends", []):
        required += [moduleName(n) for n in value.split(",") if n.strip()]
    optional = []
    for value in info.get("softdep", []):
        words = value.split()
        pre = False
        for w in words:
            if w.endswith(":"):
                pre = w == "pre:"
            elif pre:
                optional.append(moduleName(w))
    return required, optional


def loadOrder(wanted, depsOf, builtin=frozenset()):
    """
    The modules to load, dependencies first: a depth-first topological
    sort, in the order of C{wanted} and, below each, of its dependencies'
    names (the same input always gives the same order).

    @param wanted: module names.
    @param depsOf: C{name -> (required, optional)} (L{dependencies}), or
        L{None} when the kernel package has no such module.
    @param builtin: modules built into the kernel: nothing to load.
    @return: the names, each after every module it depends on.
    @raise ModuleError: a module (wanted, or required by one) is neither a
        file nor built in; or a dependency cycle (the error names it).
    """
    order, done, path = [], set(), []

    def visit(name, optional, requiredBy):
        if name in done:
            return
        if name in path:
            raise ModuleError("module dependency cycle: %s" % (
                " -> ".join(path[path.index(name):] + [name]),))
        deps = depsOf(name)
        if deps is None:
            if name in builtin:
                done.add(name)
                return
            if optional:
                return
            raise ModuleError("module %s%s is not in the kernel package" % (
                name, " (needed by %s)" % (requiredBy,) if requiredBy else ""))
        required, soft = deps
        path.append(name)
        for dep in sorted(set(required)):
            visit(dep, False, name)
        for dep in sorted(set(soft) - set(required)):
            visit(dep, True, name)
        path.pop()
        done.add(name)
        order.append(name)

    for name in wanted:
        visit(moduleName(name), False, None)
    return order


def resolve(directory, wanted):
    """
    The load order of C{wanted} and their dependencies among the module
    files below C{directory}, read from each file's C{.modinfo}.

    @return: C{[(name, path)]}, dependencies first.
    """
    index = moduleIndex(directory)
    builtin = builtinModules(directory)
    cache = {}

    def depsOf(name):
        if name not in index:
            return None
        if name not in cache:
            cache[name] = dependencies(modinfo(readModule(index[name])))
        return cache[name]

    return [(name, index[name]) for name in loadOrder(wanted, depsOf, builtin)]
