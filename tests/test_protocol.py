"""Protocol v1 over a real WebSocket: every bad message gets its error and costs nothing else.

docs/protocol.md: "A message that is not JSON, has an unknown type, fails the schema, exceeds
signaling.max_message_bytes, carries malformed SDP, or asks for something the participant's
grants do not allow gets an error message. The connection, the participant's place in the room
and everyone's media stay as they were."
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sdk.participant import RequestFailed
from tests.harness import Server, running_server
from tests.protocol_support import (
    AUDIO_TRACK,
    EMPTY_SDP,
    GARBAGE,
    GARBAGE_LAST,
    LIMIT,
    Garbage,
    answers_ping,
    check,
    frame_of_size,
    joined,
    offer_sdp,
    participant_ids,
    send_and_get_error,
    ws_url,
)


@pytest.fixture
async def sdps() -> dict[str, str]:
    return {"audio_offer": await offer_sdp(audio=True),
            "vp8_offer": await offer_sdp(audio=False, video=True),
            "h264_offer": await offer_sdp(audio=False, video=True, video_codec="H264")}


# ---- one bad message at a time -------------------------------------------------------------

@pytest.mark.parametrize("item", GARBAGE + GARBAGE_LAST, ids=lambda g: g.label)
async def test_bad_message_gets_its_error_and_costs_nothing(
        server: Server, sdps: dict[str, str], item: Garbage) -> None:
    room = await server.create_room("mdt")
    witness = await joined(server, room, "witness")
    p = await joined(server, room, "sender")
    try:
        error = await send_and_get_error(p, item.frame(p, sdps))
        assert not check(item, error), check(item, error)
        # the connection is still open and served, and the sender is still in the room
        assert await answers_ping(p), f"no pong after {item.label}; closed={p.closed.is_set()}"
        assert p.id in await participant_ids(server, room)
        assert not any(e.get("type") == "participant_left" for e in witness.events)
        assert not witness.errors
    finally:
        await p.leave()
        await witness.leave()


async def test_garbage_while_others_exchange_media(server: Server, sdps: dict[str, str]) -> None:
    """The crucial one: all the garbage, three times over, from one participant while two others
    send each other video; their frame counts keep rising during and after it."""
    room = await server.create_room("mdt")
    alice = await joined(server, room, "alice")
    bob = await joined(server, room, "bob")
    sender = await joined(server, room, "garbage-sender", decode=False)
    try:
        await alice.publish(tag=1)
        await bob.publish(tag=2)

        def frames() -> tuple[int, int]:
            a = alice.received_from(bob.id, "video")
            b = bob.received_from(alice.id, "video")
            return (a.frames if a else 0, b.frames if b else 0)

        assert await alice.wait_until(lambda: min(frames()) >= 30, timeout=20), (
            alice.summary(), bob.summary())

        samples: list[tuple[float, tuple[int, int]]] = []

        async def sample() -> None:
            while True:
                samples.append((time.monotonic(), frames()))
                await asyncio.sleep(0.1)

        sampler = asyncio.ensure_future(sample())
        problems: list[str] = []
        try:
            await asyncio.sleep(0.3)
            started = time.monotonic()
            at_start = frames()
            for item in GARBAGE * 3 + GARBAGE_LAST:
                if sender.closed.is_set():
                    problems.append(f"the server closed the garbage sender's socket before "
                                    f"{item.label!r}")
                    break
                try:
                    error = await send_and_get_error(sender, item.frame(sender, sdps))
                except AssertionError as exc:
                    problems.append(f"{item.label}: {exc}")
                    continue
                problems += check(item, error)
            finished = time.monotonic()
            at_end = frames()
            await asyncio.sleep(2.0)
            after = frames()
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler

        # media kept flowing both ways while the garbage was sent ...
        assert at_end[0] > at_start[0] and at_end[1] > at_start[1], (at_start, at_end)
        # ... with no stall of more than a second and a half ...
        window = [(t, f) for t, f in samples if started <= t <= finished + 2.0]
        for direction in (0, 1):
            last_change, last_value, worst = started, window[0][1][direction], 0.0
            for t, f in window:
                if f[direction] != last_value:
                    last_change, last_value = t, f[direction]
                worst = max(worst, t - last_change)
            assert worst < 1.5, (direction, worst, window)
        # ... and after it: two more seconds bring about 60 more frames each way
        assert after[0] - at_end[0] >= 20 and after[1] - at_end[1] >= 20, (at_end, after)
        assert not alice.errors and not bob.errors, (alice.errors, bob.errors)
        assert sender.id in await participant_ids(server, room), problems
        assert await answers_ping(sender), problems
        assert not problems, "\n".join(problems)
    finally:
        for p in (alice, bob, sender):
            await p.leave()


# ---- size limits -------------------------------------------------------------------------------

async def test_frame_at_the_limit_is_read_and_one_byte_more_is_too_large(
        server: Server) -> None:
    room = await server.create_room("mdt")
    p = await joined(server, room, "big-talker")
    try:
        at_limit = await send_and_get_error(p, frame_of_size(LIMIT))
        assert at_limit["code"] == "bad_message", at_limit  # read and validated: "pad"
        assert "pad" in at_limit["message"]
        over = await send_and_get_error(p, frame_of_size(LIMIT + 1))
        assert over["code"] == "message_too_large", over
        assert str(LIMIT + 1) in over["message"] and str(LIMIT) in over["message"]
        assert await answers_ping(p)
        assert p.id in await participant_ids(server, room)
        # many of them in a row change nothing either
        for _ in range(5):
            assert (await send_and_get_error(p, frame_of_size(2 * LIMIT)))["code"] == \
                "message_too_large"
        assert await answers_ping(p)
    finally:
        await p.leave()


async def test_frame_beyond_the_hard_cap_closes_the_socket(server: Server) -> None:
    room = await server.create_room("mdt")
    witness = await joined(server, room, "witness")
    p = await joined(server, room, "flooder")
    try:
        # the server closes while the frame is still being written: the write may fail
        with contextlib.suppress(ConnectionError):
            await p.send_raw("x" * (16 * LIMIT + 1))
        await asyncio.wait_for(p.closed.wait(), 10)
        assert p._ws is not None and p._ws.close_code == 1009
        assert await witness.wait_until(
            lambda: any(e.get("type") == "participant_left" and e["participant_id"] == p.id
                        for e in witness.events), timeout=5)
        assert p.id not in await participant_ids(server, room)
        assert await answers_ping(witness)
    finally:
        await p.close()
        await witness.leave()


async def test_the_limit_follows_the_setting(tmp_path: Path) -> None:
    async with running_server(tmp_path, signaling={"max_message_bytes": 4096}) as server:
        room = await server.create_room("mdt")
        p = await joined(server, room, "a")
        try:
            assert (await send_and_get_error(p, frame_of_size(4097)))["code"] == \
                "message_too_large"
            assert (await send_and_get_error(p, frame_of_size(4096)))["code"] == "bad_message"
            assert await answers_ping(p)
        finally:
            await p.leave()


# ---- SDP ---------------------------------------------------------------------------------------

async def test_bad_sdp_then_a_real_publish_works(server: Server, sdps: dict[str, str]) -> None:
    room = await server.create_room("mdt")
    watcher = await joined(server, room, "watcher")
    p = await joined(server, room, "publisher")
    try:
        for sdp in ("not an sdp", "v=0\r\nm=video garbage\r\n", "v=0\r\nm=audio\r\n"):
            with pytest.raises(RequestFailed) as info:
                await p.request({"type": "publish", "sdp": sdp, "tracks": [AUDIO_TRACK]})
            assert info.value.code == "bad_sdp", (sdp, info.value)
        with pytest.raises(RequestFailed) as info:
            await p.request({"type": "publish", "sdp": sdps["h264_offer"],
                             "tracks": [{"mid": "0", "kind": "video", "source": "camera"}]})
        assert info.value.code == "bad_sdp"
        assert "vp8" in info.value.message.lower()
        assert not any(e.get("type") == "track_published" for e in watcher.events)

        reply = await p.publish(tag=5)
        assert len(reply["tracks"]) == 2
        assert await watcher.wait_until(
            lambda: watcher.frames_from(p.id, "video") > 10,
            timeout=15), watcher.summary()
        published = [e for e in watcher.events if e.get("type") == "track_published"]
        assert {e["track"]["id"] for e in published} == set(p.published.values())
    finally:
        await p.leave()
        await watcher.leave()


async def test_publish_listing_a_track_the_sdp_does_not_carry(
        server: Server, sdps: dict[str, str]) -> None:
    """An offer with one audio m-line, announced as audio + video: the offer cannot be used
    for what it claims, so bad_sdp (or bad_message), never an internal fault; nothing is
    announced, and the participant can publish properly afterwards."""
    room = await server.create_room("mdt")
    watcher = await joined(server, room, "watcher")
    p = await joined(server, room, "publisher")
    try:
        for sdp, tracks in [
            (sdps["audio_offer"], [AUDIO_TRACK, {"mid": "1", "kind": "video",
                                                 "source": "camera"}]),
            (EMPTY_SDP, [AUDIO_TRACK]),
        ]:
            with pytest.raises(RequestFailed) as info:
                await p.request({"type": "publish", "sdp": sdp, "tracks": tracks})
            assert info.value.code in ("bad_sdp", "bad_message"), info.value
        await asyncio.sleep(0.5)
        assert not any(e.get("type") == "track_published" for e in watcher.events), \
            watcher.events
        _, body = await server.api("GET", f"/api/rooms/{room}")
        assert all(not x["tracks"] for x in body["participants"]), body
        await p.publish(tag=6)
        assert await watcher.wait_until(
            lambda: watcher.frames_from(p.id, "video") > 5,
            timeout=15), watcher.summary()
    finally:
        await p.leave()
        await watcher.leave()


async def test_subscriber_answer_with_a_wrong_seq(server: Server) -> None:
    room = await server.create_room("mdt")
    publisher = await joined(server, room, "publisher")
    viewer = await joined(server, room, "viewer", role="viewer")
    try:
        await publisher.publish(tag=7)
        # let the real negotiation settle first: media arrives
        assert await viewer.wait_until(
            lambda: viewer.frames_from(publisher.id, "video") > 10, timeout=15), viewer.summary()
        seq = max(e["seq"] for e in viewer.events if e.get("type") == "subscriber_offer")
        # answers to offers never made, and to the offer already answered
        for wrong in (seq + 50, seq + 1000, seq):
            with pytest.raises(RequestFailed) as info:
                await viewer.request({"type": "subscriber_answer", "seq": wrong,
                                      "sdp": EMPTY_SDP})
            assert info.value.code == "bad_sdp", info.value
            assert str(wrong) in info.value.message
        stats = viewer.received_from(publisher.id, "video")
        assert stats is not None
        count = stats.frames
        await asyncio.sleep(1)
        assert stats.frames > count + 10, (count, stats.frames)
        assert await answers_ping(viewer)
    finally:
        await viewer.leave()
        await publisher.leave()


# ---- join state --------------------------------------------------------------------------------

@pytest.mark.parametrize("message", [
    {"type": "mute", "track_id": "t_1", "muted": True},
    {"type": "unpublish", "track_id": "t_1"},
    {"type": "publish", "sdp": "v=0\r\n", "tracks": [AUDIO_TRACK]},
    {"type": "subscriber_answer", "sdp": "v=0\r\n", "seq": 1},
    {"type": "leave"},
])
async def test_message_before_join_is_not_joined(server: Server,
                                                 message: dict[str, Any]) -> None:
    room = await server.create_room("mdt")
    token = await server.token(room, "early-bird")
    assert server.http is not None
    async with server.http.ws_connect(ws_url(server, room)) as ws:
        await ws.send_json({**message, "id": "early"})
        reply = await ws.receive_json(timeout=5)
        assert reply["type"] == "error"
        assert reply["code"] == "not_joined"
        assert reply["ref"] == "early"
        assert await participant_ids(server, room) == set()
        # the socket stays usable: the join that follows works
        await ws.send_json({"type": "join", "v": 1, "token": token, "id": "j"})
        reply = await ws.receive_json(timeout=5)
        assert reply["type"] == "joined", reply
        assert reply["ref"] == "j"
        assert reply["me"]["identity"] == "early-bird"
        await ws.send_json({"type": "leave"})


async def test_second_join_is_already_joined(server: Server) -> None:
    room = await server.create_room("mdt")
    p = await joined(server, room, "twice")
    try:
        first_id = p.id
        for token in (p.token, await server.token(room, "someone-else")):
            with pytest.raises(RequestFailed) as info:
                await p.request({"type": "join", "v": 1, "token": token})
            assert info.value.code == "already_joined"
        assert await participant_ids(server, room) == {first_id}
        assert await answers_ping(p)
        _, body = await server.api("GET", f"/api/rooms/{room}")
        assert [x["identity"] for x in body["participants"]] == ["twice"]
    finally:
        await p.leave()


@pytest.mark.parametrize("version", [2, 0, -1, 100])
async def test_unsupported_version(server: Server, version: int) -> None:
    room = await server.create_room("mdt")
    token = await server.token(room, "from-the-future")
    assert server.http is not None
    async with server.http.ws_connect(ws_url(server, room)) as ws:
        await ws.send_json({"type": "join", "v": version, "token": token, "id": "v"})
        reply = await ws.receive_json(timeout=5)
        assert reply["type"] == "error"
        assert reply["code"] == "unsupported_version"
        assert reply["ref"] == "v"
        assert str(version) in reply["message"]
        closing = await ws.receive(timeout=5)
        assert closing.type == aiohttp.WSMsgType.CLOSE
        assert closing.data == 4001
    assert await participant_ids(server, room) == set()


async def test_version_must_be_an_integer(server: Server) -> None:
    room = await server.create_room("mdt")
    token = await server.token(room, "stringly")
    assert server.http is not None
    async with server.http.ws_connect(ws_url(server, room)) as ws:
        await ws.send_json({"type": "join", "v": "1", "token": token, "id": "v"})
        reply = await ws.receive_json(timeout=5)
        assert reply["code"] == "bad_message"
        assert "v" in reply["message"]


# ---- replies -----------------------------------------------------------------------------------

async def test_pong_echoes_t_and_the_ping_id(server: Server) -> None:
    """"Client messages may carry an id; replies and errors caused by that message echo it as
    ref" — a pong is the reply to a ping."""
    room = await server.create_room("mdt")
    p = await joined(server, room, "pinger")
    try:
        try:
            reply = await p.request({"type": "ping", "t": 123.5}, timeout=3)
        except TimeoutError:
            pongs = [e for e in p.events if e.get("type") == "pong"]
            pytest.fail(f"no reply carrying the ping's id as ref; pongs received: {pongs}")
        assert reply["type"] == "pong"
        assert reply["t"] == 123.5
    finally:
        await p.leave()


