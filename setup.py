# setup.py exists only so that `pip install .` compiles the C ring through cffi.
from setuptools import setup

setup(cffi_modules=["taskorbit/worker/_ringbuf_build.py:ffibuilder"])
