"""Monitoring (issue 13): /metrics in the Prometheus text format, moving while a real call runs;
the scrape needs the metrics token; connection quality per participant, to the participant and
the moderators and in GET /api/rooms/{id}; request ids and room/participant ids on log lines.
(That no log line of the whole suite holds a token, an SDP credential or a patient's name is
checked by the session itself: tests/conftest.py, tests/logscan.py.)"""

from __future__ import annotations

import base64
import json
import logging
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from huizhen.config import ConfigError, load_settings
from huizhen.logs import JsonFormatter
from media.impairment import DownlinkLimit, Impairment
from rooms import quality
from signaling.keys import SFU
from tests.harness import Server, running_server
from tests.logscan import leak

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of the exposition, by (name, labels): the Prometheus parser reads it all."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def scrape(server: Server) -> Samples:
    status, text = await server.scrape()
    assert status == 200, text
    samples = parse(text)
    for family in text_string_to_metric_families(text):  # those without samples too
        samples.setdefault((family.name, frozenset({("family", "")})), 0.0)
    return samples


async def test_metrics_parse_and_move_while_a_call_runs(server: Server) -> None:
    before = await scrape(server)
    assert total(before, "huizhen_rooms") == 0
    assert total(before, "process_cpu_seconds_total") > 0  # the process's CPU
    # a lossy uplink (NACKs to the publisher) and a lossy downlink (NACKs from a subscriber)
    impairment = server.app[SFU].impairment = Impairment(loss=0.03, seed=3)
    room = await server.create_room("mdt")
    host = await server.participant(room, "dr-host", "host")
    specialist = await server.participant(room, "dr-spec", "specialist")
    impairment.downlinks[host.id] = DownlinkLimit(loss=0.03, seed=5)
    try:
        await host.publish(tag=1)
        await specialist.publish(tag=2)
        assert await host.wait_until(
            lambda: host.frames_from(specialist.id, "video") >= 60
            and specialist.frames_from(host.id, "video") >= 60, timeout=20), host.summary()
        await specialist.send({"type": "no_such_message"})  # one error reply, by code
        during = await scrape(server)
    finally:
        await specialist.leave()
        await host.leave()
    after = await scrape(server)

    assert total(during, "huizhen_rooms", kind="mdt") == 1
    assert total(during, "huizhen_participants", room_kind="mdt", state="active") == 2
    assert total(during, "huizhen_participants", role="host") == 1
    assert total(during, "huizhen_tracks", kind="video", source="camera") == 2
    assert total(during, "huizhen_tracks", kind="audio") == 2
    assert total(during, "huizhen_peer_connections", direction="subscribe") == 2
    assert total(during, "huizhen_subscriptions", kind="video") == 2
    for direction in ("in", "out"):
        for kind in ("audio", "video"):
            assert total(during, "huizhen_media_packets_total", direction=direction,
                         kind=kind) > total(before, "huizhen_media_packets_total",
                                            direction=direction, kind=kind) + 100
        assert total(during, "huizhen_media_bytes_total", direction=direction) > 100_000
    assert total(during, "huizhen_media_lost_packets_total", direction="uplink") > 0
    assert total(during, "huizhen_media_uplink_expected_packets_total") > total(
        during, "huizhen_media_packets_total", direction="in") * 0.5
    assert total(during, "huizhen_media_lost_packets_total", direction="downlink") > 0
    assert total(during, "huizhen_nacks_total", direction="sent") > 0
    assert total(during, "huizhen_nacks_total", direction="received") > 0
    assert total(during, "huizhen_media_retransmitted_packets_total") > 0
    assert total(during, "huizhen_plis_total", direction="sent") > 0
    assert ("huizhen_layer_switches_total", frozenset({("kind", "video")})) in during
    assert ("huizhen_paused_videos", frozenset()) in during
    assert total(during, "huizhen_signaling_messages_total", direction="in", type="join") == 2
    assert total(during, "huizhen_signaling_messages_total", direction="in",
                 type="publish") == 2
    assert total(during, "huizhen_signaling_messages_total", direction="out",
                 type="joined") == 2
    assert total(during, "huizhen_signaling_errors_total", code="unknown_type") == 1
    assert total(during, "huizhen_join_latency_seconds_count") == 2
    assert total(during, "huizhen_join_to_first_frame_seconds_count") == 2
    assert total(during, "huizhen_event_loop_lag_seconds_count") > 0
    assert total(during, "huizhen_recordings_active") == 0
    # counters never go back when the call's connections close; the gauges come down
    for name in ("huizhen_media_packets_total", "huizhen_media_bytes_total",
                 "huizhen_nacks_total", "huizhen_plis_total",
                 "huizhen_media_lost_packets_total"):
        assert total(after, name) >= total(during, name), name
    assert total(after, "huizhen_rooms") == 0
    assert total(after, "huizhen_peer_connections") == 0
    # the Grafana dashboard asks only for what the server serves
    dashboard = (Path(__file__).parent.parent / "docs" / "grafana-dashboard.json").read_text()
    wanted = set(re.findall(r"\b((?:huizhen|process)_[a-z_]+)", dashboard))
    served = {name for name, _ in during}
    assert len(wanted) > 20 and wanted <= served, wanted - served


