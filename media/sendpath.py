"""The fast send path of a subscribe connection: SRTP-protect each packet with the DTLS
transport's session and write it to the nominated ICE pair's UDP socket, synchronously.

Per packet and subscriber this is the server's main cost. ``SrtpUdpSink`` is the ``PacketSink``
(media/downtrack.py) that SubscriberPeer (media/subscriber.py) is. Each packet's whole step is
one C call (media/_fastpath, built from media/fastpath_build.py): stamped (the subscriber's
header before the template's shared tail) and protected in place in the sink's send batch,
whose bookkeeping, socket and address C holds (``hz_sink``); a video frame's packets leave
together when its last one is sent (on Linux with UDP GSO: one system call for each run of
same-size packets, the kernel splits them). Python sends only where C has no socket to send
to (a relayed pair, a simulated downlink). What does not change per packet is looked up once
per DTLS transport and once per nominated pair. A sink whose session, pair and socket Python
has checked is *armed* (``_arm``): then ``hz_fanout`` (media/source.py) sends its DownTracks'
packets without Python, until a new DTLS transport, a newly nominated pair (``_Nominated``
watches aioice's dict) or another socket disarms it.

aiortc/aioice/pylibsrtp internals used here (aiortc is pinned to 1.16.*;
tests/test_aiortc_hooks.py and tests/test_send_path.py fail if one stops working): the DTLS
transport's SRTP session (``_tx_srtp``) and its ICE connection's nominated pairs
(``transport._connection._nominated``), a ``StunProtocol`` pair's socket, and pylibsrtp's
``Session._srtp`` and its binding's ``srtp_protect``.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
from typing import Any

import pylibsrtp
from aioice.ice import StunProtocol
from pylibsrtp import Session
from pylibsrtp._binding import ffi as srtp_ffi
from pylibsrtp._binding import lib as srtp_lib

from media import rtp
from media._fastpath import ffi, lib
from media.background import spawn
from media.downtrack import PacketSink
from media.impairment import Impairment

log = logging.getLogger("huizhen.media")

BATCH_BYTES = 1 << 16  # a sink's send batch: a frame's packets at a time (one GSO send)
BATCH_PACKETS = 256  # packets a batch holds at most
_GSO = sys.platform == "linux"

#: libsrtp's srtp_protect, from pylibsrtp's binding (the library it links, and its sessions)
_SRTP_PROTECT = ffi.cast("void *", int(srtp_ffi.cast("uintptr_t",
                                                     srtp_ffi.addressof(srtp_lib, "srtp_protect"))))


def srtp_context(session: Session) -> Any:
    """The libsrtp context of a pylibsrtp session, as _fastpath takes it."""
    return ffi.cast("void *", int(srtp_ffi.cast("uintptr_t", session._srtp[0])))


def sockaddr(address: tuple[Any, ...]) -> bytes | None:
    """``address`` (an IP address and port, as asyncio gives them) as a ``struct sockaddr``
    (Linux's layout), for _fastpath's sends; None for anything else."""
    host, port = address[0], address[1]
    try:
        return (struct.pack("=H", socket.AF_INET) + struct.pack("!H", port)
                + socket.inet_pton(socket.AF_INET, host) + bytes(8))
    except (OSError, TypeError, struct.error):
        pass
    try:
        scope = address[3] if len(address) > 3 else 0
        return (struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", port, 0)
                + socket.inet_pton(socket.AF_INET6, host) + struct.pack("=I", scope))
    except (OSError, TypeError, struct.error):
        return None


# what _fastpath's hz_forward / hz_send_whole / hz_flush return besides 0 (fastpath_build.py)
HZ_FLUSH_FIRST = 1  # Python sends what the batch holds, then calls again
HZ_FLUSH_NOW = 2  # the packet is in; Python sends the batch now
HZ_GSO_OFF = 3  # sent, and UDP GSO failed on this path: off from now on


#: what hz_* return when libsrtp refuses an index behind its replay window (libsrtp's
#: srtp_err_status_replay_old and srtp_err_status_pkt_idx_old)
_TOO_OLD = frozenset({-1000 - 10, -1000 - 26})


def _refused(size: int) -> None:
    """The error a negative size from _fastpath stands for."""
    if size == -1:
        raise ValueError("packet is too long")
    status = -1000 - size
    errors = pylibsrtp.ERRORS
    raise pylibsrtp.Error(errors[status] if status < len(errors) else f"libsrtp error {status}")


class _Nominated(dict[Any, Any]):
    """An ICE connection's nominated pairs (aioice's ``Connection._nominated``, replaced by
    this dict with the same contents): a change disarms the sinks that send on them."""

    sinks: list[Any]

    @classmethod
    def watch(cls, connection: Any, sink: Any) -> _Nominated:
        nominated = connection._nominated
        if not isinstance(nominated, cls):
            nominated = cls(nominated)
            nominated.sinks = []
            connection._nominated = nominated
        if not any(s == sink for s in nominated.sinks):
            nominated.sinks.append(sink)
        return nominated

    def _changed(self) -> None:
        for sink in self.sinks:
            sink.armed = 0

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self._changed()

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        self._changed()

    def clear(self) -> None:
        super().clear()
        self._changed()

    def pop(self, *args: Any) -> Any:
        value = super().pop(*args)
        self._changed()
        return value


class SrtpUdpSink(PacketSink):
    """Where a subscribe connection's DownTracks send: its SRTP session and ICE socket.

    ``_dtls`` is set by the subscriber once its first sender starts (until then nothing is
    sent); ``label`` names the subscriber for a simulated downlink (media/impairment.py)."""

    def __init__(self, label: str = "", impairment: Impairment | None = None) -> None:
        self.label = label
        self._impairment = impairment
        self._dtls_transport: Any = None
        self._pair: Any = None
        self._sock: socket.socket | None = None
        self._addr: tuple[str, int] = ("", 0)
        self._batch = bytearray(BATCH_BYTES)
        self._cbatch = ffi.from_buffer(self._batch)
        self._view = memoryview(self._batch)
        self._sizes = ffi.new("int[]", BATCH_PACKETS)
        c = self._c = ffi.new("hz_sink *")
        c.batch = self._cbatch
        c.sizes = self._sizes
        c.cap = BATCH_BYTES
        c.max_packets = BATCH_PACKETS
        c.batch_ts = c.batch_ssrc = -1
        c.fd = -1
        c.gso = self._gso
        c.protect = _SRTP_PROTECT

    @property
    def c_sink(self) -> Any:
        """The C side of this sink, for its DownTracks (hz_down.sink): ``hz_fanout`` sends
        through it while it is armed (``_arm``)."""
        return self._c

    @property
    def _dtls(self) -> Any:
        """The DTLS transport whose SRTP session and ICE connection carry the packets."""
        return self._dtls_transport

    @_dtls.setter
    def _dtls(self, dtls: Any) -> None:
        self._dtls_transport = dtls
        self._c.armed = 0  # its session is bound on the next send, from Python

    def _arm(self) -> None:
        """C may send through this sink by itself: the session is bound, the nominated pair
        checked, and C has its socket (not a relayed pair, no simulated downlink). Anything
        that changes one of them disarms it (``_dtls``, ``_set_c_target``, the nominated pairs:
        ``_Nominated``); the next packet then takes the Python way, which arms it again."""
        c = self._c
        c.armed = int(c.fd >= 0 and self._impairment is None
                      and self._dtls is self._srtp_dtls and self._srtp is not None)

    # Per packet and subscriber this is the server's main cost, so what does not change per
    # packet is looked up once per DTLS transport (its SRTP session is created once, at the
    # handshake; its ICE connection's dict of nominated pairs lives as long as it does) and once
    # per nominated pair (its socket and address, in the C sink).
    _srtp_dtls: Any = None  # the DTLS transport the ones below belong to (set by _bind_srtp)
    _srtp: Any = None  # its libsrtp context
    _nominated: dict[int, Any]
    # the send batch and its bookkeeping (_fastpath's hz_sink: the packets held, of one frame
    # of one stream, and the nominated pair's socket and address when C may send to them)
    _batch: bytearray
    _cbatch: Any
    _view: memoryview
    _sizes: Any
    _c: Any
    _gso = _GSO
    _dropped = 0  # datagrams sent from Python that the socket had no room for
    too_old = 0  # packets to send again that were too old for the SRTP session (not sent)
    _impaired = False  # a simulated downlink takes this subscriber's datagrams (Python sends)

    @property
    def dropped(self) -> int:
        """Datagrams the socket had no room for (real-time media is never queued)."""
        return self._dropped + int(self._c.dropped)

    def _bind_srtp(self) -> bool:
        dtls = self._dtls
        if dtls is None or dtls._tx_srtp is None:
            return False
        if self._c.count:
            self._flush()
        self._srtp = self._c.srtp = srtp_context(dtls._tx_srtp)
        self._nominated = _Nominated.watch(dtls.transport._connection, self._c)
        self._srtp_dtls = dtls
        return True

    def forward_rtp(self, block: rtp.PacketTemplate, marker_pt: int, seq: int, timestamp: int,
                    ssrc: int, end_of_frame: bool) -> None:
        if self._dtls is not self._srtp_dtls and not self._bind_srtp():
            return
        if self._nominated.get(1) is not self._pair or self._impairment is not None:
            self._check_pair()
        tail = block.tail
        c = self._c
        result = lib.hz_forward(_SRTP_PROTECT, self._srtp, c, tail, len(tail), block.first_byte,
                                marker_pt, seq, timestamp, ssrc, end_of_frame)
        if result == HZ_FLUSH_FIRST:
            self._flush()
            result = lib.hz_forward(_SRTP_PROTECT, self._srtp, c, tail, len(tail),
                                    block.first_byte, marker_pt, seq, timestamp, ssrc,
                                    end_of_frame)
        if result:
            self.sent_code(result)
        if not c.armed:
            self._arm()

    def send_rtp(self, data: bytes) -> bool:
        """A whole packet (a retransmission, a padding filler): sent now, after what is held;
        False if not (no SRTP session yet, or too old for it to protect again)."""
        if self._dtls is not self._srtp_dtls and not self._bind_srtp():
            return False
        if self._nominated.get(1) is not self._pair or self._impairment is not None:
            self._check_pair()
        c = self._c
        result = lib.hz_send_whole(_SRTP_PROTECT, self._srtp, c, data, len(data))
        if result == HZ_FLUSH_FIRST:
            self._flush()
            result = lib.hz_send_whole(_SRTP_PROTECT, self._srtp, c, data, len(data))
        return self.sent_code(result) if result else True

    def sent_code(self, result: int) -> bool:
        """What _fastpath's code asks for besides 0 (from a send here, or from C's fan-out,
        ``hz_fanout``): Python sends the batch, GSO went off, or the packet was refused
        (raised, unless only too old to protect again: then False)."""
        if result == HZ_FLUSH_NOW:
            self._flush()
        elif result == HZ_GSO_OFF:
            self._gso = False
            log.info("UDP GSO unavailable", extra={"error": os.strerror(self._c.last_errno)})
        elif result in _TOO_OLD:
            # a retransmission (or filler) further behind than the session's replay window:
            # libsrtp will not protect that index again; the receiver is past it anyway
            self.too_old += 1
            return False
        elif result < 0:
            _refused(result)
        return True

    def _check_pair(self) -> None:
        """The nominated pair changed (or a simulated downlink may have): C sends to the new
        one's socket, or Python does."""
        pair = self._nominated.get(1)
        if pair is not self._pair:
            self._use_pair(pair)
        impaired = (self._impairment is not None
                    and self.label in self._impairment.downlinks)
        if impaired != self._impaired:
            self._impaired = impaired
            self._set_c_target()

    def _flush(self) -> None:
        """Send what the batch holds: from C when it has the socket, else one datagram at a
        time from Python (a simulated downlink sees each, a relayed pair wraps each)."""
        c = self._c
        if c.fd >= 0:
            if lib.hz_flush(c) == HZ_GSO_OFF:
                self.sent_code(HZ_GSO_OFF)
            return
        count = c.count
        c.count = 0
        c.used = 0
        if self._nominated.get(1) is None:
            return
        start = 0
        view, sizes = self._view, self._sizes
        for i in range(count):
            size = sizes[i]
            self._sendto(view[start:start + size])
            start += size

    def send_rtcp(self, data: bytes) -> None:
        if self._dtls is not self._srtp_dtls and not self._bind_srtp():
            return
        self._sendto(self._dtls._tx_srtp.protect_rtcp(data))

    def _use_pair(self, pair: Any) -> None:
        self._pair = pair
        transport = getattr(pair.protocol, "transport", None) if pair is not None else None
        # a host/srflx pair: write to its UDP socket directly (no asyncio buffering: a
        # real-time packet that does not fit the socket buffer is dropped, not queued)
        self._sock = (transport.get_extra_info("socket")._sock
                      if transport is not None and isinstance(pair.protocol, StunProtocol)
                      else None)
        self._addr = pair.remote_addr if pair is not None else ("", 0)
        self._set_c_target()

    def _set_c_target(self) -> None:
        """Where C sends: the pair's socket and address, unless Python must (fd -1)."""
        c = self._c
        c.armed = 0  # armed again by the next send from Python, if C may send
        sock = self._sock
        address = sockaddr(self._addr) if sock is not None else None
        if sock is None or address is None or self._impaired:
            c.fd = -1
            return
        c.fd = sock.fileno()
        c.addr[0:len(address)] = address
        c.addrlen = len(address)

    def _sendto(self, data: bytes | memoryview) -> None:
        """One datagram; ``data`` may be a view of the send batch, valid only during the call
        (whatever keeps it longer takes a copy)."""
        if self._impairment is not None:
            limit = self._impairment.downlinks.get(self.label)
            if limit is not None:
                limit.send(bytes(data), self._transmit)
                return
        self._transmit(data)

    def _transmit(self, data: bytes | memoryview) -> None:
        pair = self._nominated.get(1)
        if pair is None:
            return
        if pair is not self._pair:
            self._use_pair(pair)
        if self._sock is not None:
            try:
                self._sock.sendto(data, self._addr)
            except (BlockingIOError, InterruptedError):
                self._dropped += 1
            except OSError as exc:
                log.debug("send failed", extra={"error": str(exc)})
        else:  # relayed (TURN) pairs wrap the datagram; rare on the server side
            spawn(pair.protocol.send_data(bytes(data), pair.remote_addr))
