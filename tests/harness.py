"""Start a real Huizhen server in-process on 127.0.0.1 and drive it like a hospital system."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from aiohttp import web

from huizhen.config import ApiKey, Settings, generate_secret, load_settings
from media.ice import IcePolicy
from sdk.participant import Participant
from signaling.app import create_app
from signaling.auth import mint_api_token
from tests.logscan import watch_name

LOOPBACK = IcePolicy(gather_addresses=["127.0.0.1"])


def with_claims(payload: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with claims replaced by ``changes``; a ``None`` value removes the claim."""
    for name, value in changes.items():
        if value is None:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


def sign(server: Server, payload: dict[str, Any], secret: str | None = None) -> str:
    return jwt.encode(payload, secret or server.settings.primary_key.secret, algorithm="HS256")


def unsigned(payload: dict[str, Any]) -> str:
    """An ``alg: none`` token, as an attacker would craft it."""
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return part({"alg": "none", "typ": "JWT"}) + "." + part(payload) + "."


async def wait_for(predicate: Any, timeout: float = 5.0, interval: float = 0.1) -> bool:
    """Wait until the async ``predicate()`` is true (checked once more at the deadline)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(interval)
    return bool(await predicate())


def figures(test: str, **values: Any) -> None:
    """Print what a media test measured, one line (shown with ``pytest -s``), for the notes
    and for anyone reading a CI log; nothing is asserted here."""
    shown = ", ".join(f"{k}={round(v, 3) if isinstance(v, float) else v}"
                      for k, v in values.items())
    print(f"\nFIGURES {test}: {shown}", flush=True)


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_handed_out: set[int] = set()  # ports free_port gave this process


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A free port for a test server to listen on, picked below the kernel's ephemeral range:
    the ports of other processes' outgoing connections and unbound sockets come from that
    range, and one of them could take a port picked there before the server binds it (a
    coturn listener failed that way in CI with the parallel tests running)."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randint(max(1024, low - 12000), low - 1)
        if port in _handed_out:  # free again until its server binds it
            continue
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _handed_out.add(port)
            return port
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_port() -> int:
    return free_port(socket.SOCK_DGRAM)


TEST_HEARTBEAT_S = 10.0


def make_settings(data_dir: Path, port: int | None = None, **overrides: Any) -> Settings:
    key = ApiKey(key="test-key", secret=generate_secret())
    base: dict[str, Any] = {
        "mode": "dev",
        "data_dir": str(data_dir),
        "server": {"host": "127.0.0.1", "port": port or free_port()},
        # the default mode (one UDP port for all media), on a port of each server's own
        "media": {"udp_port": free_udp_port()},
        "auth": {"api_keys": [key.model_dump()]},
        "logging": {"level": "WARNING", "format": "text"},
        # tests run the recording worker themselves when they need it (recording.worker)
        "recording": {"workers": 0},
        "metrics": {"token": generate_secret()},
    }
    if os.environ.get("HUIZHEN_TEST_STARVED"):
        # the parallel set runs at nice 19 beside the real-time tests (scripts/run-tests.sh):
        # a starved test process — server and clients in one event loop — can miss the 1.5 s
        # pong deadline of the 3 s default and lose a socket it did not mean to. Only there:
        # the web client paces its own pings by it (joined.heartbeat_s), and the test of the
        # heartbeat itself (tests/test_lifecycle.py) sets the default
        base["signaling"] = {"heartbeat_s": TEST_HEARTBEAT_S}
    for name, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(name), dict):
            base[name] = {**base[name], **value}
        else:
            base[name] = value
    return load_settings(Path("/dev/null"), **base)


class HospitalSystem:
    """Drives a server's REST API as a hospital system would; subclasses provide ``api``."""

    url: str
    settings: Settings

    def api_headers(self) -> dict[str, str]:
        key = self.settings.primary_key
        token = mint_api_token(key.key, key.secret, self.settings.auth.audience)
        return {"Authorization": f"Bearer {token}"}

    async def api(self, method: str, path: str, json: Any = None,
                  headers: dict[str, str] | None = None) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as http, http.request(
                method, self.url + path, json=json,
                headers=self.api_headers() if headers is None else headers) as resp:
            return resp.status, await resp.json()

    async def create_room(self, kind: str = "mdt", title: str = "test room") -> str:
        status, body = await self.api("POST", "/api/rooms", {"kind": kind, "title": title})
        assert status == 201, body
        return str(body["id"])

    def metrics_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.metrics.token.get_secret_value()}"}

    async def scrape(self, headers: dict[str, str] | None = None) -> tuple[int, str]:
        """GET /metrics (with the metrics token unless ``headers`` are given)."""
        async with aiohttp.ClientSession() as http, http.get(
                self.url + "/metrics",
                headers=self.metrics_headers() if headers is None else headers) as resp:
            return resp.status, await resp.text()

    async def join_url(self, room_id: str, identity: str, role: str = "specialist",
                       name: str | None = None, ttl_s: int = 600) -> str:
        watch_name(role, name)  # a patient's name must never be logged (tests/logscan.py)
        status, body = await self.api("POST", f"/api/rooms/{room_id}/tokens", {
            "identity": identity, "name": name or identity, "role": role, "ttl_s": ttl_s})
        assert status == 201, body
        return str(body["join_url"])

    async def token(self, room_id: str, identity: str, role: str = "specialist",
                    name: str | None = None, ttl_s: int = 600) -> str:
        url = await self.join_url(room_id, identity, role, name, ttl_s)
        return url.split("#t=", 1)[1]

    async def participant(self, room_id: str, identity: str, role: str = "specialist"
                          ) -> Participant:
        p = Participant(self.url, room_id, await self.token(room_id, identity, role),
                        ice=LOOPBACK)
        await p.join()
        return p


