"""JSON Schemas of what the REST API takes and gives, shared by its handlers.

The handlers' declarations (signaling/openapi.py :func:`~signaling.openapi.operation`) check
requests against these and put them in ``/api/openapi.json``; each response schema follows the
``as_dict()`` of the record it describes (rooms/models.py, recording/db.py, …), and the
schemathesis test (tests/test_openapi.py) checks the live answers against them.
"""

from __future__ import annotations

from typing import Any

from recording.service import CONSENT_GIVERS, CONSENT_METHODS
from rooms.policy import RoomKind
from signaling.auth import RECORD_ROLES
from webhooks.db import STATUSES

Schema = dict[str, Any]


def text(max_len: int = 200, description: str = "") -> Schema:
    """A non-blank string of at most ``max_len`` characters (what ``text_field`` takes)."""
    out: Schema = {"type": "string", "minLength": 1, "maxLength": max_len, "pattern": r"\S"}
    if description:
        out["description"] = description
    return out


def nullable(schema: Schema) -> Schema:
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None,
        description: str = "", closed: bool = False) -> Schema:
    out: Schema = {"type": "object", "required": list(required),
                   "properties": {**required, **(optional or {})}}
    if description:
        out["description"] = description
    if closed:
        out["additionalProperties"] = False
    return out


def array(items: Schema, **limits: int) -> Schema:
    return {"type": "array", "items": items, **{
        {"min_items": "minItems", "max_items": "maxItems"}[k]: v for k, v in limits.items()}}


def listing(name: str, items: Schema) -> Schema:
    """``{name: [items]}``, how the API lists things."""
    return obj({name: array(items)})


STR: Schema = {"type": "string"}
STR_OR_NULL: Schema = {"type": ["string", "null"]}
INT: Schema = {"type": "integer"}
NUMBER_OR_NULL: Schema = {"type": ["number", "null"]}
BOOL: Schema = {"type": "boolean"}
WHEN: Schema = {"type": "string", "format": "date-time",
                "description": "RFC 3339 with a time zone; years 1970-2999 in requests"}
WHEN_OR_NULL: Schema = {"type": ["string", "null"], "format": "date-time"}
KIND: Schema = {"type": "string", "enum": [k.value for k in RoomKind],
                "description": "the kind of consultation (its roles and rules: docs/api.md)",
                "x-error-code": "unknown_room_kind"}
GRANTS: Schema = {"type": "object", "additionalProperties": BOOL}

# ---- rooms ------------------------------------------------------------------------------------
ROOM = obj({"id": STR, "kind": KIND, "title": STR, "created_at": WHEN,
            "patient_ref": STR_OR_NULL, "scheduled_start": WHEN_OR_NULL,
            "scheduled_end": WHEN_OR_NULL, "status": {"enum": ["open", "ended"]},
            "ended_at": WHEN_OR_NULL, "end_reason": STR_OR_NULL, "created_by": STR_OR_NULL,
            "auto_record": {"type": ["boolean", "null"]}})
AGENDA_ITEM_IN = obj({"patient_ref": text(255)}, {
    "label": nullable({"type": "string", "maxLength": 200}),
    "presenter": nullable({"type": "string", "maxLength": 255}),
    "question": nullable({"type": "string", "maxLength": 2000})}, closed=True)
AGENDA_IN = {**array(AGENDA_ITEM_IN, max_items=100), "x-error-code": "bad_agenda"}
AGENDA = nullable(obj({"items": array(obj({
    "id": STR, "patient_ref": STR, "label": STR, "presenter": STR_OR_NULL,
    "question": STR_OR_NULL})), "current": STR_OR_NULL},
    description="the patients the room discusses (null: no agenda)"))
ROOM_WITH_AGENDA = {**ROOM, "required": [*ROOM["required"], "agenda"],
                    "properties": {**ROOM["properties"], "agenda": AGENDA}}
TRACK = obj({"id": STR, "participant_id": STR, "kind": STR, "source": STR, "muted": BOOL,
             "codec": STR_OR_NULL})
PARTICIPANT = obj({"id": STR, "identity": STR, "name": STR, "role": STR, "grants": GRANTS,
                   "joined_at": WHEN, "state": STR, "tracks": array(TRACK)})
_WAY = {"loss_pct": NUMBER_OR_NULL, "kbps": {"type": "number"}}
#: a participant's connection as the server measured it (rooms/quality.py; docs/protocol.md)
QUALITY = nullable(obj({
    "level": {"type": "string", "enum": ["good", "fair", "poor", "unknown"]},
    "rtt_ms": NUMBER_OR_NULL, "uplink": nullable(obj(_WAY)),
    "downlink": nullable(obj({**_WAY, "estimate_kbps": {"type": "number"}})),
    "video": array(obj({"track_id": STR_OR_NULL, "participant_id": STR_OR_NULL,
                        "layer": {"type": ["integer", "null"]}, "layers": INT,
                        "paused": BOOL}))}))
