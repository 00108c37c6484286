"""bench/subscriber.py's publisher media: the test pattern paced like a camera, and VP8 / Opus
encoded once and replayed in a loop (``--replay``), so that many publishers fit on a small
machine. Also used by bench/recording.py (the recorder alone).
"""

from __future__ import annotations

import asyncio
import fractions
import math
import random
import time
from typing import Any

import _paths  # noqa: F401  (first: the project's packages before bench/'s scripts)
import av
import numpy as np
from aiortc import MediaStreamTrack, RTCRtpCodecCapability, RTCRtpSender
from aiortc.codecs.opus import OpusEncoder
from aiortc.rtp import compute_audio_level_dbov

from sdk.testmedia import (
    AUDIO_PTIME,
    AUDIO_RATE,
    VIDEO_CLOCK,
    PatternVideoTrack,
)


def vp8_preferences() -> list[RTCRtpCodecCapability]:
    return [c for c in RTCRtpSender.getCapabilities("video").codecs
            if c.mimeType.lower() in ("video/vp8", "video/rtx")]


class CameraPatternTrack(PatternVideoTrack):
    """The test pattern paced like a camera: when the sender fell behind (CPU contention),
    frames that are already late are skipped rather than sent in a burst above the frame rate
    (``PatternVideoTrack`` alone catches up on every frame it owes).

    Like a camera's capture times, the timestamps jitter a little: 0–1 ms (0–89 ticks of the
    90 kHz clock), pseudo-random. A re-encoding server (the MediaRelay baseline) keeps the
    differences between timestamps but not their origin; this jitter makes the sequence of
    differences unique, so its frames can be matched to the publisher's
    (``fanout_measure.match_frames``). Huizhen forwards timestamps shifted by a constant as well."""

    def __init__(self, tag: int = 0) -> None:
        super().__init__(tag)
        self._jitter = random.Random(f"huizhen-bench-pts-{tag}")

    async def recv(self) -> av.VideoFrame:
        if self._start is not None:
            late = int((time.monotonic() - self._start) * self.fps) - self._count
            if late > 0:
                self._count += late
        frame = await super().recv()
        frame.pts = (frame.pts or 0) + self._jitter.randrange(90)
        return frame


# ---- replayed video: encoded once, sent in a loop ---------------------------------------------
#: libvpx settings of aiortc's own VP8 encoder (aiortc/codecs/vpx.py), for a stream like the
#: one a live publisher sends: real time, constant bitrate
def _vp8_options(bitrate: int) -> dict[str, str]:
    return {"bufsize": str(bitrate), "cpu-used": "-6", "deadline": "realtime",
            "lag-in-frames": "0", "minrate": str(bitrate), "maxrate": str(bitrate),
            "noise-sensitivity": "4", "overshoot-pct": "15", "partitions": "0",
            "static-thresh": "1", "undershoot-pct": "100"}


