"""Where finished recordings are kept: a local folder or an S3-compatible bucket.

One small async interface (``Storage``) so the recorder, ``recording verify`` and playback do
not care which: the embedded default is a folder (``recording.folder``); hospitals run MinIO,
Ceph RGW or a cloud OSS, reached through aiobotocore (recording/s3storage.py). Both backends
give the same guarantees:

* keys are relative, ``/``-separated names (``<recording id>/tracks/<name>``); ``..``, absolute
  names and parts starting with ``.`` (reserved for temporary files) are refused, the same way
  on both backends, so a key that works locally works in the bucket;
* ``put_file`` returns only after the stored copy was read back and its size and SHA-256
  match what was sent, so a caller may delete its local copy on return (see
  ``recording.upload``);
* ``check()`` runs at service start and turns "cannot write there" into a ``ConfigError``
  naming the option to fix, instead of a failure at the end of the first consultation.

The S3 backend is recording/s3storage.py.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from huizhen.config import ConfigError, Settings

log = logging.getLogger("huizhen.recording")

MiB = 1024 * 1024
#: Bytes read or hashed at a time.
BLOCK = MiB
#: S3 refuses multipart parts smaller than this (except the last).
S3_MIN_PART_SIZE = 5 * MiB
TMP_PREFIX = ".upload-"


@dataclass(frozen=True)
class StoredObject:
    """A stored object; ``sha256`` (hex) is None where only the size was asked for (stat)."""

    key: str
    size: int
    sha256: str | None = None


class StorageError(Exception):
    """A storage operation failed; the message says what to check."""


class ObjectMissing(StorageError):
    """The key does not exist in the storage."""


def check_key(key: str) -> str:
    """Refuse keys that could escape the folder/prefix or collide with temporary files."""
    if not isinstance(key, str) or not key or len(key.encode()) > 1024:
        raise ValueError(f"storage key {key!r} must be a non-empty name of at most 1024 bytes")
    if key.startswith("/") or "\\" in key or "\0" in key:
        raise ValueError(f"storage key {key!r} must be relative and use '/' between parts")
    for part in key.split("/"):
        if part in ("", ".", "..") or part.startswith("."):
            raise ValueError(
                f"storage key {key!r}: empty, '.', '..' and hidden ('.name') parts are not allowed")
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix: "" or the start of a key (no '..', not absolute)."""
    if prefix.startswith("/") or "\\" in prefix or ".." in prefix.split("/"):
        raise ValueError(f"storage prefix {prefix!r} must be relative, without '..'")
    return prefix


def hash_file(path: Path) -> tuple[int, str]:
    """(size, SHA-256 hex) of a local file, read in blocks (blocking: run it in a thread)."""
    size, (digest,) = digest_file(path, "sha256")
    return size, digest.hexdigest()


def digest_file(path: Path, *algorithms: str) -> tuple[int, list[Any]]:
    """(size, a hashlib object per algorithm) of a local file, read once, in blocks."""
    digests = [hashlib.new(name) for name in algorithms]
    size = 0
    with path.open("rb") as handle:
        while block := handle.read(BLOCK):
            for digest in digests:
                digest.update(block)
            size += len(block)
    return size, digests


