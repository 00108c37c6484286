"""One benchmark client per process, driven by bench/fanout.py and bench/recording.py.

Targets (``--target``):
  huizhen  the Huizhen SFU: signalling over its WebSocket, ``sdk.participant.Participant``
           with ``decode=False``
  relay    bench/relay_baseline.py: one HTTP POST of the SDP offer, aiortc ``MediaRelay``

Roles (``--role``):
  subscribe  receive the publisher's video and count frames (RTP marker bit) and RTP payload
             bytes per frame without decoding anything: the receiver's jitter buffer is
             replaced by a counter, so the client's own CPU stays small and the benchmark
             measures the server
  publish    send the 640x480 VP8 test pattern (video only, 30 fps at most: late frames are
             skipped like a camera's; the encoder follows the server's REMB). ``--audio`` also
             publishes a tone (Opus; huizhen only). ``--replay`` (huizhen): encode
             ``--replay-seconds`` of the pattern once at start (VP8 at ``--max-kbps``, aiortc's
             encoder settings, a keyframe every second) and one second of the tone, and send
             those encoded frames in a loop (aiortc's sender only packetises an ``av.Packet``),
             so a publisher costs ~0.05 core instead of ~0.2
  receive    (huizhen) receive the room's audio and video and count frames without decoding:
             the plain subscriber that bench/recording.py compares a recorder with
  record     (huizhen) receive, decode (aiortc's receivers) and record what arrives with
             aiortc's ``MediaRecorder`` into ``--record-to`` (.webm: VP8 and Opus re-encoded):
             how an aiortc-based service records (bench/recording.py's baseline)

Protocol with the parent: stdout carries one JSON object per line (``{"event": "ready", …}``
when the first frame arrived / the publisher is connected, ``{"event": "stats", …}``,
``{"event": "error", …}``); logs go to stderr. On stdin, ``window T0 T1`` (two
``time.monotonic()`` values; CLOCK_MONOTONIC is shared by all processes on Linux) prints the
frames received (subscriber) or sent (publisher) in [T0, T1); ``stop T0 T1`` does the same and
then leaves and exits; ``stop`` alone or the end of input makes the worker leave and exit, so
a worker never outlives its parent. ``packets T0 T1`` (publisher) prints the RTP packets it
sent in [T0, T1) (``{"event": "packets", …}``).

Added latency: the publisher notes, for every RTP packet it sends, the send time (taken when
aiortc's ``RTCDtlsTransport._send_rtp`` is entered, before SRTP) under a key made of a hash of
the packet's payload, and the packet's RTP timestamp; subscribers note the arrival time of every
packet under the same key, and the arrival of the first packet of each frame (RTP timestamp).
The arrival time is the kernel's receive timestamp of the datagram (``SO_TIMESTAMPNS``: when
the server's packet reached this subscriber's socket, however late this busy process reads
it), and also, as ``t_app``, the time ``RTCDtlsTransport._handle_rtp_data`` is entered (after
this process has read the datagram and decrypted it). Huizhen forwards payloads unchanged, so
keys match packet for packet; the MediaRelay baseline re-encodes, so there only frames can be
matched (by RTP timestamp: see ``fanout.match_frames``). The subscriber's ``stats`` carry these
lists (``arrivals``, ``frame_arrivals``).

Every peer connection gathers ICE candidates on 127.0.0.1 only and uses no STUN/TURN server.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import contextlib
import fractions
import hashlib
import itertools
import json
import logging
import math
import random
import sys
import time
from asyncio import selector_events
from collections.abc import Awaitable, Callable
from typing import Any

import _paths  # noqa: F401  (first: the project's packages before bench/'s scripts)
import aiohttp
import aiortc.codecs.vpx
import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpCodecCapability,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.codecs.opus import OpusEncoder
from aiortc.contrib.media import MediaRecorder
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtp import compute_audio_level_dbov, is_rtcp

from media import rxstamps
from media.ice import IcePolicy
from sdk.participant import Participant
from sdk.testmedia import (
    AUDIO_PTIME,
    AUDIO_RATE,
    VIDEO_CLOCK,
    PatternVideoTrack,
    ToneAudioTrack,
)

JITTER_BUFFER_ATTR = "_RTCRtpReceiver__jitter_buffer"  # aiortc 1.16, name-mangled

log = logging.getLogger("bench.subscriber")


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


# ---- per-packet times, for the added latency ----------------------------------------------------
def payload_key(payload: bytes) -> int:
    """A key for one RTP packet that survives forwarding: a hash of its payload (the SFU
    rewrites the header, never the payload). 64 bits, the same in every process (Python's own
    ``hash()`` of bytes is salted per process)."""
    return int.from_bytes(hashlib.blake2b(payload, digest_size=8).digest(), "big")


def parse_rtp(data: bytes) -> tuple[int, bytes] | None:
    """(RTP timestamp, payload without padding) of a serialised RTP packet, or None."""
    if len(data) < 12:
        return None
    first = data[0]
    pos = 12 + 4 * (first & 0x0F)
    if first & 0x10:  # header extension
        if len(data) < pos + 4:
            return None
        pos += 4 + 4 * int.from_bytes(data[pos + 2:pos + 4], "big")
    end = len(data) - (data[-1] if first & 0x20 else 0)
    if end <= pos:
        return None
    return int.from_bytes(data[4:8], "big"), data[pos:end]


class PacketTimes:
    """Times of RTP packets (sent or received), with each packet's payload key and RTP
    timestamp; plus the time of the first packet of every frame (RTP timestamp)."""

    #: beyond this many packets, the oldest half is dropped (~10 min of 1 Mbit/s video)
    LIMIT = 60000
    RECENT = 64  # RTP timestamps remembered to recognise a frame already seen

    def __init__(self) -> None:
        self.times: list[float] = []
        self.app_times: list[float] = []  # subscriber: when this process handled the packet
        self.keys: list[int] = []
        self.ts: list[int] = []
        self.frame_times: list[float] = []
        self.frame_ts: list[int] = []
        self._recent: collections.deque[int] = collections.deque(maxlen=self.RECENT)

    def add(self, t: float, payload: bytes, timestamp: int, t_app: float | None = None
            ) -> None:
        if not payload:  # padding only: nothing to match
            return
        self.times.append(t)
        self.app_times.append(t if t_app is None else t_app)
        self.keys.append(payload_key(payload))
        self.ts.append(timestamp)
        if timestamp not in self._recent:
            self._recent.append(timestamp)
            self.frame_times.append(t)
            self.frame_ts.append(timestamp)
        if len(self.times) > self.LIMIT:
            half = self.LIMIT // 2
            del self.times[:half], self.app_times[:half], self.keys[:half], self.ts[:half]
            cut = bisect.bisect_left(self.frame_times, self.times[0])
            del self.frame_times[:cut], self.frame_ts[:cut]

    def window(self, t0: float, t1: float) -> dict[str, Any]:
        """The packets and frames of [t0, t1) (times rounded to µs)."""
        lo, hi = bisect.bisect_left(self.times, t0), bisect.bisect_left(self.times, t1)
        flo = bisect.bisect_left(self.frame_times, t0)
        fhi = bisect.bisect_left(self.frame_times, t1)
        return {
            "keys": self.keys[lo:hi], "ts": self.ts[lo:hi],
            "t": [round(t, 6) for t in self.times[lo:hi]],
            "t_app": [round(t, 6) for t in self.app_times[lo:hi]],
            "frame_ts": self.frame_ts[flo:fhi],
            "frame_t": [round(t, 6) for t in self.frame_times[flo:fhi]],
        }


def record_sent_packets(log: PacketTimes) -> None:
    """Note every RTP packet this process sends (publisher): the time is taken on entering
    ``RTCDtlsTransport._send_rtp``, before SRTP protection and the socket."""
    original = RTCDtlsTransport._send_rtp

    async def _send_rtp(self: RTCDtlsTransport, data: bytes) -> None:
        t = time.monotonic()
        if not is_rtcp(data) and (parsed := parse_rtp(data)) is not None:
            log.add(t, parsed[1], parsed[0])
        await original(self, data)

    RTCDtlsTransport._send_rtp = _send_rtp  # type: ignore[method-assign]


ARRIVAL_ATTR = "_bench_rtp_arrival"
#: (SSRC bytes, sequence number bytes) of a received SRTP packet -> kernel receive time, on
#: the monotonic clock (the RTP header is not encrypted, so the key survives decryption)
_socket_arrivals: dict[tuple[bytes, bytes], float] = {}


def _read_with_timestamps(self: Any) -> None:
    """asyncio's datagram read, with the kernel's receive timestamp (media/rxstamps.py)."""
    if self._conn_lost:
        return
    sock = self._sock
    if not getattr(self, "_bench_timestamps", False):
        rxstamps.enable(sock)
        self._bench_timestamps = True
    try:
        data, addr, stamp = rxstamps.receive(sock, self.max_size)
    except (BlockingIOError, InterruptedError):
        return
    except OSError as exc:
        self._protocol.error_received(exc)
        return
    if stamp is not None and rxstamps.is_srtp(data):
        if len(_socket_arrivals) > 20000:  # never read (not RTP after all): forget
            _socket_arrivals.clear()
        _socket_arrivals[(data[8:12], data[2:4])] = stamp - (time.time() - time.monotonic())
    self._protocol.datagram_received(data, addr)


def stamp_rtp_arrivals() -> None:
    """Note on each DTLS transport when its latest RTP packet arrived: the kernel's receive
    timestamp and the time ``RTCDtlsTransport._handle_rtp_data`` is entered (just after SRTP,
    before parsing and routing). The jitter-buffer tap, reached for the same packet, reads
    them (one transport handles one packet at a time)."""
    selector_events._SelectorDatagramTransport._read_ready = (  # type: ignore[attr-defined]
        _read_with_timestamps)
    original = RTCDtlsTransport._handle_rtp_data

    async def _handle_rtp_data(self: RTCDtlsTransport, data: bytes, arrival_time_ms: int
                               ) -> None:
        now = time.monotonic()
        setattr(self, ARRIVAL_ATTR, (_socket_arrivals.pop((data[8:12], data[2:4]), None), now))
        await original(self, data, arrival_time_ms)

    RTCDtlsTransport._handle_rtp_data = _handle_rtp_data  # type: ignore[method-assign]


# ---- counting frames without decoding --------------------------------------------------------
class FrameLog:
    """Arrival time and RTP payload size of every video frame (a frame ends at a marker bit)."""

    #: sequence numbers remembered to recognise retransmitted (RTX / NACKed) packets
    SEEN = 2048

    def __init__(self) -> None:
        self.times: list[float] = []
        self.sizes: list[int] = []
        self.started_at = time.monotonic()
        self.first_frame = asyncio.Event()
        self.duplicates = 0
        self._pending = 0
        self._seen: set[int] = set()
        self._seen_order: collections.deque[int] = collections.deque()
        #: arrival of every packet (subscriber) or send of every packet (publisher)
        self.packets = PacketTimes()
        #: publisher with --replay: what one pass of the replayed stream holds
        self.replay: dict[str, Any] | None = None

    def on_packet(self, packet: Any, arrived: tuple[float | None, float] | None = None
                  ) -> None:
        """``arrived``: (kernel receive time if known, time this process handled it)."""
        seq = int(packet.sequence_number)
        if seq in self._seen:  # a retransmission of a packet we already had
            self.duplicates += 1
            return
        at_socket, at_app = (None, time.monotonic()) if arrived is None else arrived
        self.packets.add(at_app if at_socket is None else at_socket,
                         bytes(packet.payload), int(packet.timestamp), at_app)
        self._seen.add(seq)
        self._seen_order.append(seq)
        if len(self._seen_order) > self.SEEN:
            self._seen.discard(self._seen_order.popleft())
        self._pending += len(packet.payload)
        if packet.marker:
            self.on_frame(self._pending)
            self._pending = 0

    def on_frame(self, payload_bytes: int) -> None:
        self.times.append(time.monotonic())
        self.sizes.append(payload_bytes)
        self.first_frame.set()

    def window(self, t0: float, t1: float) -> dict[str, Any]:
        lo = bisect.bisect_left(self.times, t0)
        hi = bisect.bisect_left(self.times, t1)
        frames = hi - lo
        duration = max(t1 - t0, 1e-9)
        payload = sum(self.sizes[lo:hi])
        edges = [t0, *self.times[lo:hi], t1]
        max_gap = max(b - a for a, b in itertools.pairwise(edges))
        return {
            "frames": frames,
            "window_s": round(duration, 3),
            "fps": round(frames / duration, 2),
            "payload_bytes": payload,
            "mbps": round(payload * 8 / duration / 1e6, 4),
            "max_gap_s": round(max_gap, 3),
            "total_frames": len(self.times),
            "duplicate_packets": self.duplicates,
            "first_frame_delay_s": self.first_frame_delay,
            **self._arrivals(t0, t1),
        }

    def _arrivals(self, t0: float, t1: float) -> dict[str, Any]:
        """Packet and frame arrival times of the window, for the added latency."""
        if not self.packets.times:  # the publisher (sends, receives nothing)
            return {}
        w = self.packets.window(t0, t1)
        return {"arrivals": {"keys": w["keys"], "t": w["t"], "t_app": w["t_app"]},
                "frame_arrivals": {"ts": w["frame_ts"], "t": w["frame_t"]}}

    @property
    def first_frame_delay(self) -> float | None:
        return round(self.times[0] - self.started_at, 3) if self.times else None


class FrameTap:
    """Stands in for an ``RTCRtpReceiver``'s jitter buffer: logs packets, never yields a frame.

    ``add()`` returning ``(False, None)`` means "no PLI, no complete frame", so nothing reaches
    the receiver's decoder thread or its track queue. ``inner`` (another counter, e.g. the one
    ``Participant(decode=False)`` installs) is called too.
    """

    def __init__(self, frames: FrameLog, inner: Any = None, receiver: Any = None) -> None:
        self.frames = frames
        self.inner = inner
        self.receiver = receiver

    def add(self, packet: Any) -> tuple[bool, None]:
        transport = getattr(self.receiver, "transport", None)
        self.frames.on_packet(packet, getattr(transport, ARRIVAL_ATTR, None))
        if self.inner is not None:
            self.inner.add(packet)
        return False, None


def install_tap(receiver: Any, frames: FrameLog, chain: bool = False) -> None:
    if not hasattr(receiver, JITTER_BUFFER_ATTR):
        raise RuntimeError("aiortc's RTCRtpReceiver has no jitter buffer attribute any more")
    inner = getattr(receiver, JITTER_BUFFER_ATTR) if chain else None
    setattr(receiver, JITTER_BUFFER_ATTR, FrameTap(frames, inner, receiver))


def count_sent_frames(sender: RTCRtpSender, frames: FrameLog) -> None:
    """Log every encoded frame the sender sends (what the server receives from us)."""
    next_frame = sender._next_encoded_frame

    async def counted(codec: Any) -> Any:
        encoded = await next_frame(codec)
        if encoded is not None and encoded.payloads:
            frames.on_frame(sum(len(p) for p in encoded.payloads))
        return encoded

    sender._next_encoded_frame = counted  # type: ignore[method-assign]


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
    (``fanout.match_frames``). Huizhen forwards timestamps shifted by a constant as well."""

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
    ``fanout.match_frames``). A frame whose time has passed is sent at once, never skipped
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


