"""Compose a recorded session's per-track files into one MP4 a person can watch.

The recorder writes one file per published track (WebM with VP8 or Opus, MKV with H.264),
timestamped in milliseconds on the session timeline. ``compose`` turns them into one H.264 +
AAC MP4 (plays in every browser, on phones and in hospital viewers): the active speaker large
and the others as thumbnails, a screen share large while it is live, names burned in, every
microphone mixed.

Timing is what makes a composite trustworthy as a record, so it is explicit:

* output frame k is at t = k / fps and shows, per track, the decoded frame whose pts is nearest
  to t (not the last one at or before t), so a picture is at most half an output frame off;
* audio is placed sample-exactly at its pts (recording/mixer.py);
* both output streams start at 0 and last ``duration_s``; whatever is missing (late joiners,
  muted cameras, lost packets) is filled with name cards or silence, never by shifting media.

Everything is streamed: each input is one decoded frame ahead of the output, the mix holds one
audio frame per track, so hours of session cost no more memory than seconds. It is synchronous
code for a worker process (or a thread of one: see recording/decode.py on FFmpeg's log).

Output format (``DEFAULT_*``): 960×540 at 25 fps, x264 ``superfast`` CRF 23 (yuv420p, a
keyframe every 4 s), AAC-LC 48 kHz mono 96 kbit/s, ``+faststart``. Chosen by measurement
(bench/composite_speed.py: two 640×480 30 fps VP8 cameras at ~1 Mbit/s and two Opus
microphones, CPU time of the whole process over all threads): x264 is about 60 % of the cost.
On 8 s sessions of the (hard to encode) test pattern, 1280×720 at 25 fps reached 1.75× real
time with ``superfast`` (1.0× ``veryfast``; 2.5× ``ultrafast`` at 7 Mbit/s, twice the bitrate),
960×540 at 30 fps 2.3×, at 25 fps 2.4× (2.7× on a 20 s session on a quiet machine): the best
speed for its bitrate and quality. A shared screen gets 800×450 of the picture (the camera
strip narrows while a screen is live). At 25 fps a picture is at most 20 ms (half a frame)
from its sound.
"""

from __future__ import annotations

import bisect
import contextlib
import fractions
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, VideoReformatter

from recording.decode import (
    TrackDecoder,
    TrackUnreadable,
    VideoSource,
    libav_errors_reported,
)
from recording.layout import Canvas, Painter, Rect, arrange, find_font, fit, frame_planes
from recording.mixer import SAMPLE_RATE, AudioSource, Mixer

log = logging.getLogger("huizhen.recording.composite")

DEFAULT_WIDTH, DEFAULT_HEIGHT, DEFAULT_FPS = 960, 540, 25
DEFAULT_PRESET, DEFAULT_CRF = "superfast", 23
AAC_FRAME = 1024  # samples per AAC frame
MIN_SPEAKER_HOLD_S = 1.5  # a speaker turn shorter than this does not move the layout
CAMERA_STALE_S = 1.0  # a camera without a frame this long shows a name card, not a still
PERSON_END_HOLD_S = 1.0  # a tile stays this long after all of a person's tracks ended
SCREEN_END_HOLD_S = 0.5  # a screen share stays large this long after its last frame
LETTERBOX_RGB = (0, 0, 0)

Kind = Literal["audio", "video"]
Source = Literal["microphone", "camera", "screen"]


@dataclass(frozen=True)
class TrackInput:
    """One per-track file of the recording."""

    path: Path
    kind: Kind
    source: Source
    person: str  # a stable key for one person (their identity)
    name: str  # display name, may be Chinese


@dataclass
class CompositeSpec:
    tracks: list[TrackInput]
    duration_s: float
    #: (session time in s, person key) each time the active speaker changes
    speakers: list[tuple[float, str]]
    output: Path
    width: int = DEFAULT_WIDTH
    height: int = DEFAULT_HEIGHT
    fps: int = DEFAULT_FPS
    preset: str = DEFAULT_PRESET
    crf: int = DEFAULT_CRF
    audio_bitrate: int = 96_000
    font_path: Path | None = None  # default: the first CJK font of layout.FONT_CANDIDATES
    screen_label: str = "{name} · 屏幕共享"