ROOM_STATE = {**ROOM, "required": [*ROOM["required"], "participants"],
              "properties": {**ROOM["properties"], "participants": array(
                  {**PARTICIPANT, "required": [*PARTICIPANT["required"], "quality"],
                   "properties": {**PARTICIPANT["properties"], "quality": QUALITY}})}}
SESSION = obj({"id": STR, "room_id": STR, "identity": STR, "name": STR, "role": STR,
               "joined_at": WHEN, "left_at": WHEN_OR_NULL, "leave_reason": STR_OR_NULL,
               "token_id": STR_OR_NULL, "department": STR_OR_NULL})
EVENT = obj({"id": INT, "room_id": STR, "type": STR, "at": WHEN,
             "participant_id": STR_OR_NULL, "data": {"type": "object"}})
ATTENDEE = obj({"identity": STR, "name": STR_OR_NULL, "role": STR,
                "department": STR_OR_NULL, "first_join": WHEN, "last_leave": WHEN_OR_NULL,
                "present": BOOL, "intervals": array(obj({"joined_at": WHEN,
                                                          "left_at": WHEN_OR_NULL})),
                "seconds": {"type": "number"}, "minutes": {"type": "number"}})
ATTENDANCE = obj({"room_id": STR, "kind": KIND, "status": STR, "at": WHEN,
                  "attendees": array(ATTENDEE)})
CREATE_ROOM = obj({"kind": KIND, "title": text()}, {
    "patient_ref": nullable(text(description="the patient's reference in the hospital "
                                             "system (clinic rooms)")),
    "scheduled_start": nullable(WHEN), "scheduled_end": nullable(WHEN),
    "auto_record": {"type": ["boolean", "null"],
                    "description": "record once consent exists; absent or null: the kind "
                                   "decides"},
    "agenda": AGENDA_IN})
TOKEN_IN = obj({"identity": text(128), "name": text(), "role": text(32, "a role the room's "
                                                                         "kind allows")}, {
    "ttl_s": {"type": "integer", "minimum": 1,
              "description": "lifetime; default auth.default_token_ttl_s, at most "
                             "auth.max_token_ttl_s"},
    "single_use": BOOL, "department": nullable(text())})
TOKEN = obj({"token": STR, "join_url": STR, "expires_at": INT, "role": STR, "grants": GRANTS,
             "single_use": BOOL, "department": STR_OR_NULL})
END_ROOM = obj({}, {"reason": nullable(text())})
AGENDA_PUT = obj({"items": AGENDA_IN})
AGENDA_STATE = obj({"agenda": AGENDA})

# ---- recording --------------------------------------------------------------------------------
CONSENT_IN = obj({"method": {"type": "string", "enum": list(CONSENT_METHODS)},
                  "obtained_by": text(255, "who asked the patient")}, {
    "granted": BOOL, "given_by_role": nullable({"type": "string",
                                                "enum": list(CONSENT_GIVERS)}),
    "note": nullable(text(2000)), "patient_ref": nullable(text(255))})
CONSENT = obj({"id": STR, "room_id": STR, "patient_ref": STR_OR_NULL, "kind": STR,
               "granted": BOOL, "method": STR, "given_by_role": STR, "given_by": STR_OR_NULL,
               "asked_by": STR_OR_NULL, "recorded_by": STR, "note": STR_OR_NULL, "at": WHEN})
RECORDING_INFO = obj({"id": STR, "room_id": STR, "status": STR, "started_at": WHEN,
                 "ended_at": WHEN_OR_NULL, "started_by": STR, "consent_id": STR_OR_NULL,
                 "override_reason": STR_OR_NULL, "interrupted": BOOL,
                 "duration_s": NUMBER_OR_NULL, "manifest_sha256": STR_OR_NULL,
                 "error": STR_OR_NULL, "patient_ref": STR_OR_NULL, "segment_id": STR_OR_NULL,
                 "files": array({"type": "object"}), "jobs": array({"type": "object"})})
RECORDING_STATE = obj({"state": STR, "consent": {"enum": ["granted", "declined", None]}},
                      {"recording_id": STR, "override": BOOL, "started_at": WHEN})
CONTROL_IN = obj({}, {"override_reason": nullable(text(500, "start without consent: why"))})
COMPOSITE_QUEUED = obj({"job_id": INT, "recording_id": STR, "status": {"const": "queued"}})

# ---- the patient's record ---------------------------------------------------------------------
SUBJECT_IN = obj({"patient_ref": nullable(text(255, "the patient now discussed; null: "
                                                     "nobody"))},
                 {"label": nullable(text())})
