"""
images subsystem of provisioner.
"""