async def test_ping_without_t(server: Server) -> None:
    room = await server.create_room("mdt")
    p = await joined(server, room, "pinger")
    try:
        before = len(p.events)
        await p.send({"type": "ping"})
        assert await p.wait_until(
            lambda: any(e.get("type") == "pong" for e in p.events[before:]), 5)
    finally:
        await p.leave()


async def test_leave_closes_with_1000_and_tells_the_others(server: Server) -> None:
    room = await server.create_room("mdt")
    stay = await joined(server, room, "stay")
    go = await joined(server, room, "go")
    try:
        go_id = go.id
        await go.send({"type": "leave"})
        await asyncio.wait_for(go.closed.wait(), 5)
        assert go._ws is not None and go._ws.close_code == 1000
        assert await stay.wait_until(lambda: any(
            e.get("type") == "participant_left" and e["participant_id"] == go_id
            and e["reason"] == "left" for e in stay.events), 5)
    finally:
        await go.close()
        await stay.leave()


# ---- permissions -------------------------------------------------------------------------------

async def test_viewer_cannot_publish_in_a_broadcast(server: Server) -> None:
    room = await server.create_room("broadcast")
    host = await joined(server, room, "host", role="host")
    presenter = await joined(server, room, "presenter", role="presenter")
    viewer = await joined(server, room, "viewer", role="viewer")
    try:
        await presenter.publish(tag=2)
        attempts: list[dict[str, Any]] = [
            {"audio": True, "video": True},
            {"audio": True, "video": False},
            {"audio": False, "video": True},
            {"audio": False, "video": True, "source": "screen"},
        ]
        for kwargs in attempts:
            with pytest.raises(RequestFailed) as info:
                await viewer.publish(tag=9, **kwargs)
            assert info.value.code == "not_permitted", (kwargs, info.value)
            assert "viewer" in info.value.message

        # the viewer is still a working member: it receives the presenter
        assert await viewer.wait_until(
            lambda: viewer.frames_from(presenter.id, "video") > 10, timeout=15), viewer.summary()
        await asyncio.sleep(1)
        for other in (host, presenter):
            assert not [e for e in other.events if e.get("type") == "track_published"
                        and e["track"]["participant_id"] == viewer.id], other.events
            offered = [t for e in other.events if e.get("type") == "subscriber_offer"
                       for t in e["tracks"]]
            assert not [t for t in offered if t["participant_id"] == viewer.id], offered
            assert not [s for s in other.remote.values() if s.participant_id == viewer.id]
        _, body = await server.api("GET", f"/api/rooms/{room}")
        tracks = {x["id"]: x["tracks"] for x in body["participants"]}
        assert tracks[viewer.id] == []
        assert len(tracks[presenter.id]) == 2
        assert viewer.id in tracks
    finally:
        for p in (viewer, presenter, host):
            await p.leave()


async def test_clinic_patient_cannot_share_a_screen(server: Server) -> None:
    room = await server.create_room("clinic")
    doctor = await joined(server, room, "doctor", role="doctor")
    patient = await joined(server, room, "patient", role="patient")
    try:
        with pytest.raises(RequestFailed) as info:
            await patient.publish(audio=False, video=True, source="screen")
        assert info.value.code == "not_permitted"  # whatever the lobby says: never allowed
        await doctor.send({"type": "admit", "participant_id": patient.id})
        assert await patient.wait_until(
            lambda: any(e["type"] == "admitted" for e in patient.events), timeout=5)
        reply = await patient.publish(tag=1)  # camera and microphone are fine
        assert len(reply["tracks"]) == 2
    finally:
        await patient.leave()
        await doctor.leave()
