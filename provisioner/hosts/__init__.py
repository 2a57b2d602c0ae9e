"""
hosts subsystem of provisioner: the lifecycle of every host (discovered,
ready, deploying, deployed, failed), boot once, callbacks from the booted
system, discovery and adoption.

  - C{lifecycle}: the states and the transition table (pure);
  - C{book}: the L{HostBook<provisioner.hosts.book.HostBook>}
    (C{appliance.hosts}: the hosts, their histories, following the
    inventory, every change of state, the queries), which owns one object
    per role below;
  - C{tokens}: per-boot tokens (C{TokenLedger});
  - C{discovery}: machines no inventory names (C{Discovery});
  - C{deploy}: the deploy signal from TFTP and HTTP fetches
    (C{DeploySignal}, C{deployPaths});
  - C{boot}: what the menus renderer is told about a boot
    (C{BootDecisions}, C{BootDecision});
  - C{callbacks}: booted systems' reports (C{Callbacks});
  - C{admin}: who is an admin, redeploy and adopt (C{AdminActions});
  - C{errors}: the refusals and their HTTP statuses;
  - C{service}, C{schema}, C{cli}: the C{hosts} service, its configuration
    section and C{provisioner hosts}.
"""

__all__ = []
