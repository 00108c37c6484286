"""From RTP packets to whole encoded frames, in order, with no damaged frame let through.

The SFU forwards packets as they come; a recording needs frames. Per RTP stream (one SSRC):

* A small reorder buffer puts packets back in sequence order. Packets the SFU gets repaired
  (NACK → retransmission, which SourceTrack hands on with its original sequence number) fill
  their holes when they arrive.
* A hole that stays open longer than ``give_up_s``, while at least ``give_up_after`` packets
  came after it, is given up (both: when the event loop was held up, the packets that fill
  holes are still waiting in the socket, and a clock alone would give up on them): the
  frame it belongs to is
  dropped, and the stream is written again only from its next keyframe (``on_keyframe_needed``
  asks the publisher for one), so a file never holds a frame decoded from a broken reference,
  and a lost packet never stalls the recording.
* Each codec's payload format is undone here: VP8 (RFC 7741) payload descriptors are stripped;
  H.264 (RFC 6184) single NAL units, STAP-A and FU-A become an Annex B byte stream; an Opus
  packet (RFC 7587) is a frame as it is.

Nothing here decodes media.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from media.rtp import vp8_descriptor_size, vp8_is_keyframe_start, vp8_starts_frame

START_CODE = b"\x00\x00\x00\x01"
MAX_BUFFERED = 2048  # packets held behind a hole; more than that is given up at once
RENACK_S = 0.15  # a hole still open this long is asked for again (and again after as long)
MAX_RENACK = 64  # sequence numbers asked for at once
H264_IDR, H264_SPS, H264_STAP_A, H264_FU_A = 5, 7, 24, 28


@dataclass(frozen=True)
class Frame:
    """One complete encoded frame of a stream."""

    rtp_timestamp: int  # extended (unwrapped) RTP timestamp
    data: bytes
    keyframe: bool
    arrival: float  # wall-clock time (time.time()) its first packet reached the SFU


class Depacketizer:
    """Undo one codec's RTP payload format."""

    #: every packet is a frame of its own (audio)
    packet_is_frame = False

    def frame_start(self, payload: bytes) -> bool:
        """The packet starts a frame (only asked after a hole, to find where to resume)."""
        return True

    def keyframe_start(self, payload: bytes) -> bool:
        return True

    def part(self, payload: bytes) -> bytes | None:
        """The frame bytes this packet carries; None if it cannot be used."""
        return payload


class OpusDepacketizer(Depacketizer):
    packet_is_frame = True


class Vp8Depacketizer(Depacketizer):
    def frame_start(self, payload: bytes) -> bool:
        return vp8_starts_frame(payload)

    def keyframe_start(self, payload: bytes) -> bool:
        return vp8_is_keyframe_start(payload)

    def part(self, payload: bytes) -> bytes | None:
        pos = vp8_descriptor_size(payload)
        return None if pos is None else payload[pos:]


class H264Depacketizer(Depacketizer):
    def frame_start(self, payload: bytes) -> bool:
        if not payload:
            return False
        nal_type = payload[0] & 0x1F
        if nal_type == H264_FU_A:
            return len(payload) > 1 and bool(payload[1] & 0x80)
        return nal_type in range(1, 25)

    def keyframe_start(self, payload: bytes) -> bool:
        if not payload:
            return False
        nal_type = payload[0] & 0x1F
        if nal_type in (H264_IDR, H264_SPS):
            return True
        if nal_type == H264_STAP_A:
            return any(nal[0] & 0x1F in (H264_IDR, H264_SPS) for nal in _stap_units(payload))
        if nal_type == H264_FU_A and len(payload) > 1:
            return bool(payload[1] & 0x80) and payload[1] & 0x1F in (H264_IDR, H264_SPS)
        return False

    def part(self, payload: bytes) -> bytes | None:
        if not payload:
            return None
        nal_type = payload[0] & 0x1F
        if 1 <= nal_type <= 23:
            return START_CODE + payload
        if nal_type == H264_STAP_A:
            units = _stap_units(payload)
            return b"".join(START_CODE + nal for nal in units) if units else None
        if nal_type == H264_FU_A and len(payload) > 2:
            header = payload[1]
            if header & 0x80:  # first fragment: rebuild the NAL header
                return START_CODE + bytes([(payload[0] & 0xE0) | (header & 0x1F)]) + payload[2:]
            return payload[2:]
        return None  # STAP-B, MTAP, FU-B: not sent by WebRTC senders


def _stap_units(payload: bytes) -> list[bytes]:
    units, pos = [], 1
    while pos + 2 <= len(payload):
        size = (payload[pos] << 8) | payload[pos + 1]
        pos += 2
        if size == 0 or pos + size > len(payload):
            return []
        units.append(payload[pos:pos + size])
        pos += size
    return units


def depacketizer_for(mime_type: str) -> Depacketizer:
    mime = mime_type.lower()
    if mime == "video/vp8":
        return Vp8Depacketizer()
    if mime == "video/h264":
        return H264Depacketizer()
    if mime == "audio/opus":
        return OpusDepacketizer()
    raise ValueError(f"cannot record {mime_type}: VP8, H.264 and Opus are supported")


class Unwrapper:
    """Extends a wrapping counter (16-bit sequence numbers, 32-bit timestamps) to an int."""

    def __init__(self, bits: int) -> None:
        self._mod = 1 << bits
        self._half = 1 << (bits - 1)
        self.last: int | None = None

    def extend(self, value: int) -> int:
        if self.last is None:
            self.last = value
            return value
        delta = (value - self.last) % self._mod
        if delta >= self._half:
            delta -= self._mod
        extended = self.last + delta
        if delta > 0:
            self.last = extended
        return extended


