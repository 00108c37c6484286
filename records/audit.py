"""The audit log: append-only, hash-chained, sealed with a secret key.

Every row carries ``hash = HMAC-SHA256(key, prev_hash ‖ canonical JSON of the row)``; the row
before it is named by ``prev_hash``, and ``audit_head`` (one row, updated in the same
transaction as every append) holds the last sequence number and hash. :func:`AuditLog.verify`
walks the chain and reports

* an **edited** row: its hash no longer matches what it says;
* an **inserted** row: it names a row before it that is not the one before it, or the rows
  after it no longer chain;
* **deleted** rows: a gap in the sequence, or a log that ends before the head says it does.

The key (``records.audit.keys``; a row names the key id that sealed it, so keys can be
rotated) lives outside the database: someone who can write to the database but does not have
the key cannot forge a chain that verifies. Appends are serialised across processes by the
database itself: the first statement of an append updates the head row, which takes its lock
(a row lock on PostgreSQL, the write lock on SQLite) until the transaction ends.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String, Text, select, update
from sqlalchemy.orm import Mapped, mapped_column

from rooms.db import Base, Database
from rooms.models import utcnow

GENESIS = "0" * 64  # the prev_hash of the first row
OUTCOMES = ("allowed", "denied", "done", "failed")


class AuditError(Exception):
    """The log cannot be written or read as configured; the message says what to set."""


class AuditRow(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_patient_ref", "patient_ref"),
                      Index("ix_audit_log_encounter_id", "encounter_id"))

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(255))  # identity, api:<key>, cli:<user>
    role: Mapped[str] = mapped_column(String(32))  # doctor, patient, admin, api, system …
    action: Mapped[str] = mapped_column(String(64))  # recording.play, encounter.list …
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str | None] = mapped_column(String(255))
    patient_ref: Mapped[str | None] = mapped_column(String(255))
    encounter_id: Mapped[str | None] = mapped_column(String(128))
    address: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[dict[str, Any] | None]
    key_id: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHeadRow(Base):
    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)  # always 1
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


@dataclass(frozen=True)
class AuditEvent:
    """One thing someone did or tried: who (actor, role), what (action on an entity), for
    which patient and encounter, from where, why, and how it ended."""

    actor: str
    role: str
    action: str
    entity_type: str
    entity_id: str | None = None
    patient_ref: str | None = None
    encounter_id: str | None = None
    address: str | None = None
    reason: str | None = None
    outcome: str = "allowed"
    detail: dict[str, Any] | None = None


@dataclass(frozen=True)
class AuditEntry(AuditEvent):
    seq: int = 0
    at: datetime = field(default_factory=utcnow)
    key_id: str = ""
    prev_hash: str = ""
    hash: str = ""

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = self.at.isoformat()
        return data


@dataclass(frozen=True)
class Problem:
    seq: int | None
    kind: str  # edited | inserted | deleted | unknown_key | head
    message: str

    def __str__(self) -> str:
        return self.message


def _canonical(entry: AuditEntry) -> bytes:
    """What the hash covers: every field but the hash itself, in one fixed JSON form."""
    data = entry.as_dict()
    data.pop("hash")
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      default=str).encode()


def seal(key: bytes, entry: AuditEntry) -> str:
    return hmac.new(key, entry.prev_hash.encode() + _canonical(entry), hashlib.sha256).hexdigest()


def _entry(row: AuditRow) -> AuditEntry:
    return AuditEntry(actor=row.actor, role=row.role, action=row.action,
                      entity_type=row.entity_type, entity_id=row.entity_id,
                      patient_ref=row.patient_ref, encounter_id=row.encounter_id,
                      address=row.address, reason=row.reason, outcome=row.outcome,
                      detail=row.detail, seq=row.seq, at=row.at, key_id=row.key_id,
                      prev_hash=row.prev_hash, hash=row.hash)


class AuditLog:
    """Append and read the audit log; ``keys`` by key id, ``active_key`` seals new rows."""

    def __init__(self, db: Database, keys: dict[str, bytes], active_key: str) -> None:
        if active_key not in keys:
            raise AuditError(f"audit key {active_key!r} is not configured: set "
                             "records.audit.keys and records.audit.active_key")
        self._sessions = db.sessions
        self._keys = keys
        self._active = active_key

    async def append(self, event: AuditEvent) -> AuditEntry:
        if event.outcome not in OUTCOMES:
            raise ValueError(f"outcome {event.outcome!r}: use one of {', '.join(OUTCOMES)}")
        async with self._sessions.begin() as session:
            # the head row first: its lock serialises appends from every process
            await session.execute(update(AuditHeadRow).where(AuditHeadRow.id == 1)
                                  .values(seq=AuditHeadRow.seq + 1))
            head = await session.get(AuditHeadRow, 1)
            if head is None:
                raise AuditError("the audit log has no head row: the database was not migrated "
                                 "by Huizhen (migration 0003 creates it)")
            prev_seq, prev_hash = head.seq - 1, head.hash
            entry = AuditEntry(**asdict(event), seq=prev_seq + 1, at=utcnow(),
                               key_id=self._active, prev_hash=prev_hash)
            entry = AuditEntry(**{**asdict(entry), "hash": seal(self._keys[self._active], entry)})
            session.add(AuditRow(**asdict(entry)))
            head.hash = entry.hash
        return entry

    async def entries(self, *, patient_ref: str | None = None, encounter_id: str | None = None,
                      actor: str | None = None, after_seq: int = 0, limit: int = 1000
                      ) -> list[AuditEntry]:
        query = select(AuditRow).where(AuditRow.seq > after_seq)
        if patient_ref is not None:
            query = query.where(AuditRow.patient_ref == patient_ref)
        if encounter_id is not None:
            query = query.where(AuditRow.encounter_id == encounter_id)
        if actor is not None:
            query = query.where(AuditRow.actor == actor)
        async with self._sessions() as session:
            rows = (await session.scalars(query.order_by(AuditRow.seq).limit(limit))).all()
        return [_entry(r) for r in rows]

    async def _all(self, batch: int = 2000) -> AsyncIterator[AuditEntry]:
        last = 0
        while True:
            async with self._sessions() as session:
                rows = (await session.scalars(select(AuditRow).where(AuditRow.seq > last)
                                              .order_by(AuditRow.seq).limit(batch))).all()
            if not rows:
                return
            for row in rows:
                yield _entry(row)
            last = rows[-1].seq

    async def verify(self) -> tuple[int, list[Problem]]:
        """(rows checked, problems): every row's seal, the chain, the sequence, the head."""
        problems: list[Problem] = []
        expected_seq, prev_hash, count = 1, GENESIS, 0
        async for entry in self._all():
            count += 1
            key = self._keys.get(entry.key_id)
            if entry.seq > expected_seq:
                gap = (f"row {expected_seq}" if entry.seq == expected_seq + 1
                       else f"rows {expected_seq}–{entry.seq - 1}")
                problems.append(Problem(expected_seq, "deleted", f"{gap} missing (deleted)"))
            if key is None:
                problems.append(Problem(entry.seq, "unknown_key",
                                        f"row {entry.seq}: sealed with key {entry.key_id!r}, "
                                        "which is not configured (records.audit.keys)"))
            elif not hmac.compare_digest(seal(key, entry), entry.hash):
                problems.append(Problem(entry.seq, "edited",
                                        f"row {entry.seq}: its content does not match its seal "
                                        "(edited)"))
            if entry.prev_hash != prev_hash and entry.seq == expected_seq:
                problems.append(Problem(entry.seq, "inserted",
                                        f"row {entry.seq}: does not follow row {entry.seq - 1} "
                                        "(inserted, replaced or reordered)"))
            expected_seq, prev_hash = entry.seq + 1, entry.hash
        async with self._sessions() as session:
            head = await session.get(AuditHeadRow, 1)
        head_seq, head_hash = (head.seq, head.hash) if head else (0, GENESIS)
        if head_seq > expected_seq - 1:
            missing = (f"row {head_seq}" if head_seq == expected_seq
                       else f"rows {expected_seq}–{head_seq}")
            problems.append(Problem(expected_seq, "deleted",
                                    f"the log ends at row {expected_seq - 1} but the head says "
                                    f"{head_seq}: {missing} deleted"))
        elif head_seq != expected_seq - 1 or head_hash != prev_hash:
            problems.append(Problem(head_seq, "head",
                                    f"the head (row {head_seq}) does not match the log's last "
                                    f"row ({expected_seq - 1}): rows added around the log"))
        return count, problems
