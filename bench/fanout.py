"""Fan-out benchmark: server CPU per extra subscriber, Huizhen vs aiortc's MediaRelay.

One publisher sends a 640x480 VP8 test pattern (~30 fps, bitrate set by REMB) into a broadcast
room; for each N, N subscribers (one process each, no decoding) receive it. After a warm-up,
the server process's CPU (utime+stime from /proc/<pid>/stat, in cores) and every subscriber's
received frame rate are measured over the same window. The slope of server CPU against N
(least squares) is the cost of one more subscriber. The same is done against
bench/relay_baseline.py (decode once, re-encode per subscriber) and the two are compared.

In the same window, the latency the server adds is measured: publisher send → subscriber
arrival of each RTP packet (matched by a hash of its payload, which Huizhen forwards
unchanged), and of the first packet of each frame (matched by RTP timestamp; the only way for
the re-encoding baseline). All processes read the same clock (CLOCK_MONOTONIC).

Every process is started here, in its own process group, on 127.0.0.1 only, and every group is
killed on exit (also on Ctrl-C, SIGTERM or an error). Progress goes to stderr; the result goes
to stdout (tables, or one JSON object with ``--json``). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import contextlib
import importlib.metadata
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _paths  # noqa: F401  (first: the project's packages before bench/'s scripts)
import aiohttp

from huizhen.procgroup import die_with_parent, signal_group, stop_group

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WORKER = BENCH / "subscriber.py"
RELAY_SERVER = BENCH / "relay_baseline.py"
JANUS_ROOM = 1234  # subscriber.JANUS_ROOM
CLK_TCK = os.sysconf("SC_CLK_TCK")
API_KEY = "bench"
AUDIENCE = "huizhen"
STARTED = time.monotonic()
#: a worker's JSON line can hold every packet of a window (~45 bytes each): no 64 KiB limit
LINE_LIMIT = 64 * 1024 * 1024
#: publisher packets sent up to this long before the window are kept for matching (a
#: saturated MediaRelay queues frames for seconds)
LATENCY_LOOKBACK_S = 8.0


class BenchError(Exception):
    pass


def progress(message: str) -> None:
    print(f"[fanout {time.monotonic() - STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- CPU of a process (and its threads and descendants) from /proc ---------------------------
def _proc_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as f:
                for child in f.read().split():
                    out += [int(child), *_descendants(int(child))]
    return out


def host_busy_seconds() -> float:
    """CPU time the whole machine spent busy (all cores, every process), from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    busy = sum(values[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """utime+stime of ``pid`` (all its threads) and of its live descendants, in seconds."""
    ticks = 0
    for p in [pid, *_descendants(pid)]:
        with contextlib.suppress(OSError):
            ticks += _proc_ticks(p)
    return ticks / CLK_TCK


# ---- processes ---------------------------------------------------------------------------------
@dataclass
class Worker:
    """A child process in its own process group; JSON lines on its stdout are events."""

    name: str
    proc: asyncio.subprocess.Process
    log_path: Path
    #: True for workers that leave and exit when their stdin closes; servers get SIGTERM
    exits_on_eof: bool = True
    events: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            with contextlib.suppress(ValueError):
                message = json.loads(line)
                if isinstance(message, dict) and "event" in message:
                    await self.events.put(message)
        await self.events.put({"event": "exit"})

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"    | {line}" for line in text[-lines:])

    async def event(self, name: str, timeout: float) -> dict[str, Any]:
        try:
            message = await asyncio.wait_for(self.events.get(), timeout)
        except TimeoutError:
            raise BenchError(f"{self.name}: no {name!r} after {timeout:.0f} s\n"
                             f"{self.log_tail()}") from None
        if message["event"] != name:
            raise BenchError(f"{self.name}: expected {name!r}, got {message}\n"
                             f"{self.log_tail()}")
        return message

    async def send(self, line: str) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            with contextlib.suppress(OSError):
                self.proc.stdin.write(line.encode() + b"\n")
                await self.proc.stdin.drain()

    def signal_group(self, sig: signal.Signals) -> None:
        signal_group(self.proc, sig)

    async def stop(self, grace: float = 8) -> None:
        """Close stdin (workers leave and exit), then SIGTERM, then SIGKILL the whole group."""
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        await stop_group(self.proc, grace if self.exits_on_eof else 0.0, term_wait=8.0)
        if self.reader is not None:
            self.reader.cancel()


class Processes:
    def __init__(self, log_dir: Path, server_cpus: set[int] | None = None) -> None:
        """``server_cpus``: the cores a server process runs on (None: any); every other process
        runs where this one does (``split_cores``)."""
        self.log_dir = log_dir
        self.server_cpus = server_cpus
        self.workers: list[Worker] = []

    def cores(self) -> dict[str, list[int] | None]:
        """Where the servers ran, and everything else (None: anywhere)."""
        if self.server_cpus is None:
            return {"server": None, "others": None}
        return {"server": sorted(self.server_cpus), "others": sorted(os.sched_getaffinity(0))}

    async def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None,
                    cwd: Path | None = None, exits_on_eof: bool = True,
                    server: bool = False) -> Worker:
        log_path = self.log_dir / f"{name}.log"
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        cpus = self.server_cpus if server else None

        def before_exec() -> None:
            die_with_parent()
            if cpus is not None:
                os.sched_setaffinity(0, cpus)

        try:
            proc = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=log_fd, env=env, cwd=cwd, start_new_session=True,
                preexec_fn=before_exec, limit=LINE_LIMIT)
        finally:
            os.close(log_fd)
        worker = Worker(name, proc, log_path, exits_on_eof)
        worker.reader = asyncio.ensure_future(worker._read())
        self.workers.append(worker)
        return worker

    async def stop(self, workers: list[Worker], grace: float = 8) -> None:
        await asyncio.gather(*(w.stop(grace) for w in workers))
        for w in workers:
            if w in self.workers:
                self.workers.remove(w)

    async def stop_all(self) -> None:
        await self.stop(list(reversed(self.workers)), grace=3)

    def kill_all_now(self) -> None:
        """Last resort, synchronous (after the event loop is gone): SIGKILL every group."""
        for w in self.workers:
            w.signal_group(signal.SIGKILL)