@dataclass
class _Packet:
    timestamp: int  # extended
    marker: bool
    payload: bytes
    arrival: float


class FrameAssembler:
    """One RTP stream's packets in, its complete frames out (see the module docstring)."""

    def __init__(self, depacketizer: Depacketizer, give_up_s: float, give_up_after: int,
                 on_frame: Callable[[Frame], None],
                 on_keyframe_needed: Callable[[], None] | None = None,
                 on_missing: Callable[[list[int]], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._codec = depacketizer
        self._on_missing = on_missing  # NACK these (16-bit) sequence numbers again
        self._last_nack = 0.0
        self._give_up_s = give_up_s
        self._give_up_after = give_up_after
        self._on_frame = on_frame
        self._on_keyframe_needed = on_keyframe_needed
        self._clock = clock
        self._seq = Unwrapper(16)
        self._ts = Unwrapper(32)
        self._buffer: dict[int, _Packet] = {}
        self._next: int | None = None  # the extended sequence number to consume next
        self._hole_since: float | None = None
        # the frame being put together
        self._parts: list[bytes] = []
        self._frame_ts: int | None = None
        self._frame_key = False
        self._frame_arrival = 0.0
        self._frame_ok = True
        #: waiting for a keyframe: nothing is written until one starts
        self.need_keyframe = not depacketizer.packet_is_frame
        self.frames = 0
        self.dropped_frames = 0
        self.given_up = 0  # sequence numbers given up for good

    # ---- packets in ------------------------------------------------------------------
    def add(self, seq: int, timestamp: int, marker: bool, payload: bytes,
            arrival: float) -> None:
        ext = self._seq.extend(seq)
        if self._next is None:
            self._next = ext
        if ext < self._next or ext in self._buffer:
            return  # a duplicate, or a repair that came after we gave up on it
        packet = _Packet(self._ts.extend(timestamp), marker, payload, arrival)
        if ext == self._next and not self._buffer:
            self._next += 1
            self._consume(packet)  # in order, nothing held: the fast path
            return
        self._buffer[ext] = packet
        self._drain()
        if self._buffer and self._hole_since is None:
            self._hole_since = self._clock()
        if len(self._buffer) > MAX_BUFFERED:
            self._give_up()

    def tick(self) -> None:
        """Ask again for what a hole misses, and give up on a hole that stayed open too long
        (called a few times a second)."""
        if self._hole_since is None:
            return
        now = self._clock()
        if (now - self._hole_since >= self._give_up_s
                and len(self._buffer) >= self._give_up_after):  # all held are after the hole
            self._give_up()
        elif (self._on_missing is not None
              and now - max(self._hole_since, self._last_nack) >= RENACK_S):
            assert self._next is not None
            self._last_nack = now
            missing = [s & 0xFFFF for s in range(self._next, max(self._buffer))
                       if s not in self._buffer][:MAX_RENACK]
            if missing:
                self._on_missing(missing)

    def flush(self) -> None:
        """The stream ended: whatever sits behind a hole is written as far as it is whole."""
        if self._buffer:
            self._give_up()

    def _drain(self) -> None:
        assert self._next is not None
        moved = False
        while self._next in self._buffer:
            packet = self._buffer.pop(self._next)
            self._next += 1
            self._consume(packet)
            moved = True
        if not self._buffer:
            self._hole_since = None
        elif moved:
            self._hole_since = self._clock()  # a new hole further on: its own deadline

    def _give_up(self) -> None:
        """Skip the hole: the frame it broke is dropped; resume at the next keyframe."""
        if not self._buffer:
            self._hole_since = None
            return
        assert self._next is not None
        first = min(self._buffer)
        self.given_up += first - self._next
        self._next = first
        self._hole_since = None
        waiting = self.need_keyframe
        if not self._codec.packet_is_frame:
            self._parts.clear()
            self._frame_ts = None
            self.need_keyframe = True
        self._drain()
        if self._buffer:
            self._hole_since = self._clock()
        if self.need_keyframe and not waiting and self._on_keyframe_needed is not None:
            # none came in what was held behind the hole (the SFU's own give-up, earlier,
            # usually asked for one already: PLIs are throttled at the source)
            self._on_keyframe_needed()

    # ---- frames out ------------------------------------------------------------------
    def _consume(self, packet: _Packet) -> None:
        if not packet.payload:
            return  # padding only: it holds a sequence number, nothing else
        codec = self._codec
        if codec.packet_is_frame:
            self._emit(Frame(packet.timestamp, packet.payload, True, packet.arrival))
            return
        if self._frame_ts is not None and packet.timestamp != self._frame_ts:
            self._finish()  # the previous frame had no marker; nothing of it was lost
        if self._frame_ts is None:
            self._frame_ts = packet.timestamp
            self._frame_arrival = packet.arrival
            self._frame_ok = codec.frame_start(packet.payload)
            self._frame_key = self._frame_ok and codec.keyframe_start(packet.payload)
        part = codec.part(packet.payload)
        if part is None:
            self._frame_ok = False
        else:
            self._parts.append(part)
        if packet.marker:
            self._finish()

    def _finish(self) -> None:
        assert self._frame_ts is not None
        data = b"".join(self._parts)
        frame = Frame(self._frame_ts, data, self._frame_key, self._frame_arrival)
        ok = self._frame_ok and bool(data)
        self._parts = []
        self._frame_ts = None
        if not ok or (self.need_keyframe and not frame.keyframe):
            self.dropped_frames += 1
            if not ok and not self.need_keyframe:
                self.need_keyframe = True
                if self._on_keyframe_needed is not None:
                    self._on_keyframe_needed()
            return
        self.need_keyframe = False
        self._emit(frame)

    def _emit(self, frame: Frame) -> None:
        self.frames += 1
        self._on_frame(frame)
