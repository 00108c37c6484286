"""Clinical documents a room leaves in the patient's record: a joint clinic's consult opinion,
a ward round's notes, an MDT case's minutes and conclusion (which kinds where: ``documents``
in the policy table; who writes and signs: the ``sign`` grant).

A document belongs to the encounter under way when it is first written: the patient under
discussion's segment (ward round, MDT; with the MDT case, the agenda item) or the session's
own encounter — so a note lands in that patient's record only. It is **versioned**: each save
is a new version of the same series (never an update in place); a version can be **signed** by
its author, after which it never changes (a later correction is a new version, which can be
signed in turn). What is stored and signed is the exact bytes of a canonical JSON rendering
(:func:`render`): the text together with whom it is about, who wrote it, when, and which
version it replaces — a signature cannot be moved to another patient. Signatures are detached
JWS with the author's certificate chain (records/signing.py); ``huizhen document verify``
checks an exported copy. A signed document is the room event ``document_signed`` (a webhook).

After ``records.retention.documents_days`` a document (every version, and their signatures) is
purged (records/retention.py): its rows stay as tombstones (ids, room, patient, author, times,
SHA-256, ``purged_at`` and why), its bytes and signatures are gone; a purged series takes no
new version and no signature.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.orm import Mapped, mapped_column

from records.signing import KeyStore, SigningError, Verified, content_sha256, sign, verify
from rooms.db import Base, Database
from rooms.members import ACTIVE, Member, RoomError
from rooms.models import EventRecord, RoomRecord, new_id, utcnow
from rooms.policy import CARE_TEAM, kind_policy
from rooms.service import RoomService

log = logging.getLogger("huizhen.records")

MAX_TEXT = 20_000
FORMAT = "huizhen-document/1"


class DocumentRow(Base):
    __tablename__ = "documents"
    __table_args__ = (Index("ix_documents_room_id", "room_id"),
                      Index("ix_documents_patient_ref", "patient_ref"),
                      UniqueConstraint("series_id", "version", name="uq_documents_series_id"))

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    series_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    room_id: Mapped[str] = mapped_column(String(128), ForeignKey("rooms.id"))
    segment_id: Mapped[str | None] = mapped_column(String(128))
    patient_ref: Mapped[str | None] = mapped_column(String(255))
    agenda_item_id: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    author_identity: Mapped[str] = mapped_column(String(255))
    author_role: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]
    content: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime | None]
    signature: Mapped[str | None] = mapped_column(Text)
    signer_cert_sha256: Mapped[str | None] = mapped_column(String(64))
    #: retention (migration 0011): when the text and signature were deleted, and the rule
    purged_at: Mapped[datetime | None]
    purge_reason: Mapped[str | None] = mapped_column(String(255))


@dataclass(frozen=True)
class Document:
    id: str
    series_id: str
    version: int
    room_id: str
    encounter_id: str  # the segment, or the session's encounter (its id is the room's)
    patient_ref: str | None
    agenda_item_id: str | None
    kind: str
    author_identity: str
    author_role: str
    created_at: datetime
    content: bytes
    sha256: str
    signed_at: datetime | None
    signature: str | None
    signer_cert_sha256: str | None
    purged_at: datetime | None = None
    purge_reason: str | None = None

    @property
    def body(self) -> dict[str, Any]:
        """The canonical JSON (empty once purged: only the tombstone's columns are left)."""
        if self.purged_at is not None:
            return {}
        parsed: dict[str, Any] = json.loads(self.content)
        return parsed

    def gone(self) -> str:
        """What a reader of a purged version is told."""
        when = self.purged_at.isoformat() if self.purged_at else "?"
        return (f"document {self.id} (version {self.version} of {self.series_id}) was deleted "
                f"on {when} under the retention rules ({self.purge_reason or 'retention'}); "
                "its record (ids, patient, author, times, SHA-256) remains")

    @property
    def text(self) -> str:
        return str(self.body.get("text", ""))

    def as_dict(self, latest: int | None = None) -> dict[str, Any]:
        body = self.body
        return {"id": self.id, "series_id": self.series_id, "version": self.version,
                "latest": latest is None or latest == self.version,
                "room_id": self.room_id, "encounter_id": self.encounter_id,
                "patient_ref": self.patient_ref, "case_id": self.agenda_item_id,
                "kind": self.kind, "title": body.get("title"), "text": body.get("text"),
                "author": body.get("author"), "created_at": self.created_at.isoformat(),
                "sha256": self.sha256, "signed": self.signed_at is not None,
                "signed_at": self.signed_at.isoformat() if self.signed_at else None,
                "replaces": body.get("replaces"),
                "status": "active" if self.purged_at is None else "purged",
                "purged_at": self.purged_at.isoformat() if self.purged_at else None}


def _document(row: DocumentRow) -> Document:
    return Document(id=row.id, series_id=row.series_id, version=row.version,
                    room_id=row.room_id, encounter_id=row.segment_id or row.room_id,
                    patient_ref=row.patient_ref, agenda_item_id=row.agenda_item_id,
                    kind=row.kind, author_identity=row.author_identity,
                    author_role=row.author_role, created_at=row.created_at,
                    content=row.content, sha256=row.sha256, signed_at=row.signed_at,
                    signature=row.signature, signer_cert_sha256=row.signer_cert_sha256,
                    purged_at=row.purged_at, purge_reason=row.purge_reason)


def render(fields: dict[str, Any]) -> bytes:
    """The canonical bytes of a document version: sorted-key, compact UTF-8 JSON."""
    return json.dumps({"format": FORMAT, **fields}, ensure_ascii=False, sort_keys=True,
                      separators=(",", ":")).encode()


class DocumentDb:
    def __init__(self, db: Database) -> None:
        self._sessions = db.sessions

    async def add(self, row: DocumentRow) -> Document:
        async with self._sessions.begin() as session:
            session.add(row)
        return _document(row)

    async def get(self, document_id: str) -> Document | None:
        async with self._sessions() as session:
            row = await session.get(DocumentRow, document_id)
            return None if row is None else _document(row)

    async def latest_version(self, series_id: str) -> int:
        async with self._sessions() as session:
            return int(await session.scalar(select(func.max(DocumentRow.version)).where(
                DocumentRow.series_id == series_id)) or 0)

    async def set_signature(self, document_id: str, signature: str, at: datetime,
                            cert_sha256: str) -> bool:
        """Sign an unsigned version (False if it was signed meanwhile)."""
        async with self._sessions.begin() as session:
            row = await session.get(DocumentRow, document_id, with_for_update=True)
            if row is None or row.signature is not None or row.purged_at is not None:
                return False
            row.signature, row.signed_at, row.signer_cert_sha256 = signature, at, cert_sha256
        return True

    async def where(self, *conditions: Any) -> list[Document]:
        async with self._sessions() as session:
            rows = await session.scalars(select(DocumentRow).where(*conditions).order_by(
                DocumentRow.created_at, DocumentRow.version))
            return [_document(r) for r in rows]

    async def of_room(self, room_id: str) -> list[Document]:
        return await self.where(DocumentRow.room_id == room_id)

    async def of_encounters(self, encounter_ids: list[str]) -> list[Document]:
        """The documents of these encounters (a session's id is its room's)."""
        if not encounter_ids:
            return []
        return await self.where(
            (DocumentRow.segment_id.in_(encounter_ids))
            | (DocumentRow.segment_id.is_(None) & DocumentRow.room_id.in_(encounter_ids)))

    async def series(self, series_id: str) -> list[Document]:
        return await self.where(DocumentRow.series_id == series_id)

    # ---- retention (records/retention.py) ----------------------------------------------------
    async def live_versions(self) -> list[VersionInfo]:
        """Every version not purged, without its bytes, oldest first."""
        async with self._sessions() as session:
            rows = await session.execute(select(
                DocumentRow.id, DocumentRow.series_id, DocumentRow.version, DocumentRow.room_id,
                DocumentRow.segment_id, DocumentRow.patient_ref, DocumentRow.kind,
                DocumentRow.created_at, DocumentRow.signed_at,
                func.length(DocumentRow.content)).where(DocumentRow.purged_at.is_(None))
                .order_by(DocumentRow.created_at, DocumentRow.version))
            return [VersionInfo(id=r[0], series_id=r[1], version=r[2], room_id=r[3],
                                encounter_id=r[4] or r[3], patient_ref=r[5], kind=r[6],
                                created_at=r[7], signed_at=r[8], size=int(r[9] or 0))
                    for r in rows]

    async def mark_purged(self, series_id: str, cutoff: datetime, at: datetime,
                          reason: str) -> int:
        """Delete the text and signatures of every version of a series whose last version
        (its signing too) is no later than ``cutoff``; the rows stay as tombstones. The number
        of versions purged (0 if a version came or was signed after ``cutoff`` meanwhile)."""
        async with self._sessions.begin() as session:
            rows = list(await session.scalars(select(DocumentRow).where(
                DocumentRow.series_id == series_id).with_for_update()))
            if any(max(r.created_at, r.signed_at or r.created_at) > cutoff for r in rows):
                return 0
            live = [r for r in rows if r.purged_at is None]
            for row in live:
                row.content, row.signature = b"", None
                row.purged_at, row.purge_reason = at, reason
            return len(live)


@dataclass(frozen=True)
class VersionInfo:
    """A version's metadata without its bytes (what retention needs)."""

    id: str
    series_id: str
    version: int
    room_id: str
    encounter_id: str
    patient_ref: str | None
    kind: str
    created_at: datetime
    signed_at: datetime | None
    size: int

    @property
    def last_at(self) -> datetime:
        """Its last change: signed, else saved."""
        return max(self.created_at, self.signed_at or self.created_at)


def latest_only(documents: list[Document]) -> list[Document]:
    latest: dict[str, Document] = {}
    for doc in documents:
        if doc.series_id not in latest or doc.version > latest[doc.series_id].version:
            latest[doc.series_id] = doc
    return sorted(latest.values(), key=lambda d: d.created_at)


class Documents:
    """Writing and signing in the call (the ``document_*`` messages of docs/protocol.md)."""

    def __init__(self, rooms: RoomService, db: Database, keys: KeyStore) -> None:
        self._rooms = rooms
        self.db = DocumentDb(db)
        self.keys = keys

    async def _writable(self, member: Member, kind: str) -> RoomRecord:
        """The member's room, if they may write a ``kind`` document in it now."""
        if not member.grants.sign:
            raise RoomError("not_permitted", f"your role ({member.info.role}) may not write "
                            "or sign documents here")
        room = await self._rooms.get_room(member.room_id)
        kinds = [k.value for k in kind_policy(room.kind).documents]
        if kind not in kinds:
            raise RoomError("bad_document_kind", f"a {room.kind} room writes "
                            f"{', '.join(kinds) or 'no documents'}, not {kind!r}")
        if member.info.state != ACTIVE or room.status != "open":
            raise RoomError("not_admitted", "documents are written in an open consultation")
        return room

    async def save(self, member: Member, kind: str, text: str, title: str | None,
                   series_id: str | None, base_version: int | None) -> Document:
        """A new document (no ``series_id``) or a new version of one, which must be based on
        its latest version (``base_version``: two writers cannot overwrite each other)."""
        room = await self._writable(member, kind)
        if not text.strip() or len(text) > MAX_TEXT:
            raise RoomError("bad_document", f"the text must be 1-{MAX_TEXT} characters")
        replaces = None
        if series_id is None:
            series_id, version = new_id("doc"), 1
            subject = self._rooms.subjects.current(room.id)
            case = await self._rooms.agenda.current(room.id)
            segment = subject.segment_id if subject else None
            patient = subject.patient_ref if subject else room.patient_ref
            case_id = case.id if case else None
        else:
            versions = await self.db.series(series_id)
            if not versions or versions[0].room_id != room.id or versions[0].kind != kind:
                raise RoomError("unknown_document", f"no {kind} {series_id!r} in this room")
            last = versions[-1]
            if last.purged_at is not None:
                raise RoomError("document_purged", last.gone())
            if base_version != last.version:
                raise RoomError("document_conflict", f"version {last.version} was saved "
                                f"meanwhile (by {last.body['author']['name']}): reload it and "
                                "make your change on it")
            version, replaces = last.version + 1, last.id
            segment = None if last.encounter_id == room.id else last.encounter_id
            patient, case_id = last.patient_ref, last.agenda_item_id
        now, doc_id = utcnow(), new_id("dv")
        content = render({
            "id": doc_id, "series": series_id, "version": version, "kind": kind,
            "room": room.id, "encounter": segment or room.id, "patient": patient,
            "case": case_id, "title": (title or "").strip()[:200] or None, "text": text,
            "author": {"identity": member.info.identity, "role": member.info.role,
                       "name": member.info.name},
            "created_at": now.isoformat(), "replaces": replaces})
        document = await self.db.add(DocumentRow(
            id=doc_id, series_id=series_id, version=version, room_id=room.id,
            segment_id=segment, patient_ref=patient, agenda_item_id=case_id, kind=kind,
            author_identity=member.info.identity, author_role=member.info.role,
            created_at=now, content=content, sha256=content_sha256(content),
            signed_at=None, signature=None, signer_cert_sha256=None))
        log.info("document saved", extra={"room": room.id, "document": doc_id,
                                          "version": version, "kind": kind})
        await self._tell(room.id, document)
        return document

    async def sign(self, member: Member, document_id: str) -> Document:
        """The author signs their latest version with their certificate."""
        document = await self.db.get(document_id)
        if document is None or document.room_id != member.room_id:
            raise RoomError("unknown_document", f"no document {document_id!r} in this room")
        if document.purged_at is not None:
            raise RoomError("document_purged", document.gone())
        await self._writable(member, document.kind)
        if document.author_identity != member.info.identity:
            raise RoomError("not_permitted", "only its author signs a document")
        if document.signature is not None:
            raise RoomError("already_signed", "this version is signed already")
        if await self.db.latest_version(document.series_id) != document.version:
            raise RoomError("document_conflict", "a newer version exists: sign that one")
        try:
            signer = self.keys.signer(member.info.identity, member.info.name)
            at = utcnow()
            signature = sign(document.content, signer, at)
            checked = verify(document.content, signature, self.keys.anchors)
        except SigningError as exc:
            raise RoomError(exc.code, exc.message) from exc
        if not await self.db.set_signature(document.id, signature, checked.signed_at,
                                           checked.cert_sha256):
            raise RoomError("already_signed", "this version is signed already")
        signed = await self.db.get(document.id)
        assert signed is not None
        await self._rooms.db.log_event(EventRecord(
            room_id=document.room_id, type="document_signed", at=checked.signed_at,
            participant_id=member.id,
            data={"document_id": document.id, "series_id": document.series_id,
                  "version": document.version, "kind": document.kind,
                  "signed_by": member.info.identity, "patient_ref": document.patient_ref,
                  "encounter_id": document.encounter_id, "sha256": document.sha256}))
        log.info("document signed", extra={"room": document.room_id, "document": document.id,
                                           "version": document.version})
        await self._tell(document.room_id, signed)
        return signed

    async def listing(self, member: Member) -> list[dict[str, Any]]:
        """The room's documents (every version) for a member of the care team."""
        if member.info.role not in CARE_TEAM or member.info.state != ACTIVE:
            raise RoomError("not_permitted", f"your role ({member.info.role}) does not see "
                            "the room's documents")
        documents = await self.db.of_room(member.room_id)
        latest = {d.series_id: d.version for d in latest_only(documents)}
        return [d.as_dict(latest[d.series_id]) for d in documents]

    async def _tell(self, room_id: str, document: Document) -> None:
        """The care team in the room sees each saved and signed version."""
        latest = await self.db.latest_version(document.series_id)
        await self._rooms.send_all(
            [m for m in self._rooms.members_of(room_id)
             if m.info.role in CARE_TEAM and m.info.state == ACTIVE],
            {"type": "document", "document": document.as_dict(latest)})

    def check(self, document: Document) -> Verified:
        """Verify a stored signed version against the configured trust anchors."""
        if document.purged_at is not None:
            raise SigningError("purged", document.gone())
        if document.signature is None:
            raise SigningError("not_signed", "this version is not signed")
        return verify(document.content, document.signature, self.keys.anchors)
