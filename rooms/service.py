"""Rooms in action: joining, leaving, publishing, subscribing, muting, ending.

The signalling layer hands each joined participant a :class:`MessageSink` (its WebSocket); this
service decides who learns what and drives the SFU. Durable history goes to the database, live
state to the :class:`RoomStateStore`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from media.peers import PublisherPeer, SubscriberPeer
from media.sfu import PublishedTrack, SdpError, Sfu
from rooms.db import Database
from rooms.models import (
    EventRecord,
    ParticipantInfo,
    RoomRecord,
    SessionRecord,
    TrackInfo,
    new_id,
    utcnow,
)
from rooms.policy import Grants, kind_policy
from rooms.store import RoomStateStore

log = logging.getLogger("huizhen.rooms")

SOURCES = {"audio": ("microphone",), "video": ("camera", "screen")}


class RoomError(Exception):
    """Refused; ``code`` is the protocol/API error code, the message is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class MessageSink(Protocol):
    async def send(self, message: dict[str, Any]) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


@dataclass(frozen=True)
class JoinRequest:
    identity: str
    name: str
    role: str
    grants: Grants
    token_id: str = ""


@dataclass
class Member:
    """A participant connected to this node."""

    info: ParticipantInfo
    sink: MessageSink
    grants: Grants
    publishers: list[PublisherPeer] = field(default_factory=list)
    subscriber: SubscriberPeer | None = None
    left: bool = False

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def room_id(self) -> str:
        return self.info.room_id


