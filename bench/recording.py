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
bench/fanout_procs.py; every process is killed on exit (also on Ctrl-C or an error). Everything
stays on 127.0.0.1. See bench/README.md.

This file is the command line and the run; its parts: recording_windows.py (the server, its
rooms and the off/on windows), recording_measures.py (the MediaRecorder baseline, the recorder
alone, composite speed, A/V sync), recording_report.py (the printed report).

    .venv/bin/python bench/recording.py [--json] [--rooms 4] [--window 10] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _paths  # noqa: F401  (first: ``recording`` is the project's package, not this file)
from fanout_procs import CLK_TCK, BenchError, Processes, split_cores, wait_ready
from fanout_report import fmt_pair, versions
from recording_measures import (
    av_sync,
    baseline,
    composite_speed,
    recorded_files,
    recorder_alone,
)
from recording_report import report
from recording_windows import (
    MAX_ROOMS,
    ROOM_KIND,
    STARTED,
    TARGET_AV_SYNC_MS,
    TARGET_CORE_PER_PAIR,
    TARGET_LATENCY_RISE_MS,
    TARGET_REALTIME_FACTOR,
    RecordingTarget,
    Settings,
    add_latency,
    alternate,
    latency_summary,
    per_pair,
    progress,
    start_publishers,
    start_subscribers,
)


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
    resolution = 1 / (CLK_TCK * s.window * s.rooms)
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
