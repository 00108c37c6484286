"""Finishing recordings (issue 10, sections 2 and 4): the worker process, jobs that survive
their worker, ``huizhen recording …``, and the whole pipeline onto S3 with encryption.

The worker and the CLI are the real ones; S3 is moto's server (tests/s3.py); a flipped byte is
flipped in the stored object itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import os
import secrets
import signal
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import av
import yaml

from huizhen.cli import main as cli
from recording.crypto import DecryptingFile, KeyRing, is_encrypted
from recording.worker import Worker
from sdk.participant import Participant
from signaling.keys import RECORDING
from tests.harness import Server, ServerProcess, running_server
from tests.recording_support import consent, control, finish, join
from tests.s3 import S3Server


async def record(server: Any, seconds: float = 3.0, kind: str = "joint_clinic"
                 ) -> tuple[str, str]:
    """A short recording of one publisher; (room id, recording id)."""
    room = await server.create_room(kind)
    await consent(server, room)
    doctor: Participant = await join(server, room, "dr-li", "doctor", name="李医生")
    viewer: Participant = await join(server, room, "dr-wu", "specialist")
    try:
        await doctor.publish(tag=1)
        # media flows before the recording starts (a busy machine may take a while)
        assert await viewer.wait_until(lambda: viewer.frames_from(doctor.id, "video") > 5, 20)
        await control(doctor, "start")
        await asyncio.sleep(seconds)
        await control(doctor, "stop")
    finally:
        await viewer.leave()
        await doctor.leave()
    status, body = await server.api("GET", f"/api/rooms/{room}/recordings")
    assert status == 200
    return room, body["recordings"][-1]["id"]


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def run_cli(config: Path, *args: str, capsys: Any) -> tuple[int, str, str]:
    code = cli(["--config", str(config), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def write_config(server: Server, path: Path) -> Path:
    """The server's settings as a config file, for the CLI."""
    path.write_text(yaml.safe_dump(server.settings.handover(), allow_unicode=True))
    return path


async def test_the_services_own_worker_finishes_a_recording(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, env={"HUIZHEN_RECORDING__WORKERS": "1"})
    await server.start()
    try:
        # a worker that dies is started again by the service
        assert server.proc is not None
        (worker_pid,) = children(server.proc.pid)
        os.kill(worker_pid, signal.SIGKILL)
        _, recording_id = await record(server)
        deadline = time.monotonic() + 90
        seen_progress: set[float] = set()
        while time.monotonic() < deadline:
            status, body = await server.api("GET", f"/api/recordings/{recording_id}")
            assert status == 200
            seen_progress.update(j["progress"] for j in body["jobs"])
            # the composite is in the record (ready) a moment before its job is marked done
            if body["status"] == "ready" and all(j["status"] == "done" for j in body["jobs"]):
                break
            await asyncio.sleep(0.3)
        assert body["status"] == "ready", body
        assert [(j["kind"], j["status"]) for j in body["jobs"]] == [("store", "done"),
                                                                    ("composite", "done")]
        assert {f["role"] for f in body["files"]} == {"track", "composite"}, body
    finally:
        server.stop()
    log = server.log_path.read_text()
    assert log.count("recording worker started") == 2 and "job done" in log
    assert "recording worker exited; starting it again" in log


