"""The per-recording manifest and ``recording verify``.

Records of a consultation must stay verifiable by hash for years (see the domain notes): each
recording's folder/prefix holds a ``manifest.json`` listing every file with the size and SHA-256
of the bytes as stored (ciphertext when encrypted: that is what a bit flip on a disk changes)
and of the plaintext (what a FHIR Media/DocumentReference attachment describes), plus the key id
that decrypts it. ``verify`` re-hashes what the storage holds and names every difference.

Storage layout (both backends)::

    <recording id>/manifest.json
    <recording id>/tracks/<name>        one file per recorded track
    <recording id>/composite.mp4        the composed view, when made

Manifest (JSON, version 1)::

    {"format": "huizhen-recording-manifest", "version": 1,
     "recording_id": "…", "room_id": "…",
     "created_at": "2025-03-01T08:00:00+08:00", "finished_at": "…" | null,
     "status": "recording" | "finished" | "failed",
     "files": [{"name": "tracks/dr-li-camera.webm", "size": 1234, "sha256": "<hex>",
                "plain_size": 1200, "plain_sha256": "<hex>", "key_id": "2025-01" | null,
                "meta": {…the recorder's own fields: participant, kind, codec, start…}}],
     "meta": {…the recorder's fields for the whole recording: timeline, speakers…}}
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from recording.storage import ObjectMissing, Storage, check_key, write_atomically

FORMAT: Final = "huizhen-recording-manifest"
MANIFEST_NAME = "manifest.json"
#: Largest manifest read from storage (a recording has tens of files, not millions).
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
RECORDING_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")

Status = Literal["recording", "finished", "failed"]
ProblemKind = Literal["missing", "size_changed", "hash_changed", "extra", "manifest_missing",
                      "manifest_invalid"]


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the field."""


def manifest_key(recording_id: str) -> str:
    return f"{recording_id}/{MANIFEST_NAME}"


def track_key(recording_id: str, name: str) -> str:
    return check_key(f"{recording_id}/tracks/{name}")


def composite_key(recording_id: str) -> str:
    return f"{recording_id}/composite.mp4"


def _sha(value: str) -> str:
    if not HEX64.match(value):
        raise ValueError("must be 64 lowercase hex digits (SHA-256)")
    return value


class FileEntry(BaseModel):
    """One stored file, named relative to the recording's prefix."""

    model_config = ConfigDict(extra="forbid")

    name: str
    size: int = Field(ge=0)
    sha256: str
    plain_size: int = Field(ge=0)
    plain_sha256: str
    #: SHA-1 of the plaintext, base64: what a FHIR Attachment's ``hash`` is (records/fhir.py);
    #: absent in manifests written before it was kept
    plain_sha1: str | None = None
    key_id: str | None = None
    meta: dict[str, Any] = {}

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        check_key(value)
        if value == MANIFEST_NAME:
            raise ValueError(f"{MANIFEST_NAME} cannot list itself")
        return value

    @field_validator("sha256", "plain_sha256")
    @classmethod
    def _hashes(cls, value: str) -> str:
        return _sha(value)

    @model_validator(mode="after")
    def _plain(self) -> FileEntry:
        if self.key_id is None and (self.plain_size, self.plain_sha256) != (self.size,
                                                                            self.sha256):
            raise ValueError(f"{self.name}: without key_id the stored bytes are the plaintext, "
                             "so plain_size/plain_sha256 must equal size/sha256")
        return self


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["huizhen-recording-manifest"] = FORMAT
    version: Literal[1] = 1
    recording_id: str
    room_id: str = Field(min_length=1)
    created_at: datetime
    finished_at: datetime | None = None
    status: Status = "recording"
    files: list[FileEntry] = []
    #: The recorder's own fields for the whole recording (timeline, speakers, duration…).
    meta: dict[str, Any] = {}

    @field_validator("recording_id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not RECORDING_ID.match(value):
            raise ValueError("must be 1-128 characters of A-Z a-z 0-9 _ - (no dots or slashes)")
        return value

    @field_validator("created_at", "finished_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must carry a time zone, e.g. 2025-03-01T08:00:00+08:00")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        names = [entry.name for entry in self.files]
        if len(names) != len(set(names)):
            raise ValueError("files lists a name twice")
        if self.finished_at is not None and self.finished_at < self.created_at:
            raise ValueError("finished_at is before created_at")
        return self

    # ---- (de)serialisation -----------------------------------------------------------

    def to_json(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), indent=2, ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, data: bytes | str, where: str = "manifest") -> Manifest:
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{where} is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ManifestError(f"{where} must be a JSON object")
        if raw.get("format") != FORMAT:
            raise ManifestError(f"{where} is not a Huizhen recording manifest (format is "
                                f"{raw.get('format')!r}, expected {FORMAT!r})")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
                for err in exc.errors())
            raise ManifestError(f"{where} is invalid: {problems}") from exc

    def write(self, path: Path) -> None:
        """Write atomically (a crash leaves the old manifest, never half a new one)."""
        write_atomically(path, self.to_json())

    @classmethod
    def read(cls, path: Path) -> Manifest:
        return cls.from_json(path.read_bytes(), str(path))

    def entry(self, name: str) -> FileEntry | None:
        return next((e for e in self.files if e.name == name), None)

    def put(self, entry: FileEntry) -> None:
        """Add an entry, replacing one of the same name (a re-uploaded file)."""
        self.files = [e for e in self.files if e.name != entry.name] + [entry]


