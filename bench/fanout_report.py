"""bench/fanout.py's output: the machine's versions and the tables of the printed report."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
from typing import Any

import _paths  # noqa: F401  (first: the project's packages before bench/'s scripts)
from fanout_targets import HuizhenOnePortTarget, HuizhenTarget, JanusTarget, RelayTarget


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


def _times(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "n/a"


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
    if result["one_port_points"]:
        o_per_mbps = result["one_port_core_per_forwarded_mbps"]
        out += ["", table(f"{HuizhenOnePortTarget.label}, UDP port "
                          f"{s['udp_port']}", result["one_port_points"],
                          result["one_port_core_per_extra_subscriber"],
                          result["one_port_intercept_cores"],
                          "" if o_per_mbps is None else
                          f"  core per forwarded Mbit/s: {o_per_mbps:.4f}")]
        out += ["", "ratio one port/per connection (core per extra subscriber): "
                + _times(result["one_port_vs_per_connection"])
                + " (above 1: the shared port costs more per subscriber)"]
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
        if result["one_port_points"]:
            out += ["ratio one port/Janus (core per extra subscriber): "
                    + _times(result["one_port_vs_janus"])
                    + " (below 1: Huizhen on one port costs less per subscriber)"]
    out += ["", "added latency, all rows pooled, p50/p95 ms: Huizhen per packet "
            + fmt_pair(result["added_latency_ms_p50"], result["added_latency_ms_p95"])
            + " (read by the subscriber process: "
            + fmt_pair(result["added_latency_app_ms_p50"], result["added_latency_app_ms_p95"])
            + ")"
            + ", Huizhen per frame "
            + fmt_pair(result["added_frame_latency_ms_p50"], result["added_frame_latency_ms_p95"])]
    if result["one_port_points"]:
        out[-1] += (", Huizhen one port per packet "
                    + fmt_pair(result["one_port_added_latency_ms_p50"],
                               result["one_port_added_latency_ms_p95"])
                    + " (read by the subscriber process: "
                    + fmt_pair(result["one_port_added_latency_app_ms_p50"],
                               result["one_port_added_latency_app_ms_p95"])
                    + ")")
    if result["baseline_points"]:
        out[-1] += (", baseline per frame "
                    + fmt_pair(result["baseline_added_latency_ms_p50"],
                               result["baseline_added_latency_ms_p95"])
                    + " (re-encoded: per packet n/a)")
    if result["janus_points"]:
        out[-1] += (", Janus per packet "
                    + fmt_pair(result["janus_added_latency_ms_p50"],
                               result["janus_added_latency_ms_p95"]))
    if len(result["rounds"]) > 1:
        out += ["", f"{len(result['rounds'])} rounds (the tables above are the last one's); "
                "core per extra subscriber (per connection · one port · Janus), ours ÷ Janus "
                "(per connection · one port), per-packet latency p50 ms (per connection · one "
                "port · Janus):"]
        for number, r in enumerate([*result["rounds"], result["median"]], start=1):
            name = f"round {number}" if number <= len(result["rounds"]) else "median"
            out.append(f"  {name:>8}: " + " · ".join(_value(r[k]) for k in (
                "core_per_extra_subscriber", "one_port_core_per_extra_subscriber",
                "janus_core_per_extra_subscriber")) + "   " + " · ".join(
                _value(r[k]) for k in ("per_connection_vs_janus", "one_port_vs_janus"))
                + "   " + " · ".join(_value(r[k]) for k in (
                    "added_latency_ms_p50", "one_port_added_latency_ms_p50",
                    "janus_added_latency_ms_p50")))
    return "\n".join(out)


def _value(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}"

