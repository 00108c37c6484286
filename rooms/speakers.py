"""Who is speaking: picks a room's active speaker from the publishers' audio levels.

Publishers put their microphone level in every audio packet (RFC 6464); the SFU averages it
per track between ticks. Every tick (200 ms) the loudest participant above the speech
threshold becomes the candidate; it becomes the active speaker once it has been the candidate
for ``confirm_ticks`` ticks in a row (so a cough does not flip the layout), i.e. 200–400 ms after
it starts speaking. Silence does not clear the active speaker: the last one stays large.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rooms.members import ACTIVE, Member
from rooms.ticker import RoomTicker

if TYPE_CHECKING:
    pass

log = logging.getLogger("huizhen.rooms")

TICK_S = 0.2

#: loudness is 127 - level(-dBov): speech sits around 70-110; -50 dBov and quieter is silence
SPEECH_LOUDNESS = 77.0


@dataclass
class SpeakerDetector:
    confirm_ticks: int = 2
    threshold: float = SPEECH_LOUDNESS
    active: str | None = None
    _candidate: str | None = None
    _streak: int = 0
    levels: dict[str, float] = field(default_factory=dict)

    def tick(self, loudness: dict[str, float | None]) -> str | None:
        """Feed one tick's mean loudness per participant; returns the new active speaker
        when it changes, else None."""
        self.levels = {pid: level for pid, level in loudness.items() if level is not None}
        speaking = {pid: level for pid, level in self.levels.items() if level >= self.threshold}
        candidate = max(speaking, key=lambda pid: speaking[pid]) if speaking else None
        if candidate is None or candidate == self.active:
            self._candidate, self._streak = None, 0
            return None
        if candidate == self._candidate:
            self._streak += 1
        else:
            self._candidate, self._streak = candidate, 1
        if self._streak >= self.confirm_ticks:
            self.active, self._candidate, self._streak = candidate, None, 0
            return candidate
        return None

    def forget(self, participant_id: str) -> None:
        if self.active == participant_id:
            self.active = None
        if self._candidate == participant_id:
            self._candidate, self._streak = None, 0


class ActiveSpeakers(RoomTicker[SpeakerDetector]):
    """Every tick, each room's active speaker from its active members' audio loudness; a
    change goes to the room's active members (``active_speaker``) and to the observers."""

    tick_s = TICK_S
    what = "active speaker detection"

    def forget(self, room_id: str, participant_id: str) -> None:
        if room_id in self._rooms_state:
            self._rooms_state[room_id].forget(participant_id)

    async def _tick(self, room_id: str, members: list[Member]) -> None:
        loudness: dict[str, float | None] = {}
        for member in members:
            if member.info.state != ACTIVE:
                continue
            for track in member.info.tracks.values():
                source = self._rooms.sfu.tracks.get(track.id)
                if track.kind == "audio" and source is not None:
                    level = source.take_loudness()
                    loudness[member.id] = None if track.muted else level
        detector = self._rooms_state.setdefault(room_id, SpeakerDetector())
        speaker = detector.tick(loudness)
        if speaker is not None:
            for observer in self._rooms.observers:
                observer.active_speaker(room_id, speaker)
            await self._rooms.send_all([m for m in members if m.info.state == ACTIVE],
                                       {"type": "active_speaker", "participant_id": speaker})

    async def tell(self, member: Member) -> None:
        """Someone who starts seeing the room (joined, admitted, off hold) learns who is
        speaking now: active_speaker is otherwise only sent when it changes."""
        detector = self._rooms_state.get(member.room_id)
        if detector is not None and detector.active is not None \
                and detector.active != member.id:
            await self._rooms.send(member, {"type": "active_speaker",
                                            "participant_id": detector.active})
