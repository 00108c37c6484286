"""One UDP port for all media (``media.udp_port``): every ICE connection of the SFU shares one
socket per gathered address, so a hospital firewall opens one port, not a range.

Like LiveKit's ``udp_port`` and mediasoup's WebRtcServer. Each datagram goes to its
connection by its sender's address; a sender not seen before is matched by what it sends
first, an ICE connectivity check (STUN Binding request, RFC 8445): its ``USERNAME`` starts with
our connection's username fragment, and its ``MESSAGE-INTEGRITY`` must verify with that
connection's password before the address is learned (an unauthenticated packet cannot take
over an address). A connection's addresses are forgotten when it closes. Datagrams from
unknown senders that are not such a check are dropped and counted.

The socket is read by the receive path in C (``hz_rx``, media/fastpath_rx.c): every datagram
waiting (up to ``READ_BATCH``) per wake-up, with the kernel's receive time; C finds each one's
connection by its sender (its own copy of the address table, ``_peers``), decrypts the RTP of
publish connections whose lane (media/publisher.py) has keyed it, and forwards what it can
before Python sees any of it. Python then takes each datagram in order: the lane gets what C
decrypted or forwarded; the rest goes where it went before (the connection's direct path, its
``ArrivalStamps`` for the REMB, aioice).

aioice internals used (aioice 0.13, pinned with aiortc): ``Connection.get_component_candidates``
(replaced per connection that has ``_huizhen_mux`` set: ``UdpMux.adopt``), ``_protocols``,
``local_username`` / ``local_password``; ``StunProtocol`` (subclassed: its transport is ours).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from asyncio.trsock import TransportSocket
from typing import Any

import aioice.ice
from aioice import stun
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aioice.ice import Connection, StunProtocol

from media._fastpath import ffi, lib
from media.rxstamps import RCVBUF_BYTES, READ_BATCH, enable, is_srtcp, is_srtp

log = logging.getLogger("huizhen.media")

MAX_DATAGRAM = 2048
TODO_CAP = 4096  # subscribers C may leave to Python in one read (C holds back beyond)
_KEY = struct.Struct("!HH16s")  # hz_peer.key: family, port, address
_COOKIE = stun.COOKIE.to_bytes(4, "big")


def _is_stun(data: bytes) -> bool:
    """A STUN message (RFC 7983 demultiplexing: first byte 0–3, and the magic cookie)."""
    return len(data) >= 20 and data[0] < 4 and data[4:8] == _COOKIE


class _MuxTransport(asyncio.DatagramTransport):
    """What a muxed ``StunProtocol`` sees as its transport: the shared socket."""

    muxed = True

    def __init__(self, mux: _PortSocket, protocol: MuxedProtocol) -> None:
        super().__init__()
        self._mux = mux
        self._protocol = protocol
        self._closed = False
        # set by ArrivalStamps.attach (media/rxstamps.py)
        self._huizhen_stamps: Any = None
        self._huizhen_direct: Any = None
        self._huizhen_rtcp: Any = None
        self._huizhen_lane: Any = None
        #: what C's receive path knows of this connection (its lane fills it in)
        self.c_conn = ffi.new("hz_conn *")

    def sendto(self, data: Any, addr: Any = None) -> None:
        if self._closed or addr is None:
            return
        self._mux.learn(addr, self._protocol)  # the answer to our check comes from there
        try:
            self._mux.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self._mux.dropped_out += 1
        except OSError as exc:
            log.debug("send failed", extra={"error": str(exc)})

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            return self._mux.sock.getsockname()
        if name == "socket":
            return TransportSocket(self._mux.sock)
        return default

    def is_closing(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._mux.forget(self._protocol)
        asyncio.get_running_loop().call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()


class MuxedProtocol(StunProtocol):
    """aioice's protocol of one ICE connection, on the shared socket."""


