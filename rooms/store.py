"""Live room state (who is in which room, with which tracks) behind one small interface.

The in-memory store is the embedded default. A Redis store (cluster work) implements the same
interface; everything above it speaks only :class:`RoomStateStore`.
"""

from __future__ import annotations

import copy
from typing import Protocol

from rooms.models import ParticipantInfo, TrackInfo


class RoomStateStore(Protocol):
    async def add_participant(self, participant: ParticipantInfo) -> None: ...

    async def remove_participant(self, room_id: str, participant_id: str
                                 ) -> ParticipantInfo | None: ...

    async def get_participant(self, room_id: str, participant_id: str
                              ) -> ParticipantInfo | None: ...

    async def participants(self, room_id: str) -> list[ParticipantInfo]: ...

    async def count(self, room_id: str) -> int: ...

    async def add_track(self, room_id: str, track: TrackInfo) -> None: ...

    async def remove_track(self, room_id: str, participant_id: str, track_id: str
                           ) -> TrackInfo | None: ...

    async def set_muted(self, room_id: str, participant_id: str, track_id: str, muted: bool
                        ) -> TrackInfo | None: ...

    async def set_state(self, room_id: str, participant_id: str, state: str) -> None: ...

    async def rooms(self) -> list[str]: ...

    async def mark_identity(self, room_id: str, mark: str, identity: str) -> None:
        """Remember something about an identity in a room (``admitted``, ``removed``) until
        the room is cleared, also while that identity is not connected."""

    async def identity_marked(self, room_id: str, mark: str, identity: str) -> bool: ...

    async def clear_room(self, room_id: str) -> None: ...


class MemoryRoomStateStore:
    """Room state in this process. Returns copies, as a remote store would."""

    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, ParticipantInfo]] = {}
        self._marks: dict[tuple[str, str], set[str]] = {}

    async def add_participant(self, participant: ParticipantInfo) -> None:
        self._rooms.setdefault(participant.room_id, {})[participant.id] = copy.deepcopy(
            participant)

    async def remove_participant(self, room_id: str, participant_id: str
                                 ) -> ParticipantInfo | None:
        room = self._rooms.get(room_id, {})
        gone = room.pop(participant_id, None)
        if not room:
            self._rooms.pop(room_id, None)
        return gone

    async def get_participant(self, room_id: str, participant_id: str
                              ) -> ParticipantInfo | None:
        found = self._rooms.get(room_id, {}).get(participant_id)
        return copy.deepcopy(found) if found else None

    async def participants(self, room_id: str) -> list[ParticipantInfo]:
        return [copy.deepcopy(p) for p in self._rooms.get(room_id, {}).values()]

    async def count(self, room_id: str) -> int:
        return len(self._rooms.get(room_id, {}))

    async def add_track(self, room_id: str, track: TrackInfo) -> None:
        participant = self._rooms.get(room_id, {}).get(track.participant_id)
        if participant is None:
            raise KeyError(f"participant {track.participant_id} is not in room {room_id}")
        participant.tracks[track.id] = copy.deepcopy(track)

    async def remove_track(self, room_id: str, participant_id: str, track_id: str
                           ) -> TrackInfo | None:
        participant = self._rooms.get(room_id, {}).get(participant_id)
        return participant.tracks.pop(track_id, None) if participant else None

    async def set_state(self, room_id: str, participant_id: str, state: str) -> None:
        participant = self._rooms.get(room_id, {}).get(participant_id)
        if participant is not None:
            participant.state = state

    async def set_muted(self, room_id: str, participant_id: str, track_id: str, muted: bool
                        ) -> TrackInfo | None:
        participant = self._rooms.get(room_id, {}).get(participant_id)
        track = participant.tracks.get(track_id) if participant else None
        if track is None:
            return None
        track.muted = muted
        return copy.deepcopy(track)

    async def rooms(self) -> list[str]:
        return list(self._rooms)

    async def mark_identity(self, room_id: str, mark: str, identity: str) -> None:
        self._marks.setdefault((room_id, mark), set()).add(identity)

    async def identity_marked(self, room_id: str, mark: str, identity: str) -> bool:
        return identity in self._marks.get((room_id, mark), set())

    async def clear_room(self, room_id: str) -> None:
        self._rooms.pop(room_id, None)
        for key in [k for k in self._marks if k[0] == room_id]:
            del self._marks[key]
