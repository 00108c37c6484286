"""Retention: recordings are kept as long as the rules require, then deleted everywhere —
unless their encounter is on legal hold.

* Each artifact class has its period (``records.retention``): audio/video recordings 3 years
  by default (measured from the end of the recording), documents 15 years (issue 12's signed
  opinions and minutes; nothing of that class exists yet).
* A legal hold on an encounter (``POST /api/encounters/{id}/hold``) keeps its recordings, and
  a hold on a session keeps the recordings of all its segments, until it is lifted.
* ``huizhen retention purge --dry-run`` lists what is due (and what a hold keeps); without
  ``--dry-run`` every file of a due recording is deleted from the configured storage and
  from the local spool folder, the recording is marked ``purged`` (its row, manifest and hashes
  stay: the record shows that it existed and when it went), and each deletion is a row in the
  audit log.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from recording.db import Recording, RecordingDb
from recording.storage import Storage
from records.audit import AuditEvent, AuditLog
from records.encounters import EncounterDb
from rooms.models import utcnow

#: recordings in these states have files to delete; the others are still being made
FINISHED = ("stored", "ready", "failed", "stopped", "interrupted")


@dataclass(frozen=True)
class Due:
    recording_id: str
    room_id: str
    patient_ref: str | None
    encounter_id: str
    ended_at: datetime
    age_days: float
    held: bool
    hold_reason: str | None
    files: int
    size: int

    def as_dict(self) -> dict[str, Any]:
        return {"recording_id": self.recording_id, "room_id": self.room_id,
                "patient_ref": self.patient_ref, "encounter_id": self.encounter_id,
                "ended_at": self.ended_at.isoformat(), "age_days": round(self.age_days, 1),
                "held": self.held, "hold_reason": self.hold_reason, "files": self.files,
                "size": self.size}


class Retention:
    def __init__(self, encounters: EncounterDb, recordings: RecordingDb, storage: Storage,
                 spool: Path, audit: AuditLog, recordings_days: int) -> None:
        self.encounters = encounters
        self.recordings = recordings
        self.storage = storage
        self.spool = spool
        self.audit = audit
        self.recordings_days = recordings_days

    async def due(self, now: datetime | None = None) -> list[Due]:
        """Recordings past their period, oldest first; ``held`` ones are listed and kept."""
        now = now or utcnow()
        cutoff = now - timedelta(days=self.recordings_days)
        out = []
        for recording in await self.recordings.recordings(status=FINISHED):
            ended = recording.ended_at or recording.started_at
            if ended > cutoff:
                continue
            encounter_id, reason = await self._hold(recording)
            out.append(Due(recording.id, recording.room_id, recording.patient_ref,
                           encounter_id, ended, (now - ended).total_seconds() / 86400,
                           reason is not None, reason, len(recording.files),
                           sum(f.get("size") or 0 for f in recording.files)))
        return sorted(out, key=lambda d: d.ended_at)

    async def _hold(self, recording: Recording) -> tuple[str, str | None]:
        """(the recording's encounter, the reason of a hold on it or on its session)."""
        own = recording.segment_id or recording.room_id
        for encounter_id in dict.fromkeys((own, recording.room_id)):
            found = await self.encounters.get(encounter_id, fill=False)
            if found is not None and found.legal_hold:
                return own, found.hold_reason or "legal hold"
        return own, None

    async def purge(self, actor: str, now: datetime | None = None) -> list[Due]:
        """Delete every due recording that no hold keeps; the ones deleted."""
        deleted = []
        for due in await self.due(now):
            if due.held:
                continue
            keys = await self.storage.list(f"{due.recording_id}/")
            for key in keys:
                await self.storage.delete(key)
            spool = self.spool / due.recording_id
            if spool.exists():
                await asyncio.to_thread(shutil.rmtree, spool)
            await self.recordings.mark_purged(due.recording_id)
            await self.audit.append(AuditEvent(
                actor=actor, role="system", action="recording.purge", entity_type="recording",
                entity_id=due.recording_id, patient_ref=due.patient_ref,
                encounter_id=due.encounter_id, reason=f"retention: {self.recordings_days} days",
                outcome="done", detail={"objects": len(keys), "bytes": due.size,
                                        "ended_at": due.ended_at.isoformat()}))
            deleted.append(due)
        return deleted
