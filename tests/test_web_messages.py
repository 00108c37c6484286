"""The browser client's plain-words messages (split from test_web_client.py): every way a
visit can fail or end — devices denied, no WebRTC, links expired, forged or for another room,
a room ended, removed, denied entry — and ending for everyone, with an invite link that works
once (a single-use invite: another device is told so)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from playwright.async_api import Browser

from rooms.models import utcnow
from tests.harness import Server, sign, wait_for
from tests.web_support import (
    PHONE,
    Client,
    close_all,
    decodes,
    join,
    me_id,
    open_call,
    open_client,
    screenshot,
    wait_js,
)

pytestmark = pytest.mark.browser


# ---- 6. messages --------------------------------------------------------------------------------

DENY_MEDIA = """
(() => {
  const md = navigator.mediaDevices;
  if (md) md.getUserMedia = () => Promise.reject(new DOMException('denied', 'NotAllowedError'));
})();
"""

NO_WEBRTC = "delete window.RTCPeerConnection; delete window.webkitRTCPeerConnection;"


async def fatal_banner(client: Client) -> tuple[str, str]:
    banner = client.page.locator('#banner[data-level="fatal"]')
    try:
        await banner.wait_for(state="visible", timeout=15000)
    except Exception as exc:
        raise AssertionError(f"{client.name}: no fatal message\n{client.log()}") from exc
    return str(await banner.get_attribute("data-code")), await client.page.locator(
        "#banner-text").inner_text()


async def test_messages_for_devices_browser_and_links(server: Server, browser: Browser) -> None:
    room = await server.create_room("clinic")
    clients: list[Client] = []
    try:
        # camera and microphone denied: said plainly; the visit can still go on
        denied = await open_client(browser, "denied", PHONE, [DENY_MEDIA])
        clients.append(denied)
        await denied.page.goto(await server.join_url(room, "pat-1", "patient"))
        banner = denied.page.locator('#banner[data-code="media_denied"]')
        await banner.wait_for(state="visible")
        assert "Camera and microphone are blocked" in await banner.inner_text()
        await wait_js(denied, "document.querySelector('#check-camera').dataset.status === 'fail'")
        assert "blocked" in await denied.page.locator("#check-camera").inner_text()
        await wait_js(denied, "!document.querySelector('#btn-join').disabled")
        await screenshot(denied, "message-media-denied-phone")

        # no WebRTC in this browser
        old = await open_client(browser, "old-browser", PHONE, [NO_WEBRTC])
        clients.append(old)
        await old.page.goto(await server.join_url(room, "pat-2", "patient"))
        code, text = await fatal_banner(old)
        assert code == "browser_unsupported" and "cannot make video calls" in text

        # an expired link (signed with the server's key, exp in the past)
        now = int(time.time())
        key = server.settings.primary_key
        expired = sign(server, {
            "iss": key.key, "sub": "pat-3", "aud": server.settings.auth.audience, "room": room,
            "name": "Pat", "role": "patient", "iat": now - 7200, "nbf": now - 7200,
            "exp": now - 3600, "grants": {"publish_audio": True, "publish_video": True,
                                          "send_data": True}})
        late = await open_client(browser, "expired", PHONE)
        clients.append(late)
        await late.page.goto(f"{server.url}/join/{room}#t={expired}")
        code, text = await fatal_banner(late)
        assert code == "token_expired" and "expired" in text
        await screenshot(late, "message-expired-link-phone")

        # a garbled link
        bad = await open_client(browser, "garbled", PHONE)
        clients.append(bad)
        await bad.page.goto(f"{server.url}/join/{room}#t=not-a-token")
        code, text = await fatal_banner(bad)
        assert code.startswith("token_") and "not valid" in text, (code, text)

        # a link without its token
        cut = await open_client(browser, "no-token", PHONE)
        clients.append(cut)
        await cut.page.goto(f"{server.url}/join/{room}")
        code, text = await fatal_banner(cut)
        assert code == "link_incomplete" and "incomplete" in text
    finally:
        await close_all(*clients)


async def test_messages_for_ended_removed_and_denied(server: Server, browser: Browser) -> None:
    room, doctor, patient = await open_call(server, browser)
    guardian = await open_client(browser, "guardian", PHONE)
    try:
        # denied entry: a guardian waits in the lobby, the doctor says no
        await join(guardian, await server.join_url(room, "guard-1", "guardian", "Wang Jun"))
        await wait_js(guardian, "window.huizhen.view === 'lobby'")
        item = doctor.page.locator(f'#lobby-list li[data-participant-id="{await me_id(guardian)}"]')
        await item.locator(".btn-deny").click()
        code, text = await fatal_banner(guardian)
        assert code == "denied" and "did not let you in" in text

        # removed by the host (with a confirmation first)
        tile = doctor.page.locator(f'#tiles [data-participant-id="{await me_id(patient)}"]')
        await tile.locator(".tile-menu-btn").click()
        await tile.locator('[data-action="remove"]').click()
        await doctor.page.locator("#confirm-dialog").wait_for(state="visible")
        await doctor.page.click("#btn-confirm-yes")
        code, text = await fatal_banner(patient)
        assert code == "removed" and "removed you" in text
        await screenshot(patient, "message-removed-phone")
        await asyncio.sleep(1)  # and it stays removed: no reconnection
        assert await patient.js("window.huizhen.state") == "failed"
        await tile.wait_for(state="detached")

        # the room ends (hospital system) while the doctor is in the call
        status, _ = await server.api("POST", f"/api/rooms/{room}/end", {"reason": "finished"})
        assert status == 200
        code, text = await fatal_banner(doctor)
        assert code == "room_ended" and "has ended" in text
        assert await doctor.js("window.huizhen.state") == "ended"
    finally:
        await close_all(doctor, patient, guardian)


async def test_end_for_everyone_and_invite(server: Server, browser: Browser) -> None:
    room, doctor, patient = await open_call(server, browser)
    try:
        # invite an interpreter: a join link to copy
        await doctor.page.click("#btn-invite")
        await doctor.page.locator("#invite-dialog").wait_for(state="visible")
        roles = await doctor.page.locator("#invite-role option").evaluate_all(
            "opts => opts.map(o => o.value)")
        assert {"interpreter", "guardian"} <= set(roles)
        await doctor.page.select_option("#invite-role", "interpreter")
        await doctor.page.fill("#invite-name", "Ms Zhou")
        await doctor.page.click("#btn-invite-create")
        await wait_js(doctor, "document.querySelector('#invite-link').value.includes('/join/')")
        link = await doctor.page.locator("#invite-link").input_value()
        assert (await doctor.js("window.huizhen.invite"))["role"] == "interpreter"
        await doctor.page.click("#btn-invite-copy")
        await wait_js(doctor, "document.querySelector('#invite-copied').textContent !== ''")
        await doctor.page.click("#btn-invite-close")

        # the invited interpreter joins with that link, straight into the call
        interpreter = await open_client(browser, "interpreter", PHONE)
        try:
            await join(interpreter, link.replace("https://", "http://"))
            await wait_js(interpreter, "window.huizhen.view === 'call' && "
                                       "window.huizhen.me?.role === 'interpreter'")
            ok = await wait_for(lambda: decodes(interpreter, streams=2, frames=10), 20)
            assert ok, interpreter.log()
            # the invite is hers now: someone else with the same link is told so
            other = await open_client(browser, "other", PHONE)
            try:
                await join(other, link.replace("https://", "http://"))
                code, text = await fatal_banner(other)
                assert code == "invite_used" and "already been used" in text, (code, text)
            finally:
                await other.close()

            # end for everyone (confirmed): every page says the consultation has ended
            await doctor.page.click("#btn-end")
            await doctor.page.click("#btn-confirm-yes")
            for c in (patient, interpreter, doctor):
                try:
                    code, text = await fatal_banner(c)
                except AssertionError as exc:
                    state = [await x.js(
                        "[window.huizhen.state, window.huizhen.end, window.huizhen.view, "
                        "(window.__sockets || []).map(s => s.readyState), "
                        "document.querySelector('#banner').outerHTML]")
                        for x in (doctor, patient, interpreter)]
                    _, room_now = await server.api("GET", f"/api/rooms/{room}")
                    raise AssertionError(f"{exc}\n{doctor.log()}\n{state}\n"
                                         f"{room_now['status']}") from None
                assert code == "room_ended" and "has ended" in text, (c.name, code, text)
        finally:
            await interpreter.close()
    finally:
        await close_all(doctor, patient)


async def test_a_link_opened_too_early_says_when_it_opens(server: Server, browser: Browser
                                                          ) -> None:
    """An appointment's link opened hours before: the page says at what local time the
    consultation opens (the server sends ``opens_at`` with ``too_early``), in both languages."""
    start = utcnow() + timedelta(hours=3)
    status, booked = await server.api("POST", "/api/appointments", {
        "kind": "clinic", "title": "复诊", "patient_ref": "Patient/early",
        "start": start.isoformat(), "end": (start + timedelta(minutes=20)).isoformat(),
        "participants": [{"identity": "pat-early", "name": "Early", "role": "patient"}]})
    assert status == 201, booked
    opens = datetime.fromisoformat(booked["opens_at"]).astimezone(UTC)  # the page runs in UTC
    url = booked["links"][0]["join_url"]
    early = await open_client(browser, "early", PHONE)
    try:
        await join(early, url)
        code, text = await fatal_banner(early)
        assert code == "too_early", (code, text)
        assert "opens at" in text and opens.strftime("%H:%M") in text, text
        assert "your local time" in text
        await early.page.click("#btn-lang")
        await wait_js(early, "document.querySelector('#banner-text').textContent"
                      ".includes('开放')")
        text = await early.page.locator("#banner-text").inner_text()
        assert opens.strftime("%H:%M") in text, text
        await screenshot(early, "message-too-early-phone")
    finally:
        await early.close()
