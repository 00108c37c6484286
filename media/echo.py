"""A short WebRTC loop for the pre-call check: the client's data channel is echoed back.

It proves what a call needs — ICE to the configured addresses, DTLS, SCTP — and lets the client
measure the round trip, before the patient joins. Each echo peer lives at most ``lifetime_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription

from media.background import spawn
from media.ice import IcePolicy
from media.sdp import SdpError, parse_sdp


class EchoBusy(Exception):
    """Too many pre-call checks at once."""


class EchoService:
    def __init__(self, policy: IcePolicy, max_peers: int = 20, lifetime_s: float = 30) -> None:
        self.policy = policy
        self.max_peers = max_peers
        self.lifetime_s = lifetime_s
        self.peers: set[RTCPeerConnection] = set()

    async def answer(self, offer_sdp: str) -> str:
        parsed = parse_sdp(offer_sdp)
        if not any(m.kind == "application" for m in parsed.media):
            raise SdpError("the offer needs a data channel")
        if len(self.peers) >= self.max_peers:
            raise EchoBusy(f"{self.max_peers} checks are running; try again in a few seconds")
        pc = RTCPeerConnection(self.policy.configuration())
        self.peers.add(pc)

        @pc.on("datachannel")
        def on_channel(channel: Any) -> None:
            @channel.on("message")
            def on_message(message: str | bytes) -> None:
                channel.send(message)

        try:
            await pc.setRemoteDescription(RTCSessionDescription(
                self.policy.clean_remote_sdp(offer_sdp), "offer"))
            answer = await pc.createAnswer()
            self.policy.prepare(pc)
            await pc.setLocalDescription(answer)
        except Exception as exc:
            await self._close(pc)
            raise SdpError(f"offer refused: {exc}") from exc
        spawn(self._expire(pc))
        return self.policy.rewrite_local_sdp(pc.localDescription.sdp)

    async def _expire(self, pc: RTCPeerConnection) -> None:
        await asyncio.sleep(self.lifetime_s)
        await self._close(pc)

    async def _close(self, pc: RTCPeerConnection) -> None:
        self.peers.discard(pc)
        with contextlib.suppress(Exception):
            await pc.close()

    async def close(self) -> None:
        for pc in list(self.peers):
            await self._close(pc)
