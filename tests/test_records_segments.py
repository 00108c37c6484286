"""Issue 11, tests 2 and 3: a ward round discusses patients in turn, one of whom agreed to
recording before, one not at all, one during their turn.
The host names the patient under discussion (everyone admitted sees who it is); the recording
is cut there; patient A's record holds exactly A's segment (and its recording), patient B's
holds B's segment with nothing recorded; neither sees the other's encounter. Every read of
the record is audited. The same record in FHIR: every resource validates with fhir.resources,
a search by patient returns exactly that patient's resources, and the Media's size and hash
are those of the file its link serves."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from signaling.keys import AUDIT
from tests.fhir_support import fhir_get, record_of, search
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
            turns = [datetime.now(UTC)]  # the recording is asked for …
            await host.send({"type": "recording", "action": "start"})
            assert await doctor.wait_until(lambda: ("recording", None) in
                                           recording_states(doctor, seen), 5)
            await doctor.send({"type": "chat", "text": "A: 血压稳定"})
            await asyncio.sleep(3.0)

            # the next patient has no consent: the recording stops at the change
            seen = len(doctor.events)
            status, body = await server.api("POST", f"/api/rooms/{room_id}/subject",
                                            {"patient_ref": B, "label": "13床"})
            turns.append(datetime.now(UTC))  # … and A's turn is over
            assert status == 200 and body["subject"]["patient_ref"] == B, body
            await subject_seen(doctor, B, seen)
            assert await doctor.wait_until(lambda: ("off", "no_consent_for_patient") in
                                           recording_states(doctor, seen), 5), \
                doctor.events[seen:]
            await doctor.send({"type": "chat", "text": "B: 明日出院"})
            await asyncio.sleep(1.5)

            # a third patient agrees during their turn: recorded from then on
            seen = len(doctor.events)
            await host.send({"type": "set_subject", "patient_ref": C, "label": "14床"})
            assert await doctor.wait_until(lambda: ("off", "no_consent_for_patient") in
                                           recording_states(doctor, seen), 5)
            turns.append(datetime.now(UTC))  # C agrees …
            status, _ = await server.api("POST", f"/api/rooms/{room_id}/consents", {
                "granted": True, "method": "verbal", "obtained_by": "dr-chen"})
            assert status == 201
            assert await doctor.wait_until(lambda: ("recording", None) in
                                           recording_states(doctor, seen), 5)
            await asyncio.sleep(1.5)
            status, _ = await server.api("POST", f"/api/rooms/{room_id}/end")
            turns.append(datetime.now(UTC))  # … and the round is over
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
        fhir_a, fhir_b = await record_of(server, A), await record_of(server, B)
        fhir_c = await record_of(server, C)
        (media_a,) = fhir_a["Media"]
        async with aiohttp.ClientSession() as http, http.get(media_a["content"]["url"]) as got:
            assert got.status == 200
            served = await got.read()
        status, round_ = await fhir_get(server, f"/fhir/Encounter/{room_id.replace('_', '.')}")
        assert status == 200
        by_encounter = await search(server, "Media?encounter=Encounter/"
                                    f"{media_a['encounter']['reference'].split('/')[1]}")
        fhir_audit = [e.action for e in await server.app[AUDIT].entries()]

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
    # A's turn only, not B's (the server's clock is this machine's: its stamps fall between
    # the test's own; a loaded machine may stretch the turn, never move it)
    assert turns[0] <= datetime.fromisoformat(rec["started_at"]) and \
        datetime.fromisoformat(rec["ended_at"]) <= turns[1] and rec["duration_s"] >= 2.5, rec
    assert enc_b["recordings"] == []
    (enc_c,) = c["encounters"]
    (rec_c,) = enc_c["recordings"]
    assert rec_c["segment_id"] == enc_c["id"] and rec_c["duration_s"] >= 1.0, rec_c
    assert turns[2] <= datetime.fromisoformat(rec_c["started_at"]) and \
        datetime.fromisoformat(rec_c["ended_at"]) <= turns[3], rec_c
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

    # FHIR: A's record is A's segment, its recording, A's consent and what was said then
    (e_a,) = fhir_a["Encounter"]
    pid_a = e_a["subject"]["reference"]
    assert e_a["id"] == enc_a["id"].replace("_", ".") and e_a["status"] == "finished"
    assert e_a["class"]["code"] == "VR" and e_a["partOf"]["reference"] == \
        f"Encounter/{room_id.replace('_', '.')}"
    assert sorted((p["individual"]["identifier"]["value"], p["type"][0]["coding"][0]["code"])
                  for p in e_a["participant"]) == [("dr-chen", "ATND"), ("dr-li", "ATND")]
    assert media_a["id"] == rec["id"].replace("_", ".") and media_a["status"] == "completed"
    assert media_a["subject"]["reference"] == pid_a
    assert media_a["encounter"]["reference"] == f"Encounter/{e_a['id']}"
    content = media_a["content"]
    assert content["contentType"] == "video/mp4" and content["size"] == len(served)
    assert content["hash"] == base64.b64encode(hashlib.sha1(served).digest()).decode()
    assert served[4:8] == b"ftyp" and abs(media_a["duration"] - rec["duration_s"]) < 1.0
    assert [m["id"] for m in by_encounter] == [media_a["id"]]
    (consent_a,) = fhir_a["Consent"]
    assert consent_a["status"] == "active" and consent_a["patient"]["reference"] == pid_a
    assert consent_a["provision"]["data"][0]["reference"]["reference"] == f"Encounter/{e_a['id']}"
    assert [c["payload"][0]["contentString"] for c in fhir_a["Communication"]] == ["A: 血压稳定"]
    assert {c["sender"]["display"] for c in fhir_a["Communication"]} == {"李医生"}
    # … and nothing of B's; B's record has B's turn, no recording, no consent, B's words only
    (e_b,) = fhir_b["Encounter"]
    assert e_b["id"] == enc_b["id"].replace("_", ".") and e_b["subject"]["reference"] != pid_a
    assert fhir_b["Media"] == [] and fhir_b["Consent"] == []
    assert [c["payload"][0]["contentString"] for c in fhir_b["Communication"]] == ["B: 明日出院"]
    text_a = json.dumps({k: v for k, v in fhir_a.items() if k != "AuditEvent"},
                        ensure_ascii=False)
    assert e_b["subject"]["reference"] not in text_a and e_b["id"] not in text_a
    assert "B: 明日出院" not in text_a
    (consent_c,) = fhir_c["Consent"]
    assert consent_c["extension"][0]["valueCode"] == "verbal"
    # the audit trail in FHIR: A's rows are about A, and the FHIR searches are in it
    assert fhir_a["AuditEvent"] and all(
        any(x["what"].get("reference") == pid_a for x in a_["entity"])
        for a_ in fhir_a["AuditEvent"])
    assert {"fhir.search", "fhir.read"} <= set(fhir_audit)
    # the round itself has no patient, and its own participants
    assert "subject" not in round_ and round_["class"]["code"] == "VR"


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
