# -*- test-case-name: tests.test_layout -*-
"""
Tests of the layout of the code:

  - the client programs (L{provisioner.client}) load no part of the
    appliance: importing every module of the package in a fresh
    interpreter loads no server, session, service or schema module, nor
    the configuration, the appliance or the subsystems a machine being
    provisioned does not run (the failure shows the import chain);
  - there is no import cycle in L{provisioner}: the graph of module-level
    C{import} and C{from ... import} statements, read with C{ast}, is
    acyclic (the failure names the cycle).

Each check is also run on a small tree made for the test, where it must
find the forbidden import or the cycle put there.
"""

import ast
import json
import os
import subprocess
import sys

from twisted.trial.unittest import TestCase

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: what the client programs may load of provisioner besides their own
#: package: the package markers, the wire codecs both ends speak, and the
#: small shared helpers; everything else (servers, sessions, services,
#: schemas, the configuration, the appliance's subsystems) is forbidden
ALLOWED_MODULES = frozenset([
    "provisioner", "provisioner.errors", "provisioner.hashing",
    "provisioner.tftp", "provisioner.tftp.wire", "provisioner.tftp.adaptivewire",
    "provisioner.tftp.multicast", "provisioner.tftp.multicast.codec",
    "provisioner.imagecast", "provisioner.imagecast.commands",
    "provisioner.imagecast.ranges", "provisioner.imagecast.datagram",
    "provisioner.imagecast.pieces", "provisioner.imagecast._fastpath",
])

#: packages the client programs may load anything of
ALLOWED_PACKAGES = ("provisioner.client", "provisioner.net")


def isForbidden(name):
    """
    Whether the client programs must not load module C{name}.
    """
    if name != "provisioner" and not name.startswith("provisioner."):
        return False
    if name in ALLOWED_MODULES:
        return False
    return not any(name == p or name.startswith(p + ".") for p in ALLOWED_PACKAGES)


# Runs in a fresh interpreter: imports every module of a package and prints
# (JSON) what was loaded and, for each module, the module that imported it.
_PROBE = r"""
import builtins, importlib, json, pkgutil, sys
root, package = sys.argv[1], sys.argv[2]
sys.path.insert(0, root)
importers = {}
realImport = builtins.__import__


def tracing(name, globals=None, locals=None, fromlist=(), level=0):
    count = len(sys.modules)
    before = set(sys.modules)
    try:
        return realImport(name, globals, locals, fromlist, level)
    finally:
        if len(sys.modules) != count:
            importer = (globals or {}).get("__name__") or "?"
            for loaded in set(sys.modules) - before:
                importers.setdefault(loaded, importer)


builtins.__import__ = tracing
top = importlib.import_module(package)
imported = [package] + sorted(
    m.name for m in pkgutil.walk_packages(top.__path__, package + "."))
for name in imported:
    importlib.import_module(name)
print(json.dumps({"file": top.__file__, "imported": imported,
                  "modules": sorted(sys.modules), "importers": importers}))
"""


def probeImports(root, package):
    """
    Import every module of C{package} (found under C{root}) in a fresh
    interpreter.

    @return: a C{dict}: C{file} (the package's C{__init__}), C{imported}
        (the modules of the package), C{modules} (everything loaded) and
        C{importers} (for each module loaded, the module that imported it).
    """
    out = subprocess.run([sys.executable, "-c", _PROBE, root, package], cwd=root,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if out.returncode != 0:
        raise AssertionError("importing %s failed:\n%s" % (package, out.stderr.decode()))
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


def importChain(importers, name):
    """
    The chain of imports that loaded C{name}, first importer first.
    """
    chain = [name]
    seen = {name}
    while chain[-1] in importers:
        parent = importers[chain[-1]]
        chain.append(parent)
        if parent in seen:
            break
        seen.add(parent)
    return " -> ".join(reversed(chain))


def forbiddenChains(probe):
    """
    The import chains of the forbidden modules a probe loaded.
    """
    return [importChain(probe["importers"], m) for m in probe["modules"] if isForbidden(m)]


def _moduleName(root, path):
    rel = os.path.relpath(path, root)
    parts = rel.split(os.sep)
    parts[-1] = parts[-1].split(".", 1)[0]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(root, package):
    """
    C{{name: path}} of the Python modules of C{package} under C{root}, and
    the set of all its module names (extension modules included).
    """
    sources = {}
    names = set()
    for directory, subdirs, files in os.walk(os.path.join(root, *package.split("."))):
        subdirs[:] = [d for d in subdirs if d != "__pycache__"]
        for f in files:
            path = os.path.join(directory, f)
            if f.endswith(".py"):
                sources[_moduleName(root, path)] = path
                names.add(_moduleName(root, path))
            elif f.endswith((".so", ".pyd")):
                names.add(_moduleName(root, path))
    return sources, names


def _isMainGuard(node):
    """
    Whether C{node} is C{if __name__ == "__main__":} (run as a script only).
    """
    test = node.test
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__" and len(test.comparators) == 1
            and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value == "__main__")


