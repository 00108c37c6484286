"""Helpers for the recording tests: publishers whose sent frames are counted, muting that
really stops the media, the worker run in the test, and reading the files back."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import av
from aiortc import MediaStreamTrack

from recording.worker import Worker
from sdk.participant import Participant
from tests.harness import LOOPBACK, HospitalSystem, Server


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
    import asyncio

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
