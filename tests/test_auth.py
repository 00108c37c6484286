"""Participant tokens: every refusal has its own code, and a refused join closes the socket.

The end-to-end cases join a real server over 127.0.0.1 with tokens built by hand (pyjwt, or
bytes for headers pyjwt will not write); the unit cases exercise signaling/auth.py directly.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from rooms.policy import Grants, PolicyError, grants_for
from sdk.participant import JoinRefused, Participant
from signaling.auth import (
    API_AUDIENCE_SUFFIX,
    LEEWAY_S,
    MAX_API_TOKEN_TTL_S,
    AuthError,
    ParticipantClaims,
    check_role_for_room,
    mint_api_token,
    mint_participant_token,
    verify_api_token,
    verify_participant_token,
)
from tests.harness import LOOPBACK, Server, running_server, sign, with_claims

CLOSE_TOKEN = 4001
CLOSE_ROOM = 4004
OTHER_SECRET = "an-entirely-different-secret-of-decent-length-0123456789"


# ---- building tokens by hand -----------------------------------------------------------------

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def craft(header: dict[str, Any], payload: Any, secret: str | None,
          digest: Callable[..., Any] = hashlib.sha256) -> str:
    """header.payload.signature; ``secret=None`` leaves the signature empty (``alg: none``)."""
    signing_input = (b64url(json.dumps(header).encode()) + "."
                     + b64url(json.dumps(payload).encode()))
    signature = "" if secret is None else b64url(
        hmac.new(secret.encode(), signing_input.encode(), digest).digest())
    return signing_input + "." + signature


def payload_for(server: Server, room_id: str, kind: str = "mdt", as_role: str = "specialist",
                identity: str = "dr-wang", **changes: Any) -> dict[str, Any]:
    """A valid payload for ``as_role`` in a ``kind`` room; ``changes`` replace claims, and a
    value of None drops the claim."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": server.settings.primary_key.key,
        "sub": identity,
        "aud": server.settings.auth.audience,
        "room": room_id,
        "name": identity.title(),
        "role": as_role,
        "grants": grants_for(kind, as_role).as_dict(),
        "iat": now,
        "nbf": now - LEEWAY_S,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    return with_claims(payload, changes)


# ---- joining -----------------------------------------------------------------------------------

class KeepOpen(Participant):
    """A participant that does not close its own socket when the join is refused, so that the
    ``closed`` event can only come from the server closing it."""

    async def close(self) -> None:
        pass

    async def really_close(self) -> None:
        await Participant.close(self)


async def refused(server: Server, room: str, token: str) -> tuple[JoinRefused, int | None]:
    """Join, expect a refusal; wait for the server to close the socket; return (error, code)."""
    p = KeepOpen(server.url, room, token, ice=LOOPBACK)
    try:
        try:
            reply = await p.join(timeout=10)
        except JoinRefused as exc:
            error = exc
        else:
            pytest.fail(f"the join was accepted: me={reply['me']}")
        try:
            await asyncio.wait_for(p.closed.wait(), 5)
        except TimeoutError:
            pytest.fail(f"the server did not close the socket after refusing the join "
                        f"({error.code}: {error.message})")
        assert p._ws is not None
        return error, p._ws.close_code
    finally:
        await p.really_close()


async def joins(server: Server, room: str, token: str) -> Participant:
    p = Participant(server.url, room, token, ice=LOOPBACK)
    await p.join()
    return p


#: (server, room, other room) -> (room in the WebSocket URL, token)
TokenCase = Callable[[Server, str, str], tuple[str, str]]


def _same_room(make: Callable[[Server, str], str]) -> TokenCase:
    return lambda server, room, other: (room, make(server, room))


