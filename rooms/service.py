"""Rooms in action: joining, leaving, publishing, subscribing, muting, ending.

The signalling layer hands each joined participant a :class:`MessageSink` (its WebSocket); this
service decides who learns what and drives the SFU. Durable history goes to the database, live
state to the :class:`RoomStateStore`. The types it speaks (members, errors, the observer
interface) are in rooms/members.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from huizhen.logs import bind, context_of
from media.background import spawn
from media.sfu import PublishedTrack, SdpError, Sfu
from media.source import MediaTrack
from rooms.agenda import Agenda
from rooms.appointments import Appointments, check_window
from rooms.broadcast import Broadcast
from rooms.db import Database
from rooms.hosts import Hosts
from rooms.members import (
    ACTIVE,
    HELD,
    LOBBY,
    SOURCES,
    JoinRequest,
    Member,
    MessageSink,
    RoomError,
    RoomObserver,
)
from rooms.models import (
    EventRecord,
    ParticipantInfo,
    RoomRecord,
    SessionRecord,
    TrackInfo,
    new_id,
    utcnow,
)
from rooms.moderation import Moderation
from rooms.policy import CARE_TEAM, grants_for, kind_policy, role_policy
from rooms.quality import ConnectionQuality
from rooms.speakers import ActiveSpeakers
from rooms.store import RoomStateStore
from rooms.subjects import Subjects

log = logging.getLogger("huizhen.rooms")



class RoomService:
    def __init__(self, db: Database, store: RoomStateStore, sfu: Sfu,
                 unattended_end_s: float = 600.0, join_early_s: float = 900.0) -> None:
        self.db = db
        self.join_early = timedelta(seconds=join_early_s)
        self.appointments = Appointments(db)
        self.store = store
        self.sfu = sfu
        self.members: dict[str, dict[str, Member]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._marks_restored: set[str] = set()
        self.speakers = ActiveSpeakers(self)
        self.quality = ConnectionQuality(self)
        self._observers: list[RoomObserver] = []
        self.subjects = Subjects(self)
        self.hosts = Hosts(self, unattended_end_s)
        self.audience = Broadcast(self)
        self.agenda = Agenda(self)
        self.moderation = Moderation(self)
        #: a draining node takes no new rooms or joins (signaling/drain.py)
        self.draining = False

    def add_observer(self, observer: RoomObserver) -> None:
        self._observers.append(observer)

    @property
    def observers(self) -> list[RoomObserver]:
        return list(self._observers)

    def _media_changed(self, room_id: str) -> None:
        for observer in self._observers:
            try:
                observer.media_changed(room_id)
            except Exception:  # an observer's trouble never stops the room
                log.exception("room observer failed", extra={"room": room_id})

    # ---- life cycle ---------------------------------------------------------------------
    async def start(self) -> None:
        closed = await self.db.close_open_sessions(utcnow(), "server_restart")
        if closed:
            log.info("closed sessions left open by the previous run", extra={"count": closed})
        self.speakers.start()
        self.quality.start()

    async def stop(self) -> None:
        """Record everyone as gone (before their sockets close), then close the sockets."""
        self.speakers.stop()
        self.quality.stop()
        await self.send_away("server_shutdown")
        await self.hosts.stop()
        await self.sfu.close()

    def _refuse_if_draining(self) -> None:
        if self.draining:
            raise RoomError("draining", "this server is restarting and takes no new rooms or "
                            "participants; try again in a few seconds (or on another node)")

    async def send_away(self, reason: str, hint: dict[str, Any] | None = None) -> int:
        """Record everyone on this node as gone (``reason``), send each ``hint`` first if
        given, then close their sockets with 1012 (reconnect). Returns how many there were."""
        closing = []
        for room_id in list(self.members):
            for member in list(self.members.get(room_id, {}).values()):
                if hint is not None:
                    await member.sink.send(hint)
                await self.leave(member, reason)
                closing.append(spawn(member.sink.close(1012, "server restarting")))
        if closing:  # concurrently, and a dead client's close handshake is not waited out
            await asyncio.wait(closing, timeout=2)
        return len(closing)

    def _lock(self, room_id: str) -> asyncio.Lock:
        return self._locks.setdefault(room_id, asyncio.Lock())

    # ---- rooms ----------------------------------------------------------------------------
    async def create_room(self, kind: str, title: str, patient_ref: str | None = None,
                          scheduled_start: datetime | None = None,
                          scheduled_end: datetime | None = None,
                          created_by: str | None = None,
                          auto_record: bool | None = None) -> RoomRecord:
        kind_policy(kind)  # PolicyError for an unknown kind
        self._refuse_if_draining()
        room = RoomRecord(id=new_id("r"), kind=kind, title=title, created_at=utcnow(),
                          patient_ref=patient_ref, scheduled_start=scheduled_start,
                          scheduled_end=scheduled_end, created_by=created_by,
                          auto_record=auto_record)
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
        return {**room.as_dict(), "participants": [
            {**p.as_dict(), "quality": self.quality.current(room_id, p.id)}
            for p in participants]}

    async def end_room(self, room_id: str, reason: str = "ended", by: str | None = None
                       ) -> RoomRecord:
        room = await self.get_room(room_id)
        if room.status == "ended":
            raise RoomError("room_ended", f"room {room_id} has already ended")
        await self.db.end_room(room_id, utcnow(), reason)
        await self._event(room_id, "room_ended", None, {"reason": reason, "by": by})
        for observer in self._observers:  # the recording is finished while media still flows
            try:
                await observer.room_ended(room_id)
            except Exception:
                log.exception("room observer failed", extra={"room": room_id})
        self.subjects.forget(room_id)
        self.hosts.forget(room_id)
        self.audience.forget(room_id)
        self.agenda.forget(room_id)
        members = list(self.members.get(room_id, {}).values())
        for member in members:  # everyone hears it first, before anything else can fail
            await self._send(member, {"type": "room_ended", "reason": reason})
        for member in members:
            await self.leave(member, "room_ended")
        await self.store.clear_room(room_id)
        for member in members:
            spawn(member.sink.close(4010, "room ended"))
        return await self.get_room(room_id)

    # ---- participants ---------------------------------------------------------------------
    async def join(self, room_id: str, request: JoinRequest, sink: MessageSink
                   ) -> tuple[Member, dict[str, Any]]:
        self._refuse_if_draining()
        room = await self.get_room(room_id)
        if room.status != "open":
            raise RoomError("room_ended", "this consultation has ended")
        check_window(room, self.join_early)
        policy = kind_policy(room.kind)
        await self._restore_marks(room_id)
        role = self.hosts.role_for(room_id, request.identity, request.role)
        if role != request.role:  # a hand-off changed it: its grants come with it
            request = replace(request, role=role, grants=grants_for(room.kind, role))
        if await self.store.identity_marked(room_id, "removed", request.identity):
            raise RoomError("removed", "a moderator removed you from this consultation")
        waits = (role_policy(room.kind, request.role).waits_in_lobby
                 and not request.grants.moderate
                 and not await self.store.identity_marked(room_id, "admitted",
                                                          request.identity))
        own, quiet = request.grants, role_policy(room.kind, request.role).quiet
        speaking = self.audience.returning_speaker(room_id, request.identity, own)
        if quiet and speaking is not None:  # promoted before: a speaker again at once
            request, quiet = replace(request, grants=speaking), False
        async with self._lock(room_id):
            for other in list(self.members.get(room_id, {}).values()):
                if other.info.identity == request.identity:
                    # after a network switch the old socket may be half dead: its close
                    # handshake must not hold up the rejoin (or the room)
                    await self._leave_locked(other, "replaced")
                    spawn(other.sink.close(4009, "joined elsewhere"))
            if await self.store.count(room_id) >= policy.max_participants:
                raise RoomError("room_full", f"the room is full ({policy.max_participants})")
            info = ParticipantInfo(id=new_id("p"), room_id=room_id, identity=request.identity,
                                   name=request.name, role=request.role,
                                   grants=request.grants.as_dict(), joined_at=utcnow(),
                                   state=LOBBY if waits else ACTIVE)
            member = Member(info=info, sink=sink, grants=request.grants, quiet=quiet,
                            room_kind=room.kind)
            bind(room=room_id, participant=info.id)  # the ids the caller's logs carry from here
            await self.store.add_participant(info)
            self.members.setdefault(room_id, {})[info.id] = member
            await self.db.session_started(SessionRecord(
                id=info.id, room_id=room_id, identity=info.identity, name=info.name,
                role=info.role, joined_at=info.joined_at, token_id=request.token_id or None,
                department=request.department), EventRecord(
                room_id=room_id, type="participant_joined", at=utcnow(),
                participant_id=info.id,
                data={"identity": info.identity, "role": info.role, "state": info.state}))
            await self.send_all(self._audience(member), {"type": "participant_joined",
                                                           "participant": info.as_dict()})
            self._start_media(member)  # in the lobby: connected, nothing flows (admit)
            if info.state == ACTIVE:
                await self.speakers.tell(member)
            self.hosts.membership_changed(room_id)
        room_info: dict[str, Any] = {"id": room.id, "kind": room.kind, "title": room.title,
                                     "status": room.status, "recording": False,
                                     "subject": None if info.state == LOBBY
                                     else self.subjects.state(room_id),
                                     "agenda": None if info.state == LOBBY
                                     else await self.agenda.state(room_id),
                                     "documents": [k.value for k in policy.documents]
                                     if info.role in CARE_TEAM else []}
        room_info.update(self.audience.joined(member, policy, own))
        for observer in self._observers:
            room_info.update(await observer.joined_state(room_id))
        joined = {
            "room": room_info,
            "me": info.as_dict(),
            "participants": self._visible_to(member),
            "ice_servers": self.sfu.policy.client_ice_servers(),
            "video_codec": self.sfu.video_codec,
            "simulcast": kind_policy(room.kind).simulcast,
        }
        log.info("participant joined", extra={"room": room_id, "participant": info.id,
                                              "role": info.role})
        for observer in self._observers:
            try:
                await observer.participant_joined(member)
            except Exception:
                log.exception("room observer failed", extra={"room": room_id})
        return member, joined

    async def leave(self, member: Member, reason: str) -> None:
        async with self._lock(member.room_id):
            await self._leave_locked(member, reason)

    async def _leave_locked(self, member: Member, reason: str) -> None:
        if member.left:
            return
        member.left = True
        room_id = member.room_id
        audience = self._audience(member)
        self.members.get(room_id, {}).pop(member.id, None)
        if not self.members.get(room_id):
            self.members.pop(room_id, None)
        others = list(self.members.get(room_id, {}).values())
        self._stop_forwarding_from(member, others)
        self._media_changed(room_id)  # before its tracks close: a recording ends them cleanly
        for peer in member.publishers:
            await self.sfu.close_publisher(peer)
        if member.subscriber is not None:
            await self.sfu.close_subscriber(member.subscriber)
        await self.store.remove_participant(room_id, member.id)
        self.speakers.forget(room_id, member.id)
        await self.audience.left(member)
        await self.db.session_ended(member.id, utcnow(), reason)
        await self._event(room_id, "participant_left", member.id,
                          {"identity": member.info.identity, "role": member.info.role,
                           "reason": reason})
        await self.send_all(audience, {"type": "participant_left",
                                         "participant_id": member.id, "reason": reason})
        log.info("participant left", extra={"room": room_id, "participant": member.id,
                                            "reason": reason})
        if reason != "room_ended":
            self.hosts.membership_changed(room_id)

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
        if member.info.state == HELD:  # the lobby publishes ahead; nothing goes out until admit
            raise RoomError("not_admitted", "you are on hold")
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
            others = self._others(member)
            for spec, pub in zip(tracks, published, strict=True):
                source = peer.tracks[pub.track_id]
                codec = source.mime_type.split("/")[1].upper()
                track = TrackInfo(id=pub.track_id, participant_id=member.id, kind=pub.kind,
                                  source=spec["source"], muted=bool(spec.get("muted")),
                                  codec=codec)
                member.info.tracks[track.id] = track
                await self.store.add_track(member.room_id, track)
                await self._event(member.room_id, "track_published", member.id,
                                  {"track_id": track.id, "kind": track.kind,
                                   "source": track.source})
                await self.send_all(self._audience(member), {"type": "track_published",
                                                               "track": track.as_dict()})
                for other in others:
                    self._subscribe(other, member, track)
            self._media_changed(member.room_id)
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
            self._media_changed(member.room_id)
            self.sfu.close_track(track_id)
            await self.store.remove_track(member.room_id, member.id, track_id)
            await self._event(member.room_id, "track_unpublished", member.id,
                              {"track_id": track_id})
            await self.send_all(self._audience(member), {
                "type": "track_unpublished", "track_id": track_id,
                "participant_id": member.id})

    async def mute(self, member: Member, track_id: str, muted: bool) -> None:
        track = member.info.tracks.get(track_id)
        if track is None:
            raise RoomError("unknown_track", f"you have no track {track_id!r}")
        await self._set_muted(member, track, muted, self._audience(member))

    def set_video_size(self, member: Member, track_id: str, max_height: int) -> None:
        """The member shows that track at most ``max_height`` pixels tall (0: no limit)."""
        if member.subscriber is None or not member.subscriber.set_video_size(
                track_id, max_height or None):
            raise RoomError("unknown_track", f"you do not receive a track {track_id!r}")

    async def subscriber_answer(self, member: Member, sdp: str, seq: int) -> None:
        if member.subscriber is None:
            raise RoomError("not_permitted", "this participant does not receive media")
        try:
            await member.subscriber.on_answer(sdp, seq)
        except SdpError as exc:
            raise RoomError("bad_sdp", str(exc)) from exc

    # ---- chat -----------------------------------------------------------------------------------
    async def chat(self, member: Member, text: str) -> None:
        if not member.grants.send_data:
            raise RoomError("not_permitted", f"your role ({member.info.role}) may not chat")
        if member.info.state != ACTIVE:
            raise RoomError("not_admitted", "chat opens once you are in the consultation")
        at = utcnow()
        event_id = await self._event(member.room_id, "chat", member.id,
                                     {"name": member.info.name, "text": text})
        recipients = [m for m in self.members.get(member.room_id, {}).values()
                      if m.info.state == ACTIVE]
        await self.send_all(recipients, {
            "type": "chat", "id": event_id, "participant_id": member.id,
            "name": member.info.name, "text": text, "at": at.isoformat()})

    # ---- active speaker ----------------------------------------------------------------------
    # ---- for the other parts (recording) ------------------------------------------------------
    def members_of(self, room_id: str) -> list[Member]:
        """Everyone connected to the room on this node (the lobby included)."""
        return list(self.members.get(room_id, {}).values())

    def audible_tracks(self, room_id: str) -> list[tuple[Member, TrackInfo, MediaTrack]]:
        """The tracks the room hears and sees: those of active participants (not the lobby,
        not someone on hold)."""
        out = []
        for member in self.members_of(room_id):
            if member.info.state != ACTIVE:
                continue
            for track in member.info.tracks.values():
                media = self.sfu.tracks.get(track.id)
                if media is not None:
                    out.append((member, track, media))
        return out

    async def send(self, member: Member, message: dict[str, Any]) -> None:
        await self._send(member, message)

    async def broadcast(self, room_id: str, message: dict[str, Any]) -> None:
        """To everyone connected to the room, the lobby included."""
        await self.send_all(self.members_of(room_id), message)

    # ---- helpers -------------------------------------------------------------------------------
    async def _restore_marks(self, room_id: str) -> None:
        """After a start, bring back who was admitted, removed or promoted to speak, the
        host hand-offs and the patient under discussion (from the event log)."""
        if room_id in self._marks_restored:
            return
        self._marks_restored.add(room_id)
        marks = {"participant_admitted": "admitted", "participant_removed": "removed"}
        after = 0
        while True:
            events = await self.db.events_for_room(room_id, after_id=after)
            for event in events:
                identity = event.data.get("identity")
                if event.type in marks and isinstance(identity, str):
                    await self.store.mark_identity(room_id, marks[event.type], identity)
                elif event.type == "subject_changed":
                    self.subjects.restore(event)
                elif event.type == "host_handed_off":
                    self.hosts.restore(event)
                elif event.type in ("viewer_promoted", "viewer_demoted") and isinstance(
                        identity, str):
                    self.audience.restore(room_id, event.type == "viewer_promoted", identity,
                                          bool(event.data.get("video")))
            if not events:
                return
            after = events[-1].id or after

    @staticmethod
    def _sees(viewer: Member, subject: Member) -> bool:
        """Lobby participants see nobody, only moderators the lobby; nobody the quiet."""
        if viewer.info.state == LOBBY or subject.quiet:
            return False
        return subject.info.state != LOBBY or viewer.grants.moderate

    def _audience(self, subject: Member) -> list[Member]:
        """The others who are told about ``subject``."""
        return [o for o in self._others(subject) if self._sees(o, subject)]

    def _visible_to(self, viewer: Member) -> list[dict[str, Any]]:
        return [o.info.as_dict() for o in self._others(viewer) if self._sees(viewer, o)]

    def _require_moderator(self, member: Member) -> None:
        if not member.grants.moderate:
            raise RoomError("not_permitted", f"your role ({member.info.role}) may not moderate")

    def _target(self, moderator: Member, participant_id: str) -> Member:
        self._require_moderator(moderator)
        target = self.members.get(moderator.room_id, {}).get(participant_id)
        if target is None or target is moderator:
            raise RoomError("unknown_participant", f"no other participant {participant_id!r} "
                                                   "in this room")
        return target

    async def _set_state(self, member: Member, state: str) -> None:
        member.info.state = state
        await self.store.set_state(member.room_id, member.id, state)

    async def _set_muted(self, member: Member, track: TrackInfo, muted: bool,
                         recipients: list[Member]) -> None:
        track.muted = muted
        await self.store.set_muted(member.room_id, member.id, track.id, muted)
        await self.send_all(recipients, {
            "type": "track_muted", "track_id": track.id, "participant_id": member.id,
            "muted": muted})

    def _start_media(self, member: Member) -> None:
        """An active participant receives the active others, and they receive it. One in the
        lobby gets its subscribe connection negotiated and connected, held: no media flows
        until it is admitted (instant admission)."""
        if member.grants.subscribe and member.subscriber is None:
            # its tasks log with its own ids, whoever's message made it (huizhen/logs.py)
            member.subscriber = context_of(member.room_id, member.id).run(
                self.sfu.subscriber, self._offer_sender(member), member.id,
                self._pause_notifier(member))
            member.subscriber.set_held(member.info.state == LOBBY)
        for other in self._others(member):
            for track in other.info.tracks.values():
                self._subscribe(member, other, track)
            for track in member.info.tracks.values():
                self._subscribe(other, member, track)

    @staticmethod
    def _stop_forwarding_from(member: Member, others: list[Member]) -> None:
        for track_id in member.info.tracks:
            for other in others:
                if other.subscriber is not None:
                    other.subscriber.unsubscribe(track_id)

    async def _send(self, member: Member, message: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            await member.sink.send(message)

    def _subscribe(self, subscriber: Member, publisher: Member, track: TrackInfo) -> None:
        source = self.sfu.tracks.get(track.id)
        if (subscriber.subscriber is None or source is None
                or subscriber.info.state == HELD or publisher.info.state != ACTIVE):
            return
        subscriber.subscriber.subscribe(source, {
            "participant_id": publisher.id, "kind": track.kind, "source": track.source})

    def _offer_sender(self, member: Member) -> Any:
        async def send_offer(sdp: str, tracks: list[dict[str, Any]], seq: int) -> None:
            await member.sink.send({"type": "subscriber_offer", "sdp": sdp, "seq": seq,
                                    "tracks": tracks})
        return send_offer

    def _pause_notifier(self, member: Member) -> Any:
        async def video_paused(track_id: str, meta: dict[str, Any], paused: bool) -> None:
            await self._send(member, {"type": "video_paused", "track_id": track_id,
                                      "participant_id": meta.get("participant_id"),
                                      "paused": paused, "reason": "network"})
        return video_paused

    def _others(self, member: Member) -> list[Member]:
        return [o for o in self.members.get(member.room_id, {}).values() if o is not member]

    async def send_all(self, members: list[Member], message: dict[str, Any]) -> None:
        """To each of ``members`` at once; one that fails does not hold up the others."""
        if members:
            await asyncio.gather(*(m.sink.send(message) for m in members),
                                 return_exceptions=True)

    async def _event(self, room_id: str, type_: str, participant_id: str | None,
                     data: dict[str, Any]) -> int:
        return await self.db.log_event(EventRecord(room_id=room_id, type=type_, at=utcnow(),
                                                   participant_id=participant_id, data=data))
