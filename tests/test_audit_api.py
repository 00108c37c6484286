"""The service writes what API callers read and do about recordings and consents into the
audit log (who, what, which patient, from where, why); ``huizhen audit verify`` passes on the
service's log and names the row someone edited in the database; ``audit list`` reads it."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

from signaling.keys import AUDIT
from tests.harness import running_server
from tests.test_recording_jobs import run_cli, write_config


async def test_api_reads_and_changes_are_audited_and_verify(tmp_path: Path,
                                                            capsys: Any) -> None:
    async with running_server(tmp_path / "srv") as server:
        status, room = await server.api("POST", "/api/rooms", {
            "kind": "clinic", "title": "随访", "patient_ref": "Patient/42"})
        assert status == 201, room
        status, consent = await server.api("POST", f"/api/rooms/{room['id']}/consents", {
            "granted": True, "method": "written", "obtained_by": "nurse-zhou"})
        assert status == 201, consent
        status, _ = await server.api("GET", f"/api/rooms/{room['id']}/recordings")
        assert status == 200
        status, started = await server.api("POST", f"/api/rooms/{room['id']}/recording/start",
                                           {"override_reason": "not needed: consent given"})
        assert status == 201, started
        status, _ = await server.api("POST", f"/api/rooms/{room['id']}/recording/stop")
        assert status == 200
        status, _ = await server.api("GET", f"/api/recordings/{started['id']}")
        assert status == 200
        status, _ = await server.api("GET", "/api/recordings/no-such")
        assert status == 404

        entries = await server.app[AUDIT].entries()
        assert [e.action for e in entries] == ["consent.add", "recording.list", "recording.start",
                                               "recording.stop", "recording.read"]
        assert {e.actor for e in entries} == {f"api:{server.settings.primary_key.key}"}
        assert {e.patient_ref for e in entries} == {"Patient/42"}
        assert {e.address for e in entries} == {"127.0.0.1"}
        start = entries[2]
        assert start.entity_id == started["id"] and start.reason == "not needed: consent given"
        assert start.detail == {"room": room["id"], "override": True}
        config = write_config(server, tmp_path / "config.yaml")

    code, out, err = await asyncio.to_thread(run_cli, config, "audit", "verify", capsys=capsys)
    assert code == 0 and "audit log: ok (5 rows" in out, (out, err)
    code, out, _ = await asyncio.to_thread(run_cli, config, "audit", "list", "--patient",
                                           "Patient/42", "--json", capsys=capsys)
    assert code == 0 and [r["seq"] for r in json.loads(out)] == [1, 2, 3, 4, 5]

    # someone with the database file edits who read the recording
    with sqlite3.connect(tmp_path / "srv" / "huizhen.db") as conn:
        conn.execute("UPDATE audit_log SET actor = 'api:someone-else' WHERE seq = 5")
    code, out, err = await asyncio.to_thread(run_cli, config, "audit", "verify", capsys=capsys)
    assert code == 1 and "row 5: its content does not match its seal (edited)" in out, out
    assert "failed verification: 1 problem(s) in 5 rows" in err
