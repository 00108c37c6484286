"""Active speaker (the detector alone, and end to end from real audio levels) and silent
audio that is not forwarded."""

from __future__ import annotations

import asyncio
import time

from rooms.speakers import SpeakerDetector
from sdk.participant import Participant
from sdk.testmedia import ToneAudioTrack
from signaling.keys import SFU
from tests.harness import LOOPBACK, Server, figures


def test_detector_needs_two_ticks_and_keeps_the_last_speaker_in_silence() -> None:
    d = SpeakerDetector(confirm_ticks=2)
    assert d.tick({"a": 100.0, "b": 10.0}) is None  # candidate after one tick
    assert d.tick({"a": 100.0, "b": 10.0}) == "a"  # confirmed on the second
    assert d.tick({"a": 0.0, "b": 0.0}) is None and d.active == "a"  # silence keeps it
    assert d.tick({"a": 80.0, "b": 105.0}) is None
    assert d.tick({"a": 100.0, "b": 0.0}) is None  # b's streak broken by a
    assert d.tick({"a": 80.0, "b": 105.0}) is None
    assert d.tick({"a": 80.0, "b": 105.0}) == "b"
    assert d.tick({"a": None, "b": None}) is None  # no levels at all
    d.forget("b")
    assert d.active is None


def test_quiet_background_is_not_speech() -> None:
    d = SpeakerDetector(confirm_ticks=1)
    assert d.tick({"a": 50.0}) is None  # -77 dBov: room noise
    assert d.tick({"a": 95.0}) == "a"


async def test_active_speaker_event_follows_who_is_speaking(server: Server) -> None:
    room = await server.create_room("mdt")
    loud = await server.participant(room, "surgeon")
    quiet = await server.participant(room, "radiologist")
    observer = await server.participant(room, "pathologist")
    try:
        await quiet.publish(audio=True, video=False, audio_track=ToneAudioTrack(amplitude=0.0))
        started = time.monotonic()
        await loud.publish(audio=True, video=False, audio_track=ToneAudioTrack(amplitude=0.3))

        def speaker_events() -> list[str]:
            return [e["participant_id"] for e in observer.events
                    if e["type"] == "active_speaker"]

        assert await observer.wait_until(lambda: bool(speaker_events()), timeout=5)
        assert speaker_events() == [loud.id]  # never the silent one
        figures("active speaker", publish_to_event_s=time.monotonic() - started)
        # end to end (publish, ICE, DTLS, first levels, two ticks) well within a second here
        assert time.monotonic() - started < 3
        # someone joining later learns the current speaker at once (it does not change, so
        # no new active_speaker would be broadcast)
        late = await server.participant(room, "oncologist")
        try:
            assert await late.wait_until(
                lambda: any(e["type"] == "active_speaker" and e["participant_id"] == loud.id
                            for e in late.events), timeout=1)
        finally:
            await late.leave()
    finally:
        for p in (loud, quiet, observer):
            await p.leave()


async def test_silent_audio_is_not_forwarded_and_speech_resumes_without_a_gap(
        server: Server) -> None:
    room = await server.create_room("mdt")
    speaker = await server.participant(room, "surgeon")
    listener = Participant(server.url, room, await server.token(room, "oncologist"),
                           ice=LOOPBACK, decode=False)
    await listener.join()
    tone = ToneAudioTrack(amplitude=0.3)
    try:
        await speaker.publish(audio=True, video=False, audio_track=tone)
        assert await listener.wait_until(
            lambda: listener.frames_from(speaker.id, "audio") > 50, timeout=10)
        (track,) = server.app[SFU].tracks.values()
        source = track.layers[0]

        tone.amplitude = 0.0  # the microphone goes quiet (or is muted in the browser)
        await asyncio.sleep(1.0)
        heard, skipped = listener.frames_from(speaker.id, "audio"), source.silent_skipped
        await asyncio.sleep(2.0)
        # 2 s of silence: ~100 packets from the publisher, none forwarded
        assert source.silent_skipped - skipped >= 80
        assert listener.frames_from(speaker.id, "audio") - heard <= 2

        tone.amplitude = 0.3  # speech again: forwarded at once
        resumed_at = time.monotonic()
        assert await listener.wait_until(
            lambda: listener.frames_from(speaker.id, "audio") > heard + 25, timeout=5)
        assert time.monotonic() - resumed_at < 1.5
        # no gap in the listener's sequence numbers: nothing counted as lost
        assert listener._subscribe_pc is not None
        stats = await listener._subscribe_pc.getStats()
        (inbound,) = [s for s in stats.values() if s.type == "inbound-rtp"]
        assert inbound.packetsLost == 0, inbound
    finally:
        for p in (speaker, listener):
            await p.leave()
