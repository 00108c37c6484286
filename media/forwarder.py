"""RTP-level forwarding: one SourceTrack per published track, one DownTrack per subscriber m-line.

Nothing here decodes. A packet from a publisher becomes a *template* once per header-extension
profile (usually one), and each DownTrack stamps its own SSRC, payload type, sequence number and
timestamp into a copy, protects it with its connection's SRTP session and sends it.

* Video subscribers start at a keyframe; the source asks the publisher for one (PLI), throttled
  to one per ``pli_throttle_s`` with requests in between deferred, never dropped.
* Sequence numbers and timestamps stay continuous on a DownTrack across source switches.
* Subscribers' NACKs are answered from the source's packet history; PLI/FIR go upstream.
* Publishers' sender reports are translated per DownTrack (same NTP time, the DownTrack's RTP
  timestamp), so receivers keep lip sync.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc.rtp import RtcpSdesPacket, RtcpSenderInfo, RtcpSourceInfo, RtcpSrPacket

from media import rtp

log = logging.getLogger("huizhen.media")

HISTORY_SIZE = 512  # packets kept per source for retransmission (≈ 1.5 s of 2.5 Mbit/s video)
KEYFRAME_RETRY_S = 1.0  # re-ask for a keyframe when a waiting subscriber got none by then
LOST_FOR_GOOD_S = 0.3  # an upstream video gap still open after this is given up on
MAX_TRACKED_GAP = 64  # a larger jump is a stream restart, not loss


@dataclass
class Template:
    """A forwarded packet, ready to be stamped for each subscriber."""

    seq: int
    timestamp: int
    marker: int
    blocks: dict[rtp.ExtensionIds, rtp.PacketTemplate]
    payload: bytes
    padding: int
    audio_level: tuple[bool, int] | None
    abs_send_time: int | None

    def for_ids(self, ids: rtp.ExtensionIds) -> rtp.PacketTemplate:
        block = self.blocks.get(ids)
        if block is None:
            ext = rtp.build_extension_block(ids, self.audio_level, self.abs_send_time)
            block = self.blocks[ids] = rtp.build_packet(ext, self.payload, self.padding)
        return block


class PacketSink:
    """Where a DownTrack's bytes go: one subscriber connection's SRTP session and socket."""

    def send_rtp(self, data: bytes) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def send_rtcp(self, data: bytes) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class SourceTrack:
    """A published track: receives the publisher's packets and fans them out."""

    def __init__(
        self,
        track_id: str,
        kind: str,
        mime_type: str,
        clock_rate: int,
        request_keyframe: Callable[[int], None],
        request_nack: Callable[[int, list[int]], None],
        pli_throttle_s: float = 0.5,
    ) -> None:
        self.track_id = track_id
        self.kind = kind
        self.mime_type = mime_type
        self.clock_rate = clock_rate
        self.ssrc: int | None = None
        self.down_tracks: list[DownTrack] = []
        self.history: list[Template | None] = [None] * HISTORY_SIZE
        self.packets = 0
        self.bytes = 0
        self.keyframes = 0
        self.last_sr: tuple[int, int] | None = None  # (ntp, rtp timestamp) of the latest SR
        self._is_keyframe_start = rtp.keyframe_detector(mime_type)
        self._send_pli = request_keyframe
        self._send_nack = request_nack
        self._pli_throttle_s = pli_throttle_s
        self._last_pli = -1e9
        self._deferred_pli: asyncio.TimerHandle | None = None
        self._pli_pending = False
        self.plis_sent = 0
        self.closed = False
        # upstream loss: highest sequence number seen, and missing ones with their deadline
        self._max_seq: int | None = None
        self._gaps: dict[int, float] = {}
        self.lost_for_good = 0
        # audio loudness (127 - RFC 6464 level, so 0 = silence) summed since take_loudness()
        self._loudness_sum = 0
        self._loudness_n = 0

    # ---- keyframes --------------------------------------------------------------------
    @property
    def is_video(self) -> bool:
        return self._is_keyframe_start is not None

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe: now, or deferred to the end of the throttle window."""
        if not self.is_video or self.closed:
            return
        if self.ssrc is None:
            self._pli_pending = True  # sent with the first packet, when the SSRC is known
            return
        wait = self._last_pli + self._pli_throttle_s - time.monotonic()
        if wait <= 0:
            self._fire_pli()
        elif self._deferred_pli is None:
            self._deferred_pli = asyncio.get_running_loop().call_later(wait, self._fire_pli)

    def _fire_pli(self) -> None:
        self._deferred_pli = None
        if self.closed or self.ssrc is None:
            return
        self._last_pli = time.monotonic()
        self.plis_sent += 1
        self._send_pli(self.ssrc)

    # ---- packets ----------------------------------------------------------------------
    def on_packet(
        self,
        ssrc: int,
        seq: int,
        timestamp: int,
        marker: int,
        payload: bytes,
        padding: int,
        audio_level: tuple[bool, int] | None,
        abs_send_time: int | None,
    ) -> None:
        if self.ssrc != ssrc:
            self._max_seq = None
            self._gaps.clear()
            if self.ssrc is not None:
                # the publisher restarted its stream (new SSRC, unrelated sequence numbers):
                # every subscriber continues its own numbering from where it was
                for down in self.down_tracks:
                    down.rebase()
                self._pli_pending = self.is_video
            self.ssrc = ssrc
            if self._pli_pending:
                self._pli_pending = False
                self.request_keyframe()
        self.packets += 1
        self.bytes += len(payload)
        if self.is_video:
            self._track_gaps(seq)
        if audio_level is not None:
            self._loudness_sum += 127 - audio_level[1]
            self._loudness_n += 1
        key_start = self._is_keyframe_start is not None and self._is_keyframe_start(payload)
        if key_start:
            self.keyframes += 1
        template = Template(seq, timestamp, marker, {}, payload, padding, audio_level,
                            abs_send_time)
        self.history[seq % HISTORY_SIZE] = template
        waiting = False
        for down in self.down_tracks:
            if not down.forward(template, key_start):
                waiting = True
        if waiting and time.monotonic() - self._last_pli > KEYFRAME_RETRY_S:
            self.request_keyframe()

    def _track_gaps(self, seq: int) -> None:
        """Notice upstream losses; give up on a video gap that retransmission did not fill:
        ask for a keyframe and let every subscriber resume there without a hole in its
        sequence numbers, so a lost packet costs one frame, not a stalled jitter buffer."""
        now = time.monotonic()
        if self._max_seq is None:
            self._max_seq = seq
        else:
            ahead = (seq - self._max_seq) & 0xFFFF
            if 0 < ahead < 0x8000:
                if 1 < ahead <= MAX_TRACKED_GAP:
                    deadline = now + LOST_FOR_GOOD_S
                    for missing in range(self._max_seq + 1, self._max_seq + ahead):
                        self._gaps[missing & 0xFFFF] = deadline
                self._max_seq = seq
            else:
                self._gaps.pop(seq, None)  # a retransmission (or late packet) filled it
        if self._gaps and min(self._gaps.values()) <= now:
            lost = list(self._gaps)
            self._gaps.clear()
            self.lost_for_good += len(lost)
            for down in self.down_tracks:
                down.plug_holes(lost)
                down.rebase()
            self.request_keyframe()

    def frame_timestamp_of(self, seq: int) -> int | None:
        """The RTP timestamp a lost packet most likely had: its predecessor's when that frame
        was not finished (no marker), else its successor's; None if neither is known."""
        prev_seq, next_seq = (seq - 1) & 0xFFFF, (seq + 1) & 0xFFFF
        before = self.history[prev_seq % HISTORY_SIZE]
        after = self.history[next_seq % HISTORY_SIZE]
        before = before if before is not None and before.seq == prev_seq else None
        after = after if after is not None and after.seq == next_seq else None
        if before is not None and not before.marker:
            return before.timestamp
        if after is not None:
            return after.timestamp
        return before.timestamp if before is not None else None

    def take_loudness(self) -> float | None:
        """Mean loudness (0 = silence … 127 = 0 dBov) since the last call; None if the
        publisher sent no audio levels meanwhile."""
        if not self._loudness_n:
            return None
        mean = self._loudness_sum / self._loudness_n
        self._loudness_sum = self._loudness_n = 0
        return mean

    def on_sender_report(self, ntp: int, rtp_timestamp: int) -> None:
        self.last_sr = (ntp, rtp_timestamp)
        for down in self.down_tracks:
            down.send_sender_report(ntp, rtp_timestamp)

    def retransmit(self, down: DownTrack, src_seq: int) -> bool:
        template = self.history[src_seq % HISTORY_SIZE]
        if template is None or template.seq != src_seq:
            if self.ssrc is not None:
                self._send_nack(self.ssrc, [src_seq])
            return False
        down.resend(template)
        return True

    # ---- subscribers --------------------------------------------------------------------
    def add(self, down: DownTrack) -> None:
        if down not in self.down_tracks:
            self.down_tracks.append(down)
        if self.is_video:
            self.request_keyframe()

    def remove(self, down: DownTrack) -> None:
        if down in self.down_tracks:
            self.down_tracks.remove(down)

    def close(self) -> None:
        self.closed = True
        if self._deferred_pli is not None:
            self._deferred_pli.cancel()
            self._deferred_pli = None
        for down in list(self.down_tracks):
            down.detach()
        self.down_tracks.clear()


