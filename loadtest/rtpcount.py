"""Counting what a load-test subscriber receives, one ``RtpCounter`` per received stream.

Both viewer kinds use it: the full viewer (an aiortc ``RTCRtpReceiver`` whose jitter buffer is
replaced by a tap, loadtest/worker.py) feeds it parsed packets (``add``); the light viewer
(loadtest/lightviewer.py) feeds it the fields it read from the RTP header (``count``) and also
takes from it the missing sequence numbers it NACKs and the figures of its receiver reports
(``report``).
"""

from __future__ import annotations

import collections
import time
from typing import Any

#: a jump of more sequence numbers than this is not NACKed (a restart, or hopeless)
MAX_NACK_GAP = 256


class RtpCounter:
    """What one received stream got: unique packets, payload bytes, frames (video: marker
    bit) and the packets expected from the RTP sequence numbers (RFC 3550: highest extended
    sequence number - first + 1), so loss = expected - received. Retransmissions that fill
    a gap count as received, like a receiver's ``packetsLost``; duplicates are ignored.

    With ``track_gaps`` it also keeps ``missing`` (extended sequence number -> NACKs sent for
    it so far) and, with a ``clock_rate``, the RFC 3550 interarrival jitter, for a receiver
    that sends its own RTCP."""

    SEEN = 2048

    def __init__(self, kind: str, track_gaps: bool = False, clock_rate: int = 0) -> None:
        self.kind = kind
        self.packets = 0
        self.bytes = 0
        self.frames = 0
        self.first_frame_at: float | None = None
        self._base: int | None = None
        self._max = 0
        self._seen: set[int] = set()
        self._order: collections.deque[int] = collections.deque()
        self.missing: dict[int, int] | None = {} if track_gaps else None
        self.clock_rate = clock_rate
        self.jitter = 0.0  # in timestamp units
        self._transit: float | None = None
        self._reported = (0, 0)  # (expected, packets) at the last receiver report

    @property
    def expected(self) -> int:
        return 0 if self._base is None else self._max - self._base + 1

    @property
    def highest(self) -> int:
        """The highest extended sequence number received (RTCP's form: cycles << 16 | seq)."""
        return self._max - 0x10000 if self._base is not None else 0

    def _extend(self, seq: int) -> int:
        ext = (self._max & ~0xFFFF) | seq
        if ext - self._max > 0x8000:
            ext -= 0x10000
        elif self._max - ext > 0x8000:
            ext += 0x10000
        return ext

    def add(self, packet: Any) -> None:
        """A parsed packet (aiortc's ``RtpPacket``)."""
        self.count(int(packet.sequence_number), len(packet.payload), bool(packet.marker))

    def count(self, seq: int, size: int, marker: bool, timestamp: int = 0,
              arrival: float | None = None) -> bool:
        """One packet: its sequence number, payload size and marker bit (and, for the jitter,
        its RTP timestamp and arrival time in seconds). False for a duplicate."""
        if self._base is None:
            ext = self._base = self._max = seq + 0x10000  # room below for reordered packets
        else:
            ext = self._extend(seq)
        if ext in self._seen:
            return False
        self._seen.add(ext)
        self._order.append(ext)
        if len(self._order) > self.SEEN:
            self._seen.discard(self._order.popleft())
        missing = self.missing
        if ext > self._max:
            if missing is not None and 1 < ext - self._max <= MAX_NACK_GAP:
                for lost in range(self._max + 1, ext):
                    missing[lost] = 0
            self._max = ext
            if arrival is not None and self.clock_rate:  # RFC 3550 A.8, new packets only
                transit = arrival * self.clock_rate - timestamp
                if self._transit is not None:
                    d = abs(transit - self._transit)
                    if d < self.clock_rate:  # not a timestamp jump (a new source)
                        self.jitter += (d - self.jitter) / 16
                self._transit = transit
        elif missing:
            missing.pop(ext, None)
        self._base = min(self._base, ext)
        self.packets += 1
        self.bytes += size
        if marker and self.kind == "video":
            self.frames += 1
            if self.first_frame_at is None:
                self.first_frame_at = time.monotonic()
        return True

    def report(self) -> tuple[int, int, int]:
        """For a receiver report: (fraction lost since the last report × 256, cumulative
        packets lost, highest extended sequence number)."""
        expected, packets = self.expected, self.packets
        interval_expected = expected - self._reported[0]
        interval_lost = interval_expected - (packets - self._reported[1])
        self._reported = (expected, packets)
        fraction = (min(255, (interval_lost << 8) // interval_expected)
                    if interval_expected > 0 and interval_lost > 0 else 0)
        return fraction, max(0, expected - packets), self.highest
