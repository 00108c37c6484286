"""Recording control (issue 10, test 3): consent first, moderators only, everyone told.

Real participants (the Python SDK) over the real signalling; the database says what was kept.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sdk.participant import Participant, RequestFailed
from tests.harness import Server
from tests.recording_support import consent, join


def states(p: Participant) -> list[str]:
    return [e["state"] for e in p.events if e.get("type") == "recording"]


async def wait_state(p: Participant, state: str, timeout: float = 5) -> None:
    assert await p.wait_until(lambda: states(p)[-1:] == [state], timeout), (state, states(p))


async def events(server: Server, room: str) -> list[dict[str, Any]]:
    status, body = await server.api("GET", f"/api/rooms/{room}/events")
    assert status == 200
    return list(body["events"])


async def test_start_needs_consent_or_an_override_reason_that_is_logged(server: Server) -> None:
    room = await server.create_room("joint_clinic")
    doctor = await join(server, room, "dr-li", "doctor", name="李医生")
    patient = await join(server, room, "patient-wang", "patient", name="王女士")
    nurse = await join(server, room, "nurse-zhao", "nurse")
    people = [doctor, patient, nurse]
    try:
        assert doctor.joined["room"]["recording"] is False
        assert doctor.joined["room"]["recording_state"] == {"state": "off", "consent": None}
        # no consent: refused with its own code, nothing recorded
        with pytest.raises(RequestFailed) as refused:
            await doctor.request({"type": "recording", "action": "start"})
        assert refused.value.code == "consent_required"
        assert "override reason" in refused.value.message
        # a participant without the record grant may not start it at all
        with pytest.raises(RequestFailed) as not_allowed:
            await nurse.request({"type": "recording", "action": "start",
                                 "override_reason": "teaching"})
        assert not_allowed.value.code == "not_permitted"
        # a reason too short to say anything
        with pytest.raises(RequestFailed) as short:
            await doctor.request({"type": "recording", "action": "start",
                                  "override_reason": "ok"})
        assert short.value.code == "bad_message"
        status, body = await server.api("GET", f"/api/rooms/{room}/recordings")
        assert status == 200 and body["recordings"] == []

        reason = "court order 2026-17: the whole visit must be documented"
        await doctor.send({"type": "recording", "action": "start", "override_reason": reason})
        for p in people:
            await wait_state(p, "recording")
        event = next(e for e in await events(server, room) if e["type"] == "recording_started")
        assert event["data"]["override_reason"] == reason
        assert event["data"]["by"] == "dr-li" and event["data"]["consent_id"] is None
        last = next(e for e in reversed(patient.events) if e.get("type") == "recording")
        assert last["override"] is True and last["recording_id"].startswith("rec_")

        # pause, resume, stop: everyone hears each
        for action, state in (("pause", "paused"), ("resume", "recording"), ("stop", "off")):
            await doctor.send({"type": "recording", "action": action})
            for p in people:
                await wait_state(p, state)
        assert states(nurse) == ["recording", "paused", "recording", "off"]
        status, body = await server.api("GET", f"/api/rooms/{room}/recordings")
        (recording,) = body["recordings"]
        assert recording["status"] == "stopped"
        assert recording["override_reason"] == reason
        assert [j["kind"] for j in recording["jobs"]] == ["store", "composite"]
        # a late joiner learns the state in joined
        late = await join(server, room, "dr-late", "specialist")
        people.append(late)
        assert late.joined["room"]["recording_state"]["state"] == "off"
    finally:
        for p in people:
            await p.leave()


async def test_patient_consent_in_the_client_after_a_clinician_asks(server: Server) -> None:
    room = await server.create_room("joint_clinic")
    doctor = await join(server, room, "dr-li", "doctor", name="李医生")
    patient = await join(server, room, "patient-wang", "patient")
    people = [doctor, patient]
    try:
        # the patient cannot answer a question nobody asked
        with pytest.raises(RequestFailed) as unasked:
            await patient.request({"type": "recording_consent", "granted": True})
        assert unasked.value.code == "no_consent_request"
        # only clinicians ask
        with pytest.raises(RequestFailed) as asked_by_patient:
            await patient.request({"type": "request_consent"})
        assert asked_by_patient.value.code == "not_permitted"

        await doctor.send({"type": "request_consent"})
        assert await patient.wait_until(
            lambda: any(e.get("type") == "consent_request" for e in patient.events), 5)
        request = next(e for e in patient.events if e.get("type") == "consent_request")
        assert request == {"type": "consent_request", "kind": "recording", "by": "李医生"}

        await patient.send({"type": "recording_consent", "granted": False})
        assert await doctor.wait_until(lambda: any(
            e.get("type") == "recording_consent" and e["granted"] is False
            for e in doctor.events), 5)
        with pytest.raises(RequestFailed) as declined:
            await doctor.request({"type": "recording", "action": "start"})
        assert declined.value.code == "consent_required"
        assert "declined" in declined.value.message

        await doctor.send({"type": "request_consent"})
        await asyncio.sleep(0.2)
        await patient.send({"type": "recording_consent", "granted": True})
        assert await doctor.wait_until(lambda: any(
            e.get("type") == "recording_consent" and e["granted"] is True
            for e in doctor.events), 5)
        await doctor.send({"type": "recording", "action": "start"})
        for p in people:
            await wait_state(p, "recording")
        last = next(e for e in reversed(doctor.events) if e.get("type") == "recording")
        assert last["override"] is False and last["consent"] == "granted"

        status, body = await server.api("GET", f"/api/rooms/{room}/consents")
        assert status == 200
        decisions = [(c["granted"], c["method"], c["given_by"], c["asked_by"])
                     for c in body["consents"]]
        assert decisions == [(False, "in_client", "patient-wang", "dr-li"),
                             (True, "in_client", "patient-wang", "dr-li")]

        # withdrawing consent stops a recording that rested on it
        await doctor.send({"type": "request_consent"})
        await asyncio.sleep(0.2)
        await patient.send({"type": "recording_consent", "granted": False})
        for p in people:
            await wait_state(p, "off")
        stop = next(e for e in reversed(patient.events) if e.get("type") == "recording")
        assert stop["reason"] == "consent_withdrawn" and stop["consent"] == "declined"
    finally:
        for p in people:
            await p.leave()


async def test_api_consent_and_auto_recording(server: Server) -> None:
    """A consent entered through the API (with how it was obtained); a room that records by
    itself once consent exists; start/stop through the API; bad input refused clearly."""
    status, body = await server.api("POST", "/api/rooms", {
        "kind": "clinic", "title": "auto", "patient_ref": "Patient/77", "auto_record": True})
    assert status == 201 and body["auto_record"] is True
    room = body["id"]
    for bad, field in (({"method": "telepathy", "obtained_by": "x"}, "method"),
                       ({"method": "verbal", "obtained_by": "x", "granted": "yes"}, "granted"),
                       ({"method": "verbal", "obtained_by": "x", "given_by_role": "neighbour"},
                        "given_by_role"),
                       ({"method": "verbal"}, "obtained_by")):
        status, error = await server.api("POST", f"/api/rooms/{room}/consents", bad)
        assert status == 400 and field in error["error"]["message"], error
    doctor = await join(server, room, "dr-li", "doctor")
    try:
        given = await consent(server, room)
        assert given["patient_ref"] == "Patient/77" and given["method"] == "written"
        await wait_state(doctor, "recording")  # started by itself
        status, body = await server.api("POST", f"/api/rooms/{room}/recording/start", {})
        assert status == 409 and body["error"]["code"] == "recording_active"
        status, body = await server.api("POST", f"/api/rooms/{room}/recording/stop", {})
        assert status == 200 and body["status"] == "stopped"
        await wait_state(doctor, "off")
        status, body = await server.api("POST", f"/api/rooms/{room}/recording/stop", {})
        assert status == 409 and body["error"]["code"] == "not_recording"
        status, body = await server.api("POST", f"/api/rooms/{room}/recording/start", {})
        assert status == 201 and body["status"] == "recording" and body["consent_id"]
        await wait_state(doctor, "recording")
        status, body = await server.api("GET", "/api/recordings/rec_nope")
        assert status == 404 and body["error"]["code"] == "recording_not_found"
    finally:
        await doctor.leave()
    # ending the room stops the recording
    status, _ = await server.api("POST", f"/api/rooms/{room}/end", {})
    assert status == 200
    status, body = await server.api("GET", f"/api/rooms/{room}/recordings")
    assert [r["status"] for r in body["recordings"]] == ["stopped", "stopped"]
