"""Helpers for the recording tests: publishers whose sent frames are counted, muting that
really stops the media, the worker run in the test, and reading the files back."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import av
from aiortc import MediaStreamTrack

from recording.manifest import Manifest
from recording.worker import Worker
from sdk.participant import Participant
from tests.harness import LOOPBACK, HospitalSystem, Server
from tests.support.avsync import (
    BeepAudioTrack,
    FlashVideoTrack,
    beep_onsets,
    flash_onsets,
    pair_offsets,
)


class Counted(MediaStreamTrack):
    """Wraps a test track: counts what it hands to the sender (wall-clock times), and while
    ``muted`` swallows its frames, so nothing is sent (like a browser whose track stopped)."""

    def __init__(self, inner: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = inner.kind
        self.inner = inner
        self.muted = False
        self.sent: list[float] = []

    async def recv(self) -> Any:
        while True:
            frame = await self.inner.recv()
            if not self.muted:
                self.sent.append(time.time())
                return frame

    def sent_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.sent if start <= t <= end)


async def join(server: HospitalSystem, room: str, identity: str, role: str,
               name: str | None = None) -> Participant:
    """A participant that does not decode what it receives (keeps the machine free)."""
    token = await server.token(room, identity, role, name=name)
    participant = Participant(server.url, room, token, ice=LOOPBACK, decode=False)
    await participant.join()
    return participant


async def control(moderator: Participant, action: str, timeout: float = 5) -> None:
    """Start/stop/pause/resume the recording from a moderator's client, and wait until its
    state event says it happened."""
    state = {"start": "recording", "resume": "recording", "pause": "paused", "stop": "off"}
    seen = len(moderator.events)
    await moderator.send({"type": "recording", "action": action})

    def changed() -> bool:
        return any(e.get("type") == "recording" and e["state"] == state[action]
                   for e in moderator.events[seen:])

    assert await moderator.wait_until(changed, timeout), moderator.events[seen:]


async def consent(server: HospitalSystem, room: str, granted: bool = True) -> dict[str, Any]:
    status, body = await server.api("POST", f"/api/rooms/{room}/consents", {
        "granted": granted, "method": "written", "given_by_role": "patient",
        "obtained_by": "dr-li", "note": "signed form 17"})
    assert status == 201, body
    return dict(body)


async def finish(server: Server | Any, settings: Any = None) -> int:
    """Run the recording worker in this process until no job is left; jobs done."""
    worker = await Worker(settings or server.settings, name="test").open()
    try:
        return await worker.run(asyncio.Event(), once=True)
    finally:
        await worker.close()


def frames_of(path: Path) -> list[float]:
    """Timestamps (s) of the packets of a track file, without decoding."""
    with av.open(str(path)) as container:
        stream = container.streams[0]
        return [float(p.pts * stream.time_base) for p in container.demux(stream)
                if p.pts is not None]


def decoded_frames(path: Path) -> list[Any]:
    with av.open(str(path)) as container:
        return list(container.decode(container.streams[0]))


def layout_rect(layout: list[Any], person: str) -> Any:
    """For flash_onsets: the rect of ``person``'s camera tile at time t (None if not shown)."""
    def rect(t: float) -> Any:
        current = None
        for start, rects in layout:
            if start <= t + 1e-6:
                current = rects.get(person)
        return tuple(current) if current else None
    return rect


async def mute(p: Participant, tracks: list[Counted], muted: bool) -> None:
    """Mute as a browser does: tell the room, and stop sending."""
    for track in tracks:
        track.muted = muted
    for track_id in p.published.values():
        await p.mute(track_id, muted)


def sync_offsets(composite: Path, layout: list[Any], person: str, frequency: float
                 ) -> list[float]:
    """beep − flash (s) of every flash in ``person``'s tile that has a beep at ``frequency``."""
    flashes = flash_onsets(composite, layout_rect(layout, person))
    return pair_offsets(flashes, beep_onsets(composite, frequency))


@dataclass
class SyncSession:
    recording: dict[str, Any]
    folder: Path
    same: list[float]  # the doctor's flashes against the doctor's beeps
    split: list[float]  # the specialist's flashes against the patient's beeps


