"""After a recording stops: store its files safely, then compose the one a person watches.

Two jobs per recording, run by the worker process (recording/worker.py), never by the media
process:

* ``store``: each track file is checked by reading its packets (no decoding) — frames, first
  and last timestamp; a file cut off by a crash is remuxed (copied packet by packet) into a
  well-formed one with cues and a duration — then sealed (AES-256-GCM, when a key is
  configured) and stored with retries; the manifest (SHA-256 and size of every file, the
  timeline and who spoke when) is stored beside them and kept in the database.
* ``composite``: the track files (from the spool, or fetched and decrypted from storage) are
  composed into one MP4 (recording/composite.py) and stored, and the manifest gains it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av

from recording.composite import CompositeSpec, TrackInput, compose
from recording.crypto import KeyRing, decrypt_file, encrypt_file
from recording.db import Recording, RecordingDb
from recording.manifest import FileEntry, Manifest, manifest_key
from recording.session import JOURNAL, read_journal
from recording.storage import Storage, digest_file, hash_file
from recording.upload import upload
from rooms.db import Database
from rooms.models import EventRecord, utcnow

log = logging.getLogger("huizhen.recording")

COMPOSITE = "composite.mp4"
Progress = Callable[[float], None]


@dataclass
class UploadPolicy:
    attempts: int = 6
    backoff_s: float = 2.0
    max_backoff_s: float = 120.0
    keep_local: bool = False


@dataclass
class Finisher:
    db: Database
    recordings: RecordingDb
    storage: Storage
    keyring: KeyRing | None
    spool: Path  # the recordings folder the media process writes into
    uploads: UploadPolicy

    # ---- store ---------------------------------------------------------------------------
    async def store(self, recording: Recording, progress: Progress) -> None:
        folder = self.spool / recording.id
        journal = read_journal(folder)
        tracks = journal["tracks"]
        entries: list[FileEntry] = []
        rows: list[dict[str, Any]] = []
        for index, track in enumerate(tracks):
            path = folder / track["name"]
            if not path.exists():
                log.info("a track left no file (no whole frame arrived)",
                         extra={"recording": recording.id, "track_id": track["track_id"]})
                continue
            stats = await asyncio.to_thread(probe, path, repair=recording.interrupted)
            meta = {k: track[k] for k in ("track_id", "participant_id", "identity", "role",
                                          "kind", "source", "codec")}
            meta.update(stats)
            entry = await self._put(recording.id, path, track["name"], meta)
            entries.append(entry)
            rows.append(_row(entry, "track"))
            progress((index + 1) / max(1, len(tracks)))
        manifest = Manifest(
            recording_id=recording.id, room_id=recording.room_id,
            created_at=recording.started_at,
            finished_at=recording.ended_at or datetime.now(UTC), status="finished",
            files=entries, meta=_recording_meta(journal, recording))
        await self._put_manifest(manifest, folder)
        await self.recordings.replace_files(recording.id, rows)
        await self._tidy(folder)
        log.info("recording stored", extra={"recording": recording.id, "files": len(entries)})

    async def _put(self, recording_id: str, path: Path, name: str, meta: dict[str, Any]
                   ) -> FileEntry:
        """Seal (when a key is set) and store one file; the local copy goes once verified."""
        plain_size, (plain_sha, plain_sha1) = await asyncio.to_thread(
            digest_file, path, "sha256", "sha1")
        key = f"{recording_id}/{name}"
        key_id = None
        if self.keyring is not None:
            sealed = path.with_name(path.name + ".sealed")
            key_id = await asyncio.to_thread(encrypt_file, path, sealed, self.keyring)
            stored = await self._upload(sealed, key)
            if not self.uploads.keep_local and self.storage.local_path(key) != path:
                await asyncio.to_thread(path.unlink, missing_ok=True)  # sealed and stored
        else:
            stored = await self._upload(path, key)
        return FileEntry(name=name, size=stored.size, sha256=stored.sha256,
                         plain_size=plain_size, plain_sha256=plain_sha.hexdigest(),
                         plain_sha1=base64.b64encode(plain_sha1.digest()).decode(),
                         key_id=key_id, meta=meta)

    async def _upload(self, local: Path, key: str) -> Any:
        policy = self.uploads
        return await upload(self.storage, local, key, attempts=policy.attempts,
                            backoff_s=policy.backoff_s, max_backoff_s=policy.max_backoff_s,
                            keep_local=policy.keep_local)

    async def _put_manifest(self, manifest: Manifest, folder: Path) -> None:
        local = folder / ".manifest.json"
        manifest.write(local)
        stored = await upload(self.storage, local, manifest_key(manifest.recording_id),
                              attempts=self.uploads.attempts, backoff_s=self.uploads.backoff_s,
                              max_backoff_s=self.uploads.max_backoff_s, keep_local=False)
        data = manifest.model_dump(mode="json")
        await self.recordings.update_recording(
            manifest.recording_id, manifest=data, manifest_sha256=stored.sha256,
            status="ready" if manifest.entry(COMPOSITE) else "stored")

    async def _tidy(self, folder: Path) -> None:
        """The journal is in the manifest now; an emptied spool folder goes."""
        if self.storage.local_path(f"{folder.name}/{JOURNAL}") != folder / JOURNAL:
            return  # S3: the spool folder is removed once the composite is made
        await asyncio.to_thread((folder / JOURNAL).unlink, missing_ok=True)

    # ---- composite ---------------------------------------------------------------------
    async def composite(self, recording: Recording, progress: Progress) -> None:
        if recording.manifest is None:
            raise RuntimeError("the recording's files are not stored yet (its store job runs "
                               "first)")
        manifest = Manifest.model_validate(recording.manifest)
        names = {s.id: s.name for s in await self.db.sessions_for_room(recording.room_id)}
        folder = self.spool / recording.id
        with tempfile.TemporaryDirectory(prefix=f"composite-{recording.id}-") as tmp:
            inputs = []
            for entry in manifest.files:
                if entry.name == COMPOSITE:
                    continue
                meta = entry.meta
                path = await self._plaintext(recording.id, entry, Path(tmp))
                inputs.append(TrackInput(path=path, kind=meta["kind"], source=meta["source"],
                                         person=meta["identity"],
                                         name=names.get(meta["participant_id"],
                                                        meta["identity"])))
            output = Path(tmp) / COMPOSITE
            ends = [float(e.meta.get("start_s", 0)) + float(e.meta.get("duration_s", 0))
                    for e in manifest.files if e.name != COMPOSITE]
            duration = float(manifest.meta.get("duration_s") or 0.0) or max(ends, default=0.0)
            if duration <= 0:
                raise RuntimeError("nothing was recorded (no track has a frame): no composite")
            spec = CompositeSpec(
                tracks=inputs, duration_s=duration,
                speakers=[(float(t), str(who)) for t, who in manifest.meta.get("speakers", [])],
                output=output)
            result = await asyncio.to_thread(compose, spec, lambda f: progress(0.95 * f))
            meta = {"kind": "av", "codec": "h264+aac", "duration_s": round(result.duration_s, 3),
                    "video_frames": result.video_frames, "width": spec.width,
                    "height": spec.height,
                    "layout": [[round(t, 3), rects] for t, rects in result.layout]}
            folder.mkdir(parents=True, exist_ok=True)
            local = folder / COMPOSITE
            shutil.move(str(output), local)
        manifest.put(await self._put(recording.id, local, COMPOSITE, meta))
        await self._put_manifest(manifest, folder)
        await self.recordings.replace_files(
            recording.id, [_row(e, "composite" if e.name == COMPOSITE else "track")
                           for e in manifest.files])
        self._drop_spool(folder)
        await self.db.log_event(EventRecord(
            room_id=recording.room_id, type="recording_ready", at=utcnow(),
            data={"recording_id": recording.id, "duration_s": round(result.duration_s, 3)}))
        progress(1.0)
        log.info("composite made", extra={"recording": recording.id,
                                          "duration_s": round(result.duration_s, 1)})

    async def _plaintext(self, recording_id: str, entry: FileEntry, tmp: Path) -> Path:
        """A readable copy of a stored track: the spool file if it is still the plaintext,
        else fetched from storage (and decrypted)."""
        spool = self.spool / recording_id / entry.name
        if entry.key_id is None:
            local = self.storage.local_path(f"{recording_id}/{entry.name}")
            if local is not None and local.exists():
                return local
        if spool.exists() and await asyncio.to_thread(_sha256, spool) == entry.plain_sha256:
            return spool
        fetched = tmp / (hashlib.sha1(entry.name.encode()).hexdigest()[:12] + "-" +
                         Path(entry.name).name)
        await self.storage.get_file(f"{recording_id}/{entry.name}", fetched)
        if entry.key_id is None:
            return fetched
        if self.keyring is None:
            raise RuntimeError(f"{entry.name} is sealed with key {entry.key_id!r}: configure "
                               "recording.encryption.keys to compose it")
        plain = fetched.with_name("plain-" + fetched.name)
        await asyncio.to_thread(decrypt_file, fetched, plain, self.keyring)
        return plain

    def _drop_spool(self, folder: Path) -> None:
        """With object storage, the spool folder of a finished recording is removed."""
        if self.storage.local_path(f"{folder.name}/{COMPOSITE}") is not None:
            return
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)


def _sha256(path: Path) -> str:
    return hash_file(path)[1]


def _row(entry: FileEntry, role: str) -> dict[str, Any]:
    meta = entry.meta
    return {"name": entry.name, "role": role, "participant_id": meta.get("participant_id"),
            "identity": meta.get("identity"), "kind": meta.get("kind", "av"),
            "source": meta.get("source"), "codec": meta.get("codec", ""),
            "start_s": float(meta.get("start_s", 0.0)),
            "duration_s": float(meta.get("duration_s", 0.0)),
            "frames": int(meta.get("frames", meta.get("video_frames", 0))),
            "size": entry.size, "sha256": entry.sha256, "key_id": entry.key_id,
            "stored": True}


def _recording_meta(journal: dict[str, Any], recording: Recording) -> dict[str, Any]:
    return {"duration_s": journal.get("duration_s") or recording.duration_s or 0.0,
            "spans": journal.get("spans", []), "speakers": journal.get("speakers", []),
            "interrupted": recording.interrupted,
            "consent_id": recording.consent_id,
            "override": recording.override_reason is not None}


def probe(path: Path, repair: bool = False) -> dict[str, Any]:
    """Frames, keyframes, first timestamp and duration of a track file, from its packets; with
    ``repair`` (a file cut off by a crash) it is first remuxed into a well-formed one."""
    if repair:
        _remux(path)
    frames = keyframes = 0
    first = last = None
    try:
        with av.open(str(path)) as container:
            stream = container.streams[0]
            scale = float(stream.time_base or 0.001)
            for packet in container.demux(stream):
                if packet.pts is None:
                    continue
                frames += 1
                keyframes += packet.is_keyframe
                at = packet.pts * scale
                first = at if first is None else min(first, at)
                last = at if last is None else max(last, at)
    except av.FFmpegError as exc:  # a damaged tail: what came before counts
        log.warning("a track file ends damaged", extra={"path": path.name, "error": str(exc)})
    return {"frames": frames, "keyframes": keyframes, "start_s": round(first or 0.0, 3),
            "duration_s": round((last or 0.0) - (first or 0.0), 3)}


def _remux(path: Path) -> None:
    tmp = path.with_name(path.stem + ".remux" + path.suffix)
    written = 0
    with av.open(str(path)) as source:
        container_format = "webm" if path.suffix == ".webm" else "matroska"
        with av.open(str(tmp), "w", format=container_format) as out:
            streams = {s.index: out.add_stream_from_template(s) for s in source.streams}
            try:
                for packet in source.demux():
                    if packet.dts is None:
                        continue
                    packet.stream = streams[packet.stream.index]
                    out.mux(packet)
                    written += 1
            except av.FFmpegError as exc:
                log.info("copied a cut-off track file up to its damaged tail",
                         extra={"path": path.name, "packets": written, "error": str(exc)})
    if written:
        tmp.replace(path)
    else:
        tmp.unlink(missing_ok=True)
