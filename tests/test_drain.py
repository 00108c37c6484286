"""Draining a node (issue 13): new rooms and joins refused with ``draining``, /readyz 503,
clients told to reconnect (``reconnect`` hint, close 1012), recordings finished; SIGTERM and
``huizhen drain`` both drain and the process exits; the admin API (admin keys only).

The rolling restart in browsers (media back within 5 s) is tests/test_web_drain.py.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import av

from huizhen.config import ApiKey, generate_secret
from recording.manifest import Manifest
from sdk.participant import JoinRefused, Participant
from signaling.auth import mint_api_token
from signaling.keys import DRAIN
from tests.harness import LOOPBACK, Server, ServerProcess, running_server, wait_for
from tests.recording_support import consent, finish

ADMIN = ApiKey(key="ops", secret=generate_secret(), admin=True)


def admin_headers(server: Server | ServerProcess, key: ApiKey = ADMIN) -> dict[str, str]:
    token = mint_api_token(key.key, key.secret, server.settings.auth.audience)
    return {"Authorization": f"Bearer {token}"}


async def joined(server: Server | ServerProcess, room: str, identity: str, role: str
                 ) -> Participant:
    p = Participant(server.url, room, await server.token(room, identity, role), ice=LOOPBACK,
                    decode=False)
    await p.join()
    return p


def events_of(body: dict[str, Any], type_: str) -> list[dict[str, Any]]:
    return [e for e in body["events"] if e["type"] == type_]


async def test_admin_api_lists_kicks_ends_and_refuses_other_keys(tmp_path: Path) -> None:
    async with running_server(tmp_path, auth={"api_keys": [
            ApiKey(key="test-key", secret=generate_secret()).model_dump(),
            ADMIN.model_dump()]}) as server:
        # a hospital system's key is no admin key: 403 with what to configure
        for method, path in (("GET", "/api/admin/node"), ("GET", "/api/admin/rooms"),
                             ("POST", "/api/admin/drain"),
                             ("POST", "/api/admin/rooms/r1/end"),
                             ("POST", "/api/admin/rooms/r1/participants/p1/kick")):
            status, body = await server.api(method, path)
            assert status == 403, (path, body)
            assert body["error"]["code"] == "admin_required"
            assert '"admin": true' in body["error"]["message"]
        status, body = await server.api("GET", "/api/admin/node", headers={})
        assert status == 401, body

        status, node = await server.api("GET", "/api/admin/node",
                                        headers=admin_headers(server))
        assert status == 200, node
        assert node["rooms"] == 0 and node["participants"] == 0 and node["draining"] is False
        assert node["drain"] is None and node["cpu_count"] >= 1
        assert node["event_loop_lag_ms"]["last"] >= 0 and node["cpu_percent"] >= 0

        room = await server.create_room("clinic", "Cardiology")
        doctor = await joined(server, room, "dr-li", "doctor")
        patient = await joined(server, room, "pat-wang", "patient")
        try:
            status, body = await server.api("GET", "/api/admin/rooms",
                                            headers=admin_headers(server))
            assert status == 200, body
            [live] = body["rooms"]
            assert live["id"] == room and live["recording"] == "off"
            assert sorted(p["identity"] for p in live["participants"]) == ["dr-li", "pat-wang"]
            status, node = await server.api("GET", "/api/admin/node",
                                            headers=admin_headers(server))
            assert (node["rooms"], node["participants"]) == (1, 2), node

            # kick: told `removed`, closed 4003, may not come back; the event log says by whom
            status, body = await server.api(
                "POST", f"/api/admin/rooms/{room}/participants/{patient.id}/kick",
                headers=admin_headers(server))
            assert status == 200, body
            assert body["participant"]["identity"] == "pat-wang"
            assert await wait_for(_closed(patient), 5)
            assert any(e["type"] == "removed" for e in patient.events)
            assert patient._ws is not None and patient._ws.close_code == 4003
            try:
                await joined(server, room, "pat-wang", "patient")
                raise AssertionError("a kicked identity came back")
            except JoinRefused as exc:
                assert exc.code == "removed"
            status, body = await server.api(
                "POST", f"/api/admin/rooms/{room}/participants/{patient.id}/kick",
                headers=admin_headers(server))
            assert status == 404 and body["error"]["code"] == "participant_not_found", body
            status, body = await server.api(
                "POST", "/api/admin/rooms/nope/participants/p1/kick",
                headers=admin_headers(server))
            assert status == 404 and body["error"]["code"] == "room_not_found", body

            # end a room: everyone hears room_ended; a second end conflicts
            status, body = await server.api("POST", f"/api/admin/rooms/{room}/end",
                                            {"reason": "maintenance"},
                                            headers=admin_headers(server))
            assert status == 200 and body["status"] == "ended", body
            assert await doctor.wait_until(
                lambda: any(e["type"] == "room_ended" for e in doctor.events), 5)
            status, body = await server.api("POST", f"/api/admin/rooms/{room}/end",
                                            headers=admin_headers(server))
            assert status == 409, body
            status, body = await server.api("GET", f"/api/rooms/{room}/events")
            removed = events_of(body, "participant_removed")
            assert removed and removed[0]["data"]["by"] == "admin:ops", removed
            ended = events_of(body, "room_ended")[0]["data"]
            assert ended == {"reason": "maintenance", "by": "admin:ops"}, ended
            status, body = await server.api("GET", "/api/admin/rooms",
                                            headers=admin_headers(server))
            assert body["rooms"] == [], body
        finally:
            for p in (doctor, patient):
                await p.leave()


def _closed(p: Participant) -> Any:
    async def check() -> bool:
        return p.closed.is_set()
    return check


async def test_drain_refuses_rooms_and_joins_flips_readyz_and_sends_clients_away(
        tmp_path: Path) -> None:
    async with running_server(tmp_path, auth={"api_keys": [
            ApiKey(key="test-key", secret=generate_secret()).model_dump(),
            ADMIN.model_dump()]}, server={"drain_timeout_s": 5, "drain_retry_ms": 300}
    ) as server:
        room = await server.create_room("clinic", "Dermatology")
        late_token = await server.token(room, "pat-late", "patient")
        doctor = await joined(server, room, "dr-li", "doctor")
        async with server.http.get(server.url + "/readyz") as resp:
            assert resp.status == 200

        status, body = await server.api("POST", "/api/admin/drain",
                                        headers=admin_headers(server))
        assert status == 202, body
        assert body["drain"]["by"] == "admin:ops" and body["drain"]["timeout_s"] == 5
        # the client is told to come back (in retry_ms), then its socket closes with 1012
        assert await wait_for(_closed(doctor), 5)
        hints = [e for e in doctor.events if e["type"] == "reconnect"]
        assert hints == [{"type": "reconnect", "reason": "draining", "retry_ms": 300}]
        assert doctor._ws is not None and doctor._ws.close_code == 1012

        async with server.http.get(server.url + "/readyz") as resp:
            assert resp.status == 503
            assert (await resp.json())["status"] == "draining"
        status, body = await server.api("POST", "/api/rooms", {"kind": "clinic",
                                                               "title": "new"})
        assert status == 503 and body["error"]["code"] == "draining", body
        assert "try again" in body["error"]["message"]
        for token in (late_token, doctor.token):  # newcomer and the one sent away
            late = Participant(server.url, room, token, ice=LOOPBACK, decode=False)
            try:
                await late.join()
                raise AssertionError("a draining node took a join")
            except JoinRefused as exc:
                assert exc.code == "draining", exc
            assert late._ws is not None and late._ws.close_code == 1012

        assert server.app is not None
        drain = server.app[DRAIN]
        assert await wait_for(lambda: _true(drain.done.is_set()), 5)
        status, node = await server.api("GET", "/api/admin/node",
                                        headers=admin_headers(server))
        assert node["draining"] is True and node["drain"]["phase"] == "drained", node
        assert node["drain"]["clients_told"] == 1 and node["drain"]["timed_out"] is False
        status, body = await server.api("POST", "/api/admin/drain",
                                        headers=admin_headers(server))  # again: its state
        assert status == 202 and body["drain"]["phase"] == "drained"
        status, body = await server.api("GET", f"/api/rooms/{room}/sessions")
        assert [s["leave_reason"] for s in body["sessions"]] == ["server_drain"], body
        await doctor.leave()


async def _true(value: bool) -> bool:
    return value


async def test_sigterm_drains_finishes_the_recording_and_a_new_node_goes_on(
        tmp_path: Path) -> None:
    """SIGTERM with a recorded call: the node finishes the recording, tells the clients,
    exits 0; the next node on the same data folder resumes the recording in a new part when
    the first participant is back, and every event is in the log."""
    secret = generate_secret()
    env = {"HUIZHEN_AUTH__API_KEYS": json.dumps([{"key": "test-key", "secret": secret,
                                                  "admin": True}]),
           "HUIZHEN_SERVER__DRAIN_TIMEOUT_S": "10"}
    first = await ServerProcess(tmp_path, secret=secret, env=env).start()
    room = await first.create_room("clinic", "Follow-up")
    await consent(first, room)
    doctor = await joined(first, room, "dr-li", "doctor")
    await doctor.publish(audio=True, video=True)
    status, body = await first.api("POST", f"/api/rooms/{room}/recording/start", {})
    assert status == 201, body
    await asyncio.sleep(2.0)
    assert first.proc is not None
    t0 = time.monotonic()
    first.proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(first.proc.wait, 15)
    took = time.monotonic() - t0
    assert code == 0, first.log_path.read_text()[-3000:]
    assert took < 5, took
    assert any(e["type"] == "reconnect" for e in doctor.events)
    log = first.log_path.read_text()
    assert "drain finished" in log and "drain started" in log, log[-3000:]
    await doctor.close()

    second = await ServerProcess(tmp_path, port=first.port, secret=secret, env=env).start()
    try:
        status, body = await second.api("GET", f"/api/rooms/{room}/recordings")
        [part1] = body["recordings"]
        assert part1["status"] == "stopped" and not part1["interrupted"], part1
        back = await joined(second, room, "dr-li", "doctor")
        await back.publish(audio=True, video=True)
        assert await wait_for(lambda: _recording_parts(second, room, 2), 8)
        await asyncio.sleep(1.5)
        status, body = await second.api("POST", f"/api/rooms/{room}/recording/stop", {})
        assert status == 200, body
        await back.leave()
        assert await finish(second) >= 4  # store + composite of both parts
        status, body = await second.api("GET", f"/api/rooms/{room}/recordings")
        for part in body["recordings"]:
            folder = second.settings.recordings_folder / part["id"]
            manifest = Manifest.read(folder / "manifest.json")
            assert manifest.entry("composite.mp4") is not None, part
            with av.open(str(folder / "composite.mp4")) as container:
                frames = sum(1 for _ in container.decode(video=0))
            assert frames > 10, (part["id"], frames)
        status, body = await second.api("GET", f"/api/rooms/{room}/events")
        stopped = [e["data"]["reason"] for e in events_of(body, "recording_stopped")]
        assert stopped == ["server_drain", "stopped"], stopped
        assert [e["data"]["by"] for e in events_of(body, "recording_started")][1] == "drain"
        left = [e["data"].get("reason") for e in events_of(body, "participant_left")]
        assert left[0] == "server_drain", left
        assert len(events_of(body, "participant_joined")) == 2
    finally:
        second.stop()


async def _recording_parts(server: ServerProcess, room: str, n: int) -> bool:
    status, body = await server.api("GET", f"/api/rooms/{room}/recordings")
    return status == 200 and len(body["recordings"]) >= n


async def test_huizhen_drain_command_drains_and_waits_for_the_exit(tmp_path: Path) -> None:
    secret = generate_secret()
    server = await ServerProcess(tmp_path, secret=secret, env={
        "HUIZHEN_AUTH__API_KEYS": json.dumps([
            {"key": "test-key", "secret": secret},
            {"key": "ops", "secret": ADMIN.secret, "admin": True}])}).start()
    try:
        room = await server.create_room("clinic", "Follow-up")
        doctor = await joined(server, room, "dr-li", "doctor")
        env = {**server.env(), "HUIZHEN_API_KEY": "test-key", "HUIZHEN_API_SECRET": secret}
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "huizhen.cli", "drain"], env=env,
            capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 1 and "admin_required" in done.stderr, done.stderr
        env.update(HUIZHEN_API_KEY="ops", HUIZHEN_API_SECRET=ADMIN.secret)
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "huizhen.cli", "drain", "--json"], env=env,
            capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert "drained: the node no longer answers" in done.stderr
        assert json.loads(done.stdout)["by"] == "admin:ops"
        assert "clients_told" in server.log_path.read_text()
        # its API closes first; the process exits once the rest of its shutdown is done
        assert server.proc is not None
        assert await asyncio.to_thread(server.proc.wait, 10) == 0
        assert any(e["type"] == "reconnect" for e in doctor.events)
        await doctor.close()
    finally:
        server.stop()


async def test_the_sdk_joins_the_restarted_node_by_itself_and_publishes_again(
        tmp_path: Path) -> None:
    """``Participant(reconnect=True)`` (also ``huizhen join``): after the ``reconnect`` hint
    and the 1012 close, it joins the node that comes back on the same address with the same
    token, publishes again, and a newcomer there receives its video."""
    secret = generate_secret()
    env = {"HUIZHEN_SERVER__DRAIN_TIMEOUT_S": "5"}
    first = await ServerProcess(tmp_path, secret=secret, env=env).start()
    room = await first.create_room("mdt", "Tumour board")
    presenter = Participant(first.url, room, await first.token(room, "dr-a", "specialist"),
                            ice=LOOPBACK, decode=False, reconnect=True)
    await presenter.join()
    first_id = presenter.id
    second: ServerProcess | None = None
    viewer: Participant | None = None
    try:
        await presenter.publish(tag=5)
        assert first.proc is not None
        first.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(first.proc.wait, 15) == 0
        assert not presenter.ended  # closed by the node, and joining again: not gone
        second = await ServerProcess(tmp_path, port=first.port, secret=secret, env=env).start()
        assert await presenter.wait_until(lambda: presenter.reconnects == 1, 20), presenter.errors
        assert presenter.id and presenter.id != first_id and presenter.published
        viewer = await joined(second, room, "dr-b", "specialist")

        def video_back() -> bool:
            stats = viewer.received_from(presenter.id, "video") if viewer else None
            return stats is not None and stats.frames >= 15

        assert await viewer.wait_until(video_back, timeout=15), viewer.summary()
        assert not presenter.errors, presenter.errors
    finally:
        for p in (viewer, presenter):
            if p is not None:
                await p.leave()
        if second is not None:
            second.stop()
        first.stop()
