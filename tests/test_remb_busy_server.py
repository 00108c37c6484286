"""A busy server does not talk its publishers' bitrate down (media/rxstamps.py).

The publisher is a separate process (``huizhen join``), so only the server's event loop is
busy: 40 ms of every 50 ms blocked, as under a heavy load of subscribers. aiortc's REMB
estimator, fed the time the loop got round to each packet, reads the resulting bursts as a
congested uplink and cut the REMB to 40–60 % (measured before the fix, 4 runs); fed the
kernel's receive timestamps it keeps climbing. Also: the timestamps really reach aiortc's
receiver (which the publisher's packets now reach after they are forwarded:
PublisherPeer._direct).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from typing import Any

import pytest
from aiortc import RTCRtpReceiver
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, unpack_remb_fci

from tests.harness import Server, figures, wait_for

WARMUP_S = 6.0
LOAD_S = 6.0
BUSY_S, PERIOD_S = 0.04, 0.05


async def test_remb_holds_while_the_server_loop_is_busy(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    rembs: list[tuple[float, int]] = []
    stamped: list[int] = []
    original_send = RTCRtpReceiver._send_rtcp
    original_handle = RTCRtpReceiver._handle_rtp_packet

    async def send_rtcp(self: RTCRtpReceiver, packet: Any) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            rembs.append((time.monotonic(), unpack_remb_fci(packet.fci)[0]))
        await original_send(self, packet)

    async def handle_rtp(self: RTCRtpReceiver, packet: Any, arrival_time_ms: int) -> None:
        stamped.append(arrival_time_ms)  # what aiortc's receiver (its REMB estimator) is told
        await original_handle(self, packet, arrival_time_ms)

    monkeypatch.setattr(RTCRtpReceiver, "_send_rtcp", send_rtcp)
    monkeypatch.setattr(RTCRtpReceiver, "_handle_rtp_packet", handle_rtp)
    room = await server.create_room("broadcast")
    url = await server.join_url(room, "presenter-1", "presenter")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "huizhen.cli", "join", url, "--publish", "pattern",
        "--report", "100", "--ice-address", "127.0.0.1",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True)
    try:
        async def three_rembs() -> bool:
            return len(rembs) >= 3

        assert await wait_for(three_rembs, timeout=20), "no REMB sent"
        await asyncio.sleep(WARMUP_S)
        before = rembs[-1][1]
        # kernel stamps are ms since 1900 on the real-time clock, as aiortc's own
        now_ms = int((time.time() + 2208988800) * 1000)
        assert len(stamped) > 100 and all(now_ms - 5000 < v <= now_ms for v in stamped[-50:])
        start = time.monotonic()
        end = start + LOAD_S
        while time.monotonic() < end:
            time.sleep(BUSY_S)  # noqa: ASYNC251  (blocks the server's loop: this test shares it)
            await asyncio.sleep(PERIOD_S - BUSY_S)
        during = [bitrate for t, bitrate in rembs if start <= t <= end]
        figures("REMB, server loop blocked 40 ms of every 50 ms", remb_before_bps=before,
                remb_min_during_bps=min(during, default=0), remb_last_bps=rembs[-1][1])
        assert len(during) >= 4, rembs
        assert min(during) >= 0.9 * before, (before, during)
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
