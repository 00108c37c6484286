"""REST API for hospital systems and the CLI (documented in docs/api.md).

Every ``/api/`` call carries ``Authorization: Bearer <JWT>``: an HS256 token signed with an API
key's secret (``iss`` = the key, ``aud`` = ``<audience>:api``). Errors are JSON:
``{"error": {"code": "...", "message": "..."}}``.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from huizhen.config import Settings
from media.echo import EchoBusy
from media.sdp import SdpError
from rooms.agenda import parse_items
from rooms.attendance import as_csv, attendance
from rooms.members import RoomError
from rooms.models import utcnow
from rooms.policy import PolicyError, kind_policy
from rooms.service import RoomService
from rooms.subjects import several_patients_only
from signaling.api_models import (
    ATTENDANCE,
    CREATE_ROOM,
    END_ROOM,
    EVENT,
    ROOM,
    ROOM_STATE,
    ROOM_WITH_AGENDA,
    SESSION,
    TOKEN,
    TOKEN_IN,
    listing,
)
from signaling.auth import (
    AuthError,
    ParticipantClaims,
    mint_participant_token,
    verify_api_token,
    verify_participant_token,
)
from signaling.keys import API_KEY, ECHO, ROOMS, SETTINGS, SFU
from signaling.openapi import OPENAPI_PATH, BadRequest, Param, Reply, errors, operation, reply

log = logging.getLogger("huizhen.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_STATUS = {"room_not_found": 404, "room_ended": 409, "recording_not_found": 404,
           "consent_required": 409, "recording_active": 409, "not_recording": 409,
           "encounter_not_found": 404, "one_patient": 409, "delivery_not_found": 404,
           "unknown_document": 404, "document_conflict": 409, "draining": 503,
           "admin_required": 403, "participant_not_found": 404}


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


@web.middleware
async def api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/api/"):
        return await handler(request)
    try:
        if request.path != OPENAPI_PATH:  # the description is public; everything else is not
            authenticate(request)
        return await handler(request)
    except AuthError as exc:
        return error_response(401, exc.code, exc.message)
    except (RoomError, PolicyError) as exc:
        code = exc.code
        message = exc.message if isinstance(exc, RoomError) else str(exc)
        return error_response(_STATUS.get(code, 400), code, message)
    except BadRequest as exc:
        return error_response(400, "bad_request", str(exc))
    except web.HTTPException as exc:
        if exc.status >= 400:
            answer = error_response(exc.status, "not_found" if exc.status == 404 else "http",
                                    exc.reason)
            if "Allow" in exc.headers:  # 405 names what the path takes (RFC 9110)
                answer.headers["Allow"] = exc.headers["Allow"]
            return answer
        raise


def authenticate(request: web.Request) -> None:
    """The request's API token (``Authorization: Bearer <API JWT>``) → ``request[API_KEY]``;
    AuthError if there is none or it does not verify."""
    settings: Settings = request.app[SETTINGS]
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        raise AuthError("unauthorized", "send Authorization: Bearer <API JWT> (see docs/api.md)")
    request[API_KEY] = verify_api_token(header[7:].strip(), settings.secret_for,
                                        settings.auth.audience)


async def json_body(request: web.Request) -> dict[str, Any]:
    try:  # JSON is UTF-8 (RFC 8259): a Content-Type charset the codecs do not know is no 500
        data = json.loads(await request.read())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest(f"the body must be a JSON object: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


def text_field(data: dict[str, Any], name: str, required: bool = True, max_len: int = 200
          ) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise BadRequest(f"field {name!r} is required")
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise BadRequest(f"field {name!r} must be a non-empty string of at most {max_len} "
                         "characters")
    return value.strip()


#: the years a date in a request may name
FIRST_YEAR, LAST_YEAR = 1970, 2999


def when(data: dict[str, Any], name: str) -> datetime | None:
    value = data.get(name)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise BadRequest(f"field {name!r} must be an ISO 8601 date-time") from exc
    if parsed.tzinfo is None:
        raise BadRequest(f"field {name!r} needs a time zone, e.g. 2026-11-23T09:00:00+08:00")
    if not FIRST_YEAR <= parsed.year <= LAST_YEAR:  # beyond, date arithmetic overflows
        raise BadRequest(f"field {name!r} must be a date between the years {FIRST_YEAR} and "
                         f"{LAST_YEAR}")
    return parsed


def rooms_of(request: web.Request) -> RoomService:
    service: RoomService = request.app[ROOMS]
    return service


@operation("Create a room", tag="rooms", body=CREATE_ROOM,
           example={"kind": "mdt", "title": "Tumour board", "agenda": [
               {"patient_ref": "Patient/123", "label": "Bed 12", "question": "resect?"}]},
           responses={201: reply("The room, with its agenda", ROOM_WITH_AGENDA),
                      **errors(409)})
async def create_room(request: web.Request) -> web.Response:
    data = await json_body(request)
    kind = text_field(data, "kind") or ""
    kind_policy(kind)
    start, end = when(data, "scheduled_start"), when(data, "scheduled_end")
    if start and end and end <= start:
        raise BadRequest("scheduled_end must be after scheduled_start")
    auto_record = data.get("auto_record")
    if auto_record is not None and not isinstance(auto_record, bool):
        raise BadRequest("auto_record must be true, false or absent (the room kind decides)")
    agenda = parse_items(data["agenda"]) if "agenda" in data else None
    if agenda:
        several_patients_only(kind, "an agenda")
    service = rooms_of(request)
    room = await service.create_room(
        kind=kind, title=text_field(data, "title") or "",
        patient_ref=text_field(data, "patient_ref", required=False),
        scheduled_start=start, scheduled_end=end, created_by=request[API_KEY],
        auto_record=auto_record)
    if agenda:
        await service.agenda.set(room.id, agenda, request[API_KEY])
    return web.json_response({**room.as_dict(), "agenda": await service.agenda.state(room.id)},
                             status=201)


@operation("List rooms", tag="rooms",
           params=(Param("status", "query", {"enum": ["open", "ended"]}, "only these"),),
           responses={200: reply("The rooms, newest first", listing("rooms", ROOM))})
async def list_rooms(request: web.Request) -> web.Response:
    status = request.query.get("status")
    if status not in (None, "open", "ended"):
        raise BadRequest("status must be open or ended")
    rooms = await rooms_of(request).db.list_rooms(status=status)
    return web.json_response({"rooms": [r.as_dict() for r in rooms]})


@operation("A room and who is in it now", tag="rooms",
           responses={200: reply("The room and its participants", ROOM_STATE)})
async def get_room(request: web.Request) -> web.Response:
    return web.json_response(await rooms_of(request).room_state(request.match_info["room_id"]))


@operation("Every participant's stay in a room (join to leave)", tag="rooms",
           responses={200: reply("The sessions", listing("sessions", SESSION))})
async def room_sessions(request: web.Request) -> web.Response:
    service = rooms_of(request)
    room = await service.get_room(request.match_info["room_id"])
    sessions = await service.db.sessions_for_room(room.id)
    return web.json_response({"sessions": [s.as_dict() for s in sessions]})


@operation("Who attended, when and how long", tag="rooms",
           params=(Param("format", "query", {"enum": ["json", "csv"]},
                         "json (default) or csv (a spreadsheet)"),),
           responses={200: Reply("The attendance list", {
               "application/json": ATTENDANCE, "text/csv": {"type": "string"}})})
async def room_attendance(request: web.Request) -> web.Response:
    """Who attended, when and how long (rooms/attendance.py): JSON, or ``?format=csv``."""
    service = rooms_of(request)
    room = await service.get_room(request.match_info["room_id"])
    form = request.query.get("format", "json")
    if form not in ("json", "csv"):
        raise BadRequest("format must be json or csv")
    now = utcnow()
    people = attendance(await service.db.sessions_for_room(room.id), now)
    log.info("attendance read", extra={"room": room.id, "format": form, "count": len(people)})
    if form == "csv":
        return web.Response(text=as_csv(people), content_type="text/csv", charset="utf-8",
                            headers={"Content-Disposition":
                                     f'attachment; filename="attendance-{room.id}.csv"'})
    return web.json_response({"room_id": room.id, "kind": room.kind, "status": room.status,
                              "at": now.isoformat(),
                              "attendees": [a.as_dict() for a in people]})


@operation("A room's event log", tag="rooms",
           params=(Param("after", "query", {"type": "integer", "minimum": 0,
                                             "maximum": 2**31 - 1},  # the id column's range
                         "only events after this id (paging)"),),
           responses={200: reply("The events, oldest first", listing("events", EVENT))})
async def room_events(request: web.Request) -> web.Response:
    service = rooms_of(request)
    room = await service.get_room(request.match_info["room_id"])
    try:
        after = int(request.query.get("after", "0"))
    except ValueError as exc:
        raise BadRequest("after must be an event id (integer)") from exc
    events = await service.db.events_for_room(room.id, after_id=after)
    return web.json_response({"events": [e.as_dict() for e in events]})


@operation("A participant token and join link", tag="rooms", body=TOKEN_IN,
           example={"identity": "dr-li", "name": "Dr Li", "role": "host", "ttl_s": 3600},
           responses={201: reply("The token, its link and grants", TOKEN), **errors(409)})
async def create_token(request: web.Request) -> web.Response:
    settings: Settings = request.app[SETTINGS]
    service = rooms_of(request)
    room = await service.get_room(request.match_info["room_id"])
    if room.status != "open":
        raise RoomError("room_ended", "the room has ended; create a new one")
    data = await json_body(request)
    ttl = data.get("ttl_s", settings.auth.default_token_ttl_s)
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not (
            0 < ttl <= settings.auth.max_token_ttl_s):
        raise BadRequest(f"ttl_s must be an integer between 1 and "
                         f"{settings.auth.max_token_ttl_s}")
    single_use = data.get("single_use", False)
    if not isinstance(single_use, bool):
        raise BadRequest("single_use must be true or false")
    key = request[API_KEY]
    secret = settings.secret_for(key) or ""
    token, claims = mint_participant_token(
        api_key=key, secret=secret, audience=settings.auth.audience, room_id=room.id,
        room_kind=room.kind, identity=text_field(data, "identity", max_len=128) or "",
        name=text_field(data, "name") or "", role=text_field(data, "role", max_len=32) or "",
        ttl_s=ttl, single_use=single_use,
        department=text_field(data, "department", required=False, max_len=200))
    return web.json_response({
        "token": token,
        "join_url": join_url(settings, room.id, token),
        "expires_at": claims.expires_at,
        "role": claims.role,
        "grants": claims.grants.as_dict(),
        "single_use": claims.single_use,
        "department": claims.department,
    }, status=201)


def join_url(settings: Settings, room_id: str, token: str) -> str:
    """The link a participant opens; the token sits in the fragment, never in server logs."""
    return f"{settings.base_url}/join/{room_id}#t={token}"


@operation("End a room", tag="rooms", body=END_ROOM, body_required=False,
           example={"reason": "consultation finished"},
           description="Everyone in it is told and disconnected; the recording is finished.",
           responses={200: reply("The ended room", ROOM), **errors(409)})
async def end_room(request: web.Request) -> web.Response:
    data = await json_body(request) if request.body_exists else {}
    reason = text_field(data, "reason", required=False) or "ended"
    room = await rooms_of(request).end_room(request.match_info["room_id"], reason,
                                             by=request[API_KEY])
    return web.json_response(room.as_dict())


def _check_claims(request: web.Request) -> ParticipantClaims:
    """The pre-call check is authorised by the participant's own token."""
    settings = request.app[SETTINGS]
    header = request.headers.get("Authorization", "")
    return verify_participant_token(header.removeprefix("Bearer ").strip(),
                                    settings.secret_for, settings.auth.audience)


