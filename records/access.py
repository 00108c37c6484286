"""Who may open what in a patient's record, and the signed links that play a recording.

* **The patient** (or a guardian), with a patient-portal token the hospital system issued for
  that patient: their own encounters and recordings, nobody else's.
* **The care team** (rooms/policy.py ``CARE_TEAM``): the encounters they took part in (a
  session with a care-team role overlapping the encounter). Outside them, a clinician gives a
  reason (break-glass): allowed, and the reason is in the audit log; without one, refused.
* **Admins**: everything, said why or not, always audited.
* **The audience of a teaching broadcast** (the roles in the kind's ``replay_for``: trainees)
  who attended it: that broadcast's own recording, on demand, and nothing else of the record
  (the encounter they see names no patient and no other trainee, only the clinicians).
* Everyone else (interpreters, an unknown role, a viewer of another broadcast): refused.

Every decision — listings, reads, links to play or download, refusals too — is a row in the
audit log. A link is short-lived and signed (HMAC-SHA256 over the recording, the file, the
expiry, who it was made for and what for), so a changed character or an old link is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass, replace
from urllib.parse import quote, urlencode

from recording.db import Recording
from records.audit import AuditEvent, AuditLog
from records.encounters import Encounter, EncounterDb
from rooms.policy import CARE_TEAM, PolicyError, kind_policy

ADMIN = "admin"
PATIENT_ROLES = frozenset({"patient", "guardian"})
VIEWER_ROLES = frozenset({ADMIN, *PATIENT_ROLES, *CARE_TEAM})
MIN_REASON = 5
PURPOSES = ("play", "download")


class RecordError(Exception):
    """Refused; ``code`` is the API error code, the message says why and what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class AccessDenied(RecordError):
    """403."""


class NotFound(RecordError):
    """404."""


@dataclass(frozen=True)
class Viewer:
    """Who asks, from a records token (signaling/auth.py)."""

    identity: str
    role: str
    patient_ref: str | None = None  # a patient's or guardian's own record
    address: str | None = None

    @property
    def actor(self) -> str:
        return self.identity


@dataclass(frozen=True)
class Decision:
    allowed: bool
    why: str  # own_record | took_part | break_glass | admin | attended | refused: …


ATTENDED = "attended"


def attended(viewer: Viewer, encounter: Encounter) -> bool:
    """The viewer was in the audience of this session (not a segment), of a kind whose
    recording its audience may replay (rooms/policy.py ``replay_for``)."""
    if encounter.parent_id is not None:
        return False
    try:
        roles = {r.value for r in kind_policy(encounter.kind).replay_for}
    except PolicyError:
        return False
    return any(s.identity == viewer.identity and s.role in roles
               for s in encounter.participants)


def decide(viewer: Viewer, encounter: Encounter, reason: str | None) -> Decision:
    if viewer.role == ADMIN:
        return Decision(True, "admin")
    if viewer.role in PATIENT_ROLES:
        own = viewer.patient_ref is not None and encounter.patient_ref == viewer.patient_ref
        return Decision(own, "own_record" if own else "another patient's record")
    if viewer.role not in CARE_TEAM and attended(viewer, encounter):
        return Decision(True, ATTENDED)
    if viewer.role in CARE_TEAM:
        if any(s.identity == viewer.identity and s.role in CARE_TEAM
               for s in encounter.participants):
            return Decision(True, "took_part")
        if reason is not None and len(reason.strip()) >= MIN_REASON:
            return Decision(True, "break_glass")
        return Decision(False, "not of this encounter's care team: give a reason (it is logged)")
    return Decision(False, f"the role {viewer.role!r} has no access to patients' records")


