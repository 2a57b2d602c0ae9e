"""
menus subsystem of provisioner.
"""