# ---- Huizhen ---------------------------------------------------------------------------------
class BenchParticipant(Participant):
    """A viewer that also logs frame times and sizes of every video track it receives."""

    #: its sockets are read by ``_read_with_timestamps`` (the latency figures' clock)
    stamp_arrivals = False

    def __init__(self, *args: Any, frames: FrameLog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.frame_log = frames

    def _count_rtp(self, mid: str, receiver: Any) -> None:
        super()._count_rtp(mid, receiver)
        info = self._mid_tracks.get(mid)
        if info is not None and info.get("kind") == "video":
            install_tap(receiver, self.frame_log, chain=True)


async def wait_connected(pc: RTCPeerConnection, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while pc.connectionState != "connected":
        if pc.connectionState in ("failed", "closed") or time.monotonic() > deadline:
            raise RuntimeError(f"peer connection {pc.connectionState} instead of connected")
        await asyncio.sleep(0.05)


async def huizhen_client(args: argparse.Namespace, frames: FrameLog
                         ) -> Callable[[], Awaitable[None]]:
    video: MediaStreamTrack = CameraPatternTrack(args.tag)
    tone = 440.0 + 110 * args.tag  # ToneAudioTrack's pitch for this tag, as sdk publishes
    audio: MediaStreamTrack = ToneAudioTrack(tone)
    level: int | None = None
    if args.role == "publish" and args.replay:
        # before joining: this blocks the event loop for seconds, and a participant that
        # does not answer the server's heartbeat is dropped
        encoded = encode_pattern(args.tag, args.replay_seconds, args.max_kbps)
        frames.replay = replay_summary(encoded, 30)
        video = ReplayVideoTrack(encoded, tag=args.tag)
        if args.audio:
            packets, level = encode_tone(tone)
            audio = ReplayAudioTrack(packets)
            frames.replay["audio_kbps"] = round(sum(len(p) for p in packets) * 8 / 1000 /
                                                (len(packets) * AUDIO_PTIME), 1)
    participant = BenchParticipant(args.server, args.room, args.token, ice=ice_policy(args),
                                   decode=False, frames=frames)
    await participant.join(timeout=args.ready_timeout)
    if args.role == "publish":
        await participant.publish(audio=args.audio, video=True, tag=args.tag, video_track=video,
                                  audio_track=audio if args.audio else None)
        pc = participant._publish_pcs[0]
        count_sent_frames(next(s for s in pc.getSenders() if s.track is video), frames)
        if level is not None:
            stamp_audio_level(next(s for s in pc.getSenders() if s.track is audio), level)
        await wait_connected(pc, args.ready_timeout)
    return participant.leave


# ---- the recording baseline: a participant that records what it receives ---------------------
class CountedTrack(MediaStreamTrack):
    """Hands on a received track's decoded frames, noting each one (what MediaRecorder got).
    ``after``: hand out nothing until that event is set."""

    def __init__(self, inner: MediaStreamTrack, frames: FrameLog,
                 after: asyncio.Event | None = None) -> None:
        super().__init__()
        self.kind = inner.kind
        self.inner = inner
        self.frames = frames
        self.after = after

    async def recv(self) -> Any:
        frame = await self.inner.recv()
        if self.after is not None:
            await self.after.wait()
        self.frames.on_frame(0)
        return frame


class ReceiveParticipant(Participant):
    """Receives the room's tracks. Without ``record_to``: counts frames from RTP and decodes
    nothing (role ``receive``). With it (role ``record``): aiortc's receivers decode, and
    ``MediaRecorder`` re-encodes what arrives into that file (.webm: VP8 + Opus), as an
    aiortc-based service records. Video frames go to ``frames``, audio frames to ``audio``
    (counted as they reach the recorder when recording)."""

    #: a second kind of track is waited for this long before the recorder starts without it
    OTHER_KIND_WAIT_S = 2.0

    def __init__(self, server_url: str, room_id: str, token: str, ice: IcePolicy, *,
                 frames: FrameLog, audio: FrameLog, record_to: str | None) -> None:
        super().__init__(server_url, room_id, token, ice=ice, decode=record_to is not None)
        self.video_log = frames
        self.audio_log = audio
        self.recorder = MediaRecorder(record_to) if record_to else None
        self._to_record: dict[str, MediaStreamTrack] = {}
        self._recording = False

    def _count_frame(self, stats: Any) -> float:
        now = super()._count_frame(stats)
        if self.recorder is None:
            (self.video_log if stats.kind == "video" else self.audio_log).on_frame(0)
        return now

    async def _drain(self, mid: str, track: MediaStreamTrack) -> None:
        if self.recorder is None or self._recording or track.kind in self._to_record:
            await super()._drain(mid, track)  # (a track that came late is drained, unrecorded)
            return
        # MediaRecorder opens every stream's encoder when the file gets its first packet, and
        # sets the video size from the first video frame: a first audio packet before it
        # kills the video ("Cannot change width after codec is open"). So audio waits for
        # the first video frame.
        video = track.kind == "video"
        self._to_record[track.kind] = CountedTrack(
            track, self.video_log if video else self.audio_log,
            None if video else self.video_log.first_frame)
        if len(self._to_record) < 2:
            await asyncio.sleep(self.OTHER_KIND_WAIT_S)
        if not self._recording:
            self._recording = True
            for counted in self._to_record.values():
                self.recorder.addTrack(counted)
            await self.recorder.start()

    async def leave(self) -> None:
        if self.recorder is not None:
            with contextlib.suppress(Exception):
                await self.recorder.stop()  # writes the file's end
        await super().leave()


async def receive_client(args: argparse.Namespace, frames: FrameLog, audio: FrameLog
                         ) -> Callable[[], Awaitable[None]]:
    participant = ReceiveParticipant(
        args.server, args.room, args.token, ice=ice_policy(args), frames=frames, audio=audio,
        record_to=args.record_to if args.role == "record" else None)
    await participant.join(timeout=args.ready_timeout)
    return participant.leave


# ---- the MediaRelay baseline -----------------------------------------------------------------
async def post_offer(url: str, pc: RTCPeerConnection) -> None:
    await pc.setLocalDescription(await pc.createOffer())
    offer = {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}
    async with aiohttp.ClientSession() as http, http.post(url, json=offer) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{url}: HTTP {resp.status}: {await resp.text()}")
        answer = await resp.json()
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))


