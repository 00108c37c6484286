"""The audience of a teaching broadcast: quiet viewers, raised hands, promotion, moderated Q&A.

Which roles are the audience is the policy table's ``RolePolicy.quiet`` (broadcast viewers);
nothing here names a room kind.

* **Quiet**: a member of the audience is in nobody's roster and nobody is told when one joins
  or leaves (``RoomService._sees``); its own ``joined`` lists the others who are not quiet
  (the publishers, to subscribe to). Those outside the audience (presenters, moderators,
  cameras) get the number of viewers instead: ``audience {"viewers": n}``, at most once per
  ``COUNT_INTERVAL_S`` however many come and go (coalesced), and in ``joined.room.audience``.
* **Hands**: a viewer raises (or lowers) a hand; members with the ``promote`` grant get the
  list of raised hands (``hands``) when it changes (the changes of ``HANDS_COALESCE_S`` as
  one message).
* **Promote / demote**: a moderator lets a viewer speak (microphone, and camera if ``video``):
  the viewer gets its new grants (``role_changed``, as a hand-off does) and is in everyone's
  roster as a speaker (``participant_joined``) until demoted: then its tracks are unpublished,
  its publish connections closed, and everyone gets ``participant_left`` (``demoted``). A
  promotion belongs to the viewer's identity until demoted or the room ends: a trainee whose
  phone drops off the network and comes back (a reload, another device, a restart of this
  node: promotions are replayed from the event log) is a speaker again at once
  (``joined.room.promoted``), not a quiet viewer whose hand must be raised again.
* **Questions**: a viewer asks (text, ``MAX_QUESTION`` characters); only members with
  ``promote`` see pending questions; approved ones go to everyone, viewers included.
  Questions live on this node for the room's life; each step is in the room's event log.

Names and question texts go to the room and the event log, never into logs.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from media.background import spawn
from rooms.members import Member, RoomError
from rooms.models import new_id, utcnow
from rooms.policy import Grants, KindPolicy, Role

if TYPE_CHECKING:
    from rooms.service import RoomService

log = logging.getLogger("huizhen.rooms")

#: at most one viewer count per this many seconds to each who sees the audience
COUNT_INTERVAL_S = 1.0
MAX_QUESTION = 500
#: raised hands within this many seconds go to the moderators as one list
HANDS_COALESCE_S = 0.25
#: pending questions one viewer may have at a time
MAX_PENDING = 3
PENDING, APPROVED, DISMISSED = "pending", "approved", "dismissed"


def has_audience(policy: KindPolicy) -> bool:
    return any(rp.quiet for rp in policy.roles.values())


@dataclass
class Question:
    id: str
    participant_id: str
    identity: str
    name: str
    text: str
    at: datetime
    status: str = PENDING

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "participant_id": self.participant_id, "name": self.name,
                "text": self.text, "at": self.at.isoformat(), "status": self.status}


@dataclass
class _Audience:
    """One room's audience on this node."""

    members: set[str] = field(default_factory=set)  # participant ids of quiet-role members
    hands: dict[str, datetime] = field(default_factory=dict)  # participant id → raised at
    promoted: dict[str, Grants] = field(default_factory=dict)  # participant id → own grants
    speakers: dict[str, bool] = field(default_factory=dict)  # promoted identity → with camera
    questions: dict[str, Question] = field(default_factory=dict)
    sent: int | None = None  # the count last sent
    sent_at: float = -1e9
    count_task: asyncio.Task[None] | None = None
    hands_task: asyncio.Task[None] | None = None