async def gather_or_cancel(*aws: Awaitable[Any]) -> list[Any]:
    """Like gather, but the first failure cancels the rest."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for t in tasks:
            t.cancel()


def split_cores(share: bool) -> tuple[set[int] | None, set[int] | None]:
    """(server cores, everyone else's): the first core this process may use for the server,
    the rest for the publisher, the subscribers and this script, as if they ran on other
    machines (a viewer's decryption and socket reads no longer take the server's core and add
    to its latency); (None, None) with ``share`` or fewer than two cores: all share all."""
    cores = sorted(os.sched_getaffinity(0))
    if share or len(cores) < 2:
        return None, None
    return {cores[0]}, set(cores[1:])


#: the publisher's encoder ceiling, kbit/s (set from --publisher-kbps)
PUBLISHER_KBPS = 1000


def worker_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUIZHEN_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def wait_ready(url: str, server: Worker, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if server.proc.returncode is not None:
                raise BenchError(f"{server.name} exited with {server.proc.returncode}\n"
                                 f"{server.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise BenchError(f"{server.name} not ready after {timeout:.0f} s\n{server.log_tail()}")


# ---- the servers under test ------------------------------------------------------------------
class Target:
    name = ""
    label = ""
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
        return ["--target", self.name, "--role", role, "--server", self.url]

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
    name = "huizhen"
    label = "Huizhen SFU (RTP forwarding, no decode/encode)"
    gate_on_publisher_bitrate = True

    def __init__(self, procs: Processes, tmp: Path) -> None:
        super().__init__(procs, tmp)
        self.secret = secrets.token_urlsafe(36)
        self.room = ""

    @property
    def data_dir(self) -> Path:
        return self.tmp / "huizhen-data"

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
        })
        return env

    async def start_server(self) -> Worker:
        self.data_dir.mkdir()
        return await self.procs.spawn(
            "huizhen-server", [sys.executable, "-m", "huizhen.cli", "serve"],
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


def exec_in_netns(argv: list[str]) -> None:
    """Run this benchmark again inside a private network namespace (see JANUS_IFACE)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        raise BenchError("--janus needs unshare (util-linux) and ip (iproute2)")
    owner = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    probe = subprocess.run(["unshare", *owner, "--net", "true"], capture_output=True)
    if probe.returncode != 0:
        raise BenchError("--janus needs a private network namespace (root, or unprivileged user "
                         f"namespaces): unshare said {probe.stderr.decode().strip()!r}")
    progress("janus: running the whole benchmark in a private network namespace "
             f"(lo + {JANUS_IFACE} with {JANUS_ICE_ADDRESS})")
    os.environ[NETNS_ENV] = "1"
    os.execvp("unshare", ["unshare", *owner, "--net", "--", "sh", "-c",
                          NETNS_SETUP + ' && exec "$@"', "_",
                          sys.executable, str(Path(__file__).resolve()), *argv])


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


# ---- measuring -------------------------------------------------------------------------------
@dataclass
class Options:
    counts: list[int]
    warmup: float
    window: float
    settle: float
    recover: float = 30.0
    recover_ratio: float = 0.85


def fit(points: list[dict[str, Any]], x: Callable[[dict[str, Any]], float] = lambda p: p["n"]
        ) -> tuple[float | None, float | None]:
    """Least-squares slope and intercept of server cores against N (or ``x``); None when there
    are fewer than two distinct values."""
    xs = [float(x(p)) for p in points]
    ys = [float(p["server_cores"]) for p in points]
    if len(set(xs)) < 2:
        return None, None
    slope, intercept = statistics.linear_regression(xs, ys)
    return slope, intercept


async def sent_mbps(target: Target, publisher: Worker, seconds: float = 2.0) -> float:
    """What the publisher sent over the last ``seconds``, in Mbit/s; keeps the peak."""
    now = time.monotonic()
    await publisher.send(f"window {now - seconds!r} {now!r}")
    rate = float((await publisher.event("stats", 20))["mbps"])
    target.peak_mbps = max(target.peak_mbps, rate)
    return rate


async def settle(target: Target, publisher: Worker, seconds: float) -> None:
    """Let the publisher's bitrate climb (REMB), noting the peak it reaches."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(1.0, left))
        await sent_mbps(target, publisher)


async def wait_bitrate(target: Target, publisher: Worker, n: int, opts: Options
                       ) -> tuple[float, bool]:
    """Subscribers joining (many processes starting on few cores) delay packets, and the
    server's REMB then lowers the publisher's bitrate; it climbs back within seconds. Wait
    (at most ``opts.recover`` s) until it is back to ``opts.recover_ratio`` of the highest
    bitrate seen so far. Returns (seconds waited, recovered)."""
    started = time.monotonic()
    told = False
    while True:
        rate = await sent_mbps(target, publisher)
        waited = time.monotonic() - started
        if rate >= opts.recover_ratio * target.peak_mbps:
            return waited, True
        if waited >= opts.recover:
            progress(f"{target.name} N={n}: warning: publisher bitrate {rate:.2f} Mbit/s still "
                     f"below {opts.recover_ratio:.0%} of its peak {target.peak_mbps:.2f} after "
                     f"{waited:.0f} s; measuring anyway")
            return waited, False
        if not told:
            progress(f"{target.name} N={n}: waiting for the publisher's bitrate to recover "
                     f"({rate:.2f} Mbit/s, peak {target.peak_mbps:.2f})…")
            told = True
        await asyncio.sleep(1)


# ---- added latency ---------------------------------------------------------------------------
def percentiles(values: list[float]) -> tuple[float | None, float | None]:
    """(p50, p95) rounded to µs-in-ms; None for no values."""
    if not values:
        return None, None
    if len(values) == 1:
        return round(values[0], 3), round(values[0], 3)
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return round(statistics.median(values), 3), round(cuts[94], 3)


def packet_latencies(sent: dict[str, Any], arrivals: dict[str, Any], at: str = "t"
                     ) -> tuple[list[float], int]:
    """Per-packet publisher send → subscriber arrival in ms, matched by payload hash; and the
    number of packets that arrived with no matching send (the re-encoding baseline: all).
    ``at``: which arrival time, "t" (the datagram reached the subscriber's socket: kernel
    timestamp) or "t_app" (the subscriber process had read and decrypted it)."""
    send_at: dict[int, float] = {}
    for key, t in zip(sent["keys"], sent["t"], strict=True):
        send_at.setdefault(key, t)
    out: list[float] = []
    unmatched = 0
    for key, t in zip(arrivals["keys"], arrivals.get(at) or arrivals["t"], strict=True):
        t_sent = send_at.get(key)
        if t_sent is None:
            unmatched += 1
        else:
            out.append((t - t_sent) * 1000)
    return out, unmatched


#: a subscriber's frame is looked for among the frames sent up to this long before it arrived
FRAME_MATCH_WINDOW_S = 6.0
#: timestamps may come back a tick or two off (the baseline's decoder/encoder time bases)
FRAME_MATCH_TOLERANCE = 2


def match_frames(sent: dict[str, Any], arrivals: dict[str, Any]) -> list[float] | None:
    """Frame latency in ms (publisher's first packet of a frame → subscriber's first packet of
    the same frame), or None when the frames cannot be matched unambiguously.

    A forwarding or re-encoding server keeps the differences between RTP timestamps but not
    their origin: the subscriber's timestamp is the publisher's plus a constant C (mod 2**32;
    a random origin per sender; the baseline's decode/re-encode also rounds some timestamps by
    a tick). For every subscriber frame, each publisher frame sent up to
    ``FRAME_MATCH_WINDOW_S`` before it arrived votes for C = ts_sub - ts_pub; the publisher's
    timestamps jitter pseudo-randomly by 0–89 ticks (``CameraPatternTrack``), so only the true
    C (± the tolerance) gets a vote from (nearly) every frame. It must win at least half of
    the frames and 3x the votes of the best C elsewhere, else the result is None."""
    pub_t: list[float] = list(sent["frame_t"])
    pub_ts: list[int] = list(sent["frame_ts"])
    sub = list(zip(arrivals["ts"], arrivals["t"], strict=True))
    if not sub or not pub_t:
        return None
    votes: collections.Counter[int] = collections.Counter()
    for ts, t in sub:
        lo = bisect.bisect_left(pub_t, t - FRAME_MATCH_WINDOW_S)
        hi = bisect.bisect_right(pub_t, t)
        votes.update((ts - pub_ts[j]) & 0xFFFFFFFF for j in range(lo, hi))
    if not votes:
        return None
    tol = FRAME_MATCH_TOLERANCE

    def score(c: int) -> int:
        return sum(votes.get((c + d) & 0xFFFFFFFF, 0) for d in range(-tol, tol + 1))

    scored = sorted(((score(c), c) for c in votes), reverse=True)
    best, offset = scored[0]

    def near(c: int) -> bool:
        return min((c - offset) & 0xFFFFFFFF, (offset - c) & 0xFFFFFFFF) <= 2 * tol

    runner_up = next((n for n, c in scored if not near(c)), 0)
    if best < 0.5 * len(sub) or best < 3 * runner_up:
        return None
    sent_at: dict[int, float] = {}
    for ts, t in zip(pub_ts, pub_t, strict=True):
        sent_at.setdefault(ts, t)
    out = []
    for ts, t in sub:
        for d in sorted(range(-tol, tol + 1), key=abs):
            t_sent = sent_at.get((ts - offset + d) & 0xFFFFFFFF)
            if t_sent is not None:
                if t >= t_sent:
                    out.append((t - t_sent) * 1000)
                break
    return out


def latency_fields(sent: dict[str, Any], stats: list[dict[str, Any]]) -> dict[str, Any]:
    """The added-latency columns of one row (pooled over its subscribers), and the raw
    samples (``_samples``, popped by the caller for the pooled totals)."""
    packets: list[float] = []
    app: list[float] = []
    unmatched = 0
    frames: list[float] = []
    unmatched_subscribers = 0
    for s in stats:
        arrivals = s.get("arrivals") or {"keys": [], "t": []}
        lat, miss = packet_latencies(sent, arrivals)
        packets += lat
        unmatched += miss
        app += packet_latencies(sent, arrivals, "t_app")[0]
        matched = match_frames(sent, s.get("frame_arrivals") or {"ts": [], "t": []})
        if matched is None:
            unmatched_subscribers += 1
        else:
            frames += matched
    p50, p95 = percentiles(packets)
    a50, a95 = percentiles(app)
    f50, f95 = percentiles(frames)
    return {
        "latency_ms_p50": p50, "latency_ms_p95": p95,
        "app_latency_ms_p50": a50, "app_latency_ms_p95": a95,
        "latency_packets": len(packets), "latency_unmatched_packets": unmatched,
        "frame_latency_ms_p50": f50, "frame_latency_ms_p95": f95,
        "frame_latency_frames": len(frames),
        "frame_latency_unmatched_subscribers": unmatched_subscribers,
        "_samples": {"packets": packets, "app": app, "frames": frames},
    }


async def measure_n(target: Target, publisher: Worker, n: int, opts: Options
                    ) -> dict[str, Any]:
    assert target.server is not None
    ready_timeout = 60 + 4 * n
    waited, recovered = 0.0, True
    progress(f"{target.name} N={n}: starting {n} subscriber process(es)…")
    subs: list[Worker] = []
    try:
        for i in range(n):
            subs.append(await target.spawn_worker("subscribe", i, ready_timeout, n))
        ready = await gather_or_cancel(*(s.event("ready", ready_timeout + 10) for s in subs))
        delays = [r.get("first_frame_delay_s") or 0.0 for r in ready]
        progress(f"{target.name} N={n}: all receiving (slowest first frame after "
                 f"{max(delays):.1f} s); warming up {opts.warmup:g} s…")
        await asyncio.sleep(opts.warmup)
        if target.gate_on_publisher_bitrate:
            waited, recovered = await wait_bitrate(target, publisher, n, opts)
        progress(f"{target.name} N={n}: measuring {opts.window:g} s…")
        pid = target.server.pid
        t0, c0, h0 = time.monotonic(), cpu_seconds(pid), host_busy_seconds()
        await asyncio.sleep(opts.window)
        t1, c1, h1 = time.monotonic(), cpu_seconds(pid), host_busy_seconds()
        await publisher.send(f"window {t0!r} {t1!r}")
        sent = await publisher.event("stats", 20)
        await publisher.send(f"packets {t0 - LATENCY_LOOKBACK_S!r} {t1!r}")
        sent_packets = await publisher.event("packets", 20)
        for s in subs:
            await s.send(f"stop {t0!r} {t1!r}")
        stats = await gather_or_cancel(*(s.event("stats", 20) for s in subs))
    finally:
        await target.procs.stop(subs)
    fps = [float(s["fps"]) for s in stats]
    row = {
        "n": n,
        "server_cores": round((c1 - c0) / (t1 - t0), 4),
        "min_fps": round(min(fps), 2),
        "mean_fps": round(statistics.fmean(fps), 2),
        "bitrate_mbps": round(statistics.fmean(float(s["mbps"]) for s in stats), 3),
        "publisher_fps": round(float(sent["fps"]), 2),
        "publisher_mbps": round(float(sent["mbps"]), 3),
        "max_gap_s": max(float(s["max_gap_s"]) for s in stats),
        "window_s": round(t1 - t0, 3),
        "host_busy_cores": round((h1 - h0) / (t1 - t0), 3),
        "publisher_peak_mbps": round(target.peak_mbps, 3),
        "bitrate_wait_s": round(waited, 1),
        "bitrate_recovered": recovered,
        "subscribers": [{k: s.get(k) for k in ("fps", "mbps", "max_gap_s", "duplicate_packets")}
                        for s in stats],
        **latency_fields(sent_packets, stats),
    }
    progress(f"{target.name} N={n}: server {row['server_cores']:.3f} cores; received fps min "
             f"{row['min_fps']:.1f} mean {row['mean_fps']:.1f}, {row['bitrate_mbps']:.2f} "
             f"Mbit/s; publisher sent {row['publisher_fps']:.1f} fps, "
             f"{row['publisher_mbps']:.2f} Mbit/s; added latency ms p50/p95: packets "
             f"{fmt_pair(row['latency_ms_p50'], row['latency_ms_p95'])} (read by the "
             f"subscriber {fmt_pair(row['app_latency_ms_p50'], row['app_latency_ms_p95'])}), "
             "frames "
             f"{fmt_pair(row['frame_latency_ms_p50'], row['frame_latency_ms_p95'])}")
    await wait_drained(target)
    return row


async def wait_drained(target: Target, timeout: float = 20) -> None:
    """Before the next N: the server should have dropped the subscribers that left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = await target.subscriber_count()
        if not count:
            break
        await asyncio.sleep(0.25)
    else:
        progress(f"{target.name}: warning: server still holds {count} subscriber(s)")
    await asyncio.sleep(1)


async def run_target(target: Target, opts: Options) -> list[dict[str, Any]]:
    progress(f"{target.name}: starting the server on {target.url}…")
    target.server = await target.start_server()
    publisher: Worker | None = None
    try:
        await wait_ready(target.url + target.ready_path, target.server)
        await target.setup()
        progress(f"{target.name}: server ready (pid {target.server.pid}); starting the "
                 "publisher…")
        publisher = await target.spawn_worker("publish", 0, 60)
        await publisher.event("ready", 70)
        progress(f"{target.name}: publishing; letting the bitrate settle {opts.settle:g} s…")
        await settle(target, publisher, opts.settle)
        points = []
        for n in opts.counts:
            points.append(await measure_n(target, publisher, n, opts))
            if publisher.proc.returncode is not None:
                raise BenchError(f"the publisher exited\n{publisher.log_tail()}")
        return points
    finally:
        await target.procs.stop([w for w in (publisher, target.server) if w is not None])


# ---- output ----------------------------------------------------------------------------------
def versions() -> dict[str, Any]:
    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f
                    if line.startswith("model name")), "")
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "aiortc": version("aiortc"), "aioice": version("aioice"), "av": version("av"),
            "huizhen": version("huizhen"), "platform": platform.platform()}


