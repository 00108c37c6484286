"""A subscriber on a weak downlink (issue 4, test 3): audio first, video paused, others unaffected.

The limit is a tbf-like bottleneck (150 kbit/s, 50 ms queue) on what the SFU sends that one
subscriber (media/impairment.py), over 127.0.0.1. The publisher sends 800 kbit/s of video,
which cannot fit; its audio (~50 kbit/s with overhead) can.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiortc.codecs import vpx

from media.impairment import DownlinkLimit, Impairment
from sdk.participant import Participant, RemoteTrackStats
from signaling.keys import SFU
from tests.harness import LOOPBACK, Server, figures

WINDOW_S = 7.0  # each measuring window (before / during the limit)


async def _viewer(server: Server, room: str, name: str) -> Participant:
    p = Participant(server.url, room, await server.token(room, name, "viewer"),
                    ice=LOOPBACK, decode=False)
    await p.join()
    return p


def _snapshot(stats: RemoteTrackStats) -> tuple[int, int]:
    return stats.frames, stats.payload_bytes


async def _window(viewers: list[Participant], publisher_id: str
                  ) -> list[tuple[float, float]]:
    """(fps, payload kbit/s) of each viewer's video over WINDOW_S."""
    stats = [v.received_from(publisher_id, "video") for v in viewers]
    assert all(s is not None for s in stats)
    before = [_snapshot(s) for s in stats if s is not None]
    start = time.monotonic()
    await asyncio.sleep(WINDOW_S)
    elapsed = time.monotonic() - start
    after = [_snapshot(s) for s in stats if s is not None]
    return [((f1 - f0) / elapsed, (b1 - b0) * 8 / elapsed / 1000)
            for (f0, b0), (f1, b1) in zip(before, after, strict=True)]


