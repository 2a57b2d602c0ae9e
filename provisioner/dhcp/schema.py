# -*- test-case-name: tests.test_config -*-
"""
The C{dhcp} section of the configuration.
"""

from provisioner.config import reserved

SCHEMA = reserved("DHCP / proxyDHCP / PXE responder")
