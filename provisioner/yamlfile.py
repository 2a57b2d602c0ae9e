# -*- test-case-name: tests.test_config -*-
"""
YAML files an operator writes (the configuration, the inventory), parsed
with the line of every key, so that every error can name file, line and key.

  - Duplicate keys are errors (YAML would keep the last one silently).
  - Keys must be text.
  - Unquoted MAC addresses are read as text (YAML 1.1 would read
    C{52:54:00:12:34:56} as a base-60 integer).
"""

import re

import yaml

__all__ = ["Loader", "parseWithLines", "keyText", "readText"]

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster


class Loader(_BaseLoader):
    """
    A safe loader that reads unquoted MAC addresses as text.
    """


Loader.yaml_implicit_resolvers = {
    k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(?:[:-][0-9a-fA-F]{2}){5}$")
for _c in "0123456789":
    Loader.yaml_implicit_resolvers.setdefault(_c, []).insert(
        0, ("tag:yaml.org,2002:str", _MAC_RE))


def keyText(path):
    """
    C{("hosts", "a", "mac", 1)} as C{hosts.a.mac[1]}.
    """
    out = ""
    for part in path:
        if isinstance(part, int):
            out += "[%d]" % (part,)
        else:
            out += ("." if out else "") + str(part)
    return out


def readText(path, error):
    """
    Read an operator's file as UTF-8 text.

    @param error: the exception type to raise, called as
        C{error(None, message)}.
    @raise error: the file cannot be read (the message names it and says
        why) or is not UTF-8.
    """
    try:
        with open(path, "r", encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise error(None, "cannot read %s: %s" % (path, e.strerror or e))
    except UnicodeDecodeError:
        raise error(None, "%s is not UTF-8 text" % (path,))


def parseWithLines(text, filename, error):
    """
    Parse YAML into plain data and a C{{path tuple: line}} map.

    @param error: the exception type to raise, called as
        C{error(key, message, where)}.
    @return: C{(data, lines)}; C{data} is L{None} for an empty document.
    """
    loader = Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = filename
            if mark is not None:
                where = "%s:%d" % (filename, mark.line + 1)
            raise error(None, "not valid YAML: %s" % (getattr(e, "problem", None) or e,), where)
        lines = {}

        def at(mark):
            return "%s:%d" % (filename, mark.line + 1)

        def walk(n, path):
            if isinstance(n, yaml.MappingNode):
                seen = set()
                for k, v in n.value:
                    try:
                        name = loader.construct_object(k, deep=True)
                    except yaml.YAMLError as e:
                        raise error(keyText(path) or None, "bad key: %s" % (e,), at(k.start_mark))
                    if not isinstance(name, (str, int)) or isinstance(name, bool):
                        raise error(keyText(path) or None, "keys must be text (got %r)" % (name,),
                                    at(k.start_mark))
                    name = str(name)
                    sub = path + (name,)
                    if name in seen:
                        raise error(keyText(sub), "duplicate key (an earlier one at line %d)" % (
                            lines[sub],), at(k.start_mark))
                    seen.add(name)
                    lines[sub] = k.start_mark.line + 1
                    walk(v, sub)
            elif isinstance(n, yaml.SequenceNode):
                for i, item in enumerate(n.value):
                    sub = path + (i,)
                    lines[sub] = item.start_mark.line + 1
                    walk(item, sub)

        if node is None:
            return None, lines
        lines[()] = node.start_mark.line + 1
        walk(node, ())
        try:
            data = loader.construct_document(node)
        except yaml.YAMLError as e:
            raise error(None, "not valid YAML: %s" % (e,), filename)
        return data, lines
    finally:
        loader.dispose()
