"""The publisher side of forwarding: a published track and the packets it fans out.

Nothing here decodes. A packet from a publisher becomes a *template* (``Template``) once per
header-extension profile (usually one); each subscriber's DownTrack (media/downtrack.py) stamps
its own SSRC, payload type, sequence number and timestamp into a copy and sends it.

* ``SourceTrack``: one per published track (one per simulcast layer); it keeps the last
  ``HISTORY_SIZE`` packets, hands every packet to its DownTracks (those C can send for in one
  ``hz_fanout`` call per header-extension profile, media/fastpath_build.py; the others through
  ``DownTrack.forward``) and asks the publisher for a
  keyframe (PLI) when a video subscriber waits for one, throttled to one per
  ``pli_throttle_s`` with requests in between deferred, never dropped. PLI/FIR from subscribers
  come here; a subscriber's NACK for a packet the SFU never got goes upstream.
* Upstream loss: a video gap still open after ``LOST_FOR_GOOD_S`` is given up on (DownTracks
  that passed it get a padding packet in its place and restart at the next keyframe); a jump of
  more than ``MAX_TRACKED_GAP`` packets or a new SSRC restarts every DownTrack that way.
* Publishers' sender reports go to every DownTrack, which translates them.
* Taps (``PacketTap``: the recorder) get every packet and sender report first.
* ``MediaTrack``: a published track as rooms and subscribers see it; a simulcast track has one
  SourceTrack per layer, and a DownTrack moves to another layer at that layer's next keyframe.
* abs-send-time is stamped with the SFU's own clock, so a subscriber's REMB measures the
  SFU → subscriber path, not the publisher's uplink.
* Silent audio (RFC 6464 level at or below -120 dBov, no voice flag; a muted browser
  microphone sends such packets 50 times a second) is not forwarded once it has lasted
  200 ms: subscribers' sequence numbers skip nothing (they see a pause in timestamps, as with
  Opus DTX), and speech resumes with its first packet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from media import rtp
from media._fastpath import ffi, lib
from media.bandwidth import PACKET_OVERHEAD

if TYPE_CHECKING:
    from media.downtrack import DownTrack

HISTORY_SIZE = 512  # packets kept per source for retransmission (≈ 1.5 s of 2.5 Mbit/s video)
KEYFRAME_RETRY_S = 1.0  # re-ask for a keyframe when a waiting subscriber got none by then
LOST_FOR_GOOD_S = 0.3  # an upstream video gap still open after this is given up on
MAX_TRACKED_GAP = 64  # a larger jump is a stream restart, not loss
SILENCE_LEVEL = 120  # RFC 6464 level (-dBov) from which audio counts as silence
SILENCE_HANGOVER = 10  # silent packets still forwarded (200 ms of Opus) before skipping


class PacketTap(Protocol):
    """Gets a source's packets as they arrive (retransmissions with their original sequence
    number, in any order) and its sender reports; must be quick, it runs per packet."""

    def on_rtp(self, source: SourceTrack, ssrc: int, seq: int, timestamp: int, marker: int,
               payload: bytes) -> None: ...

    def on_sender_report(self, source: SourceTrack, ntp: int, rtp_timestamp: int) -> None: ...


@dataclass
class _Group:
    """The DownTracks of a source that share a header-extension profile (one template block),
    as ``hz_fanout`` takes them, with room for its answers."""

    ids: rtp.ExtensionIds
    downs: list[DownTrack]
    array: Any  # hz_down *[]
    todo: Any  # int[]
    codes: Any  # int[]


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
    arrived: float = 0.0  # time.monotonic() when it reached the SFU

    def for_ids(self, ids: rtp.ExtensionIds) -> rtp.PacketTemplate:
        block = self.blocks.get(ids)
        if block is None:
            ext = rtp.build_extension_block(ids, self.audio_level, self.abs_send_time)
            block = self.blocks[ids] = rtp.build_packet(ext, self.payload, self.padding)
        return block


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
        rid: str | None = None,
        nack_upstream: bool = False,
    ) -> None:
        self.track_id = track_id
        self.rid = rid  # the simulcast layer's RTP stream id; None without simulcast
        self.kind = kind
        self.mime_type = mime_type
        self.clock_rate = clock_rate
        self.ssrc: int | None = None
        self.down_tracks: list[DownTrack] = []
        self._groups: list[_Group] | None = None  # down_tracks by profile (None: to be made)
        #: subscribers moving to this layer at its next keyframe
        self.candidates: list[DownTrack] = []
        self.history: list[Template | None] = [None] * HISTORY_SIZE
        self.packets = 0
        self.bytes = 0
        self.keyframes = 0
        self.last_sr: tuple[int, int] | None = None  # (ntp, rtp timestamp) of the latest SR
        self._is_keyframe_start = rtp.keyframe_detector(mime_type)
        self._keyframe_size = rtp.vp8_keyframe_size if mime_type.lower() == "video/vp8" else None
        self.frame_size: tuple[int, int] | None = None  # from the latest keyframe (VP8)
        # NACK upstream ourselves as soon as a gap shows (aiortc's NACK generator cannot
        # follow the several SSRCs of a simulcast m-line)
        self._nack_upstream = nack_upstream
        self.bitrate_bps = 0.0
        self._rate_at = time.monotonic()
        self._rate_wire = 0
        self._send_pli = request_keyframe
        self._send_nack = request_nack
        self._pli_throttle_s = pli_throttle_s
        self._last_pli = -1e9
        self._deferred_pli: asyncio.TimerHandle | None = None
        self._pli_pending = False
        self.plis_sent = 0
        self.closed = False
        #: who else gets every packet and sender report (recording/capture.py), before the
        #: subscribers do
        self.taps: list[PacketTap] = []
        # upstream loss: highest sequence number seen, and missing ones with their deadline
        self._max_seq: int | None = None
        self._gaps: dict[int, float] = {}
        self.lost_for_good = 0
        # what the receive path in C (media/fastpath_rx.c) needs of this source: its hz_src
        self._last_seq: int | None = None  # audio has no gap tracking: C's next is after this
        self._c = ffi.new("hz_src *")
        self._c.pt = -1
        mime = mime_type.lower()
        self._c.codec = (lib.HZ_VP8 if mime == "video/vp8" else
                         lib.HZ_H264 if mime == "video/h264" else 0)
        # audio loudness (127 - RFC 6464 level, so 0 = silence) summed since take_loudness()
        self._loudness_sum = 0
        self._loudness_n = 0
        self._silent_run = 0
        self.silent_skipped = 0

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
        admitted = self._admit(ssrc, seq, timestamp, marker, payload, padding, audio_level,
                               abs_send_time, time.monotonic())
        waiting = False
        if admitted is not None:
            template, key_start, late = admitted
            for group in self._groups if self._groups is not None else self._group():
                waiting |= self._fan_out(group, template, key_start, late)
        self._after(waiting)

    def on_forwarded(
        self,
        seq: int,
        timestamp: int,
        marker: int,
        payload: bytes,
        padding: int,
        audio_level: tuple[bool, int] | None,
        abs_send_time: int | None,
        arrived: float,
        todo: list[tuple[int, int, int]],
    ) -> None:
        """A packet the shared port's receive path in C (media/fastpath_rx.c) has already
        forwarded, which it does only where ``on_packet`` would have done the same (next in
        sequence, no keyframe start, no silence, its subscribers grouped: ``_sync_c``): the
        rest of ``on_packet``, and the subscribers C left to Python (``todo``: group, index
        in it, and the code of C's send, or 0 where Python forwards)."""
        assert self.ssrc is not None
        admitted = self._admit(self.ssrc, seq, timestamp, marker, payload, padding,
                               audio_level, abs_send_time, arrived)
        waiting = False
        groups = self._groups  # those C used (only a new subscriber regroups them)
        if admitted is not None and groups is not None:
            template, key_start, _ = admitted
            for g, index, code in todo:
                down = groups[g].downs[index]
                if code:
                    down.sink.sent_code(code)
                elif not down.forward(template, key_start):
                    waiting = True
        self._after(waiting)

    def _admit(self, ssrc: int, seq: int, timestamp: int, marker: int, payload: bytes,
               padding: int, audio_level: tuple[bool, int] | None,
               abs_send_time: int | None, arrived: float
               ) -> tuple[Template, bool, bool] | None:
        """A packet's bookkeeping before it is forwarded: the template, whether it starts a
        keyframe, whether it came late; None if it is not forwarded (silence)."""
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
        self._last_seq = seq
        for tap in self.taps:  # the recorder: every packet, silence and repairs included
            tap.on_rtp(self, ssrc, seq, timestamp, marker, payload)
        late = self.is_video and self._track_gaps(seq)
        if audio_level is not None:
            self._loudness_sum += 127 - audio_level[1]
            self._loudness_n += 1
            voice, level = audio_level
            if voice or level < SILENCE_LEVEL:
                self._silent_run = 0
            else:
                self._silent_run += 1
                if self._silent_run > SILENCE_HANGOVER:
                    self.silent_skipped += 1
                    for down in self.down_tracks:
                        down.skip()
                    return None
        # a keyframe's first packet that comes late (retransmitted) starts subscribers only if
        # what followed it can still be completed: they then get it and the rest at once
        key_start = (self._is_keyframe_start is not None and self._is_keyframe_start(payload)
                     and (not late or self._repairable_after(seq)))
        if key_start:
            self._on_keyframe(payload)
        if abs_send_time is not None:
            abs_send_time = rtp.abs_send_time_now()
        template = Template(seq, timestamp, marker, {}, payload, padding, audio_level,
                            abs_send_time, arrived)
        self.history[seq % HISTORY_SIZE] = template
        return template, key_start, late

    def _fan_out(self, group: _Group, template: Template, key_start: bool, late: bool) -> bool:
        """One packet to a group's subscribers: those C can send for in one ``hz_fanout``,
        the others here. True if one of them waits for a keyframe."""
        waiting = False
        block = template.blocks.get(group.ids) or template.for_ids(group.ids)
        tail = block.tail
        todo, codes, downs = group.todo, group.codes, group.downs
        seq = template.seq
        for j in range(lib.hz_fanout(group.array, len(downs), tail, len(tail),
                                     block.first_byte, template.marker, seq,
                                     template.timestamp, len(template.payload),
                                     template.arrived, todo, codes)):
            down = downs[todo[j]]
            if codes[j]:  # sent, or refused: what the sink's send said
                down.sink.sent_code(codes[j])
                continue
            was_started = down.started
            if not down.forward(template, key_start):
                waiting = True
            elif late and not was_started and down.started:
                self._replay_after(down, seq)
        return waiting

    def _after(self, waiting: bool) -> None:
        """After each packet: a keyframe asked for again if someone still waits, and what C's
        receive path may do with the next one (``_sync_c``)."""
        if (waiting or self.candidates) and time.monotonic() - self._last_pli > KEYFRAME_RETRY_S:
            self.request_keyframe()
        self._sync_c()

    # ---- the receive path in C (media/fastpath_rx.c) ---------------------------------------
    def receive_in_c(self, payload_type: int) -> None:
        """Let the shared port's receive path forward this source's packets of
        ``payload_type`` (its main codec's; retransmissions stay Python's)."""
        self._c.pt = payload_type

    @property
    def c_src(self) -> Any:
        """This source as C's receive path sees it (``hz_src``)."""
        return self._c

    def _sync_c(self) -> None:
        c = self._c
        groups = self._groups
        last = self._max_seq if self.is_video else self._last_seq
        c.ready = int(groups is not None and len(groups) <= lib.HZ_MAX_GROUPS and not self._gaps
                      and last is not None and c.pt >= 0 and not self.closed)
        if last is not None and c.ready:
            c.ssrc = self.ssrc
            c.next_seq = (last + 1) & 0xFFFF

    def _ungroup(self) -> None:
        """Its DownTracks changed: grouped anew at the next packet, which C leaves to Python."""
        self._groups = None
        self._c.ready = 0
        self._c.ngroups = 0

    def _group(self) -> list[_Group]:
        groups: dict[rtp.ExtensionIds, list[DownTrack]] = {}
        for down in self.down_tracks:
            groups.setdefault(down.ext_ids, []).append(down)
        self._groups = [_Group(ids, downs, ffi.new("hz_down *[]", [d._c for d in downs]),
                               ffi.new("int[]", len(downs)), ffi.new("int[]", len(downs)))
                        for ids, downs in groups.items()]
        c = self._c
        c.ngroups = 0
        if len(self._groups) <= lib.HZ_MAX_GROUPS:
            for i, group in enumerate(self._groups):
                c.groups[i].audio_level = group.ids.audio_level
                c.groups[i].abs_send_time = group.ids.abs_send_time
                c.groups[i].n = len(group.downs)
                c.groups[i].downs = group.array
            c.ngroups = len(self._groups)
        return self._groups

    def regroup(self) -> None:
        """Its DownTracks changed (one came, went, or changed its header extensions)."""
        self._ungroup()

    def _on_keyframe(self, payload: bytes) -> None:
        self.keyframes += 1
        if self._keyframe_size is not None:
            self.frame_size = self._keyframe_size(payload) or self.frame_size
        if self.candidates:
            for down in self.candidates:
                down.take_over(self)  # forwarded from this keyframe on, just below
            self.candidates.clear()

    def bitrate(self, now: float) -> float:
        """This stream's bit/s on the wire (payload + per-packet overhead), measured over
        windows of at least half a second; 0 once the publisher stops sending it."""
        elapsed = now - self._rate_at
        if elapsed >= 0.5:
            wire = self.bytes + self.packets * PACKET_OVERHEAD
            self.bitrate_bps = (wire - self._rate_wire) * 8 / elapsed
            self._rate_wire = wire
            self._rate_at = now
        return self.bitrate_bps

    def _track_gaps(self, seq: int) -> bool:
        """Notice upstream losses; give up on a video gap that retransmission did not fill.
        Returns True for a packet older than the newest one (a retransmission, or late)."""
        if self._gaps and min(self._gaps.values()) <= time.monotonic():
            self._give_up(list(self._gaps))  # first: this packet may be one of them
        late = False
        if self._max_seq is None:
            self._max_seq = seq
        else:
            ahead = (seq - self._max_seq) & 0xFFFF
            if 0 < ahead < 0x8000:
                if ahead > MAX_TRACKED_GAP:
                    # too much lost to repair (or the stream jumped): everyone resumes at
                    # the next keyframe, numbering continued, holes already passed plugged
                    self._give_up(list(self._gaps), restart=True)
                elif ahead > 1:
                    deadline = time.monotonic() + LOST_FOR_GOOD_S
                    missing = [m & 0xFFFF for m in range(self._max_seq + 1, self._max_seq + ahead)]
                    for m in missing:
                        self._gaps[m] = deadline
                    if self._nack_upstream and self.ssrc is not None:
                        self._send_nack(self.ssrc, missing)
                self._max_seq = seq
            elif ahead:
                late = True
                self._gaps.pop(seq, None)  # a retransmission (or late packet) filled it
        return late

    def _give_up(self, lost: list[int], restart: bool = False) -> None:
        """Stop waiting for these packets: a subscriber that had already been sent packets
        after one of them gets a padding packet in its place and resumes at the next
        keyframe (a lost packet costs one frame, not a stalled jitter buffer); with
        ``restart`` every subscriber resumes at the next keyframe."""
        self._gaps.clear()
        self.lost_for_good += len(lost)
        again = False
        for down in self.down_tracks:
            if down.plug_holes(lost) or restart:
                down.rebase()
                again = True
        if again:
            self.request_keyframe()

    def _repairable_after(self, seq: int) -> bool:
        """Every packet from ``seq`` to the newest is here or still awaited (not given up)."""
        assert self._max_seq is not None
        for offset in range(1, ((self._max_seq - seq) & 0xFFFF) + 1):
            s = (seq + offset) & 0xFFFF
            held = self.history[s % HISTORY_SIZE]
            if (held is None or held.seq != s) and s not in self._gaps:
                return False
        return True

    def _replay_after(self, down: DownTrack, seq: int) -> None:
        """A subscriber just started at a late packet: send it what came after, from history
        (what is missing there is still awaited: retransmitted or plugged later)."""
        assert self._max_seq is not None
        for offset in range(1, ((self._max_seq - seq) & 0xFFFF) + 1):
            s = (seq + offset) & 0xFFFF
            held = self.history[s % HISTORY_SIZE]
            if held is not None and held.seq == s:
                down.forward(held, False)

    def frame_timestamp_of(self, seq: int) -> int | None:
        """The RTP timestamp a lost packet most likely had: the nearest earlier packet's when
        that frame was not finished (no marker), else the nearest later packet's; None if
        history holds neither."""
        before = after = None
        for distance in range(1, MAX_TRACKED_GAP + 1):
            if before is None:
                s = (seq - distance) & 0xFFFF
                held = self.history[s % HISTORY_SIZE]
                if held is not None and held.seq == s:
                    before = held
                    if not before.marker:
                        return before.timestamp
            if after is None:
                s = (seq + distance) & 0xFFFF
                held = self.history[s % HISTORY_SIZE]
                if held is not None and held.seq == s:
                    after = held
            if before is not None and after is not None:
                break
        if after is not None:
            return after.timestamp
        return None if before is None else before.timestamp

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
        for tap in self.taps:
            tap.on_sender_report(self, ntp, rtp_timestamp)

    def nack_if_missing(self, src_seq: int) -> None:
        """A subscriber asked for a packet it was never sent: if the SFU never got it either,
        ask the publisher (again); when it comes, it is forwarded as a late packet."""
        self.nack_missing([src_seq])

    def nack_missing(self, src_seqs: list[int]) -> None:
        """Of these sequence numbers, NACK upstream (in one NACK) those the SFU never got."""
        missing = []
        for seq in src_seqs:
            held = self.history[seq % HISTORY_SIZE]
            if held is None or held.seq != seq:
                missing.append(seq)
        if missing and self.ssrc is not None:
            self._send_nack(self.ssrc, missing)

    # ---- subscribers --------------------------------------------------------------------
    def add(self, down: DownTrack, keyframe: bool = True) -> None:
        """``keyframe``: ask for one (False: one is being forwarded now)."""
        if down not in self.down_tracks:
            self.down_tracks.append(down)
            self._ungroup()
        if keyframe and self.is_video and not down.paused:
            self.request_keyframe()

    def remove(self, down: DownTrack) -> None:
        if down in self.down_tracks:
            self.down_tracks.remove(down)
            self._ungroup()
        if down in self.candidates:
            self.candidates.remove(down)

    def close(self) -> None:
        self.closed = True
        if self._deferred_pli is not None:
            self._deferred_pli.cancel()
            self._deferred_pli = None
        for down in list(self.down_tracks) + list(self.candidates):
            down.detach()
        self.down_tracks.clear()
        self._ungroup()
        self.candidates.clear()


class MediaTrack:
    """A published track as rooms and subscribers see it: its layers, one SourceTrack per
    simulcast encoding in the order the publisher declared them (lowest first, by
    convention), or just one without simulcast."""

    def __init__(self, track_id: str, kind: str, layers: list[SourceTrack]) -> None:
        self.track_id = track_id
        self.kind = kind
        self.layers = layers

    @property
    def mime_type(self) -> str:
        return self.layers[0].mime_type

    @property
    def is_video(self) -> bool:
        return self.layers[0].is_video

    def sent_layers(self, now: float) -> list[tuple[SourceTrack, float]]:
        """The layers the publisher is sending now, with their bit/s, cheapest first."""
        rated = [(layer, layer.bitrate(now)) for layer in self.layers]
        return sorted(((layer, bps) for layer, bps in rated if bps > 0), key=lambda x: x[1])

    def take_loudness(self) -> float | None:
        return self.layers[0].take_loudness()

    def close(self) -> None:
        for layer in self.layers:
            layer.close()
