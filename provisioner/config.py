# -*- test-case-name: tests.test_config -*-
"""
Configuration: a declarative schema, embedded defaults, YAML loading with line
numbers, and one error type for bad configuration.

Each subsystem declares its own section in C{provisioner/<subsystem>/schema.py}
as a module-level C{SCHEMA} (a L{Section}); L{SECTIONS} names those modules.
A rule that spans sections (one section's directory must not lie inside
another's) goes in that module's C{CROSS_CHECKS}: callables taking the whole
loaded configuration and returning L{None} or C{(dotted key, message)}; they
run once every section is loaded (L{crossChecks}).
A loaded configuration is a plain nested C{dict} of validated values; every
key of the schema is present, filled from the defaults.

Errors name the dotted key and, when it came from a file, the file and line:
C{provisioner.yaml:12: tftp.blksize_max: must be at most 65464 (got 70000)}.
"""

import importlib
import ipaddress
import os

import yaml

from provisioner.yamlfile import keyText, parseWithLines, readText

__all__ = [
    "ConfigError",
    "Key",
    "Section",
    "SECTIONS",
    "schema",
    "defaults",
    "loadConfig",
    "parseOverride",
    "describe",
    "crossChecks",
]


class ConfigError(Exception):
    """
    The configuration is invalid. C{str()} is a complete, operator-readable
    message naming the key and, where known, the file and line.
    """

    def __init__(self, key, message, where=None):
        self.key = key
        self.message = message
        self.where = where
        Exception.__init__(self, self._text())

    def _text(self):
        prefix = "%s: " % (self.where,) if self.where else ""
        keyText = "%s: " % (self.key,) if self.key else ""
        return prefix + keyText + self.message


_KINDS = ("int", "float", "bool", "str", "path", "list", "map", "any", "ip", "ipnet", "port")