async def test_a_scrape_without_the_token_is_refused(server: Server) -> None:
    for headers in ({}, {"Authorization": "Bearer not-the-token"},
                    {"Authorization": "Basic " + server.settings.metrics.token
                     .get_secret_value()}):
        status, text = await server.scrape(headers)
        assert status == 401, text
        assert "huizhen_" not in text
    status, _ = await server.scrape()
    assert status == 200


async def test_metrics_can_be_switched_off(tmp_path: Path) -> None:
    async with running_server(tmp_path, metrics={"enabled": False}) as server:
        status, _ = await server.scrape()
        assert status == 404


def test_outside_dev_mode_metrics_need_a_token(tmp_path: Path) -> None:
    base: dict[str, Any] = {"mode": "production", "data_dir": str(tmp_path),
                            "auth": {"api_keys": [{"key": "his", "secret": "s" * 40}]},
                            "records": {"audit": {"keys": {"a1": base64.b64encode(
                                b"k" * 32).decode()}, "active_key": "a1"}}}
    with pytest.raises(ConfigError, match="HUIZHEN_METRICS__TOKEN"):
        load_settings(Path("/dev/null"), **base)
    with pytest.raises(ConfigError, match="HUIZHEN_METRICS__TOKEN"):
        load_settings(Path("/dev/null"), **base, metrics={"token": "short"})
    assert load_settings(Path("/dev/null"), **base, metrics={"enabled": False})
    assert load_settings(Path("/dev/null"), **base, metrics={"token": "t" * 32})


async def test_connection_quality_reaches_the_participant_and_the_moderator(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quality, "TICK_S", 0.5)
    server.app[SFU].impairment = impairment = Impairment()
    room = await server.create_room("mdt")
    host = await server.participant(room, "dr-host", "host")  # a moderator
    specialist = await server.participant(room, "dr-spec", "specialist")
    other = await server.participant(room, "dr-other", "specialist")
    impairment.downlinks[specialist.id] = DownlinkLimit(loss=0.05, seed=9)
    try:
        await host.publish(tag=1)
        await specialist.publish(tag=2)

        def about(p: Any, subject: Any) -> list[dict[str, Any]]:
            return [e for e in p.events if e.get("type") == "connection_quality"
                    and e["participant_id"] == subject.id]

        def lossy(events: list[dict[str, Any]]) -> bool:
            """The latest figures show the downlink's loss, media flowing both ways, and the
            round trip (measured once a sender report of ours came back in a receiver's)."""
            e = events[-1] if events else None
            return (e is not None and e["downlink"] is not None and e["uplink"] is not None
                    and (e["downlink"]["loss_pct"] or 0) >= 2
                    and e["uplink"]["kbps"] > 50 and e["downlink"]["kbps"] > 50
                    and e["rtt_ms"] is not None)

        assert await specialist.wait_until(
            lambda: lossy(about(specialist, specialist)) and lossy(about(host, specialist)),
            timeout=20), (about(specialist, specialist), about(host, specialist),
                          [e for e in host.events if e.get("type") == "participant_left"])
        mine = about(specialist, specialist)[-1]
        assert mine["level"] in ("fair", "poor")
        assert mine["uplink"]["kbps"] > 50 and mine["downlink"]["kbps"] > 50
        assert mine["rtt_ms"] is not None and 0 <= mine["rtt_ms"] < 300
        assert [v["participant_id"] for v in mine["video"]] == [host.id]
        video = mine["video"][0]  # no simulcast: one layer, unless paused for the loss
        assert video["layers"] == 1 and video["layer"] == (None if video["paused"] else 0), mine
        # the moderator hears of everyone; a participant who is not one, only of itself
        assert about(host, host)
        assert not about(other, specialist) and not about(other, host)
        # it publishes nothing: its downlink only, once its subscribe connection carries media
        # (later than the others' on a loaded machine)
        assert await other.wait_until(lambda: about(other, other), timeout=10)
        assert not about(other, specialist) and not about(other, host)

        status, body = await server.api("GET", f"/api/rooms/{room}")
        assert status == 200, body
        shown = {p["id"]: p["quality"] for p in body["participants"]}
        assert shown[specialist.id]["downlink"]["loss_pct"] is not None
        assert shown[specialist.id]["rtt_ms"] is not None
        assert shown[host.id]["uplink"]["kbps"] > 50
        assert shown[host.id]["video"][0]["participant_id"] == specialist.id
    finally:
        for p in (other, specialist, host):
            await p.leave()


