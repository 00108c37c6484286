"""Rooms and participant sessions survive a service restart (SQLite and PostgreSQL).

The service runs as its own process; it is stopped gracefully (SIGTERM) or killed (SIGKILL)
with a participant in the room, then started again on the same database.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.harness import ServerProcess


async def _restart_keeps_history(tmp_path: Path, db_url: str | None, sig: int) -> None:
    env = {"HUIZHEN_DATABASE__URL": db_url} if db_url else {}
    first = ServerProcess(tmp_path, env=env)
    await first.start()
    try:
        room = await first.create_room("clinic")
        doctor = await first.participant(room, "dr-wang", "doctor")
        doctor_id = doctor.id
    finally:
        first.stop(sig)
    await doctor.close()

    second = ServerProcess(tmp_path, port=first.port, secret=first.secret, env=env)
    await second.start()
    try:
        status, body = await second.api("GET", "/api/rooms")
        assert status == 200
        assert room in [r["id"] for r in body["rooms"]]
        status, state = await second.api("GET", f"/api/rooms/{room}")
        assert status == 200 and state["kind"] == "clinic" and state["status"] == "open"
        assert state["participants"] == []  # nobody is live after a restart
        status, sessions = await second.api("GET", f"/api/rooms/{room}/sessions")
        (session,) = [s for s in sessions["sessions"] if s["id"] == doctor_id]
        assert session["identity"] == "dr-wang" and session["role"] == "doctor"
        assert session["left_at"] is not None
        # SIGTERM drains the node (signaling/drain.py): each session ends as server_drain
        expected = "server_drain" if sig == signal.SIGTERM else "server_restart"
        assert session["leave_reason"] == expected
        status, events = await second.api("GET", f"/api/rooms/{room}/events")
        kinds = [e["type"] for e in events["events"]]
        assert kinds[:2] == ["room_created", "participant_joined"]
        # and the room is usable again
        again = await second.participant(room, "dr-wang", "doctor")
        assert again.joined["room"]["id"] == room
        await again.leave()
    finally:
        second.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["graceful", "killed"])
async def test_restart_sqlite(tmp_path: Path, sig: int) -> None:
    await _restart_keeps_history(tmp_path, None, sig)


@pytest.mark.postgres
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["graceful", "killed"])
async def test_restart_postgres(tmp_path: Path, pg_url: str, sig: int) -> None:
    await _restart_keeps_history(tmp_path, pg_url, sig)
