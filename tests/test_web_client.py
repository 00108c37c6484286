"""The browser client (web_client/static) in Debian chromium against a real server (issue 3).

Doctor and patient in separate browser contexts: the pre-call check, the lobby and admission,
media both ways (getStats framesDecoded / totalSamplesReceived rising), chat, mute state,
screen share, hold, reconnection after a cut socket and after a server restart, a three-way MDT,
and the layout at phone and desktop sizes (screenshots in test-artifacts/screenshots/). The
plain-words messages for every way a visit can fail or end: test_web_messages.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from playwright.async_api import Browser, FloatRect

from tests.browser import audio_samples, frames_decoded
from tests.harness import Server, wait_for
from tests.web_support import (
    CUT_SOCKETS,
    DESKTOP,
    FAKE_SERVER,
    PHONE,
    TALKING,
    Client,
    box,
    close_all,
    decodes,
    join,
    me_id,
    media_bytes,
    open_call,
    open_client,
    overlaps,
    precheck_done,
    screenshot,
    sub_video_frames,
    tile_js,
    video_streams,
    wait_js,
)

pytestmark = pytest.mark.browser



# ---- helpers ---------------------------------------------------------------------------------

async def both_decode(a: Client, b: Client, timeout: float = 20) -> None:
    ok = await wait_for(lambda: _both(a, b), timeout)
    assert ok, (f"no video both ways: {a.name} {await frames_decoded(a.page)}, "
                f"{b.name} {await frames_decoded(b.page)}\n{a.log()}\n{b.log()}")


async def _both(a: Client, b: Client) -> bool:
    return await decodes(a) and await decodes(b)


async def rising(client: Client, seconds: float = 1.5) -> tuple[int, int]:
    """(frames, audio samples) gained over ``seconds``: live media, not a stale counter."""
    f0, a0 = await frames_decoded(client.page), await audio_samples(client.page)
    await asyncio.sleep(seconds)
    f1, a1 = await frames_decoded(client.page), await audio_samples(client.page)
    return f1 - f0, a1 - a0


# ---- 1. pre-call check, lobby, admission, media both ways ---------------------------------------

async def test_precheck_lobby_admit_and_media_both_ways(server: Server, browser: Browser) -> None:
    room = await server.create_room("clinic", "Cardiology follow-up")
    doctor = await open_client(browser, "doctor", DESKTOP)
    patient = await open_client(browser, "patient", PHONE)
    try:
        await join(doctor, await server.join_url(room, "dr-li", "doctor", "Dr Li"))
        await wait_js(doctor, "window.huizhen.view === 'call'")

        # the patient's pre-call check: preview, meter, a plain-words verdict
        await patient.page.goto(await server.join_url(room, "pat-wang", "patient", "Wang Fang"))
        await patient.page.locator("#precheck").wait_for(state="visible")
        assert await precheck_done(patient) == "good", patient.log()
        verdict = await patient.page.locator("#precheck-verdict").inner_text()
        assert verdict == "Your connection is good"
        result = await patient.js("window.huizhen.precheck")
        assert result["rtc"] == "ok" and result["lost"] == 0 and len(result["rtt_ms"]) == 5
        await wait_js(patient, "document.querySelector('#check-camera').dataset.status === 'ok'")
        await wait_js(patient, "Number(document.querySelector('#mic-meter').dataset.level) > 0")
        await patient.page.click("#btn-speaker-test")  # a generated chime, then "did you hear it?"
        await patient.page.locator("#speaker-confirm").wait_for(state="visible", timeout=5000)
        await patient.page.click("#btn-heard")
        assert await patient.page.locator("#check-speaker").get_attribute("data-status") == "ok"
        await patient.page.click("#btn-join")

        # the lobby: waiting; both connections up ahead (instant admission), no media either way
        await patient.page.locator("#lobby-wait").wait_for(state="visible")
        lobby_text = await patient.page.locator("#lobby-wait").inner_text()
        assert "the doctor will let you in" in lobby_text
        await wait_js(patient, "window.huizhen.pcs.publish?.connectionState === 'connected' && "
                      "window.huizhen.pcs.subscribe?.connectionState === 'connected'")
        await patient.page.wait_for_timeout(1500)
        waiting = await media_bytes(patient)
        assert waiting["sent"] == 0 and waiting["received"] == 0, waiting

        # the doctor sees the patient in the lobby list and admits
        item = doctor.page.locator("#lobby-list li[data-participant-id]")
        await item.wait_for(timeout=10000)
        assert "Wang Fang" in await item.inner_text()
        assert await item.get_attribute("data-participant-id") == await me_id(patient)
        await item.locator(".btn-admit").click()
        await doctor.page.locator("#lobby-list").wait_for(state="hidden")

        # both decode each other's video and receive audio
        await both_decode(doctor, patient)
        for c in (doctor, patient):
            frames, samples = await rising(c)
            assert frames > 15 and samples > 24000, (c.name, frames, samples)
        # names and roles on the tiles
        tile = patient.page.locator(f'#tiles [data-participant-id="{await me_id(doctor)}"]')
        assert "Dr Li" in await tile.inner_text() and "Doctor" in await tile.inner_text()
        assert await patient.js("window.huizhen.quality.level") in ("good", "fair", "unknown")
        # the server's view of each connection (connection_quality): in the patient's own
        # indicator, and on the patient's tile for the doctor (a moderator)
        await wait_js(patient, "window.huizhen.quality.server?.downlink != null", timeout=8)
        patient_tile = f'#tiles [data-participant-id="{await me_id(patient)}"]'
        await wait_js(doctor, f"['good', 'fair', 'poor'].includes(document.querySelector("
                              f"'{patient_tile}')?.dataset.quality)", timeout=8)
    finally:
        await close_all(doctor, patient)


# ---- 2. chat, mute state, screen share, hold -------------------------------------------------

async def test_chat_mute_screen_share_and_hold(server: Server, browser: Browser) -> None:
    _, doctor, patient = await open_call(server, browser, patient_scripts=[FAKE_SERVER])
    try:
        await both_decode(doctor, patient)
        patient_id, doctor_id = await me_id(patient), await me_id(doctor)

        # the recording indicator follows joined.room.recording (faked true for the patient)
        assert await patient.page.locator("#rec-indicator").is_visible()
        assert not await doctor.page.locator("#rec-indicator").is_visible()
        # "video paused: weak network" on the tile the server names, until it says otherwise
        doc_tile = f'#tiles [data-participant-id="{doctor_id}"]'
        for paused in (True, False):
            assert await patient.page.evaluate(
                "m => window.__serverSays(m)",
                {"type": "video_paused", "participant_id": doctor_id, "paused": paused})
            await wait_js(patient, f"document.querySelector('{doc_tile}').dataset.videoPaused "
                                   f"=== '{str(paused).lower()}'")
            status = patient.page.locator(f"{doc_tile} .tile-status")
            if paused:
                assert await status.inner_text() == "Video paused: weak network"
            else:
                assert not await status.is_visible()

        # chat: patient → doctor (unread badge), doctor → patient
        await patient.page.click("#btn-chat")
        await patient.page.locator("#chat-panel").wait_for(state="visible")
        await patient.page.fill("#chat-input", "My chest feels better")
        await patient.page.click("#btn-chat-send")
        await wait_js(doctor, "window.huizhen.chat.some(m => m.text === 'My chest feels better' "
                              "&& m.name === 'Wang Fang')")
        badge = doctor.page.locator("#chat-unread")
        await badge.wait_for(state="visible")
        assert await badge.inner_text() == "1"
        await doctor.page.click("#btn-chat")
        log = doctor.page.locator("#chat-log li")
        assert "My chest feels better" in await log.last.inner_text()
        assert "Wang Fang" in await log.last.inner_text()
        await badge.wait_for(state="hidden")
        await doctor.page.fill("#chat-input", "Good. Keep taking the tablets.")
        await doctor.page.press("#chat-input", "Enter")
        await wait_js(patient, "[...document.querySelectorAll('#chat-log li')].some(li => "
                               "li.textContent.includes('Keep taking the tablets') && "
                               "li.textContent.includes('Dr Li'))")
        chat = await patient.js("window.huizhen.chat")
        assert [m["mine"] for m in chat] == [True, False] and chat[0]["id"] < chat[1]["id"]
        await patient.page.click("#btn-chat-close")

        # the patient mutes: the doctor's tile shows it; and unmutes again
        tile = doctor.page.locator(f'#tiles [data-participant-id="{patient_id}"]')
        assert await tile.get_attribute("data-mic-muted") == "false"
        await patient.page.click("#btn-mic")
        await wait_js(doctor, tile_js(patient_id, "micMuted") + " === 'true'")
        assert await tile.locator(".badge-mic").is_visible()
        await patient.page.click("#btn-mic")
        await wait_js(doctor, tile_js(patient_id, "micMuted") + " === 'false'")

        # the doctor mutes the patient from the tile menu: the patient's mic turns off
        await tile.locator(".tile-menu-btn").click()
        await tile.locator('[data-action="mute"]').click()
        await wait_js(patient, "document.querySelector('#btn-mic').dataset.muted === 'true'")
        await wait_js(doctor, tile_js(patient_id, "micMuted") + " === 'true'")

        # screen share from the doctor: a second video, decoded by the patient, shown large
        await doctor.page.click("#btn-screen")
        await wait_js(doctor, "window.huizhen.screenSharing && window.huizhen.pcs.screen")
        await wait_js(patient, f"document.querySelector('{doc_tile}')"
                               ".classList.contains('has-screen')")
        ok = await wait_for(lambda: decodes(patient, streams=2, frames=20), 15)
        assert ok, (await video_streams(patient, 1), patient.log())
        await wait_js(patient, f"document.querySelector('{doc_tile} .tile-screen').videoWidth > 0")
        # large: the screen fills the doctor's tile, which fills most of the stage
        screen_box = await box(patient, f"{doc_tile} .tile-screen")
        stage = await box(patient, "#stage")
        assert screen_box["width"] * screen_box["height"] > 0.6 * stage["width"] * stage["height"]
        await doctor.page.click("#btn-screen")  # stop sharing: unpublished
        await wait_js(patient, f"!document.querySelector('{doc_tile}')"
                               ".classList.contains('has-screen')")
        assert await doctor.js("window.huizhen.pcs.screen") is None

        # hold: the patient sees the hold screen, then comes back with media
        await tile.locator(".tile-menu-btn").click()
        await tile.locator('[data-action="hold"]').click()
        await patient.page.locator("#hold-screen").wait_for(state="visible")
        assert "on hold" in await patient.page.locator("#hold-screen").inner_text()
        await wait_js(doctor, tile_js(patient_id, "held") + " === 'true'")
        await tile.locator(".tile-menu-btn").click()
        assert await tile.locator('[data-action="hold"]').inner_text() == "Resume"
        await tile.locator('[data-action="hold"]').click()
        await patient.page.locator("#hold-screen").wait_for(state="hidden")
        frames = await frames_decoded(patient.page)
        assert await wait_for(lambda: _more(patient, frames + 20), 10), patient.log()
    finally:
        await close_all(doctor, patient)


async def _more(client: Client, n: int) -> bool:
    return await frames_decoded(client.page) > n


# ---- 3. reconnection --------------------------------------------------------------------------

async def test_cut_socket_reconnects_within_10s(server: Server, browser: Browser) -> None:
    _, doctor, patient = await open_call(server, browser)
    try:
        await both_decode(doctor, patient)
        old_id = await me_id(patient)
        cut_at = time.monotonic()
        assert await patient.page.evaluate(CUT_SOCKETS) == 1
        await wait_js(patient, "window.huizhen.state === 'reconnecting' && document.querySelector("
                               "'#status').textContent === 'Reconnecting…'", timeout=3)
        base = await frames_decoded(doctor.page)
        # back in the call (re-admitted, not the lobby), same identity, new session; no reload
        await wait_js(patient, f"window.huizhen.state === 'joined' && window.huizhen.me.id !== "
                               f"'{old_id}' && window.huizhen.admission === 'active'", timeout=10)
        new_id = await me_id(patient)
        ok = await wait_for(lambda: _recovered(doctor, patient, base), 10 - (time.monotonic()
                                                                               - cut_at))
        took = time.monotonic() - cut_at
        assert ok, (took, await frames_decoded(doctor.page), base, await sub_video_frames(patient),
                    doctor.log(), patient.log())
        assert took < 10
        print(f"socket cut: media both ways again after {took:.1f}s")
        await doctor.page.locator(f'[data-participant-id="{new_id}"]').wait_for()
        assert await doctor.page.locator(f'[data-participant-id="{old_id}"]').count() == 0
        assert await patient.js("performance.getEntriesByType('navigation').length") == 1
    finally:
        await close_all(doctor, patient)


async def _recovered(doctor: Client, patient: Client, doctor_base: int) -> bool:
    return (await frames_decoded(doctor.page) > doctor_base + 20
            and any(f > 20 for f in await sub_video_frames(patient)))


async def test_server_restart_reconnects_within_10s(server: Server, browser: Browser) -> None:
    _, doctor, patient = await open_call(server, browser)
    try:
        await both_decode(doctor, patient)
        for c in (doctor, patient):
            await c.js("window.__oldSub = window.huizhen.pcs.subscribe")
        restart_at = time.monotonic()
        await server.stop()  # sockets closed with 1012 "service restarting"
        await server.start()  # same port, same data folder
        ok = await wait_for(lambda: _fresh_media(doctor, patient), 10 - (time.monotonic()
                                                                           - restart_at))
        took = time.monotonic() - restart_at
        assert ok, (took, await sub_video_frames(doctor), await sub_video_frames(patient),
                    doctor.log(), patient.log())
        print(f"server restart: media both ways again after {took:.1f}s")
        for c in (doctor, patient):
            assert await c.js("window.huizhen.view") == "call"
            assert await c.js("performance.getEntriesByType('navigation').length") == 1
    finally:
        await close_all(doctor, patient)


async def _fresh_media(*clients: Client) -> bool:
    for c in clients:
        new_pc = await c.js("!!window.huizhen.pcs.subscribe && "
                            "window.huizhen.pcs.subscribe !== window.__oldSub")
        if not new_pc or not any(f > 20 for f in await sub_video_frames(c)):
            return False
    return True


# ---- 4. three browsers in an MDT -------------------------------------------------------------

async def test_mdt_three_browsers_decode_each_other(server: Server, browser: Browser) -> None:
    room = await server.create_room("mdt", "Tumour board")
    clients = []
    try:
        for identity, role in (("dr-zhao", "specialist"), ("dr-qian", "presenter"),
                               ("dr-sun", "doctor")):
            c = await open_client(browser, role, {"width": 800, "height": 600})
            await join(c, await server.join_url(room, identity, role, identity.title()))
            clients.append(c)
        for c in clients:
            await wait_js(c, "window.huizhen.view === 'call'")
        ok = await wait_for(lambda: _all_decode_two(clients), 25)
        assert ok, [(c.name, await video_streams(c, 1)) for c in clients] + [
            c.log() for c in clients]
        for c in clients:
            assert await c.page.locator("#tiles [data-participant-id]").count() == 2
    finally:
        await close_all(*clients)


async def _all_decode_two(clients: list[Client]) -> bool:
    for c in clients:
        if await video_streams(c, 20) < 2:
            return False
    return True


# ---- 5. layout and screenshots ------------------------------------------------------------------

async def test_layout_and_screenshots(server: Server, browser: Browser) -> None:
    room = await server.create_room("clinic", "Cardiology follow-up")
    doctor = await open_client(browser, "doctor", DESKTOP)
    patient = await open_client(browser, "patient", PHONE)
    try:
        await join(doctor, await server.join_url(room, "dr-li", "doctor", "Dr Li"))
        await patient.page.goto(await server.join_url(room, "pat-wang", "patient", "Wang Fang"))
        await precheck_done(patient)
        await wait_js(patient, "!document.querySelector('#btn-join').disabled")
        await screenshot(patient, "precheck-phone")
        await patient.page.set_viewport_size(DESKTOP)
        await screenshot(patient, "precheck-desktop")
        await patient.page.set_viewport_size(PHONE)
        join_box = await box(patient, "#btn-join")
        assert join_box["height"] >= 48 and join_box["y"] + join_box["height"] <= PHONE["height"]

        await patient.page.click("#btn-join")
        await patient.page.locator("#lobby-wait").wait_for(state="visible")
        await wait_js(patient, "document.querySelector('#lobby-video').videoWidth > 0")
        await screenshot(patient, "lobby-phone")
        await patient.page.set_viewport_size(DESKTOP)
        await screenshot(patient, "lobby-desktop")
        await doctor.page.locator("#lobby-list li").wait_for()
        await screenshot(doctor, "doctor-lobby-list-desktop")
        await patient.page.set_viewport_size(PHONE)

        await doctor.page.click("#lobby-list .btn-admit")
        await both_decode(doctor, patient)
        await wait_js(patient, "[...document.querySelectorAll('#tiles video')]"
                               ".some(v => v.videoWidth > 0)")
        await wait_js(patient, "document.querySelector('#quality').dataset.level !== 'unknown'",
                      timeout=8)
        await screenshot(patient, "call-phone")
        await screenshot(doctor, "call-doctor-desktop")

        # the main controls at phone size: visible, inside the viewport, ≥ 48 px, apart
        controls = ["#btn-mic", "#btn-cam", "#btn-leave", "#btn-chat"]
        boxes: dict[str, FloatRect] = {}
        for sel in controls:
            assert await patient.page.locator(sel).is_visible(), sel
            b = await box(patient, sel)
            assert b["width"] >= 48 and b["height"] >= 48, (sel, b)
            assert b["x"] >= 0 and b["y"] >= 0, (sel, b)
            assert b["x"] + b["width"] <= PHONE["width"], (sel, b)
            assert b["y"] + b["height"] <= PHONE["height"], (sel, b)
            boxes[sel] = b
        for i, first in enumerate(controls):
            for second in controls[i + 1:]:
                assert not overlaps(boxes[first], boxes[second]), (first, second, boxes)

        # a third person: on the phone, the active speaker large and the other small
        guardian = await open_client(browser, "guardian", {"width": 640, "height": 480},
                                     init_scripts=[TALKING])
        try:
            await join(guardian, await server.join_url(room, "guard-1", "guardian", "Wang Jun"))
            await doctor.page.locator("#lobby-list .btn-admit").click()
            ok = await wait_for(lambda: decodes(patient, streams=2, frames=20), 20)
            assert ok, patient.log()
            await wait_js(patient, "document.querySelector('#tiles').dataset.layout === 'speaker'")
            main = patient.page.locator('#tiles [data-speaker="main"]')
            small = patient.page.locator('#tiles .tile:not([data-speaker="main"])')
            assert await main.count() == 1 and await small.count() == 1
            main_box, small_box = await box(patient, '#tiles [data-speaker="main"]'), \
                await box(patient, '#tiles .tile:not([data-speaker="main"])')
            assert main_box["width"] * main_box["height"] > 8 * small_box["width"] * \
                small_box["height"]
            assert not overlaps(main_box, small_box)
            # the guardian talks: the server names her the active speaker (from the audio
            # levels in her packets) and the patient's phone shows her large
            guardian_id = await guardian.js("window.huizhen.me.id")
            await wait_js(patient, f"window.huizhen.activeSpeaker === '{guardian_id}'",
                          timeout=10)
            await wait_js(patient, f"{tile_js(guardian_id, 'speaker')} === 'main'")
            await wait_js(patient, "[...document.querySelectorAll('#tiles video')]"
                                   ".filter(v => v.videoWidth > 0).length === 2")
            await screenshot(patient, "call-phone-3")
            await screenshot(doctor, "call-doctor-desktop-3")
        finally:
            await guardian.close()

        # care mode: bigger still (≥ 64 px), remembered across a reload of the page
        await patient.page.click("#btn-care")
        for sel in controls:
            b = await box(patient, sel)
            assert b["width"] >= 64 and b["height"] >= 64, (sel, b)
        await screenshot(patient, "call-phone-care")
        assert await patient.js("localStorage.getItem('huizhen.care')") == "1"

        await patient.page.set_viewport_size(DESKTOP)
        await patient.page.click("#btn-care")
        await screenshot(patient, "call-desktop")
        # a doctor on a phone: the moderator tools behind "More", the tile menu as a popup
        await doctor.page.set_viewport_size(PHONE)
        await doctor.page.click("#btn-more")
        for sel in ("#btn-invite", "#btn-end"):
            b = await box(doctor, sel)
            assert await doctor.page.locator(sel).is_visible() and b["height"] >= 48
            assert b["x"] + b["width"] <= PHONE["width"] and b["y"] + b["height"] <= PHONE["height"]
        await screenshot(doctor, "doctor-phone-more")
        await doctor.page.keyboard.press("Escape")
        await doctor.page.locator("#host-tools").wait_for(state="hidden")
        await doctor.page.locator("#tiles .tile-menu-btn").first.click()
        menu = doctor.page.locator("#tiles .tile-menu:visible")
        for action in ("hold", "mute", "remove"):
            assert await menu.locator(f'[data-action="{action}"]').is_visible()
        m = await menu.bounding_box()
        assert m and m["x"] >= 0 and m["x"] + m["width"] <= PHONE["width"]
        assert m["y"] + m["height"] <= PHONE["height"]
        await screenshot(doctor, "doctor-phone-tile-menu")
        await doctor.page.keyboard.press("Escape")

        # Chinese
        await patient.page.click("#btn-lang")
        await patient.page.set_viewport_size(PHONE)
        await patient.page.click("#btn-chat")
        await screenshot(patient, "chat-phone-zh")
        assert await patient.js("document.documentElement.lang") == "zh-CN"
    finally:
        await close_all(doctor, patient)
