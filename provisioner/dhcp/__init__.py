"""
dhcp subsystem of provisioner.
"""
