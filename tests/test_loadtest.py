"""``huizhen loadtest`` end to end against a real server (its own process) on 127.0.0.1.

Only the shape of the result is checked (it succeeds, reports the keys, subscribers received
video); load figures depend on the machine and are never asserted here.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.harness import ServerProcess

KEYS = {
    "server", "room", "room_kind", "room_created", "publishers", "subscribers",
    "publishers_publishing", "subscribers_joined", "subscribers_with_video", "failed",
    "aggregate_fps", "mean_subscriber_fps", "min_subscriber_fps", "mean_subscriber_kbps",
    "loss_pct", "join_to_first_frame_s_p50", "join_to_first_frame_s_p95",
    "per_subscriber", "per_publisher", "errors", "server_pid", "server_cpu_cores",
    "signal_bytes_per_subscriber_mean", "signal_bytes_per_subscriber_max",
    "signal_bytes_to_publishers_per_join", "media_failed", "load_tester",
}
SUBSCRIBER_KEYS = {"id", "video_tracks", "fps", "bitrate_kbps", "loss_pct", "packets_lost",
                   "join_to_first_frame_s", "signal_bytes", "signal_messages", "media_state"}


def loadtest(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**server.env(), "HUIZHEN_LOGGING__LEVEL": "WARNING"}
    return subprocess.run(
        [sys.executable, "-m", "huizhen.cli", "loadtest", "--server", server.url,
         "--api-key", "test-key", f"--api-secret={server.secret}", *args],
        env=env, capture_output=True, text=True, timeout=150, check=False)


def worker_pids() -> set[int]:
    found = set()
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if "loadtest.worker" in cmd:
            found.add(proc.pid)
    return found


@pytest.mark.timeout(180)
async def test_loadtest_one_publisher_three_subscribers(tmp_path: Path) -> None:
    server = await ServerProcess(tmp_path).start()
    workers_before = worker_pids()
    try:
        done = await asyncio.to_thread(
            loadtest, server, "--publishers", "1", "--subscribers", "3", "--duration", "4",
            "--warmup", "1", "--join-rate", "10", "--per-process", "2", "--report", "2",
            "--viewer", "full", "--json")
        assert done.returncode == 0, done.stderr[-4000:]
        result = json.loads(done.stdout)
        assert KEYS <= set(result), sorted(KEYS - set(result))

        assert result["room_created"] and result["room_kind"] == "broadcast"
        assert result["publishers_publishing"] == 1
        assert result["subscribers_joined"] == 3 and result["subscribers_with_video"] == 3
        assert result["failed"] == 0 and result["errors"] == []
        assert result["aggregate_fps"] > 0 and result["min_subscriber_fps"] > 0
        assert len(result["per_subscriber"]) == 3
        for sub in result["per_subscriber"]:
            assert SUBSCRIBER_KEYS <= set(sub), sub
            assert sub["fps"] > 0 and sub["bitrate_kbps"] > 0, sub
            assert sub["video_tracks"] == 1, sub
            assert sub["join_to_first_frame_s"] is not None, sub
        assert result["per_publisher"][0]["sent_kbps"] > 0
        assert result["join_to_first_frame_s_p50"] is not None
        # the server runs on this machine: its process was found
        assert server.proc is not None and result["server_pid"] == server.proc.pid
        assert result["server_cpu_cores"] is not None
        assert "joining" in done.stderr  # progress goes to stderr, stdout is the JSON
        assert result["settings"]["viewer"] == "full" and result["media_failed"] == 0
        # the publisher in a worker of its own, the subscribers in two more
        workers = result["load_tester"]["workers"]
        assert [w["participants"] for w in workers] == [1, 2, 1], workers
        assert all(w["cpu_cores"] > 0 and "lag_ms_max" in w for w in workers), workers

        # everything was cleaned up: the room it created has ended, no worker is left
        status, room = await server.api("GET", f"/api/rooms/{result['room']}")
        assert status == 200 and room["status"] == "ended", room
        assert worker_pids() - workers_before == set()
    finally:
        server.stop()
