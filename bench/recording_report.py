"""bench/recording.py's printed report: each figure beside its target."""

from __future__ import annotations

from typing import Any

import _paths  # noqa: F401  (first: ``recording`` is the project's package, not bench/'s)
from fanout_report import fmt_pair


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
