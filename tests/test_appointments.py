"""Issue 12 (scheduling): an appointment booked through the API gives each invitee a link;
links open ``rooms.join_early_s`` before the start (earlier: ``too_early``, with the time); the
appointment lists with who is invited (no patient's name kept) and shows in the record as a
FHIR Appointment whose status and participants follow who came."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from rooms.models import utcnow
from sdk.participant import JoinRefused, Participant
from tests.fhir_support import search
from tests.harness import LOOPBACK, running_server

ANNA = "Patient/anna"
PEOPLE = [{"identity": "dr-li", "name": "李医生", "role": "doctor"},
          {"identity": "anna", "name": "王安娜", "role": "patient"},
          {"identity": "anna-son", "name": "王小明", "role": "guardian"}]


def booking(start_in: timedelta, **extra: Any) -> dict[str, Any]:
    start = utcnow() + start_in
    return {"kind": "clinic", "title": "复诊", "patient_ref": ANNA,
            "start": start.isoformat(), "end": (start + timedelta(minutes=20)).isoformat(),
            "participants": PEOPLE, **extra}


def link_of(body: dict[str, Any], identity: str) -> str:
    url = next(x["join_url"] for x in body["links"] if x["identity"] == identity)
    return str(url).split("#t=")[1]


async def test_book_join_in_the_window_and_see_it_in_fhir(tmp_path: Path) -> None:
    async with running_server(tmp_path / "srv", rooms={"join_early_s": 60}) as server:
        status, later = await server.api("POST", "/api/appointments",
                                         booking(timedelta(minutes=10)))
        assert status == 201, later
        room_later = later["appointment"]["id"]
        assert [x["identity"] for x in later["links"]] == ["dr-li", "anna", "anna-son"]
        # too early: refused, saying when it opens
        early = Participant(server.url, room_later, link_of(later, "dr-li"), ice=LOOPBACK)
        try:
            await early.join()
            raise AssertionError("joined ten minutes early")
        except JoinRefused as exc:
            assert exc.code == "too_early" and later["opens_at"] in exc.message

        status, soon = await server.api("POST", "/api/appointments",
                                        booking(timedelta(seconds=30)))
        assert status == 201, soon
        room_soon = soon["appointment"]["id"]
        doctor = Participant(server.url, room_soon, link_of(soon, "dr-li"), ice=LOOPBACK)
        await doctor.join()
        patient = Participant(server.url, room_soon, link_of(soon, "anna"), ice=LOOPBACK)
        await patient.join()
        assert patient.joined["me"]["name"] == "王安娜"  # the link carries it …

        status, listed = await server.api("GET", "/api/appointments")
        assert status == 200
        assert [a["id"] for a in listed["appointments"]] == [room_soon, room_later]
        assert listed["appointments"][0]["participants"] == [
            {"identity": "dr-li", "role": "doctor", "name": "李医生"},
            {"identity": "anna", "role": "patient", "name": None},  # … it is not kept
            {"identity": "anna-son", "role": "guardian", "name": None}]
        status, one = await server.api("GET", f"/api/appointments/{room_soon}")
        assert status == 200 and one["scheduled_start"] == soon["appointment"][
            "scheduled_start"]

        found = await search(server, f"Appointment?patient={ANNA.split('/')[1]}")
        by_id = {a["id"]: a for a in found}
        now = by_id[room_soon.replace("_", ".")]
        assert now["status"] == "arrived" and by_id[room_later.replace("_", ".")][
            "status"] == "booked"
        assert now["serviceType"][0]["coding"][0]["code"] == "clinic"
        assert now["participant"][0]["actor"]["reference"].startswith("Patient/")
        states = {p["actor"].get("identifier", {}).get("value"): p["status"]
                  for p in now["participant"]}
        assert states["dr-li"] == "accepted" and states["anna-son"] == "needs-action"
        assert "王安娜" not in str(found)
        for p in (doctor, patient):
            await p.leave()
        status, _ = await server.api("POST", f"/api/rooms/{room_soon}/end")
        (done,) = [a for a in await search(server, f"Appointment?_id={now['id']}")]
        assert done["status"] == "fulfilled"

        # what a booking must hold
        for bad, why in (
                (booking(timedelta(minutes=5), end=utcnow().isoformat()), "end"),
                (booking(timedelta(days=30)), "at most"),
                (booking(timedelta(minutes=5), participants=[
                    {"identity": "v", "name": "v", "role": "viewer"}]), "viewer"),
                (booking(timedelta(minutes=5), participants=PEOPLE + PEOPLE[:1]), "once"),
                (booking(timedelta(minutes=5), participants=[]), "participants")):
            status, body = await server.api("POST", "/api/appointments", bad)
            assert status == 400 and why in body["error"]["message"], (why, body)
