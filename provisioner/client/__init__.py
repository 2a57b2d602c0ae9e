"""
The client programs: what a machine being provisioned runs (the unicast
TFTP client, the multicast TFTP client and its repair, the image receiver)
and their command lines. They import wire codecs and small shared helpers,
never a server, session, service or schema module of the appliance.
"""
