# -*- test-case-name: tests.test_layout -*-
"""
The client programs: what a machine being provisioned runs, and their
command lines. They import wire codecs and small shared helpers, never a
server, session, service or schema module of the appliance
(C{tests/test_layout.py} checks it).

Unicast TFTP (C{provisioner fetch}):
  - C{tftp}: the read client (levels of options, the client-adjustable
    window, reads of a C{ranges} view for smart repair);
  - C{options}: what a read asks for and what it got;
  - C{window}: the client-adjustable window's controller.

Multicast TFTP (RFC 2090, C{provisioner fetch --multicast}):
  - C{mtftp}: the multicast client and the whole download;
  - C{masteracks}: the client's ACKs while it is the master;
  - C{gaps}: the blocks that arrived and the gaps, what a master's ACKs list;
  - C{roles}: the client roles and the promotion rules;
  - C{repair}: smart repair, by unicast reads of only the missing blocks.

The image receiver of imagecast (C{provisioner receive}):
  - C{receiver}: the receiver, made of the parts below;
  - C{receiverpushes}: its answers to what the appliance pushes on the
    control channel (piece digests, announcements, end of round, end of
    the rounds);
  - C{receiverrounds}: its rounds (flow control, the end of a round's data,
    the report of what is missing);
  - C{receiverend}: its end (the rest fetched over the control channel,
    the verification, giving up);
  - C{datapath}: its data channel; C{sockfilter}: the kernel filter;
  - C{imagehash}: the image's SHA-256 out of order;
  - C{receiverclient}: its control connection; C{control}: the
    control-channel connection helpers (shared with the sender's command
    line);
  - C{receivecli}: its command line (C{provisioner receive}: the progress
    bar, the summary).

Both: C{output} (files written at offsets), C{cli} (the command lines:
C{fetch}, and C{register}, which adds C{receive} too).
"""

__all__ = []
