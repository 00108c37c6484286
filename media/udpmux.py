"""One UDP port for all media (``media.udp_port``): every ICE connection of the SFU shares one
socket per gathered address, so a hospital firewall opens one port, not a range.

Like LiveKit's ``udp_port`` and mediasoup's WebRtcServer. Each datagram goes to its
connection by its sender's address; a sender not seen before is matched by what it sends
first, an ICE connectivity check (STUN Binding request, RFC 8445): its ``USERNAME`` starts with
our connection's username fragment, and its ``MESSAGE-INTEGRITY`` must verify with that
connection's password before the address is learned (an unauthenticated packet cannot take
over an address). A connection's addresses are forgotten when it closes. Datagrams from
unknown senders that are not such a check are dropped and counted.

The socket is read like media/rxstamps.py reads the per-connection ones: every datagram
waiting (up to ``READ_BATCH``) per wake-up, with the kernel's receive time, which the
publisher's ``ArrivalStamps`` (if its transport has one) gets for its REMB.

aioice internals used (aioice 0.13, pinned with aiortc): ``Connection.get_component_candidates``
(replaced per connection that has ``_huizhen_mux`` set: ``UdpMux.adopt``), ``_protocols``,
``local_username`` / ``local_password``; ``StunProtocol`` (subclassed: its transport is ours).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from asyncio.trsock import TransportSocket
from typing import Any

import aioice.ice
from aioice import stun
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aioice.ice import Connection, StunProtocol

from media.rxstamps import RCVBUF_BYTES, READ_BATCH, enable, is_srtcp, is_srtp, receive

log = logging.getLogger("huizhen.media")

MAX_DATAGRAM = 2048
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
        self.stamped = True
        try:
            enable(self.sock)
        except OSError:
            self.stamped = False
        self.by_ufrag: dict[str, MuxedProtocol] = {}
        self.by_addr: dict[tuple[str, int], MuxedProtocol] = {}
        self.dropped_in = 0  # datagrams from senders that are no connection's
        self.dropped_out = 0  # datagrams the socket buffer had no room for
        self._loop: asyncio.AbstractEventLoop | None = None

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

    def forget(self, protocol: MuxedProtocol) -> None:
        ufrag = protocol.receiver.local_username
        if self.by_ufrag.get(ufrag) is protocol:
            del self.by_ufrag[ufrag]
        for addr in [a for a, p in self.by_addr.items() if p is protocol]:
            del self.by_addr[addr]

    def _read_ready(self) -> None:
        for _ in range(READ_BATCH):
            try:
                if self.stamped:
                    data, addr, stamp = receive(self.sock, MAX_DATAGRAM)
                else:
                    data, addr = self.sock.recvfrom(MAX_DATAGRAM)
                    stamp = None
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("receive failed", extra={"error": str(exc)})
                return
            addr = (addr[0], addr[1])
            protocol = self.by_addr.get(addr)
            if protocol is None:
                protocol = self._from_check(data, addr)
                if protocol is None:
                    self.dropped_in += 1
                    continue
            transport: Any = protocol.transport
            if stamp is not None and is_srtp(data):
                direct = transport._huizhen_direct
                if direct is not None and direct(data, stamp):
                    continue
                if transport._huizhen_stamps is not None:
                    transport._huizhen_stamps.note(data, stamp)
            elif is_srtcp(data):
                rtcp = transport._huizhen_rtcp
                if rtcp is not None and rtcp(data):
                    continue
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