async def test_150_kbit_subscriber_keeps_audio_loses_video_and_nobody_else_suffers(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    # the publisher's encoder at a fixed 800 kbit/s (not ramping with REMB), so the
    # unconstrained and constrained windows see the same stream
    for name in ("DEFAULT_BITRATE", "MIN_BITRATE", "MAX_BITRATE"):
        monkeypatch.setattr(vpx, name, 800_000)
    impairment = Impairment()
    server.app[SFU].impairment = impairment
    room = await server.create_room("broadcast")
    publisher = await server.participant(room, "surgeon", "presenter")
    viewers = [await _viewer(server, room, name) for name in ("ward-a", "ward-b", "weak-4g")]
    others, weak = viewers[:2], viewers[2]
    await publisher.publish(audio=True, video=True, tag=4)
    try:
        assert await weak.wait_until(
            lambda: all(v.frames_from(publisher.id, "video") > 60
                        and v.frames_from(publisher.id, "audio") > 100 for v in viewers),
            timeout=20), [v.summary() for v in viewers]

        unconstrained = await _window(others, publisher.id)

        limit = impairment.downlinks[weak.id] = DownlinkLimit(kbps=150)
        paused = await weak.wait_until(
            lambda: any(e.get("type") == "video_paused" and e.get("paused")
                        and e.get("participant_id") == publisher.id for e in weak.events),
            timeout=5)
        assert paused, "the weak subscriber was not told its video is paused"
        await asyncio.sleep(2)  # the queue drains, estimates settle

        weak_audio = weak.received_from(publisher.id, "audio")
        weak_video = weak.received_from(publisher.id, "video")
        assert weak_audio is not None and weak_video is not None
        others_audio = [v.received_from(publisher.id, "audio") for v in others]
        for stats in (weak_audio, *others_audio):
            assert stats is not None
            stats.max_gap_s = 0.0
        weak_video_before = weak_video.frames
        constrained = await _window(others, publisher.id)
        audio_gap = max(weak_audio.max_gap_s, time.monotonic() - (weak_audio.last_frame_at or 0))
        # a stall of this process's event loop (server, publisher and viewers share it)
        # shows as the same gap on the unconstrained viewers: not the weak link's doing
        shared_gap = max(a.max_gap_s for a in others_audio if a is not None)
        weak_video_fps = (weak_video.frames - weak_video_before) / WINDOW_S

        figures("150 kbit/s subscriber", weak_audio_gap_s=audio_gap,
                others_audio_gap_s=shared_gap,
                weak_video_fps=weak_video_fps,
                others_fps_before=[round(f, 1) for f, _ in unconstrained],
                others_fps_during=[round(f, 1) for f, _ in constrained],
                others_kbps_before=[round(k) for _, k in unconstrained],
                others_kbps_during=[round(k) for _, k in constrained])
        # the weak subscriber: audio without gaps over 500 ms, video (mostly) paused
        assert audio_gap <= 0.5 + max(0.0, shared_gap - 0.1), (audio_gap, shared_gap, limit)
        assert weak_video_fps < 5, weak_video_fps
        assert limit.sent_bytes > 0
        # the others: fps and bitrate within 10 % of the unconstrained run
        for (fps0, kbps0), (fps1, kbps1) in zip(unconstrained, constrained, strict=True):
            assert abs(fps1 - fps0) <= 0.1 * fps0, (unconstrained, constrained)
            assert abs(kbps1 - kbps0) <= 0.1 * kbps0, (unconstrained, constrained)

        # the link recovers: video resumes (from a keyframe) at the next try (≤ 20 s away)
        del impairment.downlinks[weak.id]
        frames = weak_video.frames
        assert await weak.wait_until(lambda: weak_video.frames > frames + 30, timeout=30)
        assert any(e.get("type") == "video_paused" and e.get("paused") is False
                   for e in weak.events)
    finally:
        for p in (*viewers, publisher):
            await p.leave()


async def test_five_percent_downlink_loss_is_repaired_by_rtx_without_pausing(
        server: Server) -> None:
    impairment = Impairment()
    server.app[SFU].impairment = impairment
    room = await server.create_room("broadcast")
    publisher = await server.participant(room, "surgeon", "presenter")
    viewer = Participant(server.url, room, await server.token(room, "ward", "viewer"),
                         ice=LOOPBACK, check_every=30)
    await viewer.join()
    await publisher.publish(audio=False, video=True, tag=5)
    try:
        assert await viewer.wait_until(
            lambda: viewer.frames_from(publisher.id, "video") > 30, timeout=20)
        lossy = impairment.downlinks[viewer.id] = DownlinkLimit(loss=0.05, seed=3)
        stats = viewer.received_from(publisher.id, "video")
        assert stats is not None
        stats.max_gap_s = 0.0
        before, start = stats.frames, time.monotonic()
        await asyncio.sleep(15)
        fps = (stats.frames - before) / (time.monotonic() - start)
        figures("5% downlink loss, 15 s", fps=fps, max_freeze_s=stats.max_gap_s,
                dropped=lossy.dropped)
        # a retransmission lost too is asked for again only at the viewer's next gap (aiortc's
        # NACK generator re-sends its list when a new packet is missing, not on a timer):
        # most freezes here are 0.2–0.35 s, one in ten runs ~0.8 s. Without repair they last
        # until aiortc's jitter buffer gives up, 512 packets (~5 s) later
        assert fps >= 25 and stats.max_gap_s <= 1.0, (fps, stats.max_gap_s)
        (sub,) = [s for s in server.app[SFU].subscribers if s.label == viewer.id]
        (down,) = [slot.down for slot in sub.slots if slot.down.kind == "video"]
        assert down.rtx is not None  # negotiated: retransmissions go as RTX
        assert lossy.dropped > 0 and down.retransmissions >= 0.5 * lossy.dropped
        assert not any(e.get("type") == "video_paused" for e in viewer.events)
    finally:
        for p in (viewer, publisher):
            await p.leave()