async def test_a_job_survives_its_worker(server: Server) -> None:
    """A worker told to stop hands its job back at once; one that died (no heartbeat) loses it
    to the next worker after ``stale_after``; both end with the composite made."""
    _, recording_id = await record(server, seconds=4.0)
    recordings = server.app[RECORDING].db
    first = await Worker(server.settings, name="first").open()
    stop = asyncio.Event()
    running = asyncio.ensure_future(first.run(stop))
    try:
        async def composite_running() -> bool:
            jobs = await recordings.jobs(recording_id)
            return any(j.kind == "composite" and j.status == "running" for j in jobs)

        deadline = time.monotonic() + 30
        while not await composite_running():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(running, 30)
    finally:
        await first.close()
    jobs = {j.kind: j for j in await recordings.jobs(recording_id)}
    assert jobs["store"].status == "done"
    assert jobs["composite"].status == "queued" and "worker stopped" in (
        jobs["composite"].error or "")

    # a worker that dies holding the job: claimed, then never heard of again
    dead = await recordings.claim_job("dead-worker", timedelta(seconds=30))
    assert dead is not None and dead.kind == "composite"
    impatient = await Worker(server.settings, name="second",
                             stale_after=timedelta(seconds=1)).open()
    try:
        assert await impatient.run(asyncio.Event(), once=True) == 0  # not stale yet
        await asyncio.sleep(1.2)
        assert await impatient.run(asyncio.Event(), once=True) == 1
    finally:
        await impatient.close()
    (composite,) = [j for j in await recordings.jobs(recording_id) if j.kind == "composite"]
    assert composite.status == "done" and composite.attempts == 3 and composite.worker == "second"
    recording = await recordings.get_recording(recording_id)
    assert recording is not None and recording.status == "ready"


