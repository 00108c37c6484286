"""The patient's record as HL7 FHIR R4 resources, built and validated with the ``fhir.resources``
R4B models (FHIR 4.3.0, R4's technical correction: these resources are the same in both).

What maps to what (docs/records.md has the table):

* a patient reference → ``Patient`` (its identifier only: names stay in the hospital's EMR);
* an encounter → ``Encounter`` (class ``v3-ActCode#VR``, participants with their role as
  ``ATND``/``CON``/``PART``/``translator``, ``partOf`` for a patient's segment of a round);
* a recording → ``Media`` (the composite: url, contentType, size, SHA-1 hash, duration);
* a recording consent → ``Consent`` (permit or deny, tied to the encounter it was given in);
* a chat message → ``Communication``; an audit row → ``AuditEvent``;
* a clinical document version (consult opinion, note, minutes, conclusion) →
  ``DocumentReference`` (the exact signed bytes and the detached JWS as attachments).

Our ids are ``<prefix>_<random>``; a FHIR id may not hold ``_`` but ours never hold ``.``, so
the FHIR id is ours with ``_`` → ``.`` (and back). Chat messages are ``chat-<event id>``, audit
rows ``audit-<seq>``, patients the id kept with them (records/encounters.py).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from fhir.resources.R4B.appointment import Appointment, AppointmentParticipant
from fhir.resources.R4B.attachment import Attachment
from fhir.resources.R4B.auditevent import (
    AuditEvent,
    AuditEventAgent,
    AuditEventAgentNetwork,
    AuditEventEntity,
    AuditEventEntityDetail,
    AuditEventSource,
)
from fhir.resources.R4B.bundle import Bundle, BundleEntry, BundleEntrySearch, BundleLink
from fhir.resources.R4B.capabilitystatement import (
    CapabilityStatement,
    CapabilityStatementImplementation,
    CapabilityStatementRest,
    CapabilityStatementRestResource,
    CapabilityStatementRestResourceInteraction,
    CapabilityStatementRestResourceSearchParam,
    CapabilityStatementRestSecurity,
    CapabilityStatementSoftware,
)
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.communication import Communication, CommunicationPayload
from fhir.resources.R4B.consent import Consent, ConsentProvision, ConsentProvisionData
from fhir.resources.R4B.documentreference import (
    DocumentReference,
    DocumentReferenceContent,
    DocumentReferenceContext,
    DocumentReferenceRelatesTo,
)
from fhir.resources.R4B.duration import Duration
from fhir.resources.R4B.encounter import Encounter, EncounterParticipant
from fhir.resources.R4B.extension import Extension
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.media import Media
from fhir.resources.R4B.operationoutcome import OperationOutcome, OperationOutcomeIssue
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.period import Period
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.resource import Resource

from recording.db import Consent as ConsentRecord
from recording.db import Recording
from records import encounters
from records.audit import AuditEntry
from records.documents import Document
from rooms.appointments import Invitee
from rooms.models import EventRecord, RoomRecord, SessionRecord
from rooms.policy import Role

FHIR_VERSION = "4.3.0"
CONTENT_TYPE = "application/fhir+json"
COMPOSITE = "composite.mp4"  # the file a Media describes (recording/finish.py)

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/participant-type"
MEDIA_TYPE = "http://terminology.hl7.org/CodeSystem/media-type"
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
CONSENT_ACTION = "http://terminology.hl7.org/CodeSystem/consentaction"
AUDIT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
# our own code systems and identifiers
OURS = "urn:huizhen"
IDENTITY = f"{OURS}:identity"
ENCOUNTER_ID = f"{OURS}:encounter"
RECORDING_ID = f"{OURS}:recording"
ROOM_KIND = f"{OURS}:room-kind"
AUDIT_ACTION = f"{OURS}:audit-action"
CONSENT_METHOD = f"{OURS}:fhir:StructureDefinition:consent-method"
DOCUMENT_ID = f"{OURS}:document"
DOCUMENT_SERIES = f"{OURS}:document-series"
DOCUMENT_KIND = f"{OURS}:document-kind"
#: LOINC document types where one fits; the others carry our code only
_LOINC_DOCUMENT = {"consult_opinion": ("11488-4", "Consult note"),
                   "note": ("11506-3", "Progress note")}

#: how each role takes part in an encounter (patients are its subject, viewers no part)
PARTICIPATION_OF: dict[str, tuple[str, str, str]] = {
    Role.HOST: (PARTICIPATION, "ATND", "attender"),
    Role.DOCTOR: (PARTICIPATION, "ATND", "attender"),
    Role.SPECIALIST: (PARTICIPATION, "CON", "consultant"),
    Role.NURSE: (PARTICIPATION, "PART", "Participation"),
    Role.PRESENTER: (PARTICIPATION, "PART", "Participation"),
    Role.MODERATOR: (PARTICIPATION, "PART", "Participation"),
    Role.GUARDIAN: (PARTICIPATION, "PART", "Participation"),
    Role.INTERPRETER: (PARTICIPANT_TYPE, "translator", "Translator"),
}
_NAMELESS = frozenset({Role.PATIENT, Role.GUARDIAN})  # their names stay out of the record
_MEDIA_STATUS = {"recording": "in-progress", "paused": "in-progress", "stopped": "in-progress",
                 "interrupted": "in-progress", "stored": "in-progress", "ready": "completed",
                 "purged": "completed", "failed": "stopped"}
_VERBS = {"list": "R", "read": "R", "search": "R", "play": "R", "download": "R", "purge": "D",
          "issue": "C", "set": "U", "hold": "U", "release": "U"}
_OUTCOMES = {"allowed": "0", "done": "0", "denied": "4", "failed": "8"}


# ---- ids and references ----------------------------------------------------------------------
def fhir_id(our_id: str) -> str:
    return our_id.replace("_", ".")


def our_id(resource_id: str) -> str:
    return resource_id.replace(".", "_")


def ref(resource_type: str, resource_id: str, display: str | None = None) -> Reference:
    return Reference(reference=f"{resource_type}/{resource_id}", display=display)


def _person(identity: str, display: str | None) -> Reference:
    return Reference(identifier=Identifier(system=IDENTITY, value=identity), display=display)


def _coding(system: str, code: str, display: str | None = None) -> CodeableConcept:
    return CodeableConcept(coding=[Coding(system=system, code=code, display=display)])


def _when(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def _period(start: datetime | None, end: datetime | None) -> Period:
    return Period(start=_when(start), end=_when(end))


# ---- resources -------------------------------------------------------------------------------
def patient(row: encounters.PatientRow, system: str) -> Patient:
    return Patient(id=row.fhir_id, active=True,
                   identifier=[Identifier(system=system, value=row.ref, use="official")])


def encounter(found: encounters.Encounter, patient_id: str | None) -> Encounter:
    """``patient_id``: the FHIR id of the encounter's patient (None: no patient)."""
    participants = [EncounterParticipant(
        type=[_coding(*PARTICIPATION_OF[s.role])], period=_period(s.joined_at, s.left_at),
        individual=_person(s.identity, s.role if s.role in _NAMELESS else s.name))
        for s in _people(found.participants) if s.role in PARTICIPATION_OF]
    minutes = found.duration_s / 60 if found.duration_s is not None else None
    return Encounter(
        id=fhir_id(found.id), status=found.status,
        identifier=[Identifier(system=ENCOUNTER_ID, value=found.id)],
        class_fhir=Coding(system=ACT_CODE, code="VR", display="virtual"),
        type=[_coding(ROOM_KIND, found.kind)],
        subject=ref("Patient", patient_id) if patient_id else None,
        participant=participants or None,
        period=_period(found.started_at, found.ended_at),
        length=Duration(value=round(minutes, 2), unit="min", system=UCUM, code="min")
        if minutes is not None else None,
        partOf=ref("Encounter", fhir_id(found.parent_id)) if found.parent_id else None)