class RoomService:
    def __init__(self, db: Database, store: RoomStateStore, sfu: Sfu) -> None:
        self.db = db
        self.store = store
        self.sfu = sfu
        self.members: dict[str, dict[str, Member]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # ---- life cycle ---------------------------------------------------------------------
    async def start(self) -> None:
        closed = await self.db.close_open_sessions(utcnow(), "server_restart")
        if closed:
            log.info("closed sessions left open by the previous run", extra={"count": closed})

    async def stop(self) -> None:
        """Record everyone as gone (before their sockets close), then close the sockets."""
        for room_id in list(self.members):
            for member in list(self.members.get(room_id, {}).values()):
                await self.leave(member, "server_shutdown")
                with contextlib.suppress(Exception):
                    await member.sink.close(1012, "server restarting")
        await self.sfu.close()

    def _lock(self, room_id: str) -> asyncio.Lock:
        return self._locks.setdefault(room_id, asyncio.Lock())

    # ---- rooms ----------------------------------------------------------------------------
    async def create_room(self, kind: str, title: str, patient_ref: str | None = None,
                          scheduled_start: datetime | None = None,
                          scheduled_end: datetime | None = None,
                          created_by: str | None = None) -> RoomRecord:
        kind_policy(kind)  # PolicyError for an unknown kind
        room = RoomRecord(id=new_id("r"), kind=kind, title=title, created_at=utcnow(),
                          patient_ref=patient_ref, scheduled_start=scheduled_start,
                          scheduled_end=scheduled_end, created_by=created_by)
        await self.db.create_room(room)
        await self._event(room.id, "room_created", None, {"kind": kind, "by": created_by})
        return room

    async def get_room(self, room_id: str) -> RoomRecord:
        room = await self.db.get_room(room_id)
        if room is None:
            raise RoomError("room_not_found", f"no room {room_id!r}")
        return room

    async def room_state(self, room_id: str) -> dict[str, Any]:
        room = await self.get_room(room_id)
        participants = await self.store.participants(room_id)
        return {**room.as_dict(), "participants": [p.as_dict() for p in participants]}

    async def end_room(self, room_id: str, reason: str = "ended", by: str | None = None
                       ) -> RoomRecord:
        room = await self.get_room(room_id)
        if room.status == "ended":
            raise RoomError("room_ended", f"room {room_id} has already ended")
        await self.db.end_room(room_id, utcnow(), reason)
        await self._event(room_id, "room_ended", None, {"reason": reason, "by": by})
        for member in list(self.members.get(room_id, {}).values()):
            with contextlib.suppress(Exception):
                await member.sink.send({"type": "room_ended", "reason": reason})
            await self.leave(member, "room_ended")
            with contextlib.suppress(Exception):
                await member.sink.close(4010, "room ended")
        return await self.get_room(room_id)

    # ---- participants ---------------------------------------------------------------------
    async def join(self, room_id: str, request: JoinRequest, sink: MessageSink
                   ) -> tuple[Member, dict[str, Any]]:
        room = await self.get_room(room_id)
        if room.status != "open":
            raise RoomError("room_ended", "this consultation has ended")
        policy = kind_policy(room.kind)
        async with self._lock(room_id):
            for other in list(self.members.get(room_id, {}).values()):
                if other.info.identity == request.identity:
                    with contextlib.suppress(Exception):
                        await other.sink.close(4009, "joined elsewhere")
                    await self._leave_locked(other, "replaced")
            if await self.store.count(room_id) >= policy.max_participants:
                raise RoomError("room_full", f"the room is full ({policy.max_participants})")
            info = ParticipantInfo(id=new_id("p"), room_id=room_id, identity=request.identity,
                                   name=request.name, role=request.role,
                                   grants=request.grants.as_dict(), joined_at=utcnow())
            member = Member(info=info, sink=sink, grants=request.grants)
            others = list(self.members.get(room_id, {}).values())
            await self.store.add_participant(info)
            self.members.setdefault(room_id, {})[info.id] = member
            await self.db.session_started(SessionRecord(
                id=info.id, room_id=room_id, identity=info.identity, name=info.name,
                role=info.role, joined_at=info.joined_at, token_id=request.token_id or None))
            await self._event(room_id, "participant_joined", info.id,
                              {"identity": info.identity, "role": info.role})
            await self._broadcast(others, {"type": "participant_joined",
                                           "participant": info.as_dict()})
            if member.grants.subscribe:
                member.subscriber = self.sfu.subscriber(self._offer_sender(member))
                for other in others:
                    for track in other.info.tracks.values():
                        self._subscribe(member, other, track)
        joined = {
            "room": {"id": room.id, "kind": room.kind, "title": room.title,
                     "status": room.status},
            "me": info.as_dict(),
            "participants": [o.info.as_dict() for o in others],
            "ice_servers": self.sfu.policy.client_ice_servers(),
            "video_codec": self.sfu.video_codec,
        }
        log.info("participant joined", extra={"room": room_id, "participant": info.id,
                                              "role": info.role})
        return member, joined

    async def leave(self, member: Member, reason: str) -> None:
        async with self._lock(member.room_id):
            await self._leave_locked(member, reason)

    async def _leave_locked(self, member: Member, reason: str) -> None:
        if member.left:
            return
        member.left = True
        room_id = member.room_id
        self.members.get(room_id, {}).pop(member.id, None)
        if not self.members.get(room_id):
            self.members.pop(room_id, None)
        others = list(self.members.get(room_id, {}).values())
        for track_id in list(member.info.tracks):
            for other in others:
                if other.subscriber is not None:
                    other.subscriber.unsubscribe(track_id)
        for peer in member.publishers:
            await self.sfu.close_publisher(peer)
        if member.subscriber is not None:
            await self.sfu.close_subscriber(member.subscriber)
        await self.store.remove_participant(room_id, member.id)
        await self.db.session_ended(member.id, utcnow(), reason)
        await self._event(room_id, "participant_left", member.id, {"reason": reason})
        await self._broadcast(others, {"type": "participant_left", "participant_id": member.id,
                                       "reason": reason})
        log.info("participant left", extra={"room": room_id, "participant": member.id,
                                            "reason": reason})

    # ---- media -------------------------------------------------------------------------------
    async def publish(self, member: Member, sdp: str, tracks: list[dict[str, Any]]
                      ) -> dict[str, Any]:
        """Answer a publish offer; every track is checked against the grants first."""
        if not tracks:
            raise RoomError("bad_message", "publish needs at least one track")
        for t in tracks:
            if t["source"] not in SOURCES.get(t["kind"], ()):
                raise RoomError("bad_message", f"a {t['kind']} track cannot come from "
                                               f"{t['source']!r}")
            if not member.grants.allows_kind(t["kind"], t["source"]):
                raise RoomError("not_permitted", f"your role ({member.info.role}) may not "
                                                 f"publish {t['source']} {t['kind']}")
        mids = [t["mid"] for t in tracks]
        if len(set(mids)) != len(mids):
            raise RoomError("bad_message", "each track needs its own mid")
        published = [PublishedTrack(t["mid"], t["kind"], new_id("t")) for t in tracks]
        try:
            peer, answer = await self.sfu.publish(sdp, published)
        except SdpError as exc:
            raise RoomError("bad_sdp", str(exc)) from exc
        async with self._lock(member.room_id):
            if member.left:
                await self.sfu.close_publisher(peer)
                raise RoomError("not_joined", "you have left the room")
            member.publishers.append(peer)
            others = [o for o in self.members.get(member.room_id, {}).values()
                      if o is not member]
            for spec, pub in zip(tracks, published, strict=True):
                source = peer.sources[pub.track_id]
                codec = source.mime_type.split("/")[1].upper()
                track = TrackInfo(id=pub.track_id, participant_id=member.id, kind=pub.kind,
                                  source=spec["source"], muted=bool(spec.get("muted")),
                                  codec=codec)
                member.info.tracks[track.id] = track
                await self.store.add_track(member.room_id, track)
                await self._event(member.room_id, "track_published", member.id,
                                  {"track_id": track.id, "kind": track.kind,
                                   "source": track.source})
                await self._broadcast(others, {"type": "track_published",
                                               "track": track.as_dict()})
                for other in others:
                    self._subscribe(other, member, track)
        return {"sdp": answer,
                "tracks": [{"mid": p.mid, "track_id": p.track_id} for p in published]}

    async def unpublish(self, member: Member, track_id: str) -> None:
        async with self._lock(member.room_id):
            track = member.info.tracks.pop(track_id, None)
            if track is None:
                raise RoomError("unknown_track", f"you have no track {track_id!r}")
            for other in self.members.get(member.room_id, {}).values():
                if other.subscriber is not None:
                    other.subscriber.unsubscribe(track_id)
            self.sfu.close_source(track_id)
            await self.store.remove_track(member.room_id, member.id, track_id)
            await self._event(member.room_id, "track_unpublished", member.id,
                              {"track_id": track_id})
            await self._broadcast(self._others(member), {
                "type": "track_unpublished", "track_id": track_id,
                "participant_id": member.id})

    async def mute(self, member: Member, track_id: str, muted: bool) -> None:
        track = member.info.tracks.get(track_id)
        if track is None:
            raise RoomError("unknown_track", f"you have no track {track_id!r}")
        track.muted = muted
        await self.store.set_muted(member.room_id, member.id, track_id, muted)
        await self._broadcast(self._others(member), {
            "type": "track_muted", "track_id": track_id, "participant_id": member.id,
            "muted": muted})

    async def subscriber_answer(self, member: Member, sdp: str, seq: int) -> None:
        if member.subscriber is None:
            raise RoomError("not_permitted", "this participant does not receive media")
        try:
            await member.subscriber.on_answer(sdp, seq)
        except SdpError as exc:
            raise RoomError("bad_sdp", str(exc)) from exc

    # ---- helpers -------------------------------------------------------------------------------
    def _subscribe(self, subscriber: Member, publisher: Member, track: TrackInfo) -> None:
        source = self.sfu.sources.get(track.id)
        if subscriber.subscriber is None or source is None:
            return
        subscriber.subscriber.subscribe(source, {
            "participant_id": publisher.id, "kind": track.kind, "source": track.source})

    def _offer_sender(self, member: Member) -> Any:
        async def send_offer(sdp: str, tracks: list[dict[str, Any]], seq: int) -> None:
            await member.sink.send({"type": "subscriber_offer", "sdp": sdp, "seq": seq,
                                    "tracks": tracks})
        return send_offer

    def _others(self, member: Member) -> list[Member]:
        return [o for o in self.members.get(member.room_id, {}).values() if o is not member]

    async def _broadcast(self, members: list[Member], message: dict[str, Any]) -> None:
        if members:
            await asyncio.gather(*(m.sink.send(message) for m in members),
                                 return_exceptions=True)

    async def _event(self, room_id: str, type_: str, participant_id: str | None,
                     data: dict[str, Any]) -> None:
        await self.db.log_event(EventRecord(room_id=room_id, type=type_, at=utcnow(),
                                            participant_id=participant_id, data=data))
