"""The load tester's light viewer (loadtest/lightviewer.py) against a real server on 127.0.0.1.

It must look like a real viewer to the server: it receives and counts the video, the server
gets its receiver reports (what it reports matches what the server sent), and its NACKs bring
back what a lossy downlink (media/impairment.py) dropped.
"""

from __future__ import annotations

import asyncio
import time

from loadtest.lightviewer import LightHub, LightViewer
from loadtest.rtpcount import RtpCounter
from media.impairment import DownlinkLimit, Impairment
from media.subscriber import SubscriberPeer
from sdk.participant import Participant
from signaling.keys import SFU
from tests.harness import LOOPBACK, Server, figures, wait_for


def test_rtp_counter_tracks_gaps_and_reports_the_interval_loss() -> None:
    counter = RtpCounter("video", track_gaps=True, clock_rate=90000)
    for seq in (65530, 65531, 65534, 65535, 0, 1):  # 65532, 65533 lost; a wrap
        counter.count(seq, 100, seq == 1, 1000, 1.0)
    assert counter.missing is not None and sorted(counter.missing) == [65532 + 0x10000,
                                                                     65533 + 0x10000]
    assert counter.frames == 1 and counter.expected == 8 and counter.packets == 6
    fraction, lost, highest = counter.report()
    assert (fraction, lost, highest) == (64, 2, 0x10001)  # 2 of 8 lost: 64/256
    counter.count(65532, 100, False)  # a retransmission fills one gap
    assert sorted(counter.missing) == [65533 + 0x10000] and counter.packets == 7
    assert not counter.count(65532, 100, False)  # a duplicate counts once
    counter.count(2, 100, False)
    assert counter.report() == (0, 1, 0x10002)  # this interval: 2 packets for 1 new


async def _light_viewer(server: Server, hub: LightHub, room: str, name: str) -> LightViewer:
    viewer = LightViewer(hub, server.url, room, await server.token(room, name, "viewer"))
    await viewer.join()
    return viewer


def _subscriber(server: Server, viewer: LightViewer) -> SubscriberPeer:
    (sub,) = [s for s in server.app[SFU].subscribers if s.label == viewer.joined["me"]["id"]]
    return sub


def _video(viewer: LightViewer) -> RtpCounter:
    (counter,) = [c for c in viewer.rtp.values() if c.kind == "video"]
    return counter


async def test_light_viewer_counts_video_and_the_server_gets_its_receiver_reports(
        server: Server) -> None:
    room = await server.create_room("broadcast")
    publisher = await server.participant(room, "surgeon", "presenter")
    hub = LightHub(LOOPBACK)
    viewer = await _light_viewer(server, hub, room, "ward")
    await publisher.publish(audio=True, video=True, tag=6)
    try:
        assert await wait_for(lambda: _async(len(viewer.rtp) == 2 and _video(viewer).frames > 30),
                              timeout=20), viewer.errors
        assert viewer.media_state == "connected"
        video = _video(viewer)
        frames, start = video.frames, time.monotonic()
        await asyncio.sleep(3)
        fps = (video.frames - frames) / (time.monotonic() - start)
        (audio,) = [c for c in viewer.rtp.values() if c.kind == "audio"]
        sub = _subscriber(server, viewer)
        downs = {slot.down.kind: slot.down for slot in sub.slots}
        figures("light viewer", fps=fps, rr_sent=viewer.rr_sent,
                server_rrs={k: d.receiver_reports for k, d in downs.items()},
                estimate_kbps=round(sub.estimate.bps / 1000), loss=sub.estimate.loss)
        assert fps >= 25, fps
        assert audio.packets > 100 and video.expected - video.packets == 0
        # the server saw its reports: one per second per stream, describing what it sent
        assert viewer.rr_sent >= 3
        for kind, down in downs.items():
            assert down.receiver_reports >= 3, kind
            assert down.last_report is not None
            fraction, lost, highest, _jitter = down.last_report
            assert fraction == 0 and lost == 0, down.last_report
            behind = (down._last_out_seq - highest) & 0xFFFF
            assert behind < 120, (kind, behind)  # at most ~1 s of packets since the report
        assert downs["video"].rtx is not None  # it accepted RTX, as browsers do
        # no loss reported: the downlink estimate did not fall and nothing was paused
        assert sub.estimate.loss == 0.0 and not downs["video"].paused
    finally:
        await viewer.leave()
        await publisher.leave()
        await hub.close()