class Server(HospitalSystem):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runner: web.AppRunner | None = None
        self.app: web.Application | None = None
        self.http: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return self.settings.base_url

    async def start(self) -> Server:
        self.app = create_app(self.settings)
        self.runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.settings.server.port)
        await site.start()
        self.http = aiohttp.ClientSession()
        return self

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@contextlib.asynccontextmanager
async def running_server(data_dir: Path, **overrides: Any):  # type: ignore[no-untyped-def]
    server = Server(make_settings(data_dir, **overrides))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class ServerProcess(HospitalSystem):
    """``huizhen serve`` in its own process (for restarts, kills and process-level checks)."""

    def __init__(self, data_dir: Path, port: int | None = None, secret: str | None = None,
                 env: dict[str, str] | None = None, entry: list[str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.secret = secret or generate_secret()
        self.extra_env = env or {}
        self.entry = entry or ["-m", "huizhen.cli", "serve"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.settings = make_settings(data_dir, port=self.port)
        self.settings.auth.api_keys[0].secret = self.secret
        self.log_path = data_dir / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "HUIZHEN_MODE": "dev",
            "HUIZHEN_DATA_DIR": str(self.data_dir),
            "HUIZHEN_SERVER__HOST": "127.0.0.1",
            "HUIZHEN_SERVER__PORT": str(self.port),
            "HUIZHEN_AUTH__API_KEYS": json.dumps([{"key": "test-key", "secret": self.secret}]),
            "HUIZHEN_LOGGING__LEVEL": "INFO",
            "HUIZHEN_RECORDING__WORKERS": "0",
            "HUIZHEN_METRICS__TOKEN": self.settings.metrics.token.get_secret_value(),
            "HUIZHEN_MEDIA__UDP_PORT": str(self.settings.media.udp_port),
            "HUIZHEN_SIGNALING__HEARTBEAT_S": str(self.settings.signaling.heartbeat_s),
            "HUIZHEN_CONFIG": "/dev/null",
        })
        env.update(self.extra_env)
        return env

    async def start(self, timeout: float = 20) -> ServerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(  # noqa: ASYNC220 - starting, not waiting
            [sys.executable, *self.entry], env=self.env(),
                                     stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(self.url + "/readyz") as resp:
                        if resp.status == 200:
                            return self
                await asyncio.sleep(0.1)
        raise TimeoutError(f"server not ready: {self.log_path.read_text()[-2000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
