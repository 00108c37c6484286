"""Issue 13, tests 1 and 2: through a firewall that drops UDP, by coturn over TCP and TLS;
TURN credentials of each participant's own that expire with its token.

coturn (Debian's ``turnserver``) runs on free ports with ``use-auth-secret`` (docs/turn.md).
Test 1's browser runs in a child network namespace whose nftables rules drop every UDP packet
and every TCP packet not to the allowed ports (tests/turn_support.py).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from aioice.ice import Connection
from aioice.stun import TransactionFailed
from aioice.turn import create_turn_endpoint
from aiortc import RTCPeerConnection
from playwright.async_api import Browser, async_playwright

from huizhen.config import ConfigError, load_settings
from media import nomination
from media.turn import turn_credential
from sdk.participant import Participant
from tests.browser import chromium_args, frames_decoded
from tests.harness import LOOPBACK, Server, figures, free_port, make_settings, wait_for
from tests.turn_support import CHILD_IP, HOST_IP, Ca, ChildNet, Coturn, nss_home
from tests.web_support import DESKTOP, Client, me_id, open_client, precheck_done, wait_js

SECRET = "turn-secret-" + "x" * 40


@pytest.fixture
async def coturn(tmp_path: Path) -> AsyncIterator[Coturn]:
    ca = Ca.make("Huizhen test CA")
    turn = Coturn(tmp_path / "coturn", SECRET, free_port(), free_port(),
                  ca.issue(tmp_path, "turn", ["127.0.0.1"]))
    await turn.start()
    try:
        yield turn
    finally:
        turn.stop()


async def allocate(port: int, username: str, password: str, transport: str = "udp"
                   ) -> tuple[str, int]:
    """A real TURN Allocate at coturn; returns the relayed address (raises if refused)."""
    relay, _ = await asyncio.wait_for(create_turn_endpoint(
        asyncio.DatagramProtocol, ("127.0.0.1", port), username, password, lifetime=60,
        transport=transport), 10)
    address = relay.get_extra_info("sockname")
    relay.close()
    return tuple(address)


async def refused(port: int, username: str, password: str) -> bool:
    try:
        await allocate(port, username, password)
    except TransactionFailed as exc:
        return "401" in str(exc) or "Unauthorized" in str(exc)
    return False


def turn_entry(servers: list[dict[str, Any]]) -> dict[str, Any]:
    (entry,) = [s for s in servers if "username" in s]
    return entry


async def nominated_through(coturn: Coturn, host_answers_after: float | None) -> str:
    """The race behind a call that went through the relay on a network where UDP works: a
    controlling aioice agent (the SFU on a connection it offers) and a controlled one with a
    TURN relay (a browser) whose host candidate answers only after ``host_answers_after`` s
    (None: never). The controlled side checks first, through its relay too, so the controlling
    side starts triggered checks on the host and the relay pair at once. Returns the type of
    the remote candidate the controlling side nominated."""
    username = f"{int(time.time()) + 600}:p_browser"
    browser = Connection(ice_controlling=False, turn_server=("127.0.0.1", coturn.port),
                         turn_username=username,
                         turn_password=turn_credential(SECRET, username), turn_transport="udp")
    sfu = Connection(ice_controlling=True)
    loop = asyncio.get_running_loop()
    try:
        await asyncio.gather(browser.gather_candidates(), sfu.gather_candidates())
        for proto in browser._protocols:
            if proto.local_candidate.type == "host":
                answer = proto.datagram_received

                def late(data: bytes, addr: tuple[str, int], answer: Any = answer) -> None:
                    if host_answers_after is not None:
                        loop.call_later(host_answers_after, answer, data, addr)

                proto.datagram_received = late  # type: ignore[method-assign]
        assert {c.type for c in browser.local_candidates} == {"host", "relay"}
        for one, other in ((browser, sfu), (sfu, browser)):
            one.remote_username, one.remote_password = other.local_username, other.local_password
            for candidate in other.local_candidates:
                await one.add_remote_candidate(candidate)
            await one.add_remote_candidate(None)
        controlled = asyncio.create_task(browser.connect())
        await asyncio.sleep(0.3)  # its checks (and the relay's permission) are there first
        await asyncio.wait_for(sfu.connect(), 10)
        await asyncio.wait_for(controlled, 10)
        return str(sfu._nominated[1].remote_candidate.type)
    finally:
        await asyncio.gather(sfu.close(), browser.close())


async def test_direct_pair_wins_over_a_faster_relay(coturn: Coturn,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Direct UDP works but answers 150 ms late; the relay answers at once."""
    assert nomination.installed()  # by IcePolicy.install() (conftest)
    assert await nominated_through(coturn, 0.15) == "host"
    # only the relay works: it is nominated after the grace period
    start = time.monotonic()
    assert await nominated_through(coturn, None) == "relay"
    figures("relay_nomination", relay_only_connect_s=time.monotonic() - start)
    # the race is real: aioice by itself nominates the relay
    monkeypatch.setattr(Connection, "check_start", nomination._original_check_start)
    assert await nominated_through(coturn, 0.15) == "relay"


