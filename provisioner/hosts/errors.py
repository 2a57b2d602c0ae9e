# -*- test-case-name: tests.test_hosts -*-
"""
What the host book refuses: every refusal is a L{HostsError} whose C{code}
is the HTTP status the JSON API answers with.
"""

__all__ = ["HostsError", "BadRequest", "Refused", "NotFound", "Conflict", "NotReady"]


class HostsError(Exception):
    """
    A request the book refuses; C{code} is the HTTP status the JSON API
    answers with.
    """

    code = 400


class BadRequest(HostsError):
    code = 400


class Refused(HostsError):
    code = 403


class NotFound(HostsError):
    code = 404


class Conflict(HostsError):
    code = 409


class NotReady(HostsError):
    code = 503
