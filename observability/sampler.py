"""One small task: how late the event loop wakes it (lag), the process CPU, and each
subscriber's first video.

Every ``INTERVAL_S`` it sleeps and measures the overshoot (into the lag histogram, and the last
``WINDOW`` samples for the admin API's node load: signaling/node.py) and the process CPU time;
every ``FIRST_FRAME_EVERY`` such
ticks it looks at the subscribe connections it has not yet seen a first video packet on
(media/subscriber.py ``first_video_delay``: from joining or admission to the first video
packet sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING

from media.background import spawn
from media.sfu import Sfu
from media.subscriber import SubscriberPeer

if TYPE_CHECKING:
    from observability.metrics import Metrics

INTERVAL_S = 0.25
#: recent samples kept for the node load (15 s)
WINDOW = 60
FIRST_FRAME_EVERY = 4  # ticks (1 s): the delay itself is exact, read from the DownTrack


class Sampler:
    def __init__(self, metrics: Metrics, sfu: Sfu) -> None:
        self.metrics = metrics
        self.sfu = sfu
        self._seen: weakref.WeakSet[SubscriberPeer] = weakref.WeakSet()
        self._task: asyncio.Task[None] | None = None
        self.lags: deque[float] = deque(maxlen=WINDOW)  # seconds late, the newest last
        self._cpu: deque[tuple[float, float]] = deque(maxlen=WINDOW)  # (wall, cpu) times

    def cpu_percent(self) -> float:
        """Process CPU over the last 2 s, in % of one core (200 = two cores busy)."""
        recent = list(self._cpu)[-9:]
        if len(recent) < 2:
            return 0.0
        (w0, c0), (w1, c1) = recent[0], recent[-1]
        return round(100 * (c1 - c0) / (w1 - w0), 1) if w1 > w0 else 0.0

    def start(self) -> None:
        self._task = spawn(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        ticks = 0
        self._cpu.append((time.monotonic(), time.process_time()))
        while True:
            before = loop.time()
            await asyncio.sleep(INTERVAL_S)
            lag = max(0.0, loop.time() - before - INTERVAL_S)
            self.metrics.loop_lag.observe(lag)
            self.lags.append(lag)
            self._cpu.append((time.monotonic(), time.process_time()))
            ticks += 1
            if ticks % FIRST_FRAME_EVERY == 0:
                self.first_frames()

    def first_frames(self) -> None:
        for peer in list(self.sfu.subscribers):
            if peer in self._seen:
                continue
            delay = peer.first_video_delay()
            if delay is not None:
                self._seen.add(peer)
                self.metrics.first_frame.observe(max(0.0, delay))