def write_atomically(path: Path, data: bytes, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old file or the new one,
    never half of one (a temporary file beside it, then a rename). ``durable`` also fsyncs
    the data first (a power cut); the media process skips that, it runs on the event loop."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_range(start: int, end: int) -> None:
    if start < 0 or end < start:
        raise ValueError(f"bad byte range [{start}, {end}): need 0 <= start <= end")


class Storage(Protocol):
    """Recordings storage. All methods are coroutines except ``local_path``."""

    #: Where this storage is, for logs and messages (never a credential).
    description: str

    async def put_file(self, local: Path, key: str) -> StoredObject:
        """Store ``local`` under ``key``, read it back and compare size and SHA-256."""

    async def get_file(self, key: str, dest: Path) -> None:
        """Copy the object to ``dest`` (written aside and renamed into place)."""

    async def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the object, clamped to its size (b"" past the end)."""

    async def stat(self, key: str) -> StoredObject | None:
        """The object's size (sha256 None), or None when it does not exist."""

    async def sha256(self, key: str) -> str:
        """SHA-256 (hex) of the stored bytes, streamed; ObjectMissing if absent."""

    async def delete(self, key: str) -> None:
        """Remove the object; a missing one is not an error."""

    async def list(self, prefix: str = "") -> builtins.list[str]:
        """Keys starting with ``prefix`` (a plain string prefix, as in S3), sorted."""

    async def check(self) -> None:
        """At service start: prove the storage is usable, else raise ConfigError."""

    async def close(self) -> None: ...

    def local_path(self, key: str) -> Path | None:
        """The key's file on this machine (local folder), or None for remote storage."""


# ---- the local folder -------------------------------------------------------------------


class LocalStorage:
    """Keys are files under ``folder``; writes go to a temporary file beside the target and
    are renamed into place, so a reader never sees half a recording."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.description = f"local folder {self.folder}"

    def local_path(self, key: str) -> Path:
        return self.folder / check_key(key)

    def _failed(self, what: str, path: Path, exc: OSError) -> StorageError:
        return StorageError(
            f"{what} {path} failed ({exc.strerror or exc}); check that recording.folder "
            f"({self.folder}) exists, is writable by the service and has free space")

    async def put_file(self, local: Path, key: str) -> StoredObject:
        return await asyncio.to_thread(self._put, Path(local), key)

    def _put(self, local: Path, key: str) -> StoredObject:
        target = self.local_path(key)
        try:
            if target.exists() and os.path.samefile(local, target):
                size, digest = hash_file(target)  # already in place: nothing to copy
                return StoredObject(key, size, digest)
        except FileNotFoundError:
            pass
        try:
            size, digest = self._copy_into(local, target)
            stored = hash_file(target)
        except FileNotFoundError as exc:
            if not local.exists():
                raise StorageError(f"local file {local} does not exist: nothing to store") from exc
            raise self._failed("writing", target, exc) from exc
        except OSError as exc:
            raise self._failed("writing", target, exc) from exc
        if stored != (size, digest):
            raise StorageError(
                f"{target} differs from {local} after copying (size {stored[0]} vs {size}): "
                "check the disk under recording.folder")
        return StoredObject(key, size, digest)

    @staticmethod
    def _copy_into(source: Path, target: Path) -> tuple[int, str]:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=TMP_PREFIX)
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out, source.open("rb") as inp:
                while block := inp.read(BLOCK):
                    digest.update(block)
                    out.write(block)
                    size += len(block)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return size, digest.hexdigest()

    async def get_file(self, key: str, dest: Path) -> None:
        source = self.local_path(key)
        try:
            await asyncio.to_thread(self._copy_into, source, Path(dest))
        except FileNotFoundError as exc:
            if not source.exists():
                raise ObjectMissing(f"{key} is not in {self.description}") from exc
            raise StorageError(f"copying {source} to {dest} failed: {exc}") from exc
        except OSError as exc:
            raise StorageError(f"copying {source} to {dest} failed: {exc}") from exc

    async def read_range(self, key: str, start: int, end: int) -> bytes:
        _check_range(start, end)
        path = self.local_path(key)

        def read() -> bytes:
            with path.open("rb") as handle:
                handle.seek(start)
                return handle.read(end - start)

        try:
            return await asyncio.to_thread(read)
        except FileNotFoundError as exc:
            raise ObjectMissing(f"{key} is not in {self.description}") from exc
        except OSError as exc:
            raise self._failed("reading", path, exc) from exc

    async def stat(self, key: str) -> StoredObject | None:
        path = self.local_path(key)
        try:
            info = await asyncio.to_thread(path.stat)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._failed("reading", path, exc) from exc
        return StoredObject(key, info.st_size) if path.is_file() else None

    async def sha256(self, key: str) -> str:
        path = self.local_path(key)
        try:
            return (await asyncio.to_thread(hash_file, path))[1]
        except FileNotFoundError as exc:
            raise ObjectMissing(f"{key} is not in {self.description}") from exc
        except OSError as exc:
            raise self._failed("reading", path, exc) from exc

    async def delete(self, key: str) -> None:
        path = self.local_path(key)
        try:
            await asyncio.to_thread(path.unlink, True)
        except OSError as exc:
            raise self._failed("deleting", path, exc) from exc

    async def list(self, prefix: str = "") -> builtins.list[str]:
        return await asyncio.to_thread(self._list, prefix)

    def _list(self, prefix: str) -> builtins.list[str]:
        check_prefix(prefix)
        base = self.folder / prefix.rpartition("/")[0] if "/" in prefix else self.folder
        keys = []
        for root, dirs, files in os.walk(base):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            rel = PurePosixPath(Path(root).relative_to(self.folder).as_posix())
            for name in files:
                key = (rel / name).as_posix() if str(rel) != "." else name
                if not name.startswith(".") and key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    async def check(self) -> None:
        await asyncio.to_thread(self._check)

    def _check(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.folder, prefix=".write-check-"):
                pass
        except OSError as exc:
            raise ConfigError(
                f"recording.folder {self.folder} is not a writable folder ({exc.strerror}); "
                "set recording.folder or HUIZHEN_RECORDING__FOLDER to one the service can "
                "write") from exc

    async def close(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.folder)!r})"


def open_storage(settings: Settings) -> Storage:
    """The storage ``recording.storage`` configures (not yet checked: call ``check()``)."""
    config = settings.recording.storage
    if config.backend == "local":
        return LocalStorage(settings.recordings_folder)
    from recording.s3storage import S3Storage  # aiobotocore only where a bucket is used

    s3 = config.s3
    return S3Storage(
        bucket=s3.bucket,
        endpoint_url=s3.endpoint_url,
        region=s3.region,
        prefix=s3.prefix,
        access_key_id=s3.access_key_id,
        secret_access_key=s3.secret_access_key.get_secret_value(),
        addressing_style=s3.addressing_style,
        part_size=s3.part_size_mb * MiB,
        verify_tls=s3.verify_tls,
    )
