"""REST API for the patient's record: the patient under discussion, encounters (docs/api.md).

Same authentication and error format as signaling/api.py; every read and change is written
to the audit log (records/audit.py).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from huizhen.config import Settings
from records.audit import AuditEvent
from records.encounters import EncounterDb
from rooms.members import RoomError
from signaling.api import BadRequest, json_body, rooms_of, text_field
from signaling.api_models import (
    ENCOUNTER,
    HOLD_IN,
    RECORDS_TOKEN,
    RECORDS_TOKEN_IN,
    SUBJECT,
    SUBJECT_IN,
    listing,
)
from signaling.auth import AuthError, mint_records_token
from signaling.keys import API_KEY, AUDIT, RECORDS, SETTINGS
from signaling.openapi import Param, errors, operation, reply


async def audit(request: web.Request, action: str, entity_type: str, entity_id: str | None,
                patient_ref: str | None, *, encounter_id: str | None = None,
                reason: str | None = None, outcome: str = "allowed",
                detail: dict[str, Any] | None = None) -> None:
    """Who (the API key), what, for which patient, from where: in the audit log."""
    await request.app[AUDIT].append(AuditEvent(
        actor=f"api:{request[API_KEY]}", role="api", action=action, entity_type=entity_type,
        entity_id=entity_id, patient_ref=patient_ref, encounter_id=encounter_id,
        address=request.remote, reason=reason, outcome=outcome, detail=detail))


def _encounters(request: web.Request) -> EncounterDb:
    return request.app[RECORDS].encounters


@operation("Set the patient under discussion", tag="records", body=SUBJECT_IN,
           example={"patient_ref": "Patient/123", "label": "Bed 12"},
           responses={200: reply("The patient now discussed (null: nobody)", SUBJECT),
                      **errors(409)})
async def set_subject(request: web.Request) -> web.Response:
    """The patient the room discusses now (ward rounds, MDT); ``null`` for nobody."""
    rooms = rooms_of(request)
    room = await rooms.get_room(request.match_info["room_id"])
    data = await json_body(request)
    if "patient_ref" not in data:
        raise BadRequest("field 'patient_ref' is required (a patient reference, or null)")
    ref = data["patient_ref"]
    if ref is not None and not isinstance(ref, str):
        raise BadRequest("field 'patient_ref' must be a string or null")
    label = text_field(data, "label", required=False, max_len=200)
    subject = await rooms.subjects.set(room.id, ref, label, f"api:{request[API_KEY]}")
    await audit(request, "subject.set", "room", room.id, ref, outcome="done",
                encounter_id=subject.segment_id if subject else None)
    return web.json_response({"subject": subject.as_dict() if subject else None})


@operation("A patient's or a room's encounters", tag="records",
           description="Give exactly one of `patient` and `room`.",
           params=(Param("patient", "query", {"type": "string", "maxLength": 255},
                         "a patient reference"),
                   Param("room", "query", {"type": "string", "maxLength": 128}, "a room id")),
           responses={200: reply("The encounters", listing("encounters", ENCOUNTER)),
                      **errors(404)})
async def list_encounters(request: web.Request) -> web.Response:
    patient_ref = request.query.get("patient", "").strip()
    room_id = request.query.get("room", "").strip()
    if bool(patient_ref) == bool(room_id):
        raise BadRequest("give one of ?patient=<patient reference> or ?room=<room id>")
    if patient_ref:
        found = await _encounters(request).of_patient(patient_ref)
    else:
        found = await _encounters(request).of_room((await rooms_of(request).get_room(room_id)).id)
    await audit(request, "encounter.list", "patient" if patient_ref else "room",
                patient_ref or room_id, patient_ref or None,
                detail={"encounters": [e.id for e in found]})
    return web.json_response({"encounters": [e.as_dict() for e in found]})


@operation("An encounter: who took part, its recordings", tag="records",
           responses={200: reply("The encounter", ENCOUNTER)})
async def get_encounter(request: web.Request) -> web.Response:
    encounter_id = request.match_info["encounter_id"]
    found = await _encounters(request).get(encounter_id)
    if found is None:
        raise RoomError("encounter_not_found", f"no encounter {encounter_id!r}")
    await audit(request, "encounter.read", "encounter", found.id, found.patient_ref,
                encounter_id=found.id)
    return web.json_response(found.as_dict())


@operation("Put an encounter on legal hold, or lift it", tag="records", body=HOLD_IN,
           example={"hold": True, "reason": "complaint under review"},
           responses={200: reply("The encounter", ENCOUNTER)})
async def hold(request: web.Request) -> web.Response:
    """``{"hold": true, "reason": "…"}``: keep the encounter's recordings past their retention
    (a hold on a session covers its segments); ``{"hold": false}`` lifts it."""
    encounter_id = request.match_info["encounter_id"]
    data = await json_body(request)
    on = data.get("hold")
    if not isinstance(on, bool):
        raise BadRequest("field 'hold' must be true or false")
    reason = text_field(data, "reason", required=on, max_len=500)
    if not await _encounters(request).set_hold(encounter_id, on, reason):
        raise RoomError("encounter_not_found", f"no encounter {encounter_id!r}")
    found = await _encounters(request).get(encounter_id)
    assert found is not None
    await audit(request, "encounter.hold" if on else "encounter.release", "encounter",
                found.id, found.patient_ref, encounter_id=found.id, reason=reason,
                outcome="done")
    return web.json_response(found.as_dict())


@operation("A token for the Records page", tag="records", body=RECORDS_TOKEN_IN,
           example={"identity": "dr-li", "role": "doctor", "ttl_s": 3600},
           responses={201: reply("The token and its link", RECORDS_TOKEN)})
async def records_token(request: web.Request) -> web.Response:
    """A token for the Records page: a clinician's, an admin's, or a patient's (or guardian's)
    for their own record, e.g. for a link in the hospital's patient portal."""
    settings: Settings = request.app[SETTINGS]
    data = await json_body(request)
    identity = text_field(data, "identity", max_len=255) or ""
    role = text_field(data, "role", max_len=32) or ""
    patient_ref = text_field(data, "patient_ref", required=False, max_len=255)
    ttl = data.get("ttl_s", 3600)
    if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 60:
        raise BadRequest("field 'ttl_s' must be a whole number of seconds, at least 60")
    key = request[API_KEY]
    secret = settings.secret_for(key) or ""
    try:
        token, expires = mint_records_token(key, secret, settings.auth.audience, identity, role,
                                            patient_ref, ttl)
    except AuthError as exc:
        raise BadRequest(exc.message) from exc
    await audit(request, "records_token.issue", "viewer", identity, patient_ref,
                outcome="done", detail={"role": role, "expires_at": expires})
    link = f"{settings.base_url}/records#t={token}"
    return web.json_response({"token": token, "expires_at": expires, "records_url": link},
                             status=201)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/records-tokens", records_token)
    app.router.add_post("/api/rooms/{room_id}/subject", set_subject)
    app.router.add_get("/api/encounters", list_encounters)
    app.router.add_get("/api/encounters/{encounter_id}", get_encounter)
    app.router.add_post("/api/encounters/{encounter_id}/hold", hold)
