# -*- test-case-name: tests.test_config -*-
"""
The C{menus} section of the configuration.
"""

from provisioner.config import reserved

SCHEMA = reserved("Jinja2 boot menus")