def test_noticeable_changes_only() -> None:
    base = {"level": "good", "rtt_ms": 40, "video": [],
            "uplink": {"loss_pct": 0.0, "kbps": 1500}, "downlink": None}
    assert quality.noticeable(None, base)
    assert not quality.noticeable(base, {**base, "rtt_ms": 60})
    assert quality.noticeable(base, {**base, "rtt_ms": 120})
    assert not quality.noticeable(base, {**base, "uplink": {"loss_pct": 1.0, "kbps": 1400}})
    assert quality.noticeable(base, {**base, "uplink": {"loss_pct": 3.0, "kbps": 1500}})
    assert not quality.noticeable(base, {**base, "uplink": {"loss_pct": 0.0, "kbps": 900}})
    assert quality.noticeable(base, {**base, "uplink": {"loss_pct": 0.0, "kbps": 700}})
    assert quality.noticeable(base, {**base, "level": "fair"})
    # a broadcast's audience: a new level only
    assert not quality.noticeable(base, {**base, "rtt_ms": 400}, level_only=True)
    assert quality.noticeable(base, {**base, "level": "poor"}, level_only=True)
    assert quality.level(40, 0.5, False) == "good"
    assert quality.level(40, 5.0, False) == "fair"
    assert quality.level(40, 0.0, True) == "fair"
    assert quality.level(700, 0.0, False) == "poor"


async def test_log_lines_carry_request_room_and_participant_ids(
        server: Server, caplog: pytest.LogCaptureFixture) -> None:
    room = await server.create_room("mdt")
    with caplog.at_level(logging.INFO, logger="huizhen"):
        p = await server.participant(room, "dr-log", "specialist")
        await p.leave()
        async with aiohttp.ClientSession() as http, http.get(
                server.url + "/healthz", headers={"X-Request-Id": "hospital-req-42"}) as resp:
            assert resp.headers["X-Request-Id"] == "hospital-req-42"
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records
             if r.name.startswith("huizhen")]
    joined = next(line for line in lines if line["msg"] == "participant joined")
    left = next(line for line in lines if line["msg"] == "participant left")
    for line in (joined, left):
        assert line["room"] == room and line["participant"] == p.id
        assert len(line["request_id"]) == 16
    assert joined["request_id"] == left["request_id"]  # the same WebSocket connection


def test_the_log_scan_finds_what_must_not_be_logged() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwYXRpZW50In0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    fmt = JsonFormatter()
    def line(msg: str, **extra: Any) -> str:
        return fmt.format(logging.makeLogRecord({"msg": msg, "levelname": "INFO", **extra}))
    assert leak(line("participant joined", room="r_1", participant="p_1")) is None
    assert leak(line(f"join with {token}")) is not None  # blanked, and still found
    assert leak(line("offer", sdp="v=0\r\na=ice-pwd:s3cret\r\n")) is not None
    assert leak(line("visit of 王芳")) is not None
    assert leak(f'{{"msg": "{token}"}}') is not None  # a line some other formatter wrote
