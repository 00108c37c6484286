"""Each participant's connection quality, as the SFU sees it: loss both ways, round trip,
bit rates and the simulcast layer of each video it receives.

Every ``TICK_S`` the figures of each active participant are read from its peer connections
(counters the media engine keeps: media/publisher.py ``uplink_counts``, the subscriber's
downlink estimate, its round trip from RTCP, media/subscriber.py ``video_layers``). When they
changed noticeably (``noticeable``) a ``connection_quality`` event goes to the participant and
to the room's moderators who see it (a broadcast's quiet audience only hears of itself, and
only when its level changes); a moderator who arrives later is told everyone's current
figures once. ``GET /api/rooms/{id}``
shows the latest figures per participant (``quality``). docs/protocol.md describes the event.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from media.bandwidth import PACKET_OVERHEAD
from rooms.members import ACTIVE, Member
from rooms.ticker import RoomTicker

if TYPE_CHECKING:
    pass

log = logging.getLogger("huizhen.rooms")

TICK_S = 2.0
MIN_UPLINK_SAMPLE = 20  # packets expected in a tick before its uplink loss counts
#: what makes a change noticeable: a level, a paused video or a layer; loss by this many
#: percentage points; round trip by this many ms and this share; a bit rate by this share
#: (rates are measured over the whole tick; keyframes still move them, so only by half)
LOSS_STEP_PCT = 2.0
RTT_STEP_MS = 50
RTT_STEP_SHARE = 0.25
RATE_STEP_SHARE = 0.5
RATE_FLOOR_KBPS = 100  # below this, rate changes are not worth a message


def level(rtt_ms: int | None, loss_pct: float | None, paused: bool) -> str:
    """good | fair | poor — the same thresholds as the web client's own reading
    (web_client/static/monitor.js qualityLevel): below 300 ms and 2 % is good, below 600 ms
    and 8 % fair. A video paused for the network makes it fair at best."""
    if rtt_ms is None and loss_pct is None:
        return "fair" if paused else "unknown"
    rtt, loss = (rtt_ms or 0) / 1000, loss_pct or 0.0
    if rtt < 0.3 and loss < 2 and not paused:
        return "good"
    if rtt < 0.6 and loss < 8:
        return "fair"
    return "poor"


def _moved(old: float | None, new: float | None, step: float, share: float = 0.0) -> bool:
    if old is None or new is None:
        return old is not new
    return abs(new - old) >= max(step, share * abs(old))


def noticeable(old: dict[str, Any] | None, new: dict[str, Any], level_only: bool = False
               ) -> bool:
    """Whether ``new`` differs from the figures last sent enough to be worth a message
    (``level_only``: only a new level is)."""
    if old is None or old["level"] != new["level"]:
        return True
    if level_only:
        return False
    if old["video"] != new["video"]:
        return True
    if _moved(old["rtt_ms"], new["rtt_ms"], RTT_STEP_MS, RTT_STEP_SHARE):
        return True
    for way in ("uplink", "downlink"):
        a, b = old[way], new[way]
        if (a is None) != (b is None):
            return True
        if a is None or b is None:
            continue
        if _moved(a["loss_pct"], b["loss_pct"], LOSS_STEP_PCT):
            return True
        if max(a["kbps"], b["kbps"]) >= RATE_FLOOR_KBPS and _moved(
                a["kbps"], b["kbps"], 0, RATE_STEP_SHARE):
            return True
    return False


@dataclass
class _Seen:
    """Per participant: the uplink counts at the last tick and what was last sent."""

    uplink: tuple[int, int] = (0, 0)
    uplink_loss: float | None = None
    published: tuple[float, int] | None = None  # (when, bytes on the wire it had published)
    sent: dict[str, Any] | None = None
    current: dict[str, Any] | None = None


@dataclass
class _Room:
    members: dict[str, _Seen] = field(default_factory=dict)
    told: set[str] = field(default_factory=set)  # moderators who have had everyone's figures


class ConnectionQuality(RoomTicker[_Room]):
    tick_s = TICK_S
    what = "connection quality"

    def current(self, room_id: str, participant_id: str) -> dict[str, Any] | None:
        """The latest figures of a participant on this node (None: none yet)."""
        room = self._rooms_state.get(room_id)
        seen = room.members.get(participant_id) if room else None
        return None if seen is None else seen.current

    def levels(self) -> dict[str, int]:
        """How many participants on this node are at each level (for monitoring)."""
        out: dict[str, int] = {}
        for room in self._rooms_state.values():
            for seen in room.members.values():
                if seen.current is not None:
                    out[seen.current["level"]] = out.get(seen.current["level"], 0) + 1
        return out

    async def _tick(self, room_id: str, members: list[Member]) -> None:
        room = self._rooms_state.setdefault(room_id, _Room())
        present = {m.id for m in members}
        for gone in room.members.keys() - present:
            del room.members[gone]
        room.told &= present
        now = time.monotonic()
        changed: list[tuple[Member, dict[str, Any]]] = []
        for member in members:
            if member.info.state != ACTIVE:
                room.members.pop(member.id, None)
                continue
            seen = room.members.setdefault(member.id, _Seen())
            figures = self._figures(member, seen, now)
            if figures is None:
                continue
            seen.current = figures
            # a broadcast's audience (hundreds) hears of its own level changes only
            if noticeable(seen.sent, figures, level_only=member.quiet):
                seen.sent = figures
                changed.append((member, figures))
        moderators = [m for m in members if m.grants.moderate and m.info.state == ACTIVE]
        for moderator in moderators:
            if moderator.id in room.told:
                continue
            room.told.add(moderator.id)
            for member in members:  # a new moderator hears everyone's latest once
                seen_member = room.members.get(member.id)
                if (member is not moderator and seen_member is not None
                        and seen_member.current is not None and seen_member.sent is not None
                        and not member.quiet and all(member is not c for c, _ in changed)):
                    await self._rooms.send(moderator, _event(member, seen_member.current))
        for member, figures in changed:
            recipients = [member] + [m for m in moderators if m is not member
                                     and not member.quiet]
            await self._rooms.send_all(recipients, _event(member, figures))

    @staticmethod
    def _figures(member: Member, seen: _Seen, now: float) -> dict[str, Any] | None:
        """The participant's figures now; None if it has no media connection."""
        uplink: dict[str, Any] | None = None
        if member.publishers:
            expected = lost = wire = 0
            for peer in member.publishers:
                for e, lo in peer.uplink_counts().values():
                    expected += e
                    lost += lo
                for track in peer.tracks.values():
                    wire += sum(layer.bytes + layer.packets * PACKET_OVERHEAD
                                for layer in track.layers)
            last = seen.published
            if last is not None and now > last[0] and wire >= last[1]:
                kbps = (wire - last[1]) * 8 / (now - last[0]) / 1000
            else:  # its first tick: the sources' own latest measurement
                kbps = sum(layer.bitrate_bps for peer in member.publishers
                           for track in peer.tracks.values() for layer in track.layers) / 1000
            seen.published = (now, wire)
            d_expected, d_lost = expected - seen.uplink[0], lost - seen.uplink[1]
            seen.uplink = (expected, lost)
            if d_expected >= MIN_UPLINK_SAMPLE:
                seen.uplink_loss = 100 * max(0, d_lost) / d_expected
            uplink = {"loss_pct": _round(seen.uplink_loss), "kbps": round(kbps)}
        downlink: dict[str, Any] | None = None
        rtt_ms: int | None = None
        video: list[dict[str, Any]] = []
        sub = member.subscriber
        if sub is not None and sub.slots:
            estimate = sub.estimate
            downlink = {"loss_pct": _round(100 * estimate.loss),
                        "kbps": round(estimate.sent_bps / 1000),
                        "estimate_kbps": round(estimate.bps / 1000)}
            rtt = sub.round_trip_s(now)
            rtt_ms = None if rtt is None else round(rtt * 1000)
            video = sub.video_layers()
        if uplink is None and downlink is None:
            return None
        losses = [w["loss_pct"] for w in (uplink, downlink)
                  if w is not None and w["loss_pct"] is not None]
        return {"level": level(rtt_ms, max(losses) if losses else None,
                               any(v["paused"] for v in video)),
                "rtt_ms": rtt_ms, "uplink": uplink, "downlink": downlink, "video": video}


def _round(pct: float | None) -> float | None:
    return None if pct is None else round(pct, 1)


def _event(member: Member, figures: dict[str, Any]) -> dict[str, Any]:
    return {"type": "connection_quality", "participant_id": member.id, **figures}
