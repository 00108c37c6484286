"""Real WebRTC over 127.0.0.1 through our SFU: aiortc clients publish and decode each other."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiortc.rtcdtlstransport import RTCDtlsTransport

from media.publisher import CLane, PublisherPeer
from media.subscriber import SubscriberPeer
from sdk.participant import Participant
from signaling.keys import SFU
from tests.harness import Server, running_server

TAGS = {"alice": 1, "bob": 2, "carol": 3}


async def test_three_participants_decode_each_other(server: Server) -> None:
    room = await server.create_room("mdt")
    people: dict[str, Participant] = {}
    for name, tag in TAGS.items():
        people[name] = await server.participant(room, name)
        await people[name].publish(tag=tag)

    def everyone_has_enough() -> bool:
        for name, p in people.items():
            for other_name, other in people.items():
                if other_name == name:
                    continue
                video = p.received_from(other.id, "video")
                audio = p.received_from(other.id, "audio")
                if video is None or audio is None or video.frames < 30 or audio.frames < 50:
                    return False
        return True

    try:
        assert await people["alice"].wait_until(everyone_has_enough, timeout=20), \
            {n: p.summary() for n, p in people.items()}
        for name, p in people.items():
            for other_name, other in people.items():
                if other_name == name:
                    continue
                video = p.received_from(other.id, "video")
                audio = p.received_from(other.id, "audio")
                assert video is not None and audio is not None
                # content, not just a count: the frames show the other publisher's colour tag,
                # and they change from frame to frame (moving bar, counter)
                assert set(video.tags) == {TAGS[other_name]}, (name, other_name, video.tags)
                assert video.distinct_frames >= 5
                # the tone arrives as sound, not silence
                assert audio.audio_rms > 500, (name, other_name, audio.audio_rms)
            assert not p.errors, p.errors
    finally:
        for p in people.values():
            await p.leave()


async def test_late_joiner_gets_first_frame_within_one_second(server: Server) -> None:
    room = await server.create_room("mdt")
    publisher = await server.participant(room, "surgeon")
    await publisher.publish(tag=4)
    await asyncio.sleep(3)  # the stream is well past its first keyframe
    late = await server.participant(room, "late")
    try:
        assert await late.wait_until(
            lambda: late.frames_from(publisher.id, "video") > 0, timeout=5), late.summary()
        video = late.received_from(publisher.id, "video")
        assert video is not None and video.first_frame_delay is not None
        assert video.first_frame_delay < 1.0, video.first_frame_delay
    finally:
        await late.leave()
        await publisher.leave()


async def test_freed_m_line_is_reused_for_the_next_publisher(server: Server) -> None:
    room = await server.create_room("mdt")
    viewer = await server.participant(room, "viewer-doc")
    first = await server.participant(room, "first")
    await first.publish(tag=5)
    assert await viewer.wait_until(
        lambda: viewer.frames_from(first.id, "video") > 10,
        timeout=10)
    await first.leave()
    assert await viewer.wait_until(
        lambda: any(e["type"] == "subscriber_offer" and not e["tracks"] for e in viewer.events),
        timeout=5)
    second = await server.participant(room, "second")
    await second.publish(tag=6)
    try:
        assert await viewer.wait_until(
            lambda: viewer.frames_from(second.id, "video") > 20, timeout=10), viewer.summary()
        video = viewer.received_from(second.id, "video")
        assert video is not None
        # aiortc's receive jitter buffer releases a frame when the next frame starts, so the
        # first publisher's very last frame may come out first; everything after is the new one
        assert video.tags[6] >= 3 and video.tags[5] <= 1 and video.last_tag == 6, video.tags
        offers = [e for e in viewer.events if e["type"] == "subscriber_offer"]
        # the m-lines were reused: still one audio and one video m-line, not four
        assert offers[-1]["sdp"].count("m=audio") == offers[-1]["sdp"].count("m=video") == 1
    finally:
        await second.leave()
        await viewer.leave()


async def test_same_identity_joining_again_replaces_the_old_session(server: Server) -> None:
    room = await server.create_room("mdt")
    observer = await server.participant(room, "observer")
    old = await server.participant(room, "dr-zhao")
    old_id = old.id
    new = await server.participant(room, "dr-zhao")
    try:
        assert await observer.wait_until(
            lambda: any(e["type"] == "participant_left" and e["participant_id"] == old_id
                        and e["reason"] == "replaced" for e in observer.events), timeout=5)
        assert await old.wait_until(old.closed.is_set, timeout=5)
        status, state = await server.api("GET", f"/api/rooms/{room}")
        assert status == 200
        assert [p["identity"] for p in state["participants"]].count("dr-zhao") == 1
        assert new.id in [p["id"] for p in state["participants"]]
    finally:
        await new.leave()
        await old.close()
        await observer.leave()


async def test_h264_room_forwards_with_the_same_code(tmp_path: Path) -> None:
    async with running_server(tmp_path, media={"video_codec": "H264"}) as srv:
        room = await srv.create_room("joint_clinic")
        a = await srv.participant(room, "local-doctor", "doctor")
        b = await srv.participant(room, "remote-specialist", "specialist")
        assert a.joined["video_codec"] == "H264"
        await a.publish(tag=1)
        await b.publish(tag=2)
        try:
            assert await a.wait_until(
                lambda: all(p.frames_from(o.id, "video") >= 30
                            for p, o in ((a, b), (b, a))), timeout=20), (a.summary(),
                                                                         b.summary())
            va, vb = a.received_from(b.id, "video"), b.received_from(a.id, "video")
            assert va is not None and set(va.tags) == {2}
            assert vb is not None and set(vb.tags) == {1}
            assert {s.mime_type for s in srv.app[SFU].tracks.values()} == {"audio/opus",
                                                                               "video/H264"}
        finally:
            await a.leave()
            await b.leave()


async def test_subscriber_keyframe_request_reaches_the_publisher(server: Server) -> None:
    room = await server.create_room("mdt")
    publisher = await server.participant(room, "pub")
    await publisher.publish(tag=2)
    viewer = await server.participant(room, "viewer")
    try:
        assert await viewer.wait_until(
            lambda: viewer.frames_from(publisher.id, "video") > 10, timeout=10)
        sfu = server.app[SFU]
        (source,) = [t.layers[0] for t in sfu.tracks.values() if t.kind == "video"]
        (down,) = source.down_tracks
        await asyncio.sleep(1.0)  # let the subscription's own (possibly deferred) PLI go out
        plis_before, keyframes_before = source.plis_sent, source.keyframes
        requests_before = down.keyframe_requests
        assert viewer._subscribe_pc is not None
        (receiver,) = [t.receiver for t in viewer._subscribe_pc.getTransceivers()
                       if t.kind == "video"]
        (ssrc,) = {s.source for s in receiver.getSynchronizationSources()}
        await receiver._send_rtcp_pli(ssrc)  # what a decoder that lost a frame would do
        assert await viewer.wait_until(lambda: down.keyframe_requests > requests_before,
                                    timeout=2)
        assert await viewer.wait_until(lambda: source.plis_sent > plis_before, timeout=2)
        assert await viewer.wait_until(lambda: source.keyframes > keyframes_before, timeout=2)
    finally:
        await viewer.leave()
        await publisher.leave()


async def test_published_rtp_is_forwarded_as_it_is_read_and_aiortc_still_counts_it(
        server: Server, monkeypatch: Any) -> None:
    """Once SRTP is keyed, a publisher's RTP datagrams are decrypted and forwarded by the
    socket reader (on the shared port by C, media/fastpath_rx.c, which hands them to the
    connection's CLane; else PublisherPeer._direct), never through aioice's queue and aiortc's
    DTLS task; aiortc's receiver still sees each packet afterwards (its counts give the
    uplink's loss, its REMB and NACKs come from them)."""
    peers: list[PublisherPeer] = []
    taken: list[int] = []
    by_c: list[int] = []  # of them, what C forwarded itself
    dtls_seen: set[int] = set()
    the_usual_way: list[int] = []
    make_direct = PublisherPeer._direct
    make_lane = PublisherPeer._lane

    def lane(self: PublisherPeer, dtls: Any) -> CLane:
        made = make_lane(self, dtls)
        forwarded, decrypted = made.forwarded, made.decrypted

        def counted_forwarded(data: bytes, *args: Any) -> None:
            taken.append(len(data))
            by_c.append(len(data))
            forwarded(data, *args)

        def counted_decrypted(data: bytes, stamp: float) -> None:
            taken.append(len(data))
            decrypted(data, stamp)

        made.forwarded = counted_forwarded  # type: ignore[method-assign]
        made.decrypted = counted_decrypted  # type: ignore[method-assign]
        return made

    def direct(self: PublisherPeer, dtls: Any) -> Any:
        peers.append(self)
        dtls_seen.add(id(dtls))
        handler = make_direct(self, dtls)

        def counted(data: bytes, stamp: float) -> bool:
            done = handler(data, stamp)
            if done:
                taken.append(len(data))
            return done
        return counted

    handle_rtp_data = RTCDtlsTransport._handle_rtp_data

    async def usual(self: RTCDtlsTransport, data: bytes, arrival_time_ms: int) -> None:
        if id(self) in dtls_seen:
            the_usual_way.append(len(data))
        await handle_rtp_data(self, data, arrival_time_ms)

    # and the subscribers' RTCP (receiver reports, REMB) is handled as it is read too
    rtcp_taken: list[int] = []
    rtcp_dtls: set[int] = set()
    rtcp_the_usual_way: list[int] = []
    make_direct_rtcp = SubscriberPeer._direct_rtcp

    def direct_rtcp(self: SubscriberPeer, dtls: Any) -> Any:
        rtcp_dtls.add(id(dtls))
        handler = make_direct_rtcp(self, dtls)

        def counted(data: bytes) -> bool:
            done = handler(data)
            if done:
                rtcp_taken.append(len(data))
            return done
        return counted

    handle_rtcp_data = RTCDtlsTransport._handle_rtcp_data

    async def usual_rtcp(self: RTCDtlsTransport, data: bytes) -> None:
        if id(self) in rtcp_dtls:
            rtcp_the_usual_way.append(len(data))
        await handle_rtcp_data(self, data)

    monkeypatch.setattr(PublisherPeer, "_direct", direct)
    monkeypatch.setattr(PublisherPeer, "_lane", lane)
    monkeypatch.setattr(RTCDtlsTransport, "_handle_rtp_data", usual)
    monkeypatch.setattr(SubscriberPeer, "_direct_rtcp", direct_rtcp)
    monkeypatch.setattr(RTCDtlsTransport, "_handle_rtcp_data", usual_rtcp)
    room = await server.create_room("mdt")
    alice = await server.participant(room, "alice")
    bob = await server.participant(room, "bob")
    try:
        await alice.publish(tag=1)

        def bob_has_video() -> bool:
            video = bob.received_from(alice.id, "video")
            return video is not None and video.frames >= 30

        assert await bob.wait_until(bob_has_video, timeout=20), bob.summary()
        video = bob.received_from(alice.id, "video")
        assert video is not None and set(video.tags) == {1}
        assert len(taken) > 100 and the_usual_way == [], (len(taken), len(the_usual_way))
        assert len(by_c) > len(taken) / 2, (len(by_c), len(taken))  # the server's shared port
        counts = peers[0].uplink_counts()  # aiortc's receivers saw them too
        assert counts["video"][0] > 30 and counts["audio"][0] > 30, counts
        # bob's receiver reports reached his video DownTrack, by the direct way only
        downs = [d for t in server.app[SFU].tracks.values() if t.kind == "video"
                 for layer in t.layers for d in layer.down_tracks]
        assert await bob.wait_until(lambda: any(d.receiver_reports >= 2 for d in downs), 10), \
            [d.receiver_reports for d in downs]
        assert len(rtcp_taken) >= 2 and rtcp_the_usual_way == [], \
            (len(rtcp_taken), len(rtcp_the_usual_way))
    finally:
        await alice.leave()
        await bob.leave()
