"""SubscriberPeer's send path: SRTP with the DTLS transport's session, then the nominated ICE
pair's socket; a video frame's packets leave together when its last one is sent (UDP GSO on
Linux, one packet at a time otherwise)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aioice.candidate import Candidate
from aioice.ice import CandidatePair, StunProtocol
from pylibsrtp import Policy, Session

from media import rtp
from media.downtrack import DownTrack
from media.impairment import Impairment
from media.sendpath import SrtpUdpSink, sockaddr
from media.source import SourceTrack
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

    def raw(self, count: int) -> list[bytes]:
        """Datagrams as they came (still protected)."""
        return [self.rx.recv(2048) for _ in range(count)]

    @contextlib.contextmanager
    def renominated(self) -> Iterator[socket.socket]:
        """ICE nominates another pair: to a new socket (yielded) at the same address."""
        host = self.rx.getsockname()[0]
        other = socket.socket(self.rx.family, socket.SOCK_DGRAM)
        other.bind((host, 0))
        other.settimeout(5)
        try:
            old = self.peer._nominated[1]
            self.peer._nominated[1] = CandidatePair(old.protocol, Candidate(
                foundation="2", component=1, transport="udp", priority=1, host=host,
                port=other.getsockname()[1], type="host"))
            yield other
        finally:
            other.close()

    def all_received(self) -> list[bytes]:
        """What has arrived so far."""
        out = []
        self.rx.setblocking(False)
        try:
            while True:
                out.append(self.rx_srtp.unprotect(self.rx.recv(2048)))
        except BlockingIOError:
            return out
        finally:
            self.rx.settimeout(5)

    def nothing_pending(self) -> bool:
        self.rx.setblocking(False)
        try:
            self.rx.recv(2048)
        except BlockingIOError:
            return True
        finally:
            self.rx.settimeout(5)
        return False


@contextlib.asynccontextmanager
async def open_link(host: str) -> AsyncIterator[Link]:
    """A SubscriberPeer whose DTLS transport is connected to a plain UDP socket (no aiortc
    peer connection: only what the send path uses)."""
    loop = asyncio.get_running_loop()
    rx = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind((host, 0))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # a whole keyframe
    rx.settimeout(5)  # a failure guard only
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: StunProtocol(None),  # type: ignore[arg-type]  # receives nothing
        local_addr=(host, 0))
    remote = Candidate(foundation="1", component=1, transport="udp", priority=1,
                       host=host, port=rx.getsockname()[1], type="host")
    key = os.urandom(30)
    dtls: Any = _Obj()
    dtls.transport = _Obj()
    dtls.transport._connection = _Obj()
    dtls.transport._connection._nominated = {1: CandidatePair(protocol, remote)}
    tx = Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND)
    tx.allow_repeat_tx = True  # as aiortc's: a retransmission without RTX repeats a packet
    dtls._tx_srtp = Session(tx)
    peer = SubscriberPeer.__new__(SubscriberPeer)  # its sending side only
    SrtpUdpSink.__init__(peer, "test")
    peer._dtls = dtls
    try:
        yield Link(peer, rx, Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND)))
    finally:
        transport.close()
        rx.close()


@pytest.fixture(params=["127.0.0.1", "::1"])
async def link(request: pytest.FixtureRequest) -> AsyncIterator[Link]:
    """``open_link`` over IPv4 and IPv6 loopback."""
    async with open_link(request.param) as opened:
        yield opened


def packet(seq: int, ts: int, size: int, marker: bool = False, ssrc: int = 7) -> bytes:
    header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | 96, seq, ts, ssrc)
    return header + bytes([seq & 0xFF]) * (size - len(header))


def forward(peer: SubscriberPeer, data: bytes, end_of_frame: bool = False) -> None:
    """``data`` as a DownTrack hands it over: a template and this subscriber's header fields."""
    seq, ts, ssrc = struct.unpack_from("!HII", data, 2)
    peer.forward_rtp(rtp.PacketTemplate(data[0], data[12:]), data[1], seq, ts, ssrc,
                     end_of_frame)


@pytest.mark.parametrize("gso", [True, False])
async def test_a_frame_leaves_whole_at_its_last_packet(link: Link, gso: bool) -> None:
    expect_gso = gso and sys.platform == "linux"
    link.peer._gso = expect_gso
    frame = [packet(1, 100, 1200), packet(2, 100, 1200), packet(3, 100, 1200),
             packet(4, 100, 700), packet(5, 100, 1200), packet(6, 100, 300, marker=True)]
    for data in frame[:-1]:
        forward(link.peer, data)
    assert link.nothing_pending()
    forward(link.peer, frame[-1], end_of_frame=True)
    assert link.received(len(frame)) == frame
    assert link.nothing_pending() and link.peer.dropped == 0
    assert link.peer._gso is expect_gso  # GSO worked where expected, no fallback


