"""media/rxstamps.py: kernel receive timestamps of RTP datagrams, on a real UDP socket."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import Any

from aiortc import clock

from media import rxstamps
from media.rxstamps import ArrivalStamps


class Collect(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(data)


def rtp(seq: int, ssrc: int, pt: int = 96) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq, 1234, ssrc) + b"payload"


async def endpoint() -> tuple[asyncio.DatagramTransport, Collect, socket.socket]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        Collect, local_addr=("127.0.0.1", 0))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.connect(transport.get_extra_info("sockname"))
    return transport, protocol, sender


async def test_packets_read_while_the_loop_was_busy_carry_their_arrival_time() -> None:
    transport, protocol, sender = await endpoint()
    stamps = ArrivalStamps()
    try:
        assert stamps.attach(transport)
        assert not stamps.attach(transport)  # once per socket
        # the first socket to ask for receive timestamps (when no other has them on) turns
        # them on in the kernel through deferred work; until then a datagram is stamped when
        # it is read. A server's sockets keep them on; here, wait for that work to run.
        await asyncio.sleep(0.1)
        sent_ms = clock.current_ms()
        sender.send(rtp(7, 0xDEADBEEF))
        sender.send(rtp(8, 0xDEADBEEF, pt=200))  # an RTCP sender report: not stamped
        sender.send(b"\x00\x01stun")  # not RTP
        time.sleep(0.2)  # noqa: ASYNC251  (the loop is busy: the datagrams wait in the socket)
        read_ms = clock.current_ms()
        for _ in range(50):
            if len(protocol.received) == 3:
                break
            await asyncio.sleep(0.01)
        assert protocol.received == [rtp(7, 0xDEADBEEF), rtp(8, 0xDEADBEEF, pt=200),
                                     b"\x00\x01stun"]  # handed on unchanged, in order
        arrived = stamps.pop_ms(7, 0xDEADBEEF)
        assert arrived is not None
        # when the kernel got it (aiortc's clock: ms since 1900), not when the loop read it
        assert sent_ms - 5 <= arrived <= sent_ms + 50 < read_ms - 100
        assert stamps.pop_ms(7, 0xDEADBEEF) is None  # once
        assert stamps.pop_ms(8, 0xDEADBEEF) is None
    finally:
        transport.close()
        sender.close()


async def test_unclaimed_stamps_are_bounded() -> None:
    transport, protocol, sender = await endpoint()
    stamps = ArrivalStamps()
    try:
        assert stamps.attach(transport)
        count = rxstamps.MAX_PENDING + 10
        for seq in range(count):
            sender.send(rtp(seq, 1))
            if seq % 64 == 63 or seq == count - 1:
                # let the loop read them all before sending more (the socket buffer is finite)
                for _ in range(500):
                    if len(protocol.received) == seq + 1:
                        break
                    await asyncio.sleep(0.002)
                assert len(protocol.received) == seq + 1
        assert 0 < len(stamps._pending) <= rxstamps.MAX_PENDING
    finally:
        transport.close()
        sender.close()


async def test_a_transport_it_cannot_read_is_left_alone() -> None:
    class NotASelectorTransport:
        _loop = None
        _sock = None

    assert not ArrivalStamps().attach(NotASelectorTransport())
