"""The teaching broadcast, with real clients (the SDK's participants, decoding what they get):
quiet viewers (no roster, no join/leave messages, a coalesced viewer count), a camera that
only publishes, raise hand → promote → the viewer is heard → demote → it is not, moderated
Q&A, attendance (JSON and CSV, minutes against our own clock), and the recording on demand
for the trainees who attended — and for nobody else."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rooms.attendance import as_csv
from rooms.attendance import attendance as attendance_of
from rooms.broadcast import COUNT_INTERVAL_S
from rooms.models import SessionRecord
from sdk.participant import Participant, RequestFailed
from sdk.testmedia import PatternVideoTrack
from signaling.keys import AUDIT
from tests.harness import LOOPBACK, Server, ServerProcess, running_server
from tests.recording_support import call, consent, finish, records_token

ROSTER = ("participant_joined", "participant_left", "participant_updated")


async def token(server: Server, room: str, identity: str, role: str,
                department: str | None = None, name: str | None = None) -> str:
    body: dict[str, Any] = {"identity": identity, "name": name or identity, "role": role,
                            "ttl_s": 600}
    if department:
        body["department"] = department
    status, answer = await server.api("POST", f"/api/rooms/{room}/tokens", body)
    assert status == 201, answer
    assert answer["department"] == department
    return str(answer["token"])


async def joined(server: Server, room: str, identity: str, role: str,
                 department: str | None = None, decode: bool = True) -> Participant:
    p = Participant(server.url, room, await token(server, room, identity, role, department),
                    ice=LOOPBACK, decode=decode)
    await p.join()
    return p


def of_type(p: Participant, kind: str, since: int = 0) -> list[dict[str, Any]]:
    return [e for e in p.events[since:] if e.get("type") == kind]


def about(event: dict[str, Any]) -> str | None:
    if "participant" in event:
        return str(event["participant"]["id"])
    return event.get("participant_id")


def small_video(tag: int) -> PatternVideoTrack:
    return PatternVideoTrack(tag, width=320, height=240, fps=15)


async def test_quiet_viewers_hands_promotion_and_questions(tmp_path: Path) -> None:
    async with running_server(tmp_path / "srv") as server:
        room = await server.create_room("broadcast", "腹腔镜教学直播")
        moderator = await joined(server, room, "dr-mod", "moderator", decode=False)
        presenter = await joined(server, room, "dr-surgeon", "presenter")
        camera = await joined(server, room, "or-cam-1", "camera", decode=False)
        await presenter.publish(video_track=small_video(1), tag=1)
        await camera.publish(audio=False, video_track=small_video(2))
        joining = time.monotonic()
        viewers = list(await asyncio.gather(*(
            joined(server, room, f"trainee-{i}", "viewer") for i in range(6))))
        joining_s = time.monotonic() - joining
        people = [moderator, presenter, camera, *viewers]
        viewer_ids = {v.id for v in viewers}
        try:
            # a viewer's roster: the publishers and the moderator, never another viewer
            for v in viewers:
                listed = {p["id"] for p in v.joined["participants"]}
                assert listed == {moderator.id, presenter.id, camera.id}, listed
            assert not viewer_ids & {p["id"] for p in presenter.joined["participants"]}

            # every viewer decodes both videos (the presenter's and the OR camera's)
            def decoding() -> bool:
                return all(s is not None and s.frames >= 15 and s.frame_size == (320, 240)
                           for v in viewers for s in (v.received_from(presenter.id, "video"),
                                                      v.received_from(camera.id, "video")))

            assert await viewers[0].wait_until(decoding, 20), [v.summary() for v in viewers]
            for v in viewers:
                assert v.received_from(presenter.id, "video").tags[1] > 0  # type: ignore
                assert v.received_from(camera.id, "video").tags[2] > 0  # type: ignore
            # the camera only publishes: no subscribe connection, nothing received
            assert camera.remote == {} and not of_type(camera, "subscriber_offer")

            # the count: one coalesced number, not a message per join
            assert await presenter.wait_until(
                lambda: of_type(presenter, "audience")[-1:] == [
                    {"type": "audience", "viewers": 6}], 5), of_type(presenter, "audience")
            assert of_type(moderator, "audience")[-1]["viewers"] == 6
            # at most one per COUNT_INTERVAL_S while they joined (~1 s together, longer on a
            # starved machine), and the last count
            counts = of_type(presenter, "audience")
            assert len(counts) <= 2 + joining_s // COUNT_INTERVAL_S, (counts, joining_s)
            assert not any(of_type(v, "audience") for v in viewers)
            late = await joined(server, room, "dr-late", "presenter", decode=False)
            people.append(late)
            assert late.joined["room"]["audience"] == {"viewers": 6}

            # hands: only the audience raises one; only those who promote see them
            with pytest.raises(RequestFailed) as refused:
                await presenter.request({"type": "raise_hand", "raised": True})
            assert refused.value.code == "not_permitted"
            first, second, third = viewers[0], viewers[1], viewers[2]
            await first.send({"type": "raise_hand", "raised": True})
            assert await moderator.wait_until(lambda: any(
                [h["participant_id"] for h in e["hands"]] == [first.id]
                for e in of_type(moderator, "hands")), 5)
            assert of_type(moderator, "hands")[-1]["hands"][0]["name"] == "trainee-0"
            assert await first.wait_until(lambda: of_type(first, "hand")[-1:] == [
                {"type": "hand", "raised": True}], 5)
            assert not of_type(presenter, "hands") and not of_type(second, "hands")

            # promote: refused to a viewer and for a non-viewer
            with pytest.raises(RequestFailed) as refused:
                await second.request({"type": "promote", "participant_id": first.id,
                                      "video": False})
            assert refused.value.code == "not_permitted"
            with pytest.raises(RequestFailed) as refused:
                await moderator.request({"type": "promote", "participant_id": presenter.id,
                                         "video": False})
            assert refused.value.code == "bad_message"
            with pytest.raises(RequestFailed) as refused:
                await moderator.request({"type": "demote", "participant_id": first.id})
            assert refused.value.code == "bad_message"
            marks = {id(p): len(p.events) for p in people}
            await moderator.send({"type": "promote", "participant_id": first.id,
                                  "video": False})
            assert await first.wait_until(lambda: bool(of_type(first, "role_changed")), 5)
            changed = of_type(first, "role_changed")[-1]
            assert changed["promoted"] is True
            assert changed["me"]["grants"]["publish_audio"]
            assert not changed["me"]["grants"]["publish_video"]
            for p in (presenter, moderator, second, late):
                assert await p.wait_until(lambda p=p: any(
                    about(e) == first.id for e in of_type(p, "participant_joined",
                                                          marks[id(p)])), 5), p.events[-5:]
            assert await moderator.wait_until(
                lambda: of_type(moderator, "hands")[-1]["hands"] == [], 5)

            # the promoted viewer speaks: the presenter, the moderator and a viewer hear it
            await first.publish(video=False, tag=5)
            heard = (presenter, second, moderator)
            assert await presenter.wait_until(lambda: all(
                p.frames_from(first.id, "audio") >= 50 for p in heard), 15), \
                [p.summary() for p in heard]
            assert presenter.received_from(first.id, "audio").audio_rms > 0  # type: ignore
            with pytest.raises(RequestFailed) as refused:
                await first.publish(audio=False, video_track=small_video(6))
            assert refused.value.code == "not_permitted"

            # demote: it is taken off the roster and its media stops
            await moderator.send({"type": "demote", "participant_id": first.id})
            assert await presenter.wait_until(lambda: any(
                e["participant_id"] == first.id and e["reason"] == "demoted"
                for e in of_type(presenter, "participant_left")), 5)
            assert await first.wait_until(
                lambda: of_type(first, "role_changed")[-1]["promoted"] is False, 5)
            assert not of_type(first, "role_changed")[-1]["me"]["grants"]["publish_audio"]
            await asyncio.sleep(0.5)
            before = [p.frames_from(first.id, "audio") for p in heard]
            await asyncio.sleep(1.5)
            assert [p.frames_from(first.id, "audio") for p in heard] == before
            promoted_window = {id(p): len(p.events) for p in people}

            # questions: pending ones only to the moderator; approved ones to everyone
            asked = await second.request({"type": "ask", "text": "出血怎么控制？"})
            assert asked["type"] == "asked"
            other = await third.request({"type": "ask", "text": "off topic"})
            assert await moderator.wait_until(lambda: {
                e["question"]["id"] for e in of_type(moderator, "question")} == {
                asked["question_id"], other["question_id"]}, 5)
            assert of_type(moderator, "question")[0]["question"]["status"] == "pending"
            with pytest.raises(RequestFailed) as refused:
                await presenter.request({"type": "ask", "text": "?"})
            assert refused.value.code == "not_permitted"
            with pytest.raises(RequestFailed) as refused:
                await second.request({"type": "approve_question",
                                      "question_id": asked["question_id"]})
            assert refused.value.code == "not_permitted"
            with pytest.raises(RequestFailed) as refused:
                await second.request({"type": "ask", "text": "x" * 501})
            assert refused.value.code == "bad_message"
            await moderator.send({"type": "approve_question",
                                  "question_id": asked["question_id"]})
            await moderator.send({"type": "dismiss_question",
                                  "question_id": other["question_id"]})
            for p in (presenter, *viewers, late):
                assert await p.wait_until(lambda p=p: any(
                    e["question"]["status"] == "approved"
                    and e["question"]["text"] == "出血怎么控制？"
                    for e in of_type(p, "question")), 5), p.id
            assert await third.wait_until(lambda: any(
                e["question"]["status"] == "dismissed" for e in of_type(third, "question")), 5)
            for p in (presenter, second, first, viewers[3], late):  # never saw the other
                assert not any(e["question"]["id"] == other["question_id"]
                               for e in of_type(p, "question")), p.id
            with pytest.raises(RequestFailed) as refused:
                await moderator.request({"type": "approve_question",
                                         "question_id": other["question_id"]})
            assert refused.value.code == "unknown_question"
            newcomer = await joined(server, room, "trainee-new", "viewer", decode=False)
            people.append(newcomer)
            assert [q["id"] for q in newcomer.joined["room"]["questions"]] == [
                asked["question_id"]]

            # two viewers leave: nobody hears of it, the count follows
            await viewers[4].leave()
            await viewers[5].leave()
            assert await presenter.wait_until(
                lambda: of_type(presenter, "audience")[-1]["viewers"] == 5, 5)

            # nobody ever got a roster message about a viewer, but about the promoted one
            # while it was promoted
            viewer_ids.add(newcomer.id)
            for p in people:
                for i, e in enumerate(p.events):
                    if e.get("type") in ROSTER and about(e) in viewer_ids:
                        inside = marks[id(p)] <= i < promoted_window[id(p)]
                        assert inside and about(e) == first.id, (p.id, e)

            # promoted with the camera, then without: grants follow, the roster is updated
            fourth = viewers[3]
            await moderator.send({"type": "promote", "participant_id": fourth.id,
                                  "video": True})
            assert await fourth.wait_until(lambda: any(
                e["me"]["grants"]["publish_video"] for e in of_type(fourth, "role_changed")), 5)
            await moderator.send({"type": "promote", "participant_id": fourth.id,
                                  "video": False})
            assert await presenter.wait_until(lambda: any(
                about(e) == fourth.id and not e["participant"]["grants"]["publish_video"]
                for e in of_type(presenter, "participant_updated")), 5)
            assert of_type(fourth, "role_changed")[-1]["me"]["grants"]["publish_audio"]
            await moderator.send({"type": "demote", "participant_id": fourth.id})
            assert await second.wait_until(lambda: any(
                e["participant_id"] == fourth.id and e["reason"] == "demoted"
                for e in of_type(second, "participant_left")), 5)
        finally:
            for p in people:
                await p.close()


def test_attendance_merges_overlapping_stays_and_hides_patients_names() -> None:
    t0 = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)

    def stay(identity: str, role: str, start: float, end: float | None,
             department: str | None = None) -> SessionRecord:
        return SessionRecord(id=f"p_{identity}_{start}", room_id="r", identity=identity,
                             name=f"name-{identity}", role=role,
                             joined_at=t0 + timedelta(seconds=start),
                             left_at=None if end is None else t0 + timedelta(seconds=end),
                             department=department)

    sessions = [
        # a reconnect: the new stay starts before the old one is closed (replaced)
        stay("dr-a", "presenter", 0, 600.5, "普外科"), stay("dr-a", "presenter", 600, 1200),
        stay("t-1", "viewer", 60, 120), stay("t-1", "viewer", 300, None, "心内科"),
        stay("pat", "patient", 10, 70),
    ]
    now = t0 + timedelta(seconds=900)
    people = {a.identity: a for a in attendance_of(sessions, now)}
    assert [a.identity for a in attendance_of(sessions, now)] == ["dr-a", "pat", "t-1"]
    assert people["dr-a"].seconds == 1200 and len(people["dr-a"].intervals) == 1
    assert people["dr-a"].department == "普外科" and people["dr-a"].minutes == 20.0
    assert people["t-1"].seconds == 60 + 600 and len(people["t-1"].intervals) == 2
    assert people["t-1"].last_leave is None and people["t-1"].department == "心内科"
    assert people["pat"].name is None and people["dr-a"].name == "name-dr-a"
    rows = list(csv.DictReader(io.StringIO(as_csv(list(people.values())))))
    assert [(r["identity"], r["name"], r["minutes"]) for r in rows] == [
        ("dr-a", "name-dr-a", "20.00"), ("pat", "", "1.00"), ("t-1", "name-t-1", "11.00")]


async def attendance(server: Server, room: str) -> tuple[dict[str, Any], list[dict[str, str]]]:
    status, body = await server.api("GET", f"/api/rooms/{room}/attendance")
    assert status == 200, body
    async with aiohttp.ClientSession() as http, http.get(
            f"{server.url}/api/rooms/{room}/attendance?format=csv",
            headers=server.api_headers()) as resp:
        assert resp.status == 200 and resp.content_type == "text/csv"
        text = await resp.text()
    return body, list(csv.DictReader(io.StringIO(text)))


async def test_a_promoted_viewer_who_reconnects_or_outlives_a_restart_still_speaks(
        tmp_path: Path) -> None:
    """A trainee on a phone drops off the network while promoted: it comes back a speaker
    (``joined.room.promoted``, its grants, in everyone's roster, heard again), the same after
    the server restarts (promotions come back from the event log); once demoted, a reconnect
    is quiet again."""
    first = await ServerProcess(tmp_path).start()
    try:
        room = await first.create_room("broadcast")
        moderator = await first.participant(room, "dr-mod", "moderator")
        trainee = await first.participant(room, "trainee-1", "viewer")
        assert trainee.joined["room"]["promoted"] is False
        await moderator.send({"type": "promote", "participant_id": trainee.id, "video": False})
        assert await trainee.wait_until(lambda: bool(of_type(trainee, "role_changed")), 5)
        await trainee.close()  # the phone's network drops: no leave
        mark = len(moderator.events)
        again = await first.participant(room, "trainee-1", "viewer")
        assert again.joined["room"]["promoted"] is True
        assert again.joined["room"]["in_audience"] is True
        assert again.joined["me"]["grants"]["publish_audio"]
        assert not again.joined["me"]["grants"]["publish_video"]
        assert await moderator.wait_until(lambda: any(
            about(e) == again.id for e in of_type(moderator, "participant_joined", mark)), 5)
        await again.publish(video=False, tag=7)
        assert await moderator.wait_until(
            lambda: moderator.frames_from(again.id, "audio") >= 25, 15), moderator.summary()
        await again.close()
        await moderator.leave()
    finally:
        first.stop()
    second = await ServerProcess(tmp_path, port=first.port, secret=first.secret).start()
    try:
        back = await second.participant(room, "trainee-1", "viewer")
        assert back.joined["room"]["promoted"] is True
        assert back.joined["me"]["grants"]["publish_audio"]
        moderator = await second.participant(room, "dr-mod", "moderator")
        assert back.id in {p["id"] for p in moderator.joined["participants"]}
        await moderator.send({"type": "demote", "participant_id": back.id})
        assert await back.wait_until(lambda: any(
            e.get("promoted") is False for e in of_type(back, "role_changed")), 5)
        await back.close()
        quiet = await second.participant(room, "trainee-1", "viewer")
        assert quiet.joined["room"]["promoted"] is False
        assert not quiet.joined["me"]["grants"]["publish_audio"]
        with pytest.raises(RequestFailed) as refused:
            await quiet.publish(video=False)
        assert refused.value.code == "not_permitted"
        await quiet.leave()
        await moderator.leave()
    finally:
        second.stop()


async def test_attendance_json_and_csv(tmp_path: Path) -> None:
    async with running_server(tmp_path / "srv") as server:
        room = await server.create_room("broadcast", "教学")
        started = time.monotonic()
        presenter = await joined(server, room, "dr-surgeon", "presenter", "普外科",
                                 decode=False)
        stays: dict[str, list[list[float]]] = {}

        async def come(identity: str, department: str | None) -> Participant:
            p = await joined(server, room, identity, "viewer", department, decode=False)
            stays.setdefault(identity, []).append([time.monotonic(), 0.0])
            return p

        async def go(identity: str, p: Participant) -> None:
            await p.leave()
            stays[identity][-1][1] = time.monotonic()

        a = await come("trainee-a", "心内科")
        b = await come("trainee-b", None)
        await asyncio.sleep(1.5)
        await go("trainee-a", a)
        c = await come("trainee-c", "=HYPERLINK(\"x\")")
        await asyncio.sleep(1.0)
        a = await come("trainee-a", "心内科")
        await asyncio.sleep(2.0)
        await go("trainee-a", a)
        await go("trainee-c", c)
        body, rows = await attendance(server, room)
        now = time.monotonic()
        truth = {who: sum((end or now) - start for start, end in spans)
                 for who, spans in stays.items()}
        assert body["room_id"] == room and body["kind"] == "broadcast"
        people = {p["identity"]: p for p in body["attendees"]}
        assert set(people) == {"dr-surgeon", "trainee-a", "trainee-b", "trainee-c"}
        for who, seconds in truth.items():
            assert abs(people[who]["seconds"] - seconds) < 1.0, (who, people[who], seconds)
            assert abs(people[who]["minutes"] * 60 - seconds) < 1.0
        assert len(people["trainee-a"]["intervals"]) == 2
        assert people["trainee-a"]["department"] == "心内科"
        assert people["trainee-a"]["name"] == "trainee-a" and people["trainee-a"]["role"] == \
            "viewer"
        assert people["trainee-b"]["present"] and people["trainee-b"]["last_leave"] is None
        assert abs(people["dr-surgeon"]["seconds"] - (now - started)) < 1.5
        # the CSV: one row per person, the same minutes, no formula from a department
        by_identity = {r["identity"]: r for r in rows}
        assert len(rows) == 4 and set(by_identity) == set(people)
        viewers = [r for r in rows if r["role"] == "viewer"]
        assert len(viewers) == 3
        for who, seconds in truth.items():
            assert abs(float(by_identity[who]["minutes"]) * 60 - seconds) < 1.0
        assert by_identity["trainee-a"]["intervals"].count(";") == 1
        assert by_identity["trainee-c"]["department"].startswith("'=")
        assert by_identity["trainee-b"]["last_leave"] == ""
        assert by_identity["dr-surgeon"]["department"] == "普外科"
        status, answer = await server.api("GET", f"/api/rooms/{room}/attendance?format=xml")
        assert status == 400 and answer["error"]["code"] == "bad_request"
        status, answer = await server.api("GET", "/api/rooms/r_nope/attendance")
        assert status == 404 and answer["error"]["code"] == "room_not_found"
        status, _ = await server.api("GET", f"/api/rooms/{room}/attendance", headers={})
        assert status == 401
        await b.leave()
        await presenter.leave()

        # an MDT's list never names the patient
        mdt = await server.create_room("mdt", "MDT")
        chair = await joined(server, mdt, "dr-chair", "host", "肿瘤科", decode=False)
        patient = Participant(server.url, mdt, await token(server, mdt, "patient-7", "patient",
                                                           name="王芳"), ice=LOOPBACK)
        await patient.join()
        body, rows = await attendance(server, mdt)
        listed = {p["identity"]: p for p in body["attendees"]}
        assert listed["patient-7"]["name"] is None and listed["dr-chair"]["name"] == "dr-chair"
        assert {r["identity"]: r["name"] for r in rows} == {"dr-chair": "dr-chair",
                                                           "patient-7": ""}
        assert "王芳" not in str(body) and "王芳" not in str(rows)
        await patient.leave()
        await chair.leave()


async def test_the_recording_on_demand_for_those_who_attended(tmp_path: Path) -> None:
    async with running_server(tmp_path / "srv") as server:
        status, created = await server.api("POST", "/api/rooms", {
            "kind": "broadcast", "title": "腹腔镜胆囊切除术", "patient_ref": "Patient/op-1"})
        assert status == 201, created
        room = created["id"]
        other_room = await server.create_room("broadcast", "another broadcast")
        presenter = await joined(server, room, "dr-surgeon", "presenter", decode=False)
        attendee = await joined(server, room, "trainee-in", "viewer", decode=False)
        classmate = await joined(server, room, "trainee-two", "viewer", decode=False)
        elsewhere = await joined(server, other_room, "trainee-else", "viewer", decode=False)
        try:
            await presenter.publish(video_track=small_video(3), tag=3)
            await consent(server, room)  # the kind records by itself once consent is in
            assert await presenter.wait_until(lambda: any(
                e.get("type") == "recording" and e["state"] == "recording"
                for e in presenter.events), 10), presenter.events[-5:]
            await asyncio.sleep(3.0)
        finally:
            for p in (presenter, attendee, classmate, elsewhere):
                await p.leave()
        status, _ = await server.api("POST", f"/api/rooms/{room}/end")
        assert status == 200
        assert await finish(server) == 2

        trainee = await records_token(server, "trainee-in", "viewer")
        absent = await records_token(server, "trainee-never", "viewer")
        other = await records_token(server, "trainee-else", "viewer")

        # the attendee lists the broadcast: no patient, no other trainee, its recording
        status, listed, _ = await call(server, trainee, "GET", "/records/api/encounters")
        assert status == 200, listed
        (encounter,) = listed["encounters"]
        assert encounter["id"] == room and encounter["patient_ref"] is None
        assert {p["identity"] for p in encounter["participants"]} == {"trainee-in",
                                                                      "dr-surgeon"}
        (recording,) = encounter["recordings"]
        assert recording["status"] == "ready"
        status, read, _ = await call(server, trainee, "GET", f"/records/api/encounters/{room}")
        assert status == 200 and read["patient_ref"] is None
        assert "Patient/op-1" not in str(read) and "trainee-two" not in str(read)
        link_path = f"/records/api/encounters/{room}/recordings/{recording['id']}/link"
        status, link, _ = await call(server, trainee, "POST", link_path, {"purpose": "play"})
        assert status == 201, link
        status, media, headers = await call(server, None, "GET", link["url"],
                                            headers={"Range": "bytes=0-99"})
        assert status == 206 and media[4:8] == b"ftyp" and headers["Content-Type"] == \
            "video/mp4"
        # … but not the operated patient's record as a whole
        status, answer, _ = await call(server, trainee, "GET",
                                       "/records/api/encounters?patient=Patient/op-1"
                                       "&reason=teaching review")
        assert status == 403, answer

        # who did not attend (or attended another broadcast) gets nothing
        for token_ in (absent, other):
            status, answer, _ = await call(server, token_, "POST", link_path,
                                           {"purpose": "play"})
            assert status == 403, answer
            status, answer, _ = await call(server, token_, "GET",
                                           f"/records/api/encounters/{room}")
            assert status == 403, answer
        status, answer, _ = await call(server, absent, "GET", "/records/api/encounters")
        assert status == 403, answer
        status, listed, _ = await call(server, other, "GET", "/records/api/encounters")
        assert status == 200 and [e["id"] for e in listed["encounters"]] == [other_room]
        assert listed["encounters"][0]["recordings"] == []

        log = server.app[AUDIT]
        entries = await log.entries()
        assert await log.verify() == (len(entries), [])
    plays = [(e.actor, e.outcome, (e.detail or {}).get("why")) for e in entries
             if e.action == "recording.play"]
    assert ("trainee-in", "allowed", "attended") in plays
    assert any(a == "trainee-never" and o == "denied" for a, o, _ in plays)
    assert any(a == "trainee-else" and o == "denied" for a, o, _ in plays)