@dataclass
class CompositeResult:
    output: Path
    duration_s: float
    video_frames: int
    audio_samples: int
    #: (start_s, {person: camera tile rect, "screen:<person>": rect}) at each layout change
    layout: list[tuple[float, dict[str, Rect]]] = field(default_factory=list)
    #: tracks left out (missing or unreadable file), with the reason
    skipped: list[str] = field(default_factory=list)
    #: damage found inside files that were used (cut-off tails, skipped packets), per track
    problems: dict[str, list[str]] = field(default_factory=dict)


def speaker_timeline(speakers: list[tuple[float, str]],
                     min_hold_s: float = MIN_SPEAKER_HOLD_S) -> list[tuple[float, str]]:
    """Speaker changes with turns shorter than ``min_hold_s`` dropped (the previous speaker
    stays large), so a cough or a quick "yes" does not flip the layout back and forth.

    The whole list is known in advance, so a kept turn switches the layout when it really
    started, not ``min_hold_s`` later as a live view must.
    """
    events: list[tuple[float, str]] = []
    for start, person in sorted(speakers, key=lambda e: e[0]):
        if not events or events[-1][1] != person:  # a repeated event is no change
            events.append((start, person))
    kept: list[tuple[float, str]] = []
    for i, (start, person) in enumerate(events):
        if kept and kept[-1][1] == person:
            continue
        end = events[i + 1][0] if i + 1 < len(events) else float("inf")
        if end - start >= min_hold_s:
            kept.append((start, person))
    return kept


@dataclass
class _Person:
    key: str
    name: str
    cameras: list[VideoSource] = field(default_factory=list)
    mics: list[AudioSource] = field(default_factory=list)

    def present(self, t: float) -> bool:
        sources: list[VideoSource | AudioSource] = [*self.cameras, *self.mics]
        return any(s.started(t) and not s.ended(t, PERSON_END_HOLD_S) for s in sources)


@dataclass
class _Screen:
    key: str
    label: str
    source: VideoSource

    def live(self, t: float) -> bool:
        # no staleness rule: a static screen is legitimately sent at a very low frame rate
        return self.source.started(t) and not self.source.ended(t, SCREEN_END_HOLD_S)