def encode_pattern(tag: int, seconds: float, kbps: int, fps: int = 30,
                   keyframe_every: int = 30, preroll: int = 30) -> list[bytes]:
    """``seconds`` of the 640x480 test pattern encoded as VP8 at ``kbps`` (libvpx, real time,
    CBR, as aiortc encodes), a keyframe every ``keyframe_every`` frames starting with the
    first. ``preroll`` frames are encoded first and dropped, so that the rate control has
    settled. Returns the encoded frames in order (the first is a keyframe, so the list can be
    sent in a loop: each pass starts at a keyframe)."""
    pattern = PatternVideoTrack(tag, fps=fps)
    codec: Any = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height = pattern.width, pattern.height
    codec.pix_fmt = "yuv420p"
    codec.bit_rate = kbps * 1000
    codec.framerate = fractions.Fraction(fps)
    codec.time_base = fractions.Fraction(1, fps)
    codec.gop_size = keyframe_every
    codec.qmin, codec.qmax = 2, 56
    codec.options = _vp8_options(kbps * 1000)
    total = preroll + max(1, round(seconds * fps))
    frames: list[bytes] = []
    keyframes: list[bool] = []

    def keep(packets: Any) -> None:
        for packet in packets:
            if packet.pts is not None and packet.pts >= preroll:
                frames.append(bytes(packet))
                keyframes.append(bool(packet.is_keyframe))

    for i in range(total):
        frame = av.VideoFrame.from_ndarray(pattern.image(i), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts, frame.time_base = i, codec.time_base
        if i >= preroll and (i - preroll) % keyframe_every == 0:
            frame.pict_type = av.video.frame.PictureType.I
        keep(codec.encode(frame))
    keep(codec.encode(None))
    if not frames or not keyframes[0]:
        raise RuntimeError("the replayed stream does not start with a keyframe")
    return frames


class ReplayVideoTrack(MediaStreamTrack):
    """Sends pre-encoded VP8 frames (``encode_pattern``) in a loop, paced at ``fps``.

    ``recv()`` returns an ``av.Packet``: aiortc's ``RTCRtpSender`` then only packetises it
    (``Vp8Encoder.pack``), no encoder runs, so many publishers fit on a small machine. The
    stream is the same every pass, keyframe first (a receiver that decodes it is fine); the
    timestamps go on rising, jittered by 0–1 ms like ``CameraPatternTrack``'s (for
    ``fanout_measure.match_frames``). A frame whose time has passed is sent at once, never skipped
    (the next frames would reference it); more than a second behind, the pace restarts from
    now instead of sending a second's burst."""

    kind = "video"

    def __init__(self, frames: list[bytes], fps: int = 30, tag: int = 0) -> None:
        super().__init__()
        self.frames = frames
        self.fps = fps
        self._count = 0
        self._start: float | None = None
        self._jitter = random.Random(f"huizhen-bench-pts-{tag}")

    async def recv(self) -> av.Packet:
        now = time.monotonic()
        if self._start is None:
            self._start = now
        due = self._start + self._count / self.fps
        if due > now:
            await asyncio.sleep(due - now)
        elif now - due > 1.0:
            self._start = now - self._count / self.fps
        packet = av.Packet(self.frames[self._count % len(self.frames)])
        packet.pts = self._count * (VIDEO_CLOCK // self.fps) + self._jitter.randrange(90)
        packet.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self._count += 1
        return packet


def encode_tone(frequency: float, seconds: float = 1.0, amplitude: float = 0.3
                ) -> tuple[list[bytes], int]:
    """``seconds`` of ``ToneAudioTrack``'s tone (mono, 48 kHz) encoded by aiortc's own Opus
    encoder, one packet per 20 ms, and the tone's audio level (-dBov, as RFC 6464 sends it).
    A whole number of cycles per second makes the loop seamless."""
    encoder = OpusEncoder()
    samples = int(AUDIO_RATE * AUDIO_PTIME)
    packets: list[bytes] = []
    level = 127
    for i in range(round(seconds / AUDIO_PTIME) + 1):  # the encoder holds one frame back
        t = (np.arange(samples) + i * samples) / AUDIO_RATE
        wave = (amplitude * 32767 * np.sin(2 * math.pi * frequency * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(wave.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts, frame.time_base = i * samples, fractions.Fraction(1, AUDIO_RATE)
        level = compute_audio_level_dbov(frame)
        payloads, _ = encoder.encode(frame)
        packets += payloads
    return packets[:round(seconds / AUDIO_PTIME)], level


class ReplayAudioTrack(MediaStreamTrack):
    """Sends pre-encoded Opus packets (``encode_tone``) in a loop, one per 20 ms: aiortc's
    sender only packetises them (no resampler, no encoder thread: a live tone's Opus encoding
    costs a publisher about three times what its replayed video does)."""

    kind = "audio"

    def __init__(self, packets: list[bytes]) -> None:
        super().__init__()
        self.packets = packets
        self._samples = int(AUDIO_RATE * AUDIO_PTIME)
        self._count = 0
        self._start: float | None = None

    async def recv(self) -> av.Packet:
        now = time.monotonic()
        if self._start is None:
            self._start = now
        due = self._start + self._count * AUDIO_PTIME
        if due > now:
            await asyncio.sleep(due - now)
        elif now - due > 1.0:
            self._start = now - self._count * AUDIO_PTIME
        packet = av.Packet(self.packets[self._count % len(self.packets)])
        packet.pts = self._count * self._samples
        packet.time_base = fractions.Fraction(1, AUDIO_RATE)
        self._count += 1
        return packet


def stamp_audio_level(sender: RTCRtpSender, level: int) -> None:
    """Give the audio level header extension to pre-encoded audio too (aiortc computes it only
    from frames it encodes): the SFU reads it (silence, active speaker) as from a browser."""
    next_frame = sender._next_encoded_frame

    async def with_level(codec: Any) -> Any:
        encoded = await next_frame(codec)
        if encoded is not None:
            encoded.audio_level = level
        return encoded

    sender._next_encoded_frame = with_level  # type: ignore[method-assign]


def replay_summary(frames: list[bytes], fps: int) -> dict[str, Any]:
    """What one pass of the replayed stream holds: frames, seconds, mean Mbit/s."""
    seconds = len(frames) / fps
    return {"frames": len(frames), "seconds": round(seconds, 3),
            "mbps": round(sum(len(f) for f in frames) * 8 / seconds / 1e6, 3)}
