"""recording/manifest.py: the per-recording manifest and `recording verify`, on a local folder
and on S3 — a flipped byte, a missing file, a changed size and an unlisted file are named."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from recording.crypto import DecryptingFile, KeyRing, encrypt_file
from recording.manifest import (
    FileEntry,
    Manifest,
    ManifestError,
    Problem,
    composite_key,
    list_recordings,
    manifest_key,
    track_key,
    verify,
    verify_recording,
)
from recording.storage import Storage, hash_file
from recording.upload import upload

RID = "rec-20250301-0800-abc"
RING = KeyRing({"2025-01": b"\x05" * 32}, "2025-01")
STARTED = datetime(2025, 3, 1, 8, 0, tzinfo=timezone(timedelta(hours=8)))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def store_recording(storage: Storage, tmp_path: Path) -> Manifest:
    """What the recorder does at the end: upload each file, then the manifest describing them
    (one track encrypted, one not, and the composite)."""
    work = tmp_path / "work"
    work.mkdir()
    manifest = Manifest(recording_id=RID, room_id="room-1", created_at=STARTED)
    files = {"tracks/dr-li-camera.webm": b"camera " * 5000,
             "tracks/patient-mic.ogg": b"audio " * 3000,
             "composite.mp4": b"composite " * 8000}
    for name, data in files.items():
        local = work / name.replace("/", "_")
        local.write_bytes(data)
        key_id = None
        if name.endswith(".ogg"):
            sealed = work / (local.name + ".enc")
            key_id = encrypt_file(local, sealed, RING)
            local.unlink()
            local = sealed
        size, digest = hash_file(local)
        await upload(storage, local, f"{RID}/{name}", backoff_s=0)
        manifest.put(FileEntry(name=name, size=size, sha256=digest, plain_size=len(data),
                               plain_sha256=sha(data), key_id=key_id,
                               meta={"participant": "dr-li", "kind": "video"}))
    manifest.status, manifest.finished_at = "finished", STARTED + timedelta(minutes=20)
    path = work / "manifest.json"
    manifest.write(path)
    await upload(storage, path, manifest_key(RID), backoff_s=0)
    return manifest


async def replace(storage: Storage, tmp_path: Path, key: str, data: bytes) -> None:
    """Change a stored object behind the manifest's back (a disk error, an edit)."""
    path = tmp_path / "tamper"
    path.write_bytes(data)
    await storage.put_file(path, key)


async def stored_bytes(storage: Storage, key: str) -> bytes:
    stat = await storage.stat(key)
    assert stat is not None
    return await storage.read_range(key, 0, stat.size)


# ---- verify on both backends ---------------------------------------------------------------------

async def test_an_intact_recording_verifies(storage: Storage, tmp_path: Path) -> None:
    manifest = await store_recording(storage, tmp_path)
    assert await verify_recording(storage, RID) == []
    assert await verify(storage, RID + "/", manifest) == []
    assert await list_recordings(storage) == [RID]


async def test_verify_catches_a_flipped_byte(storage: Storage, tmp_path: Path) -> None:
    manifest = await store_recording(storage, tmp_path)
    key = f"{RID}/tracks/dr-li-camera.webm"
    data = bytearray(await stored_bytes(storage, key))
    data[12_345] ^= 0x04
    await replace(storage, tmp_path, key, bytes(data))
    problems = await verify_recording(storage, RID)
    entry = manifest.entry("tracks/dr-li-camera.webm")
    assert entry is not None
    assert problems == [Problem("hash_changed", "tracks/dr-li-camera.webm", entry.sha256,
                                sha(bytes(data)))]
    assert "tracks/dr-li-camera.webm has SHA-256" in str(problems[0])


async def test_verify_catches_a_flipped_byte_in_an_encrypted_file(storage: Storage,
                                                                  tmp_path: Path) -> None:
    await store_recording(storage, tmp_path)
    key = f"{RID}/tracks/patient-mic.ogg"
    data = bytearray(await stored_bytes(storage, key))
    data[-3] ^= 0x01
    await replace(storage, tmp_path, key, bytes(data))
    assert [(p.kind, p.name) for p in await verify_recording(storage, RID)] == \
        [("hash_changed", "tracks/patient-mic.ogg")]


