"""recording/db.py on SQLite and PostgreSQL: consents, recordings and their files, and jobs
claimed by one worker at a time (a store job before its composite job; a job whose worker
stopped beating taken over; a requeued one taken again)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from recording.db import Consent, Recording, RecordingDb
from rooms.db import Database
from rooms.models import utcnow
from tests.test_db import db, db_url, empty_url, room  # noqa: F401  (fixtures, helper)


async def test_consents_recordings_and_jobs(db: Database) -> None:  # noqa: F811
    await db.create_room(room("r1"))
    rdb = RecordingDb(db)
    for granted in (False, True):
        await rdb.add_consent(Consent(
            id=f"c{int(granted)}", room_id="r1", patient_ref="Patient/1", kind="recording",
            granted=granted, method="verbal", given_by_role="patient", given_by=None,
            asked_by="dr-li", recorded_by="api:his", note=None, at=utcnow()))
        await asyncio.sleep(0.01)
    current = await rdb.current_consent("r1", "Patient/1")
    assert current is not None and current.granted and current.id == "c1"
    assert [c.granted for c in await rdb.consents("r1")] == [False, True]

    await rdb.add_recording(Recording(id="rec1", room_id="r1", status="recording",
                                      started_at=utcnow(), started_by="dr-li",
                                      consent_id="c1"))
    await rdb.update_recording("rec1", status="stopped", duration_s=12.5)
    await rdb.replace_files("rec1", [{"name": "tracks/a.webm", "role": "track", "kind": "video",
                                      "source": "camera", "codec": "vp8", "start_s": 0.1,
                                      "duration_s": 12.3, "frames": 369, "size": 1000,
                                      "sha256": "0" * 64, "stored": True}])
    store = await rdb.add_job("rec1", "store")
    composite = await rdb.add_job("rec1", "composite")

    # the composite waits for the store job; one worker at a time gets a job
    first = await rdb.claim_job("w1", timedelta(seconds=30))
    assert first is not None and first.id == store and first.attempts == 1
    assert await rdb.claim_job("w2", timedelta(seconds=30)) is None
    await rdb.job_progress(store, 0.5)
    await rdb.finish_job(store)
    second = await rdb.claim_job("w2", timedelta(seconds=30))
    assert second is not None and second.id == composite
    # w2 stops beating: after stale_after, w3 takes the job over
    assert await rdb.claim_job("w3", timedelta(seconds=30)) is None
    await asyncio.sleep(1.1)
    taken = await rdb.claim_job("w3", timedelta(seconds=1))
    assert taken is not None and taken.id == composite and taken.attempts == 2
    await rdb.requeue_job(composite, "worker stopped")
    again = await rdb.claim_job("w4", timedelta(seconds=30), job_id=composite)
    assert again is not None and again.attempts == 3
    await rdb.finish_job(composite, "boom")

    found = await rdb.get_recording("rec1")
    assert found is not None and found.status == "stopped" and found.duration_s == 12.5
    assert [f["name"] for f in found.files] == ["tracks/a.webm"]
    assert [(j["kind"], j["status"]) for j in found.jobs] == [("store", "done"),
                                                             ("composite", "failed")]
    assert found.jobs[1]["error"] == "boom" and found.jobs[0]["progress"] == 1.0
    assert [r.id for r in await rdb.recordings(room_id="r1", status=("stopped",))] == ["rec1"]
