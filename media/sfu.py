"""The SFU facade the rooms layer talks to: publish connections, subscribe connections, sources.

It knows nothing of rooms or roles: tracks and peers are identified by opaque ids.
"""

from __future__ import annotations

import logging

from media.forwarder import SourceTrack
from media.ice import IcePolicy
from media.impairment import Impairment
from media.peers import OfferSender, PublishedTrack, PublisherPeer, SdpError, SubscriberPeer

log = logging.getLogger("huizhen.media")

__all__ = ["PublishedTrack", "SdpError", "Sfu"]


class Sfu:
    def __init__(self, policy: IcePolicy, video_codec: str = "VP8",
                 pli_throttle_s: float = 0.5) -> None:
        self.policy = policy
        self.video_codec = video_codec
        self.pli_throttle_s = pli_throttle_s
        self.sources: dict[str, SourceTrack] = {}
        self.publishers: set[PublisherPeer] = set()
        self.subscribers: set[SubscriberPeer] = set()
        #: tests only: simulated loss on publishers' uplinks (see media/impairment.py)
        self.impairment: Impairment | None = None

    async def publish(self, offer_sdp: str, tracks: list[PublishedTrack]
                      ) -> tuple[PublisherPeer, str]:
        """Answer a client's publish offer. Raises SdpError; nothing is kept on error."""
        peer = PublisherPeer(self.policy, self.video_codec, self.pli_throttle_s,
                             self.impairment)
        try:
            answer = await peer.answer(offer_sdp, tracks)
        except BaseException:
            await peer.close()
            raise
        self.publishers.add(peer)
        self.sources.update(peer.sources)
        return peer, answer

    async def close_publisher(self, peer: PublisherPeer) -> list[str]:
        """Close a publish connection; returns the ids of the tracks that went with it."""
        self.publishers.discard(peer)
        gone = list(peer.sources)
        for track_id in gone:
            self.sources.pop(track_id, None)
        await peer.close()
        return gone

    def close_source(self, track_id: str) -> None:
        source = self.sources.pop(track_id, None)
        if source is not None:
            source.close()

    def subscriber(self, send_offer: OfferSender) -> SubscriberPeer:
        peer = SubscriberPeer(self.policy, self.video_codec, send_offer)
        self.subscribers.add(peer)
        return peer

    async def close_subscriber(self, peer: SubscriberPeer) -> None:
        self.subscribers.discard(peer)
        await peer.close()

    async def close(self) -> None:
        for pub in list(self.publishers):
            await self.close_publisher(pub)
        for sub in list(self.subscribers):
            await self.close_subscriber(sub)
