"""The subscriber side of forwarding: one DownTrack per subscriber m-line, and where it sends.

A ``DownTrack`` takes the templates of the SourceTrack attached to it (media/source.py), works
out its own SSRC, payload type, sequence number and timestamp for each and hands both to its
``PacketSink`` (the subscriber connection, which writes the header before the template's tail,
protects the packet with its SRTP session and sends it: media/sendpath.py). Nothing here
decodes. Its rewriting state is a C struct (``hz_down``), so that the steady case — a started
subscriber whose sink C may send through — is forwarded by ``hz_fanout`` in C, the loop over
all of a source's subscribers; ``forward`` here does the same for the rest.

* Video starts at a keyframe; sequence numbers and timestamps stay continuous on a DownTrack
  across source switches (another publisher on a reused m-line, a simulcast layer, a
  publisher restart, a resume after a pause).
* Subscribers' NACKs are answered from what each DownTrack sent under that sequence number
  (its own ``SENT_HISTORY``, kept in C as the source packet's number and which of its recent
  sources it came from: across a layer switch, a publisher restart or a resume, a sequence
  number maps to the packet it was, not to what the current source's numbering would give), as
  RTX (RFC 4588) when the subscriber negotiated it; a NACK for a packet the SFU never got goes
  upstream (``SourceTrack.nack_if_missing``). PLI/FIR go upstream.
* Publishers' sender reports are translated per DownTrack (same NTP time, the DownTrack's RTP
  timestamp), so receivers keep lip sync.
* A DownTrack moves to another simulcast layer at that layer's next keyframe (the old one
  flows until then), and can be paused (video on a weak link).
"""

from __future__ import annotations

import random
import time
from collections import deque
from typing import Any

from aiortc.rtp import RtcpSdesPacket, RtcpSenderInfo, RtcpSourceInfo, RtcpSrPacket

from media import rtp
from media._fastpath import ffi
from media.source import HISTORY_SIZE, SourceTrack, Template

#: (seq, timestamp, packet) a video DownTrack sent, for its NACKs: hz_down's ``sent`` ring
SENT_HISTORY = 512
SENT_PACKET, SENT_FILLER = 1, 2  # what a ``sent`` entry holds (0: nothing yet)
GENERATIONS_KEPT = 8  # sources a DownTrack remembers for NACKs of what it sent before a switch


class _InC:
    """A DownTrack field kept in its C struct (``hz_down``), where media/_fastpath's
    ``hz_fanout`` reads and updates it; ``none``: the C value that stands for None; a
    ``flag`` reads as a bool."""

    def __init__(self, field: str, none: Any = ..., flag: bool = False) -> None:
        self.field = field
        self.none = none
        self.flag = flag

    def __get__(self, down: Any, owner: Any = None) -> Any:
        if down is None:
            return self
        value = getattr(down._c, self.field)
        if self.flag:
            return bool(value)
        return None if self.none is not ... and value == self.none else value

    def __set__(self, down: Any, value: Any) -> None:
        setattr(down._c, self.field, self.none if value is None else value)


class PacketSink:
    """Where a DownTrack's packets go: one subscriber connection's SRTP session and socket."""

    def send_rtp(self, data: bytes) -> bool:  # pragma: no cover - interface
        """A whole packet, sent now; False if it could not be (and was not) sent."""
        raise NotImplementedError

    def send_rtcp(self, data: bytes) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def sent_code(self, result: int) -> bool:  # pragma: no cover - interface
        """What C's send through this sink (``hz_fanout``) answered besides 0; only a sink C
        sends through (media/sendpath.py's) gets one."""
        raise NotImplementedError

    def forward_rtp(self, block: rtp.PacketTemplate, marker_pt: int, seq: int, timestamp: int,
                    ssrc: int, end_of_frame: bool) -> None:
        """A forwarded packet: ``block`` with this subscriber's header fields. Until
        ``end_of_frame`` (a video frame's last packet, or any audio packet) a sink may hold it
        and send the frame's packets together (a receiver decodes a frame only once its last
        packet is in); by default it is stamped and sent at once."""
        self.send_rtp(rtp.stamp(block, marker_pt, seq, timestamp, ssrc))


