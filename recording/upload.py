"""Moving a finished file into storage without ever losing it.

The rule: the local copy is the recording until the stored copy is proven equal (``put_file``
reads it back and compares size and SHA-256). A failed attempt is logged and retried after an
exponentially growing, jittered pause (a MinIO restart or a full OSS gateway takes seconds to
minutes; jitter keeps many recorders from retrying in step). After the last failed attempt
``UploadFailed`` is raised and the local file is still where it was, for a later retry.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from pathlib import Path

from recording.storage import Storage, StorageError, StoredObject

log = logging.getLogger("huizhen.recording")

Sleep = Callable[[float], Awaitable[None]]


class UploadFailed(StorageError):
    """Every attempt failed; the local file was kept (its path is in the message)."""


def backoff_delay(attempt: int, backoff_s: float, max_backoff_s: float,
                  rng: random.Random | None = None) -> float:
    """Pause after failed attempt ``attempt`` (1-based): backoff_s × 2^(attempt-1), capped at
    max_backoff_s, then "equal jitter" (a random point in its upper half)."""
    ceiling = min(max_backoff_s, backoff_s * 2 ** (attempt - 1))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


async def upload(
    storage: Storage,
    local: Path,
    key: str,
    *,
    attempts: int = 8,
    backoff_s: float = 2.0,
    max_backoff_s: float = 120.0,
    keep_local: bool = False,
    sleep: Sleep = asyncio.sleep,
) -> StoredObject:
    """Store ``local`` under ``key`` with retries; delete ``local`` only once the stored copy is
    verified and only when ``keep_local`` is False (and never when ``local`` is the stored file
    itself, as with a local-folder storage written in place).

    Raises ``UploadFailed`` (local file kept) after ``attempts`` failures. A missing local file
    or a bad key fails at once: retrying cannot help."""
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    local = Path(local)
    if not local.is_file():
        raise UploadFailed(f"{local} does not exist or is not a file: nothing to upload")
    last: StorageError | None = None
    for attempt in range(1, attempts + 1):
        try:
            stored = await storage.put_file(local, key)
        except StorageError as exc:
            last = exc
            if attempt == attempts:
                break
            delay = backoff_delay(attempt, backoff_s, max_backoff_s)
            log.warning("recording upload failed, retrying", extra={
                "key": key, "attempt": attempt, "attempts": attempts,
                "retry_in_s": round(delay, 2), "error": str(exc)})
            await sleep(delay)
            continue
        if attempt > 1:
            log.info("recording upload succeeded after retries",
                     extra={"key": key, "attempt": attempt})
        if not keep_local and not _is_stored_file(storage, local, key):
            local.unlink(missing_ok=True)
        return stored
    log.error("recording upload failed; the local copy is kept", extra={
        "key": key, "attempts": attempts, "local": str(local), "error": str(last)})
    raise UploadFailed(
        f"uploading {local} as {key} to {storage.description} failed {attempts} times "
        f"(last: {last}); the local copy is kept at {local}: fix the storage and retry") from last


def _is_stored_file(storage: Storage, local: Path, key: str) -> bool:
    stored = storage.local_path(key)
    try:
        return stored is not None and stored.exists() and stored.samefile(local)
    except OSError:
        return False
