"""PostgreSQL for tests: the session-scoped ``pg_url`` fixture and helpers.

Use it from a test module with ``from pg import pg_url  # noqa: F401``. Where the server comes
from, in order of preference:

1. ``HUIZHEN_TEST_PG_URL`` (a ``postgresql+asyncpg://`` URL to an empty database you provide);
2. a server on 127.0.0.1:5432 accepting user ``postgres`` without a password: a database
   ``huizhen_test_<random>`` is created there and dropped afterwards;
3. a throwaway server (``initdb`` + ``pg_ctl`` into a temporary folder, trust auth, a free
   port), stopped and deleted afterwards. As root it runs as the ``postgres`` user.

``HUIZHEN_TEST_PG_FORCE_THROWAWAY=1`` skips step 2. Without any of these the tests fail (they
are never skipped): run ``make test``, which installs PostgreSQL.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

ENV_URL = "HUIZHEN_TEST_PG_URL"
ENV_FORCE_THROWAWAY = "HUIZHEN_TEST_PG_FORCE_THROWAWAY"
LOCAL_HOST, LOCAL_PORT, LOCAL_USER = "127.0.0.1", 5432, "postgres"
INSTALL_HINT = "run `make test` (it installs postgresql) or set HUIZHEN_TEST_PG_URL"

T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on its own loop, even when called from async code."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def asyncpg_dsn(url: str) -> str:
    """``postgresql+asyncpg://…`` (SQLAlchemy) to ``postgresql://…`` (asyncpg/libpq)."""
    scheme, sep, rest = url.partition("://")
    return f"postgresql{sep}{rest}" if scheme.startswith("postgres") else url


def sqlalchemy_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return f"postgresql+asyncpg{sep}{rest}" if scheme in ("postgres", "postgresql") else url


async def drop_all_tables(url: str) -> None:
    """Empty the database behind ``url`` (every table of the current schema)."""
    conn = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        names = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
        if names:
            tables = ", ".join(f'"{row["tablename"]}"' for row in names)
            await conn.execute(f"DROP TABLE IF EXISTS {tables} CASCADE")
    finally:
        await conn.close()


# 2. the local server on 127.0.0.1:5432


async def _admin_connect() -> asyncpg.Connection | None:
    for database in ("postgres", "test"):
        try:
            return await asyncpg.connect(
                host=LOCAL_HOST, port=LOCAL_PORT, user=LOCAL_USER, database=database, timeout=3
            )
        except (OSError, asyncpg.PostgresError):
            continue
    return None


async def _create_local_database() -> str | None:
    conn = await _admin_connect()
    if conn is None:
        return None
    name = f"huizhen_test_{secrets.token_hex(6)}"
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def _drop_local_database(name: str) -> None:
    conn = await _admin_connect()
    if conn is None:
        return
    try:
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except asyncpg.PostgresSyntaxError:  # before PostgreSQL 13
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await conn.close()


# 3. a throwaway server


def _find_binaries() -> tuple[Path, Path] | None:
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return Path(initdb).resolve(), Path(pg_ctl).resolve()

    def version(path: str) -> float:
        try:
            return float(Path(path).parent.parent.name)
        except ValueError:
            return 0.0

    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        initdb_path, pg_ctl_path = Path(bindir, "initdb"), Path(bindir, "pg_ctl")
        if initdb_path.exists() and pg_ctl_path.exists():
            return initdb_path, pg_ctl_path
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCAL_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class ThrowawayServer:
    """A PostgreSQL cluster in a temporary folder, trust auth, listening on 127.0.0.1."""

    def __init__(self, initdb: Path, pg_ctl: Path) -> None:
        self.initdb, self.pg_ctl = initdb, pg_ctl
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="huizhen-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_user: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(self.root, ignore_errors=True)
                pytest.fail(
                    "running as root and there is no `postgres` user to run a throwaway "
                    f"PostgreSQL server; {INSTALL_HINT}",
                    pytrace=False,
                )
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@{LOCAL_HOST}:{self.port}/postgres"

    def _call(self, *args: str | Path) -> None:
        cmd = [*self._as_user, *map(str, args)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}{done.stderr}{log}"
            )

    def start(self) -> None:
        self._call(
            self.initdb, "-D", self.data, "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--no-locale", "--no-sync",
        )  # fmt: skip
        options = (
            f"-p {self.port} -c listen_addresses={LOCAL_HOST} -k {self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._call(self.pg_ctl, "-D", self.data, "-l", self.log, "-o", options, "-w", "start")

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._call(self.pg_ctl, "-D", self.data, "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A ``postgresql+asyncpg://`` URL to a fresh, empty database (see module docstring)."""
    if url := os.environ.get(ENV_URL):
        yield sqlalchemy_url(url)
        return

    if not os.environ.get(ENV_FORCE_THROWAWAY):
        name = _run(_create_local_database())
        if name is not None:
            try:
                yield f"postgresql+asyncpg://{LOCAL_USER}@{LOCAL_HOST}:{LOCAL_PORT}/{name}"
            finally:
                _run(_drop_local_database(name))
            return

    binaries = _find_binaries()
    if binaries is None:
        pytest.fail(
            f"PostgreSQL tests need a server: no {ENV_URL}, no usable server on "
            f"{LOCAL_HOST}:{LOCAL_PORT} and no initdb/pg_ctl on PATH or under "
            f"/usr/lib/postgresql/*/bin; {INSTALL_HINT}",
            pytrace=False,
        )
    server = ThrowawayServer(*binaries)
    try:
        server.start()
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        server.stop()
        pytest.fail(f"could not start a throwaway PostgreSQL server: {exc}", pytrace=False)
    try:
        yield server.url
    finally:
        server.stop()