async def test_a_frame_whose_last_packet_was_lost_leaves_with_the_next_packet(link: Link
                                                                               ) -> None:
    forward(link.peer, packet(1, 100, 1000))
    forward(link.peer, packet(2, 100, 1000))
    forward(link.peer, packet(4, 200, 1000))  # next frame: 3 (the marker) was lost
    assert link.received(2) == [packet(1, 100, 1000), packet(2, 100, 1000)]
    link.peer.send_rtp(packet(9, 0, 200, ssrc=8))  # audio, or a retransmission
    assert link.received(2) == [packet(4, 200, 1000), packet(9, 0, 200, ssrc=8)]
    assert link.nothing_pending()


async def test_a_large_keyframe_is_split_into_several_sends(link: Link) -> None:
    frame = [packet(seq, 100, 1200) for seq in range(150)] + [packet(150, 100, 90, True)]
    for data in frame[:-1]:  # 180 kB: more than a send batch holds
        forward(link.peer, data)
    forward(link.peer, frame[-1], end_of_frame=True)
    assert link.received(len(frame)) == frame


def test_sockaddr_is_linux_struct_sockaddr() -> None:
    v4 = sockaddr(("127.0.0.1", 5004))
    assert v4 == struct.pack("=H", socket.AF_INET) + bytes([0x13, 0x8C, 127, 0, 0, 1]) + bytes(8)
    v6 = sockaddr(("::1", 5004, 0, 0))
    assert v6 is not None and len(v6) == 28 and v6[2:4] == bytes([0x13, 0x8C])
    assert v6[8:24] == socket.inet_pton(socket.AF_INET6, "::1")
    assert sockaddr(("not-an-address", 5004)) is None  # sent from Python instead


async def test_a_new_nominated_pair_gets_the_next_frame_and_a_simulated_downlink_each_datagram(
        link: Link) -> None:
    """C sends to the pair's socket it was given; when ICE nominates another pair the next
    frame goes there; while a simulated downlink (media/impairment.py) takes this subscriber,
    Python sends each datagram through it."""
    forward(link.peer, packet(1, 100, 800), end_of_frame=True)
    assert link.received(1) == [packet(1, 100, 800)]
    with link.renominated() as other:
        frame = [packet(2, 200, 900), packet(3, 200, 400, marker=True)]
        forward(link.peer, frame[0])
        forward(link.peer, frame[1], end_of_frame=True)
        assert [link.rx_srtp.unprotect(other.recv(2048)) for _ in frame] == frame
        assert link.nothing_pending()

        class Downlink:  # what Impairment.downlinks holds: a limit that sends or drops
            def __init__(self) -> None:
                self.seen: list[bytes] = []

            def send(self, data: bytes, transmit: Any) -> None:
                self.seen.append(data)
                transmit(data)

        impairment = _Obj()
        impairment.downlinks = {"test": Downlink()}
        link.peer._impairment = impairment  # type: ignore[assignment]
        frame = [packet(4, 300, 1000), packet(5, 300, 1000), packet(6, 300, 200, marker=True)]
        for data in frame[:-1]:
            forward(link.peer, data)
        forward(link.peer, frame[-1], end_of_frame=True)
        assert [link.rx_srtp.unprotect(other.recv(2048)) for _ in frame] == frame
        assert len(impairment.downlinks["test"].seen) == 3  # one at a time, through it
        impairment.downlinks.clear()  # the simulated downlink is lifted: C sends again
        forward(link.peer, packet(7, 400, 500), end_of_frame=True)
        assert link.rx_srtp.unprotect(other.recv(2048)) == packet(7, 400, 500)
        assert link.peer._c.fd >= 0


# ---- the fan-out in C (hz_fanout) ------------------------------------------------------------
def vp8(seq: int, ts: int, start: bool, marker: bool, key: bool, size: int = 600
        ) -> tuple[Any, ...]:
    """SourceTrack.on_packet's arguments for a VP8 packet (``start``: the first of a frame,
    S=1, PID 0; ``key``: of a keyframe), no padding, no header extensions."""
    payload = (b"\x10" + (b"\x00" if key else b"\x01")) if start else b"\x00\x00"
    return (0x1234, seq, ts, int(marker), payload + bytes([seq & 0xFF]) * size, 0, None, None)


def stream(start: int, frames: int, key_every: int = 0) -> list[tuple[Any, ...]]:
    """``frames`` frames of three packets from sequence number ``start``."""
    out = []
    for f in range(frames):
        for i in range(3):
            seq = (start + 3 * f + i) & 0xFFFF
            out.append(vp8(seq, 3000 * f, i == 0, i == 2,
                           key_every > 0 and f % key_every == 0))
    return out


def subscribed(source: SourceTrack, link: Link, ssrc: int, payload_type: int) -> DownTrack:
    """A DownTrack of ``link``'s subscriber, active, on ``source``."""
    down = DownTrack(source.kind, ssrc, link.peer)
    down.configure(payload_type, source.clock_rate, rtp.ExtensionIds(), "cname")
    down.active = True
    down.attach(source)
    return down