def _importStatements(body):
    """
    The import statements that run when a module is imported: at module
    level, also inside module-level C{if}, C{try}, C{with} and class
    bodies; not in functions, nor under C{if __name__ == "__main__"}.
    """
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        elif isinstance(node, ast.If) and _isMainGuard(node):
            continue
        else:
            for field in ("body", "orelse", "finalbody", "handlers"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    yield from _importStatements(children)


def importGraph(root, package="provisioner"):
    """
    The graph of module-level imports between the modules of C{package}
    under C{root}: C{{module: set(modules it imports)}}. C{from pkg import
    name} is an edge to the submodule C{pkg.name} when there is one, else
    to C{pkg}.
    """
    sources, names = _modules(root, package)

    def known(name):
        while name and name not in names:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in sources.items():
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), path)
        isPackage = os.path.basename(path) == "__init__.py"
        edges = graph.setdefault(name, set())
        for node in _importStatements(tree.body):
            if isinstance(node, ast.Import):
                targets = [known(alias.name) for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parts = name.split(".") if isPackage else name.split(".")[:-1]
                    parts = parts[:len(parts) - (node.level - 1)]
                    base = ".".join(parts + ([base] if base else []))
                targets = []
                for alias in node.names:
                    sub = base + "." + alias.name
                    targets.append(sub if sub in names else known(base))
            edges.update(t for t in targets if t is not None and t != name)
    return graph


def findCycles(graph):
    """
    The import cycles of C{graph}: one cycle, as a list of modules whose
    last imports the first, for each strongly connected component that
    has one.
    """
    index, low, onStack, stack, components = {}, {}, set(), [], []
    counter = [0]

    def strongConnect(start):
        # Tarjan's algorithm, iteratively (no recursion limit).
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        onStack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    onStack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in onStack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        onStack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(component)

    for node in sorted(graph):
        if node not in index:
            strongConnect(node)
    cycles = []
    for component in components:
        members = set(component)
        if len(component) == 1 and component[0] not in graph.get(component[0], ()):
            continue
        cycles.append(_cycleIn(graph, members, min(members)))
    return cycles


def _cycleIn(graph, members, start):
    """
    A shortest cycle through C{start} inside the strongly connected
    C{members} (breadth first).
    """
    previous = {start: None}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph.get(node, ())):
            if child == start:
                path = [node]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                return list(reversed(path))
            if child in members and child not in previous:
                previous[child] = node
                queue.append(child)
    return [start]


def describeCycles(cycles):
    return "\n".join(" -> ".join(c + [c[0]]) for c in cycles)


def writeTree(root, files):
    """
    Write C{{relative path: text}} under C{root}.
    """
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