class DownTrack:
    """One subscriber m-line: rewrites and sends whatever source is attached to it."""

    def __init__(self, kind: str, ssrc: int, sink: PacketSink) -> None:
        self.kind = kind
        self.ssrc = ssrc
        self.sink = sink
        self.payload_type = 0
        self.clock_rate = 90000 if kind == "video" else 48000
        self.ext_ids = rtp.ExtensionIds()
        self.cname = ""
        self.source: SourceTrack | None = None
        self.active = False  # the subscriber has applied the SDP that carries this m-line
        self.waiting_keyframe = True
        # rewriting state, continuous across sources
        self._seq_offset = 0
        self._ts_offset = 0
        self._first_src_seq = 0
        self._last_out_seq = random.randint(0, 0x7FFF)
        self._last_out_ts = random.getrandbits(32)
        self._last_out_time: float | None = None
        self._started = False
        self.packets = 0
        self.octets = 0
        self.retransmissions = 0
        self.keyframe_requests = 0

    def configure(self, payload_type: int, clock_rate: int, ext_ids: rtp.ExtensionIds,
                  cname: str) -> None:
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self.ext_ids = ext_ids
        self.cname = cname

    def attach(self, source: SourceTrack) -> None:
        self.detach()
        self.source = source
        self.waiting_keyframe = source.is_video
        self._started = False
        source.add(self)

    def detach(self) -> None:
        if self.source is not None:
            self.source.remove(self)
            self.source = None
        self._started = False

    def plug_holes(self, src_seqs: list[int]) -> None:
        """Send a padding-only packet for each lost source packet this subscriber has already
        passed: receivers' jitter buffers wait at a hole, but not at a damaged frame. The
        filler carries the timestamp of the frame the lost packet belonged to, so it joins
        that frame (an empty frame of its own would end the receiver's decoder stream)."""
        if not self._started or not self.active or self.source is None:
            return
        for src_seq in src_seqs:
            if (src_seq - self._first_src_seq) & 0xFFFF >= 0x8000:
                continue
            seq = (src_seq + self._seq_offset) & 0xFFFF
            src_ts = self.source.frame_timestamp_of(src_seq)
            if src_ts is not None and ((self._last_out_seq - seq) & 0xFFFF) < 0x8000:
                self.sink.send_rtp(rtp.stamp(rtp.PADDING_ONLY, self.payload_type, seq,
                                             (src_ts + self._ts_offset) & 0xFFFFFFFF,
                                             self.ssrc))

    def rebase(self) -> None:
        """The source's numbering restarted: start again at its next keyframe (video) or
        packet (audio), continuing this m-line's sequence numbers and timestamps."""
        self._started = False
        self.waiting_keyframe = self.source is not None and self.source.is_video

    # ---- the hot path ------------------------------------------------------------------
    def forward(self, template: Template, key_start: bool) -> bool:
        """Send one packet; False while this subscriber still waits for a keyframe."""
        if not self.active:
            return True
        if not self._started:
            if self.waiting_keyframe and not key_start:
                return False
            self._start(template)
        elif (template.seq - self._first_src_seq) & 0xFFFF >= 0x8000:
            return True  # older than where this subscriber started
        seq = (template.seq + self._seq_offset) & 0xFFFF
        ts = (template.timestamp + self._ts_offset) & 0xFFFFFFFF
        if ((seq - self._last_out_seq) & 0xFFFF) < 0x8000:
            self._last_out_seq = seq
            self._last_out_ts = ts
            self._last_out_time = time.monotonic()
        block = template.for_ids(self.ext_ids)
        self.sink.send_rtp(rtp.stamp(block, (template.marker << 7) | self.payload_type, seq, ts,
                                     self.ssrc))
        self.packets += 1
        self.octets += len(template.payload)
        return True

    def _start(self, template: Template) -> None:
        """Continue this m-line's sequence and timestamp from where it stopped."""
        self.waiting_keyframe = False
        self._started = True
        self._first_src_seq = template.seq
        self._seq_offset = (self._last_out_seq + 1 - template.seq) & 0xFFFF
        elapsed = 0.0 if self._last_out_time is None else time.monotonic() - self._last_out_time
        step = max(1, int(elapsed * self.clock_rate))
        self._ts_offset = (self._last_out_ts + step - template.timestamp) & 0xFFFFFFFF

    def resend(self, template: Template) -> None:
        if not self._started or (template.seq - self._first_src_seq) & 0xFFFF >= 0x8000:
            return
        seq = (template.seq + self._seq_offset) & 0xFFFF
        ts = (template.timestamp + self._ts_offset) & 0xFFFFFFFF
        block = template.for_ids(self.ext_ids)
        self.sink.send_rtp(rtp.stamp(block, (template.marker << 7) | self.payload_type, seq, ts,
                                     self.ssrc))
        self.retransmissions += 1

    # ---- RTCP from the subscriber ---------------------------------------------------------
    def on_nack(self, lost: list[int]) -> None:
        if self.source is None or not self._started:
            return
        for out_seq in lost:
            self.source.retransmit(self, (out_seq - self._seq_offset) & 0xFFFF)

    def on_keyframe_request(self) -> None:
        self.keyframe_requests += 1
        if self.source is not None:
            self.source.request_keyframe()

    def send_sender_report(self, ntp: int, src_rtp_ts: int) -> None:
        if not self._started or not self.active:
            return
        packets: list[Any] = [
            RtcpSrPacket(
                ssrc=self.ssrc,
                sender_info=RtcpSenderInfo(
                    ntp_timestamp=ntp,
                    rtp_timestamp=(src_rtp_ts + self._ts_offset) & 0xFFFFFFFF,
                    packet_count=self.packets & 0xFFFFFFFF,
                    octet_count=self.octets & 0xFFFFFFFF,
                ),
            )
        ]
        if self.cname:
            packets.append(RtcpSdesPacket(chunks=[
                RtcpSourceInfo(ssrc=self.ssrc, items=[(1, self.cname.encode())])]))
        self.sink.send_rtcp(b"".join(bytes(p) for p in packets))
