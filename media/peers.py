"""The two kinds of peer connection the SFU keeps, built on aiortc with the encoders bypassed.

aiortc hooks used here (aiortc is pinned to 1.16.*; tests/test_aiortc_hooks.py fails if one
stops working):

* publisher side: ``RTCRtpReceiver._handle_rtp_packet`` / ``_handle_rtcp_packet`` are wrapped
  per instance (packets go to a SourceTrack first; aiortc still keeps its receiver statistics,
  NACK generation and REMB), and the receiver's jitter buffer is replaced by one that never
  yields a frame, so nothing reaches a decoder.
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aioice.ice import StunProtocol
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCSessionDescription
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpSendParameters
from aiortc.rtp import (
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    RtpPacket,
)
from aiortc.sdp import SessionDescription

from media import rtp
from media.background import spawn
from media.forwarder import DownTrack, PacketSink, SourceTrack
from media.ice import IcePolicy
from media.impairment import Impairment

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
        self.sources: dict[str, SourceTrack] = {}
        self.closed = False

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
            await self.pc.setRemoteDescription(
                RTCSessionDescription(self._policy.clean_remote_sdp(offer_sdp), "offer"))
        except Exception as exc:
            raise SdpError(f"offer refused: {exc}") from exc
        for transceiver in self.pc.getTransceivers():
            track = by_mid.get(transceiver.mid or "")
            if track is None:
                continue
            transceiver.direction = "recvonly"
            codecs = self._pin_codecs(transceiver.kind, transceiver._codecs)
            transceiver._codecs = codecs
            self._hook_receiver(transceiver.receiver, track, codecs)
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        return self._policy.rewrite_local_sdp(self.pc.localDescription.sdp)

    def _pin_codecs(self, kind: str, codecs: list[RTCRtpCodecParameters]
                    ) -> list[RTCRtpCodecParameters]:
        """Keep the room's codec (and its RTX) only: the SFU cannot transcode."""
        wanted = "audio/opus" if kind == "audio" else self._video_mime
        main = [c for c in codecs if c.mimeType.lower() == wanted]
        if not main:
            raise SdpError(f"the offer has no {wanted} for its {kind} track; "
                           f"this room uses {wanted}")
        main = main[:1]
        rtx = [c for c in codecs if _is_rtx(c) and c.parameters.get("apt") == main[0].payloadType]
        return main + rtx[:1]

    def _hook_receiver(self, receiver: RTCRtpReceiver, track: PublishedTrack,
                       codecs: list[RTCRtpCodecParameters]) -> None:
        main = codecs[0]
        rtx_pt = codecs[1].payloadType if len(codecs) > 1 else None

        def send_pli(ssrc: int) -> None:
            spawn(receiver._send_rtcp_pli(ssrc))

        def send_nack(ssrc: int, lost: list[int]) -> None:
            spawn(receiver._send_rtcp_nack(ssrc, lost))

        source = SourceTrack(track.track_id, track.kind, main.mimeType, main.clockRate,
                             send_pli, send_nack, self._pli_throttle_s)
        self.sources[track.track_id] = source
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
                source.on_packet(packet.ssrc, packet.sequence_number, packet.timestamp,
                                 packet.marker, packet.payload, packet.padding_size,
                                 ext.audio_level, ext.abs_send_time)
            elif pt == rtx_pt and len(packet.payload) > 2 and source.ssrc is not None:
                (seq,) = struct.unpack_from("!H", packet.payload)
                source.on_packet(source.ssrc, seq, packet.timestamp, packet.marker,
                                 packet.payload[2:], 0, ext.audio_level, ext.abs_send_time)
            await handle_rtp(packet, arrival_time_ms)

        async def on_rtcp(packet: Any) -> None:
            if isinstance(packet, RtcpSrPacket):
                source.on_sender_report(packet.sender_info.ntp_timestamp,
                                        packet.sender_info.rtp_timestamp)
            await handle_rtcp(packet)

        receiver._handle_rtp_packet = on_rtp  # type: ignore[method-assign]
        receiver._handle_rtcp_packet = on_rtcp  # type: ignore[method-assign]

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for source in self.sources.values():
            source.close()
        await self.pc.close()


@dataclass
class SubscriptionSlot:
    """One m-line of a subscribe connection."""

    transceiver: Any
    down: DownTrack
    track_id: str | None = None
    meta: dict[str, Any] | None = None
    source: SourceTrack | None = None


OfferSender = Callable[[str, list[dict[str, Any]], int], Awaitable[None]]


