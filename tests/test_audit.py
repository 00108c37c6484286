"""records/audit.py on SQLite and PostgreSQL: an append-only log whose rows are chained by
HMAC seals; ``verify`` finds an edited, an inserted and a deleted row (also the last one), a
row sealed with a key nobody has; keys rotate; appends from two processes never fork the
chain."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import delete, text, update

from records.audit import AuditEntry, AuditEvent, AuditLog, AuditRow, seal
from rooms.db import Database
from tests.test_db import db, db_url, empty_url  # noqa: F401  (fixtures)

KEY_A, KEY_B = b"\x01" * 32, b"\x02" * 32


def event(n: int, **kw: Any) -> AuditEvent:
    return AuditEvent(**{"actor": f"dr-{n % 3}", "role": "doctor", "action": "recording.play",
                         "entity_type": "recording", "entity_id": f"rec-{n}",
                         "patient_ref": f"Patient/{n % 2}", "encounter_id": f"enc-{n % 4}",
                         "address": "127.0.0.1", "detail": {"range": [0, n * 100]}, **kw})


async def filled(db: Database, rows: int = 6) -> AuditLog:  # noqa: F811
    log = AuditLog(db, {"a": KEY_A}, "a")
    for n in range(1, rows + 1):
        entry = await log.append(event(n, reason="外院会诊" if n == 2 else None))
        assert entry.seq == n
    return log


async def run(db: Database, statement: Any) -> None:  # noqa: F811
    async with db.sessions.begin() as session:
        await session.execute(statement)


async def kinds(log: AuditLog) -> list[tuple[int | None, str]]:
    _, problems = await log.verify()
    return [(p.seq, p.kind) for p in problems]


async def test_an_intact_log_verifies_and_reads_back(db: Database) -> None:  # noqa: F811
    log = await filled(db)
    assert await log.verify() == (6, [])
    rows = await log.entries(patient_ref="Patient/0")
    assert [r.seq for r in rows] == [2, 4, 6]
    assert rows[0].reason == "外院会诊" and rows[0].detail == {"range": [0, 200]}
    assert rows[0].prev_hash == (await log.entries(after_seq=0))[0].hash
    assert [r.seq for r in await log.entries(encounter_id="enc-1")] == [1, 5]


async def test_an_edited_row_is_found(db: Database) -> None:  # noqa: F811
    log = await filled(db)
    await run(db, update(AuditRow).where(AuditRow.seq == 3).values(actor="dr-x"))
    assert await kinds(log) == [(3, "edited")]


async def test_an_edited_and_resealed_row_is_found_without_the_key(
        db: Database) -> None:  # noqa: F811
    """Someone with the database but not the key recomputes the row's hash with a key of their
    own: the row and the chain after it no longer verify."""
    log = await filled(db)
    row = (await log.entries(after_seq=3, limit=1))[0]
    forged = AuditEntry(**{**row.as_dict(), "at": row.at, "actor": "dr-x"})
    await run(db, update(AuditRow).where(AuditRow.seq == 4).values(
        actor="dr-x", hash=seal(b"\x09" * 32, forged)))
    assert await kinds(log) == [(4, "edited"), (5, "inserted")]


async def test_a_deleted_row_is_found(db: Database) -> None:  # noqa: F811
    log = await filled(db)
    await run(db, delete(AuditRow).where(AuditRow.seq.in_([3, 4])))
    _, problems = await log.verify()
    assert [(p.seq, p.kind) for p in problems] == [(3, "deleted")]
    assert "rows 3–4 missing" in str(problems[0])


async def test_the_last_rows_deleted_are_found(db: Database) -> None:  # noqa: F811
    log = await filled(db)
    await run(db, delete(AuditRow).where(AuditRow.seq >= 5))
    _, problems = await log.verify()
    assert [(p.seq, p.kind) for p in problems] == [(5, "deleted")]
    assert "ends at row 4 but the head says 6" in str(problems[0])


async def test_an_inserted_row_is_found(db: Database) -> None:  # noqa: F811
    """A row slipped in between 2 and 3 (the rows after it renumbered to make room), and one
    added after the end without going through the head."""
    log = await filled(db)
    for seq in range(6, 2, -1):
        await run(db, update(AuditRow).where(AuditRow.seq == seq).values(seq=seq + 1))
    stolen = (await log.entries(after_seq=1, limit=1))[0]
    await run(db, AuditRow.__table__.insert().values(
        **{**stolen.as_dict(), "at": stolen.at, "seq": 3, "actor": "dr-x"}))
    found = await kinds(log)
    assert found[:2] == [(3, "edited"), (3, "inserted")]  # it does not follow row 2
    assert found[2:6] == [(n, "edited") for n in (4, 5, 6, 7)]  # seals cover their numbers
    assert found[6:] == [(6, "head")]  # and the log now runs past its head

    log2 = await filled_fresh(db)
    last = (await log2.entries(after_seq=5))[0]
    await run(db, AuditRow.__table__.insert().values(
        **{**last.as_dict(), "at": last.at, "seq": 7, "prev_hash": last.hash}))
    assert await kinds(log2) == [(7, "edited"), (6, "head")]


async def filled_fresh(db: Database) -> AuditLog:  # noqa: F811
    await run(db, delete(AuditRow))
    await run(db, text("UPDATE audit_head SET seq = 0, hash = :h").bindparams(h="0" * 64))
    return await filled(db)


async def test_keys_rotate_and_an_unknown_key_is_named(db: Database) -> None:  # noqa: F811
    await filled(db, rows=3)
    rotated = AuditLog(db, {"a": KEY_A, "b": KEY_B}, "b")
    entry = await rotated.append(event(4))
    assert entry.key_id == "b" and entry.seq == 4
    assert await rotated.verify() == (4, [])
    _, problems = await AuditLog(db, {"b": KEY_B}, "b").verify()
    assert [(p.seq, p.kind) for p in problems] == [(1, "unknown_key"), (2, "unknown_key"),
                                                    (3, "unknown_key")]
    assert "key 'a', which is not configured" in str(problems[0])


async def test_appends_from_two_processes_keep_one_chain(db: Database) -> None:  # noqa: F811
    """Two services (each its own connection pool, as two processes have) append at once: no
    two rows share a place in the chain."""
    other = await Database.open(str(db.engine.url.render_as_string(hide_password=False)))
    try:
        logs = [AuditLog(db, {"a": KEY_A}, "a"), AuditLog(other, {"a": KEY_A}, "a")]
        entries = await asyncio.gather(*(logs[n % 2].append(event(n)) for n in range(40)))
    finally:
        await other.close()
    assert sorted(e.seq for e in entries) == list(range(1, 41))
    assert await logs[0].verify() == (40, [])
