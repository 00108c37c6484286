"""Issue 12, test 1: every room kind × role × action against the policy table, through a real
server and real clients.

For each kind, a participant of each role joins (admitted by a host when its role waits in
the lobby) and tries each action: publish audio / video / screen, subscribe, chat, admit,
end, record, sign, promote. What the server does must be what ``rooms/policy.py`` grants:
an allowed action gets past the permission check (it is carried out, or fails for another
reason such as a dummy SDP), a refused one gets ``not_permitted`` and changes nothing.
tests/test_policy.py checks the table itself against a hand-written copy."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from rooms.policy import POLICIES, Grants, Role, RoomKind, role_policy
from sdk.participant import Participant
from signaling.keys import ROOMS
from tests.harness import Server, running_server

ACTIONS = ("publish_audio", "publish_video", "publish_screen", "subscribe", "chat", "admit",
           "end", "record", "sign", "promote")
#: the grant each action needs (admit and end: moderate; chat: send_data)
NEEDS = {"publish_audio": "publish_audio", "publish_video": "publish_video",
         "publish_screen": "publish_screen", "subscribe": "subscribe", "chat": "send_data",
         "admit": "moderate", "end": "moderate", "record": "record", "sign": "sign",
         "promote": "promote"}
PUBLISH = {"publish_audio": ("audio", "microphone"), "publish_video": ("video", "camera"),
           "publish_screen": ("video", "screen")}
_ids = iter(range(10**6))


async def attempt(p: Participant, message: dict[str, Any], done: Any = None,
                  timeout: float = 5) -> str | None:
    """Send ``message``; the error code it got, or None once ``done(p)`` holds (or a reply
    without error came)."""
    ref = f"probe-{next(_ids)}"
    start = len(p.events)
    await p.send({**message, "id": ref})

    def settled() -> bool:
        new = p.events[start:]
        if any(e.get("ref") == ref for e in new):
            return True
        return done is not None and done(new)
    assert await p.wait_until(settled, timeout), (message, p.events[start:])
    reply = next((e for e in p.events[start:] if e.get("ref") == ref), None)
    return str(reply["code"]) if reply is not None and reply.get("type") == "error" else None


async def member(server: Server, room: str, role: str, host: Participant | None
                 ) -> Participant:
    p = await server.participant(room, f"{role}-{next(_ids)}", role)
    if p.joined["me"]["state"] == "lobby":
        assert host is not None
        await host.send({"type": "admit", "participant_id": p.id})
        assert await p.wait_until(lambda: any(e.get("type") == "admitted" for e in p.events),
                                  5)
    return p


async def outcome(server: Server, kind: str, role: str, action: str, p: Participant,
                  host: Participant) -> bool:
    """True when the server let ``p`` do ``action`` (got past the permission check)."""
    if action in PUBLISH:
        media_kind, source = PUBLISH[action]
        code = await attempt(p, {"type": "publish", "sdp": "v=0 not an offer",
                                 "tracks": [{"mid": "0", "kind": media_kind,
                                             "source": source}]})
        assert code is not None  # the dummy SDP never publishes anything
        return code != "not_permitted"
    if action == "subscribe":
        return server.app[ROOMS].members[p.room_id][p.id].subscriber is not None
    if action == "chat":
        code = await attempt(p, {"type": "chat", "text": "probe"}, lambda new: any(
            e.get("type") == "chat" and e.get("participant_id") == p.id for e in new))
        return code is None
    if action == "admit":
        code = await attempt(p, {"type": "admit", "participant_id": "p_nobody"})
        assert code in ("not_permitted", "unknown_participant"), code
        return code == "unknown_participant"
    if action == "record":
        code = await attempt(p, {"type": "recording", "action": "resume"})
        assert code in ("not_permitted", "not_recording"), code
        return code == "not_recording"
    if action == "sign":
        documents = POLICIES[RoomKind(kind)].documents
        code = await attempt(p, {"type": "document_save", "text": "probe",
                                 "kind": documents[0].value if documents else "note"})
        assert code in (None, "not_permitted"), code
        return code is None
    if action == "promote":
        code = await attempt(p, {"type": "promote", "participant_id": "p_nobody",
                                 "video": False})
        assert code in ("not_permitted", "unknown_participant"), code
        return code == "unknown_participant"
    raise AssertionError(action)


async def ends(server: Server, kind: str, role: str) -> bool:
    """In a room of its own: may this role end it?"""
    room = await server.create_room(kind, f"end by {role}")
    host = await member(server, room, POLICIES[RoomKind(kind)].host_role.value, None)
    p = host if role == host.joined["me"]["role"] else await member(server, room, role, host)
    code = await attempt(p, {"type": "end_room"}, lambda new: any(
        e.get("type") == "room_ended" for e in new))
    status, body = await server.api("GET", f"/api/rooms/{room}")
    assert status == 200
    assert (body["status"] == "ended") == (code is None), (role, code, body["status"])
    for x in {host, p}:
        await x.close()
    return code is None


@pytest.mark.parametrize("kind", [k.value for k in RoomKind])
async def test_every_role_can_do_exactly_what_the_table_grants(tmp_path: Any, kind: str
                                                               ) -> None:
    policy = POLICIES[RoomKind(kind)]
    async with running_server(tmp_path / "srv") as server:
        room = await server.create_room(kind, f"{kind} actions")
        host = await member(server, room, policy.host_role.value, None)
        async def check(role: Role) -> int:
            grants: Grants = role_policy(kind, role.value).grants
            p = host if role == policy.host_role else await member(server, room, role.value,
                                                                   host)
            for action in ACTIONS:
                if action == "end":
                    allowed = await ends(server, kind, role.value)
                else:
                    allowed = await outcome(server, kind, role.value, action, p, host)
                expected = getattr(grants, NEEDS[action])
                assert allowed == expected, f"{kind} × {role.value} × {action}: server " \
                    f"{'allows' if allowed else 'refuses'}, the table says " \
                    f"{'yes' if expected else 'no'}"
            if p is not host:
                await p.close()
            return len(ACTIONS)

        # the roles one after another would take three times as long; each has its own client
        checked = sum(await asyncio.gather(*(check(role) for role in policy.roles)))
        assert checked == len(policy.roles) * len(ACTIONS)
        await host.close()
        await asyncio.sleep(0)
