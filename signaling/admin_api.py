"""The admin API (docs/api.md, "Admin API"): for the people who run the service, with a key that
has ``admin: true`` (``auth.api_keys``); any other key gets ``403 admin_required``.

* ``GET  /api/admin/node``: this node's load (CPU, event-loop lag, rooms, participants) and
  whether it drains;
* ``GET  /api/admin/rooms``: the rooms live on this node and who is in each;
* ``POST /api/admin/rooms/{room_id}/participants/{participant_id}/kick``: remove someone (as a
  moderator's removal: the identity may not come back into the room);
* ``POST /api/admin/rooms/{room_id}/end``: end a room for everyone;
* ``POST /api/admin/drain``: drain this node, then it exits (signaling/drain.py; ``huizhen
  drain`` calls this).
"""

from __future__ import annotations

import logging

from aiohttp import web

from huizhen.config import Settings
from observability.http import METRICS
from rooms.members import RoomError
from signaling.api import json_body, rooms_of, text_field
from signaling.api_models import (
    BOOL,
    END_ROOM,
    INT,
    PARTICIPANT,
    ROOM,
    STR,
    array,
    listing,
    nullable,
    obj,
)
from signaling.keys import API_KEY, DRAIN, NODE, RECORDING, SETTINGS
from signaling.openapi import Schema, errors, operation, reply

log = logging.getLogger("huizhen.admin")

NUMBER: Schema = {"type": "number"}
DRAIN_STATE = obj({"started_at": NUMBER, "by": STR, "timeout_s": NUMBER, "clients_told": INT,
                   "recordings_stopped": INT, "timed_out": BOOL,
                   "finished_at": {"type": ["number", "null"]},
                   "phase": {"enum": ["stopping_recordings", "telling_clients",
                                      "waiting_for_rooms", "drained"]}})
NODE_LOAD = obj({
    "pid": INT, "uptime_s": NUMBER, "cpu_percent": NUMBER, "cpu_count": INT,
    "load_average": array(NUMBER), "rooms": INT, "participants": INT, "draining": BOOL,
    "event_loop_lag_ms": obj({"last": NUMBER, "max_15s": NUMBER}),
    "drain": nullable(DRAIN_STATE)})
LIVE_ROOM = {**ROOM, "required": [*ROOM["required"], "participants", "recording"],
             "properties": {**ROOM["properties"], "participants": array(PARTICIPANT),
                            "recording": STR}}
KICKED = obj({"room_id": STR, "participant": PARTICIPANT})
DRAINING = obj({"drain": DRAIN_STATE})


def require_admin(request: web.Request) -> str:
    """The caller's API key if it is an admin key; else ``403 admin_required``."""
    settings: Settings = request.app[SETTINGS]
    key = request[API_KEY]
    if not settings.is_admin(key):
        log.info("admin call refused", extra={"api_key": key, "path": request.path})
        raise RoomError("admin_required", f"API key {key!r} is not an admin key: the admin API "
                        "needs a key configured with \"admin\": true in auth.api_keys")
    return key


@operation("This node's load and drain state (admin key)", tag="admin",
           responses={200: reply("CPU, event-loop lag, rooms and participants here",
                                 NODE_LOAD), **errors(403)})
async def node_load(request: web.Request) -> web.Response:
    require_admin(request)
    return web.json_response(request.app[NODE].snapshot(request.app[DRAIN].status(),
                                                        request.app[METRICS].sampler))


@operation("The rooms live on this node, with who is in each (admin key)", tag="admin",
           responses={200: reply("Rooms with at least one participant connected here",
                                 listing("rooms", LIVE_ROOM)), **errors(403)})
async def live_rooms(request: web.Request) -> web.Response:
    require_admin(request)
    service = rooms_of(request)
    recordings = request.app[RECORDING]
    out = []
    for room_id in sorted(service.members):
        members = service.members.get(room_id) or {}
        room = await service.db.get_room(room_id)
        if room is None or not members:
            continue
        out.append({**room.as_dict(), "recording": recordings.state(room_id)["state"],
                    "participants": [m.info.as_dict() for m in members.values()]})
    return web.json_response({"rooms": out})


@operation("Remove a participant from a room (admin key)", tag="admin",
           description="As a moderator's removal: the participant is told `removed`, its "
                       "socket closes with 4003, and its identity may not join this room "
                       "again.",
           responses={200: reply("Who was removed", KICKED), **errors(403)})
async def kick(request: web.Request) -> web.Response:
    key = require_admin(request)
    room_id = request.match_info["room_id"]
    await rooms_of(request).get_room(room_id)  # 404 room_not_found first
    member = await rooms_of(request).moderation.kick(
        room_id, request.match_info["participant_id"], f"admin:{key}")
    log.info("participant removed by an admin", extra={"room": room_id,
                                                        "participant": member.id})
    return web.json_response({"room_id": room_id, "participant": member.info.as_dict()})


@operation("End a room for everyone (admin key)", tag="admin", body=END_ROOM,
           body_required=False,
           responses={200: reply("The ended room", ROOM), **errors(403, 409)})
async def end_room(request: web.Request) -> web.Response:
    key = require_admin(request)
    # body_exists, not can_read_body: the declaration's check has read the body already
    data = await json_body(request) if request.body_exists else {}
    reason = text_field(data, "reason", required=False) or "ended_by_admin"
    room = await rooms_of(request).end_room(request.match_info["room_id"], reason,
                                             by=f"admin:{key}")
    return web.json_response(room.as_dict())


@operation("Drain this node, then it exits (admin key)", tag="admin",
           description="New rooms and joins are refused with `draining`, `/readyz` answers "
                       "503, recordings are finished, connected clients are told to reconnect "
                       "(close 1012 after a `reconnect` message), and the node exits when its "
                       "rooms are empty or after `server.drain_timeout_s`. Calling it again "
                       "reports how far the drain is.",
           responses={202: reply("The drain, started (or already under way)", DRAINING),
                      **errors(403)})
async def drain(request: web.Request) -> web.Response:
    key = require_admin(request)
    state = request.app[DRAIN].begin(by=f"admin:{key}")
    return web.json_response({"drain": state}, status=202)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/admin/node", node_load)
    app.router.add_get("/api/admin/rooms", live_rooms)
    app.router.add_post("/api/admin/rooms/{room_id}/participants/{participant_id}/kick", kick)
    app.router.add_post("/api/admin/rooms/{room_id}/end", end_room)
    app.router.add_post("/api/admin/drain", drain)
