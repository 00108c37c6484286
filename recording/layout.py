"""Tile geometry, burned-in names and the YUV canvas of the composite.

Everything here works on yuv420p planes, never on RGB: decoded VP8/H.264 frames are yuv420p
and so is what x264 takes, so a tile is scaled once (swscale, straight into the output
format) and copied into the canvas; an RGB round trip would cost two colour conversions of
every pixel of every output frame, a large share of the 2× real-time budget.

Names are drawn with Pillow (OpenCV's Hershey fonts have no CJK glyphs) with a CJK font that
Debian ships, rendered once per (name, size) and alpha-blended with NumPy on every frame.
Colours are BT.601 limited range, the matrix VP8 and browser H.264 use, so copied pixels keep
their colour; the encoder tags the output the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

Rect = tuple[int, int, int, int]  # x, y, w, h in output pixels

#: CJK-capable fonts by path, in order of preference (Debian packages in brackets): the
#: composite must show Chinese names, so a Latin-only fallback would burn tofu boxes into a
#: medical record; a clear error is better.
FONT_CANDIDATES: tuple[Path, ...] = (
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),  # fonts-wqy-microhei
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),  # fonts-wqy-zenhei
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),  # fonts-noto-cjk
    Path("/usr/share/fonts/truetype/arphic/uming.ttc"),  # fonts-arphic-uming
)

BACKGROUND_RGB = (18, 18, 20)
CARD_RGB = (44, 48, 58)
TEXT_RGB = (255, 255, 255)
LABEL_BOX_ALPHA = 0.62  # the dark box behind a label: readable on a white flash or a slide
STRIP_GAP = 4  # pixels between thumbnails (even: chroma is subsampled 2×2)


class FontNotFoundError(RuntimeError):
    """No CJK font at any known path (the error names the packages that provide one)."""


def find_font(explicit: Path | None = None) -> Path:
    """The font to burn names with: ``explicit`` if given, else the first candidate present."""
    candidates = (explicit,) if explicit is not None else FONT_CANDIDATES
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise FontNotFoundError(
        f"no CJK font found (tried {tried}); install the Debian package fonts-wqy-microhei "
        "(apt-get install fonts-wqy-microhei) or pass font_path to the composite")


def rgb_to_yuv(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """BT.601 limited-range Y, U, V of an RGB colour."""
    r, g, b = rgb
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return round(y), round(u), round(v)


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def fit(src_w: int, src_h: int, rect: Rect) -> Rect:
    """The largest rectangle of the source's aspect ratio centred in ``rect`` (letterbox or
    pillarbox), on even coordinates so the chroma planes line up."""
    x, y, w, h = rect
    if src_w <= 0 or src_h <= 0:
        return rect
    if w * src_h > h * src_w:  # tile wider than the source: bars left and right
        fh = h
        fw = min(w, _even(h * src_w / src_h + 1))
    else:
        fw = w
        fh = min(h, _even(w * src_h / src_w + 1))
    return x + (w - fw) // 4 * 2, y + (h - fh) // 4 * 2, fw, fh


def arrange(width: int, height: int, main: str | None, strip: list[str],
            wide_main: bool = False) -> dict[str, Rect]:
    """Tile rectangles: ``main`` large on the left, ``strip`` as a column of thumbnails.

    For a camera the main area is 4:3 at full height (a 640×480 camera fills it exactly) and
    the strip takes the rest of the width. ``wide_main`` (a shared screen: slides, reports,
    images that must stay legible) narrows the strip to a sixth of the width so a 16:9 screen
    gets as many pixels as the canvas allows. With nothing in the strip the main tile takes
    the whole canvas. Thumbnails keep 4:3 and shrink when many people are in the room.
    """
    if main is None:
        return {}
    if not strip:
        return {main: (0, 0, width, height)}
    strip_min = _even(max(width / 6, 64))
    main_w = width - strip_min if wide_main else min(_even(height * 4 / 3), width - strip_min)
    rects: dict[str, Rect] = {main: (0, 0, main_w, height)}
    strip_w = width - main_w
    n = len(strip)
    tile_w = _even(strip_w - 2 * STRIP_GAP)
    tile_h = min(_even(tile_w * 3 / 4), _even((height - (n + 1) * STRIP_GAP) / n))
    tile_w = min(tile_w, _even(tile_h * 4 / 3))
    total = n * tile_h + (n - 1) * STRIP_GAP
    y = (height - total) // 4 * 2
    x = main_w + (strip_w - tile_w) // 4 * 2
    for key in strip:
        rects[key] = (x, y, tile_w, tile_h)
        y += tile_h + STRIP_GAP
    return rects


@dataclass(frozen=True)
class Overlay:
    """A pre-rendered label: premultiplied luma and alpha (full resolution) and alpha at
    chroma resolution, all float32, ready to blend without further per-frame work."""

    luma: np.ndarray  # premultiplied: alpha × Y
    alpha: np.ndarray
    alpha_c: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.alpha.shape
        return w, h


class Canvas:
    """One output picture as a flat yuv420p buffer with plane views (what from_ndarray takes)."""

    def __init__(self, width: int, height: int) -> None:
        if width % 2 or height % 2:
            raise ValueError("the composite's width and height must be even")
        self.width, self.height = width, height
        n = width * height
        self.buf = np.empty(n * 3 // 2, dtype=np.uint8)
        self.y = self.buf[:n].reshape(height, width)
        self.u = self.buf[n:n + n // 4].reshape(height // 2, width // 2)
        self.v = self.buf[n + n // 4:].reshape(height // 2, width // 2)

    def fill(self, rect: Rect, rgb: tuple[int, int, int]) -> None:
        x, y, w, h = rect
        cy, cu, cv = rgb_to_yuv(rgb)
        self.y[y:y + h, x:x + w] = cy
        self.u[y // 2:(y + h) // 2, x // 2:(x + w) // 2] = cu
        self.v[y // 2:(y + h) // 2, x // 2:(x + w) // 2] = cv

    def clear(self) -> None:
        self.fill((0, 0, self.width, self.height), BACKGROUND_RGB)

    def put(self, rect: Rect, planes: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        """Copy yuv420p planes of exactly rect's size to rect (even x, y)."""
        x, y, w, h = rect
        py, pu, pv = planes
        self.y[y:y + h, x:x + w] = py
        self.u[y // 2:(y + h) // 2, x // 2:(x + w) // 2] = pu
        self.v[y // 2:(y + h) // 2, x // 2:(x + w) // 2] = pv

    def blend(self, x: int, y: int, overlay: Overlay) -> None:
        """Alpha-blend a label with its top-left corner at (x, y), both even."""
        w, h = overlay.size
        region = self.y[y:y + h, x:x + w]
        region[:] = region * (1.0 - overlay.alpha) + overlay.luma
        inv_c = 1.0 - overlay.alpha_c
        neutral = 128.0 * overlay.alpha_c  # labels are grey on grey: chroma goes to neutral
        for plane in (self.u, self.v):
            part = plane[y // 2:(y + h) // 2, x // 2:(x + w) // 2]
            part[:] = part * inv_c + neutral

    def frame(self) -> av.VideoFrame:
        """The canvas as a new VideoFrame (a copy: the canvas is reused for the next one)."""
        return av.VideoFrame.from_ndarray(
            self.buf.reshape(self.height * 3 // 2, self.width), format="yuv420p")


def frame_planes(frame: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of a yuv420p frame's planes, cropped to the picture (rows carry padding)."""
    out = []
    for i, plane in enumerate(frame.planes):
        w = frame.width if i == 0 else frame.width // 2
        h = frame.height if i == 0 else frame.height // 2
        arr = np.frombuffer(plane, dtype=np.uint8).reshape(-1, plane.line_size)
        out.append(arr[:h, :w])
    return out[0], out[1], out[2]


class Painter:
    """Renders names with a CJK font, once per (text, size), cached for the whole composite."""

    def __init__(self, font_path: Path) -> None:
        self.font_path = font_path
        self._fonts: dict[int, ImageFont.FreeTypeFont] = {}
        self._labels: dict[tuple[str, int, int], Overlay] = {}
        self._cards: dict[tuple[str, int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def font(self, size: int) -> ImageFont.FreeTypeFont:
        if size not in self._fonts:
            self._fonts[size] = ImageFont.truetype(str(self.font_path), size)
        return self._fonts[size]

    def _fit_text(self, text: str, font: ImageFont.FreeTypeFont, max_w: int) -> str:
        """``text``, shortened with an ellipsis if it is wider than max_w pixels."""
        if font.getlength(text) <= max_w:
            return text
        while text and font.getlength(text + "…") > max_w:
            text = text[:-1]
        return text + "…"

    def text_mask(self, text: str, size: int, max_w: int) -> np.ndarray:
        """Coverage (0..1, float32) of ``text`` drawn in white: one line, ascender to descender."""
        font = self.font(size)
        text = self._fit_text(text, font, max_w)
        ascent, descent = font.getmetrics()
        w = max(2, int(np.ceil(font.getlength(text))))
        img = Image.new("L", (w, ascent + descent))
        ImageDraw.Draw(img).text((0, 0), text, font=font, fill=255)
        return np.asarray(img, dtype=np.float32) / 255.0

    def label(self, text: str, tile_w: int, tile_h: int) -> Overlay:
        """The name label for a tile of this size (font size follows the tile height)."""
        key = (text, tile_w, tile_h)
        if key not in self._labels:
            size = int(np.clip(round(tile_h * 0.045), 14, 30))
            pad_x, pad_y = size // 2, size // 5
            mask = self.text_mask(text, size, max(8, tile_w - 16 - 2 * pad_x))
            mh, mw = mask.shape
            h, w = _even(mh + 2 * pad_y + 1), _even(mw + 2 * pad_x + 1)
            text_a = np.zeros((h, w), dtype=np.float32)
            text_a[pad_y:pad_y + mh, pad_x:pad_x + mw] = mask
            y_text, y_box = rgb_to_yuv(TEXT_RGB)[0], rgb_to_yuv((0, 0, 0))[0]
            # white text over a translucent black box, as one premultiplied layer
            alpha = text_a + LABEL_BOX_ALPHA * (1.0 - text_a)
            luma = text_a * y_text + LABEL_BOX_ALPHA * (1.0 - text_a) * y_box
            alpha_c = alpha.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
            self._labels[key] = Overlay(luma=luma, alpha=alpha, alpha_c=alpha_c)
        return self._labels[key]

    def card(self, text: str, w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A w×h name card: the name centred on a dark tile (camera off, or audio only)."""
        key = (text, w, h)
        if key not in self._cards:
            cy, cu, cv = rgb_to_yuv(CARD_RGB)
            y = np.full((h, w), cy, dtype=np.float32)
            size = int(np.clip(round(h * 0.09), 14, 64))
            mask = self.text_mask(text, size, max(8, w - 2 * size))
            mh, mw = mask.shape
            top, left = max(0, (h - mh) // 2), max(0, (w - mw) // 2)
            mh, mw = min(mh, h - top), min(mw, w - left)
            y_text = rgb_to_yuv(TEXT_RGB)[0]
            region = y[top:top + mh, left:left + mw]
            region[:] = region * (1 - mask[:mh, :mw]) + y_text * mask[:mh, :mw]
            u = np.full((h // 2, w // 2), cu, dtype=np.uint8)
            v = np.full((h // 2, w // 2), cv, dtype=np.uint8)
            self._cards[key] = (np.round(y).astype(np.uint8), u, v)
        return self._cards[key]

    def draw_label(self, canvas: Canvas, rect: Rect, text: str) -> None:
        """Burn ``text`` into the bottom-left corner of a tile."""
        x, y, w, h = rect
        overlay = self.label(text, w, h)
        lw, lh = overlay.size
        margin = 8 if h >= 160 else 4
        if lw > w - margin or lh > h - margin:
            return  # a tile too small for any label: nothing rather than a cut-off one
        canvas.blend(x + margin, y + h - lh - margin, overlay)
