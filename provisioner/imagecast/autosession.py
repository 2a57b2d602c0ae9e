# -*- test-case-name: tests.test_imaging -*-
"""
The imaging profiles' side of imagecast (docs/imaging.md):
L{ImagingSessions}, the L{provisioner.interfaces.IImaging} the imagecast
service publishes as part of C{appliance.imagecast}, which the host
lifecycle's orders use without reaching into the service:

  - a secret per host, registered with the control channel's
    L{provisioner.imagecast.auth.Authenticator} at runtime;
  - the address receivers reach the control channel at;
  - automatic sessions: the first host of an imaging profile that asks for
    its orders starts the session of the profile's image, the way
    C{imagecast send} does (L{provisioner.imagecast.controller.Controller.
    autoStart}), with the profile's C{min_receivers} and C{max_wait}
    counted from that moment; later hosts' receivers join it (at any
    round); when none is waiting or running, the next host starts another;
  - what each host's receiver did, from the sessions' scorecards, by
    receiver id: the host's name (or its part before a colon).

Nothing here imports the reactor.
"""

from zope.interface import implementer

from provisioner.interfaces import IImaging

__all__ = ["ImagingSessions", "receiverView"]

_WILDCARDS = ("", "0.0.0.0", "::")


def _hostOf(clientId):
    return clientId.split(":", 1)[0]


def receiverView(session, card, clientId):
    """
    What one receiver of a session did, from the session's scorecard.

    @param session: the L{provisioner.imagecast.session.Session}.
    @param card: its scorecard (L{provisioner.imagecast.scorecard}).
    @param clientId: the receiver's id, a key of C{card["members"]}.
    @return: a C{dict}: C{session}, C{image}, C{session_state}, C{round},
        C{size}, C{received_bytes} (the image less what it last reported
        missing; before its first report in round 1, how far the round's
        data reached it), C{repaired_bytes} (what it lacked at its first
        report and got since, in repair rounds or over the control
        channel), C{verdict} and C{reason}.
    """
    m = card["members"][clientId]
    size = card["size"]
    missing = m["missing_by_round"]
    reported = sorted(int(k) for k in missing)
    first = missing[str(reported[0])] if reported else None
    if m["state"] == "complete":
        received = size
        repaired = first or 0
    elif reported:
        now = missing[str(reported[-1])]
        received = size - now
        repaired = max(0, first - now)
    else:
        member = session.members.get(clientId)
        progress = getattr(member, "progress", None)
        received = min(size, progress[1]) if progress and progress[0] == 1 else 0
        repaired = 0
    if m["state"] == "active":
        verdict = "waiting" if card["state"] == "waiting" else "receiving"
    else:
        verdict = m["state"]
    return {"session": card["session"], "image": card["name"],
            "session_state": card["state"], "round": card["round"], "size": size,
            "received_bytes": received, "repaired_bytes": repaired, "verdict": verdict,
            "reason": m["reason"], "receiver": clientId}


@implementer(IImaging)
class ImagingSessions:
    """
    See the module docstring.

    @ivar controller: the L{provisioner.imagecast.controller.Controller}.
    @ivar authenticator: the control channel's
        L{provisioner.imagecast.auth.Authenticator}.
    @ivar conditions: C{{image: (minReceivers, maxWait)}}, the start
        conditions of the images hosts asked for (the latest ask wins).
    """

    def __init__(self, controller, authenticator, port=lambda: None):
        """
        @param port: a callable returning the control channel's listening
            port (C{getHost()}), or L{None} before it is bound.
        """
        self.controller = controller
        self.authenticator = authenticator
        self._port = port
        self.conditions = {}
        controller.startConditions = self.conditions.get

    @property
    def authentication(self):
        return self.authenticator.mode

    def addReceiver(self, receiverId, secret):
        return self.authenticator.addReceiver(receiverId, secret)

    def controlAddress(self, local=None):
        port = self._port()
        if port is None:
            return None
        host = port.getHost()
        address = host.host
        if address in _WILDCARDS:
            address = local
        if not address:
            return None
        return address, host.port

    def want(self, image, minReceivers, maxWait, receiverId):
        self.conditions[image] = (minReceivers, maxWait)
        return self.controller.autoStart(image, minReceivers, maxWait)

    def receivers(self):
        out = {}
        # finished sessions first, then the running ones: the newest wins
        controller = self.controller
        for session in list(controller.finished) + list(controller.sessions.values()):
            card = session.scorecard()
            for clientId in card["members"]:
                out[_hostOf(clientId)] = receiverView(session, card, clientId)
        return out
