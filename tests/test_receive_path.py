"""The shared media port's receive path in C (media/fastpath_rx.c; media/udpmux.py reads the
port with it, media/publisher.py's CLane keys it): a publisher's SRTP packets are decrypted
and forwarded by C where Python would have forwarded them the same way, and left to Python
otherwise. The test sends one stream to the port — keyframes, a lost packet that comes late,
a gap, a subscriber that joins mid-stream and waits for a keyframe, one whose sink C cannot
send through, a restart under a new SSRC, audio with its level rewritten to the subscriber's
extension id, silence — and feeds the same packets to an identical source by Python's
``on_packet``: every subscriber receives exactly what its twin does, C forwarded most of it,
and aiortc's receiver still sees every packet once, in arrival order."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import struct
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket
from pylibsrtp import Policy, Session

from media import rtp
from media.downtrack import DownTrack
from media.impairment import Impairment
from media.publisher import PublisherPeer
from media.rxstamps import ArrivalStamps
from media.source import SourceTrack
from media.udpmux import MuxedProtocol, _MuxTransport, _PortSocket
from tests.test_send_path import Link, _Obj, open_link, vp8

LEVEL_ID = 1  # the publisher's audio-level extension id
SUBSCRIBER_LEVEL_ID = 3  # the subscribers'


class Publisher:
    """A publish connection on a shared port, without aiortc's peer connection: a socket that
    sends SRTP, and a PublisherPeer with one track whose packets go to its layers by SSRC (to
    the first layer for an SSRC not listed)."""

    def __init__(self, port: _PortSocket, layers: list[SourceTrack], ssrcs: list[int],
                 payload_type: int) -> None:
        by_ssrc = dict(zip(ssrcs, layers, strict=True))
        key = os.urandom(30)
        self.tx = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port_addr = port.sock.getsockname()
        self.handled: list[int] = []  # what aiortc's receiver got, in order
        ext_map = HeaderExtensionsMap()
        ext_map.configure(RTCRtpParameters(headerExtensions=[
            RTCRtpHeaderExtensionParameters(id=LEVEL_ID, uri=rtp.URI_AUDIO_LEVEL)]))
        receiver = object()
        dtls: Any = _Obj()
        dtls._rx_srtp = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND))
        dtls._rtp_header_extensions_map = ext_map
        dtls._rtp_router = _Obj()
        dtls._rtp_router.route_rtp = lambda packet: receiver
        peer = self.peer = PublisherPeer.__new__(PublisherPeer)  # its receiving side only
        peer.closed = False
        peer._backlog = asyncio.Queue()
        peer._backlog_task = None
        peer._lanes = []

        async def handle(packet: RtpPacket, arrival_time_ms: int) -> None:
            self.handled.append(packet.sequence_number)

        def forward(packet: RtpPacket) -> bool:  # as PublisherPeer._hook_receiver's
            by_ssrc.get(packet.ssrc, layers[0]).on_packet(
                packet.ssrc, packet.sequence_number, packet.timestamp, packet.marker,
                packet.payload, packet.padding_size, packet.extensions.audio_level,
                packet.extensions.abs_send_time)
            return True

        peer._forwarders = {receiver: (forward, handle)}  # type: ignore[dict-item]
        peer.c_sources = [(layer, handle) for layer in layers]
        for layer in layers:
            layer.receive_in_c(payload_type)
        connection: Any = _Obj()
        connection.local_username = "pub"
        protocol = MuxedProtocol(connection)
        protocol.connection_made(_MuxTransport(port, protocol))
        ArrivalStamps().attach(protocol.transport, peer._direct(dtls), lane=peer._lane(dtls))
        port.learn(self.sock.getsockname(), protocol)

    def send(self, packets: list[bytes]) -> None:
        for data in packets:
            self.sock.sendto(self.tx.protect(data), self.port_addr)


def rtp_packet(ssrc: int, seq: int, ts: int, marker: int, payload: bytes, pt: int,
               level: tuple[bool, int] | None = None) -> bytes:
    ext = b""
    if level is not None:
        body = bytes([LEVEL_ID << 4, (0x80 if level[0] else 0) | level[1], 0, 0])
        ext = struct.pack("!HH", rtp.ONE_BYTE_PROFILE, 1) + body
    first = 0x90 if ext else 0x80
    return struct.pack("!BBHII", first, (marker << 7) | pt, seq, ts, ssrc) + ext + payload


def untimed(packet: bytes) -> bytes:
    return packet[:4] + packet[8:]


def timestamps(packets: list[bytes]) -> list[int]:
    return [struct.unpack_from("!I", p, 4)[0] for p in packets]


@dataclass
class Twins:
    """Identical sources (each a track's layers), C's (``c``) and Python's (``py``), with
    the same subscribers (``links``, ``downs``: C's twin's, then Python's)."""

    kind: str
    clock_rate: int
    ids: rtp.ExtensionIds
    c: list[SourceTrack]
    py: list[SourceTrack]
    links: tuple[list[Link], list[Link]] = ([], [])
    downs: tuple[list[DownTrack], list[DownTrack]] = ([], [])

    async def subscribe(self, stack: AsyncExitStack, armed: bool = True) -> None:
        """One more subscriber on each twin's first layer (``armed=False``: a sink C never
        sends through)."""
        for layers, links, downs in zip((self.c, self.py), self.links, self.downs, strict=True):
            link = await stack.enter_async_context(open_link("127.0.0.1"))
            if not armed:
                link.peer._impairment = Impairment()  # Python forwards every packet
            down = DownTrack(self.kind, 4000 + len(links), link.peer)
            down.configure(111 if self.kind == "audio" else 96, self.clock_rate, self.ids,
                           "cname")
            down._last_out_seq, down._last_out_ts = 0xFF00, 0x1000  # twins: the same numbering
            down.active = True
            down.attach(layers[0])
            links.append(link)
            downs.append(down)

    async def settle(self, received: tuple[list[list[bytes]], list[list[bytes]]]) -> None:
        """Take in what the subscribers receive, until nothing more comes for a moment."""
        for links, got in zip(self.links, received, strict=True):
            got.extend([] for _ in range(len(links) - len(got)))
        quiet = 0
        while quiet < 5:
            await asyncio.sleep(0.01)
            new = [[link.all_received() for link in links] for links in self.links]
            for got, arrived in zip(received, new, strict=True):
                for out, packets in zip(got, arrived, strict=True):
                    out += packets
            quiet = 0 if any(any(packets) for packets in new) else quiet + 1


def twins(kind: str, mime: str, clock_rate: int, ids: rtp.ExtensionIds, layers: int = 1
          ) -> Twins:
    def new_source() -> SourceTrack:
        return SourceTrack("t", kind, mime, clock_rate, lambda ssrc: None,
                           lambda ssrc, lost: None, pli_throttle_s=0.0)

    return Twins(kind, clock_rate, ids, [new_source() for _ in range(layers)],
                 [new_source() for _ in range(layers)], ([], []), ([], []))


def assert_same(received: tuple[list[list[bytes]], list[list[bytes]]]) -> None:
    """Each subscriber got what its twin did; timestamps may differ where a restart
    continues them by the time that passed (C's source saw it a few µs after Python's)."""
    for c_got, py_got in zip(*received, strict=True):
        assert len(c_got) > 0
        assert [untimed(p) for p in c_got] == [untimed(p) for p in py_got]
        steps = [[b - a for a, b in itertools.pairwise(ts)]
                 for ts in (timestamps(c_got), timestamps(py_got))]
        moved = [(a, b) for a, b in zip(*steps, strict=True) if a != b]
        assert len(moved) <= 1 and all(abs(a - b) < 90 for a, b in moved), moved


async def test_c_forwards_what_python_would_and_leaves_it_the_rest() -> None:
    async with AsyncExitStack() as stack:
        port = _PortSocket("127.0.0.1", 0)
        port.start(asyncio.get_running_loop())
        stack.callback(port.close)
        low, high = 0x1234, 0x2345  # two simulcast layers' SSRCs
        t = twins("video", "video/VP8", 90000, rtp.ExtensionIds(), layers=2)
        for _ in range(2):
            await t.subscribe(stack)
        publisher = Publisher(port, t.c, [low, high], 96)
        received: tuple[list[list[bytes]], list[list[bytes]]] = ([], [])
        sent: list[int] = []
        seqs = {low: 0xFFD0, high: 0x8000, 0x5678: 0x0100}  # low wraps

        def frame(layer: int, ssrc: int, f: int, key: bool, late: list[Any] | None = None
                  ) -> None:
            """A frame of three packets of a layer (600-byte ones on the high layer);
            ``late``: the frame's middle packet is held back there, or what is held there
            is sent after it."""
            packets = []
            for i in range(3):
                seq = seqs[ssrc] = (seqs[ssrc] + 1) & 0xFFFF
                args = vp8(seq, 3000 * f, i == 0, i == 2, key, size=600 if layer else 300)
                packets.append((seq, args))
            if late is not None and not late:
                late.append(packets.pop(1))
            elif late:
                packets.append(late.pop())
            for seq, args in packets:
                _, _, ts, marker, payload, _, _, _ = args
                publisher.send([rtp_packet(ssrc, seq, ts, marker, payload, 96)])
                t.py[layer].on_packet(ssrc, seq, ts, marker, payload, 0, None, None)
                sent.append(seq)

        async def frames(count: int, key_every: int, low_ssrc: int = low,
                         late_at: int = -1) -> None:
            late: list[Any] = []
            for f in range(count):
                # the layers' keyframes at different frames, each layer's frame in a read
                frame(0, low_ssrc, f, f % key_every == 0,
                      late if late_at >= 0 and f in (late_at, late_at + 1) else None)
                await t.settle(received)
                frame(1, high, f, f % key_every == key_every // 2)
                await t.settle(received)

        await frames(12, 10, late_at=4)  # a late packet; the low layer wraps
        await t.subscribe(stack)  # joins mid-stream: waits for the next keyframe
        await t.subscribe(stack, armed=False)  # Python sends to this one
        for downs, layers in zip(t.downs, (t.c, t.py), strict=True):
            downs[0].switch(layers[1])  # at the high layer's next keyframe
        await frames(14, 8)
        await frames(6, 3, low_ssrc=0x5678)  # the publisher restarts its low layer
        await t.settle(received)
        # a frame's packets leave C as they arrive, none waits for the rest of its frame
        # (Python's twin holds them until the frame's last packet)
        counts = [len(got) for got in received[0] + received[1]]
        rest: list[tuple[int, tuple[Any, ...]]] = []
        for i in range(3):
            seq = seqs[high] = (seqs[high] + 1) & 0xFFFF
            rest.append((seq, vp8(seq, 3000 * 20, i == 0, i == 2, False, size=600)))
        for n, (seq, args) in enumerate(rest):
            _, _, ts, marker, payload, _, _, _ = args
            publisher.send([rtp_packet(high, seq, ts, marker, payload, 96)])
            t.py[1].on_packet(high, seq, ts, marker, payload, 0, None, None)
            sent.append(seq)
            await t.settle(received)
            arrived = [len(got) - c for got, c in zip(received[0] + received[1], counts,
                                                       strict=True)]
            # on the high layer: the first subscriber of each twin
            assert arrived == [n + 1, 0, 0, 0, 3 if n == 2 else 0, 0, 0, 0], arrived

        assert_same(received)
        # the first subscriber is on the high layer now, the others on the low one
        assert [len(got[-1]) for got in received[0]] == [12 + 602, 12 + 302, 12 + 302, 12 + 302]
        assert all(down.source is t.c[1] for down in t.downs[0][:1])
        forwarded = port._rx.forwarded
        assert 0.6 * len(sent) < forwarded < len(sent), (forwarded, len(sent))
        for _ in range(200):  # aiortc's handling comes after, through the backlog
            if len(publisher.handled) >= len(sent):
                break
            await asyncio.sleep(0.01)
        assert publisher.handled == sent


async def test_audio_levels_are_rewritten_and_silence_is_left_to_python() -> None:
    async with AsyncExitStack() as stack:
        port = _PortSocket("127.0.0.1", 0)
        port.start(asyncio.get_running_loop())
        stack.callback(port.close)
        t = twins("audio", "audio/opus", 48000,
                  rtp.ExtensionIds(audio_level=SUBSCRIBER_LEVEL_ID))
        for _ in range(2):
            await t.subscribe(stack)
        publisher = Publisher(port, t.c, [0x99], 111)
        received: tuple[list[list[bytes]], list[list[bytes]]] = ([], [])
        levels = [(True, 30)] * 5 + [(False, 127)] * 20 + [(False, 40)] * 5 + [(True, 20)] * 5
        for seq, level in enumerate(levels, start=500):
            payload = bytes([seq & 0xFF]) * 60
            publisher.send([rtp_packet(0x99, seq, 960 * seq, 0, payload, 111, level)])
            t.py[0].on_packet(0x99, seq, 960 * seq, 0, payload, 0, level, None)
            if seq % 4 == 0:
                await t.settle(received)
        await t.settle(received)
        assert received[0] == received[1]
        skipped = t.c[0].silent_skipped
        assert skipped == t.py[0].silent_skipped > 0
        assert len(received[0][0]) == len(levels) - skipped
        first = received[0][0][0]  # the subscriber's id, the publisher's level and voice flag
        assert first[0] & 0x10 and first[12:14] == b"\xbe\xde"
        assert first[16] >> 4 == SUBSCRIBER_LEVEL_ID and first[17] == 0x80 | 30
        # the voiced packets but those that came after a silent one in the same read
        assert 10 <= port._rx.forwarded <= 15
