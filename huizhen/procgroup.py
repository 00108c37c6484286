"""Stopping child processes started in their own process group (workers of benchmarks and
load tests): give them time to exit by themselves, then SIGTERM, then SIGKILL the group."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal


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