class RecordAccess:
    def __init__(self, encounters: EncounterDb, audit: AuditLog, url_key: bytes,
                 url_ttl_s: int = 300) -> None:
        self.encounters = encounters
        self.audit = audit
        self._url_key = url_key
        self.url_ttl_s = url_ttl_s

    async def _log(self, viewer: Viewer, action: str, entity_type: str, entity_id: str | None,
                   encounter: Encounter | None, reason: str | None, allowed: bool,
                   detail: dict[str, object] | None = None, patient_ref: str | None = None
                   ) -> None:
        """One row; its patient is the encounter's, else the one asked about, else the
        viewer's own."""
        if encounter is not None:
            patient_ref = encounter.patient_ref
        await self.audit.append(AuditEvent(
            actor=viewer.actor, role=viewer.role, action=action, entity_type=entity_type,
            entity_id=entity_id, patient_ref=patient_ref or viewer.patient_ref,
            encounter_id=encounter.id if encounter else None,
            address=viewer.address, reason=reason, outcome="allowed" if allowed else "denied",
            detail=detail))

    async def list(self, viewer: Viewer, patient_ref: str | None = None,
                   reason: str | None = None) -> list[Encounter]:
        """The encounters the viewer may see: a patient's own; a clinician's own (or, with a
        reason, a patient's); an admin's choice of patient."""
        if viewer.role in PATIENT_ROLES:
            if viewer.patient_ref is None or patient_ref not in (None, viewer.patient_ref):
                await self._log(viewer, "encounter.list", "patient", patient_ref, None, reason,
                                False, patient_ref=patient_ref)
                raise AccessDenied("forbidden", "this link is for another patient's record")
            found = await self.encounters.of_patient(viewer.patient_ref)
        elif viewer.role in VIEWER_ROLES and patient_ref is not None:
            if viewer.role != ADMIN and (reason is None or len(reason.strip()) < MIN_REASON):
                await self._log(viewer, "encounter.list", "patient", patient_ref, None, reason,
                                False, patient_ref=patient_ref)
                raise AccessDenied("reason_required", "say why you open this patient's record "
                                   "(it is logged)")
            found = await self.encounters.of_patient(patient_ref)
        elif viewer.role in CARE_TEAM:
            found = [e for e in await self.encounters.of_participant(viewer.identity)
                     if decide(viewer, e, None).allowed]
        else:  # the audience of a broadcast: the broadcasts they attended, nothing else
            found = [] if patient_ref is not None else [
                _audience_view(viewer, e)
                for e in await self.encounters.of_participant(viewer.identity)
                if decide(viewer, e, None).why == ATTENDED]
            if not found:
                await self._log(viewer, "encounter.list", "patient", patient_ref, None, reason,
                                False, patient_ref=patient_ref)
                raise AccessDenied("forbidden", f"the role {viewer.role!r} has no access to "
                                   "patients' records")
        await self._log(viewer, "encounter.list", "patient", patient_ref or viewer.patient_ref,
                        None, reason, True, {"encounters": [e.id for e in found]},
                        patient_ref=patient_ref)
        return found

    async def encounter(self, viewer: Viewer, encounter_id: str, reason: str | None = None,
                        action: str = "encounter.read") -> Encounter:
        found = await self.encounters.get(encounter_id)
        if found is None:
            raise NotFound("encounter_not_found", f"no encounter {encounter_id!r}")
        decision = decide(viewer, found, reason)
        await self._log(viewer, action, "encounter", found.id, found, reason,
                        decision.allowed, {"why": decision.why})
        if not decision.allowed:
            raise AccessDenied("forbidden", f"no access to this encounter: {decision.why}")
        return _audience_view(viewer, found) if decision.why == ATTENDED else found

    async def link(self, viewer: Viewer, encounter_id: str, recording_id: str, name: str,
                   purpose: str, reason: str | None = None) -> tuple[str, int]:
        """A signed link (path and query, and its expiry) to play or download one file of a
        recording of the encounter."""
        if purpose not in PURPOSES:
            raise NotFound("bad_purpose", f"purpose must be {' or '.join(PURPOSES)}")
        encounter = await self.encounters.get(encounter_id)
        if encounter is None:
            raise NotFound("encounter_not_found", f"no encounter {encounter_id!r}")
        recording = next((r for r in encounter.recordings if r.id == recording_id), None)
        decision = decide(viewer, encounter, reason)
        allowed = decision.allowed and recording is not None and _has_file(recording, name)
        await self._log(viewer, f"recording.{purpose}", "recording", recording_id, encounter,
                        reason, allowed, {"file": name, "why": decision.why})
        if not decision.allowed:
            raise AccessDenied("forbidden", f"no access to this encounter: {decision.why}")
        if not allowed:
            raise NotFound("recording_not_found", f"the encounter has no stored {name!r} in a "
                           f"recording {recording_id!r}")
        return self.signed_link(recording_id, name, viewer.actor, purpose)

    def signed_link(self, recording_id: str, name: str, actor: str, purpose: str
                    ) -> tuple[str, int]:
        """The link (path and query) and its expiry; the caller has checked and audited."""
        expires = int(time.time()) + self.url_ttl_s
        query = urlencode({"exp": expires, "u": actor, "p": purpose,
                           "sig": self.sign(recording_id, name, expires, actor, purpose)})
        return f"/records/media/{quote(recording_id)}/{quote(name)}?{query}", expires

    def sign(self, recording_id: str, name: str, expires: int, actor: str, purpose: str) -> str:
        message = "\n".join((recording_id, name, str(expires), actor, purpose)).encode()
        return hmac.new(self._url_key, message, hashlib.sha256).hexdigest()

    def check_link(self, recording_id: str, name: str, expires: str, actor: str, purpose: str,
                   signature: str) -> None:
        """Raise AccessDenied unless the link is as signed and not expired."""
        try:
            when = int(expires)
        except ValueError:
            raise AccessDenied("link_invalid", "this link is not valid: ask for a new one")\
                from None
        expected = self.sign(recording_id, name, when, actor, purpose)
        if purpose not in PURPOSES or not hmac.compare_digest(expected, signature):
            raise AccessDenied("link_invalid", "this link is not valid: ask for a new one")
        if when < time.time():
            raise AccessDenied("link_expired", "this link has expired: open the recording "
                               "again from the record")


def _audience_view(viewer: Viewer, encounter: Encounter) -> Encounter:
    """What a trainee sees of a broadcast they attended: its recordings, the clinicians who
    taught and their own stays; no patient, no other trainee."""
    return replace(encounter, patient_ref=None, participants=[
        s for s in encounter.participants
        if s.identity == viewer.identity or s.role in CARE_TEAM])


def _has_file(recording: Recording, name: str) -> bool:
    return recording.status in ("stored", "ready") and any(
        f.get("name") == name and f.get("stored") for f in recording.files)


def url_key(audit_key: bytes) -> bytes:
    """The key that signs media links, derived from the audit log's active key."""
    return hmac.new(audit_key, b"huizhen signed media links v1", hashlib.sha256).digest()
