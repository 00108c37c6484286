"""The two kinds of peer connection the SFU keeps, built on aiortc with the encoders bypassed.

aiortc hooks used here (aiortc is pinned to 1.16.*; tests/test_aiortc_hooks.py fails if one
stops working):

* publisher side: ``RTCRtpReceiver._handle_rtp_packet`` / ``_handle_rtcp_packet`` are wrapped
  per instance (packets go to a SourceTrack first; aiortc still keeps its receiver statistics,
  NACK generation and REMB), and the receiver's jitter buffer is replaced by one that never
  yields a frame, so nothing reaches a decoder. A simulcast m-line's packets are told apart by
  SSRC, learnt from the rtp-stream-id header extension; its receiver's NACK generator (which
  follows one sequence) is switched off and the layers NACK upstream themselves. The
  ``arrival_time_ms`` handed on is the kernel's receive time of the datagram (media/rxstamps.py:
  the ICE connection's ``_protocols`` sockets are read with ``SO_TIMESTAMPNS``).
* subscriber side: ``RTCRtpSender.send`` / ``stop`` / ``_handle_rtcp_packet`` are replaced per
  instance: the sender registers with the DTLS transport (so RTCP for its SSRC reaches us) but
  never starts aiortc's encoder or RTCP loops. Packets leave through the DTLS transport's SRTP
  session (``_tx_srtp``) and the nominated ICE pair's socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pylibsrtp
from aioice.ice import StunProtocol
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCSessionDescription
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpSendParameters
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    RtpPacket,
    unpack_remb_fci,
)
from aiortc.sdp import SessionDescription
from pylibsrtp import SRTP_MAX_TRAILER_LEN, Session
from pylibsrtp._binding import ffi, lib

from media import rtp
from media.background import spawn
from media.bandwidth import (
    REMB_FRESH_S,
    DownlinkEstimate,
    RembCap,
    StepUpTrials,
    Traffic,
)
from media.forwarder import DownTrack, MediaTrack, PacketSink, SourceTrack
from media.ice import IcePolicy
from media.impairment import Impairment
from media.rxstamps import ArrivalStamps
from media.simulcast import SimulcastError, accept_in_answer, offered_rids

log = logging.getLogger("huizhen.media")


class SdpError(ValueError):
    """An offer or answer that cannot be used; the message says why."""


def parse_sdp(sdp: str) -> SessionDescription:
    if not isinstance(sdp, str) or not sdp.startswith("v=0"):
        raise SdpError("SDP must start with v=0")
    try:
        return SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc raises ValueError, KeyError, IndexError… on bad SDP
        raise SdpError(f"cannot parse SDP: {exc!r}") from exc


class _NullJitterBuffer:
    """Stands in for aiortc's jitter buffer on publisher receivers: no frames, so no decoding."""

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        return False, None


def _is_rtx(codec: RTCRtpCodecParameters) -> bool:
    return codec.mimeType.lower().endswith("/rtx")


@dataclass
class PublishedTrack:
    mid: str
    kind: str
    track_id: str