async def test_turn_credentials_expire_with_the_token(tmp_path: Path, coturn: Coturn) -> None:
    urls = [f"turn:127.0.0.1:{coturn.port}?transport=udp",
            f"turn:127.0.0.1:{coturn.port}?transport=tcp",
            f"turns:127.0.0.1:{coturn.tls_port}?transport=tcp"]
    server = Server(make_settings(tmp_path / "data", ice={"turn": {
        "secret": SECRET, "urls": urls, "max_credential_ttl_s": 3600}}))
    await server.start()
    try:
        room = await server.create_room("clinic")
        # a join: credentials of this participant's own, expiring with its token
        token = await server.token(room, "pat-1", "patient", ttl_s=300)
        exp = jwt.decode(token, options={"verify_signature": False})["exp"]
        participant = await server.participant(room, "dr-1", "doctor")
        patient = Participant(server.url, room, token, ice=LOOPBACK)
        await patient.join()
        try:
            entry = turn_entry(patient.joined["ice_servers"])
            assert entry["urls"] == urls
            expiry, user = entry["username"].split(":")
            assert int(expiry) == exp and user == patient.id
            assert entry["credential"] == base64.b64encode(hmac.new(
                SECRET.encode(), entry["username"].encode(), "sha1").digest()).decode()
            assert SECRET not in json.dumps(patient.joined)
            other = turn_entry(participant.joined["ice_servers"])
            assert other["username"] != entry["username"]  # each their own
            # a long-lived token: the credential is capped (max_credential_ttl_s)
            assert int(other["username"].split(":")[0]) <= time.time() + 3600 + 2

            # the SDK's peer connections use them (its own policy names no server), and
            # gather a relay candidate through coturn with them
            config = patient.configuration()
            assert [s.urls for s in config.iceServers] == [urls]
            assert config.iceServers[0].username == entry["username"]
            pc = RTCPeerConnection(config)
            try:
                pc.addTransceiver("audio", direction="sendonly")
                await pc.setLocalDescription(await pc.createOffer())
                assert " typ relay " in pc.localDescription.sdp, pc.localDescription.sdp
            finally:
                await pc.close()

            # coturn takes them (UDP and TCP to coturn)
            await allocate(coturn.port, entry["username"], entry["credential"])
            await allocate(coturn.port, entry["username"], entry["credential"], "tcp")

            # the pre-call check gets its own, expiring with the same token
            async with server.http.get(  # type: ignore[union-attr]
                    server.url + "/precheck",
                    headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.status == 200
                check = turn_entry((await resp.json())["ice_servers"])
            assert check["username"].startswith(f"{exp}:check-")
            await allocate(coturn.port, check["username"], check["credential"])
            async with server.http.get(server.url + "/precheck",  # type: ignore[union-attr]
                                       headers={"Authorization": "Bearer nope"}) as resp:
                assert resp.status == 401

            # forged: signed with another secret; stretched: a later expiry on the same
            # credential; expired: rightly signed, but its time has passed
            username = entry["username"]
            assert await refused(coturn.port, username, turn_credential("y" * 48, username))
            stretched = f"{exp + 86400}:{user}"
            assert await refused(coturn.port, stretched, entry["credential"])
            expired = f"{int(time.time()) - 5}:{user}"
            assert await refused(coturn.port, expired, turn_credential(SECRET, expired))
            # …while the same made with a future expiry works: the refusals were the expiry's
            fresh = f"{int(time.time()) + 60}:{user}"
            await allocate(coturn.port, fresh, turn_credential(SECRET, fresh))
        finally:
            await patient.close()
            await participant.close()
    finally:
        await server.stop()


def test_production_refuses_insecure_turn_settings(tmp_path: Path) -> None:
    base: dict[str, Any] = {
        "mode": "production", "data_dir": str(tmp_path),
        "auth": {"api_keys": [{"key": "his", "secret": "s" * 40}]},
        "records": {"audit": {"keys": {"a1": base64.b64encode(b"k" * 32).decode()},
                              "active_key": "a1"}},
        "metrics": {"token": "m" * 40},
    }
    urls = ["turns:turn.hospital.example:443?transport=tcp"]
    with pytest.raises(ConfigError, match=r"ice\.turn\.secret is shorter than 32"):
        load_settings(Path("/dev/null"), **base, ice={"turn": {"secret": "short", "urls": urls}})
    with pytest.raises(ConfigError, match=r"ice\.turn_servers .* static TURN password"):
        load_settings(Path("/dev/null"), **base, ice={"turn_servers": [
            {"url": "turn:turn.hospital.example:3478", "username": "u", "credential": "p"}]})
    with pytest.raises(ConfigError, match=r"ice\.turn\.urls and ice\.turn\.secret"):
        load_settings(Path("/dev/null"), **base, ice={"turn": {"urls": urls}})
    ok = load_settings(Path("/dev/null"), **base, ice={"turn": {"secret": SECRET, "urls": urls}})
    assert ok.ice.turn.urls == urls


# ---- 1. a browser behind a firewall that drops UDP ----------------------------------------------

# How each live connection of the page goes, from its selected candidate pair's local candidate.
PATHS = """
async () => {
  const out = {};
  for (const [name, pc] of Object.entries(window.huizhen.pcs)) {
    if (!pc || pc.connectionState !== 'connected') continue;
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach(s => {
      if (s.type === 'transport' && s.selectedCandidatePairId) {
        pair = stats.get(s.selectedCandidatePairId);
      }
    });
    const local = pair && stats.get(pair.localCandidateId);
    out[name] = local ? {type: local.candidateType, relay: local.relayProtocol || null,
                         bytes: (pair.bytesReceived || 0) + (pair.bytesSent || 0)} : null;
  }
  return out;
}
"""

# Does a relay-only connection get a candidate from this TURN URL? (TLS verified or not)
RELAY_PROBE = """
async ({token, url}) => {
  const resp = await fetch('/precheck', {headers: {Authorization: `Bearer ${token}`}});
  const entry = (await resp.json()).ice_servers.find(s => s.username);
  const pc = new RTCPeerConnection({iceServers: [{...entry, urls: [url]}],
                                    iceTransportPolicy: 'relay'});
  pc.createDataChannel('probe');
  const found = new Promise(resolve => {
    pc.onicecandidate = ev => {
      if (!ev.candidate) resolve(false);
      else if (/ typ relay /.test(ev.candidate.candidate)) resolve(true);
    };
    setTimeout(() => resolve(false), 5000);
  });
  await pc.setLocalDescription(await pc.createOffer());
  const ok = await found;
  pc.close();
  return ok;
}
"""


async def test_udp_blocked_call_goes_through_coturn_over_tcp_then_tls(tmp_path: Path) -> None:
    if not shutil.which("nft"):
        pytest.fail("nftables is needed (scripts/install-system-deps.sh test)")
    net = ChildNet(tmp_path).start()
    trusted, untrusted = Ca.make("Huizhen test CA"), Ca.make("Someone else's CA")
    turn = Coturn(tmp_path / "coturn", SECRET, free_port(), free_port(),
                  trusted.issue(tmp_path, "turn", [HOST_IP, "127.0.0.1"]),
                  listen=["127.0.0.1", HOST_IP])
    rogue = Coturn(tmp_path / "rogue", SECRET, free_port(), free_port(),
                   untrusted.issue(tmp_path, "rogue", [HOST_IP]), listen=["127.0.0.1", HOST_IP],
                   verbose=True)
    home = nss_home(tmp_path / "home", trusted)
    port = free_port()
    server = Server(make_settings(tmp_path / "data", port, ice={
        "gather_addresses": ["127.0.0.1", HOST_IP],
        "turn": {"secret": SECRET, "urls": [
            f"turn:{HOST_IP}:{turn.port}?transport=udp",
            f"turn:{HOST_IP}:{turn.port}?transport=tcp",
            f"turns:{HOST_IP}:{turn.tls_port}?transport=tcp"]}}))
    remote: Participant | None = None
    try:
        await turn.start()
        await rogue.start()
        await server.start()
        assert server.runner is not None
        await web.TCPSite(server.runner, HOST_IP, port).start()  # reachable from the child
        room = await server.create_room("mdt", "Tumour board")
        remote = await server.participant(room, "dr-remote")  # aiortc, on this side
        await remote.publish()
        phases = [  # (name, UDP passes, TCP ports that pass, the path expected)
            ("udp", True, [port, turn.port, turn.tls_port], "direct", None),
            ("tcp", False, [port, turn.port], "relay-tcp", "tcp"),
            ("tls", False, [port, turn.tls_port, rogue.tls_port], "relay-tls", "tls"),
        ]
        timings: dict[str, float] = {}
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=str(net.chromium_wrapper()), headless=True,
                args=[*chromium_args(),
                      f"--unsafely-treat-insecure-origin-as-secure=http://{HOST_IP}:{port}"],
                env={**os.environ, "HOME": str(home)})
            try:
                for name, udp, tcp_ports, path, relay in phases:
                    net.firewall(tcp_ports, udp=udp)
                    timings.update(await call_through(
                        server, browser, room, remote, name, path, relay, turn, rogue))
            finally:
                await browser.close()
        # seconds: the pre-call check; from Join to the first frame decoded by the browser
        # (received) and by the other side (sent)
        figures("turn_paths", **timings)
    finally:
        if remote is not None:
            await remote.close()
        await server.stop()
        turn.stop()
        rogue.stop()
        net.stop()
        LOOPBACK.install()  # HOST_IP is gone: this process's clients gather on loopback again