def forwarded_mbps(point: dict[str, Any]) -> float:
    return float(point["n"] * point["bitrate_mbps"])


def rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def fmt_pair(a: float | None, b: float | None) -> str:
    """``p50/p95`` in ms, or ``n/a``."""
    if a is None or b is None:
        return "n/a"
    return f"{a:.1f}/{b:.1f}" if max(a, b) >= 10 else f"{a:.2f}/{b:.2f}"


def table(title: str, points: list[dict[str, Any]], slope: float | None,
          intercept: float | None, extra: str = "") -> str:
    lines = [title,
             f"  {'N':>3}  {'server cores':>12}  {'min fps':>7}  {'mean fps':>8}  "
             f"{'Mbit/s':>6}  {'max gap s':>9}  {'sent fps':>8}  {'sent Mbit/s':>11}  "
             f"{'host busy':>9}  {'pkt lat ms':>11}  {'frame lat ms':>12}"]
    for p in points:
        lines.append(f"  {p['n']:>3}  {p['server_cores']:>12.3f}  {p['min_fps']:>7.1f}  "
                     f"{p['mean_fps']:>8.1f}  {p['bitrate_mbps']:>6.2f}  {p['max_gap_s']:>9.3f}  "
                     f"{p['publisher_fps']:>8.1f}  {p['publisher_mbps']:>11.2f}  "
                     f"{p['host_busy_cores']:>9.2f}  "
                     f"{fmt_pair(p.get('latency_ms_p50'), p.get('latency_ms_p95')):>11}  "
                     f"{fmt_pair(p.get('frame_latency_ms_p50'), p.get('frame_latency_ms_p95')):>12}"
                     + ("  *" if p.get("bitrate_recovered") is False else ""))
    if slope is None or intercept is None:
        lines.append("  core per extra subscriber: n/a (needs at least two values of N)")
    else:
        lines.append(f"  core per extra subscriber: {slope:.4f}  "
                     f"(least-squares fit: cores ≈ {intercept:.3f} + {slope:.4f}·N)")
    if extra:
        lines.append(extra)
    if any(p.get("bitrate_recovered") is False for p in points):
        lines.append("  * measured although the publisher's bitrate had not climbed back to 85% "
                     "of its peak within --recover seconds")
    return "\n".join(lines)


