"""recording/capture.py on real SourceTracks: simulcast (the highest layer that arrives), a
publisher's new SSRC, and sender reports placing frames — packets fed by the test, the clock
driven by the test, the file decoded at the end."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import av

from media.source import MediaTrack, SourceTrack
from recording.capture import TrackMeta, TrackRecorder
from recording.timeline import ClockOffset, SessionClock
from tests.test_rtpframes import encode, vp8_packets

FPS = 30
STEP = 90000 // FPS


def ntp(unix: float) -> int:
    seconds = unix + 2208988800
    return (int(seconds) << 32) | int((seconds % 1) * 2**32)


class Layer:
    """One simulcast layer's RTP stream: its SSRC, numbering and encoded frames."""

    def __init__(self, source: SourceTrack, frames: list[tuple[bytes, bool]], ssrc: int,
                 seq: int, ts: int) -> None:
        self.source, self.frames, self.ssrc, self.seq, self.ts0 = source, frames, ssrc, seq, ts

    def send(self, index: int) -> None:
        data, _ = self.frames[index % len(self.frames)]
        for payload, last in vp8_packets(data):
            self.source.on_packet(self.ssrc, self.seq & 0xFFFF,
                                  (self.ts0 + index * STEP) & 0xFFFFFFFF, int(last), payload,
                                  0, None, None)
            self.seq += 1

    def report(self, index: int, at: float) -> None:
        self.source.on_sender_report(ntp(at), (self.ts0 + index * STEP) & 0xFFFFFFFF)


def sizes_in(path: Path) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if not out or out[-1] != (frame.width, frame.height):
                out.append((frame.width, frame.height))
    return out


async def test_simulcast_records_the_highest_layer_that_arrives(tmp_path: Path) -> None:
    keyframes: list[str] = []

    def source(rid: str) -> SourceTrack:
        return SourceTrack("t1", "video", "video/VP8", 90000,
                           lambda ssrc: keyframes.append(rid), lambda ssrc, seqs: None,
                           pli_throttle_s=0.0, rid=rid, nack_upstream=True)

    low, high = source("q"), source("f")
    track = MediaTrack("t1", "video", [low, high])
    clock = [100.0]
    start = time.time()
    recorder = TrackRecorder(
        track, TrackMeta("t1", "p1", "dr-li", "doctor", "video", "camera", "vp8"),
        tmp_path / "t1.webm", SessionClock(start - 1.0), ClockOffset(),
        clock=lambda: clock[0], wall=lambda: start + clock[0] - 100.0 + 0.002)
    streams = {"q": Layer(low, encode("libvpx", 30, 160, 120), 1111, 100, 5000),
               "f": Layer(high, encode("libvpx", 30, 320, 240), 2222, 60000, 9000)}

    def run(frames: range, rids: str) -> Iterator[None]:
        for i in frames:
            for rid in rids:
                streams[rid].send(i)
                if i % FPS == 0:  # after the packets, as senders do
                    streams[rid].report(i, start + i / FPS)
            clock[0] += 1 / FPS
            recorder.tick()
            yield

    for _ in run(range(0, 60), "qf"):
        pass  # both layers: the full one is recorded
    assert keyframes == ["f"]  # asked of the full layer as soon as its SSRC was known
    for _ in run(range(60, 120), "q"):
        pass  # the full layer stopped (the publisher's uplink shrank): the small one
    for _ in run(range(120, 180), "qf"):
        pass  # back: up again at its keyframe
    # the publisher restarts its full layer (a new SSRC, new numbering and timestamps)
    streams["f"] = Layer(high, encode("libvpx", 30, 320, 240), 3333, 7, 123456)
    for _ in run(range(180, 240), "qf"):
        pass
    stats = recorder.close()
    assert stats.sizes == [(320, 240), (160, 120), (320, 240)]
    assert sizes_in(tmp_path / "t1.webm") == [(320, 240), (160, 120), (320, 240)]
    # every frame but those waiting for a layer's keyframe (≤ 1 s each switch) is in
    assert stats.frames >= 240 - 3 * FPS, stats
    assert low.taps == [] and high.taps == []  # the tap is off once it is closed
    with av.open(str(tmp_path / "t1.webm")) as container:
        times = [float(f.time or 0) for f in container.decode(video=0)]
    # placed by the sender reports: frame i at i/30 s after the start, one second in
    assert times == sorted(times)
    assert abs(times[0] - 1.0) < 0.01 and abs(times[-1] - (1.0 + 239 / FPS)) < 0.01, times
