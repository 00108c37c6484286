"""Child processes (workers of the recording, benchmarks and load tests): they die with the
process that started them, and a process group is stopped by giving it time to exit by itself,
then SIGTERM, then SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """Linux: this process gets SIGTERM when its parent dies (even by SIGKILL). Use as a
    ``preexec_fn`` (in the child, before exec) or first thing in the child."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def signal_group(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


async def stop_group(proc: asyncio.subprocess.Process, grace: float, term_wait: float = 5.0,
                     kill_wait: float = 5.0) -> None:
    steps: tuple[tuple[signal.Signals | None, float], ...] = (
        (None, grace), (signal.SIGTERM, term_wait), (signal.SIGKILL, kill_wait))
    for sig, wait in steps:
        if sig is not None:
            signal_group(proc, sig)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), wait)
            return
