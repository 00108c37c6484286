"""Issue 11, test 4: retention. With the recordings' period over, ``huizhen retention purge
--dry-run`` lists what is due and deletes nothing; the real run deletes every file of each
due recording from the storage (the local folder, or S3 and the local spool), keeps the one
whose encounter is on legal hold, marks the deleted one ``purged`` and audits each deletion."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from recording.storage import open_storage
from signaling.keys import AUDIT
from tests.harness import running_server
from tests.recording_support import finish
from tests.s3 import S3Server
from tests.test_recording_jobs import record, run_cli, write_config


@pytest.mark.parametrize("backend", ["local", "s3"])
async def test_purge_lists_deletes_everywhere_and_keeps_a_hold(
        tmp_path: Path, backend: str, request: pytest.FixtureRequest, capsys: Any) -> None:
    recording: dict[str, Any] = {}
    if backend == "s3":
        s3: S3Server = request.getfixturevalue("s3_server")
        recording["storage"] = {"backend": "s3", "s3": {
            "endpoint_url": s3.endpoint_url, "bucket": s3.bucket,
            "prefix": f"ret-{secrets.token_hex(4)}", "access_key_id": s3.access_key_id,
            "secret_access_key": s3.secret_access_key, "region": s3.region}}
    async with running_server(tmp_path / "srv", recording=recording,
                              records={"retention": {"recordings_days": 0}}) as server:
        kept_room, kept = await record(server, seconds=1.5)
        _, gone = await record(server, seconds=1.5)
        assert await finish(server) == 4
        status, body = await server.api("POST", f"/api/encounters/{kept_room}/hold",
                                        {"hold": True, "reason": "医疗纠纷 case 2026-117"})
        assert status == 200 and body["legal_hold"], body
        status, body = await server.api("POST", f"/api/encounters/{kept_room}/hold",
                                        {"hold": True})
        assert status == 400, body  # a hold says why
        config = write_config(server, tmp_path / "config.yaml")
        settings = server.settings

        storage = open_storage(settings)
        try:
            before = {r: await storage.list(f"{r}/") for r in (kept, gone)}
            assert all(len(keys) >= 3 for keys in before.values()), before  # tracks, manifest…

            code, out, err = await asyncio.to_thread(
                run_cli, config, "retention", "purge", "--dry-run", "--json", capsys=capsys)
            assert code == 0, err
            listed = json.loads(out)
            assert {d["recording_id"]: d["held"] for d in listed["due"]} == {kept: True,
                                                                            gone: False}
            assert listed["deleted"] == []
            assert {r: await storage.list(f"{r}/") for r in (kept, gone)} == before

            code, out, err = await asyncio.to_thread(
                run_cli, config, "retention", "purge", capsys=capsys)
            assert code == 0, err
            assert f"{gone}  ended" in out and "deleted" in out
            assert "held: 医疗纠纷 case 2026-117" in out
            assert await storage.list(f"{gone}/") == []
            assert await storage.list(f"{kept}/") == before[kept]
        finally:
            await storage.close()
        assert not (settings.recordings_folder / gone).exists()  # the spool too

        status, body = await server.api("GET", f"/api/recordings/{gone}")
        assert status == 200 and body["status"] == "purged"
        assert not any(f["stored"] for f in body["files"]) and body["manifest_sha256"]
        status, body = await server.api("GET", f"/api/recordings/{kept}")
        assert body["status"] == "ready"

        log = server.app[AUDIT]
        entries = await log.entries()
        purges = [e for e in entries if e.action == "recording.purge"]
        assert [e.entity_id for e in purges] == [gone]
        assert purges[0].detail is not None and purges[0].detail["objects"] == len(before[gone])
        assert purges[0].actor == "cli:retention" and purges[0].reason == "retention: 0 days"
        assert ("encounter.hold", kept_room) in [(e.action, e.entity_id) for e in entries]
        assert await log.verify() == (len(entries), [])