def _people(sessions: list[SessionRecord]) -> list[SessionRecord]:
    """One entry per person: their first join to their last leave (a reconnect is one stay)."""
    merged: dict[str, SessionRecord] = {}
    for s in sorted(sessions, key=lambda s: s.joined_at):
        first = merged.get(s.identity)
        if first is None:
            merged[s.identity] = replace(s)
        elif first.left_at is not None:
            first.left_at = None if s.left_at is None else max(first.left_at, s.left_at)
    return list(merged.values())


def media(recording: Recording, encounter_id: str, patient_id: str | None,
          url: str | None) -> Media:
    """The recording as its composite; ``url``: a signed link to it (None: none to give)."""
    entry = next((f for f in (recording.manifest or {}).get("files", [])
                  if f.get("name") == COMPOSITE), None)
    meta: dict[str, Any] = (entry or {}).get("meta", {})
    if entry is not None and recording.status == "ready":
        content = Attachment(contentType="video/mp4", url=url, size=entry.get("plain_size"),
                             hash=entry.get("plain_sha1"), title="composite.mp4",
                             creation=_when(recording.ended_at))
    else:
        content = Attachment(contentType="video/mp4", title=_not_playable(recording))
    return Media(
        id=fhir_id(recording.id), status=_MEDIA_STATUS.get(recording.status, "unknown"),
        identifier=[Identifier(system=RECORDING_ID, value=recording.id)],
        type=_coding(MEDIA_TYPE, "video", "Video"),
        subject=ref("Patient", patient_id) if patient_id else None,
        encounter=ref("Encounter", fhir_id(encounter_id)),
        createdPeriod=_period(recording.started_at, recording.ended_at),
        width=meta.get("width"), height=meta.get("height"),
        frames=meta.get("video_frames") or None,
        duration=meta.get("duration_s", recording.duration_s), content=content)


