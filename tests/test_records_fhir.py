"""Issue 11, test 3 (the rest of it; the ward round's record is in test_records_segments.py):
/fhir/ serves what /fhir/metadata says, each resource validates with fhir.resources, a read
gives what the search gave, participants carry their roles (and patients' names stay out),
consents granted and declined, paging, errors as OperationOutcomes, every call audited; and
migration 0004 gives the patients already kept their FHIR ids."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa
from alembic import command

from records.fhir import SEARCHES
from rooms.db import Database, alembic_config
from signaling.keys import AUDIT
from tests.fhir_support import fhir_get, patient_id, search
from tests.harness import running_server
from tests.recording_support import consent, join

REF = "MRN 0042/心内"  # not a valid FHIR id: the Patient gets one of its own


async def test_fhir_reads_searches_and_errors(tmp_path: Path) -> None:
    async with running_server(tmp_path / "srv") as server:
        status, cap = await fhir_get(server, "/fhir/metadata", auth=False)
        assert status == 200 and cap["fhirVersion"] == "4.3.0" and cap["kind"] == "instance"
        served = {r["type"]: {p["name"] for p in r["searchParam"]}
                  for r in cap["rest"][0]["resource"]}
        assert served == {k: set(v) for k, v in SEARCHES.items()}

        status, room = await server.api("POST", "/api/rooms", {
            "kind": "joint_clinic", "title": "联合门诊", "patient_ref": REF})
        assert status == 201, room
        await consent(server, room["id"])
        await consent(server, room["id"], granted=False)  # changed their mind
        people = [await join(server, room["id"], "dr-li", "doctor", name="李医生"),
                  await join(server, room["id"], "prof-wang", "specialist", name="王教授"),
                  await join(server, room["id"], "interp-1", "interpreter", name="翻译"),
                  await join(server, room["id"], "daughter", "guardian", name="张女士")]
        try:
            await people[3].send({"type": "chat", "text": "我母亲今天好多了"})
            await people[0].send({"type": "chat", "text": "继续服药"})
            assert await people[0].wait_until(lambda: sum(
                e.get("type") == "chat" for e in people[0].events) == 2, 5)
        finally:
            for p in people:
                await p.leave()
        status, _ = await server.api("POST", f"/api/rooms/{room['id']}/end")
        assert status == 200

        pid = await patient_id(server, REF)
        assert pid.startswith("pt-") and len(pid) <= 64
        assert await search(server, f"Patient?identifier=urn:huizhen:patient-ref|{quote(REF)}")
        assert await search(server, f"Patient?identifier=urn:other|{quote(REF)}") == []

        (encounter,) = await search(server, f"Encounter?patient=Patient/{pid}")
        assert encounter["subject"]["reference"] == f"Patient/{pid}"
        assert encounter["type"][0]["coding"][0]["code"] == "joint_clinic"
        roles = {p["individual"]["identifier"]["value"]: (p["type"][0]["coding"][0]["code"],
                                                         p["individual"]["display"])
                 for p in encounter["participant"]}
        assert roles == {"dr-li": ("ATND", "李医生"), "prof-wang": ("CON", "王教授"),
                         "interp-1": ("translator", "翻译"), "daughter": ("PART", "guardian")}
        assert encounter["length"]["unit"] == "min"
        assert await search(server, f"Media?patient=Patient/{pid}") == []

        granted, declined = await search(server, f"Consent?patient={pid}")
        assert (granted["status"], declined["status"]) == ("active", "rejected")
        assert declined["provision"]["type"] == "deny"
        chats = await search(server, f"Communication?encounter=Encounter/{encounter['id']}")
        assert [(c["payload"][0]["contentString"], c["sender"]["display"]) for c in chats] == [
            ("我母亲今天好多了", "guardian"), ("继续服药", "李医生")]
        assert chats == await search(server, f"Communication?subject=Patient/{pid}")

        # a read gives what the search gave
        for kind, one in (("Encounter", encounter), ("Consent", declined),
                          ("Communication", chats[0])):
            status, read = await fhir_get(server, f"/fhir/{kind}/{one['id']}")
            assert status == 200 and read == one, kind
        status, patient = await fhir_get(server, f"/fhir/Patient/{pid}")
        assert status == 200 and patient["identifier"][0]["value"] == REF
        assert "name" not in patient

        # the audit trail pages; each page validates, the next link leads on
        trail = await search(server, f"AuditEvent?patient=Patient/{pid}")
        assert len(trail) >= 6 and {a["subtype"][0]["code"] for a in trail} >= {
            "fhir.search", "fhir.read"}
        status, page = await fhir_get(server, f"/fhir/AuditEvent?patient={pid}&_count=2")
        assert status == 200 and len(page["entry"]) == 2 and page["total"] > 2
        (next_link,) = [link["url"] for link in page["link"] if link["relation"] == "next"]
        status, page2 = await fhir_get(server, next_link.removeprefix(server.settings.base_url))
        assert [e["resource"]["id"] for e in page2["entry"]] == [a["id"] for a in trail[2:4]]
        status, one = await fhir_get(server, f"/fhir/AuditEvent/{trail[0]['id']}")
        assert status == 200 and one == trail[0]
        assert one["agent"][0]["network"]["address"] == "127.0.0.1"

        # errors: OperationOutcomes that say what to do
        for path, want, code in (
                ("/fhir/Encounter?patient=x", 401, "security"),
                ("/fhir/Observation?patient=x", 404, "not-supported"),
                ("/fhir/Encounter/nope", 404, "not-found"),
                ("/fhir/Encounter?colour=red", 400, "not-supported"),
                ("/fhir/Encounter", 400, "required"),
                (f"/fhir/Encounter?patient={pid}&_count=many", 400, "invalid"),
                ("/fhir/Encounter?patient=Encounter/1", 400, "invalid"),
                (f"/fhir/Encounter?patient={pid}&_format=xml", 406, "not-supported")):
            status, body = await fhir_get(server, path, auth=code != "security")
            assert (status, body["resourceType"], body["issue"][0]["code"]) == (
                want, "OperationOutcome", code), (path, body)
        assert await search(server, "Encounter?patient=Patient/unknown") == []

        rows = [e for e in await server.app[AUDIT].entries() if e.action.startswith("fhir.")]
        assert all(e.actor.startswith("api:") and e.address == "127.0.0.1" for e in rows)
        reads = [e for e in rows if e.action == "fhir.read" and e.entity_type == "Consent"]
        assert reads and reads[0].patient_ref == REF and reads[0].entity_id == declined["id"]


async def test_migration_gives_existing_patients_fhir_ids(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    refs = ["Patient/42", "42", "MRN 7/a", "pt-trick"]
    with engine.begin() as conn:
        config = alembic_config()
        config.attributes["connection"] = conn
        command.upgrade(config, "0003")
        for ref in refs:
            conn.execute(sa.text("INSERT INTO patients (ref, first_seen) VALUES (:r, "
                                 "'2026-01-01 00:00:00')"), {"r": ref})
    engine.dispose()
    db = await Database.open(url.replace("sqlite:", "sqlite+aiosqlite:"))
    try:
        async with db.engine.connect() as conn:
            ids = dict((await conn.execute(sa.text("SELECT ref, fhir_id FROM patients"))).all())
    finally:
        await db.close()
    assert ids["42"] == "42"  # the first to claim it keeps it
    assert ids["Patient/42"].startswith("pt-") and ids["MRN 7/a"].startswith("pt-")
    assert ids["pt-trick"].startswith("pt-") and ids["pt-trick"] != "pt-trick"
    assert len(set(ids.values())) == 4
