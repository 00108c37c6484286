"""recording/storage.py and recording/upload.py: one set of tests on a local folder and on a
real S3-protocol server (moto over HTTP on loopback), plus retries through a flaky proxy."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from huizhen.config import ConfigError, load_settings
from recording.s3storage import S3Storage
from recording.storage import (
    S3_MIN_PART_SIZE,
    LocalStorage,
    MiB,
    ObjectMissing,
    Storage,
    StorageError,
    StoredObject,
    open_storage,
)
from recording.upload import UploadFailed, backoff_delay, upload
from tests.s3 import S3Server


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pattern(size: int, seed: int = 0) -> bytes:
    """Deterministic bytes where every offset differs from its neighbours (catches shifts)."""
    block = hashlib.sha256(f"seed {seed}".encode()).digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size] if size else b""


# ---- the same behaviour on both backends -------------------------------------------------------

async def test_put_stat_hash_get(storage: Storage, tmp_path: Path) -> None:
    data = pattern(100_000)
    stored = await storage.put_file(write(tmp_path / "a.webm", data), "rec1/tracks/a.webm")
    assert stored == StoredObject("rec1/tracks/a.webm", len(data), sha(data))
    assert (tmp_path / "a.webm").read_bytes() == data  # put_file never touches the source
    assert await storage.stat("rec1/tracks/a.webm") == StoredObject("rec1/tracks/a.webm",
                                                                    len(data))
    assert await storage.sha256("rec1/tracks/a.webm") == sha(data)
    await storage.get_file("rec1/tracks/a.webm", tmp_path / "out" / "copy.webm")
    assert (tmp_path / "out" / "copy.webm").read_bytes() == data
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["copy.webm"]  # no temp left


async def test_empty_file(storage: Storage, tmp_path: Path) -> None:
    stored = await storage.put_file(write(tmp_path / "e", b""), "rec1/empty")
    assert stored == StoredObject("rec1/empty", 0, sha(b""))
    assert await storage.read_range("rec1/empty", 0, 10) == b""
    assert await storage.sha256("rec1/empty") == sha(b"")


async def test_overwrite_replaces_the_content(storage: Storage, tmp_path: Path) -> None:
    await storage.put_file(write(tmp_path / "a", b"first version"), "rec1/a")
    await storage.put_file(write(tmp_path / "b", b"second"), "rec1/a")
    assert await storage.read_range("rec1/a", 0, 100) == b"second"
    assert await storage.stat("rec1/a") == StoredObject("rec1/a", 6)


async def test_read_range(storage: Storage, tmp_path: Path) -> None:
    data = pattern(70_000, seed=1)
    await storage.put_file(write(tmp_path / "f", data), "rec1/f")
    for start, end in [(0, 1), (0, 10), (5, 6), (1000, 65_536), (65_535, 65_537),
                       (69_999, 70_000), (0, 70_000), (12_345, 54_321)]:
        assert await storage.read_range("rec1/f", start, end) == data[start:end], (start, end)
    assert await storage.read_range("rec1/f", 69_990, 80_000) == data[69_990:]  # clamped
    assert await storage.read_range("rec1/f", 70_000, 70_010) == b""  # at the end
    assert await storage.read_range("rec1/f", 90_000, 90_010) == b""  # past the end
    assert await storage.read_range("rec1/f", 10, 10) == b""
    with pytest.raises(ValueError, match="range"):
        await storage.read_range("rec1/f", 10, 5)
    with pytest.raises(ValueError, match="range"):
        await storage.read_range("rec1/f", -1, 5)


async def test_missing_objects(storage: Storage, tmp_path: Path) -> None:
    assert await storage.stat("rec1/nothing") is None
    with pytest.raises(ObjectMissing, match="rec1/nothing"):
        await storage.sha256("rec1/nothing")
    with pytest.raises(ObjectMissing, match="rec1/nothing"):
        await storage.read_range("rec1/nothing", 0, 10)
    with pytest.raises(ObjectMissing, match="rec1/nothing"):
        await storage.get_file("rec1/nothing", tmp_path / "x")
    assert not (tmp_path / "x").exists()
    await storage.delete("rec1/nothing")  # deleting what is not there is fine


async def test_delete(storage: Storage, tmp_path: Path) -> None:
    await storage.put_file(write(tmp_path / "a", b"a"), "rec1/a")
    await storage.put_file(write(tmp_path / "b", b"b"), "rec1/b")
    await storage.delete("rec1/a")
    assert await storage.stat("rec1/a") is None
    assert await storage.list("rec1/") == ["rec1/b"]


async def test_list_is_a_string_prefix_and_sorted(storage: Storage, tmp_path: Path) -> None:
    source = write(tmp_path / "x", b"x")
    keys = ["rec1/manifest.json", "rec1/tracks/b.webm", "rec1/tracks/a.webm",
            "rec10/manifest.json", "other/z"]
    for key in keys:
        await storage.put_file(source, key)
    assert await storage.list() == sorted(keys)
    assert await storage.list("rec1/") == ["rec1/manifest.json", "rec1/tracks/a.webm",
                                           "rec1/tracks/b.webm"]
    assert await storage.list("rec1") == sorted(k for k in keys if k.startswith("rec1"))
    assert await storage.list("rec1/tracks/a") == ["rec1/tracks/a.webm"]
    assert await storage.list("nope/") == []


@pytest.mark.parametrize("key", ["../escape", "/etc/passwd", "a//b", "a/../b", "./a", "",
                                 ".hidden", "a/.tmp", "a\\b", "a/"])
async def test_bad_keys_are_refused(storage: Storage, tmp_path: Path, key: str) -> None:
    source = write(tmp_path / "x", b"x")
    with pytest.raises(ValueError, match="storage key"):
        await storage.put_file(source, key)
    with pytest.raises(ValueError, match="storage key"):
        await storage.stat(key)
    with pytest.raises(ValueError, match="storage key"):
        await storage.delete(key)


async def test_list_refuses_escaping_prefixes(storage: Storage) -> None:
    for prefix in ("../", "/etc", "a/../../"):
        with pytest.raises(ValueError, match="storage prefix"):
            await storage.list(prefix)


async def test_putting_a_missing_local_file_says_so(storage: Storage, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        await storage.put_file(tmp_path / "never-written", "rec1/a")
    assert await storage.stat("rec1/a") is None


async def test_check_passes(storage: Storage) -> None:
    await storage.check()
    assert await storage.list() == []  # the write probe leaves nothing visible


async def test_upload_deletes_the_local_copy_only_when_asked(storage: Storage,
                                                             tmp_path: Path) -> None:
    kept = write(tmp_path / "kept", b"keep me")
    await upload(storage, kept, "rec1/kept", keep_local=True, backoff_s=0)
    assert kept.exists()
    moved = write(tmp_path / "moved", b"move me")
    stored = await upload(storage, moved, "rec1/moved", keep_local=False, backoff_s=0)
    assert not moved.exists()
    assert stored.sha256 == sha(b"move me")
    assert await storage.sha256("rec1/moved") == sha(b"move me")


# ---- large files: S3 multipart ------------------------------------------------------------------

@pytest.mark.parametrize("size", [S3_MIN_PART_SIZE, S3_MIN_PART_SIZE + 1,
                                  2 * S3_MIN_PART_SIZE + 123_457])
async def test_large_files(storage: Storage, tmp_path: Path, s3_server: S3Server,
                           size: int) -> None:
    """With 5 MiB parts (the smallest S3 allows): exactly one part is a single PUT, one byte
    more is two parts, and 10 MiB + a bit is three; both backends store them intact."""
    if isinstance(storage, S3Storage):
        storage.part_size = S3_MIN_PART_SIZE
    data = os.urandom(size)
    stored = await storage.put_file(write(tmp_path / "big", data), "rec1/composite.mp4")
    assert stored == StoredObject("rec1/composite.mp4", size, sha(data))
    assert await storage.sha256("rec1/composite.mp4") == sha(data)
    middle = size // 2
    assert await storage.read_range("rec1/composite.mp4", middle - 7, middle + 9) == \
        data[middle - 7 : middle + 9]
    if isinstance(storage, S3Storage):
        etag = s3_server.client().head_object(
            Bucket=s3_server.bucket, Key=storage.prefix + "rec1/composite.mp4")["ETag"]
        parts = -(-size // S3_MIN_PART_SIZE)
        # a multipart object's ETag ends in "-<number of parts>"
        assert etag.strip('"').endswith(f"-{parts}") if parts > 1 else "-" not in etag, etag


# ---- backend specifics --------------------------------------------------------------------------

async def test_local_put_of_the_file_already_in_place_only_hashes(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "store")
    target = write(tmp_path / "store" / "rec1" / "tracks" / "a.webm", b"written in place")
    before = target.stat().st_mtime_ns
    stored = await store.put_file(target, "rec1/tracks/a.webm")
    assert stored == StoredObject("rec1/tracks/a.webm", 16, sha(b"written in place"))
    assert target.stat().st_mtime_ns == before
    # keep_local False must not delete the one and only copy
    await upload(store, target, "rec1/tracks/a.webm", keep_local=False, backoff_s=0)
    assert target.read_bytes() == b"written in place"
    assert await store.list() == ["rec1/tracks/a.webm"]


async def test_local_check_names_the_option(tmp_path: Path) -> None:
    not_a_folder = write(tmp_path / "file", b"")
    with pytest.raises(ConfigError, match=r"recording\.folder.*HUIZHEN_RECORDING__FOLDER"):
        await LocalStorage(not_a_folder / "recordings").check()


async def test_s3_check_missing_bucket_names_the_option(s3_server: S3Server) -> None:
    store = s3_server.storage(bucket="no-such-bucket")
    try:
        with pytest.raises(ConfigError, match=r"recording\.storage\.s3\.bucket.*does not exist"):
            await store.check()
    finally:
        await store.close()


async def test_s3_unreachable_endpoint(s3_server: S3Server) -> None:
    from tests.s3 import _free_port  # a port nobody listens on

    store = s3_server.storage(endpoint_url=f"http://127.0.0.1:{_free_port()}")
    try:
        with pytest.raises(ConfigError, match="endpoint_url"):
            await store.check()
        with pytest.raises(StorageError, match=r"cannot talk to .*endpoint_url"):
            await store.stat("rec1/a")
    finally:
        await store.close()


async def test_s3_without_credentials_names_the_variables(
        s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = s3_server.storage(access_key_id="", secret_access_key="")
    try:
        with pytest.raises(ConfigError, match=r"no credentials.*SECRET_ACCESS_KEY"):
            await store.check()
    finally:
        await store.close()


def test_s3_repr_and_description_hold_no_secret(s3_server: S3Server) -> None:
    store = s3_server.storage()
    assert s3_server.secret_access_key not in repr(store)
    assert s3_server.secret_access_key not in store.description


def test_open_storage_follows_the_settings(tmp_path: Path) -> None:
    local = open_storage(load_settings(Path("/dev/null"), data_dir=str(tmp_path)))
    assert isinstance(local, LocalStorage)
    assert local.folder == tmp_path / "recordings"
    s3 = open_storage(load_settings(Path("/dev/null"), recording={"storage": {
        "backend": "s3", "s3": {"bucket": "b", "endpoint_url": "http://minio:9000",
                                "prefix": "/huizhen/", "part_size_mb": 16}}}))
    assert isinstance(s3, S3Storage)
    assert (s3.bucket, s3.prefix, s3.part_size) == ("b", "huizhen/", 16 * MiB)


# ---- retries through a flaky proxy ---------------------------------------------------------------

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "content-length", "expect"}
SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")


class FlakyProxy:
    """A reverse proxy on loopback in front of moto: answers 503 to the requests ``fail``
    picks and forwards everything else untouched (Host included, so signatures hold)."""

    def __init__(self, upstream: str, fail: Callable[[web.Request], bool],
                 on_request: Callable[[web.Request, bool], None]) -> None:
        self.upstream, self.fail, self.on_request = upstream, fail, on_request
        self.url = ""

    async def __aenter__(self) -> FlakyProxy:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 * MiB)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()
        await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        failing = self.fail(request)
        self.on_request(request, failing)
        if failing:
            return web.Response(status=503, body=SLOW_DOWN, content_type="application/xml")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self._session.request(
                request.method, URL(self.upstream + request.raw_path, encoded=True),
                headers=headers, data=body, allow_redirects=False) as answer:
            data = await answer.read()
            out = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
            if request.method == "HEAD":
                response = web.StreamResponse(status=answer.status, headers=out)
                response.content_length = int(answer.headers.get("Content-Length", "0"))
                await response.prepare(request)
                return response
            return web.Response(status=answer.status, body=data, headers=out)


def is_upload(request: web.Request) -> bool:
    return request.method == "PUT"


@pytest.mark.parametrize("multipart", [False, True], ids=["single-put", "multipart"])
async def test_upload_that_fails_twice_then_works_loses_nothing(
        s3_server: S3Server, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        multipart: bool) -> None:
    data = os.urandom(2 * S3_MIN_PART_SIZE + 1000 if multipart else 300_000)
    local = write(tmp_path / "work" / "a.webm", data)
    failures_left = 2
    seen: list[tuple[str, bool, bool]] = []  # (method, failed, local file present)

    def fail(request: web.Request) -> bool:
        nonlocal failures_left
        # single PUT: the object PUT; multipart: the second part (the first went through)
        target = request.query.get("partNumber") == "2" if multipart else True
        if is_upload(request) and target and failures_left:
            failures_left -= 1
            return True
        return False

    def record(request: web.Request, failed: bool) -> None:
        seen.append((request.method, failed, local.exists()))

    async with FlakyProxy(s3_server.endpoint_url, fail, record) as proxy:
        store = s3_server.storage(endpoint_url=proxy.url, part_size=S3_MIN_PART_SIZE)
        try:
            with caplog.at_level(logging.WARNING, logger="huizhen.recording"):
                stored = await upload(store, local, "rec1/tracks/a.webm", attempts=3,
                                      backoff_s=0.01, max_backoff_s=0.05, keep_local=False)
            assert stored == StoredObject("rec1/tracks/a.webm", len(data), sha(data))
            assert await store.sha256("rec1/tracks/a.webm") == sha(data)
        finally:
            await store.close()

    assert not local.exists()  # removed after the verified upload...
    failed = [s for s in seen if s[1]]
    assert len(failed) == 2 and all(present for _, _, present in failed), seen
    reads = [s for s in seen if s[0] == "GET" and not s[1]]
    assert reads and reads[0][2], "the read-back verification ran while the local file was kept"
    # ...and our retry layer did the retrying: botocore sent each failed request once
    puts = [s for s in seen if s[0] == "PUT"]
    # multipart: parts 1+2 (2 fails, aborted) twice, then parts 1, 2, 3
    assert len(puts) == (2 + 2 + 3 if multipart else 3), seen
    warnings = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert [r.__dict__["attempt"] for r in warnings] == [1, 2]
    for record_ in caplog.records:
        assert s3_server.secret_access_key not in str(record_.__dict__)
    if multipart:  # the failed attempts' multipart uploads were aborted
        listing = s3_server.client().list_multipart_uploads(Bucket=s3_server.bucket,
                                                            Prefix=store.prefix)
        assert not listing.get("Uploads"), listing


async def test_upload_that_always_fails_keeps_the_local_copy(
        s3_server: S3Server, tmp_path: Path) -> None:
    data = b"the only copy of a consultation" * 1000
    local = write(tmp_path / "work" / "a.webm", data)
    attempts: list[str] = []

    async with FlakyProxy(s3_server.endpoint_url, is_upload,
                          lambda r, failed: attempts.append(r.method) if failed else None
                          ) as proxy:
        store = s3_server.storage(endpoint_url=proxy.url)
        try:
            with pytest.raises(UploadFailed) as info:
                await upload(store, local, "rec1/tracks/a.webm", attempts=3, backoff_s=0.01,
                             keep_local=False)
            assert await store.stat("rec1/tracks/a.webm") is None
        finally:
            await store.close()
    assert attempts == ["PUT"] * 3
    assert local.read_bytes() == data
    message = str(info.value)
    assert "3 times" in message and str(local) in message and "503" in message
    assert s3_server.secret_access_key not in message


async def test_upload_of_a_missing_file_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(UploadFailed, match="does not exist"):
        await upload(LocalStorage(tmp_path / "s"), tmp_path / "nope", "rec1/a", attempts=5,
                     backoff_s=10)


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    import random

    rng = random.Random(7)
    delays = [[backoff_delay(n, 1.0, 10.0, rng) for n in range(1, 7)] for _ in range(50)]
    for row in delays:
        for n, delay in enumerate(row, start=1):
            ceiling = min(10.0, 2 ** (n - 1))
            assert ceiling / 2 <= delay <= ceiling
    assert len({round(row[2], 6) for row in delays}) > 10  # jittered, not in step
