"""Smoke tests of bench/fanout.py (with ``--udp-port``: Huizhen also on one shared UDP port) and
bench/recording.py: each runs end to end and reports what it should.

Only the shape of the results is checked (keys present, frames received); benchmark figures
depend on the machine and are never asserted here — so the two run side by side (half a
minute less of the suite), which a real measurement never does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FANOUT = REPO / "bench" / "fanout.py"

KEYS = {
    "core_per_extra_subscriber", "baseline_core_per_extra_subscriber", "ratio",
    "min_subscriber_fps", "baseline_min_subscriber_fps", "points", "baseline_points",
    "publisher_bitrate_mbps", "machine", "added_latency_ms_p50", "added_latency_ms_p95",
    "added_latency_app_ms_p50", "added_latency_app_ms_p95",
    # --udp-port: Huizhen again, every connection on one shared UDP port
    "one_port_points", "one_port_core_per_extra_subscriber", "one_port_vs_per_connection",
    "one_port_vs_janus", "one_port_added_latency_ms_p50", "one_port_added_latency_ms_p95",
    "one_port_min_subscriber_fps",
}


RECORDING = REPO / "bench" / "recording.py"
COMMANDS = {
    # short windows; the bitrate gate (--recover) waits 2 s at most: no bitrate is asserted,
    # and on a loaded machine (the suite's first phase) the publisher's may not climb back
    "fanout": [sys.executable, str(FANOUT), "--subscribers", "1,2", "--baseline-subscribers",
               "1", "--window", "2", "--warmup", "1", "--settle", "1", "--recover", "2",
               "--udp-port", "--json"],
    # 1 room, 1 s windows, short sessions: ~30 s
    "recording": [sys.executable, str(RECORDING), "--quick", "--json"],
}


@pytest.fixture(scope="module")
def runs() -> dict[str, subprocess.CompletedProcess[str]]:
    """Both benchmarks, started together; each one's exit code and output."""
    procs = {name: subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for name, cmd in COMMANDS.items()}
    done = {}
    for name, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=170)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            err += f"\n(killed after 170 s: {name} did not finish)"
        done[name] = subprocess.CompletedProcess(COMMANDS[name], proc.returncode, out, err)
    return done


