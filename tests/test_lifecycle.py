"""Participants disappear from everyone's view within 10 s however they go.

Leaving, closing the socket, a killed client process (the kernel closes its socket) and a
frozen client process (socket open, nothing answers: the heartbeat must notice).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from huizhen.config import SignalingConfig
from sdk.participant import Participant
from tests.harness import TEST_HEARTBEAT_S, Server, running_server

GONE_WITHIN_S = 10.0


def left_events(observer: Participant, participant_id: str) -> list[dict[str, Any]]:
    return [e for e in observer.events
            if e.get("type") == "participant_left" and e.get("participant_id") == participant_id]


async def wait_gone(server: Server, observer: Participant, room: str, participant_id: str
                    ) -> tuple[float, str]:
    start = time.monotonic()
    assert await observer.wait_until(lambda: bool(left_events(observer, participant_id)),
                                     timeout=GONE_WITHIN_S + 2)
    elapsed = time.monotonic() - start
    status, state = await server.api("GET", f"/api/rooms/{room}")
    assert status == 200
    assert participant_id not in [p["id"] for p in state["participants"]]
    return elapsed, str(left_events(observer, participant_id)[0]["reason"])


async def test_leave_is_seen_at_once(server: Server) -> None:
    room = await server.create_room("mdt")
    observer = await server.participant(room, "observer")
    goer = await server.participant(room, "goer")
    await goer.publish(tag=1)
    assert await observer.wait_until(
        lambda: observer.frames_from(goer.id, "video") > 5,
        timeout=10)
    goer_id = goer.id
    await goer.leave()
    elapsed, reason = await wait_gone(server, observer, room, goer_id)
    assert reason == "left" and elapsed < 2
    # the subscriber connection no longer carries the track: a new offer marks it inactive
    assert await observer.wait_until(
        lambda: any(e["type"] == "subscriber_offer" and not e["tracks"]
                    for e in observer.events), timeout=5)
    await observer.leave()


async def test_closed_socket_is_seen_at_once(server: Server) -> None:
    room = await server.create_room("mdt")
    observer = await server.participant(room, "observer")
    tab = await server.participant(room, "tab")
    tab_id = tab.id
    await tab.close()  # a closed tab: no leave message
    elapsed, reason = await wait_gone(server, observer, room, tab_id)
    assert reason == "disconnected" and elapsed < 3
    await observer.leave()


@contextmanager
def client_process(join_url: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "huizhen.cli", "join", join_url, "--publish", "pattern",
         "--report", "1", "--ice-address", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


async def test_killed_client_process_is_seen_within_10s(server: Server) -> None:
    room = await server.create_room("mdt")
    observer = await server.participant(room, "observer")
    with client_process(await server.join_url(room, "doomed")) as proc:
        assert await observer.wait_until(
            lambda: any(s.frames > 10 for s in observer.remote.values() if s.kind == "video"),
            timeout=20), observer.summary()
        doomed = next(iter(observer.participants))
        os.killpg(proc.pid, signal.SIGKILL)
        elapsed, reason = await wait_gone(server, observer, room, doomed)
    assert elapsed < GONE_WITHIN_S, elapsed
    assert reason in ("disconnected", "timeout")
    await observer.leave()


async def test_frozen_client_is_timed_out_within_10s(tmp_path: Path) -> None:
    """SIGSTOP keeps the socket open but nothing answers: only the heartbeat can tell (the
    product's, not the tests' lenient one)."""
    heartbeat = SignalingConfig.model_fields["heartbeat_s"].default
    assert heartbeat < TEST_HEARTBEAT_S
    async with running_server(tmp_path, signaling={"heartbeat_s": heartbeat}) as server:
        await frozen_client_is_timed_out(server)


async def frozen_client_is_timed_out(server: Server) -> None:
    room = await server.create_room("mdt")
    observer = await server.participant(room, "observer")
    with client_process(await server.join_url(room, "frozen")) as proc:
        assert await observer.wait_until(lambda: bool(observer.participants), timeout=20)
        frozen = next(iter(observer.participants))
        await asyncio.sleep(1)
        os.killpg(proc.pid, signal.SIGSTOP)
        try:
            elapsed, reason = await wait_gone(server, observer, room, frozen)
        finally:
            os.killpg(proc.pid, signal.SIGCONT)
    assert reason == "timeout", reason
    assert elapsed < GONE_WITHIN_S, elapsed
    await observer.leave()
