"""SubscriberPeer's send path: SRTP with the DTLS transport's session, then the nominated ICE
pair's socket; a video frame's packets leave together when its last one is sent (UDP GSO on
Linux, one packet at a time otherwise)."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aioice.candidate import Candidate
from aioice.ice import CandidatePair, StunProtocol
from pylibsrtp import Policy, Session

from media.subscriber import SubscriberPeer


class _Obj:
    pass


@dataclass
class Link:
    peer: SubscriberPeer
    rx: socket.socket
    rx_srtp: Session

    def received(self, count: int) -> list[bytes]:
        return [self.rx_srtp.unprotect(self.rx.recv(2048)) for _ in range(count)]

    def nothing_pending(self) -> bool:
        self.rx.setblocking(False)
        try:
            self.rx.recv(2048)
        except BlockingIOError:
            return True
        finally:
            self.rx.settimeout(5)
        return False


@pytest.fixture
async def link() -> AsyncIterator[Link]:
    """A SubscriberPeer whose DTLS transport is connected to a plain UDP socket (no aiortc
    peer connection: only what the send path uses)."""
    loop = asyncio.get_running_loop()
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # a whole keyframe
    rx.settimeout(5)  # a failure guard only
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: StunProtocol(None),  # type: ignore[arg-type]  # receives nothing
        local_addr=("127.0.0.1", 0))
    remote = Candidate(foundation="1", component=1, transport="udp", priority=1,
                       host="127.0.0.1", port=rx.getsockname()[1], type="host")
    key = os.urandom(30)
    dtls: Any = _Obj()
    dtls.transport = _Obj()
    dtls.transport._connection = _Obj()
    dtls.transport._connection._nominated = {1: CandidatePair(protocol, remote)}
    dtls._tx_srtp = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    peer = SubscriberPeer.__new__(SubscriberPeer)
    peer.__dict__.update(_dtls=dtls, _pair=None, _sock=None, _addr=("", 0), dropped=0,
                         _impairment=None, label="test")
    yield Link(peer, rx, Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND)))
    transport.close()
    rx.close()


def packet(seq: int, ts: int, size: int, marker: bool = False, ssrc: int = 7) -> bytes:
    header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | 96, seq, ts, ssrc)
    return header + bytes([seq & 0xFF]) * (size - len(header))


@pytest.mark.parametrize("gso", [True, False])
async def test_a_frame_leaves_whole_at_its_last_packet(link: Link, gso: bool) -> None:
    expect_gso = gso and sys.platform == "linux"
    link.peer._gso = expect_gso
    frame = [packet(1, 100, 1200), packet(2, 100, 1200), packet(3, 100, 1200),
             packet(4, 100, 700), packet(5, 100, 1200), packet(6, 100, 300, marker=True)]
    for data in frame[:-1]:
        link.peer.queue_rtp(data)
    assert link.nothing_pending()
    link.peer.send_rtp(frame[-1])
    assert link.received(len(frame)) == frame
    assert link.nothing_pending() and link.peer.dropped == 0
    assert link.peer._gso is expect_gso  # GSO worked where expected, no fallback


async def test_a_frame_whose_last_packet_was_lost_leaves_with_the_next_packet(link: Link
                                                                               ) -> None:
    link.peer.queue_rtp(packet(1, 100, 1000))
    link.peer.queue_rtp(packet(2, 100, 1000))
    link.peer.queue_rtp(packet(4, 200, 1000))  # next frame: 3 (the marker) was lost
    assert link.received(2) == [packet(1, 100, 1000), packet(2, 100, 1000)]
    link.peer.send_rtp(packet(9, 0, 200, ssrc=8))  # audio, or a retransmission
    assert link.received(2) == [packet(4, 200, 1000), packet(9, 0, 200, ssrc=8)]
    assert link.nothing_pending()


async def test_a_large_keyframe_is_split_into_several_sends(link: Link) -> None:
    frame = [packet(seq, 100, 1200) for seq in range(150)] + [packet(150, 100, 90, True)]
    for data in frame[:-1]:
        link.peer.queue_rtp(data)
    link.peer.send_rtp(frame[-1])
    assert link.received(len(frame)) == frame
