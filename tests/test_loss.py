"""Upstream loss: subscribers keep their video (issue 4, tests 1 and 2).

Loss is applied where the publisher's packets enter the SFU (media/impairment.py), before the
SFU or aiortc see them, as a lossy uplink would. Subscribers decode every frame (aiortc).
"""

from __future__ import annotations

import asyncio
import time

from media.impairment import Impairment
from sdk.participant import Participant
from signaling.keys import SFU
from tests.harness import LOOPBACK, Server, figures


async def _viewers(server: Server, room: str, n: int) -> list[Participant]:
    viewers = []
    for i in range(n):
        p = Participant(server.url, room, await server.token(room, f"trainee-{i}", "viewer"),
                        ice=LOOPBACK, check_every=30)
        await p.join()
        viewers.append(p)
    return viewers


async def _streaming(server: Server, impairment: Impairment, tag: int
                     ) -> tuple[Participant, list[Participant]]:
    """A presenter streaming video to two decoding viewers through an impaired uplink."""
    server.app[SFU].impairment = impairment
    room = await server.create_room("broadcast")
    publisher = await server.participant(room, "surgeon", "presenter")
    viewers = await _viewers(server, room, 2)
    await publisher.publish(audio=False, tag=tag)
    assert await viewers[0].wait_until(
        lambda: all(v.frames_from(publisher.id, "video") > 30 for v in viewers), timeout=15)
    return publisher, viewers


async def _measure(publisher: Participant, viewers: list[Participant], seconds: float
                   ) -> list[tuple[float, float]]:
    """(fps, longest gap between decoded frames in s) per viewer over the window."""
    stats = [v.received_from(publisher.id, "video") for v in viewers]
    assert all(s is not None for s in stats)
    start_frames = [s.frames for s in stats if s is not None]
    for s in stats:
        assert s is not None
        s.max_gap_s = 0.0
    start = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - start
    out = []
    for s, before in zip(stats, start_frames, strict=True):
        assert s is not None and s.last_frame_at is not None
        gap = max(s.max_gap_s, time.monotonic() - s.last_frame_at)
        out.append(((s.frames - before) / elapsed, gap))
    return out


async def test_five_percent_uplink_loss_keeps_25_fps_without_freezes(server: Server) -> None:
    impairment = Impairment(loss=0.05, seed=7)
    publisher, viewers = await _streaming(server, impairment, tag=2)
    try:
        results = await _measure(publisher, viewers, 30)
        figures("5% uplink loss, 30 s", min_fps=min(f for f, _ in results),
                max_freeze_s=max(g for _, g in results), dropped=impairment.dropped)
        for fps, gap in results:
            assert fps >= 25, results
            assert gap <= 0.5, results
        (source,) = [t.layers[0] for t in server.app[SFU].tracks.values() if t.kind == "video"]
        # the loss really happened: about 5 % of what the publisher sent never arrived
        assert impairment.dropped >= 0.03 * (source.packets + impairment.dropped)
    finally:
        for p in (*viewers, publisher):
            await p.leave()


async def test_packet_lost_for_good_upstream_stalls_nobody_over_a_second(
        server: Server) -> None:
    impairment = Impairment()
    publisher, viewers = await _streaming(server, impairment, tag=3)
    try:
        (source,) = [t.layers[0] for t in server.app[SFU].tracks.values() if t.kind == "video"]
        assert source._max_seq is not None
        doomed = (source._max_seq + 40) & 0xFFFF  # about half a second ahead
        impairment.lose_for_good.add(doomed)
        results = await _measure(publisher, viewers, 6)
        figures("one packet lost for good", min_fps=min(f for f, _ in results),
                longest_stall_s=max(g for _, g in results))
        assert impairment.dropped >= 1 and source.lost_for_good >= 1
        for fps, gap in results:
            assert gap <= 1.0, results
            assert fps >= 20, results
        for v in viewers:  # and the video is still the publisher's
            stats = v.received_from(publisher.id, "video")
            assert stats is not None and stats.last_tag == 3
    finally:
        for p in (*viewers, publisher):
            await p.leave()
