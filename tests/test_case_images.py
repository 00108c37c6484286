"""MDT case images (caseimages/, signaling/images_api.py; docs/api.md "Case images",
docs/protocol.md "Case images"): uploads are decoded before they are kept and served at full
resolution (DICOM rendered with its window/level), bad input is refused and stores nothing,
and the presenter's view (image, pointer, zoom, window) reaches everyone, late joiners too.
"""

from __future__ import annotations

import asyncio
import base64
import io
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from recording.crypto import is_encrypted
from sdk.participant import Participant, RequestFailed
from signaling.keys import AUDIT, IMAGES
from tests.harness import Server, running_server, wait_for
from tests.s3 import S3Server

# ---- test images, made here ------------------------------------------------------------------


def picture(width: int, height: int, fmt: str) -> tuple[bytes, np.ndarray]:
    if fmt == "PNG":  # noise: any change to a pixel shows
        pixels = np.random.default_rng(7).integers(0, 256, size=(height, width, 3),
                                                   dtype=np.uint8)
    else:  # smooth, so that JPEG's loss stays small
        y, x = np.mgrid[0:height, 0:width]
        pixels = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)],
                          axis=-1).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue(), pixels


#: a CT-like gradient: stored value 10·x in column x; HU = 2·stored − 1000 = 20·x − 1000
DICOM_W, DICOM_H = 256, 48
CENTRE_COLUMN = 52  # 20·52 − 1000 = 40 HU: the file's window centre