async def call_through(server: Server, browser: Browser, room: str, remote: Participant,
                       name: str, path: str, relay: str | None, turn: Coturn, rogue: Coturn
                       ) -> dict[str, float]:
    """One browser joins from the child namespace; returns how long its check and its first
    frames (each way) took."""
    client = await open_client(browser, name, DESKTOP)
    try:
        url = await server.join_url(room, f"dr-{name}")
        check_start = time.monotonic()
        await client.page.goto(url.replace("//127.0.0.1:", f"//{HOST_IP}:"))
        # the pre-call check found the same path, and says so
        await precheck_done(client, timeout=25)
        check_took = time.monotonic() - check_start
        check = await client.js("window.huizhen.precheck")
        assert check["rtc"] == "ok" and check["path"] == path, (check, client.log())
        said = await client.page.locator("#precheck-path").inner_text()
        assert said == {"direct": "Video goes straight to the clinic (UDP): the best quality.",
                        "relay-tcp": "Your network blocks direct video, so it goes through the "
                                     "relay over TCP; quality may be lower.",
                        "relay-tls": "Your network only allows the secure relay; quality may "
                                     "be lower."}[path]
        join_btn = client.page.locator("#btn-join")
        await client.page.wait_for_function(
            "() => !document.querySelector('#btn-join').disabled", timeout=15000)
        start = time.monotonic()
        await join_btn.click()
        await wait_js(client, "window.__pcs.some(pc => pc.getReceivers().length > 0)", 20)
        assert await wait_for(lambda: _decodes(client), 20), client.log()
        took = time.monotonic() - start
        assert await wait_for(lambda: _decodes(client, 10), 15), client.log()
        me = await me_id(client)
        assert await remote.wait_until(lambda: remote.frames_from(me, "video") >= 5, 15), \
            f"{name}: the other side decoded nothing from the browser\n{client.log()}"
        sent = remote.received_from(me, "video")
        assert sent is not None and sent.first_frame_at is not None
        # both connections really go that way (and carry the media)
        paths = await client.js(PATHS)
        want = {"type": "relay" if relay else "host", "relay": relay}
        assert set(paths) == {"publish", "subscribe"}, paths
        for which, got in paths.items():
            assert got is not None and {k: got[k] for k in want} == want, (which, paths)
            assert got["bytes"] > 5_000, (which, paths)  # the media goes that way
        if name == "tls":
            # Chromium verified coturn's certificate: one from a CA it does not trust fails
            token = url.split("#t=", 1)[1]
            probe = {"token": token, "url": f"turns:{HOST_IP}:{turn.tls_port}?transport=tcp"}
            assert await client.page.evaluate(RELAY_PROBE, probe) is True
            probe["url"] = f"turns:{HOST_IP}:{rogue.tls_port}?transport=tcp"
            assert await client.page.evaluate(RELAY_PROBE, probe) is False, rogue.log()
            assert CHILD_IP in rogue.log()  # it got there, and the TLS handshake went no further
        return {f"{name}_check": check_took, f"{name}_received": took,
                f"{name}_sent": sent.first_frame_at - start}
    finally:
        await client.close()


async def _decodes(client: Client, frames: int = 1) -> bool:
    return await frames_decoded(client.page) >= frames
