"""bench/fanout.py's servers under test: Huizhen (a UDP port per connection, or one shared UDP
port for all media with ``--udp-port``), the aiortc MediaRelay baseline (bench/relay_baseline.py)
and Janus's VideoRoom (with ``--janus``), each started with a configuration of its own.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any

import _paths  # noqa: F401  (first: the project's packages before bench/'s scripts)
import aiohttp
from fanout_procs import (
    BENCH,
    BenchError,
    Processes,
    Worker,
    free_port,
    free_udp_port,
    worker_env,
)

WORKER = BENCH / "subscriber.py"
RELAY_SERVER = BENCH / "relay_baseline.py"
JANUS_ROOM = 1234  # subscriber_baselines.JANUS_ROOM
API_KEY = "bench"
AUDIENCE = "huizhen"
#: the publisher's encoder ceiling, kbit/s (set from --publisher-kbps)
PUBLISHER_KBPS = 1000


# ---- the servers under test ------------------------------------------------------------------
class Target:
    name = ""
    label = ""
    #: bench/subscriber.py's ``--target`` for this server (empty: ``name``)
    client = ""
    ready_path = "/readyz"
    #: the server's cost follows the publisher's bitrate (it forwards it): before measuring,
    #: wait until that bitrate is back near the highest seen
    gate_on_publisher_bitrate = False

    def __init__(self, procs: Processes, tmp: Path) -> None:
        self.procs = procs
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: Worker | None = None
        self.peak_mbps = 0.0  # the publisher's highest 2 s bitrate so far

    async def start_server(self) -> Worker:
        raise NotImplementedError

    async def setup(self) -> None:
        """After the server is ready (create rooms, …)."""

    async def worker_args(self, role: str, index: int) -> list[str]:
        return ["--target", self.client or self.name, "--role", role, "--server", self.url]

    async def subscriber_count(self) -> int | None:
        """Subscribers the server still holds, if it can tell."""
        return None

    async def spawn_worker(self, role: str, index: int, ready_timeout: float, n: int = 0
                           ) -> Worker:
        args = [sys.executable, str(WORKER), *await self.worker_args(role, index),
                "--ready-timeout", str(ready_timeout), "--max-kbps", str(PUBLISHER_KBPS)]
        name = (f"{self.name}-publisher" if role == "publish"
                else f"{self.name}-n{n:02d}-sub{index:02d}")
        return await self.procs.spawn(name, args, env=worker_env())


class HuizhenTarget(Target):
    """Huizhen with a UDP port per media connection (``media.udp_port: 0``)."""

    name = "huizhen"
    label = "Huizhen SFU (RTP forwarding, no decode/encode), a UDP port per connection"
    gate_on_publisher_bitrate = True

    def __init__(self, procs: Processes, tmp: Path) -> None:
        super().__init__(procs, tmp)
        self.secret = secrets.token_urlsafe(36)
        self.room = ""
        self.udp_port = 0

    @property
    def data_dir(self) -> Path:
        return self.tmp / f"{self.name}-data"

    def server_env(self) -> dict[str, str]:
        """The server's environment: its whole configuration (no config file)."""
        env = worker_env()
        env.update({
            "HUIZHEN_CONFIG": os.devnull,
            "HUIZHEN_MODE": "dev",
            "HUIZHEN_DATA_DIR": str(self.data_dir),
            "HUIZHEN_SERVER__HOST": "127.0.0.1",
            "HUIZHEN_SERVER__PORT": str(self.port),
            "HUIZHEN_AUTH__API_KEYS": json.dumps([{"key": API_KEY, "secret": self.secret}]),
            "HUIZHEN_ICE__GATHER_ADDRESSES": '["127.0.0.1"]',
            "HUIZHEN_ICE__STUN_SERVERS": "[]",
            "HUIZHEN_ICE__TURN_SERVERS": "[]",
            "HUIZHEN_LOGGING__LEVEL": "WARNING",
            "HUIZHEN_MEDIA__UDP_PORT": str(self.udp_port),
        })
        return env

    async def start_server(self) -> Worker:
        self.data_dir.mkdir()
        return await self.procs.spawn(
            f"{self.name}-server", [sys.executable, "-m", "huizhen.cli", "serve"],
            env=self.server_env(), cwd=self.tmp, exits_on_eof=False, server=True)

    async def api(self, path: str, body: dict[str, Any], expect: int = 201) -> dict[str, Any]:
        """POST to the REST API with an API token; the reply, if its status is ``expect``."""
        from signaling.auth import mint_api_token

        headers = {"Authorization": "Bearer " + mint_api_token(API_KEY, self.secret, AUDIENCE)}
        async with aiohttp.ClientSession() as http, http.post(
                self.url + path, json=body, headers=headers) as resp:
            data: dict[str, Any] = await resp.json(content_type=None)
            if resp.status != expect:
                raise BenchError(f"POST {path}: HTTP {resp.status}: {data}")
            return data

    async def setup(self) -> None:
        room = await self.api("/api/rooms", {"kind": "broadcast", "title": "fan-out benchmark"})
        self.room = str(room["id"])

    async def worker_args(self, role: str, index: int) -> list[str]:
        identity = "presenter" if role == "publish" else f"viewer-{index}-{secrets.token_hex(3)}"
        token = await self.api(f"/api/rooms/{self.room}/tokens", {
            "identity": identity, "name": identity, "ttl_s": 3600,
            "role": "presenter" if role == "publish" else "viewer"})
        return [*await super().worker_args(role, index), "--room", self.room,
                "--token", str(token["token"])]


