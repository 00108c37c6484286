"""Reads and searches of the record in FHIR (records/fhir.py builds the resources).

A search names a patient (``patient=Patient/<id>`` or ``subject=``) or an encounter
(``encounter=Encounter/<id>``); what comes back is what that patient's record holds — their
encounters and segments, the recordings and chat of those, their consents, the audit rows
about them — and never another patient's segment of the same ward round. Every read and
search, and every media link it hands out, is a row in the audit log.

A clinical document purged under the retention rules (records/retention.py) is a deleted
resource in FHIR's sense: searches leave it out and a read answers ``410 Gone`` (issue type
``deleted``). Its ``status`` is not changed to ``entered-in-error``: it was not an error, and R4's
DocumentReference has no status for "deleted after its retention period".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir.resources.R4B.media import Media
from fhir.resources.R4B.resource import Resource

from recording.db import Consent as ConsentRecord
from records import fhir
from records.access import RecordAccess
from records.audit import AuditEvent, AuditLog
from records.documents import DocumentDb, latest_only
from records.encounters import Encounter, EncounterDb
from rooms.appointments import Appointments
from rooms.db import Database
from rooms.models import EventRecord, RoomRecord

MAX_COUNT = 500
PAGING = ("_count", "_offset", "_format")


class FhirError(Exception):
    """``status`` for HTTP, ``code`` the OperationOutcome issue type, and what to do."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Caller:
    actor: str  # api:<key>
    address: str | None


@dataclass
class Page:
    resources: list[Resource]
    total: int
    offset: int
    count: int


