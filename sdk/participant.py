"""A headless participant (aiortc): join with a token, publish, subscribe, count and check frames.

Used by the tests, the benchmarks and operators (``huizhen join``). It speaks the same v1
protocol as the browser client (docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from media.ice import IcePolicy
from media.rxstamps import ArrivalStamps
from sdk.replies import JoinRefused, Replies, RequestFailed
from sdk.testmedia import PatternVideoTrack, ToneAudioTrack, frame_tag

__all__ = ["JoinRefused", "Participant", "RemoteTrackStats", "RequestFailed"]

log = logging.getLogger("huizhen.sdk")

REJOIN_S = 30.0  # how long it keeps trying to join again after a restart (as the web client)


@dataclass
class RemoteTrackStats:
    """What this participant received of one remote track."""

    participant_id: str
    track_id: str
    kind: str
    subscribed_at: float
    frames: int = 0
    payload_bytes: int = 0  # RTP payload received (counted without decoding only)
    first_frame_at: float | None = None
    last_frame_at: float | None = None
    tags: Counter[int | None] = field(default_factory=Counter)
    last_tag: int | None = None
    distinct_frames: int = 0
    audio_rms: float = 0.0
    max_gap_s: float = 0.0
    frame_size: tuple[int, int] | None = None  # (width, height) of the latest decoded frame
    sizes: Counter[tuple[int, int]] = field(default_factory=Counter)  # frames per size
    _last_hash: int | None = None

    @property
    def first_frame_delay(self) -> float | None:
        return None if self.first_frame_at is None else self.first_frame_at - self.subscribed_at


class Participant:
    #: hand the receivers kernel receive times (media/rxstamps.py) for their REMB
    stamp_arrivals = True

    def __init__(self, server_url: str, room_id: str, token: str,
                 ice: IcePolicy | None = None, check_every: int = 5, decode: bool = True,
                 device: str | None = None, reconnect: bool = False) -> None:
        """``decode=False`` counts frames from RTP (marker bits) instead of decoding them:
        for benchmarks that run many subscribers on one machine. ``device``: this device's id
        (a single-use invite belongs to the first device that uses it); a new one if None.
        ``reconnect``: when the node restarts (a ``reconnect`` hint, or the socket closed with
        1012), join again by itself and publish again what it published (``_rejoin``)."""
        self.server_url = server_url.rstrip("/")
        self.room_id = room_id
        self.token = token
        self.device = device or secrets.token_urlsafe(12)
        self.ice = ice or IcePolicy()
        self.check_every = check_every
        self.decode = decode
        self.events: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.joined: dict[str, Any] = {}
        self.participants: dict[str, dict[str, Any]] = {}
        self.published: dict[str, str] = {}  # mid -> track id
        self.remote: dict[str, RemoteTrackStats] = {}  # track id -> stats
        self._mid_tracks: dict[str, dict[str, Any]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._replies = Replies()
        self._publish_pcs: list[RTCPeerConnection] = []
        self._subscribe_pc: RTCPeerConnection | None = None
        self._stamps = ArrivalStamps()  # kernel receive times of what the subscriber gets
        self._drains: dict[str, asyncio.Task[None]] = {}
        self._offers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._negotiator: asyncio.Task[None] | None = None
        self.closed = self._replies.closed
        self.reconnect = reconnect
        self.reconnects = 0  # times it joined again after a restart (and published again)
        self._retry_ms: int | None = None  # from the server's ``reconnect`` hint
        self._published_specs: list[dict[str, Any]] = []  # publish()'s arguments, to redo them
        self._leaving = False
        self._rejoining: asyncio.Task[None] | None = None

    @property
    def signal_bytes(self) -> int:
        """WebSocket text the server sent (the load tester's figure)."""
        return self._replies.signal_bytes

    @property
    def signal_messages(self) -> dict[str, int]:
        """How many messages of each type the server sent."""
        return dict(self._replies.signal_messages)

    @property
    def id(self) -> str:
        return str(self.joined.get("me", {}).get("id", ""))

    # ---- connection ----------------------------------------------------------------------
    @property
    def ended(self) -> bool:
        """The connection is closed for good (not closed and being joined again)."""
        return self.closed.is_set() and (self._rejoining is None or self._rejoining.done())

    async def join(self, timeout: float = 10) -> dict[str, Any]:
        try:
            return await self._connect(timeout)
        except JoinRefused:
            await self.close()
            raise

    async def _connect(self, timeout: float) -> dict[str, Any]:
        self._session = aiohttp.ClientSession()
        ws_url = self.server_url.replace("http", "ws", 1) + f"/ws/{self.room_id}"
        self._ws = await self._session.ws_connect(ws_url, heartbeat=None, autoping=True)
        self._reader = asyncio.ensure_future(self._read())
        if self._negotiator is None:
            self._negotiator = asyncio.ensure_future(self._negotiate_loop())
        try:
            message: dict[str, Any] = {"type": "join", "v": 1, "token": self.token}
            if self.device:
                message["device"] = self.device
            reply = await self.request(message, timeout=timeout)
        except RequestFailed as exc:
            raise JoinRefused(exc.code, exc.message) from exc
        self.joined = reply
        self.participants = {p["id"]: p for p in reply["participants"]}
        return reply

    async def _rejoin(self) -> None:
        """The node is restarting: media stops, then every ``retry_ms`` of its hint (1 s
        without one) it joins again with the same token and device, for up to ``REJOIN_S``
        (``draining``, a socket closed early and connection failures mean "not yet"); then it
        publishes again what it published. Subscriptions come back by themselves: the server
        offers them."""
        await self._drop_media()
        retry_s = (self._retry_ms or 1000) / 1000
        deadline = time.monotonic() + REJOIN_S
        while not self._leaving:
            await asyncio.sleep(retry_s)
            await self._close_socket()
            counts = self._replies
            self._replies = Replies()
            self._replies.signal_bytes = counts.signal_bytes
            self._replies.signal_messages = counts.signal_messages
            self.closed = self._replies.closed
            try:
                await self._connect(timeout=5)
                break
            except (TimeoutError, JoinRefused, aiohttp.ClientError, OSError) as exc:
                code = getattr(exc, "code", type(exc).__name__)
                if (isinstance(exc, JoinRefused) and code not in ("draining", "closed")) or \
                        time.monotonic() > deadline:
                    log.warning("could not join again", extra={"error": str(code)})
                    self.errors.append({"type": "error", "code": str(code),
                                        "message": f"rejoin failed: {exc}"})
                    await self._close_socket()
                    return
        if self._leaving:
            return
        self._retry_ms = None
        for spec in self._published_specs:
            await self.publish(**spec, again=True)
        self.reconnects += 1

    async def _drop_media(self) -> None:
        """Close the peer connections (what was received stays counted in ``remote``)."""
        for task in self._drains.values():
            task.cancel()
        self._drains.clear()
        pcs = [*self._publish_pcs, self._subscribe_pc]
        self._publish_pcs, self._subscribe_pc = [], None
        self.published.clear()
        while not self._offers.empty():  # offers of the old session: answered to no one
            self._offers.get_nowait()
        for pc in pcs:
            if pc is not None:
                with contextlib.suppress(Exception):
                    await pc.close()

    def configuration(self) -> RTCConfiguration:
        """For this participant's peer connections: the STUN/TURN servers its own ``ice``
        policy names, else those the server handed it in ``joined.ice_servers`` (its own
        short-lived TURN credentials among them: docs/turn.md). aiortc uses the first STUN and
        the first TURN URL it is given."""
        if self.ice.stun_servers or self.ice.turn_servers or not self.joined.get("ice_servers"):
            return self.ice.configuration()
        servers = [RTCIceServer(urls=list(entry["urls"]), username=entry.get("username"),
                                credential=entry.get("credential"))
                   for entry in self.joined["ice_servers"]]
        return RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)

    async def request(self, message: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
        return await self._replies.request(self.send, message, timeout)

    async def send(self, message: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send_json(message)

    async def send_raw(self, data: str) -> None:
        assert self._ws is not None
        await self._ws.send_str(data)

    async def _read(self) -> None:
        ws = self._ws
        assert ws is not None
        await self._replies.read(ws, self._on_message)
        if (self.reconnect and not self._leaving and self.joined
                and (self._retry_ms is not None or ws.close_code == 1012)):
            self._rejoining = asyncio.ensure_future(self._rejoin())

    async def _on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        self.events.append(message)
        if kind == "error":
            self.errors.append(message)
        elif kind == "reconnect":
            self._retry_ms = int(message.get("retry_ms") or 1000)
        elif kind == "subscriber_offer":
            now = time.monotonic()
            for t in message["tracks"]:
                if t["track_id"] not in self.remote:
                    self.remote[t["track_id"]] = RemoteTrackStats(
                        t["participant_id"], t["track_id"], t["kind"], now)
            await self._offers.put(message)
        elif kind == "participant_joined":
            self.participants[message["participant"]["id"]] = message["participant"]
        elif kind == "participant_left":
            self.participants.pop(message["participant_id"], None)

    # ---- publishing ------------------------------------------------------------------------
    async def publish(self, audio: bool = True, video: bool = True, tag: int = 0,
                      video_track: MediaStreamTrack | None = None,
                      audio_track: MediaStreamTrack | None = None,
                      source: str = "camera", again: bool = False) -> dict[str, Any]:
        """Publish a pattern and a tone (``tag`` colours the picture), or the tracks given;
        ``again``: after a rejoin (``_rejoin``), not a new publication."""
        if not again:
            self._published_specs.append(
                {"audio": audio, "video": video, "tag": tag, "video_track": video_track,
                 "audio_track": audio_track, "source": source})
        pc = RTCPeerConnection(self.configuration())
        self._publish_pcs.append(pc)
        specs = []
        if audio:
            pc.addTransceiver(audio_track or ToneAudioTrack(440 + 110 * tag),
                              direction="sendonly")
            specs.append(("audio", "microphone"))
        if video:
            transceiver = pc.addTransceiver(video_track or PatternVideoTrack(tag),
                                            direction="sendonly")
            codec = str(self.joined.get("video_codec", "VP8")).lower()
            prefs = [c for c in RTCRtpSender.getCapabilities("video").codecs
                     if c.mimeType.lower() in (f"video/{codec}", "video/rtx")]
            transceiver.setCodecPreferences(prefs)
            specs.append(("video", source))
        await pc.setLocalDescription(await pc.createOffer())
        tracks = [{"mid": t.mid, "kind": kind, "source": src, "muted": False}
                  for t, (kind, src) in zip(pc.getTransceivers(), specs, strict=True)]
        reply = await self.request({"type": "publish", "sdp": pc.localDescription.sdp,
                                    "tracks": tracks}, timeout=20)
        await pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
        for t in reply["tracks"]:
            self.published[t["mid"]] = t["track_id"]
        return reply

    async def mute(self, track_id: str, muted: bool) -> None:
        await self.send({"type": "mute", "track_id": track_id, "muted": muted})

    # ---- subscribing -----------------------------------------------------------------------
    async def _negotiate_loop(self) -> None:
        while True:
            offer = await self._offers.get()
            try:
                await self._apply_offer(offer)
            except Exception:
                log.exception("subscriber negotiation failed")

    async def _apply_offer(self, offer: dict[str, Any]) -> None:
        if self._subscribe_pc is None:
            self._subscribe_pc = RTCPeerConnection(self.configuration())
        pc = self._subscribe_pc
        await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        # REMB from kernel receive times: a busy client must not look like a congested link
        # (the SFU would move it to a smaller simulcast layer)
        if self.stamp_arrivals:
            self._stamps.attach_connection(pc)
        self._mid_tracks = {t["mid"]: t for t in offer["tracks"]}
        await self.send({"type": "subscriber_answer", "seq": offer["seq"],
                         "sdp": pc.localDescription.sdp})
        for transceiver in pc.getTransceivers():
            mid = transceiver.mid
            if mid is not None and mid not in self._drains and mid in self._mid_tracks:
                if self.stamp_arrivals:
                    self._stamps.stamp_receiver(transceiver.receiver)
                if not self.decode:
                    self._count_rtp(mid, transceiver.receiver)
                self._drains[mid] = asyncio.ensure_future(
                    self._drain(mid, transceiver.receiver.track))

    def _count_rtp(self, mid: str, receiver: Any) -> None:
        """Count frames as they arrive (video: marker bit; audio: every packet), no decoding."""
        participant = self

        class Counter:
            def add(self, packet: Any) -> tuple[bool, None]:
                info = participant._mid_tracks.get(mid)
                stats = participant.remote.get(info["track_id"]) if info else None
                if stats is not None:
                    stats.payload_bytes += len(packet.payload)
                    if stats.kind == "audio" or packet.marker:
                        participant._count_frame(stats)
                return False, None

        receiver._RTCRtpReceiver__jitter_buffer = Counter()

    def _count_frame(self, stats: RemoteTrackStats) -> float:
        now = time.monotonic()
        if stats.last_frame_at is not None:
            stats.max_gap_s = max(stats.max_gap_s, now - stats.last_frame_at)
        if stats.first_frame_at is None:
            stats.first_frame_at = now
        stats.last_frame_at = now
        stats.frames += 1
        return now

    async def _drain(self, mid: str, track: MediaStreamTrack) -> None:
        """Read every frame of one m-line (aiortc queues are unbounded) and keep stats."""
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            info = self._mid_tracks.get(mid)
            stats = self.remote.get(info["track_id"]) if info else None
            if stats is None:
                continue
            self._count_frame(stats)
            if isinstance(frame, av.VideoFrame):
                stats.frame_size = (frame.width, frame.height)
                stats.sizes[stats.frame_size] += 1
                if stats.frames % self.check_every == 1:
                    stats.last_tag = frame_tag(frame)
                    stats.tags[stats.last_tag] += 1
                    digest = hash(bytes(frame.planes[0])[::997])
                    if digest != stats._last_hash:
                        stats.distinct_frames += 1
                        stats._last_hash = digest
            elif isinstance(frame, av.AudioFrame) and stats.frames % self.check_every == 1:
                samples = frame.to_ndarray().astype(np.float32)
                stats.audio_rms = float(np.sqrt(np.mean(samples ** 2)))

    # ---- queries -------------------------------------------------------------------------------
    def received_from(self, participant_id: str, kind: str) -> RemoteTrackStats | None:
        matches = [s for s in self.remote.values()
                   if s.participant_id == participant_id and s.kind == kind]
        return max(matches, key=lambda s: s.frames) if matches else None

    def frames_from(self, participant_id: str, kind: str) -> int:
        """Frames (video) or audio frames received from that participant so far."""
        stats = self.received_from(participant_id, kind)
        return stats.frames if stats is not None else 0

    async def wait_until(self, predicate: Any, timeout: float, interval: float = 0.05) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            await asyncio.sleep(interval)
        return bool(predicate())

    def summary(self) -> dict[str, Any]:
        return {
            "participant": self.id,
            "remote": [{"participant_id": s.participant_id, "track_id": s.track_id,
                        "kind": s.kind, "frames": s.frames,
                        "first_frame_delay_s": s.first_frame_delay,
                        "tags": dict(s.tags), "max_gap_s": round(s.max_gap_s, 3)}
                       for s in self.remote.values()],
            "errors": self.errors,
        }

    # ---- leaving -------------------------------------------------------------------------------
    async def leave(self) -> None:
        self._leaving = True
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(Exception):
                await self.send({"type": "leave"})
                await asyncio.wait_for(self.closed.wait(), 5)
        await self.close()

    async def close(self) -> None:
        """Drop everything without saying goodbye (like a closed tab)."""
        self._leaving = True
        for task in [*self._drains.values(), self._negotiator, self._rejoining]:
            if task is not None:
                task.cancel()
        for pc in [*self._publish_pcs, self._subscribe_pc]:
            if pc is not None:
                with contextlib.suppress(Exception):
                    await pc.close()
        await self._close_socket()

    async def _close_socket(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None and self._reader is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._reader, 5)
        if self._session is not None:
            await self._session.close()
