"""Recording benchmark (issue 10, section 6): what recording costs, measured side by side.

One run measures four things and prints them with their targets (tables, or one JSON object
with ``--json``):

1. **CPU to record one participant** (a ~1 Mbit/s VP8 camera + an Opus microphone), target
   ≤ 0.01 core. ``--rooms`` R rooms (default 4) each hold one publisher (bench/subscriber.py
   ``--replay --audio``: pre-encoded VP8 and Opus loops, so publishers are cheap). Recording
   is switched in all R rooms at once, window after window: off, on, off, … (``--cycles`` on
   windows, each between two off ones); our cost per pair = (server CPU of an on window − the
   mean of the off windows beside it) / R, averaged over the on windows. The baseline is
   how an aiortc-based service records: a process that joins a room and records what it
   receives with ``aiortc.contrib.media.MediaRecorder`` (decode, re-encode into a
   .webm), minus a plain, non-decoding subscriber measured the same way; both marginal costs
   and their ratio are printed, with the raw figures.
2. **Forwarding latency while 8 rooms record**, target: p50 rises by ≤ 0.5 ms.
   ``--latency-rooms`` rooms (default 8), each a replay publisher and one subscriber that
   times every packet (fanout.py's per-packet latency); the same off/on windows.
3. **Composite speed**: bench/composite_speed.measure_speed (a 20 s two-person 640×480
   session), target ≥ 2× real time per core.
4. **A/V sync of a composite**: a live session recorded in this process (one publisher flashes
   and beeps, a second flashes while a third beeps), composed by the recording worker; every
   flash/beep pair is measured (tests/support/avsync.py), target ≤ 40 ms.

Processes, the server's core of its own, CPU from /proc and the worker protocol come from
bench/fanout.py; every process is killed on exit (also on Ctrl-C or an error). Everything stays
on 127.0.0.1. See bench/README.md.

    .venv/bin/python bench/recording.py [--json] [--rooms 4] [--window 10] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _paths  # noqa: F401  (first: ``recording`` is the project's package, not this file)
import av
import fanout
from fanout import (
    LATENCY_LOOKBACK_S,
    BenchError,
    HuizhenTarget,
    Processes,
    Worker,
    cpu_seconds,
    fmt_pair,
    gather_or_cancel,
    host_busy_seconds,
    packet_latencies,
    percentiles,
    split_cores,
    versions,
    wait_ready,
    worker_env,
)

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
    args = [sys.executable, str(fanout.WORKER), "--target", "huizhen", "--server", target.url,
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
    """Per-packet latency of each window (fanout.packet_latencies: publisher send → arrival at
    the subscriber's socket, and as read by the subscriber process), from the raw packets."""
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


# ---- the baseline: aiortc's MediaRecorder in a participant -------------------------------------
async def baseline(target: RecordingTarget, room: str, tmp: Path, s: Settings
                   ) -> dict[str, Any]:
    """CPU of a plain (non-decoding) subscriber and of a MediaRecorder participant in the same
    room, one after the other, each over ``s.baseline_window`` s after a warm-up. Both run on
    the server's core (where a recording service would run), one at a time."""
    rows: dict[str, dict[str, Any]] = {}
    webm = tmp / "mediarecorder.webm"
    for role in ("receive", "record"):
        extra = ["--record-to", str(webm)] if role == "record" else []
        progress(f"baseline: a {'MediaRecorder' if extra else 'plain subscriber'} process "
                 "joins room 0…")
        worker = await spawn_client(target, f"baseline-{role}", room, VIEWER_ROLE,
                                    ["--role", role, *extra], server_core=True)
        try:
            await worker.event("ready", 90)
            await asyncio.sleep(s.warmup)
            progress(f"baseline ({role}): measuring {s.baseline_window:g} s…")
            t0, c0 = time.monotonic(), cpu_seconds(worker.pid)
            await asyncio.sleep(s.baseline_window)
            t1, c1 = time.monotonic(), cpu_seconds(worker.pid)
            await worker.send(f"stop {t0!r} {t1!r}")
            stats = await worker.event("stats", 30)
        finally:
            await target.procs.stop([worker])
        rows[role] = {"cores": round((c1 - c0) / (t1 - t0), 4),
                      "video_fps": round(float(stats["fps"]), 2),
                      "audio_fps": round(float(stats.get("audio_fps", 0.0)), 2),
                      "window_s": round(t1 - t0, 3)}
        progress(f"baseline ({role}): {rows[role]['cores']:.4f} cores, "
                 f"{rows[role]['video_fps']:.1f} video fps, "
                 f"{rows[role]['audio_fps']:.1f} audio frames/s")
    # a recorder that fell behind (its frames queue up) spends less than recording costs
    kept_up = rows["record"]["video_fps"] >= 0.9 * rows["receive"]["video_fps"]
    if not kept_up:
        progress("baseline: warning: the MediaRecorder process recorded "
                 f"{rows['record']['video_fps']:.1f} fps of "
                 f"{rows['receive']['video_fps']:.1f}: it fell behind, and its CPU figure "
                 "understates what recording costs it")
    return {
        "core_per_pair": round(rows["record"]["cores"] - rows["receive"]["cores"], 5),
        "recorder": rows["record"], "plain_subscriber": rows["receive"],
        "recorder_kept_up": kept_up, "recorder_file": webm_summary(webm),
    }


def webm_summary(path: Path) -> dict[str, Any] | None:
    """Frames per stream and length of a recorded file (demuxed, not decoded)."""
    if not path.exists():
        return None
    out: dict[str, Any] = {"bytes": path.stat().st_size}
    times: dict[str, list[float]] = {}
    try:
        with av.open(str(path)) as container:
            for packet in container.demux():
                if packet.pts is not None and packet.time_base is not None:
                    kind = f"{packet.stream.type}:{packet.stream.codec_context.name}"
                    times.setdefault(kind, []).append(float(packet.pts * packet.time_base))
    except av.FFmpegError as exc:
        out["error"] = str(exc)
    for kind, ts in times.items():
        out[kind] = {"frames": len(ts), "seconds": round(max(ts) - min(ts), 2)}
    return out


def recorded_files(folder: Path) -> dict[str, Any]:
    """What the SFU wrote while recording was on: per video file, frames per second and
    Mbit/s over its own span; the count of audio and video files."""
    video: list[tuple[float, float]] = []
    audio_files = 0
    for path in sorted(folder.glob("*/tracks/*")):
        with av.open(str(path)) as container:
            stream = container.streams[0]
            if stream.type == "audio":
                audio_files += 1
                continue
            packets = [(float(p.pts * p.time_base), p.size) for p in container.demux(stream)
                       if p.pts is not None and p.time_base is not None]
        if len(packets) < 2:
            continue
        span = packets[-1][0] - packets[0][0]
        if span > 0:
            video.append(((len(packets) - 1) / span,
                          sum(size for _, size in packets) * 8 / span / 1e6))
    return {
        "video_files": len(video), "audio_files": audio_files,
        "video_fps_min": round(min((f for f, _ in video), default=0.0), 2),
        "video_mbps_mean": round(statistics.fmean([m for _, m in video]), 3) if video else 0.0,
    }


# ---- composite speed and A/V sync (in this process) -------------------------------------------
def recorder_alone(seconds: float, kbps: int) -> dict[str, Any]:
    """The recorder's own CPU, without the noise of a whole server: ``seconds`` of the same
    ~1 Mbit/s VP8 + Opus pair the publishers replay, packetised as aiortc sends it, fed (as
    fast as it goes, in this process) through a SourceTrack with and without a TrackRecorder
    tapping it; the difference in process CPU time, per second of media, is what recording one
    pair costs (frames made whole, placed, muxed and written)."""
    import subscriber
    from aiortc.codecs.vpx import Vp8Encoder

    from media.source import MediaTrack, SourceTrack
    from recording.capture import TrackMeta, TrackRecorder
    from recording.timeline import ClockOffset, SessionClock

    frames = subscriber.encode_pattern(1, 4.0, kbps)
    tones, _ = subscriber.encode_tone(440.0)
    packer = Vp8Encoder()
    packets: list[tuple[float, str, int, int, int, bytes]] = []  # (t, kind, seq, ts, m, data)
    seq = 0
    for i in range(int(seconds * 30)):
        frame = av.Packet(frames[i % len(frames)])
        frame.pts, frame.time_base = i, fractions.Fraction(1, 30)
        payloads, _ = packer.pack(frame)
        for j, payload in enumerate(payloads):
            packets.append((i / 30, "video", seq, i * 3000, int(j == len(payloads) - 1),
                            payload))
            seq += 1
    for i in range(int(seconds * 50)):
        packets.append((i / 50, "audio", i, i * 960, 0, tones[i % len(tones)]))
    packets.sort(key=lambda p: p[0])
    video_kbps = sum(len(p[5]) for p in packets if p[1] == "video") * 8 / seconds / 1000

    def run(record: bool, folder: Path) -> float:
        sources = {kind: SourceTrack(kind, kind, mime, rate, lambda ssrc: None,
                                     lambda ssrc, seqs: None)
                   for kind, mime, rate in (("video", "video/VP8", 90000),
                                            ("audio", "audio/opus", 48000))}
        now = time.time()
        recorders = []
        if record:
            session, offset = SessionClock(now - 1.0), ClockOffset()
            for kind, source in sources.items():
                meta = TrackMeta(kind, "p", "bench", "doctor", kind,
                                 "camera" if kind == "video" else "microphone",
                                 "vp8" if kind == "video" else "opus")
                recorders.append(TrackRecorder(MediaTrack(kind, kind, [source]), meta,
                                               folder / f"{kind}.webm", session, offset))
        ntp = (int(now) + 2208988800) << 32
        for source in sources.values():
            source.on_sender_report(ntp, 0)
        started = time.process_time()
        for n, (_, kind, sq, ts, marker, data) in enumerate(packets):
            sources[kind].on_packet(1 if kind == "video" else 2, sq & 0xFFFF,
                                    ts & 0xFFFFFFFF, marker, data, 0,
                                    (False, 40) if kind == "audio" else None, None)
            if n % 40 == 0:  # the service ticks its recorders every 0.1 s
                for recorder in recorders:
                    recorder.tick()
        for recorder in recorders:
            recorder.close()
        return time.process_time() - started

    rounds = []
    for _ in range(3):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            plain = run(False, Path(a))
            recorded = run(True, Path(b))
            rounds.append((recorded - plain) / seconds)
    return {"core_per_pair": round(statistics.median(rounds), 5),
            "rounds": [round(r, 5) for r in rounds], "media_s": seconds,
            "video_kbps": round(video_kbps), "packets": len(packets)}


def composite_speed(seconds: int) -> dict[str, Any]:
    from composite_speed import measure_speed

    progress(f"composite speed: composing a {seconds} s two-person 640x480 session…")
    result: dict[str, Any] = measure_speed(seconds)
    progress(f"composite speed: {result['realtime_factor']}x real time "
             f"({result['cpu_s']} s CPU for {result['session_s']} s)")
    return result


async def av_sync(folder: Path, seconds: float) -> dict[str, Any]:
    """A live session through an in-process server: dr-li flashes and beeps (1 kHz) on the
    second; dr-wu flashes and the patient beeps (2.5 kHz) on the half second. Recorded,
    composed by the recording worker (in this process), and every flash/beep pair measured
    (tests/recording_support.py: the same session as the 60 s A/V test, shorter)."""
    from tests.harness import LOOPBACK, running_server
    from tests.recording_support import flash_beep_session

    LOOPBACK.install()
    progress(f"A/V sync: recording a {seconds:g} s session (3 publishers) in this process, "
             "then storing and composing it…")
    async with running_server(folder) as server:
        try:
            found = await flash_beep_session(server, seconds)
        except AssertionError as exc:
            raise BenchError(f"the A/V sync session failed: {exc}") from exc
    same, split = found.same, found.split

    def worst(offsets: list[float]) -> float | None:
        return round(max(abs(o) for o in offsets) * 1000, 2) if offsets else None

    every = same + split
    return {
        "max_ms": worst(every), "pairs": len(every),
        "mean_ms": round(statistics.fmean(every) * 1000, 2) if every else None,
        "same_publisher_pairs": len(same), "same_publisher_max_ms": worst(same),
        "split_publishers_pairs": len(split), "split_publishers_max_ms": worst(split),
        # beep − flash (ms; positive: sound late), in the order of the flashes
        "same_publisher_offsets": [round(o * 1000, 2) for o in same],
        "split_publishers_offsets": [round(o * 1000, 2) for o in split],
        "session_s": found.recording.get("duration_s"),
        "recording_status": found.recording.get("status"),
    }


# ---- the run -----------------------------------------------------------------------------------
async def bench(s: Settings, procs: Processes, tmp: Path, all_cores: set[int]
                ) -> dict[str, Any]:
    load_start = [round(x, 2) for x in os.getloadavg()]
    cores = procs.cores()  # (before this process gets every core back for parts 3 and 4)
    target = RecordingTarget(procs, tmp)
    progress(f"starting the server on {target.url}…")
    target.server = await target.start_server()
    await wait_ready(target.url + target.ready_path, target.server)
    rooms_needed = max(s.rooms, s.latency_rooms)
    await target.create_rooms(rooms_needed)
    progress(f"server ready (pid {target.server.pid}); {rooms_needed} {ROOM_KIND} room(s) "
             "with consent")

    # 1. CPU per recorded pair, and the MediaRecorder baseline
    publishers = await start_publishers(target, range(s.rooms), s)
    progress(f"warming up {s.warmup:g} s…")
    await asyncio.sleep(s.warmup)
    cpu_rows = await alternate(target, publishers, target.rooms[:s.rooms], [], s, "cpu")
    ours = per_pair(cpu_rows, s.rooms)
    base = await baseline(target, target.rooms[0], tmp, s)

    # 2. forwarding latency while every room records
    if s.latency_rooms > s.rooms:
        publishers += await start_publishers(target, range(s.rooms, s.latency_rooms), s)
    subscribers = await start_subscribers(target, range(s.latency_rooms))
    progress(f"warming up {s.warmup:g} s…")
    await asyncio.sleep(s.warmup)
    lat_rows = await alternate(target, publishers[:s.latency_rooms],
                               target.rooms[:s.latency_rooms], subscribers, s, "latency")
    progress(f"stopping {len(procs.workers)} process(es)…")
    await procs.stop_all()
    progress("matching the packets publishers sent with those subscribers received…")
    add_latency(lat_rows)
    lat = latency_summary(lat_rows)
    with_subscribers = per_pair(lat_rows, s.latency_rooms)
    for row in lat_rows:
        row.pop("_samples", None)
        progress(f"latency: window {row['window']} (recording "
                 f"{'on' if row['recording'] else 'off'}): p50/p95 "
                 f"{fmt_pair(row['latency_ms_p50'], row['latency_ms_p95'])} ms over "
                 f"{row['latency_packets']} packets")
    files = recorded_files(target.data_dir / "recordings")

    # 1b, 3 and 4 run in this process, with nothing else running: every core again
    os.sched_setaffinity(0, all_cores)
    progress(f"the recorder alone: {s.alone_seconds:g} s of a ~1 Mbit/s pair replayed through "
             "a SourceTrack, with and without recording…")
    alone = await asyncio.to_thread(recorder_alone, s.alone_seconds, s.publisher_kbps)
    progress(f"the recorder alone: {alone['core_per_pair']:.5f} core per pair")
    speed = composite_speed(s.composite_seconds)
    sync = await av_sync(tmp / "avsync", s.session_seconds)

    ratio = (round(base["core_per_pair"] / ours["core_per_pair"], 1)
             if ours["core_per_pair"] > 0 else None)
    # one clock tick of the server's CPU time over a window, per room: differences of this
    # size are noise
    resolution = 1 / (fanout.CLK_TCK * s.window * s.rooms)
    return {
        # 1. server CPU (cores) to record one ~1 Mbit/s VP8 + Opus pair
        "record_core_per_track": ours["core_per_pair"],
        "record_core_per_track_by_cycle": ours["core_per_pair_by_cycle"],
        "record_server_cores_off": ours["server_cores_off"],
        "record_server_cores_on": ours["server_cores_on"],
        "record_core_per_track_with_subscribers": with_subscribers["core_per_pair"],
        "record_core_resolution": round(resolution, 5),
        "record_core_per_track_alone": alone["core_per_pair"],
        "recorder_alone": alone,
        "baseline_record_core_per_track": base["core_per_pair"],
        "baseline_recorder_cores": base["recorder"]["cores"],
        "baseline_plain_subscriber_cores": base["plain_subscriber"]["cores"],
        "baseline": base,
        "ratio": ratio,
        "recorded": files,
        "cpu_windows": cpu_rows,
        # 2. forwarding latency (ms, per packet, publisher → subscriber socket), off vs on
        "latency_ms_p50_off": lat["p50_off"], "latency_ms_p95_off": lat["p95_off"],
        "latency_ms_p50_on": lat["p50_on"], "latency_ms_p95_on": lat["p95_on"],
        "latency_rise_ms_p50": lat["rise_p50"], "latency_rise_ms_p95": lat["rise_p95"],
        "latency_rise_ms_p50_by_cycle": lat["rise_p50_by_cycle"],
        "latency_app_ms_p50_off": lat["app_p50_off"], "latency_app_ms_p50_on": lat["app_p50_on"],
        "latency_packets_off": lat["packets_off"], "latency_packets_on": lat["packets_on"],
        "subscriber_fps_min_off": lat["subscriber_fps_min_off"],
        "subscriber_fps_min_on": lat["subscriber_fps_min_on"],
        "latency_windows": lat_rows,
        # 3. composite speed
        "composite_realtime_factor": speed["realtime_factor"],
        "composite": speed,
        # 4. A/V sync of a composite
        "av_sync_max_ms": sync["max_ms"],
        "av_sync_pairs": sync["pairs"],
        "av_sync": sync,
        "targets": {"record_core_per_track": TARGET_CORE_PER_PAIR,
                    "latency_rise_ms_p50": TARGET_LATENCY_RISE_MS,
                    "composite_realtime_factor": TARGET_REALTIME_FACTOR,
                    "av_sync_max_ms": TARGET_AV_SYNC_MS},
        "machine": {**versions(), "loadavg_start": load_start,
                    "loadavg_end": [round(x, 2) for x in os.getloadavg()]},
        "settings": {**s.as_dict(), "room_kind": ROOM_KIND, "cores": cores,
                     "duration_s": round(time.monotonic() - STARTED, 1)},
    }


# ---- output ------------------------------------------------------------------------------------
def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("meets" if ok else "MISSES")


def _num(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def report(r: dict[str, Any]) -> str:
    s, m, t = r["settings"], r["machine"], r["targets"]
    cores = s["cores"]
    base = r["baseline"]
    files = r["recorded"]
    out = [
        f"Recording benchmark: {s['rooms']} room(s) for CPU, {s['latency_rooms']} for latency; "
        f"windows of {s['window']:g} s, recording off, on, off, … ({s['cycles']} on, each "
        f"between two off); run took {s['duration_s']:g} s",
        f"machine: {m['nproc']} cores ({m['cpu'] or 'unknown CPU'}), Python {m['python']}, "
        f"aiortc {m['aiortc']}, av {m['av']}",
        ("cores: all processes share all" if cores["server"] is None else
         f"cores: the server (and, one at a time, the baseline's two processes) on "
         f"{cores['server']}; publishers, subscribers and this script on {cores['others']}"),
        "",
        "1. Server CPU to record one ~1 Mbit/s VP8 camera + Opus microphone (cores)",
        f"  {'window':>6}  {'recording':>9}  {'server cores':>12}  {'clients':>7}  "
        f"{'host busy':>9}  {'sent fps min':>12}  {'sent Mbit/s':>11}",
    ]
    for w in r["cpu_windows"]:
        out.append(f"  {w['window']:>6}  {'on' if w['recording'] else 'off':>9}  "
                   f"{w['server_cores']:>12.4f}  {w['clients_cores']:>7.2f}  "
                   f"{w['host_busy_cores']:>9.2f}  "
                   f"{w['publisher_fps_min']:>12.1f}  {w['publisher_mbps_mean']:>11.2f}")
    ours = r["record_core_per_track"]
    out += [
        f"  Huizhen (taps the forwarded packets, writes them as they are): "
        f"{ours:.4f} core per pair  [(on − mean of the off windows beside it) / "
        f"{s['rooms']} rooms, ± {r['record_core_resolution']:.4f} (a clock tick); per on "
        f"window: "
        f"{', '.join(f'{x:.4f}' for x in r['record_core_per_track_by_cycle'])}; with a "
        f"subscriber per room, {s['latency_rooms']} rooms: "
        f"{r['record_core_per_track_with_subscribers']:.4f}]  "
        f"target ≤ {t['record_core_per_track']}: {verdict(ours <= t['record_core_per_track'])}",
        f"  the recorder alone (its own CPU: {r['recorder_alone']['media_s']:g} s of a "
        f"{r['recorder_alone']['video_kbps']} kbit/s VP8 + Opus pair replayed through a "
        f"SourceTrack with and without the tap, in this process, median of 3): "
        f"{r['record_core_per_track_alone']:.5f} core per pair",
        f"  baseline, aiortc MediaRecorder in a participant (decode + re-encode to .webm): "
        f"{r['baseline_record_core_per_track']:.4f} core per pair  "
        f"[recorder process {base['recorder']['cores']:.4f} − plain subscriber "
        f"{base['plain_subscriber']['cores']:.4f}; recorder got "
        f"{base['recorder']['video_fps']:.1f} video fps, {base['recorder']['audio_fps']:.1f} "
        f"audio frames/s; plain subscriber {base['plain_subscriber']['video_fps']:.1f} fps]"
        + ("" if base["recorder_kept_up"] else "  (the recorder FELL BEHIND: understated)"),
        "  ratio baseline/ours: " + (f"{r['ratio']:.1f}x" if r["ratio"] is not None else "n/a"),
        f"  what Huizhen wrote: {files['video_files']} video + {files['audio_files']} audio "
        f"files, video ≥ {files['video_fps_min']:.1f} fps, {files['video_mbps_mean']:.2f} "
        "Mbit/s mean",
        "",
        f"2. Forwarding latency with recording off/on in {s['latency_rooms']} rooms "
        "(per packet, publisher send → subscriber socket, ms)",
        f"  {'window':>6}  {'recording':>9}  {'server cores':>12}  {'clients':>7}  "
        f"{'host busy':>9}  {'p50/p95 ms':>11}  {'packets':>7}  {'sub fps min':>11}  "
        f"{'sub fps mean':>12}",
    ]
    for w in r["latency_windows"]:
        out.append(f"  {w['window']:>6}  {'on' if w['recording'] else 'off':>9}  "
                   f"{w['server_cores']:>12.4f}  {w['clients_cores']:>7.2f}  "
                   f"{w['host_busy_cores']:>9.2f}  "
                   f"{fmt_pair(w['latency_ms_p50'], w['latency_ms_p95']):>11}  "
                   f"{w['latency_packets']:>7}  {w['subscriber_fps_min']:>11.1f}  "
                   f"{w['subscriber_fps_mean']:>12.1f}")
    rise = r["latency_rise_ms_p50"]
    out += [
        f"  pooled p50/p95: off {fmt_pair(r['latency_ms_p50_off'], r['latency_ms_p95_off'])}, "
        f"on {fmt_pair(r['latency_ms_p50_on'], r['latency_ms_p95_on'])}; rise p50 "
        f"{_num(rise, '+.3f')} ms (per on window, over the off windows beside it: "
        f"{', '.join(f'{x:+.3f}' for x in r['latency_rise_ms_p50_by_cycle'])}), p95 "
        f"{_num(r['latency_rise_ms_p95'], '+.3f')} ms  target p50 rise ≤ "
        f"{t['latency_rise_ms_p50']}: "
        f"{verdict(None if rise is None else rise <= t['latency_rise_ms_p50'])}",
        "",
        f"3. Composite speed ({r['composite']['session_s']:g} s two-person 640x480 session → "
        f"{r['composite']['output']}): {r['composite_realtime_factor']:.2f}x real time per core "
        f"({r['composite']['cpu_s']:.1f} s CPU, {r['composite']['wall_s']:.1f} s wall)  "
        f"target ≥ {t['composite_realtime_factor']:g}x: "
        f"{verdict(r['composite_realtime_factor'] >= t['composite_realtime_factor'])}",
        "",
    ]
    sync = r["av_sync"]
    worst = r["av_sync_max_ms"]
    out.append(
        f"4. A/V sync in a composite of a {_num(sync['session_s'], 'g')} s live session: max "
        f"|offset| {_num(worst, '.1f')} ms over {r['av_sync_pairs']} flash/beep pairs (mean "
        f"{_num(sync['mean_ms'], '+.1f')} ms; same publisher {sync['same_publisher_pairs']} "
        f"pairs, max {_num(sync['same_publisher_max_ms'], '.1f')} ms; flash and beep from two "
        f"publishers {sync['split_publishers_pairs']} pairs, max "
        f"{_num(sync['split_publishers_max_ms'], '.1f')} ms)  target ≤ "
        f"{t['av_sync_max_ms']:g} ms: "
        f"{verdict(None if worst is None else worst <= t['av_sync_max_ms'])}")
    return "\n".join(out)


# ---- main --------------------------------------------------------------------------------------
def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


async def amain(s: Settings, procs: Processes, tmp: Path, all_cores: set[int]
                ) -> dict[str, Any]:
    try:
        return await bench(s, procs, tmp, all_cores)
    finally:
        if procs.workers:
            progress(f"stopping {len(procs.workers)} remaining process(es)…")
        await asyncio.shield(procs.stop_all())


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Settings]:
    parser = argparse.ArgumentParser(
        description="What recording costs: server CPU per recorded pair vs aiortc's "
                    "MediaRecorder, forwarding latency while rooms record, composite speed, "
                    "A/V sync (everything on 127.0.0.1).")
    parser.add_argument("--rooms", type=int, default=None,
                        help="rooms (one publisher each) for the CPU figure (default 4)")
    parser.add_argument("--latency-rooms", type=int, default=None,
                        help="rooms recording at once for the latency figure (default 8)")
    parser.add_argument("--window", type=float, default=None,
                        help="seconds per measuring window (default 10)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds after the clients are ready, before measuring (default 6)")
    parser.add_argument("--settle", type=float, default=None,
                        help="seconds after switching recording on or off, before the next "
                             "window (default 2)")
    parser.add_argument("--cycles", type=int, default=None,
                        help="off/on window pairs per figure (default 2)")
    parser.add_argument("--baseline-window", type=float, default=None,
                        help="seconds each baseline process is measured (default: --window)")
    parser.add_argument("--composite-seconds", type=int, default=None,
                        help="length of the session composed for the speed figure (default 20)")
    parser.add_argument("--session-seconds", type=float, default=None,
                        help="length of the live session recorded for A/V sync (default 20)")
    parser.add_argument("--publisher-kbps", type=int, default=1000,
                        help="bitrate of the publishers' pre-encoded VP8 loop (default 1000)")
    parser.add_argument("--replay-seconds", type=float, default=None,
                        help="length of the publishers' pre-encoded loop (default 4)")
    parser.add_argument("--alone-seconds", type=float, default=None,
                        help="seconds of media replayed through the recorder alone (default "
                             "60)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny rooms and windows (the smoke test): checks that it works, "
                             "the figures mean little")
    parser.add_argument("--share-cores", action="store_true",
                        help="let the server share every core with the clients (default: the "
                             "server gets the first core)")
    parser.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the temp folder with every process's log")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults: dict[str, Any] = {
        "rooms": 1 if quick else 8, "latency_rooms": 1 if quick else 8,
        "window": 1.0 if quick else 10.0, "warmup": 0.3 if quick else 6.0,
        "settle": 0.2 if quick else 2.0, "cycles": 1 if quick else 2,
        "composite_seconds": 2 if quick else 20, "session_seconds": 3.0 if quick else 20.0,
        "replay_seconds": 1.0 if quick else 4.0, "alone_seconds": 2.0 if quick else 60.0,
    }
    values = {k: (getattr(args, k) if getattr(args, k) is not None else v)
              for k, v in defaults.items()}
    baseline_window = args.baseline_window if args.baseline_window is not None else \
        values["window"]
    s = Settings(**values, baseline_window=baseline_window, publisher_kbps=args.publisher_kbps)
    if s.rooms < 1 or s.latency_rooms < 1 or s.cycles < 1:
        parser.error("--rooms, --latency-rooms and --cycles must be at least 1")
    if max(s.rooms, s.latency_rooms) > MAX_ROOMS:
        parser.error(f"at most {MAX_ROOMS} rooms")
    if min(s.window, s.baseline_window) <= 0 or min(s.warmup, s.settle) < 0:
        parser.error("windows must be positive, --warmup and --settle not negative")
    if s.replay_seconds < 1:
        parser.error("--replay-seconds must be at least 1")
    if s.composite_seconds < 2 or s.session_seconds < 3:
        parser.error("--composite-seconds must be at least 2, --session-seconds at least 3")
    if s.publisher_kbps < 100:
        parser.error("--publisher-kbps must be at least 100")
    return args, s


def main(argv: list[str] | None = None) -> int:
    args, s = parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="huizhen-recording-"))
    (tmp / "logs").mkdir()
    all_cores = set(os.sched_getaffinity(0))
    server_cpus, client_cpus = split_cores(args.share_cores)
    if client_cpus is not None:
        os.sched_setaffinity(0, client_cpus)  # inherited by the publishers and subscribers
    procs = Processes(tmp / "logs", server_cpus)
    code = 1
    result: dict[str, Any] = {}
    try:
        result = asyncio.run(amain(s, procs, tmp, all_cores))
        code = 0
    except KeyboardInterrupt:
        progress("interrupted")
        code = 130
    except BenchError as exc:
        progress(f"failed: {exc}")
    finally:
        procs.kill_all_now()
        if args.keep_logs or code:
            progress(f"logs kept in {tmp / 'logs'}")
            for data in (tmp / "huizhen-data", tmp / "avsync"):
                with contextlib.suppress(OSError):
                    shutil.rmtree(data)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if code:
        return code
    print(json.dumps(result, indent=2) if args.json else report(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
