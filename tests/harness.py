"""Start a real Huizhen server in-process on 127.0.0.1 and drive it like a hospital system."""

from __future__ import annotations

import contextlib
import secrets
import socket
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from huizhen.client import Participant
from huizhen.config import ApiKey, Settings, load_settings
from media.ice import IcePolicy
from signaling.app import create_app
from signaling.auth import mint_api_token
from signaling.keys import ROOMS

LOOPBACK = IcePolicy(gather_addresses=["127.0.0.1"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_settings(data_dir: Path, port: int | None = None, **overrides: Any) -> Settings:
    key = ApiKey(key="test-key", secret=secrets.token_urlsafe(36))
    base: dict[str, Any] = {
        "mode": "dev",
        "data_dir": str(data_dir),
        "server": {"host": "127.0.0.1", "port": port or free_port()},
        "auth": {"api_keys": [key.model_dump()]},
        "logging": {"level": "WARNING", "format": "text"},
    }
    for name, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(name), dict):
            base[name] = {**base[name], **value}
        else:
            base[name] = value
    return load_settings(Path("/dev/null"), **base)


class Server:
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

    @property
    def rooms(self) -> Any:
        assert self.app is not None
        return self.app[ROOMS]

    # ---- REST as a hospital system --------------------------------------------------------
    def api_headers(self) -> dict[str, str]:
        key = self.settings.primary_key
        token = mint_api_token(key.key, key.secret, self.settings.auth.audience)
        return {"Authorization": f"Bearer {token}"}

    async def api(self, method: str, path: str, json: Any = None,
                  headers: dict[str, str] | None = None) -> tuple[int, Any]:
        assert self.http is not None
        async with self.http.request(method, self.url + path, json=json,
                                     headers=headers if headers is not None
                                     else self.api_headers()) as resp:
            return resp.status, await resp.json()

    async def create_room(self, kind: str = "mdt", title: str = "test room") -> str:
        status, body = await self.api("POST", "/api/rooms", {"kind": kind, "title": title})
        assert status == 201, body
        return str(body["id"])

    async def token(self, room_id: str, identity: str, role: str = "specialist",
                    name: str | None = None, ttl_s: int = 600) -> str:
        status, body = await self.api("POST", f"/api/rooms/{room_id}/tokens", {
            "identity": identity, "name": name or identity, "role": role, "ttl_s": ttl_s})
        assert status == 201, body
        return str(body["token"])

    async def participant(self, room_id: str, identity: str, role: str = "specialist"
                          ) -> Participant:
        token = await self.token(room_id, identity, role)
        p = Participant(self.url, room_id, token, ice=LOOPBACK)
        await p.join()
        return p


@contextlib.asynccontextmanager
async def running_server(data_dir: Path, **overrides: Any):  # type: ignore[no-untyped-def]
    server = Server(test_settings(data_dir, **overrides))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
