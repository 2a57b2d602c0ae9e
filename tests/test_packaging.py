"""
The package metadata ships every package of the tree.
"""

import configparser
import os

from twisted.trial.unittest import TestCase

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class PackagesTests(TestCase):
    """
    C{setup.cfg}'s C{packages} against the directories of C{provisioner/}.
    """

    def test_everyPackageListed(self):
        """
        If a directory below C{provisioner/} has an C{__init__.py}, it is
        in C{setup.cfg}'s C{packages} (else an installed appliance lacks
        it), and every listed package exists.
        """
        found = set()
        for directory, _, files in os.walk(os.path.join(REPO, "provisioner")):
            if "__init__.py" in files:
                found.add(os.path.relpath(directory, REPO).replace(os.sep, "."))
        config = configparser.ConfigParser()
        config.read(os.path.join(REPO, "setup.cfg"))
        listed = set(config["options"]["packages"].split())
        self.assertEqual(found - listed, set())
        self.assertEqual(listed - found, {"twisted.plugins"})


class PackageDataTests(TestCase):
    """
    C{setup.cfg}'s C{package_data} against the files the packages read.
    """

    def test_dashboardShipped(self):
        """
        If the dashboard (L{provisioner.web.dashboard}) serves a file, a
        C{package_data} pattern of C{provisioner.web} matches it (else an
        installed appliance's dashboard is empty), and it exists.
        """
        import fnmatch

        from provisioner.web.dashboard import FILES, UI_DIRECTORY
        config = configparser.ConfigParser()
        config.read(os.path.join(REPO, "setup.cfg"))
        patterns = config["options.package_data"].get("provisioner.web", "").split()
        web = os.path.join(REPO, "provisioner", "web")
        for name in FILES:
            path = os.path.join(UI_DIRECTORY, name)
            self.assertTrue(os.path.isfile(path), path)
            relative = os.path.relpath(path, web)
            self.assertTrue(any(fnmatch.fnmatch(relative, p) for p in patterns),
                            "%s is not in package_data %r" % (relative, patterns))
