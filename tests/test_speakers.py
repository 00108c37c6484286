"""Active speaker: the detector alone, and end to end from real audio levels."""

from __future__ import annotations

import time

from huizhen.testmedia import ToneAudioTrack
from rooms.speakers import SpeakerDetector
from tests.harness import Server


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
        # end to end (publish, ICE, DTLS, first levels, two ticks) well within a second here
        assert time.monotonic() - started < 3
    finally:
        for p in (loud, quiet, observer):
            await p.leave()
