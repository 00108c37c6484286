"""Synthetic media for the headless client: a recognisable test pattern and a tone.

The pattern fills the frame with the publisher's colour (derived from a small integer "tag") and
draws a moving bar and a frame counter, so a receiver can check *whose* video it decoded
(``frame_tag``) and that it moves, not just count frames.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time

import av
import numpy as np
from aiortc import MediaStreamTrack

VIDEO_CLOCK = 90000
AUDIO_RATE = 48000
AUDIO_PTIME = 0.02

# well-separated colours (BGR is not used anywhere: these are RGB)
PALETTE: list[tuple[int, int, int]] = [
    (220, 40, 40), (40, 200, 60), (40, 80, 230), (230, 200, 30),
    (200, 40, 200), (30, 200, 210), (240, 130, 20), (130, 60, 200),
]


def tag_colour(tag: int) -> tuple[int, int, int]:
    return PALETTE[tag % len(PALETTE)]


def frame_tag(frame: av.VideoFrame) -> int | None:
    """The tag whose colour fills the frame's corners, or None if no colour is close."""
    img = frame.to_ndarray(format="rgb24")
    h, w, _ = img.shape
    patch = np.concatenate([img[4:h // 6, 4:w // 6].reshape(-1, 3),
                            img[-h // 6:-4, -w // 6:-4].reshape(-1, 3)])
    mean = patch.mean(axis=0)
    best, best_d = None, 1e9
    for i, colour in enumerate(PALETTE):
        d = float(np.abs(mean - np.array(colour)).sum())
        if d < best_d:
            best, best_d = i, d
    return best if best_d < 60 else None


COUNTER_BITS = 12


def read_counter(img: np.ndarray) -> int:
    """The frame counter a PatternVideoTrack drew into this RGB picture (modulo 4096)."""
    h = img.shape[0]
    count = 0
    for bit in range(COUNTER_BITS):
        block = img[h - 36:h - 28, 24 + bit * 20:32 + bit * 20]
        if float(block.mean()) < 50:
            count |= 1 << bit
    return count


class PatternVideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, tag: int = 0, width: int = 640, height: int = 480, fps: int = 30) -> None:
        super().__init__()
        self.tag = tag
        self.width, self.height, self.fps = width, height, fps
        self._count = 0
        self._start: float | None = None
        base = np.zeros((height, width, 3), dtype=np.uint8)
        base[:, :] = tag_colour(tag)
        self._base = base
        # a little texture so the encoder has something real to do at ~1 Mbit/s
        rng = np.random.default_rng(tag)
        self._noise = rng.integers(0, 40, size=(height // 8, width // 8, 3), dtype=np.uint8)

    def image(self, count: int) -> np.ndarray:
        """Frame number ``count`` as RGB: the tag colour, a textured centre that scrolls, a
        moving bar and the frame counter as black blocks (so a receiver can tell which frame
        it got, and rebuild it to compare: ``read_counter``)."""
        img = self._base.copy()
        h, w = self.height, self.width
        tile = np.kron(self._noise, np.ones((8, 8, 1), dtype=np.uint8))
        cy0, cy1, cx0, cx1 = h // 4, 3 * h // 4, w // 4, 3 * w // 4
        img[cy0:cy1, cx0:cx1] = np.roll(tile, count * 4, axis=1)[cy0:cy1, cx0:cx1]
        x = (count * 8) % w
        img[h // 4: 3 * h // 4, x:x + 12] = 255
        for bit in range(COUNTER_BITS):
            if count >> bit & 1:
                img[h - 40:h - 24, 20 + bit * 20:36 + bit * 20] = 0
        return img

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._count / self.fps
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        img = self.image(self._count)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = int(self._count * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self._count += 1
        return frame


def mono_frame(samples: np.ndarray, pts: int) -> av.AudioFrame:
    """An s16 mono 48 kHz frame of ``samples`` starting at sample ``pts``."""
    frame = av.AudioFrame.from_ndarray(samples.astype(np.int16).reshape(1, -1), format="s16",
                                       layout="mono")
    frame.sample_rate = AUDIO_RATE
    frame.pts = pts
    frame.time_base = fractions.Fraction(1, AUDIO_RATE)
    return frame


class ToneAudioTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, frequency: float = 440.0, amplitude: float = 0.3) -> None:
        super().__init__()
        self.frequency = frequency
        self.amplitude = amplitude
        self._samples = int(AUDIO_RATE * AUDIO_PTIME)
        self._count = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._count * AUDIO_PTIME
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        t0 = self._count * self._samples
        t = (np.arange(self._samples) + t0) / AUDIO_RATE
        wave = (self.amplitude * 32767 * np.sin(2 * math.pi * self.frequency * t)).astype(np.int16)
        self._count += 1
        return mono_frame(wave, t0)
