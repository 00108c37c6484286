"""Read at scrape time: the rooms, participants, tracks and media counters of this node.

A Prometheus ``Collector``: each scrape walks the rooms' members and the SFU's counters
(media/stats.py) once; the forwarding path never calls into Prometheus.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from media.sfu import Sfu
from recording.service import RecordingService
from rooms.service import RoomService

#: media/stats.py counter → (metric, labels it sets besides the media kind)
_COUNTERS: dict[str, tuple[str, dict[str, str]]] = {
    "packets_in": ("huizhen_media_packets", {"direction": "in"}),
    "packets_out": ("huizhen_media_packets", {"direction": "out"}),
    "bytes_in": ("huizhen_media_bytes", {"direction": "in"}),
    "bytes_out": ("huizhen_media_bytes", {"direction": "out"}),
    "retransmissions": ("huizhen_media_retransmitted_packets", {}),
    "uplink_lost": ("huizhen_media_lost_packets", {"direction": "uplink"}),
    "downlink_lost": ("huizhen_media_lost_packets", {"direction": "downlink"}),
    "uplink_expected": ("huizhen_media_uplink_expected_packets", {}),
    "unrepaired": ("huizhen_media_unrepaired_packets", {}),
    "nacks_received": ("huizhen_nacks", {"direction": "received"}),
    "nacks_sent": ("huizhen_nacks", {"direction": "sent"}),
    "plis_received": ("huizhen_plis", {"direction": "received"}),
    "plis_sent": ("huizhen_plis", {"direction": "sent"}),
    "layer_switches": ("huizhen_layer_switches", {}),
    "pauses": ("huizhen_video_pauses", {}),
}
_HELP = {
    "huizhen_media_packets": "RTP packets received from publishers (in) and sent to "
                             "subscribers (out)",
    "huizhen_media_bytes": "RTP payload bytes received from publishers (in) and sent to "
                           "subscribers (out)",
    "huizhen_media_retransmitted_packets": "packets sent again for subscribers' NACKs",
    "huizhen_media_lost_packets": "packets lost on publishers' uplinks (before "
                                  "retransmission) and on subscribers' downlinks",
    "huizhen_media_uplink_expected_packets": "packets publishers' uplinks should have "
                                             "carried (RFC 3550 extended sequence numbers)",
    "huizhen_media_unrepaired_packets": "upstream video packets given up on (not "
                                        "retransmitted in time)",
    "huizhen_nacks": "NACK messages from subscribers (received) and to publishers (sent, "
                     "kind=all)",
    "huizhen_plis": "keyframe requests: PLI/FIR from subscribers (received), PLIs to "
                    "publishers (sent)",
    "huizhen_layer_switches": "simulcast layer changes decided for subscribers",
    "huizhen_video_pauses": "videos paused for a subscriber's weak downlink",
}


class MediaCollector(Collector):
    def __init__(self, sfu: Sfu, rooms: RoomService, recordings: RecordingService) -> None:
        self.sfu = sfu
        self.rooms = rooms
        self.recordings = recordings

    def collect(self) -> Iterator[Metric]:
        yield from self._rooms()
        yield from self._media()

    def _rooms(self) -> Iterator[Metric]:
        rooms: Counter[tuple[str]] = Counter()
        people: Counter[tuple[str, str, str]] = Counter()
        tracks: Counter[tuple[str, str]] = Counter()
        for members in list(self.rooms.members.values()):
            kind = ""
            for member in list(members.values()):
                kind = member.room_kind
                people[kind, member.info.role, member.info.state] += 1
                for track in list(member.info.tracks.values()):
                    tracks[track.kind, track.source] += 1
            rooms[(kind,)] += 1
        yield _gauge("huizhen_rooms", "rooms with someone connected to this node, by kind",
                     ["kind"], rooms)
        yield _gauge("huizhen_participants", "participants connected to this node",
                     ["room_kind", "role", "state"], people)
        yield _gauge("huizhen_tracks", "published tracks", ["kind", "source"], tracks)
        yield _gauge("huizhen_connection_quality",
                     "participants by connection quality (rooms/quality.py)", ["level"],
                     Counter({(k,): n for k, n in self.rooms.quality.levels().items()}))
        yield _gauge("huizhen_recordings_active", "rooms being recorded", [],
                     Counter({(): len(self.recordings.active)}))

    def _media(self) -> Iterator[Metric]:
        sfu = self.sfu
        subscribed: Counter[tuple[str]] = Counter()
        paused = 0
        for peer in list(sfu.subscribers):
            for slot in peer.slots:
                if slot.track is not None:
                    subscribed[(slot.down.kind,)] += 1
                    paused += slot.down.paused
        yield _gauge("huizhen_peer_connections", "WebRTC connections", ["direction"],
                     Counter({("publish",): len(sfu.publishers),
                              ("subscribe",): len(sfu.subscribers)}))
        yield _gauge("huizhen_subscriptions", "tracks forwarded to a subscriber", ["kind"],
                     subscribed)
        yield _gauge("huizhen_paused_videos", "videos paused now for a weak downlink", [],
                     Counter({(): paused}))
        families = {metric: CounterMetricFamily(metric, text, labels=[
            *next(labels for m, labels in _COUNTERS.values() if m == metric), "kind"])
            for metric, text in _HELP.items()}
        for (name, kind), value in sorted(sfu.counters().items()):
            if name in _COUNTERS:
                metric, labels = _COUNTERS[name]
                families[metric].add_metric([*labels.values(), kind], value)
        yield from families.values()


Labels = TypeVar("Labels", bound=tuple[str, ...])


def _gauge(name: str, text: str, labels: list[str], values: Counter[Labels]
           ) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, text, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family
