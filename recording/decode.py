"""Reading the recorder's per-track files for the compositor: robust, streaming decoding.

A per-track file is decoded packet by packet, one frame ahead of the output, so memory does not
grow with the session's length. A file the recorder could not finish (a crash cuts the last
cluster) is decoded up to the damage: FFmpeg's Matroska demuxer then just stops and reports
"File ended prematurely" through its log, which is captured here per call (``av.logging``
delivers FFmpeg's messages only while a level is set; ``libav_errors_reported`` sets one for the
composite) so the warning names the track. A packet the decoder rejects is skipped and counted.
Captures are per thread, so composites may run in threads side by side.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import av.logging

log = logging.getLogger("huizhen.recording.composite")

MAX_DEMUX_RESTARTS = 8  # demuxer errors in a row after which the rest of a file is given up
LOGGED_PROBLEMS = 5  # per track, individually; the rest are counted


class TrackUnreadable(Exception):
    """The file cannot be opened or holds no stream of the expected kind."""


_level_lock = threading.Lock()
_level_users = 0
_level_saved: int | None = None


@contextlib.contextmanager
def libav_errors_reported() -> Iterator[None]:
    """Have FFmpeg report errors to PyAV (for the per-call captures) while composing.

    PyAV silences FFmpeg's log by default and the setting is process-wide, so it is counted:
    the first composite in the process (the worker may run it in a thread) sets it and the
    last one restores what was there before, leaving anything else in the process as it was.
    """
    global _level_users, _level_saved
    with _level_lock:
        if _level_users == 0:
            _level_saved = av.logging.get_level()
            av.logging.set_level(av.logging.ERROR)
        _level_users += 1
    try:
        yield
    finally:
        with _level_lock:
            _level_users -= 1
            if _level_users == 0:
                av.logging.set_level(_level_saved)


class TrackDecoder:
    """Decoded frames of the first stream of ``kind`` in one file, damage skipped and logged."""

    def __init__(self, path: Path, kind: str, label: str) -> None:
        self.path, self.kind, self.label = path, kind, label
        self.problems: list[str] = []
        self.skipped_packets = 0
        self._capture = av.logging.Capture(local=True)
        try:
            with self._capture:
                self.container = av.open(str(path), mode="r")
        except (OSError, av.FFmpegError) as exc:
            raise TrackUnreadable(f"{label}: cannot open {path}: {exc}") from exc
        self._drain_log()
        streams = self.container.streams.video if kind == "video" else self.container.streams.audio
        if not streams:
            self.container.close()
            raise TrackUnreadable(f"{label}: no {kind} stream in {path}")
        self.stream: Any = streams[0]
        self._closed = False

    def _note(self, message: str) -> None:
        """Record a problem; log the first few of each track, count the rest."""
        self.problems.append(message)
        if len(self.problems) <= LOGGED_PROBLEMS:
            log.warning("%s (%s): %s", self.label, self.path.name, message)

    def _drain_log(self) -> None:
        for _level, _name, message in self._capture.logs:
            self._note(f"ffmpeg: {message.strip()}")
        self._capture.logs.clear()

    def frames(self) -> Iterator[Any]:
        """Frames in decoding order, each with a pts; closes the file at the end."""
        packets = self.container.demux(self.stream)
        restarts = 0
        last_time: float | None = None
        try:
            while True:
                try:
                    with self._capture:
                        packet = next(packets)
                except StopIteration:
                    break
                except av.FFmpegError as exc:
                    self._drain_log()
                    restarts += 1
                    self._note(f"demuxer error after {last_time} s: {exc}")
                    if restarts > MAX_DEMUX_RESTARTS:
                        self._note("giving up on the rest of the file")
                        break
                    packets = self.container.demux(self.stream)
                    continue
                self._drain_log()
                restarts = 0
                yield from self._decode(packet)
                if packet.pts is not None and packet.time_base is not None:
                    last_time = float(packet.pts * packet.time_base)
            yield from self._decode(None)  # flush (a no-op if the demuxer's flush came through)
        finally:
            self.close()
            if self.skipped_packets:
                log.warning("%s (%s): %d damaged packets skipped", self.label, self.path.name,
                            self.skipped_packets)

    def _decode(self, packet: Any) -> list[Any]:
        try:
            with self._capture:
                frames = self.stream.codec_context.decode(packet)
        except EOFError:
            return []
        except av.FFmpegError as exc:
            if packet is not None:
                self.skipped_packets += 1
                if self.skipped_packets <= LOGGED_PROBLEMS:
                    self._note(f"packet at pts {packet.pts} skipped: {exc}")
            return []
        finally:
            self._drain_log()
        return [f for f in frames if f.pts is not None and f.time_base is not None]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.container.close()


class VideoSource:
    """One video track, stepped along the output timeline, one decoded frame ahead.

    ``prev`` is the last frame at or before the output time, ``next`` the first one after it;
    ``pick`` returns whichever is nearer, but never a frame more than ``max_lead_s`` (half an
    output frame) before its time: after a gap (a camera that skipped frames, a loss) the last
    frame holds until the next is due, rather than the next one appearing up to half the gap
    early — a flash after a gap would otherwise be shown ahead of its sound. Frames carry a serial
    number so the compositor scales each one only once per tile size.
    """

    def __init__(self, decoder: TrackDecoder, key: str, max_lead_s: float) -> None:
        self.key = key
        self.max_lead_s = max_lead_s
        self.decoder = decoder
        self._frames = decoder.frames()
        self.prev: tuple[float, int, Any] | None = None
        self.next: tuple[float, int, Any] | None = None
        self._serial = 0
        self.next = self._read()
        self.first_s: float | None = self.next[0] if self.next else None
        self.last_s: float | None = self.first_s

    def _read(self) -> tuple[float, int, Any] | None:
        for frame in self._frames:
            t = float(frame.pts * frame.time_base)
            if self.prev is not None and t < self.prev[0]:
                continue  # out of order (a damaged timestamp): never step back in time
            self._serial += 1
            self.last_s = t
            return t, self._serial, frame
        return None

    @property
    def eof(self) -> bool:
        return self.next is None

    def advance(self, t: float) -> None:
        while self.next is not None and self.next[0] <= t:
            self.prev = self.next
            self.next = self._read()

    def pick(self, t: float) -> tuple[float, int, Any] | None:
        """The frame nearest to t (see the class docstring), or None before the first."""
        nxt, prev = self.next, self.prev
        if nxt is not None and nxt[0] - t <= self.max_lead_s and (
                prev is None or nxt[0] - t < t - prev[0]):
            return nxt
        return prev

    def started(self, t: float) -> bool:
        return self.first_s is not None and self.first_s - self.max_lead_s <= t

    def ended(self, t: float, hold_s: float) -> bool:
        """Nothing more in the file and its last frame is older than hold_s."""
        return self.eof and (self.last_s is None or t > self.last_s + hold_s)
