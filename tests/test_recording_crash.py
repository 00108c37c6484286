"""``kill -9`` while recording (issue 10, test 2): the files written so far play to within 3 s
of the kill, the next start marks the recording interrupted, and it is finished (stored,
composed) like any other."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import av

from tests.harness import ServerProcess, figures
from tests.recording_support import consent, control, finish, join

WITHIN_S = 3.0


async def _killed_while_recording(tmp_path: Path, db_url: str | None) -> None:
    env = {"HUIZHEN_DATABASE__URL": db_url} if db_url else {}
    first = ServerProcess(tmp_path, env=env)
    await first.start()
    try:
        room = await first.create_room("joint_clinic")
        await consent(first, room)
        doctor = await join(first, room, "dr-li", "doctor", name="李医生")
        patient = await join(first, room, "patient-wang", "patient", name="王女士")
        await doctor.publish(tag=1)
        await patient.publish(tag=2)
        await asyncio.sleep(1.0)
        await control(doctor, "start")
        started = time.time()
        await asyncio.sleep(5.0)
        killed = time.time()
    finally:
        first.stop(signal.SIGKILL)
    await doctor.close()
    await patient.close()
    recorded_s = killed - started

    folder = tmp_path / "recordings"
    (recording_dir,) = [d for d in folder.iterdir() if d.is_dir()]
    tracks = sorted((recording_dir / "tracks").glob("*.webm"))
    assert len(tracks) == 4
    ends = {}
    for path in tracks:  # the partial files, as the crash left them
        with av.open(str(path)) as container:
            stream = container.streams[0]
            last = 0.0
            for frame in container.decode(stream):
                last = float(frame.time or 0.0)
        ends[path.name] = last
        assert last >= recorded_s - WITHIN_S, (path.name, last, recorded_s)
    figures("recording_kill9", recorded_s=recorded_s,
            shortest_track_s=min(ends.values()), longest_track_s=max(ends.values()))

    second = ServerProcess(tmp_path, port=first.port, secret=first.secret, env=env)
    await second.start()
    try:
        status, body = await second.api("GET", f"/api/rooms/{room}/recordings")
        (recording,) = body["recordings"]
        assert recording["status"] == "interrupted" and recording["interrupted"] is True
        assert abs(recording["duration_s"] - recorded_s) < WITHIN_S, recording
        assert [j["kind"] for j in recording["jobs"]] == ["store", "composite"]
        status, events = await second.api("GET", f"/api/rooms/{room}/events")
        assert "recording_interrupted" in [e["type"] for e in events["events"]]
        settings = second.settings
        if db_url:
            settings.database.url = db_url
        assert await finish(second, settings) == 2
        status, body = await second.api("GET", f"/api/recordings/{recording['id']}")
        assert status == 200 and body["status"] == "ready", body
        composite = next(f for f in body["files"] if f["role"] == "composite")
        assert abs(composite["duration_s"] - recording["duration_s"]) < 1.0, composite
        for track in (f for f in body["files"] if f["role"] == "track"):
            assert track["duration_s"] >= recorded_s - WITHIN_S - 0.5, track
    finally:
        second.stop()
    with av.open(str(recording_dir / "composite.mp4")) as container:
        video_frames = sum(1 for _ in container.decode(video=0))
    assert video_frames >= (recorded_s - WITHIN_S) * 20


async def test_kill_9_while_recording(tmp_path: Path) -> None:
    """On SQLite, the default (the recording tables and job claiming on PostgreSQL:
    tests/test_recording_db.py)."""
    await _killed_while_recording(tmp_path, None)