class PublisherPeer:
    """A client's publish connection: the client offers, we answer receive-only."""

    def __init__(self, policy: IcePolicy, video_codec: str, pli_throttle_s: float,
                 impairment: Impairment | None = None) -> None:
        self._policy = policy
        self._impairment = impairment
        self._video_mime = "video/" + video_codec.lower()
        self._pli_throttle_s = pli_throttle_s
        self.pc = RTCPeerConnection(policy.configuration())
        self.tracks: dict[str, MediaTrack] = {}
        self.closed = False
        self._stamps = ArrivalStamps()

    async def answer(self, offer_sdp: str, tracks: list[PublishedTrack]) -> str:
        """Apply the client's offer and return our answer; SdpError if it is unusable."""
        parsed = parse_sdp(offer_sdp)
        by_mid = {t.mid: t for t in tracks}
        offered = {m.rtp.muxId: m.kind for m in parsed.media if m.kind in ("audio", "video")}
        for mid, kind in offered.items():
            if mid not in by_mid:
                raise SdpError(f"m-line with mid {mid!r} is not listed in tracks")
            if by_mid[mid].kind != kind:
                raise SdpError(f"mid {mid!r} is {kind} in the SDP, {by_mid[mid].kind} in tracks")
        missing = sorted(set(by_mid) - set(offered))
        if missing:
            raise SdpError(f"tracks list mid(s) {', '.join(missing)} that the SDP does not carry")
        try:
            simulcast = offered_rids(offer_sdp)
        except SimulcastError as exc:
            raise SdpError(str(exc)) from exc
        for mid in simulcast:
            if offered.get(mid) != "video":
                raise SdpError(f"mid {mid!r}: simulcast is for video m-lines only")
        rid_ext = {m.rtp.muxId: next((e for e in m.rtp.headerExtensions
                                      if e.uri == rtp.URI_RTP_STREAM_ID), None)
                   for m in parsed.media}
        try:
            await self.pc.setRemoteDescription(
                RTCSessionDescription(self._policy.clean_remote_sdp(offer_sdp), "offer"))
        except Exception as exc:
            raise SdpError(f"offer refused: {exc}") from exc
        for transceiver in self.pc.getTransceivers():
            track = by_mid.get(transceiver.mid or "")
            if track is None:
                continue
            transceiver.direction = "recvonly"
            rids = simulcast.get(track.mid, [])
            # no RTX with simulcast: retransmissions then come on each layer's own SSRC
            codecs = self._pin_codecs(transceiver.kind, transceiver._codecs, rtx=not rids)
            transceiver._codecs = codecs
            if rids:
                ext = rid_ext.get(track.mid)
                if ext is None:
                    raise SdpError(f"mid {track.mid!r}: simulcast without the "
                                   f"{rtp.URI_RTP_STREAM_ID} header extension")
                transceiver._headerExtensions = [*transceiver._headerExtensions, ext]
            self._hook_receiver(transceiver.receiver, track, codecs, rids)
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)  # gathers: the ICE sockets exist from here
        self._stamps.attach_connection(self.pc)
        return accept_in_answer(self._policy.rewrite_local_sdp(self.pc.localDescription.sdp),
                                simulcast)

    def _pin_codecs(self, kind: str, codecs: list[RTCRtpCodecParameters], rtx: bool = True
                    ) -> list[RTCRtpCodecParameters]:
        """Keep the room's codec (and its RTX) only: the SFU cannot transcode."""
        wanted = "audio/opus" if kind == "audio" else self._video_mime
        main = [c for c in codecs if c.mimeType.lower() == wanted]
        if not main:
            raise SdpError(f"the offer has no {wanted} for its {kind} track; "
                           f"this room uses {wanted}")
        main = main[:1]
        if not rtx:
            return main
        rtx_codecs = [c for c in codecs
                      if _is_rtx(c) and c.parameters.get("apt") == main[0].payloadType]
        return main + rtx_codecs[:1]

    def _hook_receiver(self, receiver: RTCRtpReceiver, track: PublishedTrack,
                       codecs: list[RTCRtpCodecParameters], rids: list[str]) -> None:
        main = codecs[0]
        rtx_pt = codecs[1].payloadType if len(codecs) > 1 else None

        def send_pli(ssrc: int) -> None:
            spawn(receiver._send_rtcp_pli(ssrc))

        def send_nack(ssrc: int, lost: list[int]) -> None:
            spawn(receiver._send_rtcp_nack(ssrc, lost))

        layers = [SourceTrack(track.track_id, track.kind, main.mimeType, main.clockRate,
                              send_pli, send_nack, self._pli_throttle_s, rid=rid,
                              nack_upstream=True)
                  for rid in rids]
        source = SourceTrack(track.track_id, track.kind, main.mimeType, main.clockRate,
                             send_pli, send_nack, self._pli_throttle_s)
        self.tracks[track.track_id] = MediaTrack(track.track_id, track.kind, layers or [source])
        layer_by_rid = {layer.rid: layer for layer in layers}
        layer_by_ssrc: dict[int, SourceTrack] = {}
        if layers:
            receiver._RTCRtpReceiver__nack_generator = None  # type: ignore[attr-defined]
        receiver._RTCRtpReceiver__jitter_buffer = _NullJitterBuffer()  # type: ignore[attr-defined]
        handle_rtp = receiver._handle_rtp_packet
        handle_rtcp = receiver._handle_rtcp_packet
        main_pt = main.payloadType

        impairment = self._impairment

        async def on_rtp(packet: RtpPacket, arrival_time_ms: int) -> None:
            pt = packet.payload_type
            ext = packet.extensions
            if impairment is not None and impairment.drops(
                    track.kind, packet.sequence_number if pt == main_pt
                    else struct.unpack_from("!H", packet.payload)[0] if len(packet.payload) > 1
                    else -1):
                return
            if pt == main_pt:
                target = source
                if layers:
                    layer = layer_by_ssrc.get(packet.ssrc)
                    if layer is None:
                        layer = layer_by_rid.get(ext.rtp_stream_id)
                        if layer is None:
                            return  # a stream we cannot place (yet): not forwarded
                        layer_by_ssrc[packet.ssrc] = layer
                    target = layer
                target.on_packet(packet.ssrc, packet.sequence_number, packet.timestamp,
                                 packet.marker, packet.payload, packet.padding_size,
                                 ext.audio_level, ext.abs_send_time)
            elif pt == rtx_pt and len(packet.payload) > 2 and source.ssrc is not None:
                (seq,) = struct.unpack_from("!H", packet.payload)
                source.on_packet(source.ssrc, seq, packet.timestamp, packet.marker,
                                 packet.payload[2:], 0, ext.audio_level, ext.abs_send_time)
            await handle_rtp(packet, arrival_time_ms)

        async def on_rtcp(packet: Any) -> None:
            if isinstance(packet, RtcpSrPacket):
                target = layer_by_ssrc.get(packet.ssrc, source) if layers else source
                target.on_sender_report(packet.sender_info.ntp_timestamp,
                                        packet.sender_info.rtp_timestamp)
            await handle_rtcp(packet)

        receiver._handle_rtp_packet = on_rtp  # type: ignore[method-assign]
        self._stamps.stamp_receiver(receiver)  # in front: arrival_time_ms is the kernel's
        receiver._handle_rtcp_packet = on_rtcp  # type: ignore[method-assign]

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for track in self.tracks.values():
            track.close()
        await self.pc.close()


