"""Issue 12, test 2 (single-use invites): the first device to use an invite link owns it —
its reconnects work, also after the service restarts — and anyone else with the same link is
refused with a clear message. A moderator's invite from the client is single-use; a token the
hospital system asks for is single-use when it says so, and otherwise reusable."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdk.participant import JoinRefused, Participant
from tests.harness import LOOPBACK, Server, ServerProcess, running_server

PHONE, OTHER = "phone-of-the-relative", "someone-elses-laptop"


async def attempt(server: Server | ServerProcess, room: str, token: str,
                  device: str) -> Participant | str:
    """A joined participant, or the refusal's code."""
    p = Participant(server.url, room, token, ice=LOOPBACK, device=device)
    try:
        await p.join()
    except JoinRefused as exc:
        return exc.code
    return p


async def test_single_use_invites(tmp_path: Path) -> None:
    async with running_server(tmp_path / "srv") as server:
        room = await server.create_room("joint_clinic")
        doctor = await server.participant(room, "dr-li", "doctor")
        invite = await doctor.request({"type": "create_invite", "role": "specialist",
                                       "name": "孙教授"})
        token = invite["join_url"].split("#t=")[1]

        first = await attempt(server, room, token, PHONE)
        assert isinstance(first, Participant) and first.joined["me"]["name"] == "孙教授"
        assert await attempt(server, room, token, OTHER) == "invite_used"
        await first.close()  # the phone drops; it comes back with the same link
        again = await attempt(server, room, token, PHONE)
        assert isinstance(again, Participant)
        assert again.joined["me"]["identity"] == first.joined["me"]["identity"]
        await again.leave()
        # a client that says nothing of its device cannot take an invite
        bare = Participant(server.url, room, token, ice=LOOPBACK)
        bare.device = ""
        with pytest.raises(JoinRefused) as refused:
            await bare.join()
        assert refused.value.code == "device_required"

        # the hospital system's tokens: single-use only when asked
        status, body = await server.api("POST", f"/api/rooms/{room}/tokens", {
            "identity": "relative-1", "name": "家属", "role": "guardian", "single_use": True})
        assert status == 201 and body["single_use"] is True
        relative = await attempt(server, room, body["token"], PHONE)
        assert isinstance(relative, Participant)
        assert await attempt(server, room, body["token"], OTHER) == "invite_used"
        await relative.leave()
        status, body = await server.api("POST", f"/api/rooms/{room}/tokens", {
            "identity": "dr-wang", "name": "王医生", "role": "specialist"})
        assert status == 201 and body["single_use"] is False
        for device in (PHONE, OTHER):
            p = await attempt(server, room, body["token"], device)
            assert isinstance(p, Participant)
            await p.leave()
        status, body = await server.api("POST", f"/api/rooms/{room}/tokens", {
            "identity": "x", "name": "x", "role": "specialist", "single_use": "yes"})
        assert status == 400
        await doctor.leave()


async def test_an_invite_stays_owned_across_a_restart(tmp_path: Path) -> None:
    first = await ServerProcess(tmp_path).start()
    try:
        room = await first.create_room("clinic")
        status, body = await first.api("POST", f"/api/rooms/{room}/tokens", {
            "identity": "guest-1", "name": "Guest", "role": "interpreter",
            "single_use": True})
        assert status == 201
        owner = await attempt(first, room, body["token"], PHONE)
        assert isinstance(owner, Participant)
        await owner.leave()
    finally:
        first.stop()
    second = await ServerProcess(tmp_path, port=first.port, secret=first.secret).start()
    try:
        assert await attempt(second, room, body["token"], OTHER) == "invite_used"
        back = await attempt(second, room, body["token"], PHONE)
        assert isinstance(back, Participant)
        await back.leave()
    finally:
        second.stop()
