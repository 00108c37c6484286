"""rooms.db.Database against SQLite (a temporary file) and PostgreSQL (``pg_url``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import IntegrityError, StatementError

import caseimages.db  # noqa: F401  (the MDT case images)
import recording.db  # noqa: F401  (registers the recording tables on Base.metadata)
import records.audit
import records.encounters  # noqa: F401  (and the encounters)
import rooms.appointments  # noqa: F401  (appointment invitees)
import webhooks.db  # noqa: F401  (the webhook outbox)
from rooms.db import Base, Database, DatabaseError
from rooms.models import EventRecord, RoomRecord, SessionRecord

try:
    from pg import drop_all_tables, pg_url
except ModuleNotFoundError:  # tests/ imported as a package
    from tests.pg import drop_all_tables, pg_url  # noqa: F401

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL to an empty database, per backend."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'state' / 'huizhen.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def empty_url(db_url: str) -> str:
    if db_url.startswith("postgresql"):
        await drop_all_tables(db_url)  # the PG database is shared by the session
    return db_url


@pytest.fixture
async def db(empty_url: str) -> AsyncIterator[Database]:
    database = await Database.open(empty_url)
    yield database
    await database.close()


def room(room_id: str, minutes: int = 0, **kw: Any) -> RoomRecord:
    return RoomRecord(
        id=room_id,
        kind="consultation",
        title=f"Room {room_id}",
        created_at=T0 + timedelta(minutes=minutes),
        **kw,
    )


def session(session_id: str, room_id: str, minutes: int = 0) -> SessionRecord:
    return SessionRecord(
        id=session_id,
        room_id=room_id,
        identity=f"user-{session_id}",
        name=f"Dr. {session_id}",
        role="doctor",
        joined_at=T0 + timedelta(minutes=minutes),
        token_id=f"tok-{session_id}",
    )


async def test_ping(db: Database) -> None:
    assert await db.ping() is True


async def test_rooms(db: Database) -> None:
    full = room(
        "r1",
        patient_ref="MRN-42",
        scheduled_start=T0 + timedelta(hours=1),
        scheduled_end=T0 + timedelta(hours=2),
        created_by="dr.li",
    )
    await db.create_room(full)
    await db.create_room(room("r2", minutes=5))
    await db.create_room(room("r3", minutes=10))

    assert await db.get_room("r1") == full
    assert await db.get_room("nope") is None
    assert [r.id for r in await db.list_rooms()] == ["r3", "r2", "r1"]
    assert [r.id for r in await db.list_rooms(limit=2)] == ["r3", "r2"]

    ended_at = T0 + timedelta(minutes=30)
    assert await db.end_room("r2", ended_at, "host_ended") is True
    assert await db.end_room("r2", ended_at + timedelta(minutes=1), "again") is False
    assert await db.end_room("nope", ended_at, "x") is False

    ended = await db.get_room("r2")
    assert ended is not None
    assert (ended.status, ended.ended_at, ended.end_reason) == ("ended", ended_at, "host_ended")
    assert [r.id for r in await db.list_rooms(status="ended")] == ["r2"]
    assert [r.id for r in await db.list_rooms(status="open")] == ["r3", "r1"]


async def test_sessions(db: Database) -> None:
    await db.create_room(room("r1"))
    await db.create_room(room("r2"))
    await db.session_started(session("s2", "r1", minutes=2))
    await db.session_started(session("s1", "r1", minutes=1))
    await db.session_started(session("s3", "r2", minutes=3))

    left = T0 + timedelta(minutes=9)
    await db.session_ended("s1", left, "left")
    await db.session_ended("s1", left + timedelta(minutes=5), "again")  # no-op
    await db.session_ended("unknown", left, "left")  # no-op

    s1, s2 = await db.sessions_for_room("r1")
    assert (s1.id, s2.id) == ("s1", "s2")
    assert s1 == SessionRecord(
        id="s1",
        room_id="r1",
        identity="user-s1",
        name="Dr. s1",
        role="doctor",
        joined_at=T0 + timedelta(minutes=1),
        left_at=left,
        leave_reason="left",
        token_id="tok-s1",
    )
    assert (s2.left_at, s2.leave_reason) == (None, None)
    assert [s.id for s in await db.sessions_for_room("r2")] == ["s3"]
    assert await db.sessions_for_room("nope") == []


async def test_session_needs_existing_room(db: Database) -> None:
    with pytest.raises(IntegrityError, match=r"(?i)foreign key"):
        await db.session_started(session("s1", "no-such-room"))


async def test_close_open_sessions(db: Database) -> None:
    await db.create_room(room("r1"))
    for n in range(3):
        await db.session_started(session(f"s{n}", "r1", minutes=n))
    already = T0 + timedelta(minutes=5)
    await db.session_ended("s0", already, "left")

    restart = T0 + timedelta(hours=1)
    assert await db.close_open_sessions(restart, "server_restart") == 2
    assert await db.close_open_sessions(restart, "server_restart") == 0

    got = {s.id: (s.left_at, s.leave_reason) for s in await db.sessions_for_room("r1")}
    assert got == {
        "s0": (already, "left"),
        "s1": (restart, "server_restart"),
        "s2": (restart, "server_restart"),
    }


async def test_event_log_paging(db: Database) -> None:
    await db.create_room(room("r1"))
    await db.create_room(room("r2"))
    ids = []
    for n in range(5):
        ids.append(
            await db.log_event(
                EventRecord(
                    room_id="r1",
                    type="participant_joined",
                    at=T0 + timedelta(seconds=n),
                    participant_id=f"s{n}" if n % 2 else None,
                    data={"n": n, "nested": {"list": [1, "two", None], "ok": True}},
                )
            )
        )
    other = await db.log_event(EventRecord(room_id="r2", type="room_created", at=T0))
    assert ids == sorted(ids) and len(set(ids)) == 5 and other not in ids

    events = await db.events_for_room("r1")
    assert [e.id for e in events] == ids
    first = events[1]
    assert first == EventRecord(
        id=ids[1],
        room_id="r1",
        type="participant_joined",
        at=T0 + timedelta(seconds=1),
        participant_id="s1",
        data={"n": 1, "nested": {"list": [1, "two", None], "ok": True}},
    )
    assert events[0].participant_id is None

    page1 = await db.events_for_room("r1", limit=2)
    page2 = await db.events_for_room("r1", after_id=page1[-1].id or 0, limit=2)
    page3 = await db.events_for_room("r1", after_id=page2[-1].id or 0, limit=2)
    assert [e.id for e in page1 + page2 + page3] == ids
    assert await db.events_for_room("r1", after_id=ids[-1]) == []
    assert [e.data for e in await db.events_for_room("r2")] == [{}]


async def test_timezones_round_trip_as_utc(db: Database) -> None:
    beijing = timezone(timedelta(hours=8))
    created = datetime(2025, 3, 1, 16, 30, 15, 123456, tzinfo=beijing)  # 08:30:15Z
    await db.create_room(RoomRecord(id="r2", kind="consultation", title="tz", created_at=created))
    await db.log_event(EventRecord(room_id="r2", type="t", at=created))

    got = await db.get_room("r2")
    assert got is not None
    assert got.created_at == created
    assert got.created_at.utcoffset() == timedelta(0)
    assert got.created_at.isoformat() == "2025-03-01T08:30:15.123456+00:00"
    (logged,) = await db.events_for_room("r2")
    assert logged.at == created and logged.at.tzinfo is not None
    assert logged.at.utcoffset() == timedelta(0)


async def test_naive_datetimes_are_rejected(db: Database) -> None:
    naive = RoomRecord(id="r1", kind="consultation", title="t", created_at=datetime(2025, 1, 1))
    with pytest.raises(StatementError, match="naive datetime"):
        await db.create_room(naive)


async def test_survives_restart(empty_url: str) -> None:
    first = await Database.open(empty_url)
    await first.create_room(room("r1"))
    await first.session_started(session("s1", "r1"))
    event_id = await first.log_event(
        EventRecord(room_id="r1", type="participant_joined", at=T0, participant_id="s1")
    )
    await first.close()

    second = await Database.open(empty_url)
    try:
        assert await second.get_room("r1") == room("r1")
        assert await second.sessions_for_room("r1") == [session("s1", "r1")]
        (logged,) = await second.events_for_room("r1")
        assert (logged.id, logged.type, logged.participant_id) == (
            event_id,
            "participant_joined",
            "s1",
        )
        assert await second.close_open_sessions(T0 + timedelta(hours=1), "server_restart") == 1
        next_id = await second.log_event(EventRecord(room_id="r1", type="x", at=T0))
        assert next_id > event_id
    finally:
        await second.close()


async def test_migrations_are_idempotent(empty_url: str) -> None:
    for _ in range(3):
        database = await Database.open(empty_url)
        async with database.engine.connect() as conn:
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        await database.close()
        assert version == [("0011",)]
        assert {"rooms", "participant_sessions", "room_events", "consents", "recordings",
                "recording_files", "recording_jobs", "audit_log", "audit_head",
                "case_images"} <= tables


def _schema_diff(conn: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))


async def test_migrated_schema_matches_models(db: Database) -> None:
    async with db.engine.connect() as conn:
        assert await conn.run_sync(_schema_diff) == []


async def test_sqlite_pragmas_and_parent_folder(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "huizhen.db"
    database = await Database.open(f"sqlite+aiosqlite:///{path}")
    try:
        assert path.exists()
        async with database.engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
    finally:
        await database.close()


async def test_unreachable_postgres_is_a_clear_error() -> None:
    with pytest.raises(DatabaseError) as info:
        await Database.open("postgresql+asyncpg://huizhen:secret@127.0.0.1:1/huizhen")
    message = str(info.value)
    assert "cannot reach PostgreSQL at 127.0.0.1:1/huizhen" in message
    assert "HUIZHEN_DATABASE__URL" in message
    assert "secret" not in message


@pytest.mark.parametrize(
    "url",
    ["not a url", "mysql+nosuchdriver://u@h/db", "postgresql+asyncpg:/"],
)
async def test_bad_url_is_a_clear_error(url: str) -> None:
    with pytest.raises(DatabaseError, match="HUIZHEN_DATABASE__URL"):
        await Database.open(url)


async def test_unwritable_sqlite_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DatabaseError, match="HUIZHEN_DATABASE__URL"):
        await Database.open(f"sqlite+aiosqlite:///{blocker / 'sub' / 'huizhen.db'}")
