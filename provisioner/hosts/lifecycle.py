# -*- test-case-name: tests.test_hosts -*-
"""
The lifecycle of a host, as a pure state machine: the states, the allowed
transitions as a table, and the event each transition makes. No clock, no
store, no reactor: the caller gives the time and keeps the result.

    discovered --adopt--> ready --booted its deploy entry--> deploying
    deploying --callback: deployed--> deployed --redeploy--> ready
    deploying --callback: failed--> failed --redeploy--> ready
    failed --booted its deploy entry again--> deploying

A machine no inventory names is C{discovered} (keyed by its MAC); a host of
the inventory (or an adopted one) with a profile starts C{ready}.
"""

from provisioner.store.records import Event

__all__ = ["STATES", "TRANSITIONS", "TransitionRefused", "allowed", "transition", "progress",
           "DISCOVERED", "READY", "DEPLOYING", "DEPLOYED", "FAILED"]

DISCOVERED = "discovered"
READY = "ready"
DEPLOYING = "deploying"
DEPLOYED = "deployed"
FAILED = "failed"

#: every state, in lifecycle order
STATES = (DISCOVERED, READY, DEPLOYING, DEPLOYED, FAILED)

#: (from, to) -> what makes it happen; L{None} as "from" is a new record
TRANSITIONS = {
    (None, DISCOVERED): "a machine no inventory names booted",
    (None, READY): "a host with a profile appeared (inventory or adoption)",
    (DISCOVERED, READY): "the machine was adopted, or the inventory now names it",
    (READY, DEPLOYING): "it booted its deploy entry (or called back from it)",
    (FAILED, DEPLOYING): "it booted its deploy entry again",
    (DEPLOYING, DEPLOYED): "the installed system called back: deployed",
    (DEPLOYING, FAILED): "the deploy environment called back: failed",
    (DEPLOYED, READY): "redeploy: its next boot deploys again",
    (FAILED, READY): "redeploy after a failure",
    (DEPLOYING, READY): "redeploy while deploying: the next boot starts over",
}

#: the states a progress report (an event without a transition) is taken in
PROGRESS_STATES = frozenset([DEPLOYING])


class TransitionRefused(Exception):
    """
    The table has no such transition.

    @ivar source, target: the states asked for.
    """

    def __init__(self, source, target):
        self.source = source
        self.target = target
        Exception.__init__(self, "no transition from %s to %s" % (
            source or "nothing", target))


def allowed(source, target):
    """
    Whether the table allows C{source} -> C{target}.
    """
    return (source, target) in TRANSITIONS


def transition(key, source, target, why, now):
    """
    Check a transition and make its event.

    @param key: the host's name (or a discovered machine's MAC).
    @param source: the current state, or L{None} for a new record.
    @param why: a sentence for the operator.
    @param now: the time.
    @return: the L{Event}.
    @raise TransitionRefused: the table does not allow it.
    """
    if target not in STATES or not allowed(source, target):
        raise TransitionRefused(source, target)
    return Event(key=key, time=now, source=source, target=target, why=why)


def progress(key, state, why, now):
    """
    A progress report: an event that changes no state.

    @raise TransitionRefused: progress is not taken in C{state}.
    """
    if state not in PROGRESS_STATES:
        raise TransitionRefused(state, state)
    return Event(key=key, time=now, source=state, target=state, why=why)