async def test_cli_composite_again_show_and_verify(server: Server, tmp_path: Path,
                                                   capsys: Any) -> None:
    room, recording_id = await record(server)
    assert await finish(server) == 2
    config = write_config(server, tmp_path / "config.yaml")
    folder = server.settings.recordings_folder / recording_id
    first_made = (folder / "composite.mp4").stat().st_mtime_ns

    code, out, err = await asyncio.to_thread(run_cli, config, "recording", "composite", room,
                                             capsys=capsys)
    assert code == 0, err
    assert f"{recording_id}: composite ready" in out
    assert "composing [" in err and "100.0 %" in err  # progress shown
    assert (folder / "composite.mp4").stat().st_mtime_ns > first_made

    code, out, _ = await asyncio.to_thread(run_cli, config, "recording", "show", recording_id,
                                           capsys=capsys)
    assert code == 0 and f"{recording_id}: ready" in out, out
    jobs = [line.split()[2:4] for line in out.splitlines() if line.strip().startswith("job ")]
    assert jobs == [["store", "done"], ["composite", "done"], ["composite", "done"]], out
    code, out, _ = await asyncio.to_thread(run_cli, config, "recording", "verify", "--all",
                                           capsys=capsys)
    assert code == 0 and f"{recording_id}: ok" in out, out

    track = next((folder / "tracks").glob("*.webm"))
    data = bytearray(track.read_bytes())
    data[len(data) // 2] ^= 0x01
    track.write_bytes(bytes(data))
    code, out, err = await asyncio.to_thread(run_cli, config, "recording", "verify",
                                             recording_id, capsys=capsys)
    assert code == 1
    assert f"tracks/{track.name} has SHA-256" in out and "1 recording(s) failed" in err
    track.unlink()
    code, out, _ = await asyncio.to_thread(run_cli, config, "recording", "verify", room,
                                           capsys=capsys)
    assert code == 1 and f"tracks/{track.name} is missing" in out

    code, _, err = await asyncio.to_thread(run_cli, config, "recording", "composite", "r_nope",
                                           capsys=capsys)
    assert code == 1 and "no recording or room 'r_nope'" in err


async def test_recording_sealed_and_stored_on_s3(tmp_path: Path, s3_server: S3Server,
                                                 capsys: Any) -> None:
    """The whole pipeline onto object storage with encryption at rest: nothing readable
    without the key, the spool emptied once stored, the composite made from the stored
    (sealed) tracks, seekable with the key, verify catching a flipped byte in the bucket."""
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    prefix = f"t-{secrets.token_hex(4)}"
    recording_settings = {
        "storage": {"backend": "s3", "s3": {
            "endpoint_url": s3_server.endpoint_url, "bucket": s3_server.bucket,
            "prefix": prefix, "access_key_id": s3_server.access_key_id,
            "secret_access_key": s3_server.secret_access_key, "region": s3_server.region,
            "part_size_mb": 5}},
        "encryption": {"keys": {"k2026": key}, "active_key": "k2026"},
        "upload": {"backoff_s": 0.1, "max_backoff_s": 0.5},
    }
    async with running_server(tmp_path / "srv", recording=recording_settings) as server:
        _, recording_id = await record(server, seconds=6.0)
        assert await finish(server) == 2
        status, body = await server.api("GET", f"/api/recordings/{recording_id}")
        assert status == 200 and body["status"] == "ready", body
        assert {f["key_id"] for f in body["files"]} == {"k2026"}
        config = write_config(server, tmp_path / "config.yaml")
    assert not (tmp_path / "srv" / "recordings" / recording_id).exists()  # spool emptied

    client = s3_server.client()
    listed = client.list_objects_v2(Bucket=s3_server.bucket, Prefix=f"{prefix}/{recording_id}/")
    names = sorted(o["Key"].split(f"{recording_id}/", 1)[1] for o in listed["Contents"])
    assert names[0] == "composite.mp4" and names[1] == "manifest.json"
    assert len(names) == 4 and all(n.startswith("tracks/") for n in names[2:])
    composite_key = f"{prefix}/{recording_id}/composite.mp4"
    sealed = client.get_object(Bucket=s3_server.bucket, Key=composite_key)["Body"].read()
    assert is_encrypted(sealed[:64]) and b"ftyp" not in sealed[:4096]
    local = tmp_path / "composite.sealed"
    local.write_bytes(sealed)
    keyring = KeyRing({"k2026": base64.b64decode(key)}, "k2026")
    with av.open(DecryptingFile(local, keyring)) as container:
        stream = container.streams.video[0]
        picture = (stream.codec_context.name, stream.codec_context.width,
                   stream.codec_context.height)
    # as the MP4 it is, it does not open; probed blindly, ciphertext can pass for some raw
    # audio or video format now and then (h263 once), but never for the composite's picture
    with contextlib.suppress(av.FFmpegError), av.open(io.BytesIO(sealed), format="mp4") as _:
        raise AssertionError("the sealed composite opened as MP4 without the key")
    with contextlib.suppress(av.FFmpegError), av.open(io.BytesIO(sealed)) as probed:
        found = [(s.codec_context.name, s.codec_context.width, s.codec_context.height)
                 for s in probed.streams.video]
        assert picture not in found, "the sealed composite shows its picture without the key"

    with av.open(DecryptingFile(local, keyring)) as container:
        stream = container.streams.video[0]
        container.seek(int(4.5 / stream.time_base), stream=stream)
        times = []
        for frame in container.decode(stream):
            times.append(float(frame.time or 0))
            if times[-1] >= 4.5:
                break
    # it jumped to the keyframe before 4.5 s (the composite has one every 4 s of its video,
    # which starts when the camera's first keyframe came in: later on a loaded machine), then on
    assert 4.5 - 4.1 <= times[0] <= 4.5 and 4.5 <= times[-1] < 4.6, times[:3]

    code, out, _ = await asyncio.to_thread(run_cli, config, "recording", "verify",
                                           recording_id, capsys=capsys)
    assert code == 0 and f"{recording_id}: ok" in out, out
    track_key = f"{prefix}/{recording_id}/{names[2]}"
    data = bytearray(client.get_object(Bucket=s3_server.bucket, Key=track_key)["Body"].read())
    data[-100] ^= 0x40
    client.put_object(Bucket=s3_server.bucket, Key=track_key, Body=bytes(data))
    code, out, _ = await asyncio.to_thread(run_cli, config, "recording", "verify",
                                           recording_id, capsys=capsys)
    assert code == 1 and f"{names[2]} has SHA-256" in out, out
