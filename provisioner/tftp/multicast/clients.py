# -*- test-case-name: tests.test_mtftp_server -*-
"""
The clients of a multicast TFTP session and its master rotation: who has
joined, the OACK each is sent, who is master, and the master's timer.

A client joins with its request and is sent its OACK (mc=0, or mc=1 as
master); the first in line is master. A master that has the whole file
leaves; one that times out C{master_retries} times goes to the end of the
line (once) or is dropped. A master that has never acknowledged anything
(it may be an address that never asked) is asked again at most
C{tftp.unanswered_retries} times, every C{tftp.unanswered_timeout} seconds
at most (whatever C{timeout} it negotiated), then dropped without an ERROR.
Until a client has acknowledged something, the OACKs it is sent again
(timeouts, the delayed start) stay within L{AMPLIFICATION} times the bytes
of its requests; its first OACK and its first OACK as master always go. A
joined client is counted against the per-address limit until it leaves
(its C{release}, set by the registry, is called whenever it is removed or
the session ends).
"""

from provisioner.tftp import wire
from provisioner.tftp.multicast.codec import EPOCH_OPTION, MULTICAST_OPTION
from provisioner.tftp.transfer import AMPLIFICATION

__all__ = ["SessionClients"]


class _Client:
    """
    One client of a multicast session.
    """

    def __init__(self, peer, options, windowsize, timeout, joined, requestBytes=None):
        self.peer = peer
        self.options = options  # requested, in order
        self.windowsize = windowsize
        self.timeout = timeout
        self.joined = joined
        self.lastAck = 0
        self.acked = False
        self.demotions = 0
        # what undoes its count against the limits (set by the registry)
        self.release = None
        # bytes sent to it before it acknowledged anything, and the most
        # that resends may bring them to (None: no bound)
        self.sent = 0
        self.budget = AMPLIFICATION * requestBytes if requestBytes else None

    def __repr__(self):
        return "<client %s:%d>" % self.peer


