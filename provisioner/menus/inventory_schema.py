# -*- test-case-name: tests.test_config -*-
"""
The C{inventory} section of the configuration.
"""

from provisioner.config import reserved

SCHEMA = reserved("YAML inventory of hosts")