class DownTrack:
    """One subscriber m-line: rewrites and sends whatever source is attached to it.

    Its rewriting state lives in a C struct (``_c``: ``hz_down``, media/fastpath_build.py), so
    that a started subscriber whose sink is an armed ``SrtpUdpSink`` gets each packet from
    ``SourceTrack.on_packet`` without Python (``hz_fanout``); everything else — starting,
    switching, gaps, NACKs, another kind of sink — is ``forward`` and the methods below."""

    #: the subscriber has applied the SDP that carries this m-line
    active = _InC("active", flag=True)
    paused = _InC("paused", flag=True)  # video held back: the subscriber's link cannot carry it
    started = _InC("started", flag=True)
    video = _InC("video", flag=True)
    ssrc = _InC("ssrc")
    payload_type = _InC("payload_type")
    packets = _InC("packets")
    octets = _InC("octets")
    # rewriting state, continuous across sources
    _seq_offset = _InC("seq_offset")
    _ts_offset = _InC("ts_offset")
    _first_src_seq = _InC("first_src_seq")
    _last_out_seq = _InC("last_out_seq")
    _last_out_ts = _InC("last_out_ts")
    _last_out_time = _InC("last_out_time", -1.0)

    def __init__(self, kind: str, ssrc: int, sink: PacketSink) -> None:
        self._c = ffi.new("hz_down *")
        self._c.sink = getattr(sink, "c_sink", None) or ffi.NULL
        self._c.last_out_time = -1.0
        #: the sources it forwarded from, by generation (``hz_down.gen``), for NACKs
        self._generations: dict[int, SourceTrack] = {}
        self.kind = kind
        self.video = kind == "video"
        self.ssrc = ssrc
        self.sink = sink
        self.payload_type = 0
        self.clock_rate = 90000 if kind == "video" else 48000
        self.ext_ids = rtp.ExtensionIds()
        self.cname = ""
        self.rtx: tuple[int, int] | None = None  # (payload type, SSRC) of its RTX stream
        self._rtx_seq = random.randint(0, 0xFFFF)
        self.source: SourceTrack | None = None
        self._pending: SourceTrack | None = None  # the layer it moves to at its next keyframe
        self.waiting_keyframe = True
        self._last_out_seq = random.randint(0, 0x7FFF)
        self._last_out_ts = random.getrandbits(32)
        self.retransmissions = 0
        #: NACKed packets it had been sent since it last started (on this layer, or since the
        #: last resume): lost on its downlink as it is now. A NACK for a packet from before
        #: (often late: a round trip, and the receiver's next gap) is answered but not
        #: counted: that loss was of a bigger layer, already left
        self.nacks_answered = 0
        self._run_start = 0  # the first sequence number it sent since it last started
        self._answered: set[int] = set()  # the recently answered ones (a NACK may repeat)
        self.remb: tuple[float, float] | None = None  # (bit/s, when): this stream's REMB share
        self.keyframe_requests = 0
        #: RTCP from the subscriber about this stream: receiver reports and NACK messages
        #: counted, and the latest report block (fraction lost /256, cumulative lost,
        #: highest extended sequence number, jitter)
        self.receiver_reports = 0
        self.nack_messages = 0
        self.last_report: tuple[int, int, int, int] | None = None
        #: audio: sequence numbers it never sent because the SFU never got them (the
        #: publisher's uplink lost them): (the number after the gap, gap size), until a
        #: receiver report shows the subscriber got past them (``downlink_fraction_lost``)
        self._upstream_gaps: deque[tuple[int, int]] = deque(maxlen=1024)
        self._gaps_reported = 0  # upstream-lost numbers the subscriber's reports covered
        self._rr_last: tuple[int, int, int] | None = None  # (lost, highest, gaps) at the last
        #: for monitoring (media/stats.py), counted where the work is done, never per packet:
        #: packets the subscriber's reports say its downlink lost (audio; video's are the
        #: answered NACKs), layer switches, pauses, when it first sent, and the round trip
        #: from its receiver reports (their LSR echoes one of our sender reports: ``_sr_sent``)
        self.downlink_lost = 0
        self.layer_switches = 0
        self.pauses = 0
        self.first_sent_at: float | None = None
        self.rtt_s: float | None = None
        self.rtt_at = 0.0
        self._sr_sent: dict[int, float] = {}  # NTP middle 32 bits → time.monotonic()

    def configure(self, payload_type: int, clock_rate: int, ext_ids: rtp.ExtensionIds,
                  cname: str, rtx: tuple[int, int] | None = None) -> None:
        if self.source is not None and ext_ids != self.ext_ids:
            self.source.regroup()
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self.ext_ids = ext_ids
        self.cname = cname
        self.rtx = rtx

    def attach(self, source: SourceTrack) -> None:
        self.detach()
        self.source = source
        self._new_generation(source)
        self.waiting_keyframe = source.is_video
        self.started = False
        source.add(self)

    def _new_generation(self, source: SourceTrack) -> None:
        """What it sends from now on comes from ``source``."""
        gen = self._c.gen = (self._c.gen + 1) & 0xFFFF
        self._generations[gen] = source
        self._generations.pop((gen - GENERATIONS_KEPT) & 0xFFFF, None)

    def _remember(self, seq: int, ts: int, template: Template | None) -> None:
        """What went out under ``seq`` (video; ``template`` None: a padding filler)."""
        c = self._c
        entry = c.sent[seq & (SENT_HISTORY - 1)]
        entry.seq = seq
        entry.ts = ts
        entry.gen = c.gen
        if template is None:
            entry.kind = SENT_FILLER
        else:
            entry.kind = SENT_PACKET
            entry.src_seq = template.seq

    def _recall(self, seq: int) -> tuple[int, int, Template | None] | None:
        """(seq, timestamp, packet) of what went out under ``seq``, if it is still known
        (the packet None: a filler, or a packet its source no longer holds: a filler then)."""
        entry = self._c.sent[seq & (SENT_HISTORY - 1)]
        if entry.kind == 0 or entry.seq != seq:
            return None
        template = None
        if entry.kind == SENT_PACKET:
            source = self._generations.get(entry.gen)
            held = source.history[entry.src_seq % HISTORY_SIZE] if source is not None else None
            if held is not None and held.seq == entry.src_seq:
                template = held
        return entry.seq, entry.ts, template

    def detach(self) -> None:
        self._cancel_switch()
        if self.source is not None:
            self.source.remove(self)
            self.source = None
        self.started = False

    @property
    def target(self) -> SourceTrack | None:
        """The layer this subscriber is on, or moving to."""
        return self._pending or self.source

    def switch(self, layer: SourceTrack) -> None:
        """Move to another layer of the same track at that layer's next keyframe; until then
        the current layer keeps flowing (no freeze while waiting)."""
        if layer is self.target:
            return
        self.layer_switches += 1
        self._cancel_switch()
        if self.source is None or not self.started or self.paused:
            self.attach(layer)
            return
        self._pending = layer
        layer.candidates.append(self)
        layer.request_keyframe()

    def take_over(self, layer: SourceTrack) -> None:
        """The new layer's keyframe is here: leave the old layer, start on this one."""
        self._pending = None
        if self.source is not None:
            self.source.remove(self)
        self.source = layer
        self._new_generation(layer)
        layer.add(self, keyframe=False)
        self.started = False
        self.waiting_keyframe = True

    def _cancel_switch(self) -> None:
        if self._pending is not None:
            if self in self._pending.candidates:
                self._pending.candidates.remove(self)
            self._pending = None

    def pause(self) -> None:
        self._cancel_switch()
        if not self.paused:
            self.pauses += 1
        self.paused = True

    def resume(self) -> None:
        """Video again, from a keyframe, continuing this m-line's numbering."""
        self.paused = False
        self.rebase()
        if self.source is not None:
            self.source.request_keyframe()

    def plug_holes(self, src_seqs: list[int]) -> bool:
        """Send a padding-only packet for each lost source packet this subscriber has already
        passed: receivers' jitter buffers wait at a hole, but not at a damaged frame. The
        filler carries the timestamp of the frame the lost packet belonged to, so it joins
        that frame (an empty frame of its own would end the receiver's decoder stream).
        True if it passed any (its picture is damaged from there)."""
        if not self.started or self.source is None:
            return False
        plugged = False
        for src_seq in src_seqs:
            if (src_seq - self._first_src_seq) & 0xFFFF >= 0x8000:
                continue
            seq = (src_seq + self._seq_offset) & 0xFFFF
            if ((self._last_out_seq - seq) & 0xFFFF) >= 0x8000:
                continue  # not passed yet
            plugged = True
            if not self.active:
                continue
            src_ts = self.source.frame_timestamp_of(src_seq)
            ts = (self._last_out_ts if src_ts is None
                  else (src_ts + self._ts_offset) & 0xFFFFFFFF)
            self._remember(seq, ts, None)
            self._send_filler(seq, ts)
        return plugged

    def _send_filler(self, seq: int, ts: int) -> bool:
        """A padding-only packet under ``seq``: it closes a hole in the receiver's buffer."""
        return self.sink.send_rtp(rtp.stamp(rtp.PADDING_ONLY, self.payload_type, seq, ts,
                                            self.ssrc))

    def skip(self) -> None:
        """The source's next packet is not forwarded: keep this m-line's numbering gapless."""
        if self.started:
            self._seq_offset = (self._seq_offset - 1) & 0xFFFF

    def rebase(self) -> None:
        """The source's numbering restarted: start again at its next keyframe (video) or
        packet (audio), continuing this m-line's sequence numbers and timestamps."""
        self.started = False
        self.waiting_keyframe = self.source is not None and self.source.is_video

    # ---- the hot path ------------------------------------------------------------------
    def forward(self, template: Template, key_start: bool) -> bool:
        """Send one packet; False while this subscriber still waits for a keyframe. (What
        ``hz_fanout`` does for a started subscriber with an armed sink, the rest here; the
        fields are read from the C struct directly: this is also the way of every packet to a
        relayed subscriber.)"""
        c = self._c
        if not c.active or c.paused:
            return True
        src_seq = template.seq
        if not c.started:
            if self.waiting_keyframe and not key_start:
                return False
            self._start(template)
        elif (src_seq - c.first_src_seq) & 0xFFFF >= 0x8000:
            return True  # older than where this subscriber started
        seq = (src_seq + c.seq_offset) & 0xFFFF
        ts = (template.timestamp + c.ts_offset) & 0xFFFFFFFF
        ahead = (seq - c.last_out_seq) & 0xFFFF
        video = c.video
        if ahead < 0x8000:
            if ahead > 1 and not video:  # an upstream gap, passed on as it is
                self._upstream_gaps.append((seq, ahead - 1))
            c.last_out_seq = seq
            c.last_out_ts = ts
            c.last_out_time = template.arrived
            if (src_seq - c.first_src_seq) & 0xFFFF > 0x4000:
                # a long stream: keep the start trailing the newest packet, or the sequence
                # numbers would wrap past it and 32768 packets in a row would look older
                c.first_src_seq = (src_seq - 0x4000) & 0xFFFF
        block = template.blocks.get(self.ext_ids) or template.for_ids(self.ext_ids)
        if video:
            self._remember(seq, ts, template)
            end_of_frame = template.marker != 0
        else:
            end_of_frame = True  # each audio packet leaves at once
        self.sink.forward_rtp(block, (template.marker << 7) | c.payload_type, seq, ts,
                              c.ssrc, end_of_frame)
        c.packets += 1
        c.octets += len(template.payload)
        return True

    def _start(self, template: Template) -> None:
        """Continue this m-line's sequence and timestamp from where it stopped."""
        self.waiting_keyframe = False
        self.started = True
        if self.first_sent_at is None:
            self.first_sent_at = time.monotonic()
        self._first_src_seq = template.seq
        self._seq_offset = (self._last_out_seq + 1 - template.seq) & 0xFFFF
        self._run_start = (self._last_out_seq + 1) & 0xFFFF
        last = self._last_out_time
        elapsed = 0.0 if last is None else time.monotonic() - last
        step = max(1, int(elapsed * self.clock_rate))
        self._ts_offset = (self._last_out_ts + step - template.timestamp) & 0xFFFFFFFF

    def resend(self, seq: int, ts: int, template: Template | None) -> None:
        """Send again what went out as ``seq`` (``template`` None: a padding filler)."""
        if template is None:
            sent = self._send_filler(seq, ts)
        elif self.rtx is None:
            block = template.for_ids(self.ext_ids)
            sent = self.sink.send_rtp(rtp.stamp(
                block, (template.marker << 7) | self.payload_type, seq, ts, self.ssrc))
        else:  # RFC 4588: its own SSRC and numbering, the original sequence number first
            rtx_pt, rtx_ssrc = self.rtx
            ext = rtp.build_extension_block(self.ext_ids, template.audio_level,
                                            template.abs_send_time)
            block = rtp.build_packet(ext, seq.to_bytes(2, "big") + template.payload)
            sent = self.sink.send_rtp(rtp.stamp(block, (template.marker << 7) | rtx_pt,
                                                self._rtx_seq, ts, rtx_ssrc))
            if sent:
                self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
        if sent:  # (one too old for the SRTP session to protect again is not)
            self.retransmissions += 1

    # ---- RTCP from the subscriber ---------------------------------------------------------
    def on_nack(self, lost: list[int]) -> None:
        if self.source is None:
            return
        for out_seq in lost:
            sent = self._recall(out_seq)
            if sent is not None:
                if self.paused:
                    # a hole left before the pause would stall the receiver's jitter buffer
                    # after the resume (aiortc's waits for 512 packets); the resume starts
                    # at a keyframe, so a filler closes it without loading the weak link
                    self.resend(sent[0], sent[1], None)
                else:
                    self.resend(*sent)
                this_run = ((out_seq - self._run_start) & 0xFFFF) < 0x8000
                if this_run and out_seq not in self._answered:
                    self.nacks_answered += 1
                    if len(self._answered) > 512:
                        self._answered.clear()
                    self._answered.add(out_seq)
            elif self.started:
                # never sent: a gap in what the current source gave this subscriber?
                src_seq = (out_seq - self._seq_offset) & 0xFFFF
                if ((src_seq - self._first_src_seq) & 0xFFFF < 0x8000
                        and ((self._last_out_seq - out_seq) & 0xFFFF) < 0x8000):
                    self.source.nack_if_missing(src_seq)

    def downlink_fraction_lost(self, packets_lost: int, highest: int) -> int:
        """What the subscriber's receiver report says its *downlink* lost since its previous
        report, as RTCP's fraction (× 256): the report's cumulative loss and highest
        sequence number, less the numbers this DownTrack never sent (upstream gaps passed on
        as they were: the receiver counts them lost too, but they are the publisher's loss,
        the same for every subscriber, not this link's). A gap counts once the report's
        highest sequence number is past it."""
        top = highest & 0xFFFF
        gaps = self._upstream_gaps
        while gaps and ((top - gaps[0][0]) & 0xFFFF) < 0x8000:
            self._gaps_reported += gaps.popleft()[1]
        last = self._rr_last
        self._rr_last = (packets_lost, highest, self._gaps_reported)
        if last is None:  # since it started: what it sent, and the gaps it passed on
            expected = self.packets + self._gaps_reported
            lost = packets_lost - self._gaps_reported
        else:
            expected = (highest - last[1]) & 0xFFFFFFFF
            lost = packets_lost - last[0] - (self._gaps_reported - last[2])
        if expected <= 0 or expected >= 0x80000000 or lost <= 0:
            return 0
        self.downlink_lost += lost
        return min(255, (lost << 8) // expected)

    def on_keyframe_request(self) -> None:
        self.keyframe_requests += 1
        if self.source is not None and not self.paused:
            self.source.request_keyframe()

    def round_trip(self, lsr: int, dlsr: int) -> None:
        """A receiver report's LSR (the middle 32 bits of the NTP time of the last sender
        report it got) and DLSR (how long it held it, 1/65536 s): if that report was ours,
        the round trip to the subscriber. (The NTP time we send is the publisher's, so it is
        looked up, never compared with our clock.)"""
        sent = self._sr_sent.get(lsr) if lsr else None
        if sent is not None:
            now = time.monotonic()
            rtt = now - sent - dlsr / 65536
            if rtt >= 0:
                self.rtt_s, self.rtt_at = rtt, now

    def send_sender_report(self, ntp: int, src_rtp_ts: int) -> None:
        if not self.started or not self.active:
            return
        if len(self._sr_sent) >= 8:
            del self._sr_sent[next(iter(self._sr_sent))]
        self._sr_sent[(ntp >> 16) & 0xFFFFFFFF] = time.monotonic()
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
