"""
Multicast TFTP (RFC 2090) on the server, with its extensions: the wire
format shared with the client (C{codec}), one transfer (C{session}, with
its send side in C{sending} and its clients and master rotation in
C{clients}), the running sessions and their groups (C{registry}), smart
repair (C{repair}), the flow-control policies (C{flowcontrol}: delayed
start, QoS by load, rate control, retransmit-last), and the child service
of tftp that plugs them in (C{service}).
"""
