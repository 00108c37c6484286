"""The REST API against a real server on 127.0.0.1: auth, rooms, tokens, ending, history."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import jwt
import pytest

from rooms.policy import grants_for
from sdk.participant import JoinRefused, Participant
from signaling.auth import LEEWAY_S, mint_api_token
from tests.harness import LOOPBACK, Server, sign, unsigned, wait_for, with_claims

OTHER_SECRET = "not-the-server-secret-but-long-enough-0123456789"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api_payload(server: Server, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    payload: dict[str, Any] = {"iss": server.settings.primary_key.key,
                               "aud": server.settings.auth.audience + ":api",
                               "iat": now, "nbf": now - LEEWAY_S, "exp": now + 300}
    return with_claims(payload, changes)


# ---- authentication ----------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": ""},
    {"Authorization": "Basic dXNlcjpwYXNz"},
    {"Authorization": "bearer-less"},
    {"Authorization": "Token abc"},
])
async def test_no_bearer_token_is_unauthorized(server: Server, headers: dict[str, str]) -> None:
    for method, path in [("GET", "/api/rooms"), ("POST", "/api/rooms"),
                         ("GET", "/api/rooms/r_x"), ("POST", "/api/rooms/r_x/tokens"),
                         ("POST", "/api/rooms/r_x/end")]:
        status, body = await server.api(method, path, {"kind": "mdt", "title": "x"},
                                        headers=headers)
        assert status == 401, (method, path, body)
        assert body["error"]["code"] == "unauthorized"
        assert "Bearer" in body["error"]["message"]


BAD_API_TOKENS: dict[str, tuple[Any, str]] = {
    "garbage": (lambda s: "garbage", "token_malformed"),
    # "Bearer " with nothing after it: the header arrives as "Bearer", i.e. no bearer token
    "empty": (lambda s: "", "unauthorized"),
    "forged": (lambda s: sign(s, api_payload(s), OTHER_SECRET), "token_signature"),
    "expired": (lambda s: sign(s, api_payload(s, iat=int(time.time()) - 600,
                                                nbf=int(time.time()) - 600,
                                                exp=int(time.time()) - 60)), "token_expired"),
    "not-yet-valid": (lambda s: sign(s, api_payload(s, nbf=int(time.time()) + 600,
                                                      exp=int(time.time()) + 900)),
                      "token_not_yet_valid"),
    "unknown-key": (lambda s: sign(s, api_payload(s, iss="someone-else")),
                    "token_unknown_key"),
    "alg-none": (lambda s: unsigned(api_payload(s)), "token_algorithm"),
    "participant-audience": (lambda s: sign(s, api_payload(s, aud=s.settings.auth.audience)),
                             "token_audience"),
    "other-audience": (lambda s: sign(s, api_payload(s, aud="pacs:api")), "token_audience"),
    "no-exp": (lambda s: sign(s, api_payload(s, exp=None)), "token_claims"),
}


@pytest.mark.parametrize("case", sorted(BAD_API_TOKENS))
async def test_bad_api_token_is_401_with_its_code(server: Server, case: str) -> None:
    make, code = BAD_API_TOKENS[case]
    status, body = await server.api("GET", "/api/rooms", headers=bearer(make(server)))
    assert status == 401, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]


async def test_participant_token_cannot_call_the_api(server: Server) -> None:
    room = await server.create_room("mdt")
    participant_token = await server.token(room, "dr-sun", "host")
    status, body = await server.api("GET", f"/api/rooms/{room}",
                                    headers=bearer(participant_token))
    assert status == 401
    assert body["error"]["code"] == "token_audience"
    status, body = await server.api("POST", f"/api/rooms/{room}/end",
                                    headers=bearer(participant_token))
    assert status == 401
    # and the room is untouched
    status, body = await server.api("GET", f"/api/rooms/{room}")
    assert body["status"] == "open"


async def test_valid_api_token_from_mint_api_token(server: Server) -> None:
    key = server.settings.primary_key
    token = mint_api_token(key.key, key.secret, server.settings.auth.audience, ttl_s=30)
    status, body = await server.api("GET", "/api/rooms", headers=bearer(token))
    assert status == 200, body
    assert body == {"rooms": []}


async def test_health_endpoints_need_no_token(server: Server) -> None:
    status, body = await server.api("GET", "/healthz", headers={})
    assert (status, body) == (200, {"status": "ok"})
    status, body = await server.api("GET", "/readyz", headers={})
    assert status == 200
    assert body == {"status": "ready", "checks": {"database": True}}


async def test_unknown_api_path_is_404_json(server: Server) -> None:
    status, body = await server.api("GET", "/api/nothing-here")
    assert status == 404
    assert body["error"]["code"] == "not_found"


# ---- rooms -------------------------------------------------------------------------------------

async def test_create_room_with_every_field(server: Server) -> None:
    before = datetime.now(UTC)
    status, room = await server.api("POST", "/api/rooms", {
        "kind": "clinic", "title": "  Follow-up: post-op knee  ", "patient_ref": "MRN-0042",
        "scheduled_start": "2026-11-23T09:00:00+08:00",
        "scheduled_end": "2026-11-23T09:30:00+08:00"})
    assert status == 201, room
    assert room["id"].startswith("r_")
    assert room["kind"] == "clinic"
    assert room["title"] == "Follow-up: post-op knee"
    assert room["patient_ref"] == "MRN-0042"
    assert room["status"] == "open"
    assert room["ended_at"] is None and room["end_reason"] is None
    assert room["created_by"] == server.settings.primary_key.key
    created = datetime.fromisoformat(room["created_at"])
    assert created.tzinfo is not None
    assert before - timedelta(seconds=2) <= created <= datetime.now(UTC) + timedelta(seconds=2)
    china = timezone(timedelta(hours=8))
    start = datetime(2026, 11, 23, 9, 0, tzinfo=china)
    end = datetime(2026, 11, 23, 9, 30, tzinfo=china)
    assert datetime.fromisoformat(room["scheduled_start"]) == start
    assert datetime.fromisoformat(room["scheduled_end"]) == end

    # what was stored reads back as the same instants, with a zone
    status, stored = await server.api("GET", f"/api/rooms/{room['id']}")
    assert status == 200, stored
    for key in ("id", "kind", "title", "patient_ref", "status", "created_by"):
        assert stored[key] == room[key], key
    for key, expected in (("scheduled_start", start), ("scheduled_end", end),
                          ("created_at", created)):
        value = datetime.fromisoformat(stored[key])
        assert value.tzinfo is not None, key
        assert value == expected, key
    assert stored["participants"] == []


async def test_create_room_minimal(server: Server) -> None:
    status, room = await server.api("POST", "/api/rooms", {"kind": "mdt", "title": "Tumour"})
    assert status == 201, room
    assert room["patient_ref"] is None
    assert room["scheduled_start"] is None and room["scheduled_end"] is None


@pytest.mark.parametrize("kind", ["clinic", "joint_clinic", "ward_round", "mdt", "broadcast"])
async def test_every_kind_can_be_created(server: Server, kind: str) -> None:
    status, room = await server.api("POST", "/api/rooms", {"kind": kind, "title": kind})
    assert status == 201, room
    assert room["kind"] == kind


@pytest.mark.parametrize(("body", "code", "needle"), [
    ({"kind": "surgery", "title": "x"}, "unknown_room_kind", "surgery"),
    ({"kind": "Clinic", "title": "x"}, "unknown_room_kind", "Clinic"),
    ({"title": "x"}, "bad_request", "kind"),
    ({"kind": "clinic"}, "bad_request", "title"),
    ({"kind": "clinic", "title": ""}, "bad_request", "title"),
    ({"kind": "clinic", "title": "   "}, "bad_request", "title"),
    ({"kind": "clinic", "title": 42}, "bad_request", "title"),
    ({"kind": "clinic", "title": "x" * 201}, "bad_request", "title"),
    ({"kind": "clinic", "title": "x", "patient_ref": ""}, "bad_request", "patient_ref"),
    ({"kind": "clinic", "title": "x", "scheduled_start": "2026-11-23T09:00:00"},
     "bad_request", "time zone"),
    ({"kind": "clinic", "title": "x", "scheduled_end": "2026-11-23"}, "bad_request",
     "time zone"),
    ({"kind": "clinic", "title": "x", "scheduled_start": "next tuesday"}, "bad_request",
     "scheduled_start"),
    ({"kind": "clinic", "title": "x", "scheduled_start": "2026-11-23T10:00:00+08:00",
      "scheduled_end": "2026-11-23T09:00:00+08:00"}, "bad_request", "scheduled_end"),
    ({"kind": "clinic", "title": "x", "scheduled_start": "2026-11-23T10:00:00+08:00",
      "scheduled_end": "2026-11-23T10:00:00+08:00"}, "bad_request", "scheduled_end"),
    # zones are compared as instants: 10:00+08:00 is 02:00Z, so 01:30Z is before it
    ({"kind": "clinic", "title": "x", "scheduled_start": "2026-11-23T10:00:00+08:00",
      "scheduled_end": "2026-11-23T01:30:00Z"}, "bad_request", "scheduled_end"),
])
async def test_create_room_refusals(server: Server, body: dict[str, Any], code: str,
                                    needle: str) -> None:
    status, reply = await server.api("POST", "/api/rooms", body)
    assert status == 400, reply
    assert reply["error"]["code"] == code, reply
    assert needle in reply["error"]["message"], reply
    status, listing = await server.api("GET", "/api/rooms")
    assert listing["rooms"] == []


async def test_end_in_another_zone_but_after_start_is_accepted(server: Server) -> None:
    status, room = await server.api("POST", "/api/rooms", {
        "kind": "clinic", "title": "x", "scheduled_start": "2026-11-23T10:00:00+08:00",
        "scheduled_end": "2026-11-23T02:30:00Z"})
    assert status == 201, room


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'"a string"', b""])
async def test_create_room_body_must_be_a_json_object(server: Server, raw: bytes) -> None:
    assert server.http is not None
    async with server.http.post(server.url + "/api/rooms", data=raw, headers={
            **server.api_headers(), "Content-Type": "application/json"}) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert body["error"]["code"] == "bad_request"


async def test_list_rooms_with_status_filter(server: Server) -> None:
    first = await server.create_room("mdt", "first")
    second = await server.create_room("clinic", "second")
    third = await server.create_room("broadcast", "third")
    status, _ = await server.api("POST", f"/api/rooms/{second}/end")
    assert status == 200

    status, body = await server.api("GET", "/api/rooms")
    assert status == 200
    assert {r["id"] for r in body["rooms"]} == {first, second, third}
    status, body = await server.api("GET", "/api/rooms?status=open")
    assert status == 200
    assert {r["id"] for r in body["rooms"]} == {first, third}
    assert all(r["status"] == "open" for r in body["rooms"])
    status, body = await server.api("GET", "/api/rooms?status=ended")
    assert status == 200
    assert [r["id"] for r in body["rooms"]] == [second]
    assert body["rooms"][0]["status"] == "ended"
    status, body = await server.api("GET", "/api/rooms?status=closed")
    assert status == 400
    assert body["error"]["code"] == "bad_request"


async def test_get_unknown_room_is_404(server: Server) -> None:
    for method, path, data in [("GET", "/api/rooms/r_nope", None),
                               ("GET", "/api/rooms/r_nope/sessions", None),
                               ("GET", "/api/rooms/r_nope/events", None),
                               ("POST", "/api/rooms/r_nope/end", None),
                               ("POST", "/api/rooms/r_nope/tokens",
                                {"identity": "a", "name": "A", "role": "host"})]:
        status, body = await server.api(method, path, data)
        assert status == 404, (method, path, body)
        assert body["error"]["code"] == "room_not_found"
        assert "r_nope" in body["error"]["message"]


# ---- tokens ------------------------------------------------------------------------------------

async def test_token_response(server: Server) -> None:
    room = await server.create_room("clinic")
    before = int(time.time())
    status, body = await server.api("POST", f"/api/rooms/{room}/tokens", {
        "identity": "patient-0042", "name": "Li Hua", "role": "patient", "ttl_s": 1800})
    assert status == 201, body
    token = body["token"]
    assert body["join_url"] == f"{server.url}/join/{room}#t={token}"
    assert body["join_url"].startswith("http://127.0.0.1:")
    assert body["role"] == "patient"
    assert body["grants"] == grants_for("clinic", "patient").as_dict()
    assert before + 1800 <= body["expires_at"] <= int(time.time()) + 1800
    claims = jwt.decode(token, server.settings.primary_key.secret, algorithms=["HS256"],
                        audience=server.settings.auth.audience)
    assert claims["room"] == room
    assert claims["sub"] == "patient-0042"
    assert claims["name"] == "Li Hua"
    assert claims["role"] == "patient"
    assert claims["iss"] == server.settings.primary_key.key
    assert claims["exp"] == body["expires_at"]


async def test_token_default_ttl(server: Server) -> None:
    room = await server.create_room("mdt")
    before = int(time.time())
    status, body = await server.api("POST", f"/api/rooms/{room}/tokens", {
        "identity": "a", "name": "A", "role": "viewer"})
    assert status == 201, body
    ttl = server.settings.auth.default_token_ttl_s
    assert before + ttl <= body["expires_at"] <= int(time.time()) + ttl


async def test_join_url_uses_the_public_url(server: Server) -> None:
    local = server.url
    room = await server.create_room("mdt")
    # links point at the public address (behind a proxy), not at where the server listens
    server.settings.server.public_url = "https://video.example.org"
    assert server.http is not None
    async with server.http.post(f"{local}/api/rooms/{room}/tokens", headers=server.api_headers(),
                                json={"identity": "a", "name": "A", "role": "host"}) as resp:
        assert resp.status == 201
        body = await resp.json()
    assert body["join_url"] == f"https://video.example.org/join/{room}#t={body['token']}"


@pytest.mark.parametrize(("kind", "role", "code"), [
    ("clinic", "viewer", "role_not_allowed"),
    ("clinic", "specialist", "role_not_allowed"),
    ("ward_round", "patient", "role_not_allowed"),
    ("broadcast", "patient", "role_not_allowed"),
    ("clinic", "janitor", "unknown_role"),
    ("mdt", "Host", "unknown_role"),
])
async def test_token_for_a_role_the_kind_refuses(server: Server, kind: str, role: str,
                                                 code: str) -> None:
    room = await server.create_room(kind)
    status, body = await server.api("POST", f"/api/rooms/{room}/tokens", {
        "identity": "x", "name": "X", "role": role})
    assert status == 400, body
    assert body["error"]["code"] == code
    assert role in body["error"]["message"]


@pytest.mark.parametrize("ttl", [0, -1, "600", 1.5, True, None, 7 * 24 * 3600 + 1, 10 ** 12])
async def test_bad_ttl(server: Server, ttl: Any) -> None:
    room = await server.create_room("mdt")
    status, body = await server.api("POST", f"/api/rooms/{room}/tokens", {
        "identity": "x", "name": "X", "role": "host", "ttl_s": ttl})
    assert status == 400, (ttl, body)
    assert body["error"]["code"] == "bad_request"
    assert "ttl_s" in body["error"]["message"]


async def test_longest_ttl_is_accepted(server: Server) -> None:
    room = await server.create_room("mdt")
    status, body = await server.api("POST", f"/api/rooms/{room}/tokens", {
        "identity": "x", "name": "X", "role": "host",
        "ttl_s": server.settings.auth.max_token_ttl_s})
    assert status == 201, body


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "X", "role": "host"}, "identity"),
    ({"identity": "x", "role": "host"}, "name"),
    ({"identity": "x", "name": "X"}, "role"),
    ({"identity": "", "name": "X", "role": "host"}, "identity"),
    ({"identity": "x" * 129, "name": "X", "role": "host"}, "identity"),
    ({"identity": ["x"], "name": "X", "role": "host"}, "identity"),
])
async def test_token_request_fields(server: Server, body: dict[str, Any], field: str) -> None:
    room = await server.create_room("mdt")
    status, reply = await server.api("POST", f"/api/rooms/{room}/tokens", body)
    assert status == 400, reply
    assert reply["error"]["code"] == "bad_request"
    assert field in reply["error"]["message"]


# ---- live state, ending, history ------------------------------------------------------------

async def test_room_lists_live_participants_and_their_tracks(server: Server) -> None:
    room = await server.create_room("mdt")
    presenter = await server.participant(room, "dr-chen", "presenter")
    watcher = await server.participant(room, "student-1", "viewer")
    try:
        reply = await presenter.publish(tag=3)
        track_ids = {t["track_id"] for t in reply["tracks"]}

        status, body = await server.api("GET", f"/api/rooms/{room}")
        assert status == 200, body
        assert body["id"] == room and body["status"] == "open"
        people = {p["id"]: p for p in body["participants"]}
        assert set(people) == {presenter.id, watcher.id}
        mine = people[presenter.id]
        assert mine["identity"] == "dr-chen"
        assert mine["role"] == "presenter"
        assert mine["grants"] == grants_for("mdt", "presenter").as_dict()
        assert mine["state"] == "active"
        assert {t["id"] for t in mine["tracks"]} == track_ids
        assert {t["kind"] for t in mine["tracks"]} == {"audio", "video"}
        assert {(t["kind"], t["source"]) for t in mine["tracks"]} == {
            ("audio", "microphone"), ("video", "camera")}
        for track in mine["tracks"]:
            assert track["participant_id"] == presenter.id
            assert track["muted"] is False
        video = next(t for t in mine["tracks"] if t["kind"] == "video")
        assert video["codec"] == "VP8"
        assert people[watcher.id]["tracks"] == []
        assert people[watcher.id]["role"] == "viewer"

        # mute shows up in the room state
        audio = next(t for t in mine["tracks"] if t["kind"] == "audio")
        await presenter.mute(audio["id"], True)

        async def muted() -> bool:
            _, state = await server.api("GET", f"/api/rooms/{room}")
            tracks = {t["id"]: t for p in state["participants"] for t in p["tracks"]}
            return bool(tracks[audio["id"]]["muted"])

        assert await wait_for(muted)
    finally:
        await presenter.leave()
        await watcher.leave()

    status, body = await server.api("GET", f"/api/rooms/{room}")
    assert body["participants"] == []


async def test_end_room(server: Server) -> None:
    room = await server.create_room("clinic")
    token_before_end = await server.token(room, "patient-1", "patient")
    doctor = await server.participant(room, "dr-li", "doctor")
    nurse = await server.participant(room, "nurse-wu", "nurse")
    try:
        status, ended = await server.api("POST", f"/api/rooms/{room}/end",
                                         {"reason": "consultation finished"})
        assert status == 200, ended
        assert ended["id"] == room
        assert ended["status"] == "ended"
        assert ended["end_reason"] == "consultation finished"
        assert ended["ended_at"] is not None
        assert datetime.fromisoformat(ended["ended_at"]) <= datetime.now(UTC)

        # everyone connected is told, then disconnected by the server (4010)
        for p in (doctor, nurse):
            await asyncio.wait_for(p.closed.wait(), 5)
            assert {"type": "room_ended", "reason": "consultation finished"} in p.events
            assert p._ws is not None and p._ws.close_code == 4010

        status, state = await server.api("GET", f"/api/rooms/{room}")
        assert state["status"] == "ended"
        assert state["participants"] == []

        status, body = await server.api("POST", f"/api/rooms/{room}/tokens", {
            "identity": "late", "name": "Late", "role": "nurse"})
        assert status == 409, body
        assert body["error"]["code"] == "room_ended"
        status, body = await server.api("POST", f"/api/rooms/{room}/end")
        assert status == 409
        assert body["error"]["code"] == "room_ended"

        # a token issued before the end no longer opens the room
        late = Participant(server.url, room, token_before_end, ice=LOOPBACK)
        with pytest.raises(JoinRefused) as info:
            await late.join()
        assert info.value.code == "room_ended"

        status, body = await server.api("GET", f"/api/rooms/{room}/sessions")
        assert {s["leave_reason"] for s in body["sessions"]} == {"room_ended"}
    finally:
        await doctor.close()
        await nurse.close()


async def test_end_room_without_a_body_uses_the_default_reason(server: Server) -> None:
    room = await server.create_room("mdt")
    status, ended = await server.api("POST", f"/api/rooms/{room}/end")
    assert status == 200, ended
    assert ended["status"] == "ended"
    assert ended["end_reason"] == "ended"


async def test_sessions_and_events_record_the_history(server: Server) -> None:
    room = await server.create_room("mdt")
    token = await server.token(room, "dr-ma", "host")
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    host = Participant(server.url, room, token, ice=LOOPBACK)
    await host.join()
    guest = await server.participant(room, "dr-he", "specialist")
    await guest.publish(audio=True, video=False)
    await host.leave()
    await guest.close()  # a closed tab: no goodbye

    async def both_ended() -> bool:
        _, body = await server.api("GET", f"/api/rooms/{room}/sessions")
        return len(body["sessions"]) == 2 and all(s["left_at"] for s in body["sessions"])

    assert await wait_for(both_ended)
    status, body = await server.api("GET", f"/api/rooms/{room}/sessions")
    assert status == 200
    sessions = {s["identity"]: s for s in body["sessions"]}
    assert set(sessions) == {"dr-ma", "dr-he"}
    assert sessions["dr-ma"]["id"] == host.id
    assert sessions["dr-ma"]["role"] == "host"
    assert sessions["dr-ma"]["leave_reason"] == "left"
    assert sessions["dr-ma"]["token_id"] == jti
    assert sessions["dr-he"]["id"] == guest.id
    assert sessions["dr-he"]["leave_reason"] == "disconnected"
    for s in sessions.values():
        assert s["room_id"] == room
        assert datetime.fromisoformat(s["joined_at"]) <= datetime.fromisoformat(s["left_at"])

    status, body = await server.api("GET", f"/api/rooms/{room}/events")
    assert status == 200
    events = body["events"]
    summary = [(e["type"], e["participant_id"]) for e in events]
    assert summary[0] == ("room_created", None)
    assert summary.index(("participant_joined", host.id)) < summary.index(
        ("participant_joined", guest.id))
    assert summary.index(("participant_joined", guest.id)) < summary.index(
        ("track_published", guest.id))
    assert summary.index(("participant_joined", host.id)) < summary.index(
        ("participant_left", host.id))
    assert summary.index(("participant_left", host.id)) < summary.index(
        ("participant_left", guest.id))
    by_type = {(e["type"], e["participant_id"]): e for e in events}
    assert by_type[("participant_joined", host.id)]["data"] == {"identity": "dr-ma",
                                                                "role": "host",
                                                                "state": "active"}
    assert by_type[("participant_left", host.id)]["data"] == {"identity": "dr-ma",
                                                              "role": "host", "reason": "left"}
    assert by_type[("participant_left", guest.id)]["data"] == {
        "identity": "dr-he", "role": "specialist", "reason": "disconnected"}
    assert by_type[("track_published", guest.id)]["data"]["kind"] == "audio"
    assert by_type[("room_created", None)]["data"]["kind"] == "mdt"
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(e["room_id"] == room for e in events)

    # paging with ?after=
    status, later = await server.api("GET", f"/api/rooms/{room}/events?after={ids[1]}")
    assert status == 200
    assert [e["id"] for e in later["events"]] == ids[2:]
    status, body = await server.api("GET", f"/api/rooms/{room}/events?after=soon")
    assert status == 400
    assert body["error"]["code"] == "bad_request"


async def test_history_is_per_room(server: Server) -> None:
    room_a = await server.create_room("mdt")
    room_b = await server.create_room("mdt")
    p = await server.participant(room_a, "dr-a")
    await p.leave()
    _, body = await server.api("GET", f"/api/rooms/{room_b}/sessions")
    assert body["sessions"] == []
    _, body = await server.api("GET", f"/api/rooms/{room_b}/events")
    assert [e["type"] for e in body["events"]] == ["room_created"]
