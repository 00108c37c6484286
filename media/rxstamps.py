"""When each RTP packet really arrived: the kernel's receive timestamp of its datagram.

aiortc stamps an RTP packet's arrival (``arrival_time_ms``, which feeds its REMB estimator)
when its DTLS transport gets round to decrypting it: after the event loop has run whatever
else was ready. On a busy server that is tens of milliseconds after the datagram reached the
socket, and in bursts, which the delay-based estimator reads as a congested uplink: it lowers
the REMB it sends and the publisher's encoder halves its bitrate for every viewer. Here the
socket of an ICE candidate is read with ``recvmsg`` and ``SO_TIMESTAMPNS`` instead, so each
SRTP packet is noted with the time the kernel received it, under its SSRC and sequence number
(the RTP header is not encrypted); the receiver hook then hands aiortc that time. Every
datagram waiting is read per wake-up, into a larger receive buffer: a busy server must not drop
its publishers' packets, nor their ICE consent answers, at the socket (issue 12).

asyncio hooks used (tests/test_aiortc_hooks.py fails if one stops working): a selector
loop's ``_remove_reader`` / ``_add_reader`` to replace the datagram transport's reader, and the
transport's ``_sock``, ``_protocol``, ``_conn_lost`` and ``max_size``.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Callable
from typing import Any

from aioice.ice import StunProtocol

log = logging.getLogger(__name__)

#: takes an SRTP datagram and its kernel receive time (``time.time()`` seconds) as it is read:
#: True if it handled it (then nothing else sees it), False to let it take the usual way
Direct = Callable[[bytes, float], bool]
#: the same for an SRTCP datagram (no receive time)
DirectRtcp = Callable[[bytes], bool]

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # linux/socket.h
_TIMESPEC = struct.Struct("=qq")
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size)
_KEY = struct.Struct("!HI")
NTP_EPOCH_OFFSET_S = 2208988800  # 1900-01-01 → 1970-01-01
MAX_PENDING = 4096  # stamps of packets nobody asked for (not RTP after all, dropped): forgotten
#: datagrams read per wake-up at most: a busy event loop gets round to a socket once per
#: iteration, and one datagram per iteration (asyncio's own reader) let a publisher's socket
#: overflow on a server fanning out to a hundred viewers (its RTP and ICE consent answers lost)
READ_BATCH = 64
#: receive buffer asked for (the kernel caps it at net.core.rmem_max): the default (~208 KB)
#: holds only ~90 datagrams, as each is charged its whole buffer: under a second of video
RCVBUF_BYTES = 1 << 20


def rtp_key(sequence_number: int, ssrc: int) -> bytes:
    """The key a packet's stamp is kept under: its sequence number and SSRC, as on the wire."""
    return _KEY.pack(sequence_number, ssrc)


def is_srtp(data: bytes) -> bool:
    """An SRTP (not SRTCP) datagram: version 2, payload type outside RTCP's 192–223."""
    return len(data) >= 12 and 0x80 <= data[0] < 0xC0 and not 192 <= data[1] <= 223


def is_srtcp(data: bytes) -> bool:
    """An SRTCP datagram: version 2, packet type in RTCP's 192–223 (RFC 5761)."""
    return len(data) >= 8 and 0x80 <= data[0] < 0xC0 and 192 <= data[1] <= 223


def receive(sock: socket.socket, max_size: int) -> tuple[bytes, Any, float | None]:
    """One datagram, its sender and the kernel's receive time (``time.time()`` seconds, None if
    the kernel gave none); the socket must have ``SO_TIMESTAMPNS`` on (``enable``)."""
    data, ancillary, _, addr = sock.recvmsg(max_size, _ANCILLARY)
    for level, kind, value in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
            sec, nsec = _TIMESPEC.unpack_from(value)
            return data, addr, sec + nsec * 1e-9
    return data, addr, None


def enable(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)


