"""Fan-out benchmark: server CPU per extra subscriber, Huizhen vs aiortc's MediaRelay.

One publisher sends a 640x480 VP8 test pattern (~30 fps, bitrate set by REMB) into a broadcast
room; for each N, N subscribers (one process each, no decoding) receive it. After a warm-up,
the server process's CPU (utime+stime from /proc/<pid>/stat, in cores) and every subscriber's
received frame rate are measured over the same window. The slope of server CPU against N
(least squares) is the cost of one more subscriber. The same is done against
bench/relay_baseline.py (decode once, re-encode per subscriber) and the two are compared.

In the same window, the latency the server adds is measured: publisher send → subscriber
arrival of each RTP packet (matched by a hash of its payload, which Huizhen forwards
unchanged), and of the first packet of each frame (matched by RTP timestamp; the only way for
the re-encoding baseline). All processes read the same clock (CLOCK_MONOTONIC).

Every process is started here, in its own process group, on 127.0.0.1 only, and every group is
killed on exit (also on Ctrl-C, SIGTERM or an error). Progress goes to stderr; the result goes
to stdout (tables, or one JSON object with ``--json``). See bench/README.md.

Huizhen is measured in both socket modes, one after the other in the same run: a UDP port per
connection (``media.udp_port: 0``) and one shared UDP port for all media (the default mode:
``media.udp_port``, media/udpmux.py; ``--udp-port PORT`` chooses the port, ``--no-udp-port``
skips it), and the two are compared with each other (and with Janus, with ``--janus``).

This file is the command line and the run; its parts: fanout_procs.py (processes, CPU from
/proc), fanout_targets.py (the servers and their configurations), fanout_measure.py (one row
per N, the added latency, the fit), fanout_report.py (the printed tables).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import _paths  # noqa: F401  (first: the project's packages before bench/'s scripts)
import fanout_targets
from fanout_measure import Options, fit, percentiles, run_target
from fanout_procs import BenchError, Processes, progress, split_cores
from fanout_report import forwarded_mbps, report, rounded, versions
from fanout_targets import (
    JANUS_ICE_ADDRESS,
    JANUS_IFACE,
    NETNS_ENV,
    NETNS_SETUP,
    HuizhenOnePortTarget,
    HuizhenTarget,
    JanusTarget,
    RelayTarget,
    janus_paths,
)


def exec_in_netns(argv: list[str]) -> None:
    """Run this benchmark again inside a private network namespace (see JANUS_IFACE)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        raise BenchError("--janus needs unshare (util-linux) and ip (iproute2)")
    owner = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    probe = subprocess.run(["unshare", *owner, "--net", "true"], capture_output=True)
    if probe.returncode != 0:
        raise BenchError("--janus needs a private network namespace (root, or unprivileged user "
                         f"namespaces): unshare said {probe.stderr.decode().strip()!r}")
    progress("janus: running the whole benchmark in a private network namespace "
             f"(lo + {JANUS_IFACE} with {JANUS_ICE_ADDRESS})")
    os.environ[NETNS_ENV] = "1"
    os.execvp("unshare", ["unshare", *owner, "--net", "--", "sh", "-c",
                          NETNS_SETUP + ' && exec "$@"', "_",
                          sys.executable, str(Path(__file__).resolve()), *argv])


