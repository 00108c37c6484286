"""The host hands the consultation over from the web client (issue 12, hand-off).

A ward round: the host's page (a phone, Chinese) and a specialist (an SDK participant). The
specialist's tile menu offers "设为主持人"; after confirming, the specialist is the host (the
server says so to it) and the page is a specialist's: no moderation menus, and it is told so.
"""

from __future__ import annotations

import pytest
from playwright.async_api import Browser

from sdk.participant import Participant
from tests.harness import LOOPBACK, Server
from tests.web_support import join, open_client, screenshot, wait_js

pytestmark = pytest.mark.browser


async def test_host_hands_off_from_the_tile_menu(server: Server, browser: Browser) -> None:
    room = await server.create_room("ward_round", "5病区查房")
    host = await open_client(browser, "host", locale="zh-CN")
    specialist = Participant(server.url, room, await server.token(room, "dr-sun", "specialist",
                                                                  "孙教授"), ice=LOOPBACK)
    try:
        await join(host, await server.join_url(room, "dr-chen", "host", "陈主任"),
                   wait_check=False)
        await wait_js(host, "window.huizhen.state === 'joined' && window.huizhen.view === 'call'")
        await specialist.join()
        tile = f'#tiles [data-participant-id="{specialist.id}"]'
        await host.page.locator(f"{tile} .tile-menu-btn").wait_for(state="visible")
        await host.page.click(f"{tile} .tile-menu-btn")
        action = host.page.locator(f'{tile} [data-action="host"]')
        assert await action.is_visible() and await action.inner_text() == "设为主持人"
        await screenshot(host, "handoff-menu-zh")
        await action.click()
        await host.page.click("#btn-confirm-yes")
        await wait_js(host, "window.huizhen.me?.role === 'specialist' && "
                            "!window.huizhen.me.grants.moderate", timeout=5)
        await wait_js(host, "document.querySelector('#live').textContent === "
                            "'您现在的身份：专家'", timeout=5)
        assert await host.page.locator(f"{tile} .tile-menu-btn").count() == 0
        assert await specialist.wait_until(lambda: any(
            e.get("type") == "role_changed" and e["me"]["role"] == "host"
            for e in specialist.events), 5)
        errors = [line for line in host.console
                  if line.startswith("error:") or line.startswith("PAGE ERROR")]
        assert not errors, host.log()
    finally:
        await specialist.close()
        await host.close()