async def test_light_viewer_nacks_bring_back_what_a_lossy_downlink_dropped(
        server: Server) -> None:
    impairment = Impairment()
    server.app[SFU].impairment = impairment
    room = await server.create_room("broadcast")
    publisher = await server.participant(room, "surgeon", "presenter")
    hub = LightHub(LOOPBACK)
    viewer = await _light_viewer(server, hub, room, "ward")
    others = [Participant(server.url, room, await server.token(room, "ward-b", "viewer"),
                          ice=LOOPBACK, decode=False)]
    await others[0].join()
    await publisher.publish(audio=False, video=True, tag=7)
    try:
        assert await wait_for(lambda: _async(bool(viewer.rtp) and _video(viewer).frames > 30),
                              timeout=20), viewer.errors
        video = _video(viewer)
        lossy = impairment.downlinks[viewer.joined["me"]["id"]] = DownlinkLimit(loss=0.05,
                                                                                 seed=5)
        expected0, packets0, frames0 = video.expected, video.packets, video.frames
        start = time.monotonic()
        await asyncio.sleep(6)
        elapsed = time.monotonic() - start
        expected = video.expected - expected0
        received = video.packets - packets0
        fps = (video.frames - frames0) / elapsed
        sub = _subscriber(server, viewer)
        (down,) = [slot.down for slot in sub.slots if slot.down.kind == "video"]
        figures("light viewer, 5% downlink loss", dropped=lossy.dropped,
                nacked=viewer.nacks_sent, server_nack_messages=down.nack_messages,
                retransmissions=down.retransmissions, unrepaired=expected - received, fps=fps)
        assert lossy.dropped >= 10  # the loss really happened (~45 video packets/s)
        assert viewer.nacks_sent >= lossy.dropped * 0.5
        assert down.nack_messages > 0 and down.retransmissions >= 0.5 * lossy.dropped
        # repaired: what is still missing is at most what is in flight (a retransmission
        # may be dropped too and asked for again, up to 3 times)
        assert expected - received <= max(3, 0.2 * lossy.dropped), (expected, received)
        assert fps >= 25, fps
        # a 5 % lossy viewer is not paused, and the other viewer is untouched
        assert not down.paused
        other = others[0].received_from(publisher.id, "video")
        assert other is not None and other.frames > 100
    finally:
        await viewer.leave()
        for p in (*others, publisher):
            await p.leave()
        await hub.close()


async def _async(value: bool) -> bool:
    return value


