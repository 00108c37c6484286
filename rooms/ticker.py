"""A task that visits every room of this node at a fixed interval (active speaker, connection
quality): ``_tick(room_id, members)`` per room with members here, each failure logged and the
others still visited; the per-room state (``_rooms_state``) of rooms that are gone is dropped."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from media.background import spawn
from rooms.members import Member

if TYPE_CHECKING:
    from rooms.service import RoomService

log = logging.getLogger("huizhen.rooms")

S = TypeVar("S")


class RoomTicker(ABC, Generic[S]):
    #: seconds between two visits; what fails, in the log
    tick_s: float = 1.0
    what: str = "room ticker"

    def __init__(self, rooms: RoomService) -> None:
        self._rooms = rooms
        self._rooms_state: dict[str, S] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = spawn(self._loop())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            rooms = self._rooms.members
            for room_id in list(self._rooms_state.keys() - rooms.keys()):
                del self._rooms_state[room_id]
            for room_id, members in list(rooms.items()):
                try:
                    await self._tick(room_id, list(members.values()))
                except Exception:
                    log.exception(f"{self.what} failed", extra={"room": room_id})

    @abstractmethod
    async def _tick(self, room_id: str, members: list[Member]) -> Any:
        """Visit one room (its members connected to this node)."""
