"""
web subsystem of provisioner.
"""
