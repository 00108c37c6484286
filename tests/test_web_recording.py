"""Recording control in the browser client (docs/protocol.md, "Recording and consent").

A clinic room in Debian chromium against a real server, doctor and patient in separate
browser contexts (the patient on a phone):

* English: the doctor presses Record, is told the patient has not agreed, asks; the patient's
  phone shows the question in plain words (large answers, larger still in care mode); the
  patient agrees, the recording starts; both pages show REC, then "Paused", then nothing after
  Stop; the room's event log holds every step.
* Chinese (the doctor on a phone too): nobody to ask yet (no_patient); the patient declines and
  sees "未录制" (also after reloading the page: from joined.room.recording_state); the doctor
  records anyway with a reason; both see "录制中"; the event log's recording_started carries
  that override_reason.

Screenshots go to test-artifacts/screenshots/recording-*.png. A console error on any page
fails the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, FloatRect

from tests.harness import Server, running_server, wait_for
from tests.web_support import (
    DESKTOP,
    PHONE,
    Client,
    box,
    join,
    open_client,
    overlaps,
    precheck_done,
    screenshot,
    wait_js,
)

pytestmark = pytest.mark.browser

OVERRIDE_REASON = "患者病情复杂，需要留存会诊录像供多学科讨论"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    # no recording worker process: composing the stopped recording is not what this tests, and
    # it would take the cores the browsers need
    async with running_server(tmp_path, recording={"workers": 0}) as srv:
        yield srv


# ---- helpers ---------------------------------------------------------------------------------

def console_errors(client: Client) -> list[str]:
    return [line for line in client.console
            if line.startswith("error:") or line.startswith("PAGE ERROR")]


def assert_no_console_errors(*clients: Client) -> None:
    for c in clients:
        errors = console_errors(c)
        assert not errors, f"{c.name}: console errors\n" + "\n".join(errors) + "\n" + c.log()


async def admitted_call(server: Server, room: str, doctor: Client, patient: Client, *,
                        doctor_name: str, patient_name: str) -> None:
    """The doctor joins; the patient passes the check, waits in the lobby and is admitted."""
    await join(doctor, await server.join_url(room, "dr-li", "doctor", doctor_name))
    await wait_js(doctor, "window.huizhen.state === 'joined' && window.huizhen.view === 'call'")
    await join(patient, await server.join_url(room, "pat-wang", "patient", patient_name))
    await wait_js(patient, "window.huizhen.view === 'lobby'")
    item = doctor.page.locator("#lobby-list li[data-participant-id]")
    await item.wait_for(timeout=10000)
    await item.locator(".btn-admit").click()
    await wait_js(patient, "window.huizhen.view === 'call'")


async def video_shown(*clients: Client) -> None:
    for c in clients:
        await wait_js(c, "[...document.querySelectorAll('#tiles video')]"
                         ".some(v => v.videoWidth > 0)", timeout=20)


async def events(server: Server, room: str) -> list[dict[str, Any]]:
    status, body = await server.api("GET", f"/api/rooms/{room}/events")
    assert status == 200, body
    return list(body["events"])


async def event_types(server: Server, room: str) -> list[str]:
    return [e["type"] for e in await events(server, room)]


async def logged(server: Server, room: str, type_: str, timeout: float = 5) -> dict[str, Any]:
    """The room's latest event of ``type_`` (waiting for it a little)."""
    async def found() -> bool:
        return type_ in await event_types(server, room)
    assert await wait_for(found, timeout), (type_, await event_types(server, room))
    return [e for e in await events(server, room) if e["type"] == type_][-1]


async def indicator(client: Client, state: str) -> None:
    """The top bar's recording badge shows ``state`` (recording|paused) or is gone (off)."""
    if state == "off":
        await wait_js(client, "document.querySelector('#rec-indicator').hidden")
    else:
        await wait_js(client, "!document.querySelector('#rec-indicator').hidden && document."
                              f"querySelector('#rec-indicator').dataset.state === '{state}'")
    assert (await client.js("window.huizhen.recording"))["state"] == state


