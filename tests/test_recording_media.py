"""Recording real media (issue 10, tests 1 and 5, and A/V sync): Python publishers through the
SFU, the worker run in the test, the files read back.

What a "corrupt frame" means here is checked, not assumed: every recorded picture of a
``PatternVideoTrack`` carries its frame number, so the test rebuilds the exact picture that was
sent and compares (PSNR); a frame decoded from a missing reference either fails to decode
(FFmpeg's VP8 decoder refuses it) or differs from what was sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import av
import numpy as np

from media.impairment import Impairment
from recording.manifest import Manifest
from sdk.participant import Participant
from sdk.testmedia import PatternVideoTrack, ToneAudioTrack, read_counter
from signaling.keys import SFU
from tests.harness import LOOPBACK, Server, figures, running_server
from tests.recording_support import (
    Counted,
    consent,
    control,
    finish,
    flash_beep_offsets,
    join,
    mute,
    record_flash_beep,
    sync_offsets,
)
from tests.support.avsync import BeepAudioTrack, FlashVideoTrack

SYNC_LIMIT_S = 0.040

CLEAN_PSNR_DB = 28.0  # a clean recording of the pattern measured ≥ 31 dB per frame


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return 99.0 if mse == 0 else 10 * float(np.log10(255 ** 2 / mse))


def check_pattern_file(path: Path, pattern: PatternVideoTrack) -> dict[str, Any]:
    """Decode every packet on its own: decoding errors, the worst PSNR against the picture
    that was sent, frame numbers in order, and the longest gap between frame timestamps."""
    errors, worst, counters, times = 0, 99.0, [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            try:
                frames = packet.decode()
            except av.FFmpegError:
                errors += 1
                continue
            for frame in frames:
                img = frame.to_ndarray(format="rgb24")
                count = read_counter(img)
                counters.append(count)
                times.append(float(frame.time or 0.0))
                worst = min(worst, psnr(img, pattern.image(count)))
    steps = np.diff(counters) % 4096
    return {"frames": len(times), "errors": errors, "worst_psnr": worst,
            "backwards": int(np.sum(steps == 0) + np.sum(steps > 2048)),
            "max_gap_s": float(np.max(np.diff(times))) if len(times) > 1 else 0.0,
            "first_s": times[0] if times else None}


async def recorded_files(server: Server, room: str) -> tuple[dict[str, Any], Path]:
    status, body = await server.api("GET", f"/api/rooms/{room}/recordings")
    assert status == 200
    (recording,) = body["recordings"]
    return recording, server.settings.recordings_folder / recording["id"]


async def test_five_percent_uplink_loss_leaves_no_corrupt_frame_and_no_longer_gap(
        server: Server) -> None:
    server.app[SFU].impairment = Impairment(loss=0.05, kinds=frozenset({"video"}), seed=7)
    room = await server.create_room("joint_clinic")
    await consent(server, room)
    pattern = PatternVideoTrack(tag=3)
    video = Counted(pattern)
    doctor = await join(server, room, "dr-li", "doctor")
    viewer = Participant(server.url, room, await server.token(room, "dr-wu", "specialist"),
                         ice=LOOPBACK, check_every=30)
    await viewer.join()
    try:
        await doctor.publish(audio=False, video_track=video)
        assert await viewer.wait_until(lambda: viewer.frames_from(doctor.id, "video") > 30, 15)
        live = viewer.received_from(doctor.id, "video")
        assert live is not None
        await control(doctor, "start")
        started = time.time()
        live.max_gap_s = 0.0
        await asyncio.sleep(8)
        await control(doctor, "stop")
        stopped = time.time()
        live_gap = max(live.max_gap_s, time.monotonic() - (live.last_frame_at or 0))
    finally:
        await viewer.leave()
        await doctor.leave()
    _, folder = await recorded_files(server, room)
    (path,) = list((folder / "tracks").glob("*.webm"))
    found = check_pattern_file(path, pattern)
    sent = video.sent_between(started, stopped)
    dropped = server.app[SFU].impairment.dropped
    figures("recording_loss", sent=sent, recorded=found["frames"], dropped_packets=dropped,
            worst_psnr_db=found["worst_psnr"], max_gap_s=found["max_gap_s"],
            live_max_gap_s=live_gap)
    assert dropped > 20  # the loss was real (5 % of ≈ 800 video packets)
    assert found["errors"] == 0, found
    assert found["worst_psnr"] >= CLEAN_PSNR_DB, found
    assert found["backwards"] == 0, found
    assert found["frames"] >= 0.8 * sent, (found, sent)
    assert found["max_gap_s"] <= live_gap + 0.05, (found, live_gap)


async def test_recording_follows_mute_hold_and_a_late_joiner(server: Server) -> None:
    """Files per track part: a late joiner's file starts late; a participant on hold is not
    recorded (a new file part when it comes back); nothing is recorded before the start."""
    room = await server.create_room("joint_clinic")
    await consent(server, room)
    doctor = await join(server, room, "dr-li", "doctor")
    people = [doctor]
    try:
        await doctor.publish(tag=1)
        await asyncio.sleep(1.0)
        await control(doctor, "start")
        started = time.time()
        await asyncio.sleep(2.0)
        late = await join(server, room, "dr-wu", "specialist")
        people.append(late)
        joined_at = time.time() - started
        await late.publish(tag=2, audio=False)
        await doctor.publish(audio=False, source="screen", tag=5)  # a screen share
        await asyncio.sleep(2.0)
        await doctor.send({"type": "hold", "participant_id": late.id, "held": True})
        await asyncio.sleep(1.5)
        await doctor.send({"type": "hold", "participant_id": late.id, "held": False})
        await asyncio.sleep(2.0)
        await control(doctor, "stop")
    finally:
        for p in people:
            await p.leave()
    recording, folder = await recorded_files(server, room)
    files = sorted((folder / "tracks").glob("*"))
    by_owner: dict[str, list[Path]] = {}
    for f in files:
        by_owner.setdefault(f.name.split("-t_")[0], []).append(f)
    assert set(by_owner) == {doctor.id, late.id}
    assert len(by_owner[doctor.id]) == 3  # audio, camera, screen
    journal = json.loads((folder / "journal.json").read_text())
    sources = sorted((t["participant_id"] == doctor.id, t["kind"], t["source"])
                     for t in journal["tracks"])
    assert (True, "video", "screen") in sources and all(t["closed"] for t in journal["tracks"])
    late_parts = sorted(by_owner[late.id], key=lambda p: len(p.name))
    assert len(late_parts) == 2 and late_parts[1].stem.endswith("-2")  # held, then back
    first_times = []
    for part in late_parts:
        with av.open(str(part)) as c:
            times = [float(f.time or 0) for f in c.decode(video=0)]
        first_times.append((times[0], times[-1]))
    (a0, a1), (b0, b1) = first_times
    assert joined_at - 0.5 < a0 < joined_at + 1.5, (joined_at, a0)
    assert b0 - a1 > 1.0  # the hold is a hole in the late joiner's video
    figures("recording_parts", late_joined_s=joined_at, first_part=(a0, a1),
            second_part=(b0, b1), duration_s=recording["duration_s"])


@dataclass
class Session20:
    room: str
    doctor: str  # participant ids
    patient: str
    tracks: dict[str, Counted]
    started: float
    stopped: float
    patient_from: float


async def record_20_s(server: Server) -> Session20:
    """Issue 10, test 1's session: 20 s, the doctor flashing and beeping, the patient (a tone:
    the active speaker once she is in) joining after 3 s and muting once for 3 s."""
    room = await server.create_room("joint_clinic")
    await consent(server, room)
    t0 = time.monotonic()
    doctor = await join(server, room, "dr-li", "doctor", name="李医生")
    patient: Participant | None = None
    tracks: dict[str, Counted] = {
        "dr-li/video": Counted(FlashVideoTrack(t0=t0, width=640, height=480, tag=1)),
        "dr-li/audio": Counted(BeepAudioTrack(t0=t0, frequency=1000.0)),
        "patient-wang/video": Counted(PatternVideoTrack(tag=2)),
        "patient-wang/audio": Counted(ToneAudioTrack(330.0)),
    }
    try:
        await doctor.publish(video_track=tracks["dr-li/video"],
                             audio_track=tracks["dr-li/audio"])
        await asyncio.sleep(1.0)
        await control(doctor, "start")
        started = time.time()
        await asyncio.sleep(3.0)
        patient = await join(server, room, "patient-wang", "patient", name="王芳")
        await patient.publish(video_track=tracks["patient-wang/video"],
                              audio_track=tracks["patient-wang/audio"])
        patient_from = time.time()
        await asyncio.sleep(5.0)
        patient_tracks = [tracks["patient-wang/video"], tracks["patient-wang/audio"]]
        await mute(patient, patient_tracks, True)
        await asyncio.sleep(3.0)
        await mute(patient, patient_tracks, False)
        await asyncio.sleep(started + 20.0 - time.time())
        await control(doctor, "stop")
        stopped = time.time()
    finally:
        await doctor.leave()
        if patient is not None:
            await patient.leave()
    return Session20(room, doctor.id, patient.id, tracks, started, stopped, patient_from)


async def check_20_s(server: Server, s: Session20) -> None:
    """Per-track files and a composite that decode end to end; frame counts within 5 % of
    what was sent; durations within 1 s of the session; flash/beep ≤ 40 ms; the layout
    follows the active speaker."""
    recording, folder = await recorded_files(server, s.room)
    assert recording["status"] == "ready", recording
    session_s = recording["duration_s"]
    # the server's own start and stop (the test's view of them lags a busy event loop)
    started = datetime.fromisoformat(recording["started_at"]).timestamp()
    stopped = datetime.fromisoformat(recording["ended_at"]).timestamp()
    assert abs(session_s - (stopped - started)) < 0.1
    assert abs(session_s - (s.stopped - s.started)) < 1.0
    owner = {s.doctor: "dr-li", s.patient: "patient-wang"}
    counts = {}
    for entry in (f for f in recording["files"] if f["role"] == "track"):
        key = f"{owner[entry['participant_id']]}/{entry['kind']}"
        sent = s.tracks[key].sent_between(started, stopped)
        counts[key] = (entry["frames"], sent)
        assert abs(entry["frames"] - sent) <= 0.05 * sent, (key, entry["frames"], sent)
        expected = stopped - (started if key.startswith("dr-li") else s.patient_from)
        assert abs(entry["duration_s"] - expected) < 1.0, (key, entry, expected)
        assert entry["start_s"] < 1.0 if key.startswith("dr-li") else entry["start_s"] > 2.5
    assert len(counts) == 4
    composite = folder / "composite.mp4"
    with av.open(str(composite)) as container:
        duration = float(container.duration or 0) / av.time_base
        video_frames = sum(1 for _ in container.decode(video=0))
    assert abs(duration - session_s) < 1.0, (duration, session_s)
    assert video_frames >= 25 * (session_s - 1)
    manifest = Manifest.read(folder / "manifest.json")
    entry = manifest.entry("composite.mp4")
    assert entry is not None
    layout = entry.meta["layout"]
    # the layout follows the active speaker: the patient's tone makes her the speaker
    speakers = manifest.meta["speakers"]
    assert [who for _, who in speakers][-1:] == ["patient-wang"], speakers
    spoke_at = next(t for t, who in speakers if who == "patient-wang")
    _, rects = next((t, r) for t, r in layout if t >= spoke_at - 0.01)
    area = {who: w * h for who, (_, _, w, h) in rects.items()}
    assert area["patient-wang"] > 2 * area["dr-li"], (spoke_at, layout)
    offsets = sync_offsets(composite, layout, "dr-li", 1000.0)
    figures("recording_20s", session_s=session_s, composite_s=duration,
            frames_recorded_vs_sent=counts, pairs=len(offsets),
            max_av_offset_ms=max(abs(o) for o in offsets) * 1000 if offsets else None)
    assert len(offsets) >= 15, offsets
    assert max(abs(o) for o in offsets) <= SYNC_LIMIT_S, offsets


async def test_a_20_s_session_two_publishers_one_late_and_muting_once(server: Server) -> None:
    """Issue 10, test 1 (``record_20_s``, ``check_20_s``)."""
    session = await record_20_s(server)
    assert await finish(server) == 2
    await check_20_s(server, session)


async def test_av_sync_over_60_s_also_split_over_two_publishers(server: Server) -> None:
    """Issue 10, section 2: the doctor flashes and beeps (1 kHz) on the second; a specialist
    flashes and the patient beeps (2.5 kHz) on the half second — the patient joins late and
    mutes once. In the composite every flash and its beep are within 40 ms."""
    room = await record_flash_beep(server, 60.0, patient_joins_s=15.0,
                                   patient_mutes_s=(30.0, 35.0))
    assert await finish(server) == 2
    found = await flash_beep_offsets(server, room)
    same, split = found.same, found.split
    figures("recording_av_sync_60s", session_s=found.recording["duration_s"],
            pairs_same=len(same), max_same_ms=max(abs(o) for o in same) * 1000 if same else None,
            pairs_split=len(split),
            max_split_ms=max(abs(o) for o in split) * 1000 if split else None)
    assert len(same) >= 55, same
    assert len(split) >= 35, split  # the patient beeps from 15 s on, and not while muted
    assert max(abs(o) for o in same + split) <= SYNC_LIMIT_S, (same, split)


async def test_h264_rooms_are_recorded_to_matroska(tmp_path: Path) -> None:
    """A room on H.264 (media.video_codec): the track is written as received into MKV, and
    decodes (the SPS gives its size)."""
    async with running_server(tmp_path, media={"video_codec": "H264"}) as server:
        room = await server.create_room("joint_clinic")
        await consent(server, room)
        doctor = await join(server, room, "dr-li", "doctor")
        try:
            await doctor.publish(tag=1, audio=False)
            await asyncio.sleep(1.0)
            await control(doctor, "start")
            await asyncio.sleep(3.0)
            await control(doctor, "stop")
        finally:
            await doctor.leave()
        _, folder = await recorded_files(server, room)
    (path,) = list((folder / "tracks").glob("*"))
    assert path.suffix == ".mkv"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = list(container.decode(stream))
    assert len(frames) >= 60 and (frames[0].width, frames[0].height) == (640, 480)
