"""
store subsystem of provisioner: what must outlive the process and may one
day be shared between appliances, behind one interface
(L{provisioner.store.interfaces.IHostStore}); SQLite is the embedded
implementation (L{provisioner.store.sqlite}).
"""

__all__ = []