CASES: dict[str, tuple[TokenCase, str]] = {
    "forged": (_same_room(lambda s, r: sign(s, payload_for(s, r), OTHER_SECRET)),
               "token_signature"),
    "signed-with-another-configured-name": (
        _same_room(lambda s, r: craft({"alg": "HS256", "typ": "JWT"}, payload_for(s, r),
                                      s.settings.primary_key.secret + "x")),
        "token_signature"),
    "expired": (_same_room(lambda s, r: sign(s, payload_for(
        s, r, iat=int(time.time()) - 3600, nbf=int(time.time()) - 3600,
        exp=int(time.time()) - 60))), "token_expired"),
    "nbf-in-the-future": (_same_room(lambda s, r: sign(s, payload_for(
        s, r, nbf=int(time.time()) + 600, exp=int(time.time()) + 1200))),
        "token_not_yet_valid"),
    "iat-in-the-future": (_same_room(lambda s, r: sign(s, payload_for(
        s, r, iat=int(time.time()) + 600, nbf=None, exp=int(time.time()) + 1200))),
        "token_not_yet_valid"),
    "alg-none": (_same_room(lambda s, r: craft({"alg": "none", "typ": "JWT"},
                                               payload_for(s, r), None)), "token_algorithm"),
    "alg-None-capitalised": (_same_room(lambda s, r: craft({"alg": "None", "typ": "JWT"},
                                                           payload_for(s, r), None)),
                             "token_algorithm"),
    "alg-none-with-a-valid-hs256-signature": (
        _same_room(lambda s, r: craft({"alg": "none", "typ": "JWT"}, payload_for(s, r),
                                      s.settings.primary_key.secret)), "token_algorithm"),
    "hs512": (_same_room(lambda s, r: craft({"alg": "HS512", "typ": "JWT"}, payload_for(s, r),
                                            s.settings.primary_key.secret, hashlib.sha512)),
              "token_algorithm"),
    "rs256-header": (_same_room(lambda s, r: craft({"alg": "RS256", "typ": "JWT"},
                                                   payload_for(s, r),
                                                   s.settings.primary_key.secret)),
                     "token_algorithm"),
    "no-alg": (_same_room(lambda s, r: craft({"typ": "JWT"}, payload_for(s, r),
                                             s.settings.primary_key.secret)),
               "token_algorithm"),
    "wrong-room": (lambda s, room, other: (other, sign(s, payload_for(s, room))),
                   "token_wrong_room"),
    "wrong-audience": (_same_room(lambda s, r: sign(s, payload_for(s, r, aud="pacs"))),
                       "token_audience"),
    "api-token-as-participant-token": (
        _same_room(lambda s, r: sign(s, payload_for(
            s, r, aud=s.settings.auth.audience + API_AUDIENCE_SUFFIX))), "token_audience"),
    "unknown-key-id": (_same_room(lambda s, r: sign(s, payload_for(s, r, iss="no-such-key"))),
                       "token_unknown_key"),
    "no-iss": (_same_room(lambda s, r: sign(s, payload_for(s, r, iss=None))),
               "token_unknown_key"),
    "garbage": (_same_room(lambda s, r: "this-is-not-a-token"), "token_malformed"),
    "three-garbage-segments": (_same_room(lambda s, r: "a.b.c"), "token_malformed"),
    "payload-not-an-object": (_same_room(lambda s, r: craft(
        {"alg": "HS256", "typ": "JWT"}, [1, 2, 3], s.settings.primary_key.secret)),
        "token_malformed"),
    "empty": (_same_room(lambda s, r: ""), "token_missing"),
    "no-room-claim": (_same_room(lambda s, r: sign(s, payload_for(s, r, room=None))),
                      "token_claims"),
    "no-role-claim": (_same_room(lambda s, r: sign(s, payload_for(s, r, role=None))),
                      "token_claims"),
    "no-sub-claim": (_same_room(lambda s, r: sign(s, payload_for(s, r, sub=None))),
                     "token_claims"),
    "no-grants-claim": (_same_room(lambda s, r: sign(s, payload_for(s, r, grants=None))),
                        "token_claims"),
    "no-exp-claim": (_same_room(lambda s, r: sign(s, payload_for(s, r, exp=None))),
                     "token_claims"),
    "no-aud-claim": (_same_room(lambda s, r: sign(s, payload_for(s, r, aud=None))),
                     "token_claims"),
    "role-not-a-string": (_same_room(lambda s, r: sign(s, payload_for(s, r, role=7))),
                          "token_claims"),
    "empty-identity": (_same_room(lambda s, r: sign(s, payload_for(s, r, sub=""))),
                       "token_claims"),
    "exp-not-a-number": (_same_room(lambda s, r: sign(s, payload_for(s, r, exp="tomorrow"))),
                         "token_claims"),
    "unknown-grant-name": (_same_room(lambda s, r: sign(s, payload_for(
        s, r, grants={"publish_audio": True, "fly": True}))), "token_claims"),
    "grants-as-a-list": (_same_room(lambda s, r: sign(s, payload_for(
        s, r, grants=["publish_audio", "publish_video"]))), "token_claims"),
    "grant-value-not-a-boolean": (_same_room(lambda s, r: sign(s, payload_for(
        s, r, grants={"publish_audio": "false", "publish_video": "no"}))), "token_claims"),
    "unknown-role": (_same_room(lambda s, r: sign(s, payload_for(
        s, r, role="janitor", grants={"subscribe": True}))), "token_role"),
    # the rooms here are mdt rooms, where nurses have no place
    "role-not-allowed-in-kind": (_same_room(lambda s, r: sign(s, payload_for(
        s, r, kind="clinic", as_role="nurse"))), "token_role"),
    "grants-wider-than-role": (_same_room(lambda s, r: sign(s, payload_for(
        s, r, as_role="presenter",
        grants={**grants_for("mdt", "presenter").as_dict(), "moderate": True}))),
        "token_role"),
}