def _not_playable(recording: Recording) -> str:
    if recording.status == "purged":
        return "deleted under the retention rules"
    if recording.status == "failed":
        return "the composite could not be made; the track files are kept"
    return "being prepared"


def appointment(room: RoomRecord, invitees: list[Invitee], patient_id: str | None,
                joined: set[str]) -> Appointment:
    """A booked room: when, what kind, the patient and who was invited (and who came)."""
    if room.status == "ended":
        status = ("cancelled" if room.end_reason == "cancelled"
                  else "fulfilled" if joined else "noshow")
    else:
        status = "arrived" if joined else "booked"
    people = [AppointmentParticipant(actor=ref("Patient", patient_id), required="required",
                                     status="accepted")] if patient_id else []
    for invitee in invitees:
        if invitee.role == Role.PATIENT and patient_id:
            continue  # the patient is above, as the Patient
        code = PARTICIPATION_OF.get(invitee.role)
        people.append(AppointmentParticipant(
            type=[_coding(*code)] if code else None, required="required",
            actor=_person(invitee.identity, invitee.name or invitee.role),
            status="accepted" if invitee.identity in joined else "needs-action"))
    minutes = None
    if room.scheduled_start and room.scheduled_end:
        minutes = int((room.scheduled_end - room.scheduled_start).total_seconds() // 60)
    return Appointment(
        id=fhir_id(room.id), status=status,
        identifier=[Identifier(system=ENCOUNTER_ID, value=room.id)],
        serviceType=[_coding(ROOM_KIND, room.kind)], description=room.title or None,
        start=_when(room.scheduled_start), end=_when(room.scheduled_end),
        minutesDuration=minutes or None, created=_when(room.created_at),
        participant=people or [AppointmentParticipant(  # booked without naming anyone
            status="needs-action", type=[CodeableConcept(text="not named yet")])])


def consent(given: ConsentRecord, encounter_id: str, patient_id: str) -> Consent:
    """A recording consent (separate from consent to treatment), granted or declined."""
    giver = (ref("Patient", patient_id) if given.given_by_role == Role.PATIENT
             else _person(given.given_by or given.recorded_by, given.given_by_role))
    return Consent(
        id=fhir_id(given.id), status="active" if given.granted else "rejected",
        scope=_coding(CONSENT_SCOPE, "patient-privacy", "Privacy Consent"),
        category=[CodeableConcept(coding=[Coding(system=LOINC, code="59284-0",
                                                 display="Patient Consent")],
                                  text="recording of the video consultation")],
        patient=ref("Patient", patient_id), dateTime=_when(given.at), performer=[giver],
        policyRule=_coding(ACT_CODE, "OPTIN" if given.granted else "OPTOUT"),
        provision=ConsentProvision(
            type="permit" if given.granted else "deny",
            action=[CodeableConcept(coding=[Coding(system=CONSENT_ACTION, code="collect")],
                                    text="record the consultation")],
            data=[ConsentProvisionData(meaning="related",
                                       reference=ref("Encounter", fhir_id(encounter_id)))]),
        extension=[Extension(url=CONSENT_METHOD, valueCode=given.method)])


def communication(event: EventRecord, encounter_id: str, patient_id: str | None,
                  sender: SessionRecord | None) -> Communication:
    """A chat message of the consultation."""
    role = sender.role if sender else None
    who = (_person(sender.identity, role if role in _NAMELESS else sender.name)
           if sender else None)
    return Communication(
        id=f"chat-{event.id}", status="completed",
        subject=ref("Patient", patient_id) if patient_id else None,
        encounter=ref("Encounter", fhir_id(encounter_id)), sent=_when(event.at), sender=who,
        payload=[CommunicationPayload(contentString=str(event.data.get("text", "")))])


def document_reference(doc: Document, patient_id: str | None, latest: bool
                       ) -> DocumentReference:
    """One version of a clinical document: its exact bytes (what the signature covers) and,
    once signed, the detached JWS with the signer's certificate chain."""
    codings = [Coding(system=DOCUMENT_KIND, code=doc.kind)]
    if doc.kind in _LOINC_DOCUMENT:
        code, display = _LOINC_DOCUMENT[doc.kind]
        codings.insert(0, Coding(system=LOINC, code=code, display=display))
    body = doc.body
    author = body.get("author") or {}
    content = [DocumentReferenceContent(attachment=Attachment(
        contentType="application/json; charset=utf-8", data=base64.b64encode(doc.content),
        size=len(doc.content), hash=base64.b64encode(hashlib.sha1(doc.content).digest()),
        title=body.get("title") or doc.kind, creation=_when(doc.created_at)))]
    if doc.signature is not None:
        content.append(DocumentReferenceContent(attachment=Attachment(
            contentType="application/jose", data=base64.b64encode(doc.signature.encode()),
            title="signature: detached JWS with the signer's X.509 chain (x5c)",
            creation=_when(doc.signed_at))))
    replaces = body.get("replaces")
    return DocumentReference(
        id=fhir_id(doc.id), masterIdentifier=Identifier(system=DOCUMENT_ID, value=doc.id),
        identifier=[Identifier(system=DOCUMENT_SERIES, value=doc.series_id)],
        status="current" if latest else "superseded",
        docStatus="final" if doc.signature is not None else "preliminary",
        type=CodeableConcept(coding=codings, text=doc.kind),
        subject=ref("Patient", patient_id) if patient_id else None,
        date=_when(doc.created_at),
        author=[_person(doc.author_identity, author.get("name"))],
        authenticator=_person(doc.author_identity, author.get("name"))
        if doc.signature is not None else None,
        description=f"version {doc.version}",
        relatesTo=[DocumentReferenceRelatesTo(
            code="replaces", target=ref("DocumentReference", fhir_id(str(replaces))))]
        if replaces else None,
        content=content,
        context=DocumentReferenceContext(encounter=[ref("Encounter",
                                                        fhir_id(doc.encounter_id))]))


def audit_event(entry: AuditEntry, patient_id: str | None, base_url: str) -> AuditEvent:
    """One row of the audit log; its seal is in the entity's detail (``huizhen audit verify``
    checks the chain)."""
    verb = entry.action.rsplit(".", 1)[-1]
    why = (entry.detail or {}).get("why")
    purpose = None
    if entry.reason:
        purpose = [CodeableConcept(
            coding=[Coding(system=ACT_REASON, code="BTG", display="break the glass")]
            if why == "break_glass" else None, text=entry.reason)]
    what = [AuditEventEntity(
        what=Reference(identifier=Identifier(system=f"{OURS}:{entry.entity_type}",
                                             value=entry.entity_id or "-")),
        detail=[AuditEventEntityDetail(type="seal", valueString=entry.hash),
                AuditEventEntityDetail(type="key", valueString=entry.key_id)])]
    if patient_id:
        what.append(AuditEventEntity(what=ref("Patient", patient_id)))
    if entry.encounter_id:
        what.append(AuditEventEntity(what=ref("Encounter", fhir_id(entry.encounter_id))))
    return AuditEvent(
        id=f"audit-{entry.seq}",
        type=Coding(system=AUDIT_TYPE, code="rest", display="RESTful Operation"),
        subtype=[Coding(system=AUDIT_ACTION, code=entry.action)],
        action=_VERBS.get(verb, "E"), recorded=_when(entry.at),
        outcome=_OUTCOMES.get(entry.outcome, "8"),
        outcomeDesc=str(why) if why else None, purposeOfEvent=purpose,
        agent=[AuditEventAgent(
            who=_person(entry.actor, None), requestor=True,
            role=[CodeableConcept(text=entry.role)],
            network=AuditEventAgentNetwork(address=entry.address, type="2")
            if entry.address else None)],
        source=AuditEventSource(observer=Reference(display="Huizhen"), site=base_url),
        entity=what)


# ---- bundles, errors, what is served ---------------------------------------------------------
def bundle(found: list[Resource], base: str, self_url: str, next_url: str | None,
           total: int) -> Bundle:
    links = [BundleLink(relation="self", url=self_url)]
    if next_url:
        links.append(BundleLink(relation="next", url=next_url))
    return Bundle(type="searchset", total=total, link=links, entry=[
        BundleEntry(fullUrl=f"{base}/{r.get_resource_type()}/{r.id}", resource=r,
                    search=BundleEntrySearch(mode="match")) for r in found] or None)


def outcome(code: str, message: str) -> OperationOutcome:
    """``code``: an issue type (security, not-found, invalid, not-supported, exception)."""
    return OperationOutcome(issue=[OperationOutcomeIssue(severity="error", code=code,
                                                         diagnostics=message)])


#: resource type → the search parameters /fhir/ takes for it (name → FHIR search type)
SEARCHES: dict[str, dict[str, str]] = {
    "Patient": {"identifier": "token", "_id": "token"},
    "Appointment": {"patient": "reference", "_id": "token"},
    "Encounter": {"patient": "reference", "subject": "reference", "_id": "token"},
    "Media": {"patient": "reference", "subject": "reference", "encounter": "reference",
              "_id": "token"},
    "Consent": {"patient": "reference", "_id": "token"},
    "Communication": {"patient": "reference", "subject": "reference",
                      "encounter": "reference", "_id": "token"},
    "DocumentReference": {"patient": "reference", "subject": "reference",
                          "encounter": "reference", "_id": "token"},
    "AuditEvent": {"patient": "reference", "encounter": "reference", "_id": "token"},
}


def capability(base: str, version: str, when: datetime) -> CapabilityStatement:
    resources = [CapabilityStatementRestResource(
        type=name,
        interaction=[CapabilityStatementRestResourceInteraction(code="read"),
                     CapabilityStatementRestResourceInteraction(code="search-type")],
        searchParam=[CapabilityStatementRestResourceSearchParam(name=p, type=t)
                     for p, t in params.items()])
        for name, params in SEARCHES.items()]
    return CapabilityStatement(
        status="active", date=_when(when), kind="instance", fhirVersion=FHIR_VERSION,
        format=["json"], software=CapabilityStatementSoftware(name="Huizhen", version=version),
        implementation=CapabilityStatementImplementation(
            description="Huizhen: the patient's record of video consultations", url=base),
        rest=[CapabilityStatementRest(
            mode="server", resource=resources,
            security=CapabilityStatementRestSecurity(
                description="Authorization: Bearer <API JWT> (docs/api.md); every read and "
                            "search is written to the audit log"))])
