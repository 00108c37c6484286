"""Small, fast RTP helpers for the forwarding path: keyframe detection and header building."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

RTP_VERSION_BITS = 0x80
ONE_BYTE_PROFILE = 0xBEDE

URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_RTP_STREAM_ID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"

_HEADER = struct.Struct("!BBHII")


def vp8_descriptor_size(payload: bytes) -> int | None:
    """Length of the RFC 7741 payload descriptor at the start of ``payload``; None if the
    packet is too short to hold it."""
    size = len(payload)
    if size < 1:
        return None
    pos = 1
    if payload[0] & 0x80:  # X: extension byte follows
        if size < 2:
            return None
        ext = payload[1]
        pos = 2
        if ext & 0x80:  # I: picture id, 7 or 15 bits
            if size <= pos:
                return None
            pos += 2 if payload[pos] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            pos += 1
        if ext & 0x30:  # T or K: TID/KEYIDX byte
            pos += 1
    return pos if size >= pos else None


def vp8_starts_frame(payload: bytes) -> bool:
    """The packet starts a VP8 frame: S bit set, partition index 0."""
    return bool(payload) and bool(payload[0] & 0x10) and not payload[0] & 0x07


def _vp8_frame_start(payload: bytes) -> int | None:
    """Where the VP8 frame starts in this RTP payload (after the RFC 7741 descriptor), if the
    packet starts a frame (S bit set, partition 0); else None."""
    if not vp8_starts_frame(payload):
        return None
    pos = vp8_descriptor_size(payload)
    return pos if pos is not None and len(payload) > pos else None


def vp8_is_keyframe_start(payload: bytes) -> bool:
    """True when this VP8 RTP payload starts a keyframe (RFC 7741 descriptor, then bit P=0)."""
    pos = _vp8_frame_start(payload)
    return pos is not None and not payload[pos] & 0x01


def vp8_keyframe_size(payload: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of the VP8 keyframe this payload starts (RFC 6386
    9.1: 3-byte frame tag, start code 9d 01 2a, then 14-bit width and height)."""
    pos = _vp8_frame_start(payload)
    if pos is None or payload[pos] & 0x01 or len(payload) < pos + 10:
        return None
    if payload[pos + 3:pos + 6] != b"\x9d\x01\x2a":
        return None
    width, height = struct.unpack_from("<HH", payload, pos + 6)
    return width & 0x3FFF, height & 0x3FFF


_H264_KEY_NALS = (5, 7)  # IDR slice, SPS


def h264_is_keyframe_start(payload: bytes) -> bool:
    """True when this H.264 RTP payload (RFC 6184) carries an SPS or the start of an IDR."""
    if not payload:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type in _H264_KEY_NALS:
        return True
    if nal_type == 24:  # STAP-A: 2-byte sizes, then NAL units
        pos = 1
        while pos + 2 < len(payload):
            nalu_size = (payload[pos] << 8) | payload[pos + 1]
            if payload[pos + 2] & 0x1F in _H264_KEY_NALS:
                return True
            pos += 2 + nalu_size
        return False
    if nal_type == 28 and len(payload) > 1:  # FU-A: start bit and the fragmented NAL type
        fu_header = payload[1]
        return bool(fu_header & 0x80) and (fu_header & 0x1F) in _H264_KEY_NALS
    return False


def keyframe_detector(mime_type: str) -> Callable[[bytes], bool] | None:
    mime = mime_type.lower()
    if mime == "video/vp8":
        return vp8_is_keyframe_start
    if mime == "video/h264":
        return h264_is_keyframe_start
    return None


def abs_send_time_now() -> int:
    """Now as the abs-send-time header extension carries it: 6.18 fixed-point seconds, 24 bits."""
    return int(time.time() * 262144) & 0xFFFFFF


class ExtensionIds(NamedTuple):
    """The header extension ids a subscriber negotiated (0 = not negotiated); a tuple, so that
    looking a packet's block up by it (per packet and subscriber) hashes and compares in C."""

    audio_level: int = 0
    abs_send_time: int = 0

    @property
    def empty(self) -> bool:
        return not (self.audio_level or self.abs_send_time)


def build_extension_block(
    ids: ExtensionIds, audio_level: tuple[bool, int] | None, abs_send_time: int | None
) -> bytes:
    """A one-byte-header extension block (RFC 8285) with the subscriber's ids; b"" if none."""
    body = bytearray()
    if ids.audio_level and audio_level is not None:
        voice, level = audio_level
        body.append((ids.audio_level << 4) | 0)
        body.append((0x80 if voice else 0) | (level & 0x7F))
    if ids.abs_send_time and abs_send_time is not None:
        body.append((ids.abs_send_time << 4) | 2)
        body += (abs_send_time & 0xFFFFFF).to_bytes(3, "big")
    if not body:
        return b""
    while len(body) % 4:
        body.append(0)
    return struct.pack("!HH", ONE_BYTE_PROFILE, len(body) // 4) + bytes(body)


@dataclass(frozen=True)
class PacketTemplate:
    """A packet minus its per-subscriber header fields: the first header byte (version, P and
    X bits) and everything after the fixed header (extensions, payload, padding)."""

    first_byte: int
    tail: bytes


def build_packet(extension_block: bytes, payload: bytes, padding: int = 0) -> PacketTemplate:
    first = RTP_VERSION_BITS | (0x10 if extension_block else 0)
    tail = extension_block + payload
    if padding:
        first |= 0x20
        tail += bytes(padding - 1) + bytes([padding])
    return PacketTemplate(first, tail)


#: an empty packet with one byte of padding: fills a sequence number, carries nothing
PADDING_ONLY = PacketTemplate(RTP_VERSION_BITS | 0x20, b"\x01")


def stamp(template: PacketTemplate, marker_pt: int, seq: int, timestamp: int, ssrc: int
          ) -> bytes:
    """One subscriber's packet: its header fields + the shared tail (one copy of the payload);
    the per-packet hot path."""
    return _HEADER.pack(template.first_byte, marker_pt, seq, timestamp, ssrc) + template.tail
