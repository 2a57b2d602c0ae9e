"""
tftp subsystem of provisioner.
"""
