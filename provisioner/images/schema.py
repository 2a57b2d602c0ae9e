# -*- test-case-name: tests.test_config -*-
"""
The C{images} section of the configuration.
"""

from provisioner.config import reserved

SCHEMA = reserved("watched image directory")
