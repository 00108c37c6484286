"""The web client's MDT case images (call-images.js; docs/protocol.md "Case images").

Two phones in an MDT call: the presenter uploads a PNG and then a DICOM from the page (the file
input), each is shown; the expert's page shows the served file itself at full resolution (the
<img>'s natural size is the image's), the presenter's pointer where the presenter tapped, its
zoom, and for DICOM the window/level the presenter picks.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw
from playwright.async_api import Browser

from tests.harness import Server
from tests.test_case_images import dicom
from tests.web_support import PHONE, box, join, open_client, screenshot, wait_js

pytestmark = pytest.mark.browser

SHOWN = "window.huizhen.images.shown"
VIEW = "window.huizhen.images.view"
NATURAL = "[document.querySelector('#case-image').naturalWidth, " \
          "document.querySelector('#case-image').naturalHeight]"


def chest_png(width: int = 1400, height: int = 1000) -> bytes:
    """Something to look at: a gradient with a few shapes and fine lines (1 px detail)."""
    y, x = np.mgrid[0:height, 0:width]
    gray = (40 + 120 * x / width + 60 * y / height).astype(np.uint8)
    img = Image.fromarray(np.stack([gray] * 3, axis=-1), "RGB")
    draw = ImageDraw.Draw(img)
    draw.ellipse((250, 200, 650, 800), outline=(240, 240, 240), width=12)
    draw.ellipse((750, 200, 1150, 800), outline=(240, 240, 240), width=12)
    draw.rectangle((880, 420, 960, 500), fill=(250, 80, 60))
    for i in range(0, width, 8):
        draw.line((i, 0, i, 40), fill=(255, 255, 255), width=1)
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def phantom(size: int = 512) -> np.ndarray:
    """Stored values of a chest-like CT slice (HU = 2·stored − 1000): air around a body of
    soft tissue (40 HU), two lungs (−800 HU) and a spine of bone (1000 HU)."""
    y, x = np.mgrid[0:size, 0:size] / size
    hu = np.full((size, size), -1000.0)
    hu[((x - 0.5) / 0.42) ** 2 + ((y - 0.5) / 0.32) ** 2 <= 1] = 40
    for cx in (0.33, 0.67):
        hu[((x - cx) / 0.13) ** 2 + ((y - 0.47) / 0.2) ** 2 <= 1] = -800
    hu[(x - 0.5) ** 2 + (y - 0.72) ** 2 <= 0.05 ** 2] = 1000
    hu += np.random.default_rng(3).normal(0, 15, hu.shape)  # noise, as a scanner's
    return np.clip((hu + 1000) / 2, 0, 65535).astype(np.uint16)


async def test_presenter_shows_png_and_dicom_to_the_room(server: Server,
                                                         browser: Browser) -> None:
    room = await server.create_room("mdt", "MDT 胸外科")
    presenter = await open_client(browser, "presenter", PHONE)
    expert = await open_client(browser, "expert", PHONE, locale="zh-CN")
    try:
        await join(presenter, await server.join_url(room, "dr-ma", "presenter", "Dr Ma"),
                   wait_check=False)
        # an observer (role viewer: no publish_screen grant) sees what the presenter shows
        await join(expert, await server.join_url(room, "dr-lin", "viewer", "林医生"),
                   wait_check=False)
        for c in (presenter, expert):
            await wait_js(c, "window.huizhen.state === 'joined' && "
                             "window.huizhen.view === 'call'")
        await wait_js(presenter, "window.huizhen.images.presenter === true")
        assert await expert.js("window.huizhen.images.presenter") is False
        # the observer has nothing to show or upload yet: no Images button
        assert await expert.js("document.querySelector('#btn-images').hidden")

        # 1. a PNG, uploaded from the page
        await presenter.page.click("#btn-images")
        await wait_js(presenter, "!document.querySelector('#images-sheet').hidden")
        await presenter.page.set_input_files("#image-file", files=[{
            "name": "胸片.png", "mimeType": "image/png", "buffer": chest_png()}])
        await wait_js(expert, f"{SHOWN} && {SHOWN}.naturalWidth === 1400", timeout=20)
        assert await expert.js(NATURAL) == [1400, 1000]  # the original pixels, not a video
        assert await expert.js("document.querySelector('#case-image').src"
                               ".startsWith('blob:')")
        assert (await expert.js(VIEW))["image"]["label"] == "胸片"
        await wait_js(presenter, f"{SHOWN} && {SHOWN}.naturalWidth === 1400")
        assert await presenter.js("document.querySelector('#images-sheet').hidden")

        # the presenter taps on the image: the expert's pointer dot goes there
        viewport = await box(presenter, "#image-viewport")
        geometry = await presenter.js("""(() => {
            const r = document.querySelector('#case-image').getBoundingClientRect();
            return {x: r.x, y: r.y, w: r.width, h: r.height}; })()""")
        target = (geometry["x"] + geometry["w"] * 0.7, geometry["y"] + geometry["h"] * 0.45)
        assert viewport["y"] <= target[1] <= viewport["y"] + viewport["height"]
        await presenter.page.mouse.click(*target)
        await wait_js(expert, f"{VIEW}.pointer && Math.abs({VIEW}.pointer[0] - 0.7) < 0.02 "
                              f"&& Math.abs({VIEW}.pointer[1] - 0.45) < 0.02")
        await wait_js(expert, "!document.querySelector('#image-pointer').hidden")
        dot = await box(expert, "#image-pointer")
        picture = await expert.js("""(() => {
            const r = document.querySelector('#case-image').getBoundingClientRect();
            return {x: r.x, y: r.y, w: r.width, h: r.height}; })()""")
        centre = (dot["x"] + dot["width"] / 2, dot["y"] + dot["height"] / 2)
        assert abs(centre[0] - (picture["x"] + 0.7 * picture["w"])) < 6, (centre, picture)
        assert abs(centre[1] - (picture["y"] + 0.45 * picture["h"])) < 6, (centre, picture)

        # and zooms in twice: the expert's picture is 2.25 × larger, the same zoom
        width_before = picture["w"]
        await presenter.page.click("#btn-zoom-in")
        await presenter.page.click("#btn-zoom-in")
        await wait_js(expert, f"{VIEW}.zoom === 2.25")
        await expert.page.wait_for_timeout(200)
        width_after = await expert.js(
            "document.querySelector('#case-image').getBoundingClientRect().width")
        assert abs(width_after / width_before - 2.25) < 0.02
        # and drags: the picture pans for everyone (left by 100 px: the centre moves right)
        start = (viewport["x"] + viewport["width"] / 2, viewport["y"] + viewport["height"] / 2)
        await presenter.page.mouse.move(*start)
        await presenter.page.mouse.down()
        await presenter.page.mouse.move(start[0] - 50, start[1], steps=5)
        await presenter.page.mouse.move(start[0] - 100, start[1], steps=5)
        await presenter.page.mouse.up()
        await wait_js(expert, f"{VIEW}.center[0] > 0.55 && Math.abs({VIEW}.center[1] - 0.5)"
                              " < 0.01")
        # the presenter's bar (now with Images) stays on a 390 px screen
        for button in await presenter.page.locator("#controls > .ctrl:visible").all():
            place = await button.bounding_box()
            assert place is not None and place["x"] >= 0 and \
                place["x"] + place["width"] <= PHONE["width"], place
        await screenshot(presenter, "case-image-presenter-phone")
        await screenshot(expert, "case-image-expert-phone")

        # 2. a DICOM: rendered with the file's window, then the presenter's choice
        await presenter.page.click("#btn-images")
        await presenter.page.set_input_files("#image-file", files=[{
            "name": "CT 胸部.dcm", "mimeType": "",  # as browsers give .dcm: no type
            "buffer": dicom(stored=phantom())}])
        await wait_js(expert, f"{SHOWN} && {VIEW}.image.kind === 'dicom' && "
                              f"{SHOWN}.id === {VIEW}.image.id && {SHOWN}.window === '40/400'",
                      timeout=20)
        assert await expert.js(NATURAL) == [512, 512]
        assert (await expert.js(VIEW))["zoom"] == 1  # a new image starts afresh
        await wait_js(presenter, "!document.querySelector('#image-window').hidden")
        assert await expert.js("document.querySelector('#image-window').hidden")
        await presenter.page.select_option("#image-preset", "lung")
        await wait_js(expert, f"{SHOWN}.window === '-600/1500'", timeout=10)
        assert await expert.js(NATURAL) == [512, 512]
        await screenshot(presenter, "case-image-dicom-presenter-phone")
        await screenshot(expert, "case-image-dicom-expert-phone")

        # both images are in the room's list, for everyone
        listing = await expert.js("window.huizhen.images.list.map(i => i.kind)")
        assert sorted(listing) == ["dicom", "png"]
        await presenter.page.click("#btn-images")
        await wait_js(presenter, "document.querySelectorAll('#images-list li').length === 2")
        sheet = await box(presenter, "#images-sheet")
        assert sheet["x"] >= 0 and sheet["x"] + sheet["width"] <= PHONE["width"], sheet
        await screenshot(presenter, "case-image-list-presenter-phone")
        await presenter.page.click("#btn-images-close")

        # the presenter stops showing: the expert's panel goes away
        await presenter.page.click("#btn-image-stop")
        await wait_js(expert, f"{VIEW} === null && "
                              "document.querySelector('#image-panel').hidden")

        for c in (presenter, expert):
            errors = [line for line in c.console
                      if line.startswith("error:") or line.startswith("PAGE ERROR")]
            assert not errors, c.log()
    finally:
        await presenter.close()
        await expert.close()
