"""Appointments through the API: book a room for a time with who is invited, and list them
(docs/api.md, "Appointments"; rooms/appointments.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web

from huizhen.config import Settings
from rooms.appointments import Invitee
from rooms.members import RoomError
from rooms.models import RoomRecord, utcnow
from rooms.policy import PolicyError, Role, grants_for, kind_policy
from signaling.api import BadRequest, join_url, json_body, rooms_of, text_field, when
from signaling.api_models import APPOINTMENT, BOOK_IN, BOOKED, WHEN, listing
from signaling.auth import mint_participant_token
from signaling.keys import API_KEY, SETTINGS
from signaling.openapi import Param, operation, reply

MAX_INVITEES = 50
#: links stay valid this long after the booked end (a visit that runs late)
GRACE = timedelta(hours=2)


async def _as_dict(request: web.Request, room: RoomRecord) -> dict[str, Any]:
    invitees = await rooms_of(request).appointments.invitees(room.id)
    return {**room.as_dict(), "participants": [i.as_dict() for i in invitees]}


def _invitees(data: dict[str, Any], kind: str) -> list[tuple[Invitee, str]]:
    """Who is invited, and the name each one's link carries (kept for clinicians only)."""
    people = data.get("participants")
    if not isinstance(people, list) or not 1 <= len(people) <= MAX_INVITEES:
        raise BadRequest(f"participants must list 1-{MAX_INVITEES} people: "
                         '[{"identity", "name", "role"}]')
    out = []
    for person in people:
        if not isinstance(person, dict):
            raise BadRequest("each participant is an object {identity, name, role}")
        identity = text_field(person, "identity", max_len=128) or ""
        role = text_field(person, "role", max_len=32) or ""
        name = text_field(person, "name") or ""
        try:
            grants_for(kind, role)
        except PolicyError as exc:
            raise BadRequest(f"{identity}: {exc}") from exc
        out.append((Invitee(identity, role,
                            None if role in (Role.PATIENT, Role.GUARDIAN) else name), name))
    if len({i.identity for i, _ in out}) != len(out):
        raise BadRequest("each participant's identity appears once")
    return out


def _example() -> dict[str, Any]:
    """A booking for tomorrow (the links must not outlive auth.max_token_ttl_s)."""
    start = utcnow().replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
    return {"kind": "clinic", "title": "Cardiology follow-up", "patient_ref": "Patient/123",
            "start": start.isoformat(), "end": (start + timedelta(minutes=20)).isoformat(),
            "participants": [{"identity": "dr-li", "name": "Dr Li", "role": "doctor"},
                             {"identity": "pt-123", "name": "Wang Fang", "role": "patient"}]}


@operation("Book an appointment", tag="appointments", body=BOOK_IN, example=_example,
           description="A room for a time, who is invited, and a join link for each.",
           responses={201: reply("The appointment and its links", BOOKED)})
async def book(request: web.Request) -> web.Response:
    """``{"kind", "title", "patient_ref", "start", "end", "participants": [{"identity",
    "name", "role"}], "auto_record"?}`` → the appointment and a join link per participant."""
    settings: Settings = request.app[SETTINGS]
    data = await json_body(request)
    kind = text_field(data, "kind") or ""
    kind_policy(kind)
    start, end = when(data, "start"), when(data, "end")
    if start is None or end is None:
        raise BadRequest("start and end are required (ISO 8601 with a time zone)")
    if end <= start:
        raise BadRequest("end must be after start")
    if end < utcnow():
        raise BadRequest("the appointment has already ended")
    ttl = int((end + GRACE - utcnow()).total_seconds())
    if ttl > settings.auth.max_token_ttl_s:
        days = settings.auth.max_token_ttl_s // 86400
        raise BadRequest(f"links live at most {days} days (auth.max_token_ttl_s): book "
                         "closer to the date, or make the links later with "
                         "POST /api/rooms/{id}/tokens")
    invitees = _invitees(data, kind)
    auto_record = data.get("auto_record")
    if auto_record is not None and not isinstance(auto_record, bool):
        raise BadRequest("auto_record must be true, false or absent (the room kind decides)")
    rooms = rooms_of(request)
    room = await rooms.create_room(
        kind=kind, title=text_field(data, "title") or "",
        patient_ref=text_field(data, "patient_ref", required=False), scheduled_start=start,
        scheduled_end=end, created_by=request[API_KEY], auto_record=auto_record)
    await rooms.appointments.invite(room.id, [i for i, _ in invitees])
    key = request[API_KEY]
    links = []
    for invitee, name in invitees:
        token, claims = mint_participant_token(
            api_key=key, secret=settings.secret_for(key) or "",
            audience=settings.auth.audience, room_id=room.id, room_kind=kind,
            identity=invitee.identity, name=name, role=invitee.role, ttl_s=ttl)
        links.append({"identity": invitee.identity, "role": invitee.role,
                      "join_url": join_url(settings, room.id, token),
                      "expires_at": claims.expires_at})
    opens = start - rooms.join_early
    return web.json_response({"appointment": await _as_dict(request, room),
                              "opens_at": opens.isoformat(), "links": links}, status=201)


@operation("Appointments in a time window", tag="appointments",
           params=(Param("from", "query", WHEN, "default: now"),
                   Param("to", "query", WHEN, "default: 7 days after from")),
           responses={200: reply("The appointments", listing("appointments", APPOINTMENT))})
async def list_appointments(request: web.Request) -> web.Response:
    """``?from=…&to=…`` (ISO 8601 with a time zone; default: the next 7 days)."""
    query = dict(request.query)
    start = when(query, "from") or utcnow()
    end = when(query, "to") or start + timedelta(days=7)
    if end <= start:
        raise BadRequest("to must be after from")
    found = await rooms_of(request).appointments.between(start, end)
    return web.json_response({"appointments": [await _as_dict(request, r) for r in found]})


@operation("An appointment and who is invited", tag="appointments",
           responses={200: reply("The appointment", APPOINTMENT)})
async def get_appointment(request: web.Request) -> web.Response:
    room = await rooms_of(request).get_room(request.match_info["room_id"])
    if room.scheduled_start is None:
        raise RoomError("room_not_found", "this room is not an appointment (it has no start)")
    return web.json_response(await _as_dict(request, room))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/appointments", book)
    app.router.add_get("/api/appointments", list_appointments)
    app.router.add_get("/api/appointments/{room_id}", get_appointment)
