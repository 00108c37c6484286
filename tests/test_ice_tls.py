"""ICE address policy (gather, announce, mDNS, servers) and TLS start-up."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import aioice.ice
from aiohttp import web

from media.ice import IcePolicy, TurnServerSpec
from signaling.app import create_app
from signaling.tls import ssl_context
from tests.harness import free_port, make_settings

SDP = (
    "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 10.0.0.5\r\n"
    "a=candidate:1 1 udp 2130706431 10.0.0.5 50000 typ host\r\n"
    "a=candidate:2 1 udp 2130706431 4f1b2c3d-aaaa.local 50001 typ host\r\n"
    "a=candidate:3 1 udp 1694498815 203.0.113.9 50002 typ srflx raddr 10.0.0.5 rport 50000\r\n"
)


def test_gathering_uses_exactly_the_configured_addresses() -> None:
    IcePolicy(gather_addresses=["127.0.0.1", "::1"]).install()
    try:
        assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1", "::1"]
    finally:
        IcePolicy(gather_addresses=["127.0.0.1"]).install()


def test_remote_mdns_candidates_are_dropped_when_configured() -> None:
    cleaned = IcePolicy(ignore_mdns_candidates=True).clean_remote_sdp(SDP)
    assert ".local" not in cleaned and "10.0.0.5 50000" in cleaned and "203.0.113.9" in cleaned
    assert ".local" in IcePolicy(ignore_mdns_candidates=False).clean_remote_sdp(SDP)


def test_announced_address_replaces_the_gathered_one() -> None:
    policy = IcePolicy(announce_addresses={"10.0.0.5": "198.51.100.7"})
    out = policy.rewrite_local_sdp(SDP)
    assert "a=candidate:1 1 udp 2130706431 198.51.100.7 50000 typ host" in out
    assert "c=IN IP4 198.51.100.7" in out
    assert "raddr 10.0.0.5" in out  # only the candidate address itself is announced


def test_only_configured_ice_servers_are_used() -> None:
    assert IcePolicy().configuration().iceServers == []  # never aiortc's default STUN server
    policy = IcePolicy(stun_servers=["stun:stun.hospital.example:3478"],
                       turn_servers=[TurnServerSpec("turns:turn.hospital.example:443", "u", "p")])
    urls = [s.urls for s in policy.configuration().iceServers]
    assert urls == ["stun:stun.hospital.example:3478", "turns:turn.hospital.example:443"]
    assert policy.client_ice_servers() == [
        {"urls": ["stun:stun.hospital.example:3478"]},
        {"urls": ["turns:turn.hospital.example:443"], "username": "u", "credential": "p"}]


async def test_self_signed_tls_serves_https(tmp_path: Path) -> None:
    port = free_port()
    settings = make_settings(tmp_path, port=port, server={"host": "127.0.0.1", "port": port,
                                                          "tls": {"self_signed": True}})
    assert settings.base_url == f"https://127.0.0.1:{port}"
    context = ssl_context(settings)
    assert context is not None
    assert (tmp_path / "tls" / "self-signed.crt").exists()
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    try:
        client_ctx = ssl.create_default_context(cafile=str(tmp_path / "tls" / "self-signed.crt"))
        async with aiohttp.ClientSession() as http, http.get(
                f"https://127.0.0.1:{port}/healthz", ssl=client_ctx) as resp:
            assert resp.status == 200  # the certificate verifies for 127.0.0.1
    finally:
        await runner.cleanup()
