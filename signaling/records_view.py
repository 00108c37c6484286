"""The record as patients and clinicians see it: ``/records/api/…`` with a records token, and
``/records/media/…`` behind short-lived signed links (docs/records.md, docs/api.md).

Who may see what is decided in records/access.py (and audited there); this module reads the
token, maps refusals to HTTP (401 token, 403 access, 404 missing) and serves media with
HTTP range requests, decrypting sealed files chunk by chunk on the way.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from huizhen.config import Settings
from recording.crypto import AsyncEncryptedReader, DecryptionError, KeyRing
from recording.storage import Storage, StorageError, check_key
from records.access import AccessDenied, NotFound, RecordAccess, Viewer
from signaling.api import BadRequest, error_response, json_body, text_field
from signaling.auth import AuthError, verify_records_token
from signaling.keys import ACCESS, KEYRING, SETTINGS, STORAGE

log = logging.getLogger("huizhen.records")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CHUNK = 256 * 1024
TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".mkv": "video/x-matroska",
         ".json": "application/json"}
VIEWER = web.RequestKey("viewer", Viewer)


@web.middleware
async def records_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/records/"):
        return await handler(request)
    try:
        if request.path.startswith("/records/api/"):
            header = request.headers.get("Authorization", "")
            if not header.startswith("Bearer "):
                raise AuthError("unauthorized", "send Authorization: Bearer <records token> "
                                "(the hospital system issues it: docs/api.md)")
            settings: Settings = request.app[SETTINGS]
            viewer = verify_records_token(header[7:].strip(), settings.secret_for,
                                          settings.auth.audience)
            request[VIEWER] = Viewer(viewer.identity, viewer.role, viewer.patient_ref,
                                     request.remote)
        return await handler(request)
    except AuthError as exc:
        return error_response(401, exc.code, exc.message)
    except AccessDenied as exc:
        return error_response(403, exc.code, exc.message)
    except NotFound as exc:
        return error_response(404, exc.code, exc.message)
    except BadRequest as exc:
        return error_response(400, "bad_request", str(exc))


def _reason(request: web.Request, data: dict[str, Any] | None = None) -> str | None:
    value = (data or {}).get("reason") or request.query.get("reason") or ""
    return value.strip()[:500] or None if isinstance(value, str) else None


async def list_encounters(request: web.Request) -> web.Response:
    access: RecordAccess = request.app[ACCESS]
    patient = request.query.get("patient", "").strip() or None
    found = await access.list(request[VIEWER], patient, _reason(request))
    return web.json_response({"viewer": {"identity": request[VIEWER].identity,
                                         "role": request[VIEWER].role,
                                         "patient_ref": request[VIEWER].patient_ref},
                              "encounters": [e.as_dict() for e in found]})


async def get_encounter(request: web.Request) -> web.Response:
    access: RecordAccess = request.app[ACCESS]
    found = await access.encounter(request[VIEWER], request.match_info["encounter_id"],
                                   _reason(request))
    return web.json_response(found.as_dict())


async def make_link(request: web.Request) -> web.Response:
    """``{"file": "composite.mp4", "purpose": "play"|"download", "reason": …}`` → a signed
    link that plays (or downloads) that file for a few minutes."""
    access: RecordAccess = request.app[ACCESS]
    data = await json_body(request)
    name = text_field(data, "file", required=False, max_len=255) or "composite.mp4"
    purpose = text_field(data, "purpose", required=False, max_len=16) or "play"
    url, expires = await access.link(request[VIEWER], request.match_info["encounter_id"],
                                     request.match_info["recording_id"], name, purpose,
                                     _reason(request, data))
    return web.json_response({"url": url, "expires_at": expires}, status=201)


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``Range: bytes=a-b`` (one range) → [start, end) within ``size``; None: the whole file.
    Raises ValueError when it cannot be satisfied."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        raise ValueError(header)
    first, last = match.group(1), match.group(2)
    if first == "":
        start, end = max(0, size - int(last)), size
    else:
        start = int(first)
        end = min(size, int(last) + 1) if last else size
    if start >= size or start >= end:
        raise ValueError(header)
    return start, end


async def media(request: web.Request) -> web.StreamResponse:
    """A file of a recording, behind a signed link; ranges honoured (the player seeks)."""
    access: RecordAccess = request.app[ACCESS]
    recording_id, name = request.match_info["recording_id"], request.match_info["name"]
    q = request.query
    access.check_link(recording_id, name, q.get("exp", ""), q.get("u", ""), q.get("p", ""),
                      q.get("sig", ""))
    recording = await access.encounters.recordings.get_recording(recording_id)
    entry = next((f for f in (recording.files if recording else [])
                  if f.get("name") == name and f.get("stored")), None)
    if entry is None:
        raise NotFound("recording_not_found", f"{name!r} is not stored for this recording")
    storage: Storage = request.app[STORAGE]
    try:
        key = check_key(f"{recording_id}/{name}")
        found = await storage.stat(key)
        if found is None:
            raise NotFound("recording_missing", "the file is missing from storage: tell the "
                           "hospital's IT (`huizhen recording verify` names it)")
        read: Callable[[int, int], Awaitable[bytes]] = functools.partial(storage.read_range,
                                                                          key)
        size = found.size
        if entry.get("key_id"):
            keyring: KeyRing | None = request.app.get(KEYRING)
            if keyring is None:
                raise DecryptionError("the file is encrypted and no keys are configured "
                                      "(recording.encryption.keys)")
            reader = await AsyncEncryptedReader.open(read, size, keyring, where=key)
            read, size = reader.read_range, reader.plain_size
    except (StorageError, DecryptionError) as exc:
        log.error("a recording file cannot be served", extra={"recording": recording_id,
                                                              "error": str(exc)})
        return error_response(500, "storage", "the recording cannot be read now; the "
                              "hospital's IT has it in the service log")
    try:
        span = parse_range(request.headers.get("Range"), size)
    except ValueError:
        return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
    start, end = span or (0, size)
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    headers = {"Content-Type": TYPES.get(suffix, "application/octet-stream"),
               "Accept-Ranges": "bytes", "Content-Length": str(end - start),
               "Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"}
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    if q.get("p") == "download":
        headers["Content-Disposition"] = f'attachment; filename="{recording_id}-' \
                                         f'{name.rsplit("/", 1)[-1]}"'
    response = web.StreamResponse(status=206 if span is not None else 200, headers=headers)
    await response.prepare(request)
    position = start
    while position < end:
        chunk = await read(position, min(end, position + CHUNK))
        if not chunk:
            break
        await response.write(chunk)
        position += len(chunk)
    await response.write_eof()
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/records/api/encounters", list_encounters)
    app.router.add_get("/records/api/encounters/{encounter_id}", get_encounter)
    app.router.add_post("/records/api/encounters/{encounter_id}/recordings/{recording_id}/link",
                        make_link)
    app.router.add_get("/records/media/{recording_id}/{name:.+}", media)
