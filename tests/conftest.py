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
