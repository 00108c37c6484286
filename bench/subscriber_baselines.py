"""bench/subscriber.py's clients of the servers measured beside Huizhen: the aiortc MediaRelay
baseline (bench/relay_baseline.py: one HTTP POST of the SDP offer) and Janus's VideoRoom (its
HTTP API, events by long poll).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import _paths  # noqa: F401  (first: the project's packages before bench/'s scripts)
import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from subscriber_media import CameraPatternTrack, vp8_preferences
from subscriber_timing import FrameLog, count_sent_frames, install_tap


async def wait_connected(pc: RTCPeerConnection, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while pc.connectionState != "connected":
        if pc.connectionState in ("failed", "closed") or time.monotonic() > deadline:
            raise RuntimeError(f"peer connection {pc.connectionState} instead of connected")
        await asyncio.sleep(0.05)



# ---- the MediaRelay baseline -----------------------------------------------------------------
async def post_offer(url: str, pc: RTCPeerConnection) -> None:
    await pc.setLocalDescription(await pc.createOffer())
    offer = {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}
    async with aiohttp.ClientSession() as http, http.post(url, json=offer) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{url}: HTTP {resp.status}: {await resp.text()}")
        answer = await resp.json()
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))


async def relay_client(args: argparse.Namespace, frames: FrameLog
                       ) -> Callable[[], Awaitable[None]]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    base = args.server.rstrip("/")
    if args.role == "publish":
        transceiver = pc.addTransceiver(CameraPatternTrack(args.tag), direction="sendonly")
        transceiver.setCodecPreferences(vp8_preferences())
        count_sent_frames(transceiver.sender, frames)
        await post_offer(base + "/publish", pc)
        await wait_connected(pc, args.ready_timeout)
    else:
        transceiver = pc.addTransceiver("video", direction="recvonly")
        transceiver.setCodecPreferences(vp8_preferences())
        install_tap(transceiver.receiver, frames)
        await post_offer(base + "/subscribe", pc)
    return pc.close


# ---- Janus VideoRoom (the C SFU measured beside ours) ---------------------------------------
JANUS_ROOM = 1234  # configured by fanout_targets.JanusTarget


class JanusSession:
    """Janus's HTTP API: one session with one VideoRoom handle; events by long poll."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.http = aiohttp.ClientSession()
        self.session = 0
        self.handle = 0
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._poll: asyncio.Task[None] | None = None

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "transaction": secrets_token()}
        async with self.http.post(self.base + path, json=body) as resp:
            data: dict[str, Any] = await resp.json(content_type=None)
        if data.get("janus") == "error" or "error" in data.get("plugindata", {}).get("data", {}):
            raise RuntimeError(f"Janus refused {body}: {data}")
        return data

    async def open(self) -> None:
        self.session = (await self._post("", {"janus": "create"}))["data"]["id"]
        self._poll = asyncio.ensure_future(self._long_poll())
        self.handle = (await self._post(f"/{self.session}", {
            "janus": "attach", "plugin": "janus.plugin.videoroom"}))["data"]["id"]

    async def _long_poll(self) -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with self.http.get(f"{self.base}/{self.session}?maxev=10") as resp:
                    data = await resp.json(content_type=None)
                for event in data if isinstance(data, list) else [data]:
                    await self.events.put(event)

    async def message(self, body: dict[str, Any], jsep: dict[str, Any] | None = None
                      ) -> dict[str, Any]:
        """A VideoRoom request; for an asynchronous one, the event that answers it."""
        request: dict[str, Any] = {"janus": "message", "body": body}
        if jsep is not None:
            request["jsep"] = jsep
        reply = await self._post(f"/{self.session}/{self.handle}", request)
        if reply.get("janus") != "ack":
            return reply
        while True:
            event = await self.events.get()
            if event.get("janus") == "event" and event.get("sender") == self.handle:
                data = event.get("plugindata", {}).get("data", {})
                if "error" in data:
                    raise RuntimeError(f"Janus refused {body}: {data}")
                return event

    async def end_of_candidates(self) -> None:
        """Our SDP carries every candidate (aiortc does not trickle): say there are no more."""
        await self._post(f"/{self.session}/{self.handle}",
                         {"janus": "trickle", "candidate": {"completed": True}})

    async def close(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
        with contextlib.suppress(Exception):
            await self._post(f"/{self.session}", {"janus": "destroy"})
        await self.http.close()


def secrets_token() -> str:
    return f"{random.getrandbits(64):016x}"


def jsep_of(pc: RTCPeerConnection) -> dict[str, str]:
    return {"type": pc.localDescription.type, "sdp": pc.localDescription.sdp}


async def janus_client(args: argparse.Namespace, frames: FrameLog
                       ) -> Callable[[], Awaitable[None]]:
    janus = JanusSession(args.server)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))

    async def close() -> None:
        await pc.close()
        await janus.close()

    try:
        await janus.open()
        if args.role == "publish":
            transceiver = pc.addTransceiver(CameraPatternTrack(args.tag), direction="sendonly")
            transceiver.setCodecPreferences(vp8_preferences())
            count_sent_frames(transceiver.sender, frames)
            await pc.setLocalDescription(await pc.createOffer())
            event = await janus.message({"request": "joinandconfigure", "room": JANUS_ROOM,
                                         "ptype": "publisher", "display": "bench"},
                                        jsep_of(pc))
            await janus.end_of_candidates()
            answer = event["jsep"]
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
            await wait_connected(pc, args.ready_timeout)
        else:
            listed = await janus.message({"request": "listparticipants", "room": JANUS_ROOM})
            feeds = [p["id"] for p in listed["plugindata"]["data"]["participants"]
                     if p.get("publisher")]
            if not feeds:
                raise RuntimeError("no publisher in the Janus room")

            event = await janus.message({"request": "join", "room": JANUS_ROOM,
                                         "ptype": "subscriber",
                                         "streams": [{"feed": feeds[0]}]})
            offer = event["jsep"]
            await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], offer["type"]))
            for transceiver in pc.getTransceivers():
                if transceiver.kind == "video":
                    install_tap(transceiver.receiver, frames)
            await pc.setLocalDescription(await pc.createAnswer())
            await janus.message({"request": "start", "room": JANUS_ROOM}, jsep_of(pc))
            await janus.end_of_candidates()
    except BaseException:
        await close()
        raise
    return close