@pytest.fixture
async def rooms(server: Server) -> tuple[str, str]:
    return await server.create_room("mdt", "room A"), await server.create_room("mdt", "room B")


@pytest.mark.parametrize("case", sorted(CASES))
async def test_refused_token_has_its_own_code_and_the_socket_is_closed(
        server: Server, rooms: tuple[str, str], case: str) -> None:
    make, expected = CASES[case]
    ws_room, token = make(server, *rooms)
    error, close_code = await refused(server, ws_room, token)
    assert error.code == expected, (case, error.code, error.message)
    assert error.message
    assert close_code == CLOSE_TOKEN, (case, close_code)
    # nobody was let in
    status, body = await server.api("GET", f"/api/rooms/{ws_room}")
    assert status == 200 and body["participants"] == [], body


async def test_the_valid_handmade_token_is_accepted(server: Server,
                                                    rooms: tuple[str, str]) -> None:
    """The baseline for every refusal above: the same payload, untouched, joins."""
    room = rooms[0]
    p = await joins(server, room, sign(server, payload_for(server, room)))
    try:
        assert p.joined["me"]["identity"] == "dr-wang"
        assert p.joined["me"]["role"] == "specialist"
        assert p.joined["me"]["grants"] == grants_for("mdt", "specialist").as_dict()
        assert p.joined["room"]["id"] == room
    finally:
        await p.leave()


async def test_viewer_in_a_clinic_is_refused_with_token_role(server: Server) -> None:
    clinic = await server.create_room("clinic")
    # the REST API refuses to mint this token; make it by hand
    token = sign(server, payload_for(server, clinic, kind="mdt", as_role="viewer"))
    error, close_code = await refused(server, clinic, token)
    assert error.code == "token_role"
    assert "viewer" in error.message
    assert close_code == CLOSE_TOKEN


@pytest.mark.parametrize("extra_grant", ["moderate", "publish_screen"])
async def test_patient_token_granting_more_than_the_role_is_refused_with_token_role(
        server: Server, extra_grant: str) -> None:
    clinic = await server.create_room("clinic")
    grants = {**grants_for("clinic", "patient").as_dict(), extra_grant: True}
    token = sign(server, payload_for(server, clinic, kind="clinic", as_role="patient",
                                     grants=grants))
    error, close_code = await refused(server, clinic, token)
    assert error.code == "token_role"
    assert close_code == CLOSE_TOKEN


async def test_narrower_grants_than_the_role_are_accepted_and_kept(server: Server) -> None:
    clinic = await server.create_room("clinic")
    narrow = Grants(publish_audio=True, subscribe=True)
    token = sign(server, payload_for(server, clinic, kind="clinic", as_role="doctor",
                                     grants=narrow.as_dict()))
    p = await joins(server, clinic, token)
    try:
        assert p.joined["me"]["grants"] == narrow.as_dict()
    finally:
        await p.leave()


async def test_token_for_a_room_that_does_not_exist(server: Server) -> None:
    token = sign(server, payload_for(server, "r_does_not_exist"))
    error, close_code = await refused(server, "r_does_not_exist", token)
    assert error.code == "room_not_found"
    assert close_code == CLOSE_ROOM


async def test_token_minted_by_the_api_for_room_a_is_refused_on_room_b(
        server: Server, rooms: tuple[str, str]) -> None:
    room_a, room_b = rooms
    token = await server.token(room_a, "dr-zhao")
    error, close_code = await refused(server, room_b, token)
    assert error.code == "token_wrong_room"
    assert close_code == CLOSE_TOKEN
    p = await joins(server, room_a, token)  # the same token is fine where it belongs
    await p.leave()


