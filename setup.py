"""
The metadata is in setup.cfg; this adds the optional C fast path of the
image-multicast receiver (provisioner/mcast/_fastpath.c, linked with
OpenSSL's libcrypto). When it cannot be built, the pure-Python path in
provisioner/mcast/datagram.py is used.
"""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("provisioner.mcast._fastpath", ["provisioner/mcast/_fastpath.c"],
              libraries=["crypto"], optional=True,
              extra_compile_args=["-O2"]),
])
