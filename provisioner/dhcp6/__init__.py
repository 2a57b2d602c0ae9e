"""
dhcp6 subsystem of provisioner: DHCPv6 for network boot (docs/dhcp6.md).
"""
