"""The fast send path of a subscribe connection: SRTP-protect each packet with the DTLS
transport's session and write it to the nominated ICE pair's UDP socket, synchronously.

Per packet and subscriber this is the server's main cost. ``SrtpUdpSink`` is the ``PacketSink``
(media/downtrack.py) that SubscriberPeer (media/subscriber.py) is: what does not change per
packet is looked up once per DTLS transport and once per nominated pair, a video frame's
packets leave together when its last one is sent (on Linux with UDP GSO: one system call per
run of same-size packets), and ``_srtp_protect`` calls libsrtp on pylibsrtp's session buffer
without its per-call checks.

aiortc/aioice/pylibsrtp internals used here (aiortc is pinned to 1.16.*;
tests/test_aiortc_hooks.py and tests/test_send_path.py fail if one stops working): the DTLS
transport's SRTP session (``_tx_srtp``) and its ICE connection's nominated pairs
(``transport._connection._nominated``), a ``StunProtocol`` pair's socket, and pylibsrtp's
``Session._srtp`` / ``_cdata`` / ``_buffer``.
"""

from __future__ import annotations

import logging
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any

import pylibsrtp
from aioice.ice import StunProtocol
from pylibsrtp import SRTP_MAX_TRAILER_LEN, Session
from pylibsrtp._binding import ffi, lib

from media.background import spawn
from media.downtrack import PacketSink
from media.impairment import Impairment

log = logging.getLogger("huizhen.media")

UDP_SEGMENT = 103  # linux/udp.h: the size of the datagrams a UDP GSO send is split into
GSO_MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS of the oldest kernels that have UDP GSO (4.18)
GSO_MAX_BYTES = 60000  # a GSO send is one IP packet before it is split: below 64 KiB
_GSO = sys.platform == "linux"


def _srtp_protect(session: Session) -> Callable[[bytes], bytes]:
    """``session.protect`` without pylibsrtp's per-call checks and allocation: the same libsrtp
    call on the same session buffer (tests/test_aiortc_hooks.py checks the two agree)."""
    srtp = session._srtp[0]
    cdata = session._cdata
    buffer = session._buffer
    length = ffi.new("int *")
    limit = len(cdata) - SRTP_MAX_TRAILER_LEN
    srtp_protect = lib.srtp_protect

    def protect(data: bytes) -> bytes:
        size = len(data)
        if size > limit:
            raise ValueError("packet is too long")
        length[0] = size
        buffer[0:size] = data
        rc = srtp_protect(srtp, cdata, length)
        if rc:
            raise pylibsrtp.Error(pylibsrtp.ERRORS[rc])
        return buffer[0:length[0]]

    return protect


class SrtpUdpSink(PacketSink):
    """Where a subscribe connection's DownTracks send: its SRTP session and ICE socket.

    ``_dtls`` is set by the subscriber once its first sender starts (until then nothing is
    sent); ``label`` names the subscriber for a simulated downlink (media/impairment.py)."""

    def __init__(self, label: str = "", impairment: Impairment | None = None) -> None:
        self.label = label
        self._impairment = impairment
        self._dtls: Any = None
        self._pair: Any = None
        self._sock: socket.socket | None = None
        self._addr: tuple[str, int] = ("", 0)
        self.dropped = 0

    # Per packet and subscriber this is the server's main cost, so what does not change per
    # packet is looked up once per DTLS transport (its SRTP session is created once, at the
    # handshake; its ICE connection's dict of nominated pairs lives as long as it does) and once
    # per nominated pair (its socket and address).
    _srtp_dtls: Any = None  # the DTLS transport the two below belong to (set by _bind_srtp)
    _protect: Callable[[bytes], bytes]
    _nominated: dict[int, Any]

    def _bind_srtp(self) -> bool:
        dtls = self._dtls
        if dtls is None or dtls._tx_srtp is None:
            return False
        self._protect = _srtp_protect(dtls._tx_srtp)
        self._nominated = dtls.transport._connection._nominated
        self._srtp_dtls = dtls
        return True

    # A video frame's packets leave together, when its last one is sent: on Linux with UDP GSO
    # (one system call for each run of same-size packets, the kernel splits them), which is
    # most of what a packet costs the server.
    _held: list[bytes] = []  # noqa: RUF012 - replaced per instance
    _gso = _GSO

    def send_rtp(self, data: bytes) -> None:
        if self._dtls is not self._srtp_dtls and not self._bind_srtp():
            return
        if self._held:
            self._held.append(self._protect(data))
            self._flush()
        else:
            self._sendto(self._protect(data))

    def queue_rtp(self, data: bytes) -> None:
        if self._dtls is not self._srtp_dtls and not self._bind_srtp():
            return
        held = self._held
        if not held:
            self._held = held = []
        elif held[-1][4:12] != data[4:12]:  # another frame (its last packet was lost) or SSRC
            self._flush()
            self._held = held = []
        held.append(self._protect(data))

    def _flush(self) -> None:
        held = self._held
        self._held = []
        pair = self._nominated.get(1)
        if pair is None:
            return
        if (pair is not self._pair or self._sock is None or not self._gso
                or (self._impairment is not None and self.label in self._impairment.downlinks)):
            for data in held:  # one at a time (a simulated downlink sees each datagram)
                self._sendto(data)
            return
        sock, addr = self._sock, self._addr
        start, count = 0, len(held)
        while start < count:
            size = len(held[start])
            limit = min(count, start + min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // size))
            end = start + 1
            while end < limit and len(held[end]) == size:
                end += 1
            if end < limit and len(held[end]) < size:
                end += 1  # the last segment may be shorter
            if end - start == 1:
                self._sendto(held[start])
            else:
                try:
                    sock.sendmsg(held[start:end],
                                 [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))], 0, addr)
                except (BlockingIOError, InterruptedError):
                    self.dropped += end - start
                except OSError as exc:  # no UDP GSO on this path: one packet at a time
                    log.info("UDP GSO unavailable", extra={"error": str(exc)})
                    self._gso = False
                    for data in held[start:end]:
                        self._sendto(data)
            start = end

    def send_rtcp(self, data: bytes) -> None:
        if self._dtls is not self._srtp_dtls and not self._bind_srtp():
            return
        self._sendto(self._dtls._tx_srtp.protect_rtcp(data))

    def _sendto(self, data: bytes) -> None:
        if self._impairment is not None:
            limit = self._impairment.downlinks.get(self.label)
            if limit is not None:
                limit.send(data, self._transmit)
                return
        self._transmit(data)

    def _transmit(self, data: bytes) -> None:
        pair = self._nominated.get(1)
        if pair is None:
            return
        if pair is not self._pair:
            self._pair = pair
            transport = getattr(pair.protocol, "transport", None)
            # a host/srflx pair: write to its UDP socket directly (no asyncio buffering: a
            # real-time packet that does not fit the socket buffer is dropped, not queued)
            self._sock = (transport.get_extra_info("socket")._sock
                          if isinstance(pair.protocol, StunProtocol) and transport is not None
                          else None)
            self._addr = pair.remote_addr
        if self._sock is not None:
            try:
                self._sock.sendto(data, self._addr)
            except (BlockingIOError, InterruptedError):
                self.dropped += 1
            except OSError as exc:
                log.debug("send failed", extra={"error": str(exc)})
        else:  # relayed (TURN) pairs wrap the datagram; rare on the server side
            spawn(pair.protocol.send_data(data, pair.remote_addr))
