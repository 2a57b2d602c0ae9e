# -*- test-case-name: tests.test_web -*-
"""
The loggers of the web resources. Twisted's L{Logger}, as a class
attribute, takes the namespace of the class it is read on (its module and
name). The resources of this package (L{provisioner.web.files},
L{provisioner.web.streaming}, L{provisioner.web.api}) were split out of
one module, C{provisioner.web.resources}, which is gone; their lines keep
the namespaces they had there (twistd prints them, and operators filter on
them): each class names its namespace with L{NamedLogger}.
"""

from twisted.logger import Logger

__all__ = ["NamedLogger"]


class NamedLogger(Logger):
    """
    A L{Logger} for a class attribute whose namespace is the one it was
    given, whatever class it is read on; its source is the instance (or the
    class), as with L{Logger}.
    """

    def __get__(self, instance, owner=None):
        return self.__class__(self.namespace, owner if instance is None else instance,
                              observer=self.observer)
