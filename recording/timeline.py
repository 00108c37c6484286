"""One timeline per recording: every frame of every track placed by when it was captured.

Three clocks meet here:

* a stream's RTP timestamps, mapped to its sender's wall clock by the RTCP sender reports
  (NTP ↔ RTP) — the same mapping receivers use for lip sync. Senders stamp a report with the
  time they send it, so a report can only be late, never early (aiortc maps the last packet
  it sent, and a keyframe that took 300 ms to encode makes the next report 300 ms late): of
  the reports of the last half minute, the one that puts a timestamp earliest is the one
  nearest capture time, and a stream is placed once it has two (``settled``);
* the sender's wall clock, mapped to the server's: the smallest (arrival − sender time) seen
  from that participant (over a sliding window, so a slowly drifting clock is followed). The
  audio and video of one participant share it, which keeps their lip sync; other participants
  line up to within the difference of their network delays. It is taken from the audio when
  the participant sends any (audio is encoded in a moment; a late video report would pull the
  minimum down and shift the participant's audio with it), else from the video;
* the server's wall clock, mapped to session time: seconds of recording, pauses left out.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

NTP_UNIX_OFFSET = 2208988800  # seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix)
SR_WINDOW = 30  # sender reports kept (≈ 30 s of them)
OFFSET_BUCKET_S = 5.0
OFFSET_BUCKETS = 6  # the offset is the minimum over the last 30 s


def ntp_to_unix(ntp: int) -> float:
    """A 64-bit NTP timestamp (32.32 fixed point, from 1900) as Unix seconds."""
    return (ntp >> 32) - NTP_UNIX_OFFSET + (ntp & 0xFFFFFFFF) / 4294967296.0


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - 0x100000000 if value >= 0x80000000 else value


class SenderClock:
    """A stream's RTP timestamps → its sender's wall clock (Unix seconds)."""

    def __init__(self, clock_rate: int) -> None:
        self.rate = clock_rate
        self._ref_rtp: int | None = None  # 32-bit RTP timestamp the bases are relative to
        self._bases: deque[float] = deque(maxlen=SR_WINDOW)  # sender time of _ref_rtp, per SR
        self._base: float | None = None
        self.reports = 0
        #: the mapping came from arrival times (no sender report in time): already server time
        self.from_arrival = False

    @property
    def ready(self) -> bool:
        return self._base is not None

    @property
    def settled(self) -> bool:
        """Two reports: the better of them is not the one a slow keyframe made late."""
        return self.reports >= 2

    def on_sender_report(self, ntp: int, rtp_timestamp: int) -> None:
        when = ntp_to_unix(ntp)
        if self._ref_rtp is None or self.from_arrival or abs(
                _signed32(rtp_timestamp - self._ref_rtp)) > 1 << 30:
            self._ref_rtp = rtp_timestamp & 0xFFFFFFFF
            self._bases.clear()
            self.from_arrival = False
        assert self._ref_rtp is not None
        self._bases.append(when - _signed32(rtp_timestamp - self._ref_rtp) / self.rate)
        self._base = min(self._bases)
        self.reports += 1

    def assume(self, rtp_timestamp: int, when: float) -> None:
        """No sender report came: take ``rtp_timestamp`` as captured at server time ``when``
        (until a report arrives)."""
        self._ref_rtp = rtp_timestamp & 0xFFFFFFFF
        self._bases.clear()
        self._base = when
        self.from_arrival = True

    def sender_time(self, rtp_timestamp: int) -> float:
        assert self._base is not None and self._ref_rtp is not None
        return self._base + _signed32(rtp_timestamp - self._ref_rtp) / self.rate


class ClockOffset:
    """A participant's wall clock → the server's: ``server = sender + value``."""

    def __init__(self) -> None:
        self._buckets: deque[tuple[int, float]] = deque()  # (bucket number, minimum)
        self.value: float | None = None
        self.from_audio = False

    def observe(self, arrival: float, sender_time: float, audio: bool = True) -> None:
        if audio and not self.from_audio:
            self.from_audio = True  # from now on the audio alone says it
            self._buckets.clear()
        elif not audio and self.from_audio:
            return
        sample = arrival - sender_time
        bucket = int(arrival // OFFSET_BUCKET_S)
        if self._buckets and self._buckets[-1][0] == bucket:
            if sample < self._buckets[-1][1]:
                self._buckets[-1] = (bucket, sample)
        else:
            self._buckets.append((bucket, sample))
        while self._buckets and self._buckets[0][0] <= bucket - OFFSET_BUCKETS:
            self._buckets.popleft()
        self.value = min(m for _, m in self._buckets)


@dataclass
class Span:
    """A stretch of recording: server wall-clock start and end (None: still going), and the
    session time at its start."""

    wall_start: float
    wall_end: float | None
    session_start: float


class SessionClock:
    """Server wall clock → session time: the recording's spans, back to back, pauses left out."""

    def __init__(self, start: float) -> None:
        self.spans: list[Span] = [Span(start, None, 0.0)]

    @property
    def running(self) -> bool:
        return self.spans[-1].wall_end is None

    def pause(self, at: float) -> None:
        if self.running:
            self.spans[-1].wall_end = at

    def resume(self, at: float) -> None:
        if not self.running:
            self.spans.append(Span(at, None, self.duration(at)))

    def stop(self, at: float) -> None:
        self.pause(at)

    def duration(self, now: float) -> float:
        """Seconds of session so far."""
        last = self.spans[-1]
        end = now if last.wall_end is None else last.wall_end
        return last.session_start + max(0.0, end - last.wall_start)

    def to_session(self, wall: float) -> float | None:
        """Session time of server time ``wall``; None before the start or in a pause."""
        for span in reversed(self.spans):
            if wall >= span.wall_start:
                if span.wall_end is not None and wall > span.wall_end:
                    return None
                return span.session_start + (wall - span.wall_start)
        return None
