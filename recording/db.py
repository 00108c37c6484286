"""Durable records of recording: consents, recordings, their files, and the jobs that finish them.

The tables live in the service's one database (SQLite or PostgreSQL, migration 0002 in
rooms/migrations), next to rooms and sessions; the rows here are declared on the same
SQLAlchemy metadata. A job is claimed by one worker at a time (an UPDATE that only one can
win) and keeps a heartbeat; a job whose worker died is picked up again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    select,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column

from rooms.db import Base, Database
from rooms.models import utcnow


class ConsentRow(Base):
    __tablename__ = "consents"
    __table_args__ = (Index("ix_consents_room_id", "room_id"),)

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    room_id: Mapped[str] = mapped_column(String(128), ForeignKey("rooms.id"))
    patient_ref: Mapped[str | None] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))  # recording
    granted: Mapped[bool] = mapped_column(Boolean)
    method: Mapped[str] = mapped_column(String(32))  # in_client | verbal | written | portal
    given_by_role: Mapped[str] = mapped_column(String(32))  # patient | guardian
    given_by: Mapped[str | None] = mapped_column(String(255))  # identity, when in the client
    asked_by: Mapped[str | None] = mapped_column(String(255))
    recorded_by: Mapped[str] = mapped_column(String(255))  # identity or API key
    note: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime]


class RecordingRow(Base):
    __tablename__ = "recordings"
    __table_args__ = (Index("ix_recordings_room_id", "room_id"),)

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    room_id: Mapped[str] = mapped_column(String(128), ForeignKey("rooms.id"))
    status: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    started_by: Mapped[str] = mapped_column(String(255))
    consent_id: Mapped[str | None] = mapped_column(String(128))
    override_reason: Mapped[str | None] = mapped_column(Text)
    interrupted: Mapped[bool] = mapped_column(Boolean, default=False)
    duration_s: Mapped[float | None] = mapped_column(Float)
    manifest: Mapped[dict[str, Any] | None]
    manifest_sha256: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    #: whose recording it is: the patient under discussion (or the room's patient) …
    patient_ref: Mapped[str | None] = mapped_column(String(255))
    #: … and the segment of the session it covers (rooms/subjects.py), if the room had one
    segment_id: Mapped[str | None] = mapped_column(String(128))


class RecordingFileRow(Base):
    __tablename__ = "recording_files"
    __table_args__ = (Index("ix_recording_files_recording_id", "recording_id"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    recording_id: Mapped[str] = mapped_column(String(128), ForeignKey("recordings.id"))
    name: Mapped[str] = mapped_column(String(255))  # relative to the recording
    role: Mapped[str] = mapped_column(String(16))  # track | composite
    participant_id: Mapped[str | None] = mapped_column(String(128))
    identity: Mapped[str | None] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))  # audio | video | av
    source: Mapped[str | None] = mapped_column(String(16))
    codec: Mapped[str] = mapped_column(String(16))
    start_s: Mapped[float] = mapped_column(Float)
    duration_s: Mapped[float] = mapped_column(Float)
    frames: Mapped[int] = mapped_column(Integer)
    size: Mapped[int | None] = mapped_column(Integer)
    sha256: Mapped[str | None] = mapped_column(String(64))
    key_id: Mapped[str | None] = mapped_column(String(64))
    stored: Mapped[bool] = mapped_column(Boolean, default=False)


class JobRow(Base):
    __tablename__ = "recording_jobs"
    __table_args__ = (Index("ix_recording_jobs_status", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    recording_id: Mapped[str] = mapped_column(String(128), ForeignKey("recordings.id"))
    kind: Mapped[str] = mapped_column(String(16))  # store | composite
    status: Mapped[str] = mapped_column(String(16))  # queued | running | done | failed
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass
class Consent:
    id: str
    room_id: str
    patient_ref: str | None
    kind: str
    granted: bool
    method: str
    given_by_role: str
    given_by: str | None
    asked_by: str | None
    recorded_by: str
    note: str | None
    at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "room_id": self.room_id, "patient_ref": self.patient_ref,
                "kind": self.kind, "granted": self.granted, "method": self.method,
                "given_by_role": self.given_by_role, "given_by": self.given_by,
                "asked_by": self.asked_by, "recorded_by": self.recorded_by, "note": self.note,
                "at": _iso(self.at)}


@dataclass
class Recording:
    id: str
    room_id: str
    status: str  # recording | paused | stopped | interrupted | stored | ready | failed | purged
    started_at: datetime
    started_by: str
    ended_at: datetime | None = None
    consent_id: str | None = None
    override_reason: str | None = None
    interrupted: bool = False
    duration_s: float | None = None
    manifest: dict[str, Any] | None = None
    manifest_sha256: str | None = None
    error: str | None = None
    patient_ref: str | None = None
    segment_id: str | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "room_id": self.room_id, "status": self.status,
                "started_at": _iso(self.started_at), "ended_at": _iso(self.ended_at),
                "started_by": self.started_by, "consent_id": self.consent_id,
                "override_reason": self.override_reason, "interrupted": self.interrupted,
                "duration_s": self.duration_s, "manifest_sha256": self.manifest_sha256,
                "error": self.error, "patient_ref": self.patient_ref,
                "segment_id": self.segment_id, "files": self.files, "jobs": self.jobs}


@dataclass
class Job:
    id: int
    recording_id: str
    kind: str
    status: str
    progress: float
    attempts: int
    error: str | None
    worker: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "recording_id": self.recording_id, "kind": self.kind,
                "status": self.status, "progress": round(self.progress, 3),
                "attempts": self.attempts, "error": self.error,
                "created_at": _iso(self.created_at), "started_at": _iso(self.started_at),
                "finished_at": _iso(self.finished_at)}


_RECORDING_FIELDS = ("id", "room_id", "status", "started_at", "started_by", "ended_at",
                     "consent_id", "override_reason", "interrupted", "duration_s", "manifest",
                     "manifest_sha256", "error", "patient_ref", "segment_id")
_FILE_FIELDS = ("name", "role", "participant_id", "identity", "kind", "source", "codec",
                "start_s", "duration_s", "frames", "size", "sha256", "key_id", "stored")


def _consent(r: ConsentRow) -> Consent:
    return Consent(r.id, r.room_id, r.patient_ref, r.kind, r.granted, r.method, r.given_by_role,
                   r.given_by, r.asked_by, r.recorded_by, r.note, r.at)


def _job(row: JobRow) -> Job:
    return Job(row.id, row.recording_id, row.kind, row.status, row.progress, row.attempts,
               row.error, row.worker, row.created_at, row.started_at, row.finished_at)


class RecordingDb:
    """Queries over the recording tables, on the service's :class:`rooms.db.Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._sessions = db.sessions

    # ---- consents ------------------------------------------------------------------------
    async def add_consent(self, consent: Consent) -> None:
        async with self._sessions.begin() as session:
            session.add(ConsentRow(**{k: getattr(consent, k) for k in (
                "id", "room_id", "patient_ref", "kind", "granted", "method", "given_by_role",
                "given_by", "asked_by", "recorded_by", "note", "at")}))

    async def consents(self, room_id: str, kind: str = "recording",
                       patient_ref: str | bool | None = True) -> list[Consent]:
        """A room's consents, oldest first; of one patient (None: those for no patient) unless
        ``patient_ref`` is True (all)."""
        stmt = (select(ConsentRow).where(ConsentRow.room_id == room_id, ConsentRow.kind == kind)
                .order_by(ConsentRow.at, ConsentRow.id))
        if patient_ref is None:
            stmt = stmt.where(ConsentRow.patient_ref.is_(None))
        elif isinstance(patient_ref, str):
            stmt = stmt.where(ConsentRow.patient_ref == patient_ref)
        async with self._sessions() as session:
            return [_consent(r) for r in await session.scalars(stmt)]

    async def consent(self, consent_id: str) -> Consent | None:
        async with self._sessions() as session:
            row = await session.get(ConsentRow, consent_id)
            return _consent(row) if row is not None else None

    async def current_consent(self, room_id: str, patient_ref: str | None) -> Consent | None:
        """The patient's latest recording consent decision in the room (granted or declined)."""
        found = await self.consents(room_id, patient_ref=patient_ref)
        return found[-1] if found else None

    # ---- recordings ----------------------------------------------------------------------
    async def add_recording(self, recording: Recording) -> None:
        async with self._sessions.begin() as session:
            session.add(RecordingRow(**{k: getattr(recording, k) for k in _RECORDING_FIELDS}))

    async def update_recording(self, recording_id: str, **values: Any) -> None:
        async with self._sessions.begin() as session:
            await session.execute(update(RecordingRow).where(RecordingRow.id == recording_id)
                                  .values(**values))

    async def get_recording(self, recording_id: str) -> Recording | None:
        async with self._sessions() as session:
            row = await session.get(RecordingRow, recording_id)
            if row is None:
                return None
            files = await session.scalars(select(RecordingFileRow).where(
                RecordingFileRow.recording_id == recording_id).order_by(RecordingFileRow.id))
            jobs = await session.scalars(select(JobRow).where(
                JobRow.recording_id == recording_id).order_by(JobRow.id))
            recording = Recording(**{k: getattr(row, k) for k in _RECORDING_FIELDS})
            recording.files = [{k: getattr(f, k) for k in _FILE_FIELDS} for f in files]
            recording.jobs = [_job(j).as_dict() for j in jobs]
            return recording

    async def recordings(self, room_id: str | None = None, status: tuple[str, ...] = (),
                         patient_ref: str | None = None) -> list[Recording]:
        stmt = select(RecordingRow.id).order_by(RecordingRow.started_at, RecordingRow.id)
        if room_id is not None:
            stmt = stmt.where(RecordingRow.room_id == room_id)
        if patient_ref is not None:
            stmt = stmt.where(RecordingRow.patient_ref == patient_ref)
        if status:
            stmt = stmt.where(RecordingRow.status.in_(status))
        async with self._sessions() as session:
            ids = list(await session.scalars(stmt))
        out = []
        for recording_id in ids:
            recording = await self.get_recording(recording_id)
            if recording is not None:
                out.append(recording)
        return out

    async def mark_purged(self, recording_id: str) -> None:
        """Its files are deleted (retention): the row, manifest and hashes stay."""
        async with self._sessions.begin() as session:
            await session.execute(update(RecordingRow).where(RecordingRow.id == recording_id)
                                  .values(status="purged"))
            await session.execute(update(RecordingFileRow).where(
                RecordingFileRow.recording_id == recording_id).values(stored=False))

    async def replace_files(self, recording_id: str, files: list[dict[str, Any]]) -> None:
        async with self._sessions.begin() as session:
            old = await session.scalars(select(RecordingFileRow).where(
                RecordingFileRow.recording_id == recording_id))
            for row in old:
                await session.delete(row)
            for entry in files:
                session.add(RecordingFileRow(recording_id=recording_id,
                                             **{k: entry.get(k) for k in _FILE_FIELDS}))

    # ---- jobs ------------------------------------------------------------------------------
    async def add_job(self, recording_id: str, kind: str) -> int:
        row = JobRow(recording_id=recording_id, kind=kind, status="queued", progress=0.0,
                     attempts=0, created_at=utcnow())
        async with self._sessions.begin() as session:
            session.add(row)
            await session.flush()
            return row.id

    async def jobs(self, recording_id: str | None = None) -> list[Job]:
        stmt = select(JobRow).order_by(JobRow.id)
        if recording_id is not None:
            stmt = stmt.where(JobRow.recording_id == recording_id)
        async with self._sessions() as session:
            return [_job(row) for row in await session.scalars(stmt)]

    async def job_counts(self) -> dict[tuple[str, str], int]:
        """How many jobs there are of each (kind, status): for monitoring."""
        stmt = select(JobRow.kind, JobRow.status, func.count()).group_by(JobRow.kind,
                                                                          JobRow.status)
        async with self._sessions() as session:
            return {(kind, status): n for kind, status, n in await session.execute(stmt)}

    async def claim_job(self, worker: str, stale_after: timedelta,
                        job_id: int | None = None) -> Job | None:
        """Take the oldest queued job (or one whose worker stopped beating), or that one
        job; None if there is none to take."""
        now = utcnow()
        stmt = (select(JobRow).where(
            (JobRow.status == "queued")
            | ((JobRow.status == "running") & (JobRow.heartbeat_at < now - stale_after)))
            .order_by(JobRow.id).limit(20))
        if job_id is not None:
            stmt = stmt.where(JobRow.id == job_id)
        async with self._sessions() as session:
            candidates = list(await session.scalars(stmt))
        for row in candidates:
            if row.kind == "composite" and await self._waits_for_store(row.recording_id, row.id):
                continue
            claim = (update(JobRow).where(JobRow.id == row.id, JobRow.status == row.status,
                                          JobRow.attempts == row.attempts)
                     .values(status="running", worker=worker, attempts=row.attempts + 1,
                             started_at=now, heartbeat_at=now, error=None))
            if await self.db.run_update(claim) == 1:
                row.status, row.worker, row.attempts = "running", worker, row.attempts + 1
                return _job(row)
        return None

    async def _waits_for_store(self, recording_id: str, job_id: int) -> bool:
        """A composite job runs after the recording's earlier store job has finished."""
        async with self._sessions() as session:
            earlier = await session.scalars(select(JobRow).where(
                JobRow.recording_id == recording_id, JobRow.kind == "store",
                JobRow.id < job_id, JobRow.status.in_(("queued", "running"))))
            return earlier.first() is not None

    async def job_progress(self, job_id: int, progress: float) -> None:
        await self.db.run_update(update(JobRow).where(JobRow.id == job_id)
                              .values(progress=progress, heartbeat_at=utcnow()))

    async def finish_job(self, job_id: int, error: str | None = None) -> None:
        values: dict[str, Any] = {"finished_at": utcnow(), "heartbeat_at": utcnow()}
        values.update({"status": "failed", "error": error} if error else
                      {"status": "done", "progress": 1.0})
        await self.db.run_update(update(JobRow).where(JobRow.id == job_id).values(**values))

    async def requeue_job(self, job_id: int, error: str) -> None:
        await self.db.run_update(update(JobRow).where(JobRow.id == job_id).values(
            status="queued", error=error, heartbeat_at=None))
