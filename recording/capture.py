"""Capturing one published track, inside the service, from the packets the SFU forwards.

A :class:`TrackRecorder` is a packet tap on each layer of a ``MediaTrack`` (media/source.py):
it gets every packet the publisher sends (retransmissions included, with their original
sequence numbers) and every sender report, before the SFU forwards them. Per RTP stream a
:class:`~recording.rtpframes.FrameAssembler` makes whole frames, the stream's
:class:`~recording.timeline.SenderClock` (from its sender reports) and its participant's
:class:`~recording.timeline.ClockOffset` place them on the session timeline, and a
:class:`~recording.trackfile.TrackFile` writes them. No decoder, no encoder, no extra peer
connection; the live path only pays for the tap.

* Frames wait for their stream's second sender report (senders send one every second or so;
  the better of two is not one a slow keyframe made late); after ``SR_WAIT_S`` they go with
  one, and without any the arrival time stands in for it.
* Simulcast: the highest layer that arrives is recorded; when it stops (the publisher's
  uplink shrank) or a higher one appears, the recording moves at that layer's next keyframe
  (asked for), so the file never holds a frame from a layer it did not start on.
* A new SSRC (the publisher restarted its stream) gets a fresh assembler and clock; the file
  goes on, from the new stream's first keyframe.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from media.source import MediaTrack, SourceTrack
from recording.rtpframes import Frame, FrameAssembler, depacketizer_for
from recording.timeline import ClockOffset, SenderClock, SessionClock
from recording.trackfile import TrackFile, TrackFileStats

log = logging.getLogger("huizhen.recording")

SR_WAIT_S = 3.0  # frames wait this long for their stream's second sender report
MAX_PENDING = 600  # frames held while waiting (≈ 10 s of audio + video)
LAYER_ALIVE_S = 1.0  # a simulcast layer with no packet for this long has stopped
GIVE_UP_S = {"audio": 0.2, "video": 0.6}  # how long a hole may wait for its retransmission
GIVE_UP_AFTER = {"audio": 8, "video": 15}  # … and how many packets must have come after it


@dataclass(frozen=True)
class TrackMeta:
    """What the recording knows of a track (names stay out of logs)."""

    track_id: str
    participant_id: str
    identity: str
    role: str
    kind: str  # audio | video
    source: str  # microphone | camera | screen
    codec: str  # opus | vp8 | h264


class _Stream:
    """One RTP stream (one SSRC of one layer)."""

    def _nack(self, seqs: list[int]) -> None:
        self.layer.nack_missing(seqs)

    def __init__(self, layer: SourceTrack, recorder: TrackRecorder) -> None:
        self.layer = layer
        self.clock = SenderClock(layer.clock_rate)
        self.pending: list[Frame] = []
        self.placing = False  # frames go straight onto the timeline (no more waiting)
        self.first_seen = recorder.clock()
        self.last_packet = self.first_seen
        self.assembler = FrameAssembler(
            depacketizer_for(layer.mime_type), GIVE_UP_S.get(layer.kind, 0.6),
            GIVE_UP_AFTER.get(layer.kind, 15),
            lambda frame: recorder._on_frame(self, frame), layer.request_keyframe,
            # video is repaired by retransmission: ask again for what a hole still misses
            # (the publisher's own NACK went out once; a room nobody watches has no other)
            self._nack if layer.is_video else None, clock=recorder.clock)


class TrackRecorder:
    """Records one MediaTrack to one file (see the module docstring)."""

    def __init__(self, track: MediaTrack, meta: TrackMeta, path: Path,
                 session: SessionClock, offset: ClockOffset,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.clock = clock  # for waits and liveness (tests drive both)
        self.wall = wall  # packets' arrival times
        self.track = track
        self.meta = meta
        self.session = session
        self.offset = offset
        self.file = TrackFile(path, meta.codec)
        self.video = meta.kind == "video"
        self._streams: dict[int, _Stream] = {}
        self._layers = list(track.layers)
        self.layer: SourceTrack | None = self._layers[-1] if self.video else self._layers[0]
        self._next_layer: SourceTrack | None = None
        self._need_keyframe = self.video
        self.placed = 0  # frames placed on the timeline (written, or left out in a pause)
        self.outside = 0  # frames that fell before the start or into a pause
        self.closed = False
        for layer in self._layers:
            layer.taps.append(self)
        if self.video and self.layer is not None:
            self.layer.request_keyframe()

    # ---- the packet tap (media/source.py calls these) ------------------------------------
    def on_rtp(self, source: SourceTrack, ssrc: int, seq: int, timestamp: int, marker: int,
               payload: bytes) -> None:
        stream = self._streams.get(ssrc)
        if stream is None:
            stream = self._streams[ssrc] = _Stream(source, self)
        stream.last_packet = self.clock()
        stream.assembler.add(seq, timestamp, bool(marker), payload, self.wall())

    def on_sender_report(self, source: SourceTrack, ntp: int, rtp_timestamp: int) -> None:
        if source.ssrc is None:
            return
        stream = self._streams.get(source.ssrc)
        if stream is None:
            return
        stream.clock.on_sender_report(ntp, rtp_timestamp)
        if stream.clock.settled and not stream.placing:
            self._release(stream)

    # ---- frames ------------------------------------------------------------------------------
    def _on_frame(self, stream: _Stream, frame: Frame) -> None:
        if self.closed:
            return
        if self.video and len(self._layers) > 1:
            if stream.layer is self._next_layer and frame.keyframe:
                for old in self._streams.values():  # what the old layer still holds goes first
                    if old.layer is self.layer and not old.placing:
                        self._force(old)
                self.layer, self._next_layer = stream.layer, None
                log.info("recording moved to another simulcast layer", extra={
                    "track_id": self.meta.track_id, "rid": stream.layer.rid})
            if stream.layer is not self.layer:
                return
        if not stream.placing:
            if len(stream.pending) < MAX_PENDING:
                stream.pending.append(frame)
            return
        self._place(stream, frame)

    def _force(self, stream: _Stream) -> None:
        """Place a stream's frames now, with one sender report or none (arrival times)."""
        if stream.pending and not stream.clock.ready:
            first = stream.pending[0]
            stream.clock.assume(first.rtp_timestamp, first.arrival)
            log.info("no sender report: placing a stream by arrival time",
                     extra={"track_id": self.meta.track_id})
        self._release(stream)

    def _release(self, stream: _Stream) -> None:
        stream.placing = True
        pending, stream.pending = stream.pending, []
        for frame in pending:
            self._place(stream, frame)

    def _place(self, stream: _Stream, frame: Frame) -> None:
        clock = stream.clock
        sender_time = clock.sender_time(frame.rtp_timestamp)
        if clock.from_arrival:
            server_time = sender_time
        else:
            self.offset.observe(frame.arrival, sender_time, audio=not self.video)
            assert self.offset.value is not None
            server_time = sender_time + self.offset.value
        self.placed += 1
        at = self.session.to_session(server_time)
        if at is None:
            self.outside += 1
            self._need_keyframe = self.video  # resume (or start) at a keyframe
            return
        if self._need_keyframe:
            if not frame.keyframe:
                return
            self._need_keyframe = False
        self.file.write(round(at * 1000), frame.data, frame.keyframe)

    # ---- housekeeping --------------------------------------------------------------------
    def tick(self) -> None:
        """A few times a second: holes given up on, reports waited for, layers chosen."""
        now = self.clock()
        for stream in list(self._streams.values()):
            stream.assembler.tick()
            if (not stream.placing and now - stream.first_seen > SR_WAIT_S
                    and (stream.clock.ready or stream.pending)):
                self._force(stream)
        if self.video and len(self._layers) > 1:
            self._choose_layer(now)

    def _choose_layer(self, now: float) -> None:
        alive = [layer for layer in self._layers
                 if any(s.layer is layer and now - s.last_packet < LAYER_ALIVE_S
                        for s in self._streams.values())]
        if not alive:
            return
        best = alive[-1]
        current_alive = self.layer in alive
        if best is self.layer or best is self._next_layer:
            if current_alive and self._next_layer is not None and best is self.layer:
                self._next_layer = None  # the current one is the best again
            return
        if not current_alive or self.layer is None or (
                self._layers.index(best) > self._layers.index(self.layer)):
            self._next_layer = best
            best.request_keyframe()

    @property
    def dropped_frames(self) -> int:
        """Frames left out because a packet of theirs (or of a frame before) never came."""
        return sum(s.assembler.dropped_frames for s in self._streams.values())

    def resumed(self) -> None:
        """The recording goes on after a pause: ask for a keyframe to start again from."""
        if self.video and self.layer is not None:
            self.layer.request_keyframe()

    def close(self) -> TrackFileStats:
        """Write what is whole, close the file and take the tap off."""
        if not self.closed:
            for stream in self._streams.values():
                stream.assembler.flush()
                self._force(stream)
            self.closed = True
            for layer in self._layers:
                if self in layer.taps:
                    layer.taps.remove(self)
        return self.file.close()
