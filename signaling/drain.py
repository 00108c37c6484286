"""Draining a node before it stops (SIGTERM, ``huizhen drain`` → ``POST /api/admin/drain``).

1. The node takes no new rooms or joins: ``RoomService.draining`` makes both fail with
   ``draining`` (HTTP 503, or an ``error`` and close 1012 on the socket), and ``/readyz``
   answers 503 so a load balancer stops sending people here.
2. Recordings are stopped (``server_drain``) while the media still flows: their files and
   journals close, their store and composite jobs are queued in the database (a worker of this
   node or of the next one finishes them).
3. Every connected client gets ``{"type": "reconnect", "reason": "draining", "retry_ms": …}``,
   its session is recorded as left (``server_drain``), and its socket is closed with 1012; the
   web client and the SDK join again, every ``retry_ms`` until a node takes them (this one,
   restarted on the same address, or another behind the load balancer).
4. The node waits until no room has anyone left here and no recording runs, at most
   ``server.drain_timeout_s``, then ``done`` is set: ``serve`` (signaling/app.py) shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from media.background import spawn
from recording.service import Actor, RecordingService
from rooms.members import RoomError
from rooms.service import RoomService

log = logging.getLogger("huizhen.drain")

REASON = "server_drain"
POLL_S = 0.05


class Drain:
    def __init__(self, rooms: RoomService, recordings: RecordingService, timeout_s: float,
                 retry_ms: int) -> None:
        self.rooms = rooms
        self.recordings = recordings
        self.timeout_s = timeout_s
        self.retry_ms = retry_ms
        #: set when the drain has finished (or timed out): the process may exit now
        self.done = asyncio.Event()
        self._state: dict[str, Any] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def started(self) -> bool:
        return self._state is not None

    def status(self) -> dict[str, Any] | None:
        """None while the node is not draining; else when it began, by whom, how far it is."""
        return None if self._state is None else dict(self._state)

    def begin(self, by: str) -> dict[str, Any]:
        """Start draining (once: a second call only reports how far it is)."""
        if self._state is None:
            self.rooms.draining = True
            self._state = {"started_at": time.time(), "by": by, "phase": "stopping_recordings",
                           "timeout_s": self.timeout_s, "clients_told": 0,
                           "recordings_stopped": 0, "finished_at": None, "timed_out": False}
            log.info("drain started", extra={"by": by, "timeout_s": self.timeout_s})
            self._task = spawn(self._run())
        return dict(self._state)

    async def _run(self) -> None:
        state = self._state
        assert state is not None
        deadline = time.monotonic() + self.timeout_s
        try:
            for room_id in list(self.recordings.active):
                with contextlib.suppress(RoomError):  # stopped meanwhile by someone else
                    await self.recordings.stop(room_id, Actor("server", "system"), REASON)
                    state["recordings_stopped"] += 1
            state["phase"] = "telling_clients"
            hint = {"type": "reconnect", "reason": "draining", "retry_ms": self.retry_ms}
            state["clients_told"] = await self.rooms.send_away(REASON, hint)
            state["phase"] = "waiting_for_rooms"
            # joins are refused, so what is left is a socket or a recording still closing
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._emptied(), max(0.0, deadline - time.monotonic()))
            state["timed_out"] = self._busy()
        except Exception:  # the node stops all the same: its shutdown closes what is left
            log.exception("drain failed; stopping anyway")
        finally:
            state["phase"] = "drained"
            state["finished_at"] = time.time()
            log.info("drain finished", extra={
                "clients_told": state["clients_told"], "timed_out": state["timed_out"],
                "recordings_stopped": state["recordings_stopped"],
                "took_s": round(state["finished_at"] - state["started_at"], 3)})
            self.done.set()

    async def _emptied(self) -> None:
        while True:
            if not self._busy():
                return
            await asyncio.sleep(POLL_S)

    def _busy(self) -> bool:
        return bool(self.rooms.members) or bool(self.recordings.active)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