class SessionClients:
    """
    The clients and master rotation, mixed into L{MulticastSession
    <provisioner.tftp.multicast.session.MulticastSession>} (no call or
    lookup is added per ACK: the methods are the session's own): it keeps
    the session's C{clients} (in rotation order; C{clients[0]} is the master
    once the stream runs), C{master}, C{awaitingRestart}, C{retries} and
    C{_timer}, and uses its C{registry}, C{clock}, C{_port}, C{gate},
    C{rate}, C{stats}, its logger (C{log}, so the log namespace is the
    session's) and its C{_finish}.
    """

    # Joining --------------------------------------------------------------

    def find(self, peer):
        for c in self.clients:
            if c.peer == peer:
                return c
        return None

    def join(self, peer, options, windowsize, timeout, requestBytes=None):
        """
        Add a client (or answer a retransmitted request again) and send
        its OACK.

        @param requestBytes: the size of the request, which bounds what is
            sent again to the client before it acknowledges anything.
        """
        client = self.find(peer)
        if client is not None and client.budget is not None and requestBytes:
            client.budget += AMPLIFICATION * requestBytes
        if client is None:
            client = _Client(peer, options, windowsize, timeout, self.clock.seconds(),
                             requestBytes)
            self.clients.append(client)
            self.stats["joins"] += 1
            self.log.info("multicast {session}: {peer} joined ({count} client(s), "
                          "stream at block {block})", session=self.name,
                          peer="%s:%d" % peer, count=len(self.clients), block=self.nextSend)
            self.gate.joined(len(self.clients))
        if self.master is None and self.gate.isOpen:
            self._nextMaster()
        else:
            self._sendOACK(client, client is self.master)
        return client

    def oackFor(self, client, master):
        out = []
        for name, value in client.options:
            if name == "blksize":
                out.append(("blksize", str(self.blksize)))
            elif name == "tsize":
                out.append(("tsize", str(self.size)))
            elif name == "timeout" and client.timeout is not None:
                out.append(("timeout", value))
            elif name == "windowsize":
                out.append(("windowsize", str(client.windowsize)))
            elif name == MULTICAST_OPTION:
                out.append((MULTICAST_OPTION, "%s,%d,%d" % (self.group[0], self.group[1],
                                                            1 if master else 0)))
            elif name == EPOCH_OPTION and self.epoch:
                out.append((EPOCH_OPTION, "1"))
        return wire.OptionAck(out)

    def _sendOACK(self, client, master, again=False):
        """
        Send C{client} its OACK (C{master}: mc=1). C{again}: a resend,
        which a client that has not acknowledged anything yet gets only
        within its byte budget.
        """
        if self._port is None:
            return
        datagram = self.oackFor(client, master).to_wire()
        if not client.acked:
            if again and client.budget is not None and \
                    client.sent + len(datagram) > client.budget:
                return
            client.sent += len(datagram)
        self.stats["control"] += 1
        self._port.write(datagram, client.peer)

    @staticmethod
    def _released(client):
        """
        C{client} leaves: it no longer counts against the limits.
        """
        release = client.release
        if release is not None:
            release()

    def _remove(self, client, why):
        if client not in self.clients:
            return
        self.clients.remove(client)
        self._released(client)
        self.log.info("multicast {session}: {peer} left ({why}); {count} client(s) remain",
                      session=self.name, peer="%s:%d" % client.peer, why=why,
                      count=len(self.clients))
        if client is self.master:
            self.master = None
            self._nextMaster()
        elif not self.clients:
            self._finish("finished")

    # Master rotation ------------------------------------------------------

    def _nextMaster(self):
        self._cancelTimer()
        if not self.clients:
            self.master = None
            self._finish("finished")
            return
        self.master = self.clients[0]
        self.awaitingRestart = True
        self.retries = 0
        # Send times and the round-trip estimate belong to one master's
        # turn: a block the previous pass sent seconds ago, acknowledged by
        # the new master, is no round trip (taken as one it held every
        # hole retransmission back by seconds: the issue 6 master stall).
        self.sentAt.clear()
        self.sentSeq.clear()
        self.srtt = None
        self.repairQueue = []
        self.listed.clear()
        self.stats["masters"] += 1
        self.log.info("multicast {session}: master is now {peer}", session=self.name,
                      peer="%s:%d" % self.master.peer)
        self._sendOACK(self.master, True)
        self._startTimer()

    def _masterTimedOut(self):
        client = self.master
        self.stats["timeouts"] += 1
        client.demotions += 1
        drop = not client.acked or client.demotions > 1
        self.log.info("multicast {session}: master {peer} timed out; {action}",
                      session=self.name, peer="%s:%d" % client.peer,
                      action="dropped" if drop else "moved to the end of the queue")
        self.clients.remove(client)
        if not drop:
            self.clients.append(client)
            self._sendOACK(client, False)
        else:
            self._released(client)
            if self._port is not None and client.acked:
                # Tell it (if it is still there) so that it does not wait
                # as master. One that never answered gets nothing more: it
                # may be an address that never asked.
                self._port.write(wire.Error(wire.ERR_NOT_DEFINED, "dropped from the multicast "
                                            "session (master timeout)").to_wire(), client.peer)
        self.master = None
        self._nextMaster()

    def _cancelTimer(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _startTimer(self):
        self._cancelTimer()
        timeout = self.timeout
        master = self.master
        if master is not None:
            if master.timeout:
                timeout = master.timeout
            cap = self.registry.unansweredTimeout
            if not master.acked and cap is not None and cap < timeout:
                # It never answered: whatever it negotiated, not for long.
                timeout = cap
        self._timer = self.clock.callLater(timeout, self._timeout)

    def _timeout(self):
        self._timer = None
        master = self.master
        if master is None:
            return
        self.retries += 1
        self.rate.congested()
        limit = self.registry.masterRetries
        if not master.acked and self.registry.unansweredRetries is not None:
            limit = min(limit, self.registry.unansweredRetries)
        if self.retries > limit:
            self._masterTimedOut()
            return
        # Ask the master where it is: a new OACK (mc=1) makes an RFC 2090
        # client ACK its first missing block (which also answers a lost
        # final ACK); that ACK then repairs the hole.
        self._sendOACK(self.master, True, again=True)
        self._startTimer()

    def _masterDone(self, client):
        """
        The master has the whole file: it leaves, and the next client is
        made master.
        """
        self._cancelTimer()
        self.log.info("multicast {session}: {peer} has the whole file",
                      session=self.name, peer="%s:%d" % client.peer)
        self.clients.remove(client)
        self._released(client)
        self.master = None
        self._nextMaster()
