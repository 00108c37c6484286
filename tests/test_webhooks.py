"""Issue 12, test 5: webhooks arrive signed and are retried while the receiver fails; a
receiver that hangs delays no room.

Three receivers on loopback: one that takes everything, one that fails twice before it takes
a delivery, one that never answers. A consultation is opened, joined, recorded, left and ended
while the hanging receiver holds its requests; joins stay fast; each receiver gets what it asked
for, signed with the API key's secret; the flaky one gets each delivery (same id) on the third
try; the hanging one's deliveries are given up after max_attempts, listed as failed, and sent
again on request once it answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.harness import free_port, running_server
from tests.recording_support import consent, control, finish, join
from webhooks.dispatcher import signature_header


@dataclass
class Receiver:
    """Takes POSTs; ``fail_first`` answers 500 to each delivery's first tries; ``hang``
    answers nothing until told to."""

    fail_first: int = 0
    hang: bool = False
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    tries: dict[str, int] = field(default_factory=dict)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        delivery = request.headers["Huizhen-Delivery"]
        self.tries[delivery] = self.tries.get(delivery, 0) + 1
        if self.hang and not self.released.is_set():
            await self.released.wait()
            return web.Response(status=503)  # the answer came too late anyway
        if self.tries[delivery] <= self.fail_first:
            return web.Response(status=500)
        self.got.append((dict(request.headers), body))
        return web.Response(status=204)

    def types(self) -> list[str]:
        return [json.loads(body)["type"] for _, body in self.got]


@asynccontextmanager
async def serving(receiver: Receiver) -> AsyncIterator[Receiver]:
    app = web.Application()
    app.router.add_post("/events", receiver.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    receiver.url = f"http://127.0.0.1:{port}/events"
    try:
        yield receiver
    finally:
        receiver.released.set()
        await runner.cleanup()


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """What a receiver does (docs/api.md, "Webhooks")."""
    fields = dict(part.split("=", 1) for part in headers["Huizhen-Signature"].split(","))
    expected = hmac.new(secret.encode(), f"{fields['t']}.".encode() + body,
                        hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"]) and abs(time.time() -
                                                              int(fields["t"])) < 300


async def until(check: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not in time"
        await asyncio.sleep(0.05)


async def test_webhooks_signed_retried_and_never_in_the_way(tmp_path: Path) -> None:
    async with serving(Receiver()) as hospital, serving(Receiver(fail_first=2)) as flaky, \
            serving(Receiver(hang=True)) as stuck:
        endpoints = [{"url": hospital.url, "api_key": "test-key"},
                     {"url": flaky.url, "api_key": "test-key",
                      "events": ["room.started", "room.ended"]},
                     {"url": stuck.url, "api_key": "test-key",
                      "events": ["participant.joined"]}]
        async with running_server(tmp_path / "srv", webhooks={
                "endpoints": endpoints, "timeout_s": 1.0, "max_attempts": 3,
                "backoff_s": 0.2, "poll_s": 0.1}) as server:
            secret = server.settings.auth.api_keys[0].secret
            status, room = await server.api("POST", "/api/rooms", {
                "kind": "clinic", "title": "复诊", "patient_ref": "Patient/w1"})
            assert status == 201
            room_id = room["id"]
            started = time.monotonic()
            doctor = await join(server, room_id, "dr-li", "doctor", name="李医生")
            nurse = await join(server, room_id, "nurse-wu", "nurse")
            joins_took = time.monotonic() - started
            try:
                await consent(server, room_id)
                await doctor.publish(tag=1)
                await asyncio.sleep(0.8)
                await control(doctor, "start")
                await asyncio.sleep(1.5)
                await control(doctor, "stop")
            finally:
                await nurse.leave()
                await doctor.leave()
            status, _ = await server.api("POST", f"/api/rooms/{room_id}/end")
            assert status == 200
            assert await finish(server) == 2  # store + composite: recording_ready
            await until(lambda: "recording.ready" in hospital.types())
            await until(lambda: len(flaky.got) == 2)
            # the hanging receiver: three tries of each delivery, then given up
            status, failed = await server.api("GET", "/api/webhooks/deliveries?status=failed")
            for _ in range(100):
                if len(failed["deliveries"]) == 2:
                    break
                await asyncio.sleep(0.1)
                status, failed = await server.api("GET",
                                                  "/api/webhooks/deliveries?status=failed")
            assert status == 200 and len(failed["deliveries"]) == 2, failed
            # … mended: sent again on request
            stuck.released.set()
            stuck.hang = False
            first = failed["deliveries"][0]
            status, again = await server.api(
                "POST", f"/api/webhooks/deliveries/{first['id']}/retry")
            assert status == 202 and again["status"] == "pending"
            await until(lambda: len(stuck.got) == 1)
            status, missing = await server.api("POST", "/api/webhooks/deliveries/nope/retry")
            assert status == 404 and missing["error"]["code"] == "delivery_not_found"

    # everything (in any order: deliveries travel side by side), each signed with the API
    # key's secret
    assert sorted(hospital.types()) == sorted([
        "room.started", "participant.joined", "participant.joined", "recording.started",
        "participant.left", "participant.left", "room.ended", "recording.ready"])
    bodies = {}
    for _, body in hospital.got:
        bodies.setdefault(json.loads(body)["type"], []).append(json.loads(body))
    assert all(verify(secret, headers, body) for headers, body in hospital.got)
    assert not verify("another secret that is long enough to look real", *hospital.got[0])
    assert all(b["room"] == {"id": room_id, "kind": "clinic"}
               for found in bodies.values() for b in found)
    assert {(b["data"]["identity"], b["data"]["role"]) for b in bodies["participant.joined"]} \
        == {("dr-li", "doctor"), ("nurse-wu", "nurse")}
    assert "李医生" not in json.dumps(bodies, ensure_ascii=False)  # no names
    assert {b["data"]["reason"] for b in bodies["participant.left"]} <= {"left", "room_ended"}
    assert bodies["recording.ready"][0]["data"]["recording_id"] == \
        bodies["recording.started"][0]["data"]["recording_id"]
    assert bodies["recording.ready"][0]["data"]["duration_s"] > 1.0
    assert [h["Huizhen-Event"] for h, _ in hospital.got] == hospital.types()
    assert len({h["Huizhen-Delivery"] for h, _ in hospital.got}) == 8
    # the flaky receiver: only what it asked for, each on its third try, same delivery id
    assert sorted(flaky.types()) == ["room.ended", "room.started"]
    assert all(flaky.tries[h["Huizhen-Delivery"]] == 3 for h, _ in flaky.got)
    # the hanging one held nothing up
    assert joins_took < 3.0, joins_took
    assert sorted(stuck.tries.values()) == [3, 4]  # 3 tries each, one sent again
    assert all(d["attempts"] == 3 and "no answer within 1 s" in d["last_error"]
               for d in failed["deliveries"])


def test_signature_is_hmac_over_time_and_body() -> None:
    body = b'{"id":"wh_1"}'
    header = signature_header("s" * 40, body, now=1_700_000_000)
    expected = hmac.new(b"s" * 40, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
