"""The browser client in Debian chromium, through our SFU, with an aiortc participant.

Chromium publishes its fake camera and microphone; the aiortc participant publishes a test
pattern. Each side must decode the other: getStats framesDecoded rising in the browser, frames
decoded (with the right content) in the aiortc client.
"""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import Browser

from signaling.keys import SFU
from tests.browser import KEEP_PCS, audio_samples, frames_decoded
from tests.harness import Server, wait_for

pytestmark = pytest.mark.browser



async def test_browser_and_aiortc_participant_decode_each_other(server: Server,
                                                                browser: Browser) -> None:
    room = await server.create_room("mdt")
    robot = await server.participant(room, "robot", "specialist")
    await robot.publish(tag=3)
    status, body = await server.api("POST", f"/api/rooms/{room}/tokens", {
        "identity": "dr-chen", "name": "Dr Chen", "role": "specialist"})
    assert status == 201
    context = await browser.new_context(viewport={"width": 390, "height": 844})
    await context.add_init_script(KEEP_PCS)
    page = await context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    try:
        await page.goto(body["join_url"])
        # the pre-call check runs first; then the participant taps Join
        await page.wait_for_function(
            "() => !document.querySelector('#btn-join').disabled", timeout=15000)
        await page.locator("#btn-join").click()
        # the browser decodes the robot's video and receives its audio
        assert await wait_for(lambda: _more_than(page, 60), timeout=20), console[-20:]
        first = await frames_decoded(page)
        await asyncio.sleep(2)
        assert await frames_decoded(page) > first + 20  # still rising: live video
        assert await audio_samples(page) > 48000  # at least a second of audio
        # the robot decodes the browser's camera (Chromium's fake device) and microphone
        assert await robot.wait_until(
            lambda: any(s.kind == "video" and s.frames >= 30 for s in robot.remote.values())
            and any(s.kind == "audio" and s.frames >= 50 for s in robot.remote.values()),
            timeout=20), robot.summary()
        # the page lists the robot as a participant tile
        tile = page.locator(f'[data-participant-id="{robot.id}"]')
        await tile.wait_for(timeout=5000)
        # the browser appears in the room's live state with both tracks
        status, state = await server.api("GET", f"/api/rooms/{room}")
        chen = next(p for p in state["participants"] if p["identity"] == "dr-chen")
        assert sorted(t["kind"] for t in chen["tracks"]) == ["audio", "video"]
        # an MDT room simulcasts: the page tells the server how tall it shows the robot's
        # video (device pixels, rounded up to 120), so it gets no larger layer than that
        tile_px = await tile.locator("video.tile-video").evaluate(
            "v => v.clientHeight * window.devicePixelRatio")
        (sub,) = [s for s in server.app[SFU].subscribers if s.label == chen["id"]]

        def robot_video_height() -> int | None:
            return next((slot.max_height for slot in sub.slots
                         if slot.meta and slot.meta.get("participant_id") == robot.id
                         and slot.meta.get("kind") == "video"), None)

        async def reported() -> bool:
            return robot_video_height() is not None

        assert await wait_for(reported, timeout=5)
        height = robot_video_height()
        assert height is not None and 0 < tile_px <= height < tile_px + 120, (tile_px, height)
    finally:
        await context.close()
        await robot.leave()


async def _more_than(page, n: int) -> bool:  # type: ignore[no-untyped-def]
    return await frames_decoded(page) > n