def report(result: dict[str, Any]) -> str:
    m = result["machine"]
    s = result["settings"]
    out = [f"Fan-out benchmark: 1 publisher (640x480 VP8 test pattern) → N subscribers, "
           f"{s['warmup_s']:g} s warm-up, {s['window_s']:g} s window",
           f"machine: {m['nproc']} cores ({m['cpu'] or 'unknown CPU'}), Python {m['python']}, "
           f"aiortc {m['aiortc']}, aioice {m['aioice']}, av {m['av']}",
           ("cores: all processes share all" if s["cores"]["server"] is None else
            f"cores: the server runs on {s['cores']['server']}, the publisher, the "
            f"subscribers and this script on {s['cores']['others']} (--share-cores: all "
            f"share all)"),
           f"publisher bitrate (sent, forwarded by Huizhen): "
           f"{result['publisher_bitrate_mbps']:.2f} Mbit/s; received by Huizhen's subscribers: "
           f"{result['received_bitrate_mbps']:.2f} Mbit/s",
           "columns: server CPU in cores over the window; frames per second each subscriber "
           "received (min/mean); mean received RTP payload Mbit/s; longest gap between frames "
           "at any subscriber; what the publisher sent in the same window; cores busy on the "
           f"whole machine (all processes, of {m['nproc']}); added latency p50/p95 in ms, "
           "publisher send → arrival at the subscriber's socket (kernel timestamp), of each "
           "RTP packet (matched by payload hash: Huizhen only, the baseline re-encodes) and of "
           "each frame's first packet (matched by RTP timestamp)", ""]
    per_mbps = result["core_per_forwarded_mbps"]
    extra = ("" if per_mbps is None else
             f"  core per forwarded Mbit/s: {per_mbps:.4f}  (fit of cores against N × received "
             "Mbit/s: the cost of one more 1 Mbit/s subscriber)")
    out.append(table(HuizhenTarget.label, result["points"], result["core_per_extra_subscriber"],
                     result["intercept_cores"], extra))
    if result["baseline_points"]:
        out += ["", table(RelayTarget.label, result["baseline_points"],
                          result["baseline_core_per_extra_subscriber"],
                          result["baseline_intercept_cores"])]
        ratio = result["ratio"]
        out += ["", "ratio baseline/ours (core per extra subscriber): "
                + (f"{ratio:.1f}x" if ratio is not None else "n/a")]
    if result["janus_points"]:
        j_per_mbps = result["janus_core_per_forwarded_mbps"]
        out += ["", table(JanusTarget.label, result["janus_points"],
                          result["janus_core_per_extra_subscriber"],
                          result["janus_intercept_cores"],
                          "" if j_per_mbps is None else
                          f"  core per forwarded Mbit/s: {j_per_mbps:.4f}")]
        j_ratio = result["janus_ratio"]
        out += ["", "ratio Janus/ours (core per extra subscriber): "
                + (f"{j_ratio:.2f}x" if j_ratio is not None else "n/a")
                + " (above 1: Huizhen costs less per subscriber)"]
    out += ["", "added latency, all rows pooled, p50/p95 ms: Huizhen per packet "
            + fmt_pair(result["added_latency_ms_p50"], result["added_latency_ms_p95"])
            + " (read by the subscriber process: "
            + fmt_pair(result["added_latency_app_ms_p50"], result["added_latency_app_ms_p95"])
            + ")"
            + ", Huizhen per frame "
            + fmt_pair(result["added_frame_latency_ms_p50"], result["added_frame_latency_ms_p95"])]
    if result["baseline_points"]:
        out[-1] += (", baseline per frame "
                    + fmt_pair(result["baseline_added_latency_ms_p50"],
                               result["baseline_added_latency_ms_p95"])
                    + " (re-encoded: per packet n/a)")
    if result["janus_points"]:
        out[-1] += (", Janus per packet "
                    + fmt_pair(result["janus_added_latency_ms_p50"],
                               result["janus_added_latency_ms_p95"]))
    return "\n".join(out)