async def precheck_servers(request: web.Request) -> web.Response:
    """The ICE servers for the pre-call check's loop: TURN credentials of its own (user
    ``check-<token id>``), expiring with the token, so the check tests the relay too."""
    try:
        claims = _check_claims(request)
    except AuthError as exc:
        return error_response(401, exc.code, exc.message)
    user = "check-" + (claims.token_id.replace(":", "-") or secrets.token_hex(6))
    servers = request.app[SFU].policy.client_ice_servers(user, claims.expires_at)
    return web.json_response({"ice_servers": servers})


async def precheck(request: web.Request) -> web.Response:
    """The pre-call check's WebRTC loop: authorised by the participant's own token."""
    try:
        claims = _check_claims(request)
    except AuthError as exc:
        return error_response(401, exc.code, exc.message)
    try:
        room = await rooms_of(request).get_room(claims.room)
        if room.status != "open":
            raise RoomError("room_ended", "this consultation has ended")
        data = await json_body(request)
        sdp = data.get("sdp")
        if not isinstance(sdp, str):
            raise BadRequest("field 'sdp' (the offer) is required")
        answer = await request.app[ECHO].answer(sdp)
    except (RoomError, BadRequest, SdpError) as exc:
        code = getattr(exc, "code", "bad_sdp" if isinstance(exc, SdpError) else "bad_request")
        return error_response(_STATUS.get(code, 400), code, str(exc))
    except EchoBusy as exc:
        return error_response(503, "busy", str(exc))
    return web.json_response({"sdp": answer})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    service = rooms_of(request)
    db_ok = await service.db.ping()
    if service.draining:  # a load balancer sends nobody new here (signaling/drain.py)
        return web.json_response({"status": "draining", "checks": {"database": db_ok,
                                                                   "draining": True}},
                                 status=503)
    body = {"status": "ready" if db_ok else "not_ready", "checks": {"database": db_ok}}
    return web.json_response(body, status=200 if db_ok else 503)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/precheck", precheck_servers)
    app.router.add_post("/precheck", precheck)
    app.router.add_post("/api/rooms", create_room)
    app.router.add_get("/api/rooms", list_rooms)
    app.router.add_get("/api/rooms/{room_id}", get_room)
    app.router.add_get("/api/rooms/{room_id}/sessions", room_sessions)
    app.router.add_get("/api/rooms/{room_id}/events", room_events)
    app.router.add_get("/api/rooms/{room_id}/attendance", room_attendance)
    app.router.add_post("/api/rooms/{room_id}/tokens", create_token)
    app.router.add_post("/api/rooms/{room_id}/end", end_room)
