"""A teaching broadcast in the web client (phones): a trainee raises a hand, the moderator
promotes them from the hands list, the trainee's page publishes its microphone (the presenter,
an SDK participant, receives the audio), the moderator demotes them and it stops; a question
asked from the trainee's page is approved from the moderator's and shows on the trainee's.
After the broadcast, a trainee who attended plays its recording on the Records page."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from playwright.async_api import Browser

from sdk.participant import Participant
from sdk.testmedia import PatternVideoTrack
from tests.harness import LOOPBACK, Server, running_server
from tests.recording_support import consent, finish, records_token
from tests.web_support import CUT_SOCKETS, join, open_client, screenshot, wait_js

pytestmark = pytest.mark.browser

OUTBOUND_AUDIO = """
async () => {
  const pc = window.huizhen.pcs.publish;
  if (!pc) return 0;
  let sent = 0;
  (await pc.getStats()).forEach(s => {
    if (s.type === 'outbound-rtp' && s.kind === 'audio') sent += s.packetsSent || 0;
  });
  return sent;
}
"""


async def test_raise_hand_promote_demote_and_a_question(server: Server, browser: Browser
                                                        ) -> None:
    room = await server.create_room("broadcast", "腹腔镜胆囊切除术示教")
    presenter = Participant(server.url, room, await server.token(
        room, "dr-surgeon", "presenter", "王主任"), ice=LOOPBACK)
    moderator = await open_client(browser, "moderator", locale="zh-CN")
    trainee = await open_client(browser, "trainee", locale="en-US")
    try:
        await presenter.join()
        await presenter.publish(video_track=PatternVideoTrack(1, 320, 240, 15), tag=1)
        await join(moderator, await server.join_url(room, "dr-mod", "moderator", "陈老师"),
                   wait_check=False)
        await wait_js(moderator, "window.huizhen.state === 'joined' && "
                                 "window.huizhen.view === 'call'")
        await join(trainee, await server.join_url(room, "trainee-liu", "viewer", "Liu Yang"))
        await wait_js(trainee, "window.huizhen.state === 'joined' && "
                               "window.huizhen.view === 'call'")
        trainee_id = str(await trainee.js("window.huizhen.me.id"))
        # the trainee is in nobody's roster; the moderator sees the count
        await wait_js(moderator, "document.querySelector('#viewer-count')?.textContent === "
                                 "'1 人观看'", timeout=5)
        assert trainee_id not in await moderator.js("Object.keys(window.huizhen.participants)")
        assert await trainee.page.locator("#viewer-count").is_hidden()
        await trainee.page.locator("#btn-hand").wait_for(state="visible")
        assert await trainee.page.inner_text("#btn-hand .ctrl-text") == "Hand up"

        # the hand goes up; the moderator sees it (a badge, then the list) and promotes
        await screenshot(trainee, "broadcast-trainee-call-en")
        await trainee.page.click("#btn-hand")
        await wait_js(trainee, "document.querySelector('#btn-hand').dataset.raised === 'true'",
                      timeout=5)
        await wait_js(moderator, "document.querySelector('#qa-badge')?.textContent === '1'",
                      timeout=5)
        await screenshot(moderator, "broadcast-moderator-call-zh")
        await moderator.page.click("#btn-qa")
        hand = moderator.page.locator(f'#qa-hands li[data-participant-id="{trainee_id}"]')
        await hand.wait_for(state="visible")
        assert "Liu Yang" in await hand.inner_text()
        assert await hand.locator('[data-action="promote-audio"]').inner_text() == "允许发言"
        await screenshot(moderator, "broadcast-moderator-hands-zh")
        await hand.locator('[data-action="promote-audio"]').click()

        # the trainee's page sends its microphone, and the presenter hears it
        await wait_js(trainee, "!!window.huizhen.local.audio?.track_id && "
                               "window.huizhen.pcs.publish?.connectionState === 'connected'",
                      timeout=15)
        assert await trainee.js("window.huizhen.me.grants.publish_audio") is True
        assert await trainee.js("window.huizhen.local.video") is None
        assert await presenter.wait_until(
            lambda: presenter.frames_from(trainee_id, "audio") >= 50, 15), presenter.summary()
        assert await trainee.page.evaluate(OUTBOUND_AUDIO) > 0
        assert await trainee.page.locator("#btn-hand").is_hidden()
        await screenshot(trainee, "broadcast-trainee-speaking-en")

        # the phone's network drops while it speaks: back by itself, still a speaker, heard
        assert await trainee.page.evaluate(CUT_SOCKETS) == 1
        await wait_js(trainee, f"window.huizhen.state === 'joined' && window.huizhen.me.id !== "
                               f"'{trainee_id}' && window.huizhen.audience.promoted && "
                               "window.huizhen.pcs.publish?.connectionState === 'connected'",
                      timeout=15)
        trainee_id = await trainee.js("window.huizhen.me.id")
        assert await presenter.wait_until(
            lambda: presenter.frames_from(trainee_id, "audio") >= 25, 15), presenter.summary()
        assert await trainee.page.locator("#btn-hand").is_hidden()
        # … and after a reload (nothing kept on the page): the microphone is taken again
        url = trainee.page.url
        await trainee.page.goto("about:blank")
        await join(trainee, url)
        await wait_js(trainee, f"window.huizhen.state === 'joined' && window.huizhen.me.id !== "
                               f"'{trainee_id}' && window.huizhen.audience.promoted && "
                               "!!window.huizhen.local.audio?.track_id && "
                               "window.huizhen.pcs.publish?.connectionState === 'connected'",
                      timeout=15)
        trainee_id = await trainee.js("window.huizhen.me.id")
        assert await presenter.wait_until(
            lambda: presenter.frames_from(trainee_id, "audio") >= 25, 15), presenter.summary()
        speaker = moderator.page.locator(f'#qa-speakers li[data-participant-id="{trainee_id}"]')
        await speaker.wait_for(state="visible")
        await screenshot(moderator, "broadcast-moderator-speaking-zh")

        # demoted: the page stops sending, the presenter hears nothing more from it
        await speaker.locator('[data-action="demote"]').click()
        await wait_js(trainee, "window.huizhen.pcs.publish === null && "
                               "window.huizhen.local.audio === null && "
                               "!window.huizhen.me.grants.publish_audio", timeout=10)
        await asyncio.sleep(0.5)
        heard = presenter.frames_from(trainee_id, "audio")
        await asyncio.sleep(1.5)
        assert presenter.frames_from(trainee_id, "audio") == heard
        await trainee.page.locator("#btn-hand").wait_for(state="visible")
        await speaker.wait_for(state="detached")

        # a question: asked on the trainee's page, approved on the moderator's
        await trainee.page.click("#btn-qa")
        await trainee.page.fill("#qa-input", "How do you identify the cystic artery?")
        await trainee.page.click("#btn-qa-send")
        pending = moderator.page.locator("#qa-pending li[data-status='pending']")
        await pending.wait_for(state="visible")
        assert "cystic artery" in await pending.inner_text()
        await pending.locator('[data-action="approve"]').click()
        approved = trainee.page.locator("#qa-approved li[data-status='approved']")
        await approved.wait_for(state="visible")
        assert "cystic artery" in await approved.inner_text()
        await screenshot(trainee, "broadcast-trainee-qa-en")
        await moderator.page.locator("#qa-approved li[data-status='approved']").wait_for()
        await screenshot(moderator, "broadcast-moderator-qa-zh")

        for client in (moderator, trainee):
            errors = [line for line in client.console
                      if line.startswith("error:") or line.startswith("PAGE ERROR")]
            assert not errors, client.log()
    finally:
        await presenter.close()
        await trainee.close()
        await moderator.close()


async def test_a_trainee_plays_the_broadcast_on_the_records_page(tmp_path: Path,
                                                                  browser: Browser) -> None:
    async with running_server(tmp_path / "srv") as server:
        status, created = await server.api("POST", "/api/rooms", {
            "kind": "broadcast", "title": "腹腔镜胆囊切除术示教", "patient_ref": "Patient/op-2"})
        assert status == 201, created
        room = created["id"]
        presenter = Participant(server.url, room, await server.token(
            room, "dr-surgeon", "presenter", "王主任"), ice=LOOPBACK, decode=False)
        viewer = Participant(server.url, room, await server.token(
            room, "trainee-liu", "viewer", "Liu Yang"), ice=LOOPBACK, decode=False)
        try:
            await presenter.join()
            await viewer.join()
            await presenter.publish(video_track=PatternVideoTrack(4, 320, 240, 15), tag=4)
            await consent(server, room)
            assert await presenter.wait_until(lambda: any(
                e.get("type") == "recording" and e["state"] == "recording"
                for e in presenter.events), 10)
            await asyncio.sleep(3.0)
        finally:
            await viewer.leave()
            await presenter.leave()
        status, _ = await server.api("POST", f"/api/rooms/{room}/end")
        assert status == 200
        assert await finish(server) == 2
        token = await records_token(server, "trainee-liu", "viewer")

        page = await open_client(browser, "trainee-records", locale="zh-CN")
        try:
            await page.page.goto(f"{server.url}/records#t={token}")
            await wait_js(page, "document.querySelectorAll('.visit .btn-play').length === 1")
            card = await page.page.locator(".visit").inner_text()
            assert "手术示教直播" in card and "Patient/op-2" not in card, card
            await page.page.locator(".btn-play").first.click()
            await wait_js(page, "document.querySelector('#video').readyState >= 2")
            await wait_js(page, "document.querySelector('#video').currentTime > 0.3")
            await screenshot(page, "broadcast-trainee-records-zh")
            errors = [line for line in page.console
                      if line.startswith("error:") or line.startswith("PAGE ERROR")]
            assert not errors, page.log()
        finally:
            await page.close()
