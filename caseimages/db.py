"""The ``case_images`` table (migration 0010): what each stored case image is, whose case it
belongs to and where its bytes are. The bytes themselves are in the recordings' storage
(recording/storage.py), under ``case-images/<room id>/<image id>.<ext>``.

After ``records.retention.documents_days`` from its upload an image is purged
(records/retention.py): its bytes are deleted from the storage and its label cleared; the row
stays as a tombstone (id, room, patient, kind, size, SHA-256, times, ``purged_at`` and why)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text, select, update
from sqlalchemy.orm import Mapped, mapped_column

from rooms.db import Base, Database

#: what a served image is, by kind (a DICOM file is served rendered as PNG)
SERVED_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "dicom": "image/png"}


class CaseImageRow(Base):
    __tablename__ = "case_images"
    __table_args__ = (Index("ix_case_images_room_id", "room_id"),
                      Index("ix_case_images_patient_ref", "patient_ref"))

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    room_id: Mapped[str] = mapped_column(String(128), ForeignKey("rooms.id"))
    #: the patient under discussion when it was uploaded (or the room's patient)
    patient_ref: Mapped[str | None] = mapped_column(String(255))
    #: the segment of the session (rooms/subjects.py) it belongs to, if the room had one
    segment_id: Mapped[str | None] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))  # png | jpeg | dicom
    label: Mapped[str | None] = mapped_column(Text)  # shown to the clinicians, never logged
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(Integer)  # bytes as uploaded
    sha256: Mapped[str] = mapped_column(String(64))  # of the bytes as uploaded
    storage_key: Mapped[str] = mapped_column(String(1024))
    #: the recording.encryption key that sealed the stored copy, if any
    key_id: Mapped[str | None] = mapped_column(String(64))
    #: DICOM: the file's window (or one spanning its values)
    window_center: Mapped[float | None] = mapped_column(Float)
    window_width: Mapped[float | None] = mapped_column(Float)
    uploaded_by: Mapped[str] = mapped_column(String(255))
    uploaded_at: Mapped[datetime]
    #: retention (migration 0011): when the bytes were deleted, and the rule
    purged_at: Mapped[datetime | None]
    purge_reason: Mapped[str | None] = mapped_column(String(255))

    def to_record(self) -> CaseImage:
        return CaseImage(
            id=self.id, room_id=self.room_id, patient_ref=self.patient_ref,
            segment_id=self.segment_id, kind=self.kind, label=self.label, width=self.width,
            height=self.height, size=self.size, sha256=self.sha256,
            storage_key=self.storage_key, key_id=self.key_id,
            window=(self.window_center, self.window_width)
            if self.window_center is not None and self.window_width is not None else None,
            uploaded_by=self.uploaded_by, uploaded_at=self.uploaded_at,
            purged_at=self.purged_at, purge_reason=self.purge_reason)


@dataclass(frozen=True)
class CaseImage:
    id: str
    room_id: str
    patient_ref: str | None
    segment_id: str | None
    kind: str
    label: str | None
    width: int
    height: int
    size: int
    sha256: str
    storage_key: str
    key_id: str | None
    window: tuple[float, float] | None
    uploaded_by: str
    uploaded_at: datetime
    purged_at: datetime | None = None
    purge_reason: str | None = None

    def gone(self) -> str:
        """What a reader of a purged image is told."""
        when = self.purged_at.isoformat() if self.purged_at else "?"
        return (f"image {self.id} was deleted on {when} under the retention rules "
                f"({self.purge_reason or 'retention'}); its record (id, patient, size, "
                "SHA-256, times) remains")

    @property
    def content_type(self) -> str:
        """What GET serves (DICOM: a rendered PNG)."""
        return SERVED_TYPES[self.kind]

    def as_dict(self) -> dict[str, Any]:
        """For participants and the API (the storage key and encryption key id stay inside)."""
        return {"id": self.id, "room_id": self.room_id, "kind": self.kind,
                "content_type": self.content_type, "label": self.label, "width": self.width,
                "height": self.height, "size": self.size, "sha256": self.sha256,
                "window": None if self.window is None else
                {"center": self.window[0], "width": self.window[1]},
                "patient_ref": self.patient_ref, "segment_id": self.segment_id,
                "uploaded_by": self.uploaded_by,
                "uploaded_at": self.uploaded_at.isoformat(),
                "status": "active" if self.purged_at is None else "purged",
                "purged_at": self.purged_at.isoformat() if self.purged_at else None}


class ImageDb:
    def __init__(self, db: Database) -> None:
        self._sessions = db.sessions

    async def add(self, image: CaseImage) -> None:
        async with self._sessions.begin() as session:
            session.add(CaseImageRow(
                id=image.id, room_id=image.room_id, patient_ref=image.patient_ref,
                segment_id=image.segment_id, kind=image.kind, label=image.label,
                width=image.width, height=image.height, size=image.size, sha256=image.sha256,
                storage_key=image.storage_key, key_id=image.key_id,
                window_center=image.window[0] if image.window else None,
                window_width=image.window[1] if image.window else None,
                uploaded_by=image.uploaded_by, uploaded_at=image.uploaded_at))

    async def get(self, image_id: str) -> CaseImage | None:
        async with self._sessions() as session:
            row = await session.get(CaseImageRow, image_id)
            return row.to_record() if row is not None else None

    async def of_room(self, room_id: str) -> list[CaseImage]:
        async with self._sessions() as session:
            rows = (await session.execute(
                select(CaseImageRow).where(CaseImageRow.room_id == room_id)
                .order_by(CaseImageRow.uploaded_at, CaseImageRow.id))).scalars()
            return [row.to_record() for row in rows]

    # ---- retention (records/retention.py) ----------------------------------------------------
    async def live(self) -> list[CaseImage]:
        """Every image not purged, oldest first."""
        async with self._sessions() as session:
            rows = (await session.execute(
                select(CaseImageRow).where(CaseImageRow.purged_at.is_(None))
                .order_by(CaseImageRow.uploaded_at, CaseImageRow.id))).scalars()
            return [row.to_record() for row in rows]

    async def mark_purged(self, image_id: str, at: datetime, reason: str) -> None:
        """Its bytes are deleted: the label goes too (it may name the patient), the row
        stays."""
        async with self._sessions.begin() as session:
            await session.execute(update(CaseImageRow).where(
                CaseImageRow.id == image_id, CaseImageRow.purged_at.is_(None)).values(
                label=None, purged_at=at, purge_reason=reason))