class FhirRecord:
    def __init__(self, db: Database, encounters: EncounterDb, audit: AuditLog,
                 access: RecordAccess, base_url: str, patient_system: str) -> None:
        self.db = db
        self.encounters = encounters
        self.audit = audit
        self.access = access
        self.base_url = base_url
        self.patient_system = patient_system
        self.appointments = Appointments(db)
        self.documents = DocumentDb(db)

    # ---- entry points --------------------------------------------------------------------
    async def search(self, resource_type: str, params: Mapping[str, str], caller: Caller
                     ) -> Page:
        allowed = fhir.SEARCHES.get(resource_type)
        if allowed is None:
            raise FhirError(404, "not-supported", f"/fhir/ serves no {resource_type!r}: see "
                            "/fhir/metadata for what it serves")
        unknown = sorted(set(params) - set(allowed) - set(PAGING))
        if unknown:
            raise FhirError(400, "not-supported", f"{resource_type} cannot be searched by "
                            f"{', '.join(unknown)}; it takes {', '.join(sorted(allowed))}")
        count, offset = _int(params, "_count", 100, 0, MAX_COUNT), _int(params, "_offset", 0,
                                                                         0, 10**9)
        if "_id" in params:
            found = [r for r in [await self._read(resource_type, params["_id"], caller)] if r]
            patient_ref = None
        else:
            found, patient_ref = await self._search(resource_type, params, caller)
        page = Page(found[offset:offset + count], len(found), offset, count)
        await self._log(caller, "fhir.search", resource_type,
                        "&".join(f"{k}={v}" for k, v in sorted(params.items())), patient_ref,
                        page.resources)
        return page

    async def read(self, resource_type: str, resource_id: str, caller: Caller) -> Resource:
        if resource_type not in fhir.SEARCHES:
            raise FhirError(404, "not-supported", f"/fhir/ serves no {resource_type!r}: see "
                            "/fhir/metadata for what it serves")
        found = await self._read(resource_type, resource_id, caller)
        if found is None and resource_type == "DocumentReference":
            document = await self.documents.get(fhir.our_id(resource_id))
            if document is not None and document.purged_at is not None:
                raise FhirError(410, "deleted", document.gone())
        if found is None:
            raise FhirError(404, "not-found", f"no {resource_type}/{resource_id}")
        subject = _subject(found)
        patient = await self.encounters.patient(fhir_id=subject) if subject else None
        await self._log(caller, "fhir.read", resource_type, resource_id,
                        patient.ref if patient else None, [found])
        return found

    async def _log(self, caller: Caller, action: str, resource_type: str, what: str,
                   patient_ref: str | None, found: list[Resource]) -> None:
        detail: dict[str, Any] = {"count": len(found), "ids": [r.id for r in found][:50]}
        links = sum(1 for r in found if isinstance(r, Media) and r.content.url)
        if links:
            detail["download_links"] = links
        encounter = found[0].id if resource_type == "Encounter" and len(found) == 1 else None
        await self.audit.append(AuditEvent(
            actor=caller.actor, role="api", action=action, entity_type=resource_type,
            entity_id=what[:255], patient_ref=patient_ref,
            encounter_id=fhir.our_id(encounter) if encounter else None,
            address=caller.address, detail=detail))

    # ---- searches ------------------------------------------------------------------------
    async def _search(self, resource_type: str, params: Mapping[str, str], caller: Caller
                      ) -> tuple[list[Resource], str | None]:
        if resource_type == "Patient":
            if "identifier" not in params:
                raise FhirError(400, "required", "search Patient by identifier=[system|]value")
            system, _, value = params["identifier"].rpartition("|")
            row = await self.encounters.patient(ref=value)
            if row is None or system not in ("", self.patient_system):
                return [], None
            return [fhir.patient(row, self.patient_system)], row.ref
        patient = params.get("patient") or params.get("subject")
        if patient:
            row = await self.encounters.patient(fhir_id=_local(patient, "Patient"))
            if row is None:
                return [], None
            if resource_type == "AuditEvent":
                return await self._audit(await self.audit.entries(
                    patient_ref=row.ref, limit=100_000)), row.ref
            if resource_type == "Appointment":
                return [await self._appointment(room, row.fhir_id) for room in
                        await self.appointments.of_patient(row.ref)], row.ref
            found = await self.encounters.of_patient(row.ref)
            if "encounter" in params:
                wanted = fhir.our_id(_local(params["encounter"], "Encounter"))
                found = [e for e in found if e.id == wanted]
            return await self._of(resource_type, found, caller), row.ref
        if "encounter" in params:
            encounter = await self.encounters.get(
                fhir.our_id(_local(params["encounter"], "Encounter")))
            if encounter is None:
                return [], None
            if resource_type == "AuditEvent":
                return await self._audit(await self.audit.entries(
                    encounter_id=encounter.id, limit=100_000)), encounter.patient_ref
            return await self._of(resource_type, [encounter], caller), encounter.patient_ref
        raise FhirError(400, "required", f"search {resource_type} by patient= or encounter= "
                        "(a whole server's records are not listed)")

    async def _of(self, resource_type: str, encounters: list[Encounter], caller: Caller
                  ) -> list[Resource]:
        """The resources of one type that these encounters hold."""
        ids = await self.encounters.fhir_ids({e.patient_ref for e in encounters
                                              if e.patient_ref})
        if resource_type == "Encounter":
            return [fhir.encounter(e, ids.get(e.patient_ref or "")) for e in encounters]
        if resource_type == "Media":
            return [fhir.media(r, e.id, ids.get(e.patient_ref or ""),
                               self._link(r.id, r.status, caller))
                    for e in encounters for r in e.recordings]
        if resource_type == "DocumentReference":
            documents = [d for d in await self.documents.of_encounters(
                [e.id for e in encounters]) if d.purged_at is None]  # deleted: left out
            latest = {d.series_id: d.version for d in latest_only(documents)}
            return [fhir.document_reference(d, ids.get(d.patient_ref or ""),
                                            latest[d.series_id] == d.version)
                    for d in documents]
        out: dict[str, Resource] = {}
        for room_id in dict.fromkeys(e.room_id for e in encounters):  # each room read once
            siblings = await self.encounters.of_room(room_id)
            chat = await self._chat(room_id) if resource_type == "Communication" else []
            for e in (e for e in encounters if e.room_id == room_id):
                patient_id = ids.get(e.patient_ref or "")
                if resource_type == "Consent" and e.patient_ref and patient_id:
                    for given in await self.encounters.recordings.consents(
                            room_id, patient_ref=e.patient_ref):
                        if _consent_encounter(given, e.patient_ref, siblings) == e.id:
                            out[given.id] = fhir.consent(given, e.id, patient_id)
                for event in chat:
                    if _chat_encounter(event.at, siblings) == e.id:
                        sender = next((s for s in e.participants
                                       if s.id == event.participant_id), None)
                        out[str(event.id)] = fhir.communication(event, e.id, patient_id,
                                                                sender)
        return list(out.values())

    async def _chat(self, room_id: str) -> list[EventRecord]:
        found: list[EventRecord] = []
        after = 0
        while batch := await self.db.events_for_room(room_id, after_id=after, limit=1000):
            found += [e for e in batch if e.type == "chat"]
            after = batch[-1].id or after
            if len(batch) < 1000:
                break
        return found

    async def _audit(self, entries: list[Any]) -> list[Resource]:
        ids = await self.encounters.fhir_ids({e.patient_ref for e in entries if e.patient_ref})
        return [fhir.audit_event(e, ids.get(e.patient_ref or ""), self.base_url)
                for e in entries]

    async def _appointment(self, room: RoomRecord, patient_id: str | None) -> Resource:
        joined = {s.identity for s in await self.db.sessions_for_room(room.id)}
        return fhir.appointment(room, await self.appointments.invitees(room.id), patient_id,
                                joined)

    def _link(self, recording_id: str, status: str, caller: Caller) -> str | None:
        """A download link (short-lived, signed for the caller; the search's audit row
        counts the links it gave)."""
        if status != "ready":
            return None
        path, _ = self.access.signed_link(recording_id, fhir.COMPOSITE, caller.actor,
                                          "download")
        return self.base_url + path

    # ---- reads ---------------------------------------------------------------------------
    async def _read(self, resource_type: str, resource_id: str, caller: Caller
                    ) -> Resource | None:
        """One resource by its FHIR id, built as a search would build it."""
        if resource_type == "Patient":
            row = await self.encounters.patient(fhir_id=resource_id)
            return fhir.patient(row, self.patient_system) if row else None
        if resource_type == "Appointment":
            room = await self.db.get_room(fhir.our_id(resource_id))
            if room is None or room.scheduled_start is None:
                return None
            ids = await self.encounters.fhir_ids({room.patient_ref} if room.patient_ref
                                                 else set())
            return await self._appointment(room, ids.get(room.patient_ref or ""))
        if resource_type == "AuditEvent":
            seq = _number(resource_id, "audit-")
            found = await self.audit.entries(after_seq=seq - 1, limit=1) if seq else []
            matches = await self._audit([e for e in found if e.seq == seq])
            return matches[0] if matches else None
        encounter = await self._home(resource_type, resource_id)
        if encounter is None:
            return None
        return next((r for r in await self._of(resource_type, [encounter], caller)
                     if r.id == resource_id), None)

    async def _home(self, resource_type: str, resource_id: str) -> Encounter | None:
        """The encounter a resource belongs to."""
        if resource_type == "Encounter":
            return await self.encounters.get(fhir.our_id(resource_id))
        if resource_type == "Media":
            recording = await self.encounters.recordings.get_recording(fhir.our_id(resource_id))
            if recording is None:
                return None
            return await self.encounters.get(recording.segment_id or recording.room_id)
        if resource_type == "DocumentReference":
            document = await self.documents.get(fhir.our_id(resource_id))
            return await self.encounters.get(document.encounter_id) if document else None
        if resource_type == "Consent":
            given = await self.encounters.recordings.consent(fhir.our_id(resource_id))
            if given is None or given.patient_ref is None:
                return None
            home = _consent_encounter(given, given.patient_ref,
                                      await self.encounters.of_room(given.room_id))
            return await self.encounters.get(home) if home else None
        event_id = _number(resource_id, "chat-")
        event = await self.db.event(event_id) if event_id else None
        if event is None or event.type != "chat":
            return None
        home = _chat_encounter(event.at, await self.encounters.of_room(event.room_id))
        return await self.encounters.get(home) if home else None