class _PortSocket:
    """The shared socket of one address: who is behind each sender."""

    def __init__(self, address: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.setblocking(False)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, RCVBUF_BYTES)
            self.sock.bind((address, port))
        except OSError:
            self.sock.close()
            raise
        with contextlib.suppress(OSError):  # else C's receive path stamps the time it read
            enable(self.sock)
        self.by_ufrag: dict[str, MuxedProtocol] = {}
        self.by_addr: dict[tuple[str, int], MuxedProtocol] = {}
        self.dropped_in = 0  # datagrams from senders that are no connection's
        self.dropped_out = 0  # datagrams the socket buffer had no room for
        self._loop: asyncio.AbstractEventLoop | None = None
        # C's receive path: its copy of by_addr (in the same order as _peer_list), and its
        # buffers
        self._peer_list: list[tuple[tuple[str, int], MuxedProtocol]] = []
        self._peers = ffi.new("hz_peer[]", 1)
        self._data = bytearray(READ_BATCH * MAX_DATAGRAM)
        self._view = memoryview(self._data)
        b = self._rx = ffi.new("hz_rxbuf *")
        self._rx_keep = [ffi.from_buffer(self._data), ffi.new("hz_rxrec[]", READ_BATCH),
                         ffi.new("hz_todo[]", TODO_CAP), ffi.new("int[]", TODO_CAP),
                         ffi.new("int[]", TODO_CAP), ffi.new("unsigned char[]", 2 * MAX_DATAGRAM),
                         ffi.new("hz_sink *[]", TODO_CAP)]
        b.data, b.rx, b.todo, b.scratch_todo, b.scratch_codes, b.tail, b.touched = self._rx_keep
        b.slot, b.cap = MAX_DATAGRAM, READ_BATCH
        b.todo_cap = b.scratch_cap = b.touched_cap = TODO_CAP
        self._gso_off = 0
        b.tail_cap = 2 * MAX_DATAGRAM

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self.sock.fileno(), self._read_ready)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def learn(self, addr: tuple[str, int], protocol: MuxedProtocol) -> None:
        key = (addr[0], addr[1])
        if key not in self.by_addr:
            self.by_addr[key] = protocol
            self._peer_list.append((key, protocol))
            self._sync_peers()

    def forget(self, protocol: MuxedProtocol) -> None:
        ufrag = protocol.receiver.local_username
        if self.by_ufrag.get(ufrag) is protocol:
            del self.by_ufrag[ufrag]
        for addr in [a for a, p in self.by_addr.items() if p is protocol]:
            del self.by_addr[addr]
        self._peer_list = [(a, p) for a, p in self._peer_list if p is not protocol]
        self._sync_peers()

    def _sync_peers(self) -> None:
        """C's copy of the address table (rebuilt: senders come and go at call set-up)."""
        family = self.sock.family
        peers = ffi.new("hz_peer[]", max(1, len(self._peer_list)))
        for i, ((host, port), protocol) in enumerate(self._peer_list):
            address = socket.inet_pton(family, host.split("%", 1)[0])  # (a link's scope)
            ffi.memmove(peers[i].key, _KEY.pack(family, port, address), lib.HZ_KEY)
            transport: Any = protocol.transport
            peers[i].conn = transport.c_conn if transport is not None else ffi.NULL
        self._peers = peers
        self._rx.peers = peers
        self._rx.npeers = len(self._peer_list)

    def _read_ready(self) -> None:
        """What C's receive path read (``hz_rx``), in order: what it forwarded or decrypted
        to the connection's lane, the rest as before (with the kernel's receive time, or the
        time C read it where the kernel gives none)."""
        b = self._rx
        count = lib.hz_rx(self.sock.fileno(), b)
        if count < 0:
            log.debug("receive failed", extra={"error": os.strerror(-count)})
            return
        if b.gso_off != self._gso_off:  # a send at the end of the read found no UDP GSO
            self._gso_off = b.gso_off
            log.info("UDP GSO unavailable: one datagram per send from now on")
        view, peers = self._view, self._peer_list
        for i in range(count):
            rec = b.rx[i]
            status = rec.status
            if status == lib.HZ_RX_DROP:
                continue
            off = rec.off
            data = bytes(view[off:off + rec.len])
            if status != lib.HZ_RX_RAW:  # C decrypted it (and maybe forwarded it)
                transport: Any = peers[rec.peer][1].transport
                lane = transport._huizhen_lane if transport is not None else None
                if lane is None:
                    continue  # closed meanwhile
                if status == lib.HZ_RX_SENT:
                    todo = [(t.group, t.index, t.code)
                            for t in b.todo[rec.todo_off:rec.todo_off + rec.todo_n]]
                    lane.forwarded(data, rec.stamp, rec.mono, rec.src, todo)
                else:
                    lane.decrypted(data, rec.stamp)
                continue
            if rec.peer >= 0:
                addr, protocol = peers[rec.peer]
            else:
                family, port, raw = _KEY.unpack(bytes(rec.key))
                addr = (socket.inet_ntop(family, raw[:4] if family == socket.AF_INET else raw),
                        port)
                known = self.by_addr.get(addr) or self._from_check(data, addr)
                if known is None:
                    self.dropped_in += 1
                    continue
                protocol = known
            self._deliver(protocol, data, addr, rec.stamp)

    def _deliver(self, protocol: MuxedProtocol, data: bytes, addr: tuple[str, int],
                 stamp: float) -> None:
        """A datagram C did not handle, to its connection."""
        transport: Any = protocol.transport
        if transport is None:
            return
        if is_srtp(data):
            lane = transport._huizhen_lane
            if lane is not None and not transport.c_conn.srtp:
                lane.key(transport.c_conn)  # C decrypts its next ones, once keyed
            direct = transport._huizhen_direct
            if direct is not None and direct(data, stamp):
                return
            if transport._huizhen_stamps is not None:
                transport._huizhen_stamps.note(data, stamp)
        elif is_srtcp(data):
            rtcp = transport._huizhen_rtcp
            if rtcp is not None and rtcp(data):
                return
        protocol.datagram_received(data, addr)

    def _from_check(self, data: bytes, addr: tuple[str, int]) -> MuxedProtocol | None:
        """The connection an authenticated connectivity check from a new sender is for."""
        if not _is_stun(data):
            return None
        try:
            message = stun.parse_message(data)
        except ValueError:
            return None
        username = message.attributes.get("USERNAME")
        if message.message_class != stun.Class.REQUEST or not isinstance(username, str):
            return None
        protocol = self.by_ufrag.get(username.split(":", 1)[0])
        if protocol is None or not message.check_message_integrity(
                protocol.receiver.local_password.encode("utf8")):
            return None
        self.learn(addr, protocol)
        return protocol


