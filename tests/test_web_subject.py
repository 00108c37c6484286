"""The web client shows the patient under discussion (ward rounds, MDT; docs/protocol.md).

A host in a ward round on a narrow phone (360 px): the hospital system names a patient through
the API, the page shows "正在讨论：12床" under the top bar's row (and says it to screen readers),
in both languages and in care mode, below the top bar's row and never under a message banner,
and hides it again when the subject is cleared.
"""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, ViewportSize

from tests.harness import Server
from tests.web_support import FAKE_SERVER, box, join, open_client, screenshot, wait_js

pytestmark = pytest.mark.browser

NARROW_PHONE: ViewportSize = {"width": 360, "height": 740}
SHOWN = "!document.querySelector('#subject').hidden"
TEXT = "document.querySelector('#subject-text').textContent"
LIVE = "document.querySelector('#live').textContent"


async def test_patient_under_discussion_shown_and_cleared(server: Server,
                                                          browser: Browser) -> None:
    room = await server.create_room("ward_round", "5病区查房")
    # FAKE_SERVER: lets the test hand the page a server message (window.__serverSays)
    host = await open_client(browser, "host", NARROW_PHONE, [FAKE_SERVER], locale="zh-CN")
    try:
        await join(host, await server.join_url(room, "dr-chen", "host", "陈医生"),
                   wait_check=False)
        await wait_js(host, "window.huizhen.state === 'joined' && window.huizhen.view === 'call'")
        assert await host.js(f"!({SHOWN})") and await host.js("window.huizhen.subject") is None

        status, body = await server.api("POST", f"/api/rooms/{room}/subject",
                                        {"patient_ref": "Patient/ward-a", "label": "12床"})
        assert status == 200, body
        await wait_js(host, f"{SHOWN} && {TEXT} === '正在讨论：12床'", timeout=5)
        await wait_js(host, f"{LIVE} === '正在讨论：12床'", timeout=5)
        assert (await host.js("window.huizhen.subject"))["patient_ref"] == "Patient/ward-a"

        # on a 360 px phone the pill and the top bar's buttons stay on screen, also in care mode
        for care in (False, True):
            if care:
                await host.page.click("#btn-care")
                assert await host.js(
                    "getComputedStyle(document.querySelector('#subject-text')).fontSize"
                ) == "20px"
            pill, lang, tiles = (await box(host, "#subject-text"), await box(host, "#btn-lang"),
                                 await box(host, "#tiles"))
            assert pill["x"] >= 0 and pill["x"] + pill["width"] <= NARROW_PHONE["width"], pill
            assert lang["x"] + lang["width"] <= NARROW_PHONE["width"], lang
            assert pill["y"] + pill["height"] <= tiles["y"], (pill, tiles)
        # a message in the banner floats below the pill, not over it
        await host.js("window.__serverSays({type: 'error', code: 'x', message: 'test message'})")
        await wait_js(host, "document.querySelector('#banner-text').textContent === 'test message'")
        banner = await box(host, "#banner")
        assert banner["y"] >= pill["y"] + pill["height"], (banner, pill)
        await screenshot(host, "subject-phone-care")

        await host.page.click("#btn-lang")
        await wait_js(host, f"{TEXT} === 'Now discussing: 12床'", timeout=5)

        status, body = await server.api("POST", f"/api/rooms/{room}/subject",
                                        {"patient_ref": None})
        assert status == 200 and body["subject"] is None, body
        await wait_js(host, f"!({SHOWN})", timeout=5)
        await wait_js(host, f"{LIVE} === 'No particular patient under discussion now'", timeout=5)
        assert await host.js("window.huizhen.subject") is None

        errors = [line for line in host.console
                  if line.startswith("error:") or line.startswith("PAGE ERROR")]
        assert not errors, host.log()
    finally:
        await host.close()
