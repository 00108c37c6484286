"""A rolling restart of a single node with a recorded consultation in progress (issue 13, test 6).

Doctor and patient in Chromium on a ``huizhen serve`` process; the consultation is recorded.
SIGTERM drains the node (clients told ``reconnect`` + 1012, the recording finished), it exits;
a new node starts on the same port and data folder; both browsers decode video again within
5 s of the SIGTERM, and nothing is lost: the first part of the recording is finished (not
interrupted), its files decode, the second part starts by itself, and the event log has every
leave and join.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import pytest
from playwright.async_api import Browser

from huizhen.config import generate_secret
from tests.harness import ServerProcess, figures, wait_for
from tests.recording_support import consent, decoded_frames
from tests.web_support import Client, close_all, decodes, open_call, sub_video_frames

pytestmark = pytest.mark.browser

LIMIT_S = 5.0


async def _resumed(*clients: Client) -> bool:
    """Each page has a new subscribe connection that decodes video again."""
    for c in clients:
        fresh = await c.js("!!window.huizhen.pcs.subscribe && "
                           "window.huizhen.pcs.subscribe !== window.__oldSub")
        if not fresh or not any(f >= 5 for f in await sub_video_frames(c)):
            return False
    return True


async def test_rolling_restart_resumes_media_within_5s_and_loses_nothing(
        tmp_path: Path, browser: Browser) -> None:
    secret = generate_secret()
    env = {"HUIZHEN_SERVER__DRAIN_TIMEOUT_S": "10",
           "HUIZHEN_AUTH__API_KEYS": json.dumps([{"key": "test-key", "secret": secret,
                                                  "admin": True}])}
    first = await ServerProcess(tmp_path, secret=secret, env=env).start()
    second: ServerProcess | None = None
    clients: list[Client] = []
    try:
        room, doctor, patient = await open_call(first, browser)
        clients = [doctor, patient]
        await consent(first, room)
        status, part1 = await first.api("POST", f"/api/rooms/{room}/recording/start", {})
        assert status == 201, part1
        assert await wait_for(lambda: _both_decode(doctor, patient), 15), (
            doctor.log(), patient.log(), first.log_path.read_text()[-3000:])
        for c in clients:
            await c.js("window.__oldSub = window.huizhen.pcs.subscribe")

        assert first.proc is not None
        t0 = time.monotonic()
        first.proc.send_signal(signal.SIGTERM)  # the node is patched: drain, exit, start anew
        code = await asyncio.to_thread(first.proc.wait, LIMIT_S)
        exited_s = time.monotonic() - t0
        assert code == 0, first.log_path.read_text()[-3000:]
        second = await ServerProcess(tmp_path, port=first.port, secret=secret, env=env).start()
        started_s = time.monotonic() - t0
        ok = await wait_for(lambda: _resumed(doctor, patient),
                            max(0.1, LIMIT_S - (time.monotonic() - t0)), interval=0.05)
        took = time.monotonic() - t0
        figures("rolling restart", drained_and_exited_s=exited_s, new_node_ready_s=started_s,
                media_back_s=took)
        assert ok and took <= LIMIT_S, (took, await sub_video_frames(doctor),
                                        await sub_video_frames(patient), doctor.log(),
                                        patient.log())
        for c in clients:  # the same page, in the call: no reload, no lobby again
            assert await c.js("window.huizhen.view") == "call"
            assert await c.js("performance.getEntriesByType('navigation').length") == 1

        # the recording: part 1 finished by the drain, its files decode; part 2 by itself
        assert await wait_for(lambda: _parts(second, room, 2), 5)
        status, body = await second.api("GET", f"/api/rooms/{room}/recordings")
        first_part = next(r for r in body["recordings"] if r["id"] == part1["id"])
        assert first_part["status"] == "stopped" and not first_part["interrupted"], first_part
        assert {j["kind"] for j in first_part["jobs"]} == {"store", "composite"}, first_part
        folder = second.settings.recordings_folder / part1["id"]
        journal = json.loads((folder / "journal.json").read_text())
        assert all(t["closed"] for t in journal["tracks"]), journal
        videos = [folder / t["name"] for t in journal["tracks"] if t["kind"] == "video"]
        assert len(videos) == 2, journal
        for path in videos:
            assert len(decoded_frames(path)) > 10, path

        status, body = await second.api("GET", f"/api/rooms/{room}/events")
        events = body["events"]
        left = [e["data"]["identity"] for e in events if e["type"] == "participant_left"
                and e["data"]["reason"] == "server_drain"]
        assert sorted(left) == ["dr-li", "pat-wang"], events
        joined = [e["data"]["identity"] for e in events if e["type"] == "participant_joined"]
        assert sorted(joined) == ["dr-li", "dr-li", "pat-wang", "pat-wang"], joined
        stops = [e["data"]["reason"] for e in events if e["type"] == "recording_stopped"]
        starts = [e["data"]["by"] for e in events if e["type"] == "recording_started"]
        assert stops == ["server_drain"] and starts[1:] == ["drain"], events
    finally:
        await close_all(*clients)
        for node in (first, second):
            if node is not None:
                node.stop()


async def _both_decode(a: Client, b: Client) -> bool:
    return await decodes(a) and await decodes(b)


async def _parts(server: ServerProcess, room: str, n: int) -> bool:
    status, body = await server.api("GET", f"/api/rooms/{room}/recordings")
    return status == 200 and len(body["recordings"]) >= n