class UdpMux:
    """The shared sockets: one per gathered address, all on ``port``."""

    def __init__(self, addresses: list[str], port: int) -> None:
        if not addresses:
            raise ValueError("a single media port needs the addresses to listen on "
                             "(ice.gather_addresses)")
        self.port = port
        self.sockets: list[_PortSocket] = []
        try:
            for address in addresses:
                self.sockets.append(_PortSocket(address, port))
        except OSError as exc:
            self.close()
            raise OSError(exc.errno, f"cannot listen on UDP port {port} ({exc.strerror}): "
                          "free it or choose another media.udp_port") from exc

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for port_socket in self.sockets:
            port_socket.start(loop)
        log.info("media on one UDP port", extra={
            "port": self.port, "addresses": [s.sock.getsockname()[0] for s in self.sockets]})

    def close(self) -> None:
        for port_socket in self.sockets:
            port_socket.close()
        self.sockets = []

    def adopt(self, pc: Any) -> None:
        """Make the ICE connections of ``pc`` (an ``RTCPeerConnection``) gather on the shared
        sockets; call it before ``setLocalDescription`` (which gathers)."""
        for transceiver in pc.getTransceivers():
            transport = transceiver.sender.transport or transceiver.receiver.transport
            if transport is not None:
                transport.transport._connection._huizhen_mux = self
        sctp = getattr(pc, "sctp", None)
        if sctp is not None:
            sctp.transport.transport._connection._huizhen_mux = self

    @property
    def dropped(self) -> tuple[int, int]:
        """Datagrams dropped (in from unknown senders, out for want of buffer)."""
        return (sum(s.dropped_in for s in self.sockets),
                sum(s.dropped_out for s in self.sockets))

    def candidates(self, connection: Connection, component: int) -> list[Candidate]:
        """Host candidates of ``connection`` on the shared sockets (no STUN, no TURN: a
        server on one port is reached at its own, announced, address)."""
        out = []
        for port_socket in self.sockets:
            protocol = MuxedProtocol(connection)
            protocol.connection_made(_MuxTransport(port_socket, protocol))
            host, port = port_socket.sock.getsockname()[:2]
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host), component=component,
                transport="udp", priority=candidate_priority(component, "host"), host=host,
                port=port, type="host")
            port_socket.by_ufrag[connection.local_username] = protocol
            connection._protocols.append(protocol)
            out.append(protocol.local_candidate)
        return out


_original_candidates = Connection.get_component_candidates


async def _get_component_candidates(self: Connection, component: int, addresses: list[str],
                                    timeout: int = 5) -> list[Candidate]:
    mux: UdpMux | None = getattr(self, "_huizhen_mux", None)
    if mux is None:
        return await _original_candidates(self, component, addresses, timeout)
    return mux.candidates(self, component)


setattr(aioice.ice.Connection, "get_component_candidates",  # noqa: B010
        _get_component_candidates)