async def test_the_fan_out_in_c_sends_what_the_python_way_does() -> None:
    """Two subscribers of one source in the same state: one's sink armed (its packets are
    forwarded by hz_fanout), the other's never (a simulated downlink is possible there: every
    packet takes DownTrack.forward). They receive the same datagrams — a keyframe start, a late
    packet, a run long enough to slide the start along (> 0x4000 packets),
    sequence numbers wrapping — and both answer NACKs with what they sent, from C's record."""
    source = SourceTrack("t", "video", "video/VP8", 90000, lambda ssrc: None,
                         lambda ssrc, lost: None)
    async with open_link("127.0.0.1") as fast, open_link("127.0.0.1") as slow:
        slow.peer._impairment = Impairment()  # never armed: Python forwards every packet
        downs = []
        for link in (fast, slow):
            down = subscribed(source, link, 4321, 96)
            down._last_out_seq, down._last_out_ts = 0xFFF0, 0xFFFFF000  # both wrap soon
            downs.append(down)
        packets = stream(0xFFE0, 20, key_every=10)
        late = packets[7]
        del packets[7]  # comes after the next frame: late
        packets.insert(12, late)
        for args in packets:
            source.on_packet(*args)
        got = [fast.all_received(), slow.all_received()]
        assert got[0] == got[1] and len(got[0]) == len(packets)  # all: it started at a keyframe
        assert fast.peer._c.armed and not slow.peer._c.armed
        assert [d.packets for d in downs] == [len(got[0])] * 2
        assert downs[0].octets == downs[1].octets > 0
        # a long run: the start trails the newest packet, numbers keep flowing
        for args in stream((0xFFE0 + 60) & 0xFFFF, 6000):  # no gap: none given up later
            source.on_packet(*args)
            if args[1] % 600 == 0:
                assert fast.all_received() == slow.all_received()
        assert fast.all_received() == slow.all_received()
        assert downs[0]._first_src_seq == downs[1]._first_src_seq != 0
        assert downs[0]._last_out_seq == downs[1]._last_out_seq
        for args in stream((0xFFE0 + 60 + 18000) & 0xFFFF, 2):
            source.on_packet(*args)
        last = [fast.raw(6), slow.raw(6)]
        assert [fast.rx_srtp.unprotect(p) for p in last[0]] == [
            slow.rx_srtp.unprotect(p) for p in last[1]]
        # NACKs: answered with what went out under those numbers (the same datagram: same
        # session, packet and index)
        seqs = [struct.unpack_from("!H", p, 2)[0] for p in last[0][:3]]
        for down, link, sent in zip(downs, (fast, slow), last, strict=True):
            down.on_nack(seqs)
            assert link.raw(3) == sent[:3]
            assert down.nacks_answered == 3


async def test_the_fan_out_in_c_hands_python_an_audio_gap_and_follows_a_new_pair() -> None:
    """An audio packet after an upstream gap is noted by Python (the gap is the publisher's
    loss, not the subscriber's); a newly nominated pair disarms the sink, and the next
    packet, sent from Python, goes to the new pair and arms it again."""
    source = SourceTrack("a", "audio", "audio/opus", 48000, lambda ssrc: None,
                         lambda ssrc, lost: None)
    async with open_link("127.0.0.1") as link:
        down = subscribed(source, link, 99, 111)

        def audio(seq: int) -> None:
            source.on_packet(0x55, seq, 960 * seq, 0, bytes([seq]) * 80, 0, None, None)

        for seq in range(1, 4):
            audio(seq)
        assert len(link.received(3)) == 3 and link.peer._c.armed
        audio(7)  # 4, 5 and 6 never came
        assert len(link.received(1)) == 1
        assert list(down._upstream_gaps) == [((down._last_out_seq), 3)]
        with link.renominated() as other:
            assert not link.peer._c.armed
            audio(8)
            assert link.rx_srtp.unprotect(other.recv(2048))[12:] == bytes([8]) * 80
            assert link.peer._c.armed
            audio(9)
            assert link.rx_srtp.unprotect(other.recv(2048))[12:] == bytes([9]) * 80
            assert link.nothing_pending()


async def test_a_nack_for_a_packet_too_old_to_protect_again_is_skipped() -> None:
    """libsrtp protects a sequence number again only within its replay window (128 packets):
    a NACK for an older one (a large keyframe, a slow link) is not answered — and neither it
    nor the packets around it break the fan-out."""
    source = SourceTrack("t", "video", "video/VP8", 90000, lambda ssrc: None,
                         lambda ssrc, lost: None)
    async with open_link("127.0.0.1") as link:
        down = subscribed(source, link, 77, 96)
        for args in stream(100, 100, key_every=50):  # 300 packets
            source.on_packet(*args)
            link.all_received()
        first = (down._last_out_seq - 299) & 0xFFFF
        recent = (down._last_out_seq - 5) & 0xFFFF
        down.on_nack([first, recent])  # the first is 299 behind: too old; the other is sent
        assert len(link.raw(1)) == 1 and link.nothing_pending()
        assert link.peer.too_old == 1
        assert down.retransmissions == 1  # what was sent again, not what was skipped
        for args in stream(400, 2):
            source.on_packet(*args)
        assert len(link.all_received()) == 6
