"""Encounters: one per session (a room's life), and a sub-encounter per patient segment.

An encounter is created when its room first has someone in it (or first names a patient
under discussion) and finished when the room ends. A room whose kind discusses several
patients (ward round, MDT) opens a sub-encounter each time the patient under discussion
changes (rooms/subjects.py; its id is the segment's id) and closes it at the next change.
Each encounter holds what the session left for its patient: the recordings whose patient and
segment match (recording/ writes both on every recording it makes). A patient's record is
the encounters whose patient they are — never another patient's segment of the same round.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, String, Text, or_, select, update
from sqlalchemy.orm import Mapped, mapped_column

from recording.db import Recording, RecordingDb
from rooms.db import Base, Database, SessionRow
from rooms.members import Member
from rooms.models import RoomRecord, SessionRecord, utcnow
from rooms.service import RoomService
from rooms.subjects import Subject

log = logging.getLogger("huizhen.records")


class PatientRow(Base):
    """A patient as the hospital system names them (a reference, e.g. ``Patient/42`` or a
    medical record number): no name, no demographics — those stay in the hospital's EMR."""

    __tablename__ = "patients"

    __table_args__ = (Index("ix_patients_fhir_id", "fhir_id", unique=True),)

    ref: Mapped[str] = mapped_column(String(255), primary_key=True)
    first_seen: Mapped[datetime]
    #: the id of their ``Patient`` resource at /fhir/ (records/fhir.py)
    fhir_id: Mapped[str] = mapped_column(String(64))


_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def patient_fhir_id(ref: str, taken: bool) -> str:
    """A FHIR id for a hospital's patient reference: the reference itself (``Patient/``
    dropped) when it is a valid FHIR id nobody has yet, else ``pt-`` and a hash of it.
    (Migration 0004 gave the patients before it their ids the same way.)"""
    candidate = ref.removeprefix("Patient/")
    if _FHIR_ID.fullmatch(candidate) and not candidate.startswith("pt-") and not taken:
        return candidate
    return "pt-" + hashlib.sha256(ref.encode()).hexdigest()[:40]


class EncounterRow(Base):
    __tablename__ = "encounters"
    __table_args__ = (Index("ix_encounters_room_id", "room_id"),
                      Index("ix_encounters_patient_ref", "patient_ref"))

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    room_id: Mapped[str] = mapped_column(String(128), ForeignKey("rooms.id"))
    parent_id: Mapped[str | None] = mapped_column(String(128), ForeignKey("encounters.id"))
    patient_ref: Mapped[str | None] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # in-progress | finished
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    legal_hold: Mapped[bool] = mapped_column(Boolean, default=False)
    hold_reason: Mapped[str | None] = mapped_column(Text)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass
class Encounter:
    id: str
    room_id: str
    parent_id: str | None
    patient_ref: str | None
    kind: str
    title: str
    status: str
    started_at: datetime
    ended_at: datetime | None
    legal_hold: bool = False
    hold_reason: str | None = None
    participants: list[SessionRecord] = field(default_factory=list)
    recordings: list[Recording] = field(default_factory=list)

    @property
    def duration_s(self) -> float | None:
        if self.ended_at is None:
            return None
        return round((self.ended_at - self.started_at).total_seconds(), 3)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "room_id": self.room_id, "part_of": self.parent_id,
            "patient_ref": self.patient_ref, "kind": self.kind, "title": self.title,
            "status": self.status, "started_at": _iso(self.started_at),
            "ended_at": _iso(self.ended_at), "duration_s": self.duration_s,
            "legal_hold": self.legal_hold, "hold_reason": self.hold_reason,
            "participants": [{"identity": s.identity, "name": s.name, "role": s.role,
                              "joined_at": _iso(s.joined_at), "left_at": _iso(s.left_at)}
                             for s in self.participants],
            "recordings": [{"id": r.id, "status": r.status, "started_at": _iso(r.started_at),
                            "ended_at": _iso(r.ended_at), "duration_s": r.duration_s,
                            "segment_id": r.segment_id} for r in self.recordings],
        }


