"""Moderation in a room (the ``moderate`` grant): admitting from the lobby and denying,
removing, holding, muting someone, recording an invite, ending the room for everyone.

Part of the room service (rooms/service.py, which holds the members, the locks and the SFU);
split out to keep that module to its core.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from media.background import spawn
from rooms.members import ACTIVE, CLOSE_REMOVED, HELD, LOBBY, Member, RoomError

if TYPE_CHECKING:
    from rooms.service import RoomService


class Moderation:
    def __init__(self, rooms: RoomService) -> None:
        self._rooms = rooms

    async def admit(self, moderator: Member, participant_id: str) -> None:
        rooms = self._rooms
        async with rooms._lock(moderator.room_id):
            target = rooms._target(moderator, participant_id)
            if target.info.state != LOBBY:
                raise RoomError("bad_message", f"{target.info.name} is not waiting in the lobby")
            await rooms._set_state(target, ACTIVE)
            await rooms.store.mark_identity(target.room_id, "admitted", target.info.identity)
            await rooms._event(target.room_id, "participant_admitted", target.id,
                               {"identity": target.info.identity,
                                "by": moderator.info.identity})
            await rooms._send(target, {"type": "admitted",
                                       "participants": rooms._visible_to(target)})
            await rooms.subjects.tell(target)
            await rooms.speakers.tell(target)
            participant = target.info.as_dict()
            for other in rooms._audience(target):
                kind = "participant_updated" if other.grants.moderate else "participant_joined"
                await rooms._send(other, {"type": kind, "participant": participant})
            if target.subscriber is not None:
                target.subscriber.set_held(False)  # its connection is up: media now
            rooms._start_media(target)
            rooms._media_changed(target.room_id)

    async def deny(self, moderator: Member, participant_id: str) -> None:
        await self._dismiss(moderator, participant_id, "denied")

    async def remove(self, moderator: Member, participant_id: str) -> None:
        await self._dismiss(moderator, participant_id, "removed")

    async def _dismiss(self, moderator: Member, participant_id: str, reason: str) -> None:
        """Deny entry (lobby) or remove; the identity may not come back after a removal."""
        rooms = self._rooms
        async with rooms._lock(moderator.room_id):
            target = rooms._target(moderator, participant_id)
            if reason == "denied" and target.info.state != LOBBY:
                raise RoomError("bad_message", f"{target.info.name} is not waiting in the lobby")
            await self._dismiss_locked(target, reason, moderator.info.identity)

    async def kick(self, room_id: str, participant_id: str, by: str) -> Member:
        """An operator (the admin API, ``by`` its API key) removes a participant, as a
        moderator's removal: told ``removed``, closed with 4003, and its identity may not come
        back into this room."""
        rooms = self._rooms
        async with rooms._lock(room_id):
            target = rooms.members.get(room_id, {}).get(participant_id)
            if target is None:
                raise RoomError("participant_not_found", f"no participant {participant_id!r} "
                                f"in room {room_id!r} on this node (GET /api/admin/rooms "
                                "lists them)")
            await self._dismiss_locked(target, "removed", by)
        return target

    async def _dismiss_locked(self, target: Member, reason: str, by: str) -> None:
        rooms = self._rooms
        if reason == "removed":
            await rooms.store.mark_identity(target.room_id, "removed", target.info.identity)
            await rooms._event(target.room_id, "participant_removed", target.id,
                               {"identity": target.info.identity, "by": by})
        await rooms._send(target, {"type": reason})
        await rooms._leave_locked(target, reason)
        spawn(target.sink.close(CLOSE_REMOVED, reason))

    async def hold(self, moderator: Member, participant_id: str, held: bool) -> None:
        """A held participant neither sees nor hears anyone, and nobody gets its media."""
        rooms = self._rooms
        async with rooms._lock(moderator.room_id):
            target = rooms._target(moderator, participant_id)
            if target.info.state == LOBBY:
                raise RoomError("bad_message", f"{target.info.name} is still in the lobby")
            if (target.info.state == HELD) == held:
                return
            others = rooms._others(target)
            if held:
                await rooms._set_state(target, HELD)
                rooms._stop_forwarding_from(target, others)
                if target.subscriber is not None:
                    for other in others:
                        for track_id in other.info.tracks:
                            target.subscriber.unsubscribe(track_id)
            else:
                await rooms._set_state(target, ACTIVE)
                rooms._start_media(target)
            rooms._media_changed(target.room_id)
            await rooms._event(target.room_id, "participant_held" if held else
                               "participant_resumed", target.id, {"by": moderator.info.identity})
            await rooms._send(target, {"type": "held", "held": held})
            if not held:
                await rooms.speakers.tell(target)
            await rooms.send_all(rooms._audience(target), {
                "type": "participant_updated", "participant": target.info.as_dict()})

    async def mute_participant(self, moderator: Member, participant_id: str, kind: str) -> None:
        rooms = self._rooms
        target = rooms._target(moderator, participant_id)
        for track in [t for t in target.info.tracks.values() if t.kind == kind]:
            await rooms._set_muted(target, track, True, [*rooms._audience(target), target])
        await rooms._send(target, {"type": "muted_by_host", "kind": kind})

    async def invited(self, moderator: Member, identity: str, role: str) -> None:
        """Record that a moderator created an invite link (the link itself is not kept)."""
        rooms = self._rooms
        await rooms._event(moderator.room_id, "invite_created", moderator.id,
                           {"identity": identity, "role": role,
                            "by": moderator.info.identity})

    async def end_by(self, moderator: Member, reason: str) -> None:
        """End the room from a moderator's own connection. The work runs in its own task: a
        moderator whose client hangs up on ``room_ended`` cancels its connection's handler,
        which must not stop the room ending for everyone else."""
        rooms = self._rooms
        rooms._require_moderator(moderator)
        await asyncio.shield(spawn(rooms.end_room(moderator.room_id, reason,
                                                  by=moderator.info.identity)))