UDP_SEGMENT = 103  # linux/udp.h: the size of the datagrams a UDP GSO send is split into
GSO_MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS of the oldest kernels that have UDP GSO (4.18)
GSO_MAX_BYTES = 60000  # a GSO send is one IP packet before it is split: below 64 KiB
_GSO = sys.platform == "linux"


def _srtp_protect(session: Session) -> Callable[[bytes], bytes]:
    """``session.protect`` without pylibsrtp's per-call checks and allocation: the same libsrtp
    call on the same session buffer (tests/test_aiortc_hooks.py checks the two agree)."""
    srtp = session._srtp[0]
    cdata = session._cdata
    buffer = session._buffer
    length = ffi.new("int *")
    limit = len(cdata) - SRTP_MAX_TRAILER_LEN
    srtp_protect = lib.srtp_protect

    def protect(data: bytes) -> bytes:
        size = len(data)
        if size > limit:
            raise ValueError("packet is too long")
        length[0] = size
        buffer[0:size] = data
        rc = srtp_protect(srtp, cdata, length)
        if rc:
            raise pylibsrtp.Error(pylibsrtp.ERRORS[rc])
        return buffer[0:length[0]]

    return protect


@dataclass
class SubscriptionSlot:
    """One m-line of a subscribe connection."""

    transceiver: Any
    down: DownTrack
    track_id: str | None = None
    meta: dict[str, Any] | None = None
    track: MediaTrack | None = None
    #: the tallest picture the subscriber wants (its tile's size); None: no limit
    max_height: int | None = None
    #: the down track's (packets, octets, answered NACKs) at the last adaptation tick
    counted: tuple[int, int, int] = (0, 0, 0)
    remb_cap: RembCap = field(default_factory=RembCap)


OfferSender = Callable[[str, list[dict[str, Any]], int], Awaitable[None]]
#: tells the subscriber that a track's video was paused (True) or resumed (False)
PauseNotifier = Callable[[str, dict[str, Any], bool], Coroutine[Any, Any, None]]

ADAPT_INTERVAL_S = 0.25


@dataclass
class _Plan:
    """The layer each video slot gets (None: paused), and how the plan compares with now."""

    choices: list[tuple[SubscriptionSlot, SourceTrack | None]]
    stepped_down: bool
    step_up_bps: float | None  # the cheapest step up not taken (None: all at the top)


