"""Huizhen (会诊): WebRTC signalling server and SFU for real-time video consultation."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("huizhen")
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"
