"""Appointments: a room booked for a time, with the people invited to it (migration 0007).

The hospital system books one (``POST /api/appointments``): a room of a kind, for a patient,
from ``start`` to ``end``, and who is invited (clinicians, the patient, a relative). Each gets
a join link. Links of a scheduled room open ``rooms.join_early_s`` before its start
(:func:`check_window`, applied to every join whatever the link): too early is refused with the
time it opens. The record shows each booking as a FHIR ``Appointment`` (records/fhir.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, select
from sqlalchemy.orm import Mapped, mapped_column

from rooms.db import Base, Database, RoomRow
from rooms.members import RoomError
from rooms.models import RoomRecord, utcnow


class InviteeRow(Base):
    __tablename__ = "appointment_invitees"
    __table_args__ = (Index("ix_appointment_invitees_room_id", "room_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    room_id: Mapped[str] = mapped_column(String(128), ForeignKey("rooms.id"))
    identity: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(32))
    #: a clinician's display name; none is kept for a patient or guardian
    name: Mapped[str | None] = mapped_column(String(200))


@dataclass(frozen=True)
class Invitee:
    identity: str
    role: str
    name: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"identity": self.identity, "role": self.role, "name": self.name}


def check_window(room: RoomRecord, early: timedelta, now: datetime | None = None) -> None:
    """Refuse a join before a scheduled room opens (``early`` before its start)."""
    if room.scheduled_start is None:
        return
    opens = room.scheduled_start - early
    if (now or utcnow()) < opens:
        raise RoomError("too_early", f"this consultation opens at {opens.isoformat()} "
                        f"({int(early.total_seconds() // 60)} minutes before it starts); "
                        "open the link again then", {"opens_at": opens.isoformat()})


class Appointments:
    def __init__(self, db: Database) -> None:
        self._sessions = db.sessions

    async def invite(self, room_id: str, invitees: list[Invitee]) -> None:
        async with self._sessions.begin() as session:
            session.add_all(InviteeRow(room_id=room_id, identity=i.identity, role=i.role,
                                       name=i.name) for i in invitees)

    async def invitees(self, room_id: str) -> list[Invitee]:
        async with self._sessions() as session:
            rows = await session.scalars(select(InviteeRow).where(
                InviteeRow.room_id == room_id).order_by(InviteeRow.id))
            return [Invitee(r.identity, r.role, r.name) for r in rows]

    async def of_patient(self, patient_ref: str) -> list[RoomRecord]:
        """The patient's booked rooms, soonest first."""
        async with self._sessions() as session:
            rows = await session.scalars(select(RoomRow).where(
                RoomRow.patient_ref == patient_ref, RoomRow.scheduled_start.is_not(None))
                .order_by(RoomRow.scheduled_start))
            return [r.to_record() for r in rows]

    async def between(self, start: datetime, end: datetime) -> list[RoomRecord]:
        async with self._sessions() as session:
            rows = await session.scalars(select(RoomRow).where(
                RoomRow.scheduled_start >= start, RoomRow.scheduled_start < end)
                .order_by(RoomRow.scheduled_start).limit(1000))
            return [r.to_record() for r in rows]