async def notice(client: Client, key: str) -> str:
    """Wait for the banner to show the message ``key``; its text."""
    await wait_js(client, f"document.querySelector('#banner').dataset.key === '{key}' && "
                          "!document.querySelector('#banner').hidden")
    return await client.page.locator("#banner-text").inner_text()


async def in_viewport(client: Client, selector: str) -> FloatRect:
    b = await box(client, selector)
    vp = client.page.viewport_size
    assert vp is not None
    assert b["x"] >= 0 and b["y"] >= 0, (selector, b)
    assert b["x"] + b["width"] <= vp["width"] and b["y"] + b["height"] <= vp["height"], \
        (selector, b, vp)
    return b


async def topbar_fits(client: Client, badge: str) -> None:
    """A top-bar badge on a phone: inside the screen, clear of the buttons beside it."""
    b = await in_viewport(client, badge)
    for other in ("#btn-care", "#btn-lang", "#quality", ".brand", ".room"):
        if await client.page.locator(other).is_visible():
            assert not overlaps(b, await box(client, other)), (badge, other)
    # the consultation's title and status keep room enough to be read
    assert (await box(client, ".room"))["width"] >= 72


async def bar_fits(client: Client) -> None:
    """Every visible call control inside the screen, none over another."""
    boxes = []
    controls = client.page.locator("#controls .ctrl")
    for i in range(await controls.count()):
        if await controls.nth(i).is_visible():
            b = await controls.nth(i).bounding_box()
            assert b is not None
            boxes.append(b)
    vp = client.page.viewport_size
    assert vp is not None and len(boxes) >= 8
    for i, b in enumerate(boxes):
        assert b["x"] >= 0 and b["x"] + b["width"] <= vp["width"], (b, vp)
        assert all(not overlaps(b, other) for other in boxes[i + 1:]), boxes


async def consent_question(client: Client, *, min_button: int) -> str:
    """The consent dialog is open with the question focused and two large answers; its text."""
    dialog = client.page.locator("#consent-dialog")
    await dialog.wait_for(state="visible", timeout=10000)
    await wait_js(client, "document.activeElement && document.activeElement.id === "
                          "'consent-title'")
    for sel in ("#btn-consent-yes", "#btn-consent-no"):
        b = await in_viewport(client, sel)
        assert b["height"] >= min_button and b["width"] >= 200, (sel, b)
    return await dialog.inner_text()


async def open_host_tools(client: Client) -> None:
    """Phones: the moderator tools are behind "More"."""
    if await client.page.locator("#btn-more").is_visible():
        if await client.page.locator("#btn-more").get_attribute("aria-expanded") != "true":
            await client.page.click("#btn-more")
        await client.page.locator("#host-tools").wait_for(state="visible")


async def consent_status(client: Client) -> tuple[str, str]:
    el = client.page.locator("#rec-consent")
    return str(await el.get_attribute("data-consent")), await el.inner_text()


# ---- English: asked, agreed, recorded, paused, stopped -----------------------------------------

