"""The patient under discussion (ward rounds, MDT: several patients in one session).

A moderator (or the hospital system through the API) names the patient the room is talking
about now; everyone admitted sees who it is (the label, e.g. "12床 张三", goes to the room and
the database, never into logs). Each change starts a new *segment* (its own id): the
recording is cut there and each patient's consent governs their own segment (recording/),
and each segment is a sub-encounter of the session in that patient's record (records/).
A room without a subject is about its own patient (``rooms.patient_ref``), if it has one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rooms.members import LOBBY, Member, RoomError
from rooms.models import EventRecord, new_id, utcnow
from rooms.policy import kind_policy

if TYPE_CHECKING:
    from rooms.service import RoomService

log = logging.getLogger("huizhen.rooms")

MAX_REF, MAX_LABEL = 255, 200


@dataclass(frozen=True)
class Subject:
    patient_ref: str
    label: str
    segment_id: str
    since: datetime
    set_by: str

    def as_dict(self) -> dict[str, Any]:
        return {"patient_ref": self.patient_ref, "label": self.label,
                "segment_id": self.segment_id, "since": self.since.isoformat(),
                "set_by": self.set_by}


def several_patients_only(kind: str, what: str) -> None:
    """Refuse ``what`` (a patient under discussion, an agenda) in a kind of room that is about
    its own patient (``several_patients`` in the policy table)."""
    if not kind_policy(kind).several_patients:
        raise RoomError("one_patient", f"a {kind} room is about its own patient; {what} is "
                        "for ward rounds and MDT meetings")


def clean_ref(patient_ref: object) -> str:
    if not isinstance(patient_ref, str) or not patient_ref.strip() \
            or len(patient_ref.strip()) > MAX_REF:
        raise RoomError("bad_message", f"patient_ref must be 1-{MAX_REF} characters")
    return patient_ref.strip()


class Subjects:
    """Who each room is discussing now (on this node; see docs/records.md)."""

    def __init__(self, rooms: RoomService) -> None:
        self._rooms = rooms
        self._current: dict[str, Subject] = {}

    def current(self, room_id: str) -> Subject | None:
        return self._current.get(room_id)

    def state(self, room_id: str) -> dict[str, Any] | None:
        subject = self._current.get(room_id)
        return None if subject is None else subject.as_dict()

    async def set_by(self, member: Member, patient_ref: str | None, label: str | None
                     ) -> Subject | None:
        """A participant's ``set_subject`` message: moderators only."""
        if not member.grants.moderate:
            raise RoomError("not_permitted", f"your role ({member.info.role}) may not choose "
                            "the patient under discussion")
        return await self.set(member.room_id, patient_ref, label, member.info.identity)

    async def set(self, room_id: str, patient_ref: str | None, label: str | None, by: str
                  ) -> Subject | None:
        """Make ``patient_ref`` the patient under discussion (None: nobody in particular).
        The same patient again changes nothing (no new segment)."""
        room = await self._rooms.get_room(room_id)
        if room.status != "open":
            raise RoomError("room_ended", "this consultation has ended")
        several_patients_only(room.kind, "a patient under discussion")
        ref = None if patient_ref is None else clean_ref(patient_ref)
        text = (label or "").strip()[:MAX_LABEL] or (ref or "")
        current = self._current.get(room_id)
        if (current.patient_ref if current else None) == ref:
            return current
        subject = None if ref is None else Subject(ref, text, new_id("seg"), utcnow(), by)
        if subject is None:
            self._current.pop(room_id, None)
        else:
            self._current[room_id] = subject
        await self._rooms.db.log_event(EventRecord(
            room_id=room_id, type="subject_changed", at=utcnow(),
            data={"patient_ref": ref, "label": text or None, "by": by,
                  "segment_id": subject.segment_id if subject else None}))
        log.info("patient under discussion changed", extra={
            "room": room_id, "segment": subject.segment_id if subject else None})
        await self.tell_room(room_id)
        for observer in self._rooms.observers:
            try:
                await observer.subject_changed(room_id, subject)
            except Exception:  # an observer's trouble never stops the room
                log.exception("room observer failed", extra={"room": room_id})
        return subject

    def _message(self, room_id: str) -> dict[str, Any]:
        return {"type": "subject", "subject": self.state(room_id)}

    async def tell_room(self, room_id: str) -> None:
        """Everyone admitted (the lobby does not learn who is discussed)."""
        await self._rooms.send_all([m for m in self._rooms.members_of(room_id)
                                    if m.info.state != LOBBY], self._message(room_id))

    async def tell(self, member: Member) -> None:
        """Someone just admitted."""
        if member.info.state != LOBBY:
            await self._rooms.send(member, self._message(member.room_id))
            agenda = await self._rooms.agenda.state(member.room_id)
            if agenda is not None:
                await self._rooms.send(member, {"type": "agenda", "agenda": agenda})

    def restore(self, event: EventRecord) -> None:
        """After a restart: the patient under discussion as the event log last had it (the
        same segment goes on; nobody is told, the joiners learn it in ``joined``)."""
        data = event.data
        ref, segment = data.get("patient_ref"), data.get("segment_id")
        if isinstance(ref, str) and isinstance(segment, str):
            self._current[event.room_id] = Subject(ref, str(data.get("label") or ref), segment,
                                                   event.at, str(data.get("by") or ""))
        else:
            self._current.pop(event.room_id, None)

    def forget(self, room_id: str) -> None:
        self._current.pop(room_id, None)