async def test_verify_catches_a_missing_file(storage: Storage, tmp_path: Path) -> None:
    await store_recording(storage, tmp_path)
    await storage.delete(composite_key(RID))
    problems = await verify_recording(storage, RID)
    assert problems == [Problem("missing", "composite.mp4")]
    assert str(problems[0]) == "composite.mp4 is missing"


async def test_verify_catches_a_changed_size(storage: Storage, tmp_path: Path) -> None:
    manifest = await store_recording(storage, tmp_path)
    key = f"{RID}/tracks/dr-li-camera.webm"
    await replace(storage, tmp_path, key, (await stored_bytes(storage, key))[:-100])
    entry = manifest.entry("tracks/dr-li-camera.webm")
    assert entry is not None
    assert await verify_recording(storage, RID) == [
        Problem("size_changed", "tracks/dr-li-camera.webm", str(entry.size),
                str(entry.size - 100))]


async def test_verify_lists_unexpected_files(storage: Storage, tmp_path: Path) -> None:
    await store_recording(storage, tmp_path)
    await replace(storage, tmp_path, f"{RID}/tracks/smuggled.webm", b"x")
    await replace(storage, tmp_path, "rec-other/tracks/a.webm", b"other recording")
    assert await verify_recording(storage, RID) == [Problem("extra", "tracks/smuggled.webm")]


async def test_verify_reports_several_problems_at_once(storage: Storage, tmp_path: Path) -> None:
    await store_recording(storage, tmp_path)
    await storage.delete(f"{RID}/tracks/patient-mic.ogg")
    await replace(storage, tmp_path, composite_key(RID), b"overwritten")
    kinds = sorted((p.kind, p.name) for p in await verify_recording(storage, RID))
    assert kinds == [("missing", "tracks/patient-mic.ogg"), ("size_changed", "composite.mp4")]


async def test_a_missing_or_broken_manifest(storage: Storage, tmp_path: Path) -> None:
    assert await verify_recording(storage, "rec-never") == [
        Problem("manifest_missing", "rec-never/manifest.json")]
    await replace(storage, tmp_path, manifest_key(RID), b'{"format": "huizhen-recording-m')
    problems = await verify_recording(storage, RID)
    assert [(p.kind, p.name) for p in problems] == [("manifest_invalid", manifest_key(RID))]
    assert "not valid JSON" in problems[0].detail


async def test_a_manifest_of_another_recording_is_refused(storage: Storage,
                                                          tmp_path: Path) -> None:
    await store_recording(storage, tmp_path)
    await replace(storage, tmp_path, manifest_key("rec-copy"),
                  await stored_bytes(storage, manifest_key(RID)))
    problems = await verify_recording(storage, "rec-copy")
    assert [p.kind for p in problems] == ["manifest_invalid"]
    assert RID in problems[0].detail


async def test_plaintext_hash_matches_after_decryption(storage: Storage, tmp_path: Path) -> None:
    manifest = await store_recording(storage, tmp_path)
    entry = manifest.entry("tracks/patient-mic.ogg")
    assert entry is not None and entry.key_id == "2025-01"
    await storage.get_file(f"{RID}/{entry.name}", tmp_path / "fetched")
    with DecryptingFile(tmp_path / "fetched", RING) as f:
        plain = f.read()
    assert (len(plain), sha(plain)) == (entry.plain_size, entry.plain_sha256)


def test_key_layout() -> None:
    assert manifest_key(RID) == f"{RID}/manifest.json"
    assert track_key(RID, "a.webm") == f"{RID}/tracks/a.webm"
    assert composite_key(RID) == f"{RID}/composite.mp4"
    with pytest.raises(ValueError):
        track_key(RID, "../../etc/passwd")


