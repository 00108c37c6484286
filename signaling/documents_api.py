"""REST API: a room's agenda, and the clinical documents rooms wrote (docs/api.md).

* ``GET|PUT /api/rooms/{room_id}/agenda`` — the ward round's patient list / the MDT's cases;
* ``GET /api/rooms/{room_id}/documents`` — every version of every document of the room;
* ``GET /api/documents/{id}`` — one version, its exact signed bytes (base64) and signature;
* ``GET /api/documents/{id}/verify`` — signature, certificate chain and validity time checked
  against the configured trust anchors.

A version purged under the retention rules (records/retention.py) is listed with
``status: purged`` (no text); reading or verifying it answers ``410 purged`` saying when and why.
"""

from __future__ import annotations

import base64

from aiohttp import web

from records.documents import Document, Documents, latest_only
from records.signing import SigningError
from rooms.agenda import parse_items
from signaling.api import json_body, rooms_of
from signaling.api_models import (
    AGENDA_PUT,
    AGENDA_STATE,
    DOCUMENT,
    DOCUMENT_FULL,
    VERIFIED,
    listing,
)
from signaling.keys import API_KEY, DOCUMENTS
from signaling.openapi import errors, operation, reply


@operation("A room's agenda", tag="documents",
           responses={200: reply("The agenda (null: none)", AGENDA_STATE)})
async def get_agenda(request: web.Request) -> web.Response:
    room_id = request.match_info["room_id"]
    service = rooms_of(request)
    await service.get_room(room_id)
    return web.json_response({"agenda": await service.agenda.state(room_id)})


@operation("Replace a room's agenda", tag="documents", body=AGENDA_PUT,
           example={"items": [{"patient_ref": "Patient/123", "label": "Bed 12"},
                              {"patient_ref": "Patient/456", "label": "Bed 14"}]},
           responses={200: reply("The agenda", AGENDA_STATE), **errors(409)})
async def put_agenda(request: web.Request) -> web.Response:
    room_id = request.match_info["room_id"]
    data = await json_body(request)
    service = rooms_of(request)
    await service.agenda.set(room_id, parse_items(data.get("items")), request[API_KEY])
    return web.json_response({"agenda": await service.agenda.state(room_id)})


def _documents(request: web.Request) -> Documents:
    documents: Documents = request.app[DOCUMENTS]
    return documents


@operation("Every version of every document of a room", tag="documents",
           responses={200: reply("The documents", listing("documents", DOCUMENT))})
async def room_documents(request: web.Request) -> web.Response:
    room_id = request.match_info["room_id"]
    await rooms_of(request).get_room(room_id)
    found = await _documents(request).db.of_room(room_id)
    latest = {d.series_id: d.version for d in latest_only(found)}
    return web.json_response({"documents": [d.as_dict(latest[d.series_id]) for d in found]})


async def _document(request: web.Request) -> Document:
    document_id = request.match_info["document_id"]
    document = await _documents(request).db.get(document_id)
    if document is None:
        raise web.HTTPNotFound(reason=f"no document {document_id!r}")
    return document


def _gone(document: Document) -> web.Response:
    """A purged version: 410, when and why (its tombstone is in the room's listing)."""
    return web.json_response({"error": {
        "code": "purged", "message": document.gone(),
        "purged_at": document.purged_at.isoformat() if document.purged_at else None,
        "reason": document.purge_reason}}, status=410)


@operation("One document version, its signed bytes and signature", tag="documents",
           responses={200: reply("The version", DOCUMENT_FULL), **errors(410)})
async def get_document(request: web.Request) -> web.Response:
    document = await _document(request)
    if document.purged_at is not None:
        return _gone(document)
    latest = await _documents(request).db.latest_version(document.series_id)
    return web.json_response({**document.as_dict(latest),
                              "content_base64": base64.b64encode(document.content).decode(),
                              "signature": document.signature})


@operation("Verify a document's signature", tag="documents",
           responses={200: reply("The verdict", VERIFIED), **errors(410)})
async def verify_document(request: web.Request) -> web.Response:
    document = await _document(request)
    if document.purged_at is not None:
        return _gone(document)
    try:
        checked = _documents(request).check(document)
    except SigningError as exc:
        return web.json_response({"valid": False, "code": exc.code, "message": exc.message})
    return web.json_response({"valid": True, **checked.as_dict()})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/rooms/{room_id}/agenda", get_agenda)
    app.router.add_put("/api/rooms/{room_id}/agenda", put_agenda)
    app.router.add_get("/api/rooms/{room_id}/documents", room_documents)
    app.router.add_get("/api/documents/{document_id}", get_document)
    app.router.add_get("/api/documents/{document_id}/verify", verify_document)
