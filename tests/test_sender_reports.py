"""Sender reports of forwarded streams map NTP to RTP time like the publisher's own.

Receivers use SR mappings for lip sync (and the recorder for A/V alignment). For each kind,
the test learns the SFU's timestamp offset for the subscriber's stream by matching payloads,
then checks every SR the subscriber got against the publisher's SR mapping: within 20 ms.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from aiortc.rtp import RtcpSrPacket, RtpPacket, is_rtcp

from tests.harness import Server, figures

CLOCK = {"audio": 48000, "video": 90000}
NTP_UNIT = 2**32


def _key(payload: bytes) -> bytes:
    return hashlib.sha1(payload).digest()


async def test_forwarded_sender_reports_match_the_publishers_mapping(server: Server) -> None:
    room = await server.create_room("mdt")
    publisher = await server.participant(room, "surgeon")
    viewer = await server.participant(room, "trainee")
    sent: dict[str, dict[bytes, int]] = {"audio": {}, "video": {}}  # payload -> source ts
    pub_sr: dict[str, list[tuple[int, int]]] = {"audio": [], "video": []}
    got: dict[str, dict[bytes, int]] = {"audio": {}, "video": {}}  # payload -> forwarded ts
    sub_sr: dict[str, list[tuple[int, int]]] = {"audio": [], "video": []}
    try:
        await publisher.publish(tag=1)
        pc = publisher._publish_pcs[0]
        kind_of = {t.sender._ssrc: t.kind for t in pc.getTransceivers()}
        dtls = pc.getTransceivers()[0].sender.transport
        send_rtp = dtls._send_rtp

        async def spy_send(data: bytes) -> None:  # what the publisher puts on the wire
            if is_rtcp(data):  # a sender report comes first in its compound packet
                ssrc = int.from_bytes(data[4:8], "big")
                if data[1] == 200 and ssrc in kind_of:
                    ntp = int.from_bytes(data[8:16], "big")
                    pub_sr[kind_of[ssrc]].append((ntp, int.from_bytes(data[16:20], "big")))
            else:
                packet = RtpPacket.parse(data)
                if packet.ssrc in kind_of and packet.payload:
                    sent[kind_of[packet.ssrc]][_key(packet.payload)] = packet.timestamp
            await send_rtp(data)

        dtls._send_rtp = spy_send
        assert await viewer.wait_until(
            lambda: viewer.frames_from(publisher.id, "video") > 5, timeout=10)
        assert viewer._subscribe_pc is not None
        for transceiver in viewer._subscribe_pc.getTransceivers():
            receiver, kind = transceiver.receiver, transceiver.kind
            on_rtp, on_rtcp = receiver._handle_rtp_packet, receiver._handle_rtcp_packet

            async def spy_rtp(packet: RtpPacket, arrival_time_ms: int, kind: str = kind,
                              on_rtp: Any = on_rtp) -> None:
                if packet.payload:
                    got[kind][_key(packet.payload)] = packet.timestamp
                await on_rtp(packet, arrival_time_ms)

            async def spy_rtcp(packet: Any, kind: str = kind, on_rtcp: Any = on_rtcp) -> None:
                if isinstance(packet, RtcpSrPacket):
                    info = packet.sender_info
                    sub_sr[kind].append((info.ntp_timestamp, info.rtp_timestamp))
                await on_rtcp(packet)

            receiver._handle_rtp_packet = spy_rtp
            receiver._handle_rtcp_packet = spy_rtcp
        await asyncio.sleep(6)  # several sender reports each way
        worst: dict[str, float] = {}
        for kind in ("audio", "video"):
            common = sent[kind].keys() & got[kind].keys()
            assert len(common) > 20, kind
            offsets = {(got[kind][k] - sent[kind][k]) & 0xFFFFFFFF for k in common}
            assert len(offsets) == 1, (kind, offsets)  # one constant offset per stream
            (offset,) = offsets
            assert len(sub_sr[kind]) >= 2 and pub_sr[kind], (kind, sub_sr, pub_sr)
            for ntp_s, rtp_s in sub_sr[kind]:
                # the publisher's mapping at that NTP time, from its nearest earlier report
                ntp_p, rtp_p = max((sr for sr in pub_sr[kind] if sr[0] <= ntp_s),
                                   default=pub_sr[kind][0])
                expected = rtp_p + (ntp_s - ntp_p) * CLOCK[kind] / NTP_UNIT + offset
                error_ms = ((rtp_s - expected + 2**31) % 2**32 - 2**31) * 1000 / CLOCK[kind]
                assert abs(error_ms) < 20, (kind, error_ms)
                worst[kind] = max(worst.get(kind, 0.0), abs(error_ms))
        figures("sender reports", worst_error_ms=worst,
                reports={kind: len(reports) for kind, reports in sub_sr.items()})
    finally:
        await viewer.leave()
        await publisher.leave()
