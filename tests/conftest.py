"""Shared fixtures: a running Huizhen server on 127.0.0.1 with a fresh data folder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from tests.browser import launch
from tests.harness import Server, running_server
from tests.pg import pg_url  # noqa: F401  (fixture)


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
