"""One track written to one file, as it was encoded: VP8/Opus in WebM, H.264 in Matroska.

PyAV muxes the encoded frames (``add_mux_stream``: no codec context, no encoder, no decoder).
Timestamps are session milliseconds, so a late joiner's file simply starts later. The file is
written progressively: a Matroska cluster is closed at least every second (and at every video
keyframe) and handed to the OS at once, so after a crash (``kill -9``) the file plays up to
about a second before it; closing it properly adds the cues (seeking) and the duration.
"""

from __future__ import annotations

import fractions
import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av

log = logging.getLogger("huizhen.recording")

MS = fractions.Fraction(1, 1000)
CLUSTER_TIME_LIMIT_MS = 1000

_FORMATS = {"vp8": ("webm", ".webm"), "opus": ("webm", ".webm"), "h264": ("matroska", ".mkv")}


def file_suffix(codec: str) -> str:
    return _FORMATS[codec][1]


def vp8_frame_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a VP8 keyframe (RFC 6386 9.1: frame tag, start code, sizes)."""
    if len(data) < 10 or data[0] & 0x01 or data[3:6] != b"\x9d\x01\x2a":
        return None
    width, height = struct.unpack_from("<HH", data, 6)
    return width & 0x3FFF, height & 0x3FFF


class _Bits:
    """Reads an H.264 RBSP bit by bit (emulation prevention bytes removed)."""

    def __init__(self, data: bytes) -> None:
        self.data = data.replace(b"\x00\x00\x03", b"\x00\x00")
        self.pos = 0

    def bit(self) -> int:
        byte = self.data[self.pos >> 3]  # IndexError past the end: caught by the caller
        value = (byte >> (7 - (self.pos & 7))) & 1
        self.pos += 1
        return value

    def bits(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = (value << 1) | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while not self.bit():
            zeros += 1
            if zeros > 31:
                raise ValueError("bad exp-Golomb code")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        value = self.ue()
        return (value + 1) // 2 if value & 1 else -(value // 2)


def h264_frame_size(annexb: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SPS in an Annex B access unit, cropping applied."""
    for nal in annexb.split(b"\x00\x00\x01"):
        if nal and nal[0] & 0x1F == 7:
            try:
                return _sps_size(_Bits(nal[1:]))
            except (IndexError, ValueError):
                return None
    return None


def _sps_size(r: _Bits) -> tuple[int, int]:
    profile = r.bits(8)
    r.bits(16)  # constraint flags, level
    r.ue()  # seq_parameter_set_id
    chroma_format = 1
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        chroma_format = r.ue()
        if chroma_format == 3:
            r.bit()
        r.ue()  # bit depth luma
        r.ue()  # bit depth chroma
        r.bit()
        if r.bit():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format != 3 else 12):
                if r.bit():
                    last, nxt = 8, 8
                    for _ in range(16 if i < 6 else 64):
                        if nxt:
                            nxt = (last + r.se() + 256) % 256
                        last = nxt or last
    r.ue()  # log2_max_frame_num
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()
    elif poc_type == 1:
        r.bit()
        r.se()
        r.se()
        for _ in range(r.ue()):
            r.se()
    r.ue()  # max_num_ref_frames
    r.bit()
    width_mbs = r.ue() + 1
    height_units = r.ue() + 1
    frame_mbs_only = r.bit()
    if not frame_mbs_only:
        r.bit()
    r.bit()  # direct_8x8_inference
    width, height = width_mbs * 16, height_units * 16 * (2 - frame_mbs_only)
    if r.bit():  # frame_cropping_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        crop_x = 2 if chroma_format in (1, 2) else 1
        crop_y = (2 if chroma_format == 1 else 1) * (2 - frame_mbs_only)
        width -= (left + right) * crop_x
        height -= (top + bottom) * crop_y
    return width, height


@dataclass
class TrackFileStats:
    path: Path
    codec: str
    frames: int = 0
    keyframes: int = 0
    bytes: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    sizes: list[tuple[int, int]] = field(default_factory=list)  # picture sizes, in order

    @property
    def duration_s(self) -> float:
        if self.first_ms is None or self.last_ms is None:
            return 0.0
        return (self.last_ms - self.first_ms) / 1000


class TrackFile:
    """Writes encoded frames with session timestamps; opened at the first frame written."""

    def __init__(self, path: Path, codec: str) -> None:
        if codec not in _FORMATS:
            raise ValueError(f"cannot record codec {codec!r}")
        self.codec = codec
        self.path = path
        self.stats = TrackFileStats(path, codec)
        self._container: Any = None
        self._stream: Any = None
        self._video = codec != "opus"
        self._last_ms = -1
        self.closed = False

    def write(self, pts_ms: int, data: bytes, keyframe: bool) -> None:
        if self.closed:
            return
        if self._container is None:
            if self._video and not keyframe:
                return  # a video file starts at a keyframe
            self._open(data)
        size = self._size(data) if self._video and keyframe else None
        if size is not None and (not self.stats.sizes or self.stats.sizes[-1] != size):
            self.stats.sizes.append(size)
        pts_ms = max(pts_ms, self._last_ms + 1)  # Matroska needs rising timestamps
        self._last_ms = pts_ms
        packet = av.Packet(data)
        packet.stream = self._stream
        packet.time_base = MS
        packet.pts = packet.dts = pts_ms
        packet.is_keyframe = keyframe
        self._container.mux(packet)
        stats = self.stats
        stats.frames += 1
        stats.keyframes += keyframe
        stats.bytes += len(data)
        if stats.first_ms is None:
            stats.first_ms = pts_ms
        stats.last_ms = pts_ms

    def _size(self, data: bytes) -> tuple[int, int] | None:
        return vp8_frame_size(data) if self.codec == "vp8" else h264_frame_size(data)

    def _open(self, first: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        container_format = _FORMATS[self.codec][0]
        self._container = av.open(
            str(self.path), "w", format=container_format,
            options={"cluster_time_limit": str(CLUSTER_TIME_LIMIT_MS)},
            container_options={"flush_packets": "1"})
        if self._video:
            width, height = self._size(first) or (640, 480)
            self._stream = self._container.add_mux_stream(self.codec, width=width,
                                                          height=height)
        else:
            self._stream = self._container.add_mux_stream(self.codec, rate=48000)
        self._stream.time_base = MS

    def close(self) -> TrackFileStats:
        if not self.closed:
            self.closed = True
            if self._container is not None:
                try:
                    self._container.close()
                except Exception:  # a full disk, say: what was flushed stays readable
                    log.exception("closing a track file failed", extra={"path": str(self.path)})
        return self.stats
