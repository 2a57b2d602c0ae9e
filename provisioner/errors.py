# -*- test-case-name: tests.test_files -*-
"""
Error types shared by the protocols. Backend errors are mapped to wire error
codes in one place per protocol (TFTP: L{provisioner.tftp.wire}; HTTP: the
web resources).
"""

__all__ = ["ProvisionerError", "BackendError", "FileNotFound", "AccessViolation",
           "DiskFull", "FileExists", "TooManySessions"]


class ProvisionerError(Exception):
    """
    Base of provisioner's own errors.
    """


class BackendError(ProvisionerError):
    """
    A data source or resolver failed; the message may be shown to the client.
    """


class FileNotFound(BackendError):
    """
    No such file.
    """


class AccessViolation(BackendError):
    """
    The request is refused (outside the root, unreadable, forbidden name).
    """


class DiskFull(BackendError):
    """
    No space left to store an upload.
    """


class FileExists(BackendError):
    """
    An upload would overwrite an existing file.
    """


class TooManySessions(BackendError):
    """
    A session limit was reached.
    """
