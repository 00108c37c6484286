"""One recording of one room in progress: its tracks, its timeline, its journal.

The journal (``journal.json`` beside the track files) is rewritten whenever something a later
step needs changes: a track starts or ends, the active speaker changes, the recording pauses.
It holds what the files cannot say by themselves — who each file belongs to, the pauses, who
spoke when — so that after a crash (``kill -9``) the next start can finish the recording from
the folder alone. It holds identities and roles, never names.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from media.source import MediaTrack
from recording.capture import TrackMeta, TrackRecorder
from recording.storage import write_atomically
from recording.timeline import ClockOffset, SessionClock
from recording.trackfile import file_suffix

log = logging.getLogger("huizhen.recording")

JOURNAL = "journal.json"
SPEAKER_HOLD_S = 1.0  # a speaker change shorter than this is not worth a layout change


@dataclass
class JournalTrack:
    name: str  # file name relative to the recording folder
    track_id: str
    participant_id: str
    identity: str
    role: str
    kind: str
    source: str
    codec: str
    closed: bool = False


class RoomRecording:
    """Records a room's audible tracks into ``folder`` (see the module docstring)."""

    def __init__(self, recording_id: str, room_id: str, folder: Path, started_by: str,
                 override_reason: str | None, consent_id: str | None) -> None:
        self.id = recording_id
        self.room_id = room_id
        self.folder = folder
        self.started_at = time.time()
        self.clock = SessionClock(self.started_at)
        self.started_by = started_by
        self.override_reason = override_reason
        self.consent_id = consent_id
        self.recorders: dict[str, TrackRecorder] = {}
        self.tracks: dict[str, JournalTrack] = {}  # by file name
        self._open: dict[str, str] = {}  # track id → the name of the file being written
        self._parts: dict[str, int] = {}  # track id → file parts so far
        self.offsets: dict[str, ClockOffset] = {}
        self.speakers: list[tuple[float, str]] = []
        self.status = "recording"
        folder.mkdir(parents=True, exist_ok=True)
        self.write_journal()

    @property
    def paused(self) -> bool:
        return self.status == "paused"

    # ---- tracks --------------------------------------------------------------------------
    def sync_tracks(self, wanted: list[tuple[TrackMeta, MediaTrack]]) -> None:
        """Record exactly these tracks: start the new ones, close those no longer heard. A
        track heard again (its participant came off hold) continues in a new file part."""
        if self.status == "stopped":
            return
        wanted_ids = {meta.track_id for meta, _ in wanted}
        changed = False
        for track_id in list(self.recorders):
            if track_id not in wanted_ids:
                self._close_track(track_id)
                changed = True
        for meta, track in wanted:
            if meta.track_id in self.recorders:
                continue
            self._parts[meta.track_id] = part = self._parts.get(meta.track_id, 0) + 1
            suffix = "" if part == 1 else f"-{part}"
            name = (f"tracks/{meta.participant_id}-{meta.track_id}{suffix}"
                    f"{file_suffix(meta.codec)}")
            offset = self.offsets.setdefault(meta.participant_id, ClockOffset())
            self.recorders[meta.track_id] = TrackRecorder(track, meta, self.folder / name,
                                                          self.clock, offset)
            self.tracks[name] = JournalTrack(
                name, meta.track_id, meta.participant_id, meta.identity, meta.role, meta.kind,
                meta.source, meta.codec)
            self._open[meta.track_id] = name
            log.info("recording a track", extra={"recording": self.id, "track_id": meta.track_id,
                                                 "kind": meta.kind, "source": meta.source})
            changed = True
        if changed:
            self.write_journal()

    def _close_track(self, track_id: str) -> None:
        recorder = self.recorders.pop(track_id)
        stats = recorder.close()
        self.tracks[self._open.pop(track_id)].closed = True
        log.info("track recording ended", extra={
            "recording": self.id, "track_id": track_id, "frames": stats.frames,
            "dropped": recorder.dropped_frames, "outside": recorder.outside,
            "streams": len(recorder._streams)})

    def speaker(self, identity: str) -> None:
        at = self.clock.duration(time.time())
        if self.speakers and self.speakers[-1][1] == identity:
            return
        if self.speakers and at - self.speakers[-1][0] < SPEAKER_HOLD_S:
            self.speakers[-1] = (self.speakers[-1][0], identity)
        else:
            self.speakers.append((round(at, 3), identity))
        self.write_journal()

    def tick(self) -> None:
        for recorder in list(self.recorders.values()):
            try:
                recorder.tick()
            except Exception:  # one track's trouble must not end the others' recording
                log.exception("recording a track failed", extra={
                    "recording": self.id, "track_id": recorder.meta.track_id})

    # ---- control -------------------------------------------------------------------------
    def pause(self) -> None:
        if self.status == "recording":
            self.clock.pause(time.time())
            self.status = "paused"
            self.write_journal()

    def resume(self) -> None:
        if self.status == "paused":
            self.clock.resume(time.time())
            self.status = "recording"
            for recorder in self.recorders.values():
                recorder.resumed()
            self.write_journal()

    def stop(self) -> float:
        """Close every file; returns the session's length in seconds."""
        if self.status != "stopped":
            self.clock.stop(time.time())
            for track_id in list(self.recorders):
                self._close_track(track_id)
            self.status = "stopped"
            self.write_journal()
        return self.duration()

    def duration(self) -> float:
        return self.clock.duration(time.time())

    # ---- the journal ---------------------------------------------------------------------
    def journal(self) -> dict[str, Any]:
        return {
            "recording_id": self.id,
            "room_id": self.room_id,
            "status": self.status,
            "started_at": self.started_at,
            "duration_s": round(self.duration(), 3),
            "spans": [[s.wall_start, s.wall_end, s.session_start] for s in self.clock.spans],
            "speakers": [list(s) for s in self.speakers],
            "tracks": [asdict(t) for t in self.tracks.values()],
        }

    def write_journal(self) -> None:
        write_json(self.folder / JOURNAL, self.journal())


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace a JSON file atomically (without fsync: this runs on the media event loop, and
    the page cache outlives the process; only a power cut could lose the last change)."""
    write_atomically(path, json.dumps(data, ensure_ascii=False, indent=1).encode(),
                     durable=False)


def read_journal(folder: Path) -> dict[str, Any]:
    """The journal of a recording folder; ValueError if it is missing or unreadable."""
    try:
        data = json.loads((folder / JOURNAL).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"no readable {JOURNAL} in {folder}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("tracks"), list):
        raise ValueError(f"{folder / JOURNAL} is not a recording journal")
    return data