class SubscriberPeer(PacketSink):
    """A client's subscribe connection: we offer (and re-offer) send-only m-lines."""

    ANSWER_TIMEOUT_S = 15.0

    def __init__(self, policy: IcePolicy, video_codec: str, send_offer: OfferSender) -> None:
        self._policy = policy
        self._video_mime = "video/" + video_codec.lower()
        self._send_offer = send_offer
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
    def subscribe(self, source: SourceTrack, meta: dict[str, Any]) -> None:
        if self.closed or any(s.track_id == source.track_id for s in self.slots):
            return
        slot = next((s for s in self.slots if s.track_id is None
                     and s.transceiver.kind == source.kind
                     and s.transceiver.currentDirection == "inactive"), None)
        if slot is None:
            transceiver = self.pc.addTransceiver(source.kind, direction="sendonly")
            self._pin_codec(transceiver, source)
            slot = SubscriptionSlot(transceiver, DownTrack(source.kind,
                                                           transceiver.sender._ssrc, self))
            self._hook_sender(slot)
            self.slots.append(slot)
        else:
            slot.transceiver.direction = "sendonly"
        slot.track_id = source.track_id
        slot.meta = meta
        slot.source = source
        sender = slot.transceiver.sender
        sender._stream_id = meta.get("participant_id", sender._stream_id)
        sender._track_id = source.track_id
        slot.down.active = False
        slot.down.attach(source)
        self.request_negotiation()

    def unsubscribe(self, track_id: str) -> None:
        for slot in self.slots:
            if slot.track_id == track_id:
                slot.down.active = False
                slot.down.detach()
                slot.track_id = None
                slot.meta = None
                slot.source = None
                slot.transceiver.direction = "inactive"
                self.request_negotiation()

    def _pin_codec(self, transceiver: Any, source: SourceTrack) -> None:
        caps = RTCRtpSender.getCapabilities(source.kind).codecs
        wanted = source.mime_type.lower()
        chosen = [c for c in caps if c.mimeType.lower() == wanted]
        if not chosen:
            raise ValueError(f"no {wanted} codec to offer")
        transceiver.setCodecPreferences(chosen[:1])

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
            if (slot.source is not None and not down.active and down.payload_type
                    and slot.transceiver.currentDirection in ("sendonly", "sendrecv")
                    and self._dtls is not None and self._dtls.state == "connected"):
                down.active = True
                if slot.source.is_video:
                    slot.source.request_keyframe()

    # ---- aiortc sender replacement ---------------------------------------------------------
    def _hook_sender(self, slot: SubscriptionSlot) -> None:
        sender = slot.transceiver.sender
        down = slot.down

        async def send(parameters: RTCRtpSendParameters) -> None:
            self._dtls = sender.transport
            sender.transport._register_rtp_sender(sender, parameters)
            codec = parameters.codecs[0]
            ids = rtp.ExtensionIds(
                audio_level=next((e.id for e in parameters.headerExtensions
                                  if e.uri == rtp.URI_AUDIO_LEVEL), 0),
                abs_send_time=next((e.id for e in parameters.headerExtensions
                                    if e.uri == rtp.URI_ABS_SEND_TIME), 0),
            )
            down.configure(codec.payloadType or 0, codec.clockRate, ids,
                           parameters.rtcp.cname or "")
            self._activate_ready()

        async def stop() -> None:
            with contextlib.suppress(Exception):
                sender.transport._unregister_rtp_sender(sender)

        async def handle_rtcp(packet: Any) -> None:
            if isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI,
                                                                      RTCP_PSFB_FIR):
                down.on_keyframe_request()
            elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
                down.on_nack(packet.lost)

        sender.send = send
        sender.stop = stop
        sender._handle_rtcp_packet = handle_rtcp

    # ---- PacketSink: the fast send path ------------------------------------------------------
    def send_rtp(self, data: bytes) -> None:
        dtls = self._dtls
        if dtls is None or dtls._tx_srtp is None:
            return
        self._sendto(dtls._tx_srtp.protect(data))

    def send_rtcp(self, data: bytes) -> None:
        dtls = self._dtls
        if dtls is None or dtls._tx_srtp is None:
            return
        self._sendto(dtls._tx_srtp.protect_rtcp(data))

    def _sendto(self, data: bytes) -> None:
        pair = self._dtls.transport._connection._nominated.get(1)
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
        if self._negotiation is not None:
            self._negotiation.cancel()
        await self.pc.close()
