"""Case images of a room: uploads, reading them back, and the view everyone shares.

**Uploads** (a participant whose grants include ``publish_screen``, or the hospital system) are
decoded before anything is kept (caseimages/render.py); the bytes as uploaded go to the
recordings' storage (a folder or S3; sealed with ``recording.encryption`` when that is on) and
are read back and compared before the row is written; a failure on the way removes what was
stored, so a refused or failed upload leaves nothing behind. An image belongs to the room and
to the patient under discussion at the time (rooms/subjects.py), else to the room's patient.

**The shared view** of a room: which image is shown, its zoom and centre, the presenter's
pointer and, for DICOM, the window/level. Participants allowed to show material
(``publish_screen``) drive it with ``show_image`` / ``image_view``; every active participant
gets ``image_view``. However fast the presenter moves, the room gets at most one update per
``images.view_interval_ms``: changes in between are merged, the latest wins, and each update
carries a ``seq`` so a client can drop one that arrives late. Someone who joins late gets the
current view in ``joined.room.image_view``; someone admitted from the lobby or back from hold
gets it at once. A new patient under discussion hides the image (it was the previous case's).

**Retention**: an image purged under ``records.retention.documents_days`` (records/retention.py)
is listed with ``status: purged`` but neither served (``purged``, HTTP 410) nor shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caseimages.db import CaseImage, ImageDb
from caseimages.render import ImageRejected, check_window, inspect, render_dicom
from huizhen.config import ImagesConfig
from media.background import spawn
from recording.crypto import AsyncEncryptedReader, KeyRing, encrypt_file
from recording.storage import Storage, StorageError, check_key
from rooms.db import Database
from rooms.members import ACTIVE, Member, RoomError
from rooms.models import EventRecord, new_id, utcnow

if TYPE_CHECKING:
    from rooms.service import RoomService
    from rooms.subjects import Subject

log = logging.getLogger("huizhen.images")

PREFIX = "case-images"
EXTENSIONS = {"png": "png", "jpeg": "jpg", "dicom": "dcm"}
MAX_ZOOM = 16.0
MAX_LABEL = 200
RENDER_CACHE_BYTES = 64 * 1024 * 1024


@dataclass
class View:
    image: CaseImage
    by: str  # participant id of who drives it now
    zoom: float = 1.0
    center: tuple[float, float] = (0.5, 0.5)
    pointer: tuple[float, float] | None = None
    window: tuple[float, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"image": self.image.as_dict(), "by": self.by, "zoom": self.zoom,
                "center": list(self.center),
                "pointer": None if self.pointer is None else list(self.pointer),
                "window": None if self.window is None else
                {"center": self.window[0], "width": self.window[1]}}


@dataclass
class _Room:
    view: View | None = None
    seq: int = 0
    sent: dict[str, int] = field(default_factory=dict)  # participant id -> seq it has
    last_sent: float = 0.0
    task: asyncio.Task[None] | None = None


class CaseImages:
    """Case images on this node (the RoomObserver of rooms/members.py for the shared view)."""

    def __init__(self, rooms: RoomService, db: Database, storage: Storage,
                 keyring: KeyRing | None, config: ImagesConfig) -> None:
        self._rooms = rooms
        self.db = ImageDb(db)
        self._storage = storage
        self._keyring = keyring
        self.config = config
        self._views: dict[str, _Room] = {}
        self._rendered: OrderedDict[tuple[str, float, float], bytes] = OrderedDict()
        self._rendered_bytes = 0

    @property
    def max_upload_bytes(self) -> int:
        return self.config.max_upload_mb * 1024 * 1024

    # ---- who may -----------------------------------------------------------------------
    def member(self, room_id: str, identity: str) -> Member | None:
        """The identity's active session in the room on this node, if any."""
        return next((m for m in self._rooms.members_of(room_id)
                     if m.info.identity == identity and m.info.state == ACTIVE), None)

    @staticmethod
    def require_presenter(member: Member) -> None:
        if not member.grants.publish_screen:
            raise RoomError("not_permitted", f"your role ({member.info.role}) may not show "
                            "case images")
        if member.info.state != ACTIVE:
            raise RoomError("not_admitted", "you can show images once you are in the "
                            "consultation")

    # ---- uploads -----------------------------------------------------------------------
    async def upload(self, room_id: str, data: bytes, content_type: str, by: str,
                     label: str | None = None) -> CaseImage:
        room = await self._rooms.get_room(room_id)
        if room.status != "open":
            raise RoomError("room_ended", "this consultation has ended")
        if len(data) > self.max_upload_bytes:
            raise ImageRejected(413, "too_large", f"the file is larger than "
                                f"{self.config.max_upload_mb} MiB (images.max_upload_mb)")
        inspected = await asyncio.to_thread(inspect, data, content_type,
                                            self.config.max_pixels)
        subject = self._rooms.subjects.current(room_id)
        image_id = new_id("img")
        key = check_key(f"{PREFIX}/{room_id}/{image_id}.{EXTENSIONS[inspected.kind]}")
        clean_label = (label or "").strip()[:MAX_LABEL] or None
        image = CaseImage(
            id=image_id, room_id=room_id,
            patient_ref=subject.patient_ref if subject else room.patient_ref,
            segment_id=subject.segment_id if subject else None, kind=inspected.kind,
            label=clean_label, width=inspected.width, height=inspected.height,
            size=len(data), sha256=hashlib.sha256(data).hexdigest(), storage_key=key,
            key_id=None, window=inspected.window, uploaded_by=by, uploaded_at=utcnow())
        image = replace(image, key_id=await self._store(data, key))
        try:
            await self.db.add(image)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._storage.delete(key)
            raise
        await self._rooms.db.log_event(EventRecord(
            room_id=room_id, type="case_image_added", at=image.uploaded_at,
            data={"image_id": image_id, "kind": image.kind, "by": by,
                  "patient_ref": image.patient_ref, "segment_id": image.segment_id}))
        log.info("case image stored", extra={"room": room_id, "image": image_id,
                                             "kind": image.kind, "bytes": image.size,
                                             "width": image.width, "height": image.height})
        await self._rooms.send_all(self._active(room_id),
                                   {"type": "image_added", "image": image.as_dict()})
        return image

    async def _store(self, data: bytes, key: str) -> str | None:
        """Put the bytes (sealed when encryption is on) under ``key``; the key id used."""
        with tempfile.TemporaryDirectory(prefix="huizhen-image-") as folder:
            plain = Path(folder) / "image"
            await asyncio.to_thread(plain.write_bytes, data)
            local, key_id = plain, None
            if self._keyring is not None:
                local = Path(folder) / "sealed"
                key_id = await asyncio.to_thread(encrypt_file, plain, local, self._keyring)
            try:
                await self._storage.put_file(local, key)
            except BaseException:
                with contextlib.suppress(Exception):
                    await self._storage.delete(key)
                raise
        return key_id

    # ---- reading -----------------------------------------------------------------------
    async def get(self, room_id: str, image_id: str) -> CaseImage:
        image = await self.db.get(image_id)
        if image is None or image.room_id != room_id:
            raise RoomError("image_not_found", f"no image {image_id!r} in this room")
        return image

    async def original(self, image: CaseImage) -> bytes:
        """The bytes as uploaded, checked against their SHA-256."""
        key = image.storage_key
        found = await self._storage.stat(key)
        if found is None:
            raise StorageError(f"{key} is missing from {self._storage.description}")
        if image.key_id:
            if self._keyring is None:
                raise StorageError("the image is encrypted and no keys are configured "
                                   "(recording.encryption.keys)")
            reader = await AsyncEncryptedReader.open(
                functools.partial(self._storage.read_range, key), found.size, self._keyring,
                where=key)
            data = await reader.read_range(0, reader.plain_size)
        else:
            data = await self._storage.read_range(key, 0, found.size)
        if hashlib.sha256(data).hexdigest() != image.sha256:
            raise StorageError(f"{key} does not match its SHA-256 (changed in storage)")
        return data

    async def served(self, image: CaseImage, window: tuple[float, float] | None) -> bytes:
        """What GET returns: PNG/JPEG as uploaded; DICOM rendered with ``window`` (or the
        file's own) as PNG at full size."""
        if image.purged_at is not None:  # before the render cache: it may hold it still
            raise RoomError("purged", image.gone())
        if image.kind != "dicom":
            if window is not None:
                raise ImageRejected(400, "bad_window", "window/level applies to DICOM "
                                    "images only")
            return await self.original(image)
        chosen = check_window(*window) if window else image.window or (0.0, 1.0)
        cache_key = (image.id, chosen[0], chosen[1])
        cached = self._rendered.get(cache_key)
        if cached is not None:
            self._rendered.move_to_end(cache_key)
            return cached
        data = await self.original(image)
        png = await asyncio.to_thread(render_dicom, data, chosen, self.config.max_pixels)
        self._rendered[cache_key] = png
        self._rendered_bytes += len(png)
        while self._rendered_bytes > RENDER_CACHE_BYTES and len(self._rendered) > 1:
            _, dropped = self._rendered.popitem(last=False)
            self._rendered_bytes -= len(dropped)
        return png

    # ---- the shared view -------------------------------------------------------------------
    def view_state(self, room_id: str) -> dict[str, Any] | None:
        room = self._views.get(room_id)
        return None if room is None or room.view is None else {**room.view.as_dict(),
                                                                 "seq": room.seq}

    def joined_view(self, member: Member) -> dict[str, Any]:
        """For ``joined.room``: the current view (none in the lobby: it is told once
        admitted)."""
        if member.info.state != ACTIVE:
            return {"image_view": None}
        room = self._views.get(member.room_id)
        if room is not None:
            room.sent[member.id] = room.seq
        return {"image_view": self.view_state(member.room_id)}

    async def show(self, member: Member, image_id: str | None,
                   window: dict[str, float] | None = None) -> None:
        """``show_image``: put an image of this room in front of everyone (None: take it
        down). Zoom, centre and pointer start afresh."""
        self.require_presenter(member)
        room = self._views.setdefault(member.room_id, _Room())
        if image_id is None:
            if room.view is None:
                return
            room.view = None
        else:
            image = await self.get(member.room_id, image_id)
            if image.purged_at is not None:
                raise RoomError("purged", image.gone())
            room.view = View(image=image, by=member.id, window=image.window if window is None
                             else self._window(image, window))
        await self._rooms.db.log_event(EventRecord(
            room_id=member.room_id, type="case_image_shown", at=utcnow(),
            participant_id=member.id, data={"image_id": image_id,
                                            "by": member.info.identity}))
        log.info("case image shown", extra={"room": member.room_id, "image": image_id,
                                            "participant": member.id})
        self._changed(member.room_id)

    def update(self, member: Member, message: dict[str, Any]) -> None:
        """``image_view``: the presenter moved the pointer, zoomed, panned or re-windowed."""
        self.require_presenter(member)
        room = self._views.get(member.room_id)
        view = room.view if room is not None else None
        if room is None or view is None or view.image.id != message["image_id"]:
            raise RoomError("image_not_shown", "that image is not shown now: send "
                            "show_image first")
        window = view.window
        if "window" in message:  # checked before anything changes
            window = view.image.window if message["window"] is None \
                else self._window(view.image, message["window"])
        if "zoom" in message:
            view.zoom = min(MAX_ZOOM, max(1.0, float(message["zoom"])))
        if "center" in message:
            x, y = message["center"]
            view.center = (float(x), float(y))
        if "pointer" in message:
            pointer = message["pointer"]
            view.pointer = None if pointer is None else (float(pointer[0]), float(pointer[1]))
        view.window = window
        view.by = member.id
        self._changed(member.room_id)

    @staticmethod
    def _window(image: CaseImage, window: dict[str, float]) -> tuple[float, float]:
        if image.kind != "dicom":
            raise RoomError("bad_message", "window/level applies to DICOM images only")
        try:
            return check_window(float(window["center"]), float(window["width"]))
        except ImageRejected as exc:
            raise RoomError("bad_message", exc.message) from exc

    def _active(self, room_id: str) -> list[Member]:
        return [m for m in self._rooms.members_of(room_id) if m.info.state == ACTIVE]

    def _changed(self, room_id: str) -> None:
        room = self._views.setdefault(room_id, _Room())
        room.seq += 1
        self._kick(room_id, room)

    def _kick(self, room_id: str, room: _Room) -> None:
        if room.task is None or room.task.done():
            room.task = spawn(self._flush(room_id, room))

    async def _flush(self, room_id: str, room: _Room) -> None:
        """Send the latest view to whoever does not have it yet, at most once per
        interval; loops while it changed during the send."""
        interval = self.config.view_interval_ms / 1000
        while True:
            wait = room.last_sent + interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            seq = room.seq
            recipients = [m for m in self._active(room_id) if room.sent.get(m.id) != seq]
            if recipients:
                room.last_sent = time.monotonic()
                message = {"type": "image_view", "seq": seq,
                           "view": self.view_state(room_id)}
                for m in recipients:
                    room.sent[m.id] = seq
                await self._rooms.send_all(recipients, message)
            if room.seq == seq:
                return

    # ---- RoomObserver ----------------------------------------------------------------------
    async def joined_state(self, room_id: str) -> dict[str, Any]:
        return {}  # signaling/ws.py adds joined_view(member): the lobby must not see it

    async def participant_joined(self, member: Member) -> None:
        return None

    def media_changed(self, room_id: str) -> None:
        """Someone was admitted, put on hold, came back or left: catch up who is behind."""
        room = self._views.get(room_id)
        if room is None:
            return
        present = {m.id for m in self._active(room_id)}
        for gone in set(room.sent) - present:
            room.sent.pop(gone, None)  # held or left: told again when back
        if any(room.sent.get(m) != room.seq for m in present):
            self._kick(room_id, room)

    def active_speaker(self, room_id: str, participant_id: str) -> None:
        return None

    async def room_ended(self, room_id: str) -> None:
        room = self._views.pop(room_id, None)
        if room is not None and room.task is not None:
            room.task.cancel()

    async def subject_changed(self, room_id: str, subject: Subject | None) -> None:
        """The next case: the previous patient's image comes down."""
        room = self._views.get(room_id)
        if room is not None and room.view is not None:
            room.view = None
            self._changed(room_id)
