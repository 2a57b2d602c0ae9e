# -*- test-case-name: tests.test_images,tests.test_images_hardening -*-
"""
How catalogued images are served: L{ImagesResolver}, the
L{provisioner.interfaces.IFileResolver} that the images service puts in
the TFTP service's chain and the HTTP service asks directly.
"""

from zope.interface import implementer

from provisioner.interfaces import IFileResolver

__all__ = ["ImagesResolver"]


@implementer(IFileResolver)
class ImagesResolver:
    """
    Serves catalogued images (and nothing else from the images directory)
    as C{<prefix>/<name>}, each opened for its transfer
    (L{provisioner.images.catalog.Catalog.openSource}). Anything else,
    images not (yet) catalogued and images whose file no longer has the
    catalogued content fall through to the next resolver (L{None}).
    """

    def __init__(self, catalog):
        self.catalog = catalog

    def nameFor(self, path):
        """
        Return the catalogue name for a request path, or L{None} when the
        path is not below the prefix.
        """
        prefix = self.catalog.prefix
        if not prefix:
            return path
        if path.startswith(prefix + "/"):
            return path[len(prefix) + 1:]
        return None

    def resolve(self, request):
        name = self.nameFor(request.path)
        if name is None:
            return None
        return self.catalog.openSource(name)
