"""MDT case images over HTTP (docs/api.md, "Case images"): upload, list, serve.

Two doors to the same images:

* the hospital system, with its API token: ``/api/rooms/{room_id}/images…``;
* a participant, with its own participant token in ``Authorization: Bearer …`` (never in the
  URL): ``/rooms/{room_id}/images…``. It must be in the consultation now (admitted, not on
  hold); uploading also needs the ``publish_screen`` grant (those who may show material).

An upload is the raw file as the body with its ``Content-Type`` (``image/png``,
``image/jpeg``, ``application/dicom``); an ``X-Label`` header (percent-encoded UTF-8) names it
for the clinicians. Every upload
and every read is in the audit log (records/audit.py), refusals of participants too.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from aiohttp import web

from caseimages.db import CaseImage
from caseimages.render import ImageRejected
from caseimages.service import CaseImages
from huizhen.config import Settings
from recording.crypto import DecryptionError
from recording.storage import StorageError
from records.audit import AuditEvent
from rooms.members import Member, RoomError
from signaling.api import error_response
from signaling.api_models import IMAGE, listing
from signaling.auth import AuthError, check_role_for_room, verify_participant_token
from signaling.keys import API_KEY, AUDIT, IMAGES, ROOMS, SETTINGS
from signaling.openapi import Param, Reply, errors, operation, reply

log = logging.getLogger("huizhen.images")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
READ_CHUNK = 64 * 1024
_STATUS = {"room_not_found": 404, "image_not_found": 404, "room_ended": 409,
           "not_permitted": 403, "not_admitted": 403, "not_in_room": 403,
           "token_wrong_room": 403, "purged": 410}


class _Who:
    """Who asks: the hospital system (an API key) or a participant in the room."""

    def __init__(self, actor: str, role: str, member: Member | None = None) -> None:
        self.actor, self.role, self.member = actor, role, member


def _images(request: web.Request) -> CaseImages:
    images: CaseImages = request.app[IMAGES]
    return images


def _errors(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ImageRejected as exc:
            return error_response(exc.status, exc.code, exc.message)
        except AuthError as exc:
            return error_response(_STATUS.get(exc.code, 401), exc.code, exc.message)
        except RoomError as exc:
            return error_response(_STATUS.get(exc.code, 400), exc.code, exc.message)
        except (StorageError, DecryptionError) as exc:
            log.error("a case image cannot be stored or read",
                      extra={"room": request.match_info.get("room_id"), "error": str(exc)})
            return error_response(500, "storage", "the image cannot be stored or read now; "
                                  "the hospital's IT has it in the service log")
    return wrapped


async def _who(request: web.Request, presenter: bool = False) -> _Who:
    """The API key (on /api/, checked by the middleware), or the participant token's holder,
    who must be in the room now."""
    if request.path.startswith("/api/"):
        return _Who(f"api:{request[API_KEY]}", "api")
    settings: Settings = request.app[SETTINGS]
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        raise AuthError("unauthorized", "send Authorization: Bearer <participant token>")
    claims = verify_participant_token(header[7:].strip(), settings.secret_for,
                                      settings.auth.audience)
    room_id = request.match_info["room_id"]
    if claims.room != room_id:
        raise AuthError("token_wrong_room", "this token is for another consultation")
    room = await request.app[ROOMS].get_room(room_id)
    check_role_for_room(claims, room.kind)
    member = _images(request).member(room_id, claims.identity)
    who = _Who(claims.identity, claims.role, member)
    try:
        if member is None:
            raise RoomError("not_in_room", "join the consultation first (and be admitted)")
        if presenter:
            CaseImages.require_presenter(member)
    except RoomError as exc:
        await _audit(request, who, "case_image.upload" if presenter else "case_image.read",
                     None, "denied", {"code": exc.code})
        raise
    return who


async def _audit(request: web.Request, who: _Who, action: str, image: CaseImage | None,
                 outcome: str, detail: dict[str, object] | None = None) -> None:
    await request.app[AUDIT].append(AuditEvent(
        actor=who.actor, role=who.role, action=action, entity_type="case_image",
        entity_id=image.id if image else None,
        patient_ref=image.patient_ref if image else None,
        encounter_id=image.segment_id if image else None, address=request.remote,
        outcome=outcome, detail={"room": request.match_info["room_id"], **(detail or {})}))


async def _body(request: web.Request, limit: int, limit_mb: int) -> bytes:
    """The request body, refused as soon as it passes ``limit`` bytes."""
    too_large = ImageRejected(413, "too_large", f"the file is larger than {limit_mb} MiB "
                              "(images.max_upload_mb)")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks, total = [], 0
    async for chunk in request.content.iter_chunked(READ_CHUNK):
        total += len(chunk)
        if total > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


@operation("Upload a case image (PNG, JPEG or DICOM)", tag="images",
           raw_body=("image/png", "image/jpeg", "application/dicom"),
           params=(Param("X-Label", "header", {"type": "string", "maxLength": 2000},
                         "what it shows, percent-encoded UTF-8"),),
           responses={201: reply("The image", IMAGE), **errors(403, 409, 413, 415)})
@_errors
async def upload(request: web.Request) -> web.Response:
    images = _images(request)
    who = await _who(request, presenter=True)
    data = await _body(request, images.max_upload_bytes, images.config.max_upload_mb)
    # the label may name the patient: a header (percent-encoded UTF-8), never the URL, which
    # proxies log
    label = unquote(request.headers.get("X-Label", "")).replace("\x00", "") or None
    try:
        image = await images.upload(request.match_info["room_id"], data,
                                    request.headers.get("Content-Type", ""),
                                    who.actor, label)
    except ImageRejected as exc:
        log.info("case image refused", extra={"room": request.match_info["room_id"],
                                              "code": exc.code, "bytes": len(data)})
        raise
    await _audit(request, who, "case_image.upload", image, "done",
                 {"kind": image.kind, "size": image.size, "sha256": image.sha256})
    return web.json_response(image.as_dict(), status=201)


@operation("A room's case images", tag="images",
           responses={200: reply("The images", listing("images", IMAGE)), **errors(403)})
@_errors
async def list_images(request: web.Request) -> web.Response:
    who = await _who(request)
    room = await request.app[ROOMS].get_room(request.match_info["room_id"])
    found = await _images(request).db.of_room(room.id)
    await _audit(request, who, "case_image.list", None, "allowed",
                 {"images": [i.id for i in found]})
    return web.json_response({"images": [i.as_dict() for i in found]})


def _window(request: web.Request) -> tuple[float, float] | None:
    centre, width = request.query.get("wc"), request.query.get("ww")
    if centre is None and width is None:
        return None
    try:
        window = float(centre or ""), float(width or "")
    except ValueError:
        window = (math.nan, math.nan)
    if not all(math.isfinite(v) for v in window):
        raise ImageRejected(400, "bad_window", "give both wc (window centre) and ww (window "
                            "width) as numbers, or neither")
    return window


@operation("A case image (DICOM rendered as PNG)", tag="images", name="get_image",
           params=(Param("wc", "query", {"type": "number"}, "DICOM window centre (with ww)"),
                   Param("ww", "query", {"type": "number"}, "DICOM window width (with wc)")),
           responses={200: Reply("The image", {"image/png": {"type": "string",
                                                              "format": "binary"},
                                               "image/jpeg": {"type": "string",
                                                              "format": "binary"}}),
                      **errors(403, 410)})
@_errors
async def serve(request: web.Request) -> web.Response:
    images = _images(request)
    who = await _who(request)
    window = _window(request)
    image = await images.get(request.match_info["room_id"], request.match_info["image_id"])
    body = await images.served(image, window)
    await _audit(request, who, "case_image.read", image, "allowed",
                 {"window": list(window) if window else None})
    return web.Response(body=body, content_type=image.content_type, headers={
        "Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"})


def add_routes(app: web.Application) -> None:
    for prefix in ("/api/rooms", "/rooms"):
        app.router.add_post(prefix + "/{room_id}/images", upload)
        app.router.add_get(prefix + "/{room_id}/images", list_images)
        app.router.add_get(prefix + "/{room_id}/images/{image_id}", serve)
