"""
imagecast: control-channel image multicast, the appliance side (commands,
range lists and datagram codecs shared with the receiver; the sender, its
sessions, rounds and pacing; the service).
"""
