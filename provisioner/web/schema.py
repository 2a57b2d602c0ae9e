# -*- test-case-name: tests.test_config -*-
"""
The C{http} section of the configuration.
"""

from provisioner.config import reserved

SCHEMA = reserved("HTTP service for images and menus")
