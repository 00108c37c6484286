"""Shared fixtures: a running Huizhen server on 127.0.0.1 with a fresh data folder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from tests.browser import launch
from tests.harness import LOOPBACK, Server, running_server
from tests.pg import pg_url  # noqa: F401  (fixture)
from tests.s3 import s3_server, storage  # noqa: F401  (fixtures)


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
