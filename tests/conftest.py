"""Shared fixtures: a running Huizhen server on 127.0.0.1 with a fresh data folder."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from tests.browser import launch
from tests.harness import LOOPBACK, Server, running_server
from tests.logscan import LogScan
from tests.pg import pg_url  # noqa: F401  (fixture)
from tests.s3 import s3_server, storage  # noqa: F401  (fixtures)

#: test modules that time nothing real-time (no media rate, latency, frame count, gap or
#: duration is asserted; media, where there is any, only has to arrive, and the benchmarks'
#: smoke test checks only that they report): marked ``parallel``, they run three at a time in
#: the suite's first phase (scripts/run-tests.sh); everything else runs alone
PARALLEL_SAFE = {
    "api", "appointments", "aiortc_hooks", "audit", "audit_api", "auth", "bandwidth",
    "bench_smoke", "broadcast", "capture", "case_images", "cli", "composite", "config",
    "config_keys", "crypto",
    "db", "documents", "forwarder", "forwarder_stream", "hosts", "ice_tls", "invites",
    "kind_role_actions", "lifecycle", "loadtest", "manifest", "moderation", "no_transcoding",
    "observability", "openapi", "policy", "protocol", "recording_control", "recording_db",
    "records_access", "records_fhir", "records_retention", "records_segments", "restart",
    "retention_documents", "rtpframes", "rxstamps", "send_path", "signing", "storage", "store",
    "webhooks",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem.removeprefix("test_") in PARALLEL_SAFE:
            item.add_marker(pytest.mark.parallel)


@pytest.fixture(autouse=True, scope="session")
def no_secrets_in_logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Nothing logged during the whole session — in this process, or by the servers the tests
    run in their own — holds a token, an SDP credential or a patient's name
    (tests/logscan.py). The project's loggers log at INFO meanwhile, as in production."""
    scan = LogScan()
    root, project = logging.getLogger(), logging.getLogger("huizhen")
    level = project.level
    if level == logging.NOTSET:
        project.setLevel(logging.INFO)
    root.addHandler(scan)
    yield
    root.removeHandler(scan)
    project.setLevel(level)
    scan.scan_files(tmp_path_factory.getbasetemp())
    if scan.found:
        pytest.fail(scan.report(), pytrace=False)


@pytest.fixture(autouse=True, scope="session")
def loopback_ice() -> None:
    """Clients in the test process gather ICE candidates on 127.0.0.1 (aioice skips loopback
    by itself). An in-process server installs the same policy; a server in its own process
    does not, and then only this makes the test's own clients reachable — in the tests'
    private network namespace, loopback is all there is."""
    LOOPBACK.install()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(tmp_path) as srv:
        yield srv


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian chromium set up for WebRTC over loopback (tests/browser.py)."""
    async with async_playwright() as pw:
        b = await launch(pw)
        yield b
        await b.close()
