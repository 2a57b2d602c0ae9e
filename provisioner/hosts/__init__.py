"""
hosts subsystem of provisioner: the lifecycle of every host (discovered,
ready, deploying, deployed, failed), boot once, callbacks from the booted
system, discovery and adoption.
"""

__all__ = []
