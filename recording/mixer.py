"""The composite's audio: every microphone placed at its timestamps, summed, soft-limited.

Each decoded frame is placed at the sample its pts names on the session timeline (48 kHz), so
the mix keeps each track in sync with its video however the recording was interrupted: a
gap (muted microphone, network loss, DTX) stays silent, a late joiner starts where they joined.
Timestamps are whole milliseconds, so consecutive frames of one run can look up to a sample
or so apart from where the previous one ended (48 samples per ms); a frame that starts within
CONTINUITY_SAMPLES of where the previous one ended is joined to it exactly, which avoids
clicks from 1-sample gaps and overlaps while staying within ~1 ms of the timestamps.

Mixing is a plain sum (two people rarely talk at full scale at once, and scaling each track
down would make a lone voice quieter) followed by a soft limiter that never lets the sum reach
full scale, so the AAC encoder is never fed a clipped waveform.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import av
import numpy as np

from recording.decode import TrackDecoder

SAMPLE_RATE = 48000
CONTINUITY_SAMPLES = 96  # 2 ms: ms-rounded timestamps of a continuous run still join exactly
LIMIT_KNEE = 0.8  # below this the limiter is the identity
LIMIT_CEILING = 0.97  # it never exceeds this: headroom for AAC's overshoot on decoding


def soft_limit(x: np.ndarray, knee: float = LIMIT_KNEE,
               ceiling: float = LIMIT_CEILING) -> np.ndarray:
    """Identity up to ``knee``, then a tanh curve towards (never beyond) ``ceiling``.

    Continuous in value and slope at the knee, so speech below it is untouched and peaks
    above it are rounded off instead of clipped.
    """
    out = x.astype(np.float32, copy=True)
    over = np.abs(out) > knee
    if over.any():
        mag = np.abs(out[over])
        room = ceiling - knee
        out[over] = np.sign(out[over]) * (knee + room * np.tanh((mag - knee) / room))
    return out


class AudioSource:
    """One microphone track as (first sample, mono float32 samples) runs on the session clock."""

    def __init__(self, decoder: TrackDecoder, key: str) -> None:
        self.key = key
        self.decoder = decoder
        self._frames: Iterator[Any] = decoder.frames()
        self._resampler: av.AudioResampler | None = None
        self._cursor: int | None = None  # where the last chunk ended
        self.pending: tuple[int, np.ndarray] | None = self._read()
        self.first_s: float | None = (
            self.pending[0] / SAMPLE_RATE if self.pending is not None else None)
        self.last_s: float | None = self.first_s

    def _samples(self, frame: Any) -> np.ndarray:
        """A frame as mono float32 at 48 kHz (Opus decodes to that already: no resampling)."""
        if frame.sample_rate != SAMPLE_RATE or frame.format.name != "fltp":
            if self._resampler is None:
                self._resampler = av.AudioResampler(format="fltp", layout="mono",
                                                    rate=SAMPLE_RATE)
            parts = [f.to_ndarray() for f in self._resampler.resample(frame)]
            if not parts:
                return np.zeros(0, dtype=np.float32)
            return np.concatenate(parts, axis=1)[0].astype(np.float32)
        data = frame.to_ndarray()
        return (data[0] if data.shape[0] == 1 else data.mean(axis=0)).astype(np.float32)

    def _read(self) -> tuple[int, np.ndarray] | None:
        for frame in self._frames:
            samples = self._samples(frame)
            if samples.size == 0:
                continue
            pos = round(float(frame.pts * frame.time_base) * SAMPLE_RATE)
            if self._cursor is not None:
                if abs(pos - self._cursor) <= CONTINUITY_SAMPLES:
                    pos = self._cursor
                elif pos < self._cursor:  # overlaps what was placed already: keep the first
                    samples = samples[self._cursor - pos:]
                    pos = self._cursor
                    if samples.size == 0:
                        continue
            self._cursor = pos + samples.size
            self.last_s = self._cursor / SAMPLE_RATE
            return pos, samples
        return None

    def feed(self, mixer: Mixer, until: int) -> None:
        """Add every chunk that starts before sample ``until`` to the mix."""
        while self.pending is not None and self.pending[0] < until:
            mixer.add(*self.pending)
            self.pending = self._read()

    def started(self, t: float) -> bool:
        return self.first_s is not None and self.first_s <= t

    def ended(self, t: float, hold_s: float) -> bool:
        return self.pending is None and (self.last_s is None or t > self.last_s + hold_s)


class Mixer:
    """A sliding window of the mix: chunks are added at absolute sample positions; ``take``
    hands out (limited) what is complete and forgets it. Holds only what lies ahead of the
    output, i.e. at most about one audio frame per track."""

    def __init__(self) -> None:
        self.base = 0  # absolute sample index of buf[0]
        self.buf = np.zeros(SAMPLE_RATE, dtype=np.float32)

    def add(self, pos: int, samples: np.ndarray) -> None:
        if pos < self.base:  # before what was already handed out: too late to be heard
            samples = samples[self.base - pos:]
            pos = self.base
        start = pos - self.base
        end = start + samples.size
        if end > self.buf.size:
            grown = np.zeros(max(end, 2 * self.buf.size), dtype=np.float32)
            grown[:self.buf.size] = self.buf
            self.buf = grown
        self.buf[start:end] += samples

    def take(self, until: int) -> np.ndarray:
        """The limited mix from ``base`` up to (not including) sample ``until``."""
        n = until - self.base
        if n <= 0:
            return np.zeros(0, dtype=np.float32)
        if n > self.buf.size:
            grown = np.zeros(n, dtype=np.float32)
            grown[:self.buf.size] = self.buf
            self.buf = grown
        out = soft_limit(self.buf[:n])
        rest = self.buf[n:].copy()
        self.buf[:] = 0
        self.buf[:rest.size] = rest
        self.base = until
        return out
