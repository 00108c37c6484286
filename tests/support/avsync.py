"""A/V sync measured, not assumed: flash + beep test media and the analysis of a recording.

Test publishers show a coloured pattern that turns white for ``flash_s`` once a ``period_s``
and play a sine beep at the same instants (``FlashVideoTrack``, ``BeepAudioTrack``; the two may
live in different publishers, as long as they share ``t0``). The flash's first frame and the
beep's first sample carry the same timestamp, so in a correct recording or composite every
flash and its beep are simultaneous; ``flash_onsets``/``beep_onsets`` find both in an output
file and ``pair_offsets`` gives audio-minus-video per flash.

The same pictures and sounds are written to per-track files (``write_video``/``write_audio``)
for the compositor's tests, with millisecond timestamps on a session timeline like the
recorder's; there a flash's beep is placed at the first white frame's timestamp.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack

from sdk.testmedia import mono_frame

VIDEO_CLOCK = 90000
AUDIO_RATE = 48000
AUDIO_PTIME = 0.02
WHITE_LUMA = 200  # Y (limited range) above which a region counts as flashed (white = 235)
MS = fractions.Fraction(1, 1000)

# well-separated RGB colours (a copy of huizhen/testmedia's: that module is being moved)
PALETTE: list[tuple[int, int, int]] = [
    (220, 40, 40), (40, 200, 60), (40, 80, 230), (230, 200, 30),
    (200, 40, 200), (30, 200, 210), (240, 130, 20), (130, 60, 200),
]

Rect = tuple[int, int, int, int]


def tag_yuv(tag: int) -> tuple[int, int, int]:
    """BT.601 limited-range YUV of a palette colour."""
    r, g, b = PALETTE[tag % len(PALETTE)]
    return (round(16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255),
            round(128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255),
            round(128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255))


def in_flash(t: float, period_s: float, phase_s: float, flash_s: float) -> bool:
    """Whether time t (s) falls in a flash (they start at phase_s + n·period_s)."""
    return (t - phase_s + 1e-6) % period_s < flash_s


class Pattern:
    """The test picture in yuv420p (what encoders take, no colour conversion): the tag colour
    with a moving texture and bar, so a VP8 encoder needs ~1 Mbit/s at 640×480; or all white."""

    def __init__(self, tag: int, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.yuv = tag_yuv(tag)
        rng = np.random.default_rng(tag)
        noise = rng.integers(0, 48, size=(height // 4 + 1, width // 4 + 1), dtype=np.uint8)
        self._texture = np.kron(noise, np.ones((4, 4), dtype=np.uint8))[:height, :width]

    def frame(self, index: int, white: bool) -> av.VideoFrame:
        w, h = self.width, self.height
        buf = np.empty(w * h * 3 // 2, dtype=np.uint8)
        y = buf[:w * h].reshape(h, w)
        if white:
            y[:] = 235
            buf[w * h:] = 128
        else:
            y[:] = self.yuv[0] - 24
            y += np.roll(self._texture, index * 4, axis=1)
            x = (index * 8) % w
            y[h // 4:3 * h // 4, x:x + w // 50 + 2] = 180
            buf[w * h:w * h + w * h // 4] = self.yuv[1]
            buf[w * h + w * h // 4:] = self.yuv[2]
        return av.VideoFrame.from_ndarray(buf.reshape(h * 3 // 2, w), format="yuv420p")


def beep_wave(start: int, n: int, onsets: Iterable[int], beep_n: int, frequency: float,
              amplitude: float) -> np.ndarray:
    """Samples [start, start+n) of silence with a sine beep of beep_n samples at each onset
    (sample indices, 48 kHz), each beep starting at phase 0."""
    out = np.zeros(n, dtype=np.float32)
    for onset in onsets:
        lo, hi = max(start, onset), min(start + n, onset + beep_n)
        if lo < hi:
            k = np.arange(lo, hi) - onset
            out[lo - start:hi - start] = amplitude * np.sin(2 * math.pi * frequency * k
                                                            / AUDIO_RATE)
    return out


class FlashVideoTrack(MediaStreamTrack):
    """The flash pattern, paced in real time, timestamped by the monotonic clock since t0.

    Frame k is due at t0 + k/fps and stamped k/fps (90 kHz); a frame whose time has passed is
    skipped, as a camera does. Give publishers that must flash together the same ``t0``
    (default: when the track is made). Flashes start at phase_s + n·period_s; both must be whole
    frames, so a flash begins exactly at a frame (whose pts then equals the beep's first
    sample's, in seconds).
    """

    kind = "video"

    def __init__(self, period_s: float = 1.0, phase_s: float = 0.0, flash_s: float = 0.1,
                 width: int = 320, height: int = 240, fps: int = 30, tag: int = 0,
                 t0: float | None = None) -> None:
        super().__init__()
        for value, what in ((period_s, "period_s"), (phase_s, "phase_s")):
            if abs(value * fps - round(value * fps)) > 1e-9:
                raise ValueError(f"{what} must be a whole number of frames at {fps} fps")
        self.t0 = time.monotonic() if t0 is None else t0
        self.fps = fps
        self.period_f, self.phase_f = round(period_s * fps), round(phase_s * fps)
        self.flash_f = max(1, round(flash_s * fps))
        self.pattern = Pattern(tag, width, height)
        self._index: int | None = None

    def is_flash(self, index: int) -> bool:
        return (index - self.phase_f) % self.period_f < self.flash_f

    async def recv(self) -> av.VideoFrame:
        now = time.monotonic()
        if self._index is None:
            self._index = max(0, math.ceil((now - self.t0) * self.fps))
        due = self.t0 + self._index / self.fps
        if due > now:
            await asyncio.sleep(due - now)
        k = self._index  # a late frame is sent late, never skipped: its timestamp stays true
        frame = self.pattern.frame(k, self.is_flash(k))
        frame.pts = k * VIDEO_CLOCK // self.fps
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self._index = k + 1
        return frame


class BeepAudioTrack(MediaStreamTrack):
    """Silence with a sine beep of beep_s every period_s from phase_s, 20 ms frames paced in
    real time, sample k stamped k/48000 s after t0 (so it lines up with FlashVideoTrack)."""

    kind = "audio"

    def __init__(self, period_s: float = 1.0, phase_s: float = 0.0, beep_s: float = 0.1,
                 frequency: float = 1000.0, amplitude: float = 0.5,
                 t0: float | None = None) -> None:
        super().__init__()
        self.t0 = time.monotonic() if t0 is None else t0
        self.period_n, self.phase_n = round(period_s * AUDIO_RATE), round(phase_s * AUDIO_RATE)
        self.beep_n = round(beep_s * AUDIO_RATE)
        self.frequency, self.amplitude = frequency, amplitude
        self._samples = round(AUDIO_RATE * AUDIO_PTIME)
        self._index: int | None = None

    def samples(self, start: int, n: int) -> np.ndarray:
        first = (start - self.phase_n) // self.period_n
        onsets = [self.phase_n + m * self.period_n for m in range(first, first + 2 + n
                                                                  // self.period_n)]
        return beep_wave(start, n, onsets, self.beep_n, self.frequency, self.amplitude)

    async def recv(self) -> av.AudioFrame:
        now = time.monotonic()
        if self._index is None:
            self._index = max(0, math.ceil((now - self.t0) / AUDIO_PTIME))
        due = self.t0 + self._index * AUDIO_PTIME
        if due > now:
            await asyncio.sleep(due - now)
        start = self._index * self._samples
        wave = np.round(self.samples(start, self._samples) * 32767)
        self._index += 1
        return mono_frame(wave, start)


# -- per-track files like the recorder's (ms timestamps on the session timeline) -------------

def _encoder_options(codec: str) -> dict[str, str]:
    if codec == "libvpx":  # like a browser's VP8: real time, no lookahead (and fast)
        return {"deadline": "realtime", "cpu-used": "16", "lag-in-frames": "0"}
    return {"preset": "ultrafast", "tune": "zerolatency"}


def _setup_encoder(ctx: Any, codec: str, width: int, height: int, bitrate: int) -> Any:
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = MS
    ctx.framerate = fractions.Fraction(30)
    ctx.bit_rate = bitrate
    ctx.options = _encoder_options(codec)
    ctx.thread_count = 1  # libvpx's threads only add CPU time at this size
    return ctx


def write_video(path: Path, frames: Iterable[tuple[int, av.VideoFrame]], codec: str = "libvpx",
                bitrate: int = 1_000_000) -> None:
    """Encode (ms, frame) pairs into a WebM (libvpx: VP8) or MKV (libx264) per-track file.

    A change of frame size starts a new encoder (so a keyframe), as a simulcast layer switch
    does; its packets go into the same stream.
    """
    out = av.open(str(path), "w")
    stream: Any = None
    encoder: Any = None
    size: tuple[int, int] | None = None

    def mux(packets: Iterable[Any]) -> None:
        for packet in packets:
            packet.stream = stream
            out.mux(packet)

    try:
        for ms, frame in frames:
            if (frame.width, frame.height) != size:
                size = (frame.width, frame.height)
                if stream is None:
                    stream = out.add_stream(codec, rate=30)
                    encoder = _setup_encoder(stream.codec_context, codec, *size, bitrate)
                else:
                    mux(encoder.encode(None))
                    encoder = _setup_encoder(av.CodecContext.create(codec, "w"), codec, *size,
                                             bitrate)
            frame.pts, frame.time_base = ms, MS
            mux(encoder.encode(frame))
        if encoder is not None:
            mux(encoder.encode(None))
    finally:
        out.close()


def write_audio(path: Path, start_ms: int, end_ms: int, onsets_ms: Iterable[float],
                frequency: float, drop: Iterable[tuple[float, float]] = (),
                amplitude: float = 0.5, beep_s: float = 0.1, hum: float = 0.0) -> None:
    """An Opus WebM per-track file from start_ms to end_ms: silence (plus an optional 150 Hz
    hum of amplitude ``hum``) with beeps at onsets_ms (sample-exact). Packets inside a
    ``drop`` window (s, s) are left out, as the SFU drops a muted microphone's: the encoder
    runs on through the gap, like a browser's."""
    onsets = [round(ms * AUDIO_RATE / 1000) for ms in onsets_ms]
    beep_n = round(beep_s * AUDIO_RATE)
    windows = list(drop)
    out = av.open(str(path), "w")
    stream: Any = out.add_stream("libopus", rate=AUDIO_RATE)
    stream.layout = "mono"
    stream.bit_rate = 48000

    def mux(packets: Iterable[Any]) -> None:
        for packet in packets:
            t = float(packet.pts * packet.time_base) if packet.pts is not None else 0.0
            if not any(lo <= t < hi for lo, hi in windows):
                out.mux(packet)

    try:
        frame_n = round(AUDIO_RATE * AUDIO_PTIME)
        first = start_ms * AUDIO_RATE // 1000
        for start in range(first, end_ms * AUDIO_RATE // 1000, frame_n):
            wave = beep_wave(start, frame_n, onsets, beep_n, frequency, amplitude)
            if hum:
                wave += hum * np.sin(2 * math.pi * 150 * np.arange(start, start + frame_n)
                                     / AUDIO_RATE).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(wave.reshape(1, -1), format="flt",
                                               layout="mono")
            frame.sample_rate = AUDIO_RATE
            frame.pts, frame.time_base = start, fractions.Fraction(1, AUDIO_RATE)
            mux(stream.encode(frame))
        mux(stream.encode(None))
    finally:
        out.close()


def flash_video(pattern: Pattern, times_ms: Iterable[int], period_s: float = 1.0,
                phase_s: float = 0.0, flash_s: float = 0.1
                ) -> tuple[list[tuple[int, av.VideoFrame]], list[int]]:
    """Frames of ``pattern`` at times_ms, white during flashes; and each flash's first white
    frame's time (ms), where its beep belongs."""
    frames, onsets = [], []
    white_before = False
    for i, ms in enumerate(times_ms):
        white = in_flash(ms / 1000, period_s, phase_s, flash_s)
        if white and not white_before:
            onsets.append(ms)
        white_before = white
        frames.append((ms, pattern.frame(i, white)))
    return frames, onsets


# -- analysis of a recording ---------------------------------------------------------------

def frame_seconds(frame: av.VideoFrame | av.AudioFrame) -> float:
    """A decoded frame's timestamp in seconds."""
    if frame.pts is None or frame.time_base is None:
        raise ValueError("a decoded frame without a timestamp")
    return float(frame.pts * frame.time_base)


def _y_plane(frame: Any) -> np.ndarray:
    plane = frame.planes[0]
    return np.frombuffer(plane, dtype=np.uint8).reshape(-1, plane.line_size)[
        :frame.height, :frame.width]


def flash_onsets(path: Path, rect: Rect | Callable[[float], Rect | None]) -> list[float]:
    """Times (s) of the output frames where the mean luma inside rect (its middle half) jumps
    to near white after a frame that was not. ``rect`` may be a function of time (a tile that
    moves when the layout changes; None: not on screen). A tile already white on the first
    frame it is shown has no onset to see (the flash began before the recording, or before
    the tile appeared): it is not counted."""
    onsets: list[float] = []
    white_before: bool | None = None  # None: the tile was not shown on the frame before
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            t = frame_seconds(frame)
            r = rect(t) if callable(rect) else rect
            if r is None:
                white_before = None
                continue
            # the middle half of the tile: always picture (a letterboxed picture leaves bars
            # at the edges), never the name label (bottom left)
            x, y, w, h = r[0] + r[2] // 4, r[1] + r[3] // 4, r[2] // 2, r[3] // 2
            if frame.format.name not in ("yuv420p", "yuvj420p"):
                frame = frame.reformat(format="yuv420p")
            white = float(_y_plane(frame)[y:y + h, x:x + w].mean()) >= WHITE_LUMA
            if white and white_before is False:
                onsets.append(t)
            white_before = white
    return onsets


def decode_audio(path: Path) -> tuple[np.ndarray, int]:
    """A file's first audio stream as mono float64 placed by pts from t=0, and its rate."""
    chunks: list[tuple[int, np.ndarray]] = []
    rate = AUDIO_RATE
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            rate = frame.sample_rate
            data = frame.to_ndarray().astype(np.float64)
            if not frame.format.is_planar:
                data = data.reshape(-1, len(frame.layout.channels)).T
            pos = round(frame_seconds(frame) * rate)
            chunks.append((pos, data.mean(axis=0)))
    if not chunks:
        return np.zeros(0), rate
    end = max(pos + c.size for pos, c in chunks)
    out = np.zeros(max(0, end))
    for pos, c in chunks:
        if pos >= 0:
            out[pos:pos + c.size] += c
    return out, rate


def beep_onsets(path: Path, frequency: float, window_s: float = 0.008,
                threshold: float = 0.3, min_gap_s: float = 0.3) -> list[float]:
    """Sample-accurate onsets (s) of beeps at ``frequency``.

    The signal is demodulated at the frequency and smoothed with a centred moving average of
    window_s (nulls every 1/window_s Hz, so another beep 500 Hz away barely leaks in): the
    envelope of a beep starting at n0 rises linearly across the window and crosses half the
    beep's level exactly at n0. A beep is where the envelope passes ``threshold`` × the
    loudest; its onset is that half-level crossing, interpolated between samples.
    """
    x, rate = decode_audio(path)
    if x.size == 0:
        return []
    n = np.arange(x.size)
    z = x * np.exp(-2j * math.pi * frequency * n / rate)
    half = int(window_s * rate) // 2
    csum = np.concatenate([[0], np.cumsum(z)])
    lo = np.clip(n - half, 0, x.size)
    hi = np.clip(n + half + 1, 0, x.size)
    env = 2 * np.abs(csum[hi] - csum[lo]) / (2 * half + 1)
    top = float(env.max())
    if top < 1e-3:
        return []
    above = env > threshold * top
    rising = np.flatnonzero(above[1:] & ~above[:-1]) + 1
    onsets: list[float] = []
    for i in rising:
        if onsets and i / rate - onsets[-1] < min_gap_s:
            continue
        peak = float(env[i:i + 6 * half].max())
        j = i
        while j > 0 and env[j - 1] >= peak / 2:
            j -= 1
        while j < env.size and env[j] < peak / 2:
            j += 1
        a, b = env[j - 1], env[j]
        frac = (peak / 2 - a) / (b - a) if b > a else 0.0
        onsets.append(float((j - 1 + frac) / rate))
    return onsets


def pair_offsets(flashes: list[float], beeps: list[float],
                 max_gap_s: float = 0.3) -> list[float]:
    """For each flash with a beep within max_gap_s: beep time − flash time (s; positive:
    sound after picture). Flashes without a beep nearby are left out (count them)."""
    out = []
    for flash in flashes:
        if not beeps:
            break
        nearest = min(beeps, key=lambda b: abs(b - flash))
        if abs(nearest - flash) <= max_gap_s:
            out.append(float(nearest - flash))
    return out
