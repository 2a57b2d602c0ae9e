"""
Sockets for every subsystem and both ends: socket options, batched UDP
receive (recvmmsg), libc access.
"""
