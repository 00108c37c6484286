"""What the SFU saw during a load test: a Huizhen server in this process, sampled every few
seconds, while ``huizhen loadtest`` runs against it in a subprocess (issue 12's diagnosis).

Each sample (one JSON line on stdout) has: the server's CPU (this process, every thread; the
load tester is a child process and not counted), subscribe connections and their ICE states,
the presenter's connection state, video packets per second reaching the SFU from the
presenter and the sequence numbers it never got (upstream gaps, audio and video, from a tap
on every source), keyframes and PLIs, the viewers' video DownTracks (paused, receiver
reports, NACK messages, NACKs answered, retransmissions), the downlink estimates (min and
median), the latest audio receiver reports' loss (× 256, median and max), and the server's
log lines that matter ("video paused", "video resumed", "Consent to send expired").

    .venv/bin/python bench/server_state.py 120 --per-process 10 --viewer full
    .venv/bin/python bench/server_state.py 300 --per-process 50 --duration 20 --warmup 5

Arguments after N go to ``huizhen loadtest`` (defaults: ``--kind broadcast --publishers 1
--join-rate 10 --video-kbps 500``). ``--rig DIR``: put DIR first on the load tester's
PYTHONPATH (e.g. a folder holding another version's ``loadtest`` package:
``git show HEAD:loadtest/worker.py > DIR/loadtest/worker.py`` …) to run that load tester.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _paths  # first: the project's packages before bench/'s scripts

from media.source import SourceTrack
from signaling.keys import SFU
from tests.harness import Server, make_settings

WATCHED = ("video paused", "video resumed", "Consent to send expired",
           "subscriber did not answer")


class LogCount(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        for key in WATCHED:
            if key in message:
                self.counts[key] = self.counts.get(key, 0) + 1


class UpstreamGaps:
    """A PacketTap: sequence numbers each kind of source never got, and packets it got."""

    def __init__(self) -> None:
        self.newest: dict[int, int] = {}
        self.gaps: dict[str, int] = {}
        self.packets: dict[str, int] = {}

    def on_rtp(self, source: SourceTrack, ssrc: int, seq: int, timestamp: int, marker: int,
               payload: bytes) -> None:
        kind = source.kind
        self.packets[kind] = self.packets.get(kind, 0) + 1
        newest = self.newest.get(ssrc)
        ahead = 1 if newest is None else (seq - newest) & 0xFFFF
        if 0 < ahead < 0x8000:
            if ahead > 1:
                self.gaps[kind] = self.gaps.get(kind, 0) + ahead - 1
            self.newest[ssrc] = seq

    def on_sender_report(self, source: SourceTrack, ntp: int, rtp_timestamp: int) -> None:
        pass


def _spread(values: list[float]) -> list[float] | None:
    return [round(min(values), 1), round(statistics.median(values), 1)] if values else None


def sample(server: Server, taps: UpstreamGaps, logs: LogCount, state: dict[str, Any]
           ) -> dict[str, Any]:
    sfu = server.app[SFU]
    now, cpu = time.monotonic(), time.process_time()
    for track in sfu.tracks.values():
        for layer in track.layers:
            if taps not in layer.taps:
                layer.taps.append(taps)
    subs = list(sfu.subscribers)
    downs = [slot.down for s in subs for slot in s.slots]
    video = [d for d in downs if d.kind == "video"]
    audio_lost = [float(d.last_report[0]) for d in downs
                  if d.kind == "audio" and d.last_report is not None]
    ice: dict[str, int] = {}
    for s in subs:
        ice[s.pc.iceConnectionState] = ice.get(s.pc.iceConnectionState, 0) + 1
    sources = [layer for t in sfu.tracks.values() for layer in t.layers if layer.is_video]
    packets = sum(layer.packets for layer in sources)
    dt = max(now - state.get("t", now - 1), 1e-6)
    out = {
        "t": round(now - state["start"]),
        "server_cores": round((cpu - state.get("cpu", cpu)) / dt, 3),
        "subscribers": len(subs), "ice": ice,
        "presenter": [p.pc.connectionState for p in sfu.publishers],
        "video_packets_in_per_s": round((packets - state.get("packets", packets)) / dt, 1),
        "upstream_gaps": dict(taps.gaps),
        "keyframes": sum(layer.keyframes for layer in sources),
        "plis": sum(layer.plis_sent for layer in sources),
        "paused": sum(d.paused for d in video),
        "receiver_reports": sum(d.receiver_reports for d in video),
        "nack_messages": sum(d.nack_messages for d in video),
        "nacks_answered": sum(d.nacks_answered for d in video),
        "retransmissions": sum(d.retransmissions for d in video),
        "estimate_kbps_min_median": _spread([s.estimate.bps / 1000 for s in subs]),
        "audio_rr_lost_median_max": ([statistics.median(audio_lost), max(audio_lost)]
                                     if audio_lost else None),
        "log": dict(logs.counts),
    }
    state.update(t=now, cpu=cpu, packets=packets)
    return out


async def main_async(args: argparse.Namespace, loadtest_args: list[str]) -> int:
    data = Path(tempfile.mkdtemp(prefix="hz-state-"))
    server = Server(make_settings(data, logging={"level": "INFO", "format": "text"}))
    await server.start()
    logs = LogCount()
    logging.getLogger().addHandler(logs)
    logging.getLogger().setLevel(logging.INFO)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.rig, str(_paths.REPO)]))
    env["HUIZHEN_LOGGING__LEVEL"] = "WARNING"
    key = server.settings.primary_key
    cmd = [sys.executable, "-m", "huizhen.cli", "loadtest", "--server", server.url,
           "--api-key", key.key, f"--api-secret={key.secret}", "--kind", "broadcast",
           "--publishers", "1", "--subscribers", str(args.viewers), "--join-rate", "10",
           "--video-kbps", "500", *loadtest_args, "--json"]
    with (data / "loadtest.log").open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *cmd, env=env, cwd=tempfile.gettempdir(), stdout=asyncio.subprocess.PIPE,
            stderr=err)
        taps = UpstreamGaps()
        state: dict[str, Any] = {"start": time.monotonic(), "t": time.monotonic(),
                                 "cpu": time.process_time(), "packets": 0}

        async def every() -> None:
            while True:
                await asyncio.sleep(args.every)
                print(json.dumps(sample(server, taps, logs, state)), flush=True)

        sampler = asyncio.ensure_future(every())
        out, _ = await proc.communicate()
        sampler.cancel()
    try:
        result = json.loads(out)
        keys = ("subscribers_with_video", "mean_subscriber_fps", "min_subscriber_fps",
                "loss_pct", "failed", "media_failed", "join_to_first_frame_s_p50",
                "join_to_first_frame_s_p95", "load_tester", "per_publisher", "errors")
        print(json.dumps({"result": {k: result.get(k) for k in keys}}), flush=True)
    except ValueError:
        print(json.dumps({"result": None, "log": str(data / "loadtest.log")}), flush=True)
    print(json.dumps({"loadtest_log": str(data / "loadtest.log")}), flush=True)
    await server.stop()
    return proc.returncode or 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("viewers", type=int)
    p.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    p.add_argument("--rig", help="a folder put first on the load tester's PYTHONPATH")
    args, rest = p.parse_known_args()
    return asyncio.run(main_async(args, rest))


if __name__ == "__main__":
    sys.exit(main())
