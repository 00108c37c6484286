"""The baseline for bench/fanout.py: a minimal fan-out server built on aiortc's ``MediaRelay``.

``MediaRelay`` relays *decoded* frames: the publisher's video is decoded once, and every
subscriber's ``RTCRtpSender`` runs its own VP8 encoder. That is what an aiortc application gets
without an SFU, and what Huizhen's RTP forwarding is compared against.

  POST /publish    body {"sdp", "type"}: the publisher's offer; answers, keeps its video track
  POST /subscribe  body {"sdp", "type"}: a recvonly offer; answers with
                   ``MediaRelay.subscribe(track)`` added (waits up to 10 s for a publisher)
  GET  /readyz     200 when listening
  GET  /stats      {"publishers": n, "subscribers": n} (open peer connections)

Listens on 127.0.0.1 only; ICE gathers on 127.0.0.1 only and no STUN/TURN server is used.
One ``MediaRelay`` serves all subscribers (its intended use); a frame-dropping consumer keeps
the source track drained while no subscriber is connected.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from typing import Any

import _paths  # noqa: F401  (first: the project's packages before bench/'s scripts)
from aiohttp import web
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError

from media.ice import IcePolicy

log = logging.getLogger("bench.relay_baseline")


class Relay:
    def __init__(self) -> None:
        self.relay = MediaRelay()
        self.source: MediaStreamTrack | None = None
        self.has_source = asyncio.Event()
        self.publishers: set[RTCPeerConnection] = set()
        self.subscribers: set[RTCPeerConnection] = set()
        self._drain: asyncio.Task[None] | None = None

    def _watch(self, pc: RTCPeerConnection, group: set[RTCPeerConnection]) -> None:
        group.add(pc)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                group.discard(pc)
                await pc.close()

    async def _drain_source(self, track: MediaStreamTrack) -> None:
        """Pull frames even with no subscriber: aiortc's track queues are unbounded."""
        proxy = self.relay.subscribe(track, buffered=False)
        with contextlib.suppress(MediaStreamError):
            while True:
                await proxy.recv()

    async def publish(self, request: web.Request) -> web.Response:
        offer = await _offer(request)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._watch(pc, self.publishers)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video" and self.source is None:
                self.source = track
                self._drain = asyncio.ensure_future(self._drain_source(track))
                self.has_source.set()

        await pc.setRemoteDescription(offer)
        await pc.setLocalDescription(await pc.createAnswer())
        return _answer(pc)

    async def subscribe(self, request: web.Request) -> web.Response:
        offer = await _offer(request)
        try:
            await asyncio.wait_for(self.has_source.wait(), 10)
        except TimeoutError:
            raise web.HTTPServiceUnavailable(text="no publisher yet") from None
        assert self.source is not None
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._watch(pc, self.subscribers)
        await pc.setRemoteDescription(offer)
        pc.addTrack(self.relay.subscribe(self.source))
        await pc.setLocalDescription(await pc.createAnswer())
        return _answer(pc)

    async def readyz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"publishers": len(self.publishers),
                                  "subscribers": len(self.subscribers)})

    async def close(self, app: web.Application) -> None:
        if self._drain is not None:
            self._drain.cancel()
        pcs = [*self.publishers, *self.subscribers]
        await asyncio.gather(*(pc.close() for pc in pcs), return_exceptions=True)


async def _offer(request: web.Request) -> RTCSessionDescription:
    try:
        body: Any = await request.json()
        return RTCSessionDescription(sdp=str(body["sdp"]), type=str(body["type"]))
    except (ValueError, KeyError, TypeError):
        raise web.HTTPBadRequest(text='expected {"sdp": …, "type": "offer"}') from None


def _answer(pc: RTCPeerConnection) -> web.Response:
    return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})


def create_app() -> web.Application:
    relay = Relay()
    app = web.Application()
    app.router.add_post("/publish", relay.publish)
    app.router.add_post("/subscribe", relay.subscribe)
    app.router.add_get("/readyz", relay.readyz)
    app.router.add_get("/stats", relay.stats)
    app.on_shutdown.append(relay.close)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    IcePolicy(gather_addresses=["127.0.0.1"]).install()
    web.run_app(create_app(), host="127.0.0.1", port=args.port, access_log=None, print=None,
                shutdown_timeout=3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
