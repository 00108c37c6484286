"""bench/fanout.py's processes: each child in its own process group, JSON-line events from its
stdout, its CPU (and the whole machine's) from /proc, the server's core of its own.

Also used by bench/recording.py and bench/broadcast_viewers.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _paths  # noqa: F401  (first: the project's packages before bench/'s scripts)
import aiohttp

from huizhen.procgroup import die_with_parent, signal_group, stop_group

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
STARTED = time.monotonic()
#: a worker's JSON line can hold every packet of a window (~45 bytes each): no 64 KiB limit
LINE_LIMIT = 64 * 1024 * 1024


class BenchError(Exception):
    pass


def progress(message: str) -> None:
    print(f"[fanout {time.monotonic() - STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that nothing uses now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
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


def udp_ports(pid: int) -> list[int]:
    """The local port of every UDP socket process ``pid`` holds (IPv4 and IPv6; a port once per
    socket), from /proc/<pid>/fd and /proc/<pid>/net/udp[6]."""
    inodes: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[len("socket:["):-1])
    ports: list[int] = []
    for table in ("udp", "udp6"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{table}",
                                                encoding="ascii") as f:
            next(f, None)  # the header
            for line in f:
                fields = line.split()
                if len(fields) > 9 and fields[9] in inodes:
                    ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return sorted(ports)


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