def parse_counts(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected numbers like 1,4,8") from None
    if not counts or any(c < 1 for c in counts):
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive numbers like 1,4,8")
    return counts


async def bench(args: argparse.Namespace, procs: Processes, tmp: Path) -> dict[str, Any]:
    opts = Options(args.subscribers, args.warmup, args.window, args.settle, args.recover)
    load_start = [round(x, 2) for x in os.getloadavg()]
    ours = await run_target(HuizhenTarget(procs, tmp), opts)
    baseline: list[dict[str, Any]] = []
    if not args.no_baseline:
        counts = args.baseline_subscribers or [n for n in args.subscribers if n <= 8] or [1]
        baseline = await run_target(RelayTarget(procs, tmp),
                                    Options(counts, args.warmup, args.window, args.settle,
                                            args.recover))
    janus: list[dict[str, Any]] = []
    if args.janus:
        janus = await run_target(JanusTarget(procs, tmp), opts)
    slope, intercept = fit(ours)
    per_mbps, _ = fit(ours, forwarded_mbps)
    b_slope, b_intercept = fit(baseline) if baseline else (None, None)
    j_slope, j_intercept = fit(janus) if janus else (None, None)
    j_per_mbps = fit(janus, forwarded_mbps)[0] if janus else None
    samples = [p.pop("_samples") for p in ours]
    b_samples = [p.pop("_samples") for p in baseline]
    j_samples = [p.pop("_samples") for p in janus]
    j50, j95 = percentiles([x for s in j_samples for x in s["packets"]])
    lat50, lat95 = percentiles([x for s in samples for x in s["packets"]])
    app50, app95 = percentiles([x for s in samples for x in s["app"]])
    f50, f95 = percentiles([x for s in samples for x in s["frames"]])
    b50, b95 = percentiles([x for s in b_samples for x in s["frames"]])
    return {
        # publisher send → subscriber arrival, ms, every row's subscribers pooled: per RTP
        # packet for Huizhen; per frame (first packet) for both; the re-encoding baseline has
        # no per-packet figure (its payloads are new), so its figures are per frame
        # (arrival: the datagram reached the subscriber's socket, the kernel's timestamp;
        # "_app": the subscriber's process had read and decrypted it, which on one shared
        # machine adds the wait for a core among N+2 busy processes)
        "added_latency_ms_p50": lat50,
        "added_latency_ms_p95": lat95,
        "added_latency_app_ms_p50": app50,
        "added_latency_app_ms_p95": app95,
        "added_frame_latency_ms_p50": f50,
        "added_frame_latency_ms_p95": f95,
        "baseline_added_latency_ms_p50": b50,
        "baseline_added_latency_ms_p95": b95,
        "core_per_extra_subscriber": None if slope is None else round(slope, 5),
        "intercept_cores": None if intercept is None else round(intercept, 4),
        "core_per_forwarded_mbps": None if per_mbps is None else round(per_mbps, 5),
        "baseline_core_per_extra_subscriber": None if b_slope is None else round(b_slope, 5),
        "baseline_intercept_cores": None if b_intercept is None else round(b_intercept, 4),
        "ratio": (round(b_slope / slope, 2) if slope and b_slope is not None and slope > 0
                  else None),
        # the C SFU (only with --janus): same publisher, subscribers and window
        "janus_core_per_extra_subscriber": rounded(j_slope, 5),
        "janus_intercept_cores": rounded(j_intercept, 4),
        "janus_core_per_forwarded_mbps": rounded(j_per_mbps, 5),
        "janus_ratio": (round(j_slope / slope, 2) if slope and j_slope is not None and slope > 0
                        else None),
        "janus_added_latency_ms_p50": j50,
        "janus_added_latency_ms_p95": j95,
        "janus_min_subscriber_fps": min(p["min_fps"] for p in janus) if janus else None,
        "janus_points": janus,
        "min_subscriber_fps": min(p["min_fps"] for p in ours),
        "baseline_min_subscriber_fps": (min(p["min_fps"] for p in baseline)
                                        if baseline else None),
        "points": ours,
        "baseline_points": baseline,
        "publisher_bitrate_mbps": round(statistics.fmean(p["publisher_mbps"] for p in ours), 3),
        "received_bitrate_mbps": round(statistics.fmean(p["bitrate_mbps"] for p in ours), 3),
        "baseline_bitrate_mbps": (round(statistics.fmean(p["bitrate_mbps"] for p in baseline), 3)
                                  if baseline else None),
        "machine": {**versions(), "loadavg_start": load_start,
                    "loadavg_end": [round(x, 2) for x in os.getloadavg()]},
        "settings": {"subscribers": args.subscribers,
                     "baseline_subscribers": [p["n"] for p in baseline],
                     "janus": bool(args.janus),
                     "warmup_s": args.warmup, "window_s": args.window, "settle_s": args.settle,
                     "recover_max_s": args.recover, "cores": procs.cores()},
    }


async def amain(args: argparse.Namespace, procs: Processes, tmp: Path) -> dict[str, Any]:
    try:
        return await bench(args, procs, tmp)
    finally:
        if procs.workers:
            progress(f"stopping {len(procs.workers)} remaining process(es)…")
        await asyncio.shield(procs.stop_all())


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Server CPU per extra subscriber: Huizhen vs aiortc MediaRelay "
                    "(everything on 127.0.0.1).")
    parser.add_argument("--subscribers", type=parse_counts, default=[1, 4, 8, 16, 32],
                        help="values of N for Huizhen (default 1,4,8,16,32)")
    parser.add_argument("--baseline-subscribers", type=parse_counts, default=None,
                        help="values of N for the MediaRelay baseline (default: the same, "
                             "capped at 8)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the baseline")
    parser.add_argument("--janus", action="store_true",
                        help="also measure Janus's VideoRoom, a C SFU, with the same N values "
                             "(needs Debian's janus package)")
    parser.add_argument("--warmup", type=float, default=4.0,
                        help="seconds after all subscribers receive, before measuring")
    parser.add_argument("--window", type=float, default=10.0, help="measuring window, seconds")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds the publisher runs before the first N, for its bitrate "
                             "to follow REMB up (default 10)")
    parser.add_argument("--recover", type=float, default=30.0,
                        help="after the warm-up, wait at most this long for the publisher's "
                             "bitrate to climb back to 85%% of the highest seen (Huizhen only; "
                             "default 30)")
    parser.add_argument("--share-cores", action="store_true",
                        help="let the server share every core with the publisher and the "
                             "subscribers (default: the server gets the first core, "
                             "everything else the others)")
    parser.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the temp folder with every process's log")
    parser.add_argument("--publisher-kbps", type=int, default=1000,
                        help="the publisher's VP8 bitrate ceiling, kbit/s (default 1000: the "
                        "~1 Mbit/s stream the targets are stated for)")
    args = parser.parse_args(argv)
    global PUBLISHER_KBPS
    PUBLISHER_KBPS = args.publisher_kbps
    if args.window <= 0 or args.warmup < 0 or args.settle < 0:
        parser.error("--window must be positive, --warmup and --settle not negative")
    if args.janus and os.environ.get(NETNS_ENV) != "1":
        if janus_paths() is None:
            progress("failed: --janus needs Janus (Debian: apt-get install -y janus)")
            return 1
        try:
            exec_in_netns(sys.argv[1:] if argv is None else argv)
        except BenchError as exc:
            progress(f"failed: {exc}")
            return 1

    # Ctrl-C and SIGTERM both end up in the same clean-up (even when started with SIGINT
    # ignored, as background jobs are)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="huizhen-fanout-"))
    (tmp / "logs").mkdir()
    server_cpus, client_cpus = split_cores(args.share_cores)
    if client_cpus is not None:
        os.sched_setaffinity(0, client_cpus)  # inherited by the publisher and subscribers
    procs = Processes(tmp / "logs", server_cpus)
    code = 1  # until it succeeded (an unexpected exception keeps the logs too)
    try:
        result = asyncio.run(amain(args, procs, tmp))
        code = 0
    except KeyboardInterrupt:
        progress("interrupted")
        code = 130
    except BenchError as exc:
        progress(f"failed: {exc}")
        code = 1
    finally:
        procs.kill_all_now()
        if args.keep_logs or code:
            progress(f"logs kept in {tmp / 'logs'}")
            with contextlib.suppress(OSError):
                shutil.rmtree(tmp / "huizhen-data")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if code:
        return code
    print(json.dumps(result, indent=2) if args.json else report(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
