"""Who is speaking: picks a room's active speaker from the publishers' audio levels.

Publishers put their microphone level in every audio packet (RFC 6464); the SFU averages it
per track between ticks. Every tick (200 ms) the loudest participant above the speech
threshold becomes the candidate; it becomes the active speaker once it has been the candidate
for ``confirm_ticks`` ticks in a row (so a cough does not flip the layout), i.e. 200–400 ms after
it starts speaking. Silence does not clear the active speaker: the last one stays large.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
