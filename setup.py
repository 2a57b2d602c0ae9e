"""
The metadata is in setup.cfg; this adds the optional C fast path of the
image-multicast receiver (provisioner/imagecast/_fastpath.c, linked with
OpenSSL's libcrypto). When it cannot be built, the pure-Python path in
provisioner/imagecast/datagram.py is used.
"""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("provisioner.imagecast._fastpath", ["provisioner/imagecast/_fastpath.c"],
              libraries=["crypto"], optional=True,
              extra_compile_args=["-O2"]),
])