class SubscriberPeer(PacketSink):
    """A client's subscribe connection: we offer (and re-offer) send-only m-lines."""

    ANSWER_TIMEOUT_S = 15.0

    def __init__(self, policy: IcePolicy, video_codec: str, send_offer: OfferSender,
                 label: str = "", on_video_paused: PauseNotifier | None = None,
                 impairment: Impairment | None = None) -> None:
        self._policy = policy
        self._video_mime = "video/" + video_codec.lower()
        self._send_offer = send_offer
        self.label = label
        self._on_video_paused = on_video_paused
        self._impairment = impairment
        self.estimate = DownlinkEstimate()
        self._trials = StepUpTrials()
        self._adapting: asyncio.Task[None] | None = None
        self.pc = RTCPeerConnection(policy.configuration())
        self.slots: list[SubscriptionSlot] = []
        self._dirty = False
        self._negotiation: asyncio.Task[None] | None = None
        self._answered = asyncio.Event()
        self._seq = 0
        self._dtls: Any = None
        self._pair: Any = None
        self._sock: socket.socket | None = None
        self._addr: tuple[str, int] = ("", 0)
        self.dropped = 0
        self.closed = False

    # ---- what to receive -----------------------------------------------------------------
    def subscribe(self, track: MediaTrack, meta: dict[str, Any]) -> None:
        if self.closed or any(s.track_id == track.track_id for s in self.slots):
            return
        slot = next((s for s in self.slots if s.track_id is None
                     and s.transceiver.kind == track.kind
                     and s.transceiver.currentDirection == "inactive"), None)
        if slot is None:
            transceiver = self.pc.addTransceiver(track.kind, direction="sendonly")
            self._pin_codec(transceiver, track)
            slot = SubscriptionSlot(transceiver, DownTrack(track.kind,
                                                           transceiver.sender._ssrc, self))
            self._hook_sender(slot)
            self.slots.append(slot)
        else:
            slot.transceiver.direction = "sendonly"
        slot.track_id = track.track_id
        slot.meta = meta
        slot.track = track
        slot.max_height = None
        sender = slot.transceiver.sender
        sender._stream_id = meta.get("participant_id", sender._stream_id)
        sender._track_id = track.track_id
        slot.down.active = False
        if slot.down.paused:
            slot.down.resume()
        slot.down.attach(track.layers[0])  # the lowest layer; adaptation moves it up
        if self._adapting is None:
            self._adapting = spawn(self._adapt_loop())
        self.request_negotiation()

    def unsubscribe(self, track_id: str) -> None:
        for slot in self.slots:
            if slot.track_id == track_id:
                slot.down.active = False
                slot.down.detach()
                slot.track_id = None
                slot.meta = None
                slot.track = None
                slot.transceiver.direction = "inactive"
                self.request_negotiation()

    def set_video_size(self, track_id: str, max_height: int | None) -> bool:
        """The subscriber shows that track at most ``max_height`` pixels tall (None: no
        limit): no simulcast layer much taller than that is sent. False if not subscribed."""
        for slot in self.slots:
            if slot.track_id == track_id:
                slot.max_height = max_height
                return True
        return False

    def _pin_codec(self, transceiver: Any, source: MediaTrack) -> None:
        """Offer the publisher's codec only (no transcoding), with RTX for video."""
        caps = RTCRtpSender.getCapabilities(source.kind).codecs
        wanted = source.mime_type.lower()
        chosen = [c for c in caps if c.mimeType.lower() == wanted]
        if not chosen:
            raise ValueError(f"no {wanted} codec to offer")
        rtx = [c for c in caps if c.mimeType.lower() == "video/rtx"] if source.is_video else []
        transceiver.setCodecPreferences(chosen[:1] + rtx[:1])

    # ---- negotiation -----------------------------------------------------------------------
    def request_negotiation(self) -> None:
        self._dirty = True
        if self._negotiation is None or self._negotiation.done():
            self._negotiation = spawn(self._negotiate())

    async def _negotiate(self) -> None:
        while self._dirty and not self.closed:
            self._dirty = False
            if not self.slots:
                return
            offer = await self.pc.createOffer()
            await self.pc.setLocalDescription(offer)
            self._seq += 1
            self._answered.clear()
            tracks = [
                {"mid": s.transceiver.mid, "track_id": s.track_id, **(s.meta or {})}
                for s in self.slots if s.track_id is not None
            ]
            await self._send_offer(self._policy.rewrite_local_sdp(self.pc.localDescription.sdp),
                                   tracks, self._seq)
            try:
                await asyncio.wait_for(self._answered.wait(), self.ANSWER_TIMEOUT_S)
            except TimeoutError:
                log.warning("subscriber did not answer the offer", extra={"seq": self._seq})
                return

    async def on_answer(self, sdp: str, seq: int) -> None:
        """Apply the client's answer to offer ``seq``; SdpError if unusable or stale."""
        if seq != self._seq or self.pc.signalingState != "have-local-offer":
            raise SdpError(f"answer for offer {seq} does not match the pending offer "
                           f"{self._seq}")
        parse_sdp(sdp)
        try:
            await self.pc.setRemoteDescription(
                RTCSessionDescription(self._policy.clean_remote_sdp(sdp), "answer"))
        except Exception as exc:
            raise SdpError(f"answer refused: {exc}") from exc
        self._answered.set()
        self._activate_ready()

    def _activate_ready(self) -> None:
        for slot in self.slots:
            down = slot.down
            if (slot.track is not None and not down.active and down.payload_type
                    and slot.transceiver.currentDirection in ("sendonly", "sendrecv")
                    and self._dtls is not None and self._dtls.state == "connected"):
                down.active = True
                if down.source is not None and not down.paused:
                    down.source.request_keyframe()

    # ---- adapting to the subscriber's downlink ---------------------------------------------
    async def _adapt_loop(self) -> None:
        last = time.monotonic()
        while not self.closed:
            await asyncio.sleep(ADAPT_INTERVAL_S)
            now = time.monotonic()
            try:
                self._adapt(now, now - last)
            except Exception:  # never let one bad tick end adaptation for this subscriber
                log.exception("downlink adaptation failed", extra={"subscriber": self.label})
            last = now

    def _adapt(self, now: float, dt: float) -> None:
        """One tick: fold what was sent and reported into the estimate, then give audio what
        it needs and each video track the best layer that fits the rest (or pause it)."""
        traffic = Traffic()
        audio_bps = 0.0
        video: list[SubscriptionSlot] = []
        for slot in self.slots:
            down = slot.down
            counts = (down.packets, down.octets, down.nacks_answered)
            packets, octets, nacked = (c - p for c, p in zip(counts, slot.counted, strict=True))
            slot.counted = counts
            traffic.sent_packets += packets
            traffic.sent_bytes += octets
            if slot.track is None or not down.active:
                continue
            if slot.track.is_video:
                traffic.video_packets += packets
                traffic.video_bytes += octets
                traffic.nacked += nacked
                video.append(slot)
            else:
                audio_bps += slot.track.layers[0].bitrate(now)
        estimate = self.estimate.update(dt, traffic)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("downlink", extra={
                "subscriber": self.label, "estimate_kbps": round(estimate / 1000),
                "sent_kbps": round(self.estimate.sent_bps / 1000),
                "loss": round(self.estimate.loss, 3), "nacked": traffic.nacked,
                "video_packets": traffic.video_packets})
        plan = self._plan(video, estimate - audio_bps, now)
        if plan.stepped_down:
            self._trials.stepped_down(now)
        else:
            self._trials.settled(now)
            if plan.step_up_bps is not None and self._trials.blocked(now):
                # try one step up: the loss that follows (or not) is the evidence
                self.estimate.bps = estimate + plan.step_up_bps
                plan = self._plan(video, self.estimate.bps - audio_bps, now)
        for slot, layer in plan.choices:
            self._apply(slot, layer)

    @staticmethod
    def _plan(video: list[SubscriptionSlot], budget: float, now: float) -> _Plan:
        choices: list[tuple[SubscriptionSlot, SourceTrack | None]] = []
        stepped_down = False
        step_up: float | None = None
        for slot in video:
            assert slot.track is not None
            down = slot.down
            sent = slot.track.sent_layers(now)
            if not sent:
                continue  # nothing to choose from now (muted, or not started yet)
            layers = [layer for layer, _ in sent]
            rates = [bps for _, bps in sent]
            current = (layers.index(down.target)
                       if not down.paused and down.target in layers else None)
            top = _max_layer(layers, slot.max_height)
            remb = (down.remb[0] if down.remb is not None
                    and now - down.remb[1] <= REMB_FRESH_S else None)
            choice = slot.remb_cap.choose(rates, budget, current, top, remb, now)
            rank = -1 if choice is None else choice
            if rank < (-1 if current is None else current):  # current: None when paused
                stepped_down = True
            highest = len(layers) - 1 if top is None else min(top, len(layers) - 1)
            if rank < highest:
                step = rates[rank + 1] - (rates[rank] if rank >= 0 else 0.0)
                step_up = step if step_up is None else min(step_up, step)
            if choice is not None:
                budget -= rates[choice]
            choices.append((slot, None if choice is None else layers[choice]))
        return _Plan(choices, stepped_down, step_up)

    def _apply(self, slot: SubscriptionSlot, layer: SourceTrack | None) -> None:
        down = slot.down
        if layer is None:
            if not down.paused:
                down.pause()
                log.info("video paused: weak downlink", extra={
                    "subscriber": self.label, "track_id": slot.track_id,
                    "estimate_kbps": round(self.estimate.bps / 1000)})
                self._notify_paused(slot, True)
            return
        was_paused = down.paused
        down.switch(layer)
        if was_paused:
            down.resume()
            log.info("video resumed", extra={
                "subscriber": self.label, "track_id": slot.track_id,
                "estimate_kbps": round(self.estimate.bps / 1000)})
            self._notify_paused(slot, False)

    def _notify_paused(self, slot: SubscriptionSlot, paused: bool) -> None:
        if self._on_video_paused is not None and slot.track_id is not None:
            spawn(self._on_video_paused(slot.track_id, dict(slot.meta or {}), paused))

    # ---- aiortc sender replacement ---------------------------------------------------------
    def _hook_sender(self, slot: SubscriptionSlot) -> None:
        sender = slot.transceiver.sender
        down = slot.down

        async def send(parameters: RTCRtpSendParameters) -> None:
            self._dtls = sender.transport
            sender.transport._register_rtp_sender(sender, parameters)
            codec = parameters.codecs[0]
            rtx_pt = next((c.payloadType for c in parameters.codecs[1:] if _is_rtx(c)
                           and c.parameters.get("apt") == codec.payloadType), None)
            ids = rtp.ExtensionIds(
                audio_level=next((e.id for e in parameters.headerExtensions
                                  if e.uri == rtp.URI_AUDIO_LEVEL), 0),
                abs_send_time=next((e.id for e in parameters.headerExtensions
                                    if e.uri == rtp.URI_ABS_SEND_TIME), 0),
            )
            down.configure(codec.payloadType or 0, codec.clockRate, ids,
                           parameters.rtcp.cname or "",
                           None if rtx_pt is None else (rtx_pt, sender._rtx_ssrc))
            self._activate_ready()

        async def stop() -> None:
            with contextlib.suppress(Exception):
                sender.transport._unregister_rtp_sender(sender)

        async def handle_rtcp(packet: Any) -> None:
            if isinstance(packet, RtcpPsfbPacket):
                if packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                    down.on_keyframe_request()
                elif packet.fmt == RTCP_PSFB_APP:
                    with contextlib.suppress(ValueError):
                        bitrate, ssrcs = unpack_remb_fci(packet.fci)
                        if down.ssrc in ssrcs:  # this stream's share of what it covers
                            down.remb = (bitrate / len(ssrcs), time.monotonic())
            elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
                down.on_nack(packet.lost)
            elif isinstance(packet, (RtcpRrPacket, RtcpSrPacket)) and down.kind == "audio":
                # video loss is read from NACKs (only what was lost on this downlink);
                # audio has no NACKs, so its receiver reports speak for it
                for report in packet.reports:
                    if report.ssrc == down.ssrc and down.active:
                        self.estimate.on_receiver_report(report.fraction_lost)

        sender.send = send
        sender.stop = stop
        sender._handle_rtcp_packet = handle_rtcp

    # ---- PacketSink: the fast send path ------------------------------------------------------
    # Per packet and subscriber this is the server's main cost, so what does not change per
    # packet is looked up once per DTLS transport (its SRTP session is created once, at the
    # handshake; its ICE connection's dict of nominated pairs lives as long as it does) and once
    # per nominated pair (its socket and address).
    _srtp_dtls: Any = None  # the DTLS transport the two below belong to (set by _bind_srtp)
    _protect: Callable[[bytes], bytes]
    _nominated: dict[int, Any]

    def _bind_srtp(self) -> bool:
        dtls = self._dtls
        if dtls is None or dtls._tx_srtp is None:
            return False
        self._protect = _srtp_protect(dtls._tx_srtp)
        self._nominated = dtls.transport._connection._nominated
        self._srtp_dtls = dtls
        return True

    # A video frame's packets leave together, when its last one is sent: on Linux with UDP GSO
    # (one system call for each run of same-size packets, the kernel splits them), which is
    # most of what a packet costs the server.
    _held: list[bytes] = []  # noqa: RUF012 - replaced per instance
    _gso = _GSO

    def send_rtp(self, data: bytes) -> None:
        if self._dtls is not self._srtp_dtls and not self._bind_srtp():
            return
        if self._held:
            self._held.append(self._protect(data))
            self._flush()
        else:
            self._sendto(self._protect(data))

    def queue_rtp(self, data: bytes) -> None:
        if self._dtls is not self._srtp_dtls and not self._bind_srtp():
            return
        held = self._held
        if not held:
            self._held = held = []
        elif held[-1][4:12] != data[4:12]:  # another frame (its last packet was lost) or SSRC
            self._flush()
            self._held = held = []
        held.append(self._protect(data))

    def _flush(self) -> None:
        held = self._held
        self._held = []
        pair = self._nominated.get(1)
        if pair is None:
            return
        if (pair is not self._pair or self._sock is None or not self._gso
                or (self._impairment is not None and self.label in self._impairment.downlinks)):
            for data in held:  # one at a time (a simulated downlink sees each datagram)
                self._sendto(data)
            return
        sock, addr = self._sock, self._addr
        start, count = 0, len(held)
        while start < count:
            size = len(held[start])
            limit = min(count, start + min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // size))
            end = start + 1
            while end < limit and len(held[end]) == size:
                end += 1
            if end < limit and len(held[end]) < size:
                end += 1  # the last segment may be shorter
            if end - start == 1:
                self._sendto(held[start])
            else:
                try:
                    sock.sendmsg(held[start:end],
                                 [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))], 0, addr)
                except (BlockingIOError, InterruptedError):
                    self.dropped += end - start
                except OSError as exc:  # no UDP GSO on this path: one packet at a time
                    log.info("UDP GSO unavailable", extra={"error": str(exc)})
                    self._gso = False
                    for data in held[start:end]:
                        self._sendto(data)
            start = end

    def send_rtcp(self, data: bytes) -> None:
        if self._dtls is not self._srtp_dtls and not self._bind_srtp():
            return
        self._sendto(self._dtls._tx_srtp.protect_rtcp(data))

    def _sendto(self, data: bytes) -> None:
        if self._impairment is not None:
            limit = self._impairment.downlinks.get(self.label)
            if limit is not None:
                limit.send(data, self._transmit)
                return
        self._transmit(data)

    def _transmit(self, data: bytes) -> None:
        pair = self._nominated.get(1)
        if pair is None:
            return
        if pair is not self._pair:
            self._pair = pair
            transport = getattr(pair.protocol, "transport", None)
            # a host/srflx pair: write to its UDP socket directly (no asyncio buffering: a
            # real-time packet that does not fit the socket buffer is dropped, not queued)
            self._sock = (transport.get_extra_info("socket")._sock
                          if type(pair.protocol) is StunProtocol and transport is not None
                          else None)
            self._addr = pair.remote_addr
        if self._sock is not None:
            try:
                self._sock.sendto(data, self._addr)
            except (BlockingIOError, InterruptedError):
                self.dropped += 1
            except OSError as exc:
                log.debug("send failed", extra={"error": str(exc)})
        else:  # relayed (TURN) pairs wrap the datagram; rare on the server side
            spawn(pair.protocol.send_data(data, pair.remote_addr))

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for slot in self.slots:
            slot.down.active = False
            slot.down.detach()
        for task in (self._negotiation, self._adapting):
            if task is not None:
                task.cancel()
        await self.pc.close()


def _max_layer(layers: list[SourceTrack], max_height: int | None) -> int | None:
    """The highest layer worth sending for a picture ``max_height`` tall: the first one at
    least that tall (so it is not blurred); None: no limit (or sizes not known yet)."""
    if max_height is None:
        return None
    for index, layer in enumerate(layers):
        if layer.frame_size is not None and layer.frame_size[1] >= max_height:
            return index
    return None
