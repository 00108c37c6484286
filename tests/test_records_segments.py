"""Issue 11, test 2: a ward round discusses patients in turn, one of whom agreed to recording
before, one not at all, one during their turn.
The host names the patient under discussion (everyone admitted sees who it is); the recording
is cut there; patient A's record holds exactly A's segment (and its recording), patient B's
holds B's segment with nothing recorded; neither sees the other's encounter. Every read of
the record is audited."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from signaling.keys import AUDIT
from tests.harness import ServerProcess, running_server
from tests.recording_support import finish, join

A, B, C = "Patient/ward-a", "Patient/ward-b", "Patient/ward-c"


async def subject_seen(p: Any, ref: str | None, seen: int) -> dict[str, Any]:
    def found() -> bool:
        return any(e.get("type") == "subject" and (e["subject"] or {}).get("patient_ref") == ref
                   for e in p.events[seen:])
    assert await p.wait_until(found, 5), p.events[seen:]
    return next(e for e in reversed(p.events) if e.get("type") == "subject")


def recording_states(p: Any, seen: int) -> list[tuple[str, str | None]]:
    return [(e["state"], e.get("reason")) for e in p.events[seen:] if e.get("type") == "recording"]


async def test_ward_round_patients_in_turn_each_by_their_own_consent(tmp_path: Path) -> None:
    async with running_server(tmp_path / "srv") as server:
        status, room = await server.api("POST", "/api/rooms", {"kind": "ward_round",
                                                               "title": "心内科查房"})
        assert status == 201, room
        room_id = room["id"]
        status, body = await server.api("POST", f"/api/rooms/{room_id}/consents", {
            "granted": True, "method": "written", "obtained_by": "nurse-zhou",
            "patient_ref": A})
        assert status == 201 and body["patient_ref"] == A, body

        host = await join(server, room_id, "dr-chen", "host", name="陈主任")
        doctor = await join(server, room_id, "dr-li", "doctor", name="李医生")
        try:
            await doctor.publish(tag=3)
            # only a moderator names the patient; a clinic room has no patient under discussion
            seen = len(doctor.events)
            await doctor.send({"type": "set_subject", "patient_ref": A})
            assert await doctor.wait_until(lambda: any(
                e.get("code") == "not_permitted" for e in doctor.events[seen:]), 5)

            seen = len(doctor.events)
            await host.send({"type": "set_subject", "patient_ref": A, "label": "12床 张三"})
            shown = await subject_seen(doctor, A, seen)
            assert shown["subject"]["label"] == "12床 张三"
            await host.send({"type": "recording", "action": "start"})
            assert await doctor.wait_until(lambda: ("recording", None) in
                                           recording_states(doctor, seen), 5)
            await asyncio.sleep(3.0)

            # the next patient has no consent: the recording stops at the change
            seen = len(doctor.events)
            status, body = await server.api("POST", f"/api/rooms/{room_id}/subject",
                                            {"patient_ref": B, "label": "13床"})
            assert status == 200 and body["subject"]["patient_ref"] == B, body
            await subject_seen(doctor, B, seen)
            assert await doctor.wait_until(lambda: ("off", "no_consent_for_patient") in
                                           recording_states(doctor, seen), 5), \
                doctor.events[seen:]
            await asyncio.sleep(1.5)

            # a third patient agrees during their turn: recorded from then on
            seen = len(doctor.events)
            await host.send({"type": "set_subject", "patient_ref": C, "label": "14床"})
            assert await doctor.wait_until(lambda: ("off", "no_consent_for_patient") in
                                           recording_states(doctor, seen), 5)
            status, _ = await server.api("POST", f"/api/rooms/{room_id}/consents", {
                "granted": True, "method": "verbal", "obtained_by": "dr-chen"})
            assert status == 201
            assert await doctor.wait_until(lambda: ("recording", None) in
                                           recording_states(doctor, seen), 5)
            await asyncio.sleep(1.5)
            status, _ = await server.api("POST", f"/api/rooms/{room_id}/end")
            assert status == 200
        finally:
            for p in (host, doctor):
                await p.leave()
        assert await finish(server) == 4  # A's and C's segments: store + composite; B: none

        status, a = await server.api("GET", f"/api/encounters?patient={A}")
        assert status == 200, a
        status, b = await server.api("GET", f"/api/encounters?patient={B}")
        assert status == 200, b
        status, c = await server.api("GET", f"/api/encounters?patient={C}")
        assert status == 200, c
        status, whole = await server.api("GET", f"/api/encounters?room={room_id}")
        assert status == 200, whole
        audit = [(e.action, e.patient_ref) for e in await server.app[AUDIT].entries()]
        status, recordings = await server.api("GET", f"/api/rooms/{room_id}/recordings")
        assert status == 200

        # a clinic is about its own patient: no patient under discussion there
        status, clinic = await server.api("POST", "/api/rooms", {"kind": "clinic", "title": "t",
                                                                 "patient_ref": A})
        status, body = await server.api("POST", f"/api/rooms/{clinic['id']}/subject",
                                        {"patient_ref": B})
        assert status == 409 and body["error"]["code"] == "one_patient", body

    (enc_a,) = a["encounters"]
    (enc_b,) = b["encounters"]
    assert enc_a["patient_ref"] == A and enc_a["part_of"] == room_id
    assert enc_b["patient_ref"] == B and enc_b["part_of"] == room_id
    assert enc_a["status"] == enc_b["status"] == "finished"
    assert {p["identity"] for p in enc_a["participants"]} == {"dr-chen", "dr-li"}
    (rec,) = enc_a["recordings"]
    assert rec["status"] == "ready" and rec["segment_id"] == enc_a["id"]
    assert 2.5 <= rec["duration_s"] <= 4.5, rec  # A's turn only, not B's
    assert enc_b["recordings"] == []
    (enc_c,) = c["encounters"]
    (rec_c,) = enc_c["recordings"]
    assert rec_c["segment_id"] == enc_c["id"] and 1.0 <= rec_c["duration_s"] <= 2.5, rec_c
    # the whole round: its encounter (no patient of its own) and the three segments
    assert [e["id"] for e in whole["encounters"]] == [room_id, enc_a["id"], enc_b["id"],
                                                      enc_c["id"]]
    assert whole["encounters"][0]["patient_ref"] is None
    assert whole["encounters"][0]["recordings"] == []
    # the room's recordings are A's and C's, and A's files hold A's turn only
    recorded, recorded_c = recordings["recordings"]
    assert recorded["id"] == rec["id"] and recorded["patient_ref"] == A
    assert recorded_c["id"] == rec_c["id"] and recorded_c["patient_ref"] == C
    tracks = [f for f in recorded["files"] if f["role"] == "track"]
    assert {f["kind"] for f in tracks} == {"audio", "video"}
    assert all(f["start_s"] + f["duration_s"] <= rec["duration_s"] + 0.5 for f in tracks)

    assert ("subject.set", B) in audit
    assert ("encounter.list", A) in audit and ("encounter.list", B) in audit


async def test_the_patient_under_discussion_survives_a_restart(tmp_path: Path) -> None:
    """The same segment goes on after the service restarts: a joiner learns who it is."""
    first = await ServerProcess(tmp_path).start()
    try:
        room = await first.create_room("ward_round")
        status, body = await first.api("POST", f"/api/rooms/{room}/subject",
                                       {"patient_ref": A, "label": "12床"})
        assert status == 200, body
        segment = body["subject"]["segment_id"]
    finally:
        first.stop()
    second = await ServerProcess(tmp_path, port=first.port, secret=first.secret).start()
    try:
        host = await second.participant(room, "dr-chen", "host")
        subject = host.joined["room"]["subject"]
        assert subject["patient_ref"] == A and subject["segment_id"] == segment, subject
        assert subject["label"] == "12床"
        await host.leave()
    finally:
        second.stop()