class _Compositor:
    def __init__(self, spec: CompositeSpec, painter: Painter, result: CompositeResult) -> None:
        self.spec, self.painter, self.result = spec, painter, result
        self.persons: dict[str, _Person] = {}
        self.screens: list[_Screen] = []
        self.videos: list[VideoSource] = []
        self.mics: list[AudioSource] = []
        self.decoders: dict[str, TrackDecoder] = {}
        self.speakers = speaker_timeline(spec.speakers)
        self._speaker_starts = [start for start, _ in self.speakers]
        self.main_person: str | None = None
        self.canvas = Canvas(spec.width, spec.height)
        self._scaled: dict[str, tuple[tuple[str, int, Rect], Any]] = {}
        self._reformatters: dict[str, VideoReformatter] = {}
        try:
            self._open_all()
        except BaseException:
            self.close()
            raise

    def _open_all(self) -> None:
        screen_count: dict[str, int] = {}
        for i, track in enumerate(self.spec.tracks):
            person = self.persons.setdefault(
                track.person, _Person(track.person, track.name or track.person))
            label = f"track {i} {track.person}/{track.source}"
            try:
                decoder = TrackDecoder(track.path, track.kind, label)
            except TrackUnreadable as exc:
                log.warning("composite: %s skipped: %s", label, exc)
                self.result.skipped.append(str(exc))
                continue
            self.decoders[label] = decoder
            if track.kind == "audio":
                mic = AudioSource(decoder, label)
                person.mics.append(mic)
                self.mics.append(mic)
                continue
            video = VideoSource(decoder, label, max_lead_s=0.5 / self.spec.fps)
            self.videos.append(video)
            if track.source == "screen":
                n = screen_count[track.person] = screen_count.get(track.person, 0) + 1
                key = f"screen:{track.person}" + (f"#{n}" if n > 1 else "")
                text = self.spec.screen_label.format(name=person.name)
                self.screens.append(_Screen(key, text, video))
            else:
                person.cameras.append(video)

    def close(self) -> None:
        for decoder in self.decoders.values():
            decoder.close()

    # -- layout ---------------------------------------------------------------------------

    def _speaker_at(self, t: float) -> str | None:
        i = bisect.bisect_right(self._speaker_starts, t)
        return self.speakers[i - 1][1] if i else None

    def scene(self, t: float) -> dict[str, Rect]:
        """Tile rectangles at time t (who is large, who is in the strip)."""
        present = [p.key for p in self.persons.values() if p.present(t)]
        speaker = self._speaker_at(t)
        if speaker in present:
            self.main_person = speaker
        elif self.main_person not in present:
            self.main_person = present[0] if present else None
        live = sorted((s for s in self.screens if s.live(t)),
                      key=lambda s: s.source.first_s or 0.0)
        if live:  # the latest share large; people and any other shares in the strip
            strip = present + [s.key for s in live[:-1]]
            return arrange(self.spec.width, self.spec.height, live[-1].key, strip,
                           wide_main=True)
        main = self.main_person
        return arrange(self.spec.width, self.spec.height, main,
                       [p for p in present if p != main])

    # -- drawing --------------------------------------------------------------------------

    def _blit(self, tile: str, rect: Rect, source: VideoSource,
              picked: tuple[float, int, Any]) -> None:
        """Draw a frame into a tile, aspect kept; each frame is scaled once per tile size."""
        _, serial, frame = picked
        inner = fit(frame.width, frame.height, rect)
        cache_key = (source.key, serial, inner)
        cached = self._scaled.get(tile)
        if cached is None or cached[0] != cache_key:
            reformatter = self._reformatters.setdefault(source.key, VideoReformatter())
            scaled = reformatter.reformat(
                frame, width=inner[2], height=inner[3], format="yuv420p",
                dst_colorspace=Colorspace.ITU601, dst_color_range=ColorRange.MPEG,
                interpolation="BILINEAR", threads=1)
            cached = (cache_key, frame_planes(scaled))
            self._scaled[tile] = cached
        if inner != rect:
            self.canvas.fill(rect, LETTERBOX_RGB)
        self.canvas.put(inner, cached[1])

    def _draw_person(self, person: _Person, rect: Rect, t: float) -> None:
        best: tuple[VideoSource, tuple[float, int, Any]] | None = None
        for camera in person.cameras:
            picked = camera.pick(t)
            if picked is None or t - picked[0] > CAMERA_STALE_S:
                continue
            if best is None or picked[0] > best[1][0]:
                best = (camera, picked)
        if best is None:  # camera off, lost, or audio only: a name card, not a frozen face
            self.canvas.put(rect, self.painter.card(person.name, rect[2], rect[3]))
            return
        self._blit(person.key, rect, *best)
        self.painter.draw_label(self.canvas, rect, person.name)

    def advance(self, t: float) -> None:
        for video in self.videos:
            video.advance(t)

    def render(self, t: float, rects: dict[str, Rect]) -> av.VideoFrame:
        self.canvas.clear()
        screens = {s.key: s for s in self.screens}
        for key, rect in rects.items():
            screen = screens.get(key)
            if screen is None:
                self._draw_person(self.persons[key], rect, t)
                continue
            picked = screen.source.pick(t)
            if picked is not None:
                self._blit(key, rect, screen.source, picked)
                self.painter.draw_label(self.canvas, rect, screen.label)
        return self.canvas.frame()

    def mix(self, mixer: Mixer, until: int) -> np.ndarray:
        for mic in self.mics:
            mic.feed(mixer, until)
        return mixer.take(until)


def _open_output(spec: CompositeSpec, path: Path) -> tuple[Any, Any, Any]:
    container = av.open(str(path), mode="w", format="mp4",
                        options={"movflags": "+faststart"})  # playable while downloading
    video = container.add_stream("libx264", rate=spec.fps)
    video.width, video.height, video.pix_fmt = spec.width, spec.height, "yuv420p"
    cc = video.codec_context
    cc.time_base = fractions.Fraction(1, spec.fps)
    cc.gop_size = 4 * spec.fps  # a keyframe every 4 s: seeking in hours-long records
    cc.thread_count = 0  # x264's own thread pool; CPU time is measured over all threads
    cc.colorspace, cc.color_range = Colorspace.ITU601, ColorRange.MPEG
    cc.color_primaries = cc.color_trc = 6  # SMPTE 170M, as the pixels are (layout.py)
    cc.options = {"preset": spec.preset, "crf": str(spec.crf)}
    audio = container.add_stream("aac", rate=SAMPLE_RATE)
    audio.layout = "mono"
    audio.bit_rate = spec.audio_bitrate
    # FFmpeg's "fast" AAC coder: half the CPU of the default "twoloop" (~10 vs ~23 ms per
    # second of audio here), no audible difference for speech at 96 kbit/s
    audio.codec_context.options = {"aac_coder": "fast"}
    return container, video, audio


