"""Retention: what the record holds is kept as long as the rules require, then deleted —
unless its encounter is on legal hold. Each deletion leaves a tombstone and an audit row.

* Each artifact class has its period (``records.retention``):

  - ``recording``: audio/video recordings, 3 years by default (``recordings_days``), from the
    end of the recording;
  - ``document``: clinical documents (records/documents.py: consult opinions, ward-round notes,
    MDT minutes and conclusions), 15 years by default (``documents_days``), from the document's
    last change — its newest version, or that version's signing if later. A document is one
    series: all its versions and their signatures go together;
  - ``case_image``: MDT case images (caseimages/), also ``documents_days``, from the upload.

* A legal hold on an encounter (``POST /api/encounters/{id}/hold``) keeps what belongs to it,
  and a hold on a session keeps what belongs to any of its segments, until it is lifted
  (the same rule for every class: the item's segment or session, and its room's session).
* ``huizhen retention purge --dry-run`` lists what is due, each item with its ``class`` (and
  which a hold keeps); without ``--dry-run``:

  - a recording's files are deleted from the configured storage and from the local spool
    folder, and it is marked ``purged`` (its row, manifest and hashes stay);
  - a document's text and signatures are deleted from every version (the rows stay as
    tombstones: ids, room, patient, author, times, SHA-256, ``purged_at`` and the rule);
    the API answers ``410 purged`` for it, FHIR leaves it out of searches and answers a read
    with ``410 Gone``;
  - a case image's bytes are deleted from the storage and its label cleared (the row stays:
    id, room, patient, kind, size, SHA-256, times, ``purged_at``); GET answers ``410 purged``;

  so the record shows that each existed and when it went; and each deletion is one row in the
  audit log (``recording.purge``, ``document.purge``, ``case_image.purge``).
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from caseimages.db import ImageDb
from recording.db import RecordingDb
from recording.storage import Storage
from records.audit import AuditEvent, AuditLog
from records.documents import DocumentDb, VersionInfo
from records.encounters import EncounterDb
from rooms.models import utcnow

#: recordings in these states have files to delete; the others are still being made
FINISHED = ("stored", "ready", "failed", "stopped", "interrupted")
#: the artifact classes, in the order they are listed
CLASSES = ("recording", "document", "case_image")


@dataclass(frozen=True)
class Due:
    """A recording past its period."""

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

    cls = "recording"

    @property
    def id(self) -> str:
        return self.recording_id

    def as_dict(self) -> dict[str, Any]:
        return {"class": self.cls, "id": self.recording_id,
                "recording_id": self.recording_id, "room_id": self.room_id,
                "patient_ref": self.patient_ref, "encounter_id": self.encounter_id,
                "ended_at": self.ended_at.isoformat(), "age_days": round(self.age_days, 1),
                "held": self.held, "hold_reason": self.hold_reason, "files": self.files,
                "size": self.size}


@dataclass(frozen=True)
class DueDocument:
    """A clinical document (a series: every version) past its period."""

    series_id: str
    room_id: str
    patient_ref: str | None
    encounter_id: str
    kind: str
    versions: tuple[str, ...]  # the version ids, oldest first
    signed: int  # how many of them are signed
    size: int  # bytes of text, all versions
    last_at: datetime
    age_days: float
    held: bool
    hold_reason: str | None

    cls = "document"

    @property
    def id(self) -> str:
        return self.series_id

    def as_dict(self) -> dict[str, Any]:
        return {"class": self.cls, "id": self.series_id, "series_id": self.series_id,
                "room_id": self.room_id, "patient_ref": self.patient_ref,
                "encounter_id": self.encounter_id, "kind": self.kind,
                "versions": list(self.versions), "signed": self.signed, "size": self.size,
                "last_at": self.last_at.isoformat(), "age_days": round(self.age_days, 1),
                "held": self.held, "hold_reason": self.hold_reason}


@dataclass(frozen=True)
class DueImage:
    """An MDT case image past its period."""

    image_id: str
    room_id: str
    patient_ref: str | None
    encounter_id: str
    kind: str
    storage_key: str
    size: int
    uploaded_at: datetime
    age_days: float
    held: bool
    hold_reason: str | None

    cls = "case_image"

    @property
    def id(self) -> str:
        return self.image_id

    def as_dict(self) -> dict[str, Any]:
        return {"class": self.cls, "id": self.image_id, "image_id": self.image_id,
                "room_id": self.room_id, "patient_ref": self.patient_ref,
                "encounter_id": self.encounter_id, "kind": self.kind, "size": self.size,
                "uploaded_at": self.uploaded_at.isoformat(),
                "age_days": round(self.age_days, 1), "held": self.held,
                "hold_reason": self.hold_reason}


DueItem = Due | DueDocument | DueImage


def _days(since: datetime, now: datetime) -> float:
    return (now - since).total_seconds() / 86400


class Retention:
    def __init__(self, encounters: EncounterDb, recordings: RecordingDb, storage: Storage,
                 spool: Path, audit: AuditLog, recordings_days: int,
                 documents: DocumentDb | None = None, images: ImageDb | None = None,
                 documents_days: int = 15 * 365) -> None:
        self.encounters = encounters
        self.recordings = recordings
        self.storage = storage
        self.spool = spool
        self.audit = audit
        self.recordings_days = recordings_days
        #: documents and case images (None: that class is not looked at)
        self.documents = documents
        self.images = images
        self.documents_days = documents_days

    def days(self, cls: str) -> int:
        """The period of an artifact class."""
        return self.recordings_days if cls == "recording" else self.documents_days

    def reason(self, cls: str) -> str:
        return f"retention: {self.days(cls)} days"

    # ---- what is due ---------------------------------------------------------------------
    async def due(self, now: datetime | None = None) -> list[DueItem]:
        """Everything past its period: recordings, then documents, then case images, each
        oldest first; ``held`` ones are listed and kept."""
        now = now or utcnow()
        return [*await self.due_recordings(now), *await self.due_documents(now),
                *await self.due_images(now)]

    async def due_recordings(self, now: datetime | None = None) -> list[Due]:
        now = now or utcnow()
        cutoff = now - timedelta(days=self.recordings_days)
        out = []
        for recording in await self.recordings.recordings(status=FINISHED):
            ended = recording.ended_at or recording.started_at
            if ended > cutoff:
                continue
            own = recording.segment_id or recording.room_id
            reason = await self._hold(own, recording.room_id)
            out.append(Due(recording.id, recording.room_id, recording.patient_ref,
                           own, ended, _days(ended, now), reason is not None, reason,
                           len(recording.files),
                           sum(f.get("size") or 0 for f in recording.files)))
        return sorted(out, key=lambda d: d.ended_at)

    async def due_documents(self, now: datetime | None = None) -> list[DueDocument]:
        if self.documents is None:
            return []
        now = now or utcnow()
        cutoff = now - timedelta(days=self.documents_days)
        series: dict[str, list[VersionInfo]] = {}
        for version in await self.documents.live_versions():
            series.setdefault(version.series_id, []).append(version)
        out = []
        for series_id, versions in series.items():
            versions.sort(key=lambda v: v.version)
            last_at = max(v.last_at for v in versions)
            if last_at > cutoff:
                continue
            first = versions[0]
            reason = await self._hold(first.encounter_id, first.room_id)
            out.append(DueDocument(
                series_id, first.room_id, first.patient_ref, first.encounter_id, first.kind,
                tuple(v.id for v in versions), sum(1 for v in versions if v.signed_at),
                sum(v.size for v in versions), last_at, _days(last_at, now),
                reason is not None, reason))
        return sorted(out, key=lambda d: d.last_at)

    async def due_images(self, now: datetime | None = None) -> list[DueImage]:
        if self.images is None:
            return []
        now = now or utcnow()
        cutoff = now - timedelta(days=self.documents_days)
        out = []
        for image in await self.images.live():
            if image.uploaded_at > cutoff:
                continue
            own = image.segment_id or image.room_id
            reason = await self._hold(own, image.room_id)
            out.append(DueImage(image.id, image.room_id, image.patient_ref, own, image.kind,
                                image.storage_key, image.size, image.uploaded_at,
                                _days(image.uploaded_at, now), reason is not None, reason))
        return sorted(out, key=lambda d: d.uploaded_at)

    async def _hold(self, own: str, room_id: str) -> str | None:
        """The reason of a hold on the item's encounter (its segment, or the session) or on
        its room's session; None without one."""
        for encounter_id in dict.fromkeys((own, room_id)):
            found = await self.encounters.get(encounter_id, fill=False)
            if found is not None and found.legal_hold:
                return found.hold_reason or "legal hold"
        return None

    # ---- deleting --------------------------------------------------------------------------
    async def purge(self, actor: str, now: datetime | None = None) -> list[DueItem]:
        """Delete every due item that no hold keeps, of every class; the ones deleted."""
        now = now or utcnow()
        deleted: list[DueItem] = []
        for due in await self.due(now):
            if due.held:
                continue
            if isinstance(due, Due):
                await self._purge_recording(actor, due)
            elif isinstance(due, DueDocument):
                if not await self._purge_document(actor, due, now):
                    continue
            else:
                await self._purge_image(actor, due)
            deleted.append(due)
        return deleted

    async def _purge_recording(self, actor: str, due: Due) -> None:
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
            encounter_id=due.encounter_id, reason=self.reason(due.cls),
            outcome="done", detail={"objects": len(keys), "bytes": due.size,
                                    "ended_at": due.ended_at.isoformat()}))

    async def _purge_document(self, actor: str, due: DueDocument, now: datetime) -> bool:
        """Text and signatures of every version go, the tombstones stay; False if a version
        was added or signed since it was found due (then it is not due any more)."""
        assert self.documents is not None
        cutoff = now - timedelta(days=self.documents_days)
        count = await self.documents.mark_purged(due.series_id, cutoff, utcnow(),
                                                 self.reason(due.cls))
        if not count:
            return False
        await self.audit.append(AuditEvent(
            actor=actor, role="system", action="document.purge", entity_type="document",
            entity_id=due.series_id, patient_ref=due.patient_ref,
            encounter_id=due.encounter_id, reason=self.reason(due.cls), outcome="done",
            detail={"kind": due.kind, "versions": list(due.versions), "signed": due.signed,
                    "bytes": due.size, "last_at": due.last_at.isoformat()}))
        return True

    async def _purge_image(self, actor: str, due: DueImage) -> None:
        assert self.images is not None
        await self.storage.delete(due.storage_key)
        await self.images.mark_purged(due.image_id, utcnow(), self.reason(due.cls))
        await self.audit.append(AuditEvent(
            actor=actor, role="system", action="case_image.purge", entity_type="case_image",
            entity_id=due.image_id, patient_ref=due.patient_ref,
            encounter_id=due.encounter_id, reason=self.reason(due.cls), outcome="done",
            detail={"room": due.room_id, "kind": due.kind, "bytes": due.size,
                    "uploaded_at": due.uploaded_at.isoformat()}))