async def record_flash_beep(server: Server, seconds: float, patient_joins_s: float = 0.0,
                            patient_mutes_s: tuple[float, float] | None = None) -> str:
    """A/V sync measured, not assumed: the doctor flashes and beeps (1 kHz) on the second; a
    specialist flashes and the patient beeps (2.5 kHz) on the half second. The patient joins
    ``patient_joins_s`` into the recording and may mute once (between beeps: a beep cut in
    half would seem to start where the sound comes back). Returns the room; the recording is
    stopped, its jobs queued (``finish``), and ``flash_beep_offsets`` measures it."""
    room = await server.create_room("joint_clinic")
    await consent(server, room)
    t0 = time.monotonic()
    doctor = await join(server, room, "dr-li", "doctor", name="李医生")
    specialist = await join(server, room, "dr-wu", "specialist", name="吴主任")
    people = [doctor, specialist]
    try:
        await doctor.publish(video_track=FlashVideoTrack(t0=t0, tag=1),
                             audio_track=BeepAudioTrack(t0=t0, frequency=1000.0))
        await specialist.publish(audio=False, video_track=FlashVideoTrack(
            t0=t0, phase_s=0.5, tag=2))
        await asyncio.sleep(1.0)
        await control(doctor, "start")
        started = time.time()
        await asyncio.sleep(patient_joins_s)
        patient = await join(server, room, "patient-wang", "patient", name="王芳")
        people.append(patient)
        beeps = Counted(BeepAudioTrack(t0=t0, phase_s=0.5, frequency=2500.0))
        await patient.publish(video=False, audio_track=beeps)
        if patient_mutes_s is not None:
            for at, muted in zip(patient_mutes_s, (True, False), strict=True):
                wait = started + at - time.time()
                await asyncio.sleep(wait + (t0 - time.monotonic() - wait) % 1.0)
                await mute(patient, [beeps], muted)
        await asyncio.sleep(started + seconds - time.time())
        await control(doctor, "stop")
    finally:
        for p in people:
            await p.leave()
    return room


async def flash_beep_offsets(server: Server, room: str) -> SyncSession:
    """Every flash and its beep in the composite of the room's (finished) recording."""
    status, body = await server.api("GET", f"/api/rooms/{room}/recordings")
    assert status == 200, body
    recording = body["recordings"][-1]
    folder = server.settings.recordings_folder / recording["id"]
    composite = folder / "composite.mp4"
    entry = Manifest.read(folder / "manifest.json").entry("composite.mp4")
    assert entry is not None, "the manifest lists no composite"
    layout = entry.meta["layout"]
    return SyncSession(recording, folder, sync_offsets(composite, layout, "dr-li", 1000.0),
                       sync_offsets(composite, layout, "dr-wu", 2500.0))


async def flash_beep_session(server: Server, seconds: float) -> SyncSession:
    """``record_flash_beep``, stored and composed by the worker (in this process), measured."""
    room = await record_flash_beep(server, seconds)
    assert await finish(server) == 2
    return await flash_beep_offsets(server, room)


# ---- the patient's record -------------------------------------------------------------
async def records_token(server: Server, identity: str, role: str,
                        patient_ref: str | None = None) -> str:
    body: dict[str, Any] = {"identity": identity, "role": role, "ttl_s": 600}
    if patient_ref:
        body["patient_ref"] = patient_ref
    status, answer = await server.api("POST", "/api/records-tokens", body)
    assert status == 201, answer
    assert answer["records_url"].startswith(f"{server.settings.base_url}/records#t=")
    return str(answer["token"])


async def call(server: Server, token: str | None, method: str, path: str,
               body: Any = None, headers: dict[str, str] | None = None
               ) -> tuple[int, Any, dict[str, str]]:
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as http, http.request(
            method, server.url + path, json=body, headers=sent) as response:
        raw = await response.read()
        data: Any = raw
        if response.content_type == "application/json":
            data = await response.json()
        return response.status, data, dict(response.headers)


async def consultation(server: Server, patient_ref: str, doctor: str, seconds: float) -> str:
    """A joint clinic about ``patient_ref``: the doctor records ``seconds`` (0: none)."""
    status, room = await server.api("POST", "/api/rooms", {
        "kind": "joint_clinic", "title": "随访", "patient_ref": patient_ref})
    assert status == 201, room
    p = await join(server, room["id"], doctor, "doctor")
    try:
        if seconds:
            await consent(server, room["id"])
            await p.publish(tag=2)
            await asyncio.sleep(1.0)
            await control(p, "start")
            await asyncio.sleep(seconds)
            await control(p, "stop")
    finally:
        await p.leave()
    status, _ = await server.api("POST", f"/api/rooms/{room['id']}/end")
    assert status == 200
    return str(room["id"])