async def relay_client(args: argparse.Namespace, frames: FrameLog
                       ) -> Callable[[], Awaitable[None]]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    base = args.server.rstrip("/")
    if args.role == "publish":
        transceiver = pc.addTransceiver(CameraPatternTrack(args.tag), direction="sendonly")
        transceiver.setCodecPreferences(vp8_preferences())
        count_sent_frames(transceiver.sender, frames)
        await post_offer(base + "/publish", pc)
        await wait_connected(pc, args.ready_timeout)
    else:
        transceiver = pc.addTransceiver("video", direction="recvonly")
        transceiver.setCodecPreferences(vp8_preferences())
        install_tap(transceiver.receiver, frames)
        await post_offer(base + "/subscribe", pc)
    return pc.close


# ---- Janus VideoRoom (the C SFU measured beside ours) ---------------------------------------
JANUS_ROOM = 1234  # configured by fanout.JanusTarget


class JanusSession:
    """Janus's HTTP API: one session with one VideoRoom handle; events by long poll."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.http = aiohttp.ClientSession()
        self.session = 0
        self.handle = 0
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._poll: asyncio.Task[None] | None = None

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "transaction": secrets_token()}
        async with self.http.post(self.base + path, json=body) as resp:
            data: dict[str, Any] = await resp.json(content_type=None)
        if data.get("janus") == "error" or "error" in data.get("plugindata", {}).get("data", {}):
            raise RuntimeError(f"Janus refused {body}: {data}")
        return data

    async def open(self) -> None:
        self.session = (await self._post("", {"janus": "create"}))["data"]["id"]
        self._poll = asyncio.ensure_future(self._long_poll())
        self.handle = (await self._post(f"/{self.session}", {
            "janus": "attach", "plugin": "janus.plugin.videoroom"}))["data"]["id"]

    async def _long_poll(self) -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with self.http.get(f"{self.base}/{self.session}?maxev=10") as resp:
                    data = await resp.json(content_type=None)
                for event in data if isinstance(data, list) else [data]:
                    await self.events.put(event)

    async def message(self, body: dict[str, Any], jsep: dict[str, Any] | None = None
                      ) -> dict[str, Any]:
        """A VideoRoom request; for an asynchronous one, the event that answers it."""
        request: dict[str, Any] = {"janus": "message", "body": body}
        if jsep is not None:
            request["jsep"] = jsep
        reply = await self._post(f"/{self.session}/{self.handle}", request)
        if reply.get("janus") != "ack":
            return reply
        while True:
            event = await self.events.get()
            if event.get("janus") == "event" and event.get("sender") == self.handle:
                data = event.get("plugindata", {}).get("data", {})
                if "error" in data:
                    raise RuntimeError(f"Janus refused {body}: {data}")
                return event

    async def end_of_candidates(self) -> None:
        """Our SDP carries every candidate (aiortc does not trickle): say there are no more."""
        await self._post(f"/{self.session}/{self.handle}",
                         {"janus": "trickle", "candidate": {"completed": True}})

    async def close(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
        with contextlib.suppress(Exception):
            await self._post(f"/{self.session}", {"janus": "destroy"})
        await self.http.close()


def secrets_token() -> str:
    return f"{random.getrandbits(64):016x}"


def jsep_of(pc: RTCPeerConnection) -> dict[str, str]:
    return {"type": pc.localDescription.type, "sdp": pc.localDescription.sdp}


async def janus_client(args: argparse.Namespace, frames: FrameLog
                       ) -> Callable[[], Awaitable[None]]:
    janus = JanusSession(args.server)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))

    async def close() -> None:
        await pc.close()
        await janus.close()

    try:
        await janus.open()
        if args.role == "publish":
            transceiver = pc.addTransceiver(CameraPatternTrack(args.tag), direction="sendonly")
            transceiver.setCodecPreferences(vp8_preferences())
            count_sent_frames(transceiver.sender, frames)
            await pc.setLocalDescription(await pc.createOffer())
            event = await janus.message({"request": "joinandconfigure", "room": JANUS_ROOM,
                                         "ptype": "publisher", "display": "bench"},
                                        jsep_of(pc))
            await janus.end_of_candidates()
            answer = event["jsep"]
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
            await wait_connected(pc, args.ready_timeout)
        else:
            listed = await janus.message({"request": "listparticipants", "room": JANUS_ROOM})
            feeds = [p["id"] for p in listed["plugindata"]["data"]["participants"]
                     if p.get("publisher")]
            if not feeds:
                raise RuntimeError("no publisher in the Janus room")

            event = await janus.message({"request": "join", "room": JANUS_ROOM,
                                         "ptype": "subscriber",
                                         "streams": [{"feed": feeds[0]}]})
            offer = event["jsep"]
            await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], offer["type"]))
            for transceiver in pc.getTransceivers():
                if transceiver.kind == "video":
                    install_tap(transceiver.receiver, frames)
            await pc.setLocalDescription(await pc.createAnswer())
            await janus.message({"request": "start", "room": JANUS_ROOM}, jsep_of(pc))
            await janus.end_of_candidates()
    except BaseException:
        await close()
        raise
    return close


# ---- main ------------------------------------------------------------------------------------
def ice_policy(args: argparse.Namespace) -> IcePolicy:
    """Candidates on ``--ice-address`` only (127.0.0.1 unless the benchmark says otherwise)."""
    return IcePolicy(gather_addresses=[args.ice_address])


async def stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def serve_commands(reader: asyncio.StreamReader, frames: FrameLog,
                         sent: PacketTimes, audio: FrameLog | None = None) -> None:
    """``window T0 T1``: print the frames of that window. ``packets T0 T1``: print the RTP
    packets sent in that window (publisher). ``stop [T0 T1]`` (printing that window first) or
    the end of input: return, and the worker leaves."""
    while True:
        line = await reader.readline()
        if not line:
            return
        words = line.decode().split()
        if not words or words[0] not in ("window", "stop", "packets"):
            continue
        if words[0] == "packets" and len(words) == 3:
            emit("packets", **sent.window(float(words[1]), float(words[2])))
            continue
        if len(words) == 3:
            t0, t1 = float(words[1]), float(words[2])
            extra = {} if audio is None else {"audio_fps": audio.window(t0, t1)["fps"]}
            emit("stats", **frames.window(t0, t1), **extra)
        if words[0] == "stop":
            return


async def run(args: argparse.Namespace) -> int:
    ice_policy(args).install()
    frames = FrameLog()
    audio = FrameLog()  # roles receive and record: audio frames
    sent = PacketTimes()
    if args.role == "publish":
        record_sent_packets(sent)
    elif args.role == "subscribe":
        stamp_rtp_arrivals()
    reader = await stdin_reader()
    baseline = args.role in ("receive", "record")
    stop = asyncio.ensure_future(serve_commands(reader, frames, sent,
                                                audio if baseline else None))
    connect = {"huizhen": huizhen_client, "relay": relay_client,
               "janus": janus_client}[args.target]
    close: Callable[[], Awaitable[None]] | None = None
    try:
        async def start() -> None:
            nonlocal close
            if baseline:
                close = await receive_client(args, frames, audio)
            else:
                close = await connect(args, frames)
            if args.role != "publish":
                await frames.first_frame.wait()

        starting = asyncio.ensure_future(asyncio.wait_for(start(), args.ready_timeout))
        await asyncio.wait([starting, stop], return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():  # told to stop (or orphaned) before being ready
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
            return 1
        try:
            starting.result()
        except TimeoutError:
            emit("error", message=f"not ready after {args.ready_timeout} s")
            return 1
        emit("ready", role=args.role, target=args.target,
             first_frame_delay_s=frames.first_frame_delay, replay=frames.replay)
        await stop
        return 0
    except Exception as exc:
        log.exception("worker failed")
        emit("error", message=f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        stop.cancel()
        if close is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(close(), 5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=["huizhen", "relay", "janus"], required=True)
    parser.add_argument("--role", choices=["subscribe", "publish", "receive", "record"],
                        default="subscribe")
    parser.add_argument("--server", required=True, help="http://127.0.0.1:PORT")
    parser.add_argument("--room", help="room id (huizhen)")
    parser.add_argument("--token", help="participant token (huizhen)")
    parser.add_argument("--tag", type=int, default=0, help="test pattern colour")
    parser.add_argument("--ice-address", default="127.0.0.1",
                        help="the one address to gather ICE candidates on (a 127.0.0.0/8 one)")
    parser.add_argument("--ready-timeout", type=float, default=60)
    parser.add_argument("--max-kbps", type=int, default=1000,
                        help="publisher: the VP8 encoder's bitrate ceiling (aiortc's is 1500)")
    parser.add_argument("--replay", action="store_true",
                        help="publisher: send a pre-encoded loop of the pattern (VP8 at "
                             "--max-kbps, a keyframe every second) instead of encoding live")
    parser.add_argument("--replay-seconds", type=float, default=4.0,
                        help="publisher with --replay: length of the loop (default 4 s)")
    parser.add_argument("--audio", action="store_true",
                        help="publisher (huizhen): also publish an Opus tone")
    parser.add_argument("--record-to", help="role record: the .webm file MediaRecorder writes")
    args = parser.parse_args(argv)
    # the encoder follows REMB up to this ceiling: ~1 Mbit/s is the benchmark's stream
    aiortc.codecs.vpx.MAX_BITRATE = args.max_kbps * 1000
    if args.target == "huizhen" and not (args.room and args.token):
        parser.error("--target huizhen needs --room and --token")
    if args.role in ("receive", "record") and args.target != "huizhen":
        parser.error(f"--role {args.role} is for --target huizhen")
    if args.role == "record" and not args.record_to:
        parser.error("--role record needs --record-to FILE.webm")
    if (args.replay or args.audio) and (args.role != "publish" or args.target != "huizhen"):
        parser.error("--replay and --audio are for --role publish --target huizhen")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
