"""The huizhen command against a running service (its own process)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.harness import ServerProcess


def huizhen(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**server.env(), "HUIZHEN_API_KEY": "test-key", "HUIZHEN_API_SECRET": server.secret}
    return subprocess.run([sys.executable, "-m", "huizhen.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


async def test_room_token_demo_and_join_commands(tmp_path: Path) -> None:
    server = await ServerProcess(tmp_path).start()
    try:
        done = await asyncio.to_thread(huizhen, server, "room", "create", "--kind", "mdt",
                                       "--title", "Tumour board", "--patient", "Patient/9",
                                       "--json")
        assert done.returncode == 0, done.stderr
        room = json.loads(done.stdout)
        assert room["kind"] == "mdt" and room["patient_ref"] == "Patient/9"

        done = await asyncio.to_thread(huizhen, server, "token", "create", "--room", room["id"],
                                       "--identity", "dr-li", "--role", "specialist", "--json")
        assert done.returncode == 0, done.stderr
        link = json.loads(done.stdout)["join_url"]
        assert link.startswith(f"{server.url}/join/{room['id']}#t=")

        # a headless participant joins with the link, publishes, and reports as JSON lines
        done = await asyncio.to_thread(huizhen, server, "join", link, "--duration", "3",
                                       "--report", "1")
        assert done.returncode == 0, done.stderr
        assert "publishing" in done.stderr
        reports = [json.loads(line) for line in done.stdout.splitlines()]
        assert reports and reports[-1]["errors"] == []

        done = await asyncio.to_thread(huizhen, server, "demo")
        assert done.returncode == 0, done.stderr
        assert "Doctor link" in done.stdout and "Patient link" in done.stdout
        assert done.stdout.count(f"{server.url}/join/") == 2

        # clear errors: a role the room kind does not allow, an unreachable service
        done = await asyncio.to_thread(huizhen, server, "token", "create", "--room", room["id"],
                                       "--identity", "x", "--role", "guardian")
        assert done.returncode == 1 and "role_not_allowed" in done.stderr
        done = await asyncio.to_thread(huizhen, server, "room", "create", "--kind", "mdt",
                                       "--title", "t", "--server", "http://127.0.0.1:9")
        assert done.returncode == 1 and "cannot reach the service" in done.stderr
    finally:
        server.stop()


def test_production_refuses_the_dev_key(tmp_path: Path) -> None:
    env = {**os.environ, "HUIZHEN_MODE": "production", "HUIZHEN_CONFIG": "/dev/null",
           "HUIZHEN_DATA_DIR": str(tmp_path),
           "HUIZHEN_AUTH__API_KEYS": json.dumps([{"key": "dev", "secret": "x" * 40}])}
    done = subprocess.run([sys.executable, "-m", "huizhen.cli", "serve"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "development key" in done.stderr


def test_bad_configuration_names_the_option(tmp_path: Path) -> None:
    env = {**os.environ, "HUIZHEN_CONFIG": "/dev/null", "HUIZHEN_DATA_DIR": str(tmp_path),
           "HUIZHEN_ICE__GATHER_ADDRESSES": '["not-an-ip"]'}
    done = subprocess.run([sys.executable, "-m", "huizhen.cli", "serve"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "ice.gather_addresses" in done.stderr and "HUIZHEN_ICE__GATHER_ADDRESSES" in done.stderr


def test_key_generate_prints_a_usable_secret() -> None:
    done = subprocess.run([sys.executable, "-m", "huizhen.cli", "key", "generate", "--name",
                           "his"], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0
    secret = next(line.split(": ", 1)[1] for line in done.stdout.splitlines()
                  if line.startswith("secret: "))
    assert len(secret) >= 32
