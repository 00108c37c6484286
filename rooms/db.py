"""Durable history: rooms, participant sessions and the room event log.

SQLAlchemy 2 async ORM over SQLite (aiosqlite) or PostgreSQL (asyncpg). The schema is owned by
the Alembic migrations in ``rooms/migrations``; :meth:`Database.open` upgrades to head.
Timestamps are timezone-aware UTC datetimes in and out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, cast

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    Update,
    event,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, Connection, CursorResult, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    InvalidRequestError,
    SQLAlchemyError,
)
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from rooms.models import EventRecord, RoomRecord, SessionRecord, utcnow

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_CONFIG_HINT = "check database.url / HUIZHEN_DATABASE__URL"
_PG_MIGRATION_LOCK = 0x48555A48  # pg_advisory_xact_lock key: one migrator at a time


class DatabaseError(Exception):
    """The database cannot be opened or migrated; the message says what to check."""


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetime stored as UTC; naive values are rejected."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()}: pass a timezone-aware UTC time")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite keeps no zone; we only ever store UTC
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
    }


class RoomRow(Base):
    __tablename__ = "rooms"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    patient_ref: Mapped[str | None] = mapped_column(String(255))
    scheduled_start: Mapped[datetime | None]
    scheduled_end: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(32))
    ended_at: Mapped[datetime | None]
    end_reason: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(255))
    auto_record: Mapped[bool | None] = mapped_column(Boolean)

    def to_record(self) -> RoomRecord:
        return RoomRecord(
            id=self.id,
            kind=self.kind,
            title=self.title,
            created_at=self.created_at,
            patient_ref=self.patient_ref,
            scheduled_start=self.scheduled_start,
            scheduled_end=self.scheduled_end,
            status=self.status,
            ended_at=self.ended_at,
            end_reason=self.end_reason,
            created_by=self.created_by,
            auto_record=self.auto_record,
        )


class SessionRow(Base):
    __tablename__ = "participant_sessions"
    __table_args__ = (Index("ix_participant_sessions_room_id", "room_id"),)

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    room_id: Mapped[str] = mapped_column(String(128), ForeignKey("rooms.id"))
    identity: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(32))
    joined_at: Mapped[datetime]
    left_at: Mapped[datetime | None]
    leave_reason: Mapped[str | None] = mapped_column(Text)
    token_id: Mapped[str | None] = mapped_column(String(128))
    department: Mapped[str | None] = mapped_column(String(200))  # migration 0009

    def to_record(self) -> SessionRecord:
        return SessionRecord(
            id=self.id,
            room_id=self.room_id,
            identity=self.identity,
            name=self.name,
            role=self.role,
            joined_at=self.joined_at,
            left_at=self.left_at,
            leave_reason=self.leave_reason,
            token_id=self.token_id,
            department=self.department,
        )


class EventRow(Base):
    __tablename__ = "room_events"
    __table_args__ = (Index("ix_room_events_room_id_id", "room_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    room_id: Mapped[str] = mapped_column(String(128), ForeignKey("rooms.id"))
    at: Mapped[datetime]
    type: Mapped[str] = mapped_column(String(64))
    participant_id: Mapped[str | None] = mapped_column(String(128))
    data: Mapped[dict[str, Any]]

    def to_record(self) -> EventRecord:
        return EventRecord(
            id=self.id,
            room_id=self.room_id,
            type=self.type,
            at=self.at,
            participant_id=self.participant_id,
            data=dict(self.data or {}),
        )


class InviteUseRow(Base):
    """Who owns a single-use invite: the first device that joined with it."""

    __tablename__ = "invite_uses"

    token_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    room_id: Mapped[str] = mapped_column(String(128), ForeignKey("rooms.id"))
    device: Mapped[str] = mapped_column(String(64))
    first_at: Mapped[datetime]


def alembic_config() -> Config:
    """Alembic configuration for ``rooms/migrations`` (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
    finally:
        cursor.close()


def _make_sqlite_folder(url: URL) -> None:
    path = url.database
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    try:
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseError(
            f"cannot create the folder for {_where(url)}: {exc}; {_CONFIG_HINT}"
        ) from exc


def _reason(exc: BaseException) -> str:
    orig = exc.orig if isinstance(exc, DBAPIError) else None
    return str(orig or exc).strip() or type(exc).__name__


def _is_network(exc: BaseException) -> bool:
    orig = exc.orig if isinstance(exc, DBAPIError) else None
    return isinstance(exc, OSError) or isinstance(orig, OSError)


def _where(url: URL) -> str:
    if url.get_backend_name() == "sqlite":
        return f"SQLite database {url.database or ':memory:'}"
    if url.get_backend_name() == "postgresql":
        return f"PostgreSQL at {url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"
    return url.render_as_string(hide_password=True)


class Database:
    """Async access to the durable store; create with :meth:`open`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def sessions(self) -> async_sessionmaker[Any]:
        """The session factory, for other packages' tables on the same database."""
        return self._sessions

    @classmethod
    async def open(cls, url: str) -> Database:
        """Connect, migrate to head and return a ready database."""
        try:
            sa_url = make_url(url)
        except ArgumentError as exc:
            raise DatabaseError(
                f"invalid database URL: {exc}; use sqlite+aiosqlite:///path/file.db "
                f"or postgresql+asyncpg://user@host/db ({_CONFIG_HINT})"
            ) from exc
        backend = sa_url.get_backend_name()
        where = _where(sa_url)
        kwargs: dict[str, Any] = {}
        if backend == "sqlite":
            _make_sqlite_folder(sa_url)
        elif backend == "postgresql":
            kwargs = {"pool_pre_ping": True, "connect_args": {"timeout": 10}}
        try:
            engine = create_async_engine(sa_url, **kwargs)
        except (ArgumentError, InvalidRequestError, ImportError) as exc:
            raise DatabaseError(
                f"unsupported database URL {sa_url.render_as_string(hide_password=True)}: {exc}; "
                f"use sqlite+aiosqlite:///path/file.db or postgresql+asyncpg://user@host/db "
                f"({_CONFIG_HINT})"
            ) from exc
        if backend == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)

        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (OSError, SQLAlchemyError) as exc:
            await engine.dispose()
            verb = "open" if backend == "sqlite" else "reach" if _is_network(exc) else "connect to"
            raise DatabaseError(f"cannot {verb} {where}: {_reason(exc)}; {_CONFIG_HINT}") from exc
        try:
            async with engine.begin() as conn:
                await conn.run_sync(_upgrade)
        except Exception as exc:
            await engine.dispose()
            raise DatabaseError(
                f"migrating {where} to the current schema failed: {_reason(exc)}; "
                "check the database user may create tables, or restore a backup"
            ) from exc
        return cls(engine)

    async def close(self) -> None:
        await self._engine.dispose()

    async def ping(self) -> bool:
        """True when the database answers ``SELECT 1``."""
        try:
            async with self._engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (OSError, SQLAlchemyError):
            return False
        return True

    # rooms

    async def create_room(self, room: RoomRecord) -> None:
        async with self._sessions.begin() as session:
            session.add(
                RoomRow(
                    id=room.id,
                    kind=room.kind,
                    title=room.title,
                    created_at=room.created_at,
                    patient_ref=room.patient_ref,
                    scheduled_start=room.scheduled_start,
                    scheduled_end=room.scheduled_end,
                    status=room.status,
                    ended_at=room.ended_at,
                    end_reason=room.end_reason,
                    created_by=room.created_by,
                    auto_record=room.auto_record,
                )
            )

    async def get_room(self, room_id: str) -> RoomRecord | None:
        async with self._sessions() as session:
            row = await session.get(RoomRow, room_id)
            return row.to_record() if row is not None else None

    async def list_rooms(self, status: str | None = None, limit: int = 100) -> list[RoomRecord]:
        """Rooms, newest first, optionally only those with ``status``."""
        stmt = select(RoomRow).order_by(RoomRow.created_at.desc(), RoomRow.id.desc()).limit(limit)
        if status is not None:
            stmt = stmt.where(RoomRow.status == status)
        async with self._sessions() as session:
            return [row.to_record() for row in await session.scalars(stmt)]

    async def end_room(self, room_id: str, at: datetime, reason: str) -> bool:
        """Mark a room ended; False if it is unknown or already ended."""
        stmt = (
            update(RoomRow)
            .where(RoomRow.id == room_id, RoomRow.status != "ended")
            .values(status="ended", ended_at=at, end_reason=reason)
        )
        return await self.run_update(stmt) == 1

    # participant sessions

    async def session_started(self, session: SessionRecord, event: EventRecord | None = None
                              ) -> None:
        """Record a join; with ``event``, its entry in the event log too, in the same
        transaction (a join holds its room's lock meanwhile: one round trip, not two)."""
        async with self._sessions.begin() as db_session:
            db_session.add(
                SessionRow(
                    id=session.id,
                    room_id=session.room_id,
                    identity=session.identity,
                    name=session.name,
                    role=session.role,
                    joined_at=session.joined_at,
                    left_at=session.left_at,
                    leave_reason=session.leave_reason,
                    token_id=session.token_id,
                    department=session.department,
                )
            )
            if event is not None:
                db_session.add(_event_row(event))

    async def session_ended(self, session_id: str, at: datetime, reason: str) -> None:
        """Record a leave; no-op if the session already ended (or is unknown)."""
        stmt = (
            update(SessionRow)
            .where(SessionRow.id == session_id, SessionRow.left_at.is_(None))
            .values(left_at=at, leave_reason=reason)
        )
        await self.run_update(stmt)

    async def sessions_for_room(self, room_id: str) -> list[SessionRecord]:
        stmt = (
            select(SessionRow)
            .where(SessionRow.room_id == room_id)
            .order_by(SessionRow.joined_at, SessionRow.id)
        )
        async with self._sessions() as session:
            return [row.to_record() for row in await session.scalars(stmt)]

    async def close_open_sessions(self, at: datetime, reason: str) -> int:
        """End every session still open (after a crash/restart); returns how many."""
        stmt = (
            update(SessionRow)
            .where(SessionRow.left_at.is_(None))
            .values(left_at=at, leave_reason=reason)
        )
        return await self.run_update(stmt)

    # event log

    async def log_event(self, event: EventRecord) -> int:
        """Append to the event log; returns the new event id."""
        row = _event_row(event)
        async with self._sessions.begin() as session:
            session.add(row)
            await session.flush()
            return row.id

    async def events_for_room(
        self, room_id: str, after_id: int = 0, limit: int = 1000
    ) -> list[EventRecord]:
        """Events of a room with id > ``after_id``, oldest first."""
        stmt = (
            select(EventRow)
            .where(EventRow.room_id == room_id, EventRow.id > after_id)
            .order_by(EventRow.id)
            .limit(limit)
        )
        async with self._sessions() as session:
            return [row.to_record() for row in await session.scalars(stmt)]

    async def event(self, event_id: int) -> EventRecord | None:
        async with self._sessions() as session:
            row = await session.get(EventRow, event_id)
            return row.to_record() if row is not None else None

    async def claim_invite(self, token_id: str, room_id: str, device: str) -> str:
        """The device that owns the invite: ``device`` if it is the first (or the owner)."""
        async with self._sessions() as session:
            row = await session.get(InviteUseRow, token_id)
            if row is not None:
                return row.device
        try:
            async with self._sessions.begin() as session:
                session.add(InviteUseRow(token_id=token_id, room_id=room_id, device=device,
                                         first_at=utcnow()))
            return device
        except IntegrityError:  # another device claimed it at the same moment
            async with self._sessions() as session:
                row = await session.get(InviteUseRow, token_id)
                assert row is not None
                return row.device

    async def run_update(self, stmt: Update) -> int:
        """Execute an UPDATE; returns the number of rows it changed."""
        async with self._sessions.begin() as session:
            result = await session.execute(stmt, execution_options={"synchronize_session": False})
            return cast("CursorResult[Any]", result).rowcount


def _event_row(event: EventRecord) -> EventRow:
    return EventRow(room_id=event.room_id, at=event.at, type=event.type,
                    participant_id=event.participant_id, data=dict(event.data))
