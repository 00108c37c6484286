"""bench/subscriber.py's counters: the time of every RTP packet a publisher sends or a subscriber
receives (keyed by a hash of its payload, for the added latency), the kernel's receive
timestamps, and frames counted from RTP without decoding (a stand-in for the receiver's jitter
buffer). See bench/subscriber.py's docstring, "Added latency".
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import hashlib
import itertools
import time
from asyncio import selector_events
from typing import Any

import _paths  # noqa: F401  (first: the project's packages before bench/'s scripts)
from aiortc import RTCRtpSender
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtp import is_rtcp

from media import rxstamps

JITTER_BUFFER_ATTR = "_RTCRtpReceiver__jitter_buffer"  # aiortc 1.16, name-mangled


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
