"""Issue 12, test 3 in the browser: case notes in the web client.

Joint clinic: the remote specialist writes a consult opinion in Chromium (zh, phone), saves a
draft, changes it, signs it; the local doctor's page shows it signed. The exported copy
verifies with ``huizhen document verify`` against the test's CA; a copy with one word changed
fails. Ward round: the host starts the agenda and moves to the next patient from the panel; a
doctor's page follows, writes a note that lands with the patient under discussion.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.async_api import Browser

from tests.harness import running_server
from tests.signing_support import make_ca
from tests.web_support import DESKTOP, PHONE, join, open_client, screenshot, wait_js

pytestmark = pytest.mark.browser

PANEL_OPEN = "!document.querySelector('#clinical-panel').hidden"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "huizhen.cli", *args], capture_output=True,
                          text=True, timeout=60, check=False)


async def test_consult_opinion_written_and_signed_in_the_browser(tmp_path: Path,
                                                                 browser: Browser) -> None:
    ca = make_ca(tmp_path / "ca")
    ca.issue("dr-zhang", "Zhang Wei")
    async with running_server(tmp_path / "srv", **ca.settings()) as server:
        status, room = await server.api("POST", "/api/rooms", {
            "kind": "joint_clinic", "title": "联合门诊", "patient_ref": "Patient/jc-web"})
        assert status == 201
        local = await open_client(browser, "local", DESKTOP, locale="zh-CN")
        zhang = await open_client(browser, "specialist", PHONE, locale="zh-CN")
        try:
            await join(local, await server.join_url(room["id"], "dr-local", "doctor", "李医生"),
                       wait_check=False)
            await wait_js(local, "window.huizhen.state === 'joined'")
            await join(zhang, await server.join_url(room["id"], "dr-zhang", "specialist",
                                                    "张医生"), wait_check=False)
            await wait_js(zhang, "window.huizhen.state === 'joined' && "
                          "!document.querySelector('#btn-clinical').hidden")
            page = zhang.page
            await page.click("#btn-clinical")
            await wait_js(zhang, PANEL_OPEN)
            assert await zhang.js("document.querySelector('#doc-editor-title').textContent") \
                == "新建会诊意见"
            await page.fill("#doc-text", "会诊意见：考虑早期胃癌。")
            await page.click("#btn-doc-save")
            await wait_js(zhang, "document.querySelector('#doc-status').textContent === "
                          "'第 1 版已保存。'")
            await page.fill("#doc-text", "会诊意见：考虑早期胃癌，建议内镜下黏膜剥离术。")
            assert await zhang.js("document.querySelector('#btn-doc-sign').textContent") \
                == "保存并签名"
            await page.click("#btn-doc-sign")
            await wait_js(zhang, "document.querySelector('#doc-status').dataset.kind === 'ok'")
            assert (await zhang.js("document.querySelector('#doc-status').textContent")
                    ).startswith("第 2 版已于")
            await screenshot(zhang, "clinical-opinion-phone-zh")

            # the local doctor sees it, signed, without writing rights of its own
            await local.page.click("#btn-clinical")
            await wait_js(local, "document.querySelector('#doc-list li[data-signed=\"true\"]')"
                          " !== null")
            text = await local.js("document.querySelector('#doc-list .doc-text').textContent")
            assert text == "会诊意见：考虑早期胃癌，建议内镜下黏膜剥离术。"
            assert await local.js("document.querySelectorAll('#doc-list .doc-edit').length") \
                == 0
            await screenshot(local, "clinical-opinion-local-desktop")

            status, docs = await server.api("GET", f"/api/rooms/{room['id']}/documents")
            signed = [d for d in docs["documents"] if d["signed"]]
            assert [d["version"] for d in docs["documents"]] == [1, 2] and len(signed) == 1
            out = tmp_path / "export"
            env_cfg = tmp_path / "cfg.yaml"
            env_cfg.write_text(
                f"data_dir: {server.settings.data_dir}\n"
                f"database:\n  url: {server.settings.database_url}\n", encoding="utf-8")
            done = await asyncio.to_thread(cli, "--config", str(env_cfg), "document", "export",
                                           signed[0]["id"], "--out", str(out))
            assert done.returncode == 0, done.stderr
            doc_file = out / f"{signed[0]['id']}.json"
            sig_file = out / f"{signed[0]['id']}.jws"
            done = await asyncio.to_thread(cli, "document", "verify", "--document",
                                           str(doc_file), "--signature", str(sig_file),
                                           "--ca", str(ca.anchors))
            assert done.returncode == 0 and "Zhang Wei" in done.stdout, done
            tampered = tmp_path / "tampered.json"
            tampered.write_bytes(doc_file.read_bytes().replace(
                "早期".encode(), "晚期".encode()))
            done = await asyncio.to_thread(cli, "document", "verify", "--document",
                                           str(tampered), "--signature", str(sig_file),
                                           "--ca", str(ca.anchors))
            assert done.returncode == 1 and "bad_signature" in done.stderr, done
            assert json.loads(doc_file.read_bytes())["author"]["name"] == "张医生"
            for c in (local, zhang):
                errors = [line for line in c.console if line.startswith(("error:", "PAGE ERR"))]
                assert not errors, c.log()
        finally:
            await local.close()
            await zhang.close()


async def test_ward_round_agenda_driven_from_the_panel(tmp_path: Path, browser: Browser
                                                       ) -> None:
    async with running_server(tmp_path / "srv") as server:
        status, room = await server.api("POST", "/api/rooms", {
            "kind": "ward_round", "title": "5病区查房", "agenda": [
                {"patient_ref": "Patient/wr-1", "label": "3床"},
                {"patient_ref": "Patient/wr-2", "label": "5床"}]})
        assert status == 201
        host = await open_client(browser, "host", PHONE)
        doctor = await open_client(browser, "doctor", DESKTOP)
        try:
            await join(host, await server.join_url(room["id"], "dr-chen", "host", "Dr Chen"),
                       wait_check=False)
            await join(doctor, await server.join_url(room["id"], "dr-wu", "doctor", "Dr Wu"),
                       wait_check=False)
            for c in (host, doctor):
                await wait_js(c, "window.huizhen.state === 'joined' && "
                              "!document.querySelector('#btn-clinical').hidden")
                await c.page.click("#btn-clinical")
                await wait_js(c, "document.querySelectorAll('#agenda-list li').length === 2")
            assert await doctor.js("document.querySelector('#btn-agenda-next').hidden")
            await host.page.click("#btn-agenda-next")  # "Start with the first"
            await wait_js(doctor, "document.querySelector('#agenda-list li[aria-current]')"
                          "?.dataset.itemId === window.huizhen.agenda.items[0].id")
            await host.page.click("#btn-agenda-next")
            await wait_js(doctor, "document.querySelector('#agenda-list li[aria-current] "
                          ".agenda-label')?.textContent === '5床'")
            await wait_js(doctor, "window.huizhen.subject?.label === '5床'")
            await doctor.page.fill("#doc-text", "5床：血压偏高，调整用药。")
            await doctor.page.click("#btn-doc-save")
            await wait_js(doctor, "document.querySelector('#doc-status').textContent === "
                          "'Version 1 saved.'")
            assert await host.js("document.querySelector('#btn-agenda-next').hidden")
            await screenshot(host, "clinical-agenda-phone-en")
            status, docs = await server.api("GET", f"/api/rooms/{room['id']}/documents")
            (note,) = docs["documents"]
            assert note["patient_ref"] == "Patient/wr-2" and note["kind"] == "note"
        finally:
            await host.close()
            await doctor.close()