async def test_consent_asked_and_given_then_recorded(server: Server, browser: Browser) -> None:
    room = await server.create_room("clinic", "Cardiology follow-up")
    doctor = await open_client(browser, "doctor", DESKTOP)
    patient = await open_client(browser, "patient", PHONE)
    try:
        await admitted_call(server, room, doctor, patient, doctor_name="Dr Li",
                            patient_name="Wang Fang")
        await video_shown(doctor, patient)
        assert await patient.js("window.huizhen.lang") == "en"
        for c in (doctor, patient):
            await indicator(c, "off")
        assert not await patient.page.locator("#rec-declined").is_visible()
        # only the host has the recording controls; the patient's consent: not asked yet
        assert not await patient.page.locator("#btn-record").is_visible()
        record = doctor.page.locator("#btn-record")
        assert await record.is_visible()
        assert await record.locator(".ctrl-text").inner_text() == "Record"
        assert await consent_status(doctor) == ("none", "Patient not asked")
        assert await record.get_attribute("aria-label") == "Start recording (Patient not asked)"
        assert not await doctor.page.locator("#btn-rec-pause").is_visible()

        # Record: refused for want of consent (consent_required) → the dialog, "Ask" focused
        await record.click()
        dialog = doctor.page.locator("#rec-dialog")
        await dialog.wait_for(state="visible")
        assert await doctor.page.locator("#rec-dialog-title").inner_text() == \
            "The patient has not agreed to recording."
        for sel, text in (("#btn-rec-ask", "Ask the patient"),
                          ("#btn-rec-override", "Record anyway…"), ("#btn-rec-cancel", "Cancel")):
            assert await doctor.page.locator(sel).inner_text() == text
        assert await doctor.js("document.activeElement.id") == "btn-rec-ask"
        await screenshot(doctor, "recording-consent-required-en")
        assert await doctor.js("window.huizhen.recording.state") == "off"

        # Ask the patient: the phone shows the question in plain words
        await doctor.page.click("#btn-rec-ask")
        await dialog.wait_for(state="hidden")
        await wait_js(doctor, "document.querySelector('#rec-consent').dataset.consent === 'asked'")
        assert (await consent_status(doctor))[1] == "Waiting for answer"
        text = await consent_question(patient, min_button=56)
        assert "Dr Li asks to record this consultation." in text
        assert "goes into your medical record" in text
        assert "only your care team and you can watch it" in text
        assert "You can say no: your care does not change." in text
        assert "Yes, record it" in text and "No, do not record" in text
        await screenshot(patient, "recording-consent-en")
        # care mode (switched on earlier, say): larger still
        await patient.js("document.querySelector('#btn-care').click()")
        await consent_question(patient, min_button=72)
        title_px = await patient.js(
            "parseFloat(getComputedStyle(document.querySelector('#consent-title')).fontSize)")
        assert title_px >= 26
        await screenshot(patient, "recording-consent-en-care")
        await patient.js("document.querySelector('#btn-care').click()")
        assert await patient.js("window.huizhen.recording.consent_request.by") == "Dr Li"

        # the patient agrees: the recording the doctor asked for starts
        await patient.page.click("#btn-consent-yes")
        await patient.page.locator("#consent-dialog").wait_for(state="hidden")
        for c in (patient, doctor):
            await indicator(c, "recording")
            rec = c.page.locator("#rec-indicator")
            assert await rec.inner_text() == "REC"
            assert await rec.get_attribute("aria-label") == "This consultation is being recorded"
            assert await rec.get_attribute("data-override") == "false"
            assert await notice(c, "rec_started") == \
                "This consultation is now being recorded, with the patient's consent."
        assert await consent_status(doctor) == ("granted", "Patient agreed")
        assert await record.locator(".ctrl-text").inner_text() == "Stop recording"
        assert await doctor.page.locator("#btn-rec-pause").is_visible()
        assert not await patient.page.locator("#rec-declined").is_visible()
        await topbar_fits(patient, "#rec-indicator")
        await screenshot(patient, "recording-indicator-en")
        await screenshot(doctor, "recording-indicator-doctor-en")
        # a narrow desktop: the host's bar, Stop and Pause included, still fits on one line
        await doctor.page.set_viewport_size({"width": 800, "height": 700})
        await bar_fits(doctor)
        await doctor.page.set_viewport_size(DESKTOP)

        consent = await logged(server, room, "recording_consent")
        assert consent["data"]["granted"] is True and consent["data"]["method"] == "in_client"
        assert consent["data"]["given_by_role"] == "patient"
        started = await logged(server, room, "recording_started")
        assert started["data"]["override_reason"] is None
        assert started["data"]["consent_id"] == consent["data"]["consent_id"]
        assert started["data"]["by"] == "dr-li"

        # pause, resume, stop: every page follows
        await doctor.page.click("#btn-rec-pause")
        for c in (patient, doctor):
            await indicator(c, "paused")
            assert await c.page.locator("#rec-indicator").inner_text() == "Paused"
        assert await notice(patient, "rec_paused") == "The recording is paused."
        assert await doctor.page.locator("#btn-rec-pause .ctrl-text").inner_text() == "Resume"
        await topbar_fits(patient, "#rec-indicator")
        await screenshot(patient, "recording-paused-en")
        await doctor.page.click("#btn-rec-pause")
        for c in (patient, doctor):
            await indicator(c, "recording")
        assert await notice(patient, "rec_resumed") == "The recording has resumed."
        await doctor.page.click("#btn-record")
        for c in (patient, doctor):
            await indicator(c, "off")
        assert await notice(patient, "rec_stopped") == "The recording has stopped."
        assert await record.locator(".ctrl-text").inner_text() == "Record"
        stopped = await logged(server, room, "recording_stopped")
        assert stopped["data"]["reason"] == "stopped"
        types = await event_types(server, room)
        order = ["recording_consent_requested", "recording_consent", "recording_started",
                 "recording_paused", "recording_resumed", "recording_stopped"]
        assert [t for t in types if t in order] == order, types
        assert_no_console_errors(doctor, patient)
    finally:
        await doctor.close()
        await patient.close()


