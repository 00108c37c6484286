"""The S3-compatible backend of ``recording.storage`` (MinIO, Ceph RGW, a cloud OSS) through
aiobotocore; the guarantees are the interface's (recording/storage.py).

botocore's own retries are off (``total_max_attempts`` 1): ``recording.upload`` is the one
retry layer, with backoff long enough to ride out a storage restart, and its log is the one
place a failure shows up.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import hashlib
import os
import ssl
import tempfile
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, BinaryIO, Literal

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from botocore.loaders import Loader, create_loader

from huizhen.config import ConfigError
from recording.storage import (
    BLOCK,
    TMP_PREFIX,
    MiB,
    ObjectMissing,
    StorageError,
    StoredObject,
    _check_range,
    check_key,
    check_prefix,
    log,
)

# ---- S3-compatible object storage ------------------------------------------------------------


@functools.cache
def _loader() -> Loader:
    """botocore's service-model loader, shared: each new client then skips re-reading the S3
    model (~0.2 s of CPU per storage opened, e.g. per worker job)."""
    return create_loader()


def _code(exc: ClientError) -> tuple[str, int]:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return str(error.get("Code", "")), int(status or 0)


def _is_missing(exc: ClientError) -> bool:
    code, status = _code(exc)
    return (status == 404 and code != "NoSuchBucket") or code in ("NoSuchKey", "NotFound")


class S3Storage:
    """An S3-compatible bucket through aiobotocore; keys live under an optional prefix.

    Objects up to ``part_size`` go up in one PUT, larger ones as a multipart upload of
    ``part_size`` parts (aborted on failure, so no orphaned parts are billed/kept)."""

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str = "",
        region: str = "us-east-1",
        prefix: str = "",
        access_key_id: str = "",
        secret_access_key: str = "",
        addressing_style: Literal["path", "virtual", "auto"] = "path",
        part_size: int = 8 * MiB,
        verify_tls: bool = True,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 60.0,
    ) -> None:
        if not bucket:
            raise ConfigError("recording.storage.s3.bucket is empty: name the bucket")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self.part_size = part_size
        self.description = f"s3://{bucket}/{self.prefix} at {endpoint_url or 'AWS ' + region}"
        self._client_args: dict[str, Any] = {
            "region_name": region,
            "endpoint_url": endpoint_url or None,
            "aws_access_key_id": access_key_id or None,
            "aws_secret_access_key": secret_access_key or None,
            "verify": verify_tls,
            "config": AioConfig(
                retries={"total_max_attempts": 1},  # recording.upload is the retry layer
                s3={"addressing_style": addressing_style},
                connect_timeout=connect_timeout_s,
                read_timeout=read_timeout_s,
                signature_version="s3v4",
                # MinIO, Ceph and most OSS gateways predate the flexible-checksum headers
                # botocore sends by default; we verify by reading back instead.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        }
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:  # no credentials
        return f"S3Storage({self.description!r})"

    def local_path(self, key: str) -> None:
        return None

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    async def _s3(self) -> Any:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    session = get_session()
                    session.register_component("data_loader", _loader())
                    context = session.create_client("s3", **self._client_args)
                    self._client = await self._stack.enter_async_context(context)
        return self._client

    def _hint(self, exc: BaseException) -> str:
        if isinstance(exc, ClientError):
            code, status = _code(exc)
            if code == "NoSuchBucket":
                return (f"bucket {self.bucket!r} does not exist: create it or fix "
                        "recording.storage.s3.bucket")
            if status == 403 or code in ("AccessDenied", "InvalidAccessKeyId",
                                         "SignatureDoesNotMatch"):
                return ("access denied: check recording.storage.s3.access_key_id/"
                        "secret_access_key and that the bucket policy allows this key "
                        "GetObject, PutObject and ListBucket")
            if status >= 500:
                return f"the storage server answered {status} {code}: a temporary failure"
            return f"the storage server answered {status} {code}"
        if isinstance(exc, NoCredentialsError):
            return ("no credentials: set HUIZHEN_RECORDING__STORAGE__S3__ACCESS_KEY_ID and "
                    "HUIZHEN_RECORDING__STORAGE__S3__SECRET_ACCESS_KEY")
        text = str(exc) or type(exc).__name__
        if isinstance(exc, ssl.SSLError) or "SSL" in text or "certificate" in text:
            return (f"TLS failed ({text}): install the storage's CA certificate, or set "
                    "recording.storage.s3.verify_tls false only on a trusted network")
        return (f"cannot talk to {self.endpoint_url or 'AWS S3'} ({text}): check "
                "recording.storage.s3.endpoint_url, the network and that the server runs")

    @contextlib.contextmanager
    def _errors(self, what: str, key: str) -> Iterator[None]:
        """Turn botocore/aiohttp failures into StorageError with what to check."""
        try:
            yield
        except ClientError as exc:
            if _is_missing(exc):
                raise ObjectMissing(f"{key} is not in {self.description}") from exc
            raise StorageError(f"{what} {key} in {self.description}: {self._hint(exc)}") from exc
        except (TimeoutError, BotoCoreError, aiohttp.ClientError, OSError) as exc:
            raise StorageError(f"{what} {key} in {self.description}: {self._hint(exc)}") from exc

    async def put_file(self, local: Path, key: str) -> StoredObject:
        s3, name = await self._s3(), self._key(key)
        try:
            size = (await asyncio.to_thread(Path(local).stat)).st_size
        except FileNotFoundError as exc:
            raise StorageError(f"local file {local} does not exist: nothing to store") from exc
        if size <= self.part_size:
            data = await asyncio.to_thread(Path(local).read_bytes)
            digest = hashlib.sha256(data).hexdigest()
            with self._errors("uploading", key):
                await s3.put_object(Bucket=self.bucket, Key=name, Body=data)
        else:
            digest = await self._multipart(s3, Path(local), key, name)
        await self._verify(key, size, digest)
        return StoredObject(key, size, digest)

    async def _multipart(self, s3: Any, local: Path, key: str, name: str) -> str:
        with self._errors("starting the multipart upload of", key):
            upload_id = (await s3.create_multipart_upload(Bucket=self.bucket, Key=name))[
                "UploadId"]
        digest = hashlib.sha256()
        parts = []
        handle: BinaryIO = await asyncio.to_thread(local.open, "rb")
        try:
            with self._errors("uploading a part of", key):
                number = 1
                while data := await asyncio.to_thread(handle.read, self.part_size):
                    digest.update(data)
                    answer = await s3.upload_part(Bucket=self.bucket, Key=name, Body=data,
                                                  PartNumber=number, UploadId=upload_id)
                    parts.append({"ETag": answer["ETag"], "PartNumber": number})
                    number += 1
                await s3.complete_multipart_upload(
                    Bucket=self.bucket, Key=name, UploadId=upload_id,
                    MultipartUpload={"Parts": parts})
        except BaseException:
            try:
                await s3.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
            except Exception as exc:  # the original failure matters more
                log.warning("could not abort a multipart upload (a bucket lifecycle rule for "
                            "incomplete uploads cleans these up)",
                            extra={"key": key, "error": type(exc).__name__})
            raise
        finally:
            await asyncio.to_thread(handle.close)
        return digest.hexdigest()

    async def _verify(self, key: str, size: int, digest: str) -> None:
        stored = await self.stat(key)
        if stored is None or stored.size != size:
            raise StorageError(
                f"{key} in {self.description} has {stored.size if stored else 'no'} bytes after "
                f"the upload, expected {size}: the upload did not arrive intact")
        if await self.sha256(key) != digest:
            raise StorageError(
                f"{key} in {self.description} reads back with a different SHA-256 than was "
                "sent: the upload did not arrive intact")

    async def _get(self, key: str, **extra: Any) -> Any:
        s3 = await self._s3()
        with self._errors("reading", key):
            return await s3.get_object(Bucket=self.bucket, Key=self._key(key), **extra)

    async def get_file(self, key: str, dest: Path) -> None:
        dest = Path(dest)
        answer = await self._get(key)
        await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=TMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as out, self._errors("reading", key):
                async with answer["Body"] as body:
                    async for block in body.iter_chunks(BLOCK):
                        await asyncio.to_thread(out.write, block)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    async def read_range(self, key: str, start: int, end: int) -> bytes:
        _check_range(start, end)
        if start == end:
            return b""
        try:
            answer = await self._get(key, Range=f"bytes={start}-{end - 1}")
        except StorageError as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError) and _code(cause)[0] == "InvalidRange":
                return b""  # start at or past the end
            raise
        with self._errors("reading", key):
            async with answer["Body"] as body:
                data: bytes = await body.read()
        return data

    async def stat(self, key: str) -> StoredObject | None:
        s3 = await self._s3()
        try:
            with self._errors("looking up", key):
                head = await s3.head_object(Bucket=self.bucket, Key=self._key(key))
        except ObjectMissing:
            return None
        return StoredObject(key, int(head["ContentLength"]))

    async def sha256(self, key: str) -> str:
        answer = await self._get(key)
        digest = hashlib.sha256()
        with self._errors("reading", key):
            async with answer["Body"] as body:
                async for block in body.iter_chunks(BLOCK):
                    digest.update(block)
        return digest.hexdigest()

    async def delete(self, key: str) -> None:
        s3 = await self._s3()
        with self._errors("deleting", key):
            await s3.delete_object(Bucket=self.bucket, Key=self._key(key))

    async def list(self, prefix: str = "") -> builtins.list[str]:
        check_prefix(prefix)
        s3 = await self._s3()
        keys: builtins.list[str] = []
        with self._errors("listing", prefix or "(all)"):
            paginator = s3.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                keys.extend(item["Key"][len(self.prefix):] for item in page.get("Contents", []))
        # hidden parts are temporary/probe objects, as in the local folder
        return sorted(k for k in keys if not any(p.startswith(".") for p in k.split("/")))

    async def check(self) -> None:
        """The bucket exists, the credentials work, and writing is allowed (a probe object
        is written and removed: read-only credentials should fail here, not after a visit)."""
        s3 = await self._s3()
        probe = self.prefix + ".huizhen-write-check"
        try:
            await s3.head_bucket(Bucket=self.bucket)
            await s3.put_object(Bucket=self.bucket, Key=probe, Body=b"ok")
        except ClientError as exc:
            code, status = _code(exc)
            if status == 404 or code == "NoSuchBucket":
                raise ConfigError(
                    f"recording.storage.s3.bucket {self.bucket!r} does not exist at "
                    f"{self.endpoint_url or 'AWS S3'}: create it (e.g. `mc mb`) or fix "
                    "HUIZHEN_RECORDING__STORAGE__S3__BUCKET") from exc
            raise ConfigError(
                f"recording storage {self.description}: {self._hint(exc)} "
                "(HUIZHEN_RECORDING__STORAGE__S3__ACCESS_KEY_ID / _SECRET_ACCESS_KEY)") from exc
        except (TimeoutError, BotoCoreError, aiohttp.ClientError, OSError) as exc:
            raise ConfigError(f"recording storage {self.description}: {self._hint(exc)} "
                              "(HUIZHEN_RECORDING__STORAGE__S3__ENDPOINT_URL)") from exc
        with contextlib.suppress(ClientError, BotoCoreError):  # append-only policies are fine
            await s3.delete_object(Bucket=self.bucket, Key=probe)

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None