@pytest.mark.timeout(200)
def test_fanout_benchmark_runs_and_reports(
        runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    proc = runs["fanout"]
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    assert KEYS <= set(result), sorted(KEYS - set(result))

    assert [p["n"] for p in result["points"]] == [1, 2]
    assert [p["n"] for p in result["baseline_points"]] == [1]
    for point in result["points"] + result["baseline_points"]:
        assert point["min_fps"] > 0 and point["mean_fps"] > 0, point
        assert point["server_cores"] >= 0, point
        assert point["publisher_fps"] > 0, point
    assert result["min_subscriber_fps"] > 0
    assert result["baseline_min_subscriber_fps"] > 0
    assert result["publisher_bitrate_mbps"] > 0
    assert isinstance(result["core_per_extra_subscriber"], float)  # two values of N: a slope
    assert result["baseline_core_per_extra_subscriber"] is None  # one value of N: no slope
    assert {"nproc", "python", "aiortc"} <= set(result["machine"])
    cores = result["settings"]["cores"]  # the server on a core of its own, when there are two
    if len(os.sched_getaffinity(0)) >= 2:
        assert cores["server"] and cores["others"], cores
        assert not set(cores["server"]) & set(cores["others"]), cores
    else:
        assert cores == {"server": None, "others": None}, cores
    # per packet: the socket arrival (kernel timestamp) comes before the subscriber process
    # has read and decrypted the packet
    for point in result["points"]:
        assert point["latency_packets"] > 0, point
    assert 0 < result["added_latency_ms_p50"] <= result["added_latency_app_ms_p50"], result
    assert result["added_latency_ms_p50"] <= result["added_latency_ms_p95"]

    # --udp-port: the same rows from a server with every connection on one UDP port (its
    # sockets at the end of each window: N + 1 connections, one local port), beside the
    # per-connection ports (a port per connection)
    assert 0 < result["settings"]["udp_port"] < 65536
    assert [p["n"] for p in result["one_port_points"]] == [1, 2]
    for point in result["one_port_points"]:
        assert point["min_fps"] > 0 and point["publisher_fps"] > 0, point
        assert point["latency_packets"] > 0, point
        assert point["server_udp_ports"] == 1 and point["server_udp_sockets"] >= 1, point
    for point in result["points"]:
        assert point["server_udp_ports"] >= point["n"] + 1, point
    assert result["one_port_min_subscriber_fps"] > 0
    assert isinstance(result["one_port_core_per_extra_subscriber"], float)
    assert 0 < result["one_port_added_latency_ms_p50"] <= result["one_port_added_latency_ms_p95"]
    one, per_connection = (result["one_port_core_per_extra_subscriber"],
                           result["core_per_extra_subscriber"])
    # two short windows: a slope can come out tiny or below zero (then no ratio)
    if per_connection >= 0.001:
        assert result["one_port_vs_per_connection"] == pytest.approx(one / per_connection,
                                                                     rel=0.05, abs=0.02)
    elif per_connection < 0:
        assert result["one_port_vs_per_connection"] is None
    assert result["one_port_vs_janus"] is None  # no --janus
    assert len(result["rounds"]) == 1  # one round (--rounds 1): its figures are the medians
    assert result["median"]["core_per_extra_subscriber"] == result["core_per_extra_subscriber"]


RECORDING_KEYS = {
    "record_core_per_track", "baseline_record_core_per_track", "ratio",
    "composite_realtime_factor", "av_sync_max_ms", "av_sync_pairs",
    "latency_ms_p50_off", "latency_ms_p50_on", "latency_rise_ms_p50", "latency_rise_ms_p95",
    "baseline", "recorded", "cpu_windows", "latency_windows", "settings", "machine",
}


@pytest.mark.timeout(200)
def test_recording_benchmark_runs_and_reports(
        runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    """``bench/recording.py --quick`` (1 room, 1 s windows: ~30 s) runs every part and reports
    figures that say each part really happened; their values are not asserted."""
    proc = runs["recording"]
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    assert RECORDING_KEYS <= set(result), sorted(RECORDING_KEYS - set(result))

    assert isinstance(result["record_core_per_track"], float)
    assert [w["recording"] for w in result["cpu_windows"]] == [False, True, False]
    for window in result["cpu_windows"] + result["latency_windows"]:
        assert window["server_cores"] > 0, window
        assert window["publisher_fps_min"] > 0 and window["publisher_mbps_mean"] > 0, window
    # the SFU wrote the camera and the microphone while recording was on
    assert result["recorded"]["video_files"] >= 1 and result["recorded"]["audio_files"] >= 1
    assert result["recorded"]["video_fps_min"] > 0
    # the baseline recorded video and audio (decoded and re-encoded by MediaRecorder)
    baseline = result["baseline"]
    assert baseline["recorder"]["video_fps"] > 0 and baseline["recorder"]["audio_fps"] > 0
    assert baseline["recorder"]["cores"] > 0 and baseline["plain_subscriber"]["cores"] > 0
    assert {"video:vp8", "audio:opus"} <= set(baseline["recorder_file"]), baseline
    for window in result["latency_windows"]:
        assert window["latency_packets"] > 0 and window["subscriber_fps_min"] > 0, window
    assert 0 < result["latency_ms_p50_off"] and 0 < result["latency_ms_p50_on"]
    assert result["composite_realtime_factor"] > 0
    assert result["av_sync_pairs"] >= 1 and result["av_sync_max_ms"] is not None


def test_sendmmsg_benchmark_runs_and_reports() -> None:
    """bench/sendmmsg.py: both ways deliver every datagram and give a time per datagram."""
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "sendmmsg.py"),
                           "--destinations", "5", "--rounds", "4", "--repeat", "1", "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["received_of_sent"] == 1.0, result
    assert result["sendto_us_per_packet"] > 0 and result["sendmmsg_us_per_packet"] > 0
    assert result["sendmmsg_vs_sendto"] > 0


def test_wakeup_benchmark_reads_every_datagram_and_reports() -> None:
    """bench/wakeup.py: both modes read every datagram (and the last) with a kernel stamp."""
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "wakeup.py"),
                           "--count", "50", "--rate", "500", "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["blocking_received"] == result["asyncio_received"] == 51, result
    assert 0 < result["blocking_p50_us"] <= result["blocking_p90_us"], result
    assert 0 < result["asyncio_p50_us"] <= result["asyncio_p90_us"], result
    assert result["asyncio_vs_blocking"] == pytest.approx(
        result["asyncio_p50_us"] / result["blocking_p50_us"], abs=0.01)


def test_sendpath_benchmark_delivers_everything_and_compares_with_a_baseline() -> None:
    """bench/sendpath.py: every subscriber gets every packet (it fails otherwise), a time per
    packet and subscriber, and new ÷ baseline (here the same file: about 1)."""
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "sendpath.py"),
                           "--subscribers", "3", "--frames", "100", "--repeat", "2",
                           "--baseline", str(REPO / "media" / "sendpath.py"), "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    figures = result["us_per_packet_subscriber"]
    assert set(figures) == {"current", "baseline"}
    assert all(f["total"] > 0 for f in figures.values()), figures
    assert result["current_vs_baseline"] == pytest.approx(
        figures["current"]["total"] / figures["baseline"]["total"], abs=0.01)


def test_fanout_rounds_report_each_round_and_the_medians(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """``--rounds K``: every round's slopes and ratios, and their medians (None where no
    round had the figure)."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import fanout  # bench/fanout.py

    def run(ours: float, janus: float, latency: float) -> dict[str, object]:
        return {key: None for key in fanout.ROUND_KEYS} | {
            "core_per_extra_subscriber": ours, "janus_core_per_extra_subscriber": janus,
            "added_latency_ms_p50": latency, "points": [ours]}

    result = fanout.combine([run(0.003, 0.0035, 0.9), run(0.002, 0.004, 0.7),
                             run(0.0025, 0.003, 0.8)])
    assert [r["per_connection_vs_janus"] for r in result["rounds"]] == [0.86, 0.5, 0.83]
    assert result["median"]["per_connection_vs_janus"] == 0.83
    assert result["median"]["core_per_extra_subscriber"] == 0.0025
    assert result["median"]["added_latency_ms_p50"] == 0.8
    assert result["median"]["one_port_vs_janus"] is None
    assert result["points"] == [0.0025]  # the last round's rows