class HuizhenOnePortTarget(HuizhenTarget):
    """Huizhen with every media connection on one shared UDP port (``media.udp_port``, the
    default; media/udpmux.py), measured beside the per-connection ports with ``--udp-port``."""

    name = "huizhen-udp"
    label = "Huizhen SFU, one UDP port for all media (media.udp_port, the default)"
    client = "huizhen"

    def __init__(self, procs: Processes, tmp: Path, udp_port: int = 0) -> None:
        """``udp_port``: the shared media port (0: a free one on 127.0.0.1)."""
        super().__init__(procs, tmp)
        self.udp_port = udp_port or free_udp_port()


class RelayTarget(Target):
    name = "relay"
    label = "aiortc MediaRelay baseline (decode once, re-encode per subscriber)"

    async def start_server(self) -> Worker:
        return await self.procs.spawn(
            "relay-server", [sys.executable, str(RELAY_SERVER), "--port", str(self.port)],
            env=worker_env(), cwd=self.tmp, exits_on_eof=False, server=True)

    async def subscriber_count(self) -> int | None:
        async with aiohttp.ClientSession() as http, http.get(self.url + "/stats") as resp:
            return int((await resp.json())["subscribers"])


JANUS_CONFIG = """\
general: {{
    configs_folder = "{conf}"
    plugins_folder = "{conf}/plugins"
    transports_folder = "{conf}/transports"
    events_folder = "{conf}/none"
    loggers_folder = "{conf}/none"
    debug_level = 3
    session_timeout = 0
    server_name = "fanout-bench"
}}
media: {{
    ipv6 = false
}}
nat: {{
    ice_enforce_list = "{iface}"
    ignore_mdns = true
    nice_debug = false
}}
"""
JANUS_HTTP_CONFIG = """\
general: {{
    base_path = "/janus"
    http = true
    port = {port}
    ip = "127.0.0.1"
    https = false
}}
admin: {{
    admin_http = false
    admin_https = false
}}
"""
#: one room for the benchmark's publisher; Janus sends it REMB at ``bitrate`` (the ceiling the
#: other two servers' publishers have too)
JANUS_ROOM_CONFIG = """\
general: {{
}}
room-{room}: {{
    description = "fan-out benchmark"
    publishers = 1
    bitrate = {bitrate}
    fir_freq = 0
    videocodec = "vp8"
    audiocodec = "opus"
}}
"""


#: Janus gathers candidates through libnice, which never uses a loopback interface, and cannot
#: send from another interface's address to 127.0.0.1. So with --janus the whole benchmark runs
#: in a private network namespace (nothing in it can reach another machine) holding lo and a
#: veth pair, one end of which carries 127.0.0.2; Janus and its clients use that address.
JANUS_IFACE = "hzb0"
JANUS_ICE_ADDRESS = "127.0.0.2"
NETNS_ENV = "HUIZHEN_BENCH_NETNS"
NETNS_SETUP = (f"ip link set lo up && ip link add {JANUS_IFACE} type veth peer name hzb1 && "
               f"ip addr add {JANUS_ICE_ADDRESS}/32 dev {JANUS_IFACE} && "
               f"ip link set {JANUS_IFACE} up && ip link set hzb1 up")



def janus_paths() -> tuple[str, Path] | None:
    """The Janus binary and its plugins' folder (Debian's ``janus`` package), if installed."""
    binary = shutil.which("janus")
    libs = [*sorted(Path("/usr/lib").glob("*/janus")), Path("/usr/lib/janus"),
            Path("/usr/local/lib/janus")]
    lib = next((d for d in libs if (d / "plugins" / "libjanus_videoroom.so").exists()), None)
    return (binary, lib) if binary and lib else None


class JanusTarget(Target):
    name = "janus"
    label = "Janus VideoRoom (C SFU: RTP forwarding, no decode/encode)"
    gate_on_publisher_bitrate = True
    ready_path = "/janus/info"

    async def start_server(self) -> Worker:
        found = janus_paths()
        if found is None:
            raise BenchError("--janus needs Janus (Debian: apt-get install -y janus)")
        binary, lib = found
        conf = self.tmp / "janus"
        for sub in ("plugins", "transports", "none"):
            (conf / sub).mkdir(parents=True)
        # only the VideoRoom plugin and the HTTP transport: nothing else listens or runs
        (conf / "plugins" / "libjanus_videoroom.so").symlink_to(
            lib / "plugins" / "libjanus_videoroom.so")
        (conf / "transports" / "libjanus_http.so").symlink_to(
            lib / "transports" / "libjanus_http.so")
        (conf / "janus.jcfg").write_text(JANUS_CONFIG.format(conf=conf, iface=JANUS_IFACE))
        (conf / "janus.transport.http.jcfg").write_text(JANUS_HTTP_CONFIG.format(port=self.port))
        (conf / "janus.plugin.videoroom.jcfg").write_text(JANUS_ROOM_CONFIG.format(
            room=JANUS_ROOM, bitrate=PUBLISHER_KBPS * 1000))
        return await self.procs.spawn(
            "janus-server", [binary, "--config", str(conf / "janus.jcfg"),
                             "--configs-folder", str(conf), "--disable-colors"],
            env=worker_env(), cwd=self.tmp, exits_on_eof=False, server=True)

    async def worker_args(self, role: str, index: int) -> list[str]:
        return ["--target", self.name, "--role", role, "--server", self.url + "/janus",
                "--ice-address", JANUS_ICE_ADDRESS]


