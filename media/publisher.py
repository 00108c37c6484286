"""A client's publish connection: the client offers, the SFU answers receive-only and hands
every packet to a SourceTrack (media/source.py), with aiortc's decoders bypassed.

aiortc hooks used here (aiortc is pinned to 1.16.*; tests/test_aiortc_hooks.py fails if one
stops working): ``RTCRtpReceiver._handle_rtp_packet`` / ``_handle_rtcp_packet`` are wrapped
per instance (packets go to a SourceTrack first; aiortc still keeps its receiver statistics,
NACK generation and REMB), and the receiver's jitter buffer is replaced by one that never
yields a frame, so nothing reaches a decoder. A simulcast m-line's packets are told apart by
SSRC, learnt from the rtp-stream-id header extension; its receiver's NACK generator (which
follows one sequence) is switched off and the layers NACK upstream themselves. The
``arrival_time_ms`` handed on is the kernel's receive time of the datagram (media/rxstamps.py:
the ICE connection's ``_protocols`` sockets are read with ``SO_TIMESTAMPNS``). Once SRTP is
keyed, each RTP datagram is decrypted (the DTLS transport's ``_rx_srtp``), parsed (its
``_rtp_header_extensions_map``), routed (its ``_rtp_router``) and forwarded as the socket is
read, and handed to aiortc's receiver afterwards (``_direct``). On the shared media port
(media/udpmux.py) C does the decrypting and, where it may, the forwarding (media/fastpath_rx.c);
``CLane`` keys C with the connection's SRTP session and tracks and takes what C read.

The subscribe side is media/subscriber.py (negotiation, adaptation) and media/sendpath.py (how
its packets leave).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pylibsrtp
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtcpSrPacket, RtpPacket
from pylibsrtp._binding import ffi as srtp_ffi
from pylibsrtp._binding import lib as srtp_lib

from media import rtp
from media._fastpath import ffi, lib
from media.background import spawn
from media.ice import IcePolicy
from media.impairment import Impairment
from media.rxstamps import NTP_EPOCH_OFFSET_S, ArrivalStamps, Direct
from media.sdp import SdpError, is_rtx, parse_sdp
from media.sendpath import srtp_context
from media.simulcast import SimulcastError, accept_in_answer, offered_rids
from media.source import MediaTrack, SourceTrack

log = logging.getLogger("huizhen.media")

#: aiortc's own handling of a received RTP packet (``RTCRtpReceiver._handle_rtp_packet``)
Handler = Callable[[RtpPacket, int], Awaitable[None]]


class _NullJitterBuffer:
    """Stands in for aiortc's jitter buffer on publisher receivers: no frames, so no decoding."""

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        return False, None


@dataclass
class PublishedTrack:
    mid: str
    kind: str
    track_id: str


#: libsrtp's srtp_unprotect, from pylibsrtp's binding (as media/sendpath.py's srtp_protect)
_SRTP_UNPROTECT = ffi.cast("void *", int(srtp_ffi.cast(
    "uintptr_t", srtp_ffi.addressof(srtp_lib, "srtp_unprotect"))))