# ---- verification -------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    name: str
    expected: str | None = None
    actual: str | None = None
    detail: str = ""

    def __str__(self) -> str:
        text = {
            "missing": "is missing",
            "size_changed": f"has {self.actual} bytes, the manifest says {self.expected}",
            "hash_changed": f"has SHA-256 {self.actual}, the manifest says {self.expected}",
            "extra": "is not listed in the manifest",
            "manifest_missing": "is missing: the recording cannot be verified",
            "manifest_invalid": "cannot be read",
        }[self.kind]
        return f"{self.name} {text}" + (f" ({self.detail})" if self.detail else "")


def _prefix(prefix: str) -> str:
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


async def verify(storage: Storage, prefix: str, manifest: Manifest) -> list[Problem]:
    """Compare the storage under ``prefix`` with the manifest; [] means intact.

    Each listed file is stat'ed, then (size equal) hashed by streaming; files under the prefix
    that the manifest does not list (other than the manifest itself) are reported ``extra``."""
    prefix = _prefix(prefix)
    problems: list[Problem] = []
    for entry in manifest.files:
        key = prefix + entry.name
        stored = await storage.stat(key)
        if stored is None:
            problems.append(Problem("missing", entry.name))
            continue
        if stored.size != entry.size:
            problems.append(Problem("size_changed", entry.name, str(entry.size),
                                    str(stored.size)))
            continue
        try:
            digest = await storage.sha256(key)
        except ObjectMissing:  # deleted between stat and read
            problems.append(Problem("missing", entry.name))
            continue
        if digest != entry.sha256:
            problems.append(Problem("hash_changed", entry.name, entry.sha256, digest))
    listed = {entry.name for entry in manifest.files} | {MANIFEST_NAME}
    for key in await storage.list(prefix):
        name = key[len(prefix):]
        if name not in listed:
            problems.append(Problem("extra", name))
    return problems


async def load_manifest(storage: Storage, recording_id: str) -> Manifest:
    """The stored manifest of a recording; ObjectMissing / ManifestError when unusable."""
    key = manifest_key(recording_id)
    stored = await storage.stat(key)
    if stored is None:
        raise ObjectMissing(f"{key} is not in {storage.description}")
    if stored.size > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{key} is {stored.size} bytes, larger than any real manifest")
    manifest = Manifest.from_json(await storage.read_range(key, 0, stored.size), key)
    if manifest.recording_id != recording_id:
        raise ManifestError(f"{key} belongs to recording {manifest.recording_id!r}")
    return manifest


async def verify_recording(storage: Storage, recording_id: str) -> list[Problem]:
    """``huizhen recording verify RECORDING_ID``: [] when every file is intact."""
    if not RECORDING_ID.match(recording_id):
        raise ValueError(f"{recording_id!r} is not a recording id")
    try:
        manifest = await load_manifest(storage, recording_id)
    except ObjectMissing:
        return [Problem("manifest_missing", manifest_key(recording_id))]
    except ManifestError as exc:
        return [Problem("manifest_invalid", manifest_key(recording_id), detail=str(exc))]
    # any other StorageError propagates: an unreachable storage is no verdict on the recording
    return await verify(storage, recording_id, manifest)


async def list_recordings(storage: Storage) -> list[str]:
    """Recording ids that have a manifest (``recording verify --all``)."""
    suffix = "/" + MANIFEST_NAME
    return sorted(key[: -len(suffix)] for key in await storage.list()
                  if key.endswith(suffix) and key.count("/") == 1)
