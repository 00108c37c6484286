"""Issue 12, test 3 (service side): clinical documents written in the call with real clients.

Joint clinic: the remote specialist writes a consult opinion, versions it, signs it with the
certificate our test CA issued; ``huizhen document verify`` accepts the export and rejects a
tampered copy; the record has it as a FHIR DocumentReference. Ward round: an agenda of two
patients; notes land in each patient's record only. MDT: minutes and a conclusion per case,
signed by the chair — nobody else may sign. Plus the dev CA that signs out of the box."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from records.signing import verify
from rooms.models import utcnow
from sdk.participant import Participant, RequestFailed
from signaling.keys import DOCUMENTS
from tests.fhir_support import patient_id, search
from tests.harness import Server, running_server
from tests.signing_support import make_ca

PATIENT = "Patient/jc-1"


async def refused(p: Participant, message: dict[str, Any]) -> str:
    with pytest.raises(RequestFailed) as info:
        await p.request(message)
    return info.value.code


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "huizhen.cli", *args], capture_output=True,
                          text=True, timeout=60, check=False, env=env)


async def room_with(server: Server, kind: str, patient: str | None = None,
                    agenda: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": kind, "title": f"{kind} test"}
    if patient:
        body["patient_ref"] = patient
    if agenda is not None:
        body["agenda"] = agenda
    status, room = await server.api("POST", "/api/rooms", body)
    assert status == 201, room
    return room


async def test_consult_opinion_is_versioned_signed_verified_and_in_the_record(
        tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    ca.issue("dr-zhang", "Zhang Wei")
    ca.issue("dr-local", "Li Ming")
    async with running_server(tmp_path / "srv", **ca.settings()) as server:
        room = (await room_with(server, "joint_clinic", PATIENT))["id"]
        local = await server.participant(room, "dr-local", "doctor")
        patient = await server.participant(room, "pt-1", "patient")
        nurse = await server.participant(room, "nurse-1", "nurse")
        zhang = await server.participant(room, "dr-zhang", "specialist")

        draft = "会诊意见：考虑早期胃癌，建议内镜下黏膜剥离术。"
        first = (await zhang.request({"type": "document_save", "kind": "consult_opinion",
                                      "title": "会诊意见", "text": draft}))["document"]
        assert first["version"] == 1 and not first["signed"]
        assert first["patient_ref"] == PATIENT and first["encounter_id"] == room
        assert first["author"] == {"identity": "dr-zhang", "role": "specialist",
                                   "name": "dr-zhang"}
        # the local doctor sees it come in; the patient and a nurse's client are not sent it
        assert await local.wait_until(lambda: any(
            e.get("type") == "document" for e in local.events), 5)
        await asyncio.sleep(0.2)
        assert not any(e.get("type") == "document" for e in patient.events)

        second = (await zhang.request({
            "type": "document_save", "kind": "consult_opinion", "text": draft + "术后随访。",
            "series_id": first["series_id"], "base_version": 1}))["document"]
        assert second["version"] == 2 and second["replaces"] == first["id"]
        # a stale base is refused, not overwritten
        assert await refused(zhang, {"type": "document_save", "kind": "consult_opinion",
                                     "text": "x", "series_id": first["series_id"],
                                     "base_version": 1}) == "document_conflict"
        # who may not: a nurse, the patient, another kind of document, someone else's
        assert await refused(nurse, {"type": "document_save", "kind": "consult_opinion",
                                     "text": "x"}) == "not_permitted"
        assert await refused(patient, {"type": "document_save", "kind": "consult_opinion",
                                       "text": "x"}) == "not_permitted"
        assert await refused(zhang, {"type": "document_save", "kind": "minutes",
                                     "text": "x"}) == "bad_document_kind"
        assert await refused(local, {"type": "document_sign",
                                     "document_id": second["id"]}) == "not_permitted"
        assert await refused(zhang, {"type": "document_sign",
                                     "document_id": first["id"]}) == "document_conflict"
        assert await refused(zhang, {"type": "document_sign",
                                     "document_id": "dv_nope"}) == "unknown_document"
        assert await refused(patient, {"type": "document_list"}) == "not_permitted"

        signed = (await zhang.request({"type": "document_sign",
                                       "document_id": second["id"]}))["document"]
        assert signed["signed"] and signed["version"] == 2
        assert await refused(zhang, {"type": "document_sign",
                                     "document_id": second["id"]}) == "already_signed"
        listing = (await local.request({"type": "document_list"}))["documents"]
        assert [(d["version"], d["signed"], d["latest"]) for d in listing] == [
            (1, False, False), (2, True, True)]

        # the webhook event, and the API's own check
        _, events = await server.api("GET", f"/api/rooms/{room}/events")
        (event,) = [e for e in events["events"] if e["type"] == "document_signed"]
        assert event["data"]["document_id"] == second["id"]
        assert event["data"]["signed_by"] == "dr-zhang"
        assert event["data"]["patient_ref"] == PATIENT
        status, check = await server.api("GET", f"/api/documents/{second['id']}/verify")
        assert status == 200 and check["valid"] and "Zhang Wei" in check["subject"]
        status, check = await server.api("GET", f"/api/documents/{first['id']}/verify")
        assert not check["valid"] and check["code"] == "not_signed"

        # export, verify with the CLI; a tampered copy fails
        env = {"HUIZHEN_DATABASE__URL": server.settings.database_url,
               "HUIZHEN_DATA_DIR": str(server.settings.data_dir), "PATH": "/usr/bin:/bin"}
        out = tmp_path / "export"
        done = await asyncio.to_thread(cli, "document", "export", second["id"], "--out",
                                       str(out), env=env)
        assert done.returncode == 0, done.stderr
        doc_file, sig_file = out / f"{second['id']}.json", out / f"{second['id']}.jws"
        assert json.loads(doc_file.read_bytes())["text"] == draft + "术后随访。"
        done = await asyncio.to_thread(cli, "document", "verify", "--document", str(doc_file),
                                       "--signature", str(sig_file), "--ca", str(ca.anchors))
        assert done.returncode == 0, done.stderr
        assert "signature: ok" in done.stdout and "Zhang Wei" in done.stdout
        tampered = tmp_path / "tampered.json"
        tampered.write_bytes(doc_file.read_bytes().replace("早期".encode(), "晚期".encode()))
        done = await asyncio.to_thread(cli, "document", "verify", "--document", str(tampered),
                                       "--signature", str(sig_file), "--ca", str(ca.anchors))
        assert done.returncode == 1 and "bad_signature" in done.stderr, done
        other = make_ca(tmp_path / "other-ca")
        done = await asyncio.to_thread(cli, "document", "verify", "--document", str(doc_file),
                                       "--signature", str(sig_file), "--ca",
                                       str(other.anchors))
        assert done.returncode == 1 and "untrusted_chain" in done.stderr, done
        done = await asyncio.to_thread(cli, "document", "verify", "--id", second["id"],
                                       "--json", env={**env, "HUIZHEN_RECORDS__SIGNING__"
                                                      "TRUST_ANCHORS": str(ca.anchors)})
        assert done.returncode == 0 and json.loads(done.stdout)["valid"], done

        # the record: both versions as DocumentReference, the signed one final and current
        pid = await patient_id(server, PATIENT)
        found = await search(server, f"DocumentReference?patient=Patient/{pid}")
        by_version = {d["description"]: d for d in found}
        assert set(by_version) == {"version 1", "version 2"}
        current = by_version["version 2"]
        assert current["status"] == "current" and current["docStatus"] == "final"
        assert by_version["version 1"]["status"] == "superseded"
        assert by_version["version 1"]["docStatus"] == "preliminary"
        assert current["type"]["coding"][0]["code"] == "11488-4"
        assert current["relatesTo"][0]["target"]["reference"].startswith("DocumentReference/")
        assert current["context"]["encounter"][0]["reference"] == \
            f"Encounter/{room.replace('_', '.')}"
        content = base64.b64decode(current["content"][0]["attachment"]["data"])
        jws = base64.b64decode(current["content"][1]["attachment"]["data"]).decode()
        assert verify(content, jws, server.app[DOCUMENTS].keys.anchors).subject.endswith(
            "CN=Zhang Wei")
        status, read = await server.api("GET", f"/api/documents/{second['id']}")
        assert base64.b64decode(read["content_base64"]) == content
        for p in (local, patient, nurse, zhang):
            await p.close()


async def test_a_clinician_without_a_certificate_cannot_sign_and_is_told_why(
        tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    async with running_server(tmp_path / "srv", **ca.settings()) as server:
        room = (await room_with(server, "joint_clinic", PATIENT))["id"]
        zhang = await server.participant(room, "dr-zhang", "specialist")
        doc = (await zhang.request({"type": "document_save", "kind": "consult_opinion",
                                    "text": "意见"}))["document"]
        with pytest.raises(RequestFailed) as info:
            await zhang.request({"type": "document_sign", "document_id": doc["id"]})
        assert info.value.code == "no_signing_key" and "hospital CA" in info.value.message
        # an expired certificate is refused at signing, not found out later
        ca.issue("dr-zhang", "Zhang Wei", days=1, not_before=utcnow() - timedelta(days=5))
        with pytest.raises(RequestFailed) as info:
            await zhang.request({"type": "document_sign", "document_id": doc["id"]})
        assert info.value.code == "certificate_not_valid"
        status, docs = await server.api("GET", f"/api/rooms/{room}/documents")
        assert status == 200 and [d["signed"] for d in docs["documents"]] == [False]
        await zhang.close()


async def test_ward_round_agenda_notes_go_to_each_patients_record_only(tmp_path: Path
                                                                         ) -> None:
    a, b = "Patient/wr-a", "Patient/wr-b"
    ca = make_ca(tmp_path / "ca")
    ca.issue("dr-wu", "Wu Lei")
    async with running_server(tmp_path / "srv", **ca.settings()) as server:
        created = await room_with(server, "ward_round", agenda=[
            {"patient_ref": a, "label": "3床"}, {"patient_ref": b, "label": "5床"}])
        room = created["id"]
        items = created["agenda"]["items"]
        assert [i["label"] for i in items] == ["3床", "5床"]
        assert created["agenda"]["current"] is None
        host = await server.participant(room, "dr-chen", "host")
        doctor = await server.participant(room, "dr-wu", "doctor")
        assert host.joined["room"]["agenda"]["items"] == items
        assert await refused(doctor, {"type": "agenda_go"}) == "not_permitted"

        notes = {}
        for n, (ref, text) in enumerate([(a, "3床：术后第二天，引流通畅。"),
                                         (b, "5床：血压控制不佳，调整用药。")]):
            await host.send({"type": "agenda_go"} if n else
                            {"type": "agenda_go", "item_id": items[0]["id"]})
            assert await doctor.wait_until(lambda ref=ref: any(
                e.get("type") == "subject" and (e.get("subject") or {}).get("patient_ref")
                == ref for e in doctor.events), 5)
            assert await doctor.wait_until(lambda n=n: any(
                e.get("type") == "agenda" and e["agenda"]["current"] == items[n]["id"]
                for e in doctor.events), 5)
            saved = (await doctor.request({"type": "document_save", "kind": "note",
                                           "text": text}))["document"]
            assert saved["patient_ref"] == ref and saved["encounter_id"] != room
            assert saved["case_id"] == items[n]["id"]
            notes[ref] = saved
        assert await refused(host, {"type": "agenda_go"}) == "agenda_done"
        signed = (await doctor.request({"type": "document_sign",
                                        "document_id": notes[b]["id"]}))["document"]
        assert signed["signed"]
        # a late joiner sees where the round is
        nurse = await server.participant(room, "nurse-2", "nurse")
        assert nurse.joined["room"]["agenda"]["current"] == items[1]["id"]
        assert nurse.joined["room"]["subject"]["patient_ref"] == b

        for ref, other in ((a, b), (b, a)):
            pid = await patient_id(server, ref)
            found = await search(server, f"DocumentReference?patient=Patient/{pid}")
            assert len(found) == 1
            text = json.loads(base64.b64decode(found[0]["content"][0]["attachment"]["data"]))
            assert text["text"] == json.loads(json.dumps(notes[ref]["text"]))
            assert text["patient"] == ref and other not in json.dumps(text)
            assert found[0]["context"]["encounter"][0]["reference"] == \
                f"Encounter/{notes[ref]['encounter_id'].replace('_', '.')}"
            encounters = await search(server, f"Encounter?patient=Patient/{pid}")
            assert {e["id"] for e in encounters} == {
                notes[ref]["encounter_id"].replace("_", ".")}
        # the agenda through the API, and bad agendas
        status, body = await server.api("GET", f"/api/rooms/{room}/agenda")
        assert status == 200 and body["agenda"]["current"] == items[1]["id"]
        status, body = await server.api("PUT", f"/api/rooms/{room}/agenda",
                                        {"items": [{"label": "no patient"}]})
        assert status == 400 and body["error"]["code"] == "bad_agenda"
        assert "item 1" in body["error"]["message"]
        status, body = await server.api("POST", "/api/rooms", {
            "kind": "clinic", "title": "x", "agenda": [{"patient_ref": a}]})
        assert status == 409 and body["error"]["code"] == "one_patient"
        for p in (host, doctor, nurse):
            await p.close()


async def test_mdt_minutes_and_conclusion_per_case_signed_by_the_chair(tmp_path: Path
                                                                        ) -> None:
    ca = make_ca(tmp_path / "ca")
    ca.issue("dr-chair", "Wang Fang")
    async with running_server(tmp_path / "srv", **ca.settings()) as server:
        room = (await room_with(server, "mdt", agenda=[
            {"patient_ref": "Patient/mdt-1", "label": "病例一", "presenter": "dr-pres",
             "question": "是否手术？"},
            {"patient_ref": "Patient/mdt-2", "label": "病例二", "presenter": "dr-pres",
             "question": "放疗方案？"}]))["id"]
        chair = await server.participant(room, "dr-chair", "host")
        presenter = await server.participant(room, "dr-pres", "presenter")
        items = chair.joined["room"]["agenda"]["items"]
        assert items[0]["question"] == "是否手术？" and items[0]["presenter"] == "dr-pres"
        for n, item in enumerate(items):
            await chair.send({"type": "agenda_go", "item_id": item["id"]})
            assert await chair.wait_until(lambda item=item: any(
                e.get("type") == "agenda" and e["agenda"]["current"] == item["id"]
                for e in chair.events), 5)
            assert await refused(presenter, {"type": "document_save", "kind": "conclusion",
                                             "text": "x"}) == "not_permitted"
            for kind in ("minutes", "conclusion"):
                doc = (await chair.request({"type": "document_save", "kind": kind,
                                            "text": f"{kind} of case {n + 1}"}))["document"]
                assert doc["case_id"] == item["id"]
                assert doc["patient_ref"] == item["patient_ref"]
                assert (await chair.request({"type": "document_sign",
                                             "document_id": doc["id"]}))["document"]["signed"]
        status, docs = await server.api("GET", f"/api/rooms/{room}/documents")
        assert status == 200
        assert [(d["kind"], d["case_id"], d["signed"]) for d in docs["documents"]] == [
            ("minutes", items[0]["id"], True), ("conclusion", items[0]["id"], True),
            ("minutes", items[1]["id"], True), ("conclusion", items[1]["id"], True)]
        for p in (chair, presenter):
            await p.close()


async def test_the_dev_ca_lets_a_dev_server_sign_out_of_the_box(tmp_path: Path) -> None:
    async with running_server(tmp_path / "srv") as server:
        room = (await room_with(server, "joint_clinic", PATIENT))["id"]
        zhang = await server.participant(room, "dr-zhang", "specialist")
        doc = (await zhang.request({"type": "document_save", "kind": "consult_opinion",
                                    "text": "意见"}))["document"]
        await zhang.request({"type": "document_sign", "document_id": doc["id"]})
        status, check = await server.api("GET", f"/api/documents/{doc['id']}/verify")
        assert status == 200 and check["valid"] and "development CA" in check["issuer"]
        assert (tmp_path / "srv" / "dev-ca" / "ca.crt.pem").exists()
        await zhang.close()
