"""Who hosts a room: handing the host role over, and a room its clinicians have left.

* **Hand-off**: a moderator passes their role to another clinician in the room and takes that
  clinician's role in exchange (a host and a doctor swap). It holds for the rest of the room:
  either one reconnecting comes back in their new role, whatever their link says (the swap is
  in the event log, so also after a restart). Both get the grants of their new role in the
  room's kind (rooms/policy.py); the new host sees the lobby, the old one no longer.
* **A host who drops** leaves the room running; coming back, a host is never put in a lobby
  (only roles that wait there do, and a moderator never does).
* **No clinician left**: when the last member of the care team leaves, the room ends by
  itself after ``unattended_end_s`` unless one comes back first (patients are not left
  waiting in a lobby nobody will open).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from rooms.members import ACTIVE, Member, RoomError
from rooms.models import EventRecord
from rooms.policy import CARE_TEAM, PolicyError, grants_for

if TYPE_CHECKING:
    from rooms.service import RoomService

log = logging.getLogger("huizhen.rooms")

UNATTENDED_REASON = "no_clinician"


class Hosts:
    def __init__(self, rooms: RoomService, unattended_end_s: float) -> None:
        self._rooms = rooms
        self.unattended_end_s = unattended_end_s
        self._roles: dict[tuple[str, str], str] = {}  # (room, identity) → role after a swap
        self._timers: dict[str, asyncio.Task[None]] = {}

    def role_for(self, room_id: str, identity: str, role: str) -> str:
        """The role this identity has in the room: its link's, unless a hand-off changed it."""
        return self._roles.get((room_id, identity), role)

    async def hand_off(self, moderator: Member, participant_id: str) -> None:
        rooms = self._rooms
        room_id = moderator.room_id
        async with rooms._lock(room_id):
            target = rooms._target(moderator, participant_id)
            if target.info.state != ACTIVE or target.info.role not in CARE_TEAM:
                raise RoomError("bad_message", "the host role goes to a clinician who is in "
                                "the consultation")
            if target.grants.moderate:
                raise RoomError("bad_message", f"{target.info.name} already moderates")
            kind = (await rooms.get_room(room_id)).kind
            given, taken = moderator.info.role, target.info.role
            try:
                new_grants = {target.id: grants_for(kind, given),
                              moderator.id: grants_for(kind, taken)}
            except PolicyError as exc:
                raise RoomError("not_permitted", str(exc)) from exc
            for member, role in ((target, given), (moderator, taken)):
                member.info.role = role
                member.grants = new_grants[member.id]
                member.info.grants = member.grants.as_dict()
                self._roles[(room_id, member.info.identity)] = role
            await rooms._event(room_id, "host_handed_off", moderator.id, {
                "from": moderator.info.identity, "to": target.info.identity,
                "from_role": taken, "to_role": given})
            for member in (target, moderator):
                await rooms._send(member, {"type": "role_changed", "me": member.info.as_dict(),
                                           "participants": rooms._visible_to(member)})
                await rooms.send_all([o for o in rooms._audience(member)
                                      if o not in (target, moderator)], {
                    "type": "participant_updated", "participant": member.info.as_dict()})
        log.info("host handed off", extra={"room": room_id, "to": target.id})

    def restore(self, event: EventRecord) -> None:
        """A hand-off from the event log (after a restart)."""
        data = event.data
        for who, role in ((data.get("from"), data.get("from_role")),
                          (data.get("to"), data.get("to_role"))):
            if isinstance(who, str) and isinstance(role, str):
                self._roles[(event.room_id, who)] = role

    # ---- a room its clinicians left ----------------------------------------------------------
    def membership_changed(self, room_id: str) -> None:
        """After a join or a leave: start the clock if no clinician is left (or nobody at
        all), stop it if one is back."""
        members = self._rooms.members.get(room_id, {}).values()
        if any(m.info.role in CARE_TEAM for m in members):
            timer = self._timers.pop(room_id, None)
            if timer is not None:
                timer.cancel()
        elif room_id not in self._timers:
            self._timers[room_id] = asyncio.ensure_future(self._end_later(room_id))

    async def _end_later(self, room_id: str) -> None:
        await asyncio.sleep(self.unattended_end_s)
        self._timers.pop(room_id, None)
        room = await self._rooms.get_room(room_id)
        if room.status == "open":
            log.info("room ends: no clinician came back", extra={"room": room_id})
            await self._rooms.end_room(room_id, UNATTENDED_REASON)

    def forget(self, room_id: str) -> None:
        timer = self._timers.pop(room_id, None)
        if timer is not None:
            timer.cancel()
        for key in [k for k in self._roles if k[0] == room_id]:
            del self._roles[key]

    async def stop(self) -> None:
        for timer in list(self._timers.values()):
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        self._timers.clear()
