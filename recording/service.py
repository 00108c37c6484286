"""Recording control: consent first, moderators only, everyone told, nothing lost on a crash.

* A recording starts only when the room's patient has a recorded *recording* consent (given
  in the client by the patient or guardian after a clinician asked, or entered through the
  API with how it was obtained), or when a clinician starts it with an override reason, which
  goes into the room's event log. A room (or its kind, in rooms/policy.py) can record by
  itself once consent exists.
* Start, stop, pause and resume need the ``record`` grant (moderators) or the API.
* Every participant gets ``recording`` state events; joiners get the state in ``joined``.
* It listens to the rooms (``RoomObserver``): it records what the room hears (the tracks of
  active participants), follows the active speaker, and stops when the room ends.
* Stopping closes the files and queues the jobs that store and compose them (a worker
  process runs those); a recording found unfinished at start (a crash) is marked
  interrupted and finished the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from media.background import spawn
from recording.capture import TrackMeta
from recording.db import Consent, Recording, RecordingDb
from recording.session import RoomRecording, read_journal, write_json
from rooms.members import Member, RoomError
from rooms.models import EventRecord, new_id, utcnow
from rooms.policy import kind_policy, role_policy
from rooms.service import RoomService
from rooms.subjects import Subject

log = logging.getLogger("huizhen.recording")

TICK_S = 0.1
CONSENT_METHODS = ("in_client", "verbal", "written", "portal", "other")
CONSENT_GIVERS = ("patient", "guardian")
MIN_OVERRIDE_REASON = 5


@dataclass(frozen=True)
class Actor:
    """Who asks: a participant (by identity) or a hospital system (by API key)."""

    identity: str
    via: str  # client | api | system
    name: str = ""


class RecordingService:
    def __init__(self, rooms: RoomService, db: RecordingDb, folder: Path) -> None:
        self.rooms = rooms
        self.db = db
        self.folder = folder
        self.active: dict[str, RoomRecording] = {}
        self._consent_asked: dict[str, str] = {}  # room → identity of the clinician who asked
        #: per room: whose consent is cached (the patient under discussion) and its decision
        self._consent: dict[str, tuple[str | None, Consent | None]] = {}
        self._wanted: set[str] = set()  # rooms to record (started and not stopped by anyone)
        self._tick_task: asyncio.Task[None] | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._resume_checked: set[str] = set()  # rooms looked at for a drain's recording
        rooms.add_observer(self)

    # ---- life cycle --------------------------------------------------------------------
    async def start_service(self) -> None:
        await self.recover()
        self._tick_task = spawn(self._tick_loop())

    async def stop_service(self) -> None:
        if self._tick_task is not None:
            self._tick_task.cancel()
        for room_id in list(self.active):
            await self.stop(room_id, Actor("server", "system"), "server_shutdown")

    async def recover(self) -> None:
        """Recordings left running by a crash: mark them interrupted and finish them."""
        for recording in await self.db.recordings(status=("recording", "paused")):
            folder = self.folder / recording.id
            duration, ended = 0.0, utcnow()
            try:
                journal = read_journal(folder)
                mtimes = [p.stat().st_mtime for p in folder.rglob("*") if p.is_file()]
                last = max(mtimes, default=time.time())
                ended = datetime.fromtimestamp(last, UTC)
                duration = _journal_duration(journal, last)
                journal.update(status="interrupted", duration_s=round(duration, 3),
                               ended_at=last)
                for track in journal["tracks"]:
                    track["closed"] = True
                write_json(folder / "journal.json", journal)
            except (ValueError, OSError) as exc:
                log.warning("an interrupted recording has no readable journal",
                            extra={"recording": recording.id, "error": str(exc)})
            await self.db.update_recording(recording.id, status="interrupted", interrupted=True,
                                           ended_at=ended, duration_s=round(duration, 3))
            await self._log(recording.room_id, "recording_interrupted",
                            {"recording_id": recording.id})
            await self.db.add_job(recording.id, "store")
            await self.db.add_job(recording.id, "composite")
            log.warning("recording was interrupted by a restart; its files are being finished",
                        extra={"recording": recording.id})

    def _lock(self, room_id: str) -> asyncio.Lock:
        return self._locks.setdefault(room_id, asyncio.Lock())

    # ---- control -------------------------------------------------------------------------
    async def start(self, room_id: str, actor: Actor, override_reason: str | None = None
                    ) -> Recording:
        async with self._lock(room_id):
            room = await self.rooms.get_room(room_id)
            if room.status != "open":
                raise RoomError("room_ended", "this consultation has ended")
            current = self.active.get(room_id)
            if current is not None:
                raise RoomError("recording_active", "the consultation is being recorded already"
                                if not current.paused else "the recording is paused: resume it")
            patient_ref, segment_id = await self._whose(room_id)
            consent = await self.consent(room_id)
            reason = (override_reason or "").strip() or None
            if consent is None or not consent.granted:
                if reason is None:
                    raise RoomError("consent_required", (
                        "the patient declined recording" if consent is not None else
                        "the patient has not agreed to recording yet") +
                        ": ask for consent, or start with an override reason (it is logged)")
                if len(reason) < MIN_OVERRIDE_REASON:
                    raise RoomError("bad_message", "an override reason must say why "
                                    f"(at least {MIN_OVERRIDE_REASON} characters)")
            else:
                reason = None  # consent exists: no override to log
            recording_id = new_id("rec")
            session = RoomRecording(recording_id, room_id, self.folder / recording_id,
                                    actor.identity, reason,
                                    consent.id if consent and consent.granted else None)
            record = Recording(id=recording_id, room_id=room_id, status="recording",
                               started_at=utcnow(), started_by=actor.identity,
                               consent_id=session.consent_id, override_reason=reason,
                               patient_ref=patient_ref, segment_id=segment_id)
            await self.db.add_recording(record)
            self.active[room_id] = session
            self._wanted.add(room_id)
            await self._log(room_id, "recording_started", {
                "recording_id": recording_id, "by": actor.identity, "via": actor.via,
                "consent_id": session.consent_id, "override_reason": reason})
            log.info("recording started", extra={"room": room_id, "recording": recording_id,
                                                 "override": reason is not None})
            self._sync(room_id)
        await self._announce(room_id)
        return record

    async def stop(self, room_id: str, actor: Actor, reason: str = "stopped") -> Recording:
        """Stop and finish the recording; only a cut (``subject_changed``) leaves the room
        wanting the next patient's segment recorded."""
        async with self._lock(room_id):
            session = self.active.pop(room_id, None)
            if reason != "subject_changed":
                self._wanted.discard(room_id)
            if session is None:
                raise RoomError("not_recording", "the consultation is not being recorded")
            duration = session.stop()
            await self.db.update_recording(session.id, status="stopped", ended_at=utcnow(),
                                           duration_s=round(duration, 3))
            await self._log(room_id, "recording_stopped", {
                "recording_id": session.id, "by": actor.identity, "reason": reason,
                "duration_s": round(duration, 3)})
            await self.db.add_job(session.id, "store")
            await self.db.add_job(session.id, "composite")
            log.info("recording stopped", extra={"room": room_id, "recording": session.id,
                                                 "duration_s": round(duration, 1)})
        await self._announce(room_id, reason=reason)
        found = await self.db.get_recording(session.id)
        assert found is not None
        return found

    async def pause(self, room_id: str, actor: Actor, paused: bool = True) -> None:
        async with self._lock(room_id):
            session = self.active.get(room_id)
            if session is None:
                raise RoomError("not_recording", "the consultation is not being recorded")
            if session.paused == paused:
                return
            if paused:
                session.pause()
            else:
                session.resume()
            await self.db.update_recording(session.id, status=session.status)
            await self._log(room_id, "recording_paused" if paused else "recording_resumed",
                            {"recording_id": session.id, "by": actor.identity})
        await self._announce(room_id)

    async def control(self, member: Member, action: str, override_reason: str | None) -> None:
        """A participant's ``recording`` message: moderators with the record grant only."""
        if not member.grants.record:
            raise RoomError("not_permitted", f"your role ({member.info.role}) may not start or "
                            "stop the recording")
        actor = Actor(member.info.identity, "client", member.info.name)
        if action == "start":
            await self.start(member.room_id, actor, override_reason)
        elif action == "stop":
            await self.stop(member.room_id, actor)
        elif action in ("pause", "resume"):
            await self.pause(member.room_id, actor, action == "pause")

    # ---- consent ---------------------------------------------------------------------------
    async def _whose(self, room_id: str) -> tuple[str | None, str | None]:
        """(patient, segment) the room is about now: the patient under discussion, else the
        room's own patient (no segment)."""
        subject = self.rooms.subjects.current(room_id)
        if subject is not None:
            return subject.patient_ref, subject.segment_id
        return (await self.rooms.get_room(room_id)).patient_ref, None

    async def consent(self, room_id: str) -> Consent | None:
        """The current patient's latest decision in this room."""
        patient_ref, _ = await self._whose(room_id)
        cached = self._consent.get(room_id)
        if cached is None or cached[0] != patient_ref:
            cached = (patient_ref, await self.db.current_consent(room_id, patient_ref))
            self._consent[room_id] = cached
        return cached[1]

    async def record_consent(self, room_id: str, granted: bool, method: str, given_by_role: str,
                             recorded_by: str, given_by: str | None = None,
                             asked_by: str | None = None, note: str | None = None,
                             patient_ref: str | None = None) -> Consent:
        """A decision of ``patient_ref`` (default: the patient the room is about now)."""
        if method not in CONSENT_METHODS:
            raise RoomError("bad_message", f"method must be one of {', '.join(CONSENT_METHODS)}")
        if given_by_role not in CONSENT_GIVERS:
            raise RoomError("bad_message", "consent is given by the patient or a guardian "
                            f"(given_by_role: {' or '.join(CONSENT_GIVERS)})")
        room = await self.rooms.get_room(room_id)
        current, _ = await self._whose(room_id)
        patient_ref = patient_ref or current
        consent = Consent(id=new_id("c"), room_id=room_id, patient_ref=patient_ref,
                          kind="recording", granted=granted, method=method,
                          given_by_role=given_by_role, given_by=given_by, asked_by=asked_by,
                          recorded_by=recorded_by, note=note, at=utcnow())
        await self.db.add_consent(consent)
        await self._log(room_id, "recording_consent", {
            "consent_id": consent.id, "granted": granted, "method": method,
            "given_by_role": given_by_role, "recorded_by": recorded_by,
            "patient_ref": patient_ref})
        if patient_ref != current:
            return consent  # another patient's, for their turn: nothing changes now
        self._consent[room_id] = (patient_ref, consent)
        await self.rooms.broadcast(room_id, {
            "type": "recording_consent", "granted": granted, "given_by_role": given_by_role,
            "method": method})
        session = self.active.get(room_id)
        if not granted and session is not None and session.override_reason is None:
            # consent withdrawn: a recording that rested on it stops now (and says so)
            await self.stop(room_id, Actor(recorded_by, "system"), "consent_withdrawn")
            return consent
        if granted and room.status == "open":
            if room_id in self._wanted and room_id not in self.active:
                with contextlib.suppress(RoomError):  # this patient's turn, now agreed
                    await self.start(room_id, Actor(recorded_by, "system"))
            await self._maybe_auto_start(room_id)
        if room_id not in self.active or self.active[room_id] is session:
            await self._announce(room_id)  # the consent part of the state changed
        return consent

    async def request_consent(self, member: Member) -> None:
        """A clinician asks the patient (or guardian) in the room to agree to recording."""
        if not member.grants.record:
            raise RoomError("not_permitted", f"your role ({member.info.role}) may not ask for "
                            "recording consent")
        room = await self.rooms.get_room(member.room_id)
        givers = [m for m in self.rooms.members_of(member.room_id)
                  if _gives_consent(room.kind, m.info.role)]
        if not givers:
            raise RoomError("no_patient", "no patient or guardian is connected to ask")
        self._consent_asked[member.room_id] = member.info.identity
        await self._log(member.room_id, "recording_consent_requested",
                        {"by": member.info.identity})
        for giver in givers:
            await self.rooms.send(giver, {"type": "consent_request", "kind": "recording",
                                          "by": member.info.name})

    async def answer_consent(self, member: Member, granted: bool) -> Consent:
        """The patient's (or guardian's) answer, in the client."""
        room = await self.rooms.get_room(member.room_id)
        if not _gives_consent(room.kind, member.info.role):
            raise RoomError("not_permitted", "only the patient or a guardian can answer")
        asked_by = self._consent_asked.get(member.room_id)
        if asked_by is None:
            raise RoomError("no_consent_request", "nobody has asked for recording consent")
        return await self.record_consent(
            member.room_id, granted, "in_client", member.info.role, member.info.identity,
            given_by=member.info.identity, asked_by=asked_by)

    async def _maybe_auto_start(self, room_id: str) -> None:
        if room_id not in self._resume_checked:
            self._resume_checked.add(room_id)
            if room_id not in self.active and self.rooms.members_of(room_id):
                await self._resume_after_drain(room_id)
        if room_id in self.active or not await self._auto_record(room_id):
            return
        if not self.rooms.members_of(room_id):
            return  # nobody here yet: it starts when the first participant is
        if await self.db.recordings(room_id=room_id):
            return  # recorded before (and stopped by someone): not started again by itself
        consent = await self.consent(room_id)
        if consent is not None and consent.granted:
            with contextlib.suppress(RoomError):
                await self.start(room_id, Actor("auto", "system"))

    async def _resume_after_drain(self, room_id: str) -> None:
        """A recording that a drain stopped (``server_drain``: a restart of the node) goes on
        in a new part when the first participant is back on this node, under the same consent
        or override reason; the part before was finished like any stopped recording."""
        last_stop: dict[str, Any] | None = None
        after = 0
        while True:  # the room's events, read once per room and process
            events = await self.rooms.db.events_for_room(room_id, after_id=after)
            if not events:
                break
            after = events[-1].id or after
            for event in events:
                if event.type == "recording_started":
                    last_stop = None
                elif event.type == "recording_stopped":
                    last_stop = event.data
        if last_stop is None or last_stop.get("reason") != "server_drain":
            return
        before = await self.db.get_recording(str(last_stop.get("recording_id")))
        log.info("recording resumed after a drain", extra={"room": room_id})
        with contextlib.suppress(RoomError):  # consent withdrawn meanwhile, room ended
            await self.start(room_id, Actor("drain", "system"),
                             before.override_reason if before is not None else None)

    async def _auto_record(self, room_id: str) -> bool:
        room = await self.rooms.get_room(room_id)
        if room.auto_record is not None:
            return room.auto_record
        return kind_policy(room.kind).auto_record

    # ---- state -------------------------------------------------------------------------------
    def state(self, room_id: str) -> dict[str, Any]:
        session = self.active.get(room_id)
        consent = self._consent.get(room_id, (None, None))[1]
        out: dict[str, Any] = {
            "state": "off" if session is None else session.status,
            "consent": None if consent is None else ("granted" if consent.granted
                                                     else "declined"),
        }
        if session is not None:
            out.update(recording_id=session.id, override=session.override_reason is not None,
                       started_at=datetime.fromtimestamp(session.started_at, UTC).isoformat())
        return out

    async def _announce(self, room_id: str, reason: str | None = None) -> None:
        message: dict[str, Any] = {"type": "recording", **self.state(room_id)}
        if reason is not None:
            message["reason"] = reason
        await self.rooms.broadcast(room_id, message)

    # ---- RoomObserver ----------------------------------------------------------------------
    async def joined_state(self, room_id: str) -> dict[str, Any]:
        await self.consent(room_id)  # from the database after a restart
        state = self.state(room_id)
        return {"recording": state["state"] == "recording", "recording_state": state}

    async def participant_joined(self, member: Member) -> None:
        await self._maybe_auto_start(member.room_id)

    def media_changed(self, room_id: str) -> None:
        self._sync(room_id)

    def active_speaker(self, room_id: str, participant_id: str) -> None:
        session = self.active.get(room_id)
        member = next((m for m in self.rooms.members_of(room_id) if m.id == participant_id),
                      None)
        if session is not None and member is not None:
            session.speaker(member.info.identity)

    async def room_ended(self, room_id: str) -> None:
        if room_id in self.active:
            await self.stop(room_id, Actor("room", "system"), "room_ended")
        self._wanted.discard(room_id)
        self._consent_asked.pop(room_id, None)

    async def subject_changed(self, room_id: str, subject: Subject | None) -> None:
        """A new patient under discussion: the recording is cut here, and the next segment is
        recorded only if that patient agreed (an override is never carried over)."""
        if room_id in self.active:
            await self.stop(room_id, Actor("subject", "system"), "subject_changed")
        self._consent_asked.pop(room_id, None)
        consent = await self.consent(room_id)
        if room_id not in self._wanted:
            await self._announce(room_id)
        elif consent is not None and consent.granted:
            await self.start(room_id, Actor("subject", "system"))
        else:
            await self._announce(room_id, reason="no_consent_for_patient")

    def _sync(self, room_id: str) -> None:
        session = self.active.get(room_id)
        if session is None:
            return
        wanted = []
        for member, track, media in self.rooms.audible_tracks(room_id):
            codec = (track.codec or media.mime_type.split("/")[1]).lower()
            wanted.append((TrackMeta(track.id, member.id, member.info.identity,
                                     member.info.role, track.kind, track.source, codec), media))
        session.sync_tracks(wanted)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            for session in list(self.active.values()):
                session.tick()

    async def _log(self, room_id: str, type_: str, data: dict[str, Any]) -> None:
        await self.rooms.db.log_event(EventRecord(room_id=room_id, type=type_, at=utcnow(),
                                                  data=data))


def _gives_consent(kind: str, role: str) -> bool:
    try:
        return role_policy(kind, role).gives_consent
    except ValueError:
        return False


def _journal_duration(journal: dict[str, Any], last_write: float) -> float:
    """Session seconds of an interrupted recording: its spans, the open one ending at the last
    write to its folder."""
    total = 0.0
    for wall_start, wall_end, _ in journal.get("spans", []):
        end = wall_end if wall_end is not None else last_write
        total += max(0.0, end - wall_start)
    return total