class ArrivalStamps:
    """Kernel receive times of the SRTP packets read from the sockets ``attach``-ed to it."""

    def __init__(self) -> None:
        self._pending: dict[bytes, float] = {}

    def attach(self, transport: Any, direct: Direct | None = None,
               rtcp: DirectRtcp | None = None, lane: Any = None) -> bool:
        """Read ``transport`` (an asyncio selector datagram transport) with receive timestamps
        from now on; False (and nothing changed) if it is not one this can read. A transport
        on the shared media port (media/udpmux.py) is read by its port, which hands the
        stamps here (``note``). ``direct``, if given, is offered each SRTP datagram with its
        stamp first, as it is read, and ``rtcp`` each SRTCP datagram; what one takes (True)
        goes no further. ``lane``: what the shared port's receive path in C hands what it
        decrypted or forwarded (media/udpmux.py; media/publisher.py's ``CLane``)."""
        if getattr(transport, "muxed", False):
            transport._huizhen_stamps = self
            transport._huizhen_direct = direct
            transport._huizhen_rtcp = rtcp
            transport._huizhen_lane = lane
            return True
        loop: Any = getattr(transport, "_loop", None)
        sock: Any = getattr(transport, "_sock", None)
        if (sock is None or not hasattr(loop, "_add_reader")
                or getattr(transport, "_huizhen_stamps", None) is not None):
            return False
        try:
            enable(sock)
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < RCVBUF_BYTES:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
        except OSError as exc:
            log.info("no receive timestamps on this socket", extra={"error": str(exc)})
            return False
        note = self.note
        max_size = transport.max_size
        protocol = transport._protocol

        def read_ready() -> None:  # asyncio's _SelectorDatagramTransport._read_ready, stamped,
            for _ in range(READ_BATCH):  # and every datagram waiting (up to READ_BATCH)
                if transport._conn_lost:
                    return
                try:
                    data, addr, stamp = receive(sock, max_size)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:
                    protocol.error_received(exc)
                    return
                if stamp is not None and is_srtp(data):
                    if direct is not None and direct(data, stamp):
                        continue
                    note(data, stamp)
                elif rtcp is not None and is_srtcp(data) and rtcp(data):
                    continue
                protocol.datagram_received(data, addr)

        fd = sock.fileno()
        loop._remove_reader(fd)
        loop._add_reader(fd, read_ready)
        transport._huizhen_stamps = self
        transport._huizhen_direct = direct
        transport._huizhen_rtcp = rtcp
        return True

    def note(self, data: bytes, stamp: float) -> None:
        """The receive time of an SRTP datagram read elsewhere (the shared media port)."""
        pending = self._pending
        if len(pending) >= MAX_PENDING:
            pending.clear()
        pending[data[2:4] + data[8:12]] = stamp

    def attach_connection(self, pc: Any,
                          direct: Callable[[Any], Direct] | None = None,
                          rtcp: Callable[[Any], DirectRtcp] | None = None,
                          lane: Callable[[Any], Any] | None = None) -> None:
        """Stamp what every ICE socket of this peer connection (``RTCPeerConnection``)
        receives; call it after ``setLocalDescription`` (the sockets exist from then on)
        and again after each renegotiation (sockets already attached are left alone).
        ``direct``, ``rtcp`` and ``lane`` make the handlers (``attach``) of each DTLS
        transport's sockets."""
        seen: set[int] = set()
        for transceiver in pc.getTransceivers():
            dtls = transceiver.receiver.transport
            connection = dtls.transport._connection
            if id(connection) in seen:
                continue
            seen.add(id(connection))
            handler = direct(dtls) if direct is not None else None
            rtcp_handler = rtcp(dtls) if rtcp is not None else None
            lane_handler = lane(dtls) if lane is not None else None
            for protocol in connection._protocols:
                if isinstance(protocol, StunProtocol) and protocol.transport is not None:
                    self.attach(protocol.transport, handler, rtcp_handler, lane_handler)

    def stamp_receiver(self, receiver: Any) -> None:
        """Hand ``receiver`` (an ``RTCRtpReceiver``) each packet's kernel receive time as its
        ``arrival_time_ms``: its REMB then measures the network, not this process's load."""
        handle = receiver._handle_rtp_packet

        async def handle_rtp(packet: Any, arrival_time_ms: int) -> None:
            arrived = self.pop_ms(packet.sequence_number, packet.ssrc)
            await handle(packet, arrival_time_ms if arrived is None else arrived)

        receiver._handle_rtp_packet = handle_rtp

    def pop_ms(self, sequence_number: int, ssrc: int) -> int | None:
        """The packet's kernel receive time in aiortc's clock (ms since the NTP epoch, as
        ``aiortc.clock.current_ms``), once; None if it was not stamped."""
        stamp = self._pending.pop(rtp_key(sequence_number, ssrc), None)
        return None if stamp is None else int((stamp + NTP_EPOCH_OFFSET_S) * 1000)