async def test_a_viewer_losing_half_its_packets_moves_nobody_else_nor_the_publisher(
        server: Server) -> None:
    """Issue 12: one viewer's bad reports (a 40 % lossy downlink: NACKs for nearly half of
    what it is sent) pause its own video only; the publisher keeps its bitrate and the other
    viewers their frame rate."""
    impairment = Impairment()
    server.app[SFU].impairment = impairment
    room = await server.create_room("broadcast")
    publisher = await server.participant(room, "surgeon", "presenter")
    hub = LightHub(LOOPBACK)
    viewers = [await _light_viewer(server, hub, room, f"ward-{i}") for i in range(4)]
    good, bad = viewers[:3], viewers[3]
    await publisher.publish(audio=True, video=True, tag=8)
    try:
        assert await wait_for(lambda: _async(all(
            len(v.rtp) == 2 and _video(v).frames > 60 for v in viewers)), timeout=20)
        (source,) = [t.layers[0] for t in server.app[SFU].tracks.values() if t.is_video]

        async def window(seconds: float) -> tuple[float, list[float]]:
            """(the publisher's video kbit/s into the SFU, each good viewer's fps)"""
            b0, f0, t0 = source.bytes, [_video(v).frames for v in good], time.monotonic()
            await asyncio.sleep(seconds)
            dt = time.monotonic() - t0
            return ((source.bytes - b0) * 8 / dt / 1000,
                    [(_video(v).frames - f) / dt for v, f in zip(good, f0, strict=True)])

        kbps_before, fps_before = await window(4)
        lossy = impairment.downlinks[bad.joined["me"]["id"]] = DownlinkLimit(loss=0.4, seed=9)
        kbps_during, fps_during = await window(8)
        bad_down = next(slot.down for slot in _subscriber(server, bad).slots
                        if slot.down.kind == "video")
        figures("one viewer at 40% loss", publisher_kbps_before=round(kbps_before),
                publisher_kbps_during=round(kbps_during), good_fps_during=fps_during,
                bad_nacked=bad.nacks_sent, bad_paused=bad_down.paused, dropped=lossy.dropped,
                plis=source.plis_sent)
        assert lossy.dropped > 50 and bad.nacks_sent > 50
        assert bad_down.paused  # its own video, paused for its weak link
        assert kbps_during >= 0.8 * kbps_before, (kbps_before, kbps_during)
        assert min(fps_before) >= 25 and min(fps_during) >= 25, (fps_before, fps_during)
        for v in good:
            down = next(slot.down for slot in _subscriber(server, v).slots
                        if slot.down.kind == "video")
            assert not down.paused and down.nack_messages == 0
    finally:
        for v in viewers:
            await v.leave()
        await publisher.leave()
        await hub.close()


async def test_upstream_audio_loss_is_not_counted_as_every_viewers_downlink_loss(
        server: Server) -> None:
    """Issue 12: a presenter whose uplink loses audio (a starved or lossy presenter) made
    every viewer's receiver reports show that loss, and the server read it as each viewer's
    downlink and paused everyone's video. The reports still show it (the viewers did lose
    those packets); the downlink estimate leaves it out."""
    impairment = Impairment(loss=0.0, kinds=frozenset({"audio"}), seed=11)
    server.app[SFU].impairment = impairment
    room = await server.create_room("broadcast")
    publisher = await server.participant(room, "surgeon", "presenter")
    hub = LightHub(LOOPBACK)
    viewers = [await _light_viewer(server, hub, room, f"ward-{i}") for i in range(2)]
    await publisher.publish(audio=True, video=True, tag=9)
    try:
        assert await wait_for(lambda: _async(all(
            len(v.rtp) == 2 and _video(v).frames > 30 for v in viewers)), timeout=20)
        impairment.loss = 0.3  # from now on the uplink loses 30 % of the audio
        frames = [_video(v).frames for v in viewers]
        start = time.monotonic()
        await asyncio.sleep(6)
        fps = [(_video(v).frames - f) / (time.monotonic() - start)
               for v, f in zip(viewers, frames, strict=True)]
        subs = [_subscriber(server, v) for v in viewers]
        audio = [next(slot.down for slot in s.slots if slot.down.kind == "audio") for s in subs]
        video = [next(slot.down for slot in s.slots if slot.down.kind == "video") for s in subs]
        figures("30% upstream audio loss", dropped=impairment.dropped, fps=fps,
                reported=[a.last_report for a in audio], loss=[s.estimate.loss for s in subs],
                estimate_kbps=[round(s.estimate.bps / 1000) for s in subs])
        assert impairment.dropped > 50
        for a in audio:  # the viewers report the loss …
            assert a.receiver_reports >= 4 and a.last_report is not None
            assert a.last_report[1] >= 30, a.last_report  # cumulative lost
        for s, v in zip(subs, video, strict=True):  # … the server does not take it as theirs
            assert s.estimate.loss < 0.02 and not v.paused, (s.estimate.loss, v.paused)
        assert min(fps) >= 25, fps
    finally:
        for v in viewers:
            await v.leave()
        await publisher.leave()
        await hub.close()