def dicom(pixel_data: bool = True, window: tuple[int, int] | None = (40, 400),
          stored: np.ndarray | None = None) -> bytes:
    """16-bit MONOCHROME2 CT; ``stored`` (uint16, rows × columns): the stored values, else
    the gradient above."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    if stored is None:
        stored = np.tile(np.arange(DICOM_W, dtype=np.uint16) * 10, (DICOM_H, 1))
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1000
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if pixel_data:
        ds.PixelData = stored.astype("<u2").tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


# ---- HTTP helpers ---------------------------------------------------------------------------


async def post_image(server: Server, room: str, body: bytes, content_type: str,
                     token: str | None = None, label: str | None = None
                     ) -> tuple[int, dict[str, Any]]:
    """As the hospital system (token None) or as a participant."""
    path = f"/api/rooms/{room}/images" if token is None else f"/rooms/{room}/images"
    headers = server.api_headers() if token is None else {"Authorization": f"Bearer {token}"}
    headers["Content-Type"] = content_type
    if label:
        headers["X-Label"] = quote(label)
    async with aiohttp.ClientSession() as http, http.post(
            server.url + path, data=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def get_image(server: Server, room: str, image_id: str, token: str | None = None,
                    **query: float) -> tuple[int, str, bytes]:
    path = f"/api/rooms/{room}/images/{image_id}" if token is None \
        else f"/rooms/{room}/images/{image_id}"
    headers = server.api_headers() if token is None else {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http, http.get(
            server.url + path, headers=headers, params={k: str(v) for k, v in query.items()}
    ) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


def decoded(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def stored_files(server: Server) -> list[Path]:
    folder = server.settings.recordings_folder / "case-images"
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


async def audit_actions(server: Server) -> list[tuple[str, str, str | None]]:
    assert server.app is not None
    entries = await server.app[AUDIT].entries()
    return [(e.action, e.outcome, e.entity_id) for e in entries
            if e.action.startswith("case_image")]


# ---- uploads and serving ------------------------------------------------------------------------


async def test_png_and_jpeg_served_at_full_resolution(server: Server) -> None:
    room = await server.create_room("mdt", "MDT: lung")
    png, png_pixels = picture(1536, 1024, "PNG")
    jpeg, jpeg_pixels = picture(800, 600, "JPEG")

    status, first = await post_image(server, room, png, "image/png", label="胸部CT 定位片")
    assert status == 201, first
    assert (first["kind"], first["width"], first["height"], first["content_type"]) == \
        ("png", 1536, 1024, "image/png")
    assert first["label"] == "胸部CT 定位片" and first["size"] == len(png)
    status, second = await post_image(server, room, jpeg, "image/jpeg")
    assert status == 201, second
    assert (second["kind"], second["width"], second["height"]) == ("jpeg", 800, 600)

    status, ctype, body = await get_image(server, room, first["id"])
    assert status == 200 and ctype == "image/png"
    served = decoded(body)
    assert served.size == (1536, 1024)
    assert np.array_equal(np.asarray(served.convert("RGB")), png_pixels)  # PNG: exact
    status, ctype, body = await get_image(server, room, second["id"])
    assert status == 200 and ctype == "image/jpeg"
    assert body == jpeg  # the original file, not re-encoded
    served = decoded(body)
    assert served.size == (800, 600)
    error = np.abs(np.asarray(served.convert("RGB"), dtype=int) - jpeg_pixels.astype(int))
    assert error.mean() < 3  # JPEG: lossy, but the same picture

    status, listing = await server.api("GET", f"/api/rooms/{room}/images")
    assert status == 200 and [i["id"] for i in listing["images"]] == [first["id"], second["id"]]
    assert len(stored_files(server)) == 2
    actions = await audit_actions(server)
    assert ("case_image.upload", "done", first["id"]) in actions
    assert ("case_image.read", "allowed", second["id"]) in actions


async def test_dicom_rendered_with_its_window_and_another(server: Server) -> None:
    room = await server.create_room("mdt", "MDT: liver")
    status, image = await post_image(server, room, dicom(), "application/dicom")
    assert status == 201, image
    assert (image["kind"], image["width"], image["height"], image["content_type"]) == \
        ("dicom", DICOM_W, DICOM_H, "image/png")
    assert image["window"] == {"center": 40.0, "width": 400.0}

    status, ctype, body = await get_image(server, room, image["id"])
    assert status == 200 and ctype == "image/png"
    img = decoded(body)
    assert img.size == (DICOM_W, DICOM_H) and img.mode == "L"
    row = np.asarray(img)[DICOM_H // 2]
    assert (np.asarray(img) == row).all()  # every row the same gradient
    # window 40/400: [-160, 240] HU → below is black, above is white, the centre mid-grey
    assert row[0] == 0 and row[30] == 0  # -1000 HU, -400 HU
    assert row[70] == 255 and row[255] == 255  # 400 HU, 4100 HU
    assert abs(int(row[CENTRE_COLUMN]) - 128) <= 1  # 40 HU
    assert row[45] < row[CENTRE_COLUMN] < row[60]

    # re-windowed (bone-like 1000/2000): 40 HU is now nearly black, 1000 HU mid-grey
    status, _, body = await get_image(server, room, image["id"], wc=1000, ww=2000)
    assert status == 200
    row = np.asarray(decoded(body))[0]
    assert abs(int(row[CENTRE_COLUMN]) - 5) <= 1
    assert abs(int(row[100]) - 128) <= 1  # 20·100 − 1000 = 1000 HU
    assert row[0] == 0 and row[255] == 255

    # without a window in the file, the full range is used
    status, plain = await post_image(server, room, dicom(window=None), "application/dicom")
    assert status == 201 and plain["window"] == {"center": 1550.0, "width": 5101.0}
    status, ctype, body = await get_image(server, room, plain["id"])
    row = np.asarray(decoded(body))[0]
    assert row[0] == 0 and row[255] == 255 and list(row) == sorted(row)

    for bad in ({"wc": 40}, {"wc": 40, "ww": 0}):
        status, _, body = await get_image(server, room, image["id"], **bad)
        assert status == 400 and b"bad_window" in body


async def test_bad_input_is_refused_and_stores_nothing(tmp_path: Path) -> None:
    async with running_server(tmp_path, images={"max_upload_mb": 1}) as server:
        room = await server.create_room("mdt", "MDT")
        other_room = await server.create_room("mdt", "another MDT")
        png, _ = picture(64, 64, "PNG")
        garbage_png = png[:40] + bytes(range(256)) * 8
        cases: list[tuple[str, bytes, str, int, str]] = [
            ("a PNG header with garbage", garbage_png, "image/png", 400, "bad_image"),
            ("a JPEG that says PNG", picture(32, 32, "JPEG")[0], "image/png", 400,
             "type_mismatch"),
            ("an oversize file", png + b"\0" * (1024 * 1024), "image/png", 413, "too_large"),
            ("DICOM without pixel data", dicom(pixel_data=False), "application/dicom", 400,
             "no_pixel_data"),
            ("not DICOM at all", png, "application/dicom", 400, "bad_dicom"),
            ("a wrong content type", png, "text/plain", 415, "unsupported_type"),
            ("no body", b"", "image/png", 400, "empty"),
        ]
        for what, body, ctype, want_status, want_code in cases:
            status, reply = await post_image(server, room, body, ctype)
            assert (status, reply["error"]["code"]) == (want_status, want_code), (what, reply)
            assert reply["error"]["message"], what

        viewer = await server.participant(room, "obs-1", "viewer")
        presenter = await server.participant(room, "dr-ma", "presenter")
        stranger = await server.participant(other_room, "dr-xu", "presenter")
        try:
            status, reply = await post_image(server, room, png, "image/png", viewer.token)
            assert status == 403 and reply["error"]["code"] == "not_permitted", reply
            status, reply = await post_image(server, room, png, "image/png", stranger.token)
            assert status == 403 and reply["error"]["code"] == "token_wrong_room", reply
            absent = await server.token(room, "dr-gone", "presenter")
            status, reply = await post_image(server, room, png, "image/png", absent)
            assert status == 403 and reply["error"]["code"] == "not_in_room", reply
            status, reply = await post_image(server, room, png, "image/png", "not-a-jwt")
            assert status == 401, reply
            status, reply = await post_image(server, room, garbage_png, "image/png",
                                             presenter.token)
            assert status == 400 and reply["error"]["code"] == "bad_image", reply

            assert stored_files(server) == []
            status, listing = await server.api("GET", f"/api/rooms/{room}/images")
            assert status == 200 and listing["images"] == []

            # and the same participant uploads a good one; another room's token cannot read it
            status, image = await post_image(server, room, png, "image/png", presenter.token)
            assert status == 201, image
            status, _, body = await get_image(server, room, image["id"], stranger.token)
            assert status == 403 and b"token_wrong_room" in body
            status, _, body = await get_image(server, other_room, image["id"])
            assert status == 404 and b"image_not_found" in body
            status, _, body = await get_image(server, room, image["id"], viewer.token)
            assert status == 200 and decoded(body).size == (64, 64)  # every participant sees it
            status, _, body = await get_image(server, room, image["id"], wc=1, ww=2)
            assert status == 400 and b"bad_window" in body  # window/level: DICOM only
            assert len(stored_files(server)) == 1
            actions = await audit_actions(server)
            assert ("case_image.upload", "denied", None) in actions
        finally:
            for p in (viewer, presenter, stranger):
                await p.close()


# ---- the shared view over the WebSocket -----------------------------------------------------


def views(p: Participant) -> list[dict[str, Any]]:
    return [e for e in p.events if e.get("type") == "image_view"]


async def test_presenter_drives_the_view_for_everyone(server: Server) -> None:
    room = await server.create_room("mdt", "MDT: case 3")
    presenter = await server.participant(room, "dr-ma", "presenter")
    expert = await server.participant(room, "dr-lin", "specialist")
    viewer = await server.participant(room, "obs-1", "viewer")
    late: Participant | None = None
    assert server.app is not None
    try:
        assert presenter.joined["room"]["image_view"] is None
        status, image = await post_image(server, room, dicom(), "application/dicom",
                                         presenter.token, label="CT 动脉期")
        assert status == 201, image
        assert await wait_for(lambda: _has(expert, "image_added"))

        await presenter.send({"type": "show_image", "image_id": image["id"]})
        assert await wait_for(lambda: _async(bool(views(expert))))
        first = views(expert)[-1]["view"]
        assert first["image"]["id"] == image["id"] and first["image"]["width"] == DICOM_W
        assert first["zoom"] == 1 and first["center"] == [0.5, 0.5] and first["pointer"] is None
        assert first["window"] == {"center": 40.0, "width": 400.0}
        assert first["by"] == presenter.id

        # a burst of pointer moves: merged, the room gets far fewer updates, the last one wins
        before = len(views(expert))
        started = time.monotonic()
        for i in range(60):
            await presenter.send({"type": "image_view", "image_id": image["id"],
                                  "pointer": [i / 100, 0.25]})
        await presenter.send({"type": "image_view", "image_id": image["id"], "zoom": 3,
                              "center": [0.3, 0.6], "window": {"center": 1000, "width": 2000}})
        assert await wait_for(lambda: _async(
            views(expert)[-1]["view"]["zoom"] == 3))
        elapsed = time.monotonic() - started
        await asyncio.sleep(0.3)
        got = views(expert)[before:]
        # not one per message (61): at most one per images.view_interval_ms (50 ms)
        assert 1 <= len(got) <= elapsed / 0.05 + 2 and len(got) < 61, (len(got), elapsed)
        seqs = [m["seq"] for m in got]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        last = got[-1]["view"]
        assert last["pointer"] == [0.59, 0.25] and last["center"] == [0.3, 0.6]
        assert last["window"] == {"center": 1000.0, "width": 2000.0}
        assert views(viewer)[-1] == views(expert)[-1]

        # the window the presenter chose is what everyone fetches
        win = last["window"]
        status, _, body = await get_image(server, room, image["id"], expert.token,
                                          wc=win["center"], ww=win["width"])
        assert status == 200
        assert abs(int(np.asarray(decoded(body))[0][100]) - 128) <= 1

        # a late joiner finds the same view in `joined`
        late = await server.participant(room, "dr-zhou", "doctor")
        joined_view = late.joined["room"]["image_view"]
        assert joined_view["image"]["id"] == image["id"]
        assert (joined_view["zoom"], joined_view["pointer"]) == (3, [0.59, 0.25])
        assert joined_view["seq"] == got[-1]["seq"]

        # who may not show material cannot drive it; nor point at an image not shown
        with pytest.raises(RequestFailed) as refused:
            await viewer.request({"type": "image_view", "image_id": image["id"],
                                  "pointer": [0.1, 0.1]})
        assert refused.value.code == "not_permitted"
        with pytest.raises(RequestFailed) as refused:
            await viewer.request({"type": "show_image", "image_id": None})
        assert refused.value.code == "not_permitted"
        with pytest.raises(RequestFailed) as refused:
            await presenter.request({"type": "image_view", "image_id": "img_nope",
                                     "zoom": 2})
        assert refused.value.code == "image_not_shown"
        with pytest.raises(RequestFailed) as refused:
            await presenter.request({"type": "show_image", "image_id": "img_nope"})
        assert refused.value.code == "image_not_found"
        with pytest.raises(RequestFailed) as refused:
            await presenter.request({"type": "image_view", "image_id": image["id"],
                                     "zoom": 40})
        assert refused.value.code == "bad_message"
        assert views(expert)[-1]["view"]["zoom"] == 3  # nothing changed

        # a new patient under discussion takes the previous case's image down
        assert image["patient_ref"] is None  # no patient under discussion then
        status, events = await server.api("GET", f"/api/rooms/{room}/events")
        logged = [(e["type"], e["data"].get("image_id")) for e in events["events"]
                  if e["type"].startswith("case_image")]
        assert logged == [("case_image_added", image["id"]), ("case_image_shown", image["id"])]
        status, subject = await server.api("POST", f"/api/rooms/{room}/subject",
                                           {"patient_ref": "Patient/p2", "label": "病例4"})
        assert status == 200
        assert await wait_for(lambda: _async(views(late)[-1]["view"] is None
                                             if views(late) else False))
        # an image uploaded now is that patient's, in that segment of the session
        status, second = await post_image(server, room, picture(20, 20, "PNG")[0],
                                          "image/png", late.token)
        assert status == 201, second
        assert second["patient_ref"] == "Patient/p2"
        assert second["segment_id"] == subject["subject"]["segment_id"]
        entries = await server.app[AUDIT].entries(patient_ref="Patient/p2")
        assert any(e.action == "case_image.upload" and e.entity_id == second["id"]
                   and e.encounter_id == second["segment_id"] for e in entries)
    finally:
        for p in (presenter, expert, viewer, late):
            if p is not None:
                await p.close()


async def test_lobby_patient_sees_the_view_only_once_admitted(server: Server) -> None:
    room = await server.create_room("mdt", "MDT with the patient")
    host = await server.participant(room, "dr-chair", "host")
    patient = await server.participant(room, "pat-1", "patient")
    try:
        png, _ = picture(40, 30, "PNG")
        status, image = await post_image(server, room, png, "image/png", host.token)
        assert status == 201, image
        await host.send({"type": "show_image", "image_id": image["id"]})
        assert patient.joined["room"]["image_view"] is None  # waiting in the lobby
        status, _, _ = await get_image(server, room, image["id"], patient.token)
        assert status == 403
        await asyncio.sleep(0.3)
        assert views(patient) == [] and not await _has(patient, "image_added")
        await host.send({"type": "admit", "participant_id": patient.id})
        assert await wait_for(lambda: _async(bool(views(patient))))
        assert views(patient)[-1]["view"]["image"]["id"] == image["id"]
        status, _, body = await get_image(server, room, image["id"], patient.token)
        assert status == 200 and decoded(body).size == (40, 30)

        # window/level is for DICOM: refused, and the rest of that message is not applied
        with pytest.raises(RequestFailed) as refused:
            await host.request({"type": "image_view", "image_id": image["id"], "zoom": 2,
                                "window": {"center": 40, "width": 400}})
        assert refused.value.code == "bad_message"
        await asyncio.sleep(0.2)
        assert views(patient)[-1]["view"]["zoom"] == 1
        assert server.app is not None
        assert server.app[IMAGES].view_state(room)["zoom"] == 1
    finally:
        await host.close()
        await patient.close()


async def _async(value: bool) -> bool:
    return value


async def _has(p: Participant, kind: str) -> bool:
    return any(e.get("type") == kind for e in p.events)


async def test_stored_sealed_in_the_s3_bucket(tmp_path: Path, s3_server: S3Server) -> None:
    """With the recordings' S3 storage and encryption at rest, the images go to the bucket,
    unreadable without the key, and come back exactly."""
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    prefix = f"t-{secrets.token_hex(4)}"
    recording = {
        "storage": {"backend": "s3", "s3": {
            "endpoint_url": s3_server.endpoint_url, "bucket": s3_server.bucket,
            "prefix": prefix, "access_key_id": s3_server.access_key_id,
            "secret_access_key": s3_server.secret_access_key, "region": s3_server.region}},
        "encryption": {"keys": {"k1": key}, "active_key": "k1"},
    }
    async with running_server(tmp_path, recording=recording) as server:
        room = await server.create_room("mdt", "MDT on S3")
        png, pixels = picture(300, 200, "PNG")
        status, first = await post_image(server, room, png, "image/png")
        assert status == 201, first
        status, second = await post_image(server, room, dicom(), "application/dicom")
        assert status == 201, second

        listed = s3_server.client().list_objects_v2(Bucket=s3_server.bucket,
                                                    Prefix=f"{prefix}/case-images/{room}/")
        names = sorted(o["Key"].rsplit("/", 1)[1] for o in listed["Contents"])
        assert names == sorted([f"{first['id']}.png", f"{second['id']}.dcm"])
        sealed = s3_server.client().get_object(
            Bucket=s3_server.bucket,
            Key=f"{prefix}/case-images/{room}/{first['id']}.png")["Body"].read()
        assert is_encrypted(sealed[:64]) and png not in sealed and b"\x89PNG" not in sealed
        assert not stored_files(server)  # nothing left in the local folder

        status, _, body = await get_image(server, room, first["id"])
        assert status == 200 and body == png
        assert np.array_equal(np.asarray(decoded(body).convert("RGB")), pixels)
        status, _, body = await get_image(server, room, second["id"])
        assert status == 200 and decoded(body).size == (DICOM_W, DICOM_H)
        assert abs(int(np.asarray(decoded(body))[0][CENTRE_COLUMN]) - 128) <= 1
