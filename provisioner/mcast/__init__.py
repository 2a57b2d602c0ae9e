"""
mcast subsystem of provisioner.
"""
