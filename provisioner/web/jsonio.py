# -*- test-case-name: tests.test_web,tests.test_hostile_inputs -*-
"""
JSON in and out of the API: the body of a POST (L{jsonBody}, bounded by
L{MAX_BODY}), values made JSON-able (L{jsonable}) and the inventory
variables an answer may show (L{publicVars}: the API has no authentication
for reading, so it shows only those named in C{http.api_vars}).
"""

import json

__all__ = ["publicVars", "jsonable", "jsonBody", "MAX_BODY"]


def publicVars(value, allowed):
    """
    A copy of a JSON-able C{value} in which every C{vars} mapping, at any
    depth, keeps only the names in C{allowed}.
    """
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "vars" and isinstance(item, dict):
                out[key] = {name: publicVars(v, allowed) for name, v in item.items()
                            if name in allowed}
            else:
                out[key] = publicVars(item, allowed)
        return out
    if isinstance(value, (list, tuple)):
        return [publicVars(v, allowed) for v in value]
    return value


#: the largest JSON body taken
MAX_BODY = 65536


def jsonBody(request):
    """
    The request's JSON body when its Content-Type says JSON, else L{None}.

    @raise ValueError: too large, or not JSON.
    """
    kind = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
    if kind != b"application/json":
        return None
    content = request.content
    if content is None:
        return None
    content.seek(0)
    raw = content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise ValueError("the body is larger than %d bytes" % (MAX_BODY,))
    if not raw.strip():
        return {}
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError("the body is not JSON")


def jsonable(value):
    """
    A copy of C{value} that C{json.dumps} takes: keys as strings, tuples as
    lists, bytes decoded (UTF-8, replaced), anything else as its C{str}.
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
