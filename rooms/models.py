"""Plain records for rooms, participants, tracks, sessions and events.

Live state (participants, tracks) is held by a :class:`rooms.store.RoomStateStore`; durable
history (rooms, sessions, events) by :class:`rooms.db.Database`. Both speak these records, which
serialise to JSON-friendly dicts (``as_dict``) for the API, the signalling protocol and,
later, Redis.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(9)}"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass
class RoomRecord:
    id: str
    kind: str
    title: str
    created_at: datetime
    patient_ref: str | None = None
    scheduled_start: datetime | None = None
    scheduled_end: datetime | None = None
    status: str = "open"  # open | ended
    ended_at: datetime | None = None
    end_reason: str | None = None
    created_by: str | None = None
    #: record by itself once the patient's recording consent exists; None: the kind decides
    auto_record: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("created_at", "scheduled_start", "scheduled_end", "ended_at"):
            data[key] = _iso(getattr(self, key))
        return data


@dataclass
class SessionRecord:
    """One participant's stay in a room (join to leave)."""

    id: str
    room_id: str
    identity: str
    name: str
    role: str
    joined_at: datetime
    left_at: datetime | None = None
    leave_reason: str | None = None
    token_id: str | None = None
    #: the department the participant's link named (attendance lists); optional
    department: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["joined_at"] = _iso(self.joined_at)
        data["left_at"] = _iso(self.left_at)
        return data


@dataclass
class EventRecord:
    room_id: str
    type: str
    at: datetime
    participant_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["at"] = _iso(self.at)
        return out


@dataclass
class TrackInfo:
    id: str
    participant_id: str
    kind: str  # audio | video
    source: str  # microphone | camera | screen
    muted: bool = False
    codec: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ParticipantInfo:
    """A participant as everyone in the room sees it."""

    id: str  # the session id (SessionRecord.id)
    room_id: str
    identity: str
    name: str
    role: str
    grants: dict[str, bool]
    joined_at: datetime
    state: str = "active"  # active (lobby/hold come with the lobby work)
    tracks: dict[str, TrackInfo] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "identity": self.identity,
            "name": self.name,
            "role": self.role,
            "grants": dict(self.grants),
            "joined_at": _iso(self.joined_at),
            "state": self.state,
            "tracks": [t.as_dict() for t in self.tracks.values()],
        }
