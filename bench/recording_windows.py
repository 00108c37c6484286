"""bench/recording.py's server and windows: ``huizhen serve`` with ``clinic`` rooms whose
recording is switched through the REST API, the publisher and subscriber processes in them, and
the alternating windows (recording off, on, off, …) with the server's CPU and the per-packet
latency of each.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _paths  # noqa: F401  (first: ``recording`` is the project's package, not bench/'s)
from fanout_measure import LATENCY_LOOKBACK_S, packet_latencies, percentiles
from fanout_procs import (
    BenchError,
    Processes,
    Worker,
    cpu_seconds,
    gather_or_cancel,
    host_busy_seconds,
    worker_env,
)
from fanout_targets import WORKER, HuizhenTarget

STARTED = time.monotonic()
ROOM_KIND = "clinic"  # records on request only (a broadcast room records by itself), no simulcast
PUBLISHER_ROLE = "doctor"
VIEWER_ROLE = "nurse"

MAX_ROOMS = 48  # a process per publisher and per subscriber: more would not fit a small machine

TARGET_CORE_PER_PAIR = 0.01
TARGET_LATENCY_RISE_MS = 0.5
TARGET_REALTIME_FACTOR = 2.0
TARGET_AV_SYNC_MS = 40.0


def progress(message: str) -> None:
    print(f"[recording {time.monotonic() - STARTED:6.1f}s] {message}", file=sys.stderr,
          flush=True)


@dataclass
class Settings:
    rooms: int
    latency_rooms: int
    window: float
    warmup: float
    settle: float
    cycles: int
    baseline_window: float
    composite_seconds: int
    session_seconds: float
    publisher_kbps: int
    replay_seconds: float
    alone_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


# ---- the server, its rooms and the recording switch ------------------------------------------
class RecordingTarget(HuizhenTarget):
    """``huizhen serve`` with ``clinic`` rooms (consent given) whose recording is switched
    through the REST API. Its recording worker processes are off (``recording.workers: 0``):
    a worker composing the stopped recordings would be a child of the server and count in
    its CPU; the jobs stay queued."""

    def __init__(self, procs: Processes, tmp: Path) -> None:
        super().__init__(procs, tmp)
        self.rooms: list[str] = []

    def server_env(self) -> dict[str, str]:
        return {**super().server_env(), "HUIZHEN_RECORDING__WORKERS": "0"}

    async def create_rooms(self, count: int) -> None:
        for i in range(len(self.rooms), count):
            room = await self.api("/api/rooms", {"kind": ROOM_KIND,
                                                 "title": f"recording benchmark {i}"})
            room_id = str(room["id"])
            await self.api(f"/api/rooms/{room_id}/consents", {
                "granted": True, "method": "written", "given_by_role": "patient",
                "obtained_by": "dr-bench"})
            self.rooms.append(room_id)

    async def token(self, room: str, identity: str, role: str) -> str:
        reply = await self.api(f"/api/rooms/{room}/tokens", {
            "identity": identity, "name": identity, "ttl_s": 3600, "role": role})
        return str(reply["token"])

    async def record(self, rooms: list[str], on: bool) -> None:
        """Start (201) or stop (200) the recording in every one of ``rooms`` at once."""
        action, expect = ("start", 201) if on else ("stop", 200)
        await gather_or_cancel(*(self.api(f"/api/rooms/{room}/recording/{action}", {},
                                          expect=expect) for room in rooms))


async def spawn_client(target: RecordingTarget, name: str, room: str, role: str,
                       worker_args: list[str], server_core: bool = False) -> Worker:
    """A bench/subscriber.py process in ``room``."""
    identity = f"{name}-{secrets.token_hex(3)}"
    token = await target.token(room, identity, role)
    args = [sys.executable, str(WORKER), "--target", "huizhen", "--server", target.url,
            "--room", room, "--token", token, "--ready-timeout", "60", *worker_args]
    return await target.procs.spawn(name, args, env=worker_env(), server=server_core)


async def start_publishers(target: RecordingTarget, indexes: range, s: Settings
                           ) -> list[Worker]:
    progress(f"starting {len(indexes)} publisher(s) (pre-encoded VP8 loop + Opus tone)…")
    pubs = [await spawn_client(target, f"publisher-{i}", target.rooms[i], PUBLISHER_ROLE,
                               ["--role", "publish", "--replay", "--audio", "--tag", str(i % 8),
                                "--max-kbps", str(s.publisher_kbps),
                                "--replay-seconds", str(s.replay_seconds)])
            for i in indexes]
    ready = await gather_or_cancel(*(p.event("ready", 90) for p in pubs))
    for i, r in zip(indexes, ready, strict=True):
        loop = r.get("replay") or {}
        progress(f"publisher {i}: replaying {loop.get('frames')} frames "
                 f"({loop.get('seconds')} s, {loop.get('mbps')} Mbit/s encoded)")
    return pubs


async def start_subscribers(target: RecordingTarget, indexes: range) -> list[Worker]:
    progress(f"starting {len(indexes)} latency subscriber(s)…")
    subs = [await spawn_client(target, f"subscriber-{i}", target.rooms[i], VIEWER_ROLE,
                               ["--role", "subscribe"])
            for i in indexes]
    await gather_or_cancel(*(s.event("ready", 90) for s in subs))
    return subs


# ---- alternating windows: recording off, on, off, on, off -------------------------------------
async def window_stats(workers: list[Worker], t0: float, t1: float) -> list[dict[str, Any]]:
    for w in workers:
        await w.send(f"window {t0!r} {t1!r}")
    return await gather_or_cancel(*(w.event("stats", 30) for w in workers))


async def sent_packets(publishers: list[Worker], t0: float, t1: float
                       ) -> list[dict[str, Any]]:
    for p in publishers:
        await p.send(f"packets {t0 - LATENCY_LOOKBACK_S!r} {t1!r}")
    return await gather_or_cancel(*(p.event("packets", 30) for p in publishers))


async def alternate(target: RecordingTarget, publishers: list[Worker], rooms: list[str],
                    subscribers: list[Worker], s: Settings, label: str
                    ) -> list[dict[str, Any]]:
    """Windows with recording off and on in every room, each "on" between two "off"s: off, on,
    off, … (``s.cycles`` on windows), so that a slow drift of the server's load cancels out.
    Besides the server's CPU, what the publishers sent and the clients' own CPU; with
    subscribers (one per room, in the rooms' order) also the packets for the latency, kept raw
    (``_raw``) and matched after the run (``add_latency``), when this process no longer shares
    a core with the clients."""
    assert target.server is not None
    rows: list[dict[str, Any]] = []
    clients = publishers + subscribers
    recording = False
    try:
        for index in range(2 * s.cycles + 1):
            on = index % 2 == 1
            if on != recording:
                await target.record(rooms, on)
                recording = on
                await asyncio.sleep(s.settle)  # files opened / closed, keyframe arrived
            state = "on" if on else "off"
            progress(f"{label}: window {index + 1}/{2 * s.cycles + 1}, recording {state} in "
                     f"{len(rooms)} room(s): measuring {s.window:g} s…")
            pid = target.server.pid
            c_clients = sum(cpu_seconds(w.pid) for w in clients)
            t0, c0, h0 = time.monotonic(), cpu_seconds(pid), host_busy_seconds()
            await asyncio.sleep(s.window)
            t1, c1, h1 = time.monotonic(), cpu_seconds(pid), host_busy_seconds()
            c_clients = sum(cpu_seconds(w.pid) for w in clients) - c_clients
            sent = await window_stats(publishers, t0, t1)
            row: dict[str, Any] = {
                "window": index + 1, "recording": on,
                "server_cores": round((c1 - c0) / (t1 - t0), 4),
                "clients_cores": round(c_clients / (t1 - t0), 3),
                "host_busy_cores": round((h1 - h0) / (t1 - t0), 3),
                "window_s": round(t1 - t0, 3),
                "publisher_fps_min": round(min(float(x["fps"]) for x in sent), 2),
                "publisher_mbps_mean": round(statistics.fmean(float(x["mbps"])
                                                              for x in sent), 3),
            }
            seen = ""
            if subscribers:
                packets = await sent_packets(publishers, t0, t1)
                got = await window_stats(subscribers, t0, t1)
                row.update({
                    "subscriber_fps_min": round(min(float(x["fps"]) for x in got), 2),
                    "subscriber_fps_mean": round(statistics.fmean(float(x["fps"])
                                                                  for x in got), 2),
                    "subscriber_max_gap_s": max(float(x["max_gap_s"]) for x in got),
                    "_raw": list(zip(packets, [x.get("arrivals") or {} for x in got],
                                     strict=True)),
                })
                seen = f"; subscribers ≥ {row['subscriber_fps_min']:.1f} fps"
            rows.append(row)
            progress(f"{label}: server {row['server_cores']:.4f} cores (clients "
                     f"{row['clients_cores']:.2f}, host {row['host_busy_cores']:.2f}); "
                     f"publishers sent ≥ {row['publisher_fps_min']:.1f} fps, "
                     f"{row['publisher_mbps_mean']:.2f} Mbit/s each{seen}")
    finally:
        if recording:
            with contextlib.suppress(BenchError):
                await target.record(rooms, False)
    return rows


def add_latency(rows: list[dict[str, Any]]) -> None:
    """Per-packet latency of each window (fanout_measure.packet_latencies: publisher send →
    arrival at the subscriber's socket, and as read by the subscriber process), from the raw
    packets."""
    for row in rows:
        samples: dict[str, list[float]] = {"packets": [], "app": []}
        unmatched = 0
        for sent, arrivals in row.pop("_raw"):
            if not arrivals:
                continue
            lat, miss = packet_latencies(sent, arrivals)
            samples["packets"] += lat
            samples["app"] += packet_latencies(sent, arrivals, "t_app")[0]
            unmatched += miss
        row["latency_ms_p50"], row["latency_ms_p95"] = percentiles(samples["packets"])
        row["latency_packets"] = len(samples["packets"])
        row["latency_unmatched_packets"] = unmatched
        row["_samples"] = samples


def brackets(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each "on" window with the "off" windows on either side of it."""
    out = []
    for i, row in enumerate(rows):
        if row["recording"]:
            out.append((row, [r for r in rows[max(0, i - 1):i + 2] if not r["recording"]]))
    return out


def per_pair(rows: list[dict[str, Any]], rooms: int) -> dict[str, Any]:
    """Server cores per recorded pair: per "on" window, (its cores − the mean of the "off"
    windows on either side) / rooms; and their mean."""
    by_cycle = [(on["server_cores"] - statistics.fmean(o["server_cores"] for o in offs)) / rooms
                for on, offs in brackets(rows)]
    return {
        "core_per_pair": round(statistics.fmean(by_cycle), 5),
        "core_per_pair_by_cycle": [round(x, 5) for x in by_cycle],
        "server_cores_off": round(statistics.fmean(r["server_cores"] for r in rows
                                                   if not r["recording"]), 4),
        "server_cores_on": round(statistics.fmean(r["server_cores"] for r in rows
                                                  if r["recording"]), 4),
    }


def latency_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-packet latency of every "off" window pooled, of every "on" window pooled, the rise;
    and the rise of each "on" window over the "off" windows on either side of it."""
    def pooled(windows: list[dict[str, Any]], key: str = "packets") -> list[float]:
        return [x for w in windows for x in w["_samples"][key]]

    out: dict[str, Any] = {}
    for state, on in (("off", False), ("on", True)):
        windows = [r for r in rows if r["recording"] is on]
        out[f"p50_{state}"], out[f"p95_{state}"] = percentiles(pooled(windows))
        out[f"app_p50_{state}"], out[f"app_p95_{state}"] = percentiles(pooled(windows, "app"))
        out[f"packets_{state}"] = len(pooled(windows))
        out[f"subscriber_fps_min_{state}"] = min(w["subscriber_fps_min"] for w in windows)
    for q in ("p50", "p95"):
        a, b = out[f"{q}_off"], out[f"{q}_on"]
        out[f"rise_{q}"] = None if a is None or b is None else round(b - a, 3)
    by_cycle = []
    for window, offs in brackets(rows):
        off50 = percentiles(pooled(offs))[0]
        if window["latency_ms_p50"] is not None and off50 is not None:
            by_cycle.append(round(window["latency_ms_p50"] - off50, 3))
    out["rise_p50_by_cycle"] = by_cycle
    return out
