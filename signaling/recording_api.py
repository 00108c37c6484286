"""REST API for recording: consents, start/stop/pause, recordings and their jobs (docs/api.md).

Same authentication and error format as signaling/api.py (its middleware covers these routes).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from recording.service import CONSENT_GIVERS, CONSENT_METHODS, Actor, RecordingService
from rooms.members import RoomError
from signaling.api import BadRequest, json_body, rooms_of, text_field
from signaling.api_models import (
    COMPOSITE_QUEUED,
    CONSENT,
    CONSENT_IN,
    CONTROL_IN,
    RECORDING_INFO,
    RECORDING_STATE,
    listing,
)
from signaling.keys import API_KEY, RECORDING
from signaling.openapi import ID, Param, errors, operation, reply
from signaling.records_api import audit

ACTIONS = ("start", "stop", "pause", "resume")


def _recording(request: web.Request) -> RecordingService:
    service: RecordingService = request.app[RECORDING]
    return service


def _actor(request: web.Request) -> Actor:
    return Actor(f"api:{request[API_KEY]}", "api")


@operation("Enter a recording consent (or refusal)", tag="recording", body=CONSENT_IN,
           example={"granted": True, "method": "written", "obtained_by": "nurse-wu"},
           responses={201: reply("The consent as recorded", CONSENT), **errors(409)})
async def add_consent(request: web.Request) -> web.Response:
    """A recording consent (or refusal) obtained outside the client: on paper, by phone, in the
    hospital's patient portal."""
    room = await rooms_of(request).get_room(request.match_info["room_id"])
    data = await json_body(request)
    granted = data.get("granted", True)
    if not isinstance(granted, bool):
        raise BadRequest("field 'granted' must be true or false")
    method = text_field(data, "method", max_len=32) or ""
    if method not in CONSENT_METHODS:
        raise BadRequest(f"field 'method' must be one of {', '.join(CONSENT_METHODS)}")
    given_by_role = text_field(data, "given_by_role", required=False, max_len=32) or "patient"
    if given_by_role not in CONSENT_GIVERS:
        raise BadRequest(f"field 'given_by_role' must be {' or '.join(CONSENT_GIVERS)}")
    obtained_by = text_field(data, "obtained_by", max_len=255) or ""
    note = text_field(data, "note", required=False, max_len=2000)
    patient_ref = text_field(data, "patient_ref", required=False, max_len=255)
    consent = await _recording(request).record_consent(
        room.id, granted, method, given_by_role, recorded_by=f"api:{request[API_KEY]}",
        asked_by=obtained_by, note=note, patient_ref=patient_ref)
    await audit(request, "consent.add", "consent", consent.id, consent.patient_ref,
                outcome="done",
                 detail={"room": room.id, "granted": granted, "method": method})
    return web.json_response(consent.as_dict(), status=201)


@operation("A room's recording consents", tag="recording",
           responses={200: reply("The consents", listing("consents", CONSENT))})
async def list_consents(request: web.Request) -> web.Response:
    room = await rooms_of(request).get_room(request.match_info["room_id"])
    consents = await _recording(request).db.consents(room.id)
    await audit(request, "consent.list", "room", room.id, room.patient_ref)
    return web.json_response({"consents": [c.as_dict() for c in consents]})


@operation("Start, stop, pause or resume a room's recording", tag="recording",
           params=(Param("room_id", "path", ID, required=True),
                   Param("action", "path", {"enum": list(ACTIONS)}, required=True)),
           body=CONTROL_IN, body_required=False,
           description="start needs the patient's consent, or an `override_reason` that is "
                       "logged; pause and resume answer the recording state.",
           responses={201: reply("start: the recording", RECORDING_INFO),
                      200: reply("stop: the recording; pause, resume: the recording state",
                                 {"anyOf": [RECORDING_INFO, RECORDING_STATE]}),
                      **errors(409)})
async def control(request: web.Request) -> web.Response:
    room = await rooms_of(request).get_room(request.match_info["room_id"])
    action = request.match_info["action"]
    if action not in ACTIONS:
        raise web.HTTPNotFound()
    data: dict[str, Any] = await json_body(request) if request.body_exists else {}
    recording = _recording(request)
    actor = _actor(request)
    if action == "start":
        reason = text_field(data, "override_reason", required=False, max_len=500)
        record = await recording.start(room.id, actor, reason)
        await audit(request, "recording.start", "recording", record.id, record.patient_ref,
                     reason=reason, outcome="done",
                     detail={"room": room.id, "override": reason is not None})
        return web.json_response(record.as_dict(), status=201)
    if action == "stop":
        record = await recording.stop(room.id, actor)
        await audit(request, "recording.stop", "recording", record.id, record.patient_ref,
                     outcome="done", detail={"room": room.id})
        return web.json_response(record.as_dict())
    await recording.pause(room.id, actor, action == "pause")
    await audit(request, f"recording.{action}", "room", room.id, room.patient_ref,
                 outcome="done")
    return web.json_response(recording.state(room.id))


@operation("A room's recordings", tag="recording",
           responses={200: reply("The recordings", listing("recordings", RECORDING_INFO))})
async def room_recordings(request: web.Request) -> web.Response:
    room = await rooms_of(request).get_room(request.match_info["room_id"])
    found = await _recording(request).db.recordings(room_id=room.id)
    await audit(request, "recording.list", "room", room.id, room.patient_ref,
                 detail={"recordings": [r.id for r in found]})
    return web.json_response({"recordings": [r.as_dict() for r in found]})


async def _get(request: web.Request) -> Any:
    found = await _recording(request).db.get_recording(request.match_info["recording_id"])
    if found is None:
        raise RoomError("recording_not_found",
                        f"no recording {request.match_info['recording_id']!r}")
    return found


@operation("A recording, its files and jobs", tag="recording",
           responses={200: reply("The recording", RECORDING_INFO)})
async def get_recording(request: web.Request) -> web.Response:
    found = await _get(request)
    await audit(request, "recording.read", "recording", found.id, found.patient_ref)
    return web.json_response(found.as_dict())


@operation("Make a recording's composite again", tag="recording",
           responses={202: reply("The composite job is queued", COMPOSITE_QUEUED),
                      **errors(409)})
async def composite_again(request: web.Request) -> web.Response:
    """Queue the composite again (say, after a layout change, or a failed run)."""
    found = await _get(request)
    if found.status in ("recording", "paused"):
        raise RoomError("recording_active", "the recording is still going: stop it first")
    job_id = await _recording(request).db.add_job(found.id, "composite")
    await audit(request, "recording.composite", "recording", found.id, found.patient_ref,
                 outcome="done", detail={"job": job_id})
    return web.json_response({"job_id": job_id, "recording_id": found.id, "status": "queued"},
                             status=202)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/rooms/{room_id}/consents", add_consent)
    app.router.add_get("/api/rooms/{room_id}/consents", list_consents)
    app.router.add_post("/api/rooms/{room_id}/recording/{action}", control)
    app.router.add_get("/api/rooms/{room_id}/recordings", room_recordings)
    app.router.add_get("/api/recordings/{recording_id}", get_recording)
    app.router.add_post("/api/recordings/{recording_id}/composite", composite_again)