async def test_refusal_echoes_the_join_id_and_closes_with_the_code_as_reason(
        server: Server, rooms: tuple[str, str]) -> None:
    """The raw view of a refusal: error with ``ref``, then a server close 4001 naming the code."""
    room = rooms[0]
    ws_url = server.url.replace("http", "ws", 1) + f"/ws/{room}"
    assert server.http is not None
    async with server.http.ws_connect(ws_url) as ws:
        await ws.send_json({"type": "join", "v": 1, "token": "nonsense", "id": "j-1"})
        first = await ws.receive(timeout=5)
        assert first.type == aiohttp.WSMsgType.TEXT
        error = first.json()
        assert error == {"type": "error", "code": "token_malformed",
                         "message": error["message"], "ref": "j-1"}
        closing = await ws.receive(timeout=5)
        assert closing.type == aiohttp.WSMsgType.CLOSE
        assert closing.data == CLOSE_TOKEN
        assert closing.extra == "token_malformed"


async def test_join_without_a_token_field(server: Server, rooms: tuple[str, str]) -> None:
    """The schema requires ``token``: leaving it out is a bad_message that names the field."""
    room = rooms[0]
    ws_url = server.url.replace("http", "ws", 1) + f"/ws/{room}"
    assert server.http is not None
    async with server.http.ws_connect(ws_url) as ws:
        await ws.send_json({"type": "join", "v": 1, "id": "j-1"})
        error = (await ws.receive(timeout=5)).json()
        assert error["type"] == "error"
        assert error["code"] in ("bad_message", "token_missing"), error
        assert "token" in error["message"]
        assert error["ref"] == "j-1"


async def test_expired_within_leeway_is_still_accepted(server: Server,
                                                       rooms: tuple[str, str]) -> None:
    room = rooms[0]
    now = int(time.time())
    token = sign(server, payload_for(server, room, exp=now - 1, iat=now - 100, nbf=now - 100))
    p = await joins(server, room, token)
    await p.leave()


async def test_second_configured_key_signs_tokens_too(tmp_path: Path) -> None:
    second = {"key": "pacs", "secret": "p" * 48}
    first = {"key": "his", "secret": "h" * 48}
    async with running_server(tmp_path, auth={"api_keys": [first, second]}) as server:
        room = await server.create_room("mdt")
        token = sign(server, payload_for(server, room, iss="pacs"), second["secret"])
        p = await joins(server, room, token)
        await p.leave()
        # signed by one key's secret but naming the other: the signature does not verify
        forged = sign(server, payload_for(server, room, iss="his"), second["secret"])
        error, _ = await refused(server, room, forged)
        assert error.code == "token_signature"


# ---- unit tests: signaling/auth.py -------------------------------------------------------------

SECRET = "unit-test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"


def lookup(key: str) -> str | None:
    return {"his": SECRET}.get(key)


def test_mint_and_verify_round_trip() -> None:
    before = int(time.time())
    token, minted = mint_participant_token(
        api_key="his", secret=SECRET, audience="huizhen", room_id="r_1", room_kind="clinic",
        identity="patient-7", name="Zhang San", role="patient", ttl_s=900)
    verified = verify_participant_token(token, lookup, "huizhen")
    assert verified == minted
    assert isinstance(verified, ParticipantClaims)
    assert verified.api_key == "his"
    assert verified.identity == "patient-7"
    assert verified.name == "Zhang San"
    assert verified.room == "r_1"
    assert verified.role == "patient"
    assert verified.grants == grants_for("clinic", "patient")
    assert before + 900 <= verified.expires_at <= int(time.time()) + 900
    assert len(verified.token_id) == 32
    # the raw claims are as documented
    raw = jwt.decode(token, SECRET, algorithms=["HS256"], audience="huizhen")
    assert raw["iss"] == "his" and raw["sub"] == "patient-7" and raw["aud"] == "huizhen"
    assert raw["room"] == "r_1" and raw["role"] == "patient"
    assert raw["grants"] == grants_for("clinic", "patient").as_dict()
    assert raw["jti"] == verified.token_id
    assert raw["nbf"] <= raw["iat"] <= raw["exp"]
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_each_mint_gets_its_own_token_id() -> None:
    ids = {mint_participant_token(api_key="his", secret=SECRET, audience="huizhen",
                                  room_id="r_1", room_kind="mdt", identity="x", name="X",
                                  role="viewer", ttl_s=60)[1].token_id for _ in range(10)}
    assert len(ids) == 10