def _validate(spec: CompositeSpec) -> None:
    if spec.duration_s <= 0:
        raise ValueError("duration_s must be positive")
    if spec.fps <= 0:
        raise ValueError("fps must be positive")
    if spec.width % 2 or spec.height % 2 or spec.width < 64 or spec.height < 64:
        raise ValueError("width and height must be even and at least 64")


def compose(spec: CompositeSpec,
            progress: Callable[[float], None] | None = None) -> CompositeResult:
    """Compose ``spec.tracks`` into ``spec.output`` (written atomically: a ``.part`` file is
    renamed when complete). Missing or unreadable tracks are skipped and listed in the result;
    damaged parts of a file are skipped and logged. ``progress(fraction)`` is called with a
    non-decreasing fraction at least every 1 % of the session, and with 1.0 at the end."""
    _validate(spec)
    painter = Painter(find_font(spec.font_path))  # fail before any work if there is no font
    n_frames = max(1, round(spec.duration_s * spec.fps))
    result = CompositeResult(output=spec.output, duration_s=n_frames / spec.fps,
                             video_frames=0, audio_samples=0)
    spec.output.parent.mkdir(parents=True, exist_ok=True)
    partial = spec.output.with_name(spec.output.name + ".part")
    if progress is not None:
        progress(0.0)
    with libav_errors_reported():
        comp = _Compositor(spec, painter, result)
        try:
            _write(comp, partial, n_frames, progress)
        except BaseException:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise
        finally:
            comp.close()
            for label, decoder in comp.decoders.items():
                if decoder.problems or decoder.skipped_packets:
                    result.problems[label] = [*decoder.problems]
    os.replace(partial, spec.output)
    if progress is not None:
        progress(1.0)
    log.info("composite %s: %.1f s, %d frames, %d tracks skipped", spec.output,
             result.duration_s, result.video_frames, len(result.skipped))
    return result


def _write(comp: _Compositor, path: Path, n_frames: int,
           progress: Callable[[float], None] | None) -> None:
    """The output loop: per output frame, the picture, then the audio up to its end."""
    spec, result = comp.spec, comp.result
    n_samples = max(1, round(spec.duration_s * SAMPLE_RATE))
    step = max(1, n_frames // 100)
    container, vstream, astream = _open_output(spec, path)
    try:
        mixer = Mixer()
        pending = np.zeros(0, dtype=np.float32)  # mixed audio not yet encoded
        for k in range(n_frames):
            t = k / spec.fps
            comp.advance(t)
            rects = comp.scene(t)
            if not result.layout or result.layout[-1][1] != rects:
                result.layout.append((t, rects))
            frame = comp.render(t, rects)
            frame.pts = k
            frame.time_base = fractions.Fraction(1, spec.fps)
            for packet in vstream.encode(frame):
                container.mux(packet)
            result.video_frames += 1
            until = n_samples if k == n_frames - 1 else min(
                n_samples, round((k + 1) * SAMPLE_RATE / spec.fps))
            pending = np.concatenate([pending, comp.mix(mixer, until)])
            pending = _encode_audio(container, astream, pending, result, final=False)
            if progress is not None and (k + 1) % step == 0:
                progress((k + 1) / n_frames)
        _encode_audio(container, astream, pending, result, final=True)
        for stream in (vstream, astream):
            for packet in stream.encode(None):
                container.mux(packet)
    finally:
        container.close()


def _encode_audio(container: Any, stream: Any, pending: np.ndarray, result: CompositeResult,
                  final: bool) -> np.ndarray:
    """Encode whole AAC frames of ``pending`` (and the short rest if ``final``); returns the
    samples left over."""
    while pending.size >= AAC_FRAME or (final and pending.size):
        chunk, pending = pending[:AAC_FRAME], pending[AAC_FRAME:]
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk.reshape(1, -1)),
                                           format="fltp", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = result.audio_samples
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        for packet in stream.encode(frame):
            container.mux(packet)
        result.audio_samples += chunk.size
    return pending
