# -*- test-case-name: tests.test_config -*-
"""
The C{multicast} section of the configuration.
"""

from provisioner.config import reserved

SCHEMA = reserved("control-channel image multicast")