class Broadcast:
    def __init__(self, rooms: RoomService) -> None:
        self._rooms = rooms
        self._state: dict[str, _Audience] = {}

    def _audience(self, room_id: str) -> _Audience:
        return self._state.setdefault(room_id, _Audience())

    def _watchers(self, room_id: str) -> list[Member]:
        """Who sees the audience as a number: everyone outside it."""
        audience = self._state.get(room_id)
        ids = audience.members if audience else set()
        return [m for m in self._rooms.members_of(room_id) if not m.quiet and m.id not in ids]

    def _promoters(self, room_id: str) -> list[Member]:
        return [m for m in self._rooms.members_of(room_id) if m.grants.promote]

    def viewers(self, room_id: str) -> int:
        audience = self._state.get(room_id)
        return len(audience.members) if audience else 0

    # ---- membership (hooks from RoomService) -----------------------------------------------
    def returning_speaker(self, room_id: str, identity: str, grants: Grants) -> Grants | None:
        """The grants of a promoted viewer who joins again (still a speaker until demoted),
        or None for one who is not promoted."""
        audience = self._state.get(room_id)
        video = audience.speakers.get(identity) if audience else None
        if video is None:
            return None
        return replace(grants, publish_audio=True, publish_video=video)

    def restore(self, room_id: str, promoted: bool, identity: str, video: bool) -> None:
        """After a start of this node: a promotion (or demotion) from the room's event log."""
        speakers = self._audience(room_id).speakers
        if promoted:
            speakers[identity] = video
        else:
            speakers.pop(identity, None)

    def joined(self, member: Member, policy: KindPolicy, own: Grants) -> dict[str, Any]:
        """A member joined (``own``: its role's grants, before a promotion it came back
        with); returns what goes into its ``joined.room`` (nothing in rooms without an
        audience)."""
        if not has_audience(policy):
            return {}
        audience = self._audience(member.room_id)
        in_audience = policy.roles[Role(member.info.role)].quiet
        if in_audience and not member.left:  # (a join replaced at once is gone already)
            audience.members.add(member.id)
            if not member.quiet:  # a returning speaker
                audience.promoted[member.id] = own
            self._count_changed(member.room_id)
        shown = [q.as_dict() for q in audience.questions.values()
                 if q.status == APPROVED or (q.status == PENDING and member.grants.promote)]
        state: dict[str, Any] = {"questions": shown, "in_audience": in_audience,
                                 "promoted": member.id in audience.promoted}
        if not member.quiet:
            state["audience"] = {"viewers": len(audience.members)}
        if member.grants.promote:
            state["hands"] = self._hands(member.room_id)
        return state

    async def left(self, member: Member) -> None:
        audience = self._state.get(member.room_id)
        if audience is None or member.id not in audience.members:
            return
        audience.members.discard(member.id)
        audience.promoted.pop(member.id, None)
        self._count_changed(member.room_id)
        if audience.hands.pop(member.id, None) is not None:
            self._hands_changed(member.room_id)

    def forget(self, room_id: str) -> None:
        audience = self._state.pop(room_id, None)
        for task in (audience.count_task, audience.hands_task) if audience else ():
            if task is not None:
                task.cancel()

    # ---- the viewer count, coalesced ------------------------------------------------------
    def _count_changed(self, room_id: str) -> None:
        audience = self._audience(room_id)
        if audience.count_task is None or audience.count_task.done():
            audience.count_task = spawn(self._send_count(room_id))

    async def _send_count(self, room_id: str) -> None:
        audience = self._audience(room_id)
        loop = asyncio.get_running_loop()
        wait = audience.sent_at + COUNT_INTERVAL_S - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        audience.count_task = None  # a change from now on is sent by the next task
        viewers = len(audience.members)
        if viewers == audience.sent:
            return
        audience.sent, audience.sent_at = viewers, loop.time()
        await self._rooms.send_all(self._watchers(room_id),
                                   {"type": "audience", "viewers": viewers})

    # ---- hands ------------------------------------------------------------------------------
    def _hands(self, room_id: str) -> list[dict[str, Any]]:
        audience = self._state.get(room_id)
        if audience is None:
            return []
        members = {m.id: m for m in self._rooms.members_of(room_id)}
        return [{"participant_id": pid, "name": members[pid].info.name,
                 "since": since.isoformat()}
                for pid, since in sorted(audience.hands.items(), key=lambda kv: kv[1])
                if pid in members]

    def _hands_changed(self, room_id: str) -> None:
        """The moderators get the list once the changes of a moment are in (many viewers
        raising hands at once make one message, not one each)."""
        audience = self._audience(room_id)
        if audience.hands_task is None or audience.hands_task.done():
            audience.hands_task = spawn(self._tell_hands(room_id))

    async def _tell_hands(self, room_id: str) -> None:
        await asyncio.sleep(HANDS_COALESCE_S)
        audience = self._state.get(room_id)
        if audience is None:
            return
        audience.hands_task = None
        await self._rooms.send_all(self._promoters(room_id),
                                   {"type": "hands", "hands": self._hands(room_id)})

    def _require_audience(self, member: Member, what: str) -> _Audience:
        audience = self._state.get(member.room_id)
        if audience is None or member.id not in audience.members:
            raise RoomError("not_permitted", f"your role ({member.info.role}) may not {what}: "
                            "that is for the audience of a broadcast")
        return audience

    async def raise_hand(self, member: Member, raised: bool) -> None:
        audience = self._require_audience(member, "raise a hand")
        if raised and member.id in audience.promoted:
            raise RoomError("bad_message", "you may speak already")
        if (member.id in audience.hands) == raised:
            await self._rooms.send(member, {"type": "hand", "raised": raised})
            return
        if raised:
            audience.hands[member.id] = utcnow()
        else:
            audience.hands.pop(member.id, None)
        await self._rooms._event(member.room_id, "hand_raised" if raised else "hand_lowered",
                                 member.id, {"identity": member.info.identity})
        await self._rooms.send(member, {"type": "hand", "raised": raised})
        self._hands_changed(member.room_id)

    # ---- promote / demote ---------------------------------------------------------------------
    @staticmethod
    def _require_promote(member: Member) -> None:
        if not member.grants.promote:
            raise RoomError("not_permitted", f"your role ({member.info.role}) may not let "
                            "viewers speak")

    def _viewer(self, moderator: Member, participant_id: str) -> tuple[Member, _Audience]:
        self._require_promote(moderator)
        target = self._rooms.members.get(moderator.room_id, {}).get(participant_id)
        if target is None:
            raise RoomError("unknown_participant", f"no participant {participant_id!r} in "
                            "this room")
        audience = self._state.get(moderator.room_id)
        if audience is None or target.id not in audience.members:
            raise RoomError("bad_message", f"{target.info.name} is not in the audience: only "
                            "a viewer is promoted or demoted")
        return target, audience

    async def promote(self, moderator: Member, participant_id: str, video: bool) -> None:
        rooms = self._rooms
        room_id = moderator.room_id
        async with rooms._lock(room_id):
            target, audience = self._viewer(moderator, participant_id)
            own = audience.promoted.get(target.id, target.grants)
            audience.promoted[target.id] = own
            audience.speakers[target.info.identity] = video
            was_quiet = target.quiet
            target.quiet = False
            target.grants = replace(own, publish_audio=True, publish_video=video)
            target.info.grants = target.grants.as_dict()
            audience.hands.pop(target.id, None)
            await rooms._event(room_id, "viewer_promoted", target.id, {
                "identity": target.info.identity, "by": moderator.info.identity,
                "video": video})
            await rooms._send(target, {"type": "role_changed", "me": target.info.as_dict(),
                                       "participants": rooms._visible_to(target),
                                       "promoted": True})
            await rooms.send_all(rooms._others(target), {
                "type": "participant_joined" if was_quiet else "participant_updated",
                "participant": target.info.as_dict()})
            self._hands_changed(room_id)
        if not video:  # promoted again, now without the camera
            for track in [t for t in target.info.tracks.values() if t.kind == "video"]:
                await rooms.unpublish(target, track.id)
        log.info("viewer promoted", extra={"room": room_id, "participant": target.id,
                                           "video": video})

    async def demote(self, moderator: Member, participant_id: str) -> None:
        rooms = self._rooms
        room_id = moderator.room_id
        target, audience = self._viewer(moderator, participant_id)
        if target.id not in audience.promoted:
            raise RoomError("bad_message", f"{target.info.name} has not been promoted")
        for track_id in list(target.info.tracks):
            await rooms.unpublish(target, track_id)
        async with rooms._lock(room_id):
            own = audience.promoted.pop(target.id, None)
            audience.speakers.pop(target.info.identity, None)
            if own is None or target.left:
                return
            for peer in target.publishers:
                await rooms.sfu.close_publisher(peer)
            target.publishers.clear()
            target.grants = own
            target.info.grants = own.as_dict()
            target.quiet = True
            await rooms._event(room_id, "viewer_demoted", target.id, {
                "identity": target.info.identity, "by": moderator.info.identity})
            await rooms._send(target, {"type": "role_changed", "me": target.info.as_dict(),
                                       "participants": rooms._visible_to(target),
                                       "promoted": False})
            await rooms.send_all(rooms._others(target), {
                "type": "participant_left", "participant_id": target.id,
                "reason": "demoted"})
        log.info("viewer demoted", extra={"room": room_id, "participant": target.id})

    # ---- questions ------------------------------------------------------------------------------
    async def ask(self, member: Member, text: str) -> Question:
        audience = self._require_audience(member, "ask a question")
        clean = text.strip()
        if not clean or len(clean) > MAX_QUESTION:
            raise RoomError("bad_message", f"a question is 1-{MAX_QUESTION} characters")
        pending = sum(1 for q in audience.questions.values()
                      if q.participant_id == member.id and q.status == PENDING)
        if pending >= MAX_PENDING:
            raise RoomError("too_many_questions", f"you have {pending} questions waiting for "
                            "the moderator; ask more once they are answered")
        question = Question(new_id("q"), member.id, member.info.identity, member.info.name,
                            clean, utcnow())
        audience.questions[question.id] = question
        await self._rooms._event(member.room_id, "question_asked", member.id, {
            "question_id": question.id, "identity": member.info.identity, "text": clean})
        message = {"type": "question", "question": question.as_dict()}
        await self._rooms.send_all([*self._promoters(member.room_id), member], message)
        return question

    async def answer(self, moderator: Member, question_id: str, approve: bool) -> None:
        """Approve (everyone sees it) or dismiss a pending question."""
        self._require_promote(moderator)
        room_id = moderator.room_id
        audience = self._state.get(room_id)
        question = audience.questions.get(question_id) if audience else None
        if question is None or question.status != PENDING:
            raise RoomError("unknown_question", f"no pending question {question_id!r}")
        question.status = APPROVED if approve else DISMISSED
        await self._rooms._event(room_id, f"question_{question.status}", moderator.id, {
            "question_id": question.id, "by": moderator.info.identity})
        message = {"type": "question", "question": question.as_dict()}
        if approve:
            recipients = self._rooms.members_of(room_id)
        else:
            recipients = [m for m in self._rooms.members_of(room_id)
                          if m.grants.promote or m.id == question.participant_id]
        await self._rooms.send_all(recipients, message)
