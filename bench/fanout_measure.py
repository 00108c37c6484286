"""bench/fanout.py's measurements: one row per N (server CPU, frame rates, bitrates, added
latency), the publisher's bitrate gate, and the least-squares fit of server cores against N.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import _paths  # noqa: F401  (first: the project's packages before bench/'s scripts)
from fanout_procs import (
    BenchError,
    Worker,
    cpu_seconds,
    gather_or_cancel,
    host_busy_seconds,
    progress,
    udp_ports,
    wait_ready,
)
from fanout_report import fmt_pair
from fanout_targets import Target

#: publisher packets sent up to this long before the window are kept for matching (a
#: saturated MediaRelay queues frames for seconds)
LATENCY_LOOKBACK_S = 8.0


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
        sockets = udp_ports(pid)  # the publisher's and the N subscribers' connections
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
        # the server's UDP sockets at the end of the window, and their distinct local ports:
        # a port per connection (N + 1), or one shared port (``--udp-port``)
        "server_udp_sockets": len(sockets),
        "server_udp_ports": len(set(sockets)),
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