SUBJECT = obj({"subject": nullable(obj({"patient_ref": STR, "label": STR, "segment_id": STR,
                                        "since": WHEN, "set_by": STR}))})
ENCOUNTER = obj({
    "id": STR, "room_id": STR, "part_of": STR_OR_NULL, "patient_ref": STR_OR_NULL,
    "kind": STR, "title": STR, "status": STR, "started_at": WHEN, "ended_at": WHEN_OR_NULL,
    "duration_s": NUMBER_OR_NULL, "legal_hold": BOOL, "hold_reason": STR_OR_NULL,
    "participants": array(obj({"identity": STR, "name": STR, "role": STR, "joined_at": WHEN,
                               "left_at": WHEN_OR_NULL})),
    "recordings": array(obj({"id": STR, "status": STR, "started_at": WHEN,
                             "ended_at": WHEN_OR_NULL, "duration_s": NUMBER_OR_NULL,
                             "segment_id": STR_OR_NULL}))})
HOLD_IN = {**obj({"hold": BOOL}, {"reason": nullable(text(500))}),
           "if": {"properties": {"hold": {"const": True}}},
           "then": {"required": ["reason"], "properties": {"reason": text(500)}},
           "description": "a hold needs a reason; {\"hold\": false} lifts it"}
RECORDS_TOKEN_IN = obj({"identity": text(255), "role": {
    "enum": sorted(RECORD_ROLES),
    "description": "patient, guardian (their own record), admin, or a room role"}}, {
    "patient_ref": nullable(text(255, "a patient's or guardian's token: their patient")),
    "ttl_s": {"type": "integer", "minimum": 60, "description": "at most 12 h"}})
RECORDS_TOKEN = obj({"token": STR, "expires_at": INT, "records_url": STR})

# ---- documents, images, webhooks, appointments ------------------------------------------------
DOCUMENT = obj({
    "id": STR, "series_id": STR, "version": INT, "latest": BOOL, "room_id": STR,
    "encounter_id": STR, "patient_ref": STR_OR_NULL, "case_id": STR_OR_NULL, "kind": STR,
    "title": STR_OR_NULL, "text": STR_OR_NULL, "author": STR_OR_NULL, "created_at": WHEN,
    "sha256": STR, "signed": BOOL, "signed_at": WHEN_OR_NULL, "replaces": STR_OR_NULL,
    "status": {"enum": ["active", "purged"]}, "purged_at": WHEN_OR_NULL})
DOCUMENT_FULL = {**DOCUMENT, "required": [*DOCUMENT["required"], "content_base64",
                                          "signature"],
                 "properties": {**DOCUMENT["properties"], "content_base64": STR,
                                "signature": STR_OR_NULL}}
VERIFIED = obj({"valid": BOOL}, {"code": STR, "message": STR, "subject": STR, "serial": STR,
                                 "issuer": STR, "signed_at": WHEN, "cert_sha256": STR},
               description="valid: who signed and when; not valid: code and message say why")
IMAGE = obj({"id": STR, "room_id": STR, "kind": STR, "content_type": STR,
             "label": STR_OR_NULL, "width": INT, "height": INT, "size": INT, "sha256": STR,
             "window": nullable(obj({"center": {"type": "number"},
                                     "width": {"type": "number"}})),
             "patient_ref": STR_OR_NULL, "segment_id": STR_OR_NULL, "uploaded_by": STR,
             "uploaded_at": WHEN, "status": {"enum": ["active", "purged"]},
             "purged_at": WHEN_OR_NULL})
DELIVERY = obj({"id": STR, "event_id": INT, "endpoint": STR, "type": STR,
                "status": {"enum": list(STATUSES)}, "attempts": INT, "created_at": WHEN,
                "next_at": WHEN, "delivered_at": WHEN_OR_NULL, "last_error": STR_OR_NULL})
INVITEE_IN = obj({"identity": text(128), "name": text(), "role": text(32)})
BOOK_IN = obj({"kind": KIND, "title": text(), "start": WHEN, "end": WHEN,
               "participants": array(INVITEE_IN, min_items=1, max_items=50)},
              {"patient_ref": nullable(text()), "auto_record": {"type": ["boolean", "null"]}})
APPOINTMENT = {**ROOM, "required": [*ROOM["required"], "participants"],
               "properties": {**ROOM["properties"], "participants": array(obj({
                   "identity": STR, "role": STR, "name": STR_OR_NULL}))}}
BOOKED = obj({"appointment": APPOINTMENT, "opens_at": WHEN, "links": array(obj({
    "identity": STR, "role": STR, "join_url": STR, "expires_at": INT}))})