async def test_verify_recording_refuses_a_path_as_id(tmp_path: Path) -> None:
    from recording.storage import LocalStorage

    with pytest.raises(ValueError, match="not a recording id"):
        await verify_recording(LocalStorage(tmp_path), "../etc")


# ---- (de)serialisation and validation ----------------------------------------------------------

def valid() -> dict[str, Any]:
    h = sha(b"x")
    return {"format": "huizhen-recording-manifest", "version": 1, "recording_id": RID,
            "room_id": "room-1", "created_at": "2025-03-01T08:00:00+08:00",
            "finished_at": "2025-03-01T08:20:00+08:00", "status": "finished",
            "files": [{"name": "tracks/a.webm", "size": 1, "sha256": h, "plain_size": 1,
                       "plain_sha256": h, "key_id": None, "meta": {"participant": "p1",
                                                                   "start": 0.5}}],
            "meta": {"duration_s": 1200.5, "speakers": [[0.0, "dr-li"], [3.2, "patient"]]}}


def test_round_trip(tmp_path: Path) -> None:
    manifest = Manifest.from_json(json.dumps(valid()))
    assert manifest.files[0].meta == {"participant": "p1", "start": 0.5}
    assert manifest.meta["speakers"] == [[0.0, "dr-li"], [3.2, "patient"]]
    assert manifest.created_at == datetime(2025, 3, 1, 0, 0, tzinfo=UTC)
    assert Manifest.from_json(manifest.to_json()) == manifest
    manifest.write(tmp_path / "m" / "manifest.json")
    assert Manifest.read(tmp_path / "m" / "manifest.json") == manifest
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["manifest.json"]


def test_put_replaces_an_entry_of_the_same_name() -> None:
    manifest = Manifest.from_json(json.dumps(valid()))
    entry = manifest.files[0].model_copy(update={"meta": {"again": True}})
    manifest.put(entry)
    assert [e.meta for e in manifest.files] == [{"again": True}]


def _set(path: str, value: Any) -> dict[str, Any]:
    data = valid()
    target: Any = data
    *parents, last = path.split(".")
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(("path", "value", "needle"), [
    ("files.0.sha256", "abc", "files.0.sha256"),
    ("files.0.sha256", sha(b"x").upper(), "files.0.sha256"),
    ("files.0.size", -1, "files.0.size"),
    ("files.0.name", "../x", "files.0.name"),
    ("files.0.name", "manifest.json", "cannot list itself"),
    ("files.0.plain_size", 2, "plain_size"),
    ("created_at", "2025-03-01T08:00:00", "time zone"),
    ("finished_at", "2025-03-01T07:00:00+08:00", "before created_at"),
    ("status", "done", "status"),
    ("recording_id", "a/b", "recording_id"),
    ("version", 2, "version"),
    ("surprise", 1, "surprise"),
    ("room_id", _DELETE, "room_id"),
    ("files.0.colour", "red", "files.0.colour"),
])
def test_malformed_manifests_give_clear_errors(path: str, value: Any, needle: str) -> None:
    with pytest.raises(ManifestError, match=needle) as info:
        Manifest.from_json(json.dumps(_set(path, value)), "rec/manifest.json")
    assert "rec/manifest.json is invalid" in str(info.value)


def test_duplicate_names_are_refused() -> None:
    data = valid()
    data["files"].append(dict(data["files"][0]))
    with pytest.raises(ManifestError, match="twice"):
        Manifest.from_json(json.dumps(data))


@pytest.mark.parametrize(("text", "needle"), [
    ("not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"format": "something-else"}', "not a Huizhen recording manifest"),
])
def test_not_a_manifest(text: str, needle: str) -> None:
    with pytest.raises(ManifestError, match=needle):
        Manifest.from_json(text)


def test_encrypted_entries_may_differ_from_their_plaintext() -> None:
    data = _set("files.0.key_id", "2025-01")
    data["files"][0]["plain_size"] = 99
    assert Manifest.from_json(json.dumps(data)).files[0].plain_size == 99
