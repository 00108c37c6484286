"""Issue 11, test 1: who may open a recording in the patient's record. The patient and the
attending doctor play it (HTTP range requests: 206 with the right bytes of the decrypted file);
another patient, a clinician of another encounter without a reason, a broadcast viewer, an
expired or altered link get 403; every access, allowed or not, is in the audit log, whose
chain still verifies."""

from __future__ import annotations

import base64
import secrets
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from recording.crypto import DecryptingFile, KeyRing
from signaling.keys import ACCESS, AUDIT
from tests.harness import running_server
from tests.recording_support import call, consultation, finish, records_token

ANNA, BO = "Patient/anna", "Patient/bo"


async def test_who_may_play_a_recording(tmp_path: Path) -> None:
    key = secrets.token_bytes(32)
    encryption = {"keys": {"k1": base64.b64encode(key).decode()}, "active_key": "k1"}
    async with running_server(tmp_path / "srv", recording={"encryption": encryption}) as server:
        room_a = await consultation(server, ANNA, "dr-li", 3.0)
        room_b = await consultation(server, BO, "dr-zhao", 0)
        assert await finish(server) == 2
        anna = await records_token(server, "anna-portal", "patient", ANNA)
        bo = await records_token(server, "bo-portal", "patient", BO)
        li = await records_token(server, "dr-li", "doctor")
        zhao = await records_token(server, "dr-zhao", "doctor")
        trainee = await records_token(server, "trainee-1", "viewer")

        # the patient sees their own visit, with its recording
        status, listed, _ = await call(server, anna, "GET", "/records/api/encounters")
        assert status == 200, listed
        (visit,) = listed["encounters"]
        assert visit["id"] == room_a and visit["patient_ref"] == ANNA
        (recording,) = visit["recordings"]
        assert recording["status"] == "ready"
        link_path = f"/records/api/encounters/{room_a}/recordings/{recording['id']}/link"

        # … and plays it: ranges come back as 206 with the right (decrypted) bytes
        status, link, _ = await call(server, anna, "POST", link_path, {"purpose": "play"})
        assert status == 201, link
        stored = server.settings.recordings_folder / recording["id"] / "composite.mp4"
        with DecryptingFile(stored, KeyRing({"k1": key}, "k1")) as plain_file:
            plain = plain_file.read()
        assert len(plain) > 20_000 and plain[4:8] == b"ftyp"
        middle = len(plain) // 2
        status, body, headers = await call(server, None, "GET", link["url"],
                                           headers={"Range": f"bytes={middle}-{middle + 9999}"})
        assert status == 206 and body == plain[middle:middle + 10000]
        assert headers["Content-Range"] == f"bytes {middle}-{middle + 9999}/{len(plain)}"
        assert headers["Content-Type"] == "video/mp4" and headers["Accept-Ranges"] == "bytes"
        status, body, _ = await call(server, None, "GET", link["url"],
                                     headers={"Range": "bytes=-100"})
        assert status == 206 and body == plain[-100:]
        status, body, _ = await call(server, None, "GET", link["url"])
        assert status == 200 and body == plain
        status, _, headers = await call(server, None, "GET", link["url"],
                                        headers={"Range": f"bytes={len(plain)}-"})
        assert status == 416 and headers["Content-Range"] == f"bytes */{len(plain)}"

        # the attending doctor too, without a reason; a download is named
        status, encounter, _ = await call(server, li, "GET", f"/records/api/encounters/{room_a}")
        assert status == 200 and encounter["id"] == room_a
        status, dl, _ = await call(server, li, "POST", link_path, {"purpose": "download"})
        assert status == 201
        status, body, headers = await call(server, None, "GET", dl["url"],
                                           headers={"Range": "bytes=0-99"})
        assert status == 206 and body == plain[:100]
        assert headers["Content-Disposition"].startswith("attachment;")

        # refused: another patient, a clinician of another encounter without a reason, a
        # broadcast's viewer (even with a reason)
        for token, body in ((bo, {}), (zhao, {}), (trainee, {"reason": "curious about it"})):
            status, answer, _ = await call(server, token, "POST", link_path, body)
            assert status == 403, answer
            status, answer, _ = await call(server, token, "GET",
                                           f"/records/api/encounters/{room_a}")
            assert status == 403, answer
        status, answer, _ = await call(server, bo, "GET", f"/records/api/encounters?patient={ANNA}")
        assert status == 403, answer
        status, listed, _ = await call(server, bo, "GET", "/records/api/encounters")
        assert [e["id"] for e in listed["encounters"]] == [room_b]
        status, listed, _ = await call(server, zhao, "GET", "/records/api/encounters")
        assert [e["id"] for e in listed["encounters"]] == [room_b]  # their own only

        # a clinician opening a patient's whole record says why; an admin may look up anyone
        status, answer, _ = await call(server, zhao, "GET",
                                       f"/records/api/encounters?patient={ANNA}")
        assert status == 403 and answer["error"]["code"] == "reason_required", answer
        status, listed, _ = await call(server, zhao, "GET",
                                       f"/records/api/encounters?patient={ANNA}&reason=转诊前评估病史")
        assert status == 200 and [e["id"] for e in listed["encounters"]] == [room_a]
        admin = await records_token(server, "it-wang", "admin")
        status, listed, _ = await call(server, admin, "GET",
                                       f"/records/api/encounters?patient={BO}")
        assert status == 200 and [e["id"] for e in listed["encounters"]] == [room_b]

        # break-glass: with a reason, the other clinician may, and the reason is kept
        status, answer, _ = await call(server, zhao, "POST", link_path,
                                       {"reason": "会诊需要 — consult requested"})
        assert status == 201, answer

        # links: expired, altered, for another file, without a token at all
        access = server.app[ACCESS]
        q = {k: v[0] for k, v in parse_qs(urlsplit(link["url"]).query).items()}
        base = urlsplit(link["url"]).path
        past = int(time.time()) - 1
        old = access.sign(recording["id"], "composite.mp4", past, q["u"], "play")
        bad_sig = q["sig"][:-1] + ("0" if q["sig"][-1] != "0" else "1")
        for url, code in (
                (f"{base}?exp={past}&u={q['u']}&p=play&sig={old}", "link_expired"),
                (f"{base}?exp={q['exp']}&u={q['u']}&p=play&sig={bad_sig}", "link_invalid"),
                (f"{base}?exp={int(q['exp']) + 60}&u={q['u']}&p=play&sig={q['sig']}",
                 "link_invalid"),
                (f"{base}?exp={q['exp']}&u=bo-portal&p=play&sig={q['sig']}", "link_invalid"),
                (base.replace("composite.mp4", "manifest.json") +
                 f"?exp={q['exp']}&u={q['u']}&p=play&sig={q['sig']}", "link_invalid")):
            status, answer, _ = await call(server, None, "GET", url)
            assert status == 403 and answer["error"]["code"] == code, (url, answer)
        status, answer, _ = await call(server, None, "GET", "/records/api/encounters")
        assert status == 401, answer
        status, answer, _ = await call(server, "not.a.token", "GET", "/records/api/encounters")
        assert status == 401, answer

        log = server.app[AUDIT]
        entries = await log.entries()
        assert await log.verify() == (len(entries), [])

    plays = [(e.actor, e.outcome, e.reason, (e.detail or {}).get("why")) for e in entries
             if e.action in ("recording.play", "recording.download")]
    assert ("anna-portal", "allowed", None, "own_record") in plays
    assert ("dr-li", "allowed", None, "took_part") in plays
    assert ("bo-portal", "denied", None, "another patient's record") in plays
    assert any(a == "dr-zhao" and o == "denied" and r is None for a, o, r, _ in plays)
    assert ("dr-zhao", "allowed", "会诊需要 — consult requested", "break_glass") in plays
    assert any(a == "trainee-1" and o == "denied" for a, o, _, _ in plays)
    reads = [(e.actor, e.outcome) for e in entries if e.action == "encounter.read"]
    assert ("dr-li", "allowed") in reads and ("bo-portal", "denied") in reads
    lists = [(e.actor, e.outcome, e.patient_ref) for e in entries
             if e.action == "encounter.list"]
    assert ("anna-portal", "allowed", ANNA) in lists and ("bo-portal", "denied", ANNA) in lists
    assert ("dr-zhao", "denied", ANNA) in lists and ("it-wang", "allowed", BO) in lists
    assert any(e.actor == "dr-zhao" and e.reason == "转诊前评估病史" for e in entries)
