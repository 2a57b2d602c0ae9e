"""
Multicast TFTP (RFC 2090) on the server, with its extensions: the wire
format shared with the client (C{codec}), sessions, the registry, unicast
gap repair and the flow-control policies (delayed start, QoS by load, rate
control, retransmit-last).
"""
