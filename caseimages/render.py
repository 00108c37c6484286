"""Check an uploaded case image by decoding it, and render DICOM to an 8-bit PNG.

Nothing is trusted from the request: a PNG or JPEG is opened *and fully decoded* by Pillow
(a PNG header followed by garbage fails here), its size checked against the pixel limit before
decoding (a decompression bomb never expands). A DICOM file is parsed by pydicom; its pixel
data go through the Modality LUT (RescaleSlope/RescaleIntercept, or a Modality LUT Sequence)
into modality units (e.g. Hounsfield units), then the VOI window (WindowCenter/WindowWidth from
the file, or one the presenter chooses) maps them linearly to 0–255 (DICOM PS3.3 C.11.2.1.2.1);
MONOCHROME1 is inverted. The result is a PNG of the native Rows × Columns.

All functions here block (CPU): call them in a thread.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

#: the content types accepted, and the kind each is stored as
CONTENT_TYPES = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg",
                 "application/dicom": "dicom"}
PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG"}
MIN_WIDTH = 1.0
MAX_WINDOW = 1e7


class ImageRejected(ValueError):
    """The upload is not an image we accept; ``status`` is the HTTP status, ``code`` the API
    error code, the message says what is wrong and what to send instead."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Inspected:
    kind: str  # png | jpeg | dicom
    width: int
    height: int
    #: DICOM: the file's window (centre, width), or one covering its whole range
    window: tuple[float, float] | None = None
    frames: int = 1


def kind_of(content_type: str) -> str:
    base = content_type.split(";", 1)[0].strip().lower()
    kind = CONTENT_TYPES.get(base)
    if kind is None:
        raise ImageRejected(415, "unsupported_type",
                            f"content type {base or '(none)'!r} is not accepted: send "
                            "image/png, image/jpeg or application/dicom")
    return kind


def inspect(data: bytes, content_type: str, max_pixels: int) -> Inspected:
    """Decode the upload completely; ImageRejected when it is not what it says it is."""
    kind = kind_of(content_type)
    if not data:
        raise ImageRejected(400, "empty", "the request body is empty: send the image file")
    if kind == "dicom":
        ds = read_dicom(data)
        frame = modality_pixels(ds, max_pixels)
        return Inspected("dicom", frame.shape[1], frame.shape[0], default_window(ds, frame),
                         int(getattr(ds, "NumberOfFrames", 1) or 1))
    return _inspect_picture(data, kind, max_pixels)


def _inspect_picture(data: bytes, kind: str, max_pixels: int) -> Inspected:
    expected = PIL_FORMATS[kind]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if img.format != expected:
                    raise ImageRejected(400, "type_mismatch",
                                        f"the body is {img.format or 'not an image'}, not "
                                        f"{expected} as its content type says")
                width, height = img.size
                check_pixels(width, height, max_pixels)
                img.load()  # every byte decoded: truncated or corrupt data fails here
    except ImageRejected:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise ImageRejected(400, "bad_image", f"the {expected} file cannot be decoded "
                            f"({exc}); send the original image file") from exc
    return Inspected(kind, width, height)


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageRejected(400, "bad_image", "the image has no pixels")
    if width * height > max_pixels:
        raise ImageRejected(400, "too_many_pixels",
                            f"the image is {width} × {height} pixels, more than the "
                            f"{max_pixels} allowed (images.max_pixels)")


def read_dicom(data: bytes) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except InvalidDicomError as exc:
        raise ImageRejected(400, "bad_dicom", "the body is not a DICOM Part 10 file "
                            "(no 'DICM' preamble)") from exc
    except Exception as exc:  # pydicom raises many kinds on damaged files
        raise ImageRejected(400, "bad_dicom", f"the DICOM file cannot be read ({exc})") \
            from exc
    if "PixelData" not in ds:
        raise ImageRejected(400, "no_pixel_data", "the DICOM file has no pixel data "
                            "(PixelData): send an image object, not a report or structure")
    return ds


def modality_pixels(ds: Any, max_pixels: int) -> np.ndarray:
    """The first frame in modality units (float64; RGB stays H×W×3 uint8)."""
    from pydicom.pixels import apply_modality_lut

    rows, columns = int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0)
    check_pixels(columns, rows, max_pixels)
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        raise ImageRejected(400, "bad_dicom", f"the DICOM pixel data cannot be decoded "
                            f"(transfer syntax {syntax or 'unknown'}: {exc}); send it "
                            "uncompressed (Explicit VR Little Endian)") from exc
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        pixels = pixels[0]
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if photometric.startswith("MONOCHROME"):
        if pixels.ndim != 2:
            raise ImageRejected(400, "bad_dicom", "a monochrome DICOM image must have one "
                                "sample per pixel")
        return np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
    if photometric == "RGB" and pixels.ndim == 3 and pixels.dtype == np.uint8:
        return np.asarray(pixels)
    raise ImageRejected(400, "bad_dicom", f"DICOM {photometric} images are not supported: "
                        "send MONOCHROME1, MONOCHROME2 or 8-bit RGB")


def _first(value: Any) -> float | None:
    """A DS value, or the first of several (WindowCenter may be multi-valued)."""
    if value is None:
        return None
    if not isinstance(value, (str, bytes, int, float)):
        try:
            value = value[0]
        except (TypeError, IndexError):
            return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def default_window(ds: Any, frame: np.ndarray) -> tuple[float, float] | None:
    """(centre, width) from the file, else one spanning the frame's values; None for RGB."""
    if frame.ndim == 3:
        return None
    centre, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if centre is not None and width is not None and width >= MIN_WIDTH:
        return centre, width
    low, high = float(frame.min()), float(frame.max())
    return (low + high) / 2, max(MIN_WIDTH, high - low + 1)


def check_window(centre: float, width: float) -> tuple[float, float]:
    if not (math.isfinite(centre) and math.isfinite(width)) or abs(centre) > MAX_WINDOW \
            or not MIN_WIDTH <= width <= MAX_WINDOW:
        raise ImageRejected(400, "bad_window", f"window width must be {MIN_WIDTH:g}-"
                            f"{MAX_WINDOW:g} and the centre within ±{MAX_WINDOW:g}")
    return centre, width


def apply_window(values: np.ndarray, centre: float, width: float) -> np.ndarray:
    """DICOM linear VOI function to 0–255 (uint8)."""
    low = centre - 0.5 - (width - 1) / 2
    high = centre - 0.5 + (width - 1) / 2
    if width <= 1:
        out = np.where(values > centre - 0.5, 255.0, 0.0)
    else:
        out = ((values - (centre - 0.5)) / (width - 1) + 0.5) * 255.0
    out = np.where(values <= low, 0.0, np.where(values > high, 255.0, out))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def render_dicom(data: bytes, window: tuple[float, float] | None, max_pixels: int) -> bytes:
    """The DICOM file's first frame as a PNG of its native size, with ``window`` (centre,
    width) or the file's own."""
    ds = read_dicom(data)
    frame = modality_pixels(ds, max_pixels)
    if frame.ndim == 3:
        img = Image.fromarray(frame, "RGB")
    else:
        centre, width = window or default_window(ds, frame) or (0.0, 1.0)
        gray = apply_window(frame, centre, width)
        if str(getattr(ds, "PhotometricInterpretation", "")) == "MONOCHROME1":
            gray = 255 - gray
        img = Image.fromarray(gray, "L")
    out = io.BytesIO()
    img.save(out, "PNG", compress_level=3)
    return out.getvalue()
