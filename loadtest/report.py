"""What a load test shows: progress lines on stderr while it runs, percentiles, and the result
table on stdout (``render``; ``--json`` prints the result as it is)."""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

STARTED = time.monotonic()


def progress(message: str) -> None:
    print(f"[loadtest {time.monotonic() - STARTED:6.1f}s] {message}", file=sys.stderr,
          flush=True)


def percentile(values: list[float], q: int) -> float | None:
    """The q-th percentile (inclusive method); None for no values."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def round_or_none(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def render(result: dict[str, Any]) -> str:
    r = result
    lines = [
        f"Load test on {r['server']}: room {r['room']} ({r['room_kind']}"
        f"{', created' if r['room_created'] else ''}), {r['publishers']} publisher(s), "
        f"{r['subscribers']} subscriber(s); measured {r['duration_s']:g} s after the join "
        f"phase ({r['join_phase_s']:g} s)",
        f"publishers publishing: {r['publishers_publishing']}/{r['publishers']}; subscribers "
        f"joined: {r['subscribers_joined']}/{r['subscribers']}, with video: "
        f"{r['subscribers_with_video']}; failed: {r['failed']}",
        f"received video: {r['mean_subscriber_fps']:.1f} fps per track per subscriber (min "
        f"{r['min_subscriber_fps']:.1f}), {r['aggregate_fps']:.1f} fps in all; "
        f"{r['mean_subscriber_kbps'] / 1000:.2f} Mbit/s per subscriber, "
        f"{r['total_received_mbps']:.2f} Mbit/s in all; loss {r['loss_pct']:.2f}%",
    ]
    p50, p95 = r["join_to_first_frame_s_p50"], r["join_to_first_frame_s_p95"]
    lines.append("join → first video frame: " + (
        f"p50 {p50:.2f} s, p95 {p95:.2f} s" if p50 is not None and p95 is not None else "n/a"))
    if r.get("signal_bytes_per_subscriber_mean") is not None:
        lines.append(f"signalling the server sent: {r['signal_bytes_per_subscriber_mean']} bytes "
                     f"per subscriber (max {r['signal_bytes_per_subscriber_max']}), "
                     f"{r['signal_bytes_to_publishers_per_join']} bytes to the publishers per "
                     "subscriber join")
    if r.get("media_failed"):
        lines.append(f"media connections failed or closed: {r['media_failed']}")
    if "server_cpu_cores" in r:
        cores = r["server_cpu_cores"]
        lines.append(f"server (pid {r['server_pid']}, this machine): "
                     + (f"{cores:.3f} cores" if cores is not None else "CPU n/a"))
    rig = r.get("load_tester") or {}
    if rig.get("workers"):
        lines.append(f"load tester ({r['settings'].get('viewer')} viewers): "
                     f"{rig['cpu_cores']:.3f} cores in {len(rig['workers'])} worker process(es) "
                     f"(busiest {rig['cpu_cores_max_worker']:.3f}); event loops up to "
                     f"{rig['loop_lag_ms_max'] or 0:.0f} ms late")
    lines += ["", f"  {'subscriber':<10}  {'tracks':>6}  {'fps':>6}  {'kbit/s':>8}  "
                  f"{'loss %':>6}  {'first frame s':>13}  error"]
    for s in r["per_subscriber"]:
        first = s.get("join_to_first_frame_s")
        lines.append(f"  {s['id']:<10}  {s.get('video_tracks', 0):>6}  {s.get('fps', 0):>6.1f}  "
                     f"{s.get('bitrate_kbps', 0):>8.0f}  {s.get('loss_pct', 0):>6.2f}  "
                     f"{'-' if first is None else f'{first:.2f}':>13}  {s.get('error') or ''}")
    lines += ["", f"  {'publisher':<10}  {'sent fps':>8}  {'sent kbit/s':>11}  error"]
    for p in r["per_publisher"]:
        lines.append(f"  {p['id']:<10}  {p.get('sent_fps', 0):>8.1f}  "
                     f"{p.get('sent_kbps', 0):>11.0f}  {p.get('error') or ''}")
    return "\n".join(line.rstrip() for line in lines)