def test_mint_with_narrower_grants() -> None:
    narrow = Grants(publish_audio=True)
    token, claims = mint_participant_token(
        api_key="his", secret=SECRET, audience="huizhen", room_id="r_1", room_kind="mdt",
        identity="a", name="A", role="specialist", ttl_s=60, grants=narrow)
    assert claims.grants == narrow
    assert verify_participant_token(token, lookup, "huizhen").grants == narrow


def test_mint_refuses_grants_wider_than_the_role() -> None:
    with pytest.raises(PolicyError) as info:
        mint_participant_token(
            api_key="his", secret=SECRET, audience="huizhen", room_id="r_1",
            room_kind="clinic", identity="p", name="P", role="patient", ttl_s=60,
            grants=Grants(publish_audio=True, moderate=True))
    assert info.value.code == "grants_exceed_role"


@pytest.mark.parametrize(("kind", "role", "code"), [
    ("clinic", "viewer", "role_not_allowed"),
    ("clinic", "janitor", "unknown_role"),
    ("surgery", "host", "unknown_room_kind"),
])
def test_mint_refuses_roles_the_kind_refuses(kind: str, role: str, code: str) -> None:
    with pytest.raises(PolicyError) as info:
        mint_participant_token(api_key="his", secret=SECRET, audience="huizhen",
                               room_id="r_1", room_kind=kind, identity="v", name="V",
                               role=role, ttl_s=60)
    assert info.value.code == code


@pytest.mark.parametrize(("token_args", "code"), [
    ({"audience": "other"}, "token_audience"),
    ({"secret": "not-the-secret-but-long-enough-000000000000"}, "token_signature"),
    ({"api_key": "unknown"}, "token_unknown_key"),
    ({"ttl_s": -60}, "token_expired"),
])
def test_verify_refusals(token_args: dict[str, Any], code: str) -> None:
    args: dict[str, Any] = {"api_key": "his", "secret": SECRET, "audience": "huizhen",
                            "room_id": "r_1", "room_kind": "mdt", "identity": "a", "name": "A",
                            "role": "specialist", "ttl_s": 60, **token_args}
    token, _ = mint_participant_token(**args)
    with pytest.raises(AuthError) as info:
        verify_participant_token(token, lookup, "huizhen")
    assert info.value.code == code
    assert info.value.message


def test_api_token_round_trip_and_audiences() -> None:
    api_token = mint_api_token("his", SECRET, "huizhen")
    assert verify_api_token(api_token, lookup, "huizhen") == "his"
    assert jwt.decode(api_token, SECRET, algorithms=["HS256"],
                      audience="huizhen:api")["iss"] == "his"
    # an API token is not a participant token, and the other way round
    with pytest.raises(AuthError) as info:
        verify_participant_token(api_token, lookup, "huizhen")
    assert info.value.code == "token_audience"
    participant, _ = mint_participant_token(
        api_key="his", secret=SECRET, audience="huizhen", room_id="r_1", room_kind="mdt",
        identity="a", name="A", role="host", ttl_s=60)
    with pytest.raises(AuthError) as info:
        verify_api_token(participant, lookup, "huizhen")
    assert info.value.code == "token_audience"


def test_api_token_lifetime_is_capped() -> None:
    token = mint_api_token("his", SECRET, "huizhen", ttl_s=10 * MAX_API_TOKEN_TTL_S)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="huizhen:api")
    assert claims["exp"] - claims["iat"] <= MAX_API_TOKEN_TTL_S


def test_empty_token_is_missing() -> None:
    with pytest.raises(AuthError) as info:
        verify_participant_token("", lookup, "huizhen")
    assert info.value.code == "token_missing"
    with pytest.raises(AuthError) as info:
        verify_api_token("", lookup, "huizhen")
    assert info.value.code == "token_missing"


@pytest.mark.parametrize(("role", "grants", "ok"), [
    ("patient", grants_for("clinic", "patient"), True),
    ("patient", Grants(), True),
    ("patient", Grants(publish_audio=True, moderate=True), False),
    ("patient", Grants(publish_screen=True), False),
    ("doctor", grants_for("clinic", "doctor"), True),
    ("viewer", Grants(), False),
    ("janitor", Grants(), False),
])
def test_check_role_for_room(role: str, grants: Grants, ok: bool) -> None:
    claims = ParticipantClaims(api_key="his", identity="x", room="r_1", name="X", role=role,
                               grants=grants, expires_at=0, token_id="")
    if ok:
        assert check_role_for_room(claims, "clinic") == grants
    else:
        with pytest.raises(AuthError) as info:
            check_role_for_room(claims, "clinic")
        assert info.value.code == "token_role"
