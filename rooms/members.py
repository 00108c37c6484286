"""Who is in a room, as the room service and its listeners see them: members, join requests,
the errors the service refuses with, and the observer interface other parts (recording)
implement to follow the rooms without rooms knowing them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from media.publisher import PublisherPeer
from media.subscriber import SubscriberPeer
from rooms.models import ParticipantInfo
from rooms.policy import Grants

if TYPE_CHECKING:
    from rooms.subjects import Subject

SOURCES = {"audio": ("microphone",), "video": ("camera", "screen")}
LOBBY, ACTIVE, HELD = "lobby", "active", "held"
CLOSE_REMOVED = 4003


class RoomError(Exception):
    """Refused; ``code`` is the protocol/API error code, the message is for people."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None
                 ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        #: machine-readable facts sent with the error (e.g. ``opens_at``)
        self.details = details or {}


class MessageSink(Protocol):
    async def send(self, message: dict[str, Any]) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class RoomObserver(Protocol):
    """What other parts (recording) learn of the rooms, without rooms knowing them."""

    async def joined_state(self, room_id: str) -> dict[str, Any]:
        """Added to the ``room`` object of a joining participant's ``joined`` reply."""

    async def participant_joined(self, member: Member) -> None: ...

    def media_changed(self, room_id: str) -> None:
        """The set of tracks the room hears changed (see :meth:`RoomService.audible_tracks`)."""

    def active_speaker(self, room_id: str, participant_id: str) -> None: ...

    async def room_ended(self, room_id: str) -> None:
        """Called before the participants are disconnected."""

    async def subject_changed(self, room_id: str, subject: Subject | None) -> None:
        """The patient under discussion changed (rooms/subjects.py): a new segment begins."""


@dataclass(frozen=True)
class JoinRequest:
    identity: str
    name: str
    role: str
    grants: Grants
    token_id: str = ""
    #: the department the link named (attendance), if any
    department: str | None = None


@dataclass
class Member:
    """A participant connected to this node."""

    info: ParticipantInfo
    sink: MessageSink
    grants: Grants
    publishers: list[PublisherPeer] = field(default_factory=list)
    subscriber: SubscriberPeer | None = None
    left: bool = False
    #: in nobody's roster (the audience of a broadcast, until promoted: rooms/broadcast.py)
    quiet: bool = False
    room_kind: str = ""

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def room_id(self) -> str:
        return self.info.room_id