class CLane:
    """A publish connection as the shared port's receive path in C (media/fastpath_rx.c) sees
    it: ``key`` hands C the connection's SRTP session (once DTLS has keyed it), header
    extension ids and tracks; C then decrypts its RTP, forwards what it may, and hands each
    packet here (``forwarded``, ``decrypted``) in arrival order."""

    def __init__(self, peer: PublisherPeer, dtls: Any) -> None:
        self._peer = peer
        self._dtls = dtls
        self._session: pylibsrtp.Session | None = None  # kept alive while C uses it
        self._sources: list[tuple[SourceTrack, Handler]] = []
        self._conns: list[Any] = []

    def key(self, conn: Any) -> None:
        """Key ``conn`` (an ``hz_conn``) if the DTLS handshake has keyed SRTP."""
        srtp = self._dtls._rx_srtp
        peer = self._peer
        if srtp is None or peer.closed:
            return
        self._session = srtp
        ids = self._dtls._rtp_header_extensions_map._HeaderExtensionsMap__ids
        conn.audio_level = ids.audio_level or 0
        conn.abs_send_time = ids.abs_send_time or 0
        self._sources = peer.c_sources[:lib.HZ_MAX_SRCS]
        for i, (source, _) in enumerate(self._sources):
            conn.srcs[i] = source.c_src
        conn.nsrcs = len(self._sources)
        conn.unprotect = _SRTP_UNPROTECT
        conn.srtp = srtp_context(srtp)
        self._conns.append(conn)

    def forwarded(self, data: bytes, stamp: float, arrived: float, src: int,
                  todo: list[tuple[int, int, int]]) -> None:
        """A packet C decrypted and forwarded: its source's bookkeeping, aiortc's after."""
        if self._peer.closed:
            return
        packet = RtpPacket.parse(data, self._dtls._rtp_header_extensions_map)  # C parsed it
        source, handle = self._sources[src]
        ext = packet.extensions
        source.on_forwarded(packet.sequence_number, packet.timestamp, packet.marker,
                            packet.payload, packet.padding_size, ext.audio_level,
                            ext.abs_send_time, arrived, todo)
        self._peer.handled_later(handle, packet, stamp)

    def decrypted(self, data: bytes, stamp: float) -> None:
        """A packet C decrypted and left to Python."""
        self._peer.receive_plain(self._dtls, data, stamp)

    def close(self) -> None:
        for conn in self._conns:
            conn.nsrcs = 0
            conn.srtp = ffi.NULL
        self._conns.clear()


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
        #: for monitoring (media/stats.py): NACKs sent to the publisher (aiortc's generator's
        #: and the layers' own), and the receivers whose statistics give the uplink's loss
        self.nacks_sent = 0
        self._receivers: list[tuple[str, RTCRtpReceiver]] = []
        #: per receiver: what forwards a packet (False: not for aiortc either) and aiortc's own
        #: handler, for the direct path (``_direct``); aiortc's handling comes after, in order,
        #: through ``_backlog`` and its task
        self._forwarders: dict[RTCRtpReceiver, tuple[Callable[[RtpPacket], bool], Handler]] = {}
        self._backlog: asyncio.Queue[tuple[Handler, RtpPacket, int]] = asyncio.Queue()
        self._backlog_task: asyncio.Task[None] | None = None
        #: the tracks C's receive path may forward (``CLane``), with aiortc's handler
        self.c_sources: list[tuple[SourceTrack, Handler]] = []
        self._lanes: list[CLane] = []

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
        self._policy.prepare(self.pc)
        await self.pc.setLocalDescription(answer)  # gathers: the ICE sockets exist from here
        self._stamps.attach_connection(self.pc, self._direct, lane=self._lane)
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
                      if is_rtx(c) and c.parameters.get("apt") == main[0].payloadType]
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
        self._receivers.append((track.kind, receiver))
        send_rtcp_nack = receiver._send_rtcp_nack

        async def counted_nack(media_ssrc: int, lost: list[int]) -> None:
            self.nacks_sent += 1
            await send_rtcp_nack(media_ssrc, lost)

        receiver._send_rtcp_nack = counted_nack  # type: ignore[method-assign]
        handle_rtp = receiver._handle_rtp_packet
        handle_rtcp = receiver._handle_rtcp_packet
        main_pt = main.payloadType

        impairment = self._impairment

        def forward(packet: RtpPacket) -> bool:
            """To the packet's SourceTrack; False if aiortc must not see it either (dropped by
            a simulated uplink, or of a simulcast stream not placed yet)."""
            pt = packet.payload_type
            ext = packet.extensions
            if impairment is not None and impairment.drops(
                    track.kind, packet.sequence_number if pt == main_pt
                    else struct.unpack_from("!H", packet.payload)[0] if len(packet.payload) > 1
                    else -1):
                return False
            if pt == main_pt:
                target = source
                if layers:
                    layer = layer_by_ssrc.get(packet.ssrc)
                    if layer is None:
                        layer = layer_by_rid.get(ext.rtp_stream_id)
                        if layer is None:
                            return False  # a stream we cannot place (yet): not forwarded
                        layer_by_ssrc[packet.ssrc] = layer
                    target = layer
                target.on_packet(packet.ssrc, packet.sequence_number, packet.timestamp,
                                 packet.marker, packet.payload, packet.padding_size,
                                 ext.audio_level, ext.abs_send_time)
            elif pt == rtx_pt and len(packet.payload) > 2 and source.ssrc is not None:
                (seq,) = struct.unpack_from("!H", packet.payload)
                source.on_packet(source.ssrc, seq, packet.timestamp, packet.marker,
                                 packet.payload[2:], 0, ext.audio_level, ext.abs_send_time)
            return True

        async def on_rtp(packet: RtpPacket, arrival_time_ms: int) -> None:
            if forward(packet):
                await handle_rtp(packet, arrival_time_ms)

        async def on_rtcp(packet: Any) -> None:
            if isinstance(packet, RtcpSrPacket):
                target = layer_by_ssrc.get(packet.ssrc, source) if layers else source
                target.on_sender_report(packet.sender_info.ntp_timestamp,
                                        packet.sender_info.rtp_timestamp)
            await handle_rtcp(packet)

        receiver._handle_rtp_packet = on_rtp  # type: ignore[method-assign]
        self._forwarders[receiver] = (forward, handle_rtp)
        if impairment is None and main_pt is not None:  # (a simulated uplink's drops: Python)
            for s in layers or [source]:
                s.receive_in_c(main_pt)
                self.c_sources.append((s, handle_rtp))
        self._stamps.stamp_receiver(receiver)  # in front: arrival_time_ms is the kernel's
        receiver._handle_rtcp_packet = on_rtcp  # type: ignore[method-assign]

    def _direct(self, dtls: Any) -> Direct:
        """The direct path of the SRTP datagrams that reach ``dtls``'s sockets: decrypted,
        parsed and forwarded as they are read (media/rxstamps.py), instead of going through
        aioice's queue and a task switch into aiortc's DTLS task first; aiortc's own handling
        (statistics, NACK generation, REMB) follows through the backlog. Until the handshake
        has keyed SRTP, datagrams take the usual way."""

        def receive(data: bytes, stamp: float) -> bool:
            srtp = dtls._rx_srtp
            if srtp is None or self.closed:
                return False
            try:
                plain = srtp.unprotect(data)
            except pylibsrtp.Error:
                return True  # dropped, as aiortc drops what fails to decrypt
            self.receive_plain(dtls, plain, stamp)
            return True

        return receive

    def _lane(self, dtls: Any) -> CLane:
        lane = CLane(self, dtls)
        self._lanes.append(lane)
        return lane

    def receive_plain(self, dtls: Any, data: bytes, stamp: float) -> None:
        """A decrypted RTP packet: parsed, routed and forwarded now, aiortc's handling later."""
        if self.closed:
            return
        try:
            packet = RtpPacket.parse(data, dtls._rtp_header_extensions_map)
        except ValueError:
            return  # dropped, as aiortc drops what fails to parse
        hooks = self._forwarders.get(dtls._rtp_router.route_rtp(packet))
        if hooks is not None and hooks[0](packet):
            self.handled_later(hooks[1], packet, stamp)

    def handled_later(self, handle: Handler, packet: RtpPacket, stamp: float) -> None:
        """aiortc's receiver gets ``packet`` (which arrived at ``stamp``) after what is
        being read now, in order."""
        self._backlog.put_nowait((handle, packet, int((stamp + NTP_EPOCH_OFFSET_S) * 1000)))
        if self._backlog_task is None:
            self._backlog_task = spawn(self._run_backlog())

    async def _run_backlog(self) -> None:
        while True:
            handle, packet, arrival_time_ms = await self._backlog.get()
            try:
                await handle(packet, arrival_time_ms)
            except Exception:  # aiortc's handling of one packet: the next ones still count
                log.warning("receiver failed on a packet", exc_info=True)

    def uplink_counts(self) -> dict[str, tuple[int, int]]:
        """Per media kind: (packets expected, packets lost) on the way from the publisher, as
        aiortc's receivers count them for their receiver reports (RFC 3550: sequence numbers
        missing on arrival, before any retransmission), since the connection started."""
        out: dict[str, tuple[int, int]] = {}
        for kind, receiver in self._receivers:
            streams = receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
            expected, lost = out.get(kind, (0, 0))
            for stream in streams.values():
                expected += stream.packets_expected
                lost += max(0, stream.packets_lost)
            out[kind] = (expected, lost)
        return out

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for lane in self._lanes:
            lane.close()
        if self._backlog_task is not None:
            self._backlog_task.cancel()
        for track in self.tracks.values():
            track.close()
        await self.pc.close()
