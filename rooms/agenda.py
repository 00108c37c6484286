"""The agenda of a session about several patients: a ward round's ordered patient list, an
MDT's cases (patient, presenting doctor, question).

The hospital system sets it when it creates the room (``agenda`` in ``POST /api/rooms``) or
later (``PUT /api/rooms/{id}/agenda``); a moderator can set it in the call (``agenda_set``).
A moderator moves through it (``agenda_go`` to an item, ``agenda_next``): each move makes the
item's patient the patient under discussion (rooms/subjects.py), which starts that patient's
recording segment and the sub-encounter their notes, minutes and conclusion attach to
(records/documents.py). Everyone admitted sees the agenda and where the room is in it (the
lobby does not). Which kinds have an agenda: ``several_patients`` in the policy table.
The items live in the database (migration 0008); the current item is the one whose patient
is under discussion, so it survives a restart with the subject.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from rooms.db import Base
from rooms.members import LOBBY, Member, RoomError
from rooms.models import new_id
from rooms.subjects import MAX_LABEL, clean_ref, several_patients_only

if TYPE_CHECKING:
    from rooms.service import RoomService

log = logging.getLogger("huizhen.rooms")

MAX_ITEMS = 100
MAX_QUESTION = 2000
MAX_IDENTITY = 255


class AgendaRow(Base):
    __tablename__ = "agenda_items"
    __table_args__ = (Index("ix_agenda_items_room_id", "room_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    room_id: Mapped[str] = mapped_column(String(128), ForeignKey("rooms.id"))
    position: Mapped[int] = mapped_column(Integer)
    patient_ref: Mapped[str] = mapped_column(String(255))
    label: Mapped[str] = mapped_column(String(200))
    presenter: Mapped[str | None] = mapped_column(String(255))
    question: Mapped[str | None] = mapped_column(Text)


@dataclass(frozen=True)
class AgendaItem:
    id: str
    patient_ref: str
    label: str
    presenter: str | None = None  # the presenting doctor's identity (MDT)
    question: str | None = None  # what the team is asked (MDT)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "patient_ref": self.patient_ref, "label": self.label,
                "presenter": self.presenter, "question": self.question}


def parse_items(items: object) -> list[AgendaItem]:
    """Agenda items from a request: a list of ``{patient_ref, label?, presenter?,
    question?}``; RoomError ``bad_agenda`` naming the first bad item otherwise."""
    if not isinstance(items, list) or len(items) > MAX_ITEMS:
        raise RoomError("bad_agenda", f"agenda must be a list of at most {MAX_ITEMS} items")
    out = []
    for n, item in enumerate(items, 1):
        if not isinstance(item, dict) or set(item) - {"patient_ref", "label", "presenter",
                                                       "question"}:
            raise RoomError("bad_agenda", f"agenda item {n}: an object with patient_ref and "
                            "optionally label, presenter, question")
        try:
            ref = clean_ref(item.get("patient_ref"))
        except RoomError as exc:
            raise RoomError("bad_agenda", f"agenda item {n}: {exc.message}") from exc
        fields: dict[str, str | None] = {}
        for name, limit in (("label", MAX_LABEL), ("presenter", MAX_IDENTITY),
                            ("question", MAX_QUESTION)):
            value = item.get(name)
            if value is not None and (not isinstance(value, str) or len(value) > limit):
                raise RoomError("bad_agenda", f"agenda item {n}: {name} must be text of at "
                                f"most {limit} characters")
            fields[name] = value.strip() or None if isinstance(value, str) else None
        out.append(AgendaItem(new_id("case"), ref, fields["label"] or ref,
                              fields["presenter"], fields["question"]))
    return out


class Agenda:
    def __init__(self, rooms: RoomService) -> None:
        self._rooms = rooms
        self._sessions = rooms.db.sessions
        self._chosen: dict[str, str] = {}  # room → the item a moderator last went to

    async def items(self, room_id: str) -> list[AgendaItem]:
        async with self._sessions() as session:
            rows = await session.scalars(select(AgendaRow).where(
                AgendaRow.room_id == room_id).order_by(AgendaRow.position))
            return [AgendaItem(r.id, r.patient_ref, r.label, r.presenter, r.question)
                    for r in rows]

    async def current(self, room_id: str) -> AgendaItem | None:
        """The item under discussion (see :meth:`_current`)."""
        return self._current(room_id, await self.items(room_id))

    def _current(self, room_id: str, items: list[AgendaItem]) -> AgendaItem | None:
        """Of ``items``, the patient under discussion's (the one a moderator went to, when
        the agenda has that patient more than once)."""
        subject = self._rooms.subjects.current(room_id)
        if subject is None:
            return None
        matching = [i for i in items if i.patient_ref == subject.patient_ref]
        chosen = self._chosen.get(room_id)
        return next((i for i in matching if i.id == chosen), matching[0] if matching else None)

    async def state(self, room_id: str) -> dict[str, Any] | None:
        items = await self.items(room_id)
        if not items:
            return None
        current = self._current(room_id, items)
        return {"items": [i.as_dict() for i in items],
                "current": current.id if current is not None else None}

    async def set(self, room_id: str, items: list[AgendaItem], by: str) -> None:
        """Replace the agenda (what was discussed stays in the record and the event log)."""
        room = await self._rooms.get_room(room_id)
        if room.status != "open":
            raise RoomError("room_ended", "this consultation has ended")
        several_patients_only(room.kind, "an agenda")
        async with self._sessions.begin() as session:
            await session.execute(delete(AgendaRow).where(AgendaRow.room_id == room_id))
            session.add_all(AgendaRow(id=i.id, room_id=room_id, position=n,
                                      patient_ref=i.patient_ref, label=i.label,
                                      presenter=i.presenter, question=i.question)
                            for n, i in enumerate(items))
        await self._rooms._event(room_id, "agenda_set", None, {"items": len(items), "by": by})
        log.info("agenda set", extra={"room": room_id, "items": len(items)})
        await self.tell_room(room_id)

    async def set_by(self, member: Member, items: object) -> None:
        self._require(member)
        await self.set(member.room_id, parse_items(items), member.info.identity)

    async def go(self, member: Member, item_id: str | None) -> None:
        """Move to ``item_id`` (None: the next item after the current one, or the first)."""
        self._require(member)
        items = await self.items(member.room_id)
        if not items:
            raise RoomError("no_agenda", "this consultation has no agenda; set one first")
        if item_id is None:
            current = self._current(member.room_id, items)
            at = items.index(current) + 1 if current is not None else 0
            if at >= len(items):
                raise RoomError("agenda_done", "this was the last item of the agenda")
            item = items[at]
        else:
            found = next((i for i in items if i.id == item_id), None)
            if found is None:
                raise RoomError("unknown_item", f"no agenda item {item_id!r}")
            item = found
        self._chosen[member.room_id] = item.id
        await self._rooms.subjects.set(member.room_id, item.patient_ref, item.label,
                                       member.info.identity)
        await self.tell_room(member.room_id)

    @staticmethod
    def _require(member: Member) -> None:
        if not member.grants.moderate:
            raise RoomError("not_permitted", f"your role ({member.info.role}) may not change "
                            "the agenda")

    async def tell_room(self, room_id: str) -> None:
        """Everyone admitted (the lobby does not learn the patients)."""
        message = {"type": "agenda", "agenda": await self.state(room_id)}
        await self._rooms.send_all([m for m in self._rooms.members_of(room_id)
                                    if m.info.state != LOBBY], message)

    def forget(self, room_id: str) -> None:
        self._chosen.pop(room_id, None)
