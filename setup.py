"""Everything is in pyproject.toml but the C part of the send path, which cffi builds at install
time (media/fastpath_build.py)."""

from setuptools import setup

setup(cffi_modules=["media/fastpath_build.py:ffibuilder"])
