"""The webhook outbox: deliveries waiting, sent, or given up, and how far the room event log
has been read (migration 0005).

The dispatcher (webhooks/dispatcher.py) turns new room events into deliveries, one per
endpoint, and moves its cursor in the same transaction — guarded by the cursor's old value, so
two nodes never both take the same events. A delivery is leased before it is sent (its
``next_at`` pushed past the send's timeout), so a sender that dies leaves it due again, never
lost; one that is sent is ``delivered``, one that keeps failing ``failed`` after the last try.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Index, Integer, String, Text, func, select, update
from sqlalchemy.orm import Mapped, mapped_column

from rooms.db import Base, Database, EventRow
from rooms.models import EventRecord, utcnow

STATUSES = ("pending", "delivered", "failed")


class DeliveryRow(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_status_next_at", "status", "next_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[int] = mapped_column(Integer)
    endpoint: Mapped[str] = mapped_column(Text)  # its URL
    type: Mapped[str] = mapped_column(String(64))
    body: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    next_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)


class CursorRow(Base):
    __tablename__ = "webhook_cursor"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_event_id: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime | None]


@dataclass
class Delivery:
    id: str
    event_id: int
    endpoint: str
    type: str
    body: dict[str, Any]
    status: str
    attempts: int
    created_at: datetime
    next_at: datetime
    delivered_at: datetime | None
    last_error: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "event_id": self.event_id, "endpoint": self.endpoint,
                "type": self.type, "status": self.status, "attempts": self.attempts,
                "created_at": self.created_at.isoformat(), "next_at": self.next_at.isoformat(),
                "delivered_at": self.delivered_at.isoformat() if self.delivered_at else None,
                "last_error": self.last_error}


def _delivery(row: DeliveryRow) -> Delivery:
    return Delivery(row.id, row.event_id, row.endpoint, row.type, dict(row.body), row.status,
                    row.attempts, row.created_at, row.next_at, row.delivered_at, row.last_error)


class WebhookDb:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._sessions = db.sessions

    # ---- the cursor over the room event log ------------------------------------------------
    async def cursor(self) -> int:
        """Where reading goes on; the first time, the log's end (no history is sent)."""
        async with self._sessions.begin() as session:
            row = await session.get(CursorRow, 1)
            assert row is not None, "migration 0005 makes the cursor row"
            if row.started_at is None:
                last = await session.scalar(select(func.max(EventRow.id)))
                row.last_event_id, row.started_at = last or 0, utcnow()
            return row.last_event_id

    async def events_after(self, event_id: int, limit: int) -> list[EventRecord]:
        async with self._sessions() as session:
            rows = await session.scalars(select(EventRow).where(EventRow.id > event_id)
                                         .order_by(EventRow.id).limit(limit))
            return [r.to_record() for r in rows]

    async def earlier_joins(self, room_id: str, before_id: int) -> bool:
        """Did anyone join the room before this event?"""
        async with self._sessions() as session:
            return await session.scalar(select(EventRow.id).where(
                EventRow.room_id == room_id, EventRow.type == "participant_joined",
                EventRow.id < before_id).limit(1)) is not None

    async def advance(self, old: int, new: int, deliveries: list[Delivery]) -> bool:
        """Move the cursor from ``old`` to ``new`` and queue the deliveries, or nothing if
        another node moved it first (False)."""
        async with self._sessions.begin() as session:
            moved = await session.execute(update(CursorRow).where(
                CursorRow.id == 1, CursorRow.last_event_id == old).values(last_event_id=new))
            if moved.rowcount != 1:
                await session.rollback()
                return False
            session.add_all(DeliveryRow(**d.__dict__) for d in deliveries)
        return True

    # ---- deliveries --------------------------------------------------------------------------
    async def due(self, now: datetime, limit: int) -> list[Delivery]:
        async with self._sessions() as session:
            rows = await session.scalars(select(DeliveryRow).where(
                DeliveryRow.status == "pending", DeliveryRow.next_at <= now)
                .order_by(DeliveryRow.next_at).limit(limit))
            return [_delivery(r) for r in rows]

    async def lease(self, delivery: Delivery, until: datetime) -> bool:
        """Take a due delivery for one try (True), unless another sender took it."""
        async with self._sessions.begin() as session:
            result = await session.execute(update(DeliveryRow).where(
                DeliveryRow.id == delivery.id, DeliveryRow.status == "pending",
                DeliveryRow.next_at == delivery.next_at).values(
                next_at=until, attempts=DeliveryRow.attempts + 1))
            return result.rowcount == 1

    async def delivered(self, delivery_id: str) -> None:
        await self._set(delivery_id, status="delivered", delivered_at=utcnow(), last_error=None)

    async def failed(self, delivery_id: str, error: str, retry_at: datetime | None) -> None:
        """One try failed: again at ``retry_at``, or never (``failed``) if None."""
        if retry_at is None:
            await self._set(delivery_id, status="failed", last_error=error[:1000])
        else:
            await self._set(delivery_id, next_at=retry_at, last_error=error[:1000])

    async def retry(self, delivery_id: str) -> Delivery | None:
        """An operator sends a failed (or delivered) one again, now."""
        await self._set(delivery_id, status="pending", next_at=utcnow(), attempts=0)
        return await self.get(delivery_id)

    async def _set(self, delivery_id: str, **values: Any) -> None:
        async with self._sessions.begin() as session:
            await session.execute(update(DeliveryRow).where(DeliveryRow.id == delivery_id)
                                  .values(**values))

    async def get(self, delivery_id: str) -> Delivery | None:
        async with self._sessions() as session:
            row = await session.get(DeliveryRow, delivery_id)
            return _delivery(row) if row is not None else None

    async def list(self, status: str | None = None, limit: int = 100,
                   since: timedelta | None = None) -> list[Delivery]:
        query = select(DeliveryRow).order_by(DeliveryRow.created_at.desc()).limit(limit)
        if status is not None:
            query = query.where(DeliveryRow.status == status)
        if since is not None:
            query = query.where(DeliveryRow.created_at >= utcnow() - since)
        async with self._sessions() as session:
            return [_delivery(r) for r in await session.scalars(query)]
