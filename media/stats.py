"""What the media engine counted, summed over the SFU for monitoring.

The counters live where the work is done and are plain integers (``SourceTrack.packets``,
``DownTrack.octets``, ``PublisherPeer.nacks_sent``, …), bumped on paths that run anyway;
nothing here runs per packet. ``Sfu.counters()`` adds up the live objects at the moment it is
asked (a Prometheus scrape: observability/collector.py) and the totals of the objects that
have closed, which the SFU keeps as they close, so no total ever goes back.

Keys are (counter, media kind); the counters:

* ``packets_in`` / ``bytes_in``: RTP packets and payload bytes from publishers (repairs
  included); ``packets_out`` / ``bytes_out``: sent to subscribers; ``retransmissions``.
* ``uplink_expected`` / ``uplink_lost``: packets the publishers' uplinks should have carried
  and lost (aiortc's receiver statistics, before retransmission); ``downlink_lost``: what the
  subscribers lost (video: answered NACKs; audio: their receiver reports, upstream gaps left
  out).
* ``unrepaired``: upstream video packets given up on (media/source.py, LOST_FOR_GOOD_S).
* ``nacks_received`` (NACK messages from subscribers), ``nacks_sent`` (to publishers, kind
  "all"), ``plis_received`` (PLI/FIR from subscribers), ``plis_sent`` (to publishers).
* ``layer_switches``, ``pauses`` (video paused for a weak downlink).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from media.publisher import PublisherPeer
    from media.source import SourceTrack
    from media.subscriber import SubscriberPeer

Key = tuple[str, str]  # (counter, media kind)


def add_source(totals: Counter[Key], source: SourceTrack) -> None:
    kind = source.kind
    totals["packets_in", kind] += source.packets
    totals["bytes_in", kind] += source.bytes
    totals["plis_sent", kind] += source.plis_sent
    totals["unrepaired", kind] += source.lost_for_good


def add_publisher(totals: Counter[Key], peer: PublisherPeer) -> None:
    totals["nacks_sent", "all"] += peer.nacks_sent
    for kind, (expected, lost) in peer.uplink_counts().items():
        totals["uplink_expected", kind] += expected
        totals["uplink_lost", kind] += lost


def add_subscriber(totals: Counter[Key], peer: SubscriberPeer) -> None:
    for slot in peer.slots:
        down = slot.down
        kind = down.kind
        totals["packets_out", kind] += down.packets
        totals["bytes_out", kind] += down.octets
        totals["retransmissions", kind] += down.retransmissions
        totals["nacks_received", kind] += down.nack_messages
        totals["plis_received", kind] += down.keyframe_requests
        totals["downlink_lost", kind] += down.downlink_lost + down.nacks_answered
        totals["layer_switches", kind] += down.layer_switches
        totals["pauses", kind] += down.pauses
