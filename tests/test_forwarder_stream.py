"""The forwarder under a long, lossy stream: whatever the uplink does (random loss, lost
retransmissions, late retransmissions of keyframe packets, bursts too long to repair), what a
subscriber is sent has no hole in its sequence numbers that is never filled.

A hole that is never filled stalls a receiver: aiortc's video jitter buffer waits until 512
newer packets have arrived (about 5 s), and libwebrtc's waits for its own keyframe request.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

import media.source
from media import rtp
from media.downtrack import DownTrack
from media.source import SourceTrack
from tests.test_forwarder import DELTA, KEY, Sink

CONTINUATION = bytes([0x00, 0x01, 0x9D])  # VP8 descriptor without S: the rest of a frame


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Uplink:
    """A publisher behind a lossy link: frames of a few packets (keyframes of many), packets
    lost at random, most of them retransmitted a little later (NACK), a few lost for good,
    now and then a burst of losses longer than anything retransmission repairs."""

    rng: random.Random
    loss: float
    burst_every: int  # frames between bursts (0: none)
    seq: int = 65000  # wraps during the run
    frame: int = 0
    keyframe_wanted: bool = True
    resend: list[tuple[int, tuple[int, int, int, bytes]]] = field(default_factory=list)

    def frame_packets(self) -> list[tuple[int, int, int, bytes]]:
        key = self.keyframe_wanted or self.frame % 90 == 0
        self.keyframe_wanted = False
        count = self.rng.randint(12, 20) if key else self.rng.randint(1, 5)
        ts = (self.frame * 3000) & 0xFFFFFFFF
        self.frame += 1
        packets = []
        for i in range(count):
            payload = (KEY if key else DELTA) if i == 0 else CONTINUATION
            packets.append((self.seq, ts, int(i == count - 1), payload))
            self.seq = (self.seq + 1) & 0xFFFF
        return packets

    def deliveries(self, clock: Clock) -> list[tuple[int, int, int, bytes]]:
        """The packets that arrive during one frame interval, in arrival order."""
        out: list[tuple[int, int, int, bytes]] = []
        due = [p for at, p in self.resend if at <= self.frame]
        self.resend = [(at, p) for at, p in self.resend if at > self.frame]
        burst = self.burst_every and self.frame % self.burst_every == self.burst_every - 1
        for packet in self.frame_packets():
            if burst:
                continue  # a burst: every packet of this frame and the next ones is gone
            if self.rng.random() < self.loss:
                if self.rng.random() > self.loss:  # its retransmission gets through
                    self.resend.append((self.frame + self.rng.randint(1, 6), packet))
                continue
            out.append(packet)
        if burst:
            for _ in range(self.rng.randint(3, 8)):
                self.frame_packets()
        out[0:0] = due
        return out


@pytest.mark.parametrize(("seed", "loss", "burst_every"),
                         [(1, 0.05, 0), (2, 0.05, 0), (3, 0.10, 0), (4, 0.05, 97),
                          (5, 0.02, 41), (6, 0.15, 0), (7, 0.05, 0), (8, 0.08, 60)])
async def test_no_subscriber_is_left_with_a_hole(monkeypatch: pytest.MonkeyPatch, seed: int,
                                                 loss: float, burst_every: int) -> None:
    clock = Clock()
    monkeypatch.setattr(media.source.time, "monotonic", clock)  # the time module: DownTrack too
    rng = random.Random(seed)
    uplink = Uplink(rng, loss, burst_every)

    def want_keyframe(ssrc: int) -> None:
        uplink.keyframe_wanted = True

    source = SourceTrack("t", "video", "video/VP8", 90000, want_keyframe,
                         lambda ssrc, lost: None, pli_throttle_s=0.0)
    sinks = [Sink(), Sink()]
    downs = []
    for sink in sinks:
        down = DownTrack("video", 4242, sink)
        down.configure(96, 90000, rtp.ExtensionIds(), "cname")
        down.active = True
        down.attach(source)
        downs.append(down)
    for _ in range(1800):  # a minute at 30 fps
        clock.now += 1 / 30
        for seq, ts, marker, payload in uplink.deliveries(clock):
            source.on_packet(77, seq, ts, marker, payload, 0, None, None)
    for _ in range(30):  # a second of clean stream: every open gap times out
        clock.now += 1 / 30
        for seq, ts, marker, payload in uplink.frame_packets():
            source.on_packet(77, seq, ts, marker, payload, 0, None, None)

    assert source.lost_for_good > 0
    for sink in sinks:
        out = {p.sequence_number for p in sink.rtp}
        first = sink.rtp[0].sequence_number
        span = max((p.sequence_number - first) & 0xFFFF for p in sink.rtp)
        holes = [(first + i) & 0xFFFF for i in range(span + 1)
                 if (first + i) & 0xFFFF not in out]
        assert holes == [], (len(holes), holes[:10])
        assert sink.rtp[0].payload == KEY
        # most of the stream got through: a hole is repaired, not avoided by sending nothing
        assert len(out) > 0.7 * 1800 * 3