class Key:
    """
    One configuration key.

    @ivar default: the embedded default (already valid).
    @ivar kind: one of C{int float bool str path list map any ip ipnet port}.
    @ivar doc: one line for the operator's guide and the sample config.
    @ivar minimum, maximum: inclusive bounds for numbers.
    @ivar choices: the allowed values, or L{None}.
    @ivar nullable: whether C{null} is allowed.
    @ivar items: for C{list}, the L{Key} each item must satisfy (or None).
    @ivar check: a callable taking the value and returning an error string or
        L{None}, for rules the fields above cannot say.
    """

    def __init__(self, default, kind, doc, minimum=None, maximum=None,
                 choices=None, nullable=False, items=None, check=None):
        if kind not in _KINDS:
            raise ValueError("unknown kind %r" % (kind,))
        self.default = default
        self.kind = kind
        self.doc = doc
        self.minimum = minimum
        self.maximum = maximum
        self.choices = choices
        self.nullable = nullable
        self.items = items
        self.check = check

    def validate(self, value, key):
        """
        Return the value converted to its kind, or raise L{ConfigError}.
        """
        if value is None:
            if self.nullable:
                return None
            raise ConfigError(key, "must not be null")
        kind = self.kind
        if kind == "bool":
            if not isinstance(value, bool):
                raise ConfigError(key, "must be true or false (got %r)" % (value,))
        elif kind in ("int", "port"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(key, "must be a whole number (got %r)" % (value,))
            if kind == "port" and not 0 <= value <= 65535:
                raise ConfigError(key, "must be a port number 0..65535 (got %r)" % (value,))
        elif kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(key, "must be a number (got %r)" % (value,))
            value = float(value)
        elif kind in ("str", "path"):
            if not isinstance(value, str):
                raise ConfigError(key, "must be a string (got %r)" % (value,))
            if kind == "path" and "\x00" in value:
                raise ConfigError(key, "must not contain NUL")
        elif kind == "ip":
            try:
                value = str(ipaddress.ip_address(str(value)))
            except ValueError:
                raise ConfigError(key, "must be an IP address (got %r)" % (value,))
        elif kind == "ipnet":
            try:
                value = str(ipaddress.ip_network(str(value), strict=False))
            except ValueError:
                raise ConfigError(key, "must be a network like 198.18.0.0/24 (got %r)" % (value,))
        elif kind == "list":
            if not isinstance(value, list):
                raise ConfigError(key, "must be a list (got %r)" % (value,))
            if self.items is not None:
                value = [self.items.validate(v, "%s[%d]" % (key, i)) for i, v in enumerate(value)]
        elif kind == "map":
            if not isinstance(value, dict):
                raise ConfigError(key, "must be a mapping (got %r)" % (value,))
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(key, "must be at least %s (got %r)" % (self.minimum, value))
        if self.maximum is not None and value > self.maximum:
            raise ConfigError(key, "must be at most %s (got %r)" % (self.maximum, value))
        if self.choices is not None and value not in self.choices:
            raise ConfigError(key, "must be one of %s (got %r)" % (
                ", ".join(repr(c) for c in self.choices), value))
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise ConfigError(key, problem)
        return value


class Section:
    """
    A mapping of names to L{Key}s or nested L{Section}s.

    @ivar reserved: a section for a subsystem that is not built yet: it
        accepts only C{enabled: false}.
    """

    def __init__(self, doc, keys, reserved=False, check=None):
        self.doc = doc
        self.keys = dict(keys)
        self.reserved = reserved
        self.check = check

    def defaults(self):
        out = {}
        for name, item in self.keys.items():
            if isinstance(item, Section):
                out[name] = item.defaults()
            else:
                out[name] = _copy(item.default)
        return out


def _copy(value):
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


# The sections, in the order services start, and the module holding each
# section's SCHEMA.
# Keys that were renamed, and their new names: a clear error instead of
# "unknown key".
RENAMED = {
    "multicast": "imagecast",
}

SECTIONS = {
    "tftp": "provisioner.tftp.schema",
    "dhcp": "provisioner.dhcp.schema",
    "dhcp6": "provisioner.dhcp6.schema",
    "images": "provisioner.images.schema",
    "inventory": "provisioner.menus.inventory_schema",
    "hosts": "provisioner.hosts.schema",
    "menus": "provisioner.menus.schema",
    "http": "provisioner.web.schema",
    "imagecast": "provisioner.imagecast.schema",
    "store": "provisioner.store.schema",
    "log": "provisioner.logfilter",
}


def schema():
    """
    Return the whole schema: a L{Section} of every section.
    """
    keys = {}
    for name, module in SECTIONS.items():
        keys[name] = importlib.import_module(module).SCHEMA
    return Section("provisioner configuration", keys)


def defaults():
    """
    Return the embedded default configuration (valid, nothing needs root).
    """
    return schema().defaults()


def crossChecks():
    """
    Return the whole-configuration checks: every section module's
    C{CROSS_CHECKS}, in section order.
    """
    checks = []
    for module in SECTIONS.values():
        checks.extend(getattr(importlib.import_module(module), "CROSS_CHECKS", ()))
    return checks


class _Located:
    """
    Where a value came from: for error messages.
    """

    def __init__(self, filename, lines):
        self.filename = filename
        self.lines = lines  # dotted key -> 1-based line

    def where(self, key):
        line = self.lines.get(key)
        if line is None:
            # Fall back to the nearest enclosing key that has a line.
            parts = key.split(".")
            while parts and line is None:
                parts.pop()
                line = self.lines.get(".".join(parts))
        if self.filename is None:
            return None
        if line is None:
            return self.filename
        return "%s:%d" % (self.filename, line)


def _parseYAML(text, filename):
    """
    Parse YAML into plain data plus a map of dotted keys to line numbers.
    """
    data, lines = parseWithLines(text, filename, ConfigError)
    dotted = {keyText(path): line for path, line in lines.items() if path}
    return data, dotted


def _raise(error):
    raise error


def _merge(section, data, prefix, located, out, fail=_raise):
    """
    Validate C{data} against C{section}, writing into C{out} (pre-filled with
    defaults).

    @param fail: called with each L{ConfigError}; the default raises it.
        A collecting caller (L{loadConfig} with C{errors}) records it
        instead, and the key keeps its default; the section's own check
        is then skipped (it would see the default, not what was written).
    """
    if data is None:
        return
    failed = []

    def fail(error, outer=fail):
        failed.append(error)
        return outer(error)
    if not isinstance(data, dict):
        return fail(ConfigError(prefix or None, "must be a mapping", located.where(prefix)))
    if section.reserved:
        for name, value in data.items():
            key = "%s.%s" % (prefix, name)
            if name != "enabled" or value not in (False, None):
                fail(ConfigError(
                    key, "section %r is reserved: it is not built yet, only 'enabled: false' "
                    "is accepted" % (prefix,), located.where(key)))
        return
    for name, value in data.items():
        key = "%s.%s" % (prefix, name) if prefix else str(name)
        item = section.keys.get(name)
        if item is None:
            if key in RENAMED:
                fail(ConfigError(key, "renamed: use %s (same keys)" % (RENAMED[key],),
                                 located.where(key)))
                continue
            known = ", ".join(sorted(section.keys))
            fail(ConfigError(key, "unknown key (known here: %s)" % (known,),
                             located.where(key)))
            continue
        if isinstance(item, Section):
            _merge(item, value, key, located, out[name], fail)
        else:
            try:
                out[name] = item.validate(value, key)
            except ConfigError as e:
                fail(ConfigError(e.key, e.message, located.where(e.key)))
    if section.check is not None and not failed:
        problem = section.check(out)
        if problem:
            fail(ConfigError(prefix, problem, located.where(prefix)))


def parseOverride(text):
    """
    Parse a C{section.key=value} override; the value is read as YAML
    (C{tftp.port=6969}, C{dhcp.interfaces=[eth1]}).

    @return: C{(dotted key, value)}
    @raise ConfigError: if it has no C{=}.
    """
    if "=" not in text:
        raise ConfigError(None, "override %r must look like section.key=value" % (text,))
    key, value = text.split("=", 1)
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def _nest(key, value):
    out = {}
    cursor = out
    parts = key.split(".")
    for p in parts[:-1]:
        cursor[p] = {}
        cursor = cursor[p]
    cursor[parts[-1]] = value
    return out


def loadConfig(path=None, overrides=(), text=None, errors=None, located=None):
    """
    Load and validate the configuration.

    @param path: a YAML file, or L{None} for the embedded defaults.
    @param overrides: C{(dotted key, value)} pairs applied after the file
        (command-line flags).
    @param text: YAML text to use instead of reading C{path} (tests).
    @param errors: L{None} to raise the first error; or a list, to collect
        every error instead (C{provisioner check}): each bad key keeps its
        default and validation goes on. A file that cannot be read or
        parsed is one error, and the defaults are returned.
    @param located: a list to append the file's L{_Located} to (where
        each key is: its C{where(key)} gives C{FILE:LINE}), or L{None}.
    @return: the configuration as a nested C{dict}.
    @raise ConfigError: whatever is wrong, with key and line (only when
        C{errors} is L{None}).
    """
    fail = _raise if errors is None else errors.append
    top = schema()
    out = top.defaults()
    filename = None
    where = _Located(None, {})
    try:
        if path is not None and text is None:
            filename = os.path.basename(path)
            text = readText(path, ConfigError)
        elif text is not None:
            filename = os.path.basename(path) if path else "<config>"
        where = _Located(filename, {})
        if text is not None:
            data, lines = _parseYAML(text, filename)
            if data is None:
                data = {}
            where = _Located(filename, lines)
            _merge(top, data, "", where, out, fail)
    except ConfigError as e:
        if errors is None:
            raise
        errors.append(e)
        out = top.defaults()
    if located is not None:
        located.append(where)
    overridden = set()
    for key, value in overrides:
        _merge(top, _nest(key, value), "", _Located("command line", {}), out, fail)
        overridden.add(key)
    for check in crossChecks():
        problem = check(out)
        if problem:
            key, message = problem
            fail(ConfigError(key, message,
                             "command line" if key in overridden else where.where(key)))
    return out


def describe(section=None, prefix=""):
    """
    Yield C{(dotted key, Key)} for every key, depth first (docs and samples).
    """
    if section is None:
        section = schema()
    for name, item in section.keys.items():
        key = "%s.%s" % (prefix, name) if prefix else name
        if isinstance(item, Section):
            for pair in describe(item, key):
                yield pair
        else:
            yield key, item


def reserved(doc):
    """
    A section for a subsystem that is not built yet.
    """
    return Section(doc + " (reserved: not built yet; only 'enabled: false' is accepted)",
                   {"enabled": Key(False, "bool", "must stay false until the subsystem exists")},
                   reserved=True)


def sample(section=None, indent=0):
    """
    Return a commented YAML document setting every key to its default: the
    source of C{etc/provisioner.yaml} (C{provisioner config-sample}).
    """
    if section is None:
        section = schema()
        head = ("# provisioner configuration: every key, set to its embedded default.\n"
                "# Generated by `provisioner config-sample`; docs/operator-guide.md explains\n"
                "# each section. Unknown keys are errors; `provisioner check-config FILE`\n"
                "# validates a file without starting anything.\n")
        return head + sample(section, 0)
    pad = "  " * indent
    out = []
    for name, item in section.keys.items():
        if isinstance(item, Section):
            out.append("")
            for line in _wrap(item.doc):
                out.append("%s# %s" % (pad, line))
            out.append("%s%s:" % (pad, name))
            out.append(sample(item, indent + 1).rstrip("\n"))
        else:
            for line in _wrap(item.doc):
                out.append("%s# %s" % (pad, line))
            rendered = yaml.safe_dump({name: item.default}, default_flow_style=True,
                                      width=1000).strip()
            if rendered.startswith("{") and rendered.endswith("}"):
                rendered = rendered[1:-1]
            out.append(pad + rendered)
    return "\n".join(out) + "\n"


def _wrap(text, width=86):
    import textwrap
    return textwrap.wrap(text, width) or [""]