def _consent_encounter(given: ConsentRecord, patient_ref: str, siblings: list[Encounter]
                       ) -> str | None:
    """A consent belongs to its patient's first encounter in the room that had not ended when
    it was given (else their last one)."""
    theirs = [e for e in siblings if e.patient_ref == patient_ref]
    for e in theirs:
        if e.ended_at is None or e.ended_at >= given.at:
            return e.id
    return theirs[-1].id if theirs else None


def _chat_encounter(at: datetime, siblings: list[Encounter]) -> str | None:
    """A message belongs to the segment it was said in, else to the session."""
    def within(e: Encounter) -> bool:
        return e.started_at <= at and (e.ended_at is None or at <= e.ended_at)
    segment = next((e for e in siblings if e.parent_id is not None and within(e)), None)
    if segment is not None:
        return segment.id
    return next((e.id for e in siblings if e.parent_id is None), None)


def _local(value: str, resource_type: str) -> str:
    """``Patient/42``, ``42`` or a full URL ending in ``Patient/42`` → ``42``."""
    head, _, tail = value.rstrip("/").rpartition("/")
    if head and not head.endswith(resource_type):
        raise FhirError(400, "invalid", f"{value!r} is not a reference to a {resource_type}")
    return tail


def _number(resource_id: str, prefix: str) -> int:
    digits = resource_id.removeprefix(prefix)
    return int(digits) if resource_id.startswith(prefix) and digits.isdigit() else 0


def _int(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = params.get(name)
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise FhirError(400, "invalid", f"{name} must be a whole number from {low} to {high}")
    return int(text)


def _subject(resource: Resource) -> str | None:
    """The FHIR id of the patient a resource is about."""
    if resource.get_resource_type() == "Patient":
        return str(resource.id)
    for name in ("subject", "patient"):
        target = getattr(resource, name, None)
        if target is not None and target.reference:
            return str(target.reference).removeprefix("Patient/")
    for entity in getattr(resource, "entity", None) or []:
        if entity.what and entity.what.reference and entity.what.reference.startswith(
                "Patient/"):
            return str(entity.what.reference).removeprefix("Patient/")
    return None
