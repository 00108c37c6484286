"""A client's subscribe connection: the SFU offers (and re-offers) send-only m-lines, one
DownTrack (media/downtrack.py) per m-line, and adapts what it sends to the subscriber's downlink.

aiortc hooks used here (aiortc is pinned to 1.16.*; tests/test_aiortc_hooks.py fails if one
stops working): ``RTCRtpSender.send`` / ``stop`` / ``_handle_rtcp_packet`` are replaced per
instance: the sender registers with the DTLS transport (so RTCP for its SSRC reaches us) but
never starts aiortc's encoder or RTCP loops. Packets leave through the DTLS transport's SRTP
session (``_tx_srtp``) and the nominated ICE pair's socket: ``SubscriberPeer`` is an
``SrtpUdpSink`` (media/sendpath.py).

Downlink adaptation (one tick every ``ADAPT_INTERVAL_S``, ``TRIAL_INTERVAL_S`` while a step up is
tried; figures in media/bandwidth.py): audio
first, then each video track the best simulcast layer that fits the estimate and the picture
size the subscriber asked for, or paused.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pylibsrtp
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.rtcrtpparameters import RTCRtpSendParameters
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    unpack_remb_fci,
)

from media import rtp
from media.background import spawn
from media.bandwidth import (
    REMB_FRESH_S,
    DownlinkEstimate,
    RembCap,
    StepUpTrials,
    Traffic,
)
from media.downtrack import DownTrack
from media.ice import IcePolicy
from media.impairment import Impairment
from media.rxstamps import ArrivalStamps, DirectRtcp
from media.sdp import SdpError, is_rtx, parse_sdp
from media.sendpath import SrtpUdpSink
from media.source import MediaTrack, SourceTrack

log = logging.getLogger("huizhen.media")


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
#: … and during a step-up try: a try that fails (a resumed video's keyframe filling a narrow
#: link) costs the subscriber's audio until it is stopped
TRIAL_INTERVAL_S = 0.1
RTT_FRESH_S = 10.0  # a round trip measured longer ago than this is no longer reported


@dataclass
class _Plan:
    """The layer each video slot gets (None: paused), and how the plan compares with now."""

    choices: list[tuple[SubscriptionSlot, SourceTrack | None]]
    stepped_down: bool
    step_up_bps: float | None  # the cheapest step up not taken (None: all at the top)


class SubscriberPeer(SrtpUdpSink):
    """A client's subscribe connection: we offer (and re-offer) send-only m-lines."""

    ANSWER_TIMEOUT_S = 15.0

    def __init__(self, policy: IcePolicy, video_codec: str, send_offer: OfferSender,
                 label: str = "", on_video_paused: PauseNotifier | None = None,
                 impairment: Impairment | None = None) -> None:
        super().__init__(label, impairment)
        self._policy = policy
        self._video_mime = "video/" + video_codec.lower()
        self._send_offer = send_offer
        self._on_video_paused = on_video_paused
        self.estimate = DownlinkEstimate()
        self._trials = StepUpTrials()
        self._adapting: asyncio.Task[None] | None = None
        self.pc = RTCPeerConnection(policy.configuration())
        self.slots: list[SubscriptionSlot] = []
        self._dirty = False
        self._negotiation: asyncio.Task[None] | None = None
        self._answered = asyncio.Event()
        self._seq = 0
        self.closed = False
        #: negotiated and connected, but nothing is sent (a participant in the lobby)
        self.held = False
        #: since when media may flow (created, or released from the hold): join-to-first-frame
        self.media_since: float | None = time.monotonic()
        #: its tasks log with the ids of the participant it was made for (huizhen/logs.py)
        self._context = contextvars.copy_context()
        #: the subscriber's RTCP, as each sender's handler takes it (``_direct_rtcp``)
        self._rtcp_handlers: dict[Any, Callable[[Any], None]] = {}
        self._sockets = ArrivalStamps()  # reads its sockets (no RTP comes in: no stamps)
        self.rtcp_direct = 0  # SRTCP datagrams handled as they were read

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
            self._adapting = spawn(self._adapt_loop(), self._context)
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
            self._negotiation = spawn(self._negotiate(), self._context)

    async def _negotiate(self) -> None:
        while self._dirty and not self.closed:
            self._dirty = False
            if not self.slots:
                return
            offer = await self.pc.createOffer()
            self._policy.prepare(self.pc)
            await self.pc.setLocalDescription(offer)
            self._sockets.attach_connection(self.pc, rtcp=self._direct_rtcp)
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

    def set_held(self, held: bool) -> None:
        """Hold: the m-lines are negotiated and the connection comes up, but no packet is sent
        (a participant waiting in the lobby). Release: media starts at once, each video track
        at a keyframe — no negotiation left to do (instant admission)."""
        if held:
            self.media_since = None
            for slot in self.slots:
                slot.down.active = False
        elif self.held or self.media_since is None:
            self.media_since = time.monotonic()
        self.held = held
        if not held:
            self._activate_ready()

    def _activate_ready(self) -> None:
        if self.held:
            return
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
            await asyncio.sleep(TRIAL_INTERVAL_S if self._trials.trying(last)
                                else ADAPT_INTERVAL_S)
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
            spawn(self._on_video_paused(slot.track_id, dict(slot.meta or {}), paused),
                  self._context)

    # ---- what monitoring reads (rooms/quality.py, observability/) ---------------------------
    def round_trip_s(self, now: float) -> float | None:
        """The most recent round trip one of its streams measured (RTCP), if fresh."""
        latest = max((s.down for s in self.slots if s.down.rtt_s is not None),
                     key=lambda d: d.rtt_at, default=None)
        if latest is None or now - latest.rtt_at > RTT_FRESH_S:
            return None
        return latest.rtt_s

    def video_layers(self) -> list[dict[str, Any]]:
        """Each video track it receives: the simulcast layer it gets now (0 = the lowest of
        ``layers``; None while paused)."""
        out = []
        for slot in self.slots:
            if slot.track is None or not slot.track.is_video:
                continue
            down = slot.down
            layers = slot.track.layers
            layer = (layers.index(down.source) if down.source in layers and not down.paused
                     else None)
            out.append({"track_id": slot.track_id,
                        "participant_id": (slot.meta or {}).get("participant_id"),
                        "layer": layer, "layers": len(layers), "paused": down.paused})
        return out

    def first_video_delay(self) -> float | None:
        """Seconds from when media could flow to the first video packet sent (None: not yet)."""
        if self.media_since is None:
            return None
        firsts = [s.down.first_sent_at for s in self.slots if s.down.kind == "video"
                  and s.down.first_sent_at is not None]
        return min(firsts) - self.media_since if firsts else None

    # ---- aiortc sender replacement ---------------------------------------------------------
    def _hook_sender(self, slot: SubscriptionSlot) -> None:
        sender = slot.transceiver.sender
        down = slot.down

        async def send(parameters: RTCRtpSendParameters) -> None:
            self._dtls = sender.transport
            sender.transport._register_rtp_sender(sender, parameters)
            codec = parameters.codecs[0]
            rtx_pt = next((c.payloadType for c in parameters.codecs[1:] if is_rtx(c)
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

        def on_rtcp(packet: Any) -> None:
            if isinstance(packet, RtcpPsfbPacket):
                if packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                    down.on_keyframe_request()
                elif packet.fmt == RTCP_PSFB_APP:
                    with contextlib.suppress(ValueError):
                        bitrate, ssrcs = unpack_remb_fci(packet.fci)
                        if down.ssrc in ssrcs:  # this stream's share of what it covers
                            down.remb = (bitrate / len(ssrcs), time.monotonic())
            elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
                down.nack_messages += 1
                down.on_nack(packet.lost)
            elif isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
                for report in packet.reports:
                    if report.ssrc != down.ssrc:
                        continue
                    down.receiver_reports += 1
                    down.last_report = (report.fraction_lost, report.packets_lost,
                                        report.highest_sequence, report.jitter)
                    down.round_trip(report.lsr, report.dlsr)
                    # video loss is read from NACKs (only what was lost on this downlink);
                    # audio has no NACKs, so its receiver reports speak for it, less what
                    # the publisher's uplink lost (the same gaps for every subscriber: one
                    # starved or lossy publisher must not pause every viewer's video)
                    if down.kind == "audio" and down.active:
                        self.estimate.on_receiver_report(down.downlink_fraction_lost(
                            report.packets_lost, report.highest_sequence))

        async def handle_rtcp(packet: Any) -> None:  # the way through aiortc's DTLS task
            on_rtcp(packet)

        sender.send = send
        sender.stop = stop
        sender._handle_rtcp_packet = handle_rtcp
        self._rtcp_handlers[sender] = on_rtcp

    def _direct_rtcp(self, dtls: Any) -> DirectRtcp:
        """The direct path of the SRTCP datagrams that reach ``dtls``'s sockets (receiver
        reports, REMB, NACKs, PLIs of the subscriber): decrypted, parsed and handled as they
        are read (media/rxstamps.py, media/udpmux.py), instead of going through aioice's
        queue and a task switch into aiortc's DTLS task. Until the handshake has keyed SRTP,
        datagrams take the usual way. A packet for something of aiortc's own (none today: the
        senders are ours) is handed to it in a task."""
        handlers = self._rtcp_handlers

        def receive(data: bytes) -> bool:
            srtp = dtls._rx_srtp
            if srtp is None or self.closed:
                return False
            try:
                packets = RtcpPacket.parse(srtp.unprotect_rtcp(data))
            except (pylibsrtp.Error, ValueError):
                return True  # dropped, as aiortc drops what fails to decrypt or parse
            self.rtcp_direct += 1
            for packet in packets:
                for recipient in dtls._rtp_router.route_rtcp(packet):
                    handler = handlers.get(recipient)
                    if handler is not None:
                        handler(packet)
                    else:
                        spawn(recipient._handle_rtcp_packet(packet), self._context)
            return True

        return receive

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
