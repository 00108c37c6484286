"""This node's load, for the admin API (``GET /api/admin/node``): process CPU, event-loop lag,
rooms and participants here, and whether it is draining.

The lag and the CPU come from the one sampling task the service runs for its metrics
(observability/sampler.py: every 0.25 s, how late an ``asyncio.sleep`` woke up — the lag
every coroutine of the node waited — and the process CPU time since the last sample).
"""

from __future__ import annotations

import os
import time
from typing import Any

from observability.sampler import Sampler
from rooms.service import RoomService


class NodeLoad:
    def __init__(self, rooms: RoomService) -> None:
        self.rooms = rooms
        self.started_at = time.time()

    def snapshot(self, draining: dict[str, Any] | None, sampler: Sampler | None
                 ) -> dict[str, Any]:
        members = self.rooms.members
        participants = sum(len(m) for m in members.values())
        lags = list(sampler.lags) if sampler is not None else []
        return {
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started_at, 1),
            "cpu_percent": sampler.cpu_percent() if sampler is not None else 0.0,
            "cpu_count": os.cpu_count() or 1,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "event_loop_lag_ms": {
                "last": round(1000 * lags[-1], 2) if lags else 0.0,
                "max_15s": round(1000 * max(lags), 2) if lags else 0.0,
            },
            "rooms": len([r for r, m in members.items() if m]),
            "participants": participants,
            "draining": draining is not None,
            "drain": draining,
        }
