"""The SFU facade the rooms layer talks to: publish connections, subscribe connections, sources.

It knows nothing of rooms or roles: tracks and peers are identified by opaque ids.
"""

from __future__ import annotations

import logging
from collections import Counter

from media import stats
from media.ice import IcePolicy
from media.impairment import Impairment
from media.publisher import PublishedTrack, PublisherPeer
from media.sdp import SdpError
from media.source import MediaTrack
from media.subscriber import OfferSender, PauseNotifier, SubscriberPeer

log = logging.getLogger("huizhen.media")

__all__ = ["PublishedTrack", "SdpError", "Sfu"]


class Sfu:
    def __init__(self, policy: IcePolicy, video_codec: str = "VP8",
                 pli_throttle_s: float = 0.5) -> None:
        self.policy = policy
        self.video_codec = video_codec
        self.pli_throttle_s = pli_throttle_s
        self.tracks: dict[str, MediaTrack] = {}
        self.publishers: set[PublisherPeer] = set()
        self.subscribers: set[SubscriberPeer] = set()
        #: tests only: simulated loss on uplinks and limits on downlinks (media/impairment.py)
        self.impairment: Impairment | None = None
        #: the counts of the tracks and connections that have closed (media/stats.py)
        self.retired: Counter[stats.Key] = Counter()

    def counters(self) -> Counter[stats.Key]:
        """Everything the media engine counted since the start (media/stats.py)."""
        totals = Counter(self.retired)
        for track in self.tracks.values():
            for layer in track.layers:
                stats.add_source(totals, layer)
        for pub in self.publishers:
            stats.add_publisher(totals, pub)
        for sub in self.subscribers:
            stats.add_subscriber(totals, sub)
        return totals

    def _retire_track(self, track_id: str) -> MediaTrack | None:
        track = self.tracks.pop(track_id, None)
        if track is not None:
            for layer in track.layers:
                stats.add_source(self.retired, layer)
        return track

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
        self.tracks.update(peer.tracks)
        return peer, answer

    async def close_publisher(self, peer: PublisherPeer) -> list[str]:
        """Close a publish connection; returns the ids of the tracks that went with it."""
        if peer in self.publishers:
            self.publishers.discard(peer)
            stats.add_publisher(self.retired, peer)
        gone = list(peer.tracks)
        for track_id in gone:
            self._retire_track(track_id)
        await peer.close()
        return gone

    def close_track(self, track_id: str) -> None:
        track = self._retire_track(track_id)
        if track is not None:
            track.close()

    def subscriber(self, send_offer: OfferSender, label: str = "",
                   on_video_paused: PauseNotifier | None = None) -> SubscriberPeer:
        """A subscribe connection; ``label`` names it in logs (the participant's id)."""
        peer = SubscriberPeer(self.policy, self.video_codec, send_offer, label,
                              on_video_paused, self.impairment)
        self.subscribers.add(peer)
        return peer

    async def close_subscriber(self, peer: SubscriberPeer) -> None:
        if peer in self.subscribers:
            self.subscribers.discard(peer)
            stats.add_subscriber(self.retired, peer)
        await peer.close()

    async def close(self) -> None:
        for pub in list(self.publishers):
            await self.close_publisher(pub)
        for sub in list(self.subscribers):
            await self.close_subscriber(sub)