def parse_counts(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected numbers like 1,4,8") from None
    if not counts or any(c < 1 for c in counts):
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive numbers like 1,4,8")
    return counts


def ratio(a: float | None, b: float | None) -> float | None:
    """a ÷ b rounded to 2 decimals; None without both, or when b is not positive."""
    return round(a / b, 2) if a is not None and b is not None and b > 0 else None


async def bench(args: argparse.Namespace, procs: Processes, tmp: Path) -> dict[str, Any]:
    opts = Options(args.subscribers, args.warmup, args.window, args.settle, args.recover)
    load_start = [round(x, 2) for x in os.getloadavg()]
    ours = await run_target(HuizhenTarget(procs, tmp), opts)
    one_port: list[dict[str, Any]] = []
    one_port_udp: int | None = None
    if args.udp_port is not None:  # right after the per-connection ports: like for like
        one_port_target = HuizhenOnePortTarget(procs, tmp, args.udp_port)
        one_port_udp = one_port_target.udp_port
        one_port = await run_target(one_port_target, opts)
    baseline: list[dict[str, Any]] = []
    if not args.no_baseline:
        counts = args.baseline_subscribers or [n for n in args.subscribers if n <= 8] or [1]
        baseline = await run_target(RelayTarget(procs, tmp),
                                    Options(counts, args.warmup, args.window, args.settle,
                                            args.recover))
    janus: list[dict[str, Any]] = []
    if args.janus:
        janus = await run_target(JanusTarget(procs, tmp), opts)
    slope, intercept = fit(ours)
    per_mbps, _ = fit(ours, forwarded_mbps)
    b_slope, b_intercept = fit(baseline) if baseline else (None, None)
    j_slope, j_intercept = fit(janus) if janus else (None, None)
    j_per_mbps = fit(janus, forwarded_mbps)[0] if janus else None
    o_slope, o_intercept = fit(one_port) if one_port else (None, None)
    o_per_mbps = fit(one_port, forwarded_mbps)[0] if one_port else None
    samples = [p.pop("_samples") for p in ours]
    b_samples = [p.pop("_samples") for p in baseline]
    j_samples = [p.pop("_samples") for p in janus]
    o_samples = [p.pop("_samples") for p in one_port]
    o50, o95 = percentiles([x for s in o_samples for x in s["packets"]])
    o_app50, o_app95 = percentiles([x for s in o_samples for x in s["app"]])
    j50, j95 = percentiles([x for s in j_samples for x in s["packets"]])
    lat50, lat95 = percentiles([x for s in samples for x in s["packets"]])
    app50, app95 = percentiles([x for s in samples for x in s["app"]])
    f50, f95 = percentiles([x for s in samples for x in s["frames"]])
    b50, b95 = percentiles([x for s in b_samples for x in s["frames"]])
    return {
        # publisher send → subscriber arrival, ms, every row's subscribers pooled: per RTP
        # packet for Huizhen; per frame (first packet) for both; the re-encoding baseline has
        # no per-packet figure (its payloads are new), so its figures are per frame
        # (arrival: the datagram reached the subscriber's socket, the kernel's timestamp;
        # "_app": the subscriber's process had read and decrypted it, which on one shared
        # machine adds the wait for a core among N+2 busy processes)
        "added_latency_ms_p50": lat50,
        "added_latency_ms_p95": lat95,
        "added_latency_app_ms_p50": app50,
        "added_latency_app_ms_p95": app95,
        "added_frame_latency_ms_p50": f50,
        "added_frame_latency_ms_p95": f95,
        "baseline_added_latency_ms_p50": b50,
        "baseline_added_latency_ms_p95": b95,
        "core_per_extra_subscriber": None if slope is None else round(slope, 5),
        "intercept_cores": None if intercept is None else round(intercept, 4),
        "core_per_forwarded_mbps": None if per_mbps is None else round(per_mbps, 5),
        "baseline_core_per_extra_subscriber": None if b_slope is None else round(b_slope, 5),
        "baseline_intercept_cores": None if b_intercept is None else round(b_intercept, 4),
        "ratio": (round(b_slope / slope, 2) if slope and b_slope is not None and slope > 0
                  else None),
        # the C SFU (only with --janus): same publisher, subscribers and window
        "janus_core_per_extra_subscriber": rounded(j_slope, 5),
        "janus_intercept_cores": rounded(j_intercept, 4),
        "janus_core_per_forwarded_mbps": rounded(j_per_mbps, 5),
        "janus_ratio": (round(j_slope / slope, 2) if slope and j_slope is not None and slope > 0
                        else None),
        "janus_added_latency_ms_p50": j50,
        "janus_added_latency_ms_p95": j95,
        "janus_min_subscriber_fps": min(p["min_fps"] for p in janus) if janus else None,
        "janus_points": janus,
        # Huizhen again with one UDP port for all media (only with --udp-port): same
        # publisher, subscribers and window; the ratios are its core per extra subscriber ÷
        # the per-connection ports' and ÷ Janus's (above 1: the shared port costs more)
        "one_port_core_per_extra_subscriber": rounded(o_slope, 5),
        "one_port_intercept_cores": rounded(o_intercept, 4),
        "one_port_core_per_forwarded_mbps": rounded(o_per_mbps, 5),
        "one_port_vs_per_connection": ratio(o_slope, slope),
        "one_port_vs_janus": ratio(o_slope, j_slope),
        "one_port_added_latency_ms_p50": o50,
        "one_port_added_latency_ms_p95": o95,
        "one_port_added_latency_app_ms_p50": o_app50,
        "one_port_added_latency_app_ms_p95": o_app95,
        "one_port_min_subscriber_fps": (min(p["min_fps"] for p in one_port) if one_port
                                        else None),
        "one_port_points": one_port,
        "min_subscriber_fps": min(p["min_fps"] for p in ours),
        "baseline_min_subscriber_fps": (min(p["min_fps"] for p in baseline)
                                        if baseline else None),
        "points": ours,
        "baseline_points": baseline,
        "publisher_bitrate_mbps": round(statistics.fmean(p["publisher_mbps"] for p in ours), 3),
        "received_bitrate_mbps": round(statistics.fmean(p["bitrate_mbps"] for p in ours), 3),
        "baseline_bitrate_mbps": (round(statistics.fmean(p["bitrate_mbps"] for p in baseline), 3)
                                  if baseline else None),
        "machine": {**versions(), "loadavg_start": load_start,
                    "loadavg_end": [round(x, 2) for x in os.getloadavg()]},
        "settings": {"subscribers": args.subscribers,
                     "baseline_subscribers": [p["n"] for p in baseline],
                     "janus": bool(args.janus), "udp_port": one_port_udp,
                     "warmup_s": args.warmup, "window_s": args.window, "settle_s": args.settle,
                     "recover_max_s": args.recover, "cores": procs.cores()},
    }


#: the figures each round contributes to ``rounds`` and whose medians are ``median``
ROUND_KEYS = ("core_per_extra_subscriber", "one_port_core_per_extra_subscriber",
              "janus_core_per_extra_subscriber", "per_connection_vs_janus", "one_port_vs_janus",
              "one_port_vs_per_connection", "added_latency_ms_p50",
              "one_port_added_latency_ms_p50", "janus_added_latency_ms_p50")


def combine(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One run's result, or with several rounds the last round's (its rows, as one run prints
    them) with every round's figures (``rounds``) and their medians (``median``)."""
    for result in results:
        result["per_connection_vs_janus"] = ratio(result["core_per_extra_subscriber"],
                                                  result["janus_core_per_extra_subscriber"])
    out = dict(results[-1])
    out["rounds"] = [{key: r[key] for key in ROUND_KEYS} for r in results]
    values = {key: [r[key] for r in results if r[key] is not None] for key in ROUND_KEYS}
    out["median"] = {key: round(statistics.median(v), 5) if v else None
                     for key, v in values.items()}
    return out


async def amain(args: argparse.Namespace, procs: Processes, tmp: Path) -> dict[str, Any]:
    try:
        results = []
        for number in range(1, args.rounds + 1):
            folder = tmp  # each round's servers get data folders of their own
            if args.rounds > 1:
                progress(f"round {number} of {args.rounds}")
                folder = tmp / f"round-{number}"
                folder.mkdir()
            results.append(await bench(args, procs, folder))
        return combine(results)
    finally:
        if procs.workers:
            progress(f"stopping {len(procs.workers)} remaining process(es)…")
        await asyncio.shield(procs.stop_all())


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Server CPU per extra subscriber: Huizhen vs aiortc MediaRelay "
                    "(everything on 127.0.0.1).")
    parser.add_argument("--subscribers", type=parse_counts, default=[1, 4, 8, 16, 32],
                        help="values of N for Huizhen (default 1,4,8,16,32)")
    parser.add_argument("--baseline-subscribers", type=parse_counts, default=None,
                        help="values of N for the MediaRelay baseline (default: the same, "
                             "capped at 8)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the baseline")
    parser.add_argument("--janus", action="store_true",
                        help="also measure Janus's VideoRoom, a C SFU, with the same N values "
                             "(needs Debian's janus package)")
    parser.add_argument("--udp-port", type=int, nargs="?", const=0, default=0,
                        metavar="PORT",
                        help="the port of Huizhen's one UDP port for all media (media.udp_port, "
                             "the default mode), measured beside the per-connection ports "
                             "(default: a free one)")
    parser.add_argument("--no-udp-port", dest="udp_port", action="store_const", const=None,
                        help="measure Huizhen with a UDP port per connection only")
    parser.add_argument("--warmup", type=float, default=4.0,
                        help="seconds after all subscribers receive, before measuring")
    parser.add_argument("--window", type=float, default=10.0, help="measuring window, seconds")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds the publisher runs before the first N, for its bitrate "
                             "to follow REMB up (default 10)")
    parser.add_argument("--recover", type=float, default=30.0,
                        help="after the warm-up, wait at most this long for the publisher's "
                             "bitrate to climb back to 85%% of the highest seen (Huizhen only; "
                             "default 30)")
    parser.add_argument("--share-cores", action="store_true",
                        help="let the server share every core with the publisher and the "
                             "subscribers (default: the server gets the first core, "
                             "everything else the others)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure everything this many times over, one round after the "
                             "other, and report each round's slopes and ratios and their "
                             "medians (a shared machine moves a ratio by ±0.2–0.3 between "
                             "runs; default 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the temp folder with every process's log")
    parser.add_argument("--publisher-kbps", type=int, default=1000,
                        help="the publisher's VP8 bitrate ceiling, kbit/s (default 1000: the "
                        "~1 Mbit/s stream the targets are stated for)")
    args = parser.parse_args(argv)
    fanout_targets.PUBLISHER_KBPS = args.publisher_kbps
    if args.window <= 0 or args.warmup < 0 or args.settle < 0:
        parser.error("--window must be positive, --warmup and --settle not negative")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.udp_port is not None and not 0 <= args.udp_port <= 65535:
        parser.error("--udp-port must be a UDP port (1-65535), or nothing for a free one")
    if args.janus and os.environ.get(NETNS_ENV) != "1":
        if janus_paths() is None:
            progress("failed: --janus needs Janus (Debian: apt-get install -y janus)")
            return 1
        try:
            exec_in_netns(sys.argv[1:] if argv is None else argv)
        except BenchError as exc:
            progress(f"failed: {exc}")
            return 1

    # Ctrl-C and SIGTERM both end up in the same clean-up (even when started with SIGINT
    # ignored, as background jobs are)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="huizhen-fanout-"))
    (tmp / "logs").mkdir()
    server_cpus, client_cpus = split_cores(args.share_cores)
    if client_cpus is not None:
        os.sched_setaffinity(0, client_cpus)  # inherited by the publisher and subscribers
    procs = Processes(tmp / "logs", server_cpus)
    code = 1  # until it succeeded (an unexpected exception keeps the logs too)
    try:
        result = asyncio.run(amain(args, procs, tmp))
        code = 0
    except KeyboardInterrupt:
        progress("interrupted")
        code = 130
    except BenchError as exc:
        progress(f"failed: {exc}")
        code = 1
    finally:
        procs.kill_all_now()
        if args.keep_logs or code:
            progress(f"logs kept in {tmp / 'logs'}")
            for data in tmp.rglob("huizhen*-data"):
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