def _encounter(row: EncounterRow) -> Encounter:
    return Encounter(id=row.id, room_id=row.room_id, parent_id=row.parent_id,
                     patient_ref=row.patient_ref, kind=row.kind, title=row.title,
                     status=row.status, started_at=row.started_at, ended_at=row.ended_at,
                     legal_hold=row.legal_hold, hold_reason=row.hold_reason)


class EncounterDb:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._sessions = db.sessions
        self.recordings = RecordingDb(db)

    async def open_main(self, room: RoomRecord) -> None:
        """The session's encounter (its id is the room's), once."""
        async with self._sessions.begin() as session:
            if await session.get(EncounterRow, room.id) is not None:
                return
            session.add(EncounterRow(id=room.id, room_id=room.id, parent_id=None,
                                     patient_ref=room.patient_ref, kind=room.kind,
                                     title=room.title, status="in-progress",
                                     started_at=utcnow(), ended_at=None))
            if room.patient_ref:
                await self._patient(session, room.patient_ref)

    async def open_segment(self, room: RoomRecord, subject: Subject) -> None:
        async with self._sessions.begin() as session:
            session.add(EncounterRow(id=subject.segment_id, room_id=room.id, parent_id=room.id,
                                     patient_ref=subject.patient_ref, kind=room.kind,
                                     title=room.title, status="in-progress",
                                     started_at=subject.since, ended_at=None))
            await self._patient(session, subject.patient_ref)

    @staticmethod
    async def _patient(session: Any, ref: str) -> None:
        if await session.get(PatientRow, ref) is not None:
            return
        fhir_id = patient_fhir_id(ref, False)
        if await session.scalar(select(PatientRow.ref).where(PatientRow.fhir_id == fhir_id)):
            fhir_id = patient_fhir_id(ref, True)
        session.add(PatientRow(ref=ref, first_seen=utcnow(), fhir_id=fhir_id))

    async def close_segments(self, room_id: str, at: datetime) -> None:
        await self._finish(EncounterRow.parent_id == room_id, at)

    async def finish(self, room_id: str, at: datetime) -> None:
        await self._finish(EncounterRow.room_id == room_id, at)

    async def _finish(self, where: Any, at: datetime) -> None:
        async with self._sessions.begin() as session:
            await session.execute(update(EncounterRow).where(
                where, EncounterRow.status == "in-progress").values(status="finished",
                                                                    ended_at=at))

    async def set_hold(self, encounter_id: str, hold: bool, reason: str | None) -> bool:
        """Put the encounter on legal hold (or lift it); False if there is no such encounter."""
        async with self._sessions.begin() as session:
            row = await session.get(EncounterRow, encounter_id)
            if row is None:
                return False
            row.legal_hold, row.hold_reason = hold, reason if hold else None
        return True

    async def get(self, encounter_id: str, fill: bool = True) -> Encounter | None:
        """One encounter; ``fill=False``: its own row only (no participants, no recordings)."""
        async with self._sessions() as session:
            row = await session.get(EncounterRow, encounter_id)
        if row is None:
            return None
        return (await self._fill([_encounter(row)]))[0] if fill else _encounter(row)

    async def of_patient(self, patient_ref: str) -> list[Encounter]:
        """The encounters in a patient's record: sessions about them, and their segments of
        sessions about several patients; newest first."""
        async with self._sessions() as session:
            rows = (await session.scalars(select(EncounterRow).where(
                EncounterRow.patient_ref == patient_ref).order_by(
                EncounterRow.started_at.desc()))).all()
        return await self._fill([_encounter(r) for r in rows])

    async def of_room(self, room_id: str) -> list[Encounter]:
        async with self._sessions() as session:
            rows = (await session.scalars(select(EncounterRow).where(or_(
                EncounterRow.id == room_id, EncounterRow.parent_id == room_id)).order_by(
                EncounterRow.started_at))).all()
        return await self._fill([_encounter(r) for r in rows])

    async def of_participant(self, identity: str) -> list[Encounter]:
        """Encounters of the rooms someone was in (then filtered by who may see them)."""
        async with self._sessions() as session:
            rooms = set(await session.scalars(select(SessionRow.room_id).where(
                SessionRow.identity == identity)))
            if not rooms:
                return []
            rows = (await session.scalars(select(EncounterRow).where(
                EncounterRow.room_id.in_(rooms)).order_by(
                EncounterRow.started_at.desc()))).all()
        return await self._fill([_encounter(r) for r in rows])

    async def patient(self, ref: str | None = None, fhir_id: str | None = None
                      ) -> PatientRow | None:
        """A patient by their reference or by their FHIR id."""
        async with self._sessions() as session:
            if ref is not None:
                return await session.get(PatientRow, ref)
            return await session.scalar(select(PatientRow).where(PatientRow.fhir_id == fhir_id))

    async def fhir_ids(self, refs: set[str]) -> dict[str, str]:
        """Patient reference → FHIR id, for those known."""
        if not refs:
            return {}
        async with self._sessions() as session:
            rows = await session.execute(select(PatientRow.ref, PatientRow.fhir_id).where(
                PatientRow.ref.in_(refs)))
            return {ref: fhir_id for ref, fhir_id in rows.all()}

    async def _fill(self, encounters: list[Encounter]) -> list[Encounter]:
        """Who took part (their stays overlapping each encounter) and its recordings: those
        of its segment, or for a whole session those of its patient outside any segment.
        Each room's sessions and recordings are read once, however many encounters it has."""
        rooms: dict[str, tuple[list[SessionRecord], list[Recording]]] = {}
        for encounter in encounters:
            if encounter.room_id not in rooms:
                rooms[encounter.room_id] = (
                    await self._db.sessions_for_room(encounter.room_id),
                    await self.recordings.recordings(room_id=encounter.room_id))
            sessions, recordings = rooms[encounter.room_id]
            end = encounter.ended_at
            encounter.participants = [
                s for s in sessions if (end is None or s.joined_at <= end)
                and (s.left_at is None or s.left_at >= encounter.started_at)]
            if encounter.parent_id is not None:
                encounter.recordings = [r for r in recordings if r.segment_id == encounter.id]
            else:
                encounter.recordings = [r for r in recordings if r.segment_id is None
                                        and r.patient_ref == encounter.patient_ref
                                        and encounter.patient_ref is not None]
        return encounters


class RecordsService:
    """Keeps the encounters as the rooms run (a ``RoomObserver``)."""

    def __init__(self, rooms: RoomService, db: Database) -> None:
        self.rooms = rooms
        self.encounters = EncounterDb(db)
        rooms.add_observer(self)

    async def joined_state(self, room_id: str) -> dict[str, Any]:
        return {}

    async def participant_joined(self, member: Member) -> None:
        await self.encounters.open_main(await self.rooms.get_room(member.room_id))

    def media_changed(self, room_id: str) -> None:
        return None

    def active_speaker(self, room_id: str, participant_id: str) -> None:
        return None

    async def room_ended(self, room_id: str) -> None:
        await self.encounters.finish(room_id, utcnow())

    async def subject_changed(self, room_id: str, subject: Subject | None) -> None:
        room = await self.rooms.get_room(room_id)
        await self.encounters.open_main(room)
        at = subject.since if subject is not None else utcnow()
        await self.encounters.close_segments(room_id, at)
        if subject is not None:
            await self.encounters.open_segment(room, subject)
        log.info("encounter segment", extra={"room": room_id, "encounter":
                                             subject.segment_id if subject else None})
