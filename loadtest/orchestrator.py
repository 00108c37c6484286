"""The load test's orchestrator: one ``LoadTest`` run from room to result.

It creates a room through the REST API (unless ``--room`` names one), mints one participant
token per participant, starts the worker processes (loadtest/worker.py) and tells them who to
join, at ``--join-rate`` per second, publishers first. Once everyone has joined (or failed), it
takes a snapshot of every participant's counters, waits ``--duration`` seconds, takes another
and turns the difference into the result (and, for a server on this machine, its CPU).

Every worker runs in its own process group and gets SIGTERM from the kernel if the
orchestrator dies (``PR_SET_PDEATHSIG``); on exit, Ctrl-C or SIGTERM the orchestrator makes the
participants leave, stops every worker (SIGTERM, then SIGKILL) and ends the room it created.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlparse

from huizhen.procgroup import die_with_parent, signal_group, stop_group
from huizhen.remote import Api, CliError
from loadtest.report import percentile, progress, round_or_none
from loadtest.worker import LINE_LIMIT

#: default (publisher role, subscriber role) per room kind; ``--publisher-role`` /
#: ``--subscriber-role`` override them (roles that wait in a lobby would never get media)
DEFAULT_ROLES: dict[str, tuple[str, str]] = {
    "broadcast": ("presenter", "viewer"),
    "mdt": ("presenter", "viewer"),
    "clinic": ("doctor", "nurse"),
    "joint_clinic": ("specialist", "nurse"),
    "ward_round": ("doctor", "nurse"),
}
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass
class PState:
    """What the orchestrator knows of one participant."""

    id: str
    role: str
    index: int
    worker: int
    identity: str
    expect_video: bool = True
    sent_join_at: float | None = None
    joined: bool = False
    join_s: float | None = None
    published: bool = False
    first_frame_s: float | None = None
    error: str | None = None
    no_frame: bool = False
    disconnected: bool = False

    @property
    def settled(self) -> bool:
        """Nothing more to wait for before measuring."""
        if self.error is not None or self.disconnected:
            return True
        if self.role == "publish":
            return self.published
        return (self.first_frame_s is not None or self.no_frame
                or (self.joined and not self.expect_video))


@dataclass
class WorkerProc:
    index: int
    proc: asyncio.subprocess.Process
    on_event: Callable[[int, dict[str, Any]], None]
    reader: asyncio.Task[None] | None = None
    #: the latest ``totals`` event (cumulative counters, for the progress lines)
    totals: dict[str, Any] = field(default_factory=dict)
    exited: bool = False

    async def read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            with contextlib.suppress(ValueError):
                message = json.loads(line)
                if isinstance(message, dict) and "event" in message:
                    self.on_event(self.index, message)
        self.exited = True
        self.on_event(self.index, {"event": "exit"})

    async def send(self, message: dict[str, Any]) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            with contextlib.suppress(OSError):
                self.proc.stdin.write(json.dumps(message).encode() + b"\n")
                await self.proc.stdin.drain()

    def signal_group(self, sig: signal.Signals) -> None:
        signal_group(self.proc, sig)

    async def stop(self, grace: float = 15) -> None:
        """Ask it to stop (its participants leave), then SIGTERM, then SIGKILL its group."""
        await self.send({"cmd": "stop"})
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        await stop_group(self.proc, grace)
        if self.reader is not None:
            self.reader.cancel()


class ServerCpu:
    """CPU of a server process on this machine (and its children), in cores between calls."""

    def __init__(self, host: str, port: int) -> None:
        self.proc: Any = None
        if host in LOOPBACK_HOSTS:
            self.proc = find_listener(port)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else int(self.proc.pid)

    def seconds(self) -> float | None:
        import psutil

        if self.proc is None:
            return None
        total = 0.0
        try:
            for p in [self.proc, *self.proc.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = p.cpu_times()
                    total += times.user + times.system
        except psutil.Error:
            return None
        return total


def find_listener(port: int) -> Any:
    """The local process listening on TCP ``port`` (psutil.Process), or None."""
    import psutil

    candidates: list[Any] = []
    try:
        candidates = [c for c in psutil.net_connections(kind="tcp")
                      if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port]
    except psutil.Error:  # not allowed to see every socket: look at our user's processes
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                       for c in proc.net_connections(kind="tcp")):
                    return proc
    for conn in candidates:
        if conn.pid:
            with contextlib.suppress(psutil.Error):
                return psutil.Process(conn.pid)
    return None


class LoadTest:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.api = Api(args)
        self.url = self.api.url
        parsed = urlparse(self.url)
        self.host = parsed.hostname or ""
        self.port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self.ice: list[str] | None = args.ice_address or (
            ["127.0.0.1"] if self.host in LOOPBACK_HOSTS else None)
        self.room_id = ""
        self.kind = ""
        self.room_created = False
        self.parts: dict[str, PState] = {}
        self.workers: list[WorkerProc] = []
        self.snapshots: dict[str, dict[int, dict[str, Any]]] = {}
        self.changed = asyncio.Event()
        self.errors: list[dict[str, Any]] = []
        self.server = ServerCpu(self.host, self.port)
        self.tokens: dict[str, str] = {}
        self.ready_workers: set[int] = set()
        self.pub_role = self.sub_role = ""

    # ---- events -------------------------------------------------------------------------------
    def on_event(self, worker: int, msg: dict[str, Any]) -> None:
        event = msg["event"]
        part = self.parts.get(str(msg.get("id", "")))
        if event == "ready":
            self.ready_workers.add(worker)
        elif event == "totals":
            self.workers[worker].totals = msg
        elif event == "snapshot":
            self.snapshots.setdefault(str(msg.get("ref")), {})[worker] = msg
        elif event == "exit":
            for p in self.parts.values():
                if p.worker == worker and p.error is None and not p.settled:
                    p.error = "its worker process exited"
        elif part is not None:
            if event == "joined":
                part.joined, part.join_s = True, float(msg["join_s"])
            elif event == "published":
                part.published = True
            elif event == "first_frame":
                part.first_frame_s = float(msg["delay_s"])
            elif event == "no_frame":
                part.no_frame = True
                self.errors.append({"participant": part.id, "message": msg.get("message")})
                progress(f"{part.id}: {msg.get('message')}")
            elif event == "error":
                part.error = str(msg.get("message"))
                self.errors.append({"participant": part.id, "message": part.error})
                progress(f"{part.id}: {part.error}")
            elif event == "disconnected":
                part.disconnected = True
                self.errors.append({"participant": part.id, "message": msg.get("message")})
                progress(f"{part.id}: {msg.get('message')}")
        self.changed.set()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0 or all(w.exited for w in self.workers):
                return predicate()
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 1.0))
        return True

    # ---- setup --------------------------------------------------------------------------------
    async def setup_room(self) -> None:
        a = self.args
        if a.room:
            room = await self.api.call("GET", f"/api/rooms/{quote(a.room, safe='')}")
        else:
            room = await self.api.call("POST", "/api/rooms", {
                "kind": a.kind, "title": f"load test: {a.publishers} publishers, "
                                         f"{a.subscribers} subscribers"})
            self.room_created = True
        self.room_id, self.kind = str(room["id"]), str(room["kind"])
        defaults = DEFAULT_ROLES.get(self.kind, ("presenter", "viewer"))
        self.pub_role = a.publisher_role or defaults[0]
        self.sub_role = a.subscriber_role or defaults[1]
        progress(f"room {self.room_id} ({self.kind}, "
                 f"{'created' if self.room_created else 'existing'}); publishers join as "
                 f"{self.pub_role}, subscribers as {self.sub_role}")

    async def mint_tokens(self) -> None:
        a = self.args
        run = secrets.token_hex(3)
        # publishers in worker processes of their own (their encoders must not compete with
        # viewers for one event loop), subscribers spread over the others
        pub_workers, sub_workers = self.worker_split()
        order = [("publish", i, i % max(pub_workers, 1)) for i in range(a.publishers)]
        order += [("subscribe", i, pub_workers + i % max(sub_workers, 1))
                  for i in range(a.subscribers)]
        for role, i, worker in order:
            pid = f"{'pub' if role == 'publish' else 'sub'}-{i:03d}"
            self.parts[pid] = PState(pid, role, i, worker, f"loadtest-{run}-{pid}",
                                     expect_video=a.publishers > 0)
        gate = asyncio.Semaphore(8)

        async def mint(p: PState) -> None:
            async with gate:
                data = await self.api.call("POST", f"/api/rooms/{self.room_id}/tokens", {
                    "identity": p.identity, "name": f"load test {p.id}",
                    "role": self.pub_role if p.role == "publish" else self.sub_role})
                self.tokens[p.id] = str(data["token"])

        await asyncio.gather(*(mint(p) for p in self.parts.values()))

    def worker_split(self) -> tuple[int, int]:
        """(worker processes for the publishers, for the subscribers), ``--per-process``
        participants at most in each."""
        per = self.args.per_process
        return (math.ceil(self.args.publishers / per), math.ceil(self.args.subscribers / per))

    def worker_count(self) -> int:
        return max(1, sum(self.worker_split()))

    async def spawn_workers(self) -> None:
        a = self.args
        count = self.worker_count()
        progress(f"starting {count} worker process(es), up to {a.per_process} participants "
                 "each…")
        base = [sys.executable, "-m", "loadtest.worker", "--server", self.url,
                "--room", self.room_id, "--video-kbps", str(a.video_kbps),
                "--ready-timeout", str(a.ready_timeout), "--viewer", a.viewer]
        for address in self.ice or []:
            base += ["--ice-address", address]
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        for k in range(count):
            proc = await asyncio.create_subprocess_exec(
                *base, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                env=env, start_new_session=True, preexec_fn=die_with_parent,
                limit=LINE_LIMIT)
            worker = WorkerProc(k, proc, self.on_event)
            worker.reader = asyncio.ensure_future(worker.read())
            self.workers.append(worker)
        if not await self.wait_until(lambda: len(self.ready_workers) == count, 60):
            raise CliError(f"only {len(self.ready_workers)} of {count} worker processes "
                           "started")

    # ---- running ------------------------------------------------------------------------------
    async def join(self, parts: list[PState]) -> None:
        interval = 1 / self.args.join_rate if self.args.join_rate > 0 else 0.0
        for n, p in enumerate(parts):
            if n and interval:
                await asyncio.sleep(interval)
            p.sent_join_at = time.monotonic()
            await self.workers[p.worker].send({
                "cmd": "join", "id": p.id, "role": p.role, "token": self.tokens[p.id],
                "tag": p.index if p.role == "publish" else 0,
                "expect_video": p.expect_video})

    def counts(self) -> dict[str, int]:
        pubs = [p for p in self.parts.values() if p.role == "publish"]
        subs = [p for p in self.parts.values() if p.role == "subscribe"]
        return {"publishers_joined": sum(p.joined for p in pubs),
                "publishers_publishing": sum(p.published for p in pubs),
                "subscribers_joined": sum(p.joined for p in subs),
                "subscribers_with_video": sum(p.first_frame_s is not None for p in subs),
                "failed": sum(p.error is not None or p.disconnected for p in self.parts.values())}

    async def report_progress(self) -> None:
        """Every ``--report`` s on stderr: who joined, and the rates since the last line (from
        the workers' cumulative totals)."""
        a = self.args
        last_cpu = (time.monotonic(), self.server.seconds())
        last: dict[int, dict[str, Any]] = {w.index: w.totals for w in self.workers if w.totals}
        while True:
            await asyncio.sleep(a.report)
            now, cpu = time.monotonic(), self.server.seconds()
            c = self.counts()
            fps = rx = tx = rig = lag = 0.0
            rated = False
            for w in self.workers:
                cur, prev = w.totals, last.get(w.index)
                if cur and prev and float(cur["t"]) > float(prev["t"]):
                    dt = float(cur["t"]) - float(prev["t"])
                    fps += (cur["rx_frames"] - prev["rx_frames"]) / dt
                    rx += (cur["rx_bytes"] - prev["rx_bytes"]) * 8 / dt / 1e6
                    tx += (cur["tx_bytes"] - prev["tx_bytes"]) * 8 / dt / 1e6
                    rig += (cur["cpu_s"] - prev["cpu_s"]) / dt
                    lag = max(lag, float(cur.get("lag_ms_max", 0.0)))
                    rated = True
                if cur:
                    last[w.index] = cur
            with_video = c["subscribers_with_video"]
            line = (f"publishers {c['publishers_publishing']}/{a.publishers} publishing, "
                    f"subscribers {c['subscribers_joined']}/{a.subscribers} joined "
                    f"({with_video} with video)")
            if rated:
                line += (f"; sent {tx:.2f} Mbit/s; received {fps:.1f} video fps in all"
                         + (f" ({fps / with_video:.1f} per subscriber)" if with_video else "")
                         + f", {rx:.2f} Mbit/s; load tester {rig:.2f} cores (its "
                         f"loops up to {lag:.0f} ms late)")
            if c["failed"]:
                line += f"; {c['failed']} failed"
            if cpu is not None and last_cpu[1] is not None:
                line += f"; server {(cpu - last_cpu[1]) / (now - last_cpu[0]):.2f} cores"
            progress(line)
            last_cpu = (now, cpu)

    async def snapshot(self, ref: str) -> dict[str, tuple[float, dict[str, Any]]]:
        """Every worker's counters now: participant id -> (worker's time, counters)."""
        live = [w for w in self.workers if not w.exited]
        for w in live:
            await w.send({"cmd": "snapshot", "ref": ref})
        await self.wait_until(lambda: all(w.index in self.snapshots.get(ref, {}) or w.exited
                                          for w in live), 30)
        out: dict[str, tuple[float, dict[str, Any]]] = {}
        for msg in self.snapshots.get(ref, {}).values():
            for pid, counters in msg["participants"].items():
                out[pid] = (float(msg["t"]), counters)
        return out

    async def run(self) -> dict[str, Any]:
        a = self.args
        await self.setup_room()
        await self.mint_tokens()
        await self.spawn_workers()
        reporter = asyncio.ensure_future(self.report_progress())
        try:
            pubs = [p for p in self.parts.values() if p.role == "publish"]
            subs = [p for p in self.parts.values() if p.role == "subscribe"]
            joining_started = time.monotonic()
            if pubs:
                progress(f"joining {len(pubs)} publisher(s) at {a.join_rate:g}/s…")
                await self.join(pubs)
                await self.wait_until(lambda: all(p.settled for p in pubs),
                                      a.ready_timeout + 10)
            # what the publishers had received before any viewer came (their signalling)
            before_subs = await self.snapshot("pre") if subs else {}
            if subs:
                progress(f"joining {len(subs)} subscriber(s) at {a.join_rate:g}/s…")
                await self.join(subs)
            await self.wait_until(lambda: all(p.settled for p in self.parts.values()),
                                  a.ready_timeout + 10)
            join_phase = time.monotonic() - joining_started
            c = self.counts()
            progress(f"joined: {c['publishers_publishing']}/{len(pubs)} publishers publishing, "
                     f"{c['subscribers_with_video']}/{len(subs)} subscribers with video "
                     f"({join_phase:.1f} s); warming up {a.warmup:g} s, then measuring "
                     f"{a.duration:g} s…")
            await asyncio.sleep(a.warmup)
            cpu0 = self.server.seconds()
            t0 = time.monotonic()
            before = await self.snapshot("t0")
            await asyncio.sleep(a.duration)
            after = await self.snapshot("t1")
            t1 = time.monotonic()
            cpu1 = self.server.seconds()
        finally:
            reporter.cancel()
        server_cores = (None if cpu0 is None or cpu1 is None
                        else round((cpu1 - cpu0) / (t1 - t0), 4))
        return self.result(before, after, join_phase, server_cores, before_subs)

    # ---- results ------------------------------------------------------------------------------
    def result(self, before: dict[str, tuple[float, dict[str, Any]]],
               after: dict[str, tuple[float, dict[str, Any]]], join_phase: float,
               server_cores: float | None,
               before_subs: dict[str, tuple[float, dict[str, Any]]]) -> dict[str, Any]:
        a = self.args
        subs_out: list[dict[str, Any]] = []
        pubs_out: list[dict[str, Any]] = []
        for p in self.parts.values():
            row: dict[str, Any] = {"id": p.id, "identity": p.identity, "joined": p.joined,
                                   "join_s": round_or_none(p.join_s), "error": p.error}
            if p.id in after:
                row["signal_bytes"] = int(after[p.id][1].get("signal_bytes", 0))
                row["signal_messages"] = after[p.id][1].get("signal_messages", {})
                row["media_state"] = after[p.id][1].get("media_state")
            if p.id in before and p.id in after:
                (ta, ca), (tb, cb) = before[p.id], after[p.id]
                dt = max(tb - ta, 1e-6)
                if p.role == "subscribe":
                    frames = cb["frames"] - ca["frames"]
                    tracks = int(cb["video_tracks"])
                    expected = cb["expected"] - ca["expected"]
                    lost = max(0, expected - (cb["packets"] - ca["packets"]))
                    row.update({
                        "video_tracks": tracks,
                        "fps": round(frames / dt / max(tracks, 1), 2),
                        "total_fps": round(frames / dt, 2),
                        "bitrate_kbps": round((cb["bytes"] - ca["bytes"]) * 8 / dt / 1000, 1),
                        "video_kbps": round((cb["video_bytes"] - ca["video_bytes"]) * 8 / dt
                                            / 1000, 1),
                        "packets_expected": expected, "packets_lost": lost,
                        "loss_pct": round(100 * lost / expected, 3) if expected else 0.0,
                        "join_to_first_frame_s": p.first_frame_s,
                        "window_s": round(dt, 3),
                    })
                else:
                    row.update({
                        "published": p.published,
                        "sent_fps": round((cb["sent_frames"] - ca["sent_frames"]) / dt, 2),
                        "sent_kbps": round((cb["sent_bytes"] - ca["sent_bytes"]) * 8 / dt
                                           / 1000, 1),
                        "sent_packets_per_s": round((cb["sent_packets"] - ca["sent_packets"])
                                                    / dt, 1),
                    })
            (subs_out if p.role == "subscribe" else pubs_out).append(row)
        measured = [s for s in subs_out if "fps" in s]
        fps = [float(s["fps"]) for s in measured]
        ttff = [float(s["join_to_first_frame_s"]) for s in measured
                if s.get("join_to_first_frame_s") is not None]
        expected = sum(int(s["packets_expected"]) for s in measured)
        lost = sum(int(s["packets_lost"]) for s in measured)
        c = self.counts()
        sub_bytes = [int(s["signal_bytes"]) for s in subs_out if "signal_bytes" in s]
        pub_bytes = sum(int(p["signal_bytes"]) - int(before_subs.get(p["id"], (0, {}))[1]
                                                     .get("signal_bytes", 0))
                        for p in pubs_out if "signal_bytes" in p)
        out: dict[str, Any] = {
            "server": self.url,
            "room": self.room_id,
            "room_kind": self.kind,
            "room_created": self.room_created,
            "publishers": a.publishers,
            "subscribers": a.subscribers,
            **c,
            "join_phase_s": round(join_phase, 2),
            "duration_s": a.duration,
            "warmup_s": a.warmup,
            "aggregate_fps": round(sum(float(s["total_fps"]) for s in measured), 2),
            "mean_subscriber_fps": round(statistics.fmean(fps), 2) if fps else 0.0,
            "min_subscriber_fps": round(min(fps), 2) if fps else 0.0,
            "mean_subscriber_kbps": (round(statistics.fmean(float(s["bitrate_kbps"])
                                                            for s in measured), 1)
                                     if measured else 0.0),
            "total_received_mbps": round(sum(float(s["bitrate_kbps"]) for s in measured)
                                         / 1000, 3),
            "loss_pct": round(100 * lost / expected, 3) if expected else 0.0,
            "join_to_first_frame_s_p50": round_or_none(percentile(ttff, 50)),
            "join_to_first_frame_s_p95": round_or_none(percentile(ttff, 95)),
            "signal_bytes_per_subscriber_mean": (round(statistics.fmean(sub_bytes))
                                                 if sub_bytes else None),
            "signal_bytes_per_subscriber_max": max(sub_bytes) if sub_bytes else None,
            "signal_bytes_to_publishers_per_join": (round(pub_bytes / len(sub_bytes), 1)
                                                    if sub_bytes else None),
            "media_failed": sum(1 for r in subs_out + pubs_out
                                if r.get("media_state") in ("failed", "closed")),
            "load_tester": self.load_tester(),
            "per_subscriber": subs_out,
            "per_publisher": pubs_out,
            "errors": self.errors,
            "settings": {"join_rate": a.join_rate, "per_process": a.per_process,
                         "viewer": a.viewer,
                         "workers": len(self.workers), "video_kbps": a.video_kbps,
                         "publisher_role": self.pub_role, "subscriber_role": self.sub_role,
                         "ice_addresses": self.ice},
        }
        if self.server.pid is not None:  # a server on this machine: its CPU
            out["server_pid"] = self.server.pid
            out["server_cpu_cores"] = server_cores
        return out

    def load_tester(self) -> dict[str, Any]:
        """The load tester's own figures over the measurement window: CPU per worker process
        (all threads, in cores) and how late each one's event loop woke up."""
        t0, t1 = self.snapshots.get("t0", {}), self.snapshots.get("t1", {})
        rows = []
        for index in sorted(set(t0) & set(t1)):
            a, b = t0[index], t1[index]
            dt = max(float(b["t"]) - float(a["t"]), 1e-6)
            wa, wb = a.get("worker", {}), b.get("worker", {})
            rows.append({"worker": index, "participants": len(b.get("participants", {})),
                         "cpu_cores": round((wb.get("cpu_s", 0) - wa.get("cpu_s", 0)) / dt, 3),
                         **{k: wb[k] for k in ("lag_ms_mean", "lag_ms_p95", "lag_ms_max")
                            if k in wb}})
        cores = [r["cpu_cores"] for r in rows]
        return {"cpu_cores": round(sum(cores), 3),
                "cpu_cores_max_worker": max(cores) if cores else None,
                "loop_lag_ms_max": max((r.get("lag_ms_max", 0.0) for r in rows), default=None),
                "workers": rows}

    # ---- cleanup ------------------------------------------------------------------------------
    async def cleanup(self) -> None:
        if self.workers:
            progress(f"stopping {len(self.workers)} worker process(es)…")
            await asyncio.gather(*(w.stop() for w in self.workers), return_exceptions=True)
        if self.room_created and not self.args.keep_room:
            with contextlib.suppress(Exception):
                await self.api.call("POST", f"/api/rooms/{self.room_id}/end",
                                    {"reason": "load test finished"})
                progress(f"room {self.room_id} ended")

    def kill_all_now(self) -> None:
        """Last resort, synchronous: SIGKILL every worker's process group."""
        for w in self.workers:
            w.signal_group(signal.SIGKILL)


async def run_loadtest(args: argparse.Namespace) -> dict[str, Any]:
    test = LoadTest(args)
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await test.run()
    finally:
        try:
            await asyncio.shield(test.cleanup())
        finally:
            test.kill_all_now()
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGTERM)
