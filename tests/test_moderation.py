"""Lobby, admission, hold, moderation, chat, invites and ending — over real WebRTC."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from sdk.participant import JoinRefused, Participant, RequestFailed
from signaling.keys import ROOMS
from tests.harness import LOOPBACK, Server


def got(p: Participant, message_type: str, **fields: Any) -> bool:
    return any(e.get("type") == message_type and all(e.get(k) == v for k, v in fields.items())
               for e in p.events)


async def clinic(server: Server) -> tuple[str, Participant, Participant]:
    room = await server.create_room("clinic")
    doctor = await server.participant(room, "dr-lin", "doctor")
    patient = await server.participant(room, "patient-zhou", "patient")
    return room, doctor, patient


async def admit(doctor: Participant, patient: Participant) -> None:
    await doctor.send({"type": "admit", "participant_id": patient.id})
    assert await patient.wait_until(lambda: got(patient, "admitted"), timeout=5)


async def test_patient_waits_in_the_lobby_until_admitted(server: Server) -> None:
    room, doctor, patient = await clinic(server)
    nurse = await server.participant(room, "nurse-wu", "nurse")
    try:
        await doctor.publish(tag=1)
        assert patient.joined["me"]["state"] == "lobby"
        assert patient.joined["participants"] == []  # sees nobody
        # only the moderator is told about the patient in the lobby
        assert await doctor.wait_until(
            lambda: patient.id in doctor.participants
            and doctor.participants[patient.id]["state"] == "lobby", timeout=5)
        assert patient.id not in nurse.participants
        # waiting: both connections come up (instant admission), and no media flows either
        # way — not one RTP packet to the patient, nothing of the patient to anyone; no chat
        await patient.publish(tag=2)
        with pytest.raises(RequestFailed) as info:
            await patient.request({"type": "chat", "text": "hello?"})
        assert info.value.code == "not_admitted"
        members = server.app[ROOMS].members[room]
        held = members[patient.id].subscriber
        assert held is not None and held.held
        assert await patient.wait_until(lambda: held._dtls is not None
                                        and held._dtls.state == "connected", timeout=10)
        await asyncio.sleep(1.5)
        assert got(patient, "subscriber_offer") and patient.remote
        assert all(s.frames == 0 and s.payload_bytes == 0 for s in patient.remote.values())
        assert sum(slot.down.packets for slot in held.slots) == 0
        assert not any(s.participant_id == patient.id for s in doctor.remote.values())
        assert doctor.frames_from(patient.id, "video") == 0

        await admit(doctor, patient)
        (admitted,) = [e for e in patient.events if e["type"] == "admitted"]
        assert {p["id"] for p in admitted["participants"]} == {doctor.id, nurse.id}
        assert await nurse.wait_until(lambda: got(nurse, "participant_joined"), timeout=5)
        assert got(doctor, "participant_updated")
        assert await patient.wait_until(
            lambda: patient.frames_from(doctor.id, "video") > 10
            and doctor.frames_from(patient.id, "video") > 10, timeout=15)
    finally:
        for p in (patient, nurse, doctor):
            await p.leave()


async def test_admitted_patient_who_reconnects_is_not_sent_back_to_the_lobby(
        server: Server) -> None:
    room, doctor, patient = await clinic(server)
    try:
        await admit(doctor, patient)
        await patient.close()  # network switch
        again = await server.participant(room, "patient-zhou", "patient")
        assert again.joined["me"]["state"] == "active"
        await again.leave()
        # a moderator never waits, also when reconnecting
        await doctor.close()
        doctor = await server.participant(room, "dr-lin", "doctor")
        assert doctor.joined["me"]["state"] == "active"
    finally:
        await doctor.leave()


async def test_deny_and_remove_close_the_socket_and_remove_bars_the_identity(
        server: Server) -> None:
    room, doctor, patient = await clinic(server)
    relative = await server.participant(room, "relative", "guardian")
    try:
        await doctor.send({"type": "deny", "participant_id": relative.id})
        assert await relative.wait_until(relative.closed.is_set, timeout=5)
        assert got(relative, "denied")
        await admit(doctor, patient)
        await doctor.send({"type": "remove", "participant_id": patient.id})
        assert await patient.wait_until(patient.closed.is_set, timeout=5)
        assert got(patient, "removed")
        with pytest.raises(JoinRefused) as info:
            await server.participant(room, "patient-zhou", "patient")
        assert info.value.code == "removed"
        status, state = await server.api("GET", f"/api/rooms/{room}")
        assert status == 200
        assert [p["identity"] for p in state["participants"]] == ["dr-lin"]
    finally:
        await doctor.leave()


async def test_hold_stops_media_both_ways_and_resume_restores_it(server: Server) -> None:
    room, doctor, patient = await clinic(server)
    specialist_room_mate = await server.participant(room, "interpreter", "interpreter")
    try:
        await admit(doctor, patient)
        await patient.publish(tag=2)
        await specialist_room_mate.publish(tag=3)
        assert await patient.wait_until(
            lambda: patient.frames_from(specialist_room_mate.id, "video") > 5
            and specialist_room_mate.frames_from(patient.id, "video") > 5, timeout=15)
        await doctor.send({"type": "hold", "participant_id": patient.id, "held": True})
        assert await patient.wait_until(lambda: got(patient, "held", held=True), timeout=5)
        await asyncio.sleep(1.5)
        frozen_in = patient.frames_from(specialist_room_mate.id, "video")
        frozen_out = specialist_room_mate.frames_from(patient.id, "video")
        await asyncio.sleep(2)
        assert patient.frames_from(specialist_room_mate.id, "video") == frozen_in
        assert specialist_room_mate.frames_from(patient.id, "video") == frozen_out
        with pytest.raises(RequestFailed):
            await patient.request({"type": "chat", "text": "anyone?"})
        await doctor.send({"type": "hold", "participant_id": patient.id, "held": False})
        assert await patient.wait_until(
            lambda: patient.frames_from(specialist_room_mate.id, "video") > frozen_in + 10
            and specialist_room_mate.frames_from(patient.id, "video") > frozen_out + 10,
            timeout=15), (patient.summary(), specialist_room_mate.summary())
    finally:
        for p in (patient, specialist_room_mate, doctor):
            await p.leave()


async def test_mute_participant_and_chat(server: Server) -> None:
    room, doctor, patient = await clinic(server)
    try:
        await admit(doctor, patient)
        reply = await patient.publish(tag=2)
        audio_id = next(t["track_id"] for t in reply["tracks"] if t["mid"] == "0")
        await doctor.send({"type": "mute_participant", "participant_id": patient.id,
                           "kind": "audio"})
        assert await patient.wait_until(lambda: got(patient, "muted_by_host", kind="audio"),
                                        timeout=5)
        assert await doctor.wait_until(
            lambda: got(doctor, "track_muted", track_id=audio_id, muted=True), timeout=5)
        await patient.send({"type": "chat", "text": "我能听到您 — I can hear you"})
        # (two connections' messages have no order between them: the doctor answers once
        # the patient's message is in)
        assert await doctor.wait_until(lambda: got(doctor, "chat", name="patient-zhou"), 5)
        await doctor.send({"type": "chat", "text": "Good. 请稍等"})
        for p in (doctor, patient):
            assert await p.wait_until(
                lambda p=p: len([e for e in p.events if e["type"] == "chat"]) == 2, timeout=5)
        texts = [(e["name"], e["text"]) for e in doctor.events if e["type"] == "chat"]
        assert texts == [("patient-zhou", "我能听到您 — I can hear you"),
                         ("dr-lin", "Good. 请稍等")]
        status, events = await server.api("GET", f"/api/rooms/{room}/events")
        assert status == 200
        assert [e["data"]["text"] for e in events["events"] if e["type"] == "chat"] == [
            "我能听到您 — I can hear you", "Good. 请稍等"]
    finally:
        await patient.leave()
        await doctor.leave()


async def test_only_moderators_moderate(server: Server) -> None:
    room, doctor, patient = await clinic(server)
    nurse = await server.participant(room, "nurse", "nurse")
    try:
        for message in ({"type": "admit", "participant_id": patient.id},
                        {"type": "remove", "participant_id": doctor.id},
                        {"type": "end_room"},
                        {"type": "create_invite", "role": "specialist"}):
            with pytest.raises(RequestFailed) as info:
                await nurse.request(message)
            assert info.value.code == "not_permitted", message
        with pytest.raises(RequestFailed) as info:
            await doctor.request({"type": "admit", "participant_id": "p_nobody"})
        assert info.value.code == "unknown_participant"
    finally:
        for p in (patient, nurse, doctor):
            await p.leave()


async def test_invite_link_joins_with_the_invited_role(server: Server) -> None:
    room = await server.create_room("joint_clinic")
    doctor = await server.participant(room, "dr-local", "doctor")
    try:
        invite = await doctor.request({"type": "create_invite", "role": "specialist",
                                       "name": "Prof. Sun"})
        assert invite["join_url"].startswith(f"{server.url}/join/{room}#t=")
        guest = Participant(server.url, room, invite["join_url"].split("#t=")[1], ice=LOOPBACK)
        joined = await guest.join()
        assert joined["me"]["role"] == "specialist" and joined["me"]["name"] == "Prof. Sun"
        assert joined["me"]["identity"] == invite["identity"]
        with pytest.raises(RequestFailed) as info:
            await doctor.request({"type": "create_invite", "role": "viewer"})
        assert info.value.code == "role_not_allowed"
        await guest.leave()
    finally:
        await doctor.leave()


async def test_host_ends_the_consultation_for_everyone(server: Server) -> None:
    room, doctor, patient = await clinic(server)
    try:
        await admit(doctor, patient)
        await doctor.send({"type": "end_room", "reason": "consultation finished"})
        for p in (doctor, patient):
            assert await p.wait_until(p.closed.is_set, timeout=5)
            assert got(p, "room_ended", reason="consultation finished")
        status, state = await server.api("GET", f"/api/rooms/{room}")
        assert status == 200 and state["status"] == "ended" and state["participants"] == []
    finally:
        await patient.close()
        await doctor.close()


async def test_precheck_echoes_a_data_channel(server: Server) -> None:
    room = await server.create_room("clinic")
    token = await server.token(room, "patient-precheck", "patient")
    pc = RTCPeerConnection(LOOPBACK.configuration())
    channel = pc.createDataChannel("echo")
    echoes: asyncio.Queue[str] = asyncio.Queue()
    channel.on("message", echoes.put_nowait)
    opened = asyncio.Event()
    channel.on("open", opened.set)
    await pc.setLocalDescription(await pc.createOffer())
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(server.url + "/precheck", json={"sdp": pc.localDescription.sdp},
                                 headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.status == 200
                answer = await resp.json()
            async with http.post(server.url + "/precheck", json={"sdp": "nonsense"},
                                 headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_sdp"
            async with http.post(server.url + "/precheck", json={"sdp": "v=0"},
                                 headers={"Authorization": "Bearer forged"}) as resp:
                assert resp.status == 401
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        await asyncio.wait_for(opened.wait(), 10)
        start = time.monotonic()
        channel.send("ping-1")
        assert await asyncio.wait_for(echoes.get(), 5) == "ping-1"
        assert time.monotonic() - start < 1
    finally:
        await pc.close()


async def test_admission_and_removal_survive_a_restart(tmp_path: Any) -> None:
    from tests.harness import ServerProcess

    first = await ServerProcess(tmp_path).start()
    try:
        room = await first.create_room("clinic")
        doctor = await first.participant(room, "dr-lin", "doctor")
        patient = await first.participant(room, "patient-zhou", "patient")
        relative = await first.participant(room, "relative", "guardian")
        await admit(doctor, patient)
        await admit(doctor, relative)
        await doctor.send({"type": "remove", "participant_id": relative.id})
        assert await relative.wait_until(relative.closed.is_set, timeout=5)
    finally:
        first.stop()
    for p in (doctor, patient, relative):
        await p.close()
    second = await ServerProcess(tmp_path, port=first.port, secret=first.secret).start()
    try:
        again = await second.participant(room, "patient-zhou", "patient")
        assert again.joined["me"]["state"] == "active"  # not back in the lobby
        with pytest.raises(JoinRefused) as info:
            await second.participant(room, "relative", "guardian")
        assert info.value.code == "removed"
        await again.leave()
    finally:
        second.stop()


async def test_room_ends_for_everyone_even_if_the_host_hangs_up_at_once(
        server: Server) -> None:
    room, doctor, patient = await clinic(server)
    nurse = await server.participant(room, "nurse", "nurse")
    try:
        await admit(doctor, patient)
        await doctor.send({"type": "end_room"})
        await doctor.close()  # the host's tab closes the moment it sent the message
        for p in (patient, nurse):
            assert await p.wait_until(p.closed.is_set, timeout=5)
            assert got(p, "room_ended")
        status, state = await server.api("GET", f"/api/rooms/{room}")
        assert status == 200 and state["status"] == "ended" and state["participants"] == []
    finally:
        await patient.close()
        await nurse.close()
