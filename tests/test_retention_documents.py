"""Retention of the documents class (records/retention.py): clinical documents and MDT case
images past ``records.retention.documents_days`` are purged by ``huizhen retention purge`` —
their text, signatures and stored bytes go, a tombstone row and one audit row per deletion
stay, and the API answers ``410 purged`` (FHIR: left out of searches, a read is ``410 Gone``).
A document is due by its newest version; a young one is kept, one whose session is on legal
hold is listed as held and kept; the dry run lists every class and deletes nothing.

Real server, real SQLite, real clients; the rows to age are moved back in the database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from caseimages.db import CaseImageRow
from records.documents import DocumentRow
from signaling.keys import AUDIT, DOCUMENTS, IMAGES, ROOMS, STORAGE
from tests.fhir_support import fhir_get, patient_id, search
from tests.harness import Server, running_server
from tests.test_case_images import get_image, picture, post_image
from tests.test_documents import refused, room_with
from tests.test_recording_jobs import run_cli, write_config

DAYS = 30
OLD, YOUNG, HELD = "Patient/ret-old", "Patient/ret-young", "Patient/ret-held"


async def age(server: Server, days: int, versions: Sequence[str] = (),
              images: Sequence[str] = ()) -> None:
    """Move these document versions (saved and signed) and images ``days`` into the past."""
    assert server.app is not None
    back = timedelta(days=days)
    async with server.app[ROOMS].db.sessions.begin() as session:
        for row in await session.scalars(select(DocumentRow).where(
                DocumentRow.id.in_(list(versions)))):
            row.created_at -= back
            if row.signed_at is not None:
                row.signed_at -= back
        for image in await session.scalars(select(CaseImageRow).where(
                CaseImageRow.id.in_(list(images)))):
            image.uploaded_at -= back


def by_class(listed: dict[str, Any]) -> dict[str, dict[str, bool]]:
    out: dict[str, dict[str, bool]] = {}
    for d in listed["due"]:
        out.setdefault(d["class"], {})[d["id"]] = d["held"]
    return out


async def test_documents_and_case_images_are_purged_after_their_period(
        tmp_path: Path, capsys: Any) -> None:
    async with running_server(tmp_path / "srv",
                              records={"retention": {"documents_days": DAYS}}) as server:
        assert server.app is not None
        # old: a consult opinion in two versions, the second signed; a case image
        old_room = (await room_with(server, "joint_clinic", OLD))["id"]
        zhang = await server.participant(old_room, "dr-zhang", "specialist")
        v1 = (await zhang.request({"type": "document_save", "kind": "consult_opinion",
                                   "title": "会诊意见", "text": "意见 v1"}))["document"]
        v2 = (await zhang.request({"type": "document_save", "kind": "consult_opinion",
                                   "text": "意见 v2", "series_id": v1["series_id"],
                                   "base_version": 1}))["document"]
        assert (await zhang.request({"type": "document_sign", "document_id": v2["id"]})
                )["document"]["signed"]
        status, old_image = await post_image(server, old_room, picture(32, 24, "PNG")[0],
                                             "image/png", label="胸片 张三")
        assert status == 201, old_image
        status, young_image = await post_image(server, old_room, picture(16, 16, "PNG")[0],
                                               "image/png")
        assert status == 201, young_image

        # young: its first version is old, its newest is not — the document is kept
        young_room = (await room_with(server, "joint_clinic", YOUNG))["id"]
        wu = await server.participant(young_room, "dr-wu", "specialist")
        y1 = (await wu.request({"type": "document_save", "kind": "consult_opinion",
                                "text": "young v1"}))["document"]
        y2 = (await wu.request({"type": "document_save", "kind": "consult_opinion",
                                "text": "young v2", "series_id": y1["series_id"],
                                "base_version": 1}))["document"]

        # held: an MDT case's minutes and image, in the case's segment; the session is held
        held_room = (await room_with(server, "mdt"))["id"]
        chair = await server.participant(held_room, "dr-chair", "host")
        status, subject = await server.api("POST", f"/api/rooms/{held_room}/subject",
                                           {"patient_ref": HELD, "label": "病例一"})
        assert status == 200, subject
        segment = subject["subject"]["segment_id"]
        minutes = (await chair.request({"type": "document_save", "kind": "minutes",
                                        "text": "MDT minutes"}))["document"]
        assert minutes["encounter_id"] == segment
        status, held_image = await post_image(server, held_room, picture(8, 8, "PNG")[0],
                                              "image/png")
        assert status == 201 and held_image["segment_id"] == segment, held_image
        status, body = await server.api("POST", f"/api/encounters/{held_room}/hold",
                                        {"hold": True, "reason": "医疗纠纷 2026-88"})
        assert status == 200 and body["legal_hold"], body

        await age(server, DAYS + 10, versions=[v1["id"], v2["id"], y1["id"], minutes["id"]],
                  images=[old_image["id"], held_image["id"]])
        config = write_config(server, tmp_path / "config.yaml")
        found = await server.app[IMAGES].db.get(old_image["id"])
        assert found is not None
        old_key, storage = found.storage_key, server.app[STORAGE]
        assert await storage.stat(old_key) is not None

        # the dry run lists every class, with what a hold keeps, and deletes nothing
        code, out, err = await asyncio.to_thread(
            run_cli, config, "retention", "purge", "--dry-run", "--json", capsys=capsys)
        assert code == 0, err
        listed = json.loads(out)
        assert by_class(listed) == {
            "document": {v1["series_id"]: False, minutes["series_id"]: True},
            "case_image": {old_image["id"]: False, held_image["id"]: True}}
        assert listed["deleted"] == []
        (due_doc,) = [d for d in listed["due"] if d["id"] == v1["series_id"]]
        assert due_doc["versions"] == [v1["id"], v2["id"]] and due_doc["signed"] == 1
        assert [d["hold_reason"] for d in listed["due"] if d["held"]] == ["医疗纠纷 2026-88"] * 2
        status, read = await server.api("GET", f"/api/documents/{v2['id']}")
        assert status == 200 and read["signature"] and read["status"] == "active"
        assert await storage.stat(old_key) is not None
        assert not [e for e in await server.app[AUDIT].entries() if e.action.endswith(".purge")]

        # the real run
        code, out, err = await asyncio.to_thread(
            run_cli, config, "retention", "purge", capsys=capsys)
        assert code == 0, err
        assert "recordings past 1095 days: 0 (0 kept by a legal hold)" in out
        assert f"documents past {DAYS} days: 2 (1 kept by a legal hold)" in out
        assert f"case images past {DAYS} days: 2 (1 kept by a legal hold)" in out
        assert "held: 医疗纠纷 2026-88" in out
        assert "deleted 0 recording(s), 1 document(s), 1 case image(s)" in out

        # the document: text and signatures gone, the tombstones stay, the API says why
        for version in (v1, v2):
            status, body = await server.api("GET", f"/api/documents/{version['id']}")
            assert status == 410 and body["error"]["code"] == "purged", body
            assert f"retention: {DAYS} days" in body["error"]["message"]
            assert body["error"]["purged_at"][:10] in body["error"]["message"]
            status, body = await server.api("GET", f"/api/documents/{version['id']}/verify")
            assert status == 410 and body["error"]["code"] == "purged", body
            row = await server.app[DOCUMENTS].db.get(version["id"])
            assert row is not None and row.content == b"" and row.signature is None
            assert row.sha256 == version["sha256"] and row.purged_at is not None
        status, listing = await server.api("GET", f"/api/rooms/{old_room}/documents")
        assert status == 200
        assert [(d["id"], d["status"], d["text"], d["signed"], d["sha256"])
                for d in listing["documents"]] == [
            (v1["id"], "purged", None, False, v1["sha256"]),
            (v2["id"], "purged", None, True, v2["sha256"])]
        # nothing can be added to or signed in a purged series
        assert await refused(zhang, {"type": "document_save", "kind": "consult_opinion",
                                     "text": "v3", "series_id": v1["series_id"],
                                     "base_version": 2}) == "document_purged"
        assert await refused(zhang, {"type": "document_sign",
                                     "document_id": v2["id"]}) == "document_purged"
        # FHIR: a deleted resource — not in searches, 410 on read
        assert await search(server, f"DocumentReference?patient=Patient/"
                            f"{await patient_id(server, OLD)}") == []
        status, outcome = await fhir_get(server,
                                         f"/fhir/DocumentReference/{v2['id'].replace('_', '.')}")
        assert status == 410 and outcome["issue"][0]["code"] == "deleted", outcome

        # the image: bytes gone from the storage, label cleared, 410 purged
        assert await storage.stat(old_key) is None
        status, _, data = await get_image(server, old_room, old_image["id"])
        assert status == 410 and json.loads(data)["error"]["code"] == "purged", data
        status, images = await server.api("GET", f"/api/rooms/{old_room}/images")
        assert [(i["id"], i["status"], i["label"], i["sha256"]) for i in images["images"]] == [
            (old_image["id"], "purged", None, old_image["sha256"]),
            (young_image["id"], "active", None, young_image["sha256"])]
        status, _, data = await get_image(server, old_room, young_image["id"])
        assert status == 200 and data == picture(16, 16, "PNG")[0]

        # the young document and what the hold keeps are all there
        for version in (y1, y2, minutes):
            status, body = await server.api("GET", f"/api/documents/{version['id']}")
            assert status == 200 and body["text"] == version["text"], body
        status, _, data = await get_image(server, held_room, held_image["id"])
        assert status == 200 and data == picture(8, 8, "PNG")[0]

        # one audit row per deletion, the chain intact
        log = server.app[AUDIT]
        entries = await log.entries()
        purges = [(e.action, e.entity_id, e.reason, e.actor, e.patient_ref)
                  for e in entries if e.action.endswith(".purge")]
        assert purges == [
            ("document.purge", v1["series_id"], f"retention: {DAYS} days", "cli:retention",
             OLD),
            ("case_image.purge", old_image["id"], f"retention: {DAYS} days", "cli:retention",
             OLD)]
        (doc_purge,) = [e for e in entries if e.action == "document.purge"]
        assert doc_purge.detail is not None
        assert doc_purge.detail["versions"] == [v1["id"], v2["id"]]
        assert await log.verify() == (len(entries), [])

        # a second run finds only what the hold keeps
        code, out, err = await asyncio.to_thread(
            run_cli, config, "retention", "purge", "--dry-run", "--json", capsys=capsys)
        assert code == 0, err
        assert by_class(json.loads(out)) == {"document": {minutes["series_id"]: True},
                                             "case_image": {held_image["id"]: True}}
        for p in (zhang, wu, chair):
            await p.close()