# ---- Chinese: declined, "未录制", recorded anyway with a logged reason --------------------------

async def test_consent_declined_then_override_zh(server: Server, browser: Browser) -> None:
    room = await server.create_room("clinic", "心内科复诊")
    doctor = await open_client(browser, "doctor", PHONE, locale="zh-CN")
    patient = await open_client(browser, "patient", PHONE, locale="zh-CN")
    try:
        await join(doctor, await server.join_url(room, "dr-li", "doctor", "李医生"))
        await wait_js(doctor, "window.huizhen.state === 'joined' && window.huizhen.view === 'call'")
        assert await doctor.js("window.huizhen.lang") == "zh"

        # nobody to ask yet: said plainly, nothing changes
        await open_host_tools(doctor)
        assert await consent_status(doctor) == ("none", "尚未征求同意")
        await doctor.page.click("#btn-record")
        await doctor.page.locator("#rec-dialog").wait_for(state="visible")
        assert await doctor.page.locator("#rec-dialog-title").inner_text() == "患者尚未同意录制。"
        await doctor.page.click("#btn-rec-ask")
        await wait_js(doctor, "document.querySelector('#banner').dataset.code === 'no_patient'")
        assert await doctor.page.locator("#banner-text").inner_text() == \
            "会诊中没有可以询问的患者或监护人。"
        assert (await consent_status(doctor))[0] == "none"

        # the patient comes in; the doctor (on a phone: under "More") asks
        await join(patient, await server.join_url(room, "pat-wang", "patient", "王芳"))
        await wait_js(patient, "window.huizhen.view === 'lobby'")
        # someone to ask now (the lobby counts): the message saying otherwise goes
        await wait_js(doctor, "document.querySelector('#banner').dataset.code !== 'no_patient'")
        await doctor.page.locator("#lobby-list li .btn-admit").click()
        await wait_js(patient, "window.huizhen.view === 'call'")
        await video_shown(doctor, patient)
        await open_host_tools(doctor)
        await in_viewport(doctor, "#btn-record")
        await screenshot(doctor, "recording-host-phone-zh")
        await doctor.page.click("#btn-record")
        await doctor.page.locator("#rec-dialog").wait_for(state="visible")
        await doctor.page.click("#btn-rec-ask")
        text = await consent_question(patient, min_button=56)
        assert "李医生请求录制本次会诊。" in text
        assert "录像将保存在您的病历中，只有您的医护团队和您本人可以观看。" in text
        assert "您可以拒绝，这不会影响您的诊疗。" in text
        assert "同意录制" in text and "不同意" in text
        await screenshot(patient, "recording-consent-zh")

        # the patient says no: "未录制" on their phone, "患者已拒绝" for the doctor
        await patient.page.click("#btn-consent-no")
        await patient.page.locator("#consent-dialog").wait_for(state="hidden")
        badge = patient.page.locator("#rec-declined")
        await badge.wait_for(state="visible")
        assert await badge.inner_text() == "未录制"
        assert await badge.get_attribute("aria-label") == "本次会诊没有录制"
        assert "不会被录制" in await notice(patient, "consent_thanks_no")
        await topbar_fits(patient, "#rec-declined")
        await indicator(patient, "off")
        await screenshot(patient, "recording-declined-zh")
        await wait_js(doctor, "document.querySelector('#rec-consent').dataset.consent === "
                              "'declined'")
        assert await notice(doctor, "consent_refused_patient") == "患者拒绝了录制。"
        assert not await doctor.page.locator("#rec-declined").is_visible()
        declined = await logged(server, room, "recording_consent")
        assert declined["data"]["granted"] is False

        # still "未录制" after the patient reloads the page (from joined.room.recording_state)
        await patient.page.reload()
        await precheck_done(patient)
        await wait_js(patient, "!document.querySelector('#btn-join').disabled")
        await patient.page.click("#btn-join")
        await wait_js(patient, "window.huizhen.view === 'call' && "
                               "window.huizhen.recording.consent === 'declined'")
        await badge.wait_for(state="visible")

        # the doctor records anyway, with a reason (≥ 5 characters, logged)
        await open_host_tools(doctor)
        assert await consent_status(doctor) == ("declined", "患者已拒绝")
        await doctor.page.click("#btn-record")
        await doctor.page.locator("#rec-dialog").wait_for(state="visible")
        assert await doctor.page.locator("#rec-dialog-title").inner_text() == "患者拒绝了录制。"
        await doctor.page.click("#btn-rec-override")
        await doctor.page.locator("#rec-reason").wait_for(state="visible")
        assert await doctor.js("document.activeElement.id") == "rec-reason"
        hint = await doctor.page.locator("#rec-reason-hint").inner_text()
        assert "原因将以您的名义与录像一起记录" in hint
        start = doctor.page.locator("#btn-rec-override-start")
        await doctor.page.fill("#rec-reason", "复杂")
        assert await start.is_disabled()
        await doctor.page.fill("#rec-reason", OVERRIDE_REASON)
        assert await start.is_enabled()
        await in_viewport(doctor, "#btn-rec-override-start")
        await screenshot(doctor, "recording-override-zh")
        await start.click()
        await doctor.page.locator("#rec-dialog").wait_for(state="hidden")
        for c in (patient, doctor):
            await indicator(c, "recording")
            rec = c.page.locator("#rec-indicator")
            assert await rec.inner_text() == "录制中"
            assert await rec.get_attribute("aria-label") == "本次会诊正在录制"
            assert await rec.get_attribute("data-override") == "true"
        assert await notice(patient, "rec_started_override") == \
            "本次会诊开始录制。患者未同意录制，医生已开始录制并记录了原因。"
        await badge.wait_for(state="hidden")  # it is recorded now: the badge would be untrue
        await topbar_fits(patient, "#rec-indicator")
        await screenshot(patient, "recording-indicator-zh")
        await screenshot(doctor, "recording-indicator-doctor-zh")

        started = await logged(server, room, "recording_started")
        assert started["data"]["override_reason"] == OVERRIDE_REASON
        assert started["data"]["consent_id"] is None and started["data"]["by"] == "dr-li"
        assert_no_console_errors(doctor, patient)
    finally:
        await doctor.close()
        await patient.close()
