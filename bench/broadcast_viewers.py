"""Hundreds of viewers on one node (issue 12): one presenter, N light viewers, one run per N.

For each N (default 0, 100, 200, 300) a fresh ``huizhen serve`` (its own process, as in
fanout.py) gets a ``broadcast`` room and ``huizhen loadtest --kind broadcast --publishers 1
--subscribers N --join-rate 10 --video-kbps 500 --viewer light --json`` runs against it. Printed
side by side, per N: join → first frame p50/p95, received fps (mean and min) and loss, the
server's CPU over the measurement window (cores, and per viewer), the signalling the server
sent per viewer (bytes each viewer received over its WebSocket, and bytes to the presenter per
viewer join: flat as N grows when viewers are quiet), the load tester's own CPU and its event
loops' worst lag, the media connections that failed and the "video paused" lines in the
server's log. Then the slope of server cores against N (least squares: the cost of one more
viewer), its intercept, and viewers per core extrapolated from the slope (target: ≥ 400 at
500 kbit/s).

    .venv/bin/python bench/broadcast_viewers.py                 # N = 0,100,200,300 (~5 min)
    .venv/bin/python bench/broadcast_viewers.py --viewers 0,20 --duration 5   # a quick look
    .venv/bin/python bench/broadcast_viewers.py --json

Everything runs on this machine (loopback only): the load tester's CPU is printed so that a
starved load tester (its loops late by hundreds of ms, viewers' media failing) is seen, not
mistaken for the server's limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _paths  # noqa: F401  (first: the project's packages before bench/'s scripts)
from fanout_procs import (
    BenchError,
    Processes,
    host_busy_seconds,
    progress,
    wait_ready,
    worker_env,
)
from fanout_targets import API_KEY, HuizhenTarget

TARGET_VIEWERS_PER_CORE = 400


def slope(points: list[tuple[float, float]]) -> tuple[float | None, float | None]:
    """Least-squares (slope, intercept) of y against x; (None, None) for fewer than 2 x."""
    if len({x for x, _ in points}) < 2:
        return None, None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx
    return b, my - b * mx


async def one_run(n: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """A fresh server, one load test with ``n`` viewers, its figures."""
    run_dir = tmp / f"n{n}"
    run_dir.mkdir()
    procs = Processes(run_dir)
    target = HuizhenTarget(procs, run_dir)
    try:
        env = target.server_env()
        env["HUIZHEN_LOGGING__LEVEL"] = "INFO"  # "video paused: weak downlink" lines
        target.data_dir.mkdir()
        server = await procs.spawn("huizhen-server", [sys.executable, "-m", "huizhen.cli",
                                                      "serve"], env=env, cwd=run_dir,
                                   exits_on_eof=False)
        await wait_ready(target.url + "/readyz", server)
        cmd = [sys.executable, "-m", "huizhen.cli", "loadtest", "--server", target.url,
               "--api-key", API_KEY, f"--api-secret={target.secret}", "--kind", "broadcast",
               "--publishers", "1", "--subscribers", str(n), "--join-rate", str(args.join_rate),
               "--video-kbps", str(args.video_kbps), "--per-process", str(args.per_process),
               "--viewer", args.viewer, "--duration", str(args.duration), "--warmup",
               str(args.warmup), "--ready-timeout", str(args.ready_timeout), "--report", "5",
               "--json"]
        progress(f"N={n}: huizhen loadtest … --subscribers {n}")
        busy0, t0 = host_busy_seconds(), time.monotonic()
        loadtest = await asyncio.create_subprocess_exec(
            *cmd, env=worker_env(), stdout=asyncio.subprocess.PIPE,
            stderr=(run_dir / "loadtest.log").open("wb"))
        out, _ = await loadtest.communicate()
        host_busy = (host_busy_seconds() - busy0) / (time.monotonic() - t0)
        try:
            result: dict[str, Any] = json.loads(out)
        except ValueError:
            tail = (run_dir / "loadtest.log").read_text(errors="replace")[-3000:]
            raise BenchError(f"N={n}: the load test printed no result\n{tail}") from None
        log = server.log_path.read_text(errors="replace")
        result["server_log_paused"] = log.count("video paused")
        result["server_log_consent_expired"] = log.count("Consent to send expired")
        result["host_busy_cores"] = round(host_busy, 3)
        return result
    finally:
        await procs.stop_all()


def row(n: int, r: dict[str, Any]) -> dict[str, Any]:
    cores = r.get("server_cpu_cores")
    rig = r.get("load_tester") or {}
    return {
        "viewers": n,
        "with_video": r.get("subscribers_with_video"),
        "ttff_p50_s": r.get("join_to_first_frame_s_p50"),
        "ttff_p95_s": r.get("join_to_first_frame_s_p95"),
        "fps_mean": r.get("mean_subscriber_fps"),
        "fps_min": r.get("min_subscriber_fps"),
        "loss_pct": r.get("loss_pct"),
        "sent_fps": (r.get("per_publisher") or [{}])[0].get("sent_fps"),
        "server_cores": cores,
        "server_core_per_viewer": round(cores / n, 5) if cores is not None and n else None,
        "signal_bytes_per_viewer": r.get("signal_bytes_per_subscriber_mean"),
        "signal_bytes_to_presenter_per_join": r.get("signal_bytes_to_publishers_per_join"),
        "rig_cores": rig.get("cpu_cores"),
        "rig_busiest_worker_cores": rig.get("cpu_cores_max_worker"),
        "rig_loop_lag_ms_max": rig.get("loop_lag_ms_max"),
        "host_busy_cores": r.get("host_busy_cores"),
        "media_failed": r.get("media_failed"),
        "failed": r.get("failed"),
        "server_log_paused": r.get("server_log_paused"),
        "server_log_consent_expired": r.get("server_log_consent_expired"),
    }


def healthy_row(r: dict[str, Any]) -> bool:
    """Every viewer got the video (≥ 25 fps) and nobody failed: a row the slope may use (a
    collapsed server's CPU says nothing about what a viewer costs)."""
    if r["server_cores"] is None:
        return False
    if not r["viewers"]:
        return True
    return (r["with_video"] == r["viewers"] and (r["fps_min"] or 0) >= 25
            and not r["failed"] and not r["media_failed"])


def render(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    def f(v: Any, spec: str = "") -> str:
        return "-" if v is None else format(v, spec)

    lines = [f"{'viewers':>7} {'video':>5} {'ttff p50/p95 s':>14} {'fps mean/min':>12} "
             f"{'loss%':>5} {'server cores':>12} {'core/viewer':>11} {'sig B/viewer':>12} "
             f"{'B/join→pres':>11} {'rig cores':>9} {'rig lag ms':>10} {'host':>5} "
             f"{'failed':>6} {'paused':>6}"]
    for r in rows:
        lines.append(
            f"{r['viewers']:>7} {f(r['with_video']):>5} "
            f"{f(r['ttff_p50_s'], '.2f') + '/' + f(r['ttff_p95_s'], '.2f'):>14} "
            f"{f(r['fps_mean'], '.1f') + '/' + f(r['fps_min'], '.1f'):>12} "
            f"{f(r['loss_pct'], '.2f'):>5} {f(r['server_cores'], '.3f'):>12} "
            f"{f(r['server_core_per_viewer'], '.5f'):>11} "
            f"{f(r['signal_bytes_per_viewer']):>12} "
            f"{f(r['signal_bytes_to_presenter_per_join'], '.1f'):>11} "
            f"{f(r['rig_cores'], '.2f'):>9} {f(r['rig_loop_lag_ms_max'], '.0f'):>10} "
            f"{f(r['host_busy_cores'], '.2f'):>5} "
            f"{f((r['media_failed'] or 0) + (r['failed'] or 0)):>6} "
            f"{f(r['server_log_paused']):>6}")
    s = summary
    lines += [
        "",
        f"rows where every viewer got the video (used below): N = {s['healthy_viewers']}"
        + (f"; NOT (the server or the load tester failed): N = {s['failed_viewers']}"
           if s["failed_viewers"] else ""),
        f"server core per extra viewer (slope): {f(s['core_per_viewer'], '.5f')}; "
        f"intercept (presenter alone): {f(s['intercept_cores'], '.3f')} cores",
        f"viewers per server core at {s['video_kbps']} kbit/s: "
        f"{f(s['viewers_per_core'], '.0f')} (target ≥ {TARGET_VIEWERS_PER_CORE}: "
        f"{'met' if s['target_met'] else 'NOT met'})",
        "signalling per viewer, largest N / smallest N (1.0 = flat): "
        f"{f(s['signal_bytes_ratio'], '.3f')}",
    ]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    ns = [int(v) for v in args.viewers.split(",") if v.strip()]
    rows = []
    with tempfile.TemporaryDirectory(prefix="hz-broadcast-") as tmp:
        for n in ns:
            rows.append(row(n, await one_run(n, args, Path(tmp))))
            progress(f"N={n}: {rows[-1]}")
    healthy = [r for r in rows if healthy_row(r)]
    points = [(float(r["viewers"]), float(r["server_cores"])) for r in healthy]
    b, a = slope(points)
    sig = [(r["viewers"], r["signal_bytes_per_viewer"]) for r in healthy
           if r["viewers"] and r["signal_bytes_per_viewer"]]
    summary = {
        "healthy_viewers": [r["viewers"] for r in healthy],
        "failed_viewers": [r["viewers"] for r in rows if not healthy_row(r)],
        "core_per_viewer": None if b is None else round(b, 6),
        "intercept_cores": None if a is None else round(a, 4),
        "viewers_per_core": round(1 / b) if b else None,
        "target_met": bool(b and 1 / b >= TARGET_VIEWERS_PER_CORE),
        "signal_bytes_ratio": (round(sig[-1][1] / sig[0][1], 3) if len(sig) >= 2 else None),
        "video_kbps": args.video_kbps,
    }
    return {"rows": rows, "summary": summary, "settings": vars(args),
            "machine": {"nproc": os.cpu_count(), "loadavg": os.getloadavg()}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--viewers", default="0,100,200,300", help="N values (default 0,100,200,300)")
    p.add_argument("--join-rate", type=float, default=10)
    p.add_argument("--video-kbps", type=int, default=500)
    p.add_argument("--per-process", type=int, default=50,
                   help="viewers per load-test worker process (default 50)")
    p.add_argument("--viewer", choices=("light", "full"), default="light")
    p.add_argument("--duration", type=float, default=20)
    p.add_argument("--warmup", type=float, default=5)
    p.add_argument("--ready-timeout", type=float, default=40)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    result = asyncio.run(main_async(args))
    print(json.dumps(result, indent=2) if args.json else render(result["rows"],
                                                                 result["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
