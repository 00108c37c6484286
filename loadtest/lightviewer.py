"""The light viewer: a receive-only load-test subscriber without aiortc's per-packet machinery.

A full viewer (``sdk.participant.Participant``) runs an ``RTCPeerConnection`` with an
``RTCRtpReceiver`` per m-line: per packet, a queue hand-off from aioice to the DTLS transport's
reader task, header-extension parsing, receiver statistics, NACK and REMB generators and their
coroutines, and RTCP tasks per receiver. On a 2-core machine that is what ran out first
(docs in bench/README.md, "huizhen loadtest"). The light viewer keeps what the server sees of
a real viewer and nothing else:

* signalling: the same v1 protocol (``join``, answering every ``subscriber_offer``, ``leave``)
  over a WebSocket of the worker's shared ``aiohttp`` session; the bytes of every message it
  receives are counted (``signal_bytes``);
* ICE: aiortc's ``RTCIceGatherer`` / ``RTCIceTransport`` (aioice: connectivity checks and
  consent freshness, on the addresses ``media/ice.py`` allows; no STUN/TURN server);
* DTLS: aiortc's ``RTCDtlsTransport`` for the handshake only (certificate checked against the
  offer's fingerprint; one certificate per worker process), then its SRTP sessions;
* media: once DTLS is up, asyncio no longer watches the nominated pair's socket: one
  ``epoll`` per worker process (``LightHub``) holds every light viewer's socket, and one timer
  (every ``TICK_S``) reads whatever is waiting in those that are readable (``drain``, with the
  kernel's receive times), so a viewer costs no wake-up, task or coroutine per packet.
  SRTP/SRTCP datagrams are unprotected and their RTP header read in one plain function
  (``_media``: SSRC → m-line from the offer's ``a=ssrc`` lines, RTX unwrapped: the original
  sequence number is the payload's first two bytes) into the shared ``RtpCounter``
  (loadtest/rtpcount.py: frames by marker bit, loss from sequence numbers, missing packets,
  jitter); sender reports are noted for the LSR/DLSR of the receiver reports. The rest (STUN
  consent checks, DTLS records) goes to aioice's protocol and aiortc's DTLS transport as
  before;
* RTCP: the same timer sends, for every light viewer, a receiver report (loss, highest
  sequence number, jitter, LSR/DLSR) every ``RR_INTERVAL_S`` and a generic NACK for new gaps
  (each missing packet NACKed up to ``NACK_TRIES`` times, ``NACK_RETRY_TICKS`` ticks apart),
  SRTCP-protected and written to the nominated pair's socket. No REMB: the server's downlink
  estimate is loss-based and a REMB only caps simulcast layers (media/bandwidth.py), and no
  PLI: the server starts every new subscriber at a keyframe itself.

The answer accepts the offered codec and its RTX (so retransmissions come as RFC 4588 RTX, as
to a browser), with ``nack`` feedback and no header extensions.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import secrets
import select
import struct
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import pylibsrtp
from aioice.ice import StunProtocol
from aiortc import sdp as aiosdp
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsParameters, RTCDtlsTransport
from aiortc.rtcicetransport import RTCIceGatherer, RTCIceTransport
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters, RTCRtpParameters
from aiortc.rtp import RTCP_RTPFB_NACK, RtcpReceiverInfo, RtcpRrPacket, RtcpRtpfbPacket

from loadtest.rtpcount import RtpCounter
from media import rxstamps
from media.background import spawn
from media.ice import IcePolicy
from sdk.replies import JoinRefused, Replies, RequestFailed

log = logging.getLogger("huizhen.loadtest")

TICK_S = 0.01  # the shared timer: sockets read, RTCP sent
RR_INTERVAL_S = 1.0
NACK_TRIES = 3
NACK_RETRY_TICKS = 15  # a packet still missing is NACKed again this many ticks later
READ_BATCH = 256  # datagrams read from one socket per tick at most
_RTP = struct.Struct("!HII")  # sequence number, timestamp, SSRC (after the first two bytes)


@dataclass
class _Stream:
    """One media SSRC the server sends on an m-line."""

    mid: str
    ssrc: int
    counter: RtpCounter


class LightHub:
    """What the light viewers of one worker process share: the HTTP session their WebSockets
    use, one DTLS certificate, and the timer that reads their sockets (one ``epoll`` of all of
    them, polled without waiting) and sends their RTCP."""

    def __init__(self, ice: IcePolicy) -> None:
        self.ice = ice
        self.certificate = RTCCertificate.generateCertificate()
        self.viewers: set[LightViewer] = set()  # connected: their RTCP is due on the timer
        self.nacking: set[LightViewer] = set()  # with missing packets to NACK
        self._http: aiohttp.ClientSession | None = None
        self._timer: asyncio.Task[None] | None = None
        self._ticks = 0
        self._epoll = select.epoll()
        self._readers: dict[int, LightViewer] = {}  # socket fd -> its viewer

    def watch(self, fd: int, viewer: LightViewer) -> None:
        self._readers[fd] = viewer
        self._epoll.register(fd, select.EPOLLIN)

    def unwatch(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None:
            with contextlib.suppress(OSError, ValueError):  # closed already: epoll forgot it
                self._epoll.unregister(fd)

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    def add(self, viewer: LightViewer) -> None:
        self.viewers.add(viewer)
        if self._timer is None:
            self._timer = asyncio.ensure_future(self._run())

    def remove(self, viewer: LightViewer) -> None:
        self.viewers.discard(viewer)
        self.nacking.discard(viewer)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self.tick(time.monotonic())
            except Exception:  # one bad viewer must not end everyone's RTCP
                log.exception("light viewers' RTCP tick failed")

    def tick(self, now: float) -> None:
        for fd, _ in self._epoll.poll(0):
            viewer = self._readers.get(fd)
            if viewer is not None:
                viewer.drain()
        self._ticks += 1
        retry = self._ticks % NACK_RETRY_TICKS == 0
        for viewer in list(self.nacking):
            if not viewer.feedback(now, False, retry):
                self.nacking.discard(viewer)
        for viewer in list(self.viewers):
            if viewer.next_rr <= now:
                viewer.feedback(now, True, False)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._epoll.close()
        if self._http is not None:
            await self._http.close()
            self._http = None


class LightViewer:
    """One receive-only viewer (see the module's docstring); the worker reads ``rtp`` (m-line
    id -> RtpCounter), ``closed``, ``signal_bytes`` and ``media_state`` like a Participant's."""

    def __init__(self, hub: LightHub, server_url: str, room_id: str, token: str) -> None:
        self.hub = hub
        self.server_url = server_url.rstrip("/")
        self.room_id = room_id
        self.token = token
        self.device = secrets.token_urlsafe(12)
        self.joined: dict[str, Any] = {}
        self.errors: list[str] = []
        self.rtp: dict[str, RtpCounter] = {}
        self._replies = Replies()
        self.closed = self._replies.closed
        self.media_state = "new"  # new, connecting, connected, failed, closed
        self.ssrc = random.randint(1, 0xFFFFFFFF)  # ours, as RTCP sender
        self.cname = secrets.token_hex(8)
        self.next_rr = 0.0
        self.rr_sent = 0
        self.nacks_sent = 0  # sequence numbers NACKed (each try counted)
        self.srtp_errors = 0
        self._streams: dict[int, _Stream] = {}
        self._rtx: dict[int, _Stream] = {}  # RTX SSRC -> the stream it repairs
        self._sr: dict[int, tuple[int, float]] = {}  # media SSRC -> (LSR, when received)
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._answers = 0  # the version of our SDP answer
        self._gatherer: RTCIceGatherer | None = None
        self._ice: RTCIceTransport | None = None
        self._dtls: RTCDtlsTransport | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._rx: Any = None  # pylibsrtp sessions, once DTLS is up
        self._tx: Any = None
        self._connection: Any = None  # the aioice Connection
        self._to_aiortc: Any = None  # its original data_received
        self._sock: Any = None  # the nominated pair's socket, its protocol and transport
        self._protocol: Any = None
        self._transport: Any = None
        self._fd = -1

    # ---- signalling ------------------------------------------------------------------------
    async def join(self, timeout: float = 10) -> dict[str, Any]:
        url = self.server_url.replace("http", "ws", 1) + f"/ws/{self.room_id}"
        self._ws = await self.hub.http.ws_connect(url, heartbeat=None, autoping=True)
        self._reader = asyncio.ensure_future(self._read())
        try:
            reply = await self._request({"type": "join", "v": 1, "token": self.token,
                                         "device": self.device}, timeout)
        except RequestFailed as exc:
            await self.close()
            raise JoinRefused(exc.code, exc.message) from exc
        self.joined = reply
        return reply

    async def _request(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        return await self._replies.request(self._send, message, timeout)

    @property
    def signal_bytes(self) -> int:
        """WebSocket text the server sent this viewer."""
        return self._replies.signal_bytes

    @property
    def signal_messages(self) -> dict[str, int]:
        """How many messages of each type the server sent."""
        return dict(self._replies.signal_messages)

    async def _send(self, message: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send_str(json.dumps(message))

    async def _read(self) -> None:
        assert self._ws is not None
        await self._replies.read(self._ws, self._on_message)

    async def _on_message(self, message: dict[str, Any]) -> None:
        if message.get("type") != "subscriber_offer":
            return
        try:
            await self._answer(message)
        except Exception as exc:  # the server times the answer out and goes on
            log.exception("light viewer: cannot answer the offer")
            self.errors.append(f"{type(exc).__name__}: {exc}")

    # ---- negotiation -----------------------------------------------------------------------
    async def _answer(self, offer: dict[str, Any]) -> None:
        desc = aiosdp.SessionDescription.parse(str(offer["sdp"]))
        first = self._gatherer is None
        if self._gatherer is None:
            self._gatherer = RTCIceGatherer(iceServers=self.hub.ice.configuration().iceServers)
            await self._gatherer.gather()
            self._ice = RTCIceTransport(self._gatherer)
            self._dtls = RTCDtlsTransport(self._ice, [self.hub.certificate])
            self._dtls._set_role("client")  # our answer says a=setup:active
        self._learn_streams(desc, list(offer.get("tracks", [])))
        await self._send({"type": "subscriber_answer", "seq": offer["seq"],
                          "sdp": self._answer_sdp(desc)})
        if first:
            media = next(m for m in desc.media if m.kind in ("audio", "video"))
            self._connecting = asyncio.ensure_future(self._connect(media))

    def _learn_streams(self, desc: aiosdp.SessionDescription, tracks: list[Any]) -> None:
        """Which SSRC is which m-line's media (or its RTX), from the offer's ssrc lines."""
        listed = {str(t.get("mid")) for t in tracks}
        for media in desc.media:
            mid = str(media.rtp.muxId)
            counter = self.rtp.get(mid)
            if counter is None and mid in listed:
                counter = self.rtp[mid] = RtpCounter(
                    media.kind, track_gaps=True, clock_rate=90000 if media.kind == "video"
                    else 48000)
            if counter is None:
                continue
            rtx_of = {int(g.items[1]): int(g.items[0]) for g in media.ssrc_group
                      if g.semantic == "FID" and len(g.items) == 2}
            for info in media.ssrc:
                if info.ssrc not in rtx_of:
                    self._streams[info.ssrc] = _Stream(mid, info.ssrc, counter)
            for rtx_ssrc, main in rtx_of.items():
                if main in self._streams:
                    self._rtx[rtx_ssrc] = self._streams[main]

    def _answer_sdp(self, offer: aiosdp.SessionDescription) -> str:
        assert self._gatherer is not None and self._dtls is not None
        answer = aiosdp.SessionDescription()
        self._answers += 1
        answer.origin = f"- {self.ssrc} {self._answers} IN IP4 0.0.0.0"
        answer.type = "answer"
        ice = self._gatherer.getLocalParameters()
        candidates = self._gatherer.getLocalCandidates()
        dtls = RTCDtlsParameters(fingerprints=self._dtls.getLocalParameters().fingerprints,
                                 role="client")
        mids: list[int | str] = []
        for m in offer.media:
            if m.kind not in ("audio", "video"):
                raise ValueError(f"a light viewer receives audio and video only, not {m.kind}")
            codecs = _accepted_codecs(m.kind, m.rtp.codecs)
            media = aiosdp.MediaDescription(kind=m.kind, port=9, profile=m.profile,
                                            fmt=[c.payloadType for c in codecs])
            media.direction = "recvonly" if m.direction in ("sendonly", "sendrecv") \
                else "inactive"
            media.rtp = RTCRtpParameters(codecs=codecs, muxId=m.rtp.muxId)
            media.rtcp_host, media.rtcp_port, media.rtcp_mux = "0.0.0.0", 9, True
            media.ssrc = [aiosdp.SsrcDescription(ssrc=self.ssrc, cname=self.cname)]
            media.ice, media.dtls = ice, dtls
            media.ice_candidates, media.ice_candidates_complete = candidates, True
            if candidates:
                media.host, media.port = candidates[0].ip, candidates[0].port
            mids.append(str(m.rtp.muxId))
            answer.media.append(media)
        answer.group = [aiosdp.GroupDescription(semantic="BUNDLE", items=mids)]
        return str(answer)

    async def _connect(self, media: aiosdp.MediaDescription) -> None:
        """ICE, then DTLS; then take the datagrams over from aiortc."""
        assert self._ice is not None and self._dtls is not None and media.ice is not None
        self.media_state = "connecting"
        for candidate in media.ice_candidates:
            await self._ice.addRemoteCandidate(candidate)
        await self._ice.addRemoteCandidate(None)
        await self._ice.start(media.ice)
        if self._ice.state != "completed":
            self.media_state = "failed"
            return
        assert media.dtls is not None
        await self._dtls.start(media.dtls)
        if self._dtls.state != "connected":
            self.media_state = "failed"
            return
        self._rx, self._tx = self._dtls._rx_srtp, self._dtls._tx_srtp
        self._connection = self._ice._connection
        self._to_aiortc = self._connection.data_received
        self._connection.data_received = self._datagram
        self._read_socket()
        self._ice.on("statechange", self._ice_state)
        self.media_state = "connected"
        self.next_rr = time.monotonic() + random.random() * RR_INTERVAL_S
        self.hub.add(self)

    def _ice_state(self) -> None:
        assert self._ice is not None
        if self._ice.state in ("failed", "closed") and self.media_state == "connected":
            self.media_state = "closed"  # e.g. consent expired (RFC 7675)
            log.warning("light viewer: ICE %s", self._ice.state)
            self.hub.remove(self)
            self.hub.unwatch(self._fd)

    # ---- the media path: one function per datagram ----------------------------------------
    def _read_socket(self) -> None:
        """From now on the hub's timer reads the nominated pair's UDP socket (asyncio no longer
        watches it): SRTP goes straight to ``_media``, with the kernel's receive time; the rest
        (STUN consent checks, DTLS) to aioice's protocol as asyncio would have passed it.
        (Another socket would keep aioice's path, ending in ``_datagram``.)"""
        pair = self._connection._nominated.get(1)
        protocol = getattr(pair, "protocol", None)
        transport = getattr(protocol, "transport", None)
        loop = getattr(transport, "_loop", None)
        sock = getattr(transport, "_sock", None)
        if type(protocol) is not StunProtocol or sock is None or not hasattr(loop, "_add_reader"):
            return
        assert loop is not None and transport is not None
        rxstamps.enable(sock)
        self._sock, self._protocol, self._transport = sock, protocol, transport
        self._fd = sock.fileno()
        loop._remove_reader(self._fd)
        self.hub.watch(self._fd, self)

    def drain(self) -> None:
        """Every datagram waiting in the socket (the hub's timer: its epoll said so)."""
        sock, protocol, transport = self._sock, self._protocol, self._transport
        max_size = transport.max_size
        for _ in range(READ_BATCH):
            if transport._conn_lost:
                return
            try:
                data, addr, stamp = rxstamps.receive(sock, max_size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                protocol.error_received(exc)
                return
            if len(data) >= 12 and 127 < data[0] < 192:
                self._media(data, stamp)
            else:
                protocol.datagram_received(data, addr)

    def _datagram(self, data: bytes, component: int) -> None:
        if len(data) < 12 or not 127 < data[0] < 192:
            self._to_aiortc(data, component)  # DTLS records: aiortc's DTLS transport
            return
        self._media(data, None)

    def _media(self, data: bytes, arrival: float | None) -> None:
        """One SRTP/SRTCP datagram; ``arrival``: the kernel's receive time (``time.time()``
        seconds), None if not known (then: now)."""
        try:
            if 192 <= data[1] <= 223:
                self._on_rtcp(self._rx.unprotect_rtcp(data))
            else:
                self._on_rtp(self._rx.unprotect(data),
                             time.time() if arrival is None else arrival)
        except (pylibsrtp.Error, struct.error, IndexError):
            self.srtp_errors += 1

    def _on_rtp(self, data: bytes, arrival: float | None) -> None:
        first = data[0]
        seq, timestamp, ssrc = _RTP.unpack_from(data, 2)
        start = 12 + 4 * (first & 0x0F)
        if first & 0x10:  # header extension
            start += 4 + 4 * struct.unpack_from("!H", data, start + 2)[0]
        size = len(data) - start - (data[-1] if first & 0x20 else 0)
        stream = self._streams.get(ssrc)
        if stream is None:
            stream = self._rtx.get(ssrc)
            if stream is None or size < 2:
                return
            seq = struct.unpack_from("!H", data, start)[0]  # RFC 4588: the original number
            size -= 2
            arrival = None  # a repair says nothing about the path's jitter
        counter = stream.counter
        counter.count(seq, max(size, 0), bool(data[1] & 0x80), timestamp, arrival)
        if counter.missing:
            self.hub.nacking.add(self)

    def _on_rtcp(self, data: bytes) -> None:
        pos, now = 0, time.monotonic()
        while pos + 8 <= len(data):
            length = (struct.unpack_from("!H", data, pos + 2)[0] + 1) * 4
            if data[pos + 1] == 200 and pos + 20 <= len(data):  # SR: note its NTP time
                ssrc, ntp_s, ntp_f = struct.unpack_from("!III", data, pos + 4)
                self._sr[ssrc] = (((ntp_s & 0xFFFF) << 16) | (ntp_f >> 16), now)
            pos += length

    # ---- RTCP (the hub's timer) ------------------------------------------------------------
    def feedback(self, now: float, receiver_report: bool, retry: bool) -> bool:
        """Send what is due: a receiver report, NACKs for new gaps (and, with ``retry``, for
        gaps still open). True while packets are still missing."""
        if self._tx is None:
            return False
        parts: list[bytes] = []
        if receiver_report:
            self.next_rr = now + RR_INTERVAL_S
            reports = []
            for stream in self._streams.values():
                counter = stream.counter
                if not counter.packets:
                    continue
                fraction, cumulative, highest = counter.report()
                lsr, at = self._sr.get(stream.ssrc, (0, now))
                reports.append(RtcpReceiverInfo(
                    ssrc=stream.ssrc, fraction_lost=fraction,
                    packets_lost=min(cumulative, 0x7FFFFF),
                    highest_sequence=highest & 0xFFFFFFFF,
                    jitter=min(int(counter.jitter), 0xFFFFFFFF),
                    lsr=lsr, dlsr=max(0, int((now - at) * 65536)) if lsr else 0))
            parts.append(bytes(RtcpRrPacket(ssrc=self.ssrc, reports=reports[:31])))
            self.rr_sent += 1
        pending = False
        for stream in self._streams.values():
            missing = stream.counter.missing
            if not missing:
                continue
            lost = []
            for ext, tries in list(missing.items()):
                if tries >= NACK_TRIES:
                    del missing[ext]
                elif tries == 0 or retry:
                    missing[ext] = tries + 1
                    lost.append(ext & 0xFFFF)
            if missing:
                pending = True
            if lost:
                parts.append(bytes(RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=self.ssrc,
                                                   media_ssrc=stream.ssrc, lost=lost)))
                self.nacks_sent += len(lost)
        if parts:
            self._send_rtcp(b"".join(parts))
        return pending

    def _send_rtcp(self, data: bytes) -> None:
        pair = self._connection._nominated.get(1) if self._connection is not None else None
        if pair is None:
            return
        packet = self._tx.protect_rtcp(data)
        if type(pair.protocol) is StunProtocol and pair.protocol.transport is not None:
            pair.protocol.transport.sendto(packet, pair.remote_addr)
        else:  # a relayed pair wraps the datagram
            spawn(pair.protocol.send_data(packet, pair.remote_addr))

    # ---- leaving ---------------------------------------------------------------------------
    async def leave(self) -> None:
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(Exception):
                await self._send({"type": "leave"})
                await asyncio.wait_for(self.closed.wait(), 5)
        await self.close()

    async def close(self) -> None:
        self.hub.remove(self)
        self.hub.unwatch(self._fd)
        self.media_state = "closed"
        if self._connecting is not None:
            self._connecting.cancel()
        self._tx = None
        for stop in (self._dtls, self._ice):
            if stop is not None:
                with contextlib.suppress(Exception):
                    await stop.stop()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._reader, 5)


def _accepted_codecs(kind: str, offered: list[RTCRtpCodecParameters]
                     ) -> list[RTCRtpCodecParameters]:
    """The offer's first codec (the server offers the room's codec only) and its RTX, with
    NACK feedback for video."""
    main = next((c for c in offered if not c.mimeType.lower().endswith("/rtx")), None)
    if main is None:
        raise ValueError(f"the offer has no {kind} codec")
    feedback = [RTCRtcpFeedback(type="nack")] if kind == "video" else []
    chosen = [dataclasses.replace(main, rtcpFeedback=feedback)]
    chosen += [dataclasses.replace(c, rtcpFeedback=[]) for c in offered
               if c.mimeType.lower().endswith("/rtx")
               and str(c.parameters.get("apt")) == str(main.payloadType)][:1]
    return chosen