class ClientBoundaryTests(TestCase):
    """
    The client programs import only wire codecs and small shared helpers.
    """

    def test_clientLoadsNoAppliance(self):
        """
        If every module of L{provisioner.client} is imported in a fresh
        interpreter, none of the forbidden modules is loaded.
        """
        probe = probeImports(REPO, "provisioner.client")
        self.assertEqual(os.path.dirname(os.path.dirname(probe["file"])),
                         os.path.join(REPO, "provisioner"))
        for name in ("provisioner.client.cli", "provisioner.client.mtftp",
                     "provisioner.client.receiver", "provisioner.client.tftp"):
            self.assertIn(name, probe["imported"])
        chains = forbiddenChains(probe)
        self.assertEqual(chains, [], "the client programs load appliance modules:\n" +
                         "\n".join(chains))

    def test_forbiddenImportFound(self):
        """
        If a client module imports, through another module, a forbidden
        one, the check finds it and shows the whole chain.
        """
        root = self.mktemp()
        writeTree(root, {
            "provisioner/__init__.py": "",
            "provisioner/hashing.py": "",
            "provisioner/client/__init__.py": "",
            "provisioner/client/good.py": "from provisioner import hashing\n",
            "provisioner/client/bad.py": "from provisioner.client import good\n"
                                         "import provisioner.tftp.wire\n",
            "provisioner/tftp/__init__.py": "",
            "provisioner/tftp/wire.py": "from provisioner.tftp import service\n",
            "provisioner/tftp/service.py": "import provisioner.menus.thing\n",
            "provisioner/menus/__init__.py": "",
            "provisioner/menus/thing.py": "",
        })
        chains = forbiddenChains(probeImports(os.path.abspath(root), "provisioner.client"))
        self.assertEqual(sorted(chains), [
            "provisioner.client.bad -> provisioner.tftp.wire -> provisioner.tftp.service",
            "provisioner.client.bad -> provisioner.tftp.wire -> provisioner.tftp.service "
            "-> provisioner.menus",
            "provisioner.client.bad -> provisioner.tftp.wire -> provisioner.tftp.service "
            "-> provisioner.menus.thing",
        ])

    def test_forbiddenNames(self):
        """
        If a module is a service, a schema, a server or session module, the
        configuration, or part of a subsystem the clients do not run, it is
        forbidden; wire codecs and shared helpers are not.
        """
        for name in ("provisioner.config", "provisioner.tftp.service",
                     "provisioner.imagecast.schema", "provisioner.tftp.multicast.registry",
                     "provisioner.dhcp", "provisioner.web.api", "provisioner.images.cache",
                     "provisioner.tftp.upload", "provisioner.tftp.slots",
                     "provisioner.imagecast.session", "provisioner.hosts.book",
                     "provisioner.store.sqlite", "provisioner.files", "provisioner.confine",
                     "provisioner.deployenv", "provisioner.deployenv.build"):
            self.assertTrue(isForbidden(name), name)
        for name in ("provisioner.tftp.wire", "provisioner.tftp.multicast.codec",
                     "provisioner.imagecast.commands", "provisioner.net.udpbatch",
                     "provisioner.hashing", "provisioner.errors", "provisioner.client.repair",
                     "provisioner.imagecast.pieces", "twisted.application.service"):
            self.assertFalse(isForbidden(name), name)


class ImportCycleTests(TestCase):
    """
    The modules of L{provisioner} import one another without cycles.
    """

    def test_noCycles(self):
        """
        If the module-level imports of L{provisioner} are read as a graph,
        it has no cycle.
        """
        graph = importGraph(REPO)
        self.assertIn("provisioner.client.tftp", graph["provisioner.client.mtftp"])
        cycles = findCycles(graph)
        self.assertEqual(cycles, [], "import cycles:\n" + describeCycles(cycles))

    def test_cycleFound(self):
        """
        If modules import one another in a ring (with C{import a.b}, C{from
        pkg import module} and a relative import), the check names the
        ring; imports inside functions and under C{if __name__ ==
        "__main__"} do not count.
        """
        root = self.mktemp()
        writeTree(root, {
            "provisioner/__init__.py": "",
            "provisioner/a.py": "from provisioner import b\n",
            "provisioner/b.py": "try:\n    import provisioner.sub.c\nexcept ImportError:\n"
                                "    pass\n",
            "provisioner/sub/__init__.py": "",
            "provisioner/sub/c.py": "from ..a import X\n",
            "provisioner/d.py": "def f():\n    from provisioner import e\n",
            "provisioner/e.py": "import provisioner.d\n"
                                "if __name__ == '__main__':\n    import provisioner.d\n",
            "provisioner/f.py": "class F:\n    from provisioner import g\n",
            "provisioner/g.py": "from provisioner.f import F\n",
        })
        cycles = findCycles(importGraph(root))
        self.assertEqual(sorted(cycles), [
            ["provisioner.a", "provisioner.b", "provisioner.sub.c"],
            ["provisioner.f", "provisioner.g"],
        ])
        self.assertEqual(describeCycles(cycles[:1]).count(" -> "), len(cycles[0]))
